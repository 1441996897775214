"""oorkiller as a service of a real systemd: a minimal Debian root
(tests/setup-systemd-root.sh) booted with systemd-nspawn, in its own PID,
mount and network namespaces, with this test's venv bind-mounted read-only.

install-service writes the unit; start reaches active (running) through
READY=1; reload and stop work and are recorded in the journal; and when the
threads that step the memory shield are frozen (ptrace, no test hook in the daemon) the
watchdog pings stop and systemd restarts the daemon; uninstall-service stops and
removes it and keeps the configuration. Everything signalled
lives inside the container.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

# The first run builds the root (debootstrap, about a minute): more than the default timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("OORKILLER_SYSTEMD_ROOT", "/var/tmp/oorkiller-systemd-root")
PROGRAM = os.path.join(sys.prefix, "bin", "oorkiller")
# Run inside the container by its own python3: freeze only the threads of PID
# argv[1] that step the memory shield, found by their kernel names: oork-clock
# (while memory is plentiful, with the other calm shields and the watchdog
# pings) and oork-memory (near a level); the main thread, which takes over the
# pings when the clock stalls, and the other threads keep running.
FREEZE = r"""
import ctypes, glob, os, signal, sys
signal.alarm(90)                       # never hold them longer: exiting detaches the threads
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_SEIZE, PTRACE_INTERRUPT, WALL = 0x4206, 0x4207, 0x40000000
pid = int(sys.argv[1])
names = {int(p.split("/")[-2]): open(p).read().strip() for p in glob.glob(f"/proc/{pid}/task/*/comm")}
tids = [t for t, n in names.items() if n in ("oork-clock", "oork-memory")]
if len(tids) != 2:
    sys.exit(f"no threads oork-clock and oork-memory in {sorted(names.values())}")
for tid in tids:
    for request in (PTRACE_SEIZE, PTRACE_INTERRUPT):
        if libc.ptrace(request, tid, None, None) != 0:
            sys.exit(f"ptrace {request:#x} {tid}: {os.strerror(ctypes.get_errno())}")
print(" ".join(map(str, tids)), flush=True)
while True:                            # reap their events, or the dead process stays a zombie
    try:
        os.waitpid(-1, WALL)
    except ChildProcessError:
        break
"""


def why_not_here():
    if os.geteuid() != 0:
        return "needs root"
    if not os.access(PROGRAM, os.X_OK):
        return f"needs oorkiller installed in this venv ({PROGRAM})"
    if sys.base_prefix.startswith("/usr"):
        return "the test venv's Python must live outside /usr (it is bind-mounted into the container)"
    built = subprocess.run(["bash", os.path.join(TESTS, "setup-systemd-root.sh")],
                           capture_output=True, text=True, timeout=900)
    if built.returncode != 0 or not shutil.which("systemd-nspawn"):
        return f"cannot build the systemd root: {built.stderr.strip()[-300:]}"
    return None


class Container:
    """A booted systemd-nspawn container; `run` executes a command inside it."""

    def __init__(self):
        self.log = tempfile.TemporaryFile()
        binds = sorted({sys.base_prefix, sys.prefix})
        self.nspawn = subprocess.Popen(
            ["systemd-nspawn", "-D", ROOT, "--volatile=overlay", "--register=no", "--keep-unit",
             "--private-network", "-M", f"oork-test-{os.getpid()}", "--console=pipe",
             *[f"--bind-ro={path}" for path in binds], "-b"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, cwd="/")
        self.leader = self._wait_for_leader()
        self._wait_until_running()

    def _wait_for_leader(self) -> int:
        """The container's PID 1 (systemd), a child of systemd-nspawn."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.nspawn.poll() is None:
            try:
                with open(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children") as f:
                    for pid in f.read().split():
                        with open(f"/proc/{pid}/comm") as comm:
                            if comm.read().strip() == "systemd":
                                return int(pid)
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"systemd did not start in the container:\n{self.output()}")

    def _wait_until_running(self) -> None:
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            state = self.run("systemctl", "is-system-running").stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.25)
        raise AssertionError(f"the container's systemd is {state!r}:\n{self.output()}")

    def run(self, *argv, timeout=60, **kw):
        return subprocess.run(["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "-C",
                               "--root", "--wd=/", *argv], capture_output=True, text=True, timeout=timeout, **kw)

    def popen(self, *argv, **kw):
        return subprocess.Popen(["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "-C",
                                 "--root", "--wd=/", *argv], text=True, **kw)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-3000:]

    def close(self) -> None:
        self.nspawn.terminate()          # our own nspawn: it halts the container
        try:
            self.nspawn.wait(30)
        except subprocess.TimeoutExpired:
            self.nspawn.kill()
            self.nspawn.wait()


