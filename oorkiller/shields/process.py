"""What every victim-choosing monitor (memory, CPU, disk writers, IO) shares.

Such a monitor owns its process table (a native table is never shared between
threads), judges each new entry once with the rules, caches each entry's
cgroup, and hands its decision to the executor as an Action addressed through
pidfds.
"""
from __future__ import annotations

import os
import signal
import time

from oorkiller.proc._proctable import ProcTable
from oorkiller.proc._readers import HeldFile
from oorkiller.act.engine import Action, close_targets, take_targets
from oorkiller.shields.base import Monitor
from oorkiller.proc.cgroup import CgroupCache

HZ = os.sysconf("SC_CLK_TCK")
YOUNG = 2.0     # seconds after its birth during which an excluded process is re-checked


class ProcessMonitor(Monitor):
    HOLD = "oom_score"       # the one file per process this monitor samples

    def __init__(self, context):
        super().__init__(context)
        self._table = None
        self.cgroup_of = CgroupCache(lambda: self.table)   # serial -> cgroup path, read once
        self.young: list = []                 # excluded entries born less than YOUNG ago

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

    def busy_for(self, now: float) -> float | None:
        """While this monitor's action runs or its cooldown lasts, the sleep
        until the next step; None when it may judge again. Subclasses that
        use it keep `action`, `cooldown_until` and an `_action_over(now)`."""
        if self.action is not None:
            if not self.action.done.is_set():
                self.state = "acting"
                return self.interval
            self._action_over(now)
        if now < self.cooldown_until:
            self.state = "acting"
            return min(self.interval, self.cooldown_until - now)
        self.state = "ok"
        return None

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

    @staticmethod
    def birth_times(procs) -> dict:
        """serial -> when each process was born, on the time.monotonic() clock
        (starttime counts ticks since boot, on CLOCK_BOOTTIME)."""
        boot_to_now = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
        return {p.serial: p.starttime / HZ - boot_to_now for p in procs}

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

    def open_psi(self, resource: str, level: float) -> HeldFile | None:
        """The held /proc/pressure/RESOURCE file, when a PSI level is set and
        the kernel has PSI; None otherwise (the level then cannot hold)."""
        if level <= 0:
            return None
        try:
            return HeldFile(f"{self.context.proc_root}/pressure/{resource}")
        except OSError:
            return None

    def submit(self, procs, reason: str, fields: dict, *, term_timeout: float,
               unit_kind: str = "process", unit_key: str = "", refused: str = "",
               first_signal: int = signal.SIGTERM, measure=None) -> Action | None:
        """Take pidfds for `procs` (the chosen process first) and hand the
        action to the executor. None when they are all gone already or this
        resource still has an action under way."""
        targets = take_targets(self.table, procs)
        if not targets:
            return None
        fields = {**fields, "unit": unit_kind}
        if unit_kind != "process":
            fields.update(group=unit_key, processes=len(targets))
        if refused:
            fields["unit_refused"] = refused
        action = Action(resource=self.name, targets=targets, reason=reason, fields=fields,
                        first_signal=first_signal, term_timeout=term_timeout,
                        dry_run=self.context.dry_run, measure=measure)
        if not self.context.executor.submit(action):
            close_targets(targets)
            return None
        return action
