"""rewards.judge: a generative judge's verdict as a reward. Parsing and templates by hand; then a
tiny Llama built so that its verdict is known from the text it is shown: every layer's output
projections are zero, so the last position's hidden state is the embedding of the prompt's last
token, and the head maps that token to a word: `3` -> "plus", `4` -> "minus", anything else ->
"so". Asked through the real engine in a Ray actor with verdicts {plus: 1, minus: 0}, it must score
a completion ending in 3 as 1, one ending in 4 as 0 and any other as None (no verdict)."""

from __future__ import annotations

import json

import pytest

from rewards.judge import (DEFAULT_TEMPLATE, JudgeError, check_judge_model, check_template, judge, parse_verdict,
                           render)

from ..conftest import WORDS, two_step_run

VERDICTS = {"plus": 1.0, "minus": 0.0}
TEMPLATE = "What is {prompt} ? the answer {answer} : {completion}"


def test_parse_verdict_takes_the_first_verdict_word_case_and_punctuation_ignored():
    yes_no = {"yes": 1.0, "no": 0.0}
    assert parse_verdict("Yes, it is.", yes_no) == 1.0
    assert parse_verdict(" no. (yes would be wrong)", yes_no) == 0.0  # the first one counts
    assert parse_verdict("I cannot tell", yes_no) is None  # no verdict: not a guess
    assert parse_verdict("nothing", yes_no) is None  # a word that merely starts with "no" is not "no"
    assert parse_verdict("B", {"A": 1.0, "B": 0.25}) == 0.25


def test_templates_name_only_known_fields_and_must_show_the_completion():
    check_template(DEFAULT_TEMPLATE)
    with pytest.raises(JudgeError, match=r"unknown field\(s\) \['response'\]"):
        check_template("{prompt} {response}")
    with pytest.raises(JudgeError, match="no {completion}"):
        check_template("{prompt} {answer}")
    with pytest.raises(JudgeError, match="not a valid format string"):
        check_template("{completion} {")
    assert render(TEMPLATE, "1 plus 2", "so 3", None) == "What is 1 plus 2 ? the answer  : so 3"


def test_a_reward_model_or_missing_path_is_not_a_judge(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"]}))
    with pytest.raises(JudgeError, match="not a causal language model.*kind: classifier"):
        check_judge_model(str(tmp_path))
    with pytest.raises(JudgeError, match="has no config.json"):
        check_judge_model(str(tmp_path / "nowhere"))


@pytest.fixture(scope="module")
def last_token_judge(tmp_path_factory):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from rlkit.models import save_random_tiny_model

    path = tmp_path_factory.mktemp("judge")
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False)
    save_random_tiny_model(path, WORDS, config=config)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = {w: i for i, w in enumerate(WORDS)}
    with torch.no_grad():
        for layer in model.model.layers:  # no layer adds anything to the residual stream
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        basis = torch.eye(16)
        model.model.embed_tokens.weight.copy_(basis[2].expand(len(WORDS), 16))  # any token -> "so"
        model.model.embed_tokens.weight[ids["3"]] = basis[0]
        model.model.embed_tokens.weight[ids["4"]] = basis[1]
        model.lm_head.weight.zero_()
        model.lm_head.weight[ids["plus"]] = 10 * basis[0]
        model.lm_head.weight[ids["minus"]] = 10 * basis[1]
        model.lm_head.weight[ids["so"]] = 10 * basis[2]
    model.save_pretrained(path)
    return str(path)


def test_the_judges_verdict_on_the_text_it_was_shown_is_the_reward(last_token_judge):
    import ray

    from rlkit.actors import init_ray

    init_ray(num_cpus=2)
    try:
        reward = judge(last_token_judge, name="judged", template=TEMPLATE, verdicts=VERDICTS, max_new_tokens=3)
        completions = ["so the answer is 3", "the answer is 4", "so 5", None]
        prompts = ["1 plus 2", "2 plus 2", "2 plus 3", "0 plus 0"]
        assert reward.replies([render(TEMPLATE, "1 plus 2", "is 3", "3")]) == ["plus so so"]
        scores = reward(completions, prompts=prompts, answer=["3", "4", "5", "0"])
        assert scores == [1.0, 0.0, None, None]  # 3 -> plus -> 1; 4 -> minus -> 0; no verdict; no completion
        reward.close()
    finally:
        ray.shutdown()


def test_a_judge_and_a_rule_reward_in_one_run_of_the_tiny_recipe(last_token_judge, random_tiny_model, tiny_prompts,
                                                                 tmp_path):
    from rlkit.cli import load_recipe
    from rlkit.config import load

    recipe = load_recipe("r1_zero")
    out = tmp_path / "run"
    cfg = load(recipe.Config, None, [
        *two_step_run(random_tiny_model, tiny_prompts, out),
        "reward.weights={think_format: 1.0, judged: 0.5}", "reward.accuracy=think_format",
        f"reward.models={{judged: {{kind: judge, path: {last_token_judge}, template: '{TEMPLATE}', "
        "verdicts: {plus: 1.0, minus: 0.0}, max_new_tokens: 2}}"])
    recipe.main(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        # the random policy's completions end in 3 or 4 rarely: the judge gives no verdict on most, and
        # those are counted, not scored
        assert 0.0 <= r["reward/none/judged"] <= 8.0
        assert "time/reward_s" in r and "reward/think_format" in r


def test_a_judge_config_naming_a_reward_model_stops_before_ray(tmp_path, random_tiny_model, tiny_prompts):
    import ray

    from rlkit.cli import load_recipe
    from rlkit.config import load

    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"]}))
    recipe = load_recipe("r1_zero")
    cfg = load(recipe.Config, None, [
        f"model.path={random_tiny_model}", f"data.train={tiny_prompts}", "data.test=", f"output_dir={tmp_path / 'x'}",
        "rollout.max_new_tokens=8", "reward.weights={think_format: 1.0, judged: 0.5}", "reward.accuracy=think_format",
        f"reward.models={{judged: {{kind: judge, path: {tmp_path / 'rm'}}}}}"])
    with pytest.raises(JudgeError, match="not a causal language model"):
        recipe.main(cfg)
    assert not ray.is_initialized()
