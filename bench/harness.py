"""What every benchmark scenario shares: running a scenario as PID 1 of its
own PID namespace, a small C helper (sleepers, hogs of one thread or many,
spinners, the held-fd floor), a MemAvailable sampler, kernel-log checks and
summary statistics.

Safety: everything that can signal runs in a PID
namespace, where /proc lists only what the scenario started; every process a
scenario starts is killed by PID (or by its own process group) in a
`finally`; when the namespace's PID 1 exits the kernel kills whatever is
left in it. Hogs have a hard cap, and no scenario allocates more than
SAFE_SHARE of MemTotal.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20
GiB = 1 << 30
SAFE_SHARE = 0.60          # never allocate more than this share of MemTotal

# ------------------------------------------------------------------ C helper
HELPER_SOURCE = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void protect_self(void) {           /* oom_score_adj -1000: no shield picks it */
    int fd = open("/proc/self/oom_score_adj", O_WRONLY);
    if (fd >= 0) { if (write(fd, "-1000", 5) < 0) {} close(fd); }
}

/* sleepers N: N children that sleep in pause(), all in this process's group. */
static int sleepers(long n) {
    setpgid(0, 0);
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 1; }
        if (pid == 0) { prctl(PR_SET_NAME, "sleeper"); for (;;) pause(); }
    }
    printf("ready\n"); fflush(stdout);
    for (;;) pause();
}

/* hog CAP_MIB [protect]: touches CAP_MIB of anonymous memory page by page as
   fast as it can, reports its fill rate, then holds it. CAP is a hard cap.
   A protected hog (oom_score_adj -1000) is ballast, not a victim: it is
   filled by the kernel at once (MAP_POPULATE), which is faster. */
static int hog(long cap_mib, int protect) {
    size_t size = (size_t)cap_mib << 20;
    if (protect) protect_self();
    prctl(PR_SET_NAME, protect ? "bighog" : "fasthog");
    char *block = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (protect ? MAP_POPULATE : 0), -1, 0);
    if (block == MAP_FAILED) { perror("mmap"); return 1; }
    printf("ready\n"); fflush(stdout);
    double began = now();
    for (size_t off = 0; off < size; off += 4096) block[off] = 1;
    double took = now() - began;
    printf("full %.6f %.3f\n", took, size / took / 1e9); fflush(stdout);
    for (;;) pause();
}

/* fasthog CAP_MIB THREADS: as hog, from THREADS threads at once. One
   anonymous mapping of CAP_MIB (the same hard cap), cut into THREADS slices
   of whole pages; each thread touches its own slice page by page as fast as
   it can. The threads are made before "ready" and wait at a barrier, so the
   fill starts at once; "full" comes when every slice is touched. */
struct slice { char *start; size_t size; pthread_barrier_t *go; };

static void *touch_slice(void *arg) {
    struct slice *s = arg;
    pthread_barrier_wait(s->go);
    for (size_t off = 0; off < s->size; off += 4096) s->start[off] = 1;
    return NULL;
}

static int fasthog(long cap_mib, long threads) {
    size_t size = (size_t)cap_mib << 20, pages = size / 4096;
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    prctl(PR_SET_NAME, "fasthog");           /* the threads inherit the name */
    char *block = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (block == MAP_FAILED) { perror("mmap"); return 1; }
    static struct slice slices[256]; static pthread_t ids[256];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, threads + 1);
    size_t first = 0;
    for (long i = 0; i < threads; i++) {
        size_t count = pages / threads + ((size_t)i < pages % threads);
        slices[i] = (struct slice){block + first * 4096, count * 4096, &go};
        first += count;
        if (pthread_create(&ids[i], NULL, touch_slice, &slices[i])) {
            fprintf(stderr, "pthread_create failed\n"); return 1;
        }
    }
    printf("ready\n"); fflush(stdout);
    double began = now();
    pthread_barrier_wait(&go);
    for (long i = 0; i < threads; i++) pthread_join(ids[i], NULL);
    double took = now() - began;
    printf("full %.6f %.3f\n", took, size / took / 1e9); fflush(stdout);
    for (;;) pause();
}

/* spin SECONDS: burns one CPU, then exits. */
static int spin(double seconds) {
    prctl(PR_SET_NAME, "spinner");
    printf("ready\n"); fflush(stdout);
    double end = now() + seconds;
    volatile unsigned long x = 0;
    while (now() < end) for (int i = 0; i < 100000; i++) x++;
    return 0;
}

/* floor ROUNDS: holds /proc/PID/oom_score of every process and times ROUNDS
   loops that only pread each held fd: the least a selection can cost. */
static int floor_loop(int rounds) {
    static int fds[65536]; int count = 0; char path[64], buf[32];
    DIR *proc = opendir("/proc"); struct dirent *e;
    while ((e = readdir(proc)) && count < 65536) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/oom_score", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) fds[count++] = fd;
    }
    closedir(proc);
    printf("processes %d\n", count);
    for (int r = 0; r < rounds; r++) {
        double began = now(); long sum = 0;
        for (int i = 0; i < count; i++) {
            ssize_t n = pread(fds[i], buf, sizeof buf - 1, 0);
            if (n > 0) sum += buf[0];
        }
        printf("round %.9f %ld\n", now() - began, sum);
    }
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "sleepers")) return sleepers(atol(argv[2]));
    if (argc >= 3 && !strcmp(argv[1], "hog")) return hog(atol(argv[2]), argc > 3);
    if (argc >= 4 && !strcmp(argv[1], "fasthog")) return fasthog(atol(argv[2]), atol(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "spin")) return spin(atof(argv[2]));
    if (argc >= 3 && !strcmp(argv[1], "floor")) return floor_loop(atoi(argv[2]));
    fprintf(stderr, "usage: benchhelper sleepers N | hog MIB [protect] | fasthog MIB THREADS"
                    " | spin S | floor ROUNDS\n");
    return 2;
}
"""


