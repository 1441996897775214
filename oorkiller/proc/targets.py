"""Binding a chosen process to a pidfd: the identity an action acts through.

A pidfd names one process for as long as it is held: a PID that is reused
after that process exits never reaches the new owner through it. It is taken
when the process is chosen, and it must name the process that was chosen:
`pidfd_open(pid)` first, then /proc/PID/stat must still show the chosen
process's start time. The process the pidfd names was alive at pidfd_open,
so if the PID still carries the chosen start time afterwards, the pidfd is
that process's and not a later one's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from oorkiller.proc._readers import parse_pid_stat


@dataclass
class Target:
    """One process an action will signal, with the pidfd that names it."""
    pid: int
    name: bytes
    starttime: int
    pidfd: int


def take_pidfd(pid: int, starttime: int, proc_root: str = "/proc") -> int | None:
    """A pidfd for the process `pid` started at `starttime`; None when that
    process is gone (or its PID now names another one)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            stat = parse_pid_stat(f.read())
        if stat.pid == pid and stat.starttime == starttime:
            return pidfd
    except (OSError, ValueError):
        pass
    os.close(pidfd)
    return None


def take_targets(procs, proc_root: str = "/proc") -> list[Target]:
    """Targets for the chosen processes (table entries, the chosen one first);
    those already gone are left out."""
    targets = []
    for proc in procs:
        pidfd = take_pidfd(proc.pid, proc.starttime, proc_root)
        if pidfd is not None:
            targets.append(Target(proc.pid, proc.comm, proc.starttime, pidfd))
    return targets


def close_targets(targets) -> None:
    for target in targets:
        if target.pidfd >= 0:
            try:
                os.close(target.pidfd)
            except OSError:
                pass
        target.pidfd = -1
