"""Victim programs for end-to-end tests. Run as `python victims.py KIND ...`.

Each prints `ready` on stdout once it holds what it was asked to hold, so the
test knows when to measure. Every program has a hard cap so that a daemon that
fails to act can never endanger the machine: the test just fails on timeout.
"""
import argparse
import ctypes
import mmap
import os
import signal
import sys
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15
MiB = 1 << 20


def set_name(name: str) -> None:
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def touch(size: int, shared: bool = False) -> mmap.mmap:
    """Memory with every page written (resident, counted by the kernel).
    `shared`: a memfd mapping, which the kernel cannot reap from a dying
    process (process_mrelease frees only private memory)."""
    if shared:
        fd = os.memfd_create("victim")
        os.ftruncate(fd, size)
        block = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        os.close(fd)
    else:
        block = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    address = ctypes.addressof(ctypes.c_char.from_buffer(block))
    libc.memset(ctypes.c_void_p(address), 1, ctypes.c_size_t(size))
    return block


def ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def hog(args) -> None:
    """Grow by `chunk` every `pause` seconds up to `cap`, then hold."""
    held = []
    ready()
    total = 0
    while total < args.cap * MiB:
        held.append(touch(args.chunk * MiB))
        total += args.chunk * MiB
        if args.pause:
            time.sleep(args.pause)
    signal.pause()


def burn(seconds: float) -> None:
    """Use CPU time: the 'work done' that rule 1 of the choice protects."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def sleeper(args) -> None:
    burn(args.burn)
    held = touch(args.size * MiB, args.shared) if args.size else None
    ready()
    while True:
        signal.pause()
    del held


def spinner(args) -> None:
    def spin():
        while True:
            pass
    for _ in range(args.threads - 1):
        threading.Thread(target=spin, daemon=True).start()
    ready()
    end = time.monotonic() + args.cap_seconds
    while time.monotonic() < end:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["hog", "sleeper", "spinner"])
    parser.add_argument("--name", default="victim")
    parser.add_argument("--size", type=int, default=0, help="MiB held by a sleeper")
    parser.add_argument("--chunk", type=int, default=64, help="MiB a hog adds per step")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between a hog's steps")
    parser.add_argument("--cap", type=int, default=4096, help="MiB a hog never exceeds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cap-seconds", type=float, default=60.0)
    parser.add_argument("--shared", action="store_true", help="hold a sleeper's memory in a memfd")
    parser.add_argument("--burn", type=float, default=0.0, help="CPU seconds a sleeper uses first")
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--term-exit", action="store_true", help="exit 0 on SIGTERM")
    parser.add_argument("--rename-after", type=float, default=0.0,
                        help="seconds to keep the name given by exec before taking --name")
    args = parser.parse_args()
    time.sleep(args.rename_after)
    set_name(args.name)
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.term_exit:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    {"hog": hog, "sleeper": sleeper, "spinner": spinner}[args.kind](args)


if __name__ == "__main__":
    main()
