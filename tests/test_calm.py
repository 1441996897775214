"""The calm watch (proc/_calm.pyx): the checks a calm machine's clock makes
in C instead of stepping the shields. A gate passes only while its shield's
own step would be calm and decide nothing; anything that could change that
fails it at once; the watch sleeps between checks and wakes for Python
work, a failed gate or the clock's bell."""
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fakeproc import FakeProc, cpu_stat_text, meminfo_text
from oorkiller.config import load_config_text
from oorkiller.judge.rules import RuleSet
from oorkiller.proc._calm import (COUNT, CPU_BUSY, KMSG_QUIET, LINKS_QUIET, MEM_AVAILABLE, STATVFS,
                                  TASKS, CalmWatch)
from oorkiller.proc._readers import parse_cpu_stat
from oorkiller.proc.tables import parse_task_count
from oorkiller.shields.base import Context

GiB = 1 << 30


def gate(kind, path, limit, second=0.0, every=1.0):
    watch = CalmWatch()
    index = watch.add(kind, path, every)
    watch.arm(index, limit, time.monotonic(), second)
    return watch, index


# ------------------------------------------------------------ the real kernel's files
def test_each_gate_reads_its_figure_from_the_real_kernel_files(tmp_path):
    assert gate(MEM_AVAILABLE, "/proc/meminfo", 0)[0].check(0)
    assert not gate(MEM_AVAILABLE, "/proc/meminfo", 1 << 60)[0].check(0)
    assert gate(TASKS, "/proc/loadavg", 1 << 40)[0].check(0)
    assert not gate(TASKS, "/proc/loadavg", 1)[0].check(0)
    assert gate(COUNT, "/proc/sys/fs/file-nr", 1 << 40)[0].check(0)
    assert not gate(COUNT, "/proc/sys/fs/file-nr", 1)[0].check(0)
    assert gate(STATVFS, str(tmp_path), 0, 0)[0].check(0)
    assert not gate(STATVFS, str(tmp_path), 1 << 62, 0)[0].check(0)
    assert gate(CPU_BUSY, "/proc/stat", 1.01)[0].check(0)          # busy is at most 1
    time.sleep(0.05)
    assert not gate(CPU_BUSY, "/proc/stat", 0.0)[0].check(0)        # and at least 0


def test_a_memory_gate_fails_when_the_fall_since_its_last_check_would_reach_the_level(tmp_path):
    tree = FakeProc(tmp_path / "proc")
    tree.write("meminfo", meminfo_text(total_kib=64 << 20, available_kib=40 << 20))
    watch, index = gate(MEM_AVAILABLE, str(tmp_path / "proc/meminfo"), 4 * GiB, second=1 * GiB)
    assert watch.check(index)                                       # 36 GiB of headroom, 1 GiB/s
    tree.write("meminfo", meminfo_text(total_kib=64 << 20, available_kib=30 << 20))
    assert not watch.check(index)   # 10 GiB fell in a moment: at that rate 26 GiB go within 1 s
    assert watch.check(index)                                       # steady again
    tree.write("meminfo", meminfo_text(total_kib=64 << 20, available_kib=(4 << 20) + (512 << 10)))
    assert not watch.check(index)                                   # under level + 1 GiB/s x 1 s


def test_a_cpu_gate_keeps_what_it_passed_for_the_shield_to_judge_from(tmp_path):
    tree = FakeProc(tmp_path / "proc")
    tree.write("stat", cpu_stat_text(ticks=(100, 0, 0, 1000, 0, 0, 0, 0, 0, 0), procs_running=3))
    watch, index = gate(CPU_BUSY, str(tmp_path / "proc/stat"), 0.9)
    tree.write("stat", cpu_stat_text(ticks=(150, 0, 0, 1050, 0, 0, 0, 0, 0, 0), procs_running=3))
    assert watch.check(index)                                       # 50% busy
    (at, busy, runnable), = watch.history(index)
    assert busy == pytest.approx(0.5) and runnable == 2             # the reader is not counted
    assert parse_cpu_stat(watch.previous(index)).user == 150
    tree.write("stat", cpu_stat_text(ticks=(250, 0, 0, 1055, 0, 0, 0, 0, 0, 0), procs_running=9))
    assert not watch.check(index)                                   # 95% busy
    # The failed reading is not kept: the shield measures from the last one that passed.
    assert parse_cpu_stat(watch.previous(index)).user == 150 and len(watch.history(index)) == 1


