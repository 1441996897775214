"""Victim selection at 1,000, 5,000, 10,000 and 20,000 sleeping processes.

20,000 (or any count) is measured only where the machine has room for it
(`headroom`: PIDs under pid_max and threads-max with a margin, memory for
the sleepers, and one descriptor per process for the table and the floor
under RLIMIT_NOFILE as the table raises it); otherwise the count is reported
as skipped, with the reason.

Each process count runs in its own PID namespace (`measure_at`), where /proc
lists only the sleepers the scenario started. In every round, one after the
other (A B A B):

- oorkiller: ProcTable.refresh + rules + sample_memory + rank_memory on a
  warm table, in-process, timed with perf_counter (the "full selection"),
  over three fresh tables per round, each phase timed too;
- the floor: the C helper preads one held `oom_score` fd per process;
- earlyoom 1.7 in --dryrun with levels that are always crossed: it decides
  in a loop with a 100 ms sleep; its selection cost is its decision cycle at
  N processes minus its cycle at a few dozen (timestamps of its
  "sending SIGKILL" lines);
- nohang 0.2.0, which logs "Found N tasks ... in X ms" for each decision;
  its levels stop at 50% of MemTotal, so a protected hog (oom_score_adj
  -1000, never a victim) holds MemAvailable just under half for the whole
  namespace. nohang then SIGTERMs sleepers, one per decision;
- oorkiller's crossing-to-signal: a MemoryShield on its own thread (as
  daemon.Clock runs it; the engine judges the victim again before its
  signal, as the daemon's does), levels just under MemAvailable, a fast hog
  crosses them; the time from the reading that saw the crossing to the
  return of the call that sent the SIGKILL (SignalClock: the engine's
  `send`, timed where the engine calls it). The time to the kill's record,
  which the engine writes after the signal, is kept beside it
  (`crossing_to_record_ms`).

Per-process cost: each median divided by the processes in the namespace
(µs per process), so the flatness over the counts shows. The table's memory:
at each count, a fresh interpreter builds the table as the full selection
does (refresh + rules + sample + rank) and reads its own VmRSS; another one
does the same imports and configuration but builds no table; the difference
(median over pairs, alternated) per 1,000 entries is the table's cost in
user memory. The kernel's side of the held fds is not in RSS: each held
`oom_score` fd, once read, keeps a struct file, a seq_file and its 4 KiB
buffer. It is estimated apart (`kernel_kib_per_1000`) from the growth of
SUnreclaim in /proc/meminfo over the build, minus its growth over the same
steps without a table; SUnreclaim is machine-wide, so that figure is noisy.
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from bench import harness
from bench.harness import GiB, MiB, Started, log, summary

COUNTS = (1000, 5000, 10000, 20000)
PID_MARGIN = 4096              # PIDs (and threads) always left to the rest of the machine
SCENARIO_TASKS = 200           # the scenario's own tasks besides the sleepers (generous)
SLEEPER_KIB = 192              # a sleeper's memory, kernel side included (generous)
SCENARIO_FDS = 128             # descriptors the scenario itself holds besides the table's
TABLE_MEMORY_PAIRS = 3         # with/without-table interpreter pairs per count
BASELINE_COUNT = 40            # "a few dozen" processes for earlyoom's bare cycle
RANK_DEPTH = 16                # as monitors.memory.RANK_DEPTH
TABLES_PER_ROUND = 3           # fresh tables per round of the full selection
NOHANG_LINE = re.compile(rb"Found (\d+) tasks with non-zero oom_score .* in (\d+)ms")


# ------------------------------------------------------------------ oorkiller
def memory_config(term: int, kill: int, disks: str = "[]", scope_pid: int | None = None) -> object:
    """Memory levels scoped to this namespace (descendants of `scope_pid`,
    by default this process); `disks`: a YAML list for `disks`."""
    from oorkiller.config import load_config_text
    text = f"""
