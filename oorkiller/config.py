"""The configuration file: YAML in, validated frozen objects out.

The file is read with `yaml.compose`, not `yaml.safe_load`, so every value
keeps the node it came from and therefore its line number: each problem is
reported as `FILE:LINE: message`, and all problems of a file are reported
at once. The shape of the file is described by small tables (`_Section`)
that map a YAML key to the attribute it fills and the function that checks
and converts its value. A key left out keeps the dataclass default, which
is the value of the embedded default file (a test keeps the two equal);
a list left out (`rules`, `disks`, `hooks`) takes the embedded file's list,
so an operator who only tunes memory keeps sshd protected.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import os
import posixpath
import pwd
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from oorkiller.quantities import Size, parse_duration, parse_percent, parse_rate, parse_size

KILL_UNITS = ("process", "process_group", "cgroup", "auto")
LOG_LEVELS = ("debug", "info", "warning")
MAC_ACTIONS = ("alert", "down")
RESOURCES = frozenset({"memory", "cpu", "disk", "io", "network"})
# The events that are an action on the machine: a hook runs on these by default.
ACTION_EVENTS = frozenset({"term", "kill", "cleanup", "truncate", "duplicate-mac", "down"})
HOOK_EVENTS = ACTION_EVENTS | {"reclaimed", "duplicate-mac-cleared", "nothing-to-kill"}

# A configuration file is a few kilobytes; anything this large is a mistake.
MAX_FILE_BYTES = 1 << 20


# ---------------------------------------------------------------- the objects


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    lock_memory: bool = True
    oom_score_adj: int = -1000
    nice: int = -10


@dataclass(frozen=True, slots=True)
class LogConfig:
    kmsg: bool = True
    stderr: bool = True
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Match:
    """What a rule or the scope selects; every key given must hold."""

    name: re.Pattern | None = None
    cmdline: re.Pattern | None = None
    exe: re.Pattern | None = None
    cgroup: re.Pattern | None = None
    user: int | None = None  # a user name in the file is resolved to its uid at load
    pid: int | None = None
    descendant_of: int | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Rule:
    match: Match = Match()
    protect: bool = False
    adjust: int = 0
    line: int = 0


@dataclass(frozen=True, slots=True)
class Levels:
    term: Size = Size(10.0, True)
    kill: Size = Size(5.0, True)


@dataclass(frozen=True, slots=True)
class Pressure:
    full_avg10: float = 0.0  # percent as the kernel prints it; 0 = off
    for_: float = 10.0


@dataclass(frozen=True, slots=True)
class CpuPressure:
    some_avg10: float = 0.0


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    enabled: bool = True
    interval: float = 1.0
    available: Levels = Levels()
    swap_free: Levels = Levels()
    pressure: Pressure = Pressure()
    term_timeout: float = 5.0
    kill: str = "process"


@dataclass(frozen=True, slots=True)
class CpuConfig:
    enabled: bool = True
    interval: float = 1.0
    usage: float = 0.98
    load_per_cpu: float = 4.0
    pressure: CpuPressure = CpuPressure()
    for_: float = 60.0
    min_share: float = 0.25
    kill: str = "auto"
    term_timeout: float = 5.0
    cooldown: float = 30.0


@dataclass(frozen=True, slots=True)
class DiskLevels:
    clean: Size = Size(10.0, True)
    kill: Size = Size(3.0, True)


@dataclass(frozen=True, slots=True)
class Until:
    free: Size = Size(15.0, True)
    inodes_free: Size = Size(15.0, True)


@dataclass(frozen=True, slots=True)
class CleanupRule:
    path: str = ""
    glob: str = ""
    min_age: float = 600.0
    recursive: bool = False
    line: int = 0


@dataclass(frozen=True, slots=True)
class DiskConfig:
    path: str = ""
    interval: float = 5.0
    free: DiskLevels = DiskLevels()
    inodes_free: DiskLevels = DiskLevels()
    until: Until = Until()
    cleanup: tuple[CleanupRule, ...] = ()
    truncate_deleted: tuple[str, ...] = ()
    writer_rate: int = 50 << 20
    term_timeout: float = 5.0
    line: int = 0


@dataclass(frozen=True, slots=True)
class IoDevice:
    device: str = "*"
    iops: int = 0
    utilization: float = 0.0
    await_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class IoConfig:
    enabled: bool = False
    interval: float = 1.0
    devices: tuple[IoDevice, ...] = (IoDevice(),)
    pressure: Pressure = Pressure()
    for_: float = 30.0
    min_share: float = 0.25
    kill: str = "auto"
    term_timeout: float = 5.0
    cooldown: float = 30.0


@dataclass(frozen=True, slots=True)
class DuplicateMacConfig:
    enabled: bool = True
    interval: float = 10.0
    ignore: tuple[re.Pattern, ...] = (re.compile("^lo$"),)
    action: str = "alert"


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    duplicate_mac: DuplicateMacConfig = DuplicateMacConfig()


@dataclass(frozen=True, slots=True)
class Hook:
    command: tuple[str, ...] = ()
    events: frozenset[str] = ACTION_EVENTS
    resources: frozenset[str] = RESOURCES
    before_kill: bool = False
    timeout: float = 2.0
    line: int = 0


@dataclass(frozen=True, slots=True)
class Config:
    source: str = "<default>"
    dry_run: bool = False
    daemon: DaemonConfig = DaemonConfig()
    log: LogConfig = LogConfig()
    scope: Match | None = None
    rules: tuple[Rule, ...] = ()
    memory: MemoryConfig = MemoryConfig()
    cpu: CpuConfig = CpuConfig()
    disks: tuple[DiskConfig, ...] = ()
    io: IoConfig = IoConfig()
    network: NetworkConfig = NetworkConfig()
    hooks: tuple[Hook, ...] = ()


# ---------------------------------------------------------------- the errors


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int  # 1-based; 0 means the file as a whole (cannot open, bad owner)
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class ConfigError(Exception):
    """An invalid configuration; `.problems` lists every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# ---------------------------------------------------------------- the reader

