"""Truncating a deleted-but-open file through one of its holders.

The file is reopened through the magic link /proc/PID/fd/N, and the
descriptor obtained must still be that deleted inode on that device before
`ftruncate`, so an fd number closed and reused meanwhile is never truncated.
"""
from __future__ import annotations

import os


def truncate(entry, proc_root: str = "/proc") -> tuple[int, int] | None:
    """Truncate `entry` (proc.deleted.OpenDeleted) to 0 through one of its
    holders; returns (pid, bytes freed) or None when every holder is gone or
    changed."""
    for pid, fd_number in entry.holders:
        try:
            fd = os.open(f"{proc_root}/{pid}/fd/{fd_number}",
                         os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # follows the magic link
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (entry.device, entry.inode) or st.st_nlink != 0:
                continue                           # the fd number now means another file
            os.ftruncate(fd, 0)
            return pid, entry.nbytes
        except OSError:
            continue
        finally:
            os.close(fd)
    return None
