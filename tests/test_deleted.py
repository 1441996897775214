"""deleted.py: deleted-but-open files are found once per inode, with their
space and original name; truncation reaches only that very inode."""
import os

from oorkiller.act.truncate import truncate
from oorkiller.proc import deleted


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
        assert {(os.getpid(), fd), (os.getpid(), second)} <= set(entry.holders)
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
        assert truncate(entry) == (os.getpid(), entry.nbytes)
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
        entry.holders = [(os.getpid(), other)]
        assert truncate(entry) is None
        assert os.fstat(other).st_size == 8192
    finally:
        os.close(other)
        os.close(keep)


def test_globs_match_the_original_path():
    assert deleted.matches("/var/log/app/app.log", ["/var/log/app/*.log"])
    assert not deleted.matches("/var/log/app/app.log", ["/var/log/other/*"])
