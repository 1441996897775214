"""Metrics for a fleet, in the node_exporter textfile convention.

Every `metrics.interval` the daemon writes a `.prom` file (Prometheus text
exposition format) that node_exporter's textfile collector serves; the file
is written beside its final name and renamed over it, so a scrape never sees
half a file. What it holds:

- per shield, every number of its `status()` rows as a gauge
  `oorkiller_<resource>_<key>[_bytes|_percent|_seconds|_milliseconds]`, the
  unit by the key's name (quantities.unit_of), labelled by `path` or
  `device` where a row has one; `oorkiller_acting{resource}` 1 while the
  shield is acting;
- `oorkiller_actions_total{resource,event}`: every record the engine wrote;
- `oorkiller_records_total{event}`: every record the daemon emitted;
- `oorkiller_process_cpu_seconds_total`, `oorkiller_process_resident_memory_bytes`.
"""
from __future__ import annotations

import collections
import os
import re
import threading

from oorkiller.quantities import unit_of

PREFIX = "oorkiller"
SUFFIX = {"bytes": "_bytes", "percent": "_percent", "s": "_seconds", "ms": "_milliseconds", "number": ""}
STRIP = ("_pct", "_bytes", "_ms", "_s")        # a unit already in the key's name
LABEL_KEYS = ("path", "device")
HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class Counters:
    """Thread-safe counters: (name, labels) -> value."""

    def __init__(self):
        self._values: dict = collections.Counter()
        self._lock = threading.Lock()

    def count(self, name: str, **labels) -> None:
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
        with self._lock:
            self._values[key] += 1

    def samples(self) -> list[tuple[str, dict, float]]:
        with self._lock:
            return [(name, dict(labels), value) for (name, labels), value in sorted(self._values.items())]


def metric_name(resource: str, key: str) -> str:
    unit = unit_of(key, resource)
    base = key
    for ending in STRIP:
        if base.endswith(ending):
            base = base[: -len(ending)]
            break
    name = re.sub(r"[^a-zA-Z0-9_]", "_", f"{PREFIX}_{resource}_{base}")
    return name + SUFFIX[unit]


def status_samples(rows) -> list[tuple[str, dict, float]]:
    """Gauges from the shields' status rows (plain dicts of exact numbers)."""
    found = []
    for row in rows:
        resource = str(row.get("resource", "unknown"))
        labels = {k: str(row[k]) for k in LABEL_KEYS if row.get(k) is not None}
        found.append((f"{PREFIX}_acting", {"resource": resource, **labels},
                      1.0 if row.get("state") == "acting" else 0.0))
        for key, value in row.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or key in LABEL_KEYS:
                continue
            found.append((metric_name(resource, key), labels, float(value)))
    return found


def process_samples(proc_root: str = "/proc") -> list[tuple[str, dict, float]]:
    """The daemon's own CPU time (every thread) and resident memory."""
    try:
        with open(f"{proc_root}/self/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        with open(f"{proc_root}/self/statm", "rb") as f:
            resident = int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return []
    cpu = (int(fields[11]) + int(fields[12])) / HZ          # utime + stime
    return [(f"{PREFIX}_process_cpu_seconds_total", {}, cpu),
            (f"{PREFIX}_process_resident_memory_bytes", {}, float(resident))]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(samples) -> str:
    """The exposition text: one TYPE line per metric, then its samples."""
    by_name: dict[str, list] = {}
    for name, labels, value in samples:
        by_name.setdefault(name, []).append((labels, value))
    lines = []
    for name in sorted(by_name):
        lines.append(f"# TYPE {name} {'counter' if name.endswith('_total') else 'gauge'}")
        seen = set()
        for labels, value in by_name[name]:
            text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
            if text in seen:
                continue                 # one sample per label set
            seen.add(text)
            number = str(int(value)) if float(value).is_integer() else repr(float(value))
            lines.append(f"{name}{{{text}}} {number}" if text else f"{name} {number}")
    return "\n".join(lines) + "\n"


def write_textfile(path: str, text: str) -> None:
    """Write `text` to `path` atomically: beside it, then renamed over it."""
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
    os.replace(temporary, path)
