"""Disk-shield scenarios. Each runs as PID 1 of its own PID namespace, which
`unshare --mount-proc` also gives a mount namespace of its own; mounts are made
private first, so the tmpfs file systems here are invisible to the machine."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from sandbox import MiB, Daemon, base_config, mem_available, reap, victim, wait_until

HOUR = 3600


def private_tmpfs(size: str = "64m", inodes: int = 2000) -> str:
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    path = tempfile.mkdtemp(prefix="oorkiller-disk-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},nr_inodes={inodes},mode=755",
                    "tmpfs", path], check=True)
    return path


def make(path: str, size: int, age: float) -> None:
    with open(path, "wb") as f:
        f.write(b"\1" * size)
    then = time.time() - age
    os.utime(path, (then, then))


def disk_section(path: str, **extra) -> dict:
    section = {"path": path, "interval": "500ms",
               "free": {"clean": "30%", "kill": "1%"},
               "inodes_free": {"clean": "10%", "kill": "1%"},
               "until": {"free": "50%", "inodes_free": "50%"}}
    section.update(extra)
    return section


def logs_rule(path: str, **extra) -> dict:
    rule = {"path": path, "glob": "*.log.[0-9]*", "min_age": "10m"}
    rule.update(extra)
    return rule




def finish(daemon: Daemon, **observed) -> dict:
    observed["stopped"] = daemon.stop()
    observed["records"] = [r for r in daemon.records() if r["event"] != "start"]
    return observed


# ------------------------------------------------------------------ scenarios
def fill_space() -> dict:
    """20 rotated logs of 2 MiB (ovs.log.0 oldest), a live log, young logs and
    ballast: the disk is below `clean`; the oldest go until `until`."""
    fs = private_tmpfs()
    logs = f"{fs}/logs"
    os.mkdir(logs)
    for i in range(20):
        make(f"{logs}/ovs.log.{i}", 2 * MiB, (30 - i) * HOUR)
    make(f"{logs}/ovs.log", 2 * MiB, 40 * HOUR)          # not matching the glob
    make(f"{logs}/young.log.1", 2 * MiB, 60)              # younger than min_age
    make(f"{fs}/ballast", 6 * MiB, 50 * HOUR)             # outside the rule's directory
    daemon = Daemon(base_config(disks=[disk_section(fs, cleanup=[logs_rule(logs)])]))
    daemon.wait_for("cleanup", 10)
    time.sleep(1.2)                                       # a second pass would show now
    sv = os.statvfs(fs)
    return finish(daemon, left=sorted(os.listdir(logs)), ballast=os.path.exists(f"{fs}/ballast"),
                  free_pct=sv.f_bavail * 100 / sv.f_blocks)


def inode_exhaustion() -> dict:
    """1900 tiny rotated logs exhaust the inodes of a 2000-inode file system."""
    fs = private_tmpfs(inodes=2000)
    logs = f"{fs}/logs"
    os.mkdir(logs)
    for i in range(1900):
        make(f"{logs}/tiny.log.{i}", 10, (3000 - i) * 60)
    daemon = Daemon(base_config(disks=[disk_section(fs, cleanup=[logs_rule(logs)])]))
    daemon.wait_for("cleanup", 10)
    time.sleep(1.2)
    left = sorted(int(n.rsplit(".", 1)[1]) for n in os.listdir(logs))
    sv = os.statvfs(fs)
    return finish(daemon, left_count=len(left), oldest_left=left[0], newest_left=left[-1],
                  inodes_free_pct=sv.f_favail * 100 / sv.f_files)


def two_disks() -> dict:
    """Two file systems filled alike; only the one whose clean level is crossed
    is cleaned, and each stops at its own `until`."""
    fs_a, fs_b = private_tmpfs(), private_tmpfs()
    for fs in (fs_a, fs_b):
        os.mkdir(f"{fs}/logs")
        for i in range(28):
            make(f"{fs}/logs/app.log.{i}", 2 * MiB, (40 - i) * HOUR)
    # 56 of 64 MiB used: 12.5% free. A cleans below 30% up to 50%; B only below 5%.
    daemon = Daemon(base_config(disks=[
        disk_section(fs_a, cleanup=[logs_rule(f"{fs_a}/logs")]),
        disk_section(fs_b, free={"clean": "5%", "kill": "1%"}, until={"free": "10%", "inodes_free": "10%"},
                     cleanup=[logs_rule(f"{fs_b}/logs")])]))
    daemon.wait_for("cleanup", 10)
    time.sleep(1.5)
    return finish(daemon, a_left=len(os.listdir(f"{fs_a}/logs")), b_left=len(os.listdir(f"{fs_b}/logs")),
                  a=fs_a, b=fs_b)


HOLDER = r"""
import os, sys, signal
fds = []
for path in sys.argv[1:]:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    os.write(fd, b"\2" * (20 << 20))
    fds.append(fd)