_BAD = object()  # a value that failed its check; the problem is already recorded


class _Reader:
    """Collects the problems of one file while its nodes are converted."""

    def __init__(self, filename: str):
        self.filename = filename
        self.problems: list[Problem] = []
        self.constructor = yaml.constructor.SafeConstructor()

    def bad(self, where: yaml.Node | int, message: str) -> object:
        line = where if isinstance(where, int) else where.start_mark.line + 1
        self.problems.append(Problem(self.filename, line, message))
        return _BAD

    def scalar(self, node: yaml.Node, path: str) -> Any:
        """The Python value of a scalar node (int, float, bool, str, None)."""
        if not isinstance(node, yaml.ScalarNode):
            kind = "a mapping" if isinstance(node, yaml.MappingNode) else "a list"
            return self.bad(node, f"{path}: expected a single value, got {kind}")
        try:
            return self.constructor.construct_object(node)
        except yaml.YAMLError as err:
            return self.bad(node, f"{path}: {getattr(err, 'problem', err)}")


def _shown(node: yaml.Node) -> str:
    """The value as the operator wrote it, cut short for the message."""
    text = node.value if isinstance(node, yaml.ScalarNode) else "..."
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


# A converter checks one value: (reader, node, dotted path, default) -> value
# or _BAD. The default only matters to sections, which fill it in key by key.
Converter = Callable[[_Reader, yaml.Node, str, Any], Any]


