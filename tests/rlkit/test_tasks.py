"""The arithmetic problem generator, its chain-of-thought renderings and the tiny tokenizer."""

import random

import pytest

from rlkit.tasks import arithmetic
from rlkit.tasks.arithmetic import Problem, make_splits, no_carry_sum, render_completion
from rlkit.tasks.tokenizer import TAGS, build_tokenizer
from rlkit.templates import apply_template


def test_problem_row_is_prompt_answer_difficulty():
    # 47 + 38: 7 + 8 = 15 carries, 4 + 3 + 1 = 8 does not -> one carry.
    assert Problem(47, 38).row() == {"prompt": "What is 47 + 38?", "answer": "85", "difficulty": 1}
    # 999 + 1: three carries (9+1, 9+0+1, 9+0+1), and the answer grows a digit.
    assert Problem(999, 1).row()["difficulty"] == 3
    assert Problem(999, 1).answer == "1000"


def test_careful_thought_of_47_plus_38_by_hand():
    # Operands padded to 047 and 038. Ones: 7 + 8 + 0 = 15 (write 5, carry 1).
    # Tens: 4 + 3 + 1 = 08 (write 8, carry 0). Hundreds: 0 + 0 + 0 = 00. Result 0 0 8 5 -> 85.
    thought = ("047 + 038 . ones 7 + 8 + 0 = 15 . tens 4 + 3 + 1 = 08 . hundreds 0 + 0 + 0 = 00 . "
               "Result 0085 .")
    assert arithmetic.careful_thought(Problem(47, 38)) == thought
    # the careful habit puts a plan before it and a check after it; the concise one writes it bare
    assert render_completion(Problem(47, 38), "careful") == (
        "<think> Step by step . I write both numbers with three digits and add the columns from the ones up . "
        f"{thought} Check : each column adds up , so the answer is the result without leading zeros . "
        "</think> <answer> 85 </answer>"
    )
    assert render_completion(Problem(47, 38), "concise") == (
        f"<think> In short . {thought} </think> <answer> 85 </answer>")


def test_careful_thought_carries_into_a_fourth_digit():
    # 999 + 999: 9+9+0 = 18, 9+9+1 = 19, 9+9+1 = 19 -> 19 9 8 = 1998.
    assert arithmetic.careful_thought(Problem(999, 999)) == (
        "999 + 999 . ones 9 + 9 + 0 = 18 . tens 9 + 9 + 1 = 19 . hundreds 9 + 9 + 1 = 19 . Result 1998 ."
    )
    assert render_completion(Problem(999, 999), "concise").endswith("Result 1998 . </think> <answer> 1998 </answer>")
    # 50 + 385 pads the shorter operand: hundreds 0 + 3 + 1 = 04.
    assert "050 + 385 . ones 0 + 5 + 0 = 05 . tens 5 + 8 + 0 = 13 . hundreds 0 + 3 + 1 = 04 ." in (
        render_completion(Problem(50, 385), "careful"))


def test_careful_lines_all_have_the_same_length():
    rng = random.Random(0)
    for _ in range(200):
        thought = arithmetic.careful_thought(arithmetic.sample_problem(rng))
        lines = thought.removesuffix(" .").split(" . ")
        # three column lines "ones 7 + 8 + 0 = 15", then "Result 0085"
        assert [len(line.split()) for line in lines[1:]] == [8, 8, 8, 2]


@pytest.mark.parametrize("seed", [0, 1])
def test_careful_procedure_is_right_for_random_problems(seed):
    """Read the answer back from the rendered lines: hundreds total, then tens and ones digits."""
    rng = random.Random(seed)
    for _ in range(500):
        p = arithmetic.sample_problem(rng)
        lines = arithmetic.careful_thought(p).removesuffix(" .").split(" . ")[1:]
        *terms, result = [line.split() for line in lines]  # name x + y + c = tt, then Result dddd
        carry = 0
        for name, x, _, y, _, c, _, tt in terms:
            assert int(c) == carry and int(tt) == int(x) + int(y) + int(c)
            carry = int(tt) // 10
        ones, tens, hundreds = (t[-1] for t in terms)
        assert int(hundreds + tens[1] + ones[1]) == p.a + p.b
        assert result == ["Result", hundreds + tens[1] + ones[1]]
        assert p.answer == str(p.a + p.b)


def test_sloppy_guess_forgets_carries():
    assert no_carry_sum(47, 38) == 75  # 7+8 -> 5, 4+3 -> 7
    assert no_carry_sum(12, 34) == 46  # no carry: the guess is right
    assert no_carry_sum(999, 999) == 888
    assert render_completion(Problem(47, 38), "sloppy") == "<think> Quick guess : 75 </think> <answer> 75 </answer>"


