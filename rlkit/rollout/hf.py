"""The transformers rollout engine: batched, KV-cached sampling on CPU or CUDA.

Why not `model.generate`: we need the sampling log-prob and policy version of every token,
a per-call token budget (partial rollouts), one prefill per prompt shared by its whole GRPO
group, and a batch that shrinks as sequences finish. All of that is a short loop over the
model's own forward with its own KV cache.

Log-probs are those of the distribution actually sampled from: log_softmax(logits / T)
(T = 1 for greedy). The learner divides its logits by the same temperature, so at equal
weights its log-probs equal these up to float error.
"""

from __future__ import annotations

from typing import Any

import torch

from rlkit.models import load_model, load_tokenizer, resolve_dtype
from rlkit.rollout.engine import ENGINES
from rlkit.types import (
    FINISH_BUDGET,
    FINISH_LENGTH,
    FINISH_REPEAT,
    FINISH_STOP,
    GenerationRequest,
    Rollout,
    SamplingParams,
)


@ENGINES.register("hf")
class HFEngine:
    def __init__(
        self,
        model_path: str,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        seed: int = 0,
        repeat_ngram: int = 0,
        repeat_window: int = 0,
    ) -> None:
        self.device = torch.device(device)
        self.model = load_model(model_path, dtype=resolve_dtype(dtype)).to(self.device).eval()
        self.tokenizer = load_tokenizer(model_path)
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.max_context = getattr(self.model.config, "max_position_embeddings", None)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        # stop a sample whose last `repeat_window` tokens are one n-gram over and over (0 = off)
        self.repeat_ngram = repeat_ngram
        self.repeat_window = repeat_window
        self.version = 0

    # -- weights -------------------------------------------------------------------------
    def load_weights(self, state_dict: dict[str, Any], version: int) -> None:
        missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"weight sync mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.version = version

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    # -- sampling ------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Rollout]:
        if not requests:
            return []
        if sampling.seed is not None:
            self.generator.manual_seed(sampling.seed)
        contexts = [r.prompt_ids + r.prefix_ids for r in requests]
        for i, (req, ctx) in enumerate(zip(requests, contexts)):
            if not req.prompt_ids:
                raise ValueError(f"request {i} has an empty prompt")
            if self.max_context is not None and len(req.prompt_ids) + sampling.max_new_tokens > self.max_context:
                raise ValueError(
                    f"request {i}: prompt of {len(req.prompt_ids)} tokens + max_new_tokens "
                    f"{sampling.max_new_tokens} exceeds the model context of {self.max_context} tokens"
                )

        # One prefill per request; its n samples share it through the repeated cache.
        width = max(len(c) for c in contexts)
        ctx_ids = torch.full((len(contexts), width), self.pad_id, dtype=torch.long)  # [R, W]
        ctx_mask = torch.zeros((len(contexts), width), dtype=torch.long)  # [R, W]
        for i, c in enumerate(contexts):  # left padding keeps every row's last token at the end
            ctx_ids[i, width - len(c) :] = torch.tensor(c, dtype=torch.long)
            ctx_mask[i, width - len(c) :] = 1
        ctx_ids, ctx_mask = ctx_ids.to(self.device), ctx_mask.to(self.device)
        positions = (ctx_mask.cumsum(dim=1) - 1).clamp(min=0)  # [R, W]
        out = self.model(input_ids=ctx_ids, attention_mask=ctx_mask, position_ids=positions, use_cache=True)
        cache = out.past_key_values
        logits = out.logits[:, -1, :].float()  # [R, V]

        counts = torch.tensor([r.n for r in requests], device=self.device)
        row_of = torch.repeat_interleave(torch.arange(len(requests), device=self.device), counts)  # [S]
        if not (len(requests) == row_of.numel() and bool((counts == 1).all())):
            cache.batch_select_indices(row_of)
        logits = logits[row_of]  # [S, V]
        attn = ctx_mask[row_of]  # [S, W]
        next_pos = positions[row_of, -1] + 1  # [S]

        samples = [(req, k) for req in requests for k in range(req.n)]
        num = len(samples)
        budgets, caps = [], []
        for req, _ in samples:
            # meta["max_new_tokens"] lowers the completion cap for one request (e.g. a target length)
            caps.append(min(sampling.max_new_tokens, int(req.meta.get("max_new_tokens", sampling.max_new_tokens))))
            left = caps[-1] - len(req.prefix_ids)
            budgets.append(min(left, sampling.token_budget) if sampling.token_budget is not None else left)
        new_tokens: list[list[int]] = [[] for _ in range(num)]
        new_logps: list[list[float]] = [[] for _ in range(num)]
        finish: list[str | None] = [None] * num
        for s in range(num):
            if budgets[s] <= 0:
                # nothing left under the cap is "length" (a prefix already at the cap must not come back as
                # "budget", or a partial-rollout buffer would resume it forever); else a budget of 0
                finish[s] = FINISH_LENGTH if caps[s] <= len(samples[s][0].prefix_ids) else FINISH_BUDGET
        active = torch.tensor([f is None for f in finish], device=self.device)
        alive = torch.arange(num, device=self.device)[active]  # [A] sample index of each cache row
        if alive.numel() < num:
            cache.batch_select_indices(active.nonzero().squeeze(1))
            logits, attn, next_pos = logits[active], attn[active], next_pos[active]
        max_budget = max(budgets) if budgets else 0

        for step in range(max_budget):
            if alive.numel() == 0:
                break
            token, logp = self._sample(logits, sampling)  # [A], [A]
            token_list, logp_list = token.tolist(), logp.tolist()
            done_rows = []
            for row, s in enumerate(alive.tolist()):
                new_tokens[s].append(token_list[row])
                new_logps[s].append(logp_list[row])
                reason = None
                if token_list[row] in self.eos_ids:
                    reason = FINISH_STOP
                elif self._repeating(samples[s][0].prefix_ids, new_tokens[s]):
                    reason = FINISH_REPEAT
                elif len(new_tokens[s]) >= budgets[s]:
                    total = len(samples[s][0].prefix_ids) + len(new_tokens[s])
                    reason = FINISH_LENGTH if total >= caps[s] else FINISH_BUDGET
                if reason is not None:
                    finish[s] = reason
                    done_rows.append(row)
            if len(done_rows) == alive.numel():
                break
            inp = token.unsqueeze(1)  # [A, 1]
            if done_rows:  # drop finished rows from the cache so the batch shrinks as samples end
                keep = torch.ones(alive.numel(), dtype=torch.bool, device=self.device)
                keep[done_rows] = False
                idx = keep.nonzero().squeeze(1)
                cache.batch_select_indices(idx)
                alive, attn, inp, next_pos = alive[idx], attn[idx], inp[idx], next_pos[idx]
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)  # [A, W+step+1]
            out = self.model(
                input_ids=inp,
                attention_mask=attn,
                position_ids=next_pos.unsqueeze(1),
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            logits = out.logits[:, -1, :].float()  # [A, V]
            next_pos = next_pos + 1

        rollouts = []
        for s, (req, _) in enumerate(samples):
            ids = req.prefix_ids + new_tokens[s]
            text_ids = [t for t in ids if t not in self.eos_ids]
            rollouts.append(
                Rollout(
                    prompt_ids=list(req.prompt_ids),
                    completion_ids=ids,
                    logprobs=list(req.prefix_logprobs) + new_logps[s],
                    versions=list(req.prefix_versions) + [self.version] * len(new_tokens[s]),
                    finish_reason=finish[s] or FINISH_LENGTH,
                    text=self.tokenizer.decode(text_ids, skip_special_tokens=True),
                    meta=dict(req.meta),
                )
            )
        return rollouts

    def _sample(self, logits: torch.Tensor, sampling: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
        # logits: [A, V] -> token [A], logp [A]
        if sampling.temperature <= 0:
            logp_all = torch.log_softmax(logits, dim=-1)
            token = logp_all.argmax(dim=-1)
            return token, logp_all.gather(1, token.unsqueeze(1)).squeeze(1)
        logp_all = torch.log_softmax(logits / sampling.temperature, dim=-1)  # [A, V]
        probs = logp_all.exp()
        if sampling.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            drop = sorted_p.cumsum(dim=-1) - sorted_p > sampling.top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(1, order, sorted_p)
        token = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)  # [A]
        return token, logp_all.gather(1, token.unsqueeze(1)).squeeze(1)

    def _repeating(self, prefix: list[int], new: list[int]) -> bool:
        if self.repeat_ngram <= 0 or self.repeat_window <= 0:
            return False
        tail = (prefix + new)[-self.repeat_window :]
        if len(tail) < self.repeat_window:
            return False
        n = self.repeat_ngram
        unit = tail[:n]
        return all(tail[i] == unit[i % n] for i in range(len(tail)))


def _eos_ids(model, tokenizer) -> list[int]:
    ids: list[int] = []
    gen_cfg = getattr(model, "generation_config", None)
    for source in (getattr(gen_cfg, "eos_token_id", None), tokenizer.eos_token_id):
        if source is None:
            continue
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if i not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("the tokenizer and generation config define no eos token: generation could never stop")
    return ids
