"""Setting a network interface down, as `ip link set NAME down` does, with
SIOCSIFFLAGS: no process forked from a daemon whose memory is locked."""
from __future__ import annotations

import fcntl
import os
import socket
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFNAMSIZ = 16


def set_down(name: str) -> None:
    """Clear IFF_UP on interface `name`; OSError when it cannot."""
    raw = os.fsencode(name)
    if not raw or len(raw) >= IFNAMSIZ:
        raise OSError(22, f"invalid interface name {name!r}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", raw, 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", raw, flags & ~IFF_UP))
