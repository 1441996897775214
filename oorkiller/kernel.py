"""Thin wrappers over the kernel calls Python lacks (the cffi module _kernel).

Import-safe: when the compiled module is missing, every call reports
failure (False) instead of raising, and `features()` says so.
"""
import errno
import os

try:
    from oorkiller._kernel import ffi as _ffi, lib as _lib
except ImportError:  # not built: the daemon still runs, without these features
    _ffi = _lib = None

OOM_SCORE_ADJ_MIN = -1000
OOM_SCORE_ADJ_MAX = 1000
PSI_RESOURCES = ("memory", "cpu", "io")
CAP_SYS_PTRACE = 19


def native_available() -> bool:
    return _lib is not None


def lock_memory(on_fault: bool = True) -> bool:
    """mlockall(MCL_CURRENT | MCL_FUTURE), so the daemon is never paged out
    under the very shortage it must act on. With `on_fault` (Linux 4.4+, as
    earlyoom does) pages are locked when first touched instead of all mapped
    pages being made resident: the daemon keeps what it uses, and the parts of
    libpython and the libraries it never runs stay out of its RSS. Falls back
    to the plain form. False (no exception) on failure: not root,
    RLIMIT_MEMLOCK, or no native module."""
    if _lib is None:
        return False
    flags = _lib.MCL_CURRENT | _lib.MCL_FUTURE
    if on_fault and _lib.mlockall(flags | _lib.MCL_ONFAULT) == 0:
        return True
    return _lib.mlockall(flags) == 0


def release_file_pages(smaps: str = "/proc/self/smaps") -> int:
    """Unmap the resident pages of every clean, read-only file mapping (the
    code and constants of libpython and the libraries), so that the lock
    that follows pins only what the daemon touches from then on, not what
    start-up touched once (the YAML parser, the compiler dataclasses run,
    the command line). Returns the KiB released.

    Only mappings that cannot differ from their file are released: backed
    by a file, private, not writable, and holding no anonymous page (copied
    on write, e.g. relocated), resident or swapped out. Their pages stay in the page cache, and a
    touch maps them again exactly as they were. Call it before the lock (a
    locked mapping refuses it) and before the kill path's rehearsal. 0 when
    the native module or smaps is missing."""
    if _lib is None:
        return 0
    try:
        with open(smaps, "rb") as f:
            text = f.read()
    except OSError:
        return 0
    released = 0
    for start, end, rss_kib in _clean_file_mappings(text):
        if _lib.madvise(_ffi.cast("void *", start), end - start, _lib.MADV_DONTNEED) == 0:
            released += rss_kib
    return released


def _clean_file_mappings(smaps: bytes):
    """(start, end, Rss KiB) of each resident mapping in smaps text that
    `release_file_pages` may release."""
    mapping = None           # [start, end, releasable, rss, anonymous or swapped]
    rows = []
    for line in smaps.splitlines():
        head = line.split(None, 5)
        if len(head) >= 5 and b"-" in head[0] and not head[0].endswith(b":"):
            start, _, end = head[0].partition(b"-")
            perms, inode = head[1], head[4]
            releasable = inode != b"0" and perms[1:2] == b"-" and perms[3:4] == b"p"
            mapping = [int(start, 16), int(end, 16), releasable, 0, 0]
            rows.append(mapping)
        elif mapping is not None and line.startswith(b"Rss:"):
            mapping[3] = int(line.split()[1])
        elif mapping is not None and line.startswith((b"Anonymous:", b"Swap:")):
            mapping[4] += int(line.split()[1])
    return [(start, end, rss) for start, end, releasable, rss, copied in rows
            if releasable and rss and not copied]


def unlock_memory() -> bool:
    if _lib is None:
        return False
    return _lib.munlockall() == 0


def process_mrelease(pidfd: int) -> bool:
    """Asks the kernel to free a SIGKILLed process's memory now (Linux 5.15+).

    True when the kernel did it. False when it could not: no such syscall
    (ENOSYS), the process is not dying or already gone (EINVAL, ESRCH), a
    bad fd (EBADF), or no native module. Never raises for these.
    """
    if _lib is None:
        return False
    return _lib.process_mrelease(pidfd, 0) == 0


