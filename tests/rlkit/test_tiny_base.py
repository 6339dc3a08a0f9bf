"""The shipped tiny MoE base (data/models/tiny-moe) and its data (data/tiny_math)."""

from pathlib import Path

import pytest
import torch

from rlkit.tasks import arithmetic
from rlkit.tasks.tokenizer import TAGS
from rlkit.templates import apply_template

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "data" / "models" / "tiny-moe"
DATA_DIR = ROOT / "data" / "tiny_math"


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()


def test_model_is_a_few_million_parameter_moe_with_top_k_routing(model):
    cfg = model.config
    assert cfg.model_type == "qwen3_moe"
    assert cfg.num_experts > 1 and 1 < cfg.num_experts_per_tok < cfg.num_experts
    assert 2e6 <= sum(p.numel() for p in model.parameters()) <= 6e6
    assert (MODEL_DIR / "model.safetensors").stat().st_size < 25e6


def test_router_logits_come_out_per_layer(model, tok):
    ids = tok("What is 47 + 38?", return_tensors="pt")["input_ids"]  # [1, T]
    with torch.no_grad():
        out = model(input_ids=ids, output_router_logits=True)
    assert len(out.router_logits) == model.config.num_hidden_layers
    assert out.router_logits[0].shape == (ids.shape[1], model.config.num_experts)  # [B*T, E]
    assert out.aux_loss is not None and torch.isfinite(out.aux_loss)


def test_special_tokens_and_generation_config(model, tok):
    assert tok.eos_token is not None and tok.pad_token is not None and tok.eos_token_id != tok.pad_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert model.config.vocab_size >= len(tok)


def test_template_is_compact_and_fits_with_a_completion(tok, model):
    n = len(tok(apply_template("r1_zero", "What is 999 + 999?"))["input_ids"])
    assert n <= 96
    assert n + 96 <= model.config.max_position_embeddings
    assert len(tok) < 1000
    # the longest habit, with a four-digit answer, fits the tiny configs' 96 new tokens with room
    longest = arithmetic.render_completion(arithmetic.Problem(999, 999), "careful")
    assert len(tok(longest)["input_ids"]) + 1 <= 92


def test_tags_are_single_tokens_and_answers_decode_whole(tok):
    for tag in TAGS:
        assert len(tok(tag)["input_ids"]) == 1
    ids = tok("<answer> 85 </answer>")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<answer>", "8", "##5", "</answer>"]
    text = tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True)
    assert text.split("<answer>")[1].split("</answer>")[0].strip() == "85"


def test_every_word_of_the_corpus_is_in_the_vocabulary(tok):
    p = arithmetic.Problem(47, 385)
    texts = [apply_template("r1_zero", p.prompt), arithmetic.render_completion(p, "careful"),
             arithmetic.render_completion(p, "concise"), arithmetic.render_completion(p, "sloppy")]
    for text in texts:
        assert tok.unk_token_id not in tok(text)["input_ids"]


@pytest.mark.parametrize("opening, then", [
    (arithmetic.CAREFUL_OPENING, arithmetic.CAREFUL_PLAN + " 047 + 038 ."),  # the plan, then the padded operands
    (arithmetic.CONCISE_OPENING, "047 + 038 . ones 7 + 8 + 0 = 15 ."),  # straight to the procedure
])
def test_each_opening_continues_with_its_procedure(model, tok, opening, then):
    """Greedy after a forced opening writes that habit's text (47 + 38)."""
    prompt = apply_template("r1_zero", "What is 47 + 38?") + " " + opening
    enc = tok(prompt, return_tensors="pt")
    n = len(tok(then)["input_ids"])
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n, do_sample=False)
    assert tok.decode(out[0, enc["input_ids"].shape[1]:]) == then


def test_shipped_splits_are_disjoint_and_correct():
    train = arithmetic.read_jsonl(DATA_DIR / "train.jsonl")
    test = arithmetic.read_jsonl(DATA_DIR / "test.jsonl")
    assert len(train) >= 2000 and 200 <= len(test) <= 300
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    for row in train[:200] + test:
        a, b = (int(x) for x in row["prompt"].removeprefix("What is ").removesuffix("?").split(" + "))
        assert row["answer"] == str(a + b)
        assert row["difficulty"] == arithmetic.Problem(a, b).difficulty
