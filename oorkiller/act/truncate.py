"""Truncating a deleted-but-open file: only the very file that was judged.

A holder owns its descriptor table: between the scan and the truncation it
can close fd N, or `dup2` any other descriptor onto it, including an O_PATH
fd of a device or of a file it may not write. Opening /proc/PID/fd/N for
writing as root would then open *that* object for writing (a watchdog device
starts counting on open; any file gets IN_CLOSE_WRITE), and a check made
afterwards comes too late. So nothing is opened for writing until it has
been judged:

1. /proc/PID/fd/N of every holder is opened with O_PATH, which opens nothing
   on the target (no device open, no inotify event for a write);
2. each O_PATH fd must be on the mount the scan saw (its fdinfo mnt_id, read
   before any fstat, so one swapped for a file on a hung FUSE mount is never
   stat'ed), a regular file with no name left, the device and inode the scan
   saw, held by the process with the start time the scan saw;
3. the name of every holder's descriptor (readlink of our own O_PATH fd,
   " (deleted)" stripped) must match `truncate_deleted`;
4. only then is that exact object reopened for writing, through our own
   /proc/self/fd/K (the magic link of an O_PATH fd reopens the inode it
   holds; no other process can change our descriptor table), checked once
   more by fstat, and ftruncate'd.

O_NOFOLLOW is not used: on a /proc magic link it would open the link itself.
"""
from __future__ import annotations

import os
import stat

from oorkiller.proc.deleted import fd_mount_id, matches, original_path, start_time

WRITE_FLAGS = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC


def truncate(entry, globs, proc_root: str = "/proc") -> tuple[int, int] | None:
    """Truncate `entry` (proc.deleted.OpenDeleted) to 0 if every holder still
    holding it does so under a name matching `globs`; returns (pid, bytes
    freed), or None when no holder holds it any more or a name does not match."""
    held = []                                       # (holder, O_PATH fd)
    try:
        for holder in entry.holders:
            fd = _hold(holder, entry, proc_root)
            if fd is None:
                continue                            # closed, swapped or exited: not a holder now
            held.append((holder, fd))
            # our O_PATH fd shares the holder's path: its name, race-free
            if not matches(original_path(f"{proc_root}/self/fd/{fd}"), globs):
                return None
        if not held:
            return None
        holder, fd = held[0]
        return (holder.pid, entry.nbytes) if _truncate_held(fd, entry, proc_root) else None
    finally:
        for _, fd in held:
            os.close(fd)


def _hold(holder, entry, proc_root: str) -> int | None:
    """An O_PATH fd of what the holder's fd points at now, if that is still the
    judged file and the holder still the process the scan saw; else None."""
    try:
        fd = os.open(f"{proc_root}/{holder.pid}/fd/{holder.fd}", os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None
    # A descriptor swapped for one on another mount (a hung FUSE file system)
    # is refused before any fstat, which would wait for that file system.
    if holder.mount_id is not None and fd_mount_id(f"{proc_root}/self/fdinfo/{fd}") != holder.mount_id:
        os.close(fd)
        return None
    # The start time is read after the open: if it is unchanged, the PID
    # named the scanned process all along, so the fd was taken from it.
    if _is_judged(os.fstat(fd), entry) and start_time(holder.pid, proc_root) == holder.starttime:
        return fd
    os.close(fd)
    return None


def _is_judged(st: os.stat_result, entry) -> bool:
    return (stat.S_ISREG(st.st_mode) and st.st_nlink == 0
            and (st.st_dev, st.st_ino) == (entry.device, entry.inode))


def _truncate_held(path_fd: int, entry, proc_root: str) -> bool:
    """Reopen the O_PATH fd's own inode for writing and truncate it."""
    try:
        fd = os.open(f"{proc_root}/self/fd/{path_fd}", WRITE_FLAGS)
    except OSError:
        return False
    try:
        if not _is_judged(os.fstat(fd), entry):
            return False                            # cannot happen: say no rather than write
        os.ftruncate(fd, 0)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
