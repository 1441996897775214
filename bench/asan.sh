#!/bin/bash
# Fuzz the C parsers of oorkiller/proc/procparse.h under AddressSanitizer and
# UndefinedBehaviorSanitizer.
#
#   bash bench/asan.sh [ITERATIONS]      (default 200000; ~10 s on 2 vCPUs)
#
# A tiny C harness (written below, compiled with gcc -fsanitize=address,undefined
# -fno-sanitize-recover=all) feeds every parser of procparse.h:
#   1. a seed corpus: this machine's real /proc files (meminfo, stat, loadavg,
#      pressure/*, diskstats, self/stat, self/status, self/io, self/mountinfo)
#      plus hand-written edge cases (empty, no newline, a lone ")", huge and
#      negative numbers, NUL bytes, an octal escape cut at the end);
#   2. ITERATIONS mutations of those seeds (byte flips, inserted digit runs,
#      "-" signs, NULs, cut lines, duplicated spans) and pure random bytes.
# Every input lives in a malloc'd buffer of exactly its length (no NUL after
# it), so a single byte read past the end is an ASan report. Any report makes
# the script exit non-zero. tests/test_fuzz_native.py runs it with a small
# ITERATIONS count as part of the suite.
set -euo pipefail

iterations=${1:-200000}
here=$(cd "$(dirname "$0")/.." && pwd)
native=${OORKILLER_NATIVE_DIR:-$here/oorkiller/proc}   # another procparse.h (e.g. an old one)
work=$(mktemp -d /tmp/oorkiller-asan.XXXXXX)
trap 'rm -rf "$work"' EXIT

cat > "$work/harness.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "procparse.h"

static unsigned long long rng_state = 0x9e3779b97f4a7c15ULL;
static unsigned rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state >> 11);
}

/* Runs every parser over exactly [buf, buf+n). */
static void run_all(const char *buf, size_t n)
{
    pp_meminfo mi; pp_cpustat cs; double load[3]; pp_psi psi;
    pp_pidstat st; pp_pidio io; pp_pidstatus status;
    volatile uint64_t sink = 0;
    if (pp_parse_meminfo(buf, n, &mi) == 0) sink += mi.total + mi.available;
    if (pp_parse_cpustat(buf, n, &cs) == 0) sink += cs.ticks[0] + cs.ncpu + cs.forks + cs.has_forks;
    if (pp_parse_loadavg(buf, n, load) == 0) sink += (uint64_t)(load[0] >= 0);
    if (pp_parse_psi(buf, n, &psi) == 0) sink += psi.some_total;
    if (pp_parse_pidstat(buf, n, &st) == 0) {
        /* the comm span must lie inside the buffer */
        if (st.comm < buf || st.comm + st.comm_len > buf + n) abort();
        if (st.comm_len) sink += (unsigned char)st.comm[st.comm_len - 1];
        sink += (uint64_t)st.pid + st.starttime;
    }
    if (pp_parse_pidio(buf, n, &io) == 0) sink += io.rchar;
    if (pp_parse_pidstatus(buf, n, &status) == 0) sink += status.uid;

    /* line parsers, as readers.pyx drives them */
    const char *p = buf, *end = buf + n;
    char *scratch = malloc(n + 1);
    while (p < end) {
        const char *next = pp_next_line(p, end);
        pp_diskstat ds; pp_mountinfo m;
        if (pp_parse_diskstat_line(p, next, &ds) == 0) {
            if (ds.name < buf || ds.name + ds.name_len > end) abort();
            sink += ds.reads + ds.name_len;
        }
        if (pp_parse_mountinfo_line(p, next, &m) == 0) {
            pp_span spans[4] = {m.root, m.mount_point, m.fstype, m.source};
            for (int i = 0; i < 4; i++) {
                if (spans[i].len && (spans[i].ptr < buf || spans[i].ptr + spans[i].len > end)) abort();
                if (pp_unescape_octal(spans[i].ptr, spans[i].len, scratch) > spans[i].len) abort();
            }
        }
        p = next;
    }
    free(scratch);
    (void)sink;
}

/* Copies into a buffer of exactly n bytes, so ASan sees any overread. */
static void run_exact(const char *data, size_t n)
{
    char *buf = malloc(n ? n : 1);
    memcpy(buf, data, n);
    run_all(buf, n);
    free(buf);
}

#define MAX_SEEDS 64
#define MAX_LEN (1 << 16)
static char *seeds[MAX_SEEDS];
static size_t seed_len[MAX_SEEDS];
static int nseeds;

static void add_seed(const char *data, size_t n)
{
    if (nseeds >= MAX_SEEDS || n > MAX_LEN) return;
    seeds[nseeds] = malloc(n ? n : 1);
    memcpy(seeds[nseeds], data, n);
    seed_len[nseeds++] = n;
}

static void add_file(const char *path)
{
    static char buf[MAX_LEN];
    FILE *f = fopen(path, "rb");
    if (!f) return;
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    add_seed(buf, n);
}

