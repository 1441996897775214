"""Fast hog: how far MemAvailable falls below the kill level before the hog dies.

In one PID namespace, runs alternate A B A B: the installed `oorkiller run`
(memory shield only, scoped to this namespace's processes) and earlyoom 1.7
(not in dry run: it must kill, but it sees only this namespace), with the
same levels in bytes: kill = term = MemAvailable at the start of the run
minus 1 GiB. A C hog touches pages as fast as it can (hard cap 2.5 GiB).
A sampler thread reads MemAvailable at ~1 kHz; the hog's death is seen
through a pidfd. Overshoot = kill level - lowest MemAvailable; time to death
= death - first sample below the kill level. /dev/kmsg is checked for kernel
OOM kills over the whole scenario.
"""
from __future__ import annotations

import os
import select
import subprocess
import tempfile
import threading
import time

import yaml

from bench import harness
from bench.harness import GiB, MiB, MemSampler, Started, log, summary

HOG_CAP_MIB = 2560
BELOW_START = GiB


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
    """Starts the shield; returns it once it watches."""
    if shield == "oorkiller":
        argv = ["oorkiller", "run", "-c", oorkiller_config(level)]
        marker = "oorkiller: start "
    else:
        argv = ["earlyoom", "-M", f"{level // 1024},{level // 1024}", "-r", "0"]
        marker = "SIGKILL when mem"
    proc = started.start(argv, wait_ready=False, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, errors="replace")
    ready = threading.Event()
    proc.lines = []

    def collect():
        for line in proc.stderr:
            proc.lines.append(line.rstrip("\n"))
            if marker in line:
                ready.set()

    threading.Thread(target=collect, daemon=True).start()
    if not ready.wait(20):
        raise RuntimeError(f"{shield} did not start: {proc.lines[-5:]}")
    time.sleep(0.5)
    return proc


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


def one_run(started: Started, shield: str) -> dict:
    available = harness.mem_available()
    level = available - BELOW_START
    harness.check_safe(HOG_CAP_MIB * MiB)
    daemon = start_shield(started, shield, level)
    hog = None
    try:
        with MemSampler() as sampler:
            time.sleep(0.2)
            began = time.monotonic()
            hog = started.helper("hog", HOG_CAP_MIB)
            died = wait_death(hog.pid, 15)
            time.sleep(0.3)
    finally:
        if hog is not None:
            started.kill(hog)
        started.kill(daemon)
    samples = sampler.samples
    crossing = next((t for t, a in samples if t >= began and a < level), None)
    after = [a for t, a in samples if crossing is not None and crossing <= t <= (died or crossing) + 0.3]
    lowest = min(after) if after else None
    periods = [b[0] - a[0] for a, b in zip(samples, samples[1:])]
    trace = [(round(t - began, 4), a - level) for t, a in samples[::2] if t >= began - 0.1]
    return {
        "shield": shield, "killed": died is not None,
        "overshoot": (level - lowest) if lowest is not None else None,
        "to_death": (died - crossing) if died and crossing else None,
        "crossing_after": (crossing - began) if crossing else None,
        "sample_period_median": summary(periods)["median"],
        "level": level,
        "fill_gbps": (BELOW_START / (crossing - began) / 1e9) if crossing else None, "trace": trace,
        "died_at": (died - began) if died else None,
    }


def runs(pairs: int) -> dict:
    """Inside a PID namespace: A B A B ... `pairs` times."""
    started = Started()
    since = harness.boot_usec()
    results = []
    try:
        for pair in range(pairs):
            for shield in ("oorkiller", "earlyoom"):
                results.append(one_run(started, shield))
                log(f"fasthog {shield} run {pair + 1}/{pairs}: "
                    f"overshoot {results[-1]['overshoot']} to_death {results[-1]['to_death']}")
                time.sleep(1.0)      # memory back before the next run
    finally:
        started.close()
    return {"runs": results, "kernel_oom_kills": harness.kernel_oom_kills_since(since)}


def run(quick: bool = False) -> dict:
    harness.helper_path()
    raw = harness.in_pid_namespace("fasthog", "runs", timeout=600, pairs=1 if quick else 4)
    return digest(raw)


def digest(raw: dict) -> dict:
    out = {"kernel_oom_kills": raw["kernel_oom_kills"], "runs": []}
    for shield in ("oorkiller", "earlyoom"):
        mine = [r for r in raw["runs"] if r["shield"] == shield]
        out[shield] = {
            "overshoot_mib": summary([r["overshoot"] / MiB for r in mine if r["overshoot"] is not None]),
            "to_death_ms": summary([r["to_death"] * 1e3 for r in mine if r["to_death"] is not None]),
            "killed": sum(r["killed"] for r in mine), "runs": len(mine),
        }
    out["ratios"] = {
        "overshoot_oorkiller_over_earlyoom": harness.ratio(
            out["oorkiller"]["overshoot_mib"]["median"], out["earlyoom"]["overshoot_mib"]["median"]),
        "to_death_oorkiller_over_earlyoom": harness.ratio(
            out["oorkiller"]["to_death_ms"]["median"], out["earlyoom"]["to_death_ms"]["median"]),
    }
    out["traces"] = [{"shield": r["shield"], "died_at": r["died_at"], "trace": r["trace"]}
                     for r in raw["runs"]]
    out["hog_fill_gbps"] = summary([r["fill_gbps"] for r in raw["runs"] if r["fill_gbps"]])["median"]
    out["sample_period_ms"] = summary([r["sample_period_median"] * 1e3 for r in raw["runs"]
                                       if r["sample_period_median"]])["median"]
    return out
