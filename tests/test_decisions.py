"""Shields decide, and only decide: scripted situations (readings over time in
a fake /proc tree, a process table) give the expected Decision values. No
process is started, signalled or even bound to a pidfd here: nothing is
handed to an engine."""
import signal

import pytest

from fakeproc import FakeProc, cpu_stat_text, meminfo_text
from oorkiller.config import load_config_text
from oorkiller.judge.decision import Cleanup, Escalate, Kill, Notice
from oorkiller.judge.rules import RuleSet
from oorkiller.shields.base import Context
from oorkiller.shields.memory import MemoryShield

GiB_KiB = 1 << 20      # a GiB, in the kB of /proc/meminfo


def context(tree, yaml_text, self_pid=1):
    config = load_config_text(yaml_text, "test.yaml")
    return Context(config=config, rules=RuleSet(config, self_pid=self_pid),
                   proc_root=str(tree.root), self_pid=self_pid)


def finish(decision, outcome="dead", at=0.0):
    """What the engine does when a decision is over."""
    decision.outcome, decision.finished = outcome, at
    decision.done.set()


# ------------------------------------------------------------------ memory
MEMORY = """
cpu: {enabled: false}
disks: []
network: {duplicate_mac: {enabled: false}}
memory: {available: {term: 4GiB, kill: 2GiB}, term_timeout: 5s}
"""


@pytest.fixture
def memory_tree(tmp_path):
    tree = FakeProc(tmp_path / "proc")
    tree.write("meminfo", meminfo_text(total_kib=16 * GiB_KiB, available_kib=10 * GiB_KiB))
    tree.add_process(100, comm=b"service", oom_score=800, vm_rss_kib=6 * GiB_KiB, utime=90000)
    tree.add_process(200, comm=b"grower", oom_score=600, vm_rss_kib=3 * GiB_KiB, utime=50)
    tree.add_process(300, comm=b"tiny", oom_score=670, vm_rss_kib=1024)
    return tree


def memory_shield(tree):
    return MemoryShield(context(tree, MEMORY))


def set_available(tree, gib):
    tree.write("meminfo", meminfo_text(total_kib=16 * GiB_KiB, available_kib=int(gib * GiB_KiB)))


def test_memory_above_its_levels_decides_nothing(memory_tree):
    shield = memory_shield(memory_tree)
    step = shield.step(0.0)
    assert step.decisions == [] and 0 < step.sleep <= 1.0
    shield.close()


def test_memory_below_term_asks_to_sigterm_the_largest_candidate_whose_kill_is_enough(memory_tree):
    shield = memory_shield(memory_tree)
    set_available(memory_tree, 3.5)
    (kill,) = shield.step(0.0).decisions
    assert isinstance(kill, Kill) and kill.resource == "memory"
    assert kill.leader.pid == 100 and [p.pid for p in kill.members] == [100]
    assert kill.first_signal == signal.SIGTERM and kill.term_timeout == 5.0 and kill.unit == "process"
    assert "MemAvailable" in kill.reason and "< term level 4GiB" in kill.reason
    assert kill.fields["rss"] == "6GiB" and kill.targets == [], "the engine binds the pidfds"
    shield.close()


def test_memory_waits_for_its_kill_and_escalates_it_once_below_the_kill_level(memory_tree):
    shield = memory_shield(memory_tree)
    set_available(memory_tree, 3.5)
    (kill,) = shield.step(0.0).decisions
    assert shield.step(0.01).decisions == [], "one victim per shortage: wait for it"
    set_available(memory_tree, 1.5)
    (escalate,) = shield.step(0.02).decisions
    assert isinstance(escalate, Escalate) and escalate.kill is kill
    assert shield.step(0.03).decisions == [], "asked once"
    shield.close()


def test_after_its_victim_died_memory_waits_for_the_freed_memory_to_show_before_a_second_kill(
        memory_tree):
    """A dead victim's memory can take seconds to show in MemAvailable: a
    second kill meanwhile would take a bystander for a shortage already
    answered. While memory holds still, the shield waits up to SETTLE."""
    from oorkiller.shields.memory import SETTLE
    shield = memory_shield(memory_tree)
    set_available(memory_tree, 1.5)
    (kill,) = shield.step(0.0).decisions
    memory_tree.remove_process(100)
    finish(kill, "dead", at=1.0)
    for after in (0.1, 1.5, 2.9):     # freed memory has taken over a second to show on a VM
        assert shield.step(1.0 + after).decisions == [], f"{after} s after the death: it may still come"
    (second,) = shield.step(1.0 + SETTLE + 0.1).decisions
    assert isinstance(second, Kill) and second.leader.pid != 100, "it did not come: a new shortage"
    shield.close()