print("ready", flush=True)
signal.pause()
"""


def deleted_open_logs() -> dict:
    """A process keeps two deleted logs open; only the one matching
    truncate_deleted is truncated, the other is reported by `status`."""
    fs = private_tmpfs()
    os.mkdir(f"{fs}/app")
    make(f"{fs}/ballast", 10 * MiB, HOUR)                # with the two logs: 21.9% free
    allowed, other = f"{fs}/app/rotated.log", f"{fs}/app/data.bin"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, allowed, other], stdout=subprocess.PIPE, text=True)
    holder.victim_name = "holder"
    assert holder.stdout.readline().strip() == "ready"
    os.unlink(allowed)
    os.unlink(other)
    free_before = os.statvfs(fs).f_bavail * 4096
    section = disk_section(fs, truncate_deleted=[f"{fs}/app/*.log"])
    daemon = Daemon(base_config(disks=[section]))
    truncated = daemon.wait_for("truncate", 10)
    time.sleep(0.3)
    free_after = os.statvfs(fs).f_bavail * 4096
    status = subprocess.run([sys.executable, "-m", "oorkiller", "status", "-c", daemon.config_path, "--json"],
                            capture_output=True, text=True, timeout=30)
    observed = finish(daemon, truncated=truncated is not None, regained=free_after - free_before,
                      status=status.stdout, status_rc=status.returncode, status_err=status.stderr[-2000:],
                      allowed=allowed)
    observed["ended"] = reap(holder)
    return observed


WRITER = r"""
import os, sys, time, ctypes
ctypes.CDLL(None).prctl(15, sys.argv[2].encode(), 0, 0, 0)
rate = int(sys.argv[3]) << 20
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
chunk = b"\3" * (1 << 20)
print("ready", flush=True)
began, written = time.monotonic(), 0
while time.monotonic() - began < 30:          # hard cap: the test fails, nothing else
    os.pwrite(fd, chunk, 0)                   # overwrite in place: no space grows
    written += len(chunk)
    ahead = written / rate - (time.monotonic() - began)
    if ahead > 0:
        time.sleep(ahead)
