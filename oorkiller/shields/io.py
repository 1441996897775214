"""The IO shield: when a disk stays saturated, kill the process behind it.

Every step is one pread of /proc/diskstats (held fd) and, when configured, of
/proc/pressure/io. Each watched device gets its IOPS, utilization and await
(definitions in oorkiller/diskstats.py); every level configured for it
(0 = not checked), and PSI `full avg10` when configured, must hold at every
reading for `for` seconds in a row. A device with no level of its own, under a
PSI level, holds while PSI holds and it does IO.

Only while some device holds are the processes sampled (`ProcTable.sample_io`,
one pread per process): each one's IO over the window is
Δ(read_bytes + write_bytes − cancelled_write_bytes), the bytes it made the
block layer move. When a device has held for `for`, the processes that did
the most IO (and, second, the most read/write system calls) are checked for a
file open on that device, its partitions or what is stacked on it (their
/proc/PID/fd targets' st_dev, or st_rdev for the device node itself); only
those few are scanned. A process's share is its bytes over the bytes the device
moved in the same window, so IO the kernel does for nobody in particular (the
journal) makes shares smaller, never larger. A unit (`kill:`, auto by default,
shares.choose) that reaches `min_share` is signalled; SIGTERM, then SIGKILL
after `term_timeout`; then a `cooldown`, and a whole fresh `for` (the
windowed base's, shields/windowed.py).
"""
from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

from oorkiller.judge import shares
from oorkiller.judge.decision import Notice
from oorkiller.proc import diskstats
from oorkiller.proc._readers import parse_psi
from oorkiller.proc.fds import open_files
from oorkiller.quantities import format_percent, format_size
from oorkiller.shields.base import Step
from oorkiller.shields.windowed import CANDIDATE_WINDOW, WindowedShield

STATUS_WINDOW = 0.25       # seconds `oorkiller status` measures over when it has no history
TOP_SCANNED = 16           # processes whose open files are looked at, per decision


@dataclass
class Watch:
    """One watched device: its levels and where its stretch stands."""
    name: str
    levels: object                       # config.IoDevice
    major: int = 0
    minor: int = 0
    reading: object = None               # the last diskstats.DeviceReading
    held_since: float | None = None
    reason: str = ""

    @property
    def dev(self) -> int:
        return os.makedev(self.major, self.minor)


