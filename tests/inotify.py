"""A small inotify watch (ctypes), for tests that must see whether a file was
opened for writing: IN_CLOSE_WRITE is sent when a descriptor opened for
writing is closed, whoever opened it."""
from __future__ import annotations

import ctypes
import os
import struct

IN_MODIFY, IN_CLOSE_WRITE, IN_OPEN = 0x2, 0x8, 0x20
IN_NONBLOCK = os.O_NONBLOCK
_libc = ctypes.CDLL(None, use_errno=True)


class Watch:
    def __init__(self, path: str, mask: int = IN_MODIFY | IN_CLOSE_WRITE):
        self.fd = _libc.inotify_init1(IN_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if _libc.inotify_add_watch(self.fd, os.fsencode(path), mask) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        self.masks: list[int] = []

    def events(self) -> list[int]:
        """Every event mask seen so far."""
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return self.masks
            offset = 0
            while offset < len(data):
                _, mask, _, length = struct.unpack_from("iIII", data, offset)
                self.masks.append(mask)
                offset += 16 + length

    def count(self, bit: int) -> int:
        return sum(1 for m in self.events() if m & bit)

    def close(self) -> None:
        os.close(self.fd)