def test_a_statvfs_gate_counts_inodes_only_where_the_file_system_has_them(tmp_path):
    free_inodes = os.statvfs(tmp_path).f_favail
    assert gate(STATVFS, str(tmp_path), 0, free_inodes)[0].check(0)
    assert not gate(STATVFS, str(tmp_path), 0, free_inodes + 10**6)[0].check(0)
    watch, index = gate(STATVFS, str(tmp_path), 0, 0)
    watch.check(index)
    (at, free, inodes), = watch.history(index)
    assert free > 0 and inodes > 0


@pytest.mark.skipif(os.geteuid() != 0, reason="writing to /dev/kmsg needs root")
def test_a_kernel_log_gate_fails_on_any_new_record_after_its_reset():
    watch, index = gate(KMSG_QUIET, "/dev/kmsg", 0)
    watch.reset(index)
    assert watch.check(index)
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write("oorkiller-test: a record after the reset\n")
    assert not watch.check(index)
    watch.reset(index)
    assert watch.check(index)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and ip(8)")
def test_a_links_gate_fails_when_a_link_appears_or_changes_its_address():
    code = r"""
import subprocess, time
from oorkiller.proc._calm import CalmWatch, LINKS_QUIET
watch = CalmWatch()
index = watch.add(LINKS_QUIET, "rtnetlink", 1.0)
watch.arm(index, 0, time.monotonic())
watch.reset(index)
results = [watch.check(index)]
subprocess.run(["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"], check=True)
results.append(watch.check(index))
watch.reset(index)
results.append(watch.check(index))
subprocess.run(["ip", "link", "set", "d0", "address", "02:00:00:00:00:42"], check=True)
results.append(watch.check(index))
print(results)
"""
    out = subprocess.run(["unshare", "--net", sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=30, cwd="/")      # the installed package, not the tree
    assert out.stdout.strip() == "[True, False, True, False]", out.stderr


# ------------------------------------------------------------ sleeping
def test_the_watch_sleeps_until_python_work_is_due_or_its_bell_rings():
    watch, index = gate(COUNT, "/proc/sys/fs/file-nr", 1 << 40, every=0.1)
    bell = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    start = time.monotonic()
    assert watch.run(start + 0.4, bell) == -1
    assert 0.3 <= time.monotonic() - start < 1.0
    os.eventfd_write(bell, 1)
    assert watch.run(time.monotonic() + 5, bell) == -2
    with pytest.raises(BlockingIOError):
        os.eventfd_read(bell)                                       # drained
    os.close(bell)


def test_a_failing_gate_wakes_python_at_its_next_check(tmp_path):
    number = tmp_path / "number"
    number.write_text("5\n")
    watch = CalmWatch()
    calm = watch.add(COUNT, "/proc/sys/fs/file-nr", 0.05)
    watched = watch.add(COUNT, str(number), 0.05)
    for index in (calm, watched):
        watch.arm(index, 1 << 40 if index == calm else 10, time.monotonic())
    bell = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    assert watch.run(time.monotonic() + 0.2, bell) == -1
    with open(number, "r+") as f:               # in place: the gate holds the file open
        f.write("50\n")
    start = time.monotonic()
    assert watch.run(start + 5, bell) == watched
    assert time.monotonic() - start < 0.2
    watch.disarm(watched)
    assert watch.run(time.monotonic() + 0.2, bell) == -1            # a disarmed gate is not checked
    os.close(bell)
    watch.close()


# ------------------------------------------------------------ a gate promises a calm step
MEMORY = """
cpu: {enabled: false}
disks: []
network: {duplicate_mac: {enabled: false}}
memory: {available: {term: 4GiB, kill: 2GiB}}
"""


def shield_for(tmp_path, name, yaml_text):
    from oorkiller.shields import shield_class
    config = load_config_text(yaml_text, "test.yaml")
    context = Context(config=config, rules=RuleSet(config, self_pid=1),
                      proc_root=str(tmp_path / "proc"), self_pid=1)
    return shield_class(name)(context)


@pytest.mark.parametrize("available_gib", [3, 6, 11.5, 12.5, 20, 39])
def test_while_the_memory_gate_passes_the_memory_step_is_calm(tmp_path, available_gib):
    tree = FakeProc(tmp_path / "proc")
    tree.write("meminfo", meminfo_text(total_kib=64 << 20, available_kib=int(available_gib * (1 << 20))))
    shield = shield_for(tmp_path, "memory", MEMORY)
    shield.step(100.0)
    gates = shield.calm_gates()
    if available_gib < 4:
        assert gates is None                # under the term level: no gate at all
        return
    (kind, path, limit, rate), = gates
    watch, index = gate(kind, path, limit, rate)
    passes = watch.check(index)
    step = shield.step(101.0)
    if passes:
        assert shield.calm(step.sleep) and not step.decisions
    # term 4 GiB + what the fastest hog eats in a second (8 GiB): 12 GiB
    assert passes == (available_gib > 12)


CPU = """
memory: {enabled: false}
disks: []
network: {duplicate_mac: {enabled: false}}
cpu: {enabled: true, usage: 90%, for: 5s}
"""


@pytest.mark.parametrize("busy_ticks", [0, 50, 89, 91, 100])
def test_while_the_cpu_gate_passes_no_cpu_condition_holds_and_the_shield_resumes_from_it(
        tmp_path, busy_ticks):
    tree = FakeProc(tmp_path / "proc")
    tree.write("loadavg", b"0.00 0.00 0.00 1/100 9\n")
    tree.write("stat", cpu_stat_text(ticks=(1000, 0, 0, 1000, 0, 0, 0, 0, 0, 0), procs_running=9))
    shield = shield_for(tmp_path, "cpu", CPU)
    step = shield.step(100.0)
    assert shield.calm(step.sleep)
    (kind, path, limit), = shield.calm_gates()
    watch, index = gate(kind, path, limit)
    tree.write("stat", cpu_stat_text(ticks=(1000 + busy_ticks, 0, 0, 1100 - busy_ticks, 0, 0, 0, 0, 0, 0),
                                     procs_running=9))
    passes = watch.check(index)
    assert passes == (busy_ticks < 90)
    shield.resume({(kind, path): watch.kept(index)})
    reading = shield.read(101.0)
    # The shield measures from the gate's last passed reading, as if it had taken it.
    assert reading["busy"] == pytest.approx(0.0 if passes else busy_ticks / 100)
    if passes:
        assert not shield.conditions(reading)[0]


# ------------------------------------------------------------ the task gate's fork bound
def task_and_cpu_gates(tmp_path, total, forks, limit):
    """A task gate and a CPU gate on a fixture tree; the task gate is added
    first, and is still checked after the CPU gate in a tick."""
    tree = FakeProc(tmp_path / "proc")
    tree.write("loadavg", f"0.00 0.00 0.00 1/{total} 999\n".encode())
    tree.write("stat", cpu_stat_text(forks=forks))
    watch = CalmWatch()
    tasks = watch.add(TASKS, str(tmp_path / "proc/loadavg"), 1.0)
    cpu = watch.add(CPU_BUSY, str(tmp_path / "proc/stat"), 1.0)
    watch.arm(cpu, 1.01, time.monotonic())
    watch.arm(tasks, limit, time.monotonic())
    return tree, watch, tasks


def test_the_task_gate_bounds_the_total_by_the_forks_counted_since_it_read_it(tmp_path):
    tree, watch, tasks = task_and_cpu_gates(tmp_path, total=100, forks=1000, limit=150)
    assert watch.sweep() == -1 and watch.reads(tasks) == 1      # the first tick reads the total
    tree.write("stat", cpu_stat_text(forks=1049))
    assert watch.sweep() == -1 and watch.reads(tasks) == 1      # 100 + 49 new < 150: no read
    tree.write("loadavg", b"0.00 0.00 0.00 1/120 999\n")
    tree.write("stat", cpu_stat_text(forks=1050))
    assert watch.sweep() == -1 and watch.reads(tasks) == 2      # 100 + 50 could be 150: read 120
    tree.write("stat", cpu_stat_text(forks=1079))
    assert watch.sweep() == -1 and watch.reads(tasks) == 2      # from 120 on: 120 + 29 < 150
    tree.write("loadavg", b"0.00 0.00 0.00 1/150 999\n")
    tree.write("stat", cpu_stat_text(forks=1080))
    assert watch.sweep() == tasks and watch.reads(tasks) == 3   # 150 read: at the level, it fails


def test_without_the_cpu_gate_in_its_tick_the_task_gate_reads_the_total_every_time():
    watch, index = gate(TASKS, "/proc/loadavg", 1 << 40)
    for reads in (1, 2, 3):
        assert watch.sweep() == -1 and watch.reads(index) == reads


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=25),
       start=st.integers(0, 200), headroom=st.integers(1, 120))
