"""The open files of a process: the one walker of /proc/PID/fd.

A stat of /proc/PID/fd/N follows the magic link to the open file itself,
whatever name it has (or had: a deleted file still answers). The walk is
done by path, so after it the table confirms the process is still the entry
it was listed as: a PID reused meanwhile gives an empty answer, never the
files of another process.
"""
from __future__ import annotations

import os

O_ACCMODE = os.O_ACCMODE


def open_files(table, proc) -> list[tuple[int, os.stat_result]]:
    """(fd number, stat of what it points to) for each descriptor of `proc`;
    [] when the process is gone, changed identity, or cannot be read."""
    fd_dir = f"{table.proc_root}/{proc.pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return []
    found = []
    for name in names:
        try:
            found.append((int(name), os.stat(f"{fd_dir}/{name}")))
        except (OSError, ValueError):
            continue                      # closed meanwhile
    return found if table.same_process(proc) else []


def opened_for_writing(table, proc, fd: int) -> bool:
    """The descriptor was opened O_WRONLY or O_RDWR (its fdinfo `flags`)."""
    try:
        with open(f"{table.proc_root}/{proc.pid}/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"flags:"):
                    return (int(line.split()[1], 8) & O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
    except (OSError, ValueError, IndexError):
        pass
    return False


def count_fds(table, proc) -> int | None:
    """How many descriptors `proc` holds (the entries of /proc/PID/fd; FDSize
    of status is the size of the fd table, not a count); None when the
    process is gone or its PID now names another one."""
    try:
        count = len(os.listdir(f"{table.proc_root}/{proc.pid}/fd"))
    except OSError:
        return None
    return count if table.same_process(proc) else None
