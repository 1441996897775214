"""The CPU shield: when the CPUs stay saturated, kill what creates the load.

Every step reads the machine (held fds): the busy share of all CPUs from
/proc/stat, the 1-minute load average per CPU from /proc/loadavg and,
optionally, PSI `some avg10` from /proc/pressure/cpu. Each configured level
(0 = not checked) must hold at every reading for `for` seconds in a row; a
shorter burst never triggers.

Only while every condition holds does the shield sample the processes
(`ProcTable.sample_cpu`, one pread per process), so an idle or merely busy
machine costs three small reads per interval. The samples of the stretch form
the window (shares.UsageWindow), so once the conditions have held for `for`,
the culprit is measured over exactly that time: what each process used in it,
not its lifetime total. A unit (process, process group or cgroup, `kill:`) is
killed only if it used at least `min_share` of all CPUs over the window.

After an action is over, a `cooldown` passes and the conditions must hold a
whole `for` again: the load average lags by a minute, and the next decision
must see the machine as it is without the last victim.
"""
from __future__ import annotations

import threading
import time

from oorkiller.judge import shares
from oorkiller.proc._proctable import ProcTable
from oorkiller.proc._readers import HeldFile, cpu_busy_fraction, parse_cpu_stat, parse_loadavg, parse_psi
from oorkiller.act.engine import KILL_WAIT
from oorkiller.shields.process import HZ, ProcessMonitor
from oorkiller.quantities import format_percent

CANDIDATE_WINDOW = 1.0     # seconds `oorkiller candidates` measures over
STATUS_WINDOW = 0.25       # seconds `oorkiller status` measures busy over when it has no history
FOLLOW_EXTRA = 2.0         # seconds a group is followed beyond its action's longest time


