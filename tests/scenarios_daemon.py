"""Daemon-level scenarios (start, reload, stop), each PID 1 of its own PID namespace."""
from __future__ import annotations

import os
import subprocess

import yaml

from sandbox import Daemon, base_config, oorkiller_command, reap, victim


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
