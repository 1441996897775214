"""The daemon's life: start, SIGHUP reload (a bad file keeps the running
configuration), SIGTERM stop within one second."""
from sandbox import in_pid_namespace


def test_a_broken_reload_is_refused_and_a_valid_one_takes_over():
    result = in_pid_namespace("scenarios_daemon", "reload_cycle")
    refused = result["refused"]
    assert refused is not None and "reload refused" in refused["reason"]
    assert ":3:" in refused["reason"], "the refusal names the line of the problem"
    assert result["alive_after_bad"]
    assert result["reloaded"] is not None
    assert result["reloaded"]["dry_run"] == "yes", "the new file's settings are in force"
    assert result["stopped"]["rc"] == 0
    assert result["stopped"]["stop_seconds"] < 1.0
    (start,) = [r for r in result["records"] if r["event"] == "start"]
    assert start["dry_run"] == "no" and "memory" in start["monitors"].split(",")
    assert [r["event"] for r in result["records"]][-1] == "stop"


def test_a_locked_daemon_pins_only_what_it_runs_and_still_kills():
    """With lock_memory the library pages start-up touched (the YAML parser,
    the compiler) are given back before the lock: the locked daemon has
    fewer file pages resident than the same one unlocked, all of them
    locked, and its kill path (rehearsed after the release) works."""
    result = in_pid_namespace("scenarios_daemon", "locked_daemon_memory", timeout=120)
    sizes = result["sizes"]
    assert sizes["locked"]["VmLck"] > 0 and sizes["unlocked"]["VmLck"] == 0
    assert sizes["locked"]["RssFile"] < sizes["unlocked"]["RssFile"] - 512, sizes
    assert result["hog_died"] and result["ended"]["lockhog"] == -9
    (start,) = [r for r in result["records"] if r["event"] == "start"]
    assert start["mlock"] == "yes"
    assert [r for r in result["records"] if r["event"] == "kill"]
    assert sizes["locked_after_kill"]["VmLck"] >= sizes["locked"]["VmLck"]
    assert result["stopped"]["rc"] == 0
