"""The daemon: one clock for the calm machine, a thread per busy shield,
the action engine, signals, reload.

On a calm machine one thread, `oork-clock`, steps every shield when it is
due (memory and CPU every second, disks every 5 s, network every 10 s by
default) and sends the systemd watchdog ping on the same tick: the daemon
wakes once a second. A shield near its level or acting is handed to a thread
of its own (`oork-memory`, `oork-cpu`, ...), parked until then, which steps
it at the cadence it asks for (milliseconds for memory about to run out), so
a slow step elsewhere never delays it; it comes back to the clock when it is
calm again (Clock, ShieldRunner). The shields hand their decisions to the
engine, which carries them out on its own workers, so no shield's watching
waits for an action.

Start-up order matters: everything is imported and built first, then the
process hardens itself (gc.freeze, small thread stacks, the kill path run
once, mlockall, oom_score_adj −1000, nice) and only then starts its threads,
so the locked memory is small and nothing is paged in on the way to a kill.
"""
from __future__ import annotations

import gc
import os
import select
import signal
import sys
import threading
import time

from oorkiller import __version__, kernel, notify
from oorkiller.act.engine import Engine
from oorkiller.act.hooks import Hooks
from oorkiller.act.signals import alive, send
from oorkiller.config import ConfigError, config_warnings, load_config
from oorkiller.judge.rules import RuleSet
from oorkiller.proc._calm import CalmWatch
from oorkiller.proc._proctable import raise_fd_limit
from oorkiller.proc.targets import Target
from oorkiller.record import metrics
from oorkiller.shields import enabled_shields, shield_class
from oorkiller.shields.base import Context

THREAD_STACK = 256 << 10     # with mlockall(MCL_FUTURE) every stack is locked whole
ERROR_REPEAT = 60.0          # the same shield error is recorded at most this often
STOP_GRACE = 0.8             # SIGTERM must stop the daemon within 1 s
CLOCK_SLACK = 0.05           # a calm shield due this soon is stepped in the same tick
SLOW_STEP = 0.1              # seconds: a step this long leaves the clock, even a calm one
CLOCK_LATE = 2.0             # seconds past its planned tick before the main thread takes
                             # over the watchdog pings from a stuck clock


def rehearse_kill_path() -> None:
    """Run once, harmlessly, the code a kill runs (pidfd_open, signal 0 through
    the pidfd, poll, process_mrelease), so its pages are resident and locked
    before the first real shortage, when faulting them in could stall."""
    try:
        pidfd = os.pidfd_open(os.getpid())
    except OSError:
        return
    try:
        myself = Target(os.getpid(), b"oorkiller", 0, pidfd)
        send(myself, 0)
        alive([myself])
        kernel.process_mrelease(pidfd)      # refused for a live process: EINVAL
    finally:
        os.close(pidfd)


