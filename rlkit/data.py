"""Prompt sets: load (JSONL/JSON/parquet/arrow/CSV, datasets folders, Hub), check columns, template, tokenize.

A dataset is named the way `data.train` / `data.test` write it:
- a file: ``data/tiny_math/train.jsonl`` (also .json, .parquet, .arrow, .csv);
- a folder: written by ``save_to_disk`` (a split is picked from a DatasetDict), or laid out like a
  Hub repo (data files per split), read by ``datasets.load_dataset``;
- a Hub dataset: ``name[:subset][:split]``, e.g. ``openai/gsm8k:main:test``; two parts are
  ``name:split``. With no split given, the training set reads ``train`` and a held-out set ``test``.
Relative paths are found from the current folder or the config file's (`rlkit.inputs`).

`PromptSource` walks the training set in a seeded, shuffled order one batch of prompts at a
time and keeps its position in `state_dict()`, so a resumed run sees exactly the prompts an
uninterrupted run would have seen.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkit.inputs import find_local, hub_unreachable
from rlkit.templates import render_prompt

FILE_KINDS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".arrow": "arrow", ".csv": "csv"}
HUB_DATASET = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # name or org/name


@dataclass
class Problem:
    index: int  # row in the dataset: a stable problem id
    prompt: str  # templated text given to the model
    prompt_ids: list[int]  # [P]
    columns: dict[str, Any]  # every dataset column (answer, tests, ...) for the reward functions
    response_prefix: str = ""  # the start of the reply written by the template (e.g. "<think>\n")


@dataclass
class DatasetSpec:
    name: str  # a local path (as found) or a Hub id
    subset: str | None  # Hub config name
    split: str | None  # as written; None = the default split
    local: bool


def parse_source(source: str, *, key: str = "") -> DatasetSpec:
    """Where `source` points: a local file or folder (found from `rlkit.inputs.search_dirs`), else a Hub id
    with optional subset and split. A name that is neither is a FileNotFoundError saying where it looked;
    `key` (e.g. "data.train") names the setting in messages."""
    what = f"dataset not found: {key}={source!r}" if key else f"dataset not found: {source!r}"
    found, tried = find_local(source)
    if found is not None:
        return DatasetSpec(str(found), None, None, local=True)
    name, subset, split = source, None, None
    if ":" in source:
        parts = source.split(":")
        if len(parts) > 3:
            raise ValueError(f"dataset {source!r}: write name[:subset][:split], e.g. openai/gsm8k:main:test")
        name, rest = parts[0], parts[1:]
        subset, split = (None, rest[0]) if len(rest) == 1 else (rest[0] or None, rest[1])
        split = split or None
        found, more = find_local(name)
        if found is not None:
            return DatasetSpec(str(found), subset, split, local=True)
        tried += more
    looked = ", ".join(str(t) for t in tried)
    if Path(name).suffix in FILE_KINDS or Path(name).is_absolute() or not HUB_DATASET.match(name):
        raise FileNotFoundError(f"{what} (looked at {looked})")
    problem = hub_unreachable()
    if problem:
        raise FileNotFoundError(
            f"{what} is not a local file or folder (looked at {looked}) and the Hugging Face Hub is "
            f"unreachable ({problem}): save it where there is network (datasets' save_to_disk) and point at that "
            "folder, or set HF_HUB_OFFLINE=1 to use a copy in the local cache"
        )
    return DatasetSpec(name, subset, split, local=False)


def load_rows(source: str, *, required: list[str], default_split: str = "train", key: str = "") -> list[dict[str, Any]]:
    """Rows of a dataset (see the module docstring for how `source` is written) as dicts. `default_split`
    is read when `source` names none: "train" for training prompts, "test" for a held-out set. A missing
    file, split or column is an error naming it (and `key`, the setting) and what there is instead."""
    import datasets

    datasets.disable_progress_bars()
    spec = parse_source(source, key=key)
    ds = _load(datasets, spec, source, default_split)
    missing = [c for c in required if c not in ds.column_names]
    if missing:
        raise ValueError(f"dataset {source} has no column(s) {missing}; its columns are {ds.column_names}")
    if len(ds) == 0:
        raise ValueError(f"dataset {source} is empty")
    return [dict(row) for row in ds]


def _load(datasets, spec: DatasetSpec, source: str, default_split: str):
    path = Path(spec.name)
    if spec.local and path.is_file():
        kind = FILE_KINDS.get(path.suffix)
        if kind is None:
            raise ValueError(f"dataset {source}: {path.suffix or 'no'} file extension; use one of "
                             f"{', '.join(FILE_KINDS)}, or a datasets folder")
        if spec.split or spec.subset:
            raise ValueError(f"dataset {source}: a single file has no subsets or splits; drop the ':...' part")
        return datasets.load_dataset(kind, data_files=str(path), split="train")
    split = spec.split or default_split
    if spec.local and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        loaded = datasets.load_from_disk(str(path))  # written by save_to_disk
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(_no_split(source, split, list(loaded), spec))
            return loaded[split]
        if spec.split:
            raise ValueError(f"dataset {source}: the folder holds one dataset with no splits; drop ':{spec.split}'")
        return loaded
    try:
        return datasets.load_dataset(spec.name, spec.subset, split=split)
    except ValueError as err:
        known = re.search(r"Should be one of \[(.*?)\]", str(err))
        if "Unknown split" in str(err) and known:
            raise ValueError(_no_split(source, split, re.findall(r"'([^']*)'", known.group(1)), spec)) from None
        raise ValueError(f"dataset {source}: {_first_line(err)}") from None
    except FileNotFoundError as err:
        raise FileNotFoundError(f"dataset {source}: {_first_line(err)}") from None
    except ConnectionError as err:
        raise ConnectionError(f"dataset {source}: {_first_line(err)}") from None


def _no_split(source: str, split: str, splits: list[str], spec: DatasetSpec) -> str:
    name = spec.name if not spec.subset else f"{spec.name}:{spec.subset}"
    example = f"{name}:{splits[0]}" if splits else name
    return (f"dataset {source} has no split {split!r}; its splits are {', '.join(splits)} "
            f"(name one as {example})")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def build_problems(rows: list[dict[str, Any]], tokenizer, *, prompt_column: str, template: str,
                   max_prompt_tokens: int | None = None, source: str = "dataset",
                   answer_column: str = "answer", system_prompt: str = "", think: str = "auto") -> list[Problem]:
    """Templated, tokenized problems. Reward functions receive the gold answer as `answer`,
    whatever the dataset calls it (`answer_column`). `system_prompt` and `think` apply to the chat
    template (`rlkit.templates`)."""
    problems = []
    for i, row in enumerate(rows):
        if answer_column != "answer" and answer_column in row:
            row = {**row, "answer": row[answer_column]}
        text, prefix = render_prompt(template, str(row[prompt_column]), tokenizer=tokenizer,
                                     system_prompt=system_prompt, think=think)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
            raise ValueError(
                f"{source} row {i}: the templated prompt is {len(ids)} tokens, longer than the "
                f"{max_prompt_tokens} tokens the context leaves after max_new_tokens"
            )
        problems.append(Problem(index=i, prompt=text, prompt_ids=ids, columns=row, response_prefix=prefix))
    return problems


def completion_texts(rollouts, problems: list[Problem], samples_per_problem: int) -> list[str]:
    """The reply each reward scores: the response prefix the template wrote (e.g. "<think>\\n") followed by
    the sampled text. Samples of problem i are rollouts[i * k : (i + 1) * k]."""
    return [problems[i // samples_per_problem].response_prefix + r.text for i, r in enumerate(rollouts)]


class PromptSource:
    """Seeded epochs over the problems; `next_batch(k)` wraps around into a new shuffled epoch."""

    def __init__(self, num_problems: int, *, seed: int = 0, shuffle: bool = True) -> None:
        self.num_problems, self.seed, self.shuffle = num_problems, seed, shuffle
        self.epoch, self.position = 0, 0
        self._order = self._make_order()

    def _make_order(self) -> list[int]:
        order = list(range(self.num_problems))
        if self.shuffle:
            random.Random(self.seed * 100_003 + self.epoch).shuffle(order)
        return order

    def next_batch(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.position >= self.num_problems:
                self.epoch += 1
                self.position = 0
                self._order = self._make_order()
            take = min(k - len(out), self.num_problems - self.position)
            out.extend(self._order[self.position : self.position + take])
            self.position += take
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self._order = self._make_order()


def reward_columns(problems: list[Problem], group_size: int) -> dict[str, list[Any]]:
    """Dataset columns repeated once per sample, plus `prompts`: the keyword arguments of a reward."""
    columns: dict[str, list[Any]] = {"prompts": []}
    keys = list(problems[0].columns) if problems else []
    for key in keys:
        columns[key] = []
    for p in problems:
        for _ in range(group_size):
            columns["prompts"].append(p.prompt)
            for key in keys:
                columns[key].append(p.columns.get(key))
    return columns
