"""Real data: Hub-style datasets with subset and split (a local repo folder, read the way a Hub id is),
save_to_disk folders, parquet/arrow files, paths found from the config file's folder, the Hub's
absence reported at once, and prompts in the tokenizer's chat template with <think> opened."""

from __future__ import annotations

import json
import time

import datasets
import pytest
from transformers import AutoTokenizer

import rlkit.config as config_module
import rlkit.inputs
from rlkit.config import load
from rlkit.data import Problem, build_problems, completion_texts, load_rows, parse_source
from rlkit.templates import render_prompt
from rlkit.types import Rollout

# The card of a Hub dataset with two subsets, as openai/gsm8k has (main, socratic), each with its splits.
CARD = """---
configs:
- config_name: main
  data_files:
  - {split: train, path: main/train.jsonl}
  - {split: test, path: main/test.jsonl}
- config_name: socratic
  data_files:
  - {split: train, path: socratic/train.jsonl}
---
"""


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def hub_repo(tmp_path):
    repo = tmp_path / "gsm8k"
    (repo).mkdir()
    (repo / "README.md").write_text(CARD)
    for subset, split in (("main", "train"), ("main", "test"), ("socratic", "train")):
        rows = [{"question": f"{subset} {split} {i}", "answer": str(i)} for i in range(3)]
        _jsonl(repo / subset / f"{split}.jsonl", rows)
    return repo


def test_subset_and_split_are_read_as_written(hub_repo):
    assert load_rows(f"{hub_repo}:main:test", required=["question"])[0]["question"] == "main test 0"
    assert load_rows(f"{hub_repo}:socratic:train", required=["question"])[0]["question"] == "socratic train 0"
    assert load_rows(f"{hub_repo}:main:train", required=["question"])[0]["question"] == "main train 0"


def test_a_held_out_set_reads_its_test_split_not_train(tmp_path):
    repo = tmp_path / "plain_repo"
    _jsonl(repo / "train.jsonl", [{"prompt": "train row", "answer": "1"}])
    _jsonl(repo / "test.jsonl", [{"prompt": "test row", "answer": "2"}])
    assert load_rows(str(repo), required=["prompt"])[0]["prompt"] == "train row"
    assert load_rows(str(repo), required=["prompt"], default_split="test")[0]["prompt"] == "test row"
    assert load_rows(f"{repo}:train", required=["prompt"], default_split="test")[0]["prompt"] == "train row"


def test_a_missing_split_lists_the_splits_there_are(hub_repo):
    with pytest.raises(ValueError, match=r"no split 'test'; its splits are train \(name one as .*:socratic:train\)"):
        load_rows(f"{hub_repo}:socratic:test", required=[])


def test_save_to_disk_folders_and_parquet_and_arrow_files(tmp_path):
    rows = [{"prompt": "p", "answer": "1"}]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                               "test": datasets.Dataset.from_list([{"prompt": "held out", "answer": "2"}])})
    dd.save_to_disk(str(tmp_path / "disk"))
    assert load_rows(str(tmp_path / "disk"), required=["prompt"], default_split="test")[0]["prompt"] == "held out"
    with pytest.raises(ValueError, match="has no split 'dev'; its splits are train, test"):
        load_rows(f"{tmp_path / 'disk'}:dev", required=[])
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "rows.parquet"))
    assert load_rows(str(tmp_path / "rows.parquet"), required=["prompt", "answer"]) == rows
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "single"))
    arrow = next((tmp_path / "single").glob("*.arrow"))
    assert load_rows(str(arrow), required=["prompt"]) == rows


def test_relative_paths_are_found_from_the_config_files_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    _jsonl(project / "configs" / "prompts.jsonl", [{"prompt": "beside the config", "answer": "1"}])
    _jsonl(project / "data" / "train.jsonl", [{"prompt": "in the project", "answer": "1"}])
    (project / "pyproject.toml").write_text("")
    cfg = project / "configs" / "run.yaml"
    cfg.write_text("name: x\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(config_module, "_config_file", None)

    from dataclasses import dataclass

    @dataclass
    class C:
        name: str = ""

    load(C, cfg)  # remembers where the config is
    assert load_rows("prompts.jsonl", required=["prompt"])[0]["prompt"] == "beside the config"
    assert load_rows("data/train.jsonl", required=["prompt"])[0]["prompt"] == "in the project"
    with pytest.raises(FileNotFoundError) as err:
        load_rows("missing.jsonl", required=[], key="data.train")
    message = str(err.value)
    assert message.startswith("dataset not found: data.train='missing.jsonl' (looked at ")
    for folder in (elsewhere, project / "configs", project):
        assert str(folder / "missing.jsonl") in message


def test_an_unreachable_hub_is_one_clear_error_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: as offline as it gets, at once
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    rlkit.inputs.hub_unreachable.cache_clear()
    try:
        start = time.monotonic()
        with pytest.raises(FileNotFoundError, match=r"data.test='openai/gsm8k:main:test' is not a local file or "
                                                    r"folder .* the Hugging Face Hub is unreachable \(127.0.0.1:9"):
            parse_source("openai/gsm8k:main:test", key="data.test")
        with pytest.raises(FileNotFoundError, match=r"model.path='org/model' is not a local path .*HF_HUB_OFFLINE=1"):
            rlkit.inputs.resolve_input("org/model", key="model.path")
        assert time.monotonic() - start < 10  # the libraries themselves retry for about a minute
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the user's cache then decides, not a probe
        rlkit.inputs.hub_unreachable.cache_clear()
        spec = parse_source("openai/gsm8k:main:test")
        assert (spec.name, spec.subset, spec.split, spec.local) == ("openai/gsm8k", "main", "test", False)
    finally:
        rlkit.inputs.hub_unreachable.cache_clear()


# ----------------------------------------------------------------------------- chat templates
# A chat template in the style of reasoning models: it knows </think> (it drops earlier turns' reasoning).
REASONING_CHAT = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'].split('</think>')[-1] }} {% endfor %}"
                  "{% if add_generation_prompt %}<|assistant|> {% endif %}")
