"""Signalling through pidfds and waiting for death: the primitives of a kill.

A target is addressed only through the pidfd taken when it was chosen
(proc/targets.py), so a PID reused by another process is never signalled.
"""
from __future__ import annotations

import os
import select
import signal
import threading
import time

POLL_SLICE = 0.02          # how often a waiting worker looks at its interrupt


def send(target, signum: int) -> str:
    """Signal through the pidfd: 'sent', 'gone' or an error text."""
    try:
        signal.pidfd_send_signal(target.pidfd, signum)
        return "sent"
    except ProcessLookupError:
        return "gone"
    except OSError as err:
        return os.strerror(err.errno) if err.errno else str(err)


def alive(targets) -> list:
    """Targets whose process has not exited (a pidfd polls readable at exit)."""
    if not targets:
        return []
    poller = select.poll()
    for target in targets:
        poller.register(target.pidfd, select.POLLIN)
    exited = {fd for fd, _ in poller.poll(0)}
    return [t for t in targets if t.pidfd not in exited]


def wait_for_death(targets, timeout: float, interrupt: threading.Event | None = None) -> list:
    """Wait until all targets exit, `timeout` passes, or `interrupt` is set;
    returns those still alive."""
    deadline = time.monotonic() + timeout
    remaining = alive(targets)
    while remaining and time.monotonic() < deadline:
        if interrupt is not None and interrupt.is_set():
            break
        poller = select.poll()
        for target in remaining:
            poller.register(target.pidfd, select.POLLIN)
        slice_ms = max(1, int(min(POLL_SLICE, deadline - time.monotonic()) * 1000))
        poller.poll(slice_ms)
        remaining = alive(remaining)
    return remaining