def test_the_task_gate_never_passes_once_the_real_total_reaches_its_limit(tmp_path, steps, start,
                                                                          headroom):
    """Whatever tasks are created and end between ticks, a tick at or over the
    limit fails: the forks counted never miss a new task."""
    total, forks, limit = start, 10_000, start + headroom
    tree, watch, tasks = task_and_cpu_gates(tmp_path, total, forks, limit)
    for created, ended in steps:
        total, forks = max(total + created - ended, 0), forks + created
        tree.write("stat", cpu_stat_text(forks=forks))
        tree.write("loadavg", f"0.00 0.00 0.00 1/{total} 999\n".encode())
        failed = watch.sweep()
        assert (failed == tasks) == (total >= limit), (total, limit)
        if failed == tasks:
            break
    watch.close()


def test_on_the_real_kernel_new_threads_fail_the_task_gate_and_a_quiet_tick_reads_nothing():
    watch = CalmWatch()
    cpu = watch.add(CPU_BUSY, "/proc/stat", 1.0)
    watch.arm(cpu, 1.01, 0.0)
    with open("/proc/loadavg", "rb") as f:
        total = parse_task_count(f.read())
    tasks = watch.add(TASKS, "/proc/loadavg", 1.0)
    watch.arm(tasks, total + 60, 0.0)
    assert watch.sweep() == -1 and watch.reads(tasks) == 1
    assert watch.sweep() == -1 and watch.reads(tasks) == 1      # the kernel's fork count is read
    release = threading.Event()
    sleepers = [threading.Thread(target=release.wait) for _ in range(120)]
    try:
        for thread in sleepers:
            thread.start()
        assert watch.sweep() == tasks                           # 120 more tasks than 60 allowed
    finally:
        release.set()
        for thread in sleepers:
            thread.join()
    watch.close()


