"""The report: ratios with medians and spreads, JSON, PNG plots, and the
regression check against a previous report (a ratio worse by more than 20%
is flagged)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time

from bench.harness import ROOT, mem_total

REGRESSION = 0.20
# Ratios where a larger number is better (how many times slower a peer is);
# every other ratio is "ours over theirs/floor/idle": smaller is better.
HIGHER_IS_BETTER = ("earlyoom_over_oorkiller", "nohang_over_oorkiller")

# ratio key (suffix) -> (target, comparison) for the table
TARGETS = {
    "oorkiller_over_floor": (2.0, "<="),
    "earlyoom_over_oorkiller": (4.0, ">="),
    "nohang_over_oorkiller": (4.0, ">="),
    "crossing_to_signal_ms": (10.0, "<="),
    "overshoot_oorkiller_over_earlyoom": (0.5, "<="),
    "cpu_oorkiller_over_nohang": (1.0, "<="),
    "rss_oorkiller_over_nohang": (1.0, "<="),
    "to_death_load_over_idle": (2.0, "<="),
    "max_gap_over_interval_plus_50ms": (1.0, "<="),
}


def machine() -> dict:
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": commit,
            "kernel": platform.release(), "cpus": os.cpu_count(),
            "mem_total_gib": round(mem_total() / (1 << 30), 1)}


def flat_ratios(results: dict) -> dict:
    """Every ratio of a report under one dotted name."""
    out = {}
    for count, row in results.get("selection", {}).get("counts", {}).items():
        for key, value in row["ratios"].items():
            out[f"selection.{count}.{key}"] = value
        out[f"selection.{count}.crossing_to_signal_ms"] = row["crossing_to_signal_ms"]["median"]
    for scenario in ("fasthog", "idle", "worstcase"):
        for key, value in results.get(scenario, {}).get("ratios", {}).items():
            out[f"{scenario}.{key}"] = value
    worst = results.get("worstcase")
    if worst:
        out["worstcase.max_gap_over_interval_plus_50ms"] = (
            worst["load"]["max_gap_ms"] / (worst["load"]["interval_ms"] + 50))
    return out


def verdict(name: str, value) -> str:
    for suffix, (target, op) in TARGETS.items():
        if name.endswith(suffix):
            if value is None:
                return f"target {op} {target:g}: no value"
            ok = value <= target if op == "<=" else value >= target
            return f"target {op} {target:g}: {'met' if ok else 'MISSED'}"
    return ""


def table(results: dict) -> str:
    lines = [f"{'ratio':58} {'value':>9}  target", "-" * 90]
    for name, value in flat_ratios(results).items():
        shown = "n/a" if value is None else f"{value:9.3f}"
        lines.append(f"{name:58} {shown:>9}  {verdict(name, value)}")
    return "\n".join(lines)


def compare(current: dict, previous: dict) -> list[str]:
    """Ratios that got worse by more than REGRESSION since `previous`."""
    flagged = []
    now, before = flat_ratios(current), flat_ratios(previous)
    for name, value in now.items():
        old = before.get(name)
        if value is None or not old:
            continue
        higher_better = name.endswith(HIGHER_IS_BETTER)
        change = (old / value - 1) if higher_better else (value / old - 1)
        if value and change > REGRESSION:
            flagged.append(f"{name}: {old:.3f} -> {value:.3f} ({change:+.0%} worse)")
    return flagged


def write_json(results: dict, folder: str, name: str) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")
    return path


# ------------------------------------------------------------------ plots
def plots(results: dict, folder: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = []
    if "fasthog" in results:
        made.append(_plot_fasthog(plt, results["fasthog"], os.path.join(folder, "fasthog.png")))
    if "selection" in results:
        made.append(_plot_selection(plt, results["selection"], os.path.join(folder, "selection.png")))
    if "idle" in results:
        made.append(_plot_idle(plt, results["idle"], os.path.join(folder, "idle.png")))
    return made


def _plot_fasthog(plt, fasthog: dict, path: str) -> str:
    fig, ax = plt.subplots(figsize=(9, 5))
    colors = {"oorkiller": "tab:blue", "earlyoom": "tab:orange"}
    labelled = set()
    for run in fasthog["traces"]:
        trace = run["trace"]
        if not trace or run["died_at"] is None:
            continue
        shift = run["died_at"]                        # align runs on the death
        xs = [(t - shift) * 1e3 for t, _ in trace]
        ys = [a / (1 << 20) for _, a in trace]
        label = run["shield"] if run["shield"] not in labelled else None
        labelled.add(run["shield"])
        ax.plot(xs, ys, color=colors[run["shield"]], alpha=0.7, label=label)
        ax.axvline(0, color="black", linewidth=0.5)
    ax.axhline(0, color="red", linestyle="--", label="kill level")
    ax.set_xlim(-1500, 400)
    ax.set_ylim(-200, 1100)
    ax.set_xlabel("ms, relative to the hog's death (vertical line)")
    ax.set_ylabel("MemAvailable minus kill level (MiB)")
    ax.set_title("Fast hog: MemAvailable over time, oorkiller vs earlyoom (same levels)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_selection(plt, selection: dict, path: str) -> str:
    counts = sorted(selection["counts"], key=int)
    fig, ax = plt.subplots(figsize=(8, 5))
    series = (("oorkiller_ms", "oorkiller (refresh+sample+rank)"), ("floor_ms", "floor: pread held fd (C)"),
              ("earlyoom_ms", "earlyoom 1.7"), ("nohang_ms", "nohang 0.2.0"))
    xs = [int(c) for c in counts]
    for key, label in series:
        med = [selection["counts"][c][key]["median"] for c in counts]
        low = [selection["counts"][c][key]["min"] for c in counts]
        high = [selection["counts"][c][key]["max"] for c in counts]
        if any(m is None for m in med):
            continue
        ax.errorbar(xs, med, yerr=[[m - lo for m, lo in zip(med, low)], [hi - m for m, hi in zip(med, high)]],
                    marker="o", capsize=3, label=label)
    ax.set_xlabel("processes")
    ax.set_ylabel("one victim selection (ms, median; bars: min-max over rounds)")
    ax.set_title("Victim selection time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_idle(plt, idle: dict, path: str) -> str:
    names = ["oorkiller", "earlyoom", "nohang"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 4))
    axes[0].bar(names, [idle[n]["cpu_us_per_s"]["median"] for n in names])
    axes[0].set_title("CPU µs per second")
    axes[1].bar(names, [idle[n]["vmrss_kib"] / 1024 for n in names], label="VmRSS")
    axes[1].bar(names, [idle[n]["rssanon_kib"] / 1024 for n in names], label="RssAnon")
    axes[1].set_title("MiB")
    axes[1].legend()
    axes[2].bar(names, [idle[n]["wakeups_per_s"]["median"] for n in names])
    axes[2].set_title("wakeups per second")
    fig.suptitle(f"Idle cost over {idle['seconds']:g} s (medians)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
