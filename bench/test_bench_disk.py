"""Disk shield benchmarks: a cleanup pass over 100,000 files beside
`find DIR -delete` on the same kind of tree in the same run (tmpfs in a private
mount namespace), and the cost of one disk reading.

    python -m pytest -q -s bench/test_bench_disk.py
"""
import json
import os
import statistics
import subprocess
import sys
import time

from oorkiller.config import DiskConfig
from oorkiller.shields.disk import Disk, Reading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = 100_000
ROUNDS = 3

SCRIPT = r"""
import json, os, subprocess, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from oorkiller.act import cleanup
from oorkiller.config import CleanupRule
files, rounds = int(sys.argv[2]), int(sys.argv[3])
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
fs = tempfile.mkdtemp()
subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=512m,nr_inodes={files + 1000},mode=755",
                "tmpfs", fs], check=True)
old = time.time() - 7200

def tree():
    d = tempfile.mkdtemp(dir=fs)
    os.chmod(d, 0o755)
    for i in range(files):
        p = f"{d}/f.log.{i}"
        os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
        os.utime(p, (old, old + i / 1000))
    return d

out = {"ours": [], "find": []}
for _ in range(rounds):
    d = tree()
    goal = cleanup.Goal(lambda: os.statvfs(fs), 1 << 60, None)
    began = time.perf_counter()
    result = cleanup.run_pass([CleanupRule(path=d, glob="*.log.*", min_age=600)], os.stat(d).st_dev, goal)
    out["ours"].append(time.perf_counter() - began)
    assert result.files == files, result
    d = tree()
    began = time.perf_counter()
    subprocess.run(["find", d, "-type", "f", "-name", "*.log.*", "-delete"], check=True)
    out["find"].append(time.perf_counter() - began)
    assert os.listdir(d) == []
print(json.dumps(out))
"""


def test_cleanup_pass_over_100000_files_beside_find_delete():
    proc = subprocess.run(["unshare", "--mount", sys.executable, "-c", SCRIPT, ROOT, str(FILES), str(ROUNDS)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    times = json.loads(proc.stdout)
    ours, find = statistics.median(times["ours"]), statistics.median(times["find"])
    print(f"\ncleanup pass, {FILES} files: median {ours:.2f}s ({FILES / ours:,.0f} files/s), "
          f"runs {[round(t, 2) for t in times['ours']]}")
    print(f"find -delete, {FILES} files: median {find:.2f}s ({FILES / find:,.0f} files/s), "
          f"runs {[round(t, 2) for t in times['find']]}")
    print(f"ratio ours/find: {ours / find:.2f}")


def test_one_disk_reading(benchmark):
    disk = Disk(DiskConfig(path="/"), 0)

    def reading():
        r = Reading(os.statvfs("/"), time.monotonic())
        disk.remember(r)
        return disk.judge(r)

    benchmark(reading)
