"""CPU-shield benchmarks (pytest-benchmark).

    python -m pytest bench/test_bench_cpu.py -s --benchmark-columns=median,iqr,min,rounds

- reading: one machine reading of the shield (/proc/stat + /proc/loadavg,
  held fds, parsed, busy share computed) — all an idle shield does per step;
- sample: what a step costs while the conditions hold, at 1,000 and 5,000
  sleeping processes: refresh() + sample_cpu() + the window's sample and
  usage Δ; the ratio to the held-fd floor (one pread of one held fd per
  process, in C) is measured in one run, interleaved, median and quartiles;
- idle: the shield's own step loop for IDLE_SECONDS on this (idle) machine,
  its thread's CPU time per second.

Reported, not judged: the machine is shared.
"""
import statistics
import threading
import time

import pytest

from oorkiller.judge import shares
from oorkiller.proc._proctable import ProcTable
from oorkiller.config import default_config
from oorkiller.shields.base import Context
from oorkiller.shields.cpu import CpuShield
from oorkiller.judge.rules import RuleSet

ROUNDS = 21
IDLE_SECONDS = 10.0


def quiet_monitor() -> CpuShield:
    """The shield with the embedded defaults; its decisions go nowhere."""
    config = default_config()
    return CpuShield(Context(config=config, rules=RuleSet(config)))


def test_reading(benchmark):
    monitor = quiet_monitor()
    try:
        benchmark(monitor.read)
    finally:
        monitor.close()


@pytest.fixture(scope="module")
def warm(sleepers):
    table = ProcTable()
    table.refresh()
    table.sample_cpu()
    window = shares.UsageWindow(60)
    assert len(table) >= len(sleepers)
    yield table, window
    table.close()


def sample_and_delta(table, window):
    table.refresh()
    table.sample_cpu()
    window.add(time.monotonic(), {p.serial: p.cpu_ticks for p in table.entries() if p.eligible})
    return window.usage()


def test_sample(benchmark, warm):
    table, window = warm
    assert len(benchmark(sample_and_delta, table, window)) >= 1000


def test_sample_over_floor_ratio(warm):
    table, window = warm
    floors, samples, ratios = [], [], []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        table.floor_preads()
        floor = time.perf_counter() - start
        start = time.perf_counter()
        sample_and_delta(table, window)
        sample = time.perf_counter() - start
        floors.append(floor)
        samples.append(sample)
        ratios.append(sample / floor)
    q = statistics.quantiles(ratios, n=4)
    n = len(table)
    print(f"\n{n} processes: floor {statistics.median(floors) * 1e3:.2f} ms "
          f"({statistics.median(floors) / n * 1e6:.2f} us/proc), sample_cpu+delta "
          f"{statistics.median(samples) * 1e3:.2f} ms "
          f"({statistics.median(samples) / n * 1e6:.2f} us/proc), ratio "
          f"{statistics.median(ratios):.2f} (IQR {q[0]:.2f}-{q[2]:.2f})")
    assert statistics.median(ratios) > 0


def test_idle_cost_per_second():
    """The step loop as the daemon runs it, on a machine where no condition holds."""
    monitor = quiet_monitor()
    spent = {}

    def loop():
        began_cpu, began = time.thread_time(), time.monotonic()
        steps = 0
        while time.monotonic() - began < IDLE_SECONDS:
            sleep = monitor.step(time.monotonic()).sleep
            steps += 1
            time.sleep(sleep)
        spent.update(cpu=time.thread_time() - began_cpu, wall=time.monotonic() - began,
                     steps=steps, held=monitor.held_since is not None)

    worker = threading.Thread(target=loop)
    worker.start()
    worker.join()
    monitor.close()
    per_second = spent["cpu"] / spent["wall"]
    print(f"\nidle CPU shield: {per_second * 1e6:.0f} us CPU per second "
          f"({spent['steps']} steps in {spent['wall']:.1f} s, "
          f"{spent['cpu'] / spent['steps'] * 1e6:.0f} us per step, conditions held: {spent['held']})")
    assert spent["steps"] >= IDLE_SECONDS / 1.5
