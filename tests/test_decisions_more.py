"""Shields decide, and only decide (continued from test_decisions.py): the IO
shield on a scripted /proc/diskstats and a fake process table, the network
shield on a fake /sys/class/net, and the CPU shield telling a fork storm's
process group from a single busy bystander. No process is started,
signalled or bound to a pidfd here: nothing is handed to an engine."""
import os
import shutil
import signal
import time

import pytest

from fakeproc import FakeProc, cpu_stat_text, io_text
from test_netscan import FakeSys, MAC, TAP_MAC
from oorkiller.config import load_config_text
from oorkiller.judge.decision import Kill, LinkDown, Notice
from oorkiller.judge.rules import RuleSet
from oorkiller.shields.base import Context
from oorkiller.shields.process import HZ

MiB = 1 << 20


def context(yaml_text, proc_root="/nonexistent", sys_root="/nonexistent", dev_root="/nonexistent",
            self_pid=1):
    config = load_config_text(yaml_text, "test.yaml")
    return Context(config=config, rules=RuleSet(config, self_pid=self_pid), proc_root=str(proc_root),
                   sys_root=str(sys_root), dev_root=str(dev_root), self_pid=self_pid)


def finish(decision, outcome="dead", at=0.0):
    """What the engine does when a decision is over."""
    decision.outcome, decision.finished = outcome, at
    decision.done.set()


# ------------------------------------------------------------------ io
IO = """
memory: {enabled: false}
cpu: {enabled: false}
disks: []
network: {duplicate_mac: {enabled: false}}
io:
  enabled: true
  devices: [{device: fakedisk, utilization: 90%}]
  for: 3s
  min_share: 25%
  term_timeout: 4s
  cooldown: 10s
"""

#            maj min name reads merged rsect rms writes merged wsect wms inflight io_ms weighted
DISKSTATS = "{maj:4d} {min:7d} {name} {r} 0 {rs} 0 {w} 0 {ws} {wms} 0 {io} {wms}\n"


class IoScript:
    """/proc/diskstats (one device, `fakedisk`, numbered as the file system of
    the test's files) and each process's /proc/PID/io, one second at a time."""

    def __init__(self, tree, dev):
        self.tree, self.major, self.minor = tree, os.major(dev), os.minor(dev)
        self.disk = {"r": 0, "rs": 0, "w": 0, "ws": 0, "wms": 0, "io": 0}
        self.written = {}            # pid -> write_bytes so far
        self.write_disk()

    def write_disk(self):
        line = DISKSTATS.format(maj=self.major, min=self.minor, name="fakedisk", **self.disk)
        self.tree.write("diskstats", line.encode())

    def second(self, util=1.0, moved=0, writes=None):
        """One second of fakedisk busy `util` of the time, moving `moved`
        bytes; `writes`: pid -> bytes that process wrote (to any disk)."""
        self.disk["io"] += int(1000 * util)
        self.disk["w"] += 4000 if util else 0
        self.disk["wms"] += 8000 if util else 0
        self.disk["ws"] += moved // 512
        self.write_disk()
        for pid, amount in (writes or {}).items():
            self.written[pid] = self.written.get(pid, 0) + amount
            self.tree.write(f"{pid}/io", io_text(wchar=self.written[pid], syscw=self.written[pid] // 4096,
                                                 write_bytes=self.written[pid]))


def open_file(tree, pid, fd, target):
    """PID holds `target` open as descriptor `fd` (/proc/PID/fd/FD links to it)."""
    fd_dir = tree.root / str(pid) / "fd"
    fd_dir.mkdir(exist_ok=True)
    os.symlink(target, fd_dir / str(fd))


