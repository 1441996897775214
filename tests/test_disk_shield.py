"""The disk shield, end to end: the installed oorkiller in a PID and mount
namespace of its own, against tmpfs file systems whose space and inodes run
out on purpose, scoped to the test's own processes."""
import json
import signal

from sandbox import in_pid_namespace, stopped_cleanly

KILLED, TERMED = -signal.SIGKILL, -signal.SIGTERM


def actions(records, event):
    return [r for r in records if r["event"] == event]


def test_below_clean_the_oldest_allowed_files_go_until_the_until_level():
    result = in_pid_namespace("scenarios_disk", "fill_space")
    # 9 oldest rotated logs (2 MiB each) bring free from 21.9% to 50%.
    assert result["left"] == sorted(["ovs.log", "young.log.1"] + [f"ovs.log.{i}" for i in range(9, 20)])
    assert result["ballast"], "a file outside every rule is never deleted"
    assert result["free_pct"] >= 50.0
    (record,) = actions(result["records"], "cleanup")
    assert record["resource"] == "disk" and record["files"] == "9" and record["bytes"] == "18MiB"
    for key in ("path", "free_before", "free_after", "inodes_before", "inodes_after", "time_to_full"):
        assert key in record
    stopped_cleanly(result)


def test_inode_exhaustion_is_cleaned_the_same_way():
    result = in_pid_namespace("scenarios_disk", "inode_exhaustion")
    assert result["inodes_free_pct"] >= 50.0
    # the newest survive, contiguous: the oldest went first
    assert result["newest_left"] == 1899
    assert result["newest_left"] - result["oldest_left"] + 1 == result["left_count"]
    assert 0 < result["left_count"] < 1900
    assert len(actions(result["records"], "cleanup")) == 1
    stopped_cleanly(result)


def test_two_file_systems_have_their_own_levels():
    result = in_pid_namespace("scenarios_disk", "two_disks")
    assert result["b_left"] == 28, "B is above its own clean level: untouched"
    assert result["a_left"] == 16, "A is cleaned from 12.5% to its until level, 50%"
    (record,) = actions(result["records"], "cleanup")
    assert record["path"] == result["a"]


def test_a_deleted_open_log_matching_truncate_deleted_is_truncated():
    result = in_pid_namespace("scenarios_disk", "deleted_open_logs")
    assert result["truncated"]
    (record,) = actions(result["records"], "truncate")
    assert record["file"] == result["allowed"] and record["resource"] == "disk"
    assert result["regained"] >= 19 << 20, "the truncated file's space came back"
    assert result["status_rc"] == 0, result["status_err"]
    (disk,) = [row for row in json.loads(result["status"])["resources"] if row["resource"] == "disk"]
    # the daemon is stopped when status runs: both files are deleted-open, one truncated to 0
    assert disk["deleted_open_files"] == 2 and 19 << 20 <= disk["deleted_open_bytes"] < 21 << 20
    assert result["ended"] == {"holder": "alive"}


def test_below_kill_a_fast_writer_is_killed_and_a_slow_one_survives():
    result = in_pid_namespace("scenarios_disk", "writers")
    assert result["ended"]["fastwriter"] in (TERMED, KILLED)
    assert result["ended"]["slowwriter"] == "alive"
    signalled = actions(result["records"], "term") + actions(result["records"], "kill")
    assert signalled and {r["name"] for r in signalled} == {"fastwriter"}
    assert all(r["resource"] == "disk" and "time_to_full" in r and "rate" in r for r in signalled)
    stopped_cleanly(result)


def test_dry_run_names_the_fast_writer_and_signals_nothing():
    result = in_pid_namespace("scenarios_disk", "writers", dry_run=True)
    assert result["ended"] == {"fastwriter": "alive", "slowwriter": "alive"}
    decided = actions(result["records"], "term")
    assert decided and all(r["dry_run"] == "yes" and r["name"] == "fastwriter" for r in decided)


def test_a_long_cleanup_pass_does_not_delay_the_memory_shield():
    result = in_pid_namespace("scenarios_disk", "cleanup_beside_memory_hog", timeout=120)
    assert result["passing"], "the cleanup pass must have begun before the hog"
    assert result["hog_died"] and result["ended"]["hog"] in (TERMED, KILLED)
    assert result["left_at_kill"] > 0, "the hog must have been killed while the pass still ran"
    assert result["hog_after"] < 5.0
    (record,) = actions(result["records"], "cleanup")
    assert int(record["files"]) > 90_000


def test_a_user_holding_200000_descriptors_cannot_stall_the_disk_shield():
    """Unprivileged processes hold 200,000 descriptors (this machine's hard
    RLIMIT_NOFILE is ~20,000 and the test has no CAP_SYS_RESOURCE: 11
    processes) of a file on another file system."""
    result = in_pid_namespace("scenarios_disk", "deleted_scan_beside_many_descriptors", timeout=180)
    assert result["held"] >= 200_000
    cut = result["cut"]
    assert cut and cut["resource"] == "disk" and "cut short after" in cut["reason"], result["records"]
    assert result["truncated"], "the scan resumes where it stopped: the genuine log is reached"
    assert result["cleaned"] and result["cleanup_after"] < 1.5, "the disk shield's step waited"
    assert result["pings"] > 0 and result["longest_ping_gap"] < 2.5
    assert result["ended"]["genuine"] == "alive"
    stopped_cleanly(result)
