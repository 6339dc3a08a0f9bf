"""rewards.math: answer extraction, equivalence under each policy, the hard
time bound, and the TRL-style reward. Each expected value has its reason
beside it."""

from __future__ import annotations

import threading
import time

import pytest

from rewards import math as rmath
from rewards._timeout import KillablePool
from rewards.math import accuracy_reward, extract_answer, is_equivalent


@pytest.fixture(scope="module", autouse=True)
def warm_workers():
    # The first check that needs sympy starts the worker processes (~1-2 s);
    # pay that once here so the timing assertions below measure checks only.
    assert is_equivalent("(x+1)^2", "x^2+2x+1")
    yield


# ---------------------------------------------------------------- extraction

@pytest.mark.parametrize("text, expected", [
    ("so $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),  # nested braces kept whole
    ("first \\boxed{3}, then after checking \\boxed{4}.", "4"),  # two separate boxes: the last
    ("\\boxed{1} and \\boxed{2}", "1, 2"),  # boxes joined by "and" answer together
    ("\\fbox{7}", "7"),
    ("<think>2+2</think> <answer> 4 </answer>", "4"),  # answer tag, stripped
    ("We get 12 apples. The answer is 12. Done.", "12"),  # up to the end of the sentence
    ("THE ANSWER IS $3.5$ cm. Next", "$3.5$ cm"),  # case-insensitive; "3.5" is not a sentence end
    ("no answer in here", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_prefers_box_over_tag_and_phrase():
    text = "The answer is 5. <answer>6</answer> \\boxed{7}"
    assert extract_answer(text) == "7"  # order: \boxed, then <answer>, then "the answer is"


# ---------------------------------------------------------------- equivalence, defaults

@pytest.mark.parametrize("gold, pred", [
    ("\\frac{1}{2}", "0.5"),  # 1/2 = 0.5 exactly
    ("\\frac{10}{9}", "10/9"),  # \frac and / spell the same fraction
    ("\\dfrac{3}{4}", "\\frac34"),  # \dfrac and the brace-less \frac34 are both 3/4
    ("1000", "1,000"),  # thousands separator
    ("918\\frac{1}{2}", "918.5"),  # mixed number 918 + 1/2
    ("0.33", "\\frac{1}{3}"),  # a decimal gold stands for [0.325, 0.335]; 1/3 = 0.3333.. is in it
    ("(x+1)^2", "x^2+2x+1"),  # (x+1)^2 expands to x^2 + 2x + 1
    ("\\tan^2(y)+1", "\\sec^2(y)"),  # trig identity
    ("[0, 1)", "[0,1)"),  # same half-open interval
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}"),  # sets have no order
    ("x = 5", "5"),  # an assignment's value
    ("2x+4y-3=0", "y=-\\frac{1}{2}x+\\frac{3}{4}"),  # same line: (2x+4y-3) = 4*(y + x/2 - 3/4)
    ("-2 \\le x \\le 7", "[-2, 7]"),  # a relation equals its solution set (set_relation=True)
    ("1 \\pm \\sqrt{2}", "\\{1-\\sqrt{2}, 1+\\sqrt{2}\\}"),  # ± stands for both roots
    ("15\\text{ cm}^2", "15"),  # units are ignored by default
    ("90^\\circ", "90"),  # so are degrees
    ("\\text{Evelyn}", "evelyn"),  # words compare case-insensitively
])
def test_equivalent(gold, pred):
    assert is_equivalent(gold, pred)


@pytest.mark.parametrize("gold, pred", [
    ("\\frac{1}{2}", "0.6"),  # 0.5 != 0.6
    ("5", "5.001"),  # 5.001 rounds to 5.001, not 5.000
    ("\\frac{1}{3}", "0.3"),  # an exact gold: 0.3 is not 1/3
    ("\\frac{1}{3}", "0.33"),  # nor is 0.33 (an approximation of an exact gold)
    ("x^2+2x+1", "x^3+2x+1"),  # differ at x = 2: 9 vs 13
    ("[0, 1)", "[0, 1]"),  # closed vs open at 1
    ("(3, 1)", "1, 3"),  # a tuple is ordered
    ("\\sqrt{67}, -\\sqrt{85}", "\\sqrt{67}"),  # one of two answers is missing
    ("2x + z = 1", "1"),  # a genuine equation is not its right-hand side
    ("12:00", "1:00"),  # clock times, not ratios (x:00 would be division by 0)
    ("\\pm 2021", "2021"),  # ± means both values
])
def test_not_equivalent(gold, pred):
    assert not is_equivalent(gold, pred)


def test_sides_may_be_whole_solutions():
    gold = "Solving for $x$ yields $x=1/5$, or $\\boxed{20}$ percent."
    pred = "... so the share is $\\frac{1}{5}$. Final Answer: The final answer is $20\\%$. I hope it is correct."
    assert is_equivalent(gold, pred)  # 20 and 20% (percent sign dropped, default "fraction")


# ---------------------------------------------------------------- policies

def test_percent_policy_both_ways():
    # "fraction" (default): 10% is 10/100 = 0.1; the sign may also be dropped (10 matches)
    assert is_equivalent("10\\%", "0.1")
    assert is_equivalent("10\\%", "10")
    # "number": the sign is a label, 10% is 10 and not 0.1
    assert is_equivalent("10\\%", "10", percent="number")
    assert not is_equivalent("10\\%", "0.1", percent="number")
    # "strict": 10% is 0.1 only
    assert is_equivalent("10\\%", "0.1", percent="strict")
    assert not is_equivalent("10\\%", "10", percent="strict")


def test_ordered_lists_policy():
    assert is_equivalent("10, 4, -2", "4, 10, -2")  # default: a bare list is a set
    assert not is_equivalent("10, 4, -2", "4, 10, -2", ordered_lists=True)  # first items 10 != 4
    assert is_equivalent("10, 4, -2", "10, 4, -2", ordered_lists=True)


def test_units_policy():
    assert is_equivalent("125 \\text{ miles}", "125")  # default: units ignored
    assert not is_equivalent("125 \\text{ miles}", "125", units=False)  # "miles" vs no unit
    assert is_equivalent("125 \\text{ miles}", "125 miles", units=False)


def test_float_rounding_policy():
    # Math-Verify's convention: both rounded to k places. 1/3 -> 0.3333 at k=4; 0.3333 -> 0.3333
    assert is_equivalent("\\frac{1}{3}", "0.3333", float_rounding=4)
    # at k=6: 1/3 -> 0.333333, 0.3333 -> 0.333300: differ
    assert not is_equivalent("\\frac{1}{3}", "0.3333", float_rounding=6)
    assert not is_equivalent("\\frac{1}{3}", "0.3333")  # default: an exact gold takes no approximation


def test_precision_caps_the_digits_a_decimal_gold_demands():
    # gold gives 15 significant digits; precision=6 asks for 6: tolerance 0.5e-5, |pi - 3.141593| = 3.5e-7
    assert is_equivalent("3.14159265358979", "3.141593")
    # precision=10: tolerance 0.5e-9, and 3.5e-7 is past it
    assert not is_equivalent("3.14159265358979", "3.141593", precision=10)


def test_strict_and_set_relation_policies():
    assert not is_equivalent("f(x)", "f(y)")  # strict (default): different variables
    assert is_equivalent("f(x)", "f(y)", strict=False)  # equal up to renaming y -> x
    assert not is_equivalent("-2 \\le x \\le 7", "[-2, 7]", set_relation=False)


def test_unknown_policy_flag_is_named():
    with pytest.raises(TypeError, match="'ordered'"):
        is_equivalent("1", "1", ordered=True)
    with pytest.raises(ValueError, match="percent"):
        is_equivalent("1", "1", percent="ratio")


# ---------------------------------------------------------------- time bound

PATHOLOGICAL = [
    ("2^{2^{2^{2^{2^2}}}}", "2^{2^{2^{2^{2^3}}}}"),  # a tower: never evaluated
    ("1000000!", "1000001!"),
    ("e^{e^{e^{e^{e}}}}", "e^{e^{e^{e^{e+1}}}}"),
    ("\\sqrt{" * 200 + "2" + "}" * 200, "1"),  # nested past the parser's depth limit
]


@pytest.mark.parametrize("gold, pred", PATHOLOGICAL)
def test_pathological_inputs_come_back_false_fast(gold, pred):
    start = time.monotonic()
    assert not is_equivalent(gold, pred)
    assert time.monotonic() - start < 3.0


def test_deadline_holds_in_a_thread():
    # An integral probed at random points takes well over 50 ms in sympy.
    rmath.reset_stats()
    result = {}

    def check():
        start = time.monotonic()
        result["equal"] = is_equivalent("\\int_0^x e^{-t^2} dt", "\\frac{\\sqrt{\\pi}}{2}\\operatorname{erf}(x)",
                                        timeout_s=0.05)
        result["took"] = time.monotonic() - start

    worker = threading.Thread(target=check)
    worker.start()
    worker.join(10)
    assert result["equal"] is False  # past the deadline counts as not equal
    assert result["took"] < 3.0
    assert rmath.stats()["timeouts"] == 1
    # the killed worker was replaced (a generous deadline: this checks the replacement, not speed)
    assert is_equivalent("(x+1)^2", "x^2+2x+1", timeout_s=30)


def test_pool_kills_a_job_past_its_deadline_from_a_thread():
    pool = KillablePool(size=1)
    outcomes = []
    worker = threading.Thread(target=lambda: outcomes.extend(
        pool.run(time.sleep, [(30,), (0,)], timeout_s=0.5)))
    start = time.monotonic()
    worker.start()
    worker.join(30)
    took = time.monotonic() - start
    pool.close()
    assert outcomes[0].timed_out and not outcomes[0].ok  # sleep(30) cut at 0.5 s
    assert outcomes[1].ok and outcomes[1].value is None  # sleep(0) returns None, on the replacement
    assert pool.kills == 1
    assert took < 10  # 0.5 s deadline + starting two workers, not 30 s


# ---------------------------------------------------------------- reward

def test_accuracy_reward():
    completions = [
        "so it is \\boxed{\\frac{1}{2}}",  # 1/2 == 0.5 -> 1.0
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<answer>0.4</answer>"}],  # 0.4 != 0.5
        "I am not sure.",  # marks no answer -> 0.0
        "\\boxed{7}",  # gold missing -> None
        "\\boxed{7}",  # empty gold -> None
    ]
    answers = ["0.5", "\\boxed{0.5}", "0.5", None, "  "]
    assert accuracy_reward(completions, answers, prompts=["p"] * 5) == [1.0, 0.0, 0.0, None, None]


def test_accuracy_reward_passes_policy_flags():
    assert accuracy_reward(["\\boxed{10}"], ["10\\%"], percent="strict") == [0.0]  # 10 != 0.1
    assert accuracy_reward(["\\boxed{10}"], ["10\\%"], percent="number") == [1.0]


def test_accuracy_reward_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        accuracy_reward(["a", "b"], ["1"])
