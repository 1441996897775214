"""oorkiller.proc._readers: held-fd reads and pure parsers of /proc text.

Each parser is checked against hand-written input (exact values), against
the real file of this machine (with psutil or os as the oracle where one
exists), and against hostile or garbled input (a clear ValueError, never a
crash or a wrong value).
"""
import errno
import os
import subprocess
import sys

import psutil
import pytest
from hypothesis import given, settings, strategies as st

from oorkiller.proc import _readers as r
from fakeproc import (cpu_stat_text, io_text, meminfo_text, psi_text, stat_line,
                      status_text)

PARSERS = [r.parse_meminfo, r.parse_cpu_stat, r.parse_loadavg, r.parse_psi,
           r.parse_diskstats, r.parse_pid_stat, r.parse_pid_io, r.parse_pid_status,
           r.parse_mountinfo]


# ---------------------------------------------------------------- HeldFile

def test_held_file_rereads_from_offset_zero_and_sees_new_content(tmp_path):
    path = tmp_path / "value"
    path.write_bytes(b"first\n")
    with r.HeldFile(path) as held:
        assert held.read() == b"first\n"
        assert held.read() == b"first\n"  # pread at 0: no offset to rewind
        with open(path, "wb") as f:      # rewritten in place, same inode
            f.write(b"second, longer\n")
        assert held.read() == b"second, longer\n"


def test_held_file_grows_its_buffer_for_a_large_file(tmp_path):
    content = bytes(range(256)) * 1000
    path = tmp_path / "big"
    path.write_bytes(content)
    with r.HeldFile(path, initial_size=64) as held:
        assert held.read() == content


def test_held_file_keeps_one_fd_across_reads():
    with r.HeldFile("/proc/meminfo") as held:
        fd = held.fd
        for _ in range(3):
            assert r.parse_meminfo(held.read()).total > 0
        assert held.fd == fd
        assert os.readlink(f"/proc/self/fd/{fd}") == "/proc/meminfo"
    assert held.fd == -1


def test_held_file_missing_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        r.HeldFile(tmp_path / "absent")


def test_held_file_read_after_close_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    held = r.HeldFile(tmp_path / "f")
    held.close()
    with pytest.raises(ValueError, match="closed"):
        held.read()


def test_held_file_of_an_exited_process_raises_esrch():
    child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    held = r.HeldFile(f"/proc/{child.pid}/stat")
    assert r.parse_pid_stat(held.read()).pid == child.pid
    child.kill()
    child.wait()
    with pytest.raises(OSError) as failure:
        held.read()
    assert failure.value.errno == errno.ESRCH
    held.close()


# ---------------------------------------------------------------- meminfo

def test_meminfo_values_are_bytes():
    m = r.parse_meminfo(meminfo_text(total_kib=1000, free_kib=100, available_kib=500,
                                     swap_total_kib=64, swap_free_kib=32))
    assert (m.total, m.available, m.free) == (1000 * 1024, 500 * 1024, 100 * 1024)
    assert (m.swap_total, m.swap_free) == (64 * 1024, 32 * 1024)


def test_meminfo_without_memavailable_falls_back_to_free_buffers_cached():
    m = r.parse_meminfo(meminfo_text(free_kib=100, buffers_kib=10, cached_kib=1,
                                     with_available=False))
    assert m.available == (100 + 10 + 1) * 1024


def test_meminfo_of_this_machine_matches_psutil():
    m = r.parse_meminfo(r.HeldFile("/proc/meminfo").read())
    assert m.total == psutil.virtual_memory().total
    assert 0 < m.available <= m.total
    assert m.swap_total == psutil.swap_memory().total


def test_meminfo_rejects_other_content():
    with pytest.raises(ValueError, match="meminfo"):
        r.parse_meminfo(b"cpu 1 2 3\n")


def test_parsers_want_bytes_not_str():
    with pytest.raises(TypeError):
        r.parse_meminfo("MemTotal: 1 kB\n")
    with pytest.raises(TypeError):
        r.parse_pid_stat(None)


# ---------------------------------------------------------------- /proc/stat