def helper_path() -> str:
    """The compiled helper, built once per source version under /tmp."""
    digest = hashlib.sha256(HELPER_SOURCE.encode()).hexdigest()[:12]
    folder = f"/tmp/oorkiller-bench-{digest}"
    exe = os.path.join(folder, "benchhelper")
    if not os.path.exists(exe):
        os.makedirs(folder, exist_ok=True)
        source = os.path.join(folder, "benchhelper.c")
        with open(source, "w") as f:
            f.write(HELPER_SOURCE)
        subprocess.run(["cc", "-O2", "-pthread", "-o", exe + ".new", source], check=True)
        os.replace(exe + ".new", exe)
    return exe


# ------------------------------------------------------------------ processes
class Started:
    """Processes a scenario started; `close()` kills every one of them by PID
    (and its process group when it made one), then reaps."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], wait_ready: bool = True, **popen) -> subprocess.Popen:
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("text", True)
        proc = subprocess.Popen(argv, **popen)
        proc.group = False                  # set when it leads a process group
        self.procs.append(proc)
        if wait_ready:
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"{argv[:3]} did not start: {line!r}")
        return proc

    def helper(self, *args, wait_ready: bool = True, **popen) -> subprocess.Popen:
        return self.start([helper_path(), *map(str, args)], wait_ready, **popen)

    def kill(self, proc: subprocess.Popen, group: bool = False) -> None:
        if proc.poll() is None:
            try:
                proc.kill()
            except (ProcessLookupError, PermissionError):
                pass
        if group:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        reap_orphans()

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.kill(proc, group=proc.group)
        self.procs = []


def reap_orphans() -> None:
    """As PID 1 of a namespace we inherit orphans: collect their exit."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def spawn_sleepers(started: Started, count: int):
    """`count` sleeping processes (one C parent forking them), or None for 0."""
    if count <= 0:
        return None
    parent = started.helper("sleepers", count)
    parent.group = True                     # the sleepers are its process group
    return parent


