# cython: language_level=3
"""Held-fd readers and pure parsers for /proc (compiled as oorkiller.proc._readers).

"Bytes or fds in, plain records out": no policy, no logging, no config.

- `HeldFile(path)` opens a file once and `pread`s it from offset 0 into a
  buffer it owns, so a reading costs one system call and no open/close.
- `parse_*` functions take the bytes of a /proc file and return a small
  record with typed, read-only attributes. The parsing itself is C, in
  procparse.h; this module only turns its structs into Python objects.
  Counters are unsigned 64-bit; sizes are in bytes.

Input that is not the file it claims to be raises ValueError with a
message that says which file was expected; a str instead of bytes raises
TypeError. Process names (comm) stay bytes: they may hold any byte.
"""

import os

from libc.errno cimport errno
from libc.stdlib cimport malloc, realloc, free
from libc.stdint cimport uint64_t, int64_t
from cpython.bytes cimport PyBytes_FromStringAndSize

from oorkiller.proc.procparse cimport (
    pp_span, pp_meminfo, pp_cpustat, pp_psi, pp_diskstat, pp_pidstat, pp_pidio,
    pp_pidstatus, pp_mountinfo, pp_next_line, pp_parse_meminfo, pp_parse_cpustat,
    pp_parse_loadavg, pp_parse_psi, pp_busy_fraction, pp_parse_diskstat_line, pp_parse_pidstat,
    pp_parse_pidio, pp_parse_pidstatus, pp_parse_mountinfo_line, pp_unescape_octal,
    PP_PF_KTHREAD, pread, close,
)

__all__ = [
    "HeldFile", "MemInfo", "CpuTimes", "Psi", "DiskStat", "PidStat", "PidIO",
    "PidStatus", "MountInfo", "parse_meminfo", "parse_cpu_stat",
    "cpu_busy_fraction", "parse_loadavg", "parse_psi", "parse_diskstats",
    "parse_pid_stat", "parse_pid_io", "parse_pid_status", "parse_mountinfo",
]


# ---------------------------------------------------------------- HeldFile

cdef class HeldFile:
    """A file opened once (O_RDONLY|O_CLOEXEC) and read with pread at offset 0.

    The buffer belongs to the object and grows when the file is larger, so
    a steady reading allocates only the returned bytes.
    """
    cdef int _fd
    cdef char *_buf
    cdef size_t _capacity
    cdef readonly object path

    def __cinit__(self):
        self._fd = -1
        self._buf = NULL
        self._capacity = 0

    def __init__(self, path, Py_ssize_t initial_size=4096):
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # OSError names the path
        self._capacity = max(initial_size, 64)
        self._buf = <char *>malloc(self._capacity)
        if self._buf == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self._fd >= 0:
            close(self._fd)
        free(self._buf)

    @property
    def fd(self):
        return self._fd

    cdef Py_ssize_t fill(self) except -1:
        """Reads the whole file into the buffer; returns its length."""
        cdef ssize_t n
        cdef char *bigger
        if self._fd < 0:
            raise ValueError(f"HeldFile({self.path!r}) is closed")
        while True:
            n = pread(self._fd, self._buf, self._capacity, 0)
            if n < 0:
                raise OSError(errno, os.strerror(errno), self.path)
            if <size_t>n < self._capacity:
                return n
            # The file may be longer than the buffer: grow, then read it whole
            # again from 0 so the content comes from one single read.
            bigger = <char *>realloc(self._buf, self._capacity * 2)
            if bigger == NULL:
                raise MemoryError()
            self._buf = bigger
            self._capacity *= 2

    def read(self):
        """The file's whole content, as bytes."""
        cdef Py_ssize_t n = self.fill()
        return PyBytes_FromStringAndSize(self._buf, n)

    def close(self):
        if self._fd >= 0:
            close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f"HeldFile({self.path!r}, fd={self._fd})"


# ---------------------------------------------------------------- records

cdef class MemInfo:
    """/proc/meminfo, in bytes. `available` falls back to free+buffers+cached."""
    cdef readonly uint64_t total, available, free, swap_total, swap_free

    def __repr__(self):
        return (f"MemInfo(total={self.total}, available={self.available}, free={self.free}, "
                f"swap_total={self.swap_total}, swap_free={self.swap_free})")


