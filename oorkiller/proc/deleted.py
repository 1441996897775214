"""Files deleted but still open: space no cleanup can give back.

A log rotated by deletion while its writer keeps the descriptor open still
holds its blocks. Such a file is found through /proc/PID/fd: a stat of the fd
link reaches the open file itself, whose link count is 0 once it has no name.
The same file open in several processes (or several fds) is one file, keyed
by (device, inode); its space is st_blocks*512, what truncating it gives back.

Each holder is recorded as (pid, fd, start time, path): the start time (from
/proc/PID/stat) lets truncation tell a PID reused meanwhile, and the path is
that holder's own readlink, since one inode can have been opened under
several names (hard links) and every one of them must match
`truncate_deleted`.

Truncating one (act/truncate.py) is an action, not a reading.
"""
from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass, field
from typing import NamedTuple

from oorkiller.proc._readers import parse_pid_stat

DELETED_SUFFIX = " (deleted)"


class Holder(NamedTuple):
    pid: int
    fd: int
    starttime: int          # of the process, as /proc/PID/stat showed it at the scan
    path: str               # the name this descriptor had, " (deleted)" stripped


@dataclass
class OpenDeleted:
    device: int
    inode: int
    nbytes: int
    path: str                                   # the name it had (the first holder's)
    holders: list = field(default_factory=list)  # Holder


def _pids(proc_root: str):
    with os.scandir(proc_root) as entries:
        for entry in entries:
            if entry.name.isdigit() and entry.name.isascii():
                yield int(entry.name)


def find_open_deleted(devices, proc_root: str = "/proc") -> dict:
    """{(device, inode): OpenDeleted} for deleted regular files still open
    on any of `devices`."""
    wanted = set(devices)
    found: dict = {}
    for pid in _pids(proc_root):
        fd_dir = f"{proc_root}/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue                               # gone, or a kernel thread
        starttime = None                           # read once a deleted file is seen
        for name in names:
            link = f"{fd_dir}/{name}"
            try:
                st = os.stat(link)                 # follows the magic link to the open file
            except OSError:
                continue
            if st.st_nlink != 0 or st.st_dev not in wanted or not stat.S_ISREG(st.st_mode):
                continue
            if starttime is None:
                starttime = start_time(pid, proc_root)
                if starttime is None:
                    break                          # gone meanwhile
            holder = Holder(pid, int(name), starttime, original_path(link))
            key = (st.st_dev, st.st_ino)
            entry = found.get(key)
            if entry is None:
                entry = found[key] = OpenDeleted(st.st_dev, st.st_ino, st.st_blocks * 512, holder.path)
            entry.holders.append(holder)
    return found


def start_time(pid: int, proc_root: str = "/proc") -> int | None:
    """The start time of the process `pid` now (None when it is gone)."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            return parse_pid_stat(f.read()).starttime
    except (OSError, ValueError):
        return None


def original_path(link: str) -> str:
    """The name an open file had: readlink of `link`, " (deleted)" stripped."""
    try:
        target = os.readlink(link)
    except OSError:
        return ""
    return target[:-len(DELETED_SUFFIX)] if target.endswith(DELETED_SUFFIX) else target


def matches(path: str, globs) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in globs)


def all_match(entry: OpenDeleted, globs) -> bool:
    """Every holder's name matches one of `globs`: a file also open under a
    name the operator did not allow is not truncated."""
    return bool(entry.holders) and all(matches(h.path, globs) for h in entry.holders)
