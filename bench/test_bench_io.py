"""IO shield benchmarks (pytest-benchmark).

    python -m pytest bench/test_bench_io.py -s --benchmark-columns=median,iqr,min,rounds

- one diskstats reading (held-fd pread + parse + Δ of the watched devices) at 8
  and 64 devices, from canned texts in a temp file, beside the real
  /proc/diskstats of this machine;
- the per-process IO Δ of the culprit search (sample_io + the window's Δ) at
  1,000 and 5,000 sleeping processes, beside the held-fd floor
  (`ProcTable.floor_preads`) measured in the same run, interleaved; the ratio is
  printed with its spread (reported, not judged: the machine is shared).
"""
import statistics
import time

import pytest

from oorkiller.judge import shares
from oorkiller.proc.diskstats import DiskStats
from oorkiller.proc._proctable import ProcTable
from oorkiller.shields.io import io_bytes

ROUNDS = 31


def canned(count: int) -> bytes:
    """`count` whole disks with busy-looking counters (no partitions: sysfs is
    not consulted for names it does not know)."""
    lines = [f" 259 {i * 16:7d} nvme{i}n1 {1000 + i} 3 {80000 + i} 400 {2000 + i} 5 "
             f"{160000 + i} 900 0 1300 1300 0 0 0 0 0 0\n" for i in range(count)]
    return "".join(lines).encode()


@pytest.fixture(params=[8, 64], ids=lambda n: f"{n}devices")
def canned_file(request, tmp_path):
    path = tmp_path / "diskstats"
    path.write_bytes(canned(request.param))
    return str(path), request.param


def test_diskstats_reading_canned(benchmark, canned_file, tmp_path):
    path, count = canned_file
    reader = DiskStats(["*"], sys_root=str(tmp_path), path=path)
    clock = iter(range(1, 10 ** 9))
    reader.sample(0.0)
    readings = benchmark(lambda: reader.sample(float(next(clock))))
    assert len(readings) == count
    reader.close()


def test_diskstats_reading_real(benchmark):
    reader = DiskStats(["*"])
    clock = iter(range(1, 10 ** 9))
    reader.sample(0.0)
    benchmark(lambda: reader.sample(float(next(clock))))
    print(f"\nreal /proc/diskstats: {len(reader.present())} watched devices")
    reader.close()


@pytest.fixture(scope="module")
def io_table(sleepers):
    table = ProcTable()
    table.refresh()
    for proc in table.entries():
        proc.eligible = True
    table.sample_io()
    assert len(table) >= len(sleepers)
    yield table
    table.close()


def io_delta(table, window, now):
    """What one step of a holding IO shield does per process."""
    table.sample_io()
    window.add(now, {p.serial: io_bytes(p) for p in table.entries() if p.eligible})
    return window.usage()


def test_io_delta(benchmark, io_table):
    window = shares.UsageWindow(30.0)
    clock = iter(range(10 ** 9))
    used = benchmark(lambda: io_delta(io_table, window, float(next(clock))))
    assert len(used) == len(io_table)


def test_io_delta_over_floor_ratio(io_table):
    """Interleaved rounds of the floor and the IO Δ; median ratio and quartiles."""
    window = shares.UsageWindow(30.0)
    ratios, floors, deltas = [], [], []
    for i in range(ROUNDS):
        start = time.perf_counter()
        io_table.floor_preads()
        floor = time.perf_counter() - start
        start = time.perf_counter()
        io_delta(io_table, window, float(i))
        delta = time.perf_counter() - start
        floors.append(floor)
        deltas.append(delta)
        ratios.append(delta / floor)
    quartiles = statistics.quantiles(ratios, n=4)
    n = len(io_table)
    print(f"\n{n} processes: floor {statistics.median(floors) * 1e3:.2f} ms "
          f"({statistics.median(floors) / n * 1e6:.2f} us/proc), io delta "
          f"{statistics.median(deltas) * 1e3:.2f} ms "
          f"({statistics.median(deltas) / n * 1e6:.2f} us/proc), ratio "
          f"{statistics.median(ratios):.2f} (IQR {quartiles[0]:.2f}-{quartiles[2]:.2f})")
    assert statistics.median(ratios) > 0  # reported, not judged: the machine is shared