class IoShield(WindowedShield):
    name = "io"
    HOLD = "io"

    def __init__(self, context):
        super().__init__(context)
        self.numbers: dict[tuple, set] = {}      # (name, major, minor) -> st_dev set
        self._open_readers()
        self.disks.sample(time.monotonic())      # the baseline of the first reading
        self.said_unconfigured = False
        self.deciding: Watch | None = None       # the device a choice is made for

    @property
    def cfg(self):
        return self.context.config.io

    @property
    def windows(self) -> list:
        return [self.window, self.calls, self.device_window]

    def _open_readers(self) -> None:
        cfg, root = self.cfg, self.context.proc_root
        self.disks = diskstats.DiskStats([d.device for d in cfg.devices], root, self.context.sys_root)
        self.psi_file = self.open_psi("io", cfg.pressure.full_avg10)
        self.watches: dict[str, Watch] = {}
        self.window = shares.UsageWindow(cfg.for_)          # serial -> IO bytes
        self.calls = shares.UsageWindow(cfg.for_)           # serial -> read/write syscalls
        self.device_window = shares.UsageWindow(cfg.for_)   # st_dev -> bytes the device moved
        self.device_bytes: dict[int, int] = {}              # st_dev -> bytes since we began
        self.psi = None

    def _anything_configured(self) -> bool:
        cfg = self.cfg
        return cfg.pressure.full_avg10 > 0 or any(
            d.iops > 0 or d.utilization > 0 or d.await_ms > 0 for d in cfg.devices)

    def levels_for(self, name: str):
        """The entry naming the device wins over '*'; None: not watched."""
        star = None
        for entry in self.cfg.devices:
            if entry.device == name:
                return entry
            if entry.device == "*":
                star = entry
        return star

    # ------------------------------------------------------------- reading
    def read(self, now: float) -> dict:
        """One diskstats (and PSI) reading: the devices' readings since the last."""
        readings = self.disks.sample(now)
        for name in self.disks.disappeared:
            self.watches.pop(name, None)          # gone: nothing to judge, no error
        for name, (major, minor) in self.disks.present().items():
            watch = self.watches.get(name)
            if watch is None or (watch.major, watch.minor) != (major, minor):
                watch = self.watches[name] = Watch(name, self.levels_for(name), major, minor)
        for name, reading in readings.items():
            self.watches[name].reading = reading
            self.device_bytes[reading.dev] = self.device_bytes.get(reading.dev, 0) + reading.bytes
        if self.psi_file is not None:
            self.psi = parse_psi(self.psi_file.read()).full_avg10
        return readings

    def conditions(self, levels, reading) -> tuple[bool, str]:
        """(every configured level holds for this device, the reason text)."""
        parts = []
        if levels.iops > 0:
            if reading.iops < levels.iops:
                return False, ""
            parts.append(f"iops {reading.iops:.0f} >= {levels.iops}")
        if levels.utilization > 0:
            if reading.util < levels.utilization:
                return False, ""
            parts.append(f"util {format_percent(reading.util)} >= {format_percent(levels.utilization)}")
        if levels.await_ms > 0:
            if reading.ios == 0 or reading.await_ms < levels.await_ms:
                return False, ""
            parts.append(f"await {reading.await_ms:.1f}ms >= {levels.await_ms:g}ms")
        limit = self.cfg.pressure.full_avg10
        if limit > 0:
            if self.psi is None or self.psi < limit:
                return False, ""
            if not parts and reading.ios == 0:
                return False, ""                  # PSI alone: only a device doing IO holds
            parts.append(f"IO PSI full avg10 {self.psi:.2f} >= {limit:g}")
        if not parts:
            return False, ""
        return True, f"{reading.name} " + ", ".join(parts) + f" for {self.cfg.for_:g}s"

    # ------------------------------------------------------------- stepping
    def step(self, now: float) -> Step:
        readings = self.read(now)
        if not self.said_unconfigured and not self._anything_configured():
            self.said_unconfigured = True
            return Step(self.interval, [Notice(
                self.name, "io is enabled but no level is set (iops, utilization, await or "
                           "pressure.full_avg10): it can never act", event="error", level="err")])
        if self.waiting_for_action(now):
            return self.wait_step(now)
        self._judge(readings, now)
        holding = [w for w in self.watches.values() if w.held_since is not None]
        if not holding:
            self.end_stretch()
            return Step(self.interval)
        self.sample(now)
        due = [w for w in holding if now - w.held_since >= self.cfg.for_]
        if not due:
            return Step(self.interval)
        decision = self._decide(max(due, key=lambda w: (w.reading.util, w.reading.iops)))
        return Step(self.interval, [decision] if decision is not None else [])

    def _judge(self, readings, now: float) -> None:
        """Start or end each device's stretch. A device without a reading this
        time (a counter wrapped, it just appeared) keeps its state."""
        for name, reading in readings.items():
            watch = self.watches[name]
            if watch.levels is None:
                continue
            holds, reason = self.conditions(watch.levels, reading)
            if holds:
                watch.reason = reason
                if watch.held_since is None:
                    watch.held_since = now
            else:
                watch.held_since = None

    def action_over(self, now: float) -> None:
        for watch in self.watches.values():
            watch.held_since = None               # the next decision needs a fresh `for`
        super().action_over(now)

    # ------------------------------------------------------------- measuring
    def sample(self, now: float) -> None:
        """One sample of every candidate's IO counters and every device's bytes."""
        added, _ = self.refresh_table()
        self.table.sample_io()
        born = self.birth_times(added)
        eligible = [p for p in self.table.entries() if p.eligible]
        self.window.add(now, {p.serial: io_bytes(p) for p in eligible}, born)
        self.calls.add(now, {p.serial: p.io_syscalls for p in eligible}, born)
        self.device_window.add(now, dict(self.device_bytes))

    def device_numbers(self, watch: Watch) -> set[int]:
        key = (watch.name, watch.major, watch.minor)
        numbers = self.numbers.get(key)
        if numbers is None:
            if len(self.numbers) > 256:
                self.numbers.clear()
            numbers = self.numbers[key] = diskstats.device_numbers(
                self.context.sys_root, watch.name, watch.major, watch.minor)
        return numbers

    def attributed(self, watch: Watch) -> dict[int, int]:
        """serial -> IO bytes over the window, for the top few processes that
        have a file open on the device (judged again with fresh facts)."""
        used, calls = self.window.usage(), self.calls.usage()
        by_serial = {p.serial: p for p in self.table.entries() if p.eligible}
        busiest = sorted((s for s in by_serial if used.get(s) or calls.get(s)),
                         key=lambda s: (-used.get(s, 0), -calls.get(s, 0)))[:TOP_SCANNED]
        numbers = self.device_numbers(watch)
        found = {}
        for serial in busiest:
            proc = by_serial[serial]
            try:
                self.table.read_stat(proc)          # fresh name and CPU time (rule 1)
            except OSError:
                continue                            # gone since the sample
            if not self.context.rules.rejudge(self.table, proc):
                continue
            if has_open_file_on(self.table, proc, numbers):
                found[serial] = used.get(serial, 0)
        return found

    def capacity(self, watch: Watch, attributed: dict[int, int]) -> float:
        """The bytes the device moved over the window (at least what we blame on it)."""
        moved = self.device_window.usage().get(watch.dev, 0)
        return float(max(moved, sum(attributed.values()), 1))

    # ------------------------------------------------------------- deciding
    def _decide(self, watch: Watch):
        self.deciding = watch
        used = self.attributed(watch)
        reading = watch.reading
        fields = {"device": watch.name, "iops": f"{reading.iops:.0f}",
                  "util": format_percent(reading.util), "await": f"{reading.await_ms:.2f}ms",
                  "window": f"{self.window.seconds:.0f}s"}
        return self.decide(used, self.capacity(watch, used), watch.reason, fields,
                           nothing=f"no unit with a file open on {watch.name} did "
                                   f"{format_percent(self.cfg.min_share)} of its IO (min_share) "
                                   f"over {self.window.seconds:.0f}s")

    def predict(self, unit) -> tuple[bool, str]:
        """(enough, the device without `unit`): its IOPS and utilization
        less the unit's share of the bytes the device moved. With only await
        or PSI levels (which do not scale with a share) a unit is enough when
        it did at least half of the device's IO."""
        watch = self.deciding
        levels, reading, left = watch.levels, watch.reading, 1 - unit.share / 1000
        iops, util = reading.iops * left, reading.util * left
        checked = [levels.iops > 0 and iops < levels.iops,
                   levels.utilization > 0 and util < levels.utilization]
        enough = any(checked) if (levels.iops > 0 or levels.utilization > 0) else left <= 0.5
        return enough, f"{watch.name} iops {iops:.0f}, util {format_percent(util)}"

    def unit_fields(self, unit) -> dict:
        return {"io": format_size(unit.used)}

    # ------------------------------------------------------------- reporting
    def status(self) -> list[dict]:
        if not any(w.reading for w in self.watches.values()):   # a fresh monitor
            time.sleep(STATUS_WINDOW)
            self.read(time.monotonic())
        now, rows = time.monotonic(), []
        for watch in sorted(self.watches.values(), key=lambda w: w.name):
            if watch.levels is None:
                continue
            reading, levels = watch.reading, watch.levels
            rows.append({
                "resource": self.name, "device": watch.name, "state": self._state_of(watch),
                "iops": round(reading.iops) if reading else None,
                "util": round(reading.util * 100, 1) if reading else None,
                "await": round(reading.await_ms, 2) if reading else None,
                "iops_level": levels.iops, "util_level": round(levels.utilization * 100, 1),
                "await_level": levels.await_ms, "psi_full_avg10": self.psi,
                "psi_level": self.cfg.pressure.full_avg10,
                "held_for": round(now - watch.held_since, 1) if watch.held_since is not None else 0.0,
                "for": self.cfg.for_})
        for entry in self.cfg.devices:
            if entry.device != "*" and entry.device not in self.watches:
                rows.append({"resource": self.name, "device": entry.device, "state": "absent"})
        return rows

    def _state_of(self, watch: Watch) -> str:
        if self.acting() and self.pending.fields.get("device") == watch.name:
            return "acting"
        return "ok"

    def candidates(self, top: int) -> dict:
        """Units ranked by their share of the busiest watched device's IO over
        a short window measured now."""
        for window in (self.window, self.calls, self.device_window):
            window.span = CANDIDATE_WINDOW
        self.read(time.monotonic())
        self.sample(time.monotonic())
        time.sleep(CANDIDATE_WINDOW)
        self.read(time.monotonic())
        self.sample(time.monotonic())
        watched = [w for w in self.watches.values() if w.levels is not None and w.reading]
        if not watched:
            return {"device": None, "ranked": [], "excluded": []}
        watch = max(watched, key=lambda w: (w.reading.bytes, w.reading.ios))
        self.deciding = watch
        used = self.attributed(watch)
        ranked, excluded, choice = self.ranked(used, self.capacity(watch, used))
        for row in ranked:
            row["device"] = watch.name
        return {"device": watch.name, "ranked": ranked[:top], "excluded": excluded, "choice": choice}

    def _close_readers(self) -> None:
        self.disks.close()
        if self.psi_file is not None:
            self.psi_file.close()

    def close(self) -> None:
        self._close_readers()
        super().close()


def io_bytes(proc) -> int:
    """What the process made the block layer move: read + written − cancelled
    (dirty pages truncated before writeback never reached the disk)."""
    return max(proc.io_read_bytes + proc.io_write_bytes - proc.io_cancelled, 0)


def has_open_file_on(table, proc, numbers: set[int]) -> bool:
    """A descriptor of the process points at a file on one of `numbers`
    (st_dev), or at one of those block devices itself (st_rdev)."""
    return any(st.st_dev in numbers or (stat.S_ISBLK(st.st_mode) and st.st_rdev in numbers)
               for _, st in open_files(table, proc))
