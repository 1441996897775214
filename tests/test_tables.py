"""The kernel-table shields (tasks, files, conntrack) decide, and only decide:
scripted readings in a fake /proc tree give the expected Decision values.
Nothing is started, signalled or bound to a pidfd here."""
import signal

import pytest

from fakeproc import FakeProc
from oorkiller.config import load_config_text
from oorkiller.judge.decision import Kill, Notice
from oorkiller.judge.rules import RuleSet
from oorkiller.proc.tables import parse_file_nr, parse_task_count
from oorkiller.quantities import Count, parse_count
from oorkiller.shields.base import Context

OTHERS_OFF = """
memory: {enabled: false}
cpu: {enabled: false}
disks: []
"""


def context(tree, yaml_text, self_pid=1, dev_root=None):
    config = load_config_text(OTHERS_OFF + yaml_text, "test.yaml")
    return Context(config=config, rules=RuleSet(config, self_pid=self_pid),
                   proc_root=str(tree.root), self_pid=self_pid,
                   dev_root=dev_root or str(tree.root))


def finish(decision, outcome="dead"):
    decision.outcome = outcome
    decision.done.set()


# ------------------------------------------------------------------ readers
def test_the_task_total_is_the_total_of_loadavgs_running_over_total():
    assert parse_task_count(b"0.52 0.58 0.59 3/1234 5678\n") == 1234
    with pytest.raises(ValueError):
        parse_task_count(b"0.52 0.58\n")


def test_file_nr_gives_open_files_and_file_max():
    assert parse_file_nr(b"682\t0\t2466097\n") == (682, 2466097)


def test_a_table_level_is_a_count_or_a_percentage_of_the_limit():
    assert parse_count("90%") == Count(90.0, True) and parse_count("90%").resolve(1000) == 900
    assert parse_count(12000).resolve(10 ** 9) == 12000 and str(parse_count("12000")) == "12000"
    for bad in ("12k", "1.5", "120%"):
        with pytest.raises(ValueError):
            parse_count(bad)


# ------------------------------------------------------------------ tasks
TASKS = "tasks: {threads: {kill: 1000}, interval: 1s, term_timeout: 2s, cooldown: 10s}\n"


@pytest.fixture
def tasks_tree(tmp_path):
    tree = FakeProc(tmp_path / "proc")
    tree.write("sys/kernel/threads-max", b"100000\n")
    tree.write("sys/kernel/pid_max", b"32768\n")
    set_tasks(tree, 500)
    tree.add_process(100, comm=b"database", num_threads=300)            # large, steady
    tree.add_process(200, comm=b"bomb", pgrp=200, session=200)          # the bomb's parent
    return tree


def set_tasks(tree, total):
    tree.write("loadavg", b"1.00 1.00 1.00 2/%d 9999\n" % total)


def tasks_shield(tree, text=TASKS):
    from oorkiller.shields.tasks import TasksShield
    return TasksShield(context(tree, text))


def fork_children(tree, first, count):
    for pid in range(first, first + count):
        tree.add_process(pid, comm=b"bomb", pgrp=200, session=200, ppid=200, starttime=10 ** 9)


def test_tasks_under_the_level_read_only_loadavg(tasks_tree):
    shield = tasks_shield(tasks_tree)
    step = shield.step(0.0)
    assert step.decisions == [] and step.sleep == 1.0
    assert shield._table is None, "no process table while the machine is healthy"
    assert shield.status()[0]["limit"] == 32768, "pid_max is the smaller limit"
    shield.close()


def test_tasks_above_the_level_stop_then_kill_the_group_that_grew_not_the_largest(tasks_tree):
    shield = tasks_shield(tasks_tree)
    set_tasks(tasks_tree, 1200)
    assert shield.step(0.0).decisions == []            # the first sample starts the window
    fork_children(tasks_tree, 201, 10)
    assert shield.step(0.25).decisions == []           # the window is still too short
    fork_children(tasks_tree, 211, 10)
    (kill,) = shield.step(0.5).decisions
    assert isinstance(kill, Kill) and kill.resource == "tasks"
    assert kill.unit == "process_group" and kill.group == "200"
    assert kill.freeze_first and kill.first_signal == signal.SIGKILL
    assert sorted(p.pid for p in kill.members) == list(range(200, 221))
    assert kill.fields["grew"] == 20 and kill.fields["tasks"] == 1200 and kill.fields["kill_level"] == 1000
    assert "tasks 1200 >= kill level 1000" in kill.reason and "kernel.pid_max 32768" in kill.reason
    assert shield.step(0.75).decisions == [], "one action at a time"
    finish(kill)
    assert shield.step(1.0).decisions == [], "then a cooldown"
    shield.close()


def test_tasks_a_thread_leak_in_one_process_gets_sigterm_without_freezing(tasks_tree):
    shield = tasks_shield(tasks_tree, TASKS.replace("1000}", "90%}"))
    set_tasks(tasks_tree, 30000)                         # 90% of pid_max is 29491
    shield.step(0.0)
    tasks_tree.set_stat(100, comm=b"database", num_threads=900)
    shield.step(0.25)
    (kill,) = shield.step(0.5).decisions
    assert kill.unit == "process" and kill.leader.pid == 100 and not kill.freeze_first
    assert kill.first_signal == signal.SIGTERM and kill.term_timeout == 2.0
    assert kill.fields["held"] == 900 and kill.fields["grew"] == 600
    assert "tasks 30000 >= kill level 90% (29491) of kernel.pid_max 32768" in kill.reason
    shield.close()


