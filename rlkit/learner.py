"""The learner: forward/backward/step over a TrainBatch, with micro-batching, on any number of ranks.

Knows nothing of Ray: `rlkit.actors.LearnerActor` wraps it, and the same class runs on CPU,
one GPU, or N ranks (the rank environment comes from whoever starts it); `learner.strategy`
(rlkit.parallel) says whether ranks replicate the model (DDP) or shard it (FSDP).

Normalisation: the driver passes `total_tokens` / `total_seqs` of the WHOLE generation batch
(all micro-batches, all ranks), so summing micro-batch losses gives the full-batch loss and
the gradient does not depend on the micro-batch size or the number of ranks.

Forward: the model is wrapped in `rlkit.forward.PolicyForward` and that wrapper is what the
strategy prepares, so autocast, DDP and FSDP apply to every forward path. The fast paths
(packed prefix tree, shared prefix, chunked output projection) are each checked once, when the
learner starts, against the model's full forward on the same synthetic rows on every rank (a
check that depended on the data could differ between ranks, and could pass on rows with nothing
to compare). Dropout is switched off: RL ratios compare the policy with itself, and a dropout
mask drawn differently at sampling and at training would make the on-policy ratio noise
instead of 1.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch

from rlkit import moe
from rlkit.algo import kl_penalty, policy_loss
from rlkit.checkpoint import rng_state, set_rng_state
from rlkit.config import AlgoConfig, LearnerConfig
from rlkit.forward import MIN_SHARED_PREFIX, ForwardOut, PolicyForward, token_logprobs  # noqa: F401  (token_logprobs: the reference, re-exported)
from rlkit.metrics import merge_metrics
from rlkit.models import disable_dropout, experts_per_token, load_model, num_experts, resolve_dtype
from rlkit.parallel import STRATEGIES
from rlkit.types import TrainBatch

FAST_PATHS = ("tree", "shared_prefix", "plain")  # tried in this order; "full" is the reference and the fallback


class Learner:
    def __init__(self, model_path: str, cfg: LearnerConfig, algo: AlgoConfig, *, temperature: float = 1.0,
                 top_p: float = 1.0, max_new_tokens: int | None = None, dtype: str = "float32", seed: int = 0,
                 trust_remote_code: bool = False) -> None:
        torch.manual_seed(seed)
        if cfg.device == "cpu":
            torch.set_num_threads(max(1, cfg.threads))
        self.cfg, self.algo = cfg, algo
        self.temperature = temperature if temperature > 0 else 1.0
        self.top_p = top_p if temperature > 0 else 1.0  # greedy sampling is scored untruncated at T = 1
        self.max_new_tokens = max_new_tokens
        self.trust_remote_code = trust_remote_code
        model = load_model(model_path, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code)
        model.config.use_cache = False
        disable_dropout(model)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.is_moe = num_experts(model) > 0
        self.top_k, self.num_experts = experts_per_token(model), num_experts(model)
        routers = moe.instrument(model)
        self.sigmoid_routers = bool(routers) and all(moe.is_sigmoid_router(r) for r in routers)
        self.balancer = moe.BiasBalancer(model, algo.bias_balance_speed) if algo.bias_balance_speed > 0 else None
        if algo.routing_replay and not routers:
            raise ValueError("algo.routing_replay needs an MoE policy; this model has no routers")
        self.strategy = STRATEGIES.get(cfg.strategy)(cfg, moe=self.is_moe)
        self.device = self.strategy.device
        self.reference = None
        if algo.kl_coef > 0:
            self.reference = PolicyForward(copy.deepcopy(model).eval().requires_grad_(False),
                                           chunk_tokens=cfg.logit_chunk_tokens).to(self.device)
        self.model, self.optimizer = self.strategy.prepare(
            PolicyForward(model, chunk_tokens=cfg.logit_chunk_tokens),
            lambda params: torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay))
        self.model.train()
        self.step = 0
        self.verified = self._verify_paths()  # fast path -> whether it reproduces the full forward

    @property
    def policy(self):
        """The Hugging Face model being trained (unwrapped)."""
        return self.strategy.unwrap(self.model).model

    # -- training ------------------------------------------------------------------------
    def train_step(self, batch: TrainBatch, *, total_tokens: float, total_seqs: int) -> dict[str, float]:
        """One optimizer step over `batch` (this rank's share of the generation batch)."""
        world = self.strategy.num_processes
        micro = max(1, self.cfg.micro_batch_size)
        # the policy loss is normalised over the whole batch, so the order of rows changes none of its gradient
        # (the MoE balance loss is per micro-batch, as before): rows in token order put a group's shared prompt
        # in one micro-batch (packed prefix trees), else rows of similar lengths go together (less padding)
        if self.verified.get("tree"):
            rows = [r[:n] for r, n in zip(batch.input_ids.tolist(), batch.attention_mask.sum(dim=1).tolist())]
            order = torch.tensor(sorted(range(len(rows)), key=rows.__getitem__), dtype=torch.long)
        else:
            order = torch.argsort(batch.attention_mask.sum(dim=1), descending=True, stable=True)
        batch = batch.select(order)
        chunks = [batch.select(slice(i, i + micro)).trim() for i in range(0, len(batch), micro)]
        parts: list[tuple[dict[str, float], float]] = []
        for index, chunk in enumerate(chunks):
            with self.strategy.no_sync(self.model, last=index == len(chunks) - 1):
                loss, metrics, tokens = self._micro_step(_to(chunk, self.device), total_tokens, total_seqs,
                                                         share=len(chunk) / (len(batch) * world))
                # the ranks average gradients; our loss is already normalised over the whole batch
                self.strategy.backward(loss * world)
            parts.append((metrics, tokens))
        grad_norm = self.strategy.clip_grad_norm(self.model.parameters(), self.cfg.max_grad_norm)
        if self.cfg.offload_optimizer:
            _move_optimizer_state(self.optimizer, self.device)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.cfg.offload_optimizer:  # until the next step, the rollout engines may have the device memory
            _move_optimizer_state(self.optimizer, "cpu")
        self.step += 1
        moe.set_replay(self.policy, None)
        if self.balancer is not None:
            self.balancer.update(self.strategy.all_reduce_sum if world > 1 else None)
        if self.reference is not None and self.algo.ref_refresh_every > 0 and self.step % self.algo.ref_refresh_every == 0:
            self.reference.load_state_dict(self.strategy.full_state_dict(self.model, everywhere=True))
        out = merge_metrics(parts)
        out["grad_norm"] = grad_norm
        out["learner/tokens"] = sum(tokens for _, tokens in parts)
        return out

    def forward(self, b: TrainBatch, *, entropy: bool = False) -> ForwardOut:
        """Token log-probs of `b` (on this learner's device) through the fastest verified path that applies."""
        paths = tuple(p for p in self._fast_paths() if self.verified.get(p))
        return self.model(b.input_ids, b.attention_mask, paths=paths, entropy=entropy, temperature=self.temperature,
                          top_p=self.top_p, router=self.is_moe)

    def _fast_paths(self) -> tuple[str, ...]:
        if self.algo.routing_replay:  # replayed routes are per row: no path that shares tokens between rows
            return ("plain",) if self.cfg.forward in ("auto", "plain") else ()
        if self.cfg.forward != "auto":
            return () if self.cfg.forward == "full" else (self.cfg.forward,)
        # no key/value cache under activation checkpointing; and sharded ranks must all run the same number of
        # decoder calls, which the two-call shared-prefix path would break where ranks choose different paths
        if self.cfg.gradient_checkpointing or self.cfg.strategy == "fsdp":
            return tuple(p for p in FAST_PATHS if p != "shared_prefix")
        return FAST_PATHS

    @torch.no_grad()
    def _verify_paths(self) -> dict[str, bool]:
        """Check each fast path once against the full forward, on synthetic rows the same on every rank: four
        right-padded rows of different lengths sharing a template-long prefix, pairs sharing a prompt (so the
        tree and shared-prefix paths apply), loss on every token."""
        vocab = self.policy.get_input_embeddings().num_embeddings
        g = torch.Generator().manual_seed(1234)
        start = torch.randint(0, vocab, (MIN_SHARED_PREFIX + 2,), generator=g)
        rows = [torch.cat([start, torch.randint(0, vocab, (3,), generator=torch.Generator().manual_seed(i // 2)),
                           torch.randint(0, vocab, (4 + 2 * i,), generator=g)]) for i in range(4)]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)  # [4, L]
        attn = torch.zeros(len(rows), width, dtype=torch.long)  # [4, L]
        for i, r in enumerate(rows):
            ids[i, : len(r)], attn[i, : len(r)] = r, 1
        ids, attn = ids.to(self.device), attn.to(self.device)
        mask = attn[:, 1:].bool()
        kwargs = dict(temperature=self.temperature, top_p=self.top_p, router=self.is_moe)
        ref = self.model(ids, attn, paths=(), **kwargs)
        exact = next(self.policy.parameters()).dtype == torch.float32 and self.cfg.mixed_precision == "no"
        # fp32: every token within 1e-3. Half precision rounds differently along each path (up to ~0.1 on a
        # token here), so there the mean must stay small and no token may be far off; a path that is wrong
        # (a head scaled elsewhere, a mask ignored) is off by far more on most tokens
        max_tol, mean_tol = (1e-3, 1e-3) if exact else (0.5, 2e-2)
        verified = {}
        for path in self._fast_paths():
            try:
                out = self.model(ids, attn, paths=(path,), **kwargs)
            except Exception as err:  # an architecture the path cannot drive: the path is not used
                warnings.warn(f"the {path!r} forward fails on this model ({type(err).__name__}: {err}); "
                              "the learner does not use it")
                verified[path] = False
                continue
            diff = (out.logp.float() - ref.logp.float()).abs()[mask]
            ok = out.path == path and float(diff.max()) <= max_tol and float(diff.mean()) <= mean_tol
            if ok and ref.aux_loss is not None and out.aux_loss is not None:
                ok = abs(float(out.aux_loss) - float(ref.aux_loss)) <= mean_tol * max(1.0, abs(float(ref.aux_loss)))
            if not ok and out.path == path:
                warnings.warn(f"the {path!r} forward does not reproduce this model's full forward; "
                              "the learner does not use it")
            verified[path] = ok
        return verified

    def _micro_step(self, b: TrainBatch, total_tokens: float, total_seqs: int, share: float):
        algo = self.algo
        if algo.routing_replay:
            if b.routes is None:
                raise ValueError("algo.routing_replay: the batch carries no routes (the rollout engine must record them)")
            moe.set_replay(self.policy, b.routes.flatten(0, 1))  # [n*l, layers, K], the decoder's token order
            moe.replay_mismatch(self.policy)  # start counting at this forward
        out = self.forward(b, entropy=algo.entropy_coef > 0 or self.cfg.log_entropy)
        logp = out.logp  # [n, l-1]
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
            # train-vs-rollout mismatch, KL(rollout || train) from the rollout's own samples (k3):
            # r = p_train / p_rollout, r - 1 - log r
            delta = (logp.detach() - b.old_logp) * mask  # [n, l-1]
            metrics["mismatch/abs_logp_diff"] = float(delta.abs().sum() / max(tokens, 1.0))
            metrics["mismatch/kl"] = float((delta.exp() - 1 - delta).mul(mask).sum() / max(tokens, 1.0))
        if out.entropy is not None:
            if algo.entropy_coef > 0:
                loss = loss - algo.entropy_coef * (out.entropy * mask).sum() / total_tokens
            metrics["actor/entropy"] = float((out.entropy.detach() * mask).sum() / max(tokens, 1.0))
        if self.reference is not None:
            with torch.no_grad():
                ref_logp = self.reference(b.input_ids, b.attention_mask, temperature=self.temperature,
                                          top_p=self.top_p, paths=("plain",)).logp  # [n, l-1]
            kl = kl_penalty(logp, ref_logp, kind=algo.kl_kind)  # [n, l-1]
            loss = loss + algo.kl_coef * (kl * mask).sum() / total_tokens
            metrics["actor/kl"] = float((kl.detach() * mask).sum() / max(tokens, 1.0))
        if out.experts is not None:
            loads = moe.expert_loads(out.experts, b.attention_mask, self.num_experts)  # [layers, E]
            metrics.update(moe.load_metrics(loads))
            if self.balancer is not None:
                self.balancer.add(loads)
            if out.aux_loss is not None:
                metrics["moe/aux_loss"] = float(out.aux_loss.detach())
                if algo.router_aux_coef > 0:
                    loss = loss + algo.router_aux_coef * out.aux_loss * share
            if self.sigmoid_routers and algo.seq_balance_coef > 0:
                seq_loss = moe.sequence_balance_loss(out.router_logits, out.experts, b.attention_mask, self.top_k)
                loss = loss + algo.seq_balance_coef * seq_loss * share
                metrics["moe/seq_balance_loss"] = float(seq_loss.detach())
            if b.routes is not None:  # how often training routes a token differently from the rollout
                differ = (moe.replay_mismatch(self.policy) if algo.routing_replay
                          else moe.route_mismatch(out.experts, b.routes, b.attention_mask))
                if differ is not None:
                    metrics["moe/route_mismatch"] = differ
        return loss, metrics, tokens

    # -- weights and state ---------------------------------------------------------------
    def state_dict(self, everywhere: bool = False) -> dict[str, torch.Tensor]:
        """The whole policy's weights as CPU tensors on rank 0, {} on the others unless `everywhere` (every
        rank calls it: under FSDP gathering is a collective)."""
        full = self.strategy.full_state_dict(self.model, everywhere=everywhere)  # keys "model.<name>" (the wrapper)
        if not (self.strategy.is_main or everywhere):
            return {}
        return {k.removeprefix("model."): v for k, v in full.items()}

    @torch.no_grad()
    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """Current-policy log-probs of the batch's tokens: [N, L-1] (no grad)."""
        return self.forward(_to(batch, self.device)).logp.float().cpu()

    def save(self, directory: str | Path) -> None:
        """HF-format weights plus optimizer, step and RNG: enough to continue bit-for-bit. Every rank calls it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = self.state_dict()
        if self.strategy.is_main:
            self.policy.save_pretrained(directory, state_dict=weights)
        state_file = self.strategy.optimizer_state_file(directory)
        if state_file is not None:
            torch.save({"optimizer": self.optimizer.state_dict(), "step": self.step,
                        "rng": rng_state()}, state_file)

    def load(self, directory: str | Path) -> int:
        directory = Path(directory)
        # from_pretrained undoes the on-disk layout conversions (e.g. fused MoE experts)
        saved = load_model(str(directory), dtype=next(self.policy.parameters()).dtype,
                           trust_remote_code=self.trust_remote_code)
        self.strategy.load_full_state_dict(self.model, {f"model.{k}": v for k, v in saved.state_dict().items()})
        del saved
        state_file = self.strategy.optimizer_state_file(directory) or directory / "learner_state.pt"
        state = torch.load(state_file, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        set_rng_state(state["rng"])
        return self.step


def _move_optimizer_state(optimizer, device) -> None:
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device, non_blocking=True)


def _to(b: TrainBatch, device) -> TrainBatch:
    def mv(t):
        return None if t is None else t.to(device)

    return TrainBatch(mv(b.input_ids), mv(b.attention_mask), mv(b.loss_mask), mv(b.old_logp), mv(b.advantages),
                      token_weights=mv(b.token_weights), versions=mv(b.versions), routes=b.routes)


def set_rank_env(rank: int, world_size: int, master_addr: str, master_port: int) -> None:
    """The environment accelerate reads to join a process group (set before building a Learner)."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": str(world_size),
                       "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)})