def test_after_its_victim_died_memory_that_keeps_falling_is_a_new_shortage_at_once(memory_tree):
    from oorkiller.shields.memory import SETTLE_SLACK
    shield = memory_shield(memory_tree)
    set_available(memory_tree, 1.5)
    (kill,) = shield.step(0.0).decisions
    memory_tree.remove_process(100)
    finish(kill, "dead", at=1.0)
    assert shield.step(1.1).decisions == []
    set_available(memory_tree, 1.5 - 2 * SETTLE_SLACK / (1 << 30))
    (second,) = shield.step(1.2).decisions
    assert isinstance(second, Kill) and second.leader.pid != 100
    shield.close()


def test_memory_below_kill_with_nothing_eligible_says_nothing_to_kill_once(memory_tree):
    tree = memory_tree
    for pid in (100, 200, 300):
        tree.write(f"{pid}/oom_score_adj", b"-1000\n")
    shield = memory_shield(tree)
    set_available(tree, 1.0)
    (notice,) = shield.step(0.0).decisions
    assert isinstance(notice, Notice) and notice.event == "nothing-to-kill"
    assert "< kill level 2GiB" in notice.reason
    assert shield.step(0.01).decisions == [], "once per stretch, not per reading"
    shield.close()


def test_near_its_level_memory_keeps_its_candidates_judged_as_they_are_now(memory_tree):
    """Near the term level the shield ranks again every WARM_REFRESH and reads
    what a choice reads of each candidate (so that a crossing reads files the
    kernel has already looked up): a candidate that took a protected name
    meanwhile leaves the warm ranking before any crossing."""
    from oorkiller.shields.memory import WARM_REFRESH
    shield = MemoryShield(context(memory_tree, MEMORY + "rules:\n  - match: {name: sshd}\n    protect: true\n"))
    set_available(memory_tree, 5)                   # 1 GiB above the term level: near it
    assert shield.step(1.0).decisions == []
    assert 100 in [p.pid for p in shield.warm]
    memory_tree.set_stat(100, comm=b"sshd", utime=90000)
    assert shield.step(1.0 + WARM_REFRESH).decisions == []
    assert sorted(p.pid for p in shield.warm) == [200, 300], "sshd is protected now"
    set_available(memory_tree, 3.5)
    (kill,) = shield.step(1.0 + 2 * WARM_REFRESH).decisions
    assert kill.leader.pid != 100
    shield.close()


# ------------------------------------------------------------------ cpu
CPU = """
memory: {enabled: false}
disks: []
network: {duplicate_mac: {enabled: false}}
cpu: {usage: 90%, runnable_per_cpu: 0, for: 2s, min_share: 25%, cooldown: 10s}
"""


class CpuScript:
    """/proc/stat and the processes' CPU time, advanced one second at a time."""

    def __init__(self, tree):
        self.tree, self.ticks, self.utime = tree, [1000, 0, 500, 10000, 0, 0, 0, 0, 0, 0], {}
        self.write()

    def write(self):
        self.tree.write("stat", cpu_stat_text(tuple(self.ticks), ncpu=2))

    def second(self, busy=1.0, used=None):
        """One second of both CPUs at `busy`; `used`: pid -> ticks it ran."""
        hz = 100
        self.ticks[0] += int(2 * hz * busy)
        self.ticks[3] += int(2 * hz * (1 - busy))
        self.write()
        for pid, ticks in (used or {}).items():
            self.utime[pid] = self.utime.get(pid, 0) + ticks
            self.tree.set_stat(pid, comm=self.tree_names[pid], utime=self.utime[pid])


@pytest.fixture
def cpu_tree(tmp_path):
    tree = FakeProc(tmp_path / "proc")
    tree.write("loadavg", b"0.50 0.40 0.30 1/100 4242\n")
    tree.add_process(200, comm=b"spinner")
    tree.add_process(300, comm=b"bystander")
    script = CpuScript(tree)
    script.tree_names = {200: b"spinner", 300: b"bystander"}
    return tree, script


def cpu_shield(tree):
    from oorkiller.shields.cpu import CpuShield
    return CpuShield(context(tree, CPU))