cdef class CpuTimes:
    """The aggregate `cpu` line of /proc/stat, in clock ticks, the CPU count,
    and `procs_running`: the tasks runnable at the moment of reading."""
    cdef readonly uint64_t user, nice, system, idle, iowait, irq, softirq, steal
    cdef readonly uint64_t guest, guest_nice
    cdef readonly unsigned ncpu
    cdef readonly uint64_t procs_running

    def __repr__(self):
        return (f"CpuTimes(user={self.user}, nice={self.nice}, system={self.system}, "
                f"idle={self.idle}, iowait={self.iowait}, irq={self.irq}, "
                f"softirq={self.softirq}, steal={self.steal}, guest={self.guest}, "
                f"guest_nice={self.guest_nice}, ncpu={self.ncpu})")


cdef class Psi:
    """/proc/pressure/*: averages in percent, totals in microseconds."""
    cdef readonly double some_avg10, some_avg60, some_avg300
    cdef readonly double full_avg10, full_avg60, full_avg300
    cdef readonly uint64_t some_total, full_total

    def __repr__(self):
        return (f"Psi(some_avg10={self.some_avg10}, some_avg60={self.some_avg60}, "
                f"some_avg300={self.some_avg300}, some_total={self.some_total}, "
                f"full_avg10={self.full_avg10}, full_avg60={self.full_avg60}, "
                f"full_avg300={self.full_avg300}, full_total={self.full_total})")


cdef class DiskStat:
    """One line of /proc/diskstats. `name` is the kernel's device name (str)."""
    cdef readonly uint64_t major, minor
    cdef readonly str name
    cdef readonly uint64_t reads, writes, read_sectors, write_sectors
    cdef readonly uint64_t read_ms, write_ms, io_ms, weighted_ms

    def __repr__(self):
        return (f"DiskStat({self.major}:{self.minor} {self.name!r}, reads={self.reads}, "
                f"writes={self.writes}, read_sectors={self.read_sectors}, "
                f"write_sectors={self.write_sectors}, read_ms={self.read_ms}, "
                f"write_ms={self.write_ms}, io_ms={self.io_ms}, "
                f"weighted_ms={self.weighted_ms})")


cdef class PidStat:
    """/proc/PID/stat. `comm` is bytes; times are in clock ticks."""
    cdef readonly int64_t pid, ppid, pgrp, session, rss_pages, num_threads
    cdef readonly bytes comm
    cdef readonly str state
    cdef readonly uint64_t flags, utime, stime, starttime

    @property
    def kthread(self):
        """True for a kernel thread (PF_KTHREAD in flags)."""
        return bool(self.flags & PP_PF_KTHREAD)

    def __repr__(self):
        return (f"PidStat(pid={self.pid}, comm={self.comm!r}, state={self.state!r}, "
                f"ppid={self.ppid}, pgrp={self.pgrp}, session={self.session}, "
                f"flags={self.flags:#x}, utime={self.utime}, stime={self.stime}, "
                f"starttime={self.starttime}, rss_pages={self.rss_pages})")


cdef class PidIO:
    """/proc/PID/io, in bytes and system calls."""
    cdef readonly uint64_t rchar, wchar, syscr, syscw
    cdef readonly uint64_t read_bytes, write_bytes, cancelled_write_bytes

    def __repr__(self):
        return (f"PidIO(rchar={self.rchar}, wchar={self.wchar}, syscr={self.syscr}, "
                f"syscw={self.syscw}, read_bytes={self.read_bytes}, "
                f"write_bytes={self.write_bytes}, "
                f"cancelled_write_bytes={self.cancelled_write_bytes})")


cdef class PidStatus:
    """/proc/PID/status: real and effective uid, memory in bytes, thread count."""
    cdef readonly uint64_t uid, euid, vm_rss, vm_swap, vm_pte, threads

    def __repr__(self):
        return (f"PidStatus(uid={self.uid}, euid={self.euid}, vm_rss={self.vm_rss}, "
                f"vm_swap={self.vm_swap}, vm_pte={self.vm_pte}, threads={self.threads})")


