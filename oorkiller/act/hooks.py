"""Operator hooks: commands run around actions (the `hooks:` section).

A hook is an argv list, never a shell string. It learns about the action
only through its environment, which is built from scratch (nothing of the
daemon's is inherited):

    OORKILLER_EVENT     kill, term, cleanup, reclaimed, ...
    OORKILLER_RESOURCE  memory, cpu, disk, io, network
    OORKILLER_PID       the victim's PID (empty when the event has none)
    OORKILLER_NAME      the victim's name, as raw bytes (may be non-UTF-8)
    OORKILLER_SIGNAL    SIGTERM / SIGKILL (empty when not a signal event)
    OORKILLER_REASON    why, as in the record
    OORKILLER_DRY_RUN   yes / no
    OORKILLER_FIELDS    every field of the record, as its logfmt text
    PATH=/usr/sbin:/usr/bin:/sbin:/bin  LANG=C.UTF-8

Two kinds, and one rule: a hook never delays a kill beyond its timeout.

- `before_kill: true` hooks run for `term` and `kill` events *before* the
  signal. They all start at once and the signal waits until they have all
  finished or the smallest of their timeouts has passed, whichever is first.
- every other hook runs *after* the record is written, and is not waited for.
  (A `before_kill` hook listening to an event that has no "before", such as
  `cleanup`, runs after it like the others.)

One reaper thread watches every running hook through its pidfd: it collects
the exit status, keeps the end of its stderr for the error record, and kills
the hook's whole process group when its timeout passes. A hook that cannot
start, exits non-zero, dies of a signal or times out gives an `error` record.
"""
from __future__ import annotations

import os
import select
import signal
import threading
import time
from dataclasses import dataclass, field

from oorkiller.record import logfmt

BEFORE_EVENTS = frozenset({"term", "kill"})
HOOK_PATH = b"/usr/sbin:/usr/bin:/sbin:/bin"
MAX_RUNNING = 32             # more than this at once is a storm: later ones are refused
STDERR_TAIL = 200            # bytes of a failing hook's stderr quoted in its error record


def _import_subprocess():
    """The subprocess module, imported on first need (see Hooks.configure)."""
    import subprocess
    return subprocess


def hook_environment(event: str, fields: dict) -> dict[bytes, bytes]:
    """The whole environment of a hook: built from the action, nothing inherited."""
    def raw(key):
        value = logfmt.value_bytes(fields.get(key))
        return b"" if value is None else value

    env = {
        b"PATH": HOOK_PATH,
        b"LANG": b"C.UTF-8",
        b"OORKILLER_EVENT": logfmt.value_bytes(event) or b"",
        b"OORKILLER_RESOURCE": raw("resource"),
        b"OORKILLER_PID": raw("pid"),
        b"OORKILLER_NAME": raw("name"),
        b"OORKILLER_SIGNAL": raw("signal"),
        b"OORKILLER_REASON": raw("reason"),
        b"OORKILLER_DRY_RUN": raw("dry_run") or b"no",
        b"OORKILLER_FIELDS": logfmt_fields(event, fields),
    }
    # An environment string cannot hold a NUL byte; a command line can.
    return {key: value.replace(b"\0", b"\\x00") for key, value in env.items()}


def logfmt_fields(event: str, fields: dict) -> bytes:
    """`event=kill resource=memory ...`: the record's text without its header."""
    safe = {logfmt.safe_key(key): value for key, value in fields.items()}
    line = logfmt.format_record(event, safe, pid=0, level="info")
    return line.partition(b"]: ")[2].rstrip(b"\n")


@dataclass(eq=False)              # compared and hashed by identity
class Running:
    """One started hook, until the reaper has collected it."""
    argv0: str
    event: str
    resource: str
    timeout: float
    proc: subprocess.Popen
    pidfd: int
    stderr_fd: int
    deadline: float
    tail: bytearray = field(default_factory=bytearray)
    finished: threading.Event = field(default_factory=threading.Event)