def _bool(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
    value = r.scalar(node, path)
    if value is _BAD or isinstance(value, bool):
        return value
    return r.bad(node, f"{path}: expected true or false, got {_shown(node)}")


def _int_in(low: int, high: int) -> Converter:
    def convert(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
        value = r.scalar(node, path)
        if value is _BAD:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            return r.bad(node, f"{path}: expected a whole number, got {_shown(node)}")
        if not low <= value <= high:
            return r.bad(node, f"{path}: {value} is out of range {low}..{high}")
        return value
    return convert


def _number_in(low: float, high: float) -> Converter:
    def convert(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
        value = r.scalar(node, path)
        if value is _BAD:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return r.bad(node, f"{path}: expected a plain number, got {_shown(node)}")
        if not low <= value <= high:  # also false for NaN
            return r.bad(node, f"{path}: {value} is out of range {low:g}..{high:g}")
        return float(value)
    return convert


def _parsed(parse: Callable[[Any], Any]) -> Converter:
    """A converter from a units.py parser: its ValueError becomes the problem."""
    def convert(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
        value = r.scalar(node, path)
        if value is _BAD:
            return value
        if value is None or isinstance(value, bool):
            return r.bad(node, f"{path}: expected a value, got {_shown(node)}")
        try:
            return parse(value)
        except ValueError as err:
            return r.bad(node, f"{path}: {err}")
    return convert


def _positive(parse: Callable[[Any], float]) -> Callable[[Any], float]:
    def parse_positive(value: Any) -> float:
        seconds = parse(value)
        if seconds <= 0:
            raise ValueError(f"must be more than 0, got {value!r}")
        return seconds
    return parse_positive


_size = _parsed(parse_size)
_duration = _parsed(parse_duration)
_interval = _parsed(_positive(parse_duration))
_percent = _parsed(parse_percent)
_rate = _parsed(parse_rate)
_millis = _parsed(lambda value: parse_duration(value) * 1000)


def _string(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
    value = r.scalar(node, path)
    if value is _BAD or isinstance(value, str):
        return value
    return r.bad(node, f"{path}: expected text, got {_shown(node)}")


def _choice(*choices: str) -> Converter:
    def convert(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
        value = _string(r, node, path)
        if value is _BAD or value in choices:
            return value
        return r.bad(node, f"{path}: unknown value {_shown(node)} (expected {' | '.join(choices)})")
    return convert


def _regex(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
    value = _string(r, node, path)
    if value is _BAD:
        return value
    try:
        return re.compile(value)
    except (re.error, RecursionError, OverflowError, ValueError) as err:
        return r.bad(node, f"{path}: bad regular expression {_shown(node)}: {err}")


def _user(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
    """A uid, or a user name resolved to its uid now (an unknown name is an error)."""
    value = r.scalar(node, path)
    if value is _BAD:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value < 2**32 else r.bad(node, f"{path}: uid {value} is out of range")
    if not isinstance(value, str) or not value:
        return r.bad(node, f"{path}: expected a user name or uid, got {_shown(node)}")
    if value.isascii() and value.isdigit():  # a uid written as text
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except (KeyError, ValueError):
        return r.bad(node, f"{path}: unknown user {value!r}")


_pid = _int_in(1, 2**22)  # the kernel's pid_max limit


def _absolute_path(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
    value = _string(r, node, path)
    if value is _BAD:
        return value
    if not value.startswith("/"):
        return r.bad(node, f"{path}: must be an absolute path, got {_shown(node)}")
    if ".." in value.split("/"):
        return r.bad(node, f"{path}: must not contain '..', got {_shown(node)}")
    if "\0" in value:
        return r.bad(node, f"{path}: must not contain a NUL character")
    # Linux reads a leading "//" as "/", and so do we, so two spellings of a path compare equal.
    return posixpath.normpath("/" + value.lstrip("/"))


def _cleanup_dir(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
    value = _absolute_path(r, node, path)
    if value == "/":
        return r.bad(node, f"{path}: cleanup of the whole file system '/' is refused")
    return value


def _file_glob(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
    value = _string(r, node, path)
    if value is _BAD:
        return value
    if not value or "/" in value or value in (".", ".."):
        return r.bad(node, f"{path}: a glob of file names (no '/'), got {_shown(node)}")
    return value


def _device(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
    value = _string(r, node, path)
    if value is _BAD:
        return value
    if value == "*" or re.fullmatch(r"[A-Za-z0-9_.:!-]+", value):
        return value
    return r.bad(node, f"{path}: expected '*' or a kernel device name (sda, nvme0n1), got {_shown(node)}")


def _list_of(item: Converter) -> Converter:
    """A YAML list whose items all pass `item`; null is the empty list."""
    def convert(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
        if _is_null(node):
            return ()
        if not isinstance(node, yaml.SequenceNode):
            return r.bad(node, f"{path}: expected a list, got {_shown(node)}")
        items = [item(r, child, f"{path}[{i}]", None) for i, child in enumerate(node.value)]
        return _BAD if _BAD in items else tuple(items)
    return convert


def _set_of(choices: frozenset[str]) -> Converter:
    one = _choice(*sorted(choices))

    def convert(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
        items = _list_of(one)(r, node, path)
        if items is _BAD:
            return items
        if not items:
            return r.bad(node, f"{path}: an empty list would never run the hook; leave the key out for all")
        return frozenset(items)
    return convert


def _command(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
    if isinstance(node, yaml.ScalarNode) and not _is_null(node):
        return r.bad(node, f"{path}: a command is a list of arguments, not a shell string: "
                           f"write [/path/to/program, arg, ...]")
    argv = _list_of(_string)(r, node, path)
    if argv is _BAD:
        return argv
    if not argv or not argv[0]:
        return r.bad(node, f"{path}: the command is empty")
    return argv


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class _Section:
    """The keys of one YAML mapping and the dataclass it fills.

    `keys` maps a YAML key to (attribute, converter). `check`, when given,
    sees the filled object and the lines of the keys that were valid, for
    rules that involve two keys (a kill level above its term level).
    """

    keys: dict[str, tuple[str, Converter]]
    required: tuple[str, ...] = ()
    check: Callable[[_Reader, Any, dict[str, int], yaml.Node, str], None] | None = None

    def __call__(self, r: _Reader, node: yaml.Node, path: str, default: Any) -> Any:
        if _is_null(node):
            return self._finish(r, node, path, default, {}, {}, set())
        if not isinstance(node, yaml.MappingNode):
            return r.bad(node, f"{path}: expected a mapping of keys, got {_shown(node)}")
        values, lines, failed = {}, {}, set()
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = self._key(r, key_node, path, first_seen)
            if key is None:
                continue
            attr, convert = self.keys[key]
            value = convert(r, value_node, _join(path, key), getattr(default, attr))
            if value is _BAD:
                failed.add(key)
            else:
                values[attr], lines[key] = value, key_node.start_mark.line + 1
        return self._finish(r, node, path, default, values, lines, failed)

    def _key(self, r: _Reader, key_node: yaml.Node, path: str, first_seen: dict[str, int]) -> str | None:
        """The key's name if it is a known, first-time key; else record why not."""
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
            r.bad(key_node, f"{path or 'top level'}: a key must be a name, got {_shown(key_node)}")
            return None
        key = key_node.value
        if key in first_seen:
            r.bad(key_node, f"{_join(path, key)}: duplicate key (first given at line {first_seen[key]})")
            return None
        first_seen[key] = line
        if key not in self.keys:
            known = ", ".join(self.keys)
            r.bad(key_node, f"{_join(path, key)}: unknown key (expected one of: {known})")
            return None
        return key

    def _finish(self, r, node, path, default, values, lines, failed):
        missing = [key for key in self.required if key not in lines and key not in failed]
        for key in missing:
            r.bad(node, f"{path}: '{key}' is required")
        if "line" in {f.name for f in dataclasses.fields(default)}:
            values["line"] = node.start_mark.line + 1
        obj = dataclasses.replace(default, **values)
        if self.check and not failed and not missing:
            self.check(r, obj, lines, node, path)
        return _BAD if failed or missing else obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _line_of(lines: dict[str, int], node: yaml.Node, *keys: str) -> int:
    """The line of the first of `keys` the file gave, else the mapping's line."""
    for key in keys:
        if key in lines:
            return lines[key]
    return node.start_mark.line + 1


def _not_above(r: _Reader, low: Size, high: Size, where: int, what: str) -> None:
    """`low` must not exceed `high` when both are the same kind (% or bytes)."""
    if low.percent == high.percent and low.amount > high.amount:
        r.bad(where, what.format(low=low, high=high))


def _check_levels(r, levels: Levels, lines, node, path) -> None:
    _not_above(r, levels.kill, levels.term, _line_of(lines, node, "kill", "term"),
               path + ": the kill level {low} is above the term level {high}")


def _check_disk_levels(r, levels: DiskLevels, lines, node, path) -> None:
    _not_above(r, levels.kill, levels.clean, _line_of(lines, node, "kill", "clean"),
               path + ": the kill level {low} is above the clean level {high}")


def _check_match(r, match: Match, lines, node, path) -> None:
    if not lines:
        r.bad(node, f"{path}: an empty match would select every process; give at least one key")


def _check_rule(r, rule: Rule, lines, node, path) -> None:
    if not rule.protect and rule.adjust == 0:
        r.bad(node, f"{path}: a rule needs 'protect: true' or a non-zero 'adjust'")


def _check_disk(r, disk: DiskConfig, lines, node, path) -> None:
    where = _line_of(lines, node, "until")
    _not_above(r, disk.free.clean, disk.until.free, where,
               path + ".until.free: {high} is below the clean level {low}")
    _not_above(r, disk.inodes_free.clean, disk.until.inodes_free, where,
               path + ".until.inodes_free: {high} is below the clean level {low}")


_MATCH = _Section(
    {"name": ("name", _regex), "cmdline": ("cmdline", _regex), "exe": ("exe", _regex),
     "cgroup": ("cgroup", _regex), "user": ("user", _user), "pid": ("pid", _pid),
     "descendant_of": ("descendant_of", _pid)},
    check=_check_match)

_RULE = _Section(
    {"match": ("match", _MATCH), "protect": ("protect", _bool), "adjust": ("adjust", _int_in(-1000, 1000))},
    required=("match",), check=_check_rule)

_LEVELS = _Section({"term": ("term", _size), "kill": ("kill", _size)}, check=_check_levels)

_PRESSURE = _Section({"full_avg10": ("full_avg10", _number_in(0, 100)), "for": ("for_", _duration)})

_MEMORY = _Section({
    "enabled": ("enabled", _bool), "interval": ("interval", _interval),
    "available": ("available", _LEVELS), "swap_free": ("swap_free", _LEVELS),
    "pressure": ("pressure", _PRESSURE), "term_timeout": ("term_timeout", _duration),
    "kill": ("kill", _choice(*KILL_UNITS)),
})

_CPU = _Section({
    "enabled": ("enabled", _bool), "interval": ("interval", _interval),
    "usage": ("usage", _percent), "load_per_cpu": ("load_per_cpu", _number_in(0, 1e6)),
    "pressure": ("pressure", _Section({"some_avg10": ("some_avg10", _number_in(0, 100))})),
    "for": ("for_", _duration), "min_share": ("min_share", _percent),
    "kill": ("kill", _choice(*KILL_UNITS)), "term_timeout": ("term_timeout", _duration),
    "cooldown": ("cooldown", _duration),
})

_DISK_LEVELS = _Section({"clean": ("clean", _size), "kill": ("kill", _size)}, check=_check_disk_levels)

_CLEANUP = _Section({
    "path": ("path", _cleanup_dir), "glob": ("glob", _file_glob),
    "min_age": ("min_age", _duration), "recursive": ("recursive", _bool),
}, required=("path", "glob"))

_DISK = _Section({
    "path": ("path", _absolute_path), "interval": ("interval", _interval),
    "free": ("free", _DISK_LEVELS), "inodes_free": ("inodes_free", _DISK_LEVELS),
    "until": ("until", _Section({"free": ("free", _size), "inodes_free": ("inodes_free", _size)})),
    "cleanup": ("cleanup", _list_of(lambda r, n, p, d: _CLEANUP(r, n, p, CleanupRule()))),
    "truncate_deleted": ("truncate_deleted", _list_of(_absolute_path)),
    "writer_rate": ("writer_rate", _rate), "term_timeout": ("term_timeout", _duration),
}, required=("path",), check=_check_disk)

def _check_io(r, io: IoConfig, lines, node, path) -> None:
    """An enabled IO shield with no level at all could never act: say so."""
    if not io.enabled:
        return
    levels = [d for d in io.devices if d.iops or d.utilization or d.await_ms]
    if not levels and not io.pressure.full_avg10:
        r.bad(_line_of(lines, node, "enabled"),
              f"{path}: enabled but no level is set (a device's iops, utilization "
              f"or await, or pressure.full_avg10)")


_IO_DEVICE = _Section({
    "device": ("device", _device), "iops": ("iops", _int_in(0, 2**32)),
    "utilization": ("utilization", _percent), "await": ("await_ms", _millis),
})

_IO = _Section({
    "enabled": ("enabled", _bool), "interval": ("interval", _interval),
    "devices": ("devices", _list_of(lambda r, n, p, d: _IO_DEVICE(r, n, p, IoDevice()))),
    "pressure": ("pressure", _PRESSURE), "for": ("for_", _duration),
    "min_share": ("min_share", _percent), "kill": ("kill", _choice(*KILL_UNITS)),
    "term_timeout": ("term_timeout", _duration), "cooldown": ("cooldown", _duration),
}, check=_check_io)

_NETWORK = _Section({"duplicate_mac": ("duplicate_mac", _Section({
    "enabled": ("enabled", _bool), "interval": ("interval", _interval),
    "ignore": ("ignore", _list_of(_regex)), "action": ("action", _choice(*MAC_ACTIONS)),
}))})

_HOOK = _Section({
    "command": ("command", _command), "events": ("events", _set_of(HOOK_EVENTS)),
    "resources": ("resources", _set_of(RESOURCES)), "before_kill": ("before_kill", _bool),
    "timeout": ("timeout", _interval),
}, required=("command",))


def _scope(r: _Reader, node: yaml.Node, path: str, default: Any) -> Any:
    return None if _is_null(node) else _MATCH(r, node, path, Match())


def _disks(r: _Reader, node: yaml.Node, path: str, default: Any) -> Any:
    """The disks list; two entries for one file system would fight, so refuse that."""
    if not isinstance(node, yaml.SequenceNode):
        return _list_of(_disk)(r, node, path)  # null, or the "expected a list" problem
    disks = [_disk(r, child, f"{path}[{i}]", None) for i, child in enumerate(node.value)]
    first_line: dict[str, int] = {}
    for disk in disks:
        if disk is _BAD:
            continue  # its problem is recorded; still compare the valid entries
        if disk.path in first_line:
            r.bad(disk.line, f"{path}: '{disk.path}' is already watched by the entry at line {first_line[disk.path]}")
        first_line.setdefault(disk.path, disk.line)
    return _BAD if _BAD in disks else tuple(disks)


def _disk(r: _Reader, node: yaml.Node, path: str, default: Any) -> Any:
    return _DISK(r, node, path, DiskConfig())


_TOP = _Section({
    "dry_run": ("dry_run", _bool),
    "daemon": ("daemon", _Section({
        "lock_memory": ("lock_memory", _bool), "oom_score_adj": ("oom_score_adj", _int_in(-1000, 1000)),
        "nice": ("nice", _int_in(-20, 19)),
    })),
    "log": ("log", _Section({
        "kmsg": ("kmsg", _bool), "stderr": ("stderr", _bool), "level": ("level", _choice(*LOG_LEVELS)),
    })),
    "scope": ("scope", _scope),
    "rules": ("rules", _list_of(lambda r, n, p, d: _RULE(r, n, p, Rule()))),
    "memory": ("memory", _MEMORY),
    "cpu": ("cpu", _CPU),
    "disks": ("disks", _disks),
    "io": ("io", _IO),
    "network": ("network", _NETWORK),
    "hooks": ("hooks", _list_of(lambda r, n, p, d: _HOOK(r, n, p, Hook()))),
})

# The lists a file may leave out; they then come from the embedded default.
_DEFAULTED_LISTS = ("rules", "disks", "hooks")


# ---------------------------------------------------------------- loading


def _yaml_problem(filename: str, text: str, err: yaml.YAMLError) -> Problem:
    """A YAML syntax error as a Problem at the line its marker points to."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is not None:
        line = mark.line + 1
    elif isinstance(getattr(err, "position", None), int):  # ReaderError: a bad character
        line = text.count("\n", 0, err.position) + 1
    else:
        line = 1
    problem = getattr(err, "problem", None) or getattr(err, "reason", None) or str(err)
    context = getattr(err, "context", None)
    message = f"YAML syntax error: {context}, {problem}" if context else f"YAML syntax error: {problem}"
    return Problem(filename, line, message)


def _parse(text: str, filename: str, fill_lists: bool) -> Config:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError([_yaml_problem(filename, text, err)]) from None
    if root is None:  # an empty file: every key has its default
        root = yaml.ScalarNode("tag:yaml.org,2002:null", "", yaml.Mark(filename, 0, 0, 0, None, None))
    reader = _Reader(filename)
    config = _TOP(reader, root, "", Config(source=filename))
    if reader.problems:
        raise ConfigError(reader.problems)
    if fill_lists:
        config = _fill_lists(config, root)
    return config


def _fill_lists(config: Config, root: yaml.Node) -> Config:
    """Lists the file leaves out take the embedded default's lists."""
    given = set()
    if isinstance(root, yaml.MappingNode):
        given = {key.value for key, _ in root.value if isinstance(key, yaml.ScalarNode)}
    missing = [key for key in _DEFAULTED_LISTS if key not in given]
    if not missing:
        return config
    default = default_config()
    return dataclasses.replace(config, **{key: getattr(default, key) for key in missing})


def load_config_text(text: str, filename: str = "<string>") -> Config:
    """The Config of a YAML text; raises ConfigError listing every problem."""
    return _load_text(text, filename, fill_lists=True)


def _load_text(text: str, filename: str, fill_lists: bool) -> Config:
    try:
        return _parse(text, filename, fill_lists)
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError([Problem(filename, 0, "the document is nested too deeply")]) from None
    except Exception as err:  # noqa: BLE001 - the promise is: never a traceback
        raise ConfigError([Problem(filename, 0, f"cannot load: {type(err).__name__}: {err}")]) from None


def _read_checked(path: str, check_owner: bool) -> str:
    """The file's text, after refusing a file that anyone but root can change."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as err:
        raise _refusal(path, f"cannot open: {err.strerror}") from None
    try:
        # fstat the open file, not the path, so a file swapped in between is not missed.
        _check_safe(path, os.fstat(fd), check_owner)
        if check_owner:
            _check_directories(path)
        data = _read_all(path, fd)
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _refusal(path, "not UTF-8 text", data.count(b"\n", 0, err.start) + 1) from None


def _refusal(path: str, message: str, line: int = 0) -> ConfigError:
    return ConfigError([Problem(path, line, message)])


def _check_safe(path: str, info: os.stat_result, check_owner: bool) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise _refusal(path, "not a regular file")
    if check_owner and info.st_uid != 0:
        raise _refusal(path, f"refused: owned by uid {info.st_uid}, not root "
                             "(whoever can change this file decides what a root daemon kills)")
    if check_owner and info.st_mode & 0o022:
        raise _refusal(path, f"refused: writable by group or others "
                             f"(mode {stat.S_IMODE(info.st_mode):04o}); chmod go-w it")


def _check_directories(path: str) -> None:
    """A safe file in a directory another user may write is not safe: that user
    can rename it away and put a link to any root-owned file in its place. So
    every directory above the file, as named and as resolved, must pass the
    test cleanup directories pass (root-owned, writable by nobody else; a
    sticky one like /tmp is fine)."""
    from oorkiller.act.cleanup import untrusted_reason
    for named in dict.fromkeys((os.path.abspath(path), os.path.realpath(path))):
        directory = os.path.dirname(named)
        while True:
            try:
                reason = untrusted_reason(os.stat(directory), ancestor=True)
            except OSError as err:
                raise _refusal(path, f"cannot check {directory}: {err.strerror}") from None
            if reason:
                raise _refusal(path, f"refused: the directory {directory} is {reason} "
                                     "(whoever can write it can replace this file)")
            if directory == "/":
                break
            directory = os.path.dirname(directory)


def _read_all(path: str, fd: int) -> bytes:
    chunks, size = [], 0
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise _refusal(path, f"too large (over {MAX_FILE_BYTES} bytes) for a configuration file")
    except OSError as err:
        raise _refusal(path, f"cannot read: {err.strerror}") from None
    return b"".join(chunks)


def load_config(path: str | os.PathLike, check_owner: bool = True) -> Config:
    """The Config of a file; ConfigError for a missing, unsafe or invalid file."""
    filename = os.fspath(path)
    return load_config_text(_read_checked(filename, check_owner), filename)


def check_file(path: str | os.PathLike, check_owner: bool = True) -> list[str]:
    """`FILE:LINE: message` for each problem of the file; empty when it is valid."""
    try:
        load_config(path, check_owner)
    except ConfigError as err:
        return [str(problem) for problem in err.problems]
    return []


def default_config_text() -> str:
    """The embedded default configuration, with its comments."""
    packaged = importlib.resources.files("oorkiller").joinpath("default.yaml")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    # An in-place development build has no package data: use the source tree's file.
    return (Path(__file__).resolve().parent.parent / "config" / "oorkiller.yaml").read_text(encoding="utf-8")


@functools.cache
def default_config() -> Config:
    """The embedded default configuration (frozen, so one shared object is safe)."""
    return _load_text(default_config_text(), "<default>", fill_lists=False)
