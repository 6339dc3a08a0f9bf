"""Supervised examples: rows -> token ids with a completion-only loss mask, length checks, batches.

A dataset is either `prompt`/`completion` columns (the prompt goes through the prompt template,
as RL prompts do) or chat `messages` (a list of {role, content}; the last message is the
assistant's answer). Through the tokenizer's chat template when it has one; without one, a
single user turn is put through the prompt template. Loss falls on the completion only: the
prompt's tokens are context, never targets.

Batches are length-bucketed rather than packed: rows of similar length go together (careful
and sloppy completions differ ~4x in length), so little is padded and no row ever attends
across another row's tokens.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, TypeVar

import torch

from rlkit.templates import apply_template

T = TypeVar("T")

FORMAT_PROMPT_COMPLETION = "prompt_completion"
FORMAT_MESSAGES = "messages"
OVERLONG_MODES = ("error", "truncate", "drop")


class SFTDataError(ValueError):
    """A supervised dataset that cannot be trained on as configured."""


@dataclass
class SFTExample:
    input_ids: list[int]  # [P + C] prompt tokens, then completion tokens (EOS last when added)
    prompt_len: int  # P: the leading tokens that carry no loss
    row: int  # index in the source rows

    @property
    def completion_len(self) -> int:
        return len(self.input_ids) - self.prompt_len


@dataclass
class SFTBatch:
    """Right-padded rows; the loss mask is aligned with targets (position t scores token t+1)."""

    input_ids: torch.Tensor  # [N, L] long
    attention_mask: torch.Tensor  # [N, L] long
    loss_mask: torch.Tensor  # [N, L-1] float, 1 where the target token is a completion token

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: slice) -> "SFTBatch":
        rows = SFTBatch(self.input_ids[index], self.attention_mask[index], self.loss_mask[index])
        width = int(rows.attention_mask.sum(dim=1).max())  # drop all-padding columns
        return SFTBatch(rows.input_ids[:, :width], rows.attention_mask[:, :width], rows.loss_mask[:, : width - 1])


@dataclass
class LengthReport:
    total: int  # examples checked
    overlong: int  # of them longer than max_length
    longest: int  # tokens of the longest example
    truncated: int = 0
    dropped: int = 0
    kept: list[SFTExample] = field(default_factory=list)


def detect_format(columns: list[str], *, prompt_column: str = "prompt", completion_column: str = "completion",
                  messages_column: str = "messages", source: str = "dataset", rows: int | None = None) -> str:
    """Which of the two layouts a dataset has; neither is an error naming the columns it does have."""
    if prompt_column in columns and completion_column in columns:
        return FORMAT_PROMPT_COMPLETION
    if messages_column in columns:
        return FORMAT_MESSAGES
    count = f" ({rows} rows)" if rows is not None else ""
    raise SFTDataError(
        f"dataset {source}{count} has neither {prompt_column!r}/{completion_column!r} columns nor "
        f"{messages_column!r}; its columns are {sorted(columns)}. Rename its columns, or set "
        f"sft.prompt_column / sft.completion_column / sft.messages_column to the ones it uses"
    )


def load_sft_rows(source: str, *, prompt_column: str = "prompt", completion_column: str = "completion",
                  messages_column: str = "messages") -> tuple[list[dict[str, Any]], str]:
    """Rows of a JSONL/JSON/parquet file or Hub dataset and their format (see `detect_format`)."""
    from rlkit.data import load_rows

    rows = load_rows(source, required=[])
    fmt = detect_format(list(rows[0]), prompt_column=prompt_column, completion_column=completion_column,
                        messages_column=messages_column, source=source, rows=len(rows))
    return rows, fmt


def tokenize_examples(rows: list[dict[str, Any]], tokenizer, *, fmt: str, template: str = "r1_zero",
                      prompt_column: str = "prompt", completion_column: str = "completion",
                      messages_column: str = "messages", add_eos: bool = True,
                      source: str = "dataset") -> list[SFTExample]:
    """Token ids of prompt + completion for every row, and where the completion starts."""
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
    if fmt == FORMAT_PROMPT_COMPLETION:
        prompts = [apply_template(template, str(r[prompt_column])) for r in rows]
        completions = [_leading_space(str(r[completion_column])) for r in rows]
    elif fmt == FORMAT_MESSAGES:
        prompts, completions = _split_messages(rows, tokenizer, template, messages_column, source)
    else:
        raise SFTDataError(f"unknown dataset format {fmt!r}; expected {FORMAT_PROMPT_COMPLETION} or {FORMAT_MESSAGES}")
    examples = []
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + eos
        if len(completion_ids) <= len(eos):
            raise SFTDataError(f"{source} row {i}: the completion is empty; nothing to learn from it")
        examples.append(SFTExample(input_ids=prompt_ids + completion_ids, prompt_len=len(prompt_ids), row=i))
    return examples


def _leading_space(completion: str) -> str:
    """Completions follow the prompt after one space ("Assistant: <think> ..."); word-level
    tokenizers ignore it, byte-level ones would otherwise glue the first word to the prompt."""
    return completion if completion[:1].isspace() else " " + completion


def _split_messages(rows, tokenizer, template, column, source) -> tuple[list[str], list[str]]:
    prompts, completions = [], []
    chat = getattr(tokenizer, "chat_template", None)
    for i, row in enumerate(rows):
        messages = row[column]
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise SFTDataError(f"{source} row {i}: {column!r} must be a non-empty list of {{role, content}} messages")
        if messages[-1].get("role") != "assistant":
            raise SFTDataError(f"{source} row {i}: the last message must be the assistant's answer to learn, "
                               f"got role {messages[-1].get('role')!r}")
        if chat:
            prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(messages, tokenize=False)
            if not full.startswith(prompt):
                raise SFTDataError(f"{source} row {i}: the chat template does not render the prompt as a prefix "
                                   "of the whole conversation, so the completion cannot be told apart")
            prompts.append(prompt)
            completions.append(full[len(prompt):])
        else:
            turns = messages[:-1]
            if len(turns) != 1 or turns[0].get("role") != "user":
                raise SFTDataError(
                    f"{source} row {i}: the tokenizer has no chat template, so a conversation must be one user "
                    f"message then the assistant's answer (got roles {[m.get('role') for m in messages]})")
            prompts.append(apply_template(template, str(turns[0]["content"])))
            completions.append(_leading_space(str(messages[-1]["content"])))
    return prompts, completions


def check_lengths(examples: list[SFTExample], max_length: int, overlong: str = "error", *,
                  source: str = "dataset") -> LengthReport:
    """Examples longer than `max_length` tokens: an error naming how many (`error`), cut at the
    maximum (`truncate`; the completion keeps at least one token) or left out (`drop`)."""
    if overlong not in OVERLONG_MODES:
        raise SFTDataError(f"overlong must be one of {OVERLONG_MODES}, got {overlong!r}")
    longest = max((len(e.input_ids) for e in examples), default=0)
    over = [e for e in examples if len(e.input_ids) > max_length]
    report = LengthReport(total=len(examples), overlong=len(over), longest=longest)
    if over and overlong == "error":
        raise SFTDataError(
            f"{source}: {len(over)} of {len(examples)} samples are longer than max_length={max_length} tokens "
            f"(the longest has {longest}); raise max_length, or set overlong to truncate or drop"
        )
    for e in examples:
        if len(e.input_ids) <= max_length:
            report.kept.append(e)
        elif overlong == "truncate" and e.prompt_len < max_length:
            report.kept.append(SFTExample(e.input_ids[:max_length], e.prompt_len, e.row))
            report.truncated += 1
        else:  # drop, or a prompt that leaves no room for a single completion token
            report.dropped += 1
    if not report.kept:
        raise SFTDataError(f"{source}: all {len(examples)} samples are longer than max_length={max_length} "
                           f"tokens (the longest has {longest}); nothing is left to train on")
    return report


def collate(examples: list[SFTExample], pad_id: int) -> SFTBatch:
    """Right-pad examples into a batch whose loss mask covers exactly the completion tokens."""
    width = max(len(e.input_ids) for e in examples)
    n = len(examples)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)  # [N, L]
    attention_mask = torch.zeros((n, width), dtype=torch.long)  # [N, L]
    loss_mask = torch.zeros((n, width - 1))  # [N, L-1]
    for i, e in enumerate(examples):
        length = len(e.input_ids)
        input_ids[i, :length] = torch.tensor(e.input_ids, dtype=torch.long)
        attention_mask[i, :length] = 1
        # target position t predicts token t+1: completion token j (at index P+j) is scored at P-1+j
        loss_mask[i, e.prompt_len - 1 : length - 1] = 1.0
    return SFTBatch(input_ids, attention_mask, loss_mask)


def length_bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random, *,
                            bucket: int = 16, drop_last: bool = False) -> list[list[int]]:
    """One shuffled pass in batches of similar length (lengths compared in steps of `bucket`, so
    the shuffle survives within a step), batches themselves in shuffled order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = 32 * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i] // bucket)  # stable sort
        for i in range(0, len(part), batch_size):
            if len(part[i : i + batch_size]) == batch_size or not drop_last:
                batches.append(part[i : i + batch_size])
    rng.shuffle(batches)
    return batches


