"""The disk shield: free space and free inodes of each watched file system.

Each `disks` entry is one file system with its own levels. Below `clean` the
shield asks for a cleanup pass of the operator's rules (the engine runs it on
a worker of its own, act/cleanup.py) until `until` is reached, and
deleted-but-open files are reported, those matching `truncate_deleted`
truncated. Below `kill` the process writing to that file system faster than
`writer_rate` is killed.

Write rate: Δ(write_bytes − cancelled_write_bytes) of /proc/PID/io between
two samples of the process table, taken while a disk is below `clean` so a
rate is ready when `kill` is crossed. tmpfs and other memory file systems
never count write_bytes (no writeback), so for those the rate is Δwchar:
all bytes the process wrote, which over-counts pipes and sockets. A fast
writer is attributed to a file system only if it holds a descriptor open for
writing (fdinfo flags O_WRONLY/O_RDWR) on that device.

Deleted-open files are found by a bounded scan (proc/deleted.py) on a
thread of this shield's own, one at a time: a step starts it at most once
per interval and judges the last finished one, so no number of descriptors
held by users, nor one on a hung file system, makes a step wait.
"""
from __future__ import annotations

import collections
import functools
import os
import threading
import time

from oorkiller.judge import choice as victims
from oorkiller.judge import shares
from oorkiller.judge.decision import Cleanup, Notice, Truncate
from oorkiller.proc import deleted
from oorkiller.proc._calm import STATVFS
from oorkiller.proc.fds import open_files, opened_for_writing
from oorkiller.proc.mounts import MountError, read_mounts, resolve
from oorkiller.quantities import format_size
from oorkiller.shields.base import Step
from oorkiller.shields.process import ProcessShield

MEMORY_FS = frozenset({"tmpfs", "ramfs", "devtmpfs", "hugetlbfs"})  # no write_bytes
# statvfs of these may wait on a server or a user-space daemon (fuse.* too)
REMOTE_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "9p",
                       "afs", "lustre", "gpfs", "virtiofs", "ncpfs", "davfs", "fuse", "fuseblk"})
FILL_WINDOW = 60.0       # seconds of readings behind time_to_full
SEVERITY = {"ok": 0, "clean": 1, "kill": 2}


class Reading:
    """One statvfs of a disk, in bytes and inodes."""

    __slots__ = ("at", "total", "free", "inodes", "inodes_free")

    def __init__(self, sv, at: float):
        self.at = at
        self.total = sv.f_blocks * sv.f_frsize
        self.free = sv.f_bavail * sv.f_frsize
        self.inodes = sv.f_files              # 0: the file system keeps no inode count
        self.inodes_free = sv.f_favail


def pct(part: int, whole: int) -> float:
    return round(part * 100 / whole, 1) if whole else 0.0


def format_time_to_full(seconds: float | None) -> str:
    """A rough estimate for a record: `45s`, `12m`, `3h`, or `never` (not the
    exact duration text of quantities.format_duration)."""
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


class Disk:
    """One `disks` entry: its mount, levels, recent readings, its cleanup pass."""

    def __init__(self, cfg, index: int):
        self.cfg = cfg
        self.index = index
        self.mount = None
        self.active = True                    # False: a duplicate of an earlier entry
        self.reading: Reading | None = None
        self.history = collections.deque()    # (at, used bytes, used inodes)
        self.state = "ok"
        self.reason = ""
        self.due = 0.0
        self.cleaning: Cleanup | None = None  # the last cleanup pass asked for
        self.deleted_bytes = 0
        self.deleted_files = 0

    # -- levels ------------------------------------------------------------
    def levels(self, r: Reading) -> dict:
        cfg = self.cfg
        return {"clean": cfg.free.clean.resolve(r.total), "kill": cfg.free.kill.resolve(r.total),
                "until": cfg.until.free.resolve(r.total),
                "inodes_clean": cfg.inodes_free.clean.resolve(r.inodes),
                "inodes_kill": cfg.inodes_free.kill.resolve(r.inodes),
                "inodes_until": cfg.until.inodes_free.resolve(r.inodes)}

    def judge(self, r: Reading) -> tuple[str, str]:
        """('ok' | 'clean' | 'kill', reason)."""
        lv = self.levels(r)
        for severity in ("kill", "clean"):
            if r.free < lv[severity]:
                level = getattr(self.cfg.free, severity)
                return severity, (f"free {pct(r.free, r.total)}% ({format_size(r.free)}) < {severity} "
                                  f"level {level} on {self.cfg.path}")
            if r.inodes and r.inodes_free < lv["inodes_" + severity]:
                level = getattr(self.cfg.inodes_free, severity)
                return severity, (f"inodes free {pct(r.inodes_free, r.inodes)}% ({r.inodes_free}) < "
                                  f"{severity} level {level} on {self.cfg.path}")
        return "ok", ""

    # -- fill rate ---------------------------------------------------------
    def remember(self, r: Reading) -> None:
        self.history.append((r.at, r.total - r.free, r.inodes - r.inodes_free))
        while len(self.history) > 2 and r.at - self.history[0][0] > FILL_WINDOW:
            self.history.popleft()

    def time_to_full(self) -> float | None:
        """Seconds until space or inodes run out at the recent fill rate."""
        if len(self.history) < 2 or self.reading is None:
            return None
        (t0, used0, iused0), (t1, used1, iused1) = self.history[0], self.history[-1]
        if t1 <= t0:
            return None
        estimates = []
        if used1 > used0:
            estimates.append(self.reading.free / ((used1 - used0) / (t1 - t0)))
        if self.reading.inodes and iused1 > iused0:
            estimates.append(self.reading.inodes_free / ((iused1 - iused0) / (t1 - t0)))
        return min(estimates) if estimates else None