class CpuMonitor(ProcessMonitor):
    name = "cpu"
    HOLD = "stat"

    def __init__(self, context):
        super().__init__(context)
        root = context.proc_root
        self.stat_file = HeldFile(f"{root}/stat")
        self.loadavg_file = HeldFile(f"{root}/loadavg")
        self.psi_file = self.open_psi("cpu", self.cfg.pressure.some_avg10)
        self.window = shares.UsageWindow(self.cfg.for_)
        self.times = parse_cpu_stat(self.stat_file.read())
        self.reading: dict | None = None         # the last judged reading
        self.held_since: float | None = None     # when every condition began to hold
        self.action = None                       # our action under way, if any
        self.cooldown_until = 0.0
        self.said_nothing = False                # nothing-to-kill recorded in this stretch

    @property
    def cfg(self):
        return self.context.config.cpu

    @property
    def interval(self) -> float:
        return self.cfg.interval

    # ------------------------------------------------------------- reading
    def read(self, everything: bool = True) -> dict:
        """busy (0..1) since the previous reading, load per CPU, PSI some avg10.
        With everything=False, load and PSI are read only when the busy share
        reaches its level (or is not checked): an idle step is one pread."""
        times = parse_cpu_stat(self.stat_file.read())
        busy = cpu_busy_fraction(self.times, times)
        self.times = times
        ncpu = max(times.ncpu, 1)
        reading = {"busy": busy, "load_per_cpu": None, "psi_some_avg10": None, "ncpu": ncpu}
        if everything or busy >= self.cfg.usage:
            self._read_load(reading)
        self.reading = reading
        return reading

    def _read_load(self, reading: dict) -> None:
        reading["load_per_cpu"] = parse_loadavg(self.loadavg_file.read())[0] / reading["ncpu"]
        if self.psi_file is not None:
            reading["psi_some_avg10"] = parse_psi(self.psi_file.read()).some_avg10

    def conditions(self, reading: dict) -> tuple[bool, str]:
        """(every configured level is reached, the reason text)."""
        cfg, parts = self.cfg, []
        if cfg.usage > 0:
            if reading["busy"] < cfg.usage:
                return False, ""
            parts.append(f"CPU busy {format_percent(reading['busy'])} >= {format_percent(cfg.usage)}")
        if cfg.load_per_cpu > 0:
            if reading["load_per_cpu"] is None or reading["load_per_cpu"] < cfg.load_per_cpu:
                return False, ""
            parts.append(f"load {reading['load_per_cpu']:.2f}/CPU >= {cfg.load_per_cpu:g}")
        limit = cfg.pressure.some_avg10
        if limit > 0:
            psi = reading["psi_some_avg10"]
            if psi is None or psi < limit:
                return False, ""
            parts.append(f"CPU PSI some avg10 {psi:.2f} >= {limit:g}")
        if not parts:
            return False, ""       # nothing configured: nothing can hold
        return True, ", ".join(parts) + f" for {cfg.for_:g}s"

    # ------------------------------------------------------------- stepping
    def step(self, now: float) -> float:
        reading = self.read(everything=False)
        waiting = self.busy_for(now)
        if waiting is not None:
            return waiting
        holding, reason = self.conditions(reading)
        if not holding:
            self._end_stretch()
            return self.interval
        if self.held_since is None:
            self.held_since = now
        self.sample(self.window, now)
        if now - self.held_since >= self.cfg.for_:
            self._decide(reason)
        return self.interval

    def _end_stretch(self) -> None:
        if self.held_since is not None:
            self.held_since = None
            self.window.clear()
            self.release_table()         # a healthy machine costs no process table
        self.said_nothing = False

    def _action_over(self, now: float) -> None:
        self.action = None
        self.cooldown_until = now + self.cfg.cooldown
        self._end_stretch()          # the next decision needs a whole fresh window

    # ------------------------------------------------------------- measuring
    def sample(self, window: shares.UsageWindow, now: float) -> None:
        """One sample of every candidate's CPU ticks into `window`."""
        added, _ = self.refresh_table()
        self.table.sample_cpu()
        counters = {p.serial: p.cpu_ticks for p in self.table.entries() if p.eligible}
        window.add(now, counters, self.birth_times(added))

    def capacity(self, window: shares.UsageWindow) -> float:
        """Ticks all CPUs could have run over the window."""
        return (self.reading or self.read())["ncpu"] * window.seconds * HZ

    def min_share(self) -> int:
        return int(round(self.cfg.min_share * 1000))

    # ------------------------------------------------------------- acting
    def _decide(self, reason: str) -> None:
        choice = shares.choose(self.cfg.kill, self.table.entries(), self.window.usage(),
                               self.capacity(self.window), self.min_share(),
                               self.context.self_pid, self.cgroup_of)
        if choice is None:
            self._nothing_to_kill(reason)
            return
        unit = choice.unit
        members = [unit.leader] + [p for p in unit.members if p is not unit.leader]
        share = format_percent(unit.share / 1000)
        fields = {"user": unit.leader.uid, "score": choice.candidate.score, "share": share,
                  "window": f"{self.window.seconds:.0f}s"}
        action = self.submit(members, reason, fields, term_timeout=self.cfg.term_timeout,
                             unit_kind=unit.kind, unit_key=unit.key, refused=choice.fallback_reason,
                             measure=lambda: {"share": share})
        if action is None:
            return                               # all gone already, or one under way
        self.action = action
        self.state = "acting"
        if unit.kind != "process" and not self.context.dry_run:
            self._follow(unit, action, {t.pid for t in action.targets})

    def _follow(self, unit, action, known_pids) -> None:
        """Catch what the group forks after the choice, on a thread of its own."""
        context = self.context
        longest = self.cfg.term_timeout + KILL_WAIT + FOLLOW_EXTRA

        def run():
            late = shares.follow_unit(lambda: ProcTable(context.proc_root, context.self_pid),
                                      context.rules, unit, known_pids, action.done, longest)
            if late:
                context.writer.emit(
                    "kill", "warning", resource=self.name, pid=unit.leader.pid,
                    name=unit.leader.comm, unit=unit.kind, group=unit.key, processes=late,
                    signal="SIGKILL", reason=f"joined {unit.kind} {unit.key} after it was chosen",
                    dry_run="no")

        threading.Thread(target=run, name="cpu-follow", daemon=True).start()

    def _nothing_to_kill(self, reason: str) -> None:
        if self.said_nothing:
            return                               # once per stretch, not per reading
        self.said_nothing = True
        self.context.writer.emit(
            "nothing-to-kill", "info", resource=self.name,
            reason=f"{reason}; no unit used {format_percent(self.cfg.min_share)} of the CPUs "
                   f"(min_share) over {self.window.seconds:.0f}s",
            dry_run="yes" if self.context.dry_run else "no")

    # ------------------------------------------------------------- reporting
    def status(self) -> dict:
        reading = self.reading
        if reading is None:                      # a fresh monitor (`oorkiller status`)
            time.sleep(STATUS_WINDOW)
            reading = self.read()
        if reading["load_per_cpu"] is None:
            self._read_load(reading)
        cfg = self.cfg
        held = time.monotonic() - self.held_since if self.held_since is not None else 0.0
        out = {
            "resource": self.name, "state": self.state,
            "busy_pct": round(reading["busy"] * 100, 1), "usage_level_pct": round(cfg.usage * 100, 1),
            "load_per_cpu": round(reading["load_per_cpu"], 2), "load_per_cpu_level": cfg.load_per_cpu,
            "psi_some_avg10": reading["psi_some_avg10"], "psi_level": cfg.pressure.some_avg10,
            "ncpu": reading["ncpu"], "held_for": round(held, 1), "for": cfg.for_,
            "min_share_pct": round(cfg.min_share * 100, 1),
        }
        return out

    def candidates(self, top: int) -> dict:
        """Units ranked by what they used over a short window measured now."""
        window = shares.UsageWindow(CANDIDATE_WINDOW)
        self.read()
        self.sample(window, time.monotonic())
        time.sleep(CANDIDATE_WINDOW)
        self.read()
        self.sample(window, time.monotonic())
        ranked, excluded = shares.ranking(self.cfg.kill, self.table.entries(), window.usage(),
                                          self.capacity(window), self.min_share(),
                                          self.context.self_pid, self.cgroup_of)
        return {"ranked": ranked[:top], "excluded": excluded}

    def close(self) -> None:
        self.stat_file.close()
        self.loadavg_file.close()
        if self.psi_file is not None:
            self.psi_file.close()
        super().close()
