"""Supervised examples: completion-only loss masks on real token ids, formats, length limits, tokenizers."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from rlkit.sft.data import (SFTDataError, batches_after, check_lengths, check_same_tokenizer, collate,
                            length_bucketed_batches, load_sft_rows, tokenize_examples, tokenizer_differences)
from rlkit.templates import apply_template

ROOT = Path(__file__).resolve().parents[2]
TINY_MOE = str(ROOT / "data" / "models" / "tiny-moe")


@pytest.fixture(scope="module")
def tok():
    from rlkit.models import load_tokenizer

    return load_tokenizer(TINY_MOE)


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_prompt_tokens_carry_no_loss_checked_on_token_ids(tok):
    rows = [{"prompt": "What is 47 + 38?", "completion": "<think> Quick guess : 75 </think> <answer> 75 </answer>"},
            {"prompt": "What is 5 + 6?", "completion": "<answer> 11 </answer>"}]
    examples = tokenize_examples(rows, tok, fmt="prompt_completion", template="r1_zero")
    batch = collate(examples, tok.pad_token_id)
    for i, row in enumerate(rows):
        prompt_ids = tok(apply_template("r1_zero", row["prompt"]), add_special_tokens=False)["input_ids"]
        completion_ids = tok(row["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        targets = batch.input_ids[i, 1:]  # position t scores token t+1
        scored = targets[batch.loss_mask[i] == 1].tolist()
        assert scored == completion_ids  # exactly the completion and its EOS, in order
        assert batch.input_ids[i, : len(prompt_ids)].tolist() == prompt_ids
        # no prompt token is ever a target with loss, and padding carries none either
        assert batch.loss_mask[i, : len(prompt_ids) - 1].sum() == 0
        assert batch.loss_mask[i, len(prompt_ids) + len(completion_ids) - 1 :].sum() == 0
    assert batch.loss_mask.shape == (2, batch.input_ids.shape[1] - 1)


def test_chat_messages_without_chat_template_use_the_prompt_template(tok):
    rows = [{"messages": [{"role": "user", "content": "What is 1 + 2?"},
                          {"role": "assistant", "content": "<answer> 3 </answer>"}]}]
    (ex,) = tokenize_examples(rows, tok, fmt="messages", template="r1_zero")
    same = tokenize_examples([{"prompt": "What is 1 + 2?", "completion": "<answer> 3 </answer>"}], tok,
                             fmt="prompt_completion", template="r1_zero")[0]
    assert ex.input_ids == same.input_ids and ex.prompt_len == same.prompt_len
    two_turns = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                               {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}]
    with pytest.raises(SFTDataError, match="no chat template"):
        tokenize_examples(two_turns, tok, fmt="messages")
    with pytest.raises(SFTDataError, match="last message must be the assistant"):
        tokenize_examples([{"messages": [{"role": "user", "content": "a"}]}], tok, fmt="messages")


def test_chat_template_prompt_is_masked(tok):
    from transformers import AutoTokenizer

    chat_tok = AutoTokenizer.from_pretrained(TINY_MOE)
    chat_tok.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} . {% endfor %}"
                              "{% if add_generation_prompt %}assistant : {% endif %}")
    rows = [{"messages": [{"role": "user", "content": "What is 1 + 2?"},
                          {"role": "assistant", "content": "<answer> 3 </answer>"}]}]
    (ex,) = tokenize_examples(rows, chat_tok, fmt="messages")
    completion = ex.input_ids[ex.prompt_len:]
    assert chat_tok.decode(completion, skip_special_tokens=True).strip() == "<answer> 3 </answer> ."


def test_dataset_with_neither_layout_names_columns_and_rows(tmp_path):
    path = _write(tmp_path / "bad.jsonl", [{"question": "q", "response": "r"}] * 3)
    with pytest.raises(SFTDataError) as e:
        load_sft_rows(path)
    msg = str(e.value)
    assert "neither 'prompt'/'completion'" in msg and "'messages'" in msg and "3 rows" in msg
    assert "['question', 'response']" in msg
    rows, fmt = load_sft_rows(_write(tmp_path / "ok.jsonl", [{"messages": [{"role": "user", "content": "x"}]}]))
    assert fmt == "messages" and len(rows) == 1


def test_overlong_samples_are_refused_truncated_or_dropped(tok):
    rows = [{"prompt": "What is 1 + 2?", "completion": "<answer> 3 </answer>"},
            {"prompt": "What is 1 + 2?", "completion": " ".join(["Step"] * 40)},
            {"prompt": "What is 1 + 2?", "completion": " ".join(["Step"] * 50)}]
    examples = tokenize_examples(rows, tok, fmt="prompt_completion")
    short = len(examples[0].input_ids)
    with pytest.raises(SFTDataError, match=r"2 of 3 samples are longer than max_length=%d" % short):
        check_lengths(examples, short, "error")
    cut = check_lengths(examples, short, "truncate")
    assert cut.truncated == 2 and [len(e.input_ids) for e in cut.kept] == [short] * 3
    assert all(e.prompt_len == examples[0].prompt_len for e in cut.kept)  # prompts kept whole
    dropped = check_lengths(examples, short, "drop")
    assert dropped.dropped == 2 and len(dropped.kept) == 1
    with pytest.raises(SFTDataError, match="all 3 samples are longer"):
        check_lengths(examples, 10, "drop")


def test_batches_after_skips_exactly_the_batches_already_trained():
    def epoch_batches(epoch):  # two batches an epoch, named by epoch
        return [f"e{epoch}b0", f"e{epoch}b1"]

    first = batches_after(epoch_batches, skip=0)
    assert [next(first) for _ in range(5)] == ["e0b0", "e0b1", "e1b0", "e1b1", "e2b0"]
    resumed = batches_after(epoch_batches, skip=3)  # 3 steps done: the rest of epoch 1 comes next
    assert [next(resumed) for _ in range(2)] == ["e1b1", "e2b0"]
    with pytest.raises(ValueError, match="epoch 0 has no batches"):
        next(batches_after(lambda epoch: [], skip=0))


def test_length_buckets_cover_every_example_once():
    lengths = [random.Random(i).randint(10, 200) for i in range(300)]
    batches = length_bucketed_batches(lengths, 16, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(300))
    spread = [max(lengths[i] for i in b) // 16 - min(lengths[i] for i in b) // 16 for b in batches if len(b) == 16]
    assert sum(spread) / len(spread) < 2  # similar lengths together
    assert all(len(b) == 16 for b in length_bucketed_batches(lengths, 16, random.Random(0), drop_last=True))


def test_different_tokenizers_name_the_tokens_that_differ(random_tiny_model):
    assert tokenizer_differences({"a": 0, "b": 1}, {"a": 0, "b": 1}) == []
    assert tokenizer_differences({"a": 0, "b": 1, "c": 2}, {"a": 0, "b": 2}) == ["'b': id 1 vs id 2",
                                                                                  "'c': id 2 vs missing"]
    check_same_tokenizer(TINY_MOE, TINY_MOE)
    with pytest.raises(SFTDataError) as e:
        check_same_tokenizer(TINY_MOE, random_tiny_model)
    msg = str(e.value)
    assert "different tokenizers" in msg and "tokens differ" in msg and "id " in msg


def test_cold_start_rows_render_the_task_habits_in_their_shares(tmp_path):
    from rlkit.sft.config import ColdStartConfig
    from rlkit.sft.data import cold_start_rows
    from rlkit.tasks import arithmetic

    prompts = _write(tmp_path / "p.jsonl", [{"prompt": f"What is {a} + {b}?", "answer": str(a + b)}
                                            for a in range(10, 60) for b in range(40, 50)])
    cfg = ColdStartConfig(prompts=prompts, samples=400, kinds={"careful": 0.75, "concise": 0.25})
    path = cold_start_rows(cfg, tmp_path / "cold.jsonl", seed=0)
    rows = [json.loads(line) for line in open(path)]
    assert len(rows) == 400 and len({r["prompt"] for r in rows}) == 400
    for r in rows:
        p = arithmetic.Problem.from_prompt(r["prompt"])
        assert r["answer"] == str(p.a + p.b)
        assert r["completion"] in (arithmetic.render_completion(p, "careful"), arithmetic.render_completion(p, "concise"))
    concise = sum(r["completion"].startswith(arithmetic.CONCISE_OPENING) for r in rows)
    assert 60 <= concise <= 140  # 25% of 400 = 100, sd ~ 8.7
    assert cold_start_rows(ColdStartConfig(data="given.jsonl"), tmp_path / "x.jsonl") == "given.jsonl"
