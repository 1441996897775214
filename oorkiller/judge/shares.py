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
- `choose_unit()`: every unit `kill:` allows that reached `min_share`
  (with `auto`: processes, process groups and cgroups side by side; a forced
  unit falls back to the process alone when the unit is refused) goes to
  the one chooser, judge.choice.choose, with the shield's prediction of the
  reading without it.

"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from oorkiller.judge import choice as victims
from oorkiller.judge.rules import exclusions

LEVELS = ("process", "process_group", "cgroup")   # the units `auto` offers


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
    work: float = 0.0          # what its members would lose: CPU time and age (rule 1)
    age: float = 0.0           # seconds its leader has lived
    refusal: str = ""          # why it may not be killed as one ('' = it may)

    @property
    def score(self) -> int:
        return self.share + self.adjust

    def candidate(self, predict=None) -> victims.Candidate:
        """The unit as a candidate of the chooser; `predict(unit) -> (enough,
        after)` says whether the reading without it is safe, and what it is."""
        enough, after = predict(self) if predict is not None else (False, "")
        return victims.Candidate(proc=self.leader, score=self.score, share=self.share,
                                 adjust=self.adjust, work=self.work, reclaim=self.used,
                                 enough=enough, processes=len(self.members), after=after,
                                 age=self.age, unit=self,
                                 members=frozenset(p.pid for p in self.members))

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


def uptime() -> float:
    """Seconds since boot, the clock of a process's start time."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def age_of(proc, now_uptime: float) -> float:
    return max(now_uptime - proc.starttime / victims.HZ, 0.0)


def units(kind: str, entries, used: dict[int, int], capacity: float, self_pid: int,
          cgroup_of=None, now_uptime: float | None = None) -> list[UnitUsage]:
    """Every unit of `kind` with usage, best score first. `entries` is the whole
    table (non-candidates too: they are what refuses a group)."""
    now_uptime = uptime() if now_uptime is None else now_uptime
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
        work = sum(victims.work_of(p.cpu_ticks, age_of(p, now_uptime)) for p in group)
        unit = UnitUsage(kind, key, leader, group, total, thousandths(total, capacity),
                         leader.adjust, work, age_of(leader, now_uptime))
        if kind != "process":
            unit.refusal = _level_refusal(kind, key) or victims.unit_refusal(group, self_pid)
        found[key] = unit
    return sorted(found.values(), key=lambda u: (-u.score, u.work))


@dataclass(slots=True)
class UnitChoice:
    unit: UnitUsage
    candidate: victims.Candidate
    verdict: victims.Choice            # why, and the runner-up
    fallback_reason: str = ""          # a forced unit refused: why


def candidate_units(mode: str, entries, used: dict[int, int], capacity: float, min_share: int,
                    self_pid: int, cgroup_of=None) -> list[tuple[UnitUsage, str]]:
    """Every unit `mode` may kill that reached `min_share`, with the reason a
    forced unit fell back to its process ('' when it did not). `auto` offers
    processes, process groups and cgroups side by side, so the chooser can
    prefer the one whose kill ends the shortage (a fork storm's group over a
    single busy bystander); a group holding exactly the processes of a
    smaller unit is the same plan and is offered once."""
    entries = list(entries)
    offered, plans = [], set()
    alone = {u.key: u for u in units("process", entries, used, capacity, self_pid)}
    for kind in (LEVELS if mode == "auto" else (mode,)):
        if kind == "cgroup" and cgroup_of is None:
            continue                      # no cgroup reader given: no cgroup units
        for unit in units(kind, entries, used, capacity, self_pid, cgroup_of):
            reason = ""
            if unit.refusal:
                if mode == "auto" or str(unit.leader.pid) not in alone:
                    continue
                reason, unit = f"{mode} {unit.key} {unit.refusal}", alone[str(unit.leader.pid)]
            plan = frozenset(p.pid for p in unit.members)
            if unit.share < min_share or plan in plans:
                continue
            plans.add(plan)
            offered.append((unit, reason))
    return offered


def choose_unit(mode: str, entries, used: dict[int, int], capacity: float, min_share: int,
                self_pid: int, cgroup_of=None, predict=None) -> UnitChoice | None:
    """The unit to kill (judge.choice.choose over every unit offered), or None
    when no unit reaches `min_share` (thousandths)."""
    offered = candidate_units(mode, entries, used, capacity, min_share, self_pid, cgroup_of)
    candidates = [unit.candidate(predict) for unit, _ in offered]
    verdict = victims.choose(candidates)
    if verdict is None:
        return None
    index = candidates.index(verdict.chosen)
    unit, reason = offered[index]
    return UnitChoice(unit, verdict.chosen, verdict, reason)


def ranking(mode: str, entries, used: dict[int, int], capacity: float, min_share: int,
            self_pid: int, cgroup_of, predict=None) -> tuple[list[dict], list[dict], dict | None]:
    """What `oorkiller candidates` shows: every unit `mode` may kill, with the
    parts of its score, the predicted reading without it, `enough`, its age
    and work, best first; the units and processes excluded, why; and the
    choice the shield would make over the same window (judge.choice.summary)."""
    entries = list(entries)
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
            enough, after = predict(unit) if predict is not None else (False, "")
            ranked.append({"pid": unit.leader.pid, "name": unit.leader.comm, "user": unit.leader.uid,
                           "unit": kind, "group": unit.key, "processes": len(unit.members),
                           "used": unit.used, "share": unit.share, "adjust": unit.adjust,
                           "score": unit.score, "min_share": unit.share >= min_share,
                           "after": after, "enough": enough, "age": round(unit.age),
                           "work": round(unit.work, 1)})
    ranked.sort(key=lambda row: (not row["enough"], -row["score"], row["work"]))
    excluded += exclusions(entries)
    chosen = choose_unit(mode, entries, used, capacity, min_share, self_pid, cgroup_of, predict)
    return ranked, excluded, victims.summary(chosen.verdict if chosen is not None else None)