def test_cpu_stat_aggregate_line_and_cpu_count():
    c = r.parse_cpu_stat(cpu_stat_text(ticks=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), ncpu=3))
    assert (c.user, c.nice, c.system, c.idle, c.iowait) == (1, 2, 3, 4, 5)
    assert (c.irq, c.softirq, c.steal, c.guest, c.guest_nice) == (6, 7, 8, 9, 10)
    assert c.ncpu == 3


def test_cpu_stat_with_fewer_columns_reads_missing_ones_as_zero():
    c = r.parse_cpu_stat(b"cpu  10 0 5 100\ncpu0 10 0 5 100\n")  # Linux 2.4 style
    assert (c.user, c.idle, c.iowait, c.guest_nice, c.ncpu) == (10, 100, 0, 0, 1)


def test_cpu_stat_of_this_machine_counts_its_cpus():
    c = r.parse_cpu_stat(r.HeldFile("/proc/stat").read())
    assert c.ncpu == psutil.cpu_count()
    assert c.user + c.system + c.idle > 0


def test_cpu_stat_rejects_other_content():
    with pytest.raises(ValueError, match="/proc/stat"):
        r.parse_cpu_stat(b"MemTotal: 1 kB\n")


def _times(user=0, nice=0, system=0, idle=0, iowait=0, irq=0, softirq=0, steal=0,
           guest=0, guest_nice=0):
    return r.parse_cpu_stat(b"cpu  %d %d %d %d %d %d %d %d %d %d\n" % (
        user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice))


def test_busy_fraction_counts_iowait_as_idle():
    before, after = _times(), _times(user=30, iowait=50, idle=20)
    assert r.cpu_busy_fraction(before, after) == pytest.approx(0.3)


def test_busy_fraction_does_not_count_guest_twice():
    # guest time is already inside user: 60 user ticks of which 40 guest.
    before, after = _times(), _times(user=60, guest=40, idle=40)
    assert r.cpu_busy_fraction(before, after) == pytest.approx(0.6)


def test_busy_fraction_of_an_empty_or_backward_interval_is_zero():
    same = _times(user=5, idle=5)
    assert r.cpu_busy_fraction(same, same) == 0.0
    assert r.cpu_busy_fraction(_times(user=10, idle=10, iowait=9),
                               _times(user=10, idle=20, iowait=3)) == 0.0


# ---------------------------------------------------------------- loadavg, psi

def test_loadavg():
    assert r.parse_loadavg(b"0.52 10.58 100.00 1/467 12345\n") == (0.52, 10.58, 100.0)


def test_loadavg_of_this_machine_matches_os():
    ours = r.parse_loadavg(r.HeldFile("/proc/loadavg").read())
    assert ours == pytest.approx(os.getloadavg(), abs=0.2)


def test_loadavg_rejects_other_content():
    with pytest.raises(ValueError, match="loadavg"):
        r.parse_loadavg(b"nothing here")


def test_psi_some_and_full():
    p = r.parse_psi(psi_text(some=(1.5, 2.25, 3.0, 123456), full=(0.5, 0.75, 1.0, 999)))
    assert (p.some_avg10, p.some_avg60, p.some_avg300, p.some_total) == (1.5, 2.25, 3.0, 123456)
    assert (p.full_avg10, p.full_avg60, p.full_avg300, p.full_total) == (0.5, 0.75, 1.0, 999)


def test_psi_without_full_line_gives_zero_full():
    p = r.parse_psi(psi_text(some=(9.0, 8.0, 7.0, 42), full=None))
    assert p.some_avg10 == 9.0 and p.full_avg10 == 0.0 and p.full_total == 0


@pytest.mark.parametrize("resource", ["memory", "cpu", "io"])
def test_psi_of_this_machine_parses(resource):
    path = f"/proc/pressure/{resource}"
    if not os.path.exists(path):
        pytest.skip("no PSI on this kernel")
    p = r.parse_psi(r.HeldFile(path).read())
    assert 0.0 <= p.some_avg10 <= 100.0 and p.some_total >= p.full_total >= 0


