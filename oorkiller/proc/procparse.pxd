# The C surface shared by oorkiller.proc._readers and oorkiller.proc._proctable.
#
# Only extern declarations live here (the parsers of procparse.h), so a
# `from readers cimport ...` compiles the C in place and needs no import of
# another extension module at run time.

from libc.stdint cimport uint64_t, int64_t

cdef extern from "procparse.h" nogil:
    unsigned PP_PF_KTHREAD

    ctypedef struct pp_span:
        const char *ptr
        size_t len

    ctypedef struct pp_meminfo:
        uint64_t total, available, free, swap_total, swap_free

    ctypedef struct pp_cpustat:
        uint64_t ticks[10]
        unsigned ncpu
        uint64_t procs_running
        uint64_t forks
        int has_forks

    ctypedef struct pp_psi:
        double some_avg[3]
        double full_avg[3]
        uint64_t some_total, full_total

    ctypedef struct pp_diskstat:
        uint64_t major, minor
        const char *name
        size_t name_len
        uint64_t reads, writes, read_sectors, write_sectors
        uint64_t read_ms, write_ms, io_ms, weighted_ms

    ctypedef struct pp_pidstat:
        int64_t pid
        const char *comm
        size_t comm_len
        char state
        int64_t ppid, pgrp, session
        uint64_t flags, utime, stime, starttime
        int64_t num_threads
        int64_t rss_pages

    ctypedef struct pp_pidio:
        uint64_t rchar, wchar, syscr, syscw, read_bytes, write_bytes, cancelled_write_bytes

    ctypedef struct pp_pidstatus:
        uint64_t uid, euid, vm_rss, vm_swap, vm_pte, threads

    ctypedef struct pp_mountinfo:
        uint64_t mount_id, parent_id, major, minor
        pp_span root, mount_point, fstype, source

    const char *pp_next_line(const char *p, const char *end)
    const char *pp_u64(const char *p, const char *end, uint64_t *out)
    const char *pp_i64(const char *p, const char *end, int64_t *out)
    int pp_parse_meminfo(const char *buf, size_t n, pp_meminfo *out)
    int pp_parse_cpustat(const char *buf, size_t n, pp_cpustat *out)
    double pp_busy_fraction(const pp_cpustat *prev, const pp_cpustat *cur)
    int pp_parse_loadavg(const char *buf, size_t n, double out[3])
    int pp_parse_task_total(const char *buf, size_t n, uint64_t *out)
    int pp_parse_psi(const char *buf, size_t n, pp_psi *out)
    int pp_parse_diskstat_line(const char *p, const char *line_end, pp_diskstat *out)
    int pp_parse_pidstat(const char *buf, size_t n, pp_pidstat *out)
    int pp_parse_pidio(const char *buf, size_t n, pp_pidio *out)
    int pp_parse_pidstatus(const char *buf, size_t n, pp_pidstatus *out)
    int pp_parse_mountinfo_line(const char *p, const char *line_end, pp_mountinfo *out)
    size_t pp_unescape_octal(const char *src, size_t len, char *dst)


cdef extern from "<fcntl.h>" nogil:
    int openat(int dirfd, const char *path, int flags, ...)
    int O_RDONLY, O_CLOEXEC, O_DIRECTORY, O_NOFOLLOW

cdef extern from "<unistd.h>" nogil:
    ssize_t pread(int fd, void *buf, size_t count, long offset)
    ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t size)
    int close(int fd)
