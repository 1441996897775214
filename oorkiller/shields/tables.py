"""The base of the shields that watch a kernel table (tasks, open files).

Every step reads one number the kernel keeps (held fd): how much of the
table is in use. While that stays under the level, nothing else is read: no
process table, no walk of /proc. Above the level, the processes are
sampled at every short step (SAMPLE_EVERY) and what each holds goes into a
window; once the window covers DECIDE_AFTER, the unit that grew the most
over it is killed. Growth, not holding, is what points at the culprit: a
database holding 5,000 descriptors for a week is not what filled the table
in the last second. A process born inside the window grew by all it holds.

`kill: auto` offers the processes, process groups and cgroups that made at
least MIN_SHARE of the growth of all candidates (a fork bomb's children each
make a sliver of it; their group, all of it), each with the table predicted
without what it holds; the one chooser (judge/choice.py) prefers the unit
whose removal brings the table back under its level.
"""
from __future__ import annotations

import time

from oorkiller.judge import shares
from oorkiller.quantities import format_percent
from oorkiller.shields.base import Step
from oorkiller.shields.stretch import StretchShield

SAMPLE_EVERY = 0.25        # seconds between samples while above the level
DECIDE_AFTER = 0.5         # seconds of growth the window must cover
WINDOW = 2.0               # seconds the window keeps
MIN_SHARE = 0.5            # of all growth, for one unit under `kill: auto`
CANDIDATE_WINDOW = 1.0     # seconds `oorkiller candidates` measures over


class TableShield(StretchShield):
    what = "entries"           # the record's word for what the table holds

    def __init__(self, context):
        super().__init__(context)
        self.window = shares.UsageWindow(WINDOW)
        self.reading: dict | None = None
        self.held: dict[int, int] = {}   # serial -> what it held at the last sample

    def read(self) -> dict:
        """{"used", "limit", "level", "reason"}: the table now."""
        raise NotImplementedError

    def gate(self) -> tuple[int, str]:
        """(gate kind, path) of the file `read` takes `used` from (proc/_calm.pyx)."""
        raise NotImplementedError

    def calm_gates(self) -> list | None:
        """While `used` stays under the level, every step is calm. (The
        limit behind the level is read again at the housekeeping steps.)"""
        if self.reading is None or self._table is not None:
            return None
        kind, path = self.gate()
        return [(kind, path, self.reading["level"])]

    def holdings(self) -> dict[int, int]:
        """serial -> what each candidate holds now (after refresh_table)."""
        raise NotImplementedError

    def kill_options(self, unit) -> dict:
        """Extra arguments of the Kill of `unit` (the first signal, freezing)."""
        return {}

    # ------------------------------------------------------------- stepping
    def step(self, now: float) -> Step:
        reading = self.reading = self.read()
        if self.waiting(now, self.cfg.cooldown):
            if now < self.cooldown_until:
                return Step(min(self.interval, self.cooldown_until - now))
            return Step(self.interval)
        if reading["used"] < reading["level"]:
            self.end_stretch()
            return Step(self.interval)
        self.sample(self.window, now)
        if self.window.seconds < DECIDE_AFTER:
            return Step(min(self.interval, SAMPLE_EVERY))
        decision = self.decide(reading)
        return Step(min(self.interval, SAMPLE_EVERY), [decision] if decision is not None else [])

    def forget_samples(self) -> None:
        self.window.clear()

    def sample(self, window: shares.UsageWindow, now: float) -> None:
        added, _ = self.refresh_table()
        self.held = self.holdings()
        window.add(now, self.held, self.birth_times(added))

    # ------------------------------------------------------------- deciding
    def growth(self) -> tuple[dict, int]:
        used = self.window.usage()
        return used, sum(used.values())

    def decide(self, reading: dict):
        used, total = self.growth()
        fields = {self.what: reading["used"], "limit": reading["limit"], "kill_level": reading["level"],
                  "window": f"{self.window.seconds:.2f}s"}
        choice = shares.choose_unit(self.cfg.kill, self.table.entries(), used, total,
                                    int(MIN_SHARE * 1000), self.context.self_pid, self.cgroup_of,
                                    predict=self.predict)
        if choice is None:
            return self.nothing_once(f"{reading['reason']}; no candidate grew by "
                                     f"{format_percent(MIN_SHARE)} of the growth", **fields)
        unit = choice.unit
        members = [unit.leader] + [p for p in unit.members if p is not unit.leader]
        fields.update(user=unit.leader.uid, grew=unit.used,
                      held=sum(self.held.get(p.serial, 0) for p in unit.members),
                      after=choice.candidate.after, why=choice.verdict.why,
                      runner_up=choice.verdict.runner_up_text)
        return self.kill(members, reading["reason"], fields, term_timeout=self.cfg.term_timeout,
                         unit=unit.kind, group=unit.key if unit.kind != "process" else "",
                         refused=choice.fallback_reason, **self.kill_options(unit))

    def predict(self, unit) -> tuple[bool, str]:
        """(enough, the table without `unit`): what it holds given back."""
        reading = self.reading or self.read()
        after = reading["used"] - sum(self.held.get(p.serial, 0) for p in unit.members)
        return after < reading["level"], f"{self.what} {after}"

    # ------------------------------------------------------------- reporting
    def status(self) -> list[dict]:
        reading = self.reading or self.read()
        return [{"resource": self.name, "state": self.state, "used": reading["used"],
                 "limit": reading["limit"], "kill_level": reading["level"],
                 "used_pct": round(100 * reading["used"] / max(reading["limit"], 1), 1)}]

    def candidates(self, top: int) -> dict:
        """Units ranked by how much they grew over a short window measured now."""
        window = shares.UsageWindow(CANDIDATE_WINDOW)
        self.sample(window, time.monotonic())
        time.sleep(CANDIDATE_WINDOW)
        self.sample(window, time.monotonic())
        used = window.usage()
        ranked, excluded, choice = shares.ranking(self.cfg.kill, self.table.entries(), used,
                                                  sum(used.values()), int(MIN_SHARE * 1000),
                                                  self.context.self_pid, self.cgroup_of, self.predict)
        return {"ranked": ranked[:top], "excluded": excluded, "choice": choice}