daemon: {{lock_memory: false, nice: 0}}
log: {{kmsg: false, stderr: false}}
scope: {{descendant_of: {os.getpid() if scope_pid is None else scope_pid}}}
memory: {{enabled: true, interval: 1s, available: {{term: {term}, kill: {kill}}}, term_timeout: 2s}}
cpu: {{enabled: false}}
disks: {disks}
io: {{enabled: false}}
network: {{duplicate_mac: {{enabled: false}}}}
"""
    return load_config_text(text, "<bench>")


def full_selection_times(repeats: int, tables: int = TABLES_PER_ROUND) -> dict:
    """Seconds for refresh + rules + sample_memory + rank_memory on a warm
    table, `repeats` in all over `tables` fresh tables, each phase timed too.

    Several tables, not one: the speed of a selection holds for a second
    or more and then drifts with the host's caches (at 5,000 processes,
    6.3 ms for 30 selections in a row, then 8.0; on one table 8.2, then
    5.1 within a minute), so one spell a round made the round's median
    flip; three short spells on fresh tables sample more of the drift.
    The preads of sample_memory move the most (3.4-8.2 ms; the table's own
    C loop over the same fds moves with them, within 3%)."""
    from oorkiller.proc._proctable import ProcTable
    from oorkiller.judge.rules import RuleSet
    available = harness.mem_available()
    config = memory_config(available - GiB, available - 2 * GiB)
    rules = RuleSet(config)
    times = []
    phases = {"refresh": [], "rules": [], "sample": [], "rank": []}
    for _ in range(tables):
        table = ProcTable("/proc", os.getpid())
        added, _ = table.refresh()
        rules.apply(table, added)
        table.sample_memory()
        for _ in range(max(1, repeats // tables)):
            began = time.perf_counter()
            added, _ = table.refresh()
            listed = time.perf_counter()
            rules.apply(table, added)
            ruled = time.perf_counter()
            table.sample_memory()
            sampled = time.perf_counter()
            table.rank_memory(RANK_DEPTH)
            ranked = time.perf_counter()
            times.append(ranked - began)
            for name, start, end in (("refresh", began, listed), ("rules", listed, ruled),
                                     ("sample", ruled, sampled), ("rank", sampled, ranked)):
                phases[name].append(end - start)
        table.close()
    return {"times": times, "phases": phases}


def floor_times(rounds: int) -> tuple[int, list[float]]:
    out = subprocess.run([harness.helper_path(), "floor", str(rounds + 1)],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    processes = int(out[0].split()[1])
    times = [float(line.split()[1]) for line in out[1:] if line.startswith("round")]
    return processes, times[1:]          # the first round warms caches


# ------------------------------------------------------------------ table memory
# Run in a fresh interpreter: argv[1] "1" builds the table, "0" does not;
# argv[2] the PID whose descendants the rules scope (the namespace's PID 1).
TABLE_MEMORY_CODE = f"""
import gc, json, os, sys
sys.path.insert(0, {harness.ROOT!r})
from bench.selection import memory_config, RANK_DEPTH
from oorkiller.proc._proctable import ProcTable
from oorkiller.judge.rules import RuleSet
def unreclaimable_slab_kib():
    for line in open("/proc/meminfo"):
        if line.startswith("SUnreclaim:"):
            return int(line.split()[1])
build, scope = sys.argv[1] == "1", int(sys.argv[2])
config = memory_config(2 << 30, 1 << 30, scope_pid=scope)
rules = RuleSet(config)
table, entries, held = None, 0, 0
slab_before = unreclaimable_slab_kib()
if build:
    table = ProcTable("/proc", os.getpid())
    added, _ = table.refresh()
    rules.apply(table, added)
    table.sample_memory()
    table.rank_memory(RANK_DEPTH)
    entries, held = len(table), table.held_fds
    del added                               # transient: only the table is measured
gc.collect()
slab_delta = unreclaimable_slab_kib() - slab_before
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
kib = lambda key: int(status[key].split()[0])
print(json.dumps({{"entries": entries, "held_fds": held, "slab_delta_kib": slab_delta,
                  "vmrss_kib": kib("VmRSS"), "rssanon_kib": kib("RssAnon")}}))