cdef class MountInfo:
    """One line of /proc/PID/mountinfo; paths decoded from octal escapes (str,
    via os.fsdecode so any byte round-trips to the file system)."""
    cdef readonly uint64_t mount_id, parent_id, major, minor
    cdef readonly str root, mount_point, fstype, source

    def __repr__(self):
        return (f"MountInfo(mount_id={self.mount_id}, parent_id={self.parent_id}, "
                f"dev={self.major}:{self.minor}, root={self.root!r}, "
                f"mount_point={self.mount_point!r}, fstype={self.fstype!r}, "
                f"source={self.source!r})")


# ---------------------------------------------------------------- parsers

def parse_meminfo(bytes data not None):
    cdef pp_meminfo m
    if pp_parse_meminfo(data, len(data), &m) < 0:
        raise ValueError("not /proc/meminfo content: no MemTotal line")
    cdef MemInfo out = MemInfo.__new__(MemInfo)
    out.total, out.available, out.free = m.total, m.available, m.free
    out.swap_total, out.swap_free = m.swap_total, m.swap_free
    return out


def parse_cpu_stat(bytes data not None):
    cdef pp_cpustat s
    if pp_parse_cpustat(data, len(data), &s) < 0:
        raise ValueError("not /proc/stat content: no aggregate 'cpu ' line")
    cdef CpuTimes out = CpuTimes.__new__(CpuTimes)
    out.user, out.nice, out.system, out.idle = s.ticks[0], s.ticks[1], s.ticks[2], s.ticks[3]
    out.iowait, out.irq, out.softirq = s.ticks[4], s.ticks[5], s.ticks[6]
    out.steal, out.guest, out.guest_nice = s.ticks[7], s.ticks[8], s.ticks[9]
    out.ncpu = s.ncpu
    out.procs_running = s.procs_running
    return out


cdef inline void _ticks(CpuTimes t, pp_cpustat *out):
    out.ticks[0], out.ticks[1], out.ticks[2], out.ticks[3] = t.user, t.nice, t.system, t.idle
    out.ticks[4], out.ticks[5], out.ticks[6] = t.iowait, t.irq, t.softirq
    out.ticks[7], out.ticks[8], out.ticks[9] = t.steal, t.guest, t.guest_nice


def cpu_busy_fraction(CpuTimes prev not None, CpuTimes cur not None):
    """Busy share of all CPUs between two readings, 0.0..1.0 (the formula is
    pp_busy_fraction's, which the calm watch uses too).

    iowait counts as idle (the CPU could have run something); guest time is
    already inside user/nice, so it is not added again.
    """
    cdef pp_cpustat a, b
    _ticks(prev, &a)
    _ticks(cur, &b)
    return pp_busy_fraction(&a, &b)


def parse_loadavg(bytes data not None):
    cdef double load[3]
    if pp_parse_loadavg(data, len(data), load) < 0:
        raise ValueError("not /proc/loadavg content: expected three load averages")
    return (load[0], load[1], load[2])


def parse_psi(bytes data not None):
    cdef pp_psi p
    if pp_parse_psi(data, len(data), &p) < 0:
        raise ValueError("not /proc/pressure content: no 'some' line")
    cdef Psi out = Psi.__new__(Psi)
    out.some_avg10, out.some_avg60, out.some_avg300 = p.some_avg[0], p.some_avg[1], p.some_avg[2]
    out.full_avg10, out.full_avg60, out.full_avg300 = p.full_avg[0], p.full_avg[1], p.full_avg[2]
    out.some_total, out.full_total = p.some_total, p.full_total
    return out


cdef str _fsdecode(const char *ptr, size_t length):
    return os.fsdecode(PyBytes_FromStringAndSize(ptr, length))


