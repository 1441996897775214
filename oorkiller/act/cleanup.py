"""Deleting the files an operator allowed, safely.

A pass has two halves. The walk opens every directory relative to its parent
(`os.open(name, O_DIRECTORY|O_NOFOLLOW, dir_fd=parent)`, starting at `/`), so
a symbolic link is never followed and a directory swapped for a link while
the pass runs makes the open fail instead of leading elsewhere: every file
seen is inside the rule's directory, on the disk's own file system. The
deletion then removes the oldest (mtime) files first, across all rules of the
disk, until the `until` levels are reached. Each file is checked again just
before it goes: still the same inode, a regular file, old enough, and not
held with a BSD flock.

The flock check takes the lock itself: it opens the file (O_RDONLY|O_NOFOLLOW|
O_NONBLOCK) and asks for `flock(LOCK_EX|LOCK_NB)`. If another process holds a
flock the request fails and the file is kept; if it succeeds, nobody can take
a flock while we unlink, and the lock disappears with our descriptor a moment
later. (Reading /proc/locks instead would leave a window between the read and
the unlink.) POSIX and OFD locks (fcntl) are not BSD flocks and do not protect
a file: the promise is about flock.

Trust (judge/trust.py): a cleanup directory, and every directory above it,
must be one an unprivileged user cannot rearrange under us; subdirectories
that fail the same test are not entered.
"""
from __future__ import annotations

import errno
import fcntl
import fnmatch
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field

from oorkiller.judge.trust import untrusted_reason

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
CHECK_EVERY = 256        # files between two real statvfs readings during a pass
MAX_DIRS = 4096          # directory fds one pass may hold (recursive rules)
MAX_NAMES = 1000         # deleted names kept for the debug log of one pass


@dataclass
class PassResult:
    files: int = 0
    bytes: int = 0
    candidates: int = 0
    kept_flocked: int = 0
    refused: list = field(default_factory=list)     # (directory, reason)
    errors: list = field(default_factory=list)      # texts
    names: list = field(default_factory=list)       # deleted paths (debug only)
    reached: bool = False                           # the until levels were reached


# ------------------------------------------------------------------ trust
def open_trusted_dir(path: str) -> int:
    """An fd of the absolute directory `path`, opened component by component
    from `/` without following links; OSError (with a reason) if any step is
    a link, missing, or a directory that may not be trusted."""
    fd = os.open("/", DIR_FLAGS)
    try:
        parts = [p for p in path.split("/") if p]
        walked = ""
        for i, name in enumerate(parts + [None]):
            reason = untrusted_reason(os.fstat(fd), ancestor=name is not None)
            if reason:
                raise PermissionError(errno.EPERM, f"{walked or '/'} is {reason}")
            if name is None:
                return fd
            walked += "/" + name
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as err:
                why = "a symbolic link or not a directory" if err.errno in (errno.ELOOP, errno.ENOTDIR) \
                    else err.strerror
                raise OSError(err.errno, f"{walked} is {why}") from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def mount_id(fd: int) -> int | None:
    """The mount an open fd belongs to (`mnt_id:` of /proc/self/fdinfo/FD), or
    None when /proc cannot tell."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as info:
            for line in info:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


# ------------------------------------------------------------------ walking
@dataclass(slots=True)
class Found:
    mtime_ns: int
    dir_index: int
    name: str
    ino: int
    nbytes: int
    cutoff_ns: int       # the youngest mtime the rule that found it allows


class Walk:
    """The files of one disk's rules that may go, oldest first after sort()."""

    def __init__(self, device: int, now: float | None = None):
        self.device = device
        self.now = time.time() if now is None else now
        self.dirs: list[tuple[int, str]] = []      # (fd, path) held for the pass
        self.found: list[Found] = []
        self.refused: list[tuple[str, str]] = []
        self.errors: list[str] = []

    def add_rule(self, rule) -> None:
        try:
            fd = open_trusted_dir(rule.path)
        except OSError as err:
            self.refused.append((rule.path, err.strerror or str(err)))
            return
        if os.fstat(fd).st_dev != self.device:
            os.close(fd)
            self.refused.append((rule.path, "on another file system than the disk entry"))
            return
        cutoff_ns = int((self.now - rule.min_age) * 1e9)
        matcher = re.compile(fnmatch.translate(rule.glob)).match
        self._walk(self._hold(fd, rule.path), matcher, cutoff_ns, rule.recursive)

    def _hold(self, fd: int, path: str) -> int:
        self.dirs.append((fd, path))
        return len(self.dirs) - 1

    def _walk(self, index: int, matcher, cutoff_ns: int, recursive: bool) -> None:
        fd, path = self.dirs[index]
        subdirs = []
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if recursive:
                                subdirs.append(entry.name)
                            continue
                        if not matcher(entry.name):
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue                     # vanished meanwhile
                    if (stat.S_ISREG(st.st_mode) and st.st_dev == self.device
                            and st.st_mtime_ns <= cutoff_ns):
                        self.found.append(Found(st.st_mtime_ns, index, entry.name,
                                                st.st_ino, st.st_blocks * 512, cutoff_ns))
        except OSError as err:
            self.errors.append(f"{path}: {err.strerror}")
            return
        for name in subdirs:
            child = self._enter(fd, path, name)
            if child is not None:
                self._walk(child, matcher, cutoff_ns, recursive)

    def _enter(self, parent_fd: int, parent_path: str, name: str) -> int | None:
        """Open a subdirectory for the walk, or None (link, other fs, untrusted)."""
        if len(self.dirs) >= MAX_DIRS:
            self.errors.append(f"{parent_path}: more than {MAX_DIRS} directories, rest left for the next pass")
            return None
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except OSError:
            return None                              # swapped for a link, or gone
        st = os.fstat(fd)
        path = f"{parent_path}/{name}"
        # A bind mount of a directory of this same file system has the same
        # st_dev: only its mount id tells that it leads elsewhere.
        elsewhere = st.st_dev != self.device or mount_id(fd) != mount_id(parent_fd)
        reason = "on another file system or a mount point" if elsewhere else untrusted_reason(st, False)
        if reason:
            os.close(fd)
            if not elsewhere:
                self.refused.append((path, reason))
            return None
        return self._hold(fd, path)

    def sort(self) -> None:
        self.found.sort(key=lambda f: (f.mtime_ns, f.ino))

    def close(self) -> None:
        for fd, _ in self.dirs:
            os.close(fd)
        self.dirs = []