"""


def table_memory(pairs: int) -> dict:
    """VmRSS of an interpreter that built the table minus one that did not."""
    samples = {"0": [], "1": []}
    for _ in range(pairs):
        for build in ("0", "1"):
            out = subprocess.run([sys.executable, "-c", TABLE_MEMORY_CODE, build, str(os.getpid())],
                                 capture_output=True, text=True, check=True, cwd=harness.ROOT)
            samples[build].append(json.loads(out.stdout.strip().splitlines()[-1]))
    without, built = samples["0"], samples["1"]
    delta = [b["vmrss_kib"] - w["vmrss_kib"] for w, b in zip(without, built)]
    anon = [b["rssanon_kib"] - w["rssanon_kib"] for w, b in zip(without, built)]
    # the kernel's side, from the machine-wide SUnreclaim (noisy: other users
    # of the machine move it too): what it grew by while the table was built,
    # minus what it grew by over the same steps without a table
    slab_built = summary([b["slab_delta_kib"] for b in built])["median"]
    slab_without = summary([w["slab_delta_kib"] for w in without])["median"]
    return {"pairs": pairs, "entries": summary([b["entries"] for b in built])["median"],
            "kernel_slab_kib": slab_built - slab_without,
            "held_fds": summary([b["held_fds"] for b in built])["median"],
            "without_vmrss_kib": summary([w["vmrss_kib"] for w in without])["median"],
            "with_vmrss_kib": summary([b["vmrss_kib"] for b in built])["median"],
            "delta_vmrss_kib": summary(delta), "delta_rssanon_kib": summary(anon)}


# ------------------------------------------------------------------ headroom
def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _pids_cgroup_room() -> int | None:
    """Tasks this process's pids cgroup (v1 or v2) still allows, None: no limit."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            folder = f"/sys/fs/cgroup/pids{path}"
        elif controllers == "":
            folder = f"/sys/fs/cgroup{path}"
        else:
            continue
        limit, current = _read_int(f"{folder}/pids.max"), _read_int(f"{folder}/pids.current")
        if limit is not None and current is not None:
            return limit - current
    return None


CAP_SYS_RESOURCE = 24