class Doorbell:
    """How a scheduling thread sleeps: poll(2) on an eventfd, with a timeout.

    One system call per sleep and nothing allocated, where threading.Event
    makes a lock and a Condition round per wait. `ring()` cuts the sleep
    short (a hand-over, stop, reload); a sleep with no timeout costs no
    wake-up at all: that is how a shield's own thread waits while the clock
    steps it."""

    def __init__(self):
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)

    def ring(self) -> None:
        fd = self.fd
        if fd >= 0:
            try:
                os.eventfd_write(fd, 1)
            except OSError:
                pass

    def wait(self, timeout: float | None) -> bool:
        """Sleep until rung or `timeout` seconds (None: until rung); True if rung."""
        if self.fd < 0:
            return True
        rung = bool(self._poll.poll(None if timeout is None else max(timeout, 0.0) * 1e3))
        if rung:
            try:
                os.eventfd_read(self.fd)
            except OSError:             # BlockingIOError: another reader drained it
                pass
        return rung

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class ShieldRunner:
    """One shield, stepped by the clock while it is calm, by a thread of its
    own (`oork-NAME`) while it is not.

    Calm: its last step asked for a sleep of its whole interval, made no
    decision, took less than SLOW_STEP, and the shield says it is calm (no
    action of its own under way, no process table sampled: `Shield.calm`);
    and its steps cannot wait on the outside world (`Shield.may_block`).
    The thread exists from the start, parked on its doorbell without a
    timeout, so it costs nothing while the clock steps the shield. Only the
    thread that owns the shield at a moment steps it: the clock hands it
    over right after the step that found it busy, the own thread hands it
    back right after the step that found it calm again, and neither touches
    it in between; each steps under the runner's lock, which the main
    thread also takes when it releases a stuck clock's shields."""

    def __init__(self, shield, clock: "Clock"):
        self.shield = shield
        self.clock = clock
        self.due = 0.0                  # monotonic time of the next step
        self.calm = not shield.may_block
        self.on_clock = self.calm       # who steps it now: the clock, or its own thread
        self.statuses: list[dict] = []
        self.status_at = float("-inf")
        self.last_error = ("", 0.0)
        self.steps = 0                  # steps made, on either thread
        self.gates: dict[tuple, int] = {}   # (kind, path) -> index in the clock's watch
        self.gated_at: int | None = None    # `steps` when its gates were armed; None: not gated
        self.bell = Doorbell()
        self.lock = threading.Lock()    # held while stepping: one thread at a time
        self.thread = threading.Thread(target=self._own_loop, name=f"oork-{shield.name}"[:15],
                                       daemon=True)

    def step(self, now: float) -> None:
        """One step of the shield, on the thread that owns it now; its
        decisions go to the engine, `due` and `calm` are updated."""
        shield = self.shield
        decided = False
        self.steps += 1
        try:
            step = shield.step(now)
            for decision in step.decisions:
                self.clock.engine.submit(decision)
            decided = bool(step.decisions)
            sleep = step.sleep
        except Exception as err:   # a reading error must not end the watch
            self.record_error(err, now)
            sleep = shield.interval
        done = time.monotonic()
        shield.last_step = done
        self.due = now + sleep
        self.calm = (not decided and done - now < SLOW_STEP and shield.calm(sleep)
                     and not shield.may_block)
        self._snapshot(done)

    def _own_loop(self) -> None:
        kernel.name_thread(self.thread.name)
        _leave_alarm_to_main()
        stopping = self.clock.stopping
        while not stopping.is_set():
            if self.on_clock:
                self.bell.wait(None)            # parked: the clock steps the shield
                continue
            now = time.monotonic()
            if now >= self.due:
                with self.lock:
                    self.step(now)
                    # back to the clock once calm, unless the clock is stuck
                    self.on_clock = self.calm and not self.clock.overdue
                if self.on_clock:
                    self.clock.bell.ring()      # it plans its tick anew
                    continue
            self.bell.wait(self.due - time.monotonic())

    def _snapshot(self, now: float) -> None:
        """The shield's status rows for the metrics, taken by the thread that
        steps it (a shield's readers are never used from another)."""
        every = self.clock.status_every
        if every is None or now - self.status_at < every:
            return
        self.status_at = now
        try:
            self.statuses = self.shield.status()
        except Exception:
            self.statuses = []

    def record_error(self, err: Exception, now: float) -> None:
        text = f"{type(err).__name__}: {err}"
        last_text, last_at = self.last_error
        if text == last_text and now - last_at < ERROR_REPEAT:
            return
        self.last_error = (text, now)
        self.clock.writer.emit("error", "err", resource=self.shield.name, reason=text)


