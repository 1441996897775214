"""The base of the shields that look at processes only during a stretch of
shortage (CPU, IO, tasks, files).

Such a shield reads one cheap machine-wide figure at every step; only while
its condition holds (a stretch) does it make a process table and sample it.
When the stretch ends, or its kill is over, it forgets the samples and the
table, so a healthy machine costs it no descriptors and no entries, and the
next decision sees the machine without the last victim. It says
`nothing-to-kill` once per stretch, not at every reading.
"""
from __future__ import annotations

from oorkiller.shields.process import ProcessShield


class StretchShield(ProcessShield):
    def __init__(self, context):
        super().__init__(context)
        self.said_nothing = False       # nothing-to-kill recorded in this stretch

    @property
    def cfg(self):
        """This shield's section of the configuration."""
        raise NotImplementedError

    @property
    def interval(self) -> float:
        return self.cfg.interval

    def calm(self, sleep: float) -> bool:
        """Also: no stretch under way (no process table sampled)."""
        return super().calm(sleep) and self._table is None

    def forget_samples(self) -> None:
        """The samples of this stretch (each shield its own windows)."""
        raise NotImplementedError

    def end_stretch(self) -> None:
        """The condition stopped holding: forget the samples and the table."""
        self.forget_samples()
        self.release_table()
        self.said_nothing = False

    def action_over(self, now: float) -> None:
        self.end_stretch()            # the next decision needs a whole fresh window

    def nothing_once(self, reason: str, **fields):
        """A nothing-to-kill Notice, or None when this stretch already said it."""
        if self.said_nothing:
            return None
        self.said_nothing = True
        return self.nothing_to_kill(reason, **fields)
