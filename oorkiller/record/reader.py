"""Reading this program's records back from the kernel log (/dev/kmsg).

One read() of /dev/kmsg returns one record: `prio,seq,usec,flags;text`, then
continuation lines ` KEY=VALUE`. EPIPE means records were overwritten before
they could be read; that gap is reported, never hidden.
"""
import os
import time

from oorkiller.proc.kmsg import parse_kmsg_entry
from oorkiller.record import logfmt

READ_SIZE = 8192         # a kmsg read() needs room for a whole record

def read_records(kmsg_path="/dev/kmsg", follow=False, since=None, *, stream=None):
    """Yield this program's records from the kernel log, oldest first.

    Each is `{"seq", "usec", "level", "program_pid", "event", ...fields}`
    (field values are str). `follow` keeps waiting for new records. `since`
    (seconds) keeps records written within that many seconds: the kmsg
    timestamp is the kernel's local clock, which runs like CLOCK_MONOTONIC
    (it stops during suspend, unlike CLOCK_BOOTTIME).

    When records were overwritten before we could read them (EPIPE), a
    `{"event": "lost", "count": N}` marker is yielded: N kernel-log records
    of any program, from the sequence gap (None when the gap is unknowable:
    the very first read failed). `stream` replaces the opened file (tests):
    an object whose read(size) returns one kmsg record per call, b"" at the end.
    Raises OSError when the kernel log cannot be opened.
    """
    own_fd = None
    if stream is None:
        flags = os.O_RDONLY | os.O_CLOEXEC | (0 if follow else os.O_NONBLOCK)
        own_fd = os.open(kmsg_path, flags)
        stream = _FdStream(own_fd)
    try:
        yield from _records_from(stream, _since_usec(since))
    finally:
        if own_fd is not None:
            os.close(own_fd)


class _FdStream:
    def __init__(self, fd):
        self.fd = fd

    def read(self, size):
        return os.read(self.fd, size)


def _since_usec(since):
    if since is None:
        return None
    return (time.clock_gettime(time.CLOCK_MONOTONIC) - since) * 1_000_000


def _records_from(stream, since_usec):
    last_seq, overwritten = None, False
    while True:
        try:
            raw = stream.read(READ_SIZE)
        except BrokenPipeError:  # the reader's position was overwritten
            overwritten = True
            continue
        except BlockingIOError:  # no more records (non-blocking read)
            break
        if not raw:
            break
        entry = parse_kmsg_entry(raw)
        if entry is None:
            continue
        if overwritten:
            yield {"event": "lost", "count": None if last_seq is None else entry["seq"] - last_seq - 1}
            overwritten = False
        last_seq = entry["seq"]
        record = _own_record(entry)
        if record is not None and (since_usec is None or entry["usec"] >= since_usec):
            yield record
    if overwritten:
        yield {"event": "lost", "count": None}


def _own_record(entry):
    if not entry["text"].startswith(logfmt.PROGRAM.encode() + b"["):
        return None
    parsed = logfmt.parse_record(entry["text"])
    if parsed is None:
        return None
    level = logfmt.LEVEL_NAMES[entry["prio"] & 7]
    return {"seq": entry["seq"], "usec": entry["usec"], "level": level, **parsed}
