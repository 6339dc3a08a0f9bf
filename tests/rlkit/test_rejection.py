"""Rejection-sampling filters (each with a sample it must drop), selection rules, DPO pairs."""

from __future__ import annotations

import pytest

from rlkit.config import ConfigError, load
from rlkit.rejection import (FILTERS, Candidate, RejectionConfig, RejectionError, apply_filters, check_kept,
                             needed_rewards, preference_pairs, score_candidates, select)

GOOD = "<think> Step by step . ones 7 + 8 + 0 = 15 . </think> <answer> 85 </answer>"


def cand(problem=0, completion=GOOD, tokens=20, finish="stop", answer="85", **scores) -> Candidate:
    base = {"math_accuracy": 1.0, "think_format": 1.0, "language_consistency": 1.0}
    return Candidate(problem=problem, prompt=f"p{problem}", completion=completion, tokens=tokens,
                     finish_reason=finish, answer=answer, scores={**base, **scores})


def only(name: str, **kw) -> RejectionConfig:
    return RejectionConfig(filters=[name], **kw)


@pytest.mark.parametrize("name, bad", [
    ("correct", cand(math_accuracy=0.0)),
    ("correct", cand(math_accuracy=None)),  # the verifier could not judge it: not known to be correct
    ("format", cand(think_format=0.0)),
    ("language", cand(language_consistency=0.6)),  # 40% of the reasoning's words in another language
    ("length", cand(finish="length")),  # cut off at max_new_tokens
    ("length", cand(tokens=500)),  # over max_tokens
    ("no_code", cand(completion="<think> ```python\nprint(85)\n``` </think> <answer> 85 </answer>")),
])
def test_each_filter_drops_its_bad_case_and_keeps_a_good_one(name, bad):
    cfg = only(name, max_tokens=100, min_language_share=0.9)
    keep, dropped = apply_filters([cand(), bad], cfg, "math_accuracy")
    assert keep == [True, False] and dropped == {name: 1}


def test_language_filter_lets_a_reasoning_without_words_through():
    keep, _ = apply_filters([cand(language_consistency=None)], only("language"), "math_accuracy")
    assert keep == [True]


def test_duplicate_filter_keeps_the_first_of_a_prompts_repeats_only():
    cands = [cand(0), cand(0, completion=GOOD + " "), cand(1), cand(0, completion="<answer> 85 </answer>")]
    keep, dropped = apply_filters(cands, only("duplicate"), "math_accuracy")
    assert keep == [True, False, True, True] and dropped == {"duplicate": 1}  # same text for another prompt is kept


def test_filters_count_each_drop_once_in_order():
    cands = [cand(math_accuracy=0.0, think_format=0.0), cand(think_format=0.0), cand()]
    keep, dropped = apply_filters(cands, RejectionConfig(filters=["correct", "format"]), "math_accuracy")
    assert keep == [False, False, True] and dropped == {"correct": 1, "format": 1}


def test_selection_rules():
    cands = [cand(0, tokens=30), cand(0, tokens=10), cand(0, tokens=20), cand(1, tokens=5), cand(1, tokens=50)]
    keep = [True, True, True, True, False]
    assert select(cands, keep, "all", 1) == [0, 1, 2, 3]
    assert select(cands, keep, "up_to_k", 2) == [0, 1, 3]
    assert select(cands, keep, "shortest", 1) == [1, 3]
    assert select(cands, keep, "shortest", 2) == [1, 2, 3]


def test_preference_pairs_shortest_correct_against_long_or_wrong():
    cands = [cand(0, tokens=56), cand(0, tokens=31), cand(0, tokens=40), cand(0, tokens=13, math_accuracy=0.0),
             cand(1, tokens=56), cand(1, tokens=50),  # 56 < 1.5 x 50: no length pair, no wrong one
             cand(2, tokens=9, math_accuracy=0.0)]  # nothing kept: no pair
    keep, _ = apply_filters(cands, RejectionConfig(filters=["correct"]), "math_accuracy")
    pairs = preference_pairs(cands, keep, "math_accuracy", length_ratio=1.5)
    assert pairs == [(1, 0), (1, 3)]  # 56 >= 1.5 x 31 = 46.5; and the wrong one


def test_nothing_kept_is_an_error_naming_the_counts():
    with pytest.raises(RejectionError, match=r"kept 0 of 16 samples \(2 prompts\); dropped by: correct 12, format 4"):
        check_kept(0, 16, 2, {"correct": 12, "format": 4})
    check_kept(1, 16, 2, {"correct": 15})


def test_scores_come_from_the_reward_functions():
    cands = [cand(completion=GOOD, answer="85"), cand(completion="<think> x </think> <answer> 84 </answer>",
                                                     answer="85"), cand(completion="85", answer="85")]
    for c in cands:
        c.scores = {}
    cfg = RejectionConfig()
    names = needed_rewards(cfg, "math_accuracy")
    assert names == ["math_accuracy", "think_format", "language_consistency"]
    score_candidates(cands, {"answer": ["85"] * 3, "prompts": ["p"] * 3}, names, cfg)
    assert [c.scores["math_accuracy"] for c in cands] == [1.0, 0.0, 0.0]
    assert [c.scores["think_format"] for c in cands] == [1.0, 1.0, 0.0]
    keep, dropped = apply_filters(cands, cfg, "math_accuracy")
    assert keep == [True, False, False] and dropped["correct"] == 2


def test_unknown_filter_or_rule_is_a_config_error():
    from dataclasses import dataclass, field

    @dataclass
    class Holder:
        rejection: RejectionConfig = field(default_factory=RejectionConfig)

    with pytest.raises(ConfigError, match="unknown rejection filter 'corect'"):
        load(Holder, None, ["rejection.filters=[corect]"])
    with pytest.raises(ConfigError, match="unknown selection rule 'longest'"):
        load(Holder, None, ["rejection.selection=longest"])
    assert set(FILTERS.names()) >= {"correct", "format", "language", "length", "no_code", "duplicate"}
