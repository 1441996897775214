"""The base of the shields that judge usage over a window (CPU, IO).

Such a shield watches cheap machine-wide readings at every step. Only while
its conditions hold does it sample the processes, and the samples of that
stretch form the window: once the conditions have held for `for`, the
culprit is measured over exactly that time (what each process used in it,
not its lifetime total). A unit (process, process group or cgroup, `kill:`)
is killed only if it used at least `min_share` of the resource over the
window. After a kill, a `cooldown` passes and the conditions must hold a
whole `for` again, so the next decision sees the machine without the last
victim.
"""
from __future__ import annotations

import functools

from oorkiller.judge import shares
from oorkiller.quantities import format_percent
from oorkiller.shields.base import Step
from oorkiller.shields.stretch import StretchShield

CANDIDATE_WINDOW = 1.0     # seconds `oorkiller candidates` measures over


class WindowedShield(StretchShield):
    @property
    def windows(self) -> list:
        """Every UsageWindow of this shield (cleared when a stretch ends)."""
        raise NotImplementedError

    def min_share(self) -> int:
        return int(round(self.cfg.min_share * 1000))

    def waiting_for_action(self, now: float) -> bool:
        return self.waiting(now, self.cfg.cooldown)

    def wait_step(self, now: float) -> Step:
        """The step while our kill runs (look again in an interval) or its
        cooldown lasts (look again when it ends)."""
        if now < self.cooldown_until:
            return Step(min(self.interval, self.cooldown_until - now))
        return Step(self.interval)

    def forget_samples(self) -> None:
        for window in self.windows:
            window.clear()

    def decide(self, used: dict, capacity: float, reason: str, fields: dict, nothing: str):
        """The Kill of the unit `kill:` chooses over the window, or a
        nothing-to-kill Notice (once per stretch) when no unit reaches
        `min_share`; `nothing` says why in words."""
        choice = shares.choose_unit(self.cfg.kill, self.table.entries(), used, capacity,
                                    self.min_share(), self.context.self_pid, self.cgroup_of,
                                    predict=self.predict)
        if choice is None:
            return self.nothing_once(f"{reason}; {nothing}", **fields)
        unit = choice.unit
        members = [unit.leader] + [p for p in unit.members if p is not unit.leader]
        share = format_percent(unit.share / 1000)
        fields = {**fields, "user": unit.leader.uid, "score": choice.candidate.score, "share": share,
                  **self.unit_fields(unit), "after": choice.candidate.after,
                  "why": choice.verdict.why, "runner_up": choice.verdict.runner_up_text}
        after = {key: fields[key] for key in ("device",) if key in fields}   # for `reclaimed`
        return self.kill(members, reason, fields, term_timeout=self.cfg.term_timeout,
                         unit=unit.kind, group=unit.key if unit.kind != "process" else "",
                         refused=choice.fallback_reason,
                         measure=functools.partial(dict, after, share=share))

    def predict(self, unit) -> tuple[bool, str]:
        """(enough, the reading without `unit`, in words): whether its kill
        alone brings a level back."""
        raise NotImplementedError

    def unit_fields(self, unit) -> dict:
        """Extra record fields for the chosen unit."""
        return {}

    def ranked(self, used: dict, capacity: float) -> tuple[list, list, dict | None]:
        """`oorkiller candidates`: every unit with its share, the excluded, and
        the choice the shield would make."""
        return shares.ranking(self.cfg.kill, self.table.entries(), used, capacity,
                              self.min_share(), self.context.self_pid, self.cgroup_of, self.predict)
