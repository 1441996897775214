"""Fast hog: how far MemAvailable falls below the kill level before the hog dies.

In one PID namespace, runs alternate A B A B: the installed `oorkiller run`
(memory shield only, scoped to this namespace's processes) and earlyoom 1.7
(not in dry run: it must kill, but it sees only this namespace), with the
same levels in bytes: kill = term = MemAvailable at the start of the run
minus 1 GiB. Two hogs, each with the hard cap of 2.5 GiB:

- the main figure (result key `threads`): a C hog that touches pages from one
  thread per CPU, each thread its own slice of one anonymous mapping, as fast
  as the machine allows;
- the single-thread hog of earlier reports (the scenario's top-level keys,
  so ratios compare like with like against an older report).

A sampler thread reads MemAvailable at ~1 kHz (its median period, and its
largest gap while the hog lived, are in the report); the hog's death is seen
through a pidfd. Overshoot = kill level - lowest MemAvailable; time to death
= death - first sample below the kill level. Only runs in which the hog was
still growing when MemAvailable crossed the level count (`valid`): on a VM
whose host hands memory back while a hog grows, MemAvailable can lag a
whole fill behind, and a hog at its cap (`filled`) tells nothing of
reaction. The machine is shared too: a run is tried again (at most 3 times
in all) when MemAvailable moved by more than 256 MiB between the reading
that set the level and the hog's start, or when it is not valid; a run
still not valid at the last attempt is counted in `left_out`.
The time to death (first sample below the level -> the hog gone) is split
where the kernel generated the shield's first fatal signal to the hog
(harness.SignalTrace, the same for both shields): crossing -> signal is
the shield's reaction, signal -> gone the kernel's teardown of the hog.
Fill rates: up to the crossing of the level, with the shield running
(`hog_fill_gbps`), and as the hog itself measures filling 1 GiB with no
shield running (`hog_own_fill_gbps`). /dev/kmsg is checked for kernel OOM
kills over the whole scenario.
"""
from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import threading
import time

import yaml

from bench import harness
from bench.harness import GiB, MiB, MemSampler, SignalTrace, Started, log, summary

HOG_CAP_MIB = 2560
BELOW_START = GiB
OWN_FILL_MIB = 1024        # the hog's own fill rate is measured over this much
HOGS = ("threads", "single")   # the main figure first
DISTURBED = 256 * MiB      # MemAvailable moved this much before the hog: someone else did it
ATTEMPTS = 3               # tries of a run that others disturbed
HOG_COMM = "fasthog"       # both hogs' name (prctl), as the kernel's signal trace gives it


def hog_threads() -> int:
    """Threads of the multi-thread hog: one per CPU this process may use."""
    return max(1, len(os.sched_getaffinity(0)))


def start_hog(started: Started, kind: str, cap_mib: int, threads: int):
    if kind == "single":
        return started.helper("hog", cap_mib)
    return started.helper("fasthog", cap_mib, threads)


def own_fill_rate(started: Started, kind: str, threads: int) -> float | None:
    """GB/s as the hog reports it filling OWN_FILL_MIB, no shield running."""
    harness.check_safe(OWN_FILL_MIB * MiB)
    hog = start_hog(started, kind, OWN_FILL_MIB, threads)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(hog.stdout.readline()), daemon=True)
    reader.start()
    reader.join(20)
    started.kill(hog)
    parts = line[0].split() if line else []
    if len(parts) == 3 and parts[0] == "full":
        return float(parts[2])
    return None