def test_tasks_above_the_level_with_nothing_growing_says_nothing_to_kill_once(tasks_tree):
    shield = tasks_shield(tasks_tree)
    set_tasks(tasks_tree, 1200)
    decided = [d for t in (0.0, 0.25, 0.5, 0.75, 1.0) for d in shield.step(t).decisions]
    (said,) = decided
    assert isinstance(said, Notice) and said.event == "nothing-to-kill" and said.resource == "tasks"
    shield.close()


# ------------------------------------------------------------------ files
FILES = "files: {open: {kill: 5000}, term_timeout: 3s}\n"


@pytest.fixture
def files_tree(tmp_path):
    tree = FakeProc(tmp_path / "proc")
    tree.write("sys/fs/file-nr", b"4000\t0\t100000\n")
    tree.add_process(100, comm=b"holder")
    tree.add_process(200, comm=b"leaker")
    open_fds(tree, 100, 400)
    open_fds(tree, 200, 10)
    return tree


def open_fds(tree, pid, count):
    fd_dir = tree.root / str(pid) / "fd"
    fd_dir.mkdir(exist_ok=True)
    for n in range(count):
        (fd_dir / str(n)).touch()


def files_shield(tree):
    from oorkiller.shields.files import FilesShield
    return FilesShield(context(tree, FILES))


def test_files_under_the_level_count_no_descriptors(files_tree):
    shield = files_shield(files_tree)
    assert shield.step(0.0).decisions == [] and shield._table is None
    assert shield.status()[0] == {"resource": "files", "state": "ok", "used": 4000, "limit": 100000,
                                  "kill_level": 5000, "used_pct": 4.0}
    shield.close()


def test_files_above_the_level_kill_the_process_that_opened_the_most_not_the_largest(files_tree):
    shield = files_shield(files_tree)
    files_tree.write("sys/fs/file-nr", b"6000\t0\t100000\n")
    shield.step(0.0)
    open_fds(files_tree, 200, 100)
    shield.step(0.25)
    open_fds(files_tree, 200, 200)
    (kill,) = shield.step(0.5).decisions
    assert kill.resource == "files" and kill.unit == "process" and kill.leader.pid == 200
    assert kill.first_signal == signal.SIGTERM and kill.term_timeout == 3.0 and not kill.freeze_first
    assert kill.fields["grew"] == 190 and kill.fields["held"] == 200 and kill.fields["open"] == 6000
    assert "open files 6000 >= kill level 5000" in kill.reason
    shield.close()


# ------------------------------------------------------------------ conntrack
CONNTRACK = "network: {duplicate_mac: {enabled: false}, conntrack: {used: {warn: 80%}}}\n"


def conntrack_shield(tree, kmsg_dir):
    from oorkiller.shields.conntrack import ConntrackShield
    return ConntrackShield(context(tree, CONNTRACK, dev_root=str(kmsg_dir)))


def kmsg_entry(text, facility=0, seq=1):
    return b"%d,%d,1000,-;%s\n" % ((facility << 3) | 4, seq, text.encode())


def test_conntrack_without_the_module_does_nothing(tmp_path):
    tree = FakeProc(tmp_path / "proc")
    shield = conntrack_shield(tree, tmp_path)
    assert shield.step(0.0).decisions == [] and shield.status()[0]["state"] == "unavailable"
    shield.close()


def test_conntrack_warns_once_per_stretch_and_again_when_the_kernel_drops(tmp_path):
    tree = FakeProc(tmp_path / "proc")
    tree.write("sys/net/netfilter/nf_conntrack_max", b"1000\n")
    tree.write("sys/net/netfilter/nf_conntrack_count", b"100\n")
    kmsg = tmp_path / "kmsg"
    kmsg.write_bytes(b"")
    shield = conntrack_shield(tree, tmp_path)
    assert shield.step(0.0).decisions == []
    tree.write("sys/net/netfilter/nf_conntrack_count", b"850\n")
    (notice,) = shield.step(10.0).decisions
    assert isinstance(notice, Notice) and notice.event == "conntrack-full"
    assert notice.resource == "network" and notice.level == "warning"
    assert notice.fields == {"count": 850, "max": 1000, "warn_level": 800, "dropped": 0}
    assert shield.step(20.0).decisions == [], "once per stretch"
    with open(kmsg, "ab") as f:            # a forged user-space line (facility 1) does not count
        f.write(kmsg_entry("nf_conntrack: nf_conntrack: table full, dropping packet", facility=1))
    assert shield.step(30.0).decisions == []
    with open(kmsg, "ab") as f:
        f.write(kmsg_entry("nf_conntrack: nf_conntrack: table full, dropping packet", seq=2))
    (dropping,) = shield.step(40.0).decisions
    assert dropping.fields["dropped"] == 1
    tree.write("sys/net/netfilter/nf_conntrack_count", b"100\n")
    assert shield.step(50.0).decisions == [] and shield.status()[0]["state"] == "ok"
    shield.close()
