"""Fault scenarios. Each runs as PID 1 of its own PID namespace (and, through
`unshare --mount-proc`, its own mount namespace: mounts made here are private
and vanish with it) and returns what it observed; tests/test_faults.py and
tests/test_security.py judge."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from sandbox import (MiB, Daemon, base_config, mem_available, oorkiller_command,
                     parse_stderr_record, reap, victim, wait_until)

import sandbox

HOUR = 3600
TESTS = os.path.dirname(os.path.abspath(__file__))


def records_of(daemon: Daemon) -> list[dict]:
    return [r for r in daemon.records() if r["event"] != "start"]


def memory_section(term: int, kill: int, **extra) -> dict:
    section = {"enabled": True, "interval": "1s", "term_timeout": "1s",
               "available": {"term": term, "kill": kill}}
    section.update(extra)
    return section


def short_now(need_mib: int = 100) -> dict:
    """Levels that make memory short at the daemon's first reading (term)."""
    available = mem_available()
    return memory_section(available + need_mib * MiB, available - 6000 * MiB)


def private_mounts() -> None:
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)


HOSTILE_HOG = r"""
import ctypes, mmap, sys, signal
ctypes.CDLL(None).prctl(15, ctypes.c_char_p(sys.argv[1].encode("latin-1")), 0, 0, 0)
held = []
print("ready", flush=True)
for _ in range(40):
    block = mmap.mmap(-1, 64 << 20)
    block.write(b"\1" * (64 << 20))
    held.append(block)
signal.pause()
"""


# ------------------------------------------------------------------ security
def hostile_named_hog() -> dict:
    """A hog whose comm looks like the end of a record and the start of another."""
    comm = 'x"\nevent=kill\xff)'                      # 15 bytes once latin-1 encoded
    available = mem_available()
    daemon = Daemon(base_config(memory=memory_section(available - 600 * MiB, available - 4000 * MiB)))
    hog = subprocess.Popen([sys.executable, "-c", HOSTILE_HOG, comm], stdout=subprocess.PIPE, text=True)
    hog.victim_name = "hog"
    hog.stdout.readline()
    died = wait_until(lambda: hog.poll() is not None, 30)
    time.sleep(0.3)
    stopped = daemon.stop()
    lines = [l for l in daemon.lines if not l.startswith("oorkiller-debug:")
             and not l.startswith("oorkiller: warning:")]
    not_records = [l for l in lines if parse_stderr_record(l) is None]
    expected = comm.encode("latin-1").decode("utf-8", "surrogateescape")
    return {"hog_died": died, "hog_pid": hog.pid, "comm": expected, "ended": reap(hog),
            "records": records_of(daemon), "lines_not_records": not_records, "stopped": stopped}