def process_mrelease_errno(pidfd: int) -> int:
    """Like process_mrelease, but returns 0 or the errno (for records/tests)."""
    if _lib is None:
        return errno.ENOSYS
    if _lib.process_mrelease(pidfd, 0) == 0:
        return 0
    return _ffi.errno


def set_oom_score_adj(value: int, pid="self", proc_root: str = "/proc") -> None:
    """Writes /proc/PID/oom_score_adj. ValueError outside -1000..1000;
    OSError (ProcessLookupError, PermissionError, ...) from the write."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"oom_score_adj must be an integer, not {value!r}")
    if not OOM_SCORE_ADJ_MIN <= value <= OOM_SCORE_ADJ_MAX:
        raise ValueError(f"oom_score_adj must be within -1000..1000, not {value}")
    if pid != "self" and (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0):
        raise ValueError(f"pid must be a positive integer or 'self', not {pid!r}")
    path = os.path.join(proc_root, str(pid), "oom_score_adj")
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"%d\n" % value)
    finally:
        os.close(fd)


def _process_mrelease_exists() -> bool:
    # An invalid fd gives EBADF where the syscall exists, ENOSYS where not.
    return _lib is not None and process_mrelease_errno(-1) != errno.ENOSYS


def _cgroup_versions(proc_root: str) -> tuple:
    """("v1", "v2"), ("v2",), ... from the file system types mounted."""
    found = set()
    try:
        with open(os.path.join(proc_root, "self", "mounts"), "rb") as mounts:
            for line in mounts:
                fields = line.split(b" ")
                if len(fields) > 2 and fields[2] == b"cgroup":
                    found.add("v1")
                elif len(fields) > 2 and fields[2] == b"cgroup2":
                    found.add("v2")
    except OSError:
        pass
    return tuple(sorted(found))


def _proc_mount_options(proc_root: str) -> dict:
    """The options of the proc file system mounted at proc_root (the last
    mount there wins: it is the one seen), {} when none is found."""
    where = os.fsencode(os.path.realpath(proc_root))
    options = {}
    try:
        with open(os.path.join(proc_root, "self", "mounts"), "rb") as mounts:
            for line in mounts:
                fields = line.split(b" ")
                if len(fields) > 3 and fields[1] == where and fields[2] == b"proc":
                    options = dict(item.partition(b"=")[::2] for item in fields[3].split(b","))
    except OSError:
        pass
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in options.items()}


def has_capability(number: int, proc_root: str = "/proc") -> bool:
    """True if this process has capability `number` in its effective set."""
    try:
        with open(os.path.join(proc_root, "self", "status"), "rb") as status:
            for line in status:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> number & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def hidden_processes(proc_root: str = "/proc") -> str:
    """Why this process cannot see every process under proc_root, or "".
    With `hidepid` (1/noaccess, 2/invisible, 4/ptraceable) the kernel shows
    another user's process only to a member of the mount's `gid=` group
    (0 when not given) or to a reader that may ptrace it: one with
    CAP_SYS_PTRACE."""
    options = _proc_mount_options(proc_root)
    hidepid = options.get("hidepid", "0")
    if hidepid in ("0", "off"):
        return ""
    gid = options.get("gid", "0")
    if gid.isdigit() and int(gid) in (os.getegid(), *os.getgroups()):
        return ""
    if has_capability(CAP_SYS_PTRACE, proc_root):
        return ""
    return (f"{proc_root} is mounted with hidepid={hidepid} and this process lacks "
            f"CAP_SYS_PTRACE: other users' processes are hidden from it")


def features(proc_root: str = "/proc") -> dict:
    """What this kernel offers the daemon; logged at start-up."""
    psi = {name: os.path.exists(os.path.join(proc_root, "pressure", name))
           for name in PSI_RESOURCES}
    return {
        "native": native_available(),
        "process_mrelease": _process_mrelease_exists(),
        "pidfd": hasattr(os, "pidfd_open"),
        "psi": psi,
        "cgroup": _cgroup_versions(proc_root),
        "proc_view": "limited" if hidden_processes(proc_root) else "all",
    }


def name_thread(name: str) -> None:
    """Give the calling thread its name in the kernel (what `top -H` and
    /proc/PID/task/TID/comm show; 15 bytes at most). Python's thread names
    stay inside the interpreter."""
    try:
        with open("/proc/thread-self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass
