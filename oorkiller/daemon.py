"""The daemon: one thread per shield, the action engine, signals, reload.

Each shield's thread steps it and hands the decisions it returns to the
engine; the engine carries them out on its own workers, so no shield's
watching waits for an action.

Start-up order matters: everything is imported and built first, then the
process hardens itself (gc.freeze, small thread stacks, mlockall, oom_score_adj
−1000, nice) and only then starts its threads, so the locked memory is small
and nothing is paged in on the way to a kill.
"""
from __future__ import annotations

import gc
import os
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
from oorkiller.proc._proctable import raise_fd_limit
from oorkiller.proc.targets import Target
from oorkiller.record import metrics
from oorkiller.shields import enabled_shields, shield_class
from oorkiller.shields.base import Context

THREAD_STACK = 256 << 10     # with mlockall(MCL_FUTURE) every stack is locked whole
ERROR_REPEAT = 60.0          # the same shield error is recorded at most this often
STOP_GRACE = 0.8             # SIGTERM must stop the daemon within 1 s
# Shields whose step is one pread of a held file, taking a process table only
# above their levels: they share one thread, one wake-up a second for all.
# Memory (its adaptive cadence), disk (statvfs may wait on a file system) and
# network (it asks Open vSwitch) keep a thread each.
SHARED_CLOCK = ("cpu", "tasks", "files", "conntrack")
SHARED_SLACK = 0.05          # a shared shield due this soon is stepped with the others


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


class ShieldThread:
    """Steps its shields, each when it is due, and hands their decisions to
    the engine. Most shields have a thread of their own; the cheap ones that
    read one held file per step share one (SHARED_CLOCK), so a calm machine
    wakes the daemon once for all of them."""

    def __init__(self, shields, engine, writer, stopping: threading.Event,
                 status_every: float | None = None):
        self.shields = list(shields) if isinstance(shields, (list, tuple)) else [shields]
        self.engine = engine
        self.writer = writer
        self.stopping = stopping
        self.status_every = status_every   # seconds between status snapshots (metrics), None: none
        self.statuses: dict[str, list[dict]] = {}
        self.status_at = float("-inf")
        self.wake = threading.Event()   # set to cut a sleep short (stop, reload)
        self.last_error: dict[str, tuple] = {}
        name = self.shields[0].name if len(self.shields) == 1 else "clock"
        self.thread = threading.Thread(target=self._loop, name=f"oork-{name}", daemon=True)

    @property
    def shield(self):
        return self.shields[0]

    @property
    def last_status(self) -> list[dict]:
        return [row for rows in self.statuses.values() for row in rows]

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        kernel.name_thread(self.thread.name)
        due = {id(shield): 0.0 for shield in self.shields}
        while not self.stopping.is_set():
            for shield in self.shields:
                now = time.monotonic()
                if now >= due[id(shield)] - SHARED_SLACK:    # due now, or about to be: one wake-up
                    due[id(shield)] = now + self._step(shield, now)
            self._snapshot(time.monotonic())
            self.wake.wait(max(min(due.values()) - time.monotonic(), 0.0))
            self.wake.clear()

    def _step(self, shield, now: float) -> float:
        """One step of `shield`; returns the seconds until its next one."""
        try:
            step = shield.step(now)
            for decision in step.decisions:
                self.engine.submit(decision)
            sleep = step.sleep
        except Exception as err:   # a reading error must not end the watch
            self._record_error(shield, err, now)
            sleep = shield.interval
        shield.last_step = time.monotonic()
        return sleep

    def _snapshot(self, now: float) -> None:
        """The shields' status rows for the metrics, taken on their own
        thread (a shield's readers are never used from another)."""
        if self.status_every is None or now - self.status_at < self.status_every:
            return
        self.status_at = now
        for shield in self.shields:
            try:
                self.statuses[shield.name] = shield.status()
            except Exception:
                self.statuses[shield.name] = []

    def _record_error(self, shield, err: Exception, now: float) -> None:
        text = f"{type(err).__name__}: {err}"
        last_text, last_at = self.last_error.get(shield.name, ("", 0.0))
        if text == last_text and now - last_at < ERROR_REPEAT:
            return
        self.last_error[shield.name] = (text, now)
        self.writer.emit("error", "err", resource=shield.name, reason=text)

    def stop(self) -> None:
        self.wake.set()


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
        self.threads: list[ShieldThread] = []
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
        built = self.build_shields()
        shared = [s for s in built if s.name in SHARED_CLOCK]
        alone = [[s] for s in built if s.name not in SHARED_CLOCK]
        self.threads = [ShieldThread(group, self.engine, self.writer, self.shields_stop, every)
                        for group in alone + ([shared] if shared else [])]
        for t in self.threads:
            t.start()

    @property
    def shields(self) -> list:
        return [s for t in self.threads for s in t.shields]

    def stop_shields(self) -> None:
        self.shields_stop.set()
        for t in self.threads:
            t.stop()
        deadline = time.monotonic() + STOP_GRACE
        for t in self.threads:
            t.thread.join(max(0.0, deadline - time.monotonic()))
        for t in self.threads:
            if not t.thread.is_alive():
                for shield in t.shields:
                    shield.close()
        self.threads = []

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
        self.notifier.ready(self.one_line_status())
        self._start_metrics()
        # The main thread sleeps until a signal wakes it, or until the next
        # watchdog ping is due: an idle daemon costs no wake-ups here.
        while not self.stopping.is_set():
            self.pinger.tick(self.shields, time.monotonic())
            self.wake.wait(self.pinger.sleep_for(time.monotonic()))
            self.wake.clear()
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.notifier.reloading()
                self.reload()
                self.notifier.ready(self.one_line_status())
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
            rows = [row for t in self.threads for row in t.last_status]
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

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

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