def test_the_watch_grows_for_as_many_gates_as_the_shields_offer(tmp_path):
    watch = CalmWatch(capacity=2)
    indices = [watch.add(STATVFS, str(tmp_path), 5.0) for _ in range(40)]
    for index in indices:
        watch.arm(index, 0, time.monotonic(), 0)
    assert indices == list(range(40)) and all(watch.check(i) for i in indices)
    watch.close()


# ------------------------------------------------------------ hostile files

FIELD = st.one_of(st.integers(0, 10**7).map(str), st.sampled_from(["", "-1", "x", "9" * 30, "1/", "/5"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.lists(FIELD, min_size=0, max_size=6), slash=st.booleans(),
       limit=st.integers(0, 10**7))
def test_the_task_gate_agrees_with_the_shields_parser_on_any_loadavg(tmp_path, fields, slash, limit):
    text = " ".join(fields[:3]) + (" " + "/".join(fields[3:5]) if slash else " " + " ".join(fields[3:]))
    path = tmp_path / "loadavg"
    path.write_bytes(text.encode() + b"\n")
    watch, index = gate(TASKS, str(path), limit)
    try:
        calm = parse_task_count(text.encode()) < limit
    except ValueError:
        calm = False                         # the shield's step fails on it: not calm
    passed = watch.check(index)
    watch.close()
    # The gate never passes where the shield's own reading would not be calm...
    assert calm or not passed, text
    # ...and on the kernel's own layout (numbers that fit) it says exactly the same.
    well_formed = slash and len(fields) >= 5 and all(f.isdigit() and int(f) < 1 << 64 for f in fields[:5])
    if well_formed:
        assert passed == calm, text
