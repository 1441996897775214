"""What every victim-choosing shield (memory, CPU, IO, disk writers) shares.

Such a shield owns its process table (a native table is never shared between
threads), judges each new entry with the rules, caches each entry's cgroup,
and turns its choice into a Kill decision. It keeps the Kill it returned
(`pending`) and reads the outcome from it: one action per resource at a time,
then a cooldown where the shield asks for one.
"""
from __future__ import annotations

import os
import signal
import time

from oorkiller.judge.decision import Kill, Notice
from oorkiller.proc._proctable import ProcTable
from oorkiller.proc._readers import HeldFile
from oorkiller.proc.cgroup import CgroupCache
from oorkiller.shields.base import Shield

HZ = os.sysconf("SC_CLK_TCK")
YOUNG = 2.0     # seconds after its birth during which an excluded process is re-checked


class ProcessShield(Shield):
    HOLD = "oom_score"       # the one file per process this shield samples

    def __init__(self, context):
        super().__init__(context)
        self._table = None
        self.cgroup_of = CgroupCache(lambda: self.table)   # serial -> cgroup path, read once
        self.young: list = []                 # excluded entries born less than YOUNG ago
        self.pending: Kill | None = None      # our kill under way, or the last one
        self.handled: Kill | None = None      # the last kill whose end was seen
        self.cooldown_until = 0.0

    @property
    def action_lanes(self) -> tuple:
        return (self.name,)                   # the lane of its kills: their resource, its name

    @property
    def table(self) -> ProcTable:
        """The process table, made on first use: a shield that only samples
        processes while a shortage holds (CPU, IO, disk writers) holds no
        descriptors and no entries while the machine is healthy."""
        if self._table is None:
            self._table = ProcTable(self.context.proc_root, self.context.self_pid, hold=self.HOLD)
        return self._table

    def release_table(self) -> None:
        """Close the table (its next use makes a fresh one, with new serials)."""
        if self._table is not None:
            self._table.close()
            self._table = None
            self.cgroup_of.clear()
            self.young.clear()

    def close(self) -> None:
        self.release_table()

    # ------------------------------------------------------------- judging processes
    def refresh_table(self) -> tuple[list, list]:
        """List /proc again; judge the new entries, forget the dead ones.
        `added` also holds the young entries that a new name made candidates."""
        added, removed = self.table.refresh()
        self.context.rules.apply(self.table, added)
        self.cgroup_of.forget(removed)
        return added + self._recheck_young(added), removed

    def _recheck_young(self, added) -> list:
        """A child is judged under its parent's name until it execs (a shell
        forked by a protected sshd is born 'sshd'), and many programs rename
        themselves while they start. So every refresh looks again at the
        excluded processes born less than YOUNG seconds ago; the candidates a
        new name made are returned. (Older ones: see rejudge_renamed.)"""
        became = self.rejudge_renamed(self.young)
        uptime = time.clock_gettime(time.CLOCK_BOOTTIME)
        self.young = [p for p in self.young + added
                      if p.alive and not p.eligible and uptime - p.starttime / HZ < YOUNG]
        return became

    def rejudge_renamed(self, procs) -> list:
        """Judge again each excluded process in `procs` whose name is no longer
        the one it was judged under (exec and prctl rename a process; a rule
        must see it as it is). Returns those that became candidates."""
        became = []
        for proc in procs:
            note = proc.note
            if note is None or note.eligible or proc.kthread or proc.pid in (1, self.context.self_pid):
                continue
            try:
                self.table.read_stat(proc)
            except OSError:
                continue                      # gone
            if proc.comm != note.comm and self.context.rules.rejudge(self.table, proc):
                became.append(proc)
        return became

    @staticmethod
    def birth_times(procs) -> dict:
        """serial -> when each process was born, on the time.monotonic() clock
        (starttime counts ticks since boot, on CLOCK_BOOTTIME)."""
        boot_to_now = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
        return {p.serial: p.starttime / HZ - boot_to_now for p in procs}

    def open_psi(self, resource: str, level: float) -> HeldFile | None:
        """The held /proc/pressure/RESOURCE file, when a PSI level is set and
        the kernel has PSI; None otherwise (the level then cannot hold)."""
        if level <= 0:
            return None
        try:
            return HeldFile(f"{self.context.proc_root}/pressure/{resource}")
        except OSError:
            return None

    # ------------------------------------------------------------- deciding
    def kill(self, members, reason: str, fields: dict, *, term_timeout: float,
             unit: str = "process", group: str = "", refused: str = "",
             first_signal: int = signal.SIGTERM, measure=None, freeze_first: bool = False) -> Kill:
        """The Kill decision for `members` (the chosen process first); it
        becomes this shield's pending action."""
        fields = {**fields}
        if refused:
            fields["unit_refused"] = refused
        self.pending = Kill(self.name, reason, fields, members=list(members),
                            first_signal=first_signal, term_timeout=term_timeout,
                            unit=unit, group=group, follow=unit != "process", measure=measure,
                            freeze_first=freeze_first)
        self.state = "acting"
        return self.pending

    def calm(self, sleep: float) -> bool:
        """Also: no kill under way nor its cooldown (the state is ok)."""
        return super().calm(sleep) and self.state == "ok" and not self.acting()

    def acting(self) -> bool:
        """True while this shield's kill is under way."""
        return self.pending is not None and not self.pending.over

    def waiting(self, now: float, cooldown: float = 0.0) -> bool:
        """True while our kill is under way or its cooldown lasts. The first
        step that sees a kill over starts the cooldown (and calls
        `action_over`)."""
        if self.acting():
            self.state = "acting"
            return True
        if self.pending is not None and self.pending is not self.handled:
            self.handled = self.pending
            self.cooldown_until = now + cooldown
            if self.pending.outcome == "refused":
                self._rejudge_refused(self.pending)
            self.action_over(now)
        if now < self.cooldown_until:
            self.state = "acting"
            return True
        self.state = "ok"
        return False

    def _rejudge_refused(self, kill: Kill) -> None:
        """The engine found a member of our kill no candidate when it was
        about to signal it (it exec'd a protected program, say): judge the
        members again, so the next choice does not pick them once more."""
        if self._table is None:
            return                             # released: a new table judges afresh
        for proc in kill.members:
            try:
                self.table.read_stat(proc)     # its name now
            except OSError:
                continue                       # gone
            self.context.rules.rejudge(self.table, proc)

    def action_over(self, now: float) -> None:
        """Called once, at the first step after our kill is over."""

    def nothing_to_kill(self, reason: str, **fields) -> Notice:
        return Notice(self.name, reason, fields, event="nothing-to-kill")
