"""Files deleted but still open: space no cleanup can give back.

A log rotated by deletion while its writer keeps the descriptor open still
holds its blocks. Such a file is found through /proc/PID/fd: a stat of the fd
link reaches the open file itself, whose link count is 0 once it has no name.
Only descriptors whose mount (`mnt_id:` of /proc/PID/fdinfo/N) carries a
watched file system are stat'ed, and a scan stops at its budget (seconds and
descriptors), saying so.
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

import collections
import fnmatch
import os
import stat
import time
from dataclasses import dataclass, field

from oorkiller.proc._readers import parse_pid_stat
from oorkiller.proc.mounts import read_mounts

DELETED_SUFFIX = " (deleted)"
# One scan's budget. The scan runs on a thread of the disk shield's own, so
# the budget bounds its cost and staleness, not the shield's step.
SCAN_SECONDS = 2.0
SCAN_DESCRIPTORS = 100_000
CHECK_EVERY = 256        # descriptors between two looks at the clock


# pid, fd; starttime of the process, as /proc/PID/stat showed it at the scan;
# path: the name this descriptor had, " (deleted)" stripped; mount_id: its
# fdinfo mnt_id at the scan (None: unknown). A plain namedtuple: typing's
# NamedTuple would keep the typing module in the daemon's memory.
Holder = collections.namedtuple("Holder", "pid fd starttime path mount_id", defaults=(None,))


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


@dataclass
class Budget:
    """How much one scan may look at before it stops."""
    seconds: float = SCAN_SECONDS
    descriptors: int = SCAN_DESCRIPTORS


@dataclass
class Scan:
    """What one scan found, and whether it saw everything."""
    found: dict = field(default_factory=dict)      # (device, inode) -> OpenDeleted
    descriptors: int = 0                            # fdinfo read (candidates on a watched mount)
    seconds: float = 0.0
    cut_short: bool = False
    resume_pid: int = 0                             # where the next scan begins


class _WatchedMounts:
    """The mount ids carrying a watched device, per mount namespace: a
    process in another namespace (a container) sees the same file system
    through mounts with ids of their own."""

    def __init__(self, devices, proc_root: str):
        self.devices, self.proc_root = devices, proc_root
        self.by_namespace: dict = {}

    def of(self, pid: int) -> frozenset:
        try:
            namespace = os.stat(f"{self.proc_root}/{pid}/ns/mnt").st_ino
        except OSError:
            namespace = None                        # no ns link (a fake tree): read its own table
        ids = self.by_namespace.get(namespace) if namespace is not None else None
        if ids is None:
            try:
                ids = frozenset(m.mount_id for m in read_mounts(self.proc_root, pid)
                                if os.makedev(m.major, m.minor) in self.devices)
            except (OSError, ValueError):
                ids = frozenset()                   # gone meanwhile
            if namespace is not None:
                self.by_namespace[namespace] = ids
        return ids


def find_open_deleted(devices, proc_root: str = "/proc") -> dict:
    """{(device, inode): OpenDeleted} for deleted regular files still open
    on any of `devices` (a scan within the default budget)."""
    return scan_open_deleted(devices, proc_root).found


def scan_open_deleted(devices, proc_root: str = "/proc", budget: Budget = Budget(),
                      resume_pid: int = 0, stop=None) -> Scan:
    """Deleted files still open on `devices`, looking at no more than
    `budget` allows; a scan cut short says so, and where the next one should
    begin (PIDs in order from `resume_pid`, wrapping), so that a user holding
    many descriptors delays the others' turn but cannot hide them for good.
    `stop` (a threading.Event) ends it early too, when the daemon stops."""
    scan = Scan()
    wanted = set(devices)
    mounts = _WatchedMounts(wanted, proc_root)
    began = time.monotonic()
    deadline = began + budget.seconds
    pids = sorted(_pids(proc_root))
    start = next((i for i, pid in enumerate(pids) if pid >= resume_pid), 0)
    for pid in pids[start:] + pids[:start]:
        if not _scan_process(pid, wanted, mounts.of(pid), proc_root, scan, budget, deadline, stop):
            scan.cut_short, scan.resume_pid = True, pid
            break
    scan.seconds = time.monotonic() - began
    return scan


def _scan_process(pid: int, wanted: set, mount_ids: frozenset, proc_root: str,
                  scan: Scan, budget: Budget, deadline: float, stop=None) -> bool:
    """Add the deleted files `pid` holds on `wanted`; False when the budget ran out."""
    if not mount_ids:
        return True                                # no watched file system in its view
    fd_dir = f"{proc_root}/{pid}/fd"
    try:
        names = os.listdir(fd_dir)                 # lists numbers: touches no target
    except OSError:
        return True                                # gone, or a kernel thread
    starttime = None                               # read once a deleted file is seen
    for name in names:
        # the clock is read only after some work: every scan makes progress
        looked = scan.descriptors
        if looked >= budget.descriptors or (
                looked and looked % CHECK_EVERY == 0
                and (time.monotonic() > deadline or (stop is not None and stop.is_set()))):
            return False
        scan.descriptors += 1
        # fdinfo is procfs alone: a descriptor on another file system (a hung
        # FUSE mount) is never stat'ed, which would wait for that file system.
        mount_id = fd_mount_id(f"{proc_root}/{pid}/fdinfo/{name}")
        if mount_id not in mount_ids:
            continue
        link = f"{fd_dir}/{name}"
        try:
            st = os.stat(link)                     # follows the magic link to the open file
        except OSError:
            continue
        if st.st_nlink != 0 or st.st_dev not in wanted or not stat.S_ISREG(st.st_mode):
            continue
        if starttime is None:
            starttime = start_time(pid, proc_root)
            if starttime is None:
                return True                        # gone meanwhile
        holder = Holder(pid, int(name), starttime, original_path(link), mount_id)
        key = (st.st_dev, st.st_ino)
        entry = scan.found.get(key)
        if entry is None:
            entry = scan.found[key] = OpenDeleted(st.st_dev, st.st_ino, st.st_blocks * 512, holder.path)
        entry.holders.append(holder)
    return True


def fd_mount_id(fdinfo: str) -> int | None:
    """The `mnt_id:` of a /proc/PID/fdinfo/N file (None when unreadable)."""
    try:
        with open(fdinfo, "rb") as f:
            for line in f:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


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
