# cython: language_level=3
"""The process table (compiled as oorkiller.proc._proctable).

It lists the proc root with readdir (getdents64 underneath) and keeps, for
every PID, ONE held fd: the file this table samples (`hold=`: `oom_score`
for the memory shield, `stat` for CPU, `io` for disks and IO). A held fd
stays bound to the process it was opened for: once that process is gone,
reading it fails with ESRCH, so a PID reused by a new process is never
mistaken for the old one. The new process becomes a new entry, with a new
`serial`, at the next refresh.

Every other file is read by path and then checked to belong to the same
process: the held fd is read again afterwards (it still reads, so the
process that owned the PID when the file was opened is still alive: it is
ours), or, without a held fd, the start time in `stat` must be unchanged.
One fd per process (not a directory fd plus two files) is what lets 10,000
processes fit in the descriptor limit of one table, and four tables in one
daemon.

The hot path is `sample_memory()`: one pread of the held `oom_score` fd per
eligible entry into a buffer the table owns, and `rank_memory()` sorts in C.

Static facts (comm, uid, starttime, ppid, ...) are read once when a PID is
first seen; `sample_cpu()` refreshes the ones that can change (ppid on
reparenting, comm on prctl) together with the CPU time.

File descriptors: the table raises RLIMIT_NOFILE at construction and keeps
at most `soft limit - RESERVED_FDS` fds held, so the rest of the daemon
always has descriptors left. Entries beyond that budget (or created while
the process ran out of fds) are kept without held fds and read by
open/read/close, by path under the proc root; they lose the
same-process guarantee of held fds between samples, though `open_pidfd`
still checks the start time.

The table is not thread-safe: one thread refreshes and samples it. A Proc
keeps its values (and owns its fds) after it leaves the table.
"""

import errno as errno_codes
import os
import resource

from libc.errno cimport errno, ESRCH, ENOENT, EMFILE, ENFILE, EACCES
from libc.stdint cimport uint64_t, int64_t
from libc.stdio cimport snprintf
from libc.stdlib cimport malloc, realloc, free, qsort
from libc.string cimport memcmp
from cpython.bytes cimport PyBytes_FromStringAndSize

from oorkiller.proc.procparse cimport (
    pp_pidstat, pp_parse_pidstat, pp_pidio, pp_parse_pidio, pp_pidstatus,
    pp_parse_pidstatus, pp_i64, PP_PF_KTHREAD, openat, pread, close,
    O_RDONLY, O_CLOEXEC, O_DIRECTORY,
)

from oorkiller.proc._readers import parse_pid_status

__all__ = ["ProcTable", "Proc", "raise_fd_limit", "RESERVED_FDS"]

cdef extern from *:
    """
    #include <errno.h>
    static inline void set_errno(int value) { errno = value; }
    """
    void set_errno(int value) nogil

cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR:
        pass
    cdef struct dirent:
        char d_name[256]
    DIR *opendir(const char *name)
    dirent *readdir(DIR *dirp)
    int closedir(DIR *dirp)

# Descriptors a Proc can hold, by slot.
cdef enum:
    STAT_FD = 0
    OOM_FD = 1
    IO_FD = 2
    N_SLOTS = 3

# Values of an empty slot.
cdef enum:
    NOT_HELD = -1    # not opened (yet, or over budget): read by open/read/close
    NO_ACCESS = -2   # opening was refused for good (EACCES): not retried

cdef const char *SLOT_FILES[3]
SLOT_FILES[STAT_FD] = b"stat"
SLOT_FILES[OOM_FD] = b"oom_score"
SLOT_FILES[IO_FD] = b"io"

RESERVED_FDS = 256        # descriptors always left to the rest of the daemon
WANTED_FD_LIMIT = 65536   # one held fd per process, in up to four tables, and room

cdef enum:
    READ_BUFFER = 4096    # stat and status of any process fit (comm <= 64 bytes)