@pytest.fixture(scope="module")
def container():
    reason = why_not_here()
    if reason:
        pytest.skip(reason)
    box = Container()
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def service(container):
    """oorkiller installed as a service, on a dry-run configuration written first."""
    container.run("systemctl", "stop", "oorkiller")
    wrote = container.run("sh", "-c", "mkdir -p -m 0755 /etc/oorkiller && "
                          "printf 'dry_run: true\\n' > /etc/oorkiller/oorkiller.yaml && "
                          "chmod 0644 /etc/oorkiller/oorkiller.yaml")
    assert wrote.returncode == 0, wrote.stderr
    installed = container.run(PROGRAM, "install-service")
    assert installed.returncode == 0, installed.stderr
    assert "kept /etc/oorkiller/oorkiller.yaml" in installed.stdout
    assert "ran: systemctl daemon-reload" in installed.stdout
    if any(p == d or p.startswith(d + "/") for p in (sys.prefix, sys.base_prefix) for d in ("/tmp", "/var/tmp")):
        # The unit's PrivateTmp=yes hides /tmp: a test venv there (a CI clone)
        # would not be found. Operators install outside /tmp; this test's
        # program is let through with a drop-in, the shipped unit unchanged.
        dropin = container.run("sh", "-c", "mkdir -p /etc/systemd/system/oorkiller.service.d && "
                               "printf '[Service]\\nPrivateTmp=no\\n' > "
                               "/etc/systemd/system/oorkiller.service.d/test-venv-in-tmp.conf && "
                               "systemctl daemon-reload")
        assert dropin.returncode == 0, dropin.stderr
    yield container
    container.run("systemctl", "stop", "oorkiller")


def show(box, prop: str) -> str:
    return box.run("systemctl", "show", "-P", prop, "oorkiller").stdout.strip()


def journal(box) -> str:
    return box.run("journalctl", "-u", "oorkiller", "--no-pager", "-o", "cat").stdout


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


def test_start_reload_stop_under_systemd_with_records_in_the_journal(service):
    started = service.run("systemctl", "start", "oorkiller")
    assert started.returncode == 0, started.stderr + journal(service)
    assert (show(service, "ActiveState"), show(service, "SubState")) == ("active", "running")
    assert show(service, "ExecStart").count(f"path={PROGRAM} ") == 1
    assert show(service, "StatusText").startswith("watching ")        # READY=1 came with STATUS=
    assert wait_for(lambda: "oorkiller: start " in journal(service), 10), journal(service)

    reloaded = service.run("systemctl", "reload", "oorkiller")
    assert reloaded.returncode == 0, reloaded.stderr
    assert wait_for(lambda: "oorkiller: reload " in journal(service), 10), journal(service)
    assert show(service, "ActiveState") == "active"

    began = time.monotonic()
    stopped = service.run("systemctl", "stop", "oorkiller")
    took = time.monotonic() - began
    assert stopped.returncode == 0 and took < 5, (took, stopped.stderr)   # TimeoutStopSec=5s
    assert show(service, "ActiveState") == "inactive" and show(service, "Result") == "success"
    assert "oorkiller: stop " in journal(service)


def test_the_watchdog_restarts_a_daemon_whose_memory_shield_hangs(service):
    assert service.run("systemctl", "start", "oorkiller").returncode == 0
    first = show(service, "MainPID")
    freezer = service.popen("python3", "-c", FREEZE, first, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        frozen = freezer.stdout.readline().split()
        assert frozen and all(t.isdigit() for t in frozen), freezer.stderr.read()
        # the daemon names the stalled shield, then systemd's watchdog fires
        assert wait_for(lambda: "stalled: " in show(service, "StatusText"), 20), show(service, "StatusText")
        assert "memory" in show(service, "StatusText").split("stalled: ")[1]
        assert wait_for(lambda: show(service, "MainPID") not in ("0", first), 40), journal(service)
    finally:
        freezer.kill()                   # nsenter; its python3 exits with the frozen process anyway
        freezer.wait()
    assert wait_for(lambda: show(service, "SubState") == "running", 20)
    text = journal(service)
    assert "Watchdog timeout" in text, text                          # systemd's own line
    assert text.count("oorkiller: start ") >= 2, text


def test_uninstall_stops_and_removes_the_service_and_keeps_the_config(service):
    assert service.run("systemctl", "start", "oorkiller").returncode == 0
    removed = service.run(PROGRAM, "uninstall-service")
    assert removed.returncode == 0, removed.stderr
    assert "ran: systemctl disable --now oorkiller.service" in removed.stdout
    assert show(service, "ActiveState") == "inactive" and show(service, "LoadState") == "not-found"
    assert "kept /etc/oorkiller/oorkiller.yaml" in removed.stdout
    assert service.run("cat", "/etc/oorkiller/oorkiller.yaml").stdout == "dry_run: true\n"
