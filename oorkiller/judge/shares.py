"""Who used the resource over the window: per-process usage, units, the choice.

Resource-neutral: the CPU shield feeds it CPU ticks, the IO shield IO bytes.
Everything here is keyed by the process table's `serial`, never by PID, so a
process that exits and whose PID is reused is never blamed for the old
process's usage (the new process is a new entry with a new serial).

Three pieces, in the order a shield uses them:

- `UsageWindow`: a ring of (time, {serial: counter}) samples covering the
  window; `usage()` is each live process's counter delta over it. A process
  first seen after the window began counts from its birth when it was born
  inside the window (everything it ever used, it used in the window), else from
  when it was first seen (its lifetime total is not the window's).
- `units()`: the usage gathered into processes, process groups or cgroups,
  each with its share of the capacity in thousandths, its score
  (share + the leader's `adjust`) and, for a group or cgroup, why it may not be
  killed as one (victims.unit_refusal: PID 1, the daemon, a non-candidate).
- `choose()`: `kill: auto` takes the single process if one reaches
  `min_share`, else the process group, else the cgroup that does; a forced
  unit falls back to the process alone when the unit is refused. Among the
  units that reach `min_share`, victims.choose applies the four rules.

"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from oorkiller.judge import choice as victims

LEVELS = ("process", "process_group", "cgroup")   # the order `auto` tries


# ------------------------------------------------------------------ window

class UsageWindow:
    """Per-serial counter deltas over a sliding window of `span` seconds."""

    def __init__(self, span: float):
        self.span = span
        self.samples: deque = deque()          # (time, {serial: counter}), oldest first
        self.first_seen: dict[int, int] = {}   # serial -> counter the window starts from

    def clear(self) -> None:
        self.samples.clear()
        self.first_seen.clear()

    def add(self, now: float, counters: dict[int, int], born: dict[int, float] | None = None) -> None:
        """One sample. `born` (serial -> birth time, same clock as `now`) is
        consulted for serials never seen before; without it they count from now."""
        start = self.samples[0][0] if self.samples else None
        for serial, counter in counters.items():
            if serial in self.first_seen:
                continue
            birth = born.get(serial) if born else None
            inside = start is not None and birth is not None and birth >= start
            self.first_seen[serial] = 0 if inside else counter
        self.samples.append((now, counters))
        # Keep one sample at or before now - span, so the window covers `span`.
        while len(self.samples) >= 2 and self.samples[1][0] <= now - self.span:
            self.samples.popleft()
        if len(self.first_seen) > 2 * len(counters) + 64:
            self.first_seen = {s: self.first_seen[s] for s in counters}   # forget the dead

    @property
    def seconds(self) -> float:
        """How much time the samples cover."""
        if len(self.samples) < 2:
            return 0.0
        return self.samples[-1][0] - self.samples[0][0]

    def usage(self) -> dict[int, int]:
        """serial -> counter used over the window, for the processes alive at the last sample."""
        if len(self.samples) < 2:
            return {}
        oldest, latest = self.samples[0][1], self.samples[-1][1]
        used = {}
        for serial, counter in latest.items():
            start = oldest.get(serial)
            if start is None:
                start = self.first_seen.get(serial, counter)
            used[serial] = counter - start if counter > start else 0
        return used


# ------------------------------------------------------------------ units

@dataclass(slots=True)
class UnitUsage:
    """One unit that could be killed, with what it used over the window."""
    kind: str                  # process | process_group | cgroup
    key: str                   # pid, pgid or cgroup path
    leader: object             # the member that used the most (named in records)
    members: list = field(default_factory=list)
    used: int = 0              # counter units over the window
    share: int = 0             # thousandths of the capacity
    adjust: int = 0            # the leader's rules adjust
    work: int = 0              # CPU ticks its members used in their lives (rule 1)
    refusal: str = ""          # why it may not be killed as one ('' = it may)

    @property
    def score(self) -> int:
        return self.share + self.adjust

    def candidate(self, min_share: int) -> victims.Candidate:
        return victims.Candidate(proc=self.leader, score=self.score, share=self.share,
                                 adjust=self.adjust, work=self.work, reclaim=self.used,
                                 enough=self.share >= min_share)

    def as_unit(self) -> victims.Unit:
        return victims.Unit(self.kind, self.leader, list(self.members), self.key)


def thousandths(used: int, capacity: float) -> int:
    return int(used * 1000 // capacity) if capacity > 0 else 0


def _key_of(kind: str, cgroup_of):
    if kind == "process":
        return lambda p: str(p.pid)
    if kind == "process_group":
        return lambda p: str(p.pgrp)
    return cgroup_of


def _level_refusal(kind: str, key: str) -> str:
    if kind == "process_group" and (not key or int(key) <= 0):
        return "is not visible here"       # pgrp 0: the group lives outside our PID namespace
    if kind == "cgroup" and key in ("", "/"):
        return "is the root cgroup"
    return ""


def units(kind: str, entries, used: dict[int, int], capacity: float, self_pid: int,
          cgroup_of=None) -> list[UnitUsage]:
    """Every unit of `kind` with usage, best score first. `entries` is the whole
    table (non-candidates too: they are what refuses a group)."""
    key_of = _key_of(kind, cgroup_of)
    found: dict[str, UnitUsage] = {}
    members: dict[str, list] = {}
    for proc in entries:
        if kind != "process" or used.get(proc.serial):
            members.setdefault(key_of(proc), []).append(proc)
    for key, group in members.items():
        spent = [(used.get(p.serial, 0), p) for p in group if p.eligible]
        total = sum(amount for amount, _ in spent)
        if total <= 0:
            continue
        leader = max(spent, key=lambda item: (item[0], -item[1].pid))[1]
        unit = UnitUsage(kind, key, leader, group, total, thousandths(total, capacity),
                         leader.adjust, sum(p.cpu_ticks for p in group))
        if kind != "process":
            unit.refusal = _level_refusal(kind, key) or victims.unit_refusal(group, self_pid)
        found[key] = unit
    return sorted(found.values(), key=lambda u: (-u.score, u.work))


@dataclass(slots=True)
class Choice:
    unit: UnitUsage
    candidate: victims.Candidate
    fallback_reason: str = ""          # a forced unit refused: why


def choose(mode: str, entries, used: dict[int, int], capacity: float, min_share: int,
           self_pid: int, cgroup_of=None) -> Choice | None:
    """The unit to kill, or None when no unit reaches `min_share` (thousandths)."""
    entries = list(entries)
    if mode == "auto":
        for kind in LEVELS:
            allowed = [u for u in units(kind, entries, used, capacity, self_pid, cgroup_of)
                       if not u.refusal]
            chosen = _best(allowed, min_share)
            if chosen is not None:
                return chosen
        return None
    alone = {u.key: u for u in units("process", entries, used, capacity, self_pid)}
    allowed = []
    for unit in units(mode, entries, used, capacity, self_pid, cgroup_of):
        if not unit.refusal:
            allowed.append((unit, ""))
        elif str(unit.leader.pid) in alone:
            allowed.append((alone[str(unit.leader.pid)], f"{mode} {unit.key} {unit.refusal}"))
    chosen = _best([u for u, _ in allowed], min_share)
    if chosen is not None:
        chosen.fallback_reason = next(why for u, why in allowed if u is chosen.unit)
    return chosen


def _best(candidates: list[UnitUsage], min_share: int) -> Choice | None:
    """victims.choose among the units that reach min_share."""
    pairs = [(u, u.candidate(min_share)) for u in candidates if u.share >= min_share]
    picked = victims.choose([c for _, c in pairs])
    if picked is None:
        return None
    unit = next(u for u, c in pairs if c is picked)
    return Choice(unit, picked)


def ranking(mode: str, entries, used: dict[int, int], capacity: float, min_share: int,
            self_pid: int, cgroup_of) -> tuple[list[dict], list[dict]]:
    """What `oorkiller candidates` shows: every unit `mode` may kill, with the
    parts of its score, best first; and the units and processes excluded, why."""
    kinds = LEVELS if mode == "auto" else ("process", mode)
    ranked, excluded = [], []
    for kind in kinds:
        for unit in units(kind, entries, used, capacity, self_pid, cgroup_of):
            if kind != "process" and len(unit.members) == 1:
                continue                     # the same process, already listed
            if unit.refusal:
                excluded.append({"pid": unit.leader.pid, "name": unit.leader.comm,
                                 "reason": f"{kind} {unit.key} {unit.refusal}"})
                continue
            ranked.append({"pid": unit.leader.pid, "name": unit.leader.comm, "user": unit.leader.uid,
                           "unit": kind, "group": unit.key, "processes": len(unit.members),
                           "used": unit.used, "share": unit.share, "adjust": unit.adjust,
                           "score": unit.score, "enough": unit.share >= min_share,
                           "cpu_ticks": unit.work})
    ranked.sort(key=lambda row: (-row["score"], row["cpu_ticks"]))
    excluded += [{"pid": p.pid, "name": p.comm, "reason": p.note.reason}
                 for p in entries if p.note is not None and not p.note.eligible]
    return ranked, excluded
