"""CPU-shield scenarios. Each runs as PID 1 of its own PID namespace (see
sandbox.in_pid_namespace) and returns what it observed; the tests judge.

Run as a script, this file is also the CPU victim: `python scenarios_cpu.py
spin NAME THREADS SECONDS` spins THREADS threads that really run in parallel
(hashing releases the GIL), and `group NAME CHILDREN SECONDS [FORK_EVERY [NICE]]`
makes a process group of spinning children (optionally forking more as it goes,
SIGTERM ignored: a fork bomb; optionally all at niceness NICE). Every victim stops by itself after SECONDS, so a
daemon that fails to act never leaves a machine busy.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from sandbox import reap, wait_until

THIS = os.path.abspath(__file__)


# ------------------------------------------------------------------ victims (script side)
def set_name(name: str) -> None:
    ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def spin_for(seconds: float, threads: int = 1) -> None:
    block = b"x" * (1 << 20)
    end = time.monotonic() + seconds

    def work():
        while time.monotonic() < end:
            hashlib.sha256(block).digest()      # the GIL is released while hashing
    for _ in range(threads - 1):
        threading.Thread(target=work, daemon=True).start()
    work()


def ready(*extra) -> None:
    sys.stdout.write(" ".join(["ready", *map(str, extra)]) + "\n")
    sys.stdout.flush()


def run_spin(name: str, threads: str, seconds: str) -> None:
    set_name(name)
    ready()
    spin_for(float(seconds), int(threads))


def run_renamed_spin(name: str, threads: str, seconds: str, rename_after: str) -> None:
    """Spin under the name exec gave (see `start(executable=)`), and take
    NAME only after `rename_after` seconds, still spinning."""
    ready()
    spinners = threading.Thread(target=spin_for, args=(float(seconds), int(threads)), daemon=True)
    spinners.start()
    time.sleep(float(rename_after))
    set_name(name)                       # the main thread's name is the process's
    spinners.join()


def run_group(name: str, children: str, seconds: str, fork_every: str = "0",
              nice: str = "0") -> None:
    """A process group: this parent and its spinning children."""
    os.setpgid(0, 0)
    os.nice(int(nice))                                  # inherited by the children
    set_name(name)
    end = time.monotonic() + float(seconds)
    if float(fork_every) > 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # inherited by the children
    pids = [_fork_spinner(name, end) for _ in range(int(children))]
    ready(os.getpgrp(), *pids)
    while time.monotonic() < end:
        if float(fork_every) > 0 and len(pids) < 200:
            pids.append(_fork_spinner(name, end))
            time.sleep(float(fork_every))
        else:
            time.sleep(0.2)
        while _reap_one():
            pass


def _fork_spinner(name: str, end: float) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            set_name(name[:11] + "-kid")
            spin_for(end - time.monotonic())
        finally:
            os._exit(0)
    return pid


def _reap_one() -> bool:
    try:
        return os.waitpid(-1, os.WNOHANG)[0] > 0
    except ChildProcessError:
        return False


# ------------------------------------------------------------------ scenarios (PID 1 side)
sys.path.insert(0, os.path.dirname(THIS))
if __name__ != "__main__":                  # a victim needs none of this
    from sandbox import Daemon, base_config


def start(kind: str, name: str, *args, executable: str = sys.executable,
          session: bool = False, script: str = THIS) -> subprocess.Popen:
    """A victim (`script KIND NAME ARGS`, which prints `ready` when it is);
    `session`: in a session of its own (the scheduler's autogroup then gives
    that session as much CPU as the others)."""
    proc = subprocess.Popen([executable, script, kind, name, *map(str, args)],
                            stdout=subprocess.PIPE, text=True, start_new_session=session)
    words = proc.stdout.readline().split()
    if not words or words[0] != "ready":
        proc.kill()
        raise RuntimeError(f"victim {name} did not start")
    proc.victim_name, proc.extra = name, [int(w) for w in words[1:]]
    return proc


def cpu_section(**extra) -> dict:
    section = {"enabled": True, "interval": "500ms", "usage": "90%", "runnable_per_cpu": 0,
               "for": "3s", "min_share": "25%", "kill": "auto", "term_timeout": "1s",
               "cooldown": "60s"}
    section.update(extra)
    return section




def is_dead(pid: int) -> bool:
    """Exited (a zombie waiting for PID 1 counts: it runs no more)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True




def reap_all() -> None:
    """PID 1 of the namespace adopts the orphans: wait for what was killed."""
    for pid in pids_here():
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    time.sleep(0.1)
    while _reap_one():
        pass


