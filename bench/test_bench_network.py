"""Network shield benchmark: the cost of one duplicate-MAC scan (read
/sys/class/net, judge every shared MAC) at 10 and at 1,000 interfaces.

The interfaces are veth pairs in a private network namespace with its own
sysfs; one pair shares a MAC so the scan finds a duplicate each time.

    python -m pytest -q -s bench/test_bench_network.py

Run as above, the outer test re-executes this file under
`unshare --net --mount` (pytest-benchmark's table is printed from there).
"""
import os
import shutil
import subprocess
import sys

import pytest

from oorkiller.proc import netscan

INSIDE = os.environ.get("OORKILLER_BENCH_NETNS") == "1"
IGNORE = ()


def _why_not_here() -> str:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare (util-linux) and ip (iproute2)"
    return ""


@pytest.mark.skipif(INSIDE, reason="already inside the network namespace")
@pytest.mark.skipif(bool(_why_not_here()), reason=_why_not_here() or "ok")
def test_benchmarks_run_inside_a_private_network_namespace():
    env = {**os.environ, "OORKILLER_BENCH_NETNS": "1"}
    proc = subprocess.run(["unshare", "--net", "--mount", sys.executable, "-m", "pytest", "-q", "-s",
                           "-p", "no:cacheprovider", os.path.abspath(__file__)],
                          env=env, capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


@pytest.fixture(scope="module")
def private_sysfs():
    subprocess.run(["mount", "-t", "sysfs", "sysfs", "/sys"], check=True)
    yield "/sys"


def _make_pairs(prefix: str, pairs: int) -> None:
    commands = [f"link add {prefix}{i}a type veth peer name {prefix}{i}b" for i in range(pairs)]
    commands.append(f"link set {prefix}0a address 02:00:00:00:99:99")
    commands.append(f"link set {prefix}0b address 02:00:00:00:99:99")
    subprocess.run(["ip", "-batch", "-"], input="\n".join(commands) + "\n", text=True, check=True)


def _remove_pairs(prefix: str, pairs: int) -> None:
    commands = [f"link del {prefix}{i}a" for i in range(pairs)]
    subprocess.run(["ip", "-batch", "-"], input="\n".join(commands) + "\n", text=True, check=True)


def scan(sys_root: str):
    """What NetworkShield.scan does without Open vSwitch."""
    _, links = netscan.read_shared_links(sys_root)
    return netscan.find_duplicates(links, IGNORE)


def full_scan(sys_root: str):
    """Every attribute of every interface: the cost the two-phase scan avoids."""
    return netscan.find_duplicates(netscan.read_links(sys_root), IGNORE)


@pytest.mark.skipif(not INSIDE, reason="runs inside the network namespace the outer test makes")
@pytest.mark.parametrize("interfaces", [10, 1000])
@pytest.mark.parametrize("how", [scan, full_scan], ids=["scan", "full_read"])
def test_one_duplicate_scan(benchmark, private_sysfs, interfaces, how):
    prefix = f"n{interfaces}x"
    _make_pairs(prefix, interfaces // 2)
    try:
        present = len(os.listdir(f"{private_sysfs}/class/net"))
        assert present == interfaces + 1            # + lo
        found = benchmark(how, private_sysfs)
        assert [d.interfaces for d in found] == [(f"{prefix}0a", f"{prefix}0b")]
        benchmark.extra_info["interfaces"] = interfaces
    finally:
        _remove_pairs(prefix, interfaces // 2)
