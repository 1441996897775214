"""Talking to systemd: sd_notify over $NOTIFY_SOCKET, without libsystemd.

The protocol is one datagram of `KEY=VALUE` lines sent to the unix socket
named by $NOTIFY_SOCKET (a path, or `@name` for an abstract socket). Outside
systemd the variable is unset and every call here does nothing.

The watchdog is the point of this module. `WATCHDOG=1` must mean "every
shield is still watching", not "the main loop is alive": a timer thread
would keep pinging while the memory monitor is stuck, and systemd would never
restart a daemon that no longer protects anything. So the daemon
calls `WatchdogPinger.tick(monitors, now)` at each tick of its scheduling
clock (and the main thread does, when that clock misses its tick), and the
ping is sent only while every monitor has completed a step recently
(`healthy`).
"""
from __future__ import annotations

import os
import socket
import threading
import time

STALE_FLOOR = 5.0            # seconds: a monitor is never called stale sooner
RECHECK = 0.25               # seconds between ticks while pings are withheld


def _socket_address(text: str) -> str | bytes | None:
    """$NOTIFY_SOCKET as an address for sendto: `@name` is abstract."""
    if not text:
        return None
    if text.startswith("@"):
        return b"\0" + text[1:].encode()
    if text.startswith("/"):
        return text
    return None                  # systemd only ever gives these two forms


class Notifier:
    """Sends sd_notify messages; a no-op when there is nowhere to send them."""

    def __init__(self, address: str | bytes | None):
        self.address = address
        self._sock = None
        self._lock = threading.Lock()
        if address is not None:
            # Non-blocking: when systemd is slow to read, a message is dropped
            # rather than stalling the daemon's main loop.
            self._sock = socket.socket(socket.AF_UNIX,
                                       socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)

    @classmethod
    def from_env(cls, environ=os.environ) -> "Notifier":
        return cls(_socket_address(environ.get("NOTIFY_SOCKET", "")))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        """One datagram; False when not under systemd or when it fails.

        A failure (no listener, a full queue) is not an error for the daemon:
        systemd may be restarting, and the shields must go on regardless.
        """
        if self._sock is None:
            return False
        message = "\n".join(lines).encode("utf-8", "backslashreplace")
        with self._lock:
            try:
                self._sock.sendto(message, self.address)
            except OSError:
                return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def reloading(self) -> bool:
        """Sent when SIGHUP's reload begins; `ready()` again when it is over."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={_one_line(text)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def watchdog_interval(environ=os.environ, pid: int | None = None) -> float | None:
    """Seconds between two pings (half of $WATCHDOG_USEC), or None if no watchdog.

    $WATCHDOG_PID, when set, names the process the watchdog is meant for; a
    child that inherited the variables must not ping on its parent's behalf.
    """
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


# ---------------------------------------------------------------- liveness

def stale_after(monitor) -> float:
    """How long a monitor may go without completing a step before it is stale."""
    return max(2.0 * monitor.interval, STALE_FLOOR)


def stale(monitors, now: float) -> list[str]:
    """Names of the monitors whose last completed step is too old."""
    return [m.name for m in monitors if m.last_step and now - m.last_step > stale_after(m)]


def starting(monitors) -> list[str]:
    """Names of the monitors that have not completed their first step yet."""
    return [m.name for m in monitors if not m.last_step]


def healthy(monitors, now: float) -> bool:
    """True only when every monitor completed a step recently (no monitors: True).

    A monitor still on its first step is not healthy yet: no ping until every
    shield has really read its resource once. One that hangs in its first
    step is still caught: systemd's watchdog runs from the service's start,
    so a daemon that never pings is restarted all the same.
    """
    return not stale(monitors, now) and not starting(monitors)


class WatchdogPinger:
    """Sends WATCHDOG=1 at most every `interval` seconds, and only while healthy.

    Call `tick(monitors, time.monotonic())` from the daemon's clock, at least every
    `interval` seconds. When a monitor goes stale the pings stop, systemd's
    WatchdogSec runs out, and systemd restarts the daemon; the STATUS line
    names the stuck monitor for `systemctl status`.
    """

    def __init__(self, notifier: Notifier, interval: float | None):
        self.notifier = notifier
        self.interval = interval
        self.last_ping = float("-inf")
        self.stuck: list[str] = []
        self.waiting = True              # the last tick withheld its ping
        self._lock = threading.Lock()    # the clock ticks; the main thread when the clock is late

    @classmethod
    def from_env(cls, notifier: Notifier, environ=os.environ) -> "WatchdogPinger":
        return cls(notifier, watchdog_interval(environ) if notifier.enabled else None)

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def tick(self, monitors, now: float) -> bool:
        """True when a ping was sent now."""
        if self.interval is None:
            return False
        with self._lock:
            return self._tick(monitors, now)

    def _tick(self, monitors, now: float) -> bool:
        stuck = stale(monitors, now)
        if stuck != self.stuck:
            self.stuck = stuck
            self.notifier.status(f"monitor stalled: {', '.join(stuck)}; watchdog pings withheld"
                                 if stuck else "watching")
        self.waiting = bool(stuck or starting(monitors))
        if self.waiting or now - self.last_ping < self.interval:
            return False
        self.last_ping = now
        return self.notifier.watchdog()


    def sleep_for(self, now: float) -> float | None:
        """How long the caller may sleep before its next `tick` (None: no watchdog).

        Until the next ping is due; while pings are withheld (a monitor still
        starting or stalled), at most RECHECK seconds, so the first ping
        follows the first readings at once.
        """
        if self.interval is None:
            return None
        if self.waiting:
            return min(self.interval, RECHECK)
        return max(0.0, self.last_ping + self.interval - now)