def process_count() -> int:
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


# ------------------------------------------------------------------ namespaces
def in_pid_namespace(module: str, function: str, timeout: float = 600, **params) -> dict:
    """Run bench.MODULE.FUNCTION(**params) as PID 1 of a new PID namespace;
    returns the JSON its last stdout line carries."""
    code = (f"import sys, json; sys.path.insert(0, {ROOT!r}); "
            f"import bench.{module} as m; "
            f"result = m.{function}(**json.loads(sys.argv[1])); "
            f"print(json.dumps(result), flush=True)")
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code, json.dumps(params)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bench.{module}.{function} failed (rc={proc.returncode})\n"
                           f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


# ------------------------------------------------------------------ memory
class MemInfo:
    """/proc/meminfo through one held fd (cheap enough to sample at 1 kHz)."""

    def __init__(self):
        self.fd = os.open("/proc/meminfo", os.O_RDONLY | os.O_CLOEXEC)

    def read(self) -> dict:
        text = os.pread(self.fd, 8192, 0)
        out = {}
        for line in text.split(b"\n")[:20]:
            key, _, rest = line.partition(b":")
            if key in (b"MemTotal", b"MemAvailable", b"MemFree"):
                out[key.decode()] = int(rest.split()[0]) * 1024
        return out

    def available(self) -> int:
        text = os.pread(self.fd, 512, 0)
        start = text.index(b"MemAvailable:") + 13
        return int(text[start:text.index(b"kB", start)]) * 1024

    def close(self) -> None:
        os.close(self.fd)


def mem_total() -> int:
    meminfo = MemInfo()
    try:
        return meminfo.read()["MemTotal"]
    finally:
        meminfo.close()


def mem_available(settle: bool = True) -> int:
    """MemAvailable; with `settle`, once it has held still (within 16 MiB) for
    three readings 0.25 s apart. The memory of a hog that just died can take a
    second or more to show (the kernel keeps freed pages uncounted for a
    while), and levels set from a reading taken before it shows would sit too
    low for the next hog to cross them."""
    meminfo = MemInfo()
    try:
        value, steady = meminfo.available(), 0
        deadline = time.monotonic() + (8 if settle else 0)
        while time.monotonic() < deadline and steady < 3:
            time.sleep(0.25)
            again = meminfo.available()
            steady = steady + 1 if abs(again - value) < 16 * MiB else 0
            value = again
        return value
    finally:
        meminfo.close()


def check_safe(allocating: int) -> None:
    """Refuse an allocation over SAFE_SHARE of MemTotal, or one that would
    leave less than a tenth of MemTotal available to the rest of the machine."""
    total, available = mem_total(), mem_available()
    if allocating > SAFE_SHARE * total or available - allocating < 0.10 * total:
        raise RuntimeError(f"refusing to allocate {allocating >> 20} MiB "
                           f"(MemTotal {total >> 20} MiB, MemAvailable {available >> 20} MiB)")


class Ballast:
    """Memory taken by no process: a file on a tmpfs mounted in this
    scenario's private mount namespace (Shmem is not MemAvailable, and no
    process's oom_score counts it, so no shield can pick it as a victim).
    Only for use inside `in_pid_namespace` (whose --mount-proc gives the
    private mount namespace); `close()` frees it."""

    def __init__(self, size: int):
        check_safe(size)
        self.dir = tempfile.mkdtemp(prefix="oorkiller-ballast-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size + MiB}", "ballast", self.dir],
                       check=True)
        self.path = os.path.join(self.dir, "ballast")
        fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:
            os.close(fd)
            self.close()
            raise
        os.close(fd)

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass
        subprocess.run(["umount", self.dir], check=False)
        os.rmdir(self.dir)


