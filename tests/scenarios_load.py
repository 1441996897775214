"""Load scenarios: many processes, churn, a bounded fork bomb, oscillating
memory. Each runs as PID 1 of its own PID namespace (sandbox.in_pid_namespace)
with the daemon scoped to it, and returns what it observed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sandbox import MiB, Daemon, base_config, mem_available, reap, victim, wait_until

FORKER = r"""
import ctypes, os, signal, sys
prctl = ctypes.CDLL(None).prctl
prctl(15, b"sleepers", 0, 0, 0)
for _ in range(int(sys.argv[1])):
    if os.fork() == 0:
        prctl(1, signal.SIGKILL, 0, 0, 0)     # die with the parent
        signal.pause()
        os._exit(0)
print("ready", flush=True)
signal.pause()
"""

BOMB = r"""
import ctypes, mmap, os, signal, sys, time
libc = ctypes.CDLL(None)
libc.prctl(15, b"bomb", 0, 0, 0)
os.setpgid(0, 0)
limit, mib = int(sys.argv[1]), int(sys.argv[2])
go_read, go_write = os.pipe()                 # closed by the leader once all exist
for _ in range(limit - 1):                    # the leader counts as one
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:                              # every member exists before any grows
        os.close(go_write)
        os.read(go_read, 1)
        block = mmap.mmap(-1, mib << 20)
        block.write(b"\1" * (mib << 20))
        signal.pause()
        os._exit(0)
print("ready", os.getpid(), flush=True)
os.close(go_write)
signal.pause()
"""

OSCILLATOR = r"""
import ctypes, mmap, sys, time
ctypes.CDLL(None).prctl(15, b"oscillator", 0, 0, 0)
size = int(sys.argv[1]) << 20
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    block = mmap.mmap(-1, size)
    block.write(b"\1" * size)                 # dips under the term level...
    time.sleep(0.3)
    block.close()                             # ...and comes back soon
    time.sleep(0.3)
"""


def memory_section(term: int, kill: int, **extra) -> dict:
    section = {"enabled": True, "interval": "1s", "term_timeout": "2s",
               "available": {"term": term, "kill": kill}}
    section.update(extra)
    return section


def started(code: str, *args, name: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, text=True)
    words = proc.stdout.readline().split()
    if not words or words[0] != "ready":
        proc.kill()
        raise RuntimeError(f"{name} did not start")
    proc.victim_name, proc.extra = name, words[1:]
    return proc


def count_processes() -> int:
    return sum(1 for n in os.listdir("/proc") if n.isdigit())


def daemon_fds(daemon: Daemon) -> int:
    return len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))


def records_of(daemon: Daemon) -> list[dict]:
    return [r for r in daemon.records() if r["event"] != "start"]


# ------------------------------------------------------------------ scenarios
def hog_among_many(sleepers: int) -> dict:
    """`sleepers` idle processes, then a hog: the memory shield still picks it."""
    crowd = started(FORKER, sleepers, name="sleepers")
    processes = count_processes()
    available = mem_available()
    daemon = Daemon(base_config(memory=memory_section(available - 800 * MiB, available - 3000 * MiB)))
    hog = victim("hog", "hog", "--chunk", "64", "--pause", "0.02", "--cap", "2600")
    began = time.monotonic()
    died = wait_until(lambda: hog.poll() is not None, 40)
    died_after = time.monotonic() - began
    stopped = daemon.stop()
    crowd.kill()
    crowd.wait()
    return {"processes": processes, "hog_died": died, "died_after": died_after,
            "ended": reap(hog), "records": records_of(daemon), "stopped": stopped}


CHURN = r"""
import os, sys, time, signal
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
forks, end, next_at = 0, time.monotonic() + seconds, time.monotonic()
print("ready", flush=True)
while time.monotonic() < end:
    if os.fork() == 0:
        time.sleep(0.02)
        os._exit(0)
    forks += 1
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    next_at += 1 / rate
    time.sleep(max(0.0, next_at - time.monotonic()))
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
print(forks, flush=True)
"""


def churn_dry_run(rate: int, seconds: float) -> dict:
    """Processes born and dying at `rate`/s while every shield of processes
    runs in dry run with levels always crossed (every reading ranks)."""
    available = mem_available()
    config = base_config(
        memory=memory_section(available + 100 * MiB, available - 8000 * MiB),
        cpu={"enabled": True, "interval": "500ms", "usage": "1%", "runnable_per_cpu": 0, "for": "1s",
             "min_share": "1%", "kill": "auto", "term_timeout": "1s", "cooldown": "1s"})
    daemon = Daemon(config, "--dry-run")
    time.sleep(1.0)
    fds_before = daemon_fds(daemon)
    churn = started(CHURN, rate, seconds, name="churn")
    forks = int(churn.stdout.readline().strip() or 0)
    churn.wait()
    time.sleep(1.5)                             # the tables drop the dead
    fds_settled = daemon_fds(daemon)
    time.sleep(3.0)
    fds_after = daemon_fds(daemon)
    alive = daemon.proc.poll() is None
    stopped = daemon.stop()
    return {"forks": forks, "seconds": seconds, "fds_before": fds_before, "fds_settled": fds_settled,
            "fds_after": fds_after,
            "daemon_alive": alive, "records": records_of(daemon), "stopped": stopped}


def memory_fork_bomb(limit: int, mib: int) -> dict:
    """A bomb that forks up to `limit` processes of `mib` MiB each, in one
    process group; `kill: process_group` takes it all in one action."""
    available = mem_available()
    memory = memory_section(available - 600 * MiB, available - 3500 * MiB, term_timeout="1s")
    memory["kill"] = "process_group"
    daemon = Daemon(base_config(memory=memory))
    bomb = started(BOMB, limit, mib, name="bomb")
    pgid = int(bomb.extra[0])
    began = time.monotonic()

    def group_gone():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        # zombies of the bomb still count as members: reap what PID 1 adopted
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        return False
    gone = wait_until(group_gone, 40)
    gone_after = time.monotonic() - began
    peak = None
    stopped = daemon.stop()
    if not gone:
        os.killpg(pgid, signal.SIGKILL)
    bomb.wait()
    return {"gone": gone, "gone_after": gone_after, "pgid": pgid, "peak": peak,
            "records": records_of(daemon), "stopped": stopped}


def oscillating_memory(seconds: float) -> dict:
    """Memory dips under the term level for 300 ms every 600 ms; one process
    sits still beside it. One shortage at a time: one action, then calm."""
    available = mem_available()
    # The bystander is protected so that a shortage some other test causes on
    # this shared machine gives `nothing-to-kill`, not a second victim.
    daemon = Daemon(base_config(memory=memory_section(available - 500 * MiB, available - 4000 * MiB),
                                rules=[{"match": {"name": "^bystander$"}, "protect": True}]))
    bystander = victim("sleeper", "bystander", "--size", "300")
    oscillator = started(OSCILLATOR, 900, seconds, name="oscillator")
    died = wait_until(lambda: oscillator.poll() is not None, seconds)
    time.sleep(3.0)                               # any second action would come now
    stopped = daemon.stop()
    return {"died": died, "ended": reap(oscillator, bystander), "records": records_of(daemon),
            "stopped": stopped}
