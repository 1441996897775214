"""Acting on victims: pidfd signals, SIGTERM→SIGKILL escalation, reaping, waiting.

Each resource has its own worker thread, so a victim stuck in D state delays
nothing but the next decision for that same resource, and at most for its
timeout. A victim is addressed only through the pidfd taken when it
was chosen: a PID reused by another process is never signalled.
"""
from __future__ import annotations

import os
import queue
import select
import signal
import threading
import time
from dataclasses import dataclass, field

from oorkiller import kernel

POLL_SLICE = 0.02          # how often a waiting worker looks at `escalate`
KILL_WAIT = 5.0            # longest wait for death after SIGKILL (D state)


@dataclass
class Target:
    """One process of a unit, with the pidfd taken when it was chosen."""
    pid: int
    name: bytes
    pidfd: int


@dataclass
class Action:
    resource: str
    targets: list[Target]
    reason: str
    fields: dict                       # extra record fields (score, rss, unit…)
    first_signal: int = signal.SIGTERM
    term_timeout: float = 5.0
    dry_run: bool = False
    measure: object = None             # () -> dict of what came back, or None
    escalate: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0
    finished: float = 0.0              # monotonic time the action ended
    outcome: str = ""                  # dead | alive | dry-run | gone

    @property
    def leader(self) -> Target:
        return self.targets[0]


def take_targets(table, procs) -> list[Target]:
    """pidfds for the chosen processes; those already gone are left out."""
    targets = []
    for proc in procs:
        try:
            pidfd = table.open_pidfd(proc)
        except (ProcessLookupError, OSError):
            continue
        targets.append(Target(proc.pid, proc.comm, pidfd))
    return targets


def close_targets(targets) -> None:
    for target in targets:
        try:
            os.close(target.pidfd)
        except OSError:
            pass
        target.pidfd = -1


def send(target: Target, signum: int) -> str:
    """Signal through the pidfd: 'sent', 'gone' or an error text."""
    try:
        signal.pidfd_send_signal(target.pidfd, signum)
        return "sent"
    except ProcessLookupError:
        return "gone"
    except OSError as err:
        return os.strerror(err.errno) if err.errno else str(err)


def alive(targets) -> list[Target]:
    """Targets whose process has not exited (a pidfd polls readable at exit)."""
    if not targets:
        return []
    poller = select.poll()
    for target in targets:
        poller.register(target.pidfd, select.POLLIN)
    exited = {fd for fd, _ in poller.poll(0)}
    return [t for t in targets if t.pidfd not in exited]


def wait_for_death(targets, timeout: float, interrupt: threading.Event | None = None) -> list[Target]:
    """Wait until all targets exit, `timeout` passes, or `interrupt` is set."""
    deadline = time.monotonic() + timeout
    remaining = alive(targets)
    while remaining and time.monotonic() < deadline:
        if interrupt is not None and interrupt.is_set():
            break
        poller = select.poll()
        for target in remaining:
            poller.register(target.pidfd, select.POLLIN)
        slice_ms = max(1, int(min(POLL_SLICE, deadline - time.monotonic()) * 1000))
        poller.poll(slice_ms)
        remaining = alive(remaining)
    return remaining