def free_after(path: str) -> dict:
    """For the `reclaimed` record of a writer's kill (read on the engine's worker)."""
    r = Reading(os.statvfs(path), time.monotonic())
    return {"path": path, "free_after": format_size(r.free)}


class DiskShield(ProcessShield):
    name = "disk"
    HOLD = "io"

    def __init__(self, context):
        super().__init__(context)
        self.disks = [Disk(cfg, i) for i, cfg in enumerate(context.config.disks)]
        self.reported: set = set()            # problems already recorded once
        self.written: dict[int, tuple[float, int]] = {}   # serial -> (at, bytes written)
        self.rates: dict[int, float] = {}     # serial -> bytes/s over the last sample
        self.deleted_at = 0.0
        self.scanner: threading.Thread | None = None   # the one deleted-open scan under way
        self.closing = threading.Event()      # ends a scan under way
        self.scanned = None                   # its result, until the next step judges it
        self.resume_pid = 0
        self.decisions: list = []             # made since the last step returned
        self._resolve_all()

    @property
    def interval(self) -> float:
        return min((d.cfg.interval for d in self.disks), default=5.0)

    @property
    def may_block(self) -> bool:
        """A watched file system is remote or FUSE: its statvfs may wait on a
        server or a daemon, so this shield keeps a thread of its own."""
        return any(d.active and d.mount is not None
                   and (d.mount.fstype in REMOTE_FS or d.mount.fstype.startswith("fuse."))
                   for d in self.disks)

    def calm(self, sleep: float) -> bool:
        """Every disk above `clean`, no kill or scan under way. (The sleep
        says nothing here: disks of different intervals make short ones.)"""
        return (all(d.state == "ok" for d in self.disks) and not self.acting()
                and not (self.scanner is not None and self.scanner.is_alive()))

    def calm_gates(self) -> list | None:
        """While every watched file system keeps free space and inodes at or
        above its `clean` levels, every step is calm. (Not while an entry's
        file system is still unknown: each step tries to find it.)"""
        disks = [d for d in self.disks if d.active]
        if any(d.mount is None or d.reading is None for d in disks) or not self.calm(self.interval):
            return None
        gates = []
        for disk in disks:
            lv = disk.levels(disk.reading)
            gates.append((STATVFS, disk.cfg.path, lv["clean"], lv["inodes_clean"]))
        return gates

    def resume(self, kept: dict) -> None:
        """The readings the gates passed join each disk's fill-rate history."""
        for disk in self.disks:
            gate = kept.get((STATVFS, disk.cfg.path))
            if gate is None or disk.reading is None:
                continue
            total, inodes = disk.reading.total, disk.reading.inodes
            for at, free, inodes_free in gate[1]:
                disk.history.append((at, total - free, inodes - inodes_free))

    def _error(self, key, reason: str, **fields) -> None:
        """A problem of this shield, recorded once."""
        if key in self.reported:
            return
        self.reported.add(key)
        self.decisions.append(Notice(self.name, reason, fields, event="error", level="err"))

    # ------------------------------------------------------------- mounts
    def _resolve_all(self) -> None:
        """Each entry to its file system; a second entry on one is an error."""
        try:
            mounts = read_mounts(self.context.proc_root)
        except (OSError, ValueError) as err:
            self._error(("mountinfo",), reason=f"cannot read the mount table: {err}")
            return
        seen: dict[int, Disk] = {}
        for disk in self.disks:
            if disk.mount is None:
                try:
                    disk.mount = resolve(disk.cfg.path, mounts)
                except MountError as err:
                    self._error(("mount", disk.cfg.path), path=disk.cfg.path, reason=str(err))
                    continue
            first = seen.setdefault(disk.mount.device, disk)
            if first is not disk and disk.active:
                disk.active = False
                self._error(("duplicate", disk.cfg.path), path=disk.cfg.path,
                            reason=f"same file system ({disk.mount.device_text}) as {first.cfg.path} "
                                   f"(line {first.cfg.line}); only the first entry acts")

    # ------------------------------------------------------------- stepping
    def step(self, now: float) -> Step:
        if any(d.mount is None for d in self.disks):
            self._resolve_all()
        below_clean = []
        for disk in self.disks:
            if not disk.active or disk.mount is None or now < disk.due:
                continue
            disk.due = now + disk.cfg.interval
            self._step_disk(disk, now)
            if disk.state != "ok":
                below_clean.append(disk)
        if below_clean:
            self._sample_writers(now)
            self._deleted_open(below_clean, now)
            for disk in below_clean:
                if disk.state == "kill":
                    self._kill_writer(disk)
        elif all(d.state == "ok" for d in self.disks):
            self.written.clear()
            self.release_table()         # a healthy machine costs no process table
        due = [d.due for d in self.disks if d.active and d.mount is not None]
        sleep = max(0.0, min(due, default=now + self.interval) - time.monotonic())
        decisions, self.decisions = self.decisions, []
        return Step(sleep, decisions)

    def _step_disk(self, disk: Disk, now: float) -> None:
        reading = Reading(os.statvfs(disk.cfg.path), now)
        disk.reading = reading
        disk.remember(reading)
        disk.state, disk.reason = disk.judge(reading)
        if disk.state != "ok" and disk.cfg.cleanup and (disk.cleaning is None or disk.cleaning.over):
            disk.cleaning = self._cleanup(disk, reading)
            self.decisions.append(disk.cleaning)

    def _cleanup(self, disk: Disk, reading: Reading) -> Cleanup:
        lv = disk.levels(reading)
        return Cleanup(self.name, disk.reason, {"time_to_full": format_time_to_full(disk.time_to_full())},
                       path=disk.cfg.path, device=disk.mount.device, rules=tuple(disk.cfg.cleanup),
                       until_bytes=lv["until"], until_inodes=lv["inodes_until"] if reading.inodes else None,
                       keep_names=self.context.config.log.level == "debug")

    # ------------------------------------------------------------- deleted but open
    def _deleted_open(self, disks: list, now: float) -> None:
        """Judge the last finished scan, and start the next one once per
        interval on the scanner thread: the step never waits for a scan."""
        finished, self.scanned = self.scanned, None
        if finished is not None:
            self._judge_scan(finished, disks, truncate=True)
        if now - self.deleted_at < self.interval or (self.scanner and self.scanner.is_alive()):
            return
        self.deleted_at = now
        devices = frozenset(d.mount.device for d in disks)
        self.scanner = threading.Thread(target=self._scan, args=(devices,), name="oork-deleted", daemon=True)
        self.scanner.start()

    def _scan(self, devices: frozenset) -> None:
        """The scanner thread: one bounded scan, handed to the next step."""
        self.scanned = deleted.scan_open_deleted(devices, self.context.proc_root,
                                                 resume_pid=self.resume_pid, stop=self.closing)

    def _judge_scan(self, scan, disks: list, truncate: bool) -> None:
        """Count (and where allowed, truncate) the deleted-open files found."""
        self.resume_pid = scan.resume_pid
        if scan.cut_short:
            self._error(("deleted-scan",), reason=(
                f"deleted-open scan cut short after {scan.descriptors} descriptors in "
                f"{scan.seconds:.1f}s (budget {deleted.SCAN_DESCRIPTORS} descriptors, "
                f"{deleted.SCAN_SECONDS:g}s); the next scan resumes at PID {scan.resume_pid}"))
        else:
            self.reported.discard(("deleted-scan",))    # a later cut is said again
        by_device = {d.mount.device: d for d in disks}
        for disk in disks:
            disk.deleted_bytes = disk.deleted_files = 0
        for entry in scan.found.values():
            disk = by_device.get(entry.device)
            if disk is None:
                continue                                 # back above clean meanwhile
            disk.deleted_bytes += entry.nbytes
            disk.deleted_files += 1
            globs = tuple(disk.cfg.truncate_deleted)
            if truncate and globs and deleted.all_match(entry, globs):
                self.decisions.append(Truncate(
                    self.name, disk.reason, {"path": disk.cfg.path,
                                             "time_to_full": format_time_to_full(disk.time_to_full())},
                    entry=entry, globs=globs))

    # ------------------------------------------------------------- abnormal writers
    def _sample_writers(self, now: float) -> None:
        self.refresh_table()
        self.table.sample_io()
        memory_fs = any(d.mount.fstype in MEMORY_FS for d in self.disks if d.mount and d.state != "ok")
        rates, written = {}, {}
        for proc in self.table.entries():
            if not proc.eligible:
                continue
            total = proc.io_write_bytes - proc.io_cancelled
            if memory_fs:
                total = max(total, proc.io_wchar)
            written[proc.serial] = (now, total)
            last = self.written.get(proc.serial)
            if last is not None and now > last[0]:
                rates[proc.serial] = max(total - last[1], 0) / (now - last[0])
        self.written, self.rates = written, rates

    def _kill_writer(self, disk: Disk) -> None:
        if self.acting():
            return                       # one victim at a time: wait for it
        limit = disk.cfg.writer_rate
        fast = [p for p in self.table.entries()
                if p.eligible and self.rates.get(p.serial, 0) > limit
                and writes_to(self.table, p, disk.mount.device)]
        if not fast:
            return
        total, uptime = sum(self.rates[p.serial] for p in fast), shares.uptime()
        found = [victims.Candidate(proc=p, score=int(self.rates[p.serial] * 1000 / total) + p.adjust,
                                   share=int(self.rates[p.serial] * 1000 / total), adjust=p.adjust,
                                   reclaim=int(self.rates[p.serial]), enough=True,
                                   work=victims.work_of(p.cpu_ticks, shares.age_of(p, uptime)))
                 for p in fast]
        choice = victims.choose(found)
        chosen = choice.chosen
        rate = self.rates[chosen.proc.serial]
        reason = f"{disk.reason}; writing {format_size(int(rate))}/s > writer_rate {format_size(limit)}/s"
        fields = {"user": chosen.proc.uid, "score": chosen.score, "path": disk.cfg.path,
                  "rate": f"{format_size(int(rate))}/s",
                  "time_to_full": format_time_to_full(disk.time_to_full()),
                  "why": choice.why, "runner_up": choice.runner_up_text}
        self.decisions.append(self.kill([chosen.proc], reason, fields, term_timeout=disk.cfg.term_timeout,
                                        measure=functools.partial(free_after, disk.cfg.path)))

    def close(self) -> None:
        self.closing.set()                    # the scan stops within CHECK_EVERY descriptors
        if self.scanner is not None:
            self.scanner.join(deleted.SCAN_SECONDS + 1.0)
        super().close()

    # ------------------------------------------------------------- reporting
    def status(self) -> list[dict]:
        if all(d.reading is None for d in self.disks):      # `oorkiller status`: a fresh look
            resolved = [d for d in self.disks if d.mount is not None and d.active]
            if resolved:
                devices = frozenset(d.mount.device for d in resolved)
                self._judge_scan(deleted.scan_open_deleted(devices, self.context.proc_root),
                                 resolved, truncate=False)
        rows = []
        for disk in self.disks:
            row = {"resource": "disk", "path": disk.cfg.path,
                   "state": "acting" if disk.state != "ok" else "ok"}
            if disk.mount is None:
                rows.append({**row, "state": "unresolved"})
                continue
            r = disk.reading or Reading(os.statvfs(disk.cfg.path), time.monotonic())
            lv = disk.levels(r)
            row.update(device=disk.mount.device_text, free=r.free, total=r.total,
                       free_pct=pct(r.free, r.total),
                       inodes_free_pct=pct(r.inodes_free, r.inodes) if r.inodes else None,
                       levels={"clean": lv["clean"], "kill": lv["kill"], "until": lv["until"],
                               "inodes_clean": lv["inodes_clean"], "inodes_kill": lv["inodes_kill"],
                               "inodes_until": lv["inodes_until"]},
                       deleted_open_bytes=disk.deleted_bytes, deleted_open_files=disk.deleted_files,
                       time_to_full=format_time_to_full(disk.time_to_full()))
            if not disk.active:
                row["state"] = "duplicate"
            if disk.reason:
                row["reason"] = disk.reason
            rows.append(row)
        return rows



def writes_to(table, proc, device: int) -> bool:
    """The process holds a descriptor open for writing on `device`."""
    return any(st.st_dev == device and opened_for_writing(table, proc, fd)
               for fd, st in open_files(table, proc))
