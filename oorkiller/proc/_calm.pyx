# cython: language_level=3
"""The calm machine's tick, without the interpreter (compiled as
oorkiller.proc._calm).

On a calm machine a shield's step reads one figure the kernel keeps, finds
it far from its level and asks to sleep its whole interval. Running that
step through the interpreter once a second costs far more than the reading:
a thread that wakes after a second asleep finds its caches cold, and the
interpreter touches a great deal of memory to do a little. A `CalmWatch`
makes the same check in C, with the interpreter's lock released.

A shield that has just found itself calm may offer *gates*: a file, the
figure in it, and a limit such that while the figure stays on the calm side
of it, the shield's own step would find nothing to do and decide nothing.
`run()` checks every gate when it is due (each at its shield's interval),
sleeps in poll(2) on the clock's eventfd until the next one, and returns to
Python only when a gate fails (its index: that shield is stepped at once,
in the same tick, and reads the machine itself), when `until` comes (a
step or watchdog ping Python must make), or when the clock is rung (-2: a
hand-over, stop, reload). While it waits it re-arms ITIMER_REAL before each
sleep, as the Python clock does, so a reading that hangs still wakes the
main thread.

Gates (the limit's unit):
- MEM_AVAILABLE: MemAvailable of /proc/meminfo (bytes) so far above the
  limit that neither `rate` (bytes/s, the fastest plausible fall) nor the
  fall seen since the previous check could bring it down to the limit
  before the next check;
- PSI_SOME, PSI_FULL: the avg10 of a /proc/pressure file below the limit;
- CPU_BUSY: the busy share of all CPUs since the previous reading of
  /proc/stat below the limit (0..1); the readings it passed are kept
  (`previous`, `history`) so the CPU shield, stepped again, judges the
  present over the same samples it would have taken itself;
- STATVFS: the free space of the file system holding the path (bytes,
  statvfs f_bavail) at or above the limit, and its free inodes (f_favail)
  at or above the second limit when it counts inodes; the readings it
  passed are kept (`history`) for the disk shield's fill rate;
- LINKS_QUIET: no network link appeared, went or changed (an rtnetlink
  socket of this network namespace, subscribed to link events, has
  nothing to read; the path is not used);
- KMSG_QUIET: the kernel log (/dev/kmsg at the path) got no new record
  since the gate was armed;
- TASKS: the task total of /proc/loadavg below the limit. A task is only
  ever created by a fork or clone, and the kernel counts every one of them
  in /proc/stat's "processes", so the total now is at most the total read
  before plus the forks since. In a tick in which the CPU gate read
  /proc/stat anyway, that bound answers without reading /proc/loadavg while
  it stays below the limit; when it does not, /proc/loadavg is read and the
  bound starts again from it. (The bound holds a fork made between the two
  readings twice, never zero times: /proc/stat is read first.)
- COUNT: the first number of the file below the limit (file-nr's allocated
  files, nf_conntrack_count).

Only the thread that runs the clock uses a watch.
"""

import os

from libc.errno cimport errno, EINTR
from libc.math cimport ceil
from libc.stdint cimport uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_FromStringAndSize

from oorkiller.proc.procparse cimport (
    pp_meminfo, pp_cpustat, pp_psi, pp_parse_meminfo, pp_parse_cpustat, pp_parse_psi,
    pp_parse_task_total, pp_busy_fraction, pp_u64, pread, close,
)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    int CLOCK_MONOTONIC

cdef extern from "<sys/time.h>" nogil:
    cdef struct timeval:
        long tv_sec
        long tv_usec
    cdef struct itimerval:
        timeval it_interval
        timeval it_value
    int setitimer(int which, const itimerval *new_value, itimerval *old_value)
    int ITIMER_REAL

