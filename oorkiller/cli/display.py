"""Human-readable tables for `status` and `candidates` (the --json forms are raw)."""
from __future__ import annotations

from oorkiller.quantities import format_size, unit_of

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
    choice = result.get("choice")
    if "choice" in result and choice is None and ranked:
        out.write("would choose nobody now (no unit is a candidate by these figures)\n")
    if choice:
        out.write(f"would choose {choice['pid']} {_safe_cell('name', choice['name'])} "
                  f"({choice['unit']}): {_safe_cell('why', choice['why'])}; "
                  f"runner-up {_safe_cell('runner_up', choice['runner_up'])}\n")
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