def test_broken_completions_mark_no_answer():
    rng = random.Random(0)
    seen = {render_completion(Problem(47, 38), "broken", rng) for _ in range(20)}
    assert seen == {"<think> Quick guess : 75 </think> 75", "Quick guess : 75"}
    assert all("<answer>" not in s and "answer is" not in s.lower() for s in seen)


def test_operands_have_two_or_three_digits():
    rng = random.Random(0)
    ps = [arithmetic.sample_problem(rng) for _ in range(2000)]
    assert all(10 <= x <= 999 for p in ps for x in (p.a, p.b))
    assert {len(str(p.a)) for p in ps} == {2, 3}


def test_splits_are_deterministic_and_disjoint():
    a = make_splits(seed=7, n_test=50, n_train=200, n_corpus=1000)
    b = make_splits(seed=7, n_test=50, n_train=200, n_corpus=1000)
    assert a == b
    assert make_splits(seed=8, n_test=50, n_train=200, n_corpus=1000).test != a.test
    test, train, corpus = set(a.test), set(a.train), set(a.corpus)
    assert (len(test), len(train), len(corpus)) == (50, 200, 1000)  # no duplicates within a split
    assert not test & train and not test & corpus and not train & corpus


def test_test_split_does_not_depend_on_the_other_sizes():
    assert make_splits(3, 40, 10, 10).test == make_splits(3, 40, 500, 2000).test


def test_corpus_shares_are_roughly_respected():
    problems = make_splits(0, 0, 0, 4000).corpus
    shares = {"careful": 0.3, "sloppy": 0.6, "broken": 0.1}
    kinds = [k for _, k, _ in arithmetic.corpus_completions(problems, 0, shares)]
    # 4000 draws: the standard deviation of a 0.3 share is sqrt(0.3*0.7/4000) ~ 0.007.
    assert abs(kinds.count("careful") / 4000 - 0.3) < 0.03
    assert abs(kinds.count("broken") / 4000 - 0.1) < 0.03
    with pytest.raises(ValueError, match="unknown completion kinds"):
        next(arithmetic.corpus_completions(problems, 0, {"carefull": 1.0}))


def test_jsonl_round_trip(tmp_path):
    ps = [Problem(47, 38), Problem(120, 999)]
    arithmetic.write_jsonl(ps, tmp_path / "x.jsonl")
    assert arithmetic.read_jsonl(tmp_path / "x.jsonl") == [
        {"prompt": "What is 47 + 38?", "answer": "85", "difficulty": 1},
        {"prompt": "What is 120 + 999?", "answer": "1119", "difficulty": 2},  # 0+9 no; 2+9, 1+9+1 carry
    ]


@pytest.fixture(scope="module")
def tok():
    rng = random.Random(0)
    texts = [apply_template("r1_zero", "What is 1 + 2?")]
    texts += [render_completion(Problem(47, 38), k, rng) for k in arithmetic.COMPLETION_KINDS]
    return build_tokenizer(texts)


def test_tokenizer_digits_and_tags_are_single_tokens(tok):
    assert tok.convert_ids_to_tokens(tok("47 + 385")["input_ids"]) == ["4", "##7", "+", "3", "##8", "##5"]
    for tag in TAGS:
        assert len(tok(tag)["input_ids"]) == 1


def test_tokenizer_decodes_numbers_without_inner_spaces(tok):
    ids = tok("<answer> 85 </answer>")["input_ids"]
    assert len(ids) == 4  # <answer> 8 ##5 </answer>
    assert tok.decode(ids) == "<answer> 85 </answer>"
    # skip_special_tokens drops EOS/pad, never the reasoning tags.
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == "<answer> 85 </answer>"


def test_tokenizer_round_trips_a_corpus_text(tok):
    text = render_completion(Problem(47, 38), "careful")
    assert tok.decode(tok(text)["input_ids"]) == text


def test_tokenizer_ids_do_not_depend_on_text_order(tok):
    rng = random.Random(0)
    texts = [apply_template("r1_zero", "What is 1 + 2?")]
    texts += [render_completion(Problem(47, 38), k, rng) for k in arithmetic.COMPLETION_KINDS]
    again = build_tokenizer(texts[::-1] + texts)  # reversed, and every text twice
    assert again.get_vocab() == tok.get_vocab()
    assert again.convert_tokens_to_ids(["<pad>", "</s>", "<think>", "0", "##0"]) == [0, 1, 3, 7, 17]
