"""The accelerate learner: forward/backward/step over a TrainBatch, with micro-batching.

Knows nothing of Ray: `rlkit.actors.LearnerActor` wraps it, and the same class runs on CPU,
one GPU, or N ranks (the rank environment comes from whoever starts it).

Normalisation: the driver passes `total_tokens` / `total_seqs` of the WHOLE generation batch
(all micro-batches, all ranks), so summing micro-batch losses gives the full-batch loss and
the gradient does not depend on the micro-batch size or the number of ranks.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from rlkit.algo import entropy_from_logits, kl_penalty, policy_loss
from rlkit.config import AlgoConfig, LearnerConfig
from rlkit.models import expert_load_metrics, experts_per_token, load_model, num_experts, resolve_dtype
from rlkit.types import TrainBatch


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float,
                   *, with_router: bool = False):
    """Log-prob of each next token. input_ids/attention_mask: [N, L] -> logp [N, L-1], logits, output."""
    kwargs = {"output_router_logits": True} if with_router else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    logits = out.logits[:, :-1, :].float()  # [N, L-1, V]
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(2, input_ids[:, 1:].unsqueeze(2)).squeeze(2)  # [N, L-1]
    return logp, logits, out


MIN_SHARED_PREFIX = 16  # fewer common leading tokens than this: one plain forward is as cheap


def shared_prefix_len(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """Leading tokens common to every (right-padded) row, leaving each row at least one token of its own."""
    if input_ids.shape[0] < 2 or bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
        return 0  # one row, or not right-padded
    same = int((input_ids == input_ids[:1]).all(dim=0).long().cumprod(dim=0).sum())
    return max(0, min(same, int(attention_mask.sum(dim=1).min()) - 1))


def shared_prefix_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float,
                           prefix_len: int, *, with_router: bool = False):
    """`token_logprobs` for right-padded rows that all begin with the same `prefix_len` tokens (the prompt
    template): the prefix runs once and its key/value cache, kept in the autograd graph, is shared by every
    row, so log-probs and gradients equal a full forward's up to float error for a fraction of the tokens.
    With `with_router` the returned output carries the whole batch's router logits and load-balancing loss
    (prefix tokens counted once per row, as in a full forward). Returns None where that cannot be done
    (an MoE model whose module has no `load_balancing_loss_func`); the caller then runs `token_logprobs`."""
    n, length = input_ids.shape
    p = prefix_len
    aux_fn = None
    if with_router:
        aux_fn = getattr(sys.modules.get(type(model).__module__), "load_balancing_loss_func", None)
        if aux_fn is None:
            return None
    kwargs = {"output_router_logits": True} if with_router else {}
    pre = model(input_ids=input_ids[:1, :p], use_cache=True, **kwargs)
    cache = pre.past_key_values
    cache.batch_repeat_interleave(n)  # differentiable: every row's gradient flows back into the one prefix pass
    positions = torch.arange(p, length, device=input_ids.device).unsqueeze(0).expand(n, -1)  # [N, L-P]
    # no attention mask: rows are right-padded, so under the causal mask no real token sees a pad
    suf = model(input_ids=input_ids[:, p:], position_ids=positions, past_key_values=cache, use_cache=True, **kwargs)
    logits = torch.cat([pre.logits.expand(n, -1, -1), suf.logits], dim=1)[:, :-1, :].float()  # [N, L-1, V]
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(2, input_ids[:, 1:].unsqueeze(2)).squeeze(2)  # [N, L-1]
    out = SimpleNamespace(logits=None, aux_loss=None, router_logits=None)
    if with_router:
        router = tuple(  # per layer [N*L, E], rows in the order a full forward would give them
            torch.cat([a.reshape(1, p, -1).expand(n, -1, -1), b.reshape(n, length - p, -1)], dim=1).flatten(0, 1)
            for a, b in zip(pre.router_logits, suf.router_logits)
        )
        out.router_logits = router
        out.aux_loss = aux_fn(router, router[0].shape[-1], experts_per_token(model), attention_mask)
    return logp, logits, out


MAX_TREE_TOKENS = 8192  # longest packed prefix tree: its [S, S] attention mask is materialised


def prefix_tree(input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Pack right-padded rows into their prefix tree, every distinct prefix once.

    Returns tokens [S], depth [S] (position in its rows), node [N, L] (tree node of each row position, 0 on
    padding) and mask [S, S] (bool: node i sees node j iff j is i or one of its ancestors); None if the rows
    are not right-padded. Rows of one GRPO group share their prompt, and every row the template."""
    if bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
        return None
    rows, lengths = input_ids.tolist(), attention_mask.sum(dim=1).tolist()
    index: dict[tuple[int, int], int] = {}  # (parent node, token) -> node; the root is -1
    tokens: list[int] = []
    depth: list[int] = []
    chains: list[list[int]] = []
    for row, length in zip(rows, lengths):
        parent, chain = -1, []
        for t in range(length):
            node = index.get((parent, row[t]))
            if node is None:
                node = index[(parent, row[t])] = len(tokens)
                tokens.append(row[t])
                depth.append(t)
            chain.append(node)
            parent = node
        chains.append(chain)
    device = input_ids.device
    size, width = len(tokens), input_ids.shape[1]
    node_of = torch.zeros(input_ids.shape, dtype=torch.long)
    mask = torch.zeros(size, size, dtype=torch.bool)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    for r, chain in enumerate(chains):
        c = torch.tensor(chain, dtype=torch.long)
        node_of[r, : len(chain)] = c
        mask[c.unsqueeze(1), c.unsqueeze(0)] = causal[: len(chain), : len(chain)]  # same pairs agree in every row
    return (torch.tensor(tokens, device=device), torch.tensor(depth, device=device), node_of.to(device),
            mask.to(device))


