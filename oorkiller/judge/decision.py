"""What a shield decides: plain values the action engine carries out.

A shield reads, judges and returns decisions; it never signals, deletes,
truncates, sets a link down or writes a record itself. The engine
(act/engine.py) carries each decision out on a worker, writes its records,
runs its hooks, and fills in the outcome below. The shield keeps the
decisions it returned and reads their outcome on its own thread, at its next
step: nothing calls back into a shield from a worker.

Every decision names its `resource` (the `resource=` of its records), says
`reason` (why, in words, as the records print it) and carries `fields`, the
figures for the record. Only the engine writes `done`, `outcome` and
`finished`.
"""
from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from collections.abc import Callable


@dataclass(eq=False)                 # compared and hashed by identity
class Decision:
    resource: str
    reason: str = ""
    fields: dict = field(default_factory=dict)
    # The outcome, written by the engine only.
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    outcome: str = ""                # see each kind
    finished: float = 0.0            # monotonic time it was over

    @property
    def lane(self) -> str:
        """Decisions of one lane run one after the other on one worker;
        different lanes never wait for each other."""
        return self.resource

    @property
    def over(self) -> bool:
        return self.done.is_set()


@dataclass(eq=False)
class Kill(Decision):
    """Signal a unit: `members` are process-table entries, the chosen one
    first. SIGTERM first (then SIGKILL after `term_timeout`) or SIGKILL at
    once; after SIGKILL the kernel is asked to reap the memory at once.
    Outcome: dead | alive (still there after SIGKILL) | gone (all had exited
    before the pidfds were taken) | dry-run | refused (a member was no
    candidate when judged again just before the first signal)."""
    members: list = field(default_factory=list)
    first_signal: int = signal.SIGTERM
    term_timeout: float = 5.0
    unit: str = "process"            # process | process_group | cgroup
    group: str = ""                  # the pgid or cgroup path of a group unit
    follow: bool = False             # catch what joins the group after the choice
    follow_for: float = 2.0          # seconds of following beyond the longest the kill may take
    # SIGSTOP the whole unit, and what it forks meanwhile, before SIGKILL: a
    # fork bomb forks faster than a kill pass goes through it (act/freeze.py).
    freeze_first: bool = False
    # A reading of what came back, made on the engine's worker with its own
    # files (never a shield's held ones), merged into the `reclaimed` record.
    measure: Callable[[], dict] | None = None
    targets: list = field(default_factory=list, repr=False)     # taken by the engine
    escalated: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def leader(self):
        return self.members[0]


@dataclass(eq=False)
class Escalate(Decision):
    """End the SIGTERM grace of a kill under way: SIGKILL now (the memory
    went through the kill level while the victim was still dying)."""
    kill: Kill | None = None


@dataclass(eq=False)
class Cleanup(Decision):
    """Delete the oldest files the disk's rules allow until `until_bytes`
    (and `until_inodes`, None when the file system counts none) are free.
    Outcome: done | failed."""
    path: str = ""                   # the disk entry's mount path
    device: int = 0                  # its st_dev: nothing elsewhere is touched
    rules: tuple = ()                # config.CleanupRule
    until_bytes: int = 0
    until_inodes: int | None = None
    keep_names: bool = False         # list the deleted names in debug lines

    @property
    def lane(self) -> str:
        return f"cleanup:{self.path}"


@dataclass(eq=False)
class Truncate(Decision):
    """Truncate a deleted-but-open file (proc.deleted.OpenDeleted) to 0, if
    every holder still holds it under a name matching `globs`.
    Outcome: done | gone | dry-run."""
    entry: object = None
    globs: tuple = ()                # the disk's truncate_deleted

    @property
    def lane(self) -> str:
        return "truncate"


@dataclass(eq=False)
class LinkDown(Decision):
    """Set a network interface down. Outcome: done | failed | dry-run."""
    interface: str = ""


@dataclass(eq=False)
class Notice(Decision):
    """A record that is not an action: nothing to kill, a duplicate MAC seen
    or cleared, an action skipped, a problem the shield met. It reaches the
    hooks like any action record (errors excepted)."""
    event: str = ""
    level: str = "info"              # info | warning | err

    @property
    def lane(self) -> str:
        return "notice"
