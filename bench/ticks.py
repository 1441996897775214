"""What one calm tick costs, shield by shield: its Python step against its
gates checked in C (proc/_calm.pyx), as the daemon's clock makes them.

Every shield of the embedded default configuration is built in this process
(nothing here signals: the shields only read), stepped once so it offers
its gates, and the gates are armed in a CalmWatch. Then, round after round,
each shield's step and, separately, one check of all its gates are timed
with the thread's CPU clock (`thread_time_ns`: kernel time of the reads
included), each after a sleep of SLEEP seconds, so the caches are as cold as
the daemon's are once a second; medians over the rounds. A gate check is
exactly what an idle daemon runs instead of the step.

Then the whole tick an idle daemon makes once a second: every gate checked
in one `sweep` (as `run` does when they are all due: the task gate takes
its fork bound from the CPU gate's reading), against the same tick without
the kernel-table shields' gates (tasks, files, conntrack) in a second watch,
alternately; the difference is what those shields add to a calm second.
"""
from __future__ import annotations

import os
import time

from bench.harness import log, summary

SLEEP = 0.5          # seconds before each timed call
TABLES = ("tasks", "files", "conntrack")


def build():
    from oorkiller.config.load import default_config
    from oorkiller.judge.rules import RuleSet
    from oorkiller.proc._calm import CalmWatch
    from oorkiller.shields import enabled_shields, shield_class
    from oorkiller.shields.base import Context

    config = default_config()
    context = Context(config=config, rules=RuleSet(config, self_pid=os.getpid()))
    watch = CalmWatch(capacity=64)
    built = []
    for name in enabled_shields(config):
        shield = shield_class(name)(context)
        shield.step(time.monotonic())
        gates = shield.calm_gates() or []
        indices = []
        for kind, path, limit, *second in gates:
            index = watch.add(kind, path, shield.interval)
            watch.arm(index, limit, time.monotonic(), *second)
            indices.append(index)
        built.append((shield, indices))
    return watch, built


def whole_ticks(built, rounds: int) -> dict:
    """One sweep of every shield's gates, with and without the table shields',
    each in a watch of its own (so neither tick warms the other's files)."""
    from oorkiller.proc._calm import CalmWatch
    watches = {"with_tables": CalmWatch(capacity=64), "without_tables": CalmWatch(capacity=64)}
    for shield, _ in built:
        for kind, path, limit, *second in shield.calm_gates() or []:
            for name, watch in watches.items():
                if name == "with_tables" or shield.name not in TABLES:
                    watch.arm(watch.add(kind, path, shield.interval), limit, 0.0, *second)
    samples = {name: [] for name in watches}
    for _ in range(rounds):
        for name, watch in watches.items():
            samples[name].append(timed(watch.sweep))
    for watch in watches.values():
        watch.close()
    out = {name: summary(values) for name, values in samples.items()}
    out["tables_us"] = out["with_tables"]["median"] - out["without_tables"]["median"]
    return out


def timed(call) -> float:
    time.sleep(SLEEP)
    began = time.thread_time_ns()
    call()
    return (time.thread_time_ns() - began) / 1e3


def run(quick: bool = False) -> dict:
    rounds = 3 if quick else 8
    watch, built = build()
    samples = {shield.name: {"step": [], "gates": []} for shield, _ in built}
    log(f"ticks: {len(built)} shields, {rounds} rounds, {SLEEP:g} s before each call")
    for _ in range(rounds):
        for shield, indices in built:
            samples[shield.name]["step"].append(timed(lambda: shield.step(time.monotonic())))
            if indices:
                samples[shield.name]["gates"].append(
                    timed(lambda: [watch.check(i) for i in indices]))
    out = {"sleep_s": SLEEP, "rounds": rounds, "shields": {},
           "tick": whole_ticks(built, 6 if quick else 40)}
    for shield, indices in built:
        row = {"gates": len(indices), "step_us": summary(samples[shield.name]["step"])}
        if indices:
            row["gates_us"] = summary(samples[shield.name]["gates"])
            row["step_over_gates"] = row["step_us"]["median"] / max(row["gates_us"]["median"], 0.01)
        out["shields"][shield.name] = row
        shield.close()
    watch.close()
    return out