class Clock:
    """The one scheduling thread of a calm machine (`oork-clock`).

    Each tick steps every calm shield that is due (or due within
    CLOCK_SLACK, so shields of one interval share a wake-up), the memory
    shield first, then sends the systemd watchdog ping when one is due, and
    sleeps until the next shield or ping is due. A shield whose step asks
    for a shorter sleep than its interval (near its level), decides
    something, has an action under way or takes longer than SLOW_STEP is
    handed to its own thread at once and stepped there at its own cadence
    (the memory shield's milliseconds near a level), so nothing on the clock
    waits for it; it comes back when it is calm. Shields whose step may wait
    on the outside world (a disk on a network or FUSE file system, Open
    vSwitch) never ride on the clock.

    A calm shield may offer gates (`Shield.calm_gates`): a figure the
    kernel keeps and a limit that, while the figure stays on the calm side,
    says its next steps would find nothing to do. The clock then makes
    those checks in C without the interpreter (proc/_calm.pyx, CalmWatch:
    one pread and a comparison each, at the shield's interval) and sleeps
    there between them; a gate that fails has its shield stepped at once, in
    the same tick, after `Shield.resume` has handed it what the gates kept.
    A gated shield is still stepped every `Shield.housekeeping` seconds
    (and as often as the metrics need a status).

    A step that hangs on the clock (a calm shield's first sample of the
    process table on a huge machine, a file system that stopped answering)
    must not hold the others: before each sleep the clock arms a timer
    (SIGALRM, ITIMER_REAL) for the end of the sleep plus the shortest
    interval of the shields it steps. If the next tick is not over by then,
    the main thread (`release`) hands every shield the clock is not inside
    to its own thread, which steps it on time; they come back once the
    clock is through. While the daemon pings the systemd watchdog, the same
    timer (at most CLOCK_LATE past the tick) makes the main thread ping, or
    withhold and name the stalled shields, while the clock is stuck."""

    def __init__(self, shields, engine, writer, stopping: threading.Event,
                 status_every: float | None = None, pinger=None, late: threading.Event | None = None,
                 alarm: bool = False):
        self.engine = engine
        self.writer = writer
        self.stopping = stopping
        self.status_every = status_every   # seconds between status snapshots (metrics), None: none
        self.pinger = pinger               # set once the daemon has said READY
        self.late = late                   # set by the daemon's SIGALRM: this clock missed its tick
        self.overdue = False               # released: its shields stay on their own threads
        self.alarm = alarm                 # SIGALRM is handled (calls release): arm the timer
        self.bell = Doorbell()
        shields = list(shields) if isinstance(shields, (list, tuple)) else [shields]
        shields.sort(key=lambda s: s.name != "memory")   # memory first in every tick
        self.runners = [ShieldRunner(shield, self) for shield in shields]
        self.watch = CalmWatch(capacity=4 * len(self.runners) + 1)
        self.gate_owner: dict[int, ShieldRunner] = {}   # gate index -> its runner
        self.watch_failed = False          # the watch raised once: no gates any more
        self.thread = threading.Thread(target=self._loop, name="oork-clock", daemon=True)

    @property
    def shields(self) -> list:
        return [r.shield for r in self.runners]

    @property
    def shield(self):
        return self.runners[0].shield

    @property
    def last_status(self) -> list[dict]:
        return [row for r in self.runners for row in r.statuses]

    def start(self) -> None:
        for runner in self.runners:
            self.engine.open_lanes(runner.shield.action_lanes)
            runner.thread.start()
        self.thread.start()

    def _loop(self) -> None:
        kernel.name_thread(self.thread.name)
        _leave_alarm_to_main()
        runners = self.runners
        self._arm(self._budget())
        while not self.stopping.is_set():
            now = time.monotonic()
            for runner in runners:
                if runner.on_clock and now >= runner.due - CLOCK_SLACK:
                    with runner.lock:
                        if not runner.on_clock:      # released meanwhile: its own thread has it
                            continue
                        self._ungate(runner)
                        for index in runner.gates.values():
                            self.watch.reset(index)   # what happens from here fails a quiet gate
                        runner.step(now)
                        if not runner.calm:          # near a level, acting or slow: its own thread
                            runner.on_clock = False
                            runner.bell.ring()
                        else:
                            self._gate(runner, now)
                    now = time.monotonic()
            wake = min((r.due for r in runners if r.on_clock), default=None)
            budget = self._budget()
            pinger = self.pinger
            if pinger is not None and pinger.enabled:
                if self.late is not None:
                    self.late.clear()        # the pings are the clock's again
                pinger.tick(self.shields, now)
                ping_at = now + pinger.sleep_for(now)
                wake = ping_at if wake is None else min(wake, ping_at)
                budget = min(budget, CLOCK_LATE) if budget else CLOCK_LATE
            self.overdue = False             # not stuck: released shields may come back
            self._drop_stale_gates()
            if wake is not None and any(r.gated_at is not None for r in runners):
                self._wait_gated(wake, budget)
                continue
            # One timer per tick covers the sleep and the next tick's steps:
            # it fires if that tick is not over `budget` after it was due.
            self._arm(max(wake - now, 0.0) + budget if wake is not None and budget else 0.0)
            self.bell.wait(None if wake is None else wake - time.monotonic())

    def _wait_gated(self, wake: float, budget: float) -> None:
        """Sleep in the watch, checking the gates in C, until Python work is
        due, a gate fails (its shield is due now) or the bell rings. Should
        the watch itself fail, every gate is dropped and the shields are
        stepped as usual: the clock never stops for it."""
        try:
            failed = self.watch.run(wake, self.bell.fd, budget, self.alarm)
        except Exception as err:
            self.watch_failed = True
            for runner in self.runners:
                if runner.gated_at is not None:
                    self._disarm(runner)
                    runner.due = 0.0
            self.writer.emit("error", "err", resource="clock", reason=f"calm watch: {type(err).__name__}: {err}")
            return
        if failed >= 0:
            self.gate_owner[failed].due = 0.0
        self._drop_stale_gates()
        for runner in self.runners:
            # A gate that passed is a reading made: the watchdog sees the shield alive.
            if runner.gated_at is not None:
                runner.shield.last_step = min((self.watch.checked(i) for i in runner.gates.values()
                                               if self.watch.armed(i)), default=runner.shield.last_step)

    def _drop_stale_gates(self) -> None:
        for runner in self.runners:
            # Released to its own thread, or stepped there since: its gates are stale.
            if runner.gated_at is not None and (not runner.on_clock or runner.steps != runner.gated_at):
                self._disarm(runner)

    def _gate(self, runner: ShieldRunner, now: float) -> None:
        """After a calm step on the clock: arm the shield's gates, if it has
        any, and step it only for its housekeeping (or when one fails)."""
        if self.watch_failed:
            return
        try:
            gates = runner.shield.calm_gates()
        except Exception as err:
            runner.record_error(err, now)
            return
        if not gates:
            return
        try:
            known = len(runner.gates)
            indices = [self._gate_index(runner, kind, path) for kind, path, *_ in gates]
            if len(runner.gates) > known:
                return       # a new quiet gate was not reset before this step: armed after the next
            for index, (_, _, limit, *second) in zip(indices, gates):
                self.watch.arm(index, limit, now + runner.shield.interval, *second)
        except (OSError, ValueError) as err:     # a file gone, a full watch: step as usual
            self._disarm(runner)
            runner.record_error(err, now)
            return
        runner.gated_at = runner.steps
        every = runner.shield.housekeeping
        runner.due = now + (every if self.status_every is None else min(every, self.status_every))

    def _gate_index(self, runner: ShieldRunner, kind: int, path: str) -> int:
        index = runner.gates.get((kind, path))
        if index is None:
            index = runner.gates[(kind, path)] = self.watch.add(kind, path, runner.shield.interval)
            self.gate_owner[index] = runner
        return index

    def _ungate(self, runner: ShieldRunner) -> None:
        """Before a gated shield's step on the clock: its gates stop, and the
        shield hears what they kept (the CPU readings it did not take)."""
        if runner.gated_at is None:
            return
        if runner.steps != runner.gated_at:     # stepped on its own thread since
            self._disarm(runner)
            return
        kept = {key: self.watch.kept(index) for key, index in runner.gates.items()}
        kept = {key: value for key, value in kept.items() if value is not None}
        self._disarm(runner)
        runner.shield.resume(kept)

    def _disarm(self, runner: ShieldRunner) -> None:
        for index in runner.gates.values():
            self.watch.disarm(index)
        runner.gated_at = None

    def _budget(self) -> float:
        """How long a tick may take: the shortest interval on the clock (0: none there)."""
        return min((r.shield.interval for r in self.runners if r.on_clock), default=0.0)

    def _arm(self, seconds: float) -> None:
        """The SIGALRM timer (0: none) that tells the main thread this clock is stuck."""
        if not self.alarm:
            return
        try:
            signal.setitimer(signal.ITIMER_REAL, seconds)
        except (OSError, ValueError):
            pass

    def disarm(self) -> None:
        """No SIGALRM for this clock any more (it is stopping)."""
        self.alarm, alarm = False, self.alarm
        if alarm:
            try:
                signal.setitimer(signal.ITIMER_REAL, 0.0)
            except (OSError, ValueError):
                pass

    def release(self) -> None:
        """The clock missed its deadline (on the main thread, from SIGALRM):
        every shield it is not stepping now goes to its own thread, and stays
        there until the clock ticks again. A gated shield is due within its
        interval there, as its gates were (not at its housekeeping)."""
        self.overdue = True
        for runner in self.runners:
            if runner.on_clock and runner.lock.acquire(blocking=False):
                try:
                    released = runner.on_clock
                    runner.on_clock = False
                    runner.due = min(runner.due, time.monotonic() + runner.shield.interval)
                finally:
                    runner.lock.release()
                if released:
                    runner.bell.ring()

    def stop(self) -> None:
        self.bell.ring()
        for runner in self.runners:
            runner.bell.ring()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` for the clock and every shield thread; True if all ended."""
        deadline = time.monotonic() + timeout
        for thread in [self.thread] + [r.thread for r in self.runners]:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in [self.thread] + [r.thread for r in self.runners])

    def close(self) -> None:
        """After join: the bells, once no thread is left to ring one (a
        stuck clock keeps them all: a closed number could be reused)."""
        if self.thread.is_alive():
            return
        self.watch.close()
        self.bell.close()
        for runner in self.runners:
            if not runner.thread.is_alive():
                runner.bell.close()


class Daemon:
    def __init__(self, config, writer, config_path: str | None = None,
                 dry_run: bool = False, proc_root: str = "/proc", sys_root: str = "/sys"):
        self.config = config
        self.writer = writer
        self.config_path = config_path
        self.force_dry_run = dry_run
        self.proc_root = proc_root
        self.sys_root = sys_root
        self.hooks = Hooks(config.hooks, writer)
        self.engine = Engine(writer, self.hooks, proc_root=proc_root)
        self.notifier = notify.Notifier.from_env()
        self.pinger = notify.WatchdogPinger.from_env(self.notifier)
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.wake = threading.Event()        # set by signal handlers
        self.clock: Clock | None = None
        self.clock_late = threading.Event()  # set by SIGALRM: the clock missed a tick
        self.shields_stop = threading.Event()

    @property
    def dry_run(self) -> bool:
        return self.force_dry_run or self.config.dry_run

    # ------------------------------------------------------------- building
    def build_shields(self) -> list:
        rules = RuleSet(self.config)
        self.engine.rules, self.engine.dry_run = rules, self.dry_run
        context = Context(config=self.config, rules=rules,
                          proc_root=self.proc_root, sys_root=self.sys_root)
        shields = []
        for name in enabled_shields(self.config):
            cls = shield_class(name)
            if cls is None:
                self.writer.emit("error", "err", resource=name,
                                 reason="this shield is not available in this build")
                continue
            try:
                shields.append(cls(context))
            except Exception as err:
                self.writer.emit("error", "err", resource=name,
                                 reason=f"cannot start: {type(err).__name__}: {err}")
        return shields

    def start_shields(self) -> None:
        self.shields_stop = threading.Event()
        metrics = self.config.metrics
        every = metrics.interval if metrics.textfile else None
        self.clock = Clock(self.build_shields(), self.engine, self.writer, self.shields_stop, every,
                           late=self.clock_late, alarm=True)
        self.clock.start()

    def ready(self) -> None:
        """READY=1, then the watchdog pings on the clock (never before READY)."""
        self.notifier.ready(self.one_line_status())
        if self.clock is not None:
            self.clock.pinger = self.pinger
            self.clock.bell.ring()

    @property
    def shields(self) -> list:
        return self.clock.shields if self.clock is not None else []

    def stop_shields(self) -> None:
        clock, self.clock = self.clock, None
        if clock is None:
            return
        self.shields_stop.set()
        clock.stop()
        clock.join(STOP_GRACE)
        clock.disarm()                 # its timer must not release the next clock's shields
        for runner in clock.runners:
            # Closed only when no thread can be inside its step: a shield stuck
            # in the kernel keeps its descriptors (the thread is a daemon one).
            if not runner.thread.is_alive() and not (runner.on_clock and clock.thread.is_alive()):
                runner.shield.close()
        clock.close()

    # ------------------------------------------------------------- hygiene
    def harden(self) -> dict:
        """Protect the daemon itself; returns what was achieved, for the start record."""
        cfg = self.config.daemon
        done = {"fds": raise_fd_limit()}
        threading.stack_size(THREAD_STACK)
        gc.freeze()
        done["oom_score_adj"] = cfg.oom_score_adj if _try(kernel.set_oom_score_adj, cfg.oom_score_adj) else "failed"
        if cfg.nice:
            done["nice"] = cfg.nice if _try(os.setpriority, os.PRIO_PROCESS, 0, cfg.nice) else "failed"
        if cfg.lock_memory:
            # Start-up touched pages of the libraries it will not run again
            # (the YAML parser, the compiler): given back, or they would stay
            # pinned. What the daemon runs from now on is faulted in and
            # locked as it runs, the kill path by its rehearsal.
            kernel.release_file_pages()
        rehearse_kill_path()
        if cfg.lock_memory:
            done["mlock"] = "yes" if kernel.lock_memory() else "failed"
        return done

    # ------------------------------------------------------------- running
    def run(self) -> int:
        hardening = self.harden()
        features = kernel.features(self.proc_root)
        self.install_signals()
        self.start_shields()
        self.writer.emit("start", "info", version=__version__, config=self.config.source,
                         monitors=",".join(s.name for s in self.shields) or "none",
                         dry_run="yes" if self.dry_run else "no",
                         **_flat(features), **hardening)
        hidden = kernel.hidden_processes(self.proc_root)
        if hidden:
            # Not fatal (its own user's processes are still watched), but
            # every other user's hog would be invisible: say so at once.
            self.writer.emit("error", "err", reason=f"{hidden}; give the daemon CAP_SYS_PTRACE "
                             "(the shipped unit does) or run it without hidepid")
        self.warn_about(self.config)
        self.ready()
        self._start_metrics()
        # The main thread sleeps until a signal wakes it: the clock sends the
        # watchdog pings. Only when the clock misses a tick (SIGALRM, armed by
        # the clock itself) does this thread ping, or withhold the pings and
        # say which shield stalled, until the clock ticks again.
        while not self.stopping.is_set():
            timeout = None
            if self.clock_late.is_set() and self.pinger.enabled:
                now = time.monotonic()
                self.pinger.tick(self.shields, now)
                timeout = self.pinger.sleep_for(now)
            self.wake.wait(timeout)
            self.wake.clear()
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.notifier.reloading()
                self.reload()
                self.ready()
        self.notifier.stopping()
        self.stop_shields()
        self.engine.stop()
        self.hooks.close()
        self.writer.emit("stop", "info", reason=self.stop_reason)
        self.notifier.close()
        return 0

    def _start_metrics(self) -> None:
        """The metrics thread, once a metrics file is configured (no thread,
        no wake-up while none is)."""
        if self.config.metrics.textfile and not getattr(self, "metrics_thread", None):
            self.metrics_thread = threading.Thread(target=self._write_metrics, name="oork-metrics",
                                                   daemon=True)
            self.metrics_thread.start()

    def _write_metrics(self) -> None:
        """The .prom file, every metrics.interval while one is configured
        (the configuration is read again at each turn: a reload may set it)."""
        kernel.name_thread("oork-metrics")
        said = ""
        while not self.stopping.wait(self.config.metrics.interval):
            path = self.config.metrics.textfile
            if not path:
                continue
            clock = self.clock
            rows = clock.last_status if clock is not None else []
            samples = (metrics.status_samples(rows) + self.engine.counters.samples()
                       + getattr(self.writer, "counters", metrics.Counters()).samples()
                       + metrics.process_samples(self.proc_root))
            try:
                metrics.write_textfile(path, metrics.render(samples))
                said = ""
            except OSError as err:
                if str(err) != said:          # the same failure is said once
                    said = str(err)
                    self.writer.emit("error", "err", path=path, reason=f"cannot write metrics: {err}")

    def one_line_status(self) -> str:
        names = ",".join(s.name for s in self.shields) or "nothing"
        return f"watching {names}{' (dry run)' if self.dry_run else ''}"

    def install_signals(self) -> None:
        self.stop_reason = "signal"

        def on_stop(signum, _frame):
            self.stop_reason = signal.Signals(signum).name
            self.stopping.set()
            self.wake.set()

        def on_hup(_signum, _frame):
            self.reload_requested.set()
            self.wake.set()

        def on_alarm(_signum, _frame):
            # The clock missed its deadline: its other shields go to their
            # own threads, and the watchdog pings come from here meanwhile.
            clock = self.clock
            if clock is not None:
                clock.release()
            self.clock_late.set()
            self.wake.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGALRM, on_alarm)

    def reload(self) -> None:
        """SIGHUP: a valid file replaces the configuration whole; a bad one is refused."""
        if self.config_path is None:
            self.writer.emit("reload", "info", config="embedded default", result="unchanged")
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as err:
            self.writer.emit("error", "err", config=self.config_path,
                             reason=f"reload refused, running configuration kept: {err}")
            return
        self.warn_about(new)
        self.stop_shields()
        # The old clock, its runners, threads and shields hold one another in
        # cycles: collect them now, while nothing is urgent, rather than let
        # each reload's garbage wait for a rare full collection (a soak of
        # 34 reloads grew by 1.2 MiB without this, by 0.3 MiB in 80 with it).
        gc.collect()
        self.config = new
        self.hooks.configure(new.hooks)
        self.start_shields()
        self._start_metrics()
        self.writer.emit("reload", "info", config=self.config_path,
                         monitors=",".join(s.name for s in self.shields) or "none",
                         dry_run="yes" if self.dry_run else "no")

    @staticmethod
    def warn_about(config) -> None:
        """Valid but unsafe settings, once per configuration, on stderr (the
        operator's terminal or the journal), as `check-config` prints them."""
        for warning in config_warnings(config):
            sys.stderr.write(f"oorkiller: {warning}\n")
        sys.stderr.flush()


def _leave_alarm_to_main() -> None:
    """Block SIGALRM in the calling thread (and the threads it starts, the
    engine's workers among them): the kernel then always delivers the
    clock's timer to the main thread, whose wait it interrupts to run the
    handler; one delivered to another thread would only be handled when the
    main thread next woke."""
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    except (OSError, ValueError):
        pass


def _try(fn, *args) -> bool:
    try:
        result = fn(*args)
    except OSError:
        return False
    return result is not False


def _flat(features: dict) -> dict:
    """Feature values as record text: yes/no, `memory,cpu` for the PSI files found."""
    def text(value):
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, dict):
            return ",".join(k for k, v in value.items() if v) or "none"
        if isinstance(value, (list, tuple)):
            return "+".join(map(str, value)) or "none"
        return value
    return {k: text(v) for k, v in features.items()}