def test_cpu_busy_for_less_than_for_decides_nothing(cpu_tree):
    tree, script = cpu_tree
    shield = cpu_shield(tree)
    for now in (1.0, 2.0):
        script.second(1.0, {200: 180, 300: 20})
        assert shield.step(now).decisions == []
    shield.close()


def test_cpu_busy_for_for_kills_the_process_that_used_the_cpus(cpu_tree):
    tree, script = cpu_tree
    shield = cpu_shield(tree)
    decisions = []
    for now in (1.0, 2.0, 3.0, 4.0):
        script.second(1.0, {200: 180, 300: 20})
        decisions += shield.step(now).decisions
    (kill,) = decisions
    assert isinstance(kill, Kill) and kill.resource == "cpu" and kill.leader.pid == 200
    assert kill.unit == "process" and kill.first_signal == signal.SIGTERM
    assert "CPU busy" in kill.reason and "for 2s" in kill.reason
    assert kill.fields["share"] == "90.0%" and kill.fields["window"] == "2s"
    shield.close()


def test_cpu_after_its_kill_waits_a_cooldown_and_a_whole_new_window(cpu_tree):
    tree, script = cpu_tree
    shield = cpu_shield(tree)
    decisions = []
    for now in (1.0, 2.0, 3.0):
        script.second(1.0, {200: 180, 300: 20})
        decisions += shield.step(now).decisions
    (kill,) = decisions
    finish(kill, at=3.5)
    for now in (4.0, 8.0, 13.0, 14.0):          # cooldown 10 s from the step that saw the end
        script.second(1.0, {300: 190})
        assert shield.step(now).decisions == [], now
    script.second(1.0, {300: 190})
    (second,) = shield.step(16.0).decisions      # a fresh `for` after the cooldown
    assert second.leader.pid == 300
    shield.close()


def test_cpu_busy_with_no_unit_above_min_share_says_nothing_to_kill_once(cpu_tree):
    tree, script = cpu_tree
    shield = cpu_shield(tree)
    decisions = []
    for now in (1.0, 2.0, 3.0, 4.0):
        script.second(1.0, {200: 30, 300: 30})
        decisions += shield.step(now).decisions
    (notice,) = decisions
    assert isinstance(notice, Notice) and notice.event == "nothing-to-kill"
    assert "min_share" in notice.reason
    shield.close()


# ------------------------------------------------------------------ disk
def disk_shield(tree, path, clean="100%", cleanup=True):
    from oorkiller.shields.disk import DiskShield
    rules = f"[{{path: {path}, glob: '*.log', min_age: 0s}}]" if cleanup else "[]"
    return DiskShield(context(tree, f"""
memory: {{enabled: false}}
cpu: {{enabled: false}}
network: {{duplicate_mac: {{enabled: false}}}}
disks:
  - path: {path}
    free: {{clean: {clean}, kill: 1B}}
    inodes_free: {{clean: 0%, kill: 0%}}
    until: {{free: 100%, inodes_free: 0%}}
    cleanup: {rules}
"""))


@pytest.fixture
def disk_tree(tmp_path):
    tree = FakeProc(tmp_path / "proc")
    tree.write("self/mountinfo", open("/proc/self/mountinfo", "rb").read())
    return tree


def test_a_disk_below_clean_asks_for_one_cleanup_pass_at_a_time(disk_tree, tmp_path):
    shield = disk_shield(disk_tree, tmp_path)
    (cleanup,) = [d for d in shield.step(0.0).decisions if isinstance(d, Cleanup)]
    assert cleanup.path == str(tmp_path) and cleanup.resource == "disk"
    assert cleanup.until_bytes > 0 and [r.glob for r in cleanup.rules] == ["*.log"]
    assert "< clean level 100%" in cleanup.reason
    later = shield.step(shield.disks[0].due).decisions
    assert not [d for d in later if isinstance(d, Cleanup)], "the first pass is not over"
    finish(cleanup, "done")
    again = shield.step(shield.disks[0].due).decisions
    assert [d for d in again if isinstance(d, Cleanup)], "a new pass once the last is over"
    shield.close()


def test_a_disk_above_its_levels_decides_nothing(disk_tree, tmp_path):
    shield = disk_shield(disk_tree, tmp_path, clean="1B")
    assert shield.step(0.0).decisions == []
    shield.close()
