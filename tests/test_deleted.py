"""deleted.py: deleted-but-open files are found once per inode, with their
space, original name and each holder's identity; truncation opens for
writing only that very inode, and only when every holder's name is allowed."""
import os

import pytest

from inotify import IN_CLOSE_WRITE, IN_MODIFY, Watch
from oorkiller.act.truncate import truncate
from oorkiller.proc import deleted

ANY = ["*"]


def open_deleted(path, size):
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"y" * size)
    os.fsync(fd)
    os.unlink(path)
    return fd


def test_a_deleted_open_file_is_found_once_with_its_space_and_name(tmp_path):
    path = str(tmp_path / "app.log")
    fd = open_deleted(path, 1 << 20)
    second = os.dup(fd)
    try:
        dev = os.fstat(fd).st_dev
        found = deleted.find_open_deleted({dev})
        mine = [e for e in found.values() if e.path == path]
        assert len(mine) == 1
        entry = mine[0]
        assert entry.nbytes >= 1 << 20
        assert {(os.getpid(), fd), (os.getpid(), second)} <= {(h.pid, h.fd) for h in entry.holders}
        assert {h.starttime for h in entry.holders} == {deleted.start_time(os.getpid())}
        assert {h.path for h in entry.holders} == {path}
    finally:
        os.close(second)
        os.close(fd)


def test_a_named_file_is_not_reported(tmp_path):
    path = tmp_path / "kept.log"
    with open(path, "wb") as f:
        f.write(b"z" * 4096)
        f.flush()
        found = deleted.find_open_deleted({os.stat(path).st_dev})
        assert all(e.path != str(path) for e in found.values())


def test_truncate_gives_the_space_back(tmp_path):
    path = str(tmp_path / "rotated.log")
    fd = open_deleted(path, 1 << 20)
    try:
        (entry,) = [e for e in deleted.find_open_deleted({os.fstat(fd).st_dev}).values() if e.path == path]
        assert truncate(entry, [str(tmp_path / "*.log")]) == (os.getpid(), entry.nbytes)
        assert os.fstat(fd).st_size == 0 and os.fstat(fd).st_blocks == 0
    finally:
        os.close(fd)


def test_a_reused_fd_number_is_never_truncated(tmp_path):
    path = str(tmp_path / "gone.log")
    fd = open_deleted(path, 8192)
    (entry,) = [e for e in deleted.find_open_deleted({os.fstat(fd).st_dev}).values() if e.path == path]
    keep = os.dup(fd)        # keeps the inode alive, so only the fd NUMBER is reused
    os.close(fd)
    other = open_deleted(str(tmp_path / "other.log"), 8192)   # likely the same fd number
    try:
        entry.holders = [entry.holders[0]._replace(fd=other)]
        assert truncate(entry, ANY) is None
        assert os.fstat(other).st_size == 8192
    finally:
        os.close(other)
        os.close(keep)


def test_globs_match_the_original_path():
    assert deleted.matches("/var/log/app/app.log", ["/var/log/app/*.log"])
    assert not deleted.matches("/var/log/app/app.log", ["/var/log/other/*"])


def scanned(fd, path):
    (entry,) = [e for e in deleted.find_open_deleted({os.fstat(fd).st_dev}).values() if e.path == path]
    return entry


@pytest.fixture
def decoy(tmp_path):
    """A named root file the holder may only reach through O_PATH."""
    path = tmp_path / "decoy"
    path.write_bytes(b"precious")
    os.chmod(path, 0o644)
    watch = Watch(str(path), IN_CLOSE_WRITE | IN_MODIFY)
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    yield path, fd, watch
    os.close(fd)
    watch.close()


def test_an_fd_swapped_for_another_file_after_the_scan_is_never_opened_for_writing(tmp_path, decoy):
    """The holder dup2s an O_PATH fd of another file onto the scanned fd
    number: that file is never opened for writing, and the deleted file is
    still truncated through its other descriptor."""
    decoy_path, decoy_fd, watch = decoy
    path = str(tmp_path / "app.log")
    fd = open_deleted(path, 1 << 20)
    backup = os.dup(fd)
    try:
        entry = scanned(fd, path)
        assert [h.fd for h in entry.holders] == [fd, backup]
        os.dup2(decoy_fd, fd)                        # the swap, between scan and truncation
        assert truncate(entry, [str(tmp_path / "*.log")]) == (os.getpid(), entry.nbytes)
        assert os.fstat(backup).st_size == 0
        assert watch.count(IN_CLOSE_WRITE | IN_MODIFY) == 0, "the decoy was opened for writing"
        assert decoy_path.read_bytes() == b"precious"
        # the watch does see a write open (so the assertion above can fail)
        os.close(os.open(decoy_path, os.O_WRONLY))
        assert watch.count(IN_CLOSE_WRITE) == 1
    finally:
        os.close(backup)
        os.close(fd)


