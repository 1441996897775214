"""The memory shield, end to end: the installed oorkiller in a PID namespace,
scoped to the test's own processes, against real hogs."""
import signal

import pytest

from sandbox import boot_usec, in_pid_namespace, kernel_oom_kills_since, stopped_cleanly

KILLED = -signal.SIGKILL
TERMED = -signal.SIGTERM


def actions(records, event):
    return [r for r in records if r["event"] == event]


@pytest.mark.parametrize("chunk,pause", [(64, 0.05), (512, 0.0)], ids=["slow-hog", "fast-hog"])
def test_a_hog_is_killed_and_the_avoided_and_protected_survive(chunk, pause):
    since = boot_usec()
    result = in_pid_namespace("scenarios_memory", "hog_among_others", chunk=chunk, pause=pause)
    assert result["hog_died"], result
    assert result["ended"]["hog"] in (KILLED, TERMED)
    assert result["ended"]["bigavoid"] == "alive"
    assert result["ended"]["keepme"] == "alive"
    signalled = actions(result["records"], "term") + actions(result["records"], "kill")
    assert signalled and {r["name"] for r in signalled} == {"hog"}
    assert all(r["resource"] == "memory" and r["dry_run"] == "no" for r in signalled)
    reclaimed = actions(result["records"], "reclaimed")
    assert len(reclaimed) == 1 and reclaimed[0]["name"] == "hog"
    assert "after" in reclaimed[0] and "regained" in reclaimed[0]
    assert kernel_oom_kills_since(since) == [], "the kernel OOM killer must never fire"
    stopped_cleanly(result)


def test_a_victim_that_ignores_sigterm_gets_sigkill_after_term_timeout():
    result = in_pid_namespace("scenarios_memory", "sigterm_handling", ignore_term=True)
    assert result["ended"]["stubborn"] == KILLED, result
    term, kill = actions(result["records"], "term"), actions(result["records"], "kill")
    assert len(term) == 1 and len(kill) == 1
    assert "term_timeout" in kill[0]["reason"]
    (reclaimed,) = actions(result["records"], "reclaimed")
    assert reclaimed["signal"] == "SIGKILL"
    assert float(reclaimed["after"].rstrip("s")) >= 1.5
    stopped_cleanly(result)


def test_a_victim_that_honours_sigterm_dies_of_it():
    result = in_pid_namespace("scenarios_memory", "sigterm_handling", ignore_term=False)
    assert result["ended"]["polite"] == TERMED, result
    assert len(actions(result["records"], "term")) == 1
    assert actions(result["records"], "kill") == []
    (reclaimed,) = actions(result["records"], "reclaimed")
    assert reclaimed["signal"] == "SIGTERM"
    stopped_cleanly(result)


def chosen(result):
    (term,) = actions(result["records"], "term")
    return term["name"]


def test_rule1_of_two_equally_large_the_one_with_less_work_goes():
    result = in_pid_namespace("scenarios_memory", "choose_between", need_mib=100, specs=[
        {"name": "veteran", "size": 600, "burn": 1.5},
        {"name": "newcomer", "size": 600}])
    assert chosen(result) == "newcomer"
    assert result["ended"] == {"veteran": "alive", "newcomer": TERMED}


def test_rule2_the_larger_process_recovers_more():
    result = in_pid_namespace("scenarios_memory", "choose_between", need_mib=100, specs=[
        {"name": "small", "size": 300},
        {"name": "large", "size": 900}])
    assert chosen(result) == "large"
    assert result["ended"] == {"small": "alive", "large": TERMED}


def test_rule3_one_kill_that_is_enough_beats_two_smaller_ones():
    # `preferred` tops the score, but killing it alone would not be enough.
    result = in_pid_namespace("scenarios_memory", "choose_between", need_mib=450, specs=[
        {"name": "preferred", "size": 300, "adjust": 40},
        {"name": "sufficient", "size": 700}])
    assert chosen(result) == "sufficient"
    assert result["ended"] == {"preferred": "alive", "sufficient": TERMED}


def test_rule4_a_prefer_rule_wins_over_a_slightly_larger_process():
    result = in_pid_namespace("scenarios_memory", "choose_between", need_mib=100, specs=[
        {"name": "larger", "size": 600},
        {"name": "expected", "size": 500, "adjust": 50}])
    assert chosen(result) == "expected"
    assert result["ended"] == {"larger": "alive", "expected": TERMED}


def test_a_reused_pid_is_never_signalled():
    result = in_pid_namespace("scenarios_memory", "reused_pid")
    assert result["same_pid"], "the scenario must really reuse the PID"
    assert result["late_targets"] == 0, "a stale entry must not yield a pidfd"
    assert result["early_result"] == "gone", "a pidfd of the dead victim must not reach the new process"
    assert result["second_alive"]


def test_dry_run_records_the_kill_and_signals_nothing():
    result = in_pid_namespace("scenarios_memory", "hog_among_others", chunk=128, pause=0.02, dry_run=True)
    assert not result["hog_died"]
    assert result["ended"]["hog"] == "alive"
    decided = actions(result["records"], "term") + actions(result["records"], "kill")
    assert decided and all(r["dry_run"] == "yes" and r["name"] == "hog" for r in decided)
    assert actions(result["records"], "reclaimed") == []
    stopped_cleanly(result)


def test_kill_process_group_takes_the_whole_group_in_one_action():
    result = in_pid_namespace("scenarios_memory", "group_kill")
    ended = result["ended"]
    assert ended["outsider"] == "alive"
    assert all(ended[n] in (TERMED, KILLED) for n in ("grouphog", "member1", "member2")), ended
    (term,) = actions(result["records"], "term")
    assert term["unit"] == "process_group" and term["group"] == str(result["pgid"])
    assert term["processes"] == "3"
    stopped_cleanly(result)


@pytest.mark.parametrize("rename_after", [1.0, 3.0], ids=["young", "older"])
def test_a_hog_first_seen_under_a_protected_name_is_judged_by_its_name_now(rename_after):
    """Renamed at 1 s, the hog is re-checked at every refresh while young (or,
    failing that, at the choice); renamed at 3 s, past the young window, only
    the re-check at the choice, before `nothing-to-kill`, can find it. The
    young re-check alone is proven by the CPU shield's renamed spinner, which
    has no re-check at the choice."""
    result = in_pid_namespace("scenarios_memory", "renamed_hog", rename_after=rename_after)
    assert result["hog_died"], result
    assert result["ended"]["renamedhog"] in (KILLED, TERMED)
    signalled = actions(result["records"], "term") + actions(result["records"], "kill")
    assert {r["name"] for r in signalled} == {"renamedhog"}, result["records"]
    assert actions(result["records"], "nothing-to-kill") == [], result["records"]
    stopped_cleanly(result)


def test_the_young_grower_dies_not_the_larger_old_idle_process():
    result = in_pid_namespace("scenarios_memory", "steady_giant_and_young_grower", timeout=120)
    assert result["grower_died"], result["records"]
    assert result["ended"] == {"grower": KILLED, "giant": "alive"}
    signalled = actions(result["records"], "term") + actions(result["records"], "kill")
    assert [r["name"] for r in signalled] == ["grower"], "one action, on the cause"
    (kill,) = signalled
    assert "grew" in kill["why"] and kill["runner_up"].endswith("/giant")
    assert kill["after"].startswith("MemAvailable")
    stopped_cleanly(result)