def packed_tree_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float, *,
                         with_router: bool = False):
    """`token_logprobs` computed on the rows' prefix tree packed into one sequence: every shared prefix (the
    template, a group's prompt, a common start of completions) runs once, there is no padding, and a tree
    attention mask gives each token exactly the context it has in its own row, so log-probs, gradients and
    the MoE load-balancing loss equal a full forward's up to float error. Returns None where it does not
    apply: rows not right-padded, a tree whose attention would cost more than the padded batch's, a model
    without the decoder / output-embedding split or an MoE module without `load_balancing_loss_func`.
    The model's head must be a plain projection of the decoder's last hidden state; `Learner` checks that
    once against a full forward before relying on it."""
    n, length = input_ids.shape
    aux_fn = None
    if with_router:
        aux_fn = getattr(sys.modules.get(type(model).__module__), "load_balancing_loss_func", None)
        if aux_fn is None:
            return None
    get_decoder = getattr(model, "get_decoder", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    decoder = get_decoder() if get_decoder is not None else None
    if decoder is None or head is None or decoder is model:
        return None
    tree = prefix_tree(input_ids, attention_mask)
    if tree is None:
        return None
    tokens, depth, node, mask = tree
    size = tokens.numel()
    if size > MAX_TREE_TOKENS or size * size > n * length * length:
        return None
    kwargs = {"output_router_logits": True} if with_router else {}
    # the decoder alone: the causal LM would compute its own aux loss against this 4-D mask
    out = decoder(input_ids=tokens.unsqueeze(0), position_ids=depth.unsqueeze(0),
                  attention_mask=mask.view(1, 1, size, size), use_cache=False, **kwargs)
    packed = head(out.last_hidden_state)[0]  # [S, V]
    logits = packed[node[:, :-1]].float()  # [N, L-1, V]: the node at position t predicts token t+1
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(2, input_ids[:, 1:].unsqueeze(2)).squeeze(2)  # [N, L-1]
    result = SimpleNamespace(logits=None, aux_loss=None, router_logits=None, packed_tokens=size)
    if with_router:
        flat = node.reshape(-1)
        router = tuple(r.reshape(size, -1)[flat] for r in out.router_logits)  # per layer [N*L, E], full-forward order
        result.router_logits = router
        result.aux_loss = aux_fn(router, router[0].shape[-1], experts_per_token(model), attention_mask)
    return logp, logits, result


class Learner:
    def __init__(self, model_path: str, cfg: LearnerConfig, algo: AlgoConfig, *, temperature: float = 1.0,
                 max_new_tokens: int | None = None, dtype: str = "float32", seed: int = 0) -> None:
        from accelerate import Accelerator

        torch.manual_seed(seed)
        if cfg.device == "cpu":
            torch.set_num_threads(max(1, cfg.threads))
        self.cfg, self.algo = cfg, algo
        self.temperature = temperature if temperature > 0 else 1.0
        self.max_new_tokens = max_new_tokens
        self.accelerator = Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision)
        model = load_model(model_path, dtype=resolve_dtype(dtype))
        model.config.use_cache = False
        self.is_moe = num_experts(model) > 0
        self.top_k = experts_per_token(model)
        self.ref_model = None
        if algo.kl_coef > 0:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False).to(self.accelerator.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                      weight_decay=cfg.weight_decay)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.model.train()
        self.step = 0
        # packed prefix trees: None until checked once against a full forward, then True or False
        self._tree_ok: bool | None = None

    # -- training ------------------------------------------------------------------------
    def train_step(self, batch: TrainBatch, *, total_tokens: float, total_seqs: int) -> dict[str, float]:
        """One optimizer step over `batch` (this rank's share of the generation batch)."""
        device = self.accelerator.device
        world = self.accelerator.num_processes
        micro = max(1, self.cfg.micro_batch_size)
        # the policy loss is normalised over the whole batch, so the order of rows changes none of its gradient
        # (the MoE balance loss is per micro-batch, as before): rows in token order put a group's shared prompt
        # in one micro-batch (packed prefix trees), else rows of similar lengths go together (less padding)
        if self._shared_forward_allowed() and self._tree_ok is not False:
            rows = [r[:n] for r, n in zip(batch.input_ids.tolist(), batch.attention_mask.sum(dim=1).tolist())]
            order = torch.tensor(sorted(range(len(rows)), key=rows.__getitem__), dtype=torch.long)
        else:
            order = torch.argsort(batch.attention_mask.sum(dim=1), descending=True, stable=True)
        batch = batch.select(order)
        chunks = [batch.select(slice(i, i + micro)).trim() for i in range(0, len(batch), micro)]
        sums: dict[str, float] = {}
        weight_total = 0.0
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            sync = self.accelerator.no_sync(self.model) if not last and world > 1 else contextlib.nullcontext()
            with sync:
                loss, metrics, tokens = self._micro_step(_to(chunk, device), total_tokens, total_seqs,
                                                         share=len(chunk) / (len(batch) * world))
                # DDP averages gradients over ranks; our loss is already normalised globally
                self.accelerator.backward(loss * world)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v * tokens
            weight_total += tokens
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        out = {k: v / max(weight_total, 1.0) for k, v in sums.items()}
        out["grad_norm"] = float(grad_norm)
        out["learner/tokens"] = weight_total
        return out

    def _micro_step(self, b: TrainBatch, total_tokens: float, total_seqs: int, share: float):
        algo = self.algo
        result = None
        if self._shared_forward_allowed():
            if self._tree_ok is not False:
                result = packed_tree_logprobs(self.model, b.input_ids, b.attention_mask, self.temperature,
                                              with_router=self.is_moe)
                if result is not None and self._tree_ok is None:
                    self._tree_ok = self._tree_matches(b, result)
                    if not self._tree_ok:
                        result = None
            prefix = shared_prefix_len(b.input_ids, b.attention_mask) if result is None else 0
            if prefix >= MIN_SHARED_PREFIX:
                result = shared_prefix_logprobs(self.model, b.input_ids, b.attention_mask, self.temperature,
                                                prefix, with_router=self.is_moe)
        if result is None:
            result = token_logprobs(self.model, b.input_ids, b.attention_mask, self.temperature,
                                    with_router=self.is_moe)
        logp, logits, out = result
        loss, pl_metrics = policy_loss(
            logp, b.old_logp, b.advantages, b.loss_mask,
            clip_low=algo.clip_low, clip_high=algo.clip_high, aggregation=algo.aggregation,
            max_tokens=self.max_new_tokens, level=algo.level, total_tokens=total_tokens,
            total_seqs=total_seqs, token_weights=b.token_weights,
        )
        mask = b.loss_mask
        tokens = float(mask.sum())
        metrics = {f"actor/{k}": float(v) for k, v in pl_metrics.items() if k in
                   ("clip_frac_low", "clip_frac_high", "ratio_mean", "ratio_max")}
        metrics["actor/pg_loss"] = float(loss.detach()) * total_tokens / max(tokens, 1.0)
        with torch.no_grad():
            # train-vs-rollout mismatch: same weights sampled these tokens (on-policy) or older ones
            delta = (logp.detach() - b.old_logp) * mask
            metrics["mismatch/abs_logp_diff"] = float(delta.abs().sum() / max(tokens, 1.0))
            metrics["mismatch/kl"] = float(((-delta).exp() - 1 + delta).mul(mask).sum() / max(tokens, 1.0))
        if algo.entropy_coef > 0:
            entropy = entropy_from_logits(logits)  # [N, L-1]
            loss = loss - algo.entropy_coef * (entropy * mask).sum() / total_tokens
            metrics["actor/entropy"] = float((entropy.detach() * mask).sum() / max(tokens, 1.0))
        else:
            with torch.no_grad():
                metrics["actor/entropy"] = float((entropy_from_logits(logits.detach()) * mask).sum() / max(tokens, 1.0))
        if self.ref_model is not None:
            with torch.no_grad():
                ref_logp, _, _ = token_logprobs(self.ref_model, b.input_ids, b.attention_mask, self.temperature)
            kl = kl_penalty(logp, ref_logp, kind=algo.kl_kind)  # [N, L-1]
            loss = loss + algo.kl_coef * (kl * mask).sum() / total_tokens
            metrics["actor/kl"] = float((kl.detach() * mask).sum() / max(tokens, 1.0))
        if self.is_moe:
            aux = getattr(out, "aux_loss", None)
            if aux is not None and algo.router_aux_coef > 0:
                loss = loss + algo.router_aux_coef * aux * share
            if aux is not None:
                metrics["moe/aux_loss"] = float(aux.detach())
            if getattr(out, "router_logits", None) is not None:
                metrics.update(expert_load_metrics(out.router_logits, b.attention_mask, self.top_k))
        return loss, metrics, tokens

    def _shared_forward_allowed(self) -> bool:
        """Prefix sharing calls the unwrapped model (and the shared-prefix path forwards twice before one
        backward), which DDP does not allow; activation checkpointing turns the KV cache off."""
        return self.accelerator.num_processes == 1 and not _checkpointing(self.model)

    @torch.no_grad()
    def _tree_matches(self, b: TrainBatch, result) -> bool:
        """One-time check that the packed tree reproduces this model's full forward (a head that is not a plain
        projection of the last hidden state, or an attention that ignores 4-D masks, would not)."""
        logp, _, out = result
        ref_logp, _, ref = token_logprobs(self.model, b.input_ids, b.attention_mask, self.temperature,
                                          with_router=self.is_moe)
        exact = next(self.model.parameters()).dtype == torch.float32 and self.cfg.mixed_precision == "no"
        tol = 1e-3 if exact else 5e-2
        mask = b.loss_mask > 0
        ok = bool(((logp.detach() - ref_logp).abs()[mask].max() <= tol).item()) if bool(mask.any()) else True
        if ok and self.is_moe and getattr(ref, "aux_loss", None) is not None and out.aux_loss is not None:
            ok = abs(float(out.aux_loss) - float(ref.aux_loss)) <= tol * max(1.0, abs(float(ref.aux_loss)))
        if not ok:
            warnings.warn("packed prefix-tree forward does not reproduce this model's full forward; "
                          "the learner uses the plain or shared-prefix forward instead")
        return ok

    # -- weights and state ---------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        model = self.accelerator.unwrap_model(self.model)
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    @torch.no_grad()
    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """Current-policy log-probs of the batch's tokens: [N, L-1] (no grad, eval mode)."""
        self.model.eval()
        try:
            b = _to(batch, self.accelerator.device)
            logp, _, _ = token_logprobs(self.model, b.input_ids, b.attention_mask, self.temperature)
        finally:
            self.model.train()
        return logp.cpu()

    def save(self, directory: str | Path) -> None:
        """HF-format weights plus optimizer, step and RNG: enough to continue bit-for-bit."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if not self.accelerator.is_main_process:
            return
        self.accelerator.unwrap_model(self.model).save_pretrained(directory)
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "step": self.step,
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
            },
            directory / "learner_state.pt",
        )

    def load(self, directory: str | Path) -> int:
        directory = Path(directory)
        model = self.accelerator.unwrap_model(self.model)
        # from_pretrained undoes the on-disk layout conversions (e.g. fused MoE experts)
        saved = load_model(str(directory), dtype=next(model.parameters()).dtype)
        model.load_state_dict(saved.state_dict())
        del saved
        state = torch.load(directory / "learner_state.pt", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        return self.step


def _checkpointing(model) -> bool:
    """Whether activation (gradient) checkpointing is on: it turns the KV cache off, so no shared prefix."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # the newer spelling first
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def _to(b: TrainBatch, device) -> TrainBatch:
    def mv(t):
        return None if t is None else t.to(device)

    return TrainBatch(mv(b.input_ids), mv(b.attention_mask), mv(b.loss_mask), mv(b.old_logp), mv(b.advantages),
                      ref_logp=mv(b.ref_logp), token_weights=mv(b.token_weights), versions=mv(b.versions))


def set_rank_env(rank: int, world_size: int, master_addr: str, master_port: int) -> None:
    """The environment accelerate reads to join a process group (set before building a Learner)."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": str(world_size),
                       "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)})
