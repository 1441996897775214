"""The action engine: the one place that changes the machine and writes what
it did.

Shields hand it decisions (judge/decision.py); it carries each one out on a
worker of the decision's lane, so a victim stuck in D state or a cleanup
deleting a million files delays nothing but the next action of that same
lane. For every record it writes it runs the operator's hooks the same way
(`before_kill` hooks before a signal, the others after the record), and it
fills in the decision's outcome for the shield to read at its next step.

Kills: the pidfds are taken when the decision is handed over (on the
shield's thread, right after the choice), SIGTERM then SIGKILL after the
timeout (or at once when the decision is escalated), process_mrelease after
SIGKILL, a wait for death, and a `reclaimed` record. A group kill is followed
for a while so what it forks after the choice dies too (act/follow.py); a
kill with `freeze_first` stops the whole unit first (act/freeze.py), records
one `stop`, then SIGKILLs everyone stopped.

Dry run: every record says what would have been done and nothing is
signalled, deleted, truncated or set down; a dry kill stands still as a real
one would (term_timeout after SIGTERM, 1 s after SIGKILL), so a dry run
records one decision per shortage rather than one per reading.
"""
from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time

from oorkiller import kernel
from oorkiller.act import cleanup
from oorkiller.act.follow import follow_unit
from oorkiller.act.freeze import freeze_unit
from oorkiller.act.link import set_down
from oorkiller.act.signals import send, wait_for_death
from oorkiller.act.truncate import truncate
from oorkiller.judge.decision import Cleanup, Escalate, Kill, LinkDown, Notice, Truncate
from oorkiller.proc.facts import judge_now
from oorkiller.proc.targets import close_targets, take_targets
from oorkiller.quantities import format_size
from oorkiller.record.metrics import Counters

KILL_WAIT = 5.0            # longest wait for death after SIGKILL (D state)
DRY_KILL_STANDS = 1.0      # seconds a dry SIGKILL stands still, as a real one would


