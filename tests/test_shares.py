"""Usage over the window by serial, units, and the `kill: auto` choice (the
four rules, `min_share`, a group refused for what it holds), on synthetic samples."""
from dataclasses import dataclass

import pytest

from oorkiller.judge import shares

SELF = 999          # the daemon's pid in these tables


@dataclass
class P:
    """A process-table entry as shares.py reads it."""
    pid: int
    serial: int
    pgrp: int = 0
    eligible: bool = True
    adjust: int = 0
    cpu_ticks: int = 0
    cgroup: str = "/user.slice/a.scope"
    comm: bytes = b"p"
    uid: int = 0
    starttime: int = 0


def enough_from(points):
    """A shield's prediction: a unit of at least `points` is enough alone."""
    return lambda unit: (unit.share >= points, f"{unit.share} points gone")


ALWAYS = enough_from(0)


def cgroup_of(proc):
    return proc.cgroup


# ------------------------------------------------------------------ window

def test_usage_is_the_delta_over_the_window_not_the_lifetime_total():
    w = shares.UsageWindow(10)
    w.add(0, {1: 5000, 2: 10})
    w.add(10, {1: 5100, 2: 900})
    assert w.usage() == {1: 100, 2: 890}
    assert w.seconds == 10


def test_the_window_slides_and_keeps_covering_its_span():
    w = shares.UsageWindow(3)
    for t in range(10):
        w.add(t, {1: 100 * t})
    assert w.seconds == 3
    assert w.usage() == {1: 300}


def test_a_reused_pid_is_a_new_serial_and_is_not_blamed_for_the_old_process():
    # pid 7 used 500 ticks as serial 1 and exited; pid 7 again is serial 2, idle
    # (born before the window began, first seen late): it used nothing in it.
    w = shares.UsageWindow(10)
    w.add(0, {1: 1000})
    w.add(5, {1: 1500})
    w.add(10, {2: 3}, born={2: -100.0})
    assert w.usage() == {2: 0}


def test_a_new_process_counts_from_its_birth_inside_the_window():
    w = shares.UsageWindow(10)
    w.add(0, {1: 0})
    w.add(5, {1: 100, 2: 400}, born={2: 1.0})     # born after the window began
    w.add(10, {1: 200, 2: 900})
    assert w.usage() == {1: 200, 2: 900}


def test_an_old_process_first_seen_late_counts_only_from_first_sight():
    # A process with a large lifetime total that the window did not see at its
    # start (born long before) is not mistaken for the hog.
    w = shares.UsageWindow(10)
    w.add(0, {1: 0})
    w.add(5, {1: 250, 2: 90000}, born={2: -3600.0})
    w.add(10, {1: 500, 2: 90010})
    assert w.usage() == {1: 500, 2: 10}


def test_a_counter_that_steps_back_counts_as_nothing():
    w = shares.UsageWindow(10)
    w.add(0, {1: 100})
    w.add(1, {1: 50})
    assert w.usage() == {1: 0}


def test_one_sample_is_no_window():
    w = shares.UsageWindow(10)
    w.add(0, {1: 100})
    assert w.usage() == {} and w.seconds == 0
    w.clear()
    assert not w.samples and not w.first_seen


def test_the_dead_are_forgotten():
    w = shares.UsageWindow(1)
    for t in range(200):
        w.add(t, {t + 1: 0})
    assert len(w.first_seen) < 100


# ------------------------------------------------------------------ units and choice

CAPACITY = 1000     # so one tick is one thousandth


def test_the_process_that_reaches_min_share_alone_is_chosen():
    entries = [P(10, 1, pgrp=10), P(11, 2, pgrp=11)]
    choice = shares.choose_unit("auto", entries, {1: 600, 2: 300}, CAPACITY, 250, SELF, cgroup_of,
                                enough_from(500))
    assert choice.unit.kind == "process" and choice.unit.leader.pid == 10
    assert choice.unit.share == 600 and choice.candidate.score == 600


def test_nothing_is_chosen_below_min_share():
    entries = [P(10, 1, pgrp=10, cgroup="/a"), P(11, 2, pgrp=11, cgroup="/b")]
    assert shares.choose_unit("auto", entries, {1: 200, 2: 240}, CAPACITY, 250, SELF, cgroup_of) is None


def test_a_group_none_of_whose_members_reaches_min_share_goes_as_one():
    spinners = [P(100 + i, 10 + i, pgrp=100) for i in range(20)]
    outsider = P(50, 5, pgrp=50)
    used = {p.serial: 45 for p in spinners} | {5: 100}
    choice = shares.choose_unit("auto", spinners + [outsider], used, CAPACITY, 250, SELF, cgroup_of,
                                enough_from(500))
    assert choice.unit.kind == "process_group" and choice.unit.key == "100"
    assert choice.unit.share == 900
    assert {p.pid for p in choice.unit.members} == {p.pid for p in spinners}


@pytest.mark.parametrize("intruder,why", [
    (P(1, 90, pgrp=100), "holds pid 1"),
    (P(SELF, 91, pgrp=100), "holds oorkiller"),
    (P(77, 92, pgrp=100, eligible=False), "holds non-candidate pid 77"),
])
def test_a_group_holding_pid1_the_daemon_or_a_non_candidate_is_refused(intruder, why):
    spinners = [P(100 + i, 10 + i, pgrp=100, cgroup=f"/s{i}") for i in range(5)]
    used = {p.serial: 100 for p in spinners}
    (group,) = shares.units("process_group", spinners + [intruder], used, CAPACITY, SELF)
    assert group.refusal == why
    # auto falls back to the cgroup level; here every process has its own: nothing.
    assert shares.choose_unit("auto", spinners + [intruder], used, CAPACITY, 250, SELF, cgroup_of) is None


