"""Running the real, installed `oorkiller` safely against processes a test started.

Outside (pytest): `in_pid_namespace("scenarios_memory", "slow_hog", ...)` runs a
scenario function inside `unshare --pid --fork --mount-proc`, where /proc lists
only the test's own processes, and returns what the scenario observed (the
JSON of its last stdout line). Inside, scenarios use `Daemon` and `victim()`;
every configuration they write carries `scope: {descendant_of: <scenario pid>}`
as well, so the daemon can see and touch only what the test started.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import yaml

TESTS = os.path.dirname(os.path.abspath(__file__))
VICTIMS = os.path.join(TESTS, "victims.py")
MiB = 1 << 20


# ------------------------------------------------------------------ outside
def oorkiller_command() -> list[str]:
    """The installed console script (what operators run)."""
    exe = shutil.which("oorkiller") or os.path.join(os.path.dirname(sys.executable), "oorkiller")
    if not os.path.exists(exe):
        raise RuntimeError("oorkiller is not installed: run `pip install .[test]` first")
    return [exe]


def run_in_scratch(argv: list[str], **run_args) -> subprocess.CompletedProcess:
    """subprocess.run(argv) with TMPDIR a folder of its own, removed when
    the command is done: whatever a scenario makes with tempfile goes with
    it (the mounts it made there went with its private mount namespace).
    The folder is readable by all: a scenario's other users (nobody's home,
    its hog) must reach into it."""
    scratch = tempfile.mkdtemp(prefix="oorkiller-scenario-")
    os.chmod(scratch, 0o755)
    try:
        return subprocess.run(argv, env=dict(os.environ, TMPDIR=scratch), **run_args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def in_pid_namespace(module: str, function: str, timeout: float = 90, **params) -> dict:
    """Run tests/MODULE.py:FUNCTION(**params) as PID 1 of a new PID namespace."""
    code = (f"import sys, json; sys.path.insert(0, {TESTS!r}); import {module}; "
            f"result = {module}.{function}(**json.loads(sys.argv[1])); "
            f"print(json.dumps(result), flush=True)")
    proc = run_in_scratch(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code, json.dumps(params)],
        capture_output=True, text=True, timeout=timeout, cwd="/")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"scenario {module}.{function} failed (rc={proc.returncode})\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return json.loads(lines[-1])


def kmsg_lines_since(usec: int) -> list[str]:
    from oorkiller.proc.kmsg import parse_kmsg_entry   # the daemon's own reader of a kmsg entry
    """Texts of kernel-log records newer than `usec` (time since boot)."""
    texts = []
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                raw = os.read(fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:
                continue
            entry = parse_kmsg_entry(raw)
            if entry is not None and entry["usec"] >= usec:
                texts.append(entry["text"].decode("utf-8", "replace"))
    finally:
        os.close(fd)
    return texts


def boot_usec() -> int:
    return int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000)


def kernel_oom_kills_since(usec: int) -> list[str]:
    return [t for t in kmsg_lines_since(usec) if "Out of memory" in t or "oom-kill:" in t]


# ------------------------------------------------------------------ inside
def parse_stderr_record(line: str) -> dict | None:
    """A daemon stderr line `oorkiller: EVENT k=v ...` back into a record dict."""
    from oorkiller.record.logfmt import parse_record
    prefix = "oorkiller: "
    if not line.startswith(prefix) or line.startswith(prefix + "warning:"):
        return None
    return parse_record(f"oorkiller[0]: event={line[len(prefix):]}")


def mem_available(settle: bool = True) -> int:
    """MemAvailable in bytes. With `settle`, once it has stopped moving (the
    memory of a process that just died can take a moment to show), so that
    levels set relative to it mean what the test says."""
    def read() -> int:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no MemAvailable")
    value, steady = read(), 0
    deadline = time.monotonic() + (8 if settle else 0)
    while time.monotonic() < deadline and steady < 3:
        time.sleep(0.25)
        again = read()
        steady = steady + 1 if abs(again - value) < 16 * MiB else 0
        value = again
    return value


def victim(kind: str, name: str, *options: str, wait_ready: bool = True,
           pgid: int | None = None, executable: str = sys.executable) -> subprocess.Popen:
    """Start a victim program (tests/victims.py) and wait for its `ready`.
    `pgid=0` makes it lead a new process group; another pgid joins that group.
    `executable`: the Python to run it with (a link's name is the first comm)."""
    proc = subprocess.Popen([executable, VICTIMS, kind, "--name", name, *options],
                            stdout=subprocess.PIPE, text=True, process_group=pgid)
    proc.victim_name = name
    if wait_ready:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            raise RuntimeError(f"victim {name} did not start")
    return proc


def base_config(**sections) -> dict:
    """A config that watches only what a test asks for, scoped to this scenario."""
    config = {
        "log": {"kmsg": True, "stderr": True, "level": "debug"},
        "daemon": {"lock_memory": False, "nice": 0},
        "scope": {"descendant_of": os.getpid()},
        "memory": {"enabled": False},
        "cpu": {"enabled": False},
        "disks": [],
        "io": {"enabled": False},
        "tasks": {"enabled": False},
        "files": {"enabled": False},
        "network": {"duplicate_mac": {"enabled": False}, "conntrack": {"enabled": False}},
    }
    config.update(sections)
    return config


class Daemon:
    """The installed oorkiller, run in the foreground, its stderr records collected."""

    def __init__(self, config: dict, *extra_args: str, prefix: tuple = ()):
        """`prefix`: a command to run the daemon under (e.g. setpriv)."""
        self.dir = tempfile.mkdtemp(prefix="oorkiller-test-")
        self.config_path = os.path.join(self.dir, "oorkiller.yaml")
        with open(self.config_path, "w") as f:
            yaml.safe_dump(config, f)
        os.chmod(self.config_path, 0o644)
        self.lines: list[str] = []
        self.started = threading.Event()
        self.proc = subprocess.Popen(
            [*prefix, *oorkiller_command(), "run", "-c", self.config_path, *extra_args],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, errors="replace")
        threading.Thread(target=self._collect, daemon=True).start()
        if not self.started.wait(20):
            self.stop()
            raise RuntimeError("daemon did not start:\n" + "\n".join(self.lines))

    def _collect(self) -> None:
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            self.lines.append(line)
            if line.startswith("oorkiller: start "):
                self.started.set()

    def records(self, event: str | None = None) -> list[dict]:
        found = [r for r in map(parse_stderr_record, list(self.lines)) if r]
        return [r for r in found if event is None or r.get("event") == event]

    def wait_for(self, event: str, timeout: float, **fields) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.records(event):
                if all(record.get(k) == str(v) for k, v in fields.items()):
                    return record
            time.sleep(0.05)
        return None

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> dict:
        """SIGTERM; returns the exit code and how long stopping took."""
        began = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        time.sleep(0.1)   # let the collector read the last lines
        return {"rc": rc, "stop_seconds": time.monotonic() - began}


def reap(*procs: subprocess.Popen) -> dict:
    """How each victim ended: name -> returncode (-9 = SIGKILL), or "alive"
    (then it is killed now: a test never leaves its processes behind)."""
    out = {}
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            out[proc.victim_name] = "alive"
        else:
            out[proc.victim_name] = proc.returncode
    return out


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def events(result: dict, *names: str) -> list[dict]:
    """The records of a scenario's result whose event is one of `names`."""
    return [r for r in result["records"] if r["event"] in names]


def stopped_cleanly(result: dict) -> None:
    """The daemon of a scenario exited 0 within 1 s of its SIGTERM."""
    assert result["stopped"]["rc"] == 0
    assert result["stopped"]["stop_seconds"] < 1.0, "SIGTERM must stop the daemon within 1 s"


def alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None
