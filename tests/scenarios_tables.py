"""Kernel-table scenarios (tasks, open files, conntrack). Each runs as PID 1
of its own PID namespace (sandbox.in_pid_namespace) and returns what it
observed; the tests judge.

The levels are COUNTS just above what the machine uses when the scenario
starts (never near the real pid_max or file-max), so only the scenario's
own growth crosses them; the daemon is scoped to the scenario's processes.

Run as a script, this file is also the victim: `bomb NAME EVERY MAX SECONDS`
leads a process group forking a sleeping child every EVERY seconds (up to
MAX); `threads NAME COUNT SECONDS` holds COUNT sleeping threads; `leak NAME
EVERY MAX SECONDS` opens a descriptor every EVERY seconds (up to MAX);
`hold NAME COUNT SECONDS` holds COUNT descriptors. Every victim ends by
itself after SECONDS.
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time

THIS = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(THIS))

import scenarios_cpu  # noqa: E402
from scenarios_cpu import pids_here, reap_all, ready, set_name  # noqa: E402
from sandbox import Daemon, base_config, reap, wait_until  # noqa: E402


# ------------------------------------------------------------------ victims (script side)
def run_bomb(name: str, every: str, most: str, seconds: str) -> None:
    os.setpgid(0, 0)
    set_name(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)      # children reap themselves
    end = time.monotonic() + float(seconds)
    ready(os.getpgrp())
    forked = 0
    while time.monotonic() < end:
        if forked < int(most):
            if os.fork() == 0:
                time.sleep(max(0.0, end - time.monotonic()))
                os._exit(0)
            forked += 1
        time.sleep(float(every))


def run_threads(name: str, count: str, seconds: str) -> None:
    set_name(name)
    stop = threading.Event()
    for _ in range(int(count)):
        threading.Thread(target=stop.wait, daemon=True).start()
    ready()
    time.sleep(float(seconds))


def _raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_leak(name: str, every: str, most: str, seconds: str) -> None:
    set_name(name)
    _raise_nofile()
    end = time.monotonic() + float(seconds)
    held = []
    ready()
    while time.monotonic() < end:
        if len(held) < int(most):
            held.append(os.open("/dev/null", os.O_RDONLY))
        time.sleep(float(every))


def run_hold(name: str, count: str, seconds: str) -> None:
    set_name(name)
    _raise_nofile()
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(int(count))]
    ready(len(held))
    time.sleep(float(seconds))


# ------------------------------------------------------------------ scenarios (PID 1 side)
def start(kind: str, name: str, *args, new_session: bool = False) -> subprocess.Popen:
    return scenarios_cpu.start(kind, name, *args, session=new_session, script=THIS)


def tasks_now() -> int:
    with open("/proc/loadavg", "rb") as f:
        return int(f.read().split()[3].split(b"/")[1])


def files_now() -> int:
    with open("/proc/sys/fs/file-nr", "rb") as f:
        return int(f.read().split()[0])


def group_pids(pgid: int, states: bytes = b"") -> list[int]:
    """The live members of process group `pgid` (only those in one of
    `states`, e.g. b"T" for stopped, when given)."""
    found = []
    for pid in pids_here():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z" and (not states or fields[0] in states):
            found.append(pid)
    return found


def records_of(daemon: Daemon) -> list[dict]:
    return [r for r in daemon.records() if r["event"] not in ("start",) and r.get("resource")]


def finish(daemon: Daemon, *procs, **observed) -> dict:
    stopped = daemon.stop()
    result = {"records": records_of(daemon), "stopped": stopped, **observed, "ended": reap(*procs)}
    reap_all()
    return result


def tasks_section(level: int, **extra) -> dict:
    return {"enabled": True, "interval": "500ms", "threads": {"kill": level}, "kill": "auto",
            "term_timeout": "1s", "cooldown": "60s", **extra}


def fork_bomb(dry_run: bool = False) -> dict:
    """A process group forking a sleeping child every 20 ms beside a bystander
    of another session holding 40 steady threads; the level is 300 tasks
    above the machine's count at the start."""
    bystander = start("threads", "bystander", 40, 60, new_session=True)
    level = tasks_now() + 300
    daemon = Daemon(base_config(tasks=tasks_section(level)), *(["--dry-run"] if dry_run else []))
    bomb = start("bomb", "bomb", 0.02, 400 if dry_run else 3000, 60)
    pgid = bomb.extra[0]
    if dry_run:
        decided = daemon.wait_for("kill", 30, resource="tasks") is not None
        time.sleep(1.5)                        # a second decision would come now (cooldown says no)
        left, stopped = group_pids(pgid), group_pids(pgid, b"T")
        return finish(daemon, bomb, bystander, decided=decided, left_in_group=len(left),
                      stopped_in_group=len(stopped), level=level)
    gone = wait_until(lambda: bomb.poll() is not None, 40)
    time.sleep(1.0)
    left = group_pids(pgid)
    return finish(daemon, bomb, bystander, pgid=pgid, bomb_gone=gone, left_in_group=left, level=level,
                  bystander_pid=bystander.pid)


