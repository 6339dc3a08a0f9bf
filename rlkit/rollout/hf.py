"""The transformers rollout engine: batched, KV-cached sampling on CPU or CUDA.

Why not `model.generate`: we need the sampling log-prob and policy version of every token,
a per-call token budget (partial rollouts), one prefill per prompt shared by its whole GRPO
group, and a batch that shrinks as sequences finish. All of that is a short loop over the
model's own forward with its own KV cache.

Mixed batches (partial rollouts resume prompt + prefix beside fresh prompts) are prefilled in
length buckets, not as one rectangle padded to the longest context; the cache is written in
place (`_SlabLayer`) instead of concatenated every step. A sample stopped by the token budget
leaves its keys/values behind, and the next call resumes it from them if the weights are the
same (same version, no `load_weights` since), as between the rounds of one training step;
after a weight sync the context is prefilled again, since old keys/values are the old
policy's. `meta["max_new_tokens"]` caps a request (an int) or each of its n samples (a list).

Caches: models whose every layer is a plain full-attention cache (dense, Qwen3-MoE, DeepSeek-V3's
latent cache with keys and values of different widths) use the in-place slab, bucketed prefill
and kept keys/values; any other layout transformers builds for a model (sliding-window layers,
linear-attention states) runs on the model's own cache, prefilled in one left-padded batch.

Routes: with `record_routes` the engine records, for every input position of every sample, the
experts each MoE layer routed it to (`Rollout.routes`), for routing replay in the learner.

Log-probs are those of the distribution actually sampled from: softmax(logits / T) within the
top-p nucleus, renormalised (T = 1 for greedy); see `rlkit.algo.logprobs`. The learner scores
tokens with the same function, so at equal weights its log-probs equal these up to float error.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from rlkit import moe
from rlkit.algo.logprobs import sampling_logprobs
from rlkit.models import load_model, load_tokenizer, resolve_dtype
from rlkit.rollout.engine import ENGINES, eos_token_ids, sample_cap
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
        keep_kv_mb: float = 512.0,
        trust_remote_code: bool = False,
        record_routes: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.model = load_model(model_path, dtype=resolve_dtype(dtype),
                                trust_remote_code=trust_remote_code).to(self.device).eval()
        self.tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
        self.eos_ids = eos_token_ids(getattr(self.model, "generation_config", None), self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.max_context = getattr(self.model.config, "max_position_embeddings", None)
        self.slab = _plain_cache_layers(self.model.config)
        self.record_routes = record_routes
        if record_routes and not moe.instrument(self.model):
            raise ValueError("record_routes: this model has no MoE routers to record")
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        # stop a sample whose last `repeat_window` tokens are one n-gram over and over (0 = off)
        self.repeat_ngram = repeat_ngram
        self.repeat_window = repeat_window
        self.version = 0
        # keys/values of the samples the last call stopped at the token budget, by the context they
        # resume with, valid at `_kept_version` only (see `_keep`); at most `keep_kv_mb` MiB (0 = off)
        self.keep_kv_bytes = int(keep_kv_mb * 2**20)
        # context -> (per-layer keys/values [H, L-1, D], routes [L-1, layers, K] or None)
        self._kept: dict[tuple[int, ...], tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor | None]] = {}
        self._kept_version: int | None = None
        self._kept_bytes = 0

    # -- weights -------------------------------------------------------------------------
    def load_weights(self, state_dict: dict[str, Any], version: int) -> None:
        missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"weight sync mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.version = version
        self._kept, self._kept_version, self._kept_bytes = {}, None, 0  # computed by the old weights

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def sleep(self) -> None:
        """Colocated with a learner on one GPU: drop the kept keys/values and return cached blocks to the device
        (the weights stay: they are what the next sync overwrites in place)."""
        self._kept, self._kept_version, self._kept_bytes = {}, None, 0
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def wake_up(self) -> None:
        pass

    # -- sampling ------------------------------------------------------------------------
    @torch.inference_mode()  # cheaper per op than no_grad; nothing sampled here is ever differentiated
    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Rollout]:
        if not requests:
            return []
        # a seeded call (evaluation) gets a stream of its own: the training stream goes on untouched
        generator = self.generator if sampling.seed is None else torch.Generator(self.device).manual_seed(sampling.seed)
        contexts = [r.prompt_ids + r.prefix_ids for r in requests]
        for i, req in enumerate(requests):
            if not req.prompt_ids:
                raise ValueError(f"request {i} has an empty prompt")
            cap = req.meta.get("max_new_tokens")
            if isinstance(cap, (list, tuple)) and len(cap) != req.n:
                raise ValueError(f"request {i}: meta['max_new_tokens'] lists {len(cap)} caps for n={req.n} samples")
            if self.max_context is not None and len(req.prompt_ids) + sampling.max_new_tokens > self.max_context:
                raise ValueError(
                    f"request {i}: prompt of {len(req.prompt_ids)} tokens + max_new_tokens "
                    f"{sampling.max_new_tokens} exceeds the model context of {self.max_context} tokens"
                )
        # kept caches are only valid for the weights that computed them: this call's version
        kept, self._kept, self._kept_bytes = (self._kept if self._kept_version == self.version else {}), {}, 0
        self._kept_version = self.version

        samples = [(req, k) for req in requests for k in range(req.n)]
        num = len(samples)
        budgets, caps = [], []
        for req, k in samples:
            caps.append(min(sampling.max_new_tokens, sample_cap(req, k, sampling.max_new_tokens)))
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
        max_budget = max(max(budgets), 0)

        # One prefill per request; its n samples share it through the repeated cache.
        prefill = self._prefill if self.slab else self._prefill_whole
        cache, logits, ctx_mask, ctx_routes = prefill(contexts, kept, room=max_budget)  # [R, V], [R, W]
        request_of = [i for i, req in enumerate(requests) for _ in range(req.n)]  # [S]
        new_routes: list[list[torch.Tensor]] = [[] for _ in range(num)]  # per sample, [layers, K] per fed token
        counts = torch.tensor([r.n for r in requests], device=self.device)
        row_of = torch.repeat_interleave(torch.arange(len(requests), device=self.device), counts)  # [S]
        if not (len(requests) == row_of.numel() and bool((counts == 1).all())):
            _select_rows(cache, row_of)
        logits = logits[row_of]  # [S, V]
        cols = ctx_mask.shape[1]  # cache columns in use
        # the attention mask of every step to come: the contexts' own, then one column per new token
        attn = torch.cat([ctx_mask, torch.ones_like(ctx_mask[:, :1]).expand(-1, max_budget)], dim=1)[row_of]  # [S, W+B]
        next_pos = torch.tensor([len(c) for c in contexts], device=self.device)[row_of]  # [S]

        active = torch.tensor([f is None for f in finish], device=self.device)
        alive = torch.arange(num, device=self.device)[active]  # [A] sample index of each cache row
        if alive.numel() < num:
            idx = active.nonzero().squeeze(1)
            _select_rows(cache, idx)
            logits, attn, next_pos = logits[idx], attn[idx], next_pos[idx]
            if alive.numel():
                lead = self._drop_padding(cache, attn, cols)
                attn, cols = attn[:, lead:], cols - lead

        for step in range(max_budget):
            if alive.numel() == 0:
                break
            token, logp = self._sample(logits, sampling, generator)  # [A], [A]
            token_list, logp_list = token.tolist(), logp.tolist()
            done_rows, paused_rows = [], []
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
                    if reason == FINISH_BUDGET:
                        paused_rows.append((row, s))
            if paused_rows:
                self._keep(cache, attn, cols, paused_rows, samples, new_tokens,
                           [self._routes_of(ctx_routes[request_of[s]], new_routes[s]) for _, s in paused_rows])
            if len(done_rows) == alive.numel():
                break
            inp = token.unsqueeze(1)  # [A, 1]
            if done_rows:  # drop finished rows from the cache so the batch shrinks as samples end
                idx = torch.tensor(_fill_holes(alive.numel(), done_rows), device=self.device)  # [A']
                _select_rows(cache, idx)
                alive, attn, inp, next_pos = alive[idx], attn[idx], inp[idx], next_pos[idx]
                lead = self._drop_padding(cache, attn, cols)
                attn, cols = attn[:, lead:], cols - lead
            cols += 1
            out, routes = self._forward(
                input_ids=inp,
                attention_mask=attn[:, :cols],  # [A, cols]
                position_ids=next_pos.unsqueeze(1),
                past_key_values=cache,
                use_cache=True,
            )
            if routes is not None:  # [A, layers, K]: the token each alive sample was just fed
                for row, s in enumerate(alive.tolist()):
                    new_routes[s].append(routes[row])
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
                    routes=self._routes_of(ctx_routes[request_of[s]], new_routes[s]),
                )
            )
        return rollouts

    def _forward(self, **kwargs):
        """The model's forward -> (output, routes [tokens, layers, K] int16 on the CPU, or None when not recording)."""
        if not self.record_routes:
            return self.model(**kwargs), None
        with moe.capture(self.model) as captured:
            out = self.model(**kwargs)
        routes = torch.stack([captured.layer(i)[1] for i in range(len(captured))], dim=1)  # [T, layers, K]
        return out, routes.to("cpu", torch.int16)

    @staticmethod
    def _routes_of(context: torch.Tensor | None, fed: list[torch.Tensor]) -> torch.Tensor | None:
        """A sample's routes: its context's [len(ctx), layers, K], then one per token fed after it."""
        if context is None:
            return None
        return torch.cat([context, torch.stack(fed)]) if fed else context

    @staticmethod
    def _drop_padding(cache, attn: torch.Tensor, cols: int) -> int:
        """Drop the cache's leading columns that are padding in every remaining row (once the
        longest contexts have finished, the others need not attend over their width any more);
        returns how many were dropped. Slab caches only: other layouts keep their columns."""
        if not isinstance(cache.layers[0], _SlabLayer):
            return 0
        lead = int(attn[:, :cols].argmax(dim=1).min())  # first real column of the row that starts first
        if lead > 0:
            for layer in cache.layers:
                layer.drop_front(lead)
        return lead

    # -- prefill and kept caches -----------------------------------------------------------
    def _prefill_whole(self, contexts: list[list[int]], kept: dict, room: int):
        """`_prefill` for caches that are not plain full-attention layers: every context in one left-padded
        forward on the model's own cache (nothing kept between calls)."""
        width = max(len(c) for c in contexts)
        ctx_mask = torch.zeros((len(contexts), width), dtype=torch.long)  # [R, W]
        ids = torch.full((len(contexts), width), self.pad_id, dtype=torch.long)  # [R, W]
        for i, c in enumerate(contexts):
            ctx_mask[i, width - len(c) :] = 1
            ids[i, width - len(c) :] = torch.tensor(c, dtype=torch.long)
        ctx_mask = ctx_mask.to(self.device)
        positions = (ctx_mask.cumsum(dim=1) - 1).clamp(min=0)  # [R, W]
        out, routes = self._forward(input_ids=ids.to(self.device), attention_mask=ctx_mask, position_ids=positions,
                                    past_key_values=DynamicCache(config=self.model.config), use_cache=True)
        ctx_routes: list[torch.Tensor | None] = [None] * len(contexts)
        if routes is not None:
            routes = routes.view(len(contexts), width, *routes.shape[1:])  # [R, W, layers, K]
            ctx_routes = [routes[i, width - len(c) :] for i, c in enumerate(contexts)]
        return out.past_key_values, out.logits[:, -1, :].float(), ctx_mask, ctx_routes

    def _prefill(self, contexts: list[list[int]], kept: dict, room: int):
        """Forward every context once -> (cache, last logits [R, V], mask [R, W], routes per context
        [len, layers, K] or None); the cache has free columns for the first of the (at most `room`)
        tokens to come.

        Rows are left-padded to the longest context W. Prefilling them as one batch would compute
        each short row at width W, and resumed partial rollouts (prompt + a long prefix) next to
        fresh prompts make W many times a prompt. So rows are prefilled in buckets of similar
        length (a bucket's longest row at most twice its shortest) and the buckets' key/value
        caches are written left-padded into one cache of width W: positions come from each
        row's own mask, so a row's cache does not depend on the padding in front of it. A context
        whose keys/values this engine kept from its previous call at the same version (all but
        its last token, see `_keep`) only forwards that last token.
        """
        width = max(len(c) for c in contexts)
        ctx_mask = torch.zeros((len(contexts), width), dtype=torch.long)  # [R, W]
        for i, c in enumerate(contexts):
            ctx_mask[i, width - len(c) :] = 1
        ctx_mask = ctx_mask.to(self.device)
        hits = [i for i, c in enumerate(contexts) if tuple(c) in kept]
        hit_set = set(hits)
        buckets: list[list[int]] = [[]]
        for i in sorted((i for i in range(len(contexts)) if i not in hit_set), key=lambda i: len(contexts[i])):
            if buckets[-1] and len(contexts[i]) > 2 * len(contexts[buckets[-1][0]]):
                buckets.append([])
            buckets[-1].append(i)
        parts = []  # (rows, per-layer (keys, values) [b, H, w, D], logits [b, V])
        ctx_routes: list[torch.Tensor | None] = [None] * len(contexts)
        for rows in filter(None, buckets):
            w = len(contexts[rows[-1]])  # the bucket's longest row
            ids = torch.full((len(rows), w), self.pad_id, dtype=torch.long)  # [b, w]
            for j, i in enumerate(rows):
                ids[j, w - len(contexts[i]) :] = torch.tensor(contexts[i], dtype=torch.long)
            mask = ctx_mask[rows, width - w :]  # [b, w]
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # [b, w]
            out, routes = self._forward(input_ids=ids.to(self.device), attention_mask=mask, position_ids=positions,
                                        use_cache=True)
            if routes is not None:
                routes = routes.view(len(rows), w, *routes.shape[1:])  # [b, w, layers, K]
                for j, i in enumerate(rows):
                    ctx_routes[i] = routes[j, w - len(contexts[i]) :]
            layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
            parts.append((rows, layers, out.logits[:, -1, :].float()))
        if hits:
            layers, logits, hit_routes = self._resume_kept([contexts[i] for i in hits], kept)
            parts.append((hits, layers, logits))
            for i, r in zip(hits, hit_routes):
                ctx_routes[i] = r
        first = parts[0][1]
        n_rows = len(contexts)
        layers = []
        for layer, (k0, v0) in enumerate(first):
            # zeros, not empty: padding columns are masked out, but 0 x NaN garbage would still be NaN
            spare = min(room, _SlabLayer.SPARE)
            keys = k0.new_zeros((n_rows, k0.shape[1], width + spare, k0.shape[3]))  # [R, H, W + spare, D]
            # values get their own width: a latent cache (DeepSeek-V3's MLA) holds keys and values of different sizes
            values = v0.new_zeros((n_rows, v0.shape[1], width + spare, v0.shape[3]))  # [R, H, W + spare, Dv]
            for rows, kv, _ in parts:
                k, v = kv[layer]  # [b, H, w, D]
                idx = torch.tensor(rows, device=self.device)
                keys[idx, :, width - k.shape[2] : width] = k
                values[idx, :, width - v.shape[2] : width] = v
            layers.append(_SlabLayer(keys, values, width))
        logits = torch.empty((n_rows, parts[0][2].shape[1]), device=self.device)  # [R, V]
        for rows, _, lg in parts:
            logits[torch.tensor(rows, device=self.device)] = lg
        return Cache(layers=layers), logits, ctx_mask, ctx_routes

    def _resume_kept(self, contexts: list[list[int]], kept: dict):
        """Contexts whose keys/values for all but the last token were kept: forward the last
        token over them -> (per-layer (keys, values) [h, H, w, D], logits [h, V], routes per context)."""
        entries = [kept[tuple(c)][0] for c in contexts]
        w = max(len(c) for c in contexts)
        layers = []
        for layer in range(len(entries[0])):
            k0, v0 = entries[0][layer]  # [H, L-1, D], [H, L-1, Dv]
            keys = k0.new_zeros((len(contexts), k0.shape[0], w - 1, k0.shape[2]))  # [h, H, w-1, D]
            values = v0.new_zeros((len(contexts), v0.shape[0], w - 1, v0.shape[2]))  # [h, H, w-1, Dv]
            for j, e in enumerate(entries):
                k, v = e[layer]
                keys[j, :, w - 1 - k.shape[1] :] = k
                values[j, :, w - 1 - v.shape[1] :] = v
            layers.append((keys, values))
        mask = torch.zeros((len(contexts), w), dtype=torch.long, device=self.device)  # [h, w]
        for j, c in enumerate(contexts):
            mask[j, w - len(c) :] = 1
        last = torch.tensor([[c[-1]] for c in contexts], device=self.device)  # [h, 1]
        positions = torch.tensor([[len(c) - 1] for c in contexts], device=self.device)  # [h, 1]
        out, routes = self._forward(input_ids=last, attention_mask=mask, position_ids=positions,
                                    past_key_values=DynamicCache(ddp_cache_data=layers), use_cache=True)
        ctx_routes = [None] * len(contexts)
        if routes is not None:  # the kept positions' routes, then the last token's
            ctx_routes = [torch.cat([kept[tuple(c)][1], routes[j : j + 1]]) for j, c in enumerate(contexts)]
        return ([(layer.keys, layer.values) for layer in out.past_key_values.layers], out.logits[:, -1, :].float(),
                ctx_routes)

    def _keep(self, cache, attn: torch.Tensor, cols: int, rows: list[tuple[int, int]], samples, new_tokens,
              routes: list[torch.Tensor | None]) -> None:
        """Keep the keys/values of samples stopped by the token budget, for the call that resumes
        them. Their last sampled token was never forwarded, so the cache holds all but the last
        token of the context they resume with; at the same version that call forwards only that
        token instead of prefilling the whole context. A weight sync (new version) drops them:
        keys/values of old weights must not be attended to by new ones."""
        if not isinstance(cache.layers[0], _SlabLayer):
            return
        for (row, s), sample_routes in zip(rows, routes):
            req = samples[s][0]
            key = tuple(req.prompt_ids + req.prefix_ids + new_tokens[s])
            if self.keep_kv_bytes <= 0 or key in self._kept:
                continue
            start = int(attn[row, :cols].argmax())  # first real column of this row
            entry = [(layer.keys[row, :, start:cols].clone(), layer.values[row, :, start:cols].clone())
                     for layer in cache.layers]  # [H, L-1, D] each
            size = sum(k.numel() * k.element_size() * 2 for k, _ in entry)
            if self._kept_bytes + size > self.keep_kv_bytes:
                continue
            self._kept[key] = (entry, sample_routes)
            self._kept_bytes += size

    def _sample(self, logits: torch.Tensor, sampling: SamplingParams,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        # logits: [A, V] -> token [A], logp [A] under the distribution sampled from (rlkit.algo.logprobs)
        if sampling.temperature <= 0:
            logp_all = sampling_logprobs(logits, 1.0)
            token = logp_all.argmax(dim=-1)
        else:
            logp_all = sampling_logprobs(logits, sampling.temperature, sampling.top_p)  # [A, V]
            token = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(1)  # [A]
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


class _SlabLayer(DynamicLayer):
    """One layer's keys/values in a buffer with spare columns, written in place. DynamicLayer
    concatenates at every decode step, i.e. copies every row's whole cache each step; on CPU with
    contexts of a few hundred tokens that copy costs as much as the rest of the step's attention.
    Here the buffer grows SPARE columns at a time, and only when rows are dropped (a copy anyway)
    is it trimmed back to its used columns + SPARE, so that copy stays the size of the cache."""

    SPARE = 32

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        super().__init__()
        # keys, values: [B, H, C, D], the first `length` columns filled
        self.dtype, self.device = keys.dtype, keys.device
        self._k, self._v, self._len = keys, values, length
        self.is_initialized = True
        self._view()

    def _view(self) -> None:
        self.keys, self.values = self._k[:, :, : self._len], self._v[:, :, : self._len]  # [B, H, len, D]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n = key_states.shape[2]
        if self._len + n > self._k.shape[2]:
            extra = self._len + n - self._k.shape[2] + self.SPARE
            self._k = torch.nn.functional.pad(self._k, (0, 0, 0, extra))
            self._v = torch.nn.functional.pad(self._v, (0, 0, 0, extra))
        self._k[:, :, self._len : self._len + n] = key_states
        self._v[:, :, self._len : self._len + n] = value_states
        self._len += n
        self._view()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        n = indices.numel()
        moved = (indices != torch.arange(n, device=indices.device)).nonzero().squeeze(1)
        if n <= self._k.shape[0] and bool((indices[moved] >= n).all()):
            # rows only come down from at or above n (see _fill_holes): move those rows, keep the rest
            self._k[moved], self._v[moved] = self._k[indices[moved]], self._v[indices[moved]]
            self._k, self._v = self._k[:n], self._v[:n]
        else:
            cut = min(self._k.shape[2], self._len + self.SPARE)
            self._k, self._v = self._k[indices, :, :cut], self._v[indices, :, :cut]
        self._view()

    def drop_front(self, n: int) -> None:
        self._k, self._v, self._len = self._k[:, :, n:], self._v[:, :, n:], self._len - n
        self._view()


def _select_rows(cache, indices: torch.Tensor) -> None:
    """Keep (or repeat) the cache rows `indices`, for every layer type: linear-attention states select
    their rows through `reorder_cache` (they have no `batch_select_indices`), hybrid layers both."""
    from transformers.cache_utils import LinearAttentionCacheLayerMixin

    for layer in cache.layers:
        if isinstance(layer, LinearAttentionCacheLayerMixin):
            layer.reorder_cache(indices)
            if isinstance(layer, DynamicLayer):
                DynamicLayer.batch_select_indices(layer, indices)
        else:
            layer.batch_select_indices(indices)


def _plain_cache_layers(config) -> bool:
    """Whether the cache transformers builds for this model is plain full-attention layers only (the slab's case)."""
    try:
        return all(type(layer) is DynamicLayer for layer in DynamicCache(config=config).layers)
    except Exception:  # a config the cache cannot read: the model's own cache is the safe choice
        return False


def _fill_holes(n: int, dropped: list[int]) -> list[int]:
    """Which old row each row keeps when the `dropped` rows leave a batch of n rows: rows stay in
    place, except that the holes below the new size take the surviving rows from above it, so a
    cache moves one row per hole instead of copying every row. E.g. n=5, dropped [1, 2] -> [0, 3, 4]."""
    gone = set(dropped)
    size = n - len(gone)
    order = list(range(size))
    above = [r for r in range(size, n) if r not in gone]
    for hole, row in zip(sorted(r for r in gone if r < size), above):
        order[hole] = row
    return order