class Engine:
    """Engine(writer, hooks=None, proc_root="/proc", self_pid=None).
    `dry_run` and `rules` (the current RuleSet) are set by the daemon and
    replaced whole at a reload."""

    def __init__(self, writer, hooks=None, proc_root: str = "/proc", self_pid: int | None = None):
        self.writer = writer
        self.hooks = hooks
        self.proc_root = proc_root
        self.self_pid = os.getpid() if self_pid is None else self_pid
        self.dry_run = False
        self.rules = None
        self.stopping = threading.Event()
        self._lanes: dict[str, queue.SimpleQueue] = {}
        self._lock = threading.Lock()
        self._said: set = set()             # problems recorded once
        self.counters = Counters()          # what was done, for the metrics

    # ------------------------------------------------------------ handing over
    def submit(self, decision) -> None:
        """Take `decision` to be carried out. Returns at once: the outcome is
        in the decision when `decision.done` is set."""
        if isinstance(decision, Escalate):
            if decision.kill is not None:
                decision.kill.escalated.set()
            self._finish(decision, "done")
            return
        if isinstance(decision, Kill):
            if not decision.targets:         # bound now, right after the choice
                decision.targets = take_targets(decision.members, self.proc_root)
            if not decision.targets:
                self._finish(decision, "gone")
                return
        self._lane(decision.lane).put(decision)

    def open_lanes(self, names) -> None:
        """Start the workers of these lanes now. A worker made at the first
        decision of its lane costs that decision a thread's start (1.5-3.5 ms
        measured on a 2-core VM with a hog running, and a new stack to fault
        in while memory is short): the clock opens the lane of every shield
        that may kill before its first step."""
        for name in names:
            self._lane(name)

    def _lane(self, name: str) -> queue.SimpleQueue:
        with self._lock:
            work = self._lanes.get(name)
            if work is None:
                work = self._lanes[name] = queue.SimpleQueue()
                threading.Thread(target=self._worker, args=(work,), daemon=True,
                                 name=f"oork-act-{name}"[:15]).start()
        return work

    def stop(self) -> None:
        self.stopping.set()
        with self._lock:
            lanes = list(self._lanes.values())
        for work in lanes:
            work.put(None)

    # ------------------------------------------------------------ workers
    def _worker(self, work: queue.SimpleQueue) -> None:
        kernel.name_thread(threading.current_thread().name)
        while True:
            decision = work.get()
            if decision is None:
                return
            try:
                self._carry_out(decision)
            except Exception as err:   # a bug must not kill the worker thread
                self.writer.emit("error", "err", resource=decision.resource,
                                 reason=f"action failed: {type(err).__name__}: {err}")
                decision.outcome = decision.outcome or "failed"
            finally:
                if isinstance(decision, Kill):
                    close_targets(decision.targets)
                self._finish(decision, decision.outcome)

    @staticmethod
    def _finish(decision, outcome: str) -> None:
        decision.outcome = outcome
        decision.finished = time.monotonic()
        decision.done.set()

    def _carry_out(self, decision) -> None:
        if isinstance(decision, Kill):
            self._kill(decision)
        elif isinstance(decision, Cleanup):
            self._cleanup(decision)
        elif isinstance(decision, Truncate):
            self._truncate(decision)
        elif isinstance(decision, LinkDown):
            self._link_down(decision)
        elif isinstance(decision, Notice):
            fields = {"resource": decision.resource, **decision.fields}
            if decision.reason:
                fields.setdefault("reason", decision.reason)
            if decision.level != "err":
                fields["dry_run"] = self._dry()
            self.record(decision.event, decision.level, fields)
            decision.outcome = "done"
        else:
            raise TypeError(f"not a decision: {decision!r}")

    # ------------------------------------------------------------ records
    def record(self, event: str, level: str, fields: dict) -> None:
        """Write one record and start the hooks that follow it."""
        self.writer.emit(event, level, **fields)
        self.counters.count("oorkiller_actions_total", resource=fields.get("resource", ""), event=event)
        if self.hooks is not None and event != "error":
            self.hooks.after(event, fields)

    def _error(self, resource: str, reason: str, once_key=None, **fields) -> None:
        if once_key is not None:
            if once_key in self._said:
                return
            self._said.add(once_key)
        self.writer.emit("error", "err", resource=resource, **fields, reason=reason)

    def _dry(self) -> str:
        return "yes" if self.dry_run else "no"

    # ------------------------------------------------------------ kill
    def _kill(self, kill: Kill) -> None:
        started = time.monotonic()
        if self._refused(kill):
            return
        if kill.freeze_first:
            return self._freeze_and_kill(kill, started)
        if self.dry_run:
            self._signal_all(kill, kill.first_signal)
            kill.outcome = "dry-run"
            kill.escalated.wait(kill.term_timeout if kill.first_signal == signal.SIGTERM
                                else DRY_KILL_STANDS)
            return
        follower = self._follow(kill) if kill.follow and kill.unit != "process" else None
        reason = kill.reason
        if kill.first_signal == signal.SIGTERM:
            self._signal_all(kill, signal.SIGTERM)
            remaining = wait_for_death(kill.targets, kill.term_timeout, kill.escalated)
            if not remaining:
                return self._reclaimed(kill, "SIGTERM", started, follower)
            why = ("escalated" if kill.escalated.is_set()
                   else f"alive after term_timeout {kill.term_timeout:g}s")
            reason = f"{why}; {kill.reason}"
            kill.targets = remaining
        self._signal_all(kill, signal.SIGKILL, reason)
        self._reap(kill, started, follower)

    def _reap(self, kill: Kill, started: float, follower) -> None:
        """After SIGKILL: ask the kernel to free the memory now, wait for
        death, and say what came back (or that a victim would not die)."""
        for target in kill.targets:
            kernel.process_mrelease(target.pidfd)
        remaining = wait_for_death(kill.targets, KILL_WAIT)
        if remaining:
            kill.outcome = "alive"
            self._error(kill.resource, f"{len(remaining)} victim(s) still alive {KILL_WAIT:g}s after SIGKILL",
                        pid=remaining[0].pid, name=remaining[0].name)
            return
        self._reclaimed(kill, "SIGKILL", started, follower)

    def _freeze_and_kill(self, kill: Kill, started: float) -> None:
        """Stop the whole unit (what it forks meanwhile included), record one
        `stop`, then SIGKILL everyone stopped: one action per fork bomb."""
        if not self.dry_run:
            kill.targets += freeze_unit(kill, self.rules, self.proc_root, self.self_pid)
        fields = self._kill_fields(kill, signal.SIGSTOP, kill.reason)
        fields["processes"] = len(kill.targets)
        try:
            self.record("stop", "warning", fields)
        finally:                           # a stopped unit is never left stopped
            self._signal_all(kill, signal.SIGKILL)
        if self.dry_run:
            kill.outcome = "dry-run"
            kill.escalated.wait(DRY_KILL_STANDS)
            return
        self._reap(kill, started, None)

    def _refused(self, kill: Kill) -> bool:
        """Judge every process the kill would signal with the current rules
        and facts read now: the verdict the shield chose by may be as old as
        the process's first sighting, and it may have exec'd a protected
        program since. One member that is no candidate now refuses the whole
        kill (half a group is not the unit that was chosen); the refusal is
        one `error` record naming that member, and the outcome `refused`."""
        if self.rules is None:
            return False
        for target in kill.targets:
            verdict = judge_now(self.rules, target, self.proc_root)
            if verdict is None or verdict.eligible:
                continue                    # gone (its signal will say so) or still a candidate
            kill.outcome = "refused"
            leader = kill.targets[0]
            self._error(kill.resource, f"kill refused: member {target.pid} is no candidate now: "
                                       f"{verdict.reason}",
                        pid=leader.pid, name=leader.name, unit=kill.unit,
                        member=target.pid, member_name=target.name)
            return True
        return False

    def _kill_fields(self, kill: Kill, signum: int, reason: str) -> dict:
        leader = kill.targets[0]
        fields = {"resource": kill.resource, "pid": leader.pid, "name": leader.name,
                  **kill.fields, "unit": kill.unit}
        if kill.unit != "process":
            fields.update(group=kill.group, processes=len(kill.targets))
        fields.update(signal=signal.Signals(signum).name, reason=reason, dry_run=self._dry())
        return fields

    def _signal_all(self, kill: Kill, signum: int, reason: str | None = None) -> None:
        event = "kill" if signum == signal.SIGKILL else "term"
        fields = self._kill_fields(kill, signum, kill.reason if reason is None else reason)
        if self.hooks is not None:
            self.hooks.before(event, fields)
        failures = []
        if not self.dry_run:
            for target in kill.targets:
                result = send(target, signum)
                if result not in ("sent", "gone"):
                    failures.append((target, result))
        self.record(event, "warning", fields)
        for target, error in failures:
            self._error(kill.resource, f"{fields['signal']} failed: {error}",
                        pid=target.pid, name=target.name)

    def _reclaimed(self, kill: Kill, fatal_signal: str, started: float, follower) -> None:
        kill.outcome = "dead"
        leader = kill.targets[0]
        fields = {"resource": kill.resource, "pid": leader.pid, "name": leader.name,
                  "signal": fatal_signal, "after": f"{time.monotonic() - started:.3f}s"}
        if len(kill.targets) > 1:
            fields["processes"] = len(kill.targets)
        if kill.measure is not None:
            try:
                fields.update(kill.measure())
            except Exception:
                pass                       # what came back is a figure, not a reason to fail
        self.record("reclaimed", "info", fields)

    def _follow(self, kill: Kill) -> threading.Thread:
        """Follow the unit on a thread of its own while the kill goes on."""
        rules = self.rules

        def run():
            kernel.name_thread(threading.current_thread().name)
            late = follow_unit(kill, rules, self.proc_root, self.self_pid, kill.done,
                               kill.term_timeout + KILL_WAIT + kill.follow_for)
            if late:
                leader = kill.targets[0]
                self.record("kill", "warning", {
                    "resource": kill.resource, "pid": leader.pid, "name": leader.name,
                    "unit": kill.unit, "group": kill.group, "processes": len(late),
                    "signal": "SIGKILL", "reason": f"joined {kill.unit} {kill.group} after it was chosen",
                    "dry_run": "no"})

        thread = threading.Thread(target=run, name=f"oork-follow-{kill.resource}"[:15], daemon=True)
        thread.start()
        return thread

    # ------------------------------------------------------------ disk
    def _cleanup(self, work: Cleanup) -> None:
        """One cleanup pass and its one `cleanup` record."""
        path = work.path
        before = os.statvfs(path)
        goal = cleanup.Goal(lambda: os.statvfs(path), work.until_bytes, work.until_inodes)
        result = cleanup.run_pass(work.rules, work.device, goal, keep_names=work.keep_names,
                                  dry_run=self.dry_run, stop=self.stopping)
        for directory, why in result.refused:
            self._error("disk", f"cleanup directory refused: {why}", ("refused", directory, why),
                        path=path, directory=directory)
        for text in result.errors:
            self._error("disk", f"cleanup: {text}", ("walk", text), path=path)
        for name in result.names:
            sys.stderr.write(f"oorkiller-debug: cleanup {'would delete' if self.dry_run else 'deleted'} "
                             f"{name!r}\n")
        work.outcome = "done"
        if result.files == 0 and result.kept_flocked == 0:
            return                      # nothing allowed to go: no record every interval
        after = os.statvfs(path)
        fields = {"resource": "disk", "path": path, "files": result.files,
                  "bytes": format_size(result.bytes),
                  "free_before": format_size(before.f_bavail * before.f_frsize),
                  "free_after": format_size(after.f_bavail * after.f_frsize),
                  "inodes_before": before.f_favail, "inodes_after": after.f_favail,
                  "reason": work.reason, **work.fields, "dry_run": self._dry()}
        if result.kept_flocked:
            fields["kept_flocked"] = result.kept_flocked
        if not result.reached:
            fields["until"] = "not reached"
        self.record("cleanup", "warning", fields)

    def _truncate(self, work: Truncate) -> None:
        entry = work.entry
        fields = {"resource": work.resource, **work.fields, "file": entry.path,
                  "bytes": format_size(entry.nbytes), "reason": work.reason, "dry_run": self._dry()}
        if self.dry_run:
            work.outcome = "dry-run"
            self.record("truncate", "warning", {"pid": entry.holders[0].pid, **fields})
            return
        done = truncate(entry, work.globs, self.proc_root)
        if done is None:
            work.outcome = "gone"
            return
        work.outcome = "done"
        self.record("truncate", "warning", {"pid": done[0], **fields})

    # ------------------------------------------------------------ network
    def _link_down(self, work: LinkDown) -> None:
        fields = {"resource": work.resource, **work.fields}
        if not self.dry_run:
            try:
                set_down(work.interface)
            except OSError as err:
                work.outcome = "failed"
                self._error(work.resource, f"cannot set {work.interface} down: {err.strerror or err}",
                            **work.fields, interface=work.interface)
                return
        work.outcome = "dry-run" if self.dry_run else "done"
        self.record("down", "warning", {**fields, "interface": work.interface,
                                        "dry_run": self._dry()})
