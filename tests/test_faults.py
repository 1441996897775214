"""Faults around the daemon: the kernel log unwritable, victims that vanish,
cannot be signalled or cannot die, cleanup directories that break, a watched
disk unmounted, /proc with hidepid. The daemon records an error where one is
due, never crashes, and the other shields keep working.

Scenarios live in scenarios_faults.py and run as PID 1 of a PID namespace
(and a private mount namespace), scoped to their own processes. A broken
config on reload is test_daemon.py's.
"""
import json
import os
import signal

import pytest

from sandbox import in_pid_namespace, stopped_cleanly, events

KILLED, TERMED = -signal.SIGKILL, -signal.SIGTERM


def test_an_unwritable_kernel_log_sends_records_to_stderr_and_the_hog_still_dies():
    result = in_pid_namespace("scenarios_faults", "kmsg_unwritable")
    assert result["hog_died"] and result["ended"]["hog"] in (KILLED, TERMED)
    assert any("/dev/kmsg" in w and "stderr" in w for w in result["warnings"]), result["warnings"]
    assert [r["name"] for r in events(result, "term", "kill")][:1] == ["hog"]
    assert events(result, "reclaimed")
    assert result["fake_kmsg_bytes"] == 0
    stopped_cleanly(result)


def test_victims_that_vanish_between_scan_choice_and_signal_are_never_an_error():
    result = in_pid_namespace("scenarios_faults", "vanishing_victims")
    assert result["targets_of_gone"] == 0, "no pidfd for a process gone before the choice"
    assert result["bound"] == 1, "the late victim was alive when it was chosen"
    assert result["outcomes"][1] == "dead" and result["next_rc"] == TERMED, "the worker goes on"
    assert not [r for r in result["records"] if r["event"] == "error"], result["records"]


@pytest.mark.skipif(not os.path.exists("/usr/bin/setpriv"), reason="needs setpriv (util-linux)")
def test_a_signal_refused_with_eperm_is_an_error_record_and_the_daemon_moves_on():
    result = in_pid_namespace("scenarios_faults", "cannot_signal", timeout=120)
    refused = result["refused"]
    assert refused and "Operation not permitted" in refused["reason"], result["records"]
    assert result["daemon_alive"]
    assert result["own_died"] and result["ended"]["ownspin"] in (KILLED, TERMED), result
    stopped_cleanly(result)


@pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/freezer"), reason="needs the cgroup v1 freezer")
def test_a_victim_that_cannot_die_costs_one_timeout_then_the_daemon_decides_again():
    result = in_pid_namespace("scenarios_faults", "frozen_victim", timeout=120)
    gave_up = result["gave_up"]
    assert gave_up and "still alive" in gave_up["reason"], result["records"]
    assert result["gave_up_after"] < 15, "term_timeout 1 s + 5 s after SIGKILL, plus start-up"
    assert result["alive_while_frozen"]
    assert result["decided_again"], "the shortage is still there: a new decision follows"
    stopped_cleanly(result)


@pytest.mark.parametrize("how", ["read-only", "vanished"])
def test_a_broken_cleanup_directory_is_an_error_record_and_memory_is_still_watched(how):
    result = in_pid_namespace("scenarios_faults", "cleanup_dir_broken", how=how)
    assert result["hog_died"], "the memory shield works while the disk one fails"
    errors = [r for r in events(result, "error") if r.get("resource") == "disk"]
    assert errors, f"a {how} cleanup directory must be said: {result['records']}"
    if how == "read-only":
        assert result["files_left"] == 12
    assert not events(result, "cleanup")
    stopped_cleanly(result)


def test_a_watched_disk_unmounted_at_run_time_is_not_mistaken_for_what_is_left():
    result = in_pid_namespace("scenarios_faults", "disk_unmounted")
    assert result["daemon_alive"] and result["hog_died"]
    assert result["survivors"] == ["app.log.0", "app.log.1", "app.log.2"], \
        "files of the file system left under the path are not the disk's"
    assert not events(result, "cleanup")
    stopped_cleanly(result)


def test_proc_with_hidepid_still_shows_root_every_process():
    result = in_pid_namespace("scenarios_faults", "hidepid_proc")
    assert result["hidepid"]
    assert result["hog_died"] and result["ended"]["hog"] in (KILLED, TERMED)
    assert [r["name"] for r in events(result, "term", "kill")][:1] == ["hog"]
    stopped_cleanly(result)


def test_hidepid_without_cap_sys_ptrace_is_said_clearly():
    """A reader that hidepid blinds is told so: the daemon in an `error`
    record at start, `candidates` on stderr; root still lists everything."""
    result = in_pid_namespace("scenarios_faults", "hidepid_seen_without_ptrace")
    (start,) = events(result, "start")
    assert start["proc_view"] == "limited"
    errors = [r for r in events(result, "error") if "hidepid" in r["reason"]]
    assert len(errors) == 1 and "CAP_SYS_PTRACE" in errors[0]["reason"], result["records"]
    stopped_cleanly(result)
    blinded, root = result["blinded"], result["root"]
    assert blinded["rc"] == 0, blinded
    assert "hidepid=" in blinded["stderr"] and "hidden" in blinded["stderr"]
    assert result["sleeper_pid"] not in [row["pid"] for row in json.loads(blinded["stdout"])["ranked"]]
    assert root["rc"] == 0 and "hidepid" not in root["stderr"], root
    assert result["sleeper_pid"] in [row["pid"] for row in json.loads(root["stdout"])["ranked"]]