# ------------------------------------------------------------------ kernel log
def kmsg_unwritable() -> dict:
    """/dev/kmsg replaced (in this mount namespace) by a read-only file."""
    private_mounts()
    fake = tempfile.NamedTemporaryFile(prefix="oorkiller-kmsg-", delete=False)
    fake.close()
    subprocess.run(["mount", "--bind", fake.name, "/dev/kmsg"], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", "/dev/kmsg"], check=True)
    try:
        available = mem_available()
        daemon = Daemon(base_config(memory=memory_section(available - 600 * MiB, available - 4000 * MiB)))
        hog = victim("hog", "hog", "--chunk", "64", "--pause", "0.02", "--cap", "2600")
        died = wait_until(lambda: hog.poll() is not None, 30)
        time.sleep(0.3)
        stopped = daemon.stop()
        warnings = [l for l in daemon.lines if l.startswith("oorkiller: warning:")]
        return {"hog_died": died, "ended": reap(hog), "records": records_of(daemon),
                "warnings": warnings, "stopped": stopped,
                "fake_kmsg_bytes": os.path.getsize(fake.name)}
    finally:
        subprocess.run(["umount", "/dev/kmsg"], check=False)
        os.unlink(fake.name)


# ------------------------------------------------------------------ victims that misbehave
def vanishing_victims() -> dict:
    """A process exits between the scan and the choice, and another between the
    choice (pidfd taken) and the signal: nothing is signalled wrongly, no error,
    and the worker goes on to the next action."""
    from oorkiller.proc._proctable import ProcTable
    from oorkiller.act.engine import Engine
    from oorkiller.judge.decision import Kill
    from oorkiller.proc.targets import take_targets
    from oorkiller.record.writer import RecordWriter
    import io

    stream = io.StringIO()
    writer = RecordWriter(kmsg=False, stderr=True, stderr_stream=stream)
    engine = Engine(writer)
    table = ProcTable("/proc", os.getpid())
    early, late, next_one = (victim("sleeper", n) for n in ("early", "late", "next"))
    table.refresh()
    entries = {n: table.get(p.pid) for n, p in (("early", early), ("late", late), ("next", next_one))}

    early.kill(); early.wait()                       # gone after the scan, before the choice
    gone_before_choice = take_targets([entries["early"]])

    first = Kill("memory", "test", members=[entries["late"]], term_timeout=1.0)
    first.targets = take_targets(first.members)      # chosen: pidfd held
    late.kill(); late.wait()                         # gone before the signal
    engine.submit(first)
    first.done.wait(10)

    second = Kill("memory", "test", members=[entries["next"]], term_timeout=1.0)
    engine.submit(second)
    second.done.wait(10)
    next_one.wait(5)
    engine.stop()
    writer.close()
    records = [parse_stderr_record(l) for l in stream.getvalue().splitlines()]
    return {"targets_of_gone": len(gone_before_choice), "bound": len(first.targets),
            "outcomes": [first.outcome, second.outcome], "next_rc": next_one.returncode,
            "records": [r for r in records if r]}


# No fork in the loop: the CPU time must be the shell's own. The test kills it.
EPERM_SPINNER = "trap '' TERM; i=0; while :; do i=$((i+1)); done"


def cannot_signal() -> dict:
    """The daemon runs without CAP_KILL; the spinners belong to uid 1000, so
    every signal fails with EPERM. Then a spinner of its own uid comes: the
    daemon must still act on it."""
    cpu = {"enabled": True, "interval": "500ms", "usage": "80%", "runnable_per_cpu": 0, "for": "2s",
           "min_share": "25%", "kill": "process", "term_timeout": "1s", "cooldown": "1s"}
    sandbox_command = sandbox.oorkiller_command
    sandbox.oorkiller_command = lambda: ["setpriv", "--bounding-set=-kill", "--inh-caps=-kill",
                                         *sandbox_command()]
    try:
        daemon = Daemon(base_config(cpu=cpu))
    finally:
        sandbox.oorkiller_command = sandbox_command
    spinners = [subprocess.Popen(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups",
                                  "sh", "-c", EPERM_SPINNER]) for _ in range(2)]
    for s, name in zip(spinners, ("user1", "user2")):
        s.victim_name = name
    refused = daemon.wait_for("error", 25)
    for s in spinners:                # the test ends them (as root, outside the daemon)
        s.kill()
        s.wait()
    errors_before = len(daemon.records("error"))
    own = subprocess.Popen([sys.executable, os.path.join(TESTS, "scenarios_cpu.py"), "spin", "ownspin", "2", "40"],
                           stdout=subprocess.PIPE, text=True)
    own.victim_name = "ownspin"
    own.stdout.readline()
    own_died = wait_until(lambda: own.poll() is not None, 30)
    alive_meanwhile = daemon.proc.poll() is None
    stopped = daemon.stop()
    return {"refused": refused, "own_died": own_died, "daemon_alive": alive_meanwhile,
            "errors_before": errors_before, "ended": reap(own, *spinners),
            "records": records_of(daemon), "stopped": stopped}


FREEZER = "/sys/fs/cgroup/freezer"