def batches_after(epoch_batches: Callable[[int], Iterable[T]], skip: int) -> Iterator[T]:
    """Batches epoch after epoch, without end, the first `skip` left out: where a run resumed after `skip`
    optimizer steps goes on. `epoch_batches(epoch)` must give the same batches for the same epoch (a
    shuffle seeded by the epoch), so the resumed run takes exactly the batches an uninterrupted one would."""
    seen = 0
    for epoch in itertools.count():
        batches = list(epoch_batches(epoch))
        if not batches:
            raise ValueError(f"epoch {epoch} has no batches: nothing to train on")
        for batch in batches:
            seen += 1
            if seen > skip:
                yield batch


def tokenizer_differences(vocab_a: dict[str, int], vocab_b: dict[str, int]) -> list[str]:
    """Tokens whose id differs between two vocabularies (or that one of them lacks), described."""
    out = []
    for token in sorted(set(vocab_a) | set(vocab_b), key=lambda t: (vocab_a.get(t, vocab_b.get(t)), t)):
        a, b = vocab_a.get(token), vocab_b.get(token)
        if a != b:
            out.append(f"{token!r}: {'missing' if a is None else f'id {a}'} vs {'missing' if b is None else f'id {b}'}")
    return out


def check_same_tokenizer(teacher_path: str, student_path: str) -> None:
    """Distillation trains the student on the teacher's text, re-tokenized by the student; with two
    tokenizers the traces would not mean the same tokens. An error naming the differing tokens."""
    from rlkit.models import load_tokenizer

    diff = tokenizer_differences(load_tokenizer(teacher_path).get_vocab(), load_tokenizer(student_path).get_vocab())
    if diff:
        raise SFTDataError(
            f"teacher {teacher_path} and student {student_path} have different tokenizers: {len(diff)} tokens "
            f"differ (teacher vs student), e.g. {'; '.join(diff[:5])}. Use a student built with the teacher's "
            "tokenizer (for the tiny task: recipes/configs/pretrain_tiny_base_dense.yaml)"
        )


def cold_start_rows(cfg, path, seed: int = 0) -> str:
    """The cold start's SFT dataset: `cfg.data` as given, or `cfg.samples` training prompts of the
    arithmetic task rendered with habits drawn from `cfg.kinds` (a `ColdStartConfig`), written to `path`."""
    from rlkit.data import load_rows
    from rlkit.tasks import arithmetic

    if cfg.data:
        return cfg.data
    rows = load_rows(cfg.prompts, required=["prompt"])
    picked = random.Random(seed).sample(rows, min(cfg.samples, len(rows)))
    problems = [arithmetic.Problem.from_prompt(str(r["prompt"])) for r in picked]
    arithmetic.write_sft_jsonl(problems, dict(cfg.kinds), path, seed=seed)
    return str(path)