def parse_diskstats(bytes data not None):
    """Every well-formed line of /proc/diskstats; malformed lines raise ValueError."""
    cdef const char *p = data
    cdef const char *end = p + len(data)
    cdef const char *next_line
    cdef pp_diskstat d
    cdef DiskStat out
    cdef list stats = []
    cdef int line_no = 0
    while p < end:
        next_line = pp_next_line(p, end)
        line_no += 1
        if next_line - p > 1:  # skip empty lines
            if pp_parse_diskstat_line(p, next_line, &d) < 0:
                raise ValueError(f"not /proc/diskstats content: line {line_no} is malformed")
            out = DiskStat.__new__(DiskStat)
            out.major, out.minor = d.major, d.minor
            out.name = _fsdecode(d.name, d.name_len)
            out.reads, out.writes = d.reads, d.writes
            out.read_sectors, out.write_sectors = d.read_sectors, d.write_sectors
            out.read_ms, out.write_ms = d.read_ms, d.write_ms
            out.io_ms, out.weighted_ms = d.io_ms, d.weighted_ms
            stats.append(out)
        p = next_line
    return stats


def parse_pid_stat(bytes data not None):
    """/proc/PID/stat, split at the LAST ')' so any comm parses."""
    cdef pp_pidstat s
    if pp_parse_pidstat(data, len(data), &s) < 0:
        raise ValueError("not /proc/PID/stat content: expected 'PID (COMM) STATE ...'")
    cdef PidStat out = PidStat.__new__(PidStat)
    out.pid, out.ppid, out.pgrp, out.session = s.pid, s.ppid, s.pgrp, s.session
    out.comm = PyBytes_FromStringAndSize(s.comm, s.comm_len)
    out.state = chr(<unsigned char>s.state)
    out.flags, out.utime, out.stime = s.flags, s.utime, s.stime
    out.starttime, out.rss_pages = s.starttime, s.rss_pages
    out.num_threads = s.num_threads
    return out


def parse_pid_io(bytes data not None):
    cdef pp_pidio i
    if pp_parse_pidio(data, len(data), &i) < 0:
        raise ValueError("not /proc/PID/io content: no known 'key: value' line")
    cdef PidIO out = PidIO.__new__(PidIO)
    out.rchar, out.wchar, out.syscr, out.syscw = i.rchar, i.wchar, i.syscr, i.syscw
    out.read_bytes, out.write_bytes = i.read_bytes, i.write_bytes
    out.cancelled_write_bytes = i.cancelled_write_bytes
    return out


def parse_pid_status(bytes data not None):
    cdef pp_pidstatus s
    if pp_parse_pidstatus(data, len(data), &s) < 0:
        raise ValueError("not /proc/PID/status content: no Uid line")
    cdef PidStatus out = PidStatus.__new__(PidStatus)
    out.uid, out.euid = s.uid, s.euid
    out.vm_rss, out.vm_swap, out.vm_pte, out.threads = s.vm_rss, s.vm_swap, s.vm_pte, s.threads
    return out


cdef str _unescaped(pp_span span, char *scratch):
    cdef size_t n = pp_unescape_octal(span.ptr, span.len, scratch)
    return _fsdecode(scratch, n)


def parse_mountinfo(bytes data not None):
    """Every line of /proc/PID/mountinfo; malformed lines raise ValueError."""
    cdef const char *p = data
    cdef const char *end = p + len(data)
    cdef const char *next_line
    cdef pp_mountinfo m
    cdef MountInfo out
    cdef list mounts = []
    cdef int line_no = 0
    # Decoded fields are never longer than the input: one scratch buffer serves all.
    cdef char *scratch = <char *>malloc(len(data) + 1)
    if scratch == NULL:
        raise MemoryError()
    try:
        while p < end:
            next_line = pp_next_line(p, end)
            line_no += 1
            if next_line - p > 1:
                if pp_parse_mountinfo_line(p, next_line, &m) < 0:
                    raise ValueError(f"not /proc/PID/mountinfo content: line {line_no} is malformed")
                out = MountInfo.__new__(MountInfo)
                out.mount_id, out.parent_id = m.mount_id, m.parent_id
                out.major, out.minor = m.major, m.minor
                out.root = _unescaped(m.root, scratch)
                out.mount_point = _unescaped(m.mount_point, scratch)
                out.fstype = _unescaped(m.fstype, scratch)
                out.source = _unescaped(m.source, scratch)
                mounts.append(out)
            p = next_line
    finally:
        free(scratch)
    return mounts