# ------------------------------------------------------------------ deleting
def delete_one(dir_fd: int, found: Found, device: int, cutoff_ns: int, dry_run: bool = False) -> str:
    """Unlink one file after checking it again: 'deleted', 'flocked', 'skipped'
    or 'failed: WHY' (in a dry run every check is made and nothing is unlinked)."""
    try:
        fd = os.open(found.name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return "skipped"                             # gone, or now a link
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_ino != found.ino or st.st_dev != device
                or st.st_mtime_ns > cutoff_ns):
            return "skipped"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "flocked"
        if not dry_run:
            try:
                os.unlink(found.name, dir_fd=dir_fd)
            except FileNotFoundError:
                return "skipped"
            except OSError as err:                   # read-only, EPERM...: must be said
                return f"failed: {err.strerror}"
        return "deleted"
    except OSError:
        return "skipped"
    finally:
        os.close(fd)                                 # also releases our flock


class Goal:
    """When a pass may stop: free space and free inodes both at `until`."""

    def __init__(self, statvfs, want_bytes: int, want_inodes: int | None):
        self.statvfs = statvfs              # () -> os.statvfs_result of the disk
        self.want_bytes = want_bytes
        self.want_inodes = want_inodes      # None: the file system has no inode count
        self.read_again()

    def read_again(self) -> bool:
        sv = self.statvfs()
        self.free = sv.f_bavail * sv.f_frsize
        self.inodes = sv.f_favail
        self.since_read = 0
        return self.met(self.free, self.inodes)

    def met(self, free: int, inodes: int) -> bool:
        return free >= self.want_bytes and (self.want_inodes is None or inodes >= self.want_inodes)

    def reached(self, freed_bytes: int, freed_files: int) -> bool:
        """Cheap estimate after each file, a real reading when it says 'done'
        or every CHECK_EVERY files (an open file frees nothing when unlinked)."""
        self.since_read += 1
        estimate = self.met(self.free + freed_bytes, self.inodes + freed_files)
        if estimate or self.since_read >= CHECK_EVERY:
            return self.read_again()
        return False


def run_pass(rules, device: int, goal: Goal, now: float | None = None,
             keep_names: bool = False, dry_run: bool = False,
             stop: threading.Event | None = None) -> PassResult:
    """Delete the oldest allowed files of all `rules` until `goal` is met
    (a dry run counts what would go, judging `goal` by the estimate alone)."""
    result = PassResult()
    if goal.met(goal.free, goal.inodes):
        result.reached = True
        return result
    walk = Walk(device, now)
    try:
        for rule in rules:
            walk.add_rule(rule)
        walk.sort()
        result.refused, result.errors = walk.refused, walk.errors
        result.candidates = len(walk.found)
        freed_bytes = freed_files = 0
        for found in walk.found:
            if stop is not None and stop.is_set():
                break
            dir_fd, dir_path = walk.dirs[found.dir_index]
            # The re-check holds the file to the min_age of the rule that
            # matched it, not to the weakest rule on its directory.
            outcome = delete_one(dir_fd, found, device, found.cutoff_ns, dry_run)
            if outcome == "flocked":
                result.kept_flocked += 1
                continue
            if outcome.startswith("failed: "):
                text = f"{dir_path}: cannot delete: {outcome[len('failed: '):]}"
                if text not in result.errors:
                    result.errors.append(text)
                continue
            if outcome != "deleted":
                continue
            result.files += 1
            result.bytes += found.nbytes
            freed_bytes += found.nbytes
            freed_files += 1
            if keep_names and len(result.names) < MAX_NAMES:
                result.names.append(f"{dir_path}/{found.name}")
            if dry_run:
                if goal.met(goal.free + freed_bytes, goal.inodes + freed_files):
                    result.reached = True
                    break
                continue
            if goal.reached(freed_bytes, freed_files):
                result.reached = True
                break
            if goal.since_read == 0:                 # a real reading: restart the estimate
                freed_bytes = freed_files = 0
    finally:
        walk.close()
    return result

