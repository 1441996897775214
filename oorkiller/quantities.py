"""Sizes, durations, percentages and rates as operators write them.

Every parser takes the text of one configuration value and returns a plain
number (or a `Size`); bad text raises `ValueError` with a message that
says what was expected, so the configuration loader can show it next to
the file's line number. The formatters give back text the parsers accept.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Binary units first in the table is irrelevant: lookup is by exact name.
# The IEC names (KiB) are powers of 1024; the SI names (KB) powers of 1000,
# as on a disk's label. Single letters (K, M, G, T) are read as binary, the
# way `free -h`, systemd and most operators mean them.
_SIZE_UNITS = {
    "": 1, "B": 1,
    "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
    "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
    "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3, "TB": 1000 ** 4,
}
_BINARY_STEPS = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# One number, optionally with a fraction, then an optional unit.
_NUMBER_UNIT = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z%/]*)", re.ASCII)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", re.ASCII)

# Anything larger than this is a typo, not a machine (1 EiB).
_MAX_BYTES = 1 << 60


@dataclass(frozen=True, slots=True)
class Size:
    """A size either in bytes or as a percentage of the resource's total.

    `amount` holds bytes when `percent` is false, else percent (0..100).
    """

    amount: float
    percent: bool

    def resolve(self, total: int) -> int:
        """Bytes this size stands for, given the resource's total in bytes."""
        if self.percent:
            return int(total * self.amount / 100)
        return int(self.amount)

    def __str__(self) -> str:
        if self.percent:
            return f"{_plain_number(self.amount)}%"
        return _exact_size(int(self.amount))


@dataclass(frozen=True, slots=True)
class Count:
    """A level of a kernel table (tasks, open files, conntrack entries):
    a number of entries, or a percentage of the table's limit."""

    amount: float
    percent: bool

    def resolve(self, limit: int) -> int:
        """Entries this level stands for, given the table's limit."""
        if self.percent:
            return int(limit * self.amount / 100)
        return int(self.amount)

    def __str__(self) -> str:
        return f"{_plain_number(self.amount)}{'%' if self.percent else ''}"

    def described(self, limit: int) -> str:
        """`90% (29491)` of a percentage, `12000` of a count: for a reason text."""
        return f"{self} ({self.resolve(limit)})" if self.percent else str(self)


def _plain_number(value: float) -> str:
    """`5` for 5.0, `2.5` for 2.5: the shortest text that reads back equal."""
    if value == int(value):
        return str(int(value))
    return repr(value)


def _exact_size(nbytes: int) -> str:
    """The largest binary unit that divides `nbytes` exactly (`64MiB`), else bytes."""
    for name, factor in _BINARY_STEPS:
        if nbytes and nbytes % factor == 0:
            return f"{nbytes // factor}{name}"
    return str(nbytes)


def _text_of(value: object, what: str) -> str:
    """The value as stripped text; YAML gives plain numbers as int or float."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a {what}, got {value!r}")
    return str(value).strip()


def _split(text: str, what: str, example: str) -> tuple[float, str]:
    """Split `12.5MiB` into (12.5, "MiB"); refuse signs and stray characters."""
    if text.startswith("-"):
        raise ValueError(f"a {what} cannot be negative: {text!r}")
    found = _NUMBER_UNIT.fullmatch(text)
    if not found:
        raise ValueError(f"not a {what}: {text!r} (expected e.g. {example})")
    number = float(found.group(1))
    if not math.isfinite(number):
        raise ValueError(f"not a {what}: {text!r}")
    return number, found.group(2)


def parse_size(text: str | int) -> Size:
    """`512KiB`, `64MiB`, `2GB`, `4096` (bytes) or `5%` / `2.5%` of the total."""
    example = "512KiB, 64MiB, 2GiB, 4096 or 5%"
    raw = _text_of(text, "size")
    number, unit = _split(raw, "size", example)
    if unit == "%":
        if number > 100:
            raise ValueError(f"a percentage cannot be above 100%: {raw!r}")
        return Size(number, True)
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit {unit!r} in {raw!r} (expected e.g. {example})")
    nbytes = number * _SIZE_UNITS[unit]
    if nbytes != int(nbytes):
        raise ValueError(f"a size must be a whole number of bytes: {raw!r}")
    if nbytes > _MAX_BYTES:
        raise ValueError(f"size too large: {raw!r}")
    return Size(float(int(nbytes)), False)


def parse_count(text: str | int) -> Count:
    """`90%` of a table's limit, or a whole number of entries (`12000`)."""
    raw = _text_of(text, "count")
    number, unit = _split(raw, "count", "90% or 12000")
    if unit == "%":
        if number > 100:
            raise ValueError(f"a percentage cannot be above 100%: {raw!r}")
        return Count(number, True)
    if unit or number != int(number):
        raise ValueError(f"a count is a whole number or a percentage: {raw!r} (expected e.g. 90% or 12000)")
    return Count(number, False)