static const char *const TOKENS[] = {
    "18446744073709551615", "18446744073709551616", "99999999999999999999999",
    "-9223372036854775808", "-18446744073709551615", "-", ")", "(", ":", " kB",
    "\n", "\0", "\\", "\\0", "\\04", "\\777", " - ", "0.", ".", "=", "avg10=",
    "total=", "some ", "full ", "cpu ", "cpu0 ", "Uid:", "MemTotal:", "MemAvailable:",
    "processes ", "procs_running ", "999999999999999999999999999999999999999.99999999999999999999999999",
};

static size_t mutate(const char *src, size_t n, char *out)
{
    size_t len = n;
    memcpy(out, src, n);
    int edits = 1 + rnd() % 8;
    for (int e = 0; e < edits; e++) {
        size_t at = len ? rnd() % (len + 1) : 0;
        switch (rnd() % 7) {
        case 0: if (len) out[at % len] = (char)rnd(); break;           /* random byte */
        case 1: if (len) out[at % len] = "0123456789- )(:\n\0\\"[rnd() % 18]; break;
        case 2: {                                                       /* insert a token */
            const char *t = TOKENS[rnd() % (sizeof TOKENS / sizeof *TOKENS)];
            size_t tl = t[0] ? strlen(t) : 1;
            if (len + tl >= MAX_LEN) break;
            memmove(out + at + tl, out + at, len - at);
            memcpy(out + at, t, tl);
            len += tl;
            break;
        }
        case 3: if (len) { size_t cut = rnd() % (len - at + 1); /* delete a span */
                memmove(out + at, out + at + cut, len - at - cut); len -= cut; } break;
        case 4: len = at; break;                                        /* truncate */
        case 5: {                                                       /* a long digit run */
            size_t run = 1 + rnd() % 64;
            if (len + run >= MAX_LEN) break;
            memmove(out + at + run, out + at, len - at);
            for (size_t i = 0; i < run; i++) out[at + i] = (char)('0' + rnd() % 10);
            len += run;
            break;
        }
        case 6: {                                                       /* duplicate a span */
            size_t from = len ? rnd() % len : 0, span = len ? rnd() % (len - from + 1) : 0;
            if (len + span >= MAX_LEN) break;
            char tmp[512]; if (span > sizeof tmp) span = sizeof tmp;
            memcpy(tmp, out + from, span);
            memmove(out + at + span, out + at, len - at);
            memcpy(out + at, tmp, span);
            len += span;
            break;
        }
        }
    }
    return len;
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 100000;
    static const char *const files[] = {
        "/proc/meminfo", "/proc/stat", "/proc/loadavg", "/proc/pressure/memory",
        "/proc/pressure/cpu", "/proc/pressure/io", "/proc/diskstats", "/proc/self/stat",
        "/proc/self/status", "/proc/self/io", "/proc/self/mountinfo", "/proc/1/stat",
    };
    static const char *const edge[] = {
        "", ")", "(", "()", "1 ()", "1 () R", "1 (a) R 1 1 1", ":", "\n\n\n",
        "MemTotal:", "MemTotal: 18446744073709551615 kB\n",
        "Uid:", "Uid:\t-1\t-1\n", "cpu ", "cpu  1 2 3\ncpu0", "cpu 1\nprocesses ", "cpu 1\nprocesses 18446744073709551616", "some avg10=", "some avg10=1.",
        "1 2 3:4 / / rw - x y z", "1 2 3:4 \\04 \\0 rw - \\ \\7 z\n",
        "1 (x) R -9223372036854775808 -9223372036854775808 -99999999999999999999 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 -1 -1",
        "   8  0 sda 1 2 3 4 5 6 7 8 9 10 11",
    };
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) add_file(files[i]);
    for (size_t i = 0; i < sizeof edge / sizeof *edge; i++) add_seed(edge[i], strlen(edge[i]));
    add_seed("a\0b) R 1\0", 9);

    for (int i = 0; i < nseeds; i++)
        for (size_t cut = 0; cut <= seed_len[i]; cut += 1 + seed_len[i] / 64)
            run_exact(seeds[i], cut);                 /* every seed, cut short */

    static char out[MAX_LEN];
    for (long it = 0; it < iterations; it++) {
        size_t n;
        if (rnd() % 10 == 0) {                       /* pure random bytes */
            n = rnd() % 300;
            for (size_t i = 0; i < n; i++) out[i] = (char)rnd();
        } else {
            int s = rnd() % nseeds;
            n = mutate(seeds[s], seed_len[s], out);
        }
        run_exact(out, n);
    }
    printf("asan: %d seeds, %ld mutated inputs, no report\n", nseeds, iterations);
    return 0;
}
EOF

gcc -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
    -Wall -Wno-unused-function -I "$native" "$work/harness.c" -o "$work/harness"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$work/harness" "$iterations"