@pytest.fixture
def io_tree(tmp_path):
    """writer (100) and light (200) hold files on fakedisk; elsewhere (300)
    holds only /dev/null, on another device."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("db", "log"):
        (data / name).write_bytes(b"x")
    dev = os.stat(data).st_dev
    assert os.stat("/dev/null").st_dev != dev, "the test needs /dev/null on another device"
    tree = FakeProc(tmp_path / "proc")
    tree.add_process(100, comm=b"writer")
    tree.add_process(200, comm=b"light")
    tree.add_process(300, comm=b"elsewhere")
    open_file(tree, 100, 3, data / "db")
    open_file(tree, 200, 3, data / "log")
    open_file(tree, 300, 3, "/dev/null")
    (tmp_path / "sys").mkdir()
    return tree, IoScript(tree, dev), tmp_path / "sys"


def io_shield(tree, sys_root):
    from oorkiller.shields.io import IoShield
    shield = IoShield(context(IO, tree.root, sys_root))
    return shield, time.monotonic()         # the shield took its baseline reading just before


def run_io(shield, script, start, seconds, **second):
    decisions = []
    for k in range(1, seconds + 1):
        script.second(**second)
        decisions += shield.step(start + k).decisions
    return decisions


def test_io_a_disk_saturated_for_for_kills_the_process_with_a_file_on_it_that_did_its_io(io_tree):
    tree, script, sys_root = io_tree
    shield, start = io_shield(tree, sys_root)
    # elsewhere writes the most, but to another disk: no file of it is on fakedisk.
    decisions = run_io(shield, script, start, 4, util=1.0, moved=110 * MiB,
                       writes={100: 100 * MiB, 200: 1 * MiB, 300: 500 * MiB})
    (kill,) = decisions
    assert isinstance(kill, Kill) and kill.resource == "io"
    assert kill.leader.pid == 100 and kill.leader.comm == b"writer" and [p.pid for p in kill.members] == [100]
    assert kill.unit == "process" and kill.first_signal == signal.SIGTERM and kill.term_timeout == 4.0
    assert kill.reason.startswith("fakedisk util ") and ">= 90.0%" in kill.reason and "for 3s" in kill.reason
    assert kill.fields["device"] == "fakedisk" and kill.fields["window"] == "3s"
    assert kill.fields["share"] == "90.9%" and kill.fields["io"] == "300MiB"   # 100 of 110 MiB a second
    assert kill.fields["why"].startswith("alone enough") and kill.fields["runner_up"] == "-"
    assert kill.targets == [], "the engine binds the pidfds"
    assert run_io(shield, script, start + 4, 2, util=1.0, moved=110 * MiB,
                  writes={100: 100 * MiB}) == [], "one kill at a time: wait for it"
    shield.close()


def test_io_a_saturation_shorter_than_for_decides_nothing(io_tree):
    tree, script, sys_root = io_tree
    shield, start = io_shield(tree, sys_root)
    burst = run_io(shield, script, start, 3, util=1.0, moved=110 * MiB, writes={100: 100 * MiB})
    assert burst == [] and shield.watches["fakedisk"].held_since is not None, "it did hold, shorter than for"
    calm = run_io(shield, script, start + 3, 3, util=0.1, moved=1 * MiB, writes={100: 1 * MiB})
    assert calm == [] and shield.watches["fakedisk"].held_since is None
    assert shield._table is None, "a healthy disk costs no process table"
    shield.close()


def test_io_saturated_with_no_process_at_min_share_says_nothing_to_kill_once_per_stretch(io_tree):
    tree, script, sys_root = io_tree
    shield, start = io_shield(tree, sys_root)
    # The device moves 110 MiB a second; those with files on it did 10 and 5
    # (the rest: the kernel's own writeback, nobody's).
    busy = dict(util=1.0, moved=110 * MiB, writes={100: 10 * MiB, 200: 5 * MiB, 300: 500 * MiB})
    (notice,) = run_io(shield, script, start, 8, **busy)
    assert isinstance(notice, Notice) and notice.event == "nothing-to-kill" and notice.resource == "io"
    assert "fakedisk util" in notice.reason and ">= 90.0%" in notice.reason
    assert "no unit with a file open on fakedisk did 25.0% of its IO (min_share)" in notice.reason
    assert run_io(shield, script, start + 8, 1, util=0.0) == []          # the stretch ends
    (again,) = run_io(shield, script, start + 9, 5, **busy)
    assert isinstance(again, Notice) and again.event == "nothing-to-kill", "a new stretch, a new notice"
    shield.close()


def test_io_after_its_kill_waits_the_cooldown_and_a_whole_new_for(io_tree):
    tree, script, sys_root = io_tree
    shield, start = io_shield(tree, sys_root)
    busy = dict(util=1.0, moved=110 * MiB, writes={100: 100 * MiB})
    (kill,) = run_io(shield, script, start, 4, **busy)
    finish(kill, at=start + 4.5)
    # The end is seen at start+5: cooldown until start+15, then `for` (3s) again.
    assert run_io(shield, script, start + 4, 13, **busy) == []
    (second,) = run_io(shield, script, start + 17, 2, **busy)
    assert isinstance(second, Kill) and second.leader.pid == 100 and second is not kill
    shield.close()


# ------------------------------------------------------------------ network
NETWORK = "network: {{duplicate_mac: {{interval: 1s, action: {action}}}}}\n"


@pytest.fixture
def no_ovs(monkeypatch):
    """No Open vSwitch database anywhere: ovs-vsctl is never run."""
    from oorkiller.proc import ovs
    monkeypatch.delenv("OORKILLER_OVS_DB", raising=False)
    monkeypatch.delenv("OVS_RUNDIR", raising=False)
    monkeypatch.setattr(ovs, "DEFAULT_SOCKETS", ())
    assert not ovs.available()


@pytest.fixture
def net(tmp_path, no_ovs):
    """A fake /sys and a /dev without kmsg (an empty kernel log)."""
    (tmp_path / "dev").mkdir()
    return FakeSys(tmp_path / "sys"), tmp_path / "dev"


def network_shield(sys_tree, dev_root, action="alert"):
    from oorkiller.shields.network import NetworkShield
    return NetworkShield(context(NETWORK.format(action=action), sys_root=sys_tree.root, dev_root=dev_root))


def steps(shield, times):
    return [d for now in times for d in shield.step(float(now)).decisions]


def test_network_two_interfaces_with_one_mac_are_one_notice_and_its_end_one_more(net):
    sys_tree, dev_root = net
    sys_tree.add("eth0", MAC, physical=True)
    sys_tree.add("eth1", MAC, physical=True)
    sys_tree.add("eth2", "52:54:00:00:00:02", physical=True)
    shield = network_shield(sys_tree, dev_root)
    (seen,) = steps(shield, range(3))
    assert isinstance(seen, Notice) and seen.event == "duplicate-mac" and seen.level == "warning"
    assert seen.resource == "network"
    assert (seen.fields["mac"], seen.fields["interfaces"], seen.fields["kind"], seen.fields["source"]) == (
        MAC, "eth0,eth1", "local", "sysfs")
    assert shield.state == "acting"
    shutil.rmtree(os.path.join(sys_tree.net, "eth1"))       # one of them is gone
    (cleared,) = steps(shield, range(3, 6))
    assert isinstance(cleared, Notice) and cleared.event == "duplicate-mac-cleared" and cleared.level == "info"
    assert (cleared.fields["mac"], cleared.fields["interfaces"]) == (MAC, "eth0,eth1")
    assert shield.state == "ok"
    shield.close()


def test_network_action_down_sets_the_newer_of_two_taps_down_never_the_bridge_or_uplink(net):
    sys_tree, dev_root = net
    sys_tree.add("eth0", "52:54:00:00:00:09", physical=True)            # the uplink
    sys_tree.add("vnet0", TAP_MAC, tap=True)
    sys_tree.add("vnet1", TAP_MAC, tap=True)
    # The bridge, the newest of all, took its ports' MAC: stacked, not a carrier.
    newest = sys_tree.add("br0", TAP_MAC, bridge=True, devtype="bridge", lowers=("eth0", "vnet0", "vnet1"))
    assert newest > 4
    shield = network_shield(sys_tree, dev_root, action="down")
    decisions = steps(shield, range(3))
    (down,) = [d for d in decisions if isinstance(d, LinkDown)]
    assert down.interface == "vnet1" and down.resource == "network" and down.fields["ifindex"] == 4
    assert down.fields["mac"] == TAP_MAC and down.fields["interfaces"] == "vnet0,vnet1"
    assert down.fields["stacked"] == "br0"
    (seen,) = [d for d in decisions if isinstance(d, Notice)]
    assert seen.event == "duplicate-mac" and decisions.index(seen) < decisions.index(down)
    shield.close()


def test_network_action_down_never_takes_a_newer_uplink_and_says_why(net):
    sys_tree, dev_root = net
    sys_tree.add("vnet0", TAP_MAC, tap=True)
    sys_tree.add("eth1", TAP_MAC, physical=True)            # newer than the tap
    shield = network_shield(sys_tree, dev_root, action="down")
    decisions = steps(shield, range(3))
    assert [d for d in decisions if isinstance(d, LinkDown)] == []
    (skipped,) = [d for d in decisions if isinstance(d, Notice) and d.event == "down"]
    assert skipped.fields["result"] == "skipped" and "eth1 is a physical NIC" in skipped.reason
    assert [d.event for d in decisions] == ["duplicate-mac", "down"]
    shield.close()


def test_network_reads_the_kernel_log_under_the_contexts_dev_root(net):
    sys_tree, dev_root = net
    sys_tree.add("br0", MAC, bridge=True, devtype="bridge")
    sys_tree.add("vnet3", TAP_MAC, tap=True, master="br0")
    kmsg = dev_root / "kmsg"
    kmsg.write_bytes(b"")
    shield = network_shield(sys_tree, dev_root)
    with open(kmsg, "ab") as log:        # written after the shield opened it: a new line
        log.write(b"0,1,1000,-;br0: received packet on vnet3 with own address as source address "
                  b"(addr:" + MAC.encode() + b", vlan:0)\n")
    (seen,) = steps(shield, [0])
    assert seen.event == "duplicate-mac" and seen.fields["source"] == "kernel"
    assert seen.fields["port"] == "vnet3"
    shield.close()


# ------------------------------------------------------------------ cpu: the storm and the bystander
CPU_STORM = """
memory: {enabled: false}
disks: []
network: {duplicate_mac: {enabled: false}}
cpu: {kill: auto, usage: 90%, runnable_per_cpu: 4, for: 2s, min_share: 10%, cooldown: 10s}
"""

STORM = range(1000, 1030)          # 30 members of process group 1000
BYSTANDER = 300                    # alone in its own process group


class StormScript:
    """Both CPUs busy, 31 tasks runnable (+ the reader itself), one second at a
    time; every process runnable (state R) and its CPU time growing."""

    def __init__(self, tree):
        self.tree, self.ticks, self.utime = tree, [1000, 0, 500, 10000, 0, 0, 0, 0, 0, 0], {}
        self.stat_fields = {}         # pid -> (comm, pgrp)
        self.write(procs_running=1)

    def add(self, pid, comm, pgrp):
        self.stat_fields[pid] = (comm, pgrp)
        self.tree.add_process(pid, comm=comm, pgrp=pgrp, state="R")

    def write(self, procs_running):
        self.tree.write("stat", cpu_stat_text(tuple(self.ticks), ncpu=2, procs_running=procs_running))

    def second(self, used, procs_running=32):
        self.ticks[0] += 2 * HZ            # both CPUs busy the whole second
        self.write(procs_running)
        for pid, ticks in used.items():
            comm, pgrp = self.stat_fields[pid]
            self.utime[pid] = self.utime.get(pid, 0) + ticks
            self.tree.set_stat(pid, comm=comm, pgrp=pgrp, state="R", utime=self.utime[pid])


@pytest.fixture
def storm_tree(tmp_path):
    tree = FakeProc(tmp_path / "proc")
    tree.write("loadavg", b"31.00 20.00 10.00 32/400 4242\n")
    script = StormScript(tree)
    for pid in STORM:
        script.add(pid, b"forker", pgrp=STORM[0])
    script.add(BYSTANDER, b"bystander", pgrp=BYSTANDER)
    return tree, script


def storm_second():
    """Each storm member 2% of the two CPUs (60% together); the bystander a third."""
    return {**{pid: 4 * HZ // 100 for pid in STORM}, BYSTANDER: 2 * HZ // 3}


def test_cpu_a_fork_storms_process_group_goes_before_a_bystander_that_alone_is_larger(storm_tree):
    from oorkiller.shields.cpu import CpuShield
    tree, script = storm_tree
    shield = CpuShield(context(CPU_STORM, tree.root))
    decisions = []
    for now in (1.0, 2.0, 3.0, 4.0):
        script.second(storm_second())
        decisions += shield.step(now).decisions
    (kill,) = decisions
    assert isinstance(kill, Kill) and kill.resource == "cpu" and kill.first_signal == signal.SIGTERM
    assert kill.unit == "process_group" and kill.group == str(STORM[0]) and kill.follow
    assert sorted(p.pid for p in kill.members) == list(STORM) and kill.leader.pid in STORM
    assert "CPU busy" in kill.reason and "runnable 15.5/CPU >= 4" in kill.reason and "for 2s" in kill.reason
    assert kill.fields["why"].startswith("alone enough"), kill.fields["why"]
    assert kill.fields["runner_up"] == f"{BYSTANDER}/bystander"
    assert kill.fields["share"] == "60.0%"
    shield.close()


def test_cpu_storm_premise_no_member_reaches_min_share_and_the_bystanders_kill_is_not_enough(storm_tree):
    """The premise of the test above: one storm member is below min_share and
    the bystander's kill would leave the run queue as long as it was."""
    from oorkiller.shields.cpu import CpuShield
    tree, script = storm_tree
    shield = CpuShield(context(CPU_STORM, tree.root))
    for now in (1.0, 2.0, 3.0):
        script.second(storm_second())
        shield.step(now)
    ranked, _, choice = shield.ranked(shield.window.usage(), shield.capacity(shield.window))
    by_unit = {(row["unit"], row["pid"] if row["unit"] == "process" else row["group"]): row for row in ranked}
    bystander = by_unit[("process", BYSTANDER)]
    storm = by_unit[("process_group", str(STORM[0]))]
    assert bystander["share"] > 300 and not bystander["enough"]
    assert storm["enough"] and storm["processes"] == 30
    assert all(not by_unit[("process", pid)]["min_share"] for pid in STORM if ("process", pid) in by_unit)
    # `oorkiller candidates` says what the shield would choose, and why.
    assert (choice["unit"], choice["runner_up"]) == ("process_group", f"{BYSTANDER}/bystander")
    assert choice["why"].startswith("alone enough (1 of 2)")
    shield.close()