def frozen_victim() -> dict:
    """The victim sits in a FROZEN cgroup v1 freezer: SIGKILL stays pending
    until it is thawed. The action must give up after its timeout with an
    error record, and the daemon must keep deciding. The frozen victim holds
    shared memory, which process_mrelease cannot free, so the shortage stays;
    the next decision takes the other process."""
    group = f"{FREEZER}/oorkiller-test-{os.getpid()}-{time.monotonic_ns()}"
    os.mkdir(group)
    stuck = None
    try:
        stuck = victim("sleeper", "frozen", "--size", "600", "--shared")
        other = victim("sleeper", "other", "--size", "200")
        with open(f"{group}/cgroup.procs", "w") as f:
            f.write(str(stuck.pid))
        with open(f"{group}/freezer.state", "w") as f:
            f.write("FROZEN")
        wait_until(lambda: open(f"{group}/freezer.state").read().strip() == "FROZEN", 5)
        daemon = Daemon(base_config(memory=short_now(need_mib=100)))
        began = time.monotonic()
        gave_up = daemon.wait_for("error", 20)
        gave_up_after = time.monotonic() - began
        # The shortage is still there: the daemon decides again after giving up.
        # Counted from the error record itself: the next decision may already
        # be recorded by the time wait_for returns.
        def after_giving_up():
            records = daemon.records()
            first_error = next((i for i, r in enumerate(records) if r["event"] == "error"), len(records))
            return records[first_error + 1:]
        decided_again = wait_until(lambda: any(r["event"] in ("term", "kill")
                                               for r in after_giving_up()), 10)
        alive_while_frozen = stuck.poll() is None
        stopped = daemon.stop()
        reap(other)
        return {"gave_up": gave_up, "gave_up_after": gave_up_after, "decided_again": decided_again,
                "alive_while_frozen": alive_while_frozen, "records": records_of(daemon),
                "stopped": stopped}
    finally:
        with open(f"{group}/freezer.state", "w") as f:
            f.write("THAWED")
        if stuck is not None:
            stuck.kill()
            stuck.wait()
        wait_until(lambda: not open(f"{group}/cgroup.procs").read().strip(), 5)
        os.rmdir(group)


# ------------------------------------------------------------------ disks
def tmpfs(size: str = "16m") -> str:
    path = tempfile.mkdtemp(prefix="oorkiller-fault-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},nr_inodes=1000,mode=755",
                    "tmpfs", path], check=True)
    return path


def old_file(path: str, size: int) -> None:
    with open(path, "wb") as f:
        f.write(b"\1" * size)
    then = time.time() - 2 * HOUR
    os.utime(path, (then, then))


def disk_entry(path: str, logs: str) -> dict:
    return {"path": path, "interval": "200ms", "free": {"clean": "40%", "kill": "1%"},
            "inodes_free": {"clean": "5%", "kill": "1%"}, "until": {"free": "70%", "inodes_free": "10%"},
            "cleanup": [{"path": logs, "glob": "*.log.[0-9]*", "min_age": "10m"}]}


def cleanup_dir_broken(how: str) -> dict:
    """The cleanup directory is read-only (the file system remounted ro) or gone
    when the disk runs short; the memory shield must still act meanwhile."""
    private_mounts()
    fs = tmpfs()
    logs = f"{fs}/logs"
    os.mkdir(logs)
    try:
        for i in range(12):
            old_file(f"{logs}/app.log.{i}", 1 * MiB)
        if how == "read-only":
            subprocess.run(["mount", "-o", "remount,ro", fs], check=True)
        else:
            for name in os.listdir(logs):
                os.unlink(f"{logs}/{name}")
            os.rmdir(logs)
            old_file(f"{fs}/ballast", 12 * MiB)
        available = mem_available()
        daemon = Daemon(base_config(disks=[disk_entry(fs, logs)],
                                    memory=memory_section(available - 600 * MiB, available - 4000 * MiB)))
        time.sleep(2.0)                               # several disk readings
        hog = victim("hog", "hog", "--chunk", "64", "--pause", "0.02", "--cap", "2600")
        hog_died = wait_until(lambda: hog.poll() is not None, 30)
        time.sleep(0.5)
        files_left = len(os.listdir(logs)) if os.path.isdir(logs) else None
        stopped = daemon.stop()
        return {"hog_died": hog_died, "ended": reap(hog), "files_left": files_left,
                "records": records_of(daemon), "stopped": stopped}
    finally:
        subprocess.run(["umount", "-l", fs], check=False)


