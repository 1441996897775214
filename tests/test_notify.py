"""systemd integration: READY=1, STOPPING=1 and a watchdog that pings only
while every shield is really watching (a hung monitor stops the pings, so
systemd restarts the daemon)."""
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
import yaml

from oorkiller import notify
from oorkiller.notify import Notifier, WatchdogPinger, healthy, stale, watchdog_interval

import sandbox


class FakeSystemd:
    """A unix datagram socket standing for systemd's notification socket."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages = []           # (monotonic time, text)

    def receive(self, timeout=0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append((time.monotonic(), data.decode()))
        return [text for _, text in self.messages]

    def drain(self):
        """Read what is queued now (the kernel queues only ~10 datagrams)."""
        while True:
            try:
                data = self.sock.recv(4096, socket.MSG_DONTWAIT)
            except (BlockingIOError, TimeoutError):
                return
            self.messages.append((time.monotonic(), data.decode()))

    def times_of(self, line):
        return [t for t, text in self.messages if line in text.split("\n")]

    def close(self):
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    fake = FakeSystemd(str(tmp_path / "notify"))
    yield fake
    fake.close()


# ------------------------------------------------------------ the protocol

def test_messages_reach_the_notify_socket(systemd, tmp_path):
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    assert notifier.ready("watching memory")
    assert notifier.watchdog()
    assert notifier.status("two\nlines")
    assert notifier.stopping()
    assert systemd.receive(0.2) == ["READY=1\nSTATUS=watching memory", "WATCHDOG=1",
                                    "STATUS=two lines", "STOPPING=1"]


def test_an_abstract_socket_is_supported():
    name = f"oorkiller-test-{os.getpid()}"
    fake = FakeSystemd(b"\0" + name.encode())
    try:
        assert Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert fake.receive(0.2) == ["READY=1"]
    finally:
        fake.close()


def test_outside_systemd_every_call_does_nothing():
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert not notifier.ready() and not notifier.watchdog() and not notifier.stopping()
    assert not Notifier.from_env({"NOTIFY_SOCKET": "relative/path"}).enabled


def test_a_vanished_socket_is_not_an_error(tmp_path):
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.watchdog() is False


def test_the_watchdog_interval_is_half_of_watchdog_usec():
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "zero"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    # the variables were meant for another process (inherited by a child)
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "2"}, pid=2) == 5.0


# ------------------------------------------------------------ liveness

class FakeMonitor:
    def __init__(self, name, interval, last_step):
        self.name, self.interval, self.last_step = name, interval, last_step


def test_a_monitor_is_stale_after_twice_its_interval_and_never_before_5s():
    now = 1000.0
    monitors = [FakeMonitor("memory", 1.0, now - 4.9), FakeMonitor("disks", 5.0, now - 9.9)]
    assert healthy(monitors, now)
    assert stale(monitors, now + 0.2) == ["memory", "disks"]
    assert stale([FakeMonitor("network", 10.0, now - 15)], now) == []


def test_a_monitor_that_never_completed_a_step_is_not_healthy():
    assert not healthy([FakeMonitor("memory", 1.0, 0.0)], 1000.0)
    assert healthy([], 1000.0)


def test_pings_stop_when_a_monitor_hangs_and_resume_when_it_recovers(systemd, tmp_path):
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    pinger = WatchdogPinger(notifier, interval=1.0)
    memory, cpu = FakeMonitor("memory", 1.0, 0.0), FakeMonitor("cpu", 1.0, 0.0)
    sent = []
    for tick in range(40):               # the main loop turns every 0.5 s
        now = 100.0 + tick * 0.5
        cpu.last_step = now
        if now < 105.0 or now >= 115.0:  # memory hangs from t=105 to t=115
            memory.last_step = now
        if pinger.tick([memory, cpu], now):
            sent.append(now)
        systemd.drain()
    assert sent[0] == 100.0
    assert all(b - a >= 1.0 for a, b in zip(sent, sent[1:]))      # rate-limited
    gap = [t for t in sent if 105.0 < t < 115.0]
    assert gap and max(gap) <= 110.0     # stale once 5 s passed without a step
    assert not [t for t in sent if 110.0 < t < 115.0]
    assert [t for t in sent if t >= 115.0]                         # resumed
    texts = [text for _, text in systemd.messages]
    assert "STATUS=monitor stalled: memory; watchdog pings withheld" in texts
    assert texts.count("WATCHDOG=1") == len(sent)


def test_a_full_notify_queue_never_blocks_the_daemon(systemd, tmp_path):
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    began = time.monotonic()
    results = [notifier.watchdog() for _ in range(1000)]   # nobody reads them
    assert time.monotonic() - began < 5.0
    assert results.count(False) > 0       # dropped, not waited for


def test_the_main_loop_sleeps_until_the_next_ping_is_due():
    pinger = WatchdogPinger(Notifier(None), interval=5.0)
    memory = FakeMonitor("memory", 1.0, 0.0)
    pinger.tick([memory], 100.0)                 # still starting: check again soon
    assert pinger.sleep_for(100.0) == notify.RECHECK
    memory.last_step = 100.1
    pinger.tick([memory], 100.2)
    assert pinger.sleep_for(101.2) == pytest.approx(4.0)   # a ping was due at 100.2
    assert WatchdogPinger(Notifier(None), None).sleep_for(100.0) is None


def test_without_a_watchdog_the_pinger_sends_nothing(systemd, tmp_path):
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    pinger = WatchdogPinger.from_env(notifier, {})
    assert not pinger.enabled
    assert not pinger.tick([], 100.0)
    assert systemd.receive(0.1) == []


# ------------------------------------------------------------ the real daemon

def run_daemon_under_fake_systemd(tmp_path, seconds, hang_after=None):
    """`oorkiller run --dry-run` in a PID namespace, notifying our fake socket.
    With `hang_after`, the threads that step the memory shield are stopped
    (ptrace) that many seconds after the start, as a shield stuck in the
    kernel would be: the clock, which steps it while memory is plentiful,
    and its own thread, which steps it near a level.

    Returns the fake systemd (its messages) and the daemon's exit code.
    """
    config = sandbox.base_config(memory={"enabled": True, "interval": "250ms",
                                         "available": {"term": "64MiB", "kill": "32MiB"}})
    config["log"] = {"kmsg": False, "stderr": True, "level": "info"}
    config_path = tmp_path / "oorkiller.yaml"
    config_path.write_text(yaml.safe_dump(config))
    fake = FakeSystemd(str(tmp_path / "notify"))
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    unshare = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
         *sandbox.oorkiller_command(), "run", "-c", str(config_path), "--dry-run"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
    stopped = None
    try:
        if hang_after is not None:
            fake.receive(hang_after)
            stopped = stop_thread(_only_child(unshare.pid), "oork-clock", "oork-memory")
            seconds -= hang_after
        fake.receive(seconds)
        daemon_pid = _only_child(unshare.pid)
        os.kill(daemon_pid, signal.SIGTERM)   # the daemon, a process this test started
        if stopped:
            # The stuck threads come back only once the daemon is stopping
            # (its main thread is not frozen): a clock that resumed before
            # the SIGTERM would rightly ping again with fresh readings.
            fake.receive(0.3)
            for tid in stopped:
                resume_thread(tid)
        unshare.wait(10)
        fake.receive(0.3)
    finally:
        if unshare.poll() is None:
            unshare.kill()
            unshare.wait()
        fake.close()
    return fake, unshare.returncode, unshare.stderr.read()


_libc = ctypes.CDLL(None, use_errno=True)
PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207


def stop_thread(pid, *names):
    """Stop the threads of `pid` named `names` (kernel names), leaving the
    others running (the main thread among them): ptrace can stop a single
    thread, a signal cannot. Returns their ids."""
    stopped = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().strip() not in names:
                continue
        tid = int(tid)
        for request in (PTRACE_SEIZE, PTRACE_INTERRUPT):
            if _libc.ptrace(request, tid, None, None) != 0:
                raise OSError(ctypes.get_errno(), f"ptrace {request:#x} of thread {tid}")
        stopped.append(tid)
    assert len(stopped) == len(names), f"not every one of {names} found in {pid}"
    return stopped


def resume_thread(tid):
    _libc.ptrace(PTRACE_DETACH, tid, None, None)


def _only_child(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        [child] = f.read().split()
    return int(child)


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs util-linux unshare")
def test_the_daemon_says_ready_pings_while_healthy_and_says_stopping(tmp_path):
    fake, rc, stderr = run_daemon_under_fake_systemd(tmp_path, seconds=3.5)
    texts = [text for _, text in fake.messages]
    assert rc == 0, stderr
    assert any("READY=1" in t.split("\n") for t in texts), texts
    assert len(fake.times_of("WATCHDOG=1")) >= 4, texts      # every 0.5 s for 3.5 s
    assert "STOPPING=1" in texts[-1].split("\n"), texts
    ready_at = fake.times_of("READY=1")[0]
    assert all(t >= ready_at for t in fake.times_of("WATCHDOG=1"))


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs util-linux unshare")
def test_a_calm_daemon_keeps_pinging_while_its_gates_stand_in_for_the_steps(tmp_path):
    # Calm, every shield is looked at by its gates in C, not stepped; a gate
    # that passed is a fresh reading, so no shield is ever called stalled.
    fake, rc, stderr = run_daemon_under_fake_systemd(tmp_path, seconds=9.0)
    pings = fake.times_of("WATCHDOG=1")
    assert rc == 0, stderr
    assert len(pings) >= 14, pings                           # every 0.5 s for 9 s
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) < 1.0, gaps
    assert fake.messages[-1][0] - pings[-1] < 1.0            # until the very end
    assert not any("stalled" in text for _, text in fake.messages)


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs util-linux unshare")
def test_the_daemon_stops_pinging_when_its_memory_monitor_hangs(tmp_path):
    fake, rc, stderr = run_daemon_under_fake_systemd(tmp_path, seconds=9.0, hang_after=1.0)
    pings = fake.times_of("WATCHDOG=1")
    assert fake.times_of("READY=1"), stderr
    assert pings, stderr                 # it pinged while the monitor worked
    # hang at ~1 s, stale 5 s later: no ping in the last ~2.5 s of the run
    assert fake.messages[-1][0] - pings[-1] > 2.0, (pings, fake.messages)
    assert any("monitor stalled: memory" in text for _, text in fake.messages)
