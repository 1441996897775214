/* procparse.h: pure parsers for the text files of /proc.
 *
 * Every parser takes a buffer and its length (the buffer need not end with
 * NUL) and fills a plain struct. No allocation, no I/O, no Python: the Cython
 * modules read the files and turn these structs into Python records.
 *
 * A number that is absent or garbled reads as 0 rather than failing: the
 * kernel fixes these formats, and one odd field must never stop the daemon.
 * A parser returns -1 only when the buffer is not the file it claims to be
 * (no "cpu " line in /proc/stat, no ")" in /proc/PID/stat, ...).
 */
#ifndef OORKILLER_PROCPARSE_H
#define OORKILLER_PROCPARSE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- cursor helpers: each takes [p, end) and returns where it stopped ---- */

static inline const char *pp_skip_blanks(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/* Unsigned decimal after optional blanks; *out = 0 when there are no digits. */
static inline const char *pp_u64(const char *p, const char *end, uint64_t *out)
{
    uint64_t value = 0;
    p = pp_skip_blanks(p, end);
    while (p < end && *p >= '0' && *p <= '9') {
        value = value * 10 + (uint64_t)(*p - '0');
        p++;
    }
    *out = value;
    return p;
}

/* Signed decimal: /proc/PID/stat has -1 in tty_nr/tpgid and negative nice. */
static inline const char *pp_i64(const char *p, const char *end, int64_t *out)
{
    uint64_t magnitude;
    int negative = 0;
    p = pp_skip_blanks(p, end);
    if (p < end && *p == '-') {
        negative = 1;
        p++;
    }
    p = pp_u64(p, end, &magnitude);
    /* Negate in unsigned arithmetic: -(int64_t)x is undefined for INT64_MIN.
     * Out-of-range magnitudes wrap, as pp_u64's do. */
    *out = (int64_t)(negative ? 0 - magnitude : magnitude);
    return p;
}

/* Decimal with a fraction ("12.34"), as in loadavg and PSI. Locale-free,
 * unlike strtod. */
static inline const char *pp_decimal(const char *p, const char *end, double *out)
{
    uint64_t whole, fraction = 0;
    double scale = 1.0;
    p = pp_u64(p, end, &whole);
    if (p < end && *p == '.') {
        p++;
        while (p < end && *p >= '0' && *p <= '9') {
            fraction = fraction * 10 + (uint64_t)(*p - '0');
            scale *= 10.0;
            p++;
        }
    }
    *out = (double)whole + (double)fraction / scale;
    return p;
}

/* Skips one blank-separated token (and the blanks before it). */
static inline const char *pp_skip_token(const char *p, const char *end)
{
    p = pp_skip_blanks(p, end);
    while (p < end && *p != ' ' && *p != '\t' && *p != '\n')
        p++;
    return p;
}

/* Start of the next line, or end. */
static inline const char *pp_next_line(const char *p, const char *end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    return nl ? nl + 1 : end;
}

static inline int pp_starts_with(const char *p, const char *end, const char *prefix)
{
    size_t len = strlen(prefix);
    return (size_t)(end - p) >= len && memcmp(p, prefix, len) == 0;
}

/* ---- "Key: value [kB]" files: meminfo, PID/status, PID/io ---- */

/* For each line whose key (text before ':') equals keys[i], stores its first
 * number in out[i], multiplied by 1024 when the line ends in "kB". Returns a
 * bit mask of the keys found (bit i for keys[i]); nkeys <= 64. */
static inline uint64_t pp_keyed_values(const char *buf, size_t n,
                                       const char *const *keys, int nkeys,
                                       uint64_t *out)
{
    const char *p = buf, *end = buf + n;
    uint64_t found = 0;
    for (int i = 0; i < nkeys; i++)
        out[i] = 0;
    while (p < end) {
        const char *line_end = memchr(p, '\n', (size_t)(end - p));
        const char *colon;
        if (!line_end)
            line_end = end;
        colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon) {
            size_t key_len = (size_t)(colon - p);
            for (int i = 0; i < nkeys; i++) {
                if (strlen(keys[i]) == key_len && memcmp(p, keys[i], key_len) == 0) {
                    const char *q = pp_u64(colon + 1, line_end, &out[i]);
                    q = pp_skip_blanks(q, line_end);
                    if (pp_starts_with(q, line_end, "kB"))
                        out[i] *= 1024;
                    found |= (uint64_t)1 << i;
                    break;
                }
            }
        }
        p = line_end < end ? line_end + 1 : end;
    }
    return found;
}

/* Pointer just after "key:" at the start of a line, or NULL. */
static inline const char *pp_find_key(const char *buf, size_t n, const char *key)
{
    const char *p = buf, *end = buf + n;
    size_t len = strlen(key);
    while (p < end) {
        if ((size_t)(end - p) > len && memcmp(p, key, len) == 0 && p[len] == ':')
            return p + len + 1;
        p = pp_next_line(p, end);
    }
    return NULL;
}