"""


def writers(dry_run: bool = False) -> dict:
    """Below `kill`, a writer at ~100 MiB/s goes; one at ~1 MiB/s stays."""
    fs = private_tmpfs()
    make(f"{fs}/ballast", 56 * MiB, HOUR)                # 12.5% free: below kill 20%
    procs = []
    for name, rate in (("fastwriter", 100), ("slowwriter", 1)):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, f"{fs}/{name}.out", name, str(rate)],
                                stdout=subprocess.PIPE, text=True)
        proc.victim_name = name
        assert proc.stdout.readline().strip() == "ready"
        procs.append(proc)
    daemon = Daemon(base_config(disks=[disk_section(
        fs, free={"clean": "30%", "kill": "20%"}, writer_rate="50MiB/s", term_timeout="2s")]),
        *(["--dry-run"] if dry_run else []))
    wait_until(lambda: procs[0].poll() is not None, 3 if dry_run else 15)
    time.sleep(1.0)
    observed = finish(daemon)
    observed["ended"] = reap(*procs)
    return observed


def cleanup_beside_memory_hog(files: int = 100_000) -> dict:
    """While a pass deletes 100,000 files, a memory hog is still killed in time."""
    fs = private_tmpfs(size="256m", inodes=files + 2000)
    logs = f"{fs}/logs"
    os.mkdir(logs)
    then = time.time() - 2 * HOUR
    for i in range(files):
        path = f"{logs}/t.log.{i}"
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
        os.utime(path, (then, then + i / 1000))
    available = mem_available()
    config = base_config(
        memory={"enabled": True, "interval": "1s", "term_timeout": "2s",
                "available": {"term": available - 600 * MiB, "kill": available - 2000 * MiB}},
        disks=[disk_section(fs, interval="1s", inodes_free={"clean": "50%", "kill": "1%"},
                            until={"free": "50%", "inodes_free": "99%"}, cleanup=[logs_rule(logs)])])
    daemon = Daemon(config)
    began = time.monotonic()
    passing = wait_until(lambda: len(os.listdir(logs)) < files, 10)    # the pass has begun
    hog = victim("hog", "hog", "--chunk", "64", "--pause", "0.02", "--cap", "2000")
    hog_started = time.monotonic()
    hog_died = wait_until(lambda: hog.poll() is not None, 20)
    hog_after = time.monotonic() - hog_started
    left_at_kill = len(os.listdir(logs))
    daemon.wait_for("cleanup", 60)
    pass_ended = time.monotonic() - began
    return finish(daemon, passing=passing, hog_died=hog_died, hog_after=hog_after,
                  left_at_kill=left_at_kill, pass_seconds=pass_ended, left=len(os.listdir(logs)),
                  ended=reap(hog))


SWAPPER = r"""
import os, signal, sys, time
log, decoy, size = sys.argv[1], sys.argv[2], 8 << 20
n = os.open(log, os.O_CREAT | os.O_WRONLY, 0o644)
os.write(n, b"\2" * size)
os.unlink(log)
keep = os.dup(n)                         # a higher number: the deleted log stays held
decoy_fd = os.open(decoy, os.O_PATH)     # all an unprivileged user may have of it
swaps = truncated = 0
def report(*_):
    print(f"swaps={swaps} truncated={truncated}", flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, report)
print("ready", flush=True)
began = time.monotonic()
while time.monotonic() - began < 40:     # hard cap: the test fails, nothing else
    for _ in range(1000):
        os.dup2(decoy_fd, n)             # fd n now means the decoy...
        os.dup2(keep, n)                 # ...and now the deleted log again
    swaps += 1000
    if os.fstat(keep).st_size == 0:      # the daemon truncated it: fill it again
        truncated += 1
        os.pwrite(keep, b"\2" * size, 0)
"""


def truncate_swap_attack(rounds: int = 16) -> dict:
    """An unprivileged holder of a deleted matching log keeps dup2-ing an
    O_PATH fd of a root file (0644, same tmpfs) onto the log's fd number, so
    between the daemon's scan and its truncation that number may mean the
    decoy. The decoy must never be opened for writing; the log is still
    truncated, round after round."""
    from inotify import IN_CLOSE_WRITE, IN_MODIFY, Watch
    fs = private_tmpfs()
    app = f"{fs}/app"
    os.mkdir(app)
    os.chown(app, 65534, 65534)
    make(f"{fs}/ballast", 48 * MiB, HOUR)               # with the log: 12.5% free
    decoy = f"{fs}/decoy"
    with open(decoy, "wb") as f:
        f.write(b"root's file")
    os.chmod(decoy, 0o644)
    before = os.stat(decoy)
    watch = Watch(decoy, IN_CLOSE_WRITE | IN_MODIFY)
    holder = subprocess.Popen(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                               sys.executable, "-c", SWAPPER, f"{app}/rotated.log", decoy],
                              stdout=subprocess.PIPE, text=True)
    holder.victim_name = "swapper"
    assert holder.stdout.readline().strip() == "ready"
    daemon = Daemon(base_config(disks=[disk_section(fs, truncate_deleted=[f"{app}/*.log"])]))
    wait_until(lambda: len(daemon.records("truncate")) >= rounds, 30)
    observed = finish(daemon)
    holder.terminate()
    report = holder.stdout.readline().strip()
    holder.wait(5)
    after = os.stat(decoy)
    writes = watch.count(IN_CLOSE_WRITE | IN_MODIFY)
    os.close(os.open(decoy, os.O_WRONLY))               # the watch does see a write open
    observed.update(report=report, decoy_writes=writes, control_writes=watch.count(IN_CLOSE_WRITE) - writes,
                    decoy_same=(before.st_size, before.st_mtime_ns, before.st_ctime_ns)
                    == (after.st_size, after.st_mtime_ns, after.st_ctime_ns),
                    decoy_text=open(decoy, "rb").read().decode(), log=f"{app}/rotated.log")
    watch.close()
    return observed


FD_HOLDER = r"""
import os, resource, signal, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
fd = os.open(sys.argv[1], os.O_RDONLY)
for _ in range(int(sys.argv[2]) - 1):
    os.dup(fd)                                # one open file, many descriptors
