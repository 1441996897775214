"""Choosing what to kill: one chooser for every shield.

Four goals, in this order: 1. lose the least work done; 2. recover a large
amount of the resource; 3. kill as few processes as possible; 4. kill what
the operator expects. A kill that does not end the shortage only leads to a
second one, so the choice is of the *plan* that ends it with the least loss:

- a candidate (a process, process group or cgroup) whose removal alone is
  **enough** (the predicted reading without it is back on the safe side of
  the level) is preferred to any that is not, unless the operator's adjust
  puts its score below zero; a group that is enough only
  because one of its members is enough alone is left out (it adds loss);
- among the enough ones, the **cause** goes first: one that grew by at least
  GROWTH_POINTS over the recent window (memory) is the one the operator
  expects to die; of several, the one that grew the most (its growth plus
  the operator's `adjust`; of those that grew alike, the least work);
- otherwise, among the enough ones (or, when none is enough, among all),
  candidates within TIE_POINTS of the best score are *equally large*: the
  one with the least **work** (CPU seconds plus AGE_WEIGHT of each second
  it has lived: a long-lived service holds state a young process has not
  built yet) goes, then the one with fewer processes, then the higher score;
- otherwise the best score goes.

The score (share of the resource in thousandths, plus oom_score_adj for
memory, plus the rules' adjust) carries goals 2 and 4; `protect` (never a
candidate) and `adjust` stay the operator's last word. Every choice says why
in words and names the runner-up.

Units (`kill:`): a process, its process group, or its cgroup. A group or cgroup
is never the unit while it holds PID 1, the daemon itself, or any process that
is not a candidate (protected, outside the scope, oom_score_adj -1000);
`auto` then falls back to another unit, a forced unit to the single process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

TIE_POINTS = 10        # 1% of the resource: "equally large"
GROWTH_POINTS = 10     # growing by 1% of the resource over the window makes a cause
AGE_WEIGHT = 0.1       # work of one second of life, in CPU seconds
HZ = os.sysconf("SC_CLK_TCK")


def work_of(cpu_ticks: int, age_seconds: float) -> float:
    """The work a process would lose: its CPU seconds and its life."""
    return cpu_ticks / HZ + AGE_WEIGHT * max(age_seconds, 0.0)


@dataclass(slots=True)
class Candidate:
    proc: object               # the process-table entry (a unit's leader)
    score: int                 # total points
    share: int                 # thousandths of the resource
    adj: int = 0               # oom_score_adj (memory only)
    adjust: int = 0            # sum of the rules' adjust
    work: float = 0.0          # work_of(...) of every member (rule 1)
    reclaim: int = 0           # what killing it gives back (bytes, or share)
    enough: bool = False       # the predicted reading without it is safe
    growth: int = 0            # points it grew over the recent window (memory)
    processes: int = 1         # how many processes its kill signals
    after: str = ""            # the predicted reading without it, in words
    growth_text: str = ""      # its growth, in words ("grew 1.1GiB in 6s")
    age: float = 0.0           # seconds the leader has lived
    unit: object = None        # the shield's unit object, when it is a group
    members: frozenset = frozenset()   # pids its kill signals (empty: just `proc`)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def plan(self) -> frozenset:
        return self.members or frozenset((self.proc.pid,))

    @property
    def name(self) -> bytes:
        return self.proc.comm

    def parts(self) -> dict:
        return {"share": self.share, "oom_score_adj": self.adj,
                "adjust": self.adjust, "score": self.score}


@dataclass(slots=True)
class Choice:
    chosen: Candidate
    runner_up: Candidate | None
    why: str                   # the deciding reason, in words

    @property
    def runner_up_text(self) -> str:
        if self.runner_up is None:
            return "-"
        name = self.runner_up.name.decode("utf-8", "backslashreplace")
        return f"{self.runner_up.pid}/{name}"


def _smallest_plans(enough: list[Candidate]) -> list[Candidate]:
    """A group whose kill is enough because one of its members' kill alone is
    enough would only add to the loss (rules 1 and 3): drop it."""
    return [c for c in enough if not any(d.plan < c.plan for d in enough)]


def _least_work(pool: list[Candidate]) -> Candidate:
    return min(pool, key=lambda c: (c.work, c.processes, -c.score, c.pid))


def _describe_work(c: Candidate) -> str:
    return f"age {c.age:.0f}s"


def choose(candidates: list[Candidate]) -> Choice | None:
    """Apply the four rules to candidates that already carry score, `enough`,
    work and growth. None when there is no candidate."""
    if not candidates:
        return None
    # The operator's word stands: a candidate whose adjust (or oom_score_adj)
    # puts its score below zero is never chosen for being enough.
    enough = _smallest_plans([c for c in candidates if c.enough and c.score >= 0])
    pool = enough or candidates
    lead = f"alone enough ({len(enough)} of {len(candidates)})" if enough else \
        f"none alone enough (of {len(candidates)})"
    growers = [c for c in enough if c.growth >= GROWTH_POINTS]
    if growers:
        most = max(c.growth + c.adjust for c in growers)
        alike = [c for c in growers if c.growth + c.adjust >= most - TIE_POINTS]
        chosen = _least_work(alike)
        grew = chosen.growth_text or f"grew {chosen.growth} points"
        why = (f"{lead}; {grew}; grew the most" if len(alike) == 1 else
               f"{lead}; {grew}; least work of {len(alike)} that grew alike ({_describe_work(chosen)})")
    else:
        best = max(c.score for c in pool)
        equally_large = [c for c in pool if c.score >= best - TIE_POINTS]
        if len(equally_large) > 1:
            chosen = _least_work(equally_large)
            why = f"{lead}; least work of {len(equally_large)} equally large ({_describe_work(chosen)})"
        else:
            chosen = equally_large[0]
            why = f"{lead}; largest"
    # The runner-up is the next *other* plan: a larger unit that holds the
    # chosen one (the process's own group) is the same kill with more loss.
    others = [c for c in candidates if not chosen.plan <= c.plan]
    rest = [c for c in others if c in pool] or others
    runner_up = max(rest, key=lambda c: (c.enough, c.score, -c.pid), default=None)
    return Choice(chosen, runner_up, why)


def summary(verdict: Choice | None) -> dict | None:
    """The choice as `oorkiller candidates` shows it: who would go now, as
    which unit, the deciding reason, and the runner-up (None: nobody)."""
    if verdict is None:
        return None
    chosen = verdict.chosen
    kind = getattr(chosen.unit, "kind", "process")
    return {"pid": chosen.pid, "name": chosen.name, "unit": kind, "why": verdict.why,
            "runner_up": verdict.runner_up_text}


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