def _has_capability(bit: int) -> bool:
    """Whether this process has capability `bit` in effect (CapEff)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError):
        pass
    return False


def headroom(count: int) -> dict:
    """Outside the namespace, before any sleeper: whether `count` processes
    fit on this machine. {"ok": bool, "reason": str, plus the limits read}.

    - PIDs: every sleeper takes a PID (in the namespace and in the host's),
      and a task under threads-max: pid_max and threads-max minus the tasks
      running now (/proc/loadavg) must leave PID_MARGIN after the count;
    - the pids cgroup, when it has a limit;
    - memory: SLEEPER_KIB per sleeper must pass the harness's check_safe;
    - descriptors: one held fd per process for the table (which keeps
      RESERVED_FDS spare) and for the floor. The table raises RLIMIT_NOFILE
      itself (soft to hard; with CAP_SYS_RESOURCE, both to WANTED_FD_LIMIT if
      fs.nr_open allows), so the limit that counts is the one it can reach.
      `descriptor_room` checks again inside the namespace, after the raise.
    """
    from oorkiller.proc._proctable import RESERVED_FDS, WANTED_FD_LIMIT
    pid_max = _read_int("/proc/sys/kernel/pid_max") or 32768
    threads_max = _read_int("/proc/sys/kernel/threads-max") or 0
    nr_open = _read_int("/proc/sys/fs/nr_open") or 0
    with open("/proc/loadavg") as f:
        tasks = int(f.read().split()[3].split("/")[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    reachable = hard
    if (hard != infinite and hard < WANTED_FD_LIMIT and _has_capability(CAP_SYS_RESOURCE)
            and nr_open >= WANTED_FD_LIMIT):
        reachable = WANTED_FD_LIMIT
    wanted_tasks = count + SCENARIO_TASKS
    wanted_fds = count + SCENARIO_TASKS + RESERVED_FDS + SCENARIO_FDS
    info = {"count": count, "pid_max": pid_max, "threads_max": threads_max, "tasks_now": tasks,
            "nofile_soft": None if soft == infinite else soft,
            "nofile_hard": None if hard == infinite else hard,
            "nofile_reachable": None if reachable == infinite else reachable,
            "nr_open": nr_open, "fds_needed": wanted_fds}
    reasons = []
    if pid_max - tasks - wanted_tasks < PID_MARGIN:
        reasons.append(f"pid_max {pid_max} with {tasks} tasks running leaves less than "
                       f"{PID_MARGIN} PIDs after {wanted_tasks} more")
    if threads_max and threads_max - tasks - wanted_tasks < PID_MARGIN:
        reasons.append(f"threads-max {threads_max} with {tasks} tasks running leaves less than "
                       f"{PID_MARGIN} after {wanted_tasks} more")
    room = _pids_cgroup_room()
    if room is not None and room - wanted_tasks < PID_MARGIN:
        reasons.append(f"the pids cgroup allows {room} more tasks, {wanted_tasks} + {PID_MARGIN} wanted")
    if reachable != infinite and reachable < wanted_fds:
        how = "no CAP_SYS_RESOURCE to raise it" if reachable == hard else f"raisable to {reachable}"
        reasons.append(f"RLIMIT_NOFILE hard limit {hard} ({how}) is under the {wanted_fds} "
                       f"descriptors needed: one held fd per process for the table and for the "
                       f"floor, + {RESERVED_FDS} the table keeps spare + the scenario's own")
    try:
        harness.check_safe(count * SLEEPER_KIB * 1024)
    except RuntimeError as error:
        reasons.append(f"memory for {count} sleepers: {error}")
    info["ok"] = not reasons
    info["reason"] = "; ".join(reasons)
    return info


def descriptor_room(count: int) -> str:
    """Inside the namespace, before any sleeper: raises RLIMIT_NOFILE as the
    table does (so the floor helper inherits it too); a reason to skip, or ""."""
    from oorkiller.proc._proctable import RESERVED_FDS, raise_fd_limit
    soft = raise_fd_limit()
    wanted = count + SCENARIO_TASKS + RESERVED_FDS + SCENARIO_FDS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        return f"RLIMIT_NOFILE is {soft} after raising it, {wanted} descriptors needed"
    return ""


class SignalClock:
    """When the engine sent each signal, and when it wrote each record.

    `sent`: (time, signal number) as each call of the engine's `send` that
    delivered a signal returned; the call is timed where the engine makes
    it, between `start()` and `stop()`. `recorded`: (time, event, fields)
    from the engine's `after` hook, which runs once the record is out,
    after the signal."""

    def __init__(self):
        self.sent: list[tuple[float, int]] = []
        self.recorded: list[tuple[float, str, dict]] = []
        self._send = None

    def start(self) -> None:
        from oorkiller.act import engine
        self._send = send = engine.send

        def timed_send(target, signum):
            result = send(target, signum)
            if result == "sent":
                self.sent.append((time.monotonic(), signum))
            return result

        engine.send = timed_send

    def stop(self) -> None:
        from oorkiller.act import engine
        if self._send is not None:
            engine.send, self._send = self._send, None

    def first_kill(self, since: float = 0.0) -> float | None:
        """When the first SIGKILL at or after `since` was sent."""
        return next((t for t, signum in self.sent if signum == signal.SIGKILL and t >= since), None)

    def before(self, event, fields):
        pass

    def after(self, event, fields):
        self.recorded.append((time.monotonic(), event, dict(fields)))


def crossing_to_signal(started: Started, hogs: int) -> list[dict]:
    """A real MemoryShield on its thread kills `hogs` fast hogs, one at a time."""
    from oorkiller.act.engine import Engine
    from oorkiller.daemon import Clock
    from oorkiller.record.writer import RecordWriter
    from oorkiller.shields.base import Context
    from oorkiller.shields.memory import MemoryShield
    from oorkiller.judge.rules import RuleSet

    results = []
    for _ in range(hogs):
        available = harness.mem_available()
        kill = available - 768 * MiB
        config = memory_config(kill, kill)
        writer = RecordWriter(kmsg=False, stderr=False)
        clock = SignalClock()
        executor = Engine(writer, hooks=clock)
        context = Context(config=config, rules=RuleSet(config))
        executor.rules = context.rules      # as the daemon: the victim judged again before its signal
        monitor = MemoryShield(context)
        readings: list[tuple[float, int]] = []
        original_read = monitor.read

        def timed_read(original_read=original_read, readings=readings):
            mem = original_read()
            readings.append((time.monotonic(), mem.available))
            return mem

        monitor.read = timed_read
        stopping = threading.Event()
        runner = Clock(monitor, executor, writer, stopping)
        runner.start()
        hog = None
        clock.start()
        try:
            time.sleep(0.5)                         # warm ranking, as near a level
            # 1.75 GiB past the level: on this VM MemAvailable can rise by a
            # GiB while a hog grows (memory freed earlier shows late).
            harness.check_safe(2560 * MiB)
            hog = started.helper("hog", 2560)
            died = _wait_exit(hog, 10)
            crossing = next((t for t, a in readings if a < kill), None)
            killed_at = clock.first_kill()
            recorded_at = next((t for t, event, _ in clock.recorded if event == "kill"), None)
            results.append({
                "killed": died, "crossed": crossing is not None, "crossing_at": crossing,
                "to_signal": (killed_at - crossing) if killed_at and crossing else None,
                "to_record": (recorded_at - crossing) if recorded_at and crossing else None,
                "readings": len(readings), "kill_level": kill,
                "lowest": min((a for _, a in readings), default=None),
                "events": [event for _, event, _ in clock.recorded]})
        finally:
            clock.stop()
            stopping.set()
            runner.stop()
            runner.join(2)
            if hog is not None:
                started.kill(hog)
            executor.stop()
            monitor.close()
            writer.close()
        _wait_memory_back(available - 256 * MiB, 10)
    return results


def _wait_exit(proc, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        time.sleep(0.005)
    return False


def _wait_memory_back(level: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and harness.mem_available() < level:
        time.sleep(0.05)


# ------------------------------------------------------------------ peers
def earlyoom_cycles(started: Started, seconds: float) -> list[float]:
    """earlyoom --dryrun with levels always crossed: seconds between decisions.
    A 64 MiB process is there to be chosen: among equal tiny sleepers earlyoom
    would pick itself and sleep a second instead of deciding."""
    target = started.helper("hog", 64)
    total_kib = harness.mem_total() // 1024
    level = int(total_kib * 0.99)
    proc = started.start(["earlyoom", "--dryrun", "-M", f"{level},{level}", "-r", "0"],
                         wait_ready=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stamps: list[float] = []

    def collect():
        for line in proc.stderr:
            if line.startswith("sending SIGKILL"):
                stamps.append(time.monotonic())

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    time.sleep(seconds)
    started.kill(proc)
    started.kill(target)
    reader.join(1)
    cycles = [b - a for a, b in zip(stamps, stamps[1:])]
    return cycles[1:]                      # the first cycle includes start-up


def nohang_config(folder: str) -> str:
    """nohang's own config with: act below 50% MemAvailable (its maximum), no
    victim cache (so every decision searches), the shortest delays."""
    with open("/etc/nohang/nohang.conf") as f:
        text = f.read()
    changes = {"soft_threshold_min_mem": "50 %", "hard_threshold_min_mem": "2 %",
               "victim_cache_time": "0", "post_soft_action_delay": "0.1",
               "min_sleep": "0.1", "print_victim_status": "False",
               "print_statistics": "False"}
    for key, value in changes.items():
        text, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text)
        if n != 1:
            raise RuntimeError(f"nohang.conf: key {key} not found once")
    path = os.path.join(folder, "nohang.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def nohang_decisions(started: Started, config: str, wanted: int, timeout: float) -> list[tuple[int, float]]:
    """(tasks, seconds) of each of nohang's victim searches."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore")
    proc = started.start(["nohang", "--monitor", "-c", config], wait_ready=False, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=False)
    found: list[tuple[int, float]] = []
    done = threading.Event()

    def collect():
        for line in proc.stdout:
            match = NOHANG_LINE.search(line)
            if match:
                found.append((int(match.group(1)), int(match.group(2)) / 1000))
                if len(found) >= wanted:
                    done.set()
        done.set()

    threading.Thread(target=collect, daemon=True).start()
    done.wait(timeout)
    started.kill(proc)
    return found


def hold_half_memory() -> harness.Ballast:
    """Ballast (a tmpfs file, no process) that leaves MemAvailable just under
    50% of MemTotal, where nohang's highest level lies."""
    total, available = harness.mem_total(), harness.mem_available()
    size = available - total // 2 + 768 * MiB
    if size > 0.55 * total:
        raise RuntimeError("MemAvailable is too high to hold it under half with <= 55% of MemTotal")
    return harness.Ballast(max(size, 256 * MiB))


# ------------------------------------------------------------------ one count
def measure_at(count: int, rounds: int, quick: bool = False) -> dict:
    """Inside a PID namespace: every measurement at `count` sleepers."""
    started = Started()
    folder = tempfile.mkdtemp(prefix="oorkiller-bench-")
    eo_seconds = 1.5 if quick else 3.0
    result = {"count": count, "rounds": []}
    short = descriptor_room(count)
    if short:
        return {"count": count, "skipped": short}
    result["nofile_soft"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    ballast = None
    try:
        base = harness.spawn_sleepers(started, BASELINE_COUNT)
        result["baseline_processes"] = harness.process_count()
        result["earlyoom_baseline_cycles"] = earlyoom_cycles(started, eo_seconds)
        harness.spawn_sleepers(started, count - BASELINE_COUNT)
        result["processes"] = harness.process_count()
        log(f"selection: {result['processes']} processes in the namespace")
        result["table_memory"] = table_memory(1 if quick else TABLE_MEMORY_PAIRS)
        log(f"selection: table memory {result['table_memory']['delta_vmrss_kib']['median']} KiB "
            f"for {result['table_memory']['entries']} entries")
        ballast = hold_half_memory()
        config = nohang_config(folder)
        for round_no in range(rounds):
            one = {}
            timed = full_selection_times(10 if quick else 30)
            one["oorkiller"], one["oorkiller_phases"] = timed["times"], timed["phases"]
            one["floor_processes"], one["floor"] = floor_times(10 if quick else 30)
            one["earlyoom_cycles"] = earlyoom_cycles(started, eo_seconds)
            one["nohang"] = nohang_decisions(started, config, 3 if quick else 5, 20)
            one["crossing"] = crossing_to_signal(started, 1 if quick else 2)
            result["rounds"].append(one)
            log(f"selection N={count} round {round_no + 1}/{rounds} done")
        del base
    finally:
        started.close()
        if ballast is not None:
            ballast.close()
        shutil.rmtree(folder, ignore_errors=True)
    return result


# ------------------------------------------------------------------ outside
def run(quick: bool = False) -> dict:
    counts = (1000,) if quick else COUNTS
    rounds = 1 if quick else 3
    harness.helper_path()
    per_count = {}
    for count in counts:
        room = headroom(count)
        if not room["ok"]:
            log(f"selection: skipping {count} processes: {room['reason']}")
            per_count[str(count)] = {"skipped": room["reason"], "headroom": room}
            continue
        raw = harness.in_pid_namespace("selection", "measure_at", timeout=1200,
                                       count=count, rounds=rounds, quick=quick)
        if raw.get("skipped"):
            log(f"selection: skipping {count} processes: {raw['skipped']}")
            per_count[str(count)] = {"skipped": raw["skipped"], "headroom": room}
            continue
        per_count[str(count)] = digest(raw)
        per_count[str(count)]["headroom"] = room
    return {"counts": per_count}


def digest(raw: dict) -> dict:
    """Per round medians, then the median and spread over rounds."""
    base_cycle = summary(raw["earlyoom_baseline_cycles"])["median"]
    rows = {"oorkiller_ms": [], "floor_ms": [], "earlyoom_ms": [], "nohang_ms": [],
            "crossing_to_signal_ms": [], "crossing_to_record_ms": [], "earlyoom_cycle_ms": []}
    phases = {}
    for one in raw["rounds"]:
        rows["oorkiller_ms"].append(summary(one["oorkiller"])["median"] * 1e3)
        for name, seconds in one.get("oorkiller_phases", {}).items():
            phases.setdefault(name, []).append(summary(seconds)["median"] * 1e3)
        rows["floor_ms"].append(summary(one["floor"])["median"] * 1e3)
        cycle = summary(one["earlyoom_cycles"])["median"]
        if cycle is not None and base_cycle is not None:
            rows["earlyoom_cycle_ms"].append(cycle * 1e3)
            rows["earlyoom_ms"].append((cycle - base_cycle) * 1e3)
        searches = [seconds for _, seconds in one["nohang"]]
        if searches:
            rows["nohang_ms"].append(summary(searches)["median"] * 1e3)
        for hog in one["crossing"]:
            if hog["to_signal"] is not None:
                rows["crossing_to_signal_ms"].append(hog["to_signal"] * 1e3)
            if hog.get("to_record") is not None:
                rows["crossing_to_record_ms"].append(hog["to_record"] * 1e3)
    out = {key: summary(values) for key, values in rows.items()}
    # where the full selection's time goes (medians of round medians, ms)
    out["oorkiller_phases_ms"] = {name: summary(values)["median"] for name, values in phases.items()}
    out["processes"] = raw["processes"]
    out["earlyoom_baseline_cycle_ms"] = base_cycle * 1e3 if base_cycle else None
    out["baseline_processes"] = raw["baseline_processes"]
    out["nohang_tasks"] = [tasks for one in raw["rounds"] for tasks, _ in one["nohang"]]
    out["hogs_killed"] = sum(h["killed"] for one in raw["rounds"] for h in one["crossing"])
    out["hogs"] = sum(len(one["crossing"]) for one in raw["rounds"])
    # a hog that never took MemAvailable under the level is not a miss
    out["hogs_crossed"] = sum(h.get("crossed", True) for one in raw["rounds"] for h in one["crossing"])
    med = {key: out[key]["median"] for key in rows}
    # µs per process at this count: flat over the counts = linear cost
    out["per_process_us"] = {
        name: (med[f"{name}_ms"] * 1e3 / raw["processes"]) if med[f"{name}_ms"] is not None else None
        for name in ("oorkiller", "floor", "earlyoom", "nohang")}
    memory = raw.get("table_memory")
    if memory:
        delta, entries = memory["delta_vmrss_kib"]["median"], memory["entries"]
        memory["kib_per_1000"] = (delta * 1000 / entries) if delta is not None and entries else None
        kernel = memory.get("kernel_slab_kib")
        memory["kernel_kib_per_1000"] = (kernel * 1000 / entries) if kernel is not None and entries else None
        out["table_memory"] = memory
    out["ratios"] = {
        "oorkiller_over_floor": harness.ratio(med["oorkiller_ms"], med["floor_ms"]),
        "earlyoom_over_oorkiller": harness.ratio(med["earlyoom_ms"], med["oorkiller_ms"]),
        "nohang_over_oorkiller": harness.ratio(med["nohang_ms"], med["oorkiller_ms"]),
    }
    return out
