"""Idle cost: what a shield costs while it waits, side by side.

The four run at the same time, each as PID 1 of its own PID namespace:
`oorkiller run --dry-run` with the embedded default configuration (every
default monitor on), a twin of it (two identical daemons differ by the
noise of the run: a difference smaller than theirs is not measurable) and,
beside them, the same with the kernel-table shields (tasks, files,
conntrack) off, so the cost of those three readings shows in the same run;
earlyoom 1.7 --dryrun with Debian's arguments
(/etc/default/earlyoom), and nohang 0.2.0 --monitor with its shipped
configuration (nohang has no dry run: in its namespace there is nothing to
kill, and memory is far above its levels); and a bare Python interpreter
that only sleeps (`python -c`, the interpreter the bench runs on), whose
VmRSS is the floor under any Python daemon's. After a warm-up, the run is cut
into windows; per window, from the host's /proc:

- CPU seconds per second: sum over the process's threads of the first
  field of /proc/PID/task/TID/schedstat (ns on CPU), delta / window;
- wakeups per second: voluntary + nonvoluntary context switches summed over
  /proc/PID/task/*/status, delta / window;
- VmRSS and RssAnon of /proc/PID/status at the end of the window.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bench import harness
from bench.harness import log, summary

WARM_UP = 12.0     # seconds: the daemon arms its calm gates in its first steps (the
                   # network shield's second step, 10 s in); the peers start as fast


def earlyoom_args() -> list[str]:
    try:
        with open("/etc/default/earlyoom") as f:
            for line in f:
                if line.startswith("EARLYOOM_ARGS="):
                    return shlex.split(line.split("=", 1)[1].strip().strip('"'))
    except OSError:
        pass
    return []


def without_tables(folder: str) -> str:
    """The embedded default configuration with the kernel-table shields (tasks,
    files, conntrack) off: the daemon beside the default one shows what those
    three readings cost an idle daemon."""
    import yaml
    text = subprocess.run(["oorkiller", "print-default-config"], capture_output=True, text=True,
                          check=True).stdout
    config = yaml.safe_load(text)
    config["tasks"] = {**config.get("tasks", {}), "enabled": False}
    config["files"] = {**config.get("files", {}), "enabled": False}
    network = config.setdefault("network", {})
    network["conntrack"] = {**network.get("conntrack", {}), "enabled": False}
    path = os.path.join(folder, "no-tables.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    os.chmod(path, 0o644)
    return path


def commands(folder: str) -> dict:
    nohang_conf = os.path.join(folder, "nohang.conf")
    shutil.copy("/etc/nohang/nohang.conf", nohang_conf)
    return {
        "oorkiller": ["oorkiller", "run", "--dry-run"],
        "oorkiller_twin": ["oorkiller", "run", "--dry-run"],
        "oorkiller_no_tables": ["oorkiller", "run", "--dry-run", "-c", without_tables(folder)],
        "earlyoom": ["earlyoom", "--dryrun", *earlyoom_args()],
        "nohang": ["nohang", "--monitor", "-c", nohang_conf],
        "python_bare": [sys.executable, "-c", "import time; time.sleep(3600)"],
    }


def namespace_child(unshare_pid: int, timeout: float = 10) -> int:
    """The host PID of the command `unshare --fork` started (its PID 1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{unshare_pid}/task/{unshare_pid}/children") as f:
                children = f.read().split()
            if children:
                return int(children[0])
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the namespaced command did not start")


def counters(pid: int) -> dict:
    """CPU ns and context switches summed over threads; RSS of the process."""
    cpu_ns = switches = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                cpu_ns += int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
        except (OSError, ValueError):
            continue                           # a thread that just ended
    memory = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "RssAnon", "Threads"):
                memory[key] = int(line.split()[1])
    return {"cpu_ns": cpu_ns, "switches": switches, "at": time.monotonic(), **memory}


def run(quick: bool = False) -> dict:
    duration = 10.0 if quick else 60.0
    windows = 5 if quick else 6
    folder = tempfile.mkdtemp(prefix="oorkiller-bench-")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    launched, pids = [], {}
    try:
        for name, argv in commands(folder).items():
            proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", *argv],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            launched.append(proc)
            pids[name] = namespace_child(proc.pid)
        time.sleep(WARM_UP)
        log(f"idle: measuring {duration:g}s side by side: {pids}")
        series = {name: [counters(pid)] for name, pid in pids.items()}
        for _ in range(windows):
            time.sleep(duration / windows)
            for name, pid in pids.items():
                series[name].append(counters(pid))
    finally:
        for pid in pids.values():
            _kill(pid)
        for proc in launched:
            _kill(proc.pid)
            proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    return digest(series, duration)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def digest(series: dict, duration: float) -> dict:
    out = {"seconds": duration}
    for name, points in series.items():
        cpu, wakeups = [], []
        for a, b in zip(points, points[1:]):
            span = b["at"] - a["at"]
            cpu.append((b["cpu_ns"] - a["cpu_ns"]) / 1e3 / span)      # µs of CPU per second
            wakeups.append((b["switches"] - a["switches"]) / span)
        last = points[-1]
        out[name] = {"cpu_us_per_s": summary(cpu), "wakeups_per_s": summary(wakeups),
                     "vmrss_kib": last.get("VmRSS"), "rssanon_kib": last.get("RssAnon"),
                     "threads": last.get("Threads")}
    med = lambda name, key: out[name][key]["median"]
    out["ratios"] = {
        "cpu_oorkiller_over_nohang": harness.ratio(med("oorkiller", "cpu_us_per_s"), med("nohang", "cpu_us_per_s")),
        "cpu_oorkiller_over_earlyoom": harness.ratio(med("oorkiller", "cpu_us_per_s"), med("earlyoom", "cpu_us_per_s")),
        "rss_oorkiller_over_nohang": harness.ratio(out["oorkiller"]["vmrss_kib"], out["nohang"]["vmrss_kib"]),
        "wakeups_oorkiller_over_nohang": harness.ratio(med("oorkiller", "wakeups_per_s"), med("nohang", "wakeups_per_s")),
    }
    if "oorkiller_no_tables" in out:
        # What the tasks, files and conntrack readings add to an idle daemon
        # (1.0: nothing measurable), in the same run.
        out["ratios"]["cpu_with_tables_over_without"] = harness.ratio(
            med("oorkiller", "cpu_us_per_s"), med("oorkiller_no_tables", "cpu_us_per_s"))
        out["tables_add_us_per_s"] = med("oorkiller", "cpu_us_per_s") - med("oorkiller_no_tables", "cpu_us_per_s")
        out["ratios"]["wakeups_with_tables_over_without"] = harness.ratio(
            med("oorkiller", "wakeups_per_s"), med("oorkiller_no_tables", "wakeups_per_s"))
    if "oorkiller_twin" in out:
        # The noise of this run: what two identical daemons differ by.
        out["twins_differ_us_per_s"] = abs(med("oorkiller", "cpu_us_per_s") - med("oorkiller_twin", "cpu_us_per_s"))
    return out
