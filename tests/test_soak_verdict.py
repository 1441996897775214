"""The soak's memory check (bench/soak.py): a leak keeps growing to the end
and fails it; the allocator's high-water marks, reached early, do not."""
import sys
from pathlib import Path

# The bench lives beside the package, not in it: on the path only for this import.
REPO = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, REPO)
try:
    from bench.soak import rss_growth
finally:
    sys.path.remove(REPO)

# Two real 10-minute soaks (KiB, one sample a round, the first before warm-up).
SOAK_1403 = [20444, 20896, 21128, 21308, 21432, 21524, 21600, 21612, 21648, 21676, 21732,
             21776, 21812, 21844, 21844, 21848, 21848]
SOAK_1629 = [20512, 20852, 21156, 21264, 21524, 21564, 21624, 21680, 21688, 21728, 21772,
             21792, 21812, 21832, 21872, 21876, 21884]


def steady_leak(kib_per_round, rounds=17, start=20000):
    return [start + kib_per_round * i for i in range(rounds)]


def test_growth_that_flattens_is_not_a_leak():
    assert not rss_growth(SOAK_1403)
    assert not rss_growth(SOAK_1629)


def test_a_steady_leak_fails_as_soon_as_the_old_bound_did():
    assert rss_growth(steady_leak(56))
    assert rss_growth(steady_leak(65))
    assert not rss_growth(steady_leak(50))


def test_a_large_jump_fails_even_when_it_then_holds():
    assert rss_growth([20000, 20000, 23000] + [23000] * 14)


def test_too_few_rounds_to_judge():
    assert not rss_growth([20000, 30000])