def oorkiller_config(level: int) -> str:
    config = {
        "log": {"kmsg": True, "stderr": True, "level": "info"},
        "scope": {"descendant_of": os.getpid()},
        "memory": {"enabled": True, "interval": "1s", "term_timeout": "2s",
                   "available": {"term": level, "kill": level}},
        "cpu": {"enabled": False}, "disks": [], "io": {"enabled": False},
        "network": {"duplicate_mac": {"enabled": False}},
    }
    folder = tempfile.mkdtemp(prefix="oorkiller-bench-")
    path = os.path.join(folder, "oorkiller.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    os.chmod(path, 0o644)
    return path


def start_shield(started: Started, shield: str, level: int):
    """Starts the shield; returns it once it watches (`stop_shield` ends it)."""
    config = None
    if shield == "oorkiller":
        config = oorkiller_config(level)
        argv = ["oorkiller", "run", "-c", config]
        marker = "oorkiller: start "
    else:
        argv = ["earlyoom", "-M", f"{level // 1024},{level // 1024}", "-r", "0"]
        marker = "SIGKILL when mem"
    proc = started.start(argv, wait_ready=False, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, errors="replace")
    proc.config = config
    ready = threading.Event()
    proc.lines = []

    def collect():
        for line in proc.stderr:
            proc.lines.append(line.rstrip("\n"))
            if marker in line:
                ready.set()

    threading.Thread(target=collect, daemon=True).start()
    if not ready.wait(20):
        stop_shield(started, proc)
        raise RuntimeError(f"{shield} did not start: {proc.lines[-5:]}")
    time.sleep(0.5)
    return proc


def stop_shield(started: Started, proc) -> None:
    """Kills the shield and removes the configuration written for it."""
    started.kill(proc)
    if proc.config is not None:
        shutil.rmtree(os.path.dirname(proc.config), ignore_errors=True)


def wait_death(pid: int, timeout: float) -> float | None:
    """Monotonic time at which the process exited (pidfd readable), or None."""
    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if poller.poll(int(timeout * 1000)):
            return time.monotonic()
        return None
    finally:
        os.close(pidfd)


def first_fatal_signal(signals: SignalTrace | None, since: float) -> tuple[float, int] | None:
    """(time, signal) of the first SIGTERM or SIGKILL to a hog since `since`."""
    if signals is None:
        return None
    return next(((at, signum) for at, signum, comm in signals.fatal_signals()
                 if at >= since and comm == HOG_COMM), None)


def one_run(started: Started, shield: str, kind: str = "single", threads: int = 1,
            guard: bool = False, signals: SignalTrace | None = None) -> dict:
    """One hog against one shield. With `guard`, gives up before the hog
    ({"disturbed": bytes}) when MemAvailable moved by more than DISTURBED
    since the level was set from it. With `signals`, the shield's first
    fatal signal to the hog splits the time to death: crossing -> signal
    (the shield's) and signal -> gone (the kernel's)."""
    available = harness.mem_available()
    level = available - BELOW_START
    harness.check_safe(HOG_CAP_MIB * MiB)
    daemon = start_shield(started, shield, level)
    hog = None
    try:
        with MemSampler() as sampler:
            time.sleep(0.2)
            moved = sampler.samples[-1][1] - available if sampler.samples else 0
            if guard and abs(moved) > DISTURBED:
                return {"shield": shield, "hog": kind, "disturbed": moved}
            if signals is not None:
                signals.clear()
            began = time.monotonic()
            hog = start_hog(started, kind, HOG_CAP_MIB, threads)
            ready = time.monotonic()            # the hog starts touching now
            died = wait_death(hog.pid, 15)
            time.sleep(0.3)
    finally:
        if hog is not None:
            started.kill(hog)
        stop_shield(started, daemon)
    full = [line.split() for line in (hog.stdout.read() or "").splitlines() if line.startswith("full ")]
    full_at = ready + float(full[0][1]) if full else None     # when it reached its cap
    samples = sampler.samples
    crossing = next((t for t, a in samples if t >= began and a < level), None)
    # The overshoot means something only if the hog was still growing when
    # MemAvailable crossed the level; on a VM whose host hands memory back
    # while a hog grows, MemAvailable can lag a whole fill behind.
    valid = crossing is not None and (full_at is None or crossing <= full_at)
    after = [a for t, a in samples if crossing is not None and crossing <= t <= (died or crossing) + 0.3]
    lowest = min(after) if after else None
    periods = [b[0] - a[0] for a, b in zip(samples, samples[1:])]
    # the sampler's largest gap while the hog lived: CPUs busy with the hog's
    # threads can delay the sampler, which then may miss the lowest point
    alive = [t for t, _ in samples if began <= t <= (died or began + 15) + 0.05]
    gap_max = max((b - a for a, b in zip(alive, alive[1:])), default=None)
    signalled = first_fatal_signal(signals, began)
    signal_at = signalled[0] if signalled and died and signalled[0] <= died else None
    trace = [(round(t - began, 4), a - level) for t, a in samples[::2] if t >= began - 0.1]
    return {
        "shield": shield, "hog": kind, "threads": threads if kind != "single" else 1,
        "killed": died is not None, "filled": full_at is not None, "valid": valid,
        "filled_after": (full_at - began) if full_at else None,
        "overshoot": (level - lowest) if lowest is not None else None,
        "to_death": (died - crossing) if died and crossing else None,
        "to_signal": (signal_at - crossing) if signal_at and crossing else None,
        "signal_to_death": (died - signal_at) if signal_at and died else None,
        "signal": signalled[1] if signal_at else None,
        "crossing_after": (crossing - began) if crossing else None,
        "sample_period_median": summary(periods)["median"], "sample_gap_max": gap_max,
        "level": level,
        "fill_gbps": (BELOW_START / (crossing - began) / 1e9) if crossing else None, "trace": trace,
        "died_at": (died - began) if died else None,
    }


def attempt_run(started: Started, shield: str, kind: str, threads: int,
                signals: SignalTrace | None = None) -> dict:
    """one_run, tried again (up to ATTEMPTS in all) when the machine's other
    users moved MemAvailable by more than DISTURBED between the level's
    reading and the hog's start, or when the run is not `valid`: the hog
    reached its cap before MemAvailable crossed the level, or it never did
    (memory given back elsewhere meanwhile). The last attempt is kept
    whatever happens; the digest leaves out a run that is not valid."""
    for attempt in range(1, ATTEMPTS + 1):
        last = attempt == ATTEMPTS
        result = one_run(started, shield, kind, threads, guard=not last, signals=signals)
        result["attempts"] = attempt
        if "disturbed" in result:
            log(f"fasthog {kind} {shield}: MemAvailable moved {result['disturbed'] / MiB:+.0f} MiB "
                f"before the hog (attempt {attempt}/{ATTEMPTS})")
        elif not result["valid"] and not last:
            log(f"fasthog {kind} {shield}: the hog reached its cap before MemAvailable crossed "
                f"the level, or it never did (attempt {attempt}/{ATTEMPTS})")
        else:
            return result
        time.sleep(2.0)
    return result


def runs(pairs: int, threads: int, own_fills: int = 2) -> dict:
    """Inside a PID namespace: the hogs' own fill rates, then for each hog
    A B A B ... `pairs` times (the multi-thread hog's pair, then the
    single-thread hog's, in every round)."""
    started = Started()
    since = harness.boot_usec()
    signals = SignalTrace()
    results = []
    own: dict[str, list] = {kind: [] for kind in HOGS}
    try:
        for turn in range(own_fills):
            for kind in (HOGS if turn % 2 == 0 else HOGS[::-1]):
                own[kind].append(own_fill_rate(started, kind, threads))
                log(f"fasthog {kind} hog fills at {own[kind][-1]} GB/s (no shield)")
                time.sleep(1.0)
        for pair in range(pairs):
            for kind in HOGS:
                for shield in ("oorkiller", "earlyoom"):
                    results.append(attempt_run(started, shield, kind, threads, signals))
                    log(f"fasthog {kind} {shield} run {pair + 1}/{pairs}: "
                        f"overshoot {results[-1]['overshoot']} to_death {results[-1]['to_death']}"
                        f"{' (hog filled to its cap)' if results[-1]['filled'] else ''}")
                    time.sleep(1.0)      # memory back before the next run
    finally:
        started.close()
        signals.close()
    return {"runs": results, "own_fill_gbps": own, "threads": threads,
            "kernel_oom_kills": harness.kernel_oom_kills_since(since)}


def run(quick: bool = False) -> dict:
    harness.helper_path()
    raw = harness.in_pid_namespace("fasthog", "runs", timeout=900, pairs=1 if quick else 6,
                                   threads=hog_threads(), own_fills=1 if quick else 2)
    return digest(raw)


def digest_hog(runs: list[dict]) -> dict:
    """The figures of one hog: per shield, ratios, traces, fill rate."""
    out = {}
    for shield in ("oorkiller", "earlyoom"):
        mine = [r for r in runs if r["shield"] == shield]
        counted = [r for r in mine if r.get("valid", True)]
        out[shield] = {
            "overshoot_mib": summary([r["overshoot"] / MiB for r in counted if r["overshoot"] is not None]),
            "to_death_ms": summary([r["to_death"] * 1e3 for r in counted if r["to_death"] is not None]),
            "to_signal_ms": summary([r["to_signal"] * 1e3 for r in counted if r.get("to_signal") is not None]),
            "signal_to_death_ms": summary([r["signal_to_death"] * 1e3 for r in counted
                                           if r.get("signal_to_death") is not None]),
            "killed": sum(r["killed"] for r in mine), "runs": len(mine),
            "filled": sum(r.get("filled", False) for r in mine),
            "left_out": len(mine) - len(counted),
            "attempts": sum(r.get("attempts", 1) for r in mine),
        }
    out["ratios"] = {
        "overshoot_oorkiller_over_earlyoom": harness.ratio(
            out["oorkiller"]["overshoot_mib"]["median"], out["earlyoom"]["overshoot_mib"]["median"]),
        "to_death_oorkiller_over_earlyoom": harness.ratio(
            out["oorkiller"]["to_death_ms"]["median"], out["earlyoom"]["to_death_ms"]["median"]),
    }
    out["traces"] = [{"shield": r["shield"], "hog": r.get("hog", "single"), "died_at": r["died_at"],
                      "trace": r["trace"]} for r in runs]
    out["hog_fill_gbps"] = summary([r["fill_gbps"] for r in runs
                                    if r["fill_gbps"] and r.get("valid", True)])["median"]
    out["sample_period_ms"] = summary([r["sample_period_median"] * 1e3 for r in runs
                                       if r["sample_period_median"]])["median"]
    out["sample_gap_max_ms"] = summary([r["sample_gap_max"] * 1e3 for r in runs
                                        if r.get("sample_gap_max") is not None])
    return out


def digest(raw: dict) -> dict:
    """The single-thread hog's figures at the top level (as in earlier
    reports), the multi-thread hog's under `threads`."""
    by_kind = {kind: [r for r in raw["runs"] if r.get("hog", "single") == kind] for kind in HOGS}
    own = raw.get("own_fill_gbps", {})
    out = digest_hog(by_kind["single"])
    out["hog_threads"] = 1
    out["hog_own_fill_gbps"] = summary(own.get("single", []))["median"]
    out["threads"] = digest_hog(by_kind["threads"])
    out["threads"]["hog_threads"] = raw.get("threads")
    out["threads"]["hog_own_fill_gbps"] = summary(own.get("threads", []))["median"]
    out["kernel_oom_kills"] = raw["kernel_oom_kills"]
    out["runs"] = []
    return out
