"""The kernel-table shields end to end: the installed oorkiller in a PID
namespace, scoped to the test's own processes, levels as counts just above
what the machine uses at the start."""
import signal

import pytest

from sandbox import events, in_pid_namespace, stopped_cleanly

KILLED = -signal.SIGKILL
TERMED = -signal.SIGTERM


def test_a_fork_bomb_is_stopped_whole_and_killed_in_one_action_and_the_bystander_lives():
    result = in_pid_namespace("scenarios_tables", "fork_bomb")
    assert result["bomb_gone"], result
    assert result["left_in_group"] == [], "no member of the group is left behind"
    assert result["ended"] == {"bomb": KILLED, "bystander": "alive"}
    (stop,) = events(result, "stop")
    (kill,) = events(result, "kill")
    assert stop["resource"] == kill["resource"] == "tasks"
    assert stop["unit"] == "process_group" and stop["signal"] == "SIGSTOP"
    assert kill["signal"] == "SIGKILL" and kill["processes"] == stop["processes"]
    assert int(stop["processes"]) > 100, "the parent and the children it forked"
    assert f"kill level {result['level']}" in stop["reason"]
    assert events(result, "term") == []
    (reclaimed,) = events(result, "reclaimed")
    assert reclaimed["resource"] == "tasks" and reclaimed["processes"] == stop["processes"]
    stopped_cleanly(result)


def test_a_fork_bomb_in_dry_run_is_recorded_and_not_signalled():
    result = in_pid_namespace("scenarios_tables", "fork_bomb", dry_run=True)
    assert result["decided"], result
    assert result["ended"] == {"bomb": "alive", "bystander": "alive"}
    assert result["left_in_group"] > 100, "the children were not killed"
    assert result["stopped_in_group"] == 0, "nor stopped"
    decided = events(result, "stop", "kill")
    assert [r["event"] for r in decided] == ["stop", "kill"], "one decision"
    assert all(r["dry_run"] == "yes" and r["resource"] == "tasks" for r in decided)
    assert events(result, "reclaimed") == []
    stopped_cleanly(result)


def test_a_descriptor_leak_is_killed_and_a_steady_large_holder_lives():
    result = in_pid_namespace("scenarios_tables", "descriptor_leak")
    assert result["holder_fds"] == 5000
    assert result["leaker_died"], result
    assert result["ended"] == {"leaker": TERMED, "holder": "alive"}
    (term,) = events(result, "term")
    assert term["resource"] == "files" and term["name"] == "leaker" and term["unit"] == "process"
    assert int(term["held"]) > int(term["grew"]) > 0
    assert events(result, "kill", "stop") == []
    stopped_cleanly(result)


def test_a_descriptor_leak_in_dry_run_is_recorded_once_and_not_signalled():
    result = in_pid_namespace("scenarios_tables", "descriptor_leak", dry_run=True)
    assert result["decided"], result
    assert result["leaker_alive"] and result["ended"] == {"leaker": "alive", "holder": "alive"}
    (term,) = events(result, "term")
    assert term["dry_run"] == "yes" and term["resource"] == "files" and term["name"] == "leaker"
    assert events(result, "kill", "stop", "reclaimed") == []
    stopped_cleanly(result)


def test_conntrack_near_full_is_one_warning_and_nothing_is_killed():
    result = in_pid_namespace("scenarios_tables", "conntrack_in_a_network_namespace")
    if "skipped" in result:
        pytest.skip(result["skipped"])
    assert result["after"] >= result["before"] + 60, "the scenario must really fill the table"
    assert result["warned"], result
    (warning,) = events(result, "conntrack-full")
    assert warning["resource"] == "network" and int(warning["count"]) >= int(warning["warn_level"])
    assert warning["dropped"] == "0"
    assert events(result, "term", "kill", "stop") == []
    stopped_cleanly(result)
