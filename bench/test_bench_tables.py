"""Kernel-table shield benchmarks (pytest-benchmark), at 1,000 and 5,000 processes.

    pytest bench/test_bench_tables.py -s --benchmark-columns=median,iqr,min,rounds

- step: what every step of the tasks and files shields reads while under
  the level (one pread of /proc/loadavg, of /proc/sys/fs/file-nr, parsed)
- threads: one sample of every process's thread count above the level
  (refresh() + sample_cpu(), the stat fds held)
- fds: one count of every process's descriptors above the level (a listing
  of /proc/PID/fd per process, identity-checked): the costly one, done only
  while the open-file table is above its level
"""
import pytest

from oorkiller.proc._proctable import ProcTable
from oorkiller.proc._readers import HeldFile
from oorkiller.proc.fds import count_fds
from oorkiller.proc.tables import parse_file_nr, parse_task_count


@pytest.fixture(scope="module")
def every_process(sleepers):
    """A warm table of every process, all taken as candidates."""
    table = ProcTable(hold="stat")
    added, _ = table.refresh()
    for proc in added:
        proc.eligible = not proc.kthread
    assert len(table) >= len(sleepers)
    yield table
    table.close()


@pytest.mark.parametrize("path, parse", [
    ("/proc/loadavg", parse_task_count),
    ("/proc/sys/fs/file-nr", parse_file_nr),
], ids=["tasks", "files"])
def test_step_under_the_level(benchmark, path, parse):
    with HeldFile(path) as held:
        benchmark(lambda: parse(held.read()))


def test_threads_sample(benchmark, every_process):
    def sample():
        every_process.refresh()
        every_process.sample_cpu()
        return {p.serial: p.threads for p in every_process.entries() if p.eligible}
    assert len(benchmark(sample)) >= 1000


def test_fd_count(benchmark, every_process):
    def count():
        return {p.serial: count_fds(every_process, p) for p in every_process.entries() if p.eligible}
    assert len(benchmark(count)) >= 1000
