"""The bench's table (`python -m bench`): every target is reported as met, or
as missed by how much, with the reason the same run measured for it."""
import json
import sys
from pathlib import Path

# The bench lives beside the package, not in it. The repository is on the
# path only for this import: everything else here tests the installed package.
REPO = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, REPO)
try:
    from bench.__main__ import previous_report
    from bench.report import table, verdict, why_missed
finally:
    sys.path.remove(REPO)


def selection_row(ours=13.2, floor=3.65, earlyoom=41.8, nohang=37.0, listing=4.2, sample=8.4):
    return {"oorkiller_ms": {"median": ours}, "floor_ms": {"median": floor},
            "earlyoom_ms": {"median": earlyoom}, "nohang_ms": {"median": nohang},
            "oorkiller_phases_ms": {"refresh": listing, "rules": 0.0, "sample": sample, "rank": 0.3},
            "ratios": {"oorkiller_over_floor": ours / floor, "earlyoom_over_oorkiller": earlyoom / ours,
                       "nohang_over_oorkiller": nohang / ours}}


def idle_scenario(ours_cpu=240.0, earlyoom_cpu=123.0, nohang_cpu=150.0, ours_kib=16404, bare_kib=10100):
    row = lambda cpu, wakeups=1.0, kib=1740, anon=None: {
        "cpu_us_per_s": {"median": cpu}, "wakeups_per_s": {"median": wakeups}, "vmrss_kib": kib,
        "rssanon_kib": anon}
    return {"seconds": 60, "oorkiller": row(ours_cpu, kib=ours_kib, anon=10752), "oorkiller_no_tables": row(204.0),
            "earlyoom": row(earlyoom_cpu), "nohang": row(nohang_cpu, wakeups=0.3),
            "python_bare": row(0.0, wakeups=0.0, kib=bare_kib, anon=2867), "twins_differ_us_per_s": 9.0,
            "ratios": {"cpu_oorkiller_over_earlyoom": ours_cpu / earlyoom_cpu,
                       "cpu_oorkiller_over_nohang": ours_cpu / nohang_cpu}}


def test_a_met_target_says_met_and_gives_no_reason():
    results = {"selection": {"counts": {"5000": selection_row(ours=6.0, listing=2.0, sample=3.8)}}}
    assert verdict("selection.5000.oorkiller_over_floor", 6.0 / 3.65) == "target <= 2: met"
    assert "why:" not in table(results).split("figures")[0].split("oorkiller_over_floor")[1]


def test_a_missed_target_says_by_how_much():
    assert verdict("selection.5000.oorkiller_over_floor", 3.625) == "target <= 2: MISSED by 81%"
    # ">=": how much faster oorkiller would have to be
    assert verdict("selection.5000.earlyoom_over_oorkiller", 3.2) == "target >= 4: MISSED by 25%"


def test_the_floor_is_missed_because_listing_proc_costs_more_than_the_floor():
    results = {"selection": {"counts": {"5000": selection_row()}}}
    why = why_missed("selection.5000.oorkiller_over_floor", results)
    assert "listing /proc took 4.20 ms, 1.15x the floor (3.65 ms)" in why
    assert "the preads after the listing took 8.40 ms, 2.30x" in why


def test_a_peer_target_below_listing_plus_floor_says_so():
    """At 10,000: a quarter of earlyoom's time is less than listing /proc and
    the floor's preads together, so no selection that lists /proc meets it."""
    results = {"selection": {"counts": {"10000": selection_row(ours=32.0, floor=18.0, earlyoom=81.7,
                                                               listing=9.9, sample=21.2)}}}
    why = why_missed("selection.10000.earlyoom_over_oorkiller", results)
    assert "means at most 20.43 ms" in why and "already take 27.90 ms" in why


def test_a_peer_target_within_reach_blames_the_cold_preads():
    results = {"selection": {"counts": {"5000": selection_row()}}}
    why = why_missed("selection.5000.nohang_over_oorkiller", results)
    assert "would fit" in why and "8.40 ms, 2.30x the floor's loop" in why


def test_idle_cpu_against_earlyoom_names_the_readings_and_the_daemon_without_tables():
    why = why_missed("idle.cpu_oorkiller_over_earlyoom", {"idle": idle_scenario()})
    assert "/proc/meminfo alone" in why
    assert "without the table shields oorkiller took 204 us/s, 1.66x earlyoom" in why


def test_idle_cpu_against_nohang_compares_wakeups_and_cost_per_wakeup():
    why = why_missed("idle.cpu_oorkiller_over_nohang", {"idle": idle_scenario()})
    assert "nohang woke 0.30 times a second" in why and "per wake-up 240 us against nohang's 500" in why


def test_the_memory_target_is_measured_against_a_bare_interpreter():
    results = {"idle": idle_scenario()}
    assert verdict("idle.vmrss_mib", 16404 / 1024) == "target <= 12: MISSED by 33%"
    why = why_missed("idle.vmrss_mib", results)
    assert "a bare Python interpreter measured 9.9 MiB" in why and "which took 6.2 MiB" in why
    assert "anonymous memory 10.5 MiB against the bare interpreter's 2.8, file pages 5.5 against 7.1" in why
    assert "why: a bare Python interpreter" in table(results)


def test_the_worst_case_splits_the_shield_part_from_the_kernel_part():
    phase = lambda death, signal, after: {"to_death_ms": {"median": death}, "to_signal_ms": {"median": signal},
                                          "signal_to_death_ms": {"median": after}}
    worst = {"idle": phase(35.7, 2.2, 33.3), "load": {**phase(89.1, 4.3, 84.8), "max_gap_ms": 145,
                                                      "interval_ms": 1000},
             "ratios": {"to_death_load_over_idle": 2.49}}
    why = why_missed("worstcase.to_death_load_over_idle", {"worstcase": worst})
    assert "84.8 ms came after the SIGKILL" in why and "crossing to SIGKILL, took 4.3 ms" in why


def test_the_targets_are_where_the_issue_sets_them():
    """The fast hog's target is on the multi-thread hog; the selection's
    speed targets at 5,000 and 10,000 processes; the others are figures."""
    assert verdict("fasthog.threads.overshoot_oorkiller_over_earlyoom", 0.6).startswith("target <= 0.5: MISSED")
    assert verdict("fasthog.overshoot_oorkiller_over_earlyoom", 0.6) == ""
    assert verdict("selection.1000.oorkiller_over_floor", 2.2) == ""
    assert verdict("selection.1000.crossing_to_signal_ms", 11) == "target <= 10: MISSED by 10%"


def test_the_default_baseline_is_a_bench_report_not_the_soaks_verdict(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"machine": {}, "idle": {}}))
    (tmp_path / "soak.json").write_text(json.dumps({"minutes": 10, "rounds": 17}))
    assert previous_report(str(tmp_path), None) == str(report)
