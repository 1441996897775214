"""The daemon's scheduling (daemon.Clock): calm shields share one thread and
one wake-up; a shield near its level, acting, slow or able to block is
stepped on its own thread at its own cadence; a shield is never stepped by
two threads at once; a slow step never delays the memory shield."""
import signal
import threading
import time

from oorkiller.daemon import Clock
from oorkiller.proc._calm import COUNT
from oorkiller.shields.base import Shield, Step


class Engine:
    def __init__(self):
        self.submitted = []
        self.opened = []

    def open_lanes(self, names):
        self.opened.extend(names)

    def submit(self, decision):
        self.submitted.append(decision)


class Writer:
    def __init__(self):
        self.records = []

    def emit(self, event, level, **fields):
        self.records.append((event, level, fields))


class FakeShield(Shield):
    """Records which thread stepped it and when; `plan(n)` gives the sleep
    the n-th step asks for (default: the whole interval)."""

    def __init__(self, name, interval=0.2, plan=None, work=0.0, blocks=False):
        super().__init__(context=None)
        self.name = name
        self._interval = interval
        self.plan = plan or (lambda n: interval)
        self.work = work                 # seconds each step takes
        self.blocks = blocks
        self.steps: list[tuple[float, str]] = []
        self.inside = 0
        self.overlapped = False
        self._lock = threading.Lock()

    @property
    def interval(self):
        return self._interval

    @property
    def may_block(self):
        return self.blocks

    def step(self, now):
        with self._lock:
            self.inside += 1
            self.overlapped |= self.inside > 1
        try:
            self.steps.append((time.monotonic(), threading.current_thread().name))
            if self.work:
                time.sleep(self.work)
            return Step(self.plan(len(self.steps)))
        finally:
            with self._lock:
                self.inside -= 1

    def status(self):
        return []


def run(shields, seconds):
    """The shields on a clock for `seconds`, SIGALRM handled as the daemon does."""
    stopping = threading.Event()
    clock = Clock(shields, Engine(), Writer(), stopping, alarm=True)
    before = signal.signal(signal.SIGALRM, lambda *_: clock.release())
    clock.start()
    try:
        time.sleep(seconds)
    finally:
        stopping.set()
        clock.stop()
        assert clock.join(2.0)
        clock.close()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
    return clock


def test_calm_shields_share_the_clock_and_its_wake_ups():
    memory, cpu, disk = FakeShield("memory"), FakeShield("cpu"), FakeShield("disk", interval=0.6)
    run([cpu, disk, memory], 1.3)
    for shield in (memory, cpu, disk):
        assert {name for _, name in shield.steps} == {"oork-clock"}
    # memory first in each tick, cpu in the same tick (one wake-up for both)
    assert len(memory.steps) >= 6 and abs(len(cpu.steps) - len(memory.steps)) <= 1
    pairs = list(zip(memory.steps, cpu.steps))
    assert all(0 <= c - m < 0.02 for (m, _), (c, _) in pairs), pairs
    assert 2 <= len(disk.steps) <= 4


def test_a_shield_near_its_level_gets_its_own_thread_and_comes_back_when_calm():
    # steps 3..12 ask for 20 ms (near a level); the rest for the whole interval
    memory = FakeShield("memory", plan=lambda n: 0.02 if 3 <= n <= 12 else 0.2)
    run([memory, FakeShield("cpu")], 1.4)
    names = [name for _, name in memory.steps]
    assert names[:3] == ["oork-clock"] * 3
    assert names[3:13] == ["oork-memory"] * 10          # its own cadence, on its own thread
    assert "oork-clock" in names[13:]                   # back on the clock once calm
    fast = [b - a for (a, _), (b, _) in zip(memory.steps[3:12], memory.steps[4:13])]
    assert max(fast) < 0.06, fast                       # not slowed to the clock's tick
    assert not memory.overlapped


