"""oorkiller.kernel: mlockall, process_mrelease, oom_score_adj, features.

mlockall changes the whole process, so it runs in a child interpreter.
Only children spawned here are signalled, through their pidfd.
"""
import ast
import errno
import os
import platform
import signal
import subprocess
import sys
import textwrap

import pytest

from oorkiller import kernel



def run_python(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd="/",
                          capture_output=True, text=True, timeout=60)


def kernel_at_least(major, minor):
    numbers = platform.release().split("-")[0].split(".")
    return (int(numbers[0]), int(numbers[1])) >= (major, minor)


@pytest.fixture
def sleeper():
    child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    yield child
    if child.poll() is None:
        child.kill()
    child.wait()


def test_lock_memory_locks_the_process():
    result = run_python("""
        from oorkiller import kernel
        locked = kernel.lock_memory()
        vmlck = [l for l in open("/proc/self/status") if l.startswith("VmLck:")][0].split()[1]
        print(locked, int(vmlck) > 0)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


def test_lock_memory_failure_is_false_not_an_exception():
    # As nobody with RLIMIT_MEMLOCK 0, mlockall fails with EPERM.
    result = run_python("""
        import os, resource
        from oorkiller import kernel
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
        os.setgid(65534)
        os.setuid(65534)
        print(kernel.lock_memory())
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_process_mrelease_reaps_a_sigkilled_child():
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import signal, sys
        hog = bytearray(256 << 20)       # touched: 256 MiB resident
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        signal.pause()
    """)], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"
        pidfd = os.pidfd_open(child.pid)
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            released = kernel.process_mrelease(pidfd)
            error = 0 if released else kernel.process_mrelease_errno(pidfd)
        finally:
            os.close(pidfd)
        assert isinstance(released, bool)
        if kernel.features()["process_mrelease"]:
            # Reaped now, or (ESRCH) it had already finished exiting by itself.
            assert released or error == errno.ESRCH
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL


def test_process_mrelease_of_a_live_process_is_refused(sleeper):
    if not kernel.features()["process_mrelease"]:
        pytest.skip("no process_mrelease on this kernel")
    pidfd = os.pidfd_open(sleeper.pid)
    try:
        assert kernel.process_mrelease(pidfd) is False  # not dying: EINVAL
        assert kernel.process_mrelease_errno(pidfd) == 22
    finally:
        os.close(pidfd)
    assert sleeper.poll() is None


def test_process_mrelease_of_a_bad_fd_is_false():
    assert kernel.process_mrelease(-1) is False


def test_set_oom_score_adj_of_a_child(sleeper):
    kernel.set_oom_score_adj(500, pid=sleeper.pid)
    assert open(f"/proc/{sleeper.pid}/oom_score_adj").read() == "500\n"


@pytest.mark.parametrize("value", [1001, -1001, "100", 1.5, True, None])
def test_set_oom_score_adj_rejects_bad_values(value):
    with pytest.raises(ValueError, match="oom_score_adj"):
        kernel.set_oom_score_adj(value, pid=os.getpid())


@pytest.mark.parametrize("pid", [0, -1, "1; rm", 2.5])
def test_set_oom_score_adj_rejects_bad_pids(pid):
    with pytest.raises(ValueError, match="pid"):
        kernel.set_oom_score_adj(0, pid=pid)


def test_set_oom_score_adj_of_an_exited_process_is_an_os_error(sleeper):
    pid = sleeper.pid
    sleeper.kill()
    sleeper.wait()
    with pytest.raises(OSError):
        kernel.set_oom_score_adj(0, pid=pid)


def test_features_of_this_machine():
    found = kernel.features()
    assert found["native"] is True and found["pidfd"] is True
    assert found["process_mrelease"] == kernel_at_least(5, 15)
    for resource in ("memory", "cpu", "io"):
        assert found["psi"][resource] == os.path.exists(f"/proc/pressure/{resource}")
    assert set(found["cgroup"]) <= {"v1", "v2"}


def test_features_reads_cgroup_versions_from_the_proc_root(tmp_path):
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mounts").write_bytes(
        b"proc /proc proc rw 0 0\n"
        b"cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n")
    assert kernel.features(proc_root=str(tmp_path))["cgroup"] == ("v2",)
    (tmp_path / "self" / "mounts").write_bytes(
        b"cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
        b"cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n")
    found = kernel.features(proc_root=str(tmp_path))
    assert found["cgroup"] == ("v1", "v2")
    assert found["psi"] == {"memory": False, "cpu": False, "io": False}


def test_import_is_safe_without_the_native_module():
    result = run_python("""
        import sys
        sys.modules["oorkiller._kernel"] = None   # as if it was never built
        from oorkiller import kernel
        print(kernel.lock_memory(), kernel.process_mrelease(3), kernel.features()["native"],
              kernel.features()["process_mrelease"])
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False", "False"]


def fake_proc(tmp_path, options: str, cap_eff: int):
    """A proc root whose self/mounts mounts it with `options` and whose
    self/status has the effective capability mask `cap_eff`."""
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mounts").write_text(
        f"sysfs /sys sysfs rw 0 0\nproc {tmp_path} proc {options} 0 0\n")
    (tmp_path / "self" / "status").write_text(f"Name:\tx\nCapEff:\t{cap_eff:016x}\n")
    return str(tmp_path)


