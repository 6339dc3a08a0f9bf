"""Model merging: the weighted average of same-architecture checkpoints, tensor by tensor.

Kimi k1.5's long2short merge is theta = w * theta_long + (1 - w) * theta_short. `merge_state_dicts`
does that for any number of models whose weights sum to 1; `merge_checkpoints` loads HF-format
directories, checks that they are the same architecture with the same tokenizer, and writes the
merged model (with the first model's tokenizer and generation config) in HF format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch


class MergeError(ValueError):
    """Checkpoints that cannot be averaged: different tensors, shapes or tokenizers."""


def merge_state_dicts(states: Sequence[Mapping[str, torch.Tensor]],
                      weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """sum_i weights[i] * states[i][name] for every floating-point tensor, accumulated in float64 and
    cast back to the first model's dtype; integer tensors (buffers) must be equal and are copied."""
    if len(states) != len(weights) or not states:
        raise MergeError(f"merge needs one weight per model, got {len(states)} models and {len(weights)} weights")
    if abs(sum(weights) - 1.0) > 1e-6:
        raise MergeError(f"merge weights must sum to 1 (a weighted average), got {list(weights)} (sum {sum(weights)})")
    names = list(states[0])
    for i, s in enumerate(states[1:], start=1):
        if set(s) != set(names):
            diff = sorted(set(s) ^ set(names))
            raise MergeError(f"model {i} has different tensors from model 0: {len(diff)} differ, e.g. {diff[:3]}")
    merged: dict[str, torch.Tensor] = {}
    for name in names:
        first = states[0][name]
        for i, s in enumerate(states[1:], start=1):
            if s[name].shape != first.shape:
                raise MergeError(f"tensor {name!r}: shape {tuple(s[name].shape)} in model {i}, "
                                 f"{tuple(first.shape)} in model 0")
        if not first.is_floating_point():
            if any(not torch.equal(s[name], first) for s in states[1:]):
                raise MergeError(f"integer tensor {name!r} differs between the models; it cannot be averaged")
            merged[name] = first.clone()
            continue
        acc = torch.zeros(first.shape, dtype=torch.float64)
        for w, s in zip(weights, states):
            acc += float(w) * s[name].detach().to("cpu", torch.float64)
        merged[name] = acc.to(first.dtype)
    return merged


def merge_checkpoints(paths: Sequence[str | Path], weights: Sequence[float], output_dir: str | Path) -> Path:
    """Average HF-format checkpoints into `output_dir` (model, tokenizer, generation config)."""
    from transformers import AutoModelForCausalLM

    from rlkit.models import load_tokenizer

    if len(paths) < 2:
        raise MergeError(f"merging needs at least two models, got {len(paths)}")
    vocabs = [load_tokenizer(str(p)).get_vocab() for p in paths]
    for p, v in zip(paths[1:], vocabs[1:]):
        if v != vocabs[0]:
            differ = len(set(v.items()) ^ set(vocabs[0].items()))
            raise MergeError(f"{p} and {paths[0]} have different tokenizers ({differ} token-id entries differ); "
                             "only models of one tokenizer can be merged")
    models = [AutoModelForCausalLM.from_pretrained(str(p)) for p in paths]
    configs = [m.config.to_dict() for m in models]
    for p, c in zip(paths[1:], configs[1:]):
        shape = {k: v for k, v in c.items() if k not in ("_name_or_path", "transformers_version")}
        first = {k: v for k, v in configs[0].items() if k not in ("_name_or_path", "transformers_version")}
        if shape != first:
            keys = sorted(k for k in set(shape) | set(first) if shape.get(k) != first.get(k))
            raise MergeError(f"{p} is not the same architecture as {paths[0]}: config keys differ: {keys[:5]}")
    merged = merge_state_dicts([m.state_dict() for m in models], weights)
    target = models[0]
    target.load_state_dict(merged)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    target.save_pretrained(out)
    load_tokenizer(str(paths[0])).save_pretrained(out)
    return out