def disk_unmounted() -> dict:
    """A watched tmpfs is unmounted while the daemon watches it: the directory
    left behind (on the root file system) must not be judged or cleaned as if
    it were the disk, and the other shields go on."""
    private_mounts()
    fs = tmpfs()
    logs = f"{fs}/logs"
    os.mkdir(logs)
    try:
        available = mem_available()
        daemon = Daemon(base_config(disks=[disk_entry(fs, logs)],
                                    memory=memory_section(available - 600 * MiB, available - 4000 * MiB)))
        time.sleep(1.0)
        subprocess.run(["umount", fs], check=True)
        # What is left at the path: a directory of the root file system with
        # old files that match the rule: they must survive.
        os.mkdir(logs)
        for i in range(3):
            old_file(f"{logs}/app.log.{i}", 4096)
        time.sleep(2.0)
        hog = victim("hog", "hog", "--chunk", "64", "--pause", "0.02", "--cap", "2600")
        hog_died = wait_until(lambda: hog.poll() is not None, 30)
        time.sleep(0.3)
        survivors = sorted(os.listdir(logs))
        alive = daemon.proc.poll() is None
        stopped = daemon.stop()
        return {"hog_died": hog_died, "ended": reap(hog), "survivors": survivors, "daemon_alive": alive,
                "records": records_of(daemon), "stopped": stopped}
    finally:
        if os.path.isdir(logs):
            for name in os.listdir(logs):
                os.unlink(f"{logs}/{name}")
            os.rmdir(logs)
        subprocess.run(["umount", "-l", fs], check=False)
        try:
            os.rmdir(fs)
        except OSError:
            pass


# ------------------------------------------------------------------ /proc
def hidepid_proc() -> dict:
    """/proc mounted with hidepid=2 (invisible processes of other users for a
    non-root reader): the root daemon still sees and kills a hog of uid 1000's
    choice of name; `candidates` as root still lists everything."""
    private_mounts()
    subprocess.run(["mount", "-t", "proc", "-o", "hidepid=2", "proc", "/proc"], check=True)
    with open("/proc/self/mountinfo") as f:
        hidepid = any(" /proc " in line and "hidepid=" in line for line in f)
    available = mem_available()
    daemon = Daemon(base_config(memory=memory_section(available - 600 * MiB, available - 4000 * MiB)))
    hog = victim("hog", "hog", "--chunk", "64", "--pause", "0.02", "--cap", "2600")
    died = wait_until(lambda: hog.poll() is not None, 30)
    stopped = daemon.stop()
    return {"hidepid": hidepid, "hog_died": died, "ended": reap(hog), "records": records_of(daemon),
            "stopped": stopped}


# Root, but neither in group 0 (hidepid's default `gid=`, whose members see
# everything) nor with CAP_SYS_PTRACE.
WITHOUT_PTRACE = ("setpriv", "--regid", "65534", "--clear-groups",
                  "--bounding-set", "-sys_ptrace", "--inh-caps", "-sys_ptrace")


def hidepid_seen_without_ptrace() -> dict:
    """/proc with hidepid=2 as seen without CAP_SYS_PTRACE: the daemon and
    `candidates`, each run as root outside group 0 with CAP_SYS_PTRACE
    dropped, say that processes are hidden from them. (The kernel then shows
    such a reader only the processes it may ptrace: not even a root process
    with more capabilities than its own. A non-root reader is blinded the same
    way; it is not used here because this machine's install lives under the
    mode-700 /root.)"""
    private_mounts()
    subprocess.run(["mount", "-t", "proc", "-o", "hidepid=2", "proc", "/proc"], check=True)
    sleeper = victim("sleeper", "rootsleeper", "--size", "50")
    config = base_config(memory=memory_section(1 * MiB, 1 * MiB))
    daemon = Daemon(config, "--dry-run", prefix=WITHOUT_PTRACE)
    time.sleep(0.5)
    stopped = daemon.stop()
    listing = subprocess.run([*WITHOUT_PTRACE, *oorkiller_command(), "candidates", "-c", daemon.config_path, "--json"],
                             capture_output=True, text=True, timeout=60)
    as_root = subprocess.run([*oorkiller_command(), "candidates", "-c", daemon.config_path, "--json"],
                             capture_output=True, text=True, timeout=60)
    return {"records": daemon.records(), "stopped": stopped,
            "blinded": {"rc": listing.returncode, "stdout": listing.stdout, "stderr": listing.stderr},
            "root": {"rc": as_root.returncode, "stdout": as_root.stdout, "stderr": as_root.stderr},
            "sleeper_pid": sleeper.pid, "ended": reap(sleeper)}
