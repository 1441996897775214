"""The checking mini-language: YAML nodes in, checked values or problems out.

The file is read with `yaml.compose`, not `yaml.safe_load`, so every value
keeps the node it came from and therefore its line number. A converter
checks one node and returns its value, or records a `Problem` with that
line and returns `_BAD`; checking goes on, so all problems of a file are
reported at once.

A section is one YAML mapping that fills one dataclass. It is derived from
the dataclass itself (`_section_of`): a field declared with `_key` or
`_nested` is a YAML key, and its declaration holds the key's name, its
converter and its default; a field declared plainly (`line`, `source`) is
filled by the loader, never by the file. A class's `_check` attribute, when
it has one, is its cross-field rule (a kill level above its term level): the
section runs it once every key of the mapping converted cleanly.
"""

from __future__ import annotations

import dataclasses
import functools
import posixpath
import pwd
import re
from dataclasses import dataclass
from collections.abc import Callable

# `Any` appears in annotations only, never evaluated (postponed annotations):
# the daemon does not import typing (400 kB of memory) for them.
# The aliases below are built at run time: `object` stands for Any there.

import yaml

from oorkiller.quantities import parse_count, parse_duration, parse_percent, parse_rate, parse_size


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int  # 1-based; 0 means the file as a whole (cannot open, bad owner)
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


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


# ---------------------------------------------------------------- the converters

# A converter checks one value: (reader, node, dotted path, default) -> value
# or _BAD. The default only matters to sections, which fill it in key by key.
Converter = Callable[[_Reader, yaml.Node, str, object], object]

# The second step of a converter: (reader, node, dotted path, the value the
# first step returned) -> value or _BAD. See `_after`.
Refine = Callable[[_Reader, yaml.Node, str, object], object]