class Executor:
    """Runs actions, one worker thread per resource."""

    def __init__(self, writer, hooks=None):
        self.writer = writer
        self.hooks = hooks
        self._current: dict[str, Action] = {}
        self._queues: dict[str, queue.SimpleQueue] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # -- monitor side ------------------------------------------------------
    def busy(self, resource: str) -> Action | None:
        with self._lock:
            action = self._current.get(resource)
        if action is not None and action.done.is_set():
            return None
        return action

    def last(self, resource: str) -> Action | None:
        """The resource's latest action, finished or not."""
        with self._lock:
            return self._current.get(resource)

    def submit(self, action: Action) -> bool:
        """Hand an action to its resource's worker; False if one is under way."""
        with self._lock:
            current = self._current.get(action.resource)
            if current is not None and not current.done.is_set():
                return False
            self._current[action.resource] = action
            work = self._queues.get(action.resource)
            if work is None:
                work = self._queues[action.resource] = queue.SimpleQueue()
                threading.Thread(target=self._worker, args=(work,), daemon=True,
                                 name=f"act-{action.resource}").start()
        work.put(action)
        return True

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            queues = list(self._queues.values())
        for work in queues:
            work.put(None)

    # -- worker side -------------------------------------------------------
    def _worker(self, work: queue.SimpleQueue) -> None:
        while True:
            action = work.get()
            if action is None:
                return
            try:
                self._carry_out(action)
            except Exception as err:   # a bug must not kill the worker thread
                self.writer.emit("error", "err", resource=action.resource,
                                 reason=f"action failed: {err!r}")
            finally:
                close_targets(action.targets)
                action.finished = time.monotonic()
                action.done.set()

    def _carry_out(self, action: Action) -> None:
        action.started = time.monotonic()
        if action.dry_run:
            self._signal_all(action, action.first_signal)
            action.outcome = "dry-run"
            # Stand still as a real action would, so a dry run records one
            # decision per shortage rather than one per reading.
            action.escalate.wait(action.term_timeout if action.first_signal == signal.SIGTERM else 1.0)
            return
        if action.first_signal == signal.SIGTERM:
            self._signal_all(action, signal.SIGTERM)
            remaining = wait_for_death(action.targets, action.term_timeout, action.escalate)
            if not remaining:
                return self._reclaimed(action, "SIGTERM")
            why = "escalated" if action.escalate.is_set() else f"alive after term_timeout {action.term_timeout:g}s"
            action.fields = {**action.fields, "reason": f"{why}; {action.reason}"}
            action.targets = remaining
        self._signal_all(action, signal.SIGKILL)
        for target in action.targets:
            kernel.process_mrelease(target.pidfd)
        remaining = wait_for_death(action.targets, KILL_WAIT)
        if remaining:
            action.outcome = "alive"
            self.writer.emit("error", "err", resource=action.resource, pid=remaining[0].pid,
                             name=remaining[0].name,
                             reason=f"{len(remaining)} victim(s) still alive {KILL_WAIT:g}s after SIGKILL")
            return
        self._reclaimed(action, "SIGKILL")

    def _signal_all(self, action: Action, signum: int) -> None:
        event = "kill" if signum == signal.SIGKILL else "term"
        fields = {"resource": action.resource, "pid": action.leader.pid,
                  "name": action.leader.name, **action.fields,
                  "signal": signal.Signals(signum).name}
        fields.setdefault("reason", action.reason)
        fields["dry_run"] = "yes" if action.dry_run else "no"
        if self.hooks is not None:
            self.hooks.before(event, fields)
        failures = []
        if not action.dry_run:
            for target in action.targets:
                result = send(target, signum)
                if result not in ("sent", "gone"):
                    failures.append((target, result))
        self.writer.emit(event, "warning", **fields)
        for target, error in failures:
            self.writer.emit("error", "err", resource=action.resource, pid=target.pid,
                             name=target.name, reason=f"{fields['signal']} failed: {error}")
        if self.hooks is not None:
            self.hooks.after(event, fields)

    def _reclaimed(self, action: Action, fatal_signal: str) -> None:
        action.outcome = "dead"
        fields = {"resource": action.resource, "pid": action.leader.pid,
                  "name": action.leader.name, "signal": fatal_signal,
                  "after": f"{time.monotonic() - action.started:.3f}s"}
        if len(action.targets) > 1:
            fields["processes"] = len(action.targets)
        if action.measure is not None:
            try:
                fields.update(action.measure())
            except Exception:
                pass
        self.writer.emit("reclaimed", "info", **fields)
        if self.hooks is not None:
            self.hooks.after("reclaimed", fields)