cdef extern from "<poll.h>" nogil:
    cdef struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    short POLLIN

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned socklen_t
    cdef struct sockaddr:
        unsigned short sa_family
    int socket(int domain, int type, int protocol)
    int bind(int fd, const sockaddr *addr, socklen_t len)
    ssize_t recv(int fd, void *buf, size_t len, int flags)
    int AF_NETLINK, SOCK_RAW, SOCK_CLOEXEC, SOCK_NONBLOCK, MSG_DONTWAIT

cdef extern from "<linux/netlink.h>" nogil:
    cdef struct sockaddr_nl:
        unsigned short nl_family
        unsigned nl_pid
        unsigned nl_groups
    int NETLINK_ROUTE

cdef extern from "<linux/rtnetlink.h>" nogil:
    unsigned RTMGRP_LINK

cdef extern from "<unistd.h>" nogil:
    long lseek(int fd, long offset, int whence)
    int SEEK_END

cdef extern from "<sys/statvfs.h>" nogil:
    cdef struct statvfs_t "statvfs":
        unsigned long f_frsize
        unsigned long f_blocks
        unsigned long f_bavail
        unsigned long f_files
        unsigned long f_favail
    int statvfs(const char *path, statvfs_t *buf)

cdef enum Kind:
    K_MEM_AVAILABLE = 1
    K_PSI_SOME
    K_PSI_FULL
    K_CPU_BUSY
    K_TASKS
    K_COUNT
    K_STATVFS
    K_LINKS_QUIET
    K_KMSG_QUIET

MEM_AVAILABLE = K_MEM_AVAILABLE
PSI_SOME = K_PSI_SOME
PSI_FULL = K_PSI_FULL
CPU_BUSY = K_CPU_BUSY
TASKS = K_TASKS
COUNT = K_COUNT
STATVFS = K_STATVFS
LINKS_QUIET = K_LINKS_QUIET
KMSG_QUIET = K_KMSG_QUIET

cdef enum:
    FIRST_SIZE = 4096
    NUMBER_SIZE = 128        # a line of numbers: a sysctl read allocates what is asked for
    HISTORY = 512            # readings a CPU or STATVFS gate keeps: 8 minutes at 1 s

SLACK = 0.05                 # a gate due this soon is checked in the same tick
cdef double C_SLACK = SLACK


cdef struct Gate:
    int kind
    int fd                   # -1 for STATVFS, which goes by path
    char *path               # STATVFS only
    int armed
    double every             # seconds between two checks
    double due               # monotonic time of the next check
    double checked           # monotonic time of the last check that passed (or of arming)
    double limit
    double second            # MEM_AVAILABLE: the fall (bytes/s) to allow for at least;
                             # STATVFS: the free inodes' limit
    double prev_value        # MEM_AVAILABLE: the previous check's figure, and when
    double prev_at
    char *buf                # the latest reading
    size_t size              # buf's capacity
    # CPU_BUSY only
    char *prev_buf           # the previous reading that passed, whole
    size_t prev_size, prev_len
    pp_cpustat prev
    double *hist_at          # CPU_BUSY, STATVFS: the readings passed, a ring
    double *hist_busy        # ... busy share | free bytes
    double *hist_runnable    # ... runnable tasks | free inodes
    int hist_start, hist_len
    # TASKS only: a total read and the fork count read just before it
    uint64_t base_total, base_forks
    int has_base
    unsigned long reads      # times the gate read its file (TASKS: bound not enough)


cdef struct Tick:
    # What one tick's checks read that another gate of the same tick may use.
    uint64_t forks           # /proc/stat "processes", read by the CPU gate
    int has_forks


cdef inline double monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef ssize_t fill(int fd, char **buf, size_t *size) noexcept nogil:
    """The whole file into *buf (grown as needed, then read again from 0 so
    the content comes from one read); its length, or -1."""
    cdef ssize_t n
    cdef char *bigger
    while True:
        n = pread(fd, buf[0], size[0], 0)
        if n < 0:
            if errno == EINTR:
                continue
            return -1
        if <size_t>n < size[0]:
            return n
        bigger = <char *>realloc(buf[0], size[0] * 2)
        if bigger == NULL:
            return -1
        buf[0] = bigger
        size[0] *= 2


