"""Daemon-level scenarios (start, reload, stop), each PID 1 of its own PID namespace."""
from __future__ import annotations

import os
import subprocess
import time

import yaml

from sandbox import MiB, Daemon, base_config, mem_available, oorkiller_command, reap, victim, wait_until


def reload_cycle() -> dict:
    """A broken file on SIGHUP is refused; a valid one then replaces the config."""
    config = base_config(memory={"enabled": True, "interval": "1s"})
    daemon = Daemon(config)
    with open(daemon.config_path, "w") as f:
        f.write("memory:\n  enabled: true\n  intervall: 1s\n")     # a typo on line 3
    daemon.reload()
    refused = daemon.wait_for("error", 5)
    alive_after_bad = daemon.proc.poll() is None
    config["memory"]["interval"] = "2s"
    config["dry_run"] = True
    with open(daemon.config_path, "w") as f:
        yaml.safe_dump(config, f)
    daemon.reload()
    reloaded = daemon.wait_for("reload", 5)
    stopped = daemon.stop()
    return {"refused": refused, "alive_after_bad": alive_after_bad,
            "reloaded": reloaded, "stopped": stopped, "records": daemon.records()}


def candidates_json() -> dict:
    big = victim("sleeper", "biggest", "--size", "300")
    small = victim("sleeper", "smaller", "--size", "100")
    kept = victim("sleeper", "keepme", "--size", "400")
    config = base_config(memory={"enabled": True},
                         rules=[{"match": {"name": "^keepme$"}, "protect": True}])
    path = "/tmp/oorkiller-candidates-%d.yaml" % os.getpid()
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    out = subprocess.run([*oorkiller_command(), "candidates", "-c", path, "--json", "--top", "5"],
                         capture_output=True, text=True, timeout=30)
    text = subprocess.run([*oorkiller_command(), "candidates", "-c", path, "--top", "5"],
                          capture_output=True, text=True, timeout=30)
    status = subprocess.run([*oorkiller_command(), "status", "-c", path, "--json"],
                            capture_output=True, text=True, timeout=30)
    os.unlink(path)
    reap(big, small, kept)
    return {"rc": out.returncode, "json": out.stdout, "stderr": out.stderr,
            "text": text.stdout, "status_rc": status.returncode, "status": status.stdout}


def status_kib(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f)
                if k in ("VmRSS", "RssFile", "VmLck")}


def locked_daemon_memory() -> dict:
    """Two daemons on one configuration, one locking its memory (and giving
    back the library pages start-up touched), the other not; then a hog
    only the locked one may kill."""
    available = mem_available()
    memory = {"enabled": True, "interval": "1s", "term_timeout": "1s",
              "available": {"term": available - 600 * MiB, "kill": available - 800 * MiB}}
    locked = Daemon(base_config(memory=memory, daemon={"lock_memory": True, "nice": 0}))
    unlocked = Daemon(base_config(memory=memory), "--dry-run")
    time.sleep(3)                   # both past their first steps
    sizes = {"locked": status_kib(locked.proc.pid), "unlocked": status_kib(unlocked.proc.pid)}
    hog = victim("hog", "lockhog", "--chunk", "50", "--pause", "0.05", "--cap", "2000", "--ignore-term")
    died = wait_until(lambda: hog.poll() is not None, 30)
    time.sleep(0.3)
    sizes["locked_after_kill"] = status_kib(locked.proc.pid)
    stopped = locked.stop()
    unlocked.stop()
    return {"sizes": sizes, "hog_died": died, "ended": reap(hog), "stopped": stopped,
            "records": locked.records()}