def test_psi_rejects_other_content():
    with pytest.raises(ValueError, match="pressure"):
        r.parse_psi(b"full avg10=1.00\n")


# ---------------------------------------------------------------- diskstats

DISKSTATS = (
    b"   7       0 loop0 11 0 22 3 0 0 0 0 0 4 3 0 0 0 0 0 0\n"
    b" 259       0 nvme0n1 1000 5 80000 700 2000 10 160000 900 1 1200 1600 0 0 0 0 9 9\n"
    b"   8       1 sda1 4 0 8 1 5 0 10 2 0 3 3\n"  # the 14-field format of old kernels
)


def test_diskstats_fields():
    loop0, nvme, sda1 = r.parse_diskstats(DISKSTATS)
    assert (loop0.major, loop0.minor, loop0.name, loop0.reads) == (7, 0, "loop0", 11)
    assert (nvme.name, nvme.reads, nvme.read_sectors, nvme.read_ms) == ("nvme0n1", 1000, 80000, 700)
    assert (nvme.writes, nvme.write_sectors, nvme.write_ms) == (2000, 160000, 900)
    assert (nvme.io_ms, nvme.weighted_ms) == (1200, 1600)
    assert (sda1.name, sda1.writes, sda1.io_ms, sda1.weighted_ms) == ("sda1", 5, 3, 3)


def test_diskstats_of_this_machine_match_psutil():
    ours = {d.name: d for d in r.parse_diskstats(r.HeldFile("/proc/diskstats").read())}
    theirs = psutil.disk_io_counters(perdisk=True)
    common = set(ours) & set(theirs)
    assert common
    for name in common:  # counters only grow between the two reads
        assert ours[name].reads <= theirs[name].read_count


def test_diskstats_malformed_line_is_a_clear_error():
    with pytest.raises(ValueError, match="line 2"):
        r.parse_diskstats(b"7 0 loop0 1 0 2 3 0 0 0 0 0 4 3\n8 0 sda 1 2\n")


# ---------------------------------------------------------------- PID stat

HOSTILE_COMMS = [b"a) Z", b"x (y) z", b"new\nline", b"\xff\xfe\x80", b"", b"with  spaces ",
                 b")))", b"(((", b") S 1 1 1", b"0123456789abcde"]


@pytest.mark.parametrize("comm", HOSTILE_COMMS)
def test_pid_stat_splits_at_the_last_parenthesis(comm):
    s = r.parse_pid_stat(stat_line(4242, comm, state="R", ppid=17, pgrp=4242, session=1,
                                   utime=5, stime=7, starttime=987654, rss_pages=321))
    assert s.comm == comm
    assert (s.pid, s.state, s.ppid, s.pgrp, s.session) == (4242, "R", 17, 4242, 1)
    assert (s.utime, s.stime, s.starttime, s.rss_pages) == (5, 7, 987654, 321)
    assert not s.kthread


def test_pid_stat_kernel_thread_flag():
    assert r.parse_pid_stat(stat_line(2, b"kthreadd", flags=0x00208040)).kthread


def test_pid_stat_of_this_process_matches_psutil():
    s = r.parse_pid_stat(r.HeldFile("/proc/self/stat").read())
    me = psutil.Process()
    assert (s.pid, s.ppid) == (os.getpid(), os.getppid())
    assert s.comm.decode() == me.name()[:15]
    assert s.state == "R"


@pytest.mark.parametrize("garbage", [b"", b"1234", b"1 (no close", b"1 (x)", b"1 (x) S 1 2"])
def test_pid_stat_garbage_is_a_clear_error(garbage):
    with pytest.raises(ValueError, match="PID/stat"):
        r.parse_pid_stat(garbage)


@settings(max_examples=300, deadline=None)
@given(comm=st.binary(max_size=64).filter(lambda b: b"\0" not in b),
       utime=st.integers(0, 2**63 - 1), starttime=st.integers(0, 2**63 - 1))
def test_pid_stat_any_comm_round_trips(comm, utime, starttime):
    s = r.parse_pid_stat(stat_line(7, comm, utime=utime, starttime=starttime))
    assert (s.pid, s.comm, s.utime, s.starttime) == (7, comm, utime, starttime)


