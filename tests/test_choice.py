"""The one chooser (judge/choice.py) on scripted situations: each of the four
rules deciding, the cause (who grew), and the case where nothing is enough."""
from dataclasses import dataclass

from oorkiller.judge.choice import Candidate, choose, work_of


@dataclass
class P:
    pid: int
    comm: bytes = b"p"


def cand(pid, score, enough=True, work=0.0, growth=0, adjust=0, members=()):
    return Candidate(proc=P(pid, f"p{pid}".encode()), score=score, share=score - adjust,
                     adjust=adjust, enough=enough, work=work, growth=growth,
                     members=frozenset(members), processes=max(len(members), 1))


def test_rule1_of_two_equally_large_the_one_with_less_work_goes():
    veteran, newcomer = cand(1, 500, work=work_of(9000, 86400)), cand(2, 495, work=work_of(50, 3))
    choice = choose([veteran, newcomer])
    assert choice.chosen is newcomer and "least work" in choice.why
    assert choice.runner_up is veteran and choice.runner_up_text == "1/p1"


def test_rule1_work_counts_a_long_life_as_well_as_cpu_time():
    idle_service = work_of(cpu_ticks=10, age_seconds=7 * 86400)
    busy_youngster = work_of(cpu_ticks=3000, age_seconds=40)
    assert idle_service > busy_youngster


def test_rule2_the_larger_recovers_more():
    small, large = cand(1, 300), cand(2, 900)
    choice = choose([small, large])
    assert choice.chosen is large and choice.why.endswith("largest")


def test_rule3_one_kill_that_is_enough_beats_a_larger_one_that_is_not():
    preferred, sufficient = cand(1, 900, enough=False), cand(2, 300)
    choice = choose([preferred, sufficient])
    assert choice.chosen is sufficient and choice.why.startswith("alone enough (1 of 2)")


def test_rule3_a_group_enough_through_one_member_adds_loss_and_is_left_out():
    member = cand(1, 600, members=(1,))
    group = cand(1, 900, members=(1, 2, 3))
    assert choose([group, member]).chosen is member


def test_rule4_the_operators_adjust_decides_between_two_close_sizes():
    larger, expected = cand(1, 600), cand(2, 650, adjust=100)     # share 550, +100
    assert choose([larger, expected]).chosen is expected


def test_the_cause_a_grower_whose_kill_is_enough_goes_before_a_larger_steady_process():
    steady = cand(1, 700, work=work_of(100, 86400))
    grower = cand(2, 350, growth=340, work=work_of(200, 6))
    grower.growth_text = "grew 1.1GiB in 6s"
    choice = choose([steady, grower])
    assert choice.chosen is grower
    assert choice.why == "alone enough (2 of 2); grew 1.1GiB in 6s; grew the most"


def test_a_grower_the_operator_avoids_does_not_win_on_growth_alone():
    avoided = cand(1, 100, growth=300, adjust=-400)
    other = cand(2, 90, growth=120)
    assert choose([avoided, other]).chosen is other


def test_when_none_is_enough_the_largest_goes_first():
    choice = choose([cand(1, 300, enough=False), cand(2, 500, enough=False)])
    assert choice.chosen.pid == 2 and choice.why.startswith("none alone enough")


def test_no_candidate_no_choice():
    assert choose([]) is None


def test_a_candidate_the_operator_avoids_is_not_chosen_for_being_enough():
    avoided = cand(1, -450, adjust=-500)              # large, enough, but adjust -500
    hog = cand(2, 20, enough=False)
    assert choose([avoided, hog]).chosen is hog