def two_names(first, second):
    """One deleted inode held twice: as `first` and as `second` (a hard link)."""
    fd = os.open(first, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
    os.write(fd, b"y" * 8192)
    os.link(first, second)
    other = os.open(second, os.O_RDONLY | os.O_CLOEXEC)
    os.unlink(first)
    os.unlink(second)
    return fd, other


def test_a_holder_of_the_same_inode_under_a_name_not_allowed_prevents_truncation(tmp_path):
    """One inode, two names (a hard link): held as app.log at the scan, the
    fd is swapped for the one opened as data.bin; truncation refuses."""
    allowed, other = str(tmp_path / "app.log"), str(tmp_path / "data.bin")
    fd, by_other = two_names(allowed, other)
    try:
        entry = scanned(fd, allowed)
        entry.holders = [h for h in entry.holders if h.fd == fd]
        os.dup2(by_other, fd)                        # same inode, now under data.bin
        assert truncate(entry, [str(tmp_path / "*.log")]) is None
        assert os.fstat(by_other).st_size == 8192
    finally:
        os.close(by_other)
        os.close(fd)


def test_every_holder_name_must_match(tmp_path):
    allowed, other = str(tmp_path / "app.log"), str(tmp_path / "data.bin")
    fd, by_other = two_names(allowed, other)
    try:
        entry = scanned(fd, allowed)
        assert {h.path for h in entry.holders} == {allowed, other}
        assert not deleted.all_match(entry, [str(tmp_path / "*.log")])
        assert deleted.all_match(entry, [str(tmp_path / "*")])
        assert truncate(entry, [str(tmp_path / "*.log")]) is None
        assert os.fstat(fd).st_size == 8192
    finally:
        os.close(by_other)
        os.close(fd)


def test_a_holder_with_another_start_time_is_not_acted_through(tmp_path):
    """A PID reused by another process (its start time differs) is no holder."""
    path = str(tmp_path / "app.log")
    fd = open_deleted(path, 8192)
    try:
        entry = scanned(fd, path)
        entry.holders = [h._replace(starttime=h.starttime + 1) for h in entry.holders]
        assert truncate(entry, ANY) is None
        assert os.fstat(fd).st_size == 8192
    finally:
        os.close(fd)


def test_a_scan_stops_at_its_descriptor_budget_and_says_where_to_resume(tmp_path):
    path = str(tmp_path / "app.log")
    fd = open_deleted(path, 8192)
    many = [os.dup(fd) for _ in range(300)]
    try:
        dev = os.fstat(fd).st_dev
        scan = deleted.scan_open_deleted({dev}, budget=deleted.Budget(descriptors=100),
                                         resume_pid=os.getpid())
        assert scan.cut_short and scan.descriptors == 100
        assert scan.resume_pid == os.getpid(), "cut inside this process: resume here"
        whole = deleted.scan_open_deleted({dev}, resume_pid=os.getpid())
        assert not whole.cut_short and whole.descriptors >= 301
        (entry,) = [e for e in whole.found.values() if e.path == path]
        assert len(entry.holders) == 301
    finally:
        for other in many:
            os.close(other)
        os.close(fd)


def test_a_scan_stops_at_its_time_budget(tmp_path):
    fd = open_deleted(str(tmp_path / "app.log"), 8192)
    many = [os.dup(fd) for _ in range(2 * deleted.CHECK_EVERY)]
    try:
        scan = deleted.scan_open_deleted({os.fstat(fd).st_dev}, budget=deleted.Budget(seconds=0.0))
        assert scan.cut_short and scan.descriptors == deleted.CHECK_EVERY
    finally:
        for other in many:
            os.close(other)
        os.close(fd)


def test_a_descriptor_on_an_unwatched_mount_is_never_statted(tmp_path, monkeypatch):
    """The mount id in fdinfo decides before any stat of the target."""
    path = str(tmp_path / "app.log")
    fd = open_deleted(path, 8192)
    dev = os.fstat(fd).st_dev
    statted = []
    real_stat = os.stat
    monkeypatch.setattr(deleted.os, "stat", lambda p, *a, **k: statted.append(p) or real_stat(p, *a, **k))
    try:
        # a device no mount carries: no descriptor of any process is stat'ed
        assert deleted.scan_open_deleted({os.makedev(4095, 4095)}).found == {}
        assert not [p for p in statted if "/fd/" in p]
        found = deleted.scan_open_deleted({dev}).found
        assert [e for e in found.values() if e.path == path]
        assert f"/proc/{os.getpid()}/fd/{fd}" in statted
    finally:
        os.close(fd)


def test_an_fd_swapped_for_one_on_another_mount_is_refused_before_any_fstat(tmp_path, monkeypatch):
    """fstat of a file on a hung FUSE mount would wait: the mount id of the
    O_PATH fd is compared with the scanned one first."""
    from oorkiller.act import truncate as module
    elsewhere = "/dev/shm" if os.stat("/dev/shm").st_dev != os.stat(tmp_path).st_dev else None
    if elsewhere is None:
        pytest.skip("needs /dev/shm on another file system than the test's tmp_path")
    decoy = f"{elsewhere}/oorkiller-test-decoy-{os.getpid()}"
    open(decoy, "wb").close()
    decoy_fd = os.open(decoy, os.O_PATH | os.O_CLOEXEC)
    path = str(tmp_path / "app.log")
    fd = open_deleted(path, 8192)
    statted = []
    real_fstat = os.fstat
    try:
        entry = scanned(fd, path)
        assert entry.holders[0].mount_id is not None
        os.dup2(decoy_fd, fd)
        monkeypatch.setattr(module.os, "fstat", lambda n: statted.append(os.readlink(f"/proc/self/fd/{n}"))
                            or real_fstat(n))
        assert truncate(entry, ANY) is None
        monkeypatch.undo()
        assert statted == [], "a descriptor on another mount was fstat'ed"
    finally:
        os.close(fd)
        os.close(decoy_fd)
        os.unlink(decoy)