class SignalTrace:
    """When the kernel generated each fatal signal (SIGTERM, SIGKILL), on
    CLOCK_MONOTONIC: the `signal:signal_generate` trace event, in a tracing
    instance of its own (the machine's own trace buffer is left alone), on a
    tracefs mounted in this scenario's private mount namespace. It times any
    shield's signal the same way, ours or a peer's, without asking either.
    Only for use inside `in_pid_namespace`. Where tracefs or the event is
    missing, `available` is False and `fatal_signals()` is empty."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="oorkiller-tracefs-")
        self.instance = None
        self.available = False
        try:
            subprocess.run(["mount", "-t", "tracefs", "nodev", self.dir], check=True,
                           capture_output=True)
            self.instance = os.path.join(self.dir, "instances", f"oorkiller-bench-{os.getpid()}")
            os.mkdir(self.instance)
            self._write("trace_clock", "mono")
            self._write("events/signal/signal_generate/filter", "sig == 9 || sig == 15")
            self._write("events/signal/signal_generate/enable", "1")
            self.available = True
        except (OSError, subprocess.CalledProcessError):
            self.close()

    def _write(self, name: str, text: str) -> None:
        with open(os.path.join(self.instance, name), "w") as f:
            f.write(text)

    def clear(self) -> None:
        if self.available:
            self._write("trace", "")

    def fatal_signals(self) -> list[tuple[float, int, str]]:
        """(monotonic time, signal, target's comm) of each event since the
        last `clear`, oldest first."""
        if not self.available:
            return []
        found = []
        with open(os.path.join(self.instance, "trace")) as f:
            for line in f:
                # "  kill-123 [001] ..... 56091.193030: signal_generate: sig=9 ... comm=sleep pid=..."
                head, found_event, tail = line.partition("signal_generate:")
                if not found_event:
                    continue
                stamp = head.rstrip().rstrip(":").split()[-1]
                fields = dict(item.split("=", 1) for item in tail.split() if "=" in item)
                try:
                    found.append((float(stamp), int(fields["sig"]), fields.get("comm", "")))
                except (ValueError, KeyError):
                    continue
        return found

    def close(self) -> None:
        if self.instance is not None and os.path.isdir(self.instance):
            try:
                self._write("events/signal/signal_generate/enable", "0")
            except OSError:
                pass
            try:
                os.rmdir(self.instance)
            except OSError:
                pass
        subprocess.run(["umount", self.dir], check=False, capture_output=True)
        try:
            os.rmdir(self.dir)
        except OSError:
            pass
        self.available = False


class MemSampler:
    """A thread that reads MemAvailable every `period` seconds (≈1 kHz)."""

    def __init__(self, period: float = 0.001):
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._meminfo = MemInfo()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._meminfo.close()

    def _run(self) -> None:
        read, samples, period = self._meminfo.available, self.samples, self.period
        while not self._stop.is_set():
            samples.append((time.monotonic(), read()))
            time.sleep(period)


# ------------------------------------------------------------------ kernel log
def boot_usec() -> int:
    return int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000)


def kernel_oom_kills_since(usec: int) -> list[str]:
    """Kernel OOM-killer records in /dev/kmsg newer than `usec`."""
    from oorkiller.proc.kmsg import parse_kmsg_entry   # the daemon's own reader of a kmsg entry
    found = []
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                raw = os.read(fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:
                continue
            entry = parse_kmsg_entry(raw)
            if entry is None or entry["usec"] < usec:
                continue
            line = entry["text"].decode("utf-8", "replace")
            if "Out of memory" in line or "oom-kill:" in line or "invoked oom-killer" in line:
                found.append(line)
    finally:
        os.close(fd)
    return found


# ------------------------------------------------------------------ statistics
def summary(values) -> dict:
    """Median and spread of repeated measurements."""
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None, "q1": None, "q3": None}
    ordered = sorted(values)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {"n": len(ordered), "median": statistics.median(ordered), "min": ordered[0],
            "max": ordered[-1], "q1": q1, "q3": q3}


def ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def log(message: str) -> None:
    """Progress goes to stderr; stdout's last line is the scenario's JSON."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