/* ---- /proc/meminfo ---- */

typedef struct {
    uint64_t total, available, free, swap_total, swap_free;
} pp_meminfo;

static inline int pp_parse_meminfo(const char *buf, size_t n, pp_meminfo *out)
{
    static const char *const keys[] = {"MemTotal", "MemAvailable", "MemFree",
                                       "Buffers", "Cached", "SwapTotal", "SwapFree"};
    uint64_t v[7];
    uint64_t found = pp_keyed_values(buf, n, keys, 7, v);
    if (!(found & 1))
        return -1;
    out->total = v[0];
    /* Kernels before 3.14 lack MemAvailable: estimate it the old way. */
    out->available = (found & 2) ? v[1] : v[2] + v[3] + v[4];
    out->free = v[2];
    out->swap_total = v[5];
    out->swap_free = v[6];
    return 0;
}

/* ---- /proc/stat: the aggregate "cpu" line and the number of cpuN lines ---- */

typedef struct {
    /* user nice system idle iowait irq softirq steal guest guest_nice */
    uint64_t ticks[10];
    unsigned ncpu;
    uint64_t procs_running;   /* tasks runnable now (running or waiting for a CPU) */
    uint64_t forks;           /* "processes": tasks (threads too) created since boot */
    int has_forks;
} pp_cpustat;

static inline int pp_parse_cpustat(const char *buf, size_t n, pp_cpustat *out)
{
    const char *p = buf, *end = buf + n;
    int have_total = 0;
    out->ncpu = 0;
    out->procs_running = 0;
    out->forks = 0;
    out->has_forks = 0;
    while (p < end) {
        const char *line_end = pp_next_line(p, end);
        if (pp_starts_with(p, line_end, "procs_running ")) {
            pp_u64(p + 14, line_end, &out->procs_running);
        } else if (pp_starts_with(p, line_end, "processes ")) {
            const char *digits = pp_skip_blanks(p + 10, line_end);
            out->has_forks = pp_u64(digits, line_end, &out->forks) != digits;
        } else if (pp_starts_with(p, line_end, "cpu ")) {
            const char *q = p + 3;
            for (int i = 0; i < 10; i++)
                q = pp_u64(q, line_end, &out->ticks[i]);
            have_total = 1;
        } else if (pp_starts_with(p, line_end, "cpu") && line_end - p > 3
                   && p[3] >= '0' && p[3] <= '9') {
            out->ncpu++;
        }
        p = line_end;
    }
    return have_total ? 0 : -1;
}

/* Busy share of all CPUs between two readings, 0.0..1.0. iowait counts as
 * idle (the CPU could have run something); guest time is already inside
 * user/nice, so it is not added again. A counter that steps back (iowait
 * does on some kernels) counts as 0. */
static inline double pp_tick_delta(uint64_t before, uint64_t after)
{
    return after >= before ? (double)(after - before) : 0.0;
}

static inline double pp_busy_fraction(const pp_cpustat *prev, const pp_cpustat *cur)
{
    double busy = 0.0, idle;
    static const int busy_columns[] = {0, 1, 2, 5, 6, 7};  /* user nice system irq softirq steal */
    for (int i = 0; i < 6; i++)
        busy += pp_tick_delta(prev->ticks[busy_columns[i]], cur->ticks[busy_columns[i]]);
    idle = pp_tick_delta(prev->ticks[3], cur->ticks[3]) + pp_tick_delta(prev->ticks[4], cur->ticks[4]);
    return busy + idle <= 0.0 ? 0.0 : busy / (busy + idle);
}

/* ---- /proc/loadavg ---- */

static inline int pp_parse_loadavg(const char *buf, size_t n, double out[3])
{
    const char *p = buf, *end = buf + n;
    for (int i = 0; i < 3; i++) {
        const char *start = pp_skip_blanks(p, end);
        p = pp_decimal(start, end, &out[i]);
        if (p == start)
            return -1;
    }
    return 0;
}

/* The task total of /proc/loadavg ("0.00 0.01 0.05 2/1234 5678": 1234),
 * the kernel's nr_threads; -1 when the field is missing. */
static inline int pp_parse_task_total(const char *buf, size_t n, uint64_t *out)
{
    const char *p = buf, *end = buf + n;
    for (int i = 0; i < 3; i++)
        p = pp_skip_token(pp_skip_blanks(p, end), end);
    p = pp_skip_blanks(p, end);
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    if (p >= end || *p != '/')
        return -1;
    const char *start = p + 1;
    if (start >= end || *start < '0' || *start > '9')
        return -1;                    /* "N/" then a blank: not the kernel's layout */
    pp_u64(start, end, out);
    return 0;
}

