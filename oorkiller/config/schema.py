"""The configuration objects: frozen dataclasses whose fields are the YAML keys.

Each key is declared once, as its field: `_key(converter, default)` for a
value, `_nested(default)` for a mapping of its own, with `name="for"` where
the YAML key is not a Python name (`for` fills `for_`). The checking tables
are derived from these fields (see validate.py), so a key added here is at
once accepted, checked and defaulted. A key left out keeps the field's
default, which is the value of the embedded default file (a test keeps the
two equal). Fields declared plainly (`line`, `source`) are filled by the
loader, never by the file.

The rules that involve two keys live here too, as each class's `_check`
attribute; the section runs it once all keys of the mapping converted cleanly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
# `Any` appears in annotations only, never evaluated (postponed annotations):
# the daemon does not import typing (400 kB of memory) for them.

import yaml

from oorkiller.config.validate import (
    Check, _Reader, _absolute_path, _bool, _metrics_file, _choice, _cleanup_dir, _command, _count, _device, _duration,
    _file_glob, _int_in, _interval, _key, _line_of, _list_of, _mapping_of, _millis, _nested,
    _number_in, _optional, _percent, _pid, _rate, _regex, _set_of, _size, _user,
)
from oorkiller.quantities import Count, Size

KILL_UNITS = ("process", "process_group", "cgroup", "auto")
LOG_LEVELS = ("debug", "info", "warning")
MAC_ACTIONS = ("alert", "down")
RESOURCES = frozenset({"memory", "cpu", "disk", "io", "network", "tasks", "files"})
# The events that are an action on the machine: a hook runs on these by default.
ACTION_EVENTS = frozenset({"term", "kill", "cleanup", "truncate", "duplicate-mac", "down",
                           "conntrack-full"})
HOOK_EVENTS = ACTION_EVENTS | {"reclaimed", "duplicate-mac-cleared", "nothing-to-kill", "stop"}


def _not_above(r: _Reader, low: Size, high: Size, where: int, what: str) -> None:
    """`low` must not exceed `high` when both are the same kind (% or bytes)."""
    if low.percent == high.percent and low.amount > high.amount:
        r.bad(where, what.format(low=low, high=high))


def _kill_not_above(first: str) -> Check:
    """The check of a pair of free-space levels: the `kill` level must not be
    above the level named `first`, which acts before it (term, clean)."""
    def check(levels: Any, r: _Reader, lines: dict[str, int], node: yaml.Node, path: str) -> None:
        _not_above(r, levels.kill, getattr(levels, first), _line_of(lines, node, "kill", first),
                   path + f": the kill level {{low}} is above the {first} level {{high}}")
    return check


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    lock_memory: bool = _key(_bool, True)
    oom_score_adj: int = _key(_int_in(-1000, 1000), -1000)
    nice: int = _key(_int_in(-20, 19), -10)


@dataclass(frozen=True, slots=True)
class LogConfig:
    kmsg: bool = _key(_bool, True)
    stderr: bool = _key(_bool, True)
    level: str = _key(_choice(*LOG_LEVELS), "info")


@dataclass(frozen=True, slots=True)
class Match:
    """What a rule or the scope selects; every key given must hold."""

    name: re.Pattern | None = _key(_regex, None)
    cmdline: re.Pattern | None = _key(_regex, None)
    exe: re.Pattern | None = _key(_regex, None)
    cgroup: re.Pattern | None = _key(_regex, None)
    user: int | None = _key(_user, None)  # a user name in the file is resolved to its uid at load
    pid: int | None = _key(_pid, None)
    descendant_of: int | None = _key(_pid, None)
    line: int = 0

    def _check(self, r: _Reader, lines: dict[str, int], node: yaml.Node, path: str) -> None:
        if not lines:
            r.bad(node, f"{path}: an empty match would select every process; give at least one key")


@dataclass(frozen=True, slots=True)
class Rule:
    match: Match = _nested(Match(), required=True)
    protect: bool = _key(_bool, False)
    adjust: int = _key(_int_in(-1000, 1000), 0)
    line: int = 0

    def _check(self, r: _Reader, lines: dict[str, int], node: yaml.Node, path: str) -> None:
        if not self.protect and self.adjust == 0:
            r.bad(node, f"{path}: a rule needs 'protect: true' or a non-zero 'adjust'")


@dataclass(frozen=True, slots=True)
class Levels:
    term: Size = _key(_size, Size(10.0, True))
    kill: Size = _key(_size, Size(5.0, True))
    _check = _kill_not_above("term")


@dataclass(frozen=True, slots=True)
class Pressure:
    full_avg10: float = _key(_number_in(0, 100), 0.0)  # percent as the kernel prints it; 0 = off
    for_: float = _key(_duration, 10.0, name="for")


@dataclass(frozen=True, slots=True)
class CpuPressure:
    some_avg10: float = _key(_number_in(0, 100), 0.0)


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    enabled: bool = _key(_bool, True)
    interval: float = _key(_interval, 1.0)
    available: Levels = _nested(Levels())
    swap_free: Levels = _nested(Levels())
    pressure: Pressure = _nested(Pressure())
    term_timeout: float = _key(_duration, 5.0)
    kill: str = _key(_choice(*KILL_UNITS), "process")


@dataclass(frozen=True, slots=True)
class CpuConfig:
    enabled: bool = _key(_bool, True)
    interval: float = _key(_interval, 1.0)
    usage: float = _key(_percent, 0.98)
    runnable_per_cpu: float = _key(_number_in(0, 1e6), 4.0)
    pressure: CpuPressure = _nested(CpuPressure())
    for_: float = _key(_duration, 60.0, name="for")
    min_share: float = _key(_percent, 0.25)
    kill: str = _key(_choice(*KILL_UNITS), "auto")
    term_timeout: float = _key(_duration, 5.0)
    cooldown: float = _key(_duration, 30.0)


@dataclass(frozen=True, slots=True)
class DiskLevels:
    clean: Size = _key(_size, Size(10.0, True))
    kill: Size = _key(_size, Size(3.0, True))
    _check = _kill_not_above("clean")


@dataclass(frozen=True, slots=True)
class Until:
    free: Size = _key(_size, Size(15.0, True))
    inodes_free: Size = _key(_size, Size(15.0, True))


@dataclass(frozen=True, slots=True)
class CleanupRule:
    path: str = _key(_cleanup_dir, "", required=True)
    glob: str = _key(_file_glob, "", required=True)
    min_age: float = _key(_duration, 600.0)
    recursive: bool = _key(_bool, False)
    line: int = 0


@dataclass(frozen=True, slots=True)
class DiskConfig:
    path: str = _key(_absolute_path, "", required=True)
    interval: float = _key(_interval, 5.0)
    free: DiskLevels = _nested(DiskLevels())
    inodes_free: DiskLevels = _nested(DiskLevels())
    until: Until = _nested(Until())
    cleanup: tuple[CleanupRule, ...] = _key(_list_of(_mapping_of(CleanupRule)), ())
    truncate_deleted: tuple[str, ...] = _key(_list_of(_absolute_path), ())
    writer_rate: int = _key(_rate, 50 << 20)
    term_timeout: float = _key(_duration, 5.0)
    line: int = 0

    def _check(self, r: _Reader, lines: dict[str, int], node: yaml.Node, path: str) -> None:
        """Cleanup stops at `until`, so `until` below the clean level would never stop it."""
        where = _line_of(lines, node, "until")
        _not_above(r, self.free.clean, self.until.free, where,
                   path + ".until.free: {high} is below the clean level {low}")
        _not_above(r, self.inodes_free.clean, self.until.inodes_free, where,
                   path + ".until.inodes_free: {high} is below the clean level {low}")


def _one_disk_per_path(r: _Reader, disks: list[DiskConfig], path: str) -> None:
    """Two entries for one file system would fight over it, so refuse the second."""
    first_line: dict[str, int] = {}
    for disk in disks:
        if disk.path in first_line:
            r.bad(disk.line, f"{path}: '{disk.path}' is already watched by the entry at line {first_line[disk.path]}")
        first_line.setdefault(disk.path, disk.line)


@dataclass(frozen=True, slots=True)
class IoDevice:
    device: str = _key(_device, "*")
    iops: int = _key(_int_in(0, 2**32), 0)
    utilization: float = _key(_percent, 0.0)
    await_ms: float = _key(_millis, 0.0, name="await")


@dataclass(frozen=True, slots=True)
class IoConfig:
    enabled: bool = _key(_bool, False)
    interval: float = _key(_interval, 1.0)
    devices: tuple[IoDevice, ...] = _key(_list_of(_mapping_of(IoDevice)), (IoDevice(),))
    pressure: Pressure = _nested(Pressure())
    for_: float = _key(_duration, 30.0, name="for")
    min_share: float = _key(_percent, 0.25)
    kill: str = _key(_choice(*KILL_UNITS), "auto")
    term_timeout: float = _key(_duration, 5.0)
    cooldown: float = _key(_duration, 30.0)

    def _check(self, r: _Reader, lines: dict[str, int], node: yaml.Node, path: str) -> None:
        """An enabled IO shield with no level at all could never act: say so."""
        if not self.enabled:
            return
        levels = [d for d in self.devices if d.iops or d.utilization or d.await_ms]
        if not levels and not self.pressure.full_avg10:
            r.bad(_line_of(lines, node, "enabled"),
                  f"{path}: enabled but no level is set (a device's iops, utilization "
                  f"or await, or pressure.full_avg10)")


@dataclass(frozen=True, slots=True)
class KillLevel:
    kill: Count = _key(_count, Count(90.0, True))


@dataclass(frozen=True, slots=True)
class WarnLevel:
    warn: Count = _key(_count, Count(90.0, True))


@dataclass(frozen=True, slots=True)
class TasksConfig:
    enabled: bool = _key(_bool, True)
    interval: float = _key(_interval, 1.0)
    threads: KillLevel = _nested(KillLevel())     # of kernel.threads-max, or pid_max if smaller
    kill: str = _key(_choice(*KILL_UNITS), "auto")
    term_timeout: float = _key(_duration, 5.0)
    cooldown: float = _key(_duration, 30.0)


@dataclass(frozen=True, slots=True)
class FilesConfig:
    enabled: bool = _key(_bool, True)
    interval: float = _key(_interval, 1.0)
    open: KillLevel = _nested(KillLevel())        # of fs.file-max
    kill: str = _key(_choice(*KILL_UNITS), "auto")
    term_timeout: float = _key(_duration, 5.0)
    cooldown: float = _key(_duration, 30.0)


@dataclass(frozen=True, slots=True)
class ConntrackConfig:
    enabled: bool = _key(_bool, True)
    interval: float = _key(_interval, 10.0)
    used: WarnLevel = _nested(WarnLevel())        # of nf_conntrack_max


@dataclass(frozen=True, slots=True)
class DuplicateMacConfig:
    enabled: bool = _key(_bool, True)
    interval: float = _key(_interval, 10.0)
    ignore: tuple[re.Pattern, ...] = _key(_list_of(_regex), (re.compile("^lo$"),))
    action: str = _key(_choice(*MAC_ACTIONS), "alert")


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    duplicate_mac: DuplicateMacConfig = _nested(DuplicateMacConfig())
    conntrack: ConntrackConfig = _nested(ConntrackConfig())


@dataclass(frozen=True, slots=True)
class Hook:
    command: tuple[str, ...] = _key(_command, (), required=True)
    events: frozenset[str] = _key(_set_of(HOOK_EVENTS), ACTION_EVENTS)
    resources: frozenset[str] = _key(_set_of(RESOURCES), RESOURCES)
    before_kill: bool = _key(_bool, False)
    timeout: float = _key(_interval, 2.0)
    line: int = 0


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    textfile: str = _key(_metrics_file, "")    # '' = off; a .prom file for node_exporter
    interval: float = _key(_interval, 15.0)


@dataclass(frozen=True, slots=True)
class Config:
    source: str = "<default>"
    dry_run: bool = _key(_bool, False)
    daemon: DaemonConfig = _nested(DaemonConfig())
    log: LogConfig = _nested(LogConfig())
    scope: Match | None = _key(_optional(_mapping_of(Match)), None)
    rules: tuple[Rule, ...] = _key(_list_of(_mapping_of(Rule)), ())
    memory: MemoryConfig = _nested(MemoryConfig())
    cpu: CpuConfig = _nested(CpuConfig())
    disks: tuple[DiskConfig, ...] = _key(_list_of(_mapping_of(DiskConfig), _one_disk_per_path), ())
    io: IoConfig = _nested(IoConfig())
    tasks: TasksConfig = _nested(TasksConfig())
    files: FilesConfig = _nested(FilesConfig())
    network: NetworkConfig = _nested(NetworkConfig())
    hooks: tuple[Hook, ...] = _key(_list_of(_mapping_of(Hook)), ())
    metrics: MetricsConfig = _nested(MetricsConfig())
