"""Writing records to /dev/kmsg without losing any (record/reader.py reads them back).

The kernel's trap: with `kernel.printk_devkmsg=ratelimit` (the default) each
open file of /dev/kmsg may write 10 records per 5 s; the excess is dropped
while write() still reports success. So RecordWriter counts its own writes:

1. each open file ("slot") has a budget of SLOT_BUDGET writes per sliding
   BUDGET_WINDOW (5 s plus a margin); a slot with budget left is used at once;
2. when every open slot is spent, a fresh one is opened (each open file has
   its own rate-limit state), up to MAX_SLOTS;
3. when the pool is spent too, the record is queued and a small writer
   thread writes it as soon as a slot's budget comes back; the caller never
   waits;
4. if the queue passes MAX_QUEUED, queued records of the same event and
   resource are merged into one record with `merged=N` (the fields of the
   latest one, N the number of records it stands for);
5. close() writes out the whole queue at once through short-lived extra
   files, each used within its budget, so nothing is lost at shutdown.

When /dev/kmsg cannot be opened or written, or printk_devkmsg is `off`
(the kernel then drops every write), records go to stderr, with one warning.
"""
import collections
import os
import sys
import threading
import time

from oorkiller.record import logfmt
from oorkiller.record.metrics import Counters

SLOT_BUDGET = 8          # the kernel allows 10; keep 2 for clock rounding
BUDGET_WINDOW = 5.5      # seconds; the kernel's window is 5 s (in jiffies)
MAX_SLOTS = 4            # so up to 32 records per 5.5 s go out at once
MAX_QUEUED = 256
PRINTK_DEVKMSG = "/proc/sys/kernel/printk_devkmsg"


def devkmsg_mode(path=PRINTK_DEVKMSG):
    """`on`, `off` or `ratelimit` (the default, also when the file is unreadable)."""
    try:
        with open(path) as sysctl:
            mode = sysctl.read().strip()
    except OSError:
        return "ratelimit"
    return mode if mode in ("on", "off") else "ratelimit"


class _Slot:
    """One open file of /dev/kmsg and the times of its recent writes."""

    def __init__(self, path):
        # O_APPEND means nothing to /dev/kmsg; it lets tests use a plain file.
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.writes = collections.deque()

    def budget_left(self, now, limit):
        while self.writes and now - self.writes[0] >= BUDGET_WINDOW:
            self.writes.popleft()
        return limit is None or len(self.writes) < limit

    def free_at(self):
        """When the oldest write leaves the window (a budget comes back)."""
        return self.writes[0] + BUDGET_WINDOW

    def write(self, data, now):
        os.write(self.fd, data)
        self.writes.append(now)

    def close(self):
        os.close(self.fd)


class _Pending:
    """A record waiting for a budget; several may merge into one."""

    def __init__(self, event, level, fields, pid, record):
        self.event, self.level, self.fields, self.pid = event, level, fields, pid
        self.count = 1
        self._record = record

    @property
    def group(self):
        return (self.event, str(self.fields.get("resource")))

    def absorb(self, later):
        self.count += later.count
        self.fields = later.fields
        if logfmt.LEVELS[later.level] < logfmt.LEVELS[self.level]:
            self.level = later.level  # keep the most severe level
        self._record = None

    def summary_fields(self):
        return dict(self.fields, merged=self.count if self.count > 1 else None)

    def record(self):
        if self._record is None:
            self._record = logfmt.format_record(
                self.event, self.summary_fields(), pid=self.pid, level=self.level)
        return self._record


