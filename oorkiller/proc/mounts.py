"""Which mounted file system a path lives on.

A disk entry names a path; what has levels is the file system under it. The
file system is identified by its device number (MAJ:MIN of mountinfo, the
st_dev of every file on it), so two entries on one file system, or a bind
mount of a directory of another watched file system, are recognised as the
same disk. The mount shown for a path is the deepest mount point above it
that carries that device (a bind mount has the same device as its source and
its own mount point and root).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from oorkiller.proc._readers import parse_mountinfo


class MountError(Exception):
    """A path that cannot be resolved to a mounted file system."""


@dataclass(frozen=True, slots=True)
class Mount:
    path: str            # the configured path (what records name)
    mount_point: str     # where the file system holding `path` is mounted
    root: str            # the directory of the file system seen at mount_point
    major: int
    minor: int
    fstype: str
    source: str

    @property
    def device(self) -> int:
        """The st_dev every file of this file system carries."""
        return os.makedev(self.major, self.minor)

    @property
    def device_text(self) -> str:
        return f"{self.major}:{self.minor}"


def read_mounts(proc_root: str = "/proc", pid: int | str = "self") -> list:
    """The mount table as process `pid` sees it (its mount namespace; this
    process's by default)."""
    with open(f"{proc_root}/{pid}/mountinfo", "rb") as f:
        return parse_mountinfo(f.read())


def _is_under(path: str, mount_point: str) -> bool:
    if mount_point == "/":
        return True
    return path == mount_point or path.startswith(mount_point + "/")


def resolve(path: str, mounts: list) -> Mount:
    """The mount of `path` (which must exist); MountError with a clear reason."""
    try:
        real = os.path.realpath(path, strict=True)
        st_dev = os.stat(real).st_dev
    except OSError as err:
        raise MountError(f"{path}: {err.strerror or err}") from None
    major, minor = os.major(st_dev), os.minor(st_dev)
    best = None
    for m in mounts:
        if (m.major, m.minor) != (major, minor) or not _is_under(real, m.mount_point):
            continue
        if best is None or len(m.mount_point) >= len(best.mount_point):
            best = m      # later lines are mounted over earlier ones: >= keeps the top
    if best is None:
        raise MountError(f"{path}: device {major}:{minor} is not in the mount table")
    return Mount(path=path, mount_point=best.mount_point, root=best.root,
                 major=major, minor=minor, fstype=best.fstype, source=best.source)
