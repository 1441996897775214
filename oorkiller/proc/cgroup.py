"""A process's cgroup: the one reader of /proc/PID/cgroup.

cgroup v2 gives one line `0::/path`; v1 gives one line per hierarchy
(`4:memory:/path`). A unit is keyed by the v2 path when there is one, else
by the first v1 hierarchy listed.
"""
from __future__ import annotations


def cgroup_path(raw: bytes) -> str:
    """The process's cgroup path: the v2 (`0::`) line, else the first v1 line."""
    first = ""
    for line in raw.splitlines():
        parts = line.split(b":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == b"0" and parts[1] == b"":
            return parts[2].decode("utf-8", "surrogateescape")
        if not first:
            first = parts[2].decode("utf-8", "surrogateescape")
    return first


def cgroup_paths(raw: bytes) -> list[str]:
    """Every path of the process's cgroup file: the v2 line's and each v1
    hierarchy's, in the file's order. A rule's `cgroup` holds when any one
    matches: systemd names a service's cgroup in the v2 line (unified and
    hybrid setups) or in its `name=systemd` v1 hierarchy (legacy setups,
    where controllers such as cpuset often show only `/`), and only root can
    place a process in a cgroup outside its own delegated subtree, in any
    hierarchy."""
    paths = []
    for line in raw.splitlines():
        parts = line.split(b":", 2)
        if len(parts) == 3:
            paths.append(parts[2].decode("utf-8", "surrogateescape"))
    return paths


def read_cgroup(table, proc) -> str:
    """The cgroup of a table entry, read through the table's identity check;
    "" when the process is gone (it then belongs to no unit)."""
    try:
        return cgroup_path(table.read_cgroup(proc))
    except OSError:
        return ""


class CgroupCache:
    """serial -> cgroup path, read once per entry (a move between cgroups is
    rare; a table refresh drops the entries of the dead)."""

    def __init__(self, table_of):
        self._table_of = table_of          # () -> the current ProcTable
        self._paths: dict[int, str] = {}

    def __call__(self, proc) -> str:
        path = self._paths.get(proc.serial)
        if path is None:
            path = self._paths[proc.serial] = read_cgroup(self._table_of(), proc)
        return path

    def forget(self, procs) -> None:
        for proc in procs:
            self._paths.pop(proc.serial, None)

    def clear(self) -> None:
        self._paths.clear()