cdef void remember(Gate *g, double at, double busy, double runnable) noexcept nogil:
    cdef int slot
    if g.hist_len < HISTORY:
        slot = (g.hist_start + g.hist_len) % HISTORY
        g.hist_len += 1
    else:
        slot = g.hist_start
        g.hist_start = (g.hist_start + 1) % HISTORY
    g.hist_at[slot], g.hist_busy[slot], g.hist_runnable[slot] = at, busy, runnable


cdef int quiet(int fd) noexcept nogil:
    """Nothing to read on `fd` (and no error pending)."""
    cdef pollfd p
    p.fd, p.events, p.revents = fd, POLLIN, 0
    return poll(&p, 1, 0) == 0


cdef void drain(int fd, char *buf, size_t size) noexcept nogil:
    while recv(fd, buf, size, MSG_DONTWAIT) > 0:
        pass


cdef int rtnetlink_links() noexcept nogil:
    """A socket that becomes readable when a link of this network namespace
    appears, goes or changes; -1 on failure (errno set)."""
    cdef sockaddr_nl addr
    cdef int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE)
    if fd < 0:
        return -1
    memset(&addr, 0, sizeof(addr))
    addr.nl_family = AF_NETLINK
    addr.nl_groups = RTMGRP_LINK
    if bind(fd, <sockaddr *>&addr, sizeof(addr)) != 0:
        close(fd)
        return -1
    return fd


cdef int tasks_pass(Gate *g, Tick *tick) noexcept nogil:
    """The TASKS gate: the fork bound when this tick has the fork count,
    else (or when the bound reaches the limit) /proc/loadavg itself."""
    cdef uint64_t total
    cdef ssize_t n
    if (tick.has_forks and g.has_base and tick.forks >= g.base_forks
            and <double>(g.base_total + (tick.forks - g.base_forks)) < g.limit):
        return 1
    n = fill(g.fd, &g.buf, &g.size)
    g.reads += 1
    if n < 0 or pp_parse_task_total(g.buf, n, &total) < 0 or <double>total >= g.limit:
        return 0
    if tick.has_forks:           # read before the total: the pair is a sound bound
        g.base_total, g.base_forks, g.has_base = total, tick.forks, 1
    return 1


cdef int passes(Gate *g, double now, Tick *tick) noexcept nogil:
    """Read the gate's file once and compare; 1: still calm."""
    cdef ssize_t n
    cdef pp_meminfo mem
    cdef statvfs_t fs
    cdef pp_psi psi
    cdef pp_cpustat cur
    cdef uint64_t value
    cdef double busy, headroom, fall
    cdef char *swap
    cdef size_t swap_size
    if g.kind == K_LINKS_QUIET or g.kind == K_KMSG_QUIET:
        return quiet(g.fd)
    if g.kind == K_STATVFS:
        if statvfs(g.path, &fs) != 0:
            return 0
        if <double>fs.f_bavail * fs.f_frsize < g.limit:
            return 0
        if fs.f_files and <double>fs.f_favail < g.second:
            return 0
        remember(g, now, <double>fs.f_bavail * fs.f_frsize, <double>fs.f_favail)
        return 1
    if g.kind == K_TASKS:
        return tasks_pass(g, tick)
    n = fill(g.fd, &g.buf, &g.size)
    g.reads += 1
    if n < 0:
        return 0                 # the shield's own step reads it and says why
    if g.kind == K_MEM_AVAILABLE:
        if pp_parse_meminfo(g.buf, n, &mem) < 0:
            return 0
        headroom = <double>mem.available - g.limit
        fall = g.second
        if now > g.prev_at and (g.prev_value - <double>mem.available) / (now - g.prev_at) > fall:
            fall = (g.prev_value - <double>mem.available) / (now - g.prev_at)
        g.prev_value, g.prev_at = <double>mem.available, now
        return headroom >= fall * g.every
    if g.kind == K_PSI_SOME or g.kind == K_PSI_FULL:
        if pp_parse_psi(g.buf, n, &psi) < 0:
            return 0
        return (psi.some_avg[0] if g.kind == K_PSI_SOME else psi.full_avg[0]) < g.limit
    if g.kind == K_COUNT:
        if pp_u64(g.buf, g.buf + n, &value) == g.buf:
            return 0
        return <double>value < g.limit
    if g.kind == K_CPU_BUSY:
        if pp_parse_cpustat(g.buf, n, &cur) < 0:
            return 0
        tick.forks, tick.has_forks = cur.forks, cur.has_forks
        busy = pp_busy_fraction(&g.prev, &cur)
        if busy >= g.limit:
            return 0             # the shield judges from `previous` itself
        g.prev = cur
        swap, swap_size = g.prev_buf, g.prev_size
        g.prev_buf, g.prev_size, g.prev_len = g.buf, g.size, <size_t>n
        g.buf, g.size = swap, swap_size
        remember(g, now, busy, <double>(cur.procs_running - 1 if cur.procs_running > 0 else 0))
        return 1
    return 0


