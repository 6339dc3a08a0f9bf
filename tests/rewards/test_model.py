"""rewards.model: a reward from a sequence-classification reward model. A tiny random reward
model is made here (1-layer Llama, one label) with the shipped base's tokenizer; the in-process
scorer is checked against one plain forward per text, the Ray-actor reward against the
in-process scorer, and a reward model plus a rule reward are combined in one real run of the
tiny R1-Zero recipe."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from rewards.model import RewardModelError, RewardModelScorer, check_reward_model, normalize_batch, reward_model

from ..conftest import two_step_run

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "data" / "models" / "tiny-moe"


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    out = tmp_path_factory.mktemp("tiny_rm")
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256, num_labels=1,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


PROMPTS = ["What is 12 + 30 ?", "What is 7 + 5 ?", "What is 100 + 1 ?"]
COMPLETIONS = ["<think> 12 + 30 = 42 </think> <answer> 42 </answer>", "<answer> 12 </answer>",
               "<think> Step by step . ones : 0 + 1 = 1 </think> <answer> 101 </answer>"]


def _plain_forward(path: str, texts: list[str]) -> list[float]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        return [model(**tok(t, return_tensors="pt")).logits[0, 0].item() for t in texts]  # one text, no padding


def test_batched_scores_equal_one_plain_forward_per_text(tiny_reward_model):
    scorer = RewardModelScorer(tiny_reward_model, batch_size=2)  # batches of 2 and 1, padded on the right
    got = scorer.score(PROMPTS, COMPLETIONS)
    want = _plain_forward(tiny_reward_model, [p + c for p, c in zip(PROMPTS, COMPLETIONS)])
    assert got == pytest.approx(want, abs=1e-5)
    assert len(set(round(v, 6) for v in got)) == 3  # a random model still tells the texts apart


def test_none_completion_scores_none(tiny_reward_model):
    scorer = RewardModelScorer(tiny_reward_model)
    assert scorer.score(["a", "b"], [None, "<answer> 1 </answer>"])[0] is None


def test_normalize_batch_by_hand():
    # [1, 2, 3]: mean 2, population std sqrt((1 + 0 + 1) / 3) = 0.81650; (1 - 2) / 0.81650 = -1.22474
    assert normalize_batch([1.0, 2.0, 3.0]) == pytest.approx([-1.22474, 0.0, 1.22474], abs=1e-5)
    assert normalize_batch([5.0, 5.0]) == [0.0, 0.0]  # no spread: nothing to prefer


def test_not_a_sequence_classifier_is_one_clear_error():
    # the shipped base is a causal LM: a reward model path it cannot be
    with pytest.raises(RewardModelError, match="not a sequence-classification model.*num_labels=1"):
        check_reward_model(str(TOKENIZER))
    with pytest.raises(RewardModelError, match="is not a directory"):
        reward_model("/nonexistent/rm")


def test_more_than_one_label_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"],
                                                      "id2label": {"0": "bad", "1": "good"}}))
    with pytest.raises(RewardModelError, match="2 labels"):
        check_reward_model(str(tmp_path))


def test_rewards_model_imports_without_ray_or_torch():
    code = "import sys, rewards.model; print(','.join(m for m in ('ray', 'torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""
    for path in (ROOT / "rewards").glob("*.py"):  # not even a lazy `import ray` line in the package
        assert "import ray" not in path.read_text(), path


def test_reward_model_in_a_ray_actor_matches_the_in_process_scorer(tiny_reward_model):
    import ray

    from rlkit.actors import init_ray

    init_ray(num_cpus=2)
    try:
        remote = reward_model(tiny_reward_model, name="rm", batch_size=2)
        got = remote(COMPLETIONS, prompts=PROMPTS, answer=["42", "12", "101"])
        want = RewardModelScorer(tiny_reward_model).score(PROMPTS, COMPLETIONS)
        assert got == pytest.approx(want, abs=1e-5)
        normalized = reward_model(tiny_reward_model, normalize=True)(COMPLETIONS, prompts=PROMPTS)
        assert sum(normalized) == pytest.approx(0.0, abs=1e-6)  # standardised: mean 0
        assert math.sqrt(sum(v * v for v in normalized) / 3) == pytest.approx(1.0, abs=1e-6)  # and std 1
        remote.close()
    finally:
        ray.shutdown()


def test_reward_model_and_rule_reward_in_one_run_of_the_tiny_recipe(tiny_reward_model, random_tiny_model,
                                                                    tiny_prompts, tmp_path, monkeypatch):
    import rewards.model
    from rlkit.cli import load_recipe
    from rlkit.config import load

    def refuse(*args, **kwargs):
        raise AssertionError("the driver loaded the reward model")

    # the driver must never load the weights: only the actor (another process) may
    monkeypatch.setattr(rewards.model.RewardModelScorer, "__init__", refuse)
    recipe = load_recipe("r1_zero")
    out = tmp_path / "run"
    cfg = load(recipe.Config, None, [
        *two_step_run(random_tiny_model, tiny_prompts, out),
        "reward.weights={think_format: 1.0, tag_count: 1.0, rm: 0.5}", "reward.accuracy=think_format",
        f"reward.models={{rm: {{path: {tiny_reward_model}, batch_size: 4}}}}"])
    recipe.main(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        # every reward applies to every sample, so the mean total is the weighted sum of the means
        expected = r["reward/think_format"] + r["reward/tag_count"] + 0.5 * r["reward/rm"]
        assert r["reward/mean"] == pytest.approx(expected, abs=1e-5)
        assert r["reward/rm"] != 0.0  # a random model's logits are not all zero
        assert r["reward/none/rm"] == 0.0
        assert "time/reward_s" in r


def test_a_config_naming_a_causal_lm_as_reward_model_stops_before_ray(random_tiny_model, tiny_prompts, tmp_path):
    import ray

    from rlkit.cli import load_recipe
    from rlkit.config import load

    recipe = load_recipe("r1_zero")
    cfg = load(recipe.Config, None, [
        f"model.path={random_tiny_model}", f"data.train={tiny_prompts}", "data.test=",
        f"output_dir={tmp_path}", "rollout.max_new_tokens=8", "reward.weights={think_format: 1.0, rm: 0.5}",
        "reward.accuracy=think_format",
        f"reward.models={{rm: {{path: {random_tiny_model}}}}}"])
    with pytest.raises(RewardModelError, match="not a sequence-classification model"):
        recipe.main(cfg)
    assert not ray.is_initialized()