INSTRUCT_CHAT = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|> {% endif %}")
# DeepSeek-R1's distills open the reasoning in the template itself
OPENS_THINK = INSTRUCT_CHAT.replace("<|assistant|> {% endif %}", "<|assistant|><think>\n{% endif %}")


@pytest.fixture
def tokenizer(random_tiny_model):
    return AutoTokenizer.from_pretrained(random_tiny_model)


def test_chat_template_opens_the_assistant_turn_with_system_prompt(tokenizer):
    tokenizer.chat_template = INSTRUCT_CHAT
    text, prefix = render_prompt("chat", "What is 1 plus 2 ?", tokenizer=tokenizer, system_prompt="Be brief .")
    assert text == "<|system|> Be brief . <|user|> What is 1 plus 2 ? <|assistant|> " and prefix == ""


def test_think_is_opened_where_the_model_expects_it(tokenizer):
    tokenizer.chat_template = REASONING_CHAT
    assert render_prompt("chat", "Q", tokenizer=tokenizer) == ("<|user|> Q <|assistant|> <think>\n", "<think>\n")
    assert render_prompt("chat", "Q", tokenizer=tokenizer, think="never")[1] == ""
    tokenizer.chat_template = INSTRUCT_CHAT  # an instruct model: no reasoning block unless asked for
    assert render_prompt("chat", "Q", tokenizer=tokenizer)[1] == ""
    assert render_prompt("chat", "Q", tokenizer=tokenizer, think="always")[1] == "<think>\n"
    tokenizer.chat_template = OPENS_THINK  # the template writes it: not a second time
    assert render_prompt("chat", "Q", tokenizer=tokenizer, think="always") == ("<|user|> Q <|assistant|><think>\n",
                                                                             "<think>\n")


def test_rewards_see_the_opened_think_in_front_of_the_completion(tokenizer):
    tokenizer.chat_template = REASONING_CHAT
    problems = build_problems([{"prompt": "What is 1 plus 2 ?", "answer": "3"}], tokenizer, prompt_column="prompt",
                              template="chat")
    assert problems[0].response_prefix == "<think>\n"
    assert tokenizer.decode(problems[0].prompt_ids).endswith("<think>")  # the model continues inside it
    sampled = Rollout(prompt_ids=problems[0].prompt_ids, completion_ids=[], logprobs=[], versions=[],
                      finish_reason="stop", text=" 1 plus 2 </think> <answer> 3 </answer>")
    text = completion_texts([sampled], problems, 1)[0]
    assert text == "<think>\n 1 plus 2 </think> <answer> 3 </answer>"
    from rewards.format import think_format_reward

    assert think_format_reward([text]) == [1.0] and think_format_reward([sampled.text]) == [0.0]


def test_chat_needs_a_template_and_says_so(tokenizer):
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="has no chat template .*use template=r1_zero"):
        render_prompt("chat", "Q", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="a system prompt needs template=chat"):
        render_prompt("r1_zero", "Q", system_prompt="x")
    assert isinstance(Problem(0, "p", [1], {}).response_prefix, str)  # older callers build Problems positionally


def test_a_model_folder_without_config_or_weights_is_refused_before_any_actor(random_tiny_model, tmp_path):
    from rlkit.inputs import check_model_dir

    check_model_dir(random_tiny_model)  # a save_pretrained folder passes
    check_model_dir("org/name")  # a Hub id is not a folder here: left to the Hub
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"model.path='.*empty' has no config.json"):
        check_model_dir(str(tmp_path / "empty"))
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"has no weights \(model.safetensors or pytorch_model.bin\)"):
        check_model_dir(str(tmp_path / "empty"))
