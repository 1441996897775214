"""The CPU shield: when the CPUs stay saturated, kill what creates the load.

Every step reads the machine (held fds): the busy share of all CPUs from
/proc/stat, the 1-minute load average per CPU from /proc/loadavg and,
optionally, PSI `some avg10` from /proc/pressure/cpu. Each configured level
(0 = not checked) must hold at every reading for `for` seconds in a row; a
shorter burst never triggers.

Only while every condition holds does the shield sample the processes
(`ProcTable.sample_cpu`, one pread per process), so an idle or merely busy
machine costs three small reads per interval; the window, `min_share`, the
choice of the unit and the cooldown are the windowed base's
(shields/windowed.py).
"""
from __future__ import annotations

import time

from oorkiller.judge import shares
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
        self.window = shares.UsageWindow(self.cfg.for_)
        self.times = parse_cpu_stat(self.stat_file.read())
        self.reading: dict | None = None         # the last judged reading
        self.held_since: float | None = None     # when every condition began to hold

    @property
    def cfg(self):
        return self.context.config.cpu

    @property
    def windows(self) -> list:
        return [self.window]

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
    def step(self, now: float) -> Step:
        reading = self.read(everything=False)
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
                               {"window": f"{self.window.seconds:.0f}s"},
                               nothing=f"no unit used {format_percent(self.cfg.min_share)} of the CPUs "
                                       f"(min_share) over {self.window.seconds:.0f}s")
        return Step(self.interval, [decision] if decision is not None else [])

    def end_stretch(self) -> None:
        self.held_since = None
        super().end_stretch()

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

    # ------------------------------------------------------------- reporting
    def status(self) -> list[dict]:
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
        return [out]

    def candidates(self, top: int) -> dict:
        """Units ranked by what they used over a short window measured now."""
        window = shares.UsageWindow(CANDIDATE_WINDOW)
        self.read()
        self.sample(window, time.monotonic())
        time.sleep(CANDIDATE_WINDOW)
        self.read()
        self.sample(window, time.monotonic())
        ranked, excluded = self.ranked(window.usage(), self.capacity(window))
        return {"ranked": ranked[:top], "excluded": excluded}

    def close(self) -> None:
        self.stat_file.close()
        self.loadavg_file.close()
        if self.psi_file is not None:
            self.psi_file.close()
        super().close()
