"""The CPU shield, end to end: the installed oorkiller in a PID namespace,
scoped to the test's own processes, against real spinners. The machine has 2 CPUs; tests use a short `for`."""
import signal


from sandbox import in_pid_namespace, stopped_cleanly

TERMED = -signal.SIGTERM
KILLED = -signal.SIGKILL


def actions(records, *events):
    return [r for r in records if r["event"] in events]


def test_a_busy_but_healthy_machine_keeps_its_compilers():
    # Embedded defaults: usage 98% AND runnable_per_cpu 4.0; both CPUs are
    # saturated, but about one task per CPU is runnable: the conditions never
    # all hold.
    result = in_pid_namespace("scenarios_cpu", "busy_but_healthy")
    assert result["busy"] > 0.95, "the scenario must really saturate the CPUs"
    assert result["runnable_per_cpu"] < 4.0
    assert result["ended"] == {"compiler1": "alive", "compiler2": "alive"}
    assert actions(result["records"], "term", "kill", "nothing-to-kill") == []
    stopped_cleanly(result)


def test_a_busy_machine_is_judged_as_it_is_now_not_by_the_load_average_of_a_storm_just_over():
    result = in_pid_namespace("scenarios_cpu", "spinners_after_a_storm", timeout=120)
    assert result["load_at_start"] >= 4.0, "the storm must leave a high one-minute load average"
    assert result["busy"] > 0.95
    assert result["ended"] == {"compiler1": "alive", "compiler2": "alive"}
    assert actions(result["records"], "term", "kill", "nothing-to-kill") == []
    stopped_cleanly(result)


def test_one_action_kills_a_storms_group_and_the_bystander_in_another_session_lives():
    result = in_pid_namespace("scenarios_cpu", "storm_and_bystander", timeout=120)
    assert result["group_gone"], result["records"]
    assert result["bystander_alive"] and result["ended"]["bystander"] == "alive"
    (term,) = actions(result["records"], "term")
    assert term["unit"] == "process_group" and term["group"] == str(result["pgid"])
    # The bystander was weighed and passed over: its kill alone is not enough.
    assert term["why"].startswith("alone enough (1 of 2)"), term
    assert term["runner_up"] == f"{result['bystander_pid']}/bystander", term
    assert "runnable" in term["reason"] and "runnable" in term["after"]
    stopped_cleanly(result)


def test_the_process_creating_most_of_the_load_is_killed_and_the_other_survives():
    result = in_pid_namespace("scenarios_cpu", "two_spinners")
    assert result["twin_died"], result
    assert result["ended"] == {"twin": TERMED, "single": "alive"}
    (term,) = actions(result["records"], "term")
    assert term["resource"] == "cpu" and term["name"] == "twin" and term["unit"] == "process"
    assert int(term["share"].rstrip("%").split(".")[0]) >= 25     # min_share reached
    assert "CPU busy" in term["reason"] and "for 3s" in term["reason"]
    assert actions(result["records"], "kill") == []
    (reclaimed,) = actions(result["records"], "reclaimed")
    assert reclaimed["name"] == "twin" and reclaimed["signal"] == "SIGTERM"
    stopped_cleanly(result)


def test_a_group_none_of_whose_members_reaches_min_share_goes_in_one_action():
    result = in_pid_namespace("scenarios_cpu", "group_of_twenty")
    assert result["group_gone"], result
    assert result["left_in_group"] == []
    assert result["ended"]["outsider"] == "alive", "nothing outside the group is hit"
    (term,) = actions(result["records"], "term")
    assert term["unit"] == "process_group" and term["group"] == str(result["pgid"])
    assert term["processes"] == "21"                    # the parent and its twenty children
    assert actions(result["records"], "kill") == []
    (reclaimed,) = actions(result["records"], "reclaimed")
    assert reclaimed["processes"] == "21"
    stopped_cleanly(result)


def test_a_fork_bomb_that_ignores_sigterm_loses_the_children_it_forks_after_the_choice():
    result = in_pid_namespace("scenarios_cpu", "group_of_twenty", fork_every=0.05)
    assert result["group_gone"], result
    assert result["left_in_group"] == []
    assert result["ended"]["outsider"] == "alive"
    (term,) = actions(result["records"], "term")
    assert term["unit"] == "process_group"
    kills = actions(result["records"], "kill")
    assert kills and all(k["group"] == str(result["pgid"]) for k in kills)
    late = [k for k in kills if "after it was chosen" in k["reason"]]
    assert late and int(late[0]["processes"]) >= 1, "children forked after the choice are caught"
    stopped_cleanly(result)


def test_a_protected_spinner_survives_and_nothing_to_kill_is_said_once():
    result = in_pid_namespace("scenarios_cpu", "protected_spinner")
    assert result["ended"] == {"keepme": "alive"}
    assert actions(result["records"], "term", "kill") == []
    (said,) = actions(result["records"], "nothing-to-kill")
    assert said["resource"] == "cpu" and "min_share" in said["reason"]
    stopped_cleanly(result)


def test_a_spinner_first_seen_under_a_protected_name_is_judged_by_its_name_now():
    result = in_pid_namespace("scenarios_cpu", "renamed_spinner")
    assert result["died"], result
    assert result["ended"] == {"renamedspin": TERMED}
    (term,) = actions(result["records"], "term")
    assert term["name"] == "renamedspin"
    assert actions(result["records"], "nothing-to-kill") == []
    stopped_cleanly(result)


def test_a_burst_shorter_than_for_triggers_nothing():
    result = in_pid_namespace("scenarios_cpu", "short_burst")
    assert result["ended"] == {"burst": 0}, "the burst ended by itself"
    assert actions(result["records"], "term", "kill", "nothing-to-kill") == []
    stopped_cleanly(result)


def test_dry_run_signals_nothing_and_records_the_decision():
    result = in_pid_namespace("scenarios_cpu", "two_spinners", dry_run=True)
    assert result["ended"] == {"twin": "alive", "single": "alive"}
    decided = actions(result["records"], "term", "kill")
    assert decided and all(r["dry_run"] == "yes" and r["name"] == "twin" for r in decided)
    assert "share" in decided[0] and decided[0]["unit"] == "process"
    assert actions(result["records"], "reclaimed") == []
    stopped_cleanly(result)


def test_a_reused_pid_is_never_signalled_nor_blamed():
    result = in_pid_namespace("scenarios_cpu", "reused_pid")
    assert result["chosen"] == "hog"
    assert result["same_pid"], "the scenario must really reuse the PID"
    assert result["targets"] == 0, "the chosen entry must not yield a pidfd for the new process"
    assert result["second_alive"]
    # The new process is a new entry, charged only with its own start-up ticks.
    assert result["new_serial"]
    assert result["newcomer_used"] is not None and result["newcomer_used"] < result["hog_used"] / 4