/* ---- /proc/pressure/{memory,cpu,io} ---- */

typedef struct {
    double some_avg[3], full_avg[3]; /* avg10 avg60 avg300, percent */
    uint64_t some_total, full_total; /* microseconds stalled */
} pp_psi;

/* Parses "avg10=0.00 avg60=0.00 avg300=0.00 total=0" after the line's tag. */
static inline void pp_psi_line(const char *p, const char *end, double avg[3], uint64_t *total)
{
    while (p < end) {
        p = pp_skip_blanks(p, end);
        if (pp_starts_with(p, end, "avg10="))
            p = pp_decimal(p + 6, end, &avg[0]);
        else if (pp_starts_with(p, end, "avg60="))
            p = pp_decimal(p + 6, end, &avg[1]);
        else if (pp_starts_with(p, end, "avg300="))
            p = pp_decimal(p + 7, end, &avg[2]);
        else if (pp_starts_with(p, end, "total="))
            p = pp_u64(p + 6, end, total);
        else
            p = pp_skip_token(p, end);
    }
}

static inline int pp_parse_psi(const char *buf, size_t n, pp_psi *out)
{
    const char *p = buf, *end = buf + n;
    int have_some = 0;
    memset(out, 0, sizeof(*out));
    while (p < end) {
        const char *next = pp_next_line(p, end);
        const char *line_end = (next > p && next[-1] == '\n') ? next - 1 : next;
        if (pp_starts_with(p, line_end, "some ")) {
            pp_psi_line(p + 5, line_end, out->some_avg, &out->some_total);
            have_some = 1;
        } else if (pp_starts_with(p, line_end, "full ")) {
            pp_psi_line(p + 5, line_end, out->full_avg, &out->full_total);
        }
        p = next;
    }
    return have_some ? 0 : -1;
}

/* ---- /proc/diskstats: one line ---- */

typedef struct {
    uint64_t major, minor;
    const char *name;
    size_t name_len;
    uint64_t reads, writes, read_sectors, write_sectors;
    uint64_t read_ms, write_ms, io_ms, weighted_ms;
} pp_diskstat;

/* Parses the line [p, line_end); -1 when it has fewer than 14 fields. */
static inline int pp_parse_diskstat_line(const char *p, const char *line_end, pp_diskstat *out)
{
    uint64_t f[11]; /* the 11 counters after the name, in kernel order */
    const char *name_start;
    p = pp_u64(p, line_end, &out->major);
    p = pp_u64(p, line_end, &out->minor);
    name_start = pp_skip_blanks(p, line_end);
    p = pp_skip_token(p, line_end);
    out->name = name_start;
    out->name_len = (size_t)(p - name_start);
    if (out->name_len == 0)
        return -1;
    for (int i = 0; i < 11; i++) {
        const char *start = pp_skip_blanks(p, line_end);
        p = pp_u64(start, line_end, &f[i]);
        if (p == start)
            return -1;
    }
    /* reads merged sectors ms writes merged sectors ms in_flight io_ms weighted */
    out->reads = f[0];
    out->read_sectors = f[2];
    out->read_ms = f[3];
    out->writes = f[4];
    out->write_sectors = f[6];
    out->write_ms = f[7];
    out->io_ms = f[9];
    out->weighted_ms = f[10];
    return 0;
}

/* ---- /proc/PID/stat ---- */

#define PP_PF_KTHREAD 0x00200000u /* include/linux/sched.h */

typedef struct {
    int64_t pid;
    const char *comm; /* points into the buffer, between "(" and the LAST ")" */
    size_t comm_len;
    char state;
    int64_t ppid, pgrp, session;
    uint64_t flags, utime, stime, starttime;
    int64_t num_threads; /* field 20: the tasks shield counts them */
    int64_t rss_pages;
} pp_pidstat;

/* The comm may hold spaces, parentheses and newlines: it ends at the LAST ")"
 * of the buffer, which no comm can forge because everything after it is
 * numbers written by the kernel. */
static inline int pp_parse_pidstat(const char *buf, size_t n, pp_pidstat *out)
{
    const char *end = buf + n;
    const char *open = memchr(buf, '(', n);
    const char *close = NULL;
    int64_t field[25]; /* field[k] is field number k of proc(5), from 4 on */
    const char *p;

    for (const char *q = end; q > buf; q--) {
        if (q[-1] == ')') {
            close = q - 1;
            break;
        }
    }
    if (!open || !close || close < open)
        return -1;
    pp_i64(buf, open, &out->pid);
    out->comm = open + 1;
    out->comm_len = (size_t)(close - open - 1);

    p = pp_skip_blanks(close + 1, end);
    if (p >= end || *p == '\n')
        return -1;
    out->state = *p++;
    for (int k = 4; k <= 24; k++) {
        const char *start = pp_skip_blanks(p, end);
        p = pp_i64(start, end, &field[k]);
        if (p == start) {
            if (k <= 22) /* starttime is the last field we cannot do without */
                return -1;
            field[k] = 0;
        }
    }
    out->ppid = field[4];
    out->pgrp = field[5];
    out->session = field[6];
    out->flags = (uint64_t)field[9];
    out->utime = (uint64_t)field[14];
    out->stime = (uint64_t)field[15];
    out->num_threads = field[20];
    out->starttime = (uint64_t)field[22];
    out->rss_pages = field[24];
    return 0;
}