class RecordWriter:
    """Writes records to /dev/kmsg (budgeted) and to stderr (human form).

    `emit` is thread-safe and never blocks on the rate limit. `close` writes
    out whatever is queued.
    """

    def __init__(self, kmsg=True, stderr=True, kmsg_path="/dev/kmsg",
                 stderr_stream=None, program_pid=None, sysctl_path=PRINTK_DEVKMSG):
        self._to_stderr = stderr
        self._stderr_stream = stderr_stream
        self._kmsg_path = kmsg_path
        self._pid = os.getpid() if program_pid is None else program_pid
        self._lock = threading.Condition()
        self.counters = Counters()             # records emitted and merged, for the metrics
        self._slots = []
        self._queue = collections.deque()
        self._thread = None
        self._closed = False
        self._kmsg_ok = kmsg
        self._budget = SLOT_BUDGET
        if kmsg:
            self._configure_for(devkmsg_mode(sysctl_path))

    def _configure_for(self, mode):
        if mode == "off":
            self._kmsg_failed("kernel.printk_devkmsg=off drops every write")
        elif mode == "on":
            self._budget = None  # no rate limit to respect

    # ---------------------------------------------------------- public API

    @property
    def kmsg_active(self):
        """True while records still go to /dev/kmsg."""
        return self._kmsg_ok

    def emit(self, event, level="info", **fields):
        fields = {logfmt.safe_key(key): value for key, value in fields.items()}
        record = logfmt.format_record(event, fields, pid=self._pid, level=level)
        self.counters.count("oorkiller_records_total", event=event)
        with self._lock:
            if self._to_stderr or not self._kmsg_ok or self._closed:
                self._write_stderr(logfmt.format_human(event, fields))
            if self._kmsg_ok and not self._closed:
                self._submit(_Pending(event, level, fields, self._pid, record))

    def close(self):
        """Write out every queued record, then close /dev/kmsg."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._lock:
            self._drain_through_fresh_files()
            for slot in self._slots:
                slot.close()
            self._slots = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # ---------------------------------------------------------- kmsg side

    def _submit(self, pending):
        if not self._queue and self._write_now(pending):
            return
        self._queue.append(pending)
        if len(self._queue) > MAX_QUEUED:
            self._merge_queue()
        self._start_thread()
        self._lock.notify_all()

    def _write_now(self, pending):
        """Write through a slot with budget left; False when none has any.

        True also when /dev/kmsg failed: the record then went to stderr.
        """
        now = time.monotonic()
        try:
            slot = self._slot_with_budget(now)
            if slot is None:
                return False
            slot.write(pending.record(), now)
        except OSError as error:
            self._kmsg_failed(f"cannot use {self._kmsg_path}: {os.strerror(error.errno)}")
            self._fall_back(pending)
        return True

    def _slot_with_budget(self, now):
        for slot in self._slots:
            if slot.budget_left(now, self._budget):
                return slot
        if len(self._slots) >= MAX_SLOTS:
            return None
        self._slots.append(_Slot(self._kmsg_path))
        return self._slots[-1]

    def _merge_queue(self):
        """Fold queued records of the same event/resource into one each."""
        merged = {}
        for pending in self._queue:
            if pending.group in merged:
                merged[pending.group].absorb(pending)
                self.counters.count("oorkiller_records_merged_total", event=pending.event)
            else:
                merged[pending.group] = pending
        self._queue = collections.deque(merged.values())

    def _start_thread(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._writer_loop,
                                            name="oorkiller-kmsg", daemon=True)
            self._thread.start()

    def _writer_loop(self):
        with self._lock:
            while self._queue and not self._closed and self._kmsg_ok:
                pending = self._queue.popleft()
                if not self._write_now(pending):
                    self._queue.appendleft(pending)
                    self._lock.wait(self._seconds_until_budget())
            self._thread = None

    def _seconds_until_budget(self):
        earliest = min(slot.free_at() for slot in self._slots)
        return max(0.01, earliest - time.monotonic())

    def _drain_through_fresh_files(self):
        """At close: extra short-lived files, each used within its budget."""
        while self._queue and self._kmsg_ok:
            pending = None
            try:
                slot = _Slot(self._kmsg_path)
                try:
                    while self._queue and slot.budget_left(time.monotonic(), self._budget):
                        pending = self._queue.popleft()
                        slot.write(pending.record(), time.monotonic())
                        pending = None
                finally:
                    slot.close()
            except OSError as error:
                self._kmsg_failed(f"cannot use {self._kmsg_path}: {os.strerror(error.errno)}")
                if pending is not None:
                    self._fall_back(pending)

    def _kmsg_failed(self, why):
        """From now on records go to stderr only; say so once."""
        if not self._kmsg_ok:
            return
        self._kmsg_ok = False
        self._write_stderr(f"{logfmt.PROGRAM}: warning: {why}; records go to stderr only")
        while self._queue:
            self._fall_back(self._queue.popleft())

    def _fall_back(self, pending):
        """A record /dev/kmsg did not take: on stderr unless it is there already."""
        if not self._to_stderr:
            self._write_stderr(logfmt.format_human(pending.event, pending.summary_fields()))

    # ---------------------------------------------------------- stderr side

    def _write_stderr(self, line):
        stream = self._stderr_stream or sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # stderr closed: nothing better to do, and never crash the daemon