class Hooks:
    """`Hooks(config.hooks, writer)`: what the engine calls around every record it writes."""

    def __init__(self, hooks, writer):
        self.writer = writer
        self.hooks = ()
        self._running: list[Running] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stopping = False
        self._reaper = None
        self.configure(hooks)

    def configure(self, hooks) -> None:
        """Adopt a reloaded `hooks:` list; hooks already running are left to finish.
        subprocess is imported here, once hooks exist, not at start: a daemon
        without hooks never holds it in memory, one with hooks has it loaded
        (and locked) before the first action."""
        self.hooks = tuple(hooks)
        if self.hooks:
            _import_subprocess()
        if self.hooks and self._reaper is None:
            self._reaper = threading.Thread(target=self._reap_loop, name="hooks", daemon=True)
            self._reaper.start()

    # ------------------------------------------------------------ choosing
    def _wanted(self, event: str, fields: dict, *, before: bool) -> list:
        resource = str(fields.get("resource", ""))
        chosen = []
        for hook in self.hooks:
            if event not in hook.events or resource not in hook.resources:
                continue
            runs_before = hook.before_kill and event in BEFORE_EVENTS
            if runs_before == before:
                chosen.append(hook)
        return chosen

    # ------------------------------------------------------------ the API
    def before(self, event: str, fields: dict) -> None:
        """Run the before_kill hooks and wait for them, at most the smallest timeout."""
        hooks = self._wanted(event, fields, before=True)
        if not hooks:
            return
        started = [r for r in (self._start(h, event, fields) for h in hooks) if r is not None]
        if not started:
            return
        deadline = min(r.deadline for r in started)
        for running in started:
            running.finished.wait(max(0.0, deadline - time.monotonic()))
        # Hooks still running go on in the background; the reaper kills them
        # at their own timeout. The action itself goes ahead now.

    def after(self, event: str, fields: dict) -> None:
        """Start the other hooks; never waits for them."""
        for hook in self._wanted(event, fields, before=False):
            self._start(hook, event, fields)

    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the reaper; hooks still running are killed (daemon shutdown)."""
        self._stopping = True
        self._wake()
        if self._reaper is not None:
            self._reaper.join(timeout)
        with self._lock:
            left, self._running = self._running, []
        for running in left:
            self._kill(running)
            self._collect(running, "killed at daemon stop")

    # ------------------------------------------------------------ starting
    def _start(self, hook, event: str, fields: dict) -> Running | None:
        argv0 = hook.command[0]
        resource = str(fields.get("resource", ""))
        with self._lock:
            crowded = len(self._running) >= MAX_RUNNING
        if crowded:
            self._error(resource, argv0, f"on {event}: not started, {MAX_RUNNING} hooks already running")
            return None
        subprocess = _import_subprocess()
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            proc = subprocess.Popen(
                list(hook.command), env=hook_environment(event, fields), cwd="/",
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=write_end,
                close_fds=True, start_new_session=True)
        except (OSError, ValueError, subprocess.SubprocessError) as err:
            os.close(read_end)
            self._error(resource, argv0, f"on {event}: cannot start: {_os_error_text(err)}")
            return None
        finally:
            os.close(write_end)
        _unprotect(proc.pid)
        os.set_blocking(read_end, False)
        running = Running(argv0, event, resource, hook.timeout, proc, os.pidfd_open(proc.pid),
                          read_end, time.monotonic() + hook.timeout)
        with self._lock:
            self._running.append(running)
        self._wake()
        return running

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass                 # a wake-up is already pending

    # ------------------------------------------------------------ reaping
    def _reap_loop(self) -> None:
        while not self._stopping:
            try:
                self._reap_once()
            except Exception as err:   # a bug here must not leave hooks unwatched
                self._error("", "hooks", f"reaper: {type(err).__name__}: {err}")
                time.sleep(0.1)

    def _reap_once(self) -> None:
        """Wait for the next exit, stderr output, deadline or new hook; handle it."""
        with self._lock:
            watched = list(self._running)
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        by_fd = {}
        for running in watched:
            poller.register(running.pidfd, select.POLLIN)
            by_fd[running.pidfd] = running
            if running.stderr_fd >= 0:
                poller.register(running.stderr_fd, select.POLLIN)
                by_fd[running.stderr_fd] = running
        now = time.monotonic()
        wait = min((r.deadline - now for r in watched), default=None)
        events = poller.poll(None if wait is None else max(0, int(wait * 1000) + 1))
        for fd, _mask in events:
            if fd == self._wake_r:
                _drain(self._wake_r)
            elif fd == by_fd[fd].stderr_fd:
                self._read_stderr(by_fd[fd])
        exited = {by_fd[fd] for fd, _ in events if fd in by_fd and fd == by_fd[fd].pidfd}
        now = time.monotonic()
        for running in watched:
            if running in exited:
                self._finish(running, None)
            elif now >= running.deadline:
                self._kill(running)
                self._finish(running, f"timed out after {running.timeout:g}s, killed")

    def _read_stderr(self, running: Running) -> None:
        try:
            data = os.read(running.stderr_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:             # EOF: the hook closed its stderr
            os.close(running.stderr_fd)
            running.stderr_fd = -1
            return
        running.tail += data
        del running.tail[:-STDERR_TAIL]

    def _kill(self, running: Running) -> None:
        """SIGKILL the hook's whole process group (it leads it: new session).

        Safe from PID reuse: the leader is not reaped yet, so its PID and its
        group ID cannot have been given to anyone else.
        """
        for kill in (lambda: os.killpg(running.proc.pid, signal.SIGKILL),
                     lambda: signal.pidfd_send_signal(running.pidfd, signal.SIGKILL)):
            try:
                kill()
            except OSError:
                pass

    def _finish(self, running: Running, failure: str | None) -> None:
        with self._lock:
            if running in self._running:
                self._running.remove(running)
        self._collect(running, failure)

    def _collect(self, running: Running, failure: str | None) -> None:
        status = running.proc.wait()
        if running.stderr_fd >= 0:
            self._read_stderr(running)
            if running.stderr_fd >= 0:
                os.close(running.stderr_fd)
                running.stderr_fd = -1
        os.close(running.pidfd)
        if failure is None and status != 0:
            failure = (f"killed by {signal.Signals(-status).name}" if status < 0
                       else f"exit status {status}")
        if failure is not None:
            said = bytes(running.tail).decode("utf-8", "backslashreplace").strip()
            said = said.splitlines()[-1] if said else ""
            self._error(running.resource, running.argv0,
                        f"on {running.event}: {failure}" + (f": {said}" if said else ""))
        running.finished.set()

    def _error(self, resource: str, argv0: str, reason: str) -> None:
        try:
            self.writer.emit("error", "err", resource=resource or None, hook=argv0, reason=reason)
        except Exception:
            pass                 # reporting a hook must never hurt the action


def _unprotect(pid: int) -> None:
    """A hook must not inherit the daemon's oom_score_adj -1000 and nice -10.

    Done from the parent right after the start (subprocess has no safe way to
    do it in the child without preexec_fn, which forbids vfork and is unsafe
    with threads); a hook forking in its very first microseconds could still
    pass the old values to that child.
    """
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write("0")
    except OSError:
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, pid, 0)
    except OSError:
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _os_error_text(err: Exception) -> str:
    if isinstance(err, OSError) and err.errno:
        name = f" {err.filename}" if err.filename else ""
        return f"{os.strerror(err.errno)}{name}"
    return str(err)
