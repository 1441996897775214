"""cleanup.py: only allowed regular files go, oldest first, never outside the
rule's directory, never a flocked file, never from an untrusted directory.
Runs in-process as root on a temporary directory."""
import fcntl
import os
import threading
import time
import types

import pytest

from oorkiller.act import cleanup
from oorkiller.config import CleanupRule

HOUR = 3600


def make(path, size=4096, age=2 * HOUR):
    with open(path, "wb") as f:
        f.write(b"x" * size)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def rule(path, glob="*.log.*", min_age=600, recursive=False):
    return CleanupRule(path=str(path), glob=glob, min_age=min_age, recursive=recursive)


class Files:
    """A fake statvfs: free grows by one unit per file deleted from `watched`."""

    def __init__(self, watched, start_free, unit=1):
        self.watched, self.start, self.unit = watched, start_free, unit
        self.initial = self.count()

    def count(self):
        return sum(len(files) for _, _, files in os.walk(self.watched))

    def __call__(self):
        gone = self.initial - self.count()
        return types.SimpleNamespace(f_bavail=self.start + gone * self.unit, f_frsize=1,
                                     f_favail=1000, f_files=1000)


def never_enough():
    return types.SimpleNamespace(f_bavail=0, f_frsize=4096, f_favail=0, f_files=1000)


def run(rules, root, goal_bytes=None, fake=None, **kw):
    fake = fake or never_enough
    goal = cleanup.Goal(fake, goal_bytes if goal_bytes is not None else 1 << 60, None)
    return cleanup.run_pass(rules, os.stat(root).st_dev, goal, **kw)


@pytest.fixture
def logs(tmp_path):
    d = tmp_path / "logs"
    d.mkdir(mode=0o755)
    return d


def test_oldest_matching_files_go_first_until_the_goal(logs):
    for i in range(10):
        make(logs / f"ovs.log.{i}", age=(20 - i) * HOUR)   # ovs.log.0 is the oldest
    fake = Files(logs, start_free=0)
    result = run([rule(logs)], logs, goal_bytes=3, fake=fake)
    assert result.files == 3 and result.reached
    assert sorted(os.listdir(logs)) == [f"ovs.log.{i}" for i in range(3, 10)]


def test_non_matching_and_too_young_files_are_kept(logs):
    make(logs / "ovs.log.1")
    make(logs / "ovs.log", age=5 * HOUR)                 # the live log: no match
    make(logs / "ovs.log.2", age=60)                     # younger than min_age
    result = run([rule(logs)], logs)
    assert result.files == 1
    assert sorted(os.listdir(logs)) == ["ovs.log", "ovs.log.2"]


