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


def start_with_name_only_protect() -> dict:
    """The daemon starts with a protect rule resting on a name; it says so once."""
    daemon = Daemon(base_config(rules=[{"match": {"name": "^sshd$"}, "protect": True}]))
    time.sleep(0.5)
    stopped = daemon.stop()
    return {"lines": daemon.lines, "config": daemon.config_path, "stopped": stopped}
