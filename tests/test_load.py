"""Under load: 10,000 processes, churn, memory that oscillates around a level. The shields still act, once per shortage, and the
daemon neither crashes nor leaks descriptors. (The CPU fork bomb is
test_cpu_shield.py's; hours of this are bench/soak.py's.)"""
import signal


from sandbox import in_pid_namespace, stopped_cleanly, events

KILLED, TERMED = -signal.SIGKILL, -signal.SIGTERM


def test_among_10000_processes_the_hog_is_still_found_and_killed():
    result = in_pid_namespace("scenarios_load", "hog_among_many", sleepers=10_000, timeout=150)
    assert result["processes"] >= 10_000
    assert result["hog_died"] and result["ended"]["hog"] in (KILLED, TERMED), result
    assert {r["name"] for r in events(result, "term", "kill")} == {"hog"}
    assert not events(result, "error")
    stopped_cleanly(result)


def test_churn_in_dry_run_gives_no_error_and_leaks_no_descriptor():
    result = in_pid_namespace("scenarios_load", "churn_dry_run", rate=300, seconds=15, timeout=120)
    assert result["forks"] >= 300 * 15 * 0.5, "the churn must really happen"
    assert result["daemon_alive"]
    assert not events(result, "error"), events(result, "error")
    assert result["fds_after"] <= result["fds_before"] + 16, result
    stopped_cleanly(result)


def test_memory_oscillating_around_the_term_level_gets_one_action_and_no_flapping():
    result = in_pid_namespace("scenarios_load", "oscillating_memory", seconds=20, timeout=90)
    assert result["died"] and result["ended"]["oscillator"] in (KILLED, TERMED)
    assert result["ended"]["bystander"] == "alive"
    chosen = events(result, "term", "kill")
    assert [r["name"] for r in chosen] == ["oscillator"], chosen
    assert len(events(result, "reclaimed")) == 1
    stopped_cleanly(result)