def test_a_slow_or_blocking_shield_never_delays_the_memory_shield():
    memory = FakeShield("memory", interval=0.1)
    stuck = FakeShield("disk", interval=0.1, work=0.8, blocks=True)   # statvfs on a hung NFS
    slow = FakeShield("cpu", interval=0.1)

    def slow_step(now, step=slow.step):
        slow.work = 0.6 if len(slow.steps) == 2 else 0.0   # one calm step that hangs
        return step(now)

    slow.step = slow_step
    run([memory, stuck, slow], 2.0)
    assert {name for _, name in stuck.steps} == {"oork-disk"}
    times = [t for t, _ in memory.steps]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # while cpu hangs on the clock, memory goes on on its own thread
    assert max(gaps) < 0.25, gaps
    assert "oork-memory" in {name for _, name in memory.steps}
    assert memory.steps[-1][1] == "oork-clock"          # and comes back afterwards
    for shield in (memory, stuck, slow):
        assert not shield.overlapped


def test_a_failing_step_is_recorded_once_and_the_watch_goes_on():
    broken = FakeShield("cpu", interval=0.05)
    broken.step = lambda now: (_ for _ in ()).throw(OSError("gone"))
    memory = FakeShield("memory", interval=0.05)
    clock = run([memory, broken], 0.5)
    errors = [r for r in clock.writer.records if r[0] == "error"]
    assert len(errors) == 1 and "OSError: gone" in errors[0][2]["reason"]
    assert len(memory.steps) >= 5


def test_a_disk_on_a_remote_or_fuse_file_system_stays_off_the_clock(tmp_path):
    import dataclasses
    from oorkiller.config import load_config_text
    from oorkiller.judge.rules import RuleSet
    from oorkiller.shields.base import Context
    from oorkiller.shields.disk import DiskShield
    config = load_config_text(f"disks:\n  - path: {tmp_path}\n    interval: 5s\n", "t.yaml")
    shield = DiskShield(Context(config=config, rules=RuleSet(config)))
    try:
        (disk,) = shield.disks
        assert disk.mount is not None and not shield.may_block      # a local file system
        assert shield.calm(shield.step(0.0).sleep)                   # far from its levels
        for fstype in ("nfs4", "cifs", "fuse.sshfs", "ceph"):
            disk.mount = dataclasses.replace(disk.mount, fstype=fstype)
            assert shield.may_block, fstype
        disk.mount = dataclasses.replace(disk.mount, fstype="tmpfs")
        assert not shield.may_block
    finally:
        shield.close()


def test_the_network_shield_leaves_the_clock_while_open_vswitch_is_there(monkeypatch):
    from oorkiller.config import load_config_text
    from oorkiller.proc import ovs
    from oorkiller.shields import network
    from oorkiller.shields.base import Context
    monkeypatch.setattr(ovs, "available", lambda environ=None: False)
    config = load_config_text("network: {duplicate_mac: {interval: 10s}}\n", "t.yaml")
    shield = network.NetworkShield(Context(config=config, rules=None))
    try:
        assert not shield.may_block
        monkeypatch.setattr(ovs, "available", lambda environ=None: True)
        monkeypatch.setattr(ovs, "list_interfaces", lambda environ=None: [])
        shield.step(0.0)
        assert shield.may_block                  # its steps now run ovs-vsctl
    finally:
        shield.close()


def test_a_shield_that_decides_or_acts_is_stepped_on_its_own_thread():
    class Acting(FakeShield):
        def step(self, now):
            done = super().step(now)
            n = len(self.steps)
            if n == 2:
                done.decisions.append("a decision")
            self.state = "acting" if 2 <= n <= 5 else "ok"   # its action under way
            return done

    cpu = Acting("cpu", interval=0.1)
    clock = run([FakeShield("memory", interval=0.1), cpu], 1.2)
    names = [name for _, name in cpu.steps]
    assert names[:2] == ["oork-clock"] * 2
    assert names[2:6] == ["oork-cpu"] * 4            # after the decision, while acting
    assert names[-1] == "oork-clock"                 # calm again: back on the clock
    assert clock.engine.submitted == ["a decision"]
    assert not cpu.overlapped