def pids_here() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def busy_share(seconds: float) -> float:
    """What this scenario measures itself: busy share of all CPUs."""
    def read():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]
        return sum(values[:8]) - idle, idle
    b0, i0 = read()
    time.sleep(seconds)
    b1, i1 = read()
    return (b1 - b0) / max((b1 - b0) + (i1 - i0), 1)


def records_of(daemon: Daemon) -> list[dict]:
    return [r for r in daemon.records() if r["event"] != "start"]


def finish(daemon: Daemon, *procs, **observed) -> dict:
    stopped = daemon.stop()
    result = {"ended": reap(*procs), "records": records_of(daemon), "stopped": stopped, **observed}
    reap_all()
    return result


def two_spinners(dry_run: bool = False) -> dict:
    """One spinner with two busy threads, one with one: 3 threads on 2 CPUs."""
    daemon = Daemon(base_config(cpu=cpu_section()), *(["--dry-run"] if dry_run else []))
    twin = start("spin", "twin", 2, 25)
    single = start("spin", "single", 1, 25)
    died = wait_until(lambda: twin.poll() is not None, 6 if dry_run else 15)
    time.sleep(1.0)                  # would a second victim follow? (cooldown says no)
    return finish(daemon, twin, single, twin_died=died)


def protected_spinner() -> dict:
    """The only busy process is protected: nothing is killed, and that is said once."""
    config = base_config(cpu=cpu_section(), rules=[{"match": {"name": "^keepme$"}, "protect": True}])
    daemon = Daemon(config)
    keep = start("spin", "keepme", 2, 20)
    time.sleep(8)                    # two `for` stretches' worth
    return finish(daemon, keep)


def renamed_spinner() -> dict:
    """A spinner is first seen under a protected name (exec'd through a link
    named 'guardian', as a child forked by a protected parent is seen before
    its exec) and renames itself a second later: its new name decides."""
    config = base_config(cpu=cpu_section(),
                         rules=[{"match": {"name": "^guardian$"}, "protect": True}])
    daemon = Daemon(config)
    link = os.path.join(tempfile.mkdtemp(), "guardian")
    os.symlink(sys.executable, link)
    spinner = start("renamed-spin", "renamedspin", 2, 20, 1.0, executable=link)
    died = wait_until(lambda: spinner.poll() is not None, 15)
    return finish(daemon, spinner, died=died)


def short_burst() -> dict:
    """Saturation for 2.5 s under `for: 6s`: it never triggers."""
    daemon = Daemon(base_config(cpu=cpu_section(**{"for": "6s"})))
    burst = start("spin", "burst", 3, 2.5)
    burst.wait(10)
    time.sleep(5)
    return finish(daemon, burst)


def busy_but_healthy() -> dict:
    """Both CPUs at 100% from two single-thread spinners (about one runnable
    task per CPU), under the embedded default cpu settings with a short `for`."""
    daemon = Daemon(base_config(cpu={"enabled": True, "for": "5s"}))
    first = start("spin", "compiler1", 1, 20)
    second = start("spin", "compiler2", 1, 20)
    busy = busy_share(9)
    return finish(daemon, first, second, busy=busy, runnable_per_cpu=runnable_per_cpu_now())


def spinners_after_a_storm() -> dict:
    """A storm of 45 spinners ends by itself; the one-minute load average is
    still high when two spinners make a merely busy machine. Default cpu
    settings with a short `for`: the machine as it is now is healthy.

    The kernel folds the run queue into the load average every 5 s, so a
    20 s storm is sampled at least three times: 45 x (1 - e^(-15/60)) is
    about 10, 5 per CPU on two CPUs, above the 4 the test asks for."""
    storm = start("group", "storm", 45, 20)
    pgid = storm.extra[0]
    storm.wait(40)
    wait_until(lambda: not [p for p in _group_pids(pgid) if not is_dead(p)], 10)
    reap_all()
    load_at_start = load_per_cpu_now()
    daemon = Daemon(base_config(cpu={"enabled": True, "for": "5s"}))
    first = start("spin", "compiler1", 1, 13)
    second = start("spin", "compiler2", 1, 13)
    busy = busy_share(9)                         # busy for longer than `for` (5s)
    return finish(daemon, first, second, busy=busy, load_at_start=load_at_start,
                  load_at_end=load_per_cpu_now())


