"""Benchmark fixtures: many cheap sleeping processes.

One Python parent forks N children that each wait in signal.pause() (with
PR_SET_PDEATHSIG, so they die with the parent if a run is interrupted).
At teardown exactly those child PIDs are SIGKILLed (they stay zombies of
the parent, so their PIDs cannot be reused meanwhile), then the parent.
"""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

FORKER = textwrap.dedent("""
    import ctypes, os, signal, sys
    prctl = ctypes.CDLL(None).prctl
    children = []
    for _ in range(int(sys.argv[1])):
        pid = os.fork()
        if pid == 0:
            prctl(1, signal.SIGKILL, 0, 0, 0)   # PR_SET_PDEATHSIG
            signal.pause()
            os._exit(0)
        children.append(pid)
    sys.stdout.write(" ".join(map(str, children)) + "\\n")
    sys.stdout.flush()
    signal.pause()
""")


@pytest.fixture(scope="module", params=[1000, 5000], ids=lambda n: f"{n}procs")
def sleepers(request):
    """Yields the PIDs of N sleeping processes."""
    parent = subprocess.Popen([sys.executable, "-c", FORKER, str(request.param)],
                              stdout=subprocess.PIPE)
    pids = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(pids) == request.param
    try:
        yield pids
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        parent.kill()
        parent.wait()