def raise_fd_limit(int wanted=WANTED_FD_LIMIT):
    """Raises RLIMIT_NOFILE; returns the soft limit now in force.

    The soft limit goes up to the hard limit. When the hard limit is below
    `wanted` and we may raise it (root: CAP_SYS_RESOURCE), both go to
    `wanted`. A failure leaves the limits as they were.
    """
    nofile = resource.RLIMIT_NOFILE
    soft, hard = resource.getrlimit(nofile)
    if hard == resource.RLIM_INFINITY or hard < wanted:
        try:
            resource.setrlimit(nofile, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(nofile, (hard, hard))
            return hard
        except (ValueError, OSError):
            pass
    return soft


cdef inline int64_t memory_score(int oom_score, int adjust) noexcept nogil:
    # /proc/PID/oom_score is (1000 + share + oom_score_adj) * 2 / 3 in integer
    # arithmetic, share in thousandths of RAM+swap (fs/proc/base.c). Undo the
    # scaling, taking the top of the range the truncation left (a process with
    # no memory reads 666, which is 999 or 1000: it gets 0, not -1).
    return (<int64_t>oom_score * 3 + 2) // 2 - 1000 + adjust


cdef class Proc:
    """One process of the table. Read-only facts and samples; writable
    policy slots (`eligible`, `adjust`, `note`) for the Python layer."""
    cdef readonly int pid, ppid, pgrp, session
    cdef readonly bytes comm
    cdef readonly uint64_t uid, starttime, serial
    cdef readonly bint kthread, alive
    cdef readonly uint64_t cpu_ticks
    cdef readonly bint running       # state R at its last stat read (runnable now)
    cdef readonly int threads         # num_threads of stat, as of the last read of stat
    cdef readonly int oom_score
    cdef readonly uint64_t rss_bytes  # 0 until ProcTable.read_status(proc)
    cdef readonly uint64_t io_read_bytes, io_write_bytes, io_cancelled, io_syscalls
    cdef readonly uint64_t io_wchar   # every byte written (tmpfs counts no write_bytes)
    cdef public bint eligible
    cdef public int adjust
    cdef public object note
    cdef int fds[3]
    cdef uint64_t seen  # the refresh generation that last listed this PID

    def __cinit__(self):
        for slot in range(N_SLOTS):
            self.fds[slot] = NOT_HELD
        self.alive = True

    def __dealloc__(self):
        self.close_fds()

    cdef int close_fds(self) noexcept:
        """Closes every held fd; returns how many were held."""
        cdef int closed = 0
        for slot in range(N_SLOTS):
            if self.fds[slot] >= 0:
                close(self.fds[slot])
                closed += 1
            self.fds[slot] = NOT_HELD
        return closed

    @property
    def memory_score(self):
        """(oom_score*3+2)//2 - 1000 + adjust: thousandths of RAM+swap, with
        oom_score_adj (added by the kernel) and the rules' `adjust`."""
        return memory_score(self.oom_score, self.adjust)

    @property
    def held_fds(self):
        """How many of its files this entry keeps open (0 or 1)."""
        cdef int held = 0
        for slot in range(N_SLOTS):
            if self.fds[slot] >= 0:
                held += 1
        return held

    def __repr__(self):
        state = "" if self.alive else ", gone"
        return (f"Proc(pid={self.pid}, comm={self.comm!r}, uid={self.uid}, ppid={self.ppid}, "
                f"oom_score={self.oom_score}, cpu_ticks={self.cpu_ticks}, "
                f"eligible={self.eligible}, serial={self.serial}{state})")


cdef struct RankKey:
    int64_t score
    uint64_t cpu_ticks
    Py_ssize_t index


cdef int compare_rank(const void *a, const void *b) noexcept nogil:
    """Higher score first; on a tie less CPU time (less work lost) first."""
    cdef const RankKey *x = <const RankKey *>a
    cdef const RankKey *y = <const RankKey *>b
    if x.score != y.score:
        return -1 if x.score > y.score else 1
    if x.cpu_ticks != y.cpu_ticks:
        return -1 if x.cpu_ticks < y.cpu_ticks else 1
    return -1 if x.index < y.index else (1 if x.index > y.index else 0)


cdef int pid_of_name(const char *name) noexcept nogil:
    """The PID a /proc entry name stands for, or 0 if it is not all digits."""
    cdef int64_t pid = 0
    cdef int i = 0
    while name[i] != 0:
        if name[i] < c'0' or name[i] > c'9' or i >= 10:
            return 0
        pid = pid * 10 + (name[i] - c'0')
        i += 1
    return <int>pid if 0 < pid <= 0x7fffffff else 0


cdef inline bint is_gone(int err) noexcept nogil:
    # ESRCH: a held fd of an exited process; ENOENT: its directory is gone.
    return err == ESRCH or err == ENOENT


cdef class ProcTable:
    """ProcTable(proc_root="/proc", self_pid=os.getpid(), max_held_fds=None, hold="oom_score")"""
    cdef readonly str proc_root
    cdef readonly int self_pid
    cdef bytes _root_path
    cdef int _root_fd
    cdef dict _by_pid       # pid -> Proc, live entries only
    cdef list _procs        # live entries, in listing order
    cdef list _dropped      # entries a sample dropped since the last refresh
    cdef uint64_t _generation, _next_serial
    cdef Py_ssize_t _held_fds, _fd_budget
    cdef int _held_slot     # the one file kept open per entry
    cdef RankKey *_rank_keys
    cdef Py_ssize_t _rank_capacity
    cdef char _buf[READ_BUFFER]

    def __cinit__(self):
        self._root_fd = -1
        self._rank_keys = NULL

    def __init__(self, proc_root="/proc", self_pid=None, max_held_fds=None, hold="oom_score"):
        slots = {"oom_score": OOM_FD, "stat": STAT_FD, "io": IO_FD}
        if hold not in slots:
            raise ValueError(f"hold must be one of {sorted(slots)}, not {hold!r}")
        self._held_slot = slots[hold]
        self.proc_root = os.fsdecode(os.fspath(proc_root))
        self._root_path = os.fsencode(self.proc_root)
        self._root_fd = os.open(self.proc_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.self_pid = os.getpid() if self_pid is None else self_pid
        soft_limit = raise_fd_limit()
        if max_held_fds is None:
            self._fd_budget = max(0, soft_limit - RESERVED_FDS)
        else:
            self._fd_budget = max_held_fds
        self._by_pid = {}
        self._procs = []
        self._dropped = []

    def __dealloc__(self):
        if self._root_fd >= 0:
            close(self._root_fd)
        free(self._rank_keys)

    def close(self):
        """Closes every held fd; the table is empty afterwards."""
        cdef Proc p
        for p in self._procs:
            self._forget(p)
        self._procs = []
        if self._root_fd >= 0:
            close(self._root_fd)
            self._root_fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # ------------------------------------------------------------ lookup

    def entries(self):
        return list(self._procs)

    def get(self, pid):
        return self._by_pid.get(pid)

    def __len__(self):
        return len(self._procs)

    @property
    def held_fds(self):
        """Descriptors the table holds for its entries."""
        return self._held_fds

    # ------------------------------------------------------------ descriptors

    cdef int _open_slot(self, Proc p, int slot) noexcept:
        """Opens file `slot` of p by path under the proc root. Returns the
        fd, or -1 with errno set. Who it belongs to is checked by the caller
        (`_same_process`)."""
        cdef char path[64]
        if self._root_fd < 0:
            set_errno(EMFILE)
            return -1
        snprintf(path, sizeof(path), "%d/%s", p.pid, SLOT_FILES[slot])
        return openat(self._root_fd, path, O_RDONLY | O_CLOEXEC)

    cdef bint _hold(self, Proc p, int slot) noexcept:
        """Opens the table's held file of p and keeps it, while the fd budget
        allows. Only an entry's first open is kept (in `_add`, checked there to
        be the listed process); other files are read and closed."""
        cdef int fd
        if p.fds[slot] >= 0:
            return True
        if slot != self._held_slot or p.fds[slot] == NO_ACCESS or self._held_fds >= self._fd_budget:
            return False
        if p.serial != 0:
            return False        # held fds are taken when an entry is made, never later
        fd = self._open_slot(p, slot)
        if fd < 0:
            if errno == EMFILE or errno == ENFILE:
                # Out of descriptors: hold no more, leave room for transient reads.
                self._fd_budget = max(0, self._held_fds - RESERVED_FDS)
            elif errno == EACCES:
                p.fds[slot] = NO_ACCESS
            return False
        p.fds[slot] = fd
        self._held_fds += 1
        return True

    cdef ssize_t _read_slot(self, Proc p, int slot, char *buf, size_t capacity) noexcept:
        """Reads file `slot` of p from offset 0 into buf: one pread of the
        held fd, else open/read/close. Returns the length, or -1 with errno."""
        cdef int fd
        cdef ssize_t n
        cdef int saved_errno
        if p.fds[slot] >= 0 or self._hold(p, slot):
            return pread(p.fds[slot], buf, capacity, 0)
        if p.fds[slot] == NO_ACCESS:
            set_errno(EACCES)
            return -1
        fd = self._open_slot(p, slot)
        if fd < 0:
            return -1
        n = pread(fd, buf, capacity, 0)
        saved_errno = errno
        close(fd)
        set_errno(saved_errno)
        return n

    cdef void _forget(self, Proc p) noexcept:
        """Marks p gone, closes its fds and removes it from the pid index."""
        p.alive = False
        self._held_fds -= p.close_fds()
        if self._by_pid.get(p.pid) is p:
            del self._by_pid[p.pid]

    cdef void _drop(self, Proc p) noexcept:
        """A sample found p dead: forget it; the next refresh reports it."""
        self._forget(p)
        self._dropped.append(p)

    cdef void _compact(self):
        self._procs = [p for p in self._procs if (<Proc>p).alive]

    # ------------------------------------------------------------ refresh

    def refresh(self):
        """Lists the proc root: adds new PIDs, removes vanished ones.

        Returns (added, removed): lists of Proc. `removed` also holds the
        entries that samples dropped since the previous refresh.
        """
        cdef DIR *listing
        cdef dirent *item
        cdef int pid
        cdef Proc p
        cdef list added = []
        cdef list removed
        self._generation += 1
        listing = opendir(self._root_path)
        if listing == NULL:
            raise OSError(errno, os.strerror(errno), self.proc_root)
        try:
            while True:
                item = readdir(listing)
                if item == NULL:
                    break
                pid = pid_of_name(item.d_name)
                if pid == 0:
                    continue
                p = self._by_pid.get(pid)
                if p is None:
                    p = self._add(pid)
                    if p is None:
                        continue  # vanished mid-scan, or unreadable for now
                    added.append(p)
                p.seen = self._generation
        finally:
            closedir(listing)

        removed = self._dropped
        self._dropped = []
        for p in self._procs:
            if p.seen != self._generation:
                self._forget(p)
                removed.append(p)
        self._compact()
        self._procs.extend(added)
        return added, removed

    cdef Proc _add(self, int pid):
        """A new entry for pid with its static facts, or None if it cannot
        be read (it exited mid-scan, or descriptors ran out).

        The held file is opened first: it binds to the process that had the
        PID then. The facts are read by path after, and the held file must
        still read after that: so the facts are that same process's."""
        cdef Proc p = Proc.__new__(Proc)
        p.pid = pid
        p.alive = True
        cdef int failure
        self._hold(p, self._held_slot)
        if not self._read_facts(p):
            failure = errno
            self._held_fds -= p.close_fds()
            if failure != EMFILE and failure != ENFILE:
                return None
            # Out of descriptors for reads: hold no more, and read this one
            # with the descriptor just given back.
            self._fd_budget = max(0, self._held_fds - RESERVED_FDS)
            if not self._read_facts(p):
                return None
        if not self._same_process(p):
            self._held_fds -= p.close_fds()
            return None
        self._next_serial += 1
        p.serial = self._next_serial
        p.eligible = False     # not judged yet: judge/rules.py alone decides who is a candidate
        self._by_pid[pid] = p
        return p

    cdef bint _read_facts(self, Proc p):
        """Reads stat (held) and status (once) into p; False if unreadable."""
        cdef ssize_t n
        cdef pp_pidstat stat
        cdef pp_pidstatus status
        n = self._read_slot(p, STAT_FD, self._buf, READ_BUFFER)
        if n < 0 or pp_parse_pidstat(self._buf, n, &stat) < 0:
            return False
        p.comm = PyBytes_FromStringAndSize(stat.comm, stat.comm_len)
        p.starttime = stat.starttime
        p.kthread = (stat.flags & PP_PF_KTHREAD) != 0
        self._set_stat(p, &stat)
        # status is read once, for the real uid: not worth a held fd.
        n = self._read_transient(p, b"status")
        if n < 0 or pp_parse_pidstatus(self._buf, n, &status) < 0:
            return False
        p.uid = status.uid
        return True

    cdef bint _same_process(self, Proc p) noexcept:
        """True if p's process is still alive and still p: its held fd reads
        (a held fd of an exited process fails with ESRCH), or, without one,
        `stat` by path shows the same start time."""
        cdef char buf[READ_BUFFER]
        cdef pp_pidstat stat
        cdef ssize_t n
        cdef int slot = self._held_slot
        if p.fds[slot] >= 0:
            return pread(p.fds[slot], buf, READ_BUFFER, 0) >= 0
        n = self._read_slot(p, STAT_FD, buf, READ_BUFFER)
        return n >= 0 and pp_parse_pidstat(buf, n, &stat) == 0 and stat.starttime == p.starttime

    cdef ssize_t _read_transient(self, Proc p, const char *name) noexcept:
        """open/read/close of a file of p into the table's buffer (by path:
        the caller checks `_same_process` afterwards)."""
        cdef char path[64]
        cdef int fd
        cdef ssize_t n
        cdef int saved_errno
        snprintf(path, sizeof(path), "%d/%s", p.pid, name)
        fd = openat(self._root_fd, path, O_RDONLY | O_CLOEXEC)
        if fd < 0:
            return -1
        n = pread(fd, self._buf, READ_BUFFER, 0)
        saved_errno = errno
        close(fd)
        set_errno(saved_errno)
        return n

    cdef void _set_stat(self, Proc p, pp_pidstat *stat):
        """The /proc/PID/stat values that can change during a process's life."""
        p.ppid = stat.ppid          # reparenting when the parent exits
        p.pgrp = stat.pgrp
        p.session = stat.session
        p.cpu_ticks = stat.utime + stat.stime
        p.running = stat.state == c'R'
        p.threads = <int>stat.num_threads
        if <size_t>len(p.comm) != stat.comm_len or memcmp(<const char *>p.comm, stat.comm, stat.comm_len) != 0:
            p.comm = PyBytes_FromStringAndSize(stat.comm, stat.comm_len)  # prctl(PR_SET_NAME)

    # ------------------------------------------------------------ samples

    def sample_memory(self):
        """Preads `oom_score` of every eligible entry (and nothing else).
        Returns how many entries were dropped because their process died."""
        cdef Proc p
        cdef ssize_t n
        cdef int64_t score
        cdef int dropped = 0
        for p in self._procs:
            if not p.eligible:
                continue
            n = self._read_slot(p, OOM_FD, self._buf, 32)
            if n < 0:
                if is_gone(errno):
                    self._drop(p)
                    dropped += 1
                continue
            pp_i64(self._buf, self._buf + n, &score)
            p.oom_score = <int>score
        if dropped:
            self._compact()
        return dropped

    def sample_cpu(self):
        """Preads `stat` of every eligible entry: cpu_ticks = utime + stime.
        An entry whose start time changed (its PID now names another
        process) is dropped like a dead one. Returns the number dropped."""
        cdef Proc p
        cdef ssize_t n
        cdef pp_pidstat stat
        cdef int dropped = 0
        for p in self._procs:
            if not p.eligible:
                continue
            n = self._read_slot(p, STAT_FD, self._buf, READ_BUFFER)
            if n < 0:
                if is_gone(errno):
                    self._drop(p)
                    dropped += 1
                continue
            if pp_parse_pidstat(self._buf, n, &stat) < 0 or stat.starttime != p.starttime:
                self._drop(p)
                dropped += 1
                continue
            self._set_stat(p, &stat)
        if dropped:
            self._compact()
        return dropped

    def sample_io(self):
        """Preads `io` of every eligible entry (the fd is opened on first
        use). Returns the number of entries dropped because they died."""
        cdef Proc p
        cdef ssize_t n
        cdef pp_pidio io
        cdef int dropped = 0
        for p in self._procs:
            if not p.eligible:
                continue
            n = self._read_slot(p, IO_FD, self._buf, READ_BUFFER)
            if n < 0:
                if is_gone(errno):
                    self._drop(p)
                    dropped += 1
                continue  # EACCES: io of a process we may not trace
            if pp_parse_pidio(self._buf, n, &io) < 0:
                continue
            p.io_read_bytes = io.read_bytes
            p.io_write_bytes = io.write_bytes
            p.io_cancelled = io.cancelled_write_bytes
            p.io_syscalls = io.syscr + io.syscw
            p.io_wchar = io.wchar
        if dropped:
            self._compact()
        return dropped

    def floor_preads(self):
        """The benchmark floor: one pread of each entry's held oom_score fd,
        over a plain C array of fds, with no parsing, no Python objects and
        no bookkeeping. A selection can only be slower than this; bench/
        reports how much. Returns the number of successful reads."""
        cdef Py_ssize_t count = len(self._procs)
        cdef Py_ssize_t i, ok = 0
        cdef char buf[32]
        cdef int *fds = <int *>malloc(count * sizeof(int) + 1)
        if fds == NULL:
            raise MemoryError()
        try:
            for i in range(count):
                fds[i] = (<Proc>self._procs[i]).fds[OOM_FD]
            with nogil:
                for i in range(count):
                    if fds[i] >= 0 and pread(fds[i], buf, sizeof(buf), 0) > 0:
                        ok += 1
        finally:
            free(fds)
        return ok

    # ------------------------------------------------------------ ranking

    def rank_memory(self, Py_ssize_t n):
        """The top n eligible entries by memory score, highest first; ties go
        to less cpu_ticks. Entries with oom_score 0 (oom_score_adj -1000,
        kernel threads, not sampled yet) are never returned."""
        cdef Py_ssize_t count = len(self._procs)
        cdef Py_ssize_t ranked = 0
        cdef Py_ssize_t i
        cdef Proc p
        if n <= 0 or count == 0:
            return []
        self._reserve_rank_keys(count)
        for i in range(count):
            p = <Proc>self._procs[i]
            if p.eligible and p.oom_score > 0:
                self._rank_keys[ranked].score = memory_score(p.oom_score, p.adjust)
                self._rank_keys[ranked].cpu_ticks = p.cpu_ticks
                self._rank_keys[ranked].index = i
                ranked += 1
        qsort(self._rank_keys, ranked, sizeof(RankKey), compare_rank)
        return [self._procs[self._rank_keys[i].index] for i in range(min(n, ranked))]

    cdef void _reserve_rank_keys(self, Py_ssize_t count) except *:
        cdef RankKey *bigger
        if count <= self._rank_capacity:
            return
        bigger = <RankKey *>realloc(self._rank_keys, count * 2 * sizeof(RankKey))
        if bigger == NULL:
            raise MemoryError()
        self._rank_keys = bigger
        self._rank_capacity = count * 2

    # ------------------------------------------------------------ on demand

    cdef bytes _read_whole(self, Proc proc, str name):
        """The whole file `name` of proc, read by path and then checked to be
        proc's (`_same_process`). Raises ProcessLookupError when it is gone."""
        if not proc.alive:
            raise _gone_error(proc)
        try:
            fd = os.open(f"{proc.pid}/{name}", os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._root_fd)
            try:
                chunks = []
                while True:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
            finally:
                os.close(fd)
        except (FileNotFoundError, ProcessLookupError):
            raise _gone_error(proc) from None
        if not self._same_process(proc):
            raise _gone_error(proc)
        return b"".join(chunks)

    def read_stat(self, Proc proc not None):
        """Re-reads the held `stat` of one entry (fresh cpu_ticks for the few
        candidates a choice looks at). Raises ProcessLookupError when the
        process is gone or its PID now names another process."""
        cdef ssize_t n
        cdef pp_pidstat stat
        if not proc.alive:
            raise _gone_error(proc)
        n = self._read_slot(proc, STAT_FD, self._buf, READ_BUFFER)
        if n < 0 or pp_parse_pidstat(self._buf, n, &stat) < 0 or stat.starttime != proc.starttime:
            raise _gone_error(proc)
        self._set_stat(proc, &stat)
        return proc.cpu_ticks

    def read_status(self, Proc proc not None):
        """/proc/PID/status as a PidStatus; also sets proc.rss_bytes."""
        status = parse_pid_status(self._read_whole(proc, "status"))
        proc.rss_bytes = status.vm_rss
        return status

    def read_cmdline(self, Proc proc not None):
        """The command line, NUL-separated as the kernel gives it (bytes)."""
        return self._read_whole(proc, "cmdline")

    def read_cgroup(self, Proc proc not None):
        return self._read_whole(proc, "cgroup")

    def read_oom_score_adj(self, Proc proc not None):
        return int(self._read_whole(proc, "oom_score_adj"))

    def read_exe(self, Proc proc not None):
        """The executable's path (bytes); b"" for kernel threads or when the
        process is gone."""
        if not proc.alive:
            return b""
        try:
            target = os.readlink(b"%d/exe" % proc.pid, dir_fd=self._root_fd)
        except (FileNotFoundError, ProcessLookupError):
            return b""
        return target if self._same_process(proc) else b""

    def same_process(self, Proc proc not None):
        """True while proc's process is alive and its PID still names it."""
        return proc.alive and self._same_process(proc)

    def open_pidfd(self, Proc proc not None):
        """A pidfd for proc, only if proc is still the same process.

        pidfd_open first, then `stat` must still show the same start time for
        that PID: the process the pidfd names was alive at pidfd_open, so if
        the PID still has our start time after it, the pidfd names our
        process and not a later one with the same PID (a held `stat` fd of
        an exited process fails with ESRCH). Raises ProcessLookupError
        otherwise.
        """
        cdef char buf[READ_BUFFER]
        cdef pp_pidstat stat
        cdef ssize_t n
        if not proc.alive:
            raise _gone_error(proc)
        pidfd = os.pidfd_open(proc.pid)
        n = self._read_slot(proc, STAT_FD, buf, READ_BUFFER)
        if (n < 0 or pp_parse_pidstat(buf, n, &stat) < 0
                or stat.starttime != proc.starttime or stat.pid != proc.pid):
            os.close(pidfd)
            raise _gone_error(proc)
        return pidfd


def _gone_error(Proc proc):
    return ProcessLookupError(
        errno_codes.ESRCH,
        f"process {proc.pid} ({proc.comm!r}, serial {proc.serial}) is gone")
