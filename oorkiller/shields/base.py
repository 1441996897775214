"""What every shield is, what it is given, and what it returns.

The contract, for every shield:

- `step(now) -> Step`: read once, judge once; the Step says how long to
  sleep before the next step and carries the decisions made (values from
  judge/decision.py). A shield never acts and never writes a record: the
  daemon hands the decisions to the action engine, which fills in their
  outcome; the shield reads that outcome at a later step, on its own thread.
- `interval`: the longest time between two steps.
- `status() -> list[dict]`: one row per watched thing (a resource, a disk, a
  device), each with `resource` and `state` (ok | acting | ...) and the
  reading and levels in exact numbers (bytes, fractions, seconds).
- `candidates(top) -> dict`: `{"ranked": [...], "excluded": [...],
  "choice": {...} | None}` as `oorkiller candidates` shows them (only shields
  that choose victims; `choice` is what the chooser would take now, why,
  and the runner-up).
- `close()`: give back every descriptor.
- `calm(sleep) -> bool`: after a step that asked for `sleep`, whether this
  shield is idle: far from its levels (by default: it asked for its whole
  interval), no action of its own under way, no process table sampled. The
  daemon steps calm shields together on one clock thread, and a shield
  that is not calm on a thread of its own (daemon.Clock).
- `calm_gates() -> [(kind, path, limit[, rate])] | None`: after a calm step, the
  cheap checks (proc/_calm.pyx: one figure of one file against a limit)
  that, while all of them pass, guarantee this shield's next steps would be
  calm and decide nothing. The clock then makes them in C instead of
  stepping the shield, and steps it when one fails (and now and then for
  its housekeeping). None: no such check; it is stepped as usual.
- `housekeeping`: seconds between two steps while the gates keep the
  shield (what it must look at even on a calm machine: a sysctl'd limit,
  renamed processes); default HOUSEKEEPING.
- `resume(kept)`: the shield is stepped again after its gates kept it;
  `kept` maps a gate's (kind, path) to what it kept, (previous, history):
  the CPU gate's last /proc/stat that passed and its readings since, a
  STATVFS gate's readings (previous None).
- `may_block`: True when a step can wait on the outside world (a network
  file system, another daemon): such a shield is never stepped on the
  shared clock, where it could delay the others.

A shield owns its readers (held fds) and, when it picks victims, its own
process table: no two threads share a native object.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

CALM_SLACK = 0.05          # seconds: a sleep this much under the interval is still a whole one
HOUSEKEEPING = 300.0       # seconds between two steps of a shield its gates keep calm


@dataclass
class Context:
    """What the daemon hands to every shield."""
    config: object                     # the whole Config
    rules: object                      # judge.rules.RuleSet
    proc_root: str = "/proc"
    sys_root: str = "/sys"
    dev_root: str = "/dev"             # /dev/kmsg is read from here
    self_pid: int = field(default_factory=os.getpid)


@dataclass
class Step:
    sleep: float                       # seconds until the next step
    decisions: list = field(default_factory=list)


class Shield:
    name = "base"

    def __init__(self, context: Context):
        self.context = context
        self.last_step = 0.0            # monotonic time of the last completed step
        self.state = "ok"               # ok | acting

    @property
    def interval(self) -> float:
        raise NotImplementedError

    def step(self, now: float) -> Step:
        raise NotImplementedError

    def status(self) -> list[dict]:
        raise NotImplementedError

    def candidates(self, top: int) -> dict:
        return {"ranked": [], "excluded": []}

    def calm(self, sleep: float) -> bool:
        """Idle after a step that asked for `sleep`: nothing under way, and
        nothing near a level (a shield near one asks for less than its interval)."""
        return self.state != "acting" and sleep >= self.interval - CALM_SLACK

    housekeeping = HOUSEKEEPING
    action_lanes: tuple = ()         # the engine's lanes its kills run on (opened before its first step)

    def calm_gates(self) -> list[tuple] | None:
        return None

    def resume(self, kept: dict) -> None:
        pass

    @property
    def may_block(self) -> bool:
        """A step may wait on something outside this machine's kernel."""
        return False

    def close(self) -> None:
        pass
