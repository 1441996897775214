"""Trusted loading: the file's safety checks, reading, parsing, the embedded default.

A root daemon that kills what its file says must only read a file that root
alone can change, in directories root alone can change: anything else is
refused before a byte of it is parsed. Every problem, whether of safety,
of YAML syntax or of a value, is raised as one `ConfigError` listing each
as `FILE:LINE: message`; a caller never sees a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import stat

import yaml

from oorkiller.config.schema import Config
from oorkiller.config.validate import Problem, _Reader, _Section, _section_of
from oorkiller.judge.trust import untrusted_reason

# A configuration file is a few kilobytes; anything this large is a mistake.
MAX_FILE_BYTES = 1 << 20

# The top level of the file, derived from Config like every other section.
_TOP: _Section = _section_of(Config)

# The lists a file may leave out; they then come from the embedded default,
# so an operator who only tunes memory keeps sshd protected.
_DEFAULTED_LISTS = ("rules", "disks", "hooks")


class ConfigError(Exception):
    """An invalid configuration; `.problems` lists every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# ---------------------------------------------------------------- parsing


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


# ---------------------------------------------------------------- reading a trusted file


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


# ---------------------------------------------------------------- warnings

# The match keys whose value the process itself chooses: any user can run a
# program under any name (a link named `sshd`) with any command line.
_FORGEABLE_KEYS = frozenset({"name", "cmdline"})


def _match_keys(match) -> set[str]:
    return {f.name for f in dataclasses.fields(match)
            if f.name != "line" and getattr(match, f.name) is not None}


def config_warnings(config: Config) -> list[str]:
    """`FILE:LINE: warning: ...` for each valid but unsafe setting: today a
    `protect` whose identity rests only on keys a user can forge."""
    warnings = []
    for rule in config.rules:
        keys = _match_keys(rule.match)
        if rule.protect and keys and keys <= _FORGEABLE_KEYS:
            warnings.append(
                f"{config.source}:{rule.line}: warning: this rule protects by "
                f"{' and '.join(sorted(keys))} alone, and any user can take that name "
                f"or command line to be protected too; add cgroup, or exe with user "
                f"(see docs/configuration.md)")
    return warnings


# ---------------------------------------------------------------- the embedded default


def default_config_text() -> str:
    """The embedded default configuration, with its comments."""
    # A plain path next to the package, not importlib.resources: that module
    # (and what it pulls in: zip, bz2, lzma readers) would stay in the
    # daemon's memory for one read at start.
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    packaged = os.path.join(package, "default.yaml")
    if not os.path.isfile(packaged):
        # An in-place development build has no package data: use the source tree's file.
        packaged = os.path.join(os.path.dirname(os.path.realpath(package)), "config", "oorkiller.yaml")
    with open(packaged, encoding="utf-8") as f:
        return f.read()


@functools.cache
def default_config() -> Config:
    """The embedded default configuration (frozen, so one shared object is safe)."""
    return _load_text(default_config_text(), "<default>", fill_lists=False)
