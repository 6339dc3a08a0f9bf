"""The supervised learner: SFT and DPO optimizer steps on accelerate, HF-format checkpoints.

The same stack as the RL learner (an `accelerate.Accelerator`, AdamW, gradient clipping,
micro-batching with the loss normalised over the whole batch, the MoE load-balancing loss,
`save_pretrained` checkpoints with optimizer/step/RNG beside them, readable by
`rlkit.checkpoint`), without Ray: supervised steps need no rollouts, so the learner runs in the
recipe's own process. Under `accelerate launch` the same code runs data-parallel.
"""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path

import torch

from rlkit.checkpoint import rng_state, set_rng_state
from rlkit.models import load_model, num_experts, resolve_dtype
from rlkit.sft.config import OptimConfig
from rlkit.sft.data import SFTBatch
from rlkit.sft.losses import dpo_loss, sequence_logprob, sft_loss, token_logprobs


def lr_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Linear warm-up over `warmup_steps`, then cosine from lr to lr * min_lr_ratio at `total_steps`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class SupervisedLearner:
    def __init__(self, model_path: str, cfg: OptimConfig, *, total_steps: int, dtype: str = "float32",
                 seed: int = 0, reference: bool = False, trust_remote_code: bool = False) -> None:
        from accelerate import Accelerator

        torch.manual_seed(seed)
        if cfg.device == "cpu":
            torch.set_num_threads(max(1, cfg.threads))
        self.cfg, self.total_steps = cfg, max(1, total_steps)
        self.accelerator = Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision)
        model = load_model(model_path, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code)
        model.config.use_cache = False
        self.is_moe = num_experts(model) > 0
        self.ref_model = None
        if reference:  # DPO: the policy before training, frozen
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False).to(self.accelerator.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                      weight_decay=cfg.weight_decay)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.model.train()
        self.step = 0

    # -- steps ---------------------------------------------------------------------------
    def sft_step(self, batch: SFTBatch) -> dict[str, float]:
        """One optimizer step of completion-only NLL over `batch` (token mean over the whole batch)."""
        total_tokens = float(batch.loss_mask.sum())
        sums = {"sft/loss": 0.0, "moe/aux_loss": 0.0}
        chunks = self._chunks(len(batch))
        for i, rows in enumerate(chunks):
            mb = _to(batch.select(rows), self.accelerator.device)
            with self._sync(i == len(chunks) - 1):
                logp, out = token_logprobs(self.model, mb.input_ids, mb.attention_mask, with_router=self.is_moe)
                loss = sft_loss(logp, mb.loss_mask, total_tokens)
                sums["sft/loss"] += float(loss.detach())
                loss = loss + self._aux(out, sums, share=len(mb) / len(batch))
                self.accelerator.backward(loss)
        metrics = self._optimizer_step()
        metrics.update({k: v for k, v in sums.items() if self.is_moe or not k.startswith("moe/")})
        metrics["sft/tokens"] = total_tokens
        return metrics

    def dpo_step(self, chosen: SFTBatch, rejected: SFTBatch, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
                 beta: float, nll_coef: float = 0.0, length_normalize: bool = False) -> dict[str, float]:
        """One optimizer step of the DPO loss over pairs (row i of `chosen` with row i of `rejected`);
        ref_*: [N] reference sequence log-probs of the same rows (`sequence_logprobs` before training).
        `nll_coef` > 0 adds that times the chosen completions' token-mean NLL (the RPO form, arXiv
        2404.19733), which keeps DPO from lowering the chosen answers along with the rejected ones.
        `length_normalize` compares per-token mean log-probs instead of sums (ref_* must then be means
        too): a sum rewards ending early, which DPO between short and long answers otherwise learns."""
        n = len(chosen)
        chosen_tokens = float(chosen.loss_mask.sum())
        sums: dict[str, float] = {"moe/aux_loss": 0.0, "dpo/chosen_nll": 0.0}
        chunks = self._chunks(n)
        for i, rows in enumerate(chunks):
            device = self.accelerator.device
            c, r = _to(chosen.select(rows), device), _to(rejected.select(rows), device)
            with self._sync(i == len(chunks) - 1):
                logp_c, out_c = token_logprobs(self.model, c.input_ids, c.attention_mask, with_router=self.is_moe)
                logp_r, out_r = token_logprobs(self.model, r.input_ids, r.attention_mask, with_router=self.is_moe)
                loss, metrics = dpo_loss(sequence_logprob(logp_c, c.loss_mask, mean=length_normalize),
                                         sequence_logprob(logp_r, r.loss_mask, mean=length_normalize),
                                         ref_chosen[rows].to(device), ref_rejected[rows].to(device), beta)
                share = len(c) / n
                loss = loss * share  # the mean over the whole batch of pairs
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v * share
                sums["dpo/loss"] = sums.get("dpo/loss", 0.0) + float(loss.detach())
                nll = sft_loss(logp_c, c.loss_mask, chosen_tokens)  # this chunk's share of the batch's token mean
                sums["dpo/chosen_nll"] += float(nll.detach())
                if nll_coef > 0:
                    loss = loss + nll_coef * nll
                loss = loss + self._aux(out_c, sums, share=share / 2) + self._aux(out_r, sums, share=share / 2)
                self.accelerator.backward(loss)
        metrics = self._optimizer_step()
        metrics.update({k: v for k, v in sums.items() if self.is_moe or not k.startswith("moe/")})
        return metrics

    @torch.no_grad()
    def sequence_logprobs(self, batch: SFTBatch, *, reference: bool = False, mean: bool = False) -> torch.Tensor:
        """Completion log-probs summed (or averaged, `mean`) per row, [N], under the policy or the frozen reference."""
        model = self.ref_model if reference else self.model
        if model is None:
            raise ValueError("this learner was built without a reference model")
        was_training = model.training
        model.eval()
        out = []
        try:
            for rows in self._chunks(len(batch)):
                mb = _to(batch.select(rows), self.accelerator.device)
                logp, _ = token_logprobs(model, mb.input_ids, mb.attention_mask)
                out.append(sequence_logprob(logp, mb.loss_mask, mean=mean).cpu())
        finally:
            model.train(was_training)
        return torch.cat(out)

    def _chunks(self, n: int) -> list[slice]:
        micro = max(1, self.cfg.micro_batch_size)
        return [slice(i, min(i + micro, n)) for i in range(0, n, micro)]

    def _sync(self, last: bool):
        if last or self.accelerator.num_processes == 1:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(self.model)

    def _aux(self, out, sums: dict[str, float], share: float) -> torch.Tensor | float:
        aux = getattr(out, "aux_loss", None)
        if not self.is_moe or aux is None:
            return 0.0
        sums["moe/aux_loss"] += float(aux.detach()) * share
        return self.cfg.router_aux_coef * aux * share if self.cfg.router_aux_coef > 0 else 0.0

    def _optimizer_step(self) -> dict[str, float]:
        lr = lr_at(self.step, self.cfg, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm or math.inf)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"lr": lr, "grad_norm": float(grad_norm)}

    # -- weights and state ---------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """HF-format weights plus optimizer, step and RNG (the RL learner's checkpoint layout)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if not self.accelerator.is_main_process:
            return
        self.accelerator.unwrap_model(self.model).save_pretrained(directory)
        torch.save({"optimizer": self.optimizer.state_dict(), "step": self.step,
                    "rng": rng_state()},
                   directory / "learner_state.pt")

    def load(self, directory: str | Path) -> int:
        directory = Path(directory)
        model = self.accelerator.unwrap_model(self.model)
        saved = load_model(str(directory), dtype=next(model.parameters()).dtype)
        model.load_state_dict(saved.state_dict())
        del saved
        state = torch.load(directory / "learner_state.pt", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        set_rng_state(state["rng"])
        return self.step


def _to(b: SFTBatch, device) -> SFTBatch:
    return SFTBatch(b.input_ids.to(device), b.attention_mask.to(device), b.loss_mask.to(device))