cdef void arm_alarm(double seconds) noexcept nogil:
    cdef itimerval value
    if seconds <= 0.0:
        seconds = 0.001          # 0 would disarm it
    value.it_interval.tv_sec = 0
    value.it_interval.tv_usec = 0
    value.it_value.tv_sec = <long>seconds
    value.it_value.tv_usec = <long>((seconds - <double>value.it_value.tv_sec) * 1e6)
    setitimer(ITIMER_REAL, &value, NULL)


cdef class CalmWatch:
    cdef Gate *gates
    cdef int count, capacity

    def __cinit__(self, int capacity=16):
        self.gates = <Gate *>calloc(capacity, sizeof(Gate))
        if self.gates == NULL:
            raise MemoryError()
        self.capacity = capacity
        self.count = 0

    def __dealloc__(self):
        self._release()

    cdef void _release(self):
        cdef int i
        cdef Gate *g
        if self.gates == NULL:
            return
        for i in range(self.count):
            g = &self.gates[i]
            if g.fd >= 0:
                close(g.fd)
                g.fd = -1
            free(g.buf)
            free(g.path)
            free(g.prev_buf)
            free(g.hist_at)
            free(g.hist_busy)
            free(g.hist_runnable)
        free(self.gates)
        self.gates = NULL
        self.count = 0

    def add(self, int kind, path, double every):
        """A gate of `kind` on the file at `path`, checked every `every`
        seconds once armed; its index. OSError when the file cannot be opened."""
        if kind < K_MEM_AVAILABLE or kind > K_KMSG_QUIET:
            raise ValueError(f"no such gate kind: {kind}")
        cdef Gate *grown
        if self.gates == NULL:
            raise ValueError("the calm watch is closed")
        if self.count == self.capacity:        # never inside run(): same thread
            grown = <Gate *>realloc(self.gates, 2 * self.capacity * sizeof(Gate))
            if grown == NULL:
                raise MemoryError()
            memset(&grown[self.capacity], 0, self.capacity * sizeof(Gate))
            self.gates, self.capacity = grown, 2 * self.capacity
        cdef bytes encoded = os.fsencode(path)
        cdef Gate *g
        if kind == K_STATVFS:
            os.statvfs(encoded)      # OSError names the path
            fd = -1
        elif kind == K_LINKS_QUIET:
            fd = rtnetlink_links()
            if fd < 0:
                raise OSError(errno, os.strerror(errno), "rtnetlink")
        elif kind == K_KMSG_QUIET:
            fd = os.open(encoded, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        else:
            fd = os.open(encoded, os.O_RDONLY | os.O_CLOEXEC)
        g = &self.gates[self.count]
        self.count += 1              # from here on, freed with the others
        g.kind, g.fd, g.every, g.armed = kind, fd, every, 0
        g.size = NUMBER_SIZE if kind == K_TASKS or kind == K_COUNT else FIRST_SIZE
        g.buf = <char *>malloc(g.size)
        if g.buf == NULL:
            raise MemoryError()
        if kind == K_STATVFS:
            g.path = <char *>malloc(len(encoded) + 1)
            if g.path == NULL:
                raise MemoryError()
            memcpy(g.path, <char *>encoded, len(encoded) + 1)
        if kind == K_CPU_BUSY:
            g.prev_size = FIRST_SIZE
            g.prev_buf = <char *>malloc(g.prev_size)
            if g.prev_buf == NULL:
                raise MemoryError()
        if kind == K_CPU_BUSY or kind == K_STATVFS:
            g.hist_at = <double *>calloc(HISTORY, sizeof(double))
            g.hist_busy = <double *>calloc(HISTORY, sizeof(double))
            g.hist_runnable = <double *>calloc(HISTORY, sizeof(double))
            if g.hist_at == NULL or g.hist_busy == NULL or g.hist_runnable == NULL:
                raise MemoryError()
        return self.count - 1

    cdef Gate *_gate(self, int index) except NULL:
        if self.gates == NULL or index < 0 or index >= self.count:
            raise IndexError(f"no gate {index}")
        return &self.gates[index]

    def arm(self, int index, double limit, double due, double second=0.0):
        """Check gate `index` against `limit` from `due` on; `second`: a
        MEM_AVAILABLE gate's fall rate, a STATVFS gate's inode limit. A CPU or
        memory gate reads its file now: its first check measures from here.
        A gate's history starts empty."""
        cdef Gate *g = self._gate(index)
        cdef ssize_t n
        cdef pp_meminfo mem
        if g.kind == K_MEM_AVAILABLE:
            n = fill(g.fd, &g.buf, &g.size)
            if n < 0:
                raise OSError(errno, os.strerror(errno))
            if pp_parse_meminfo(g.buf, n, &mem) < 0:
                raise ValueError("not /proc/meminfo content: no MemTotal line")
            g.prev_value, g.prev_at = <double>mem.available, monotonic()
        g.second = second
        g.hist_start = g.hist_len = 0
        g.has_base = 0           # the bound starts again from a reading of the total
        if g.kind == K_CPU_BUSY:
            n = fill(g.fd, &g.prev_buf, &g.prev_size)
            if n < 0:
                raise OSError(errno, os.strerror(errno))
            if pp_parse_cpustat(g.prev_buf, n, &g.prev) < 0:
                raise ValueError("not /proc/stat content: no aggregate 'cpu ' line")
            g.prev_len = <size_t>n
        g.limit, g.due, g.armed, g.checked = limit, due, 1, monotonic()

    def reset(self, int index):
        """Before the shield's own step: a quiet gate forgets what happened so
        far (the step sees it), so anything after it, even during the step,
        fails the gate. (Nothing for the other kinds.)"""
        cdef Gate *g = self._gate(index)
        if g.kind == K_LINKS_QUIET:
            drain(g.fd, g.buf, g.size)
        elif g.kind == K_KMSG_QUIET:
            lseek(g.fd, 0, SEEK_END)

    def disarm(self, int index):
        self._gate(index).armed = 0

    def armed(self, int index):
        return bool(self._gate(index).armed)

    def checked(self, int index):
        """When gate `index` last passed a check in `run` (or was armed):
        the shield's reading is that fresh (the watchdog's liveness)."""
        return self._gate(index).checked

    def previous(self, int index):
        """A CPU gate's last reading that passed, as the bytes of /proc/stat."""
        cdef Gate *g = self._gate(index)
        if g.kind != K_CPU_BUSY:
            raise ValueError("only a CPU gate keeps its previous reading")
        return PyBytes_FromStringAndSize(g.prev_buf, g.prev_len)

    def history(self, int index):
        """The readings a gate passed since it was armed, oldest first: a CPU
        gate's [(monotonic time, busy share, runnable tasks less the reader)],
        a STATVFS gate's [(monotonic time, free bytes, free inodes)]."""
        cdef Gate *g = self._gate(index)
        cdef int i, slot
        if g.hist_at == NULL:
            raise ValueError("only CPU and STATVFS gates keep a history")
        out = []
        for i in range(g.hist_len):
            slot = (g.hist_start + i) % HISTORY
            if g.kind == K_CPU_BUSY:
                out.append((g.hist_at[slot], g.hist_busy[slot], int(g.hist_runnable[slot])))
            else:
                out.append((g.hist_at[slot], int(g.hist_busy[slot]), int(g.hist_runnable[slot])))
        return out

    def kept(self, int index):
        """What an armed gate kept for its shield's next step (`Shield.resume`):
        a CPU gate's (last /proc/stat that passed, history), a STATVFS gate's
        (None, history); None for the other kinds and for a disarmed gate."""
        cdef Gate *g = self._gate(index)
        if not g.armed or g.hist_at == NULL:
            return None
        return (self.previous(index) if g.kind == K_CPU_BUSY else None, self.history(index))

    def reads(self, int index):
        """How many times gate `index` has read its file (a TASKS gate does
        only when its fork bound is not enough)."""
        return self._gate(index).reads

    def check(self, int index):
        """Check one gate now, alone, outside `run` (tests, the bench); True:
        still calm."""
        cdef Gate *g = self._gate(index)
        cdef Tick tick
        tick.has_forks = 0
        return bool(passes(g, monotonic(), &tick))

    def sweep(self):
        """Check every armed gate now, as one tick of `run` does (tests, the
        bench): the index of the first that fails, or -1."""
        cdef int i
        if self.gates == NULL:
            raise ValueError("the calm watch is closed")
        for i in range(self.count):
            self.gates[i].due = 0.0
        return self._tick(monotonic(), NULL)

    def run(self, double until, int bell_fd, double budget=0.0, bint alarm=False):
        """Check the armed gates when due and sleep between them, until a gate
        fails (its index), `until` (monotonic) is within SLACK (-1), or
        `bell_fd`, an eventfd, is written to (-2, drained). With `alarm`,
        arms ITIMER_REAL before each sleep for its end plus `budget`."""
        cdef int result
        if self.gates == NULL:
            raise ValueError("the calm watch is closed")
        with nogil:
            result = self._run(until, bell_fd, budget, alarm)
        return result

    cdef int _tick(self, double now, double *wake) noexcept nogil:
        """Check the gates due at `now`; the index of one that fails, or -1
        with *wake lowered to the next gate's due time. TASKS gates go last,
        so they may use the fork count the CPU gate read in the same tick."""
        cdef int i, last
        cdef Gate *g
        cdef Tick tick
        tick.has_forks = 0
        for last in range(2):
            for i in range(self.count):
                g = &self.gates[i]
                if not g.armed or (g.kind == K_TASKS) != last:
                    continue
                if now >= g.due - C_SLACK:
                    if not passes(g, now, &tick):
                        return i
                    g.checked = now
                    g.due = now + g.every
                if wake != NULL and g.due < wake[0]:
                    wake[0] = g.due
        return -1

    cdef int _run(self, double until, int bell_fd, double budget, bint alarm) noexcept nogil:
        cdef double now, wake
        cdef int failed, ready
        cdef pollfd bell
        cdef uint64_t drained
        while True:
            now = monotonic()
            if now >= until - C_SLACK:
                return -1
            wake = until
            failed = self._tick(now, &wake)
            if failed >= 0:
                return failed
            if alarm:
                arm_alarm(wake - now + budget)
            bell.fd, bell.events, bell.revents = bell_fd, POLLIN, 0
            ready = poll(&bell, 1, <int>ceil(min(wake - now, 3600.0) * 1000.0))
            if ready > 0:
                read(bell_fd, &drained, sizeof(drained))
                return -2

    def close(self):
        self._release()
