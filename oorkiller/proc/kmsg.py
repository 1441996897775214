"""Reading the kernel log (/dev/kmsg): one entry per read().

`parse_kmsg_entry` turns one read into its fields; `KernelLogWatch` reads,
without blocking, the lines the kernel itself wrote from the moment it was
opened (the network shield's bridge complaints).
"""
from __future__ import annotations

import os
import re

KMSG_READS_PER_STEP = 20000  # bound the work of one look when the log is flooded


def parse_kmsg_entry(raw):
    """One kmsg read(): `prio,seq,usec,flags[,...];text\\n[ KEY=VALUE\\n...]`.

    Returns {"prio", "seq", "usec", "text" (bytes, the kernel's `\\xNN`
    escapes undone)}, or None for something unreadable.
    """
    head, separator, rest = raw.partition(b";")
    parts = head.split(b",")
    if not separator or len(parts) < 3:
        return None
    try:
        prio, seq, usec = int(parts[0]), int(parts[1]), int(parts[2])
    except ValueError:
        return None
    text = rest.split(b"\n", 1)[0]
    return {"prio": prio, "seq": seq, "usec": usec, "text": _kernel_unescape(text)}


def _kernel_unescape(text):
    # The kernel writes every byte < 0x20, >= 0x7f and the backslash itself
    # as \xNN, so each \xNN in its output is one escaped byte.
    return re.sub(rb"\\x([0-9a-fA-F]{2})", lambda match: bytes([int(match.group(1), 16)]), text)


class KernelLogWatch:
    """Reads /dev/kmsg without blocking, from where it was opened onwards."""

    def __init__(self, path: str = "/dev/kmsg"):
        self.path = path
        self.fd = None
        self.problem = ""
        self.more = False          # the last read stopped at its limit: more may wait
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self.fd, 0, os.SEEK_END)     # only what happens from now on
        except OSError as err:
            self.problem = f"cannot read {path}: {err.strerror}"
            self.close()

    def kernel_lines(self) -> list[str]:
        """New lines written by the kernel itself (facility 0: user space
        cannot forge it through /dev/kmsg)."""
        lines = []
        self.more = False
        if self.fd is None:
            return lines
        for _ in range(KMSG_READS_PER_STEP):
            try:
                raw = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:               # overwritten under us: go on
                continue
            entry = parse_kmsg_entry(raw) if raw else None
            if entry is None:
                if not raw:
                    break
                continue
            if entry["prio"] >> 3 == 0:
                lines.append(entry["text"].decode("utf-8", "surrogateescape"))
        else:
            self.more = True               # stopped at the limit, not at the end
        return lines

    def quiet_gate(self) -> tuple | None:
        """The calm watch's gate for "no new record since", when this watch
        reads the log and has read all it has (proc/_calm.pyx)."""
        if self.fd is None or self.more:
            return None
        # Imported here: the record reader (`oorkiller events`, check-config)
        # imports this module and must not need the daemon's calm watch.
        from oorkiller.proc._calm import KMSG_QUIET
        return (KMSG_QUIET, self.path, 0.0)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
