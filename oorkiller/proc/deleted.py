"""Files deleted but still open: space no cleanup can give back.

A log rotated by deletion while its writer keeps the descriptor open still
holds its blocks. Such a file is found through /proc/PID/fd: a stat of the fd
link reaches the open file itself, whose link count is 0 once it has no name.
The same file open in several processes (or several fds) is one file, keyed
by (device, inode); its space is st_blocks*512, what truncating it gives back.

Truncating one (act/truncate.py) is an action, not a reading.
"""
from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass, field

DELETED_SUFFIX = " (deleted)"


@dataclass
class OpenDeleted:
    device: int
    inode: int
    nbytes: int
    path: str                                   # the name it had, as readlink shows it
    holders: list = field(default_factory=list)  # (pid, fd)


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
        for name in names:
            link = f"{fd_dir}/{name}"
            try:
                st = os.stat(link)                 # follows the magic link to the open file
            except OSError:
                continue
            if st.st_nlink != 0 or st.st_dev not in wanted or not stat.S_ISREG(st.st_mode):
                continue
            key = (st.st_dev, st.st_ino)
            entry = found.get(key)
            if entry is None:
                entry = found[key] = OpenDeleted(st.st_dev, st.st_ino, st.st_blocks * 512,
                                                 _original_path(link))
            entry.holders.append((pid, int(name)))
    return found


def _original_path(link: str) -> str:
    try:
        target = os.readlink(link)
    except OSError:
        return ""
    return target[:-len(DELETED_SUFFIX)] if target.endswith(DELETED_SUFFIX) else target


def matches(path: str, globs) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in globs)
