"""Native core benchmarks (pytest-benchmark), at 1,000 and 5,000 processes.

    python -m pytest bench/test_bench_native.py -s --benchmark-columns=median,iqr,min,rounds

- floor: one pread of one held fd (oom_score) per process, in C
- selection: refresh() + sample_memory() + rank_memory(10), warm table
- cold: ProcTable() + first refresh()
- readers: HeldFile.read() + parse for meminfo, stat, loadavg, PSI

The target: selection within 2x of the floor. The ratio
is measured in one run, interleaving both, and printed with its spread.
"""
import statistics
import time

import pytest

from oorkiller.proc import _readers as readers
from oorkiller.proc._proctable import ProcTable

ROUNDS = 31


@pytest.fixture(scope="module")
def warm_table(sleepers):
    table = ProcTable()
    table.refresh()
    table.sample_memory()
    assert len(table) >= len(sleepers)
    yield table
    table.close()


def select(table):
    table.refresh()
    table.sample_memory()
    return table.rank_memory(10)


def test_floor(benchmark, warm_table):
    benchmark(warm_table.floor_preads)


def test_selection(benchmark, warm_table):
    assert len(benchmark(select, warm_table)) == 10


def test_cold_table(benchmark, sleepers):
    def create():
        table = ProcTable()
        table.refresh()
        table.close()
    benchmark.pedantic(create, rounds=5, iterations=1)


def test_selection_over_floor_ratio(warm_table, sleepers):
    """Interleaved rounds of both; the median ratio and its quartiles."""
    ratios, floors, selections = [], [], []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        warm_table.floor_preads()
        floor = time.perf_counter() - start
        start = time.perf_counter()
        select(warm_table)
        selection = time.perf_counter() - start
        floors.append(floor)
        selections.append(selection)
        ratios.append(selection / floor)
    quartiles = statistics.quantiles(ratios, n=4)
    n = len(warm_table)
    print(f"\n{n} processes: floor {statistics.median(floors) * 1e3:.2f} ms "
          f"({statistics.median(floors) / n * 1e6:.2f} us/proc), selection "
          f"{statistics.median(selections) * 1e3:.2f} ms "
          f"({statistics.median(selections) / n * 1e6:.2f} us/proc), ratio "
          f"{statistics.median(ratios):.2f} (IQR {quartiles[0]:.2f}-{quartiles[2]:.2f})")
    assert statistics.median(ratios) > 0  # reported, not judged: the machine is shared


@pytest.mark.parametrize("path, parse", [
    ("/proc/meminfo", readers.parse_meminfo),
    ("/proc/stat", readers.parse_cpu_stat),
    ("/proc/loadavg", readers.parse_loadavg),
    ("/proc/pressure/memory", readers.parse_psi),
], ids=["meminfo", "stat", "loadavg", "psi"])
def test_reader(benchmark, path, parse):
    with readers.HeldFile(path) as held:
        benchmark(lambda: parse(held.read()))
