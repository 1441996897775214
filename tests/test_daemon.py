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
