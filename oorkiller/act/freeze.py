"""Stopping a whole unit before it is killed: what a fork bomb needs.

A kill pass over a group that forks goes slower than the group forks: each
child killed is replaced before the pass ends. A stopped process forks no
more, so the unit is stopped first: SIGSTOP every member through its pidfd,
list /proc again, SIGSTOP the members that appeared meanwhile, and again
until a listing finds no one new (bounded). A fork under way when SIGSTOP
arrives is restarted by the kernel after the stop, never finished, so once a
listing finds no new member none can appear. Then everyone dies at once.

New members are act/follow.py's `Joiners`: in the chosen unit, candidates
under the current rules (scope included), each reached through a pidfd taken
after it was listed.
"""
from __future__ import annotations

import signal
import time

from oorkiller.act.follow import Joiners
from oorkiller.act.signals import send
from oorkiller.proc.targets import take_targets

ROUNDS = 50                # listings at most: a bomb stops in a few
LONGEST = 5.0              # seconds at most


def freeze_unit(kill, rules, proc_root: str, self_pid: int) -> list:
    """SIGSTOP `kill`'s targets and every new member of its unit until a
    listing finds none. Returns the targets of the new members (their
    pidfds open: the caller kills and closes them with the others)."""
    for target in kill.targets:
        send(target, signal.SIGSTOP)
    if kill.unit == "process":
        return []                           # a process's threads stop with it
    joiners = Joiners(kill, rules, proc_root, self_pid)
    late = []
    deadline = time.monotonic() + LONGEST
    try:
        for _ in range(ROUNDS):
            joined = joiners.next()
            if not joined or time.monotonic() > deadline:
                break
            for target in take_targets(joined, proc_root):
                send(target, signal.SIGSTOP)
                late.append(target)
    finally:
        joiners.close()
    return late
