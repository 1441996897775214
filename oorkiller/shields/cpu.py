"""The CPU shield: when the CPUs stay saturated, kill what creates the load.

Every step is one pread of /proc/stat (held fd): the busy share of all CPUs
since the last step and `procs_running`, the tasks runnable at this moment;
optionally PSI `some avg10` from /proc/pressure/cpu. The machine is judged
as it is now: the run queue is the average of `procs_running` over the last
`for` seconds, per CPU, never the kernel's one-minute load average (which
stays high for a minute after a storm has ended, and would have a merely busy
machine's processes killed). Every configured level (the busy share, the run
queue's average over the last `for`, PSI) must hold at every reading for
`for` seconds in a row; a shorter burst never triggers. After a kill the
run queue's history starts again, so the next decision sees the machine
without the victim.

Only while the conditions hold does the shield sample the processes
(`ProcTable.sample_cpu`, one pread per process): what each used over the
window, and how often it was runnable. For each unit the shield predicts the
machine without it: the run queue less the unit's runnable tasks (at least
the CPUs it kept busy), and a busy share no higher than what the remaining
runnable tasks can keep busy. A unit whose removal brings a level back is
*enough*; the one chooser (judge/choice.py) prefers it, so a fork storm's
process group goes before a lone busy process in another session that the
scheduler gives as much CPU. The window, `min_share` and the cooldown are
the windowed base's (shields/windowed.py).
"""
from __future__ import annotations

import time

from oorkiller.judge import shares
import collections

from oorkiller.proc._calm import CPU_BUSY
from oorkiller.proc._readers import HeldFile, cpu_busy_fraction, parse_cpu_stat, parse_loadavg, parse_psi
from oorkiller.quantities import format_percent
from oorkiller.shields.base import Step
from oorkiller.shields.process import HZ
from oorkiller.shields.windowed import CANDIDATE_WINDOW, WindowedShield

STATUS_WINDOW = 0.25       # seconds `oorkiller status` measures busy over when it has no history


