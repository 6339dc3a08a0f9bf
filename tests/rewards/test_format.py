import time

import pytest

import rewards
from rewards.format import (
    language_consistency_reward,
    repetition_penalty_reward,
    repetition_ratio,
    tag_count_reward,
    think_format_reward,
)


@pytest.mark.parametrize(
    "completion, expected",
    [
        (" <think> 2+2 is 4 </think> <answer> 4 </answer>", 1.0),  # leading space after "Assistant:"
        ("<think>\nstep\n</think>\n<answer>\n4\n</answer>\n", 1.0),  # newlines are whitespace
        ("<think></think><answer>4</answer>", 1.0),  # empty reasoning is allowed
        ("<think>a</think><answer>  </answer>", 0.0),  # blank answer
        ("<think>a</think> so <answer>4</answer>", 0.0),  # text between the blocks
        ("Sure! <think>a</think><answer>4</answer>", 0.0),  # text before
        ("<think>a</think><answer>4</answer> done", 0.0),  # text after
        ("<answer>4</answer><think>a</think>", 0.0),  # wrong order
        ("<think>a <think> b</think><answer>4</answer>", 0.0),  # <think> twice
        ("<think>a</think><answer>4</answer><answer>5</answer>", 0.0),  # answer twice
        ("<think>a</think>", 0.0),  # no answer
        ("4", 0.0),
        ("", 0.0),
        (None, 0.0),
    ],
)
def test_think_format(completion, expected):
    assert think_format_reward([completion]) == [expected]


def test_think_format_reads_chat_completions():
    chat = [{"role": "assistant", "content": "<think>a</think><answer>4</answer>"}]
    assert think_format_reward([chat]) == [1.0]


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>a</think><answer>4</answer>", 1.0),  # 4 of 4 tags once -> 1.0
        ("<think>a</think><answer>4", 0.75),  # 3 of 4 tags present once -> 0.75
        ("<think>a<think>b</think><answer>4</answer>", 0.75),  # <think> twice does not count -> 3 * 0.25
        ("<answer>4</answer>", 0.5),  # 2 of 4 -> 0.5
        ("4", 0.0),
        (None, 0.0),
    ],
)
def test_tag_count(completion, expected):
    assert tag_count_reward([completion]) == [expected]


def test_repetition_ratio_words():
    # bigrams: (a b) (b a) (a b) (b a) (a b) -> 5 in all, 2 distinct -> 1 - 2/5 = 0.6
    assert repetition_ratio("a b a b a b", 2) == pytest.approx(0.6)
    # words are lower-cased: "A" and "a" are the same word
    assert repetition_ratio("A b a b a b", 2) == pytest.approx(0.6)


def test_repetition_ratio_token_ids():
    assert repetition_ratio([7, 8, 7, 8, 7, 8], 2) == pytest.approx(0.6)  # as above
    assert repetition_ratio([1, 2, 3, 4], 2) == 0.0  # 3 distinct bigrams of 3


def test_repetition_ratio_short_input():
    assert repetition_ratio("a b", 3) == 0.0  # no trigram at all
    assert repetition_ratio([], 3) == 0.0


def test_repetition_ratio_rejects_bad_n():
    with pytest.raises(ValueError, match="n-gram size n must be >= 1, got 0"):
        repetition_ratio("a b", 0)


def test_repetition_penalty_scales_to_max_penalty():
    completions = ["a b a b a b", "the cat sat on the mat", "", None]
    assert repetition_penalty_reward(completions, ngram_size=2, max_penalty=-0.5) == pytest.approx(
        [
            -0.3,  # -0.5 * 0.6
            0.0,  # 5 bigrams, all distinct ("the cat" vs "the mat")
            0.0,
            0.0,
        ]
    )


def test_repetition_penalty_rejects_positive_max():
    with pytest.raises(ValueError, match="max_penalty must be <= 0"):
        repetition_penalty_reward(["a"], max_penalty=1.0)


def test_language_consistency():
    completion = "<think>Let x = 3, 所以 answer</think><answer>3</answer>"
    # words: Let, x, 所, 以, answer (digits and symbols skipped) -> 5
    assert language_consistency_reward([completion], language="en") == [pytest.approx(3 / 5)]
    assert language_consistency_reward([completion], language="zh") == [pytest.approx(2 / 5)]


def test_language_consistency_scope():
    assert language_consistency_reward(["no tags here, café"]) == [pytest.approx(3 / 4)]  # "café" is not ASCII
    assert language_consistency_reward(["<think>truncated 思"]) == [pytest.approx(1 / 2)]  # unclosed: rest of text
    assert language_consistency_reward(["<think>ok</think><answer>答案</answer>"]) == [1.0]  # answer not judged


def test_language_consistency_does_not_apply_without_words():
    assert language_consistency_reward(["<think>3 + 4 = 7</think>", "", None]) == [None, None, None]


def test_language_consistency_rejects_unknown_language():
    with pytest.raises(ValueError, match="unsupported language 'fr'; supported: en, zh"):
        language_consistency_reward(["x"], language="fr")


def test_registered_names():
    assert rewards.get("think_format") is think_format_reward
    assert rewards.get("tag_count") is tag_count_reward
    assert rewards.get("repetition") is repetition_penalty_reward
    assert rewards.get("language_consistency") is language_consistency_reward


ADVERSARIAL = {
    "open tags": "<think>" * 30_000,
    "closing tags": "</think><answer>" * 12_500,
    "unclosed think": "<think>" + "a " * 100_000,
    "whitespace then text": " " * 200_000 + "x",
    "almost a format": "<think>" + " " * 200_000 + "</think><answer>",
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_200kb_adversarial_text_is_fast(name):
    text = ADVERSARIAL[name]
    assert len(text) >= 200_000
    start = time.perf_counter()
    for reward in (think_format_reward, tag_count_reward, repetition_penalty_reward, language_consistency_reward):
        reward([text])
    # Linear work on 200 kB is milliseconds; backtracking regexes take minutes.
    assert time.perf_counter() - start < 1.0