def files_section(level: int) -> dict:
    return {"enabled": True, "interval": "500ms", "open": {"kill": level}, "kill": "auto",
            "term_timeout": "1s", "cooldown": "60s"}


def descriptor_leak(dry_run: bool = False) -> dict:
    """A process opening a descriptor every millisecond (up to 15,000) beside
    one holding 5,000 steady ones; the level is 2,500 open files above the
    machine's count at the start."""
    holder = start("hold", "holder", 5000, 60)
    level = files_now() + 2500
    daemon = Daemon(base_config(files=files_section(level)), *(["--dry-run"] if dry_run else []))
    leaker = start("leak", "leaker", 0.001, 15000, 60)
    if dry_run:
        decided = daemon.wait_for("term", 30, resource="files") is not None
        time.sleep(1.5)                        # a second decision would come now (cooldown says no)
        return finish(daemon, leaker, holder, decided=decided, leaker_alive=leaker.poll() is None,
                      level=level)
    died = wait_until(lambda: leaker.poll() is not None, 40)
    time.sleep(0.5)
    return finish(daemon, leaker, holder, leaker_died=died, holder_fds=holder.extra[0], level=level)


def conntrack_in_a_network_namespace() -> dict:
    """A new network namespace (this scenario and the daemon in it), an
    nftables rule that makes conntrack track its loopback, and 60 TCP
    connections to 127.0.0.1 inside it: the table grows past a level of 40."""
    if not os.path.exists("/proc/sys/net/netfilter/nf_conntrack_count"):
        return {"skipped": "nf_conntrack is not loaded"}
    if subprocess.run(["sh", "-c", "command -v nft"], capture_output=True).returncode != 0:
        return {"skipped": "nft (nftables) is not installed: tests/setup-machine.sh installs it"}
    _unshare_network()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["nft", "add table inet oorktest; "
                          "add chain inet oorktest out { type filter hook output priority 0; }; "
                          "add rule inet oorktest out ct state new counter accept"], check=True)
    before = _conntrack_count()
    network = {"duplicate_mac": {"enabled": False},
               "conntrack": {"enabled": True, "interval": "500ms", "used": {"warn": before + 40}}}
    daemon = Daemon(base_config(network=network))
    _connect_many(60)
    warned = daemon.wait_for("conntrack-full", 10) is not None
    time.sleep(1.2)                               # a second warning would come now
    return finish(daemon, before=before, after=_conntrack_count(), warned=warned)


def _unshare_network() -> None:
    """unshare(CLONE_NEWNET) for this process (os.unshare is Python 3.12)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")


def _conntrack_count() -> int:
    with open("/proc/sys/net/netfilter/nf_conntrack_count") as f:
        return int(f.read())


def _connect_many(count: int) -> None:
    import socket
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(count)
    port = server.getsockname()[1]
    clients = []
    for _ in range(count):
        clients.append(socket.create_connection(("127.0.0.1", port)))
        server.accept()[0].close()
    for client in clients:
        client.close()
    server.close()


if __name__ == "__main__":
    {"bomb": run_bomb, "threads": run_threads, "leak": run_leak,
     "hold": run_hold}[sys.argv[1]](*sys.argv[2:])