class CpuShield(WindowedShield):
    name = "cpu"
    HOLD = "stat"

    def __init__(self, context):
        super().__init__(context)
        root = context.proc_root
        self.stat_file = HeldFile(f"{root}/stat")
        self.loadavg_file = HeldFile(f"{root}/loadavg")
        self.psi_file = self.open_psi("cpu", self.cfg.pressure.some_avg10)
        self.window = shares.UsageWindow(self.cfg.for_)          # serial -> CPU ticks
        self.runnable = shares.UsageWindow(self.cfg.for_)        # serial -> samples it was runnable
        self.runnable_seen: dict[int, int] = {}                  # serial -> samples it was runnable
        self.recent = collections.deque()        # (at, busy, runnable tasks) over the last `for`
        self.times = parse_cpu_stat(self.stat_file.read())
        self.reading: dict | None = None         # the last judged reading
        self.held_since: float | None = None     # when every condition began to hold

    @property
    def cfg(self):
        return self.context.config.cpu

    @property
    def windows(self) -> list:
        return [self.window, self.runnable]

    # ------------------------------------------------------------- reading
    def read(self, now: float | None = None, everything: bool = True) -> dict:
        """busy (0..1) since the previous reading, the tasks runnable now (this
        reader excluded), and their average per CPU over the last `for`; PSI
        some avg10 when configured (with everything=False, only once the busy
        share reaches its level: an idle step is one pread)."""
        now = time.monotonic() if now is None else now
        times = parse_cpu_stat(self.stat_file.read())
        busy = cpu_busy_fraction(self.times, times)
        self.times = times
        ncpu = max(times.ncpu, 1)
        runnable = max(int(times.procs_running) - 1, 0)      # not counting ourselves
        self.recent.append((now, busy, runnable))
        while len(self.recent) > 1 and now - self.recent[0][0] > self.cfg.for_:
            self.recent.popleft()
        reading = {"busy": busy, "runnable": runnable, "ncpu": ncpu,
                   "runnable_per_cpu": self.mean(2) / ncpu, "psi_some_avg10": None}
        if self.psi_file is not None and (everything or busy >= self.cfg.usage):
            reading["psi_some_avg10"] = parse_psi(self.psi_file.read()).some_avg10
        self.reading = reading
        return reading

    def calm_gates(self) -> list | None:
        """While the busy share stays under `usage`, the conditions cannot
        all hold: every step would be calm. (Without a `usage` level, no gate.)"""
        if self.cfg.usage <= 0 or self.held_since is not None or self._table is not None:
            return None
        return [(CPU_BUSY, self.stat_file.path, self.cfg.usage)]

    def resume(self, kept: dict) -> None:
        """The gate's last reading becomes the one the next busy share is
        measured from, and its readings join the run queue's history: the
        step judges the last second, over the samples it would have taken."""
        gate = kept.get((CPU_BUSY, self.stat_file.path))
        if gate is not None:
            previous, history = gate
            self.times = parse_cpu_stat(previous)
            self.recent.extend(history)

    def mean(self, column: int) -> float:
        """The mean busy share (1) or runnable tasks (2) over the last `for`."""
        return sum(r[column] for r in self.recent) / len(self.recent) if self.recent else 0.0

    def conditions(self, reading: dict) -> tuple[bool, str]:
        """(every configured level is reached, the reason text)."""
        cfg, parts = self.cfg, []
        if cfg.usage > 0:
            if reading["busy"] < cfg.usage:
                return False, ""
            parts.append(f"CPU busy {format_percent(reading['busy'])} >= {format_percent(cfg.usage)}")
        if cfg.runnable_per_cpu > 0:
            if reading["runnable_per_cpu"] < cfg.runnable_per_cpu:
                return False, ""
            parts.append(f"runnable {reading['runnable_per_cpu']:.1f}/CPU >= {cfg.runnable_per_cpu:g}")
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
    def step(self, now: float) -> Step:
        reading = self.read(now, everything=False)
        if self.waiting_for_action(now):
            return self.wait_step(now)
        holding, reason = self.conditions(reading)
        if not holding:
            self.end_stretch()
            return Step(self.interval)
        if self.held_since is None:
            self.held_since = now
        self.sample(self.window, now)
        if now - self.held_since < self.cfg.for_:
            return Step(self.interval)
        decision = self.decide(self.window.usage(), self.capacity(self.window), reason,
                               {"window": f"{self.window.seconds:.0f}s"}, nothing=self.nothing_reason())
        return Step(self.interval, [decision] if decision is not None else [])

    def end_stretch(self) -> None:
        self.held_since = None
        self.runnable_seen.clear()
        super().end_stretch()

    def action_over(self, now: float) -> None:
        self.recent.clear()           # judge the machine without the last victim
        super().action_over(now)

    # ------------------------------------------------------------- predicting
    def predict(self, unit) -> tuple[bool, str]:
        """(enough, the reading without `unit`): the run queue less its
        runnable tasks (at least the CPUs it kept busy), and a busy share no
        higher than what the tasks left can keep busy."""
        cfg, ncpu = self.cfg, (self.reading or self.read())["ncpu"]
        intervals = max(len(self.runnable.samples) - 1, 1)
        seconds = max(self.window.seconds, 1e-9)
        counts = self.runnable.usage()
        its_runnable = max(sum(counts.get(p.serial, 0) for p in unit.members) / intervals,
                           unit.used / (HZ * seconds))
        left = max(self.mean(2) - its_runnable, 0.0)
        busy_after = min(self.mean(1), left / ncpu)
        runnable_after = left / ncpu
        enough = ((cfg.usage > 0 and busy_after < cfg.usage)
                  or (cfg.runnable_per_cpu > 0 and runnable_after < cfg.runnable_per_cpu))
        return enough, f"busy {format_percent(busy_after)}, runnable {runnable_after:.1f}/CPU"

    # ------------------------------------------------------------- measuring
    def sample(self, window: shares.UsageWindow, now: float) -> None:
        """One sample of every candidate's CPU ticks into `window`."""
        added, _ = self.refresh_table()
        self.table.sample_cpu()
        eligible = [p for p in self.table.entries() if p.eligible]
        born = self.birth_times(added)
        window.add(now, {p.serial: p.cpu_ticks for p in eligible}, born)
        if window is self.window:
            seen = self.runnable_seen
            for p in eligible:
                seen[p.serial] = seen.get(p.serial, 0) + p.running
            self.runnable.add(now, {p.serial: seen[p.serial] for p in eligible}, born)

    def capacity(self, window: shares.UsageWindow) -> float:
        """Ticks all CPUs could have run over the window."""
        return (self.reading or self.read())["ncpu"] * window.seconds * HZ

    def nothing_reason(self) -> str:
        return (f"no unit used {format_percent(self.cfg.min_share)} of the CPUs (min_share) "
                f"over {self.window.seconds:.0f}s")

    # ------------------------------------------------------------- reporting
    def status(self) -> list[dict]:
        reading = self.reading
        if reading is None:                      # a fresh shield (`oorkiller status`)
            time.sleep(STATUS_WINDOW)
            reading = self.read()
        cfg = self.cfg
        load1 = parse_loadavg(self.loadavg_file.read())[0]   # shown, never judged
        held = time.monotonic() - self.held_since if self.held_since is not None else 0.0
        out = {
            "resource": self.name, "state": self.state,
            "busy_pct": round(reading["busy"] * 100, 1), "usage_level_pct": round(cfg.usage * 100, 1),
            "runnable": reading["runnable"], "runnable_per_cpu": round(reading["runnable_per_cpu"], 2),
            "runnable_per_cpu_level": cfg.runnable_per_cpu, "loadavg1": load1,
            "psi_some_avg10": reading["psi_some_avg10"], "psi_level": cfg.pressure.some_avg10,
            "ncpu": reading["ncpu"], "held_for": round(held, 1), "for": cfg.for_,
            "min_share_pct": round(cfg.min_share * 100, 1),
        }
        return [out]

    def candidates(self, top: int) -> dict:
        """Units ranked by what they used over a short window measured now."""
        self.window = window = shares.UsageWindow(CANDIDATE_WINDOW)
        self.runnable = shares.UsageWindow(CANDIDATE_WINDOW)
        for _ in range(5):                       # five looks at the run queue over the window
            self.read()
            self.sample(window, time.monotonic())
            time.sleep(CANDIDATE_WINDOW / 4)
        ranked, excluded, choice = self.ranked(window.usage(), self.capacity(window))
        return {"ranked": ranked[:top], "excluded": excluded, "choice": choice}

    def close(self) -> None:
        self.stat_file.close()
        self.loadavg_file.close()
        if self.psi_file is not None:
            self.psi_file.close()
        super().close()
