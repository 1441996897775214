"""Fresh facts about a process about to be signalled, read by path.

A verdict stored in a process table is as old as the moment the process was
first seen; a process may exec another program, take another name or move
to another cgroup after that. The engine therefore judges every target again
just before its first signal, with facts read now. `FreshFacts` offers the
reads judge/rules.py makes through a process table (`read_cmdline`,
`read_exe`, `read_cgroup`, `read_oom_score_adj`, `get`), for processes
named by /proc/PID paths.

Identity: the caller holds a pidfd, so the process it names cannot be
mistaken while it lives; but a PID can name a newer process once the held
one has exited. Each read is therefore followed by a look at
/proc/PID/stat: a different start time (or none) means the read may have
been of another process, and it is refused as `ProcessLookupError`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from oorkiller.proc._readers import parse_pid_stat, parse_pid_status


@dataclass(slots=True)
class FreshProc:
    """What judge/rules.py reads from a table entry, read now."""
    pid: int
    ppid: int
    uid: int
    comm: bytes
    kthread: bool
    starttime: int


class FreshFacts:
    """The table interface of judge/rules.py, by path under `proc_root`."""

    def __init__(self, proc_root: str = "/proc"):
        self.proc_root = proc_root

    def entry(self, pid: int, starttime: int | None = None) -> FreshProc | None:
        """The process `pid` as it is now; None when it is gone, or when it is
        not the one started at `starttime` (if given)."""
        try:
            stat = self._stat(pid)
            if starttime is not None and stat.starttime != starttime:
                return None
            with open(f"{self.proc_root}/{pid}/status", "rb") as f:
                status = parse_pid_status(f.read())
            self._check(pid, stat.starttime)
        except (OSError, ValueError):
            return None
        return FreshProc(pid, stat.ppid, status.uid, stat.comm, stat.kthread, stat.starttime)

    def get(self, pid: int) -> FreshProc | None:
        """Any process by PID (the parent walk of `descendant_of`)."""
        return self.entry(pid)

    def read_cmdline(self, proc: FreshProc) -> bytes:
        return self._read(proc, "cmdline")

    def read_cgroup(self, proc: FreshProc) -> bytes:
        return self._read(proc, "cgroup")

    def read_oom_score_adj(self, proc: FreshProc) -> int:
        return int(self._read(proc, "oom_score_adj"))

    def read_exe(self, proc: FreshProc) -> bytes:
        try:
            target = os.readlink(os.fsencode(f"{self.proc_root}/{proc.pid}/exe"))
        except FileNotFoundError:
            target = b""                     # a kernel thread has none
        self._check(proc.pid, proc.starttime)
        return target

    # ------------------------------------------------------------ identity
    def _read(self, proc: FreshProc, name: str) -> bytes:
        with open(f"{self.proc_root}/{proc.pid}/{name}", "rb") as f:
            data = f.read()
        self._check(proc.pid, proc.starttime)
        return data

    def _stat(self, pid: int):
        with open(f"{self.proc_root}/{pid}/stat", "rb") as f:
            return parse_pid_stat(f.read())

    def _check(self, pid: int, starttime: int) -> None:
        """What was just read was the process started at `starttime`."""
        try:
            same = self._stat(pid).starttime == starttime
        except (OSError, ValueError):
            same = False
        if not same:
            raise ProcessLookupError(f"process {pid} is gone")


def judge_now(rules, target, proc_root: str = "/proc"):
    """The verdict of `rules` (a judge.rules.RuleSet) on `target` (a
    proc.targets.Target whose pidfd is held), from facts read now; None when
    the process is gone."""
    facts = FreshFacts(proc_root)
    proc = facts.entry(target.pid, target.starttime)
    if proc is None:
        return None
    verdict = rules.judge(proc, facts)
    if verdict.reason == "vanished" or facts.entry(target.pid, target.starttime) is None:
        return None                          # it exited while being judged
    return verdict