/* ---- /proc/PID/io ---- */

typedef struct {
    uint64_t rchar, wchar, syscr, syscw, read_bytes, write_bytes, cancelled_write_bytes;
} pp_pidio;

static inline int pp_parse_pidio(const char *buf, size_t n, pp_pidio *out)
{
    static const char *const keys[] = {"rchar", "wchar", "syscr", "syscw", "read_bytes",
                                       "write_bytes", "cancelled_write_bytes"};
    uint64_t v[7];
    uint64_t found = pp_keyed_values(buf, n, keys, 7, v);
    if (!found)
        return -1;
    out->rchar = v[0];
    out->wchar = v[1];
    out->syscr = v[2];
    out->syscw = v[3];
    out->read_bytes = v[4];
    out->write_bytes = v[5];
    out->cancelled_write_bytes = v[6];
    return 0;
}

/* ---- /proc/PID/status ---- */

typedef struct {
    uint64_t uid, euid, vm_rss, vm_swap, vm_pte, threads;
} pp_pidstatus;

static inline int pp_parse_pidstatus(const char *buf, size_t n, pp_pidstatus *out)
{
    static const char *const keys[] = {"VmRSS", "VmSwap", "VmPTE", "Threads"};
    uint64_t v[4];
    const char *uid_line = pp_find_key(buf, n, "Uid");
    if (!uid_line)
        return -1;
    /* "Uid:\treal\teffective\tsaved\tfilesystem" */
    uid_line = pp_u64(uid_line, buf + n, &out->uid);
    pp_u64(uid_line, buf + n, &out->euid);
    pp_keyed_values(buf, n, keys, 4, v); /* kernel threads have no Vm* lines */
    out->vm_rss = v[0];
    out->vm_swap = v[1];
    out->vm_pte = v[2];
    out->threads = v[3];
    return 0;
}

/* ---- /proc/PID/mountinfo: one line ---- */

typedef struct {
    const char *ptr;
    size_t len;
} pp_span;

typedef struct {
    uint64_t mount_id, parent_id, major, minor;
    pp_span root, mount_point, fstype, source;
} pp_mountinfo;

static inline pp_span pp_token(const char **p, const char *end)
{
    pp_span span;
    const char *start = pp_skip_blanks(*p, end);
    *p = pp_skip_token(start, end);
    span.ptr = start;
    span.len = (size_t)(*p - start);
    return span;
}

/* "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
 * The optional fields before "-" vary in number. */
static inline int pp_parse_mountinfo_line(const char *p, const char *line_end, pp_mountinfo *out)
{
    pp_span token;
    p = pp_u64(p, line_end, &out->mount_id);
    p = pp_u64(p, line_end, &out->parent_id);
    p = pp_u64(p, line_end, &out->major);
    if (p >= line_end || *p != ':')
        return -1;
    p = pp_u64(p + 1, line_end, &out->minor);
    out->root = pp_token(&p, line_end);
    out->mount_point = pp_token(&p, line_end);
    pp_token(&p, line_end); /* mount options */
    do {
        token = pp_token(&p, line_end);
    } while (token.len != 0 && !(token.len == 1 && token.ptr[0] == '-'));
    if (token.len == 0)
        return -1;
    out->fstype = pp_token(&p, line_end);
    out->source = pp_token(&p, line_end);
    return (out->root.len && out->mount_point.len && out->fstype.len) ? 0 : -1;
}

/* Decodes the kernel's octal escapes ("\040" is a space) from src into dst,
 * which has room for len bytes; returns the decoded length. */
static inline size_t pp_unescape_octal(const char *src, size_t len, char *dst)
{
    size_t out = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\\' && i + 3 < len &&
            src[i + 1] >= '0' && src[i + 1] <= '3' &&
            src[i + 2] >= '0' && src[i + 2] <= '7' &&
            src[i + 3] >= '0' && src[i + 3] <= '7') {
            dst[out++] = (char)(((src[i + 1] - '0') << 6) | ((src[i + 2] - '0') << 3)
                                | (src[i + 3] - '0'));
            i += 3;
        } else {
            dst[out++] = src[i];
        }
    }
    return out;
}

#endif
