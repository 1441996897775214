"""mounts.py: a path resolves to the file system (device) that holds it; a bind
mount is the same file system as its source."""
import json
import os
import subprocess
import sys

import pytest

from oorkiller.proc.mounts import MountError, read_mounts, resolve
from sandbox import run_in_scratch



def test_root_and_proc_resolve_to_their_own_mounts():
    mounts = read_mounts()
    root = resolve("/", mounts)
    assert root.mount_point == "/" and root.device == os.stat("/").st_dev
    proc = resolve("/proc/self", mounts)
    assert proc.fstype == "proc" and proc.mount_point == "/proc"
    assert proc.device != root.device


def test_a_missing_path_is_a_clear_error():
    with pytest.raises(MountError, match="/no/such/dir: No such file or directory"):
        resolve("/no/such/dir", read_mounts())


def test_a_fake_mountinfo_without_the_device_is_a_clear_error(tmp_path):
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_bytes(
        b"22 27 0:99 / /elsewhere rw - tmpfs tmpfs rw\n")
    with pytest.raises(MountError, match="is not in the mount table"):
        resolve("/", read_mounts(str(tmp_path)))


SCRIPT = r"""
import json, os, subprocess, sys, tempfile
from oorkiller.proc.mounts import read_mounts, resolve
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
base = tempfile.mkdtemp()
fs, bind, spaced = base + "/fs", base + "/bind", base + "/with space"
for d in (fs, bind, spaced):
    os.mkdir(d)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", fs], check=True)
os.mkdir(fs + "/sub")
subprocess.run(["mount", "--bind", fs + "/sub", bind], check=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", spaced], check=True)
m = read_mounts()
a, b, c = resolve(fs + "/sub", m), resolve(bind, m), resolve(spaced, m)
print(json.dumps({"a": [a.device, a.mount_point, a.root], "b": [b.device, b.mount_point, b.root],
                  "c": [c.device, c.mount_point, c.fstype], "fs": fs, "bind": bind, "spaced": spaced}))
"""


def test_a_bind_mount_is_the_same_file_system_as_its_source():
    out = run_in_scratch(["unshare", "--mount", sys.executable, "-c", SCRIPT],
                         capture_output=True, text=True, timeout=30, check=True, cwd="/")
    seen = json.loads(out.stdout)
    assert seen["a"][0] == seen["b"][0], "one file system, one device"
    assert seen["a"][1:] == [seen["fs"], "/"]
    assert seen["b"][1:] == [seen["bind"], "/sub"]
    assert seen["c"][1:] == [seen["spaced"], "tmpfs"], "an escaped mount point (\\040) resolves"
    assert seen["c"][0] != seen["a"][0]
