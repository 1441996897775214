"""Choosing what to kill: the four rules, shared by every resource.

1. lose the least work done;  2. recover a large amount of the resource;
3. kill as few processes as possible;  4. kill what the operator expects.

The score (share of the resource in thousandths + oom_score_adj for memory +
the rules' adjust) carries rules 2 and 4 in one number. The choice then is:

- candidates whose score is within TIE_POINTS of the best are "equally large":
  among them one whose kill alone is enough wins, then the least CPU time
  (rule 1: the least work lost), then the higher score;
- when no equally large candidate is enough, a candidate within ENOUGH_POINTS
  of the best whose kill alone is enough wins over it (rule 3 before rule 4:
  one kill that is enough beats two smaller ones);
- otherwise the best score wins.

Units (`kill:`): a process, its process group, or its cgroup. A group or cgroup
is never the unit while it holds PID 1, the daemon itself, or any process that
is not a candidate (protected, outside the scope, oom_score_adj -1000);
`auto` then falls back to the next unit, a forced unit to the single process.
"""
from __future__ import annotations

from dataclasses import dataclass, field

TIE_POINTS = 10        # 1% of the resource: "equally large"
ENOUGH_POINTS = 100    # 10%: how much score a sufficient kill may trail by


@dataclass(slots=True)
class Candidate:
    proc: object               # the process-table entry
    score: int                 # total points
    share: int                 # thousandths of the resource
    adj: int = 0               # oom_score_adj (memory only)
    adjust: int = 0            # sum of the rules' adjust
    work: int = 0              # CPU ticks used so far (rule 1)
    reclaim: int = 0           # what killing it gives back (bytes, or share)
    enough: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def parts(self) -> dict:
        return {"share": self.share, "oom_score_adj": self.adj,
                "adjust": self.adjust, "score": self.score}


def choose(candidates: list[Candidate]) -> Candidate | None:
    """Apply the four rules to candidates that already carry score and `enough`."""
    if not candidates:
        return None
    best = max(c.score for c in candidates)
    equally_large = [c for c in candidates if c.score >= best - TIE_POINTS]
    sufficient = [c for c in equally_large if c.enough]
    if sufficient:
        return min(sufficient, key=lambda c: (c.work, -c.score, c.pid))
    close_enough = [c for c in candidates if c.enough and c.score >= best - ENOUGH_POINTS]
    if close_enough:
        return max(close_enough, key=lambda c: (c.score, -c.work, -c.pid))
    return min(equally_large, key=lambda c: (c.work, -c.score, c.pid))


# ---------------------------------------------------------------- units

@dataclass(slots=True)
class Unit:
    """What one action kills."""
    kind: str                          # process | process_group | cgroup
    leader: object                     # the chosen process-table entry
    members: list = field(default_factory=list)
    key: str = ""                      # pgid or cgroup path, for records
    fallback_reason: str = ""          # why a larger unit was refused


def group_members(table, proc) -> list:
    return [p for p in table.entries() if p.pgrp == proc.pgrp]


def cgroup_members(table, proc, cgroup_of) -> list:
    path = cgroup_of(proc)
    if not path or path == "/":
        return []
    return [p for p in table.entries() if cgroup_of(p) == path]


def unit_refusal(members, self_pid: int) -> str:
    """Why a group of processes may not be killed as one unit ('' = it may)."""
    for p in members:
        if p.pid == 1:
            return "holds pid 1"
        if p.pid == self_pid:
            return "holds oorkiller"
        if not p.eligible:
            return f"holds non-candidate pid {p.pid}"
    return ""


def build_unit(kind: str, proc, table, self_pid: int, cgroup_of) -> Unit:
    """The unit of `kind` around `proc`, or the process alone when refused."""
    if kind == "process":
        return Unit("process", proc, [proc], str(proc.pid))
    if kind == "process_group":
        members, key = group_members(table, proc), str(proc.pgrp)
    else:
        members, key = cgroup_members(table, proc, cgroup_of), cgroup_of(proc)
    refusal = unit_refusal(members, self_pid) if members else "empty"
    if refusal:
        unit = Unit("process", proc, [proc], str(proc.pid))
        unit.fallback_reason = f"{kind} {key} {refusal}"
        return unit
    return Unit(kind, proc, members, key)