def test_auto_falls_back_to_the_cgroup_when_the_group_is_refused():
    workers = [P(100 + i, 10 + i, pgrp=100 + i, cgroup="/build.slice") for i in range(5)]
    used = {p.serial: 100 for p in workers}
    choice = shares.choose_unit("auto", workers, used, CAPACITY, 250, SELF, cgroup_of)
    assert choice.unit.kind == "cgroup" and choice.unit.key == "/build.slice"
    assert len(choice.unit.members) == 5


def test_the_root_cgroup_and_an_invisible_group_are_never_units():
    workers = [P(100 + i, 10 + i, pgrp=0, cgroup="/") for i in range(5)]
    used = {p.serial: 100 for p in workers}
    assert shares.choose_unit("auto", workers, used, CAPACITY, 250, SELF, cgroup_of) is None
    (group,) = shares.units("process_group", workers, used, CAPACITY, SELF)
    assert group.refusal == "is not visible here"


def test_a_forced_group_that_is_refused_falls_back_to_the_process_alone():
    hog = P(100, 10, pgrp=100)
    init = P(1, 1, pgrp=100, eligible=False)
    choice = shares.choose_unit("process_group", [hog, init], {10: 500}, CAPACITY, 250, SELF, cgroup_of)
    assert choice.unit.kind == "process" and choice.unit.leader is hog
    assert choice.fallback_reason == "process_group 100 holds pid 1"


def test_forced_process_never_aggregates():
    spinners = [P(100 + i, 10 + i, pgrp=100) for i in range(20)]
    used = {p.serial: 45 for p in spinners}
    assert shares.choose_unit("process", spinners, used, CAPACITY, 250, SELF, cgroup_of) is None


def test_score_is_share_plus_the_leaders_adjust():
    avoided = P(10, 1, pgrp=10, adjust=-300)
    plain = P(11, 2, pgrp=11)
    choice = shares.choose_unit("auto", [avoided, plain], {1: 600, 2: 400}, CAPACITY, 250, SELF, cgroup_of,
                                ALWAYS)
    assert choice.unit.leader is plain
    (row,) = [u for u in shares.units("process", [avoided, plain], {1: 600, 2: 400}, CAPACITY, SELF)
              if u.leader is avoided]
    assert (row.share, row.adjust, row.score) == (600, -300, 300)


def test_of_two_equally_large_the_one_with_less_work_goes():
    veteran = P(10, 1, pgrp=10, cpu_ticks=90000)
    newcomer = P(11, 2, pgrp=11, cpu_ticks=500)
    choice = shares.choose_unit("auto", [veteran, newcomer], {1: 480, 2: 478}, CAPACITY, 250, SELF, cgroup_of,
                                ALWAYS)
    assert choice.unit.leader is newcomer


def test_a_non_candidate_is_never_a_process_unit():
    protected = P(10, 1, pgrp=10, eligible=False)
    assert shares.choose_unit("auto", [protected], {1: 900}, CAPACITY, 250, SELF, cgroup_of) is None


def test_the_leader_of_a_group_is_its_biggest_user():
    members = [P(100, 10, pgrp=100), P(101, 11, pgrp=100), P(102, 12, pgrp=100)]
    (group,) = [u for u in shares.units("process_group", members, {10: 5, 11: 90, 12: 30}, CAPACITY, SELF)]
    assert group.leader.pid == 101 and group.used == 125


def test_a_storms_group_whose_kill_ends_the_shortage_goes_before_a_larger_lone_bystander():
    # The scheduler gives the bystander's session as much CPU as the storm's:
    # the bystander alone reaches min_share, no single spinner does; only the
    # group's removal would bring the run queue back.
    storm = [P(200 + i, 20 + i, pgrp=200, cgroup=f"/s{i}") for i in range(30)]
    bystander = P(100, 10, pgrp=100, cgroup="/b")
    used = {p.serial: 16 for p in storm} | {10: 500}
    choice = shares.choose_unit("auto", storm + [bystander], used, CAPACITY, 250, SELF, cgroup_of,
                                lambda unit: (len(unit.members) > 1, ""))
    assert choice.unit.kind == "process_group" and choice.unit.key == "200"
    assert choice.verdict.why.startswith("alone enough (1 of 2)")
    assert choice.verdict.runner_up_text == "100/p"


def test_a_group_enough_only_through_one_member_is_not_chosen_over_that_member():
    hog, idle = P(10, 1, pgrp=10, cgroup="/x"), P(11, 2, pgrp=10, cgroup="/y")
    choice = shares.choose_unit("auto", [hog, idle], {1: 600, 2: 0}, CAPACITY, 250, SELF, cgroup_of,
                                ALWAYS)
    assert choice.unit.kind == "process" and choice.unit.leader is hog
    # Nor is it the runner-up: it is the same kill with more loss, not another plan.
    assert choice.verdict.runner_up is None and choice.verdict.runner_up_text == "-"
