"""Attacks on the rules, run as the attacker would. Each scenario runs as PID 1
of its own PID namespace (see sandbox.in_pid_namespace) and returns what it
observed; tests/test_security.py judges."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from sandbox import MiB, VICTIMS, Daemon, base_config, mem_available, reap, victim, wait_until

NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]

# What the process runs after its exec: two threads hashing (the GIL is
# released while hashing, so both really run), under a new name, for a while.
SPIN_AFTER_EXEC = """
import ctypes, hashlib, threading, time
ctypes.CDLL(None).prctl(15, b"guarded", 0, 0, 0)
end, block = time.monotonic() + {seconds}, b"x" * (1 << 20)
def work():
    while time.monotonic() < end:
        hashlib.sha256(block).digest()
threading.Thread(target=work, daemon=True).start()
work()
"""

# Before it: the same spinning as `hog` for a while, then the exec.
SPIN_THEN_EXEC = """
import ctypes, hashlib, os, sys, threading, time
ctypes.CDLL(None).prctl(15, b"hog", 0, 0, 0)
print("ready", flush=True)
end, block = time.monotonic() + {before}, b"x" * (1 << 20)
def work():
    while time.monotonic() < end:
        hashlib.sha256(block).digest()
threading.Thread(target=work, daemon=True).start()
work()
os.execv({exe!r}, [{exe!r}, "-c", {after!r}])
"""


def records_of(daemon: Daemon) -> list[dict]:
    return [r for r in daemon.records() if r["event"] != "start"]


def user_hog_named_sshd() -> dict:
    """Under the embedded default rules, user nobody runs a memory hog through
    a link named `sshd` in a directory of its own: its comm is `sshd`, its
    executable is the Python interpreter, its uid 65534."""
    bystander = victim("sleeper", "bystander", "--size", "50")
    home = tempfile.mkdtemp(prefix="oorkiller-nobody-")
    os.chown(home, 65534, 65534)
    link = os.path.join(home, "sshd")
    subprocess.run([*NOBODY, "ln", "-s", sys.executable, link], check=True)
    available = mem_available()
    # No `rules:` key: the daemon runs with the embedded default's rules.
    config = base_config(memory={"enabled": True, "interval": "1s", "term_timeout": "2s",
                                 "available": {"term": available - 800 * MiB,
                                               "kill": available - 1600 * MiB}})
    daemon = Daemon(config)
    hog = subprocess.Popen([*NOBODY, link, VICTIMS, "hog", "--name", "sshd", "--chunk", "64",
                            "--pause", "0.05", "--cap", "2600"], stdout=subprocess.PIPE, text=True)
    hog.victim_name = "sshd"
    ready = hog.stdout.readline().strip() == "ready"
    with open(f"/proc/{hog.pid}/comm") as f:
        comm = f.read().strip()
    died = wait_until(lambda: hog.poll() is not None, 30, step=0.02)
    time.sleep(0.5)
    stopped = daemon.stop()
    shutil.rmtree(home, ignore_errors=True)
    return {"ready": ready, "comm": comm, "hog_pid": hog.pid, "hog_died": died,
            "ended": reap(hog, bystander), "records": records_of(daemon), "stopped": stopped}


def exec_into_protected(spin_before: float = 2.5) -> dict:
    """A process is first seen as `hog`, spinning; then it execs a program the
    rules protect by its executable (a copy of the interpreter at a root-owned
    path) and spins on. The CPU shield chooses it by the verdict of its first
    sighting; the engine, judging it again before the signal, must refuse."""
    guarded_dir = tempfile.mkdtemp(prefix="oorkiller-guarded-")
    guarded = os.path.join(guarded_dir, "guarded-python")
    shutil.copy2(os.path.realpath(sys.executable), guarded)
    # The shield must list the process while it is still `hog`: a calm CPU
    # shield lists nothing, so its level (60%) is one two spinning threads
    # cross at its first reading even on a host that steals some of their
    # time, and the choice (`for` 3s later) still comes after the exec.
    config = base_config(
        cpu={"enabled": True, "interval": "500ms", "usage": "60%", "runnable_per_cpu": 0,
             "for": "3s", "min_share": "25%", "kill": "auto", "term_timeout": "1s",
             "cooldown": "60s"},
        rules=[{"match": {"exe": f"^{guarded}$"}, "protect": True}])
    daemon = Daemon(config)
    code = SPIN_THEN_EXEC.format(before=spin_before, exe=guarded,
                                 after=SPIN_AFTER_EXEC.format(seconds=20))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    proc.victim_name = "hog"
    ready = proc.stdout.readline().strip() == "ready"
    wait_until(lambda: os.path.exists(f"/proc/{proc.pid}/exe")
               and os.readlink(f"/proc/{proc.pid}/exe") == guarded, 10)
    exe_after = os.readlink(f"/proc/{proc.pid}/exe")
    refused = daemon.wait_for("error", 15, member=proc.pid)
    time.sleep(1.5)               # a signal sent anyway would have landed by now
    alive = proc.poll() is None
    stopped = daemon.stop()
    ended = reap(proc)
    shutil.rmtree(guarded_dir, ignore_errors=True)
    return {"ready": ready, "pid": proc.pid, "exe_after": exe_after, "guarded": guarded,
            "refused": refused, "alive": alive, "ended": ended,
            "records": records_of(daemon), "stopped": stopped}


def start_with_name_only_protect() -> dict:
    """The daemon starts with a protect rule resting on a name; it says so once."""
    daemon = Daemon(base_config(rules=[{"match": {"name": "^sshd$"}, "protect": True}]))
    time.sleep(0.5)
    stopped = daemon.stop()
    return {"lines": daemon.lines, "config": daemon.config_path, "stopped": stopped}


HOSTILE_NAME = "x\x1b[2J\x1b]0;pwn\x07y"


def candidates_with_a_hostile_name() -> dict:
    """`oorkiller candidates` as root runs it, while a process named with
    terminal escapes (clear screen, set window title) holds memory."""
    import yaml
    from sandbox import oorkiller_command
    hostile = victim("sleeper", HOSTILE_NAME, "--size", "200")
    hostile.victim_name = "hostile"
    path = "/tmp/oorkiller-candidates-sec-%d.yaml" % os.getpid()
    with open(path, "w") as f:
        yaml.safe_dump(base_config(memory={"enabled": True}), f)
    text = subprocess.run([*oorkiller_command(), "candidates", "-c", path, "--top", "5"],
                          capture_output=True, timeout=30)
    os.unlink(path)
    with open(f"/proc/{hostile.pid}/comm", "rb") as f:
        comm = f.read().rstrip(b"\n")
    reap(hostile)
    return {"rc": text.returncode, "stdout": text.stdout.decode("latin-1"), "comm": comm.decode("latin-1")}