def storm_and_bystander() -> dict:
    """A lone spinner in a session of its own (the bystander) and, in another
    session, a process group of 30 spinners at niceness 10 (a fork storm).
    Default cpu settings with a short `for`, and min_share 10%: the bystander
    must be a candidate on every machine for the choice to be put to the test,
    and each storm member, at 2 to 3% of the CPUs, stays below it.

    The niceness makes the shares the same on every machine. Where the
    scheduler's autogroup applies (a session in the root cgroup) it gives the
    bystander's session a third to a half of the CPUs and niceness counts only
    inside a session; where it does not (a session inside a cgroup, as on many
    CI runners), the 31 spinners would share the CPUs evenly, the bystander
    at 3% like any storm member, and it is the niceness that leaves it about
    a quarter of the CPUs (weight 1024 against 30 x 110)."""
    daemon = Daemon(base_config(cpu={"enabled": True, "for": "5s", "term_timeout": "1s",
                                     "min_share": "10%"}))
    bystander = start("spin", "bystander", 1, 30, session=True)
    storm = start("group", "storm", 30, 30, 0, 10)
    pgid, members = storm.extra[0], [storm.pid, *storm.extra[1:]]
    gone = wait_until(lambda: all(is_dead(p) for p in members + _group_pids(pgid)), 25)
    time.sleep(1.0)
    return finish(daemon, bystander, storm, pgid=pgid, group_gone=gone,
                  bystander_alive=bystander.poll() is None, bystander_pid=bystander.pid)


def runnable_per_cpu_now() -> float:
    with open("/proc/stat") as f:
        running = next(int(line.split()[1]) for line in f if line.startswith("procs_running "))
    return (running - 1) / os.cpu_count()


def load_per_cpu_now() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0]) / os.cpu_count()


def group_of_twenty(fork_every: float = 0.0) -> dict:
    """Twenty spinning children of one parent in their own process group, none
    reaching min_share alone, beside a spinner outside the group."""
    daemon = Daemon(base_config(cpu=cpu_section()))
    outsider = start("spin", "outsider", 1, 25)
    group = start("group", "swarm", 20, 25, fork_every)
    pgid, members = group.extra[0], [group.pid, *group.extra[1:]]
    gone = wait_until(lambda: all(is_dead(p) for p in members + _group_pids(pgid)), 20)
    time.sleep(1.0)
    left = [p for p in _group_pids(pgid) if not is_dead(p)]
    return finish(daemon, outsider, group, pgid=pgid, members=len(members),
                  group_gone=gone, left_in_group=left, daemon_pid=daemon.proc.pid)


def _group_pids(pgid: int) -> list[int]:
    found = []
    for pid in pids_here():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            found.append(pid)
    return found


def reused_pid() -> dict:
    """A spinner is chosen, exits, and its PID goes to a new process before the signal."""
    from oorkiller.judge import shares
    from oorkiller.proc._proctable import ProcTable
    from oorkiller.proc.targets import take_targets

    from sandbox import victim

    hog = start("spin", "hog", 1, 20)
    table = ProcTable("/proc", os.getpid())
    window = shares.UsageWindow(5)
    hz = os.sysconf("SC_CLK_TCK")

    def sample(now):
        added, _ = table.refresh()
        for p in added:
            p.eligible = p.pid != os.getpid()
        table.sample_cpu()
        boot_to_now = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
        born = {p.serial: p.starttime / hz - boot_to_now for p in added}
        window.add(now, {p.serial: p.cpu_ticks for p in table.entries() if p.eligible}, born)

    sample(time.monotonic())
    time.sleep(1.0)
    sample(time.monotonic())
    capacity = os.cpu_count() * window.seconds * os.sysconf("SC_CLK_TCK")
    choice = shares.choose_unit("auto", table.entries(), window.usage(), capacity, 250, os.getpid(),
                                predict=lambda unit: (True, ""))
    chosen = choice.unit.leader.comm.decode() if choice else None
    hog_used = choice.unit.used if choice else 0
    old_pid = hog.pid
    hog.kill()
    hog.wait()
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(old_pid - 1))
    second = victim("sleeper", "second")
    same_pid = second.pid == old_pid
    targets = take_targets(choice.unit.members) if choice else []
    # The table's next looks drop the old entry (its start time changed) and
    # add a new one for the PID, which used nothing in the window.
    sample(time.monotonic())
    sample(time.monotonic())
    newcomer = table.get(second.pid)
    blamed = window.usage().get(newcomer.serial) if newcomer else None
    time.sleep(0.2)
    result = {"chosen": chosen, "same_pid": same_pid, "targets": len(targets),
              "second_alive": second.poll() is None, "newcomer_used": blamed, "hog_used": hog_used,
              "new_serial": newcomer is not None and newcomer.serial != choice.unit.leader.serial}
    second.kill()
    second.wait()
    return result


if __name__ == "__main__":
    {"spin": run_spin, "renamed-spin": run_renamed_spin, "group": run_group}[sys.argv[1]](*sys.argv[2:])
