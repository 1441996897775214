"""Human-readable tables for `status` and `candidates` (the --json forms are raw)."""
from __future__ import annotations

from oorkiller.quantities import format_size

SIZE_KEYS = {"available", "total", "term_level", "kill_level", "swap_total", "swap_free",
             "rss", "free", "free_level", "clean_level", "reclaim"}


def printable(raw: bytes) -> str:
    """A process-controlled name made safe for a terminal: no escapes, no newlines."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _cell(key: str, value) -> str:
    if isinstance(value, bytes):
        return printable(value)
    if key in SIZE_KEYS and isinstance(value, int):
        return format_size(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def table(rows: list[list[str]], out) -> None:
    """Left-aligned columns, widths from the widest cell."""
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")


def _safe_cell(key: str, value) -> str:
    """A candidates cell: names, cgroup paths and reasons carry text a
    process chose (its cgroup's name, a rule's view of its name), so every
    cell, not only raw bytes, is made safe for root's terminal."""
    return printable(_cell(key, value).encode("utf-8", "surrogateescape"))


def print_candidates(result: dict, out) -> None:
    ranked = result.get("ranked", [])
    out.write(f"{result['resource']}: {len(ranked)} candidate(s), best first\n")
    if ranked:
        keys = [k for k in ranked[0].keys()]
        rows = [[k.upper() for k in keys]]
        rows += [[_safe_cell(k, row.get(k, "")) for k in keys] for row in ranked]
        table(rows, out)
    excluded = result.get("excluded", [])
    if excluded:
        out.write(f"\nexcluded ({len(excluded)}):\n")
        rows = [["PID", "NAME", "WHY"]]
        rows += [[str(e["pid"]), _safe_cell("name", e["name"]), _safe_cell("reason", e["reason"])]
                 for e in excluded]
        table(rows, out)


# ---------------------------------------------------------------- status
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


def human(key: str, value, resource: str) -> str:
    """One status figure for a person; `--json` keeps the exact numbers."""
    if value is None:
        return "-"                                # not measured here (e.g. no PSI)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, bytes):
        value = printable(value)
    if isinstance(value, str):
        return f'"{value}"' if " " in value else value
    unit = unit_of(key, resource)
    if unit == "bytes":
        return format_size(value)
    number = f"{value:.3g}" if isinstance(value, float) else str(value)
    return {"percent": f"{number}%", "ms": f"{number}ms", "s": f"{number}s"}.get(unit, number)


def fields(key: str, value, resource: str):
    """(name, text) pairs: a nested dict flattens to `key.sub`, a list of plain
    values joins with commas, a list of dicts numbers its items `key.0.sub`."""
    if isinstance(value, dict):
        for sub, inner in value.items():
            yield from fields(f"{key}.{sub}", inner, resource)
    elif isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            yield key, ",".join(human(key, v, resource) for v in value)
        else:
            for index, inner in enumerate(value):
                yield from fields(f"{key}.{index}", inner, resource)
    else:
        yield key, human(key, value, resource)


def print_status(rows: list[dict], out) -> None:
    """One line per row: resource, state, then `key=value` with every figure in its unit."""
    for row in rows:
        resource = row.get("resource", "?")
        state = row.get("state", "?")
        parts = [f"{name}={text}" for k, v in row.items() if k not in ("resource", "state")
                 for name, text in fields(k, v, resource)]
        out.write(f"{resource:<8} {state:<7} " + " ".join(parts) + "\n")