PTRACE = 1 << kernel.CAP_SYS_PTRACE


@pytest.mark.parametrize("options,cap_eff,hidden", [
    ("rw,nosuid", 0, False),                                 # no hidepid
    ("rw,hidepid=0", 0, False),
    ("rw,hidepid=invisible,gid=54321", 0, True),             # not in gid, no CAP_SYS_PTRACE
    ("rw,hidepid=2,gid=54321", 0xffff & ~PTRACE, True),
    ("rw,hidepid=2,gid=54321", PTRACE, False),               # CAP_SYS_PTRACE sees all
    (f"rw,hidepid=2,gid={os.getegid()}", 0, False),          # a member of gid= sees all
    ("rw,hidepid=2", 0, os.getegid() != 0 and 0 not in os.getgroups()),   # gid= is 0 by default
])
def test_hidden_processes_says_when_hidepid_blinds_this_reader(tmp_path, options, cap_eff, hidden):
    reason = kernel.hidden_processes(fake_proc(tmp_path, options, cap_eff))
    assert bool(reason) == hidden
    if hidden:
        assert "hidepid=" in reason and "CAP_SYS_PTRACE" in reason


def test_release_file_pages_unmaps_clean_file_pages_and_keeps_copied_ones(tmp_path):
    """Pages that cannot differ from their file are unmapped (and read back
    the same); a read-only mapping holding a page copied on write (as a
    relocated library section does) is left alone, its copy intact."""
    (tmp_path / "clean").write_bytes(b"c" * 65536)
    (tmp_path / "copied").write_bytes(b"f" * 65536)
    result = run_python(f"""
        import ctypes, mmap
        from oorkiller import kernel
        libc = ctypes.CDLL(None)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

        def rss_kib(path):
            found = False
            for line in open("/proc/self/smaps"):
                if line.rstrip().endswith(path):
                    found = True
                elif found and line.startswith("Rss:"):
                    return int(line.split()[1])

        with open("{tmp_path}/clean", "rb") as f:
            clean = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
        with open("{tmp_path}/copied", "r+b") as f:
            copied = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE)
        copied[:6] = b"edited"
        at = ctypes.addressof(ctypes.c_char.from_buffer(copied))
        assert libc.mprotect(at, len(copied), mmap.PROT_READ) == 0
        for m in (clean, copied):
            sum(m[i] for i in range(0, len(m), 4096))      # every page resident
        before = {{name: rss_kib("{tmp_path}/" + name) for name in ("clean", "copied")}}
        released = kernel.release_file_pages()
        after = {{name: rss_kib("{tmp_path}/" + name) for name in ("clean", "copied")}}
        print(repr({{"before": before, "after": after, "released": released,
                     "clean_same": clean[:] == b"c" * 65536, "copied": copied[:8]}}))
    """)
    assert result.returncode == 0, result.stderr
    seen = ast.literal_eval(result.stdout)
    assert seen["before"] == {"clean": 64, "copied": 64}
    assert seen["after"] == {"clean": 0, "copied": 64}
    assert seen["released"] >= 64
    assert seen["clean_same"] and seen["copied"] == b"editedff"


def test_release_file_pages_reads_only_releasable_mappings_from_smaps():
    smaps = b"""\
7f0000000000-7f0000004000 r-xp 00000000 fe:00 42   /usr/lib/libclean.so
Rss:                  16 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd ex mr mw me
7f0000004000-7f0000005000 r--p 00004000 fe:00 42   /usr/lib/libclean.so
Rss:                   4 kB
Anonymous:             4 kB
Swap:                  0 kB
7f0000005000-7f0000006000 r--p 00005000 fe:00 42   /usr/lib/libclean.so
Rss:                   0 kB
Anonymous:             0 kB
Swap:                  4 kB
7f0000006000-7f0000007000 rw-p 00006000 fe:00 42   /usr/lib/libclean.so
Rss:                   4 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000007000-7f0000008000 r--s 00000000 fe:00 43   /dev/shm/shared
Rss:                   4 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000008000-7f0000009000 r--p 00000000 00:00 0    [vvar]
Rss:                   4 kB
Anonymous:             0 kB
Swap:                  0 kB
7f0000009000-7f000000a000 r--p 00000000 fe:00 44   /usr/lib/libcold.so
Rss:                   0 kB
Anonymous:             0 kB
Swap:                  0 kB
"""
    assert kernel._clean_file_mappings(smaps) == [(0x7f0000000000, 0x7f0000004000, 16)]
