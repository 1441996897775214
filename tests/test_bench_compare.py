"""The bench's regression check (`python -m bench --compare`): a ratio that
got worse is a regression when oorkiller's own figure in it got worse too,
past the spread the previous report measured for it; when only the peer's
or the floor's side moved, or ours moved within that spread, it is listed,
not flagged."""
import sys
from pathlib import Path

# The bench lives beside the package, not in it. The repository is on the
# path only for this import: everything else here tests the installed package.
REPO = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, REPO)
try:
    from bench.report import compare
finally:
    sys.path.remove(REPO)


def report(ours_ms=6.0, earlyoom_ms=40.0, overshoot_ours=9.0, overshoot_earlyoom=77.0,
           idle_ours=300.0, idle_nohang=360.0, load_over_idle=1.3, ours_ms_q3=None):
    """A report with these figures; the defaults are the baseline's, so a
    test names only what it moves."""
    return {
        "selection": {"counts": {"5000": {
            "oorkiller_ms": {"median": ours_ms, "q3": ours_ms_q3},
            "ratios": {"earlyoom_over_oorkiller": earlyoom_ms / ours_ms}}}},
        "fasthog": {"oorkiller": {"overshoot_mib": {"median": overshoot_ours}},
                    "ratios": {"overshoot_oorkiller_over_earlyoom": overshoot_ours / overshoot_earlyoom}},
        "idle": {"oorkiller": {"cpu_us_per_s": {"median": idle_ours}},
                 "ratios": {"cpu_oorkiller_over_nohang": idle_ours / idle_nohang}},
        "worstcase": {"ratios": {"to_death_load_over_idle": load_over_idle},
                      "load": {"max_gap_ms": 100, "interval_ms": 1000}},
    }


AGAINST_PEERS = ["fasthog.overshoot_oorkiller_over_earlyoom", "idle.cpu_oorkiller_over_nohang",
                 "selection.5000.earlyoom_over_oorkiller"]


def names(lines):
    """The ratios a list of compare's lines is about."""
    return sorted(line.split(":")[0] for line in lines)


BEFORE = report()


def test_the_same_figures_flag_nothing():
    assert compare(BEFORE, BEFORE) == ([], [])


def test_a_peer_that_got_lucky_is_listed_as_moved_not_flagged():
    now = report(earlyoom_ms=20.0, overshoot_ours=7.0, overshoot_earlyoom=6.0,
                 idle_ours=240.0, idle_nohang=150.0)
    flagged, moved = compare(now, BEFORE)
    assert flagged == []
    assert names(moved) == AGAINST_PEERS
    assert "ours 9 -> 7" in next(line for line in moved if line.startswith("fasthog"))


def test_our_own_figure_getting_worse_is_a_regression():
    now = report(ours_ms=9.0, overshoot_ours=20.0, idle_ours=420.0)
    flagged, moved = compare(now, BEFORE)
    assert moved == []
    assert names(flagged) == AGAINST_PEERS


def test_a_ratio_of_two_of_our_own_figures_is_flagged_on_its_own():
    now = report(load_over_idle=1.8)
    flagged, moved = compare(now, BEFORE)
    assert names(flagged) == ["worstcase.to_death_load_over_idle"]
    assert moved == []


def test_ours_moving_within_the_previous_runs_spread_is_listed_not_flagged():
    """The previous run's rounds spread up to 9.4 ms (one round of 12.5):
    a median of 8.0 is inside what that run itself measured."""
    before = report(ours_ms=6.4, ours_ms_q3=9.4)
    now = report(ours_ms=8.0, ours_ms_q3=8.1)
    flagged, moved = compare(now, before)
    assert flagged == []
    assert names(moved) == ["selection.5000.earlyoom_over_oorkiller"]
    assert "upper quartile 9.4" in moved[0]


def test_ours_moving_past_the_previous_runs_spread_is_a_regression():
    before = report(ours_ms=6.4, ours_ms_q3=6.5)
    now = report(ours_ms=8.0, ours_ms_q3=8.1)
    flagged, _ = compare(now, before)
    assert names(flagged) == ["selection.5000.earlyoom_over_oorkiller"]
