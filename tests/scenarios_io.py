"""IO-shield scenarios. Each runs as PID 1 of its own PID and mount namespace
(sandbox.in_pid_namespace: `unshare --pid --fork --mount-proc`) and returns
what it observed; the tests judge.

The disk is a loop device of our own: a number created with LOOP_CTL_ADD (so
its line appears in /proc/diskstats when we create it and disappears when we
remove it), backed by an image on a tmpfs private to the namespace (so the
machine's real disk does no work), formatted ext4 and mounted privately.
Every scenario detaches and removes it in a `finally`; the test side removes
it too if a scenario died on the way (the number is written to `marker`).

Run as a script, this file is also the IO victim: `python scenarios_io.py
syncwrite NAME FILE SECONDS` writes 4 KiB blocks with O_DSYNC as fast as the
device completes them; `light NAME FILE SECONDS` writes one block and fsyncs
twice a second. Both stop by themselves after SECONDS.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import subprocess
import sys
import tempfile
import time

THIS = os.path.abspath(__file__)
LOOP_CTL_ADD, LOOP_CTL_REMOVE = 0x4C80, 0x4C81
FIRST_INDEX = 200          # far above the loop0..7 the machine (and other tests) use
BLOCK = b"io" * 2048


# ------------------------------------------------------------------ victims (script side)
def set_name(name: str) -> None:
    ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def run_syncwrite(name: str, path: str, seconds: str) -> None:
    set_name(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DSYNC, 0o600)
    ready()
    end, n = time.monotonic() + float(seconds), 0
    while time.monotonic() < end:
        os.pwrite(fd, BLOCK, (n % 1024) * len(BLOCK))     # within 4 MiB: no allocation
        n += 1


def run_light(name: str, path: str, seconds: str) -> None:
    set_name(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    ready()
    end, n = time.monotonic() + float(seconds), 0
    while time.monotonic() < end:
        os.pwrite(fd, BLOCK, (n % 16) * len(BLOCK))
        os.fsync(fd)
        n += 1
        time.sleep(0.5)


# ------------------------------------------------------------------ the loop device
def add_loop_device() -> int:
    """A new loop device number of our own (its diskstats line appears now)."""
    control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        for index in range(FIRST_INDEX + os.getppid() % 40, FIRST_INDEX + 200):
            try:
                return fcntl.ioctl(control, LOOP_CTL_ADD, index)
            except OSError as err:
                if err.errno != errno.EEXIST:
                    raise
        raise RuntimeError("no free loop device number")
    finally:
        os.close(control)


def remove_loop_device(index: int) -> None:
    """Detach (if attached) and remove: its diskstats line disappears."""
    subprocess.run(["losetup", "-d", f"/dev/loop{index}"], capture_output=True)
    control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(50):             # the detach may finish asynchronously
            try:
                fcntl.ioctl(control, LOOP_CTL_REMOVE, index)
                return
            except OSError as err:
                if err.errno == errno.ENXIO:
                    return
                time.sleep(0.05)
    finally:
        os.close(control)


class LoopDisk:
    """An ext4 file system on a loop device of our own, in this mount namespace."""

    def __init__(self, marker: str = ""):
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)
        self.base = tempfile.mkdtemp(prefix="oorkiller-io-")
        self.backing, self.mount_point = f"{self.base}/backing", f"{self.base}/mnt"
        os.mkdir(self.backing)
        os.mkdir(self.mount_point)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300m", "tmpfs", self.backing], check=True)
        self.index = add_loop_device()
        if marker:
            with open(marker, "w") as f:
                f.write(str(self.index))
        self.name = f"loop{self.index}"
        self.mounted = False
        image = f"{self.backing}/img"
        subprocess.run(["truncate", "-s", "256M", image], check=True)
        subprocess.run(["losetup", f"/dev/{self.name}", image], check=True)
        subprocess.run(["mkfs.ext4", "-q", f"/dev/{self.name}"], check=True)
        subprocess.run(["mount", f"/dev/{self.name}", self.mount_point], check=True)
        self.mounted = True

    def path(self, name: str) -> str:
        return f"{self.mount_point}/{name}"

    def remove(self) -> None:
        if self.mounted:
            subprocess.run(["umount", self.mount_point], capture_output=True)
            self.mounted = False
        remove_loop_device(self.index)

    def present(self) -> bool:
        with open("/proc/diskstats") as f:
            return any(line.split()[2] == self.name for line in f)


# ------------------------------------------------------------------ scenarios (PID 1 side)
sys.path.insert(0, os.path.dirname(THIS))
if __name__ != "__main__":                  # a victim needs none of this
    from sandbox import reap, wait_until
    from scenarios_cpu import reap_all, records_of
    from sandbox import Daemon, base_config


def start(kind: str, name: str, *args) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, THIS, kind, name, *map(str, args)],
                            stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"victim {name} did not start")
    proc.victim_name = name
    return proc


def io_section(device: str, **extra) -> dict:
    section = {"enabled": True, "interval": "500ms",
               "devices": [{"device": device, "iops": 2000}],
               "for": "3s", "min_share": "25%", "kill": "auto", "term_timeout": "1s",
               "cooldown": "60s"}
    section.update(extra)
    return section


def finish(daemon, *procs, **observed) -> dict:
    stopped = daemon.stop()
    result = {"ended": reap(*procs), "records": records_of(daemon), "stopped": stopped, **observed}
    reap_all()
    return result


def sync_writer_beside_light_io(marker: str, dry_run: bool = False, device: str = "") -> dict:
    """A synchronous small writer saturates the loop device; a light writer
    on the same file system keeps going."""
    disk = LoopDisk(marker)
    try:
        daemon = Daemon(base_config(io=io_section(device or disk.name)),
                        *(["--dry-run"] if dry_run else []))
        light = start("light", "light", disk.path("light"), 25)
        hog = start("syncwrite", "hog", disk.path("hog"), 25)
        died = wait_until(lambda: hog.poll() is not None, 8 if dry_run else 15)
        time.sleep(1.0)                  # would a second victim follow? (cooldown says no)
        return finish(daemon, hog, light, hog_died=died, device=disk.name)
    finally:
        disk.remove()


def short_saturation(marker: str) -> dict:
    """Saturation for 2 s under `for: 5s`: nothing is triggered."""
    disk = LoopDisk(marker)
    try:
        daemon = Daemon(base_config(io=io_section(disk.name, **{"for": "5s"})))
        burst = start("syncwrite", "burst", disk.path("burst"), 2)
        burst.wait(10)
        time.sleep(4)
        return finish(daemon, burst, device=disk.name)
    finally:
        disk.remove()


def device_disappears(marker: str) -> dict:
    """The device appears after the daemon started, is saturated for a while
    (less than `for`), then is unmounted, detached and removed while watched."""
    daemon = Daemon(base_config(io=io_section("*", **{"for": "20s"})))
    disk = LoopDisk(marker)
    try:
        writer = start("syncwrite", "writer", disk.path("w"), 2.5)
        writer.wait(10)
        disk.remove()
        gone = not disk.present()
        time.sleep(2.0)                  # a few readings without it
        alive = daemon.proc.poll() is None
        return finish(daemon, writer, device=disk.name, gone=gone, daemon_alive=alive)
    finally:
        disk.remove()


if __name__ == "__main__":
    {"syncwrite": run_syncwrite, "light": run_light}[sys.argv[1]](*sys.argv[2:])