def _after(base: Converter) -> Callable[[Refine], Converter]:
    """Makes a converter of a refining step: `base` converts the node first,
    and a value `base` refused stays refused without reaching the step."""
    def make(refine: Refine) -> Converter:
        def convert(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
            value = base(r, node, path, None)
            return value if value is _BAD else refine(r, node, path, value)
        return convert
    return make


def _scalar(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
    """Any single value: the first step of most converters."""
    return r.scalar(node, path)


@_after(_scalar)
def _bool(r: _Reader, node: yaml.Node, path: str, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    return r.bad(node, f"{path}: expected true or false, got {_shown(node)}")


def _int_in(low: int, high: int) -> Converter:
    @_after(_scalar)
    def convert(r: _Reader, node: yaml.Node, path: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            return r.bad(node, f"{path}: expected a whole number, got {_shown(node)}")
        if not low <= value <= high:
            return r.bad(node, f"{path}: {value} is out of range {low}..{high}")
        return value
    return convert


def _number_in(low: float, high: float) -> Converter:
    @_after(_scalar)
    def convert(r: _Reader, node: yaml.Node, path: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return r.bad(node, f"{path}: expected a plain number, got {_shown(node)}")
        if not low <= value <= high:  # also false for NaN
            return r.bad(node, f"{path}: {value} is out of range {low:g}..{high:g}")
        return float(value)
    return convert


def _parsed(parse: Callable[[Any], Any]) -> Converter:
    """A converter from a quantities.py parser: its ValueError becomes the problem."""
    @_after(_scalar)
    def convert(r: _Reader, node: yaml.Node, path: str, value: Any) -> Any:
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
_count = _parsed(parse_count)
_duration = _parsed(parse_duration)
_interval = _parsed(_positive(parse_duration))
_percent = _parsed(parse_percent)
_rate = _parsed(parse_rate)
_millis = _parsed(lambda value: parse_duration(value) * 1000)


@_after(_scalar)
def _string(r: _Reader, node: yaml.Node, path: str, value: Any) -> Any:
    if isinstance(value, str):
        return value
    return r.bad(node, f"{path}: expected text, got {_shown(node)}")


def _choice(*choices: str) -> Converter:
    @_after(_string)
    def convert(r: _Reader, node: yaml.Node, path: str, value: str) -> Any:
        if value in choices:
            return value
        return r.bad(node, f"{path}: unknown value {_shown(node)} (expected {' | '.join(choices)})")
    return convert


@_after(_string)
def _regex(r: _Reader, node: yaml.Node, path: str, value: str) -> Any:
    try:
        return re.compile(value)
    except (re.error, RecursionError, OverflowError, ValueError) as err:
        return r.bad(node, f"{path}: bad regular expression {_shown(node)}: {err}")


@_after(_scalar)
def _user(r: _Reader, node: yaml.Node, path: str, value: Any) -> Any:
    """A uid, or a user name resolved to its uid now (an unknown name is an error)."""
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


@_after(_string)
def _absolute_path(r: _Reader, node: yaml.Node, path: str, value: str) -> Any:
    if not value.startswith("/"):
        return r.bad(node, f"{path}: must be an absolute path, got {_shown(node)}")
    if ".." in value.split("/"):
        return r.bad(node, f"{path}: must not contain '..', got {_shown(node)}")
    if "\0" in value:
        return r.bad(node, f"{path}: must not contain a NUL character")
    # Linux reads a leading "//" as "/", and so do we, so two spellings of a path compare equal.
    return posixpath.normpath("/" + value.lstrip("/"))


@_after(_string)
def _metrics_file(r: _Reader, node: yaml.Node, path: str, value: str) -> Any:
    """'' (off) or an absolute path ending in `.prom` (node_exporter reads only those)."""
    if value == "":
        return ""
    if not value.startswith("/") or ".." in value.split("/") or "\0" in value:
        return r.bad(node, f"{path}: must be an absolute path, got {_shown(node)}")
    if not value.endswith(".prom"):
        return r.bad(node, f"{path}: node_exporter's textfile collector reads only *.prom files, "
                           f"got {_shown(node)}")
    return posixpath.normpath(value)


@_after(_absolute_path)
def _cleanup_dir(r: _Reader, node: yaml.Node, path: str, value: str) -> Any:
    if value == "/":
        return r.bad(node, f"{path}: cleanup of the whole file system '/' is refused")
    return value


@_after(_string)
def _file_glob(r: _Reader, node: yaml.Node, path: str, value: str) -> Any:
    if not value or "/" in value or value in (".", ".."):
        return r.bad(node, f"{path}: a glob of file names (no '/'), got {_shown(node)}")
    return value


@_after(_string)
def _device(r: _Reader, node: yaml.Node, path: str, value: str) -> Any:
    if value == "*" or re.fullmatch(r"[A-Za-z0-9_.:!-]+", value):
        return value
    return r.bad(node, f"{path}: expected '*' or a kernel device name (sda, nvme0n1), got {_shown(node)}")


# A rule over the valid items of a list (two disks on one file system):
# (reader, the items that converted, dotted path of the list) -> None.
ListCheck = Callable[[_Reader, list[object], str], None]


def _list_of(item: Converter, check: ListCheck | None = None) -> Converter:
    """A YAML list whose items all pass `item`; null is the empty list.

    `check`, when given, sees the items that converted even if others did
    not, so a bad entry does not hide a problem between the good ones.
    """
    def convert(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
        if _is_null(node):
            return ()
        if not isinstance(node, yaml.SequenceNode):
            return r.bad(node, f"{path}: expected a list, got {_shown(node)}")
        items = [item(r, child, f"{path}[{i}]", None) for i, child in enumerate(node.value)]
        if check:
            check(r, [value for value in items if value is not _BAD], path)
        return _BAD if _BAD in items else tuple(items)
    return convert


def _set_of(choices: frozenset[str]) -> Converter:
    @_after(_list_of(_choice(*sorted(choices))))
    def convert(r: _Reader, node: yaml.Node, path: str, items: tuple[str, ...]) -> Any:
        if not items:
            return r.bad(node, f"{path}: an empty list would never run the hook; leave the key out for all")
        return frozenset(items)
    return convert


@_after(_list_of(_string))
def _argv(r: _Reader, node: yaml.Node, path: str, argv: tuple[str, ...]) -> Any:
    if not argv or not argv[0]:
        return r.bad(node, f"{path}: the command is empty")
    return argv


def _command(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
    if isinstance(node, yaml.ScalarNode) and not _is_null(node):
        return r.bad(node, f"{path}: a command is a list of arguments, not a shell string: "
                           f"write [/path/to/program, arg, ...]")
    return _argv(r, node, path)


def _optional(item: Converter) -> Converter:
    """`item`, or None when the file writes null."""
    def convert(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
        return None if _is_null(node) else item(r, node, path, default)
    return convert


def _mapping_of(cls: type) -> Converter:
    """A mapping that fills a fresh `cls()`: the converter of a list's items,
    which have no default of their own to start from."""
    def convert(r: _Reader, node: yaml.Node, path: str, default: Any = None) -> Any:
        return _section_of(cls)(r, node, path, cls())
    return convert


# ---------------------------------------------------------------- declaring a key


@dataclass(frozen=True, slots=True)
class _KeySpec:
    convert: Converter
    name: str | None  # the YAML key when it is not the field's name (`for` fills `for_`)
    required: bool


_METADATA_KEY = "oorkiller.config.key"  # where a field's metadata holds its _KeySpec


def _key(convert: Converter, default: Any, *, name: str | None = None, required: bool = False) -> Any:
    """A dataclass field that is a YAML key: its converter, its default, and
    its key name when that differs from the field's name."""
    spec = _KeySpec(convert, name, required)
    return dataclasses.field(default=default, metadata={_METADATA_KEY: spec})


def _nested(default: Any, *, name: str | None = None, required: bool = False) -> Any:
    """A field that is a mapping of its own: the section of the default's class."""
    return _key(_section_of(type(default)), default, name=name, required=required)


# ---------------------------------------------------------------- sections

# A cross-field rule, a class's `_check` attribute:
# (the filled object, reader, lines of the valid keys, mapping node, dotted path) -> None.
Check = Callable[[object, _Reader, dict[str, int], yaml.Node, str], None]


@dataclass(frozen=True)
class _Section:
    """The keys of one YAML mapping and the dataclass it fills.

    `keys` maps a YAML key to (attribute, converter). `check`, when given,
    sees the filled object and the lines of the keys that were valid, for
    rules that involve two keys (a kill level above its term level).
    """

    keys: dict[str, tuple[str, Converter]]
    required: tuple[str, ...] = ()
    check: Check | None = None

    def __call__(self, r: _Reader, node: yaml.Node, path: str, default: Any) -> Any:
        if _is_null(node):
            return self._finish(r, node, path, default, {}, {}, set())
        if not isinstance(node, yaml.MappingNode):
            return r.bad(node, f"{path}: expected a mapping of keys, got {_shown(node)}")
        values, lines, failed = {}, {}, set()
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = self._known_key(r, key_node, path, first_seen)
            if key is None:
                continue
            attr, convert = self.keys[key]
            value = convert(r, value_node, _join(path, key), getattr(default, attr))
            if value is _BAD:
                failed.add(key)
            else:
                values[attr], lines[key] = value, key_node.start_mark.line + 1
        return self._finish(r, node, path, default, values, lines, failed)

    def _known_key(self, r: _Reader, key_node: yaml.Node, path: str, first_seen: dict[str, int]) -> str | None:
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
            self.check(obj, r, lines, node, path)
        return _BAD if failed or missing else obj


@functools.cache
def _section_of(cls: type) -> _Section:
    """The section that fills `cls`, read off its fields in their order (the
    order the unknown-key message lists them in)."""
    keys: dict[str, tuple[str, Converter]] = {}
    required: list[str] = []
    for field in dataclasses.fields(cls):
        spec = field.metadata.get(_METADATA_KEY)
        if spec is None:
            continue  # filled by the loader, not a key of the file
        name = spec.name or field.name
        keys[name] = (field.name, spec.convert)
        if spec.required:
            required.append(name)
    return _Section(keys, tuple(required), getattr(cls, "_check", None))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _line_of(lines: dict[str, int], node: yaml.Node, *keys: str) -> int:
    """The line of the first of `keys` the file gave, else the mapping's line."""
    for key in keys:
        if key in lines:
            return lines[key]
    return node.start_mark.line + 1