def test_oldest_first_across_rules(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    make(a / "x.log.1", age=3 * HOUR)
    make(b / "y.log.1", age=9 * HOUR)
    fake = Files(tmp_path, start_free=0)
    result = run([rule(a), rule(b)], tmp_path, goal_bytes=1, fake=fake)
    assert result.files == 1
    assert os.path.exists(a / "x.log.1") and not os.path.exists(b / "y.log.1")


def test_a_symbolic_link_is_never_followed(tmp_path, logs):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = make(outside / "precious.log.1")
    os.symlink(target, logs / "link.log.1")
    os.symlink(outside, logs / "dirlink")
    result = run([rule(logs, recursive=True)], logs)
    assert result.files == 0
    assert os.path.exists(target)
    assert os.path.islink(logs / "link.log.1")


def test_a_flocked_file_is_kept(logs):
    held = make(logs / "held.log.1")
    make(logs / "free.log.1")
    with open(held, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        result = run([rule(logs)], logs)
    assert result.files == 1 and result.kept_flocked == 1
    assert os.listdir(logs) == ["held.log.1"]


def test_a_posix_lock_is_not_a_flock(logs):
    make(logs / "posix.log.1")
    with open(logs / "posix.log.1", "r+b") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        result = run([rule(logs)], logs)
    assert result.files == 1


@pytest.mark.parametrize("mode,owner,why", [
    (0o777, 0, "writable by everyone"),
    (0o775, 0, None),                  # group root may write: root's own group
    (0o755, 1000, "owned by uid 1000, not root"),
])
def test_an_untrusted_cleanup_directory_is_refused(logs, mode, owner, why):
    make(logs / "a.log.1")
    os.chown(logs, owner, 0)
    os.chmod(logs, mode)
    result = run([rule(logs)], logs)
    if why is None:
        assert result.files == 1 and result.refused == []
    else:
        assert result.files == 0 and os.path.exists(logs / "a.log.1")
        assert result.refused == [(str(logs), f"{logs} is {why}")]


def test_an_ancestor_writable_by_others_is_refused_but_sticky_tmp_is_not(tmp_path):
    parent = tmp_path / "shared"
    (parent / "logs").mkdir(parents=True)
    make(parent / "logs" / "a.log.1")
    os.chmod(parent, 0o777)
    result = run([rule(parent / "logs")], tmp_path)
    assert result.files == 0 and "writable by everyone" in result.refused[0][1]
    os.chmod(parent, 0o1777)            # like /tmp: others cannot move root's entries
    assert run([rule(parent / "logs")], tmp_path).files == 1


def test_a_subdirectory_writable_by_others_is_not_entered(logs):
    sub = logs / "sub"
    sub.mkdir()
    make(sub / "a.log.1")
    os.chmod(sub, 0o777)
    result = run([rule(logs, recursive=True)], logs)
    assert result.files == 0 and result.refused == [(f"{logs}/sub", "writable by everyone")]


def test_a_cleanup_directory_that_is_a_link_is_refused(tmp_path, logs):
    make(logs / "a.log.1")
    os.symlink(logs, tmp_path / "via-link")
    result = run([rule(tmp_path / "via-link")], tmp_path)
    assert result.files == 0 and "symbolic link" in result.refused[0][1]


def test_dry_run_deletes_nothing_and_counts_what_would_go(logs):
    for i in range(4):
        make(logs / f"a.log.{i}")
    result = run([rule(logs)], logs, dry_run=True)
    assert result.files == 4 and len(os.listdir(logs)) == 4


def test_recursive_walk_deletes_in_subdirectories(logs):
    (logs / "x" / "y").mkdir(parents=True)
    make(logs / "x" / "y" / "deep.log.1")
    assert run([rule(logs)], logs).files == 0
    assert run([rule(logs, recursive=True)], logs).files == 1


def test_a_directory_swapped_for_a_link_mid_pass_never_leads_outside(tmp_path, logs):
    """The directory-swap race, repeated: a swapper thread keeps replacing logs/sub
    with a link to `outside` (and back) while passes run."""
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = [make(outside / f"p{i}.log.1") for i in range(20)]
    sub, parked = logs / "sub", logs / "parked"
    sub.mkdir()
    stop = threading.Event()

    def swap():
        while not stop.is_set():
            os.rename(sub, parked)
            os.symlink(outside, sub)
            os.unlink(sub)
            os.rename(parked, sub)

    swapper = threading.Thread(target=swap)
    swapper.start()
    deleted = 0
    try:
        for _ in range(300):
            for i in range(5):
                try:
                    make(parked / f"s{i}.log.1") if parked.exists() else make(sub / f"s{i}.log.1")
                except OSError:
                    pass
            deleted += run([rule(logs, recursive=True)], logs).files
    finally:
        stop.set()
        swapper.join()
    assert all(os.path.exists(p) for p in precious), "a file outside the rule's directory was deleted"
    assert deleted > 0, "the passes must really have deleted inside"


def test_the_recheck_before_unlink_keeps_the_min_age_of_the_rule_that_matched(logs):
    """Two rules on one directory: *.tmp after 1 minute, *.log.* after 10.
    A log seen old at the walk and touched to 5 minutes old before its turn
    is kept: the re-check holds it to its own rule's 10 minutes, not to the
    1 minute of the other rule."""
    tmp = make(logs / "scratch.tmp", age=3 * HOUR)            # oldest: goes first
    log = make(logs / "app.log.1", age=2 * HOUR)
    readings = []

    def statvfs():
        # 1st reading: Goal(); 2nd: after scratch.tmp went (the estimate says
        # "enough"), between the walk and the log's re-check.
        readings.append(1)
        if len(readings) == 2:
            then = time.time() - 5 * 60
            os.utime(log, (then, then))
        return types.SimpleNamespace(f_bavail=0, f_frsize=1, f_favail=1000, f_files=1000)

    goal = cleanup.Goal(statvfs, os.stat(tmp).st_blocks * 512, None)
    result = cleanup.run_pass([rule(logs, glob="*.tmp", min_age=60), rule(logs, glob="*.log.*", min_age=600)],
                              os.stat(logs).st_dev, goal)
    assert len(readings) >= 2, "the log must have been touched before its re-check"
    assert not os.path.exists(tmp) and result.candidates == 2
    assert os.path.exists(log), "deleted under the weaker rule's min_age"
    assert result.files == 1
