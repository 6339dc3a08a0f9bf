"""Prompt sets: load (JSONL/JSON/parquet/Hub via `datasets`), check columns, template, tokenize, iterate.

`PromptSource` walks the training set in a seeded, shuffled order one batch of prompts at a
time and keeps its position in `state_dict()`, so a resumed run sees exactly the prompts an
uninterrupted run would have seen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkit.templates import apply_template


@dataclass
class Problem:
    index: int  # row in the dataset: a stable problem id
    prompt: str  # templated text given to the model
    prompt_ids: list[int]  # [P]
    columns: dict[str, Any]  # every dataset column (answer, tests, ...) for the reward functions


def load_rows(source: str, *, required: list[str]) -> list[dict[str, Any]]:
    """Rows of a local file or Hub dataset as dicts; a missing column is an error naming it."""
    import datasets

    datasets.disable_progress_bars()
    path = Path(source)
    kinds = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
    if path.suffix in kinds:
        if not path.is_file():
            raise FileNotFoundError(f"dataset file not found: {source}")
        ds = datasets.load_dataset(kinds[path.suffix], data_files=str(path), split="train")
    else:
        ds = datasets.load_dataset(source, split="train")
    missing = [c for c in required if c not in ds.column_names]
    if missing:
        raise ValueError(f"dataset {source} has no column(s) {missing}; its columns are {ds.column_names}")
    if len(ds) == 0:
        raise ValueError(f"dataset {source} is empty")
    return [dict(row) for row in ds]


def build_problems(rows: list[dict[str, Any]], tokenizer, *, prompt_column: str, template: str,
                   max_prompt_tokens: int | None = None, source: str = "dataset",
                   answer_column: str = "answer") -> list[Problem]:
    """Templated, tokenized problems. Reward functions receive the gold answer as `answer`,
    whatever the dataset calls it (`answer_column`)."""
    problems = []
    for i, row in enumerate(rows):
        if answer_column != "answer" and answer_column in row:
            row = {**row, "answer": row[answer_column]}
        text = apply_template(template, str(row[prompt_column]))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
            raise ValueError(
                f"{source} row {i}: the templated prompt is {len(ids)} tokens, longer than the "
                f"{max_prompt_tokens} tokens the context leaves after max_new_tokens"
            )
        problems.append(Problem(index=i, prompt=text, prompt_ids=ids, columns=row))
    return problems


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