print("ready", flush=True)
signal.pause()
"""


class FakeWatchdog:
    """systemd's notification socket: the times of the daemon's WATCHDOG=1."""

    def __init__(self, path: str):
        import socket
        import threading
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.pings: list[float] = []
        self.running = True
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while self.running:
            try:
                data = self.sock.recv(4096)
            except OSError:
                continue
            if b"WATCHDOG=1" in data.split(b"\n"):
                self.pings.append(time.monotonic())

    def longest_gap(self, since: float) -> float:
        times = [since] + [t for t in self.pings if t >= since] + [time.monotonic()]
        return max(b - a for a, b in zip(times, times[1:]))

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


def deleted_scan_beside_many_descriptors(total: int = 200_000) -> dict:
    """Unprivileged processes (uid 65534) hold `total` descriptors of a file on
    another file system. The deleted-open scan is cut short (an error
    record) and resumes where it stopped, so a genuine deleted log held after
    them is still truncated; meanwhile the disk shield's steps stay short (a
    second disk crossing `clean` is cleaned within its interval) and the
    watchdog keeps being pinged."""
    watched, other, second = private_tmpfs(), private_tmpfs(), private_tmpfs()
    target = f"{other}/target"
    make(target, 10, HOUR)
    per = resource_limit() - 100
    holders = []
    for i in range(-(-total // per)):
        count = min(per, total - i * per)
        proc = subprocess.Popen(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                                 sys.executable, "-c", FD_HOLDER, target, str(count)],
                                stdout=subprocess.PIPE, text=True)
        proc.victim_name = f"fds{i}"
        holders.append(proc)
    held = sum(int(open_count(p.pid)) for p in holders if p.stdout.readline().strip() == "ready")
    make(f"{watched}/ballast", 30 * MiB, HOUR)            # with the 20 MiB log: 21.9% free
    os.mkdir(f"{watched}/app")
    log = f"{watched}/app/rotated.log"
    genuine = subprocess.Popen([sys.executable, "-c", HOLDER, log], stdout=subprocess.PIPE, text=True)
    genuine.victim_name = "genuine"
    assert genuine.stdout.readline().strip() == "ready"
    os.unlink(log)
    os.mkdir(f"{second}/logs")
    for i in range(8):
        make(f"{second}/logs/b.log.{i}", MiB, (10 - i) * HOUR)
    os.environ.update(NOTIFY_SOCKET=f"{second}/notify", WATCHDOG_USEC="2000000")
    watchdog = FakeWatchdog(f"{second}/notify")
    daemon = Daemon(base_config(disks=[disk_section(watched, truncate_deleted=[f"{watched}/app/*.log"]),
                                       disk_section(second, cleanup=[logs_rule(f"{second}/logs")])]))
    began = time.monotonic()
    cut = daemon.wait_for("error", 30)
    make(f"{second}/ballast", 50 * MiB, HOUR)             # the second disk below clean now
    crossed = time.monotonic()
    cleaned = daemon.wait_for("cleanup", 10, path=second)
    cleanup_after = time.monotonic() - crossed
    truncated = daemon.wait_for("truncate", 30, file=log)
    gap = watchdog.longest_gap(began)
    observed = finish(daemon, held=held, cut=cut, cleaned=cleaned is not None, cleanup_after=cleanup_after,
                      truncated=truncated is not None, longest_ping_gap=gap, pings=len(watchdog.pings),
                      seconds=time.monotonic() - began, log=log)
    watchdog.close()
    observed["ended"] = reap(genuine, *holders)
    return observed


def resource_limit() -> int:
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def open_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
