"""What every resource monitor is, and what it is given.

A monitor owns its readers (held fds) and, when it picks victims, its own
process table, so no two threads share a native object. `step()` reads once,
judges once, hands any action to the Executor and returns how long to sleep;
it never waits for an action to finish.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field


@dataclass
class Context:
    """What the daemon hands to every monitor."""
    config: object                     # the whole Config
    writer: object                     # RecordWriter
    executor: object                   # actions.Executor
    rules: object                      # rules.RuleSet
    dry_run: bool = False
    proc_root: str = "/proc"
    sys_root: str = "/sys"
    self_pid: int = field(default_factory=os.getpid)


class Monitor:
    name = "base"

    def __init__(self, context: Context):
        self.context = context
        self.last_step = 0.0            # monotonic time of the last completed step
        self.state = "ok"               # ok | acting
        self.wake = threading.Event()   # set to cut a sleep short (stop, reload)

    @property
    def interval(self) -> float:
        raise NotImplementedError

    def step(self, now: float) -> float:
        """One reading and judgement; returns the seconds until the next step."""
        raise NotImplementedError

    def status(self) -> dict:
        """The current reading, the configured levels, the state."""
        raise NotImplementedError

    def candidates(self, top: int) -> dict:
        """{'ranked': [...], 'excluded': [...]} as `oorkiller candidates` shows."""
        return {"ranked": [], "excluded": []}

    def close(self) -> None:
        pass