class GatedShield(FakeShield):
    """Offers one gate: calm while the number in `path` stays under 10."""

    def __init__(self, name, path, housekeeping=300.0, **kwargs):
        super().__init__(name, **kwargs)
        self.path = str(path)
        self.housekeeping = housekeeping
        self.resumed = 0

    def calm_gates(self):
        return [(COUNT, self.path, 10)]

    def resume(self, kept):
        self.resumed += 1


def test_a_gated_shield_is_not_stepped_while_its_gate_holds_and_at_once_when_it_fails(tmp_path):
    number = tmp_path / "number"
    number.write_text("1\n")
    shield = GatedShield("gated", number, interval=0.1)

    def overflow():
        with open(number, "r+") as f:            # in place: the gate holds the file open
            f.write("50\n")
    started = time.monotonic()
    threading.Timer(1.0, overflow).start()
    run([shield], 2.0)
    before = [at for at, _ in shield.steps if at < started + 1.0]
    after = [at for at, _ in shield.steps if at >= started + 1.0]
    # The first step makes the gate, the second arms it; then only the gate is checked.
    assert len(before) <= 3, before
    assert after and after[0] - (started + 1.0) < 0.3        # stepped at the next check
    assert len(after) >= 5                                     # and at every check while it fails
    assert shield.resumed >= 1
    assert {name for _, name in shield.steps} == {"oork-clock"}


def test_a_gated_shield_is_still_stepped_for_its_housekeeping(tmp_path):
    number = tmp_path / "number"
    number.write_text("1\n")
    shield = GatedShield("gated", number, interval=0.1, housekeeping=0.3)
    run([shield], 2.0)
    gaps = [b - a for (a, _), (b, _) in zip(shield.steps[1:], shield.steps[2:])]
    assert 4 <= len(shield.steps) <= 10, shield.steps
    assert all(gap > 0.25 for gap in gaps), gaps


def test_a_gated_shield_released_from_a_stuck_clock_is_stepped_on_time_on_its_own_thread(tmp_path):
    number = tmp_path / "number"
    number.write_text("1\n")
    gated = GatedShield("memory", number, interval=0.1)
    slow = FakeShield("cpu", interval=0.1)

    def slow_step(now, step=slow.step):
        slow.work = 0.8 if len(slow.steps) == 6 else 0.0     # one calm step that hangs
        return step(now)

    slow.step = slow_step
    run([gated, slow], 2.0)
    hang = slow.steps[5][0]
    during = [at for at, name in gated.steps if hang < at < hang + 0.8 and name == "oork-memory"]
    # gated before the hang; released, it is stepped within its interval, not its housekeeping
    assert during and during[0] - hang < 0.35, gated.steps
    assert not gated.overlapped


def test_the_lane_of_a_shield_that_may_kill_is_open_before_its_first_step():
    """A worker made at a lane's first decision would cost the first kill of
    the daemon's life a thread's start, and a stack faulted in while memory
    is short: the clock has the engine start it before the shield's first step."""
    from oorkiller.act.engine import Engine as RealEngine
    from oorkiller.record.writer import RecordWriter

    class KillingShield(FakeShield):
        action_lanes = ("memory",)

    writer = RecordWriter(kmsg=False, stderr=False)
    engine = RealEngine(writer)
    seen = []
    shield = KillingShield("memory")
    first_step = shield.step

    def step(now):
        if not seen:
            seen.append(sorted(t.name for t in threading.enumerate() if t.name.startswith("oork-act")))
        return first_step(now)

    shield.step = step
    stopping = threading.Event()
    clock = Clock([shield, FakeShield("network")], engine, Writer(), stopping)
    clock.start()
    try:
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stopping.set()
        clock.stop()
        clock.join(2)
        engine.stop()
        writer.close()
    assert seen == [["oork-act-memory"]], "one lane, the killing shield's, open before any step"
