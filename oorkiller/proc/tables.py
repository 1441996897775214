"""The kernel's own tables and their limits: tasks, open files, conntrack.

Each reading is one pread of a file the kernel keeps up to date, never a
walk of /proc: /proc/loadavg's "running/total" gives every task (thread) of
the machine, /proc/sys/fs/file-nr the open files and their limit, and
/proc/sys/net/netfilter the conntrack entries. The limits of tasks
(kernel.threads-max, kernel.pid_max) change only by sysctl and are read
again rarely (see the shields).
"""
from __future__ import annotations

from oorkiller.proc._readers import HeldFile


def parse_task_count(loadavg: bytes) -> int:
    """The task total of /proc/loadavg ("0.00 0.01 0.05 2/1234 5678": 1234).
    It counts threads, the kernel's nr_threads, machine-wide even inside a
    PID namespace."""
    try:
        return int(loadavg.split()[3].split(b"/")[1])
    except (IndexError, ValueError):
        raise ValueError(f"not /proc/loadavg content: {loadavg[:64]!r}") from None


def parse_file_nr(file_nr: bytes) -> tuple[int, int]:
    """(open files, fs.file-max) from /proc/sys/fs/file-nr ("allocated 0 max")."""
    try:
        allocated, _, maximum = (int(v) for v in file_nr.split()[:3])
    except ValueError:
        raise ValueError(f"not /proc/sys/fs/file-nr content: {file_nr[:64]!r}") from None
    return allocated, maximum


def read_number(path: str) -> int:
    """A one-number file read once (a sysctl: threads-max, pid_max, nf_conntrack_max)."""
    with open(path, "rb") as f:
        return int(f.read().split()[0])


class HeldNumber:
    """A one-number file on a held fd: one pread per reading."""

    def __init__(self, path: str):
        self.file = HeldFile(path)

    def read(self) -> int:
        return int(self.file.read().split()[0])

    def close(self) -> None:
        self.file.close()
