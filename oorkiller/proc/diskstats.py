"""Per-device readings from /proc/diskstats: IOPS, utilization, await.

One held fd on /proc/diskstats (`_readers.HeldFile`), parsed by
`_readers.parse_diskstats`; this module turns two readings of a device into
the three numbers the IO shield judges, defined here once:

- IOPS        = (Δ reads completed + Δ writes completed) / Δt
- utilization = Δ io_ms / Δt                 (share of the time with IO in flight)
- await       = (Δ read_ms + Δ write_ms) / (Δ reads + Δ writes)   (ms per IO; 0 when no IO)

plus the bytes moved, (Δ read_sectors + Δ write_sectors) × 512, which is what a
process's share of the device is measured against.

Counters that go backwards (32-bit wrap on old kernels, a device removed and
re-created under the same name) give no reading for that device at that
sample: the new values become the baseline. A device seen for the first time
gives its first reading at the next sample. A device that disappears is
forgotten without error.

Partitions are folded into their whole disk: the disk's line already counts
its partitions' IO, so `'*'` watches whole disks only (a partition is a block
device with a `partition` file in /sys/class/block/NAME/), and a file open on
`sda2` counts as IO on `sda` when the culprit is looked for (`device_numbers`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from oorkiller.proc._readers import HeldFile, parse_diskstats

SECTOR = 512          # /proc/diskstats sectors are always 512 bytes


@dataclass(frozen=True, slots=True)
class DeviceReading:
    """One device between two samples."""
    name: str
    major: int
    minor: int
    seconds: float        # Δt between the two samples
    ios: int              # Δ reads + Δ writes completed
    bytes: int            # Δ sectors × 512
    iops: float
    util: float           # fraction 0..1 (can exceed 1 by rounding on some drivers: capped)
    await_ms: float

    @property
    def dev(self) -> int:
        return os.makedev(self.major, self.minor)


def reading_between(prev, cur, seconds: float) -> DeviceReading | None:
    """The reading from DiskStat `prev` to `cur`, or None if any counter went
    backwards (wrap or reset) or no time passed."""
    if seconds <= 0:
        return None
    counters = ("reads", "writes", "read_sectors", "write_sectors", "read_ms", "write_ms", "io_ms")
    delta = {name: getattr(cur, name) - getattr(prev, name) for name in counters}
    if any(value < 0 for value in delta.values()):
        return None
    ios = delta["reads"] + delta["writes"]
    wait_ms = delta["read_ms"] + delta["write_ms"]
    return DeviceReading(
        name=cur.name, major=cur.major, minor=cur.minor, seconds=seconds, ios=ios,
        bytes=(delta["read_sectors"] + delta["write_sectors"]) * SECTOR,
        iops=ios / seconds,
        util=min(delta["io_ms"] / (seconds * 1000.0), 1.0),
        await_ms=wait_ms / ios if ios else 0.0)


# ------------------------------------------------------------------ sysfs facts

def is_partition(sys_root: str, name: str) -> bool:
    return os.path.exists(f"{sys_root}/class/block/{name}/partition")


def parent_disk(sys_root: str, major: int, minor: int) -> str | None:
    """The whole disk a partition belongs to: the directory above it in sysfs."""
    try:
        real = os.path.realpath(f"{sys_root}/dev/block/{major}:{minor}")
    except OSError:
        return None
    parent = os.path.basename(os.path.dirname(real))
    return parent if os.path.exists(f"{sys_root}/class/block/{parent}") else None


def device_numbers(sys_root: str, name: str, major: int, minor: int) -> set[int]:
    """Every st_dev whose files count as IO on device `name`: the device itself,
    its partitions, and what is stacked on either (dm/LVM, md: their `holders`),
    followed down a few levels."""
    found = {os.makedev(major, minor)}
    pending, seen = [name], set()
    while pending and len(seen) < 256:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        base = f"{sys_root}/class/block/{current}"
        children = _listdir(f"{base}/holders")
        children += [entry for entry in _listdir(base) if entry.startswith(current)
                     and os.path.exists(f"{base}/{entry}/partition")]
        for child in children:
            number = _dev_number(f"{sys_root}/class/block/{child}/dev")
            if number is not None:
                found.add(number)
                pending.append(child)
    return found


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _dev_number(path: str) -> int | None:
    try:
        with open(path) as f:
            major, minor = f.read().strip().split(":")
        return os.makedev(int(major), int(minor))
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------ the tracker

class DeviceSelector:
    """Which /proc/diskstats lines are watched: kernel names, or '*' for every
    whole disk. Partition-ness is asked of sysfs once per (name, major:minor)."""

    def __init__(self, names, sys_root: str = "/sys"):
        self.every = "*" in names
        self.names = frozenset(n for n in names if n != "*")
        self.sys_root = sys_root
        self._partition: dict[tuple, bool] = {}

    def wants(self, stat) -> bool:
        if stat.name in self.names:
            return True                    # named explicitly: watched as named
        if not self.every:
            return False
        key = (stat.name, stat.major, stat.minor)
        partition = self._partition.get(key)
        if partition is None:
            partition = self._partition[key] = is_partition(self.sys_root, stat.name)
        return not partition

    def forget_except(self, present) -> None:
        """Drop the cached facts of devices no longer listed (bounded memory)."""
        if len(self._partition) > 2 * len(present) + 64:
            self._partition = {k: v for k, v in self._partition.items() if k in present}


class DiskStats:
    """Samples /proc/diskstats through a held fd; `sample(now)` returns the
    readings of the watched devices since the previous sample."""

    def __init__(self, names=("*",), proc_root: str = "/proc", sys_root: str = "/sys",
                 path: str | None = None):
        self.file = HeldFile(path or f"{proc_root}/diskstats")
        self.selector = DeviceSelector(tuple(names), sys_root)
        self.previous: dict[str, tuple] = {}     # name -> (DiskStat, time)
        self.appeared: list[str] = []            # at the last sample
        self.disappeared: list[str] = []

    def sample(self, now: float) -> dict[str, DeviceReading]:
        return self.update(parse_diskstats(self.file.read()), now)

    def update(self, stats, now: float) -> dict[str, DeviceReading]:
        """The pure half of `sample`: the readings from already-parsed lines."""
        readings, current = {}, {}
        for stat in stats:
            if not self.selector.wants(stat):
                continue
            current[stat.name] = (stat, now)
            before = self.previous.get(stat.name)
            if before is None:
                continue
            old, then = before
            if (old.major, old.minor) != (stat.major, stat.minor):
                continue                   # another device under the same name: new baseline
            reading = reading_between(old, stat, now - then)
            if reading is not None:
                readings[stat.name] = reading
        self.appeared = [n for n in current if n not in self.previous]
        self.disappeared = [n for n in self.previous if n not in current]
        self.previous = current
        self.selector.forget_except({(s.name, s.major, s.minor) for s, _ in current.values()})
        return readings

    def present(self) -> dict[str, tuple[int, int]]:
        """name -> (major, minor) of the watched devices listed at the last sample."""
        return {name: (stat.major, stat.minor) for name, (stat, _) in self.previous.items()}

    def close(self) -> None:
        self.file.close()
