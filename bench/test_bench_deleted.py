"""The cost of the deleted-open scan per descriptor: one process (in a PID
namespace of its own, tmpfs in a private mount namespace) holds ~19,000
descriptors of a file on a file system that is not watched; the bounded scan
(fdinfo mnt_id first, no stat) beside the former way (a stat of every
descriptor's target) on the same descriptors in the same run.

    python -m pytest -q -s bench/test_bench_deleted.py
"""
import json
import statistics
import subprocess
import sys

ROUNDS = 5

SCRIPT = r"""
import json, os, resource, subprocess, tempfile, time
from oorkiller.proc import deleted
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
mounts = []
for _ in range(2):
    fs = tempfile.mkdtemp()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=755", "tmpfs", fs], check=True)
    mounts.append(fs)
watched, other = mounts
fd = os.open(f"{other}/target", os.O_CREAT | os.O_RDONLY, 0o644)
held = [os.dup(fd) for _ in range(hard - 200)]
device = os.stat(watched).st_dev
no_limit = deleted.Budget(seconds=1e9, descriptors=10**9)

def bounded():
    began = time.perf_counter()
    scan = deleted.scan_open_deleted({device}, budget=no_limit)
    return time.perf_counter() - began, scan.descriptors

def stat_every():
    began, n = time.perf_counter(), 0
    for name in os.listdir("/proc/self/fd"):
        try:
            os.stat(f"/proc/self/fd/{name}")
        except OSError:
            pass
        n += 1
    return time.perf_counter() - began, n

rows = {"bounded": [], "stat_every": []}
for _ in range(int(os.environ["ROUNDS"])):
    for name, way in (("bounded", bounded), ("stat_every", stat_every)):
        seconds, count = way()
        rows[name].append(seconds * 1e6 / count)
print(json.dumps({"descriptors": len(held) + 1, **rows}))
"""


def test_scan_cost_per_descriptor():
    proc = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", SCRIPT],
                          capture_output=True, text=True, timeout=300, cwd="/",
                          env={"ROUNDS": str(ROUNDS), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("bounded", "stat_every"):
        print(f"{name}: median {statistics.median(result[name]):.2f} µs per descriptor "
              f"over {result['descriptors']} descriptors "
              f"(runs {min(result[name]):.2f}–{max(result[name]):.2f})")