def parse_duration(text: str | int | float) -> float:
    """Seconds from `250ms`, `1s`, `5m`, `1h`, `1d`, `1m30s`; a plain number is seconds."""
    example = "250ms, 1s, 5m, 1h or 1m30s"
    raw = _text_of(text, "duration")
    if raw.startswith("-"):
        raise ValueError(f"a duration cannot be negative: {raw!r}")
    if re.fullmatch(r"\d+(?:\.\d+)?", raw, re.ASCII):
        return float(raw)
    parts = _DURATION_PART.findall(raw)
    if not parts or "".join(n + u for n, u in parts) != raw:
        raise ValueError(f"not a duration: {raw!r} (expected e.g. {example})")
    seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds > 100 * 365 * 86400:
        raise ValueError(f"duration too long: {raw!r}")
    return seconds


def parse_percent(text: str | int) -> float:
    """`98%` or `2.5%` as a fraction 0..1. A bare `0` is allowed and means 0."""
    raw = _text_of(text, "percentage")
    number, unit = _split(raw, "percentage", "98%")
    if unit != "%":
        if unit == "" and number == 0:
            return 0.0
        raise ValueError(f"a percentage needs a % sign: {raw!r} (expected e.g. 98%)")
    if number > 100:
        raise ValueError(f"a percentage cannot be above 100%: {raw!r}")
    return number / 100


def parse_rate(text: str | int) -> int:
    """Bytes per second from `50MiB/s`; a plain number is bytes per second."""
    raw = _text_of(text, "rate")
    size_text = raw[:-2].rstrip() if raw.endswith("/s") else raw
    if size_text.endswith("%"):
        raise ValueError(f"a rate cannot be a percentage: {raw!r} (expected e.g. 50MiB/s)")
    try:
        size = parse_size(size_text)
    except ValueError as err:
        raise ValueError(f"not a rate: {raw!r} (expected e.g. 50MiB/s): {err}") from None
    return int(size.amount)


def format_size(nbytes: int | float) -> str:
    """Human text for a byte count: `512B`, `64MiB`, `3.1GiB` (one decimal at most)."""
    sign = "-" if nbytes < 0 else ""
    nbytes = abs(nbytes)
    for name, factor in _BINARY_STEPS:
        if nbytes >= factor:
            value = round(nbytes / factor, 1)
            return f"{sign}{_plain_number(value)}{name}"
    return f"{sign}{int(nbytes)}B"


def format_duration(seconds: float) -> str:
    """Human text for seconds, to the millisecond, that `parse_duration` reads back: `250ms`, `1m30s`."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    millis = round(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms"  # below a millisecond is noise for a daemon's timers
    whole, rest_ms = divmod(millis, 1000)
    parts = []
    for name, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        count, whole = divmod(whole, factor)
        if count:
            parts.append(f"{count}{name}")
    if rest_ms:
        parts.append(f"{_plain_number(whole + rest_ms / 1000)}s")
    elif whole or not parts:
        parts.append(f"{whole}s")
    return "".join(parts)


def format_percent(fraction: float) -> str:
    """A fraction as a record shows it: 0.412 -> `41.2%`."""
    return f"{fraction * 100:.1f}%"


# The unit of a status figure, by its key's words (split on `_` and `.`).
PERCENT_KEYS, MILLISECOND_KEYS, SECOND_KEYS = {"util", "util_level"}, {"await", "await_level"}, {"for", "interval"}
SIZE_WORDS = {"bytes", "available", "total", "free", "rss", "reclaim", "swap"}
BYTE_LEVEL_RESOURCES = {"memory", "disk"}   # their levels are amounts of bytes


def unit_of(key: str, resource: str) -> str:
    """`percent`, `ms`, `s`, `bytes` or `number`, by the key's name, the first rule that applies:

    - percent: ends in `_pct`, starts with `psi_` (PSI averages are percents), `util`, `util_level`;
    - ms: ends in `_ms`, `await`, `await_level`;
    - s: ends in `_for`, `_timeout` or `_s`, `for`, `interval`;
    - bytes: a word `inodes` makes it a number; else a word `bytes`, `available`, `total`, `free`,
      `rss`, `reclaim` or `swap`, or a word `level`/`levels` in a memory or disk row (their
      levels are amounts of memory and space; a CPU or IO level is in its reading's unit);
    - number: everything else (counts, ratios, load).

    Shields may add keys: a new key is shown by these rules, so naming it
    `..._bytes`, `..._pct` or `..._s` is enough for it to be shown well.
    """
    words = set(key.replace(".", "_").split("_"))
    if key.endswith("_pct") or key.startswith("psi_") or key in PERCENT_KEYS:
        return "percent"
    if key.endswith("_ms") or key in MILLISECOND_KEYS:
        return "ms"
    if key.endswith(("_for", "_timeout", "_s")) or key in SECOND_KEYS:
        return "s"
    if "inodes" in words:
        return "number"
    if words & SIZE_WORDS or (words & {"level", "levels"} and resource in BYTE_LEVEL_RESOURCES):
        return "bytes"
    return "number"