# ---------------------------------------------------------------- PID io, status

def test_pid_io_fields():
    io = r.parse_pid_io(io_text(rchar=1, wchar=2, syscr=3, syscw=4, read_bytes=4096,
                                write_bytes=8192, cancelled_write_bytes=512))
    assert (io.rchar, io.wchar, io.syscr, io.syscw) == (1, 2, 3, 4)
    assert (io.read_bytes, io.write_bytes, io.cancelled_write_bytes) == (4096, 8192, 512)


def test_pid_io_of_this_process_matches_psutil():
    ours = r.parse_pid_io(r.HeldFile("/proc/self/io").read())
    theirs = psutil.Process().io_counters()
    assert ours.read_bytes <= theirs.read_bytes and ours.syscr <= theirs.read_count


def test_pid_status_fields_in_bytes():
    s = r.parse_pid_status(status_text(uid=1000, euid=0, vm_rss_kib=2048, vm_swap_kib=16,
                                       vm_pte_kib=8, threads=3))
    assert (s.uid, s.euid, s.threads) == (1000, 0, 3)
    assert (s.vm_rss, s.vm_swap, s.vm_pte) == (2048 * 1024, 16 * 1024, 8 * 1024)


def test_pid_status_of_a_kernel_thread_has_no_memory():
    s = r.parse_pid_status(status_text(uid=0, kthread=True))
    assert (s.vm_rss, s.vm_swap, s.vm_pte, s.threads) == (0, 0, 0, 1)


def test_pid_status_of_this_process_matches_psutil():
    s = r.parse_pid_status(r.HeldFile("/proc/self/status").read())
    me = psutil.Process()
    assert (s.uid, s.euid) == tuple(me.uids())[:2]
    assert s.vm_rss == pytest.approx(me.memory_info().rss, rel=0.2)


def test_pid_status_rejects_other_content():
    with pytest.raises(ValueError, match="Uid"):
        r.parse_pid_status(b"Name:\tx\n")


# ---------------------------------------------------------------- mountinfo

MOUNTINFO = (
    b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
    b"40 36 0:45 / /media/my\\040disk rw shared:7 master:3 propagate_from:2 - vfat /dev/sdb1 rw\n"
    b"41 36 0:46 / /tmp rw - tmpfs tmpfs rw,size=64m\n"
)


def test_mountinfo_fields_and_optional_fields():
    first, second, third = r.parse_mountinfo(MOUNTINFO)
    assert (first.mount_id, first.parent_id, first.major, first.minor) == (36, 35, 98, 0)
    assert (first.root, first.mount_point, first.fstype, first.source) == (
        "/mnt1", "/mnt2", "ext3", "/dev/root")
    assert (second.mount_point, second.fstype, second.source) == ("/media/my disk", "vfat", "/dev/sdb1")
    assert (third.mount_point, third.fstype) == ("/tmp", "tmpfs")


def test_mountinfo_of_this_process_finds_proc():
    mounts = r.parse_mountinfo(r.HeldFile("/proc/self/mountinfo").read())
    assert any(m.mount_point == "/proc" and m.fstype == "proc" for m in mounts)
    assert {m.mount_point for m in mounts} >= {p.mountpoint for p in psutil.disk_partitions(all=True)
                                                if p.mountpoint == "/"}


def test_mountinfo_without_separator_is_a_clear_error():
    with pytest.raises(ValueError, match="line 1"):
        r.parse_mountinfo(b"36 35 98:0 / / rw master:1 ext3 /dev/root rw\n")


# ---------------------------------------------------------------- any input

@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400))
def test_every_parser_gives_a_record_or_a_value_error_for_any_bytes(data):
    for parse in PARSERS:
        try:
            parse(data)
        except ValueError:
            pass


def test_repr_names_the_fields():
    assert "comm=b'a) Z'" in repr(r.parse_pid_stat(stat_line(1, b"a) Z")))
    assert repr(r.parse_meminfo(meminfo_text())).startswith("MemInfo(total=")
