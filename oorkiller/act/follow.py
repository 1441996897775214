"""Following a group after its kill: what joins it after the choice dies too.

A fork bomb or a `make -j` storm forks while its kill is under way. For a
process group or cgroup kill the engine re-lists /proc for a while and
SIGKILLs each new process that is in the chosen unit, through a pidfd taken
after the process was listed (so a PID reused by a process outside the unit
is never hit), and only when the current rules make it a candidate (scope
included).
"""
from __future__ import annotations

import signal
import time

from oorkiller.proc._proctable import ProcTable
from oorkiller.proc.cgroup import read_cgroup
from oorkiller.proc.targets import close_targets, take_targets
from oorkiller.act.signals import send

EVERY = 0.05               # seconds between two listings


def unit_key(kind: str, table):
    """The function giving a table entry's key in a unit of `kind`."""
    if kind == "process_group":
        return lambda p: str(p.pgrp)
    return lambda p: read_cgroup(table, p)


class Joiners:
    """What joins a kill's unit after the choice: each `next()` lists /proc
    again and returns the processes not seen before that are in the chosen
    unit and are candidates under the current rules (scope included)."""

    def __init__(self, kill, rules, proc_root: str, self_pid: int):
        self.kill, self.rules = kill, rules
        self.table = ProcTable(proc_root, self_pid)
        self.key_of = unit_key(kill.unit, self.table)
        self.seen = {t.pid for t in kill.targets} | {p.pid for p in kill.members}

    def next(self) -> list:
        added, _ = self.table.refresh()
        self.rules.apply(self.table, added)
        joined = [p for p in added
                  if p.pid not in self.seen and p.eligible and self.key_of(p) == self.kill.group]
        self.seen.update(p.pid for p in joined)
        return joined

    def close(self) -> None:
        self.table.close()


def follow_unit(kill, rules, proc_root: str, self_pid: int, until, longest: float) -> list:
    """SIGKILL what joins `kill`'s unit until `until` is set and one more
    listing found nothing new, or `longest` seconds pass. Returns the
    processes (table entries) signalled."""
    joiners = Joiners(kill, rules, proc_root, self_pid)
    signalled = []
    deadline = time.monotonic() + longest
    try:
        while time.monotonic() < deadline:
            late = joiners.next()
            for proc in late:
                targets = take_targets([proc], proc_root)
                if targets and send(targets[0], signal.SIGKILL) == "sent":
                    signalled.append(proc)
                close_targets(targets)
            if until.is_set() and not late:
                break
            time.sleep(EVERY)
    finally:
        joiners.close()
    return signalled
