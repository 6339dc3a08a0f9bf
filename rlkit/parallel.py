"""How learner ranks share the work: data parallel (DDP, through accelerate) or fully sharded (FSDP2).

`learner.strategy` picks one (a registry); the learner talks to it only through this interface:
wrap the policy and optimizer, skip the gradient sync on all but the last micro-batch, backward,
clip, and move whole (unsharded) weights and optimizer state in and out.

- "ddp": every rank holds the whole model; accelerate prepares it (DDP across ranks, autocast
  for mixed precision). MoE policies set `find_unused_parameters` (a rank whose tokens reach no
  token of some per-module expert leaves it without a gradient), and module buffers are not
  re-broadcast at every forward (they are the same on every rank, and a broadcast inside a
  forward that only some ranks run would hang).
- "fsdp": parameters, gradients and optimizer state sharded over the ranks with torch's
  `fully_shard` (FSDP2), one unit per decoder layer plus the root, on CUDA or on CPU (gloo),
  mixed precision through FSDP's own policy. For models that do not fit one device. Every rank
  runs every forward: the whole-weights calls (`full_state_dict`) are collective.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from rlkit.registry import Registry

STRATEGIES = Registry("learner strategy")

_MIXED = {"bf16": torch.bfloat16, "fp16": torch.float16}


class _Base:
    def __init__(self, cfg, *, moe: bool = False) -> None:
        from accelerate import Accelerator, DistributedDataParallelKwargs

        self.cfg = cfg
        handlers = [DistributedDataParallelKwargs(find_unused_parameters=moe, broadcast_buffers=False)]
        # accelerate starts the process group from the rank environment and picks the device; under FSDP the
        # model is not given to it, so its autocast stays off there (FSDP casts by its own policy)
        self.accelerator = Accelerator(cpu=cfg.device == "cpu", kwargs_handlers=handlers,
                                       mixed_precision=cfg.mixed_precision if self.name == "ddp" else "no")
        self.device = self.accelerator.device
        self.num_processes = self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process

    name = ""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(tensor, reduction="sum") if self.num_processes > 1 else tensor


@STRATEGIES.register("ddp")
class DataParallel(_Base):
    name = "ddp"

    def prepare(self, policy: nn.Module, make_optimizer):
        """(model to call, optimizer); `make_optimizer(parameters)` builds the optimizer."""
        return self.accelerator.prepare(policy, make_optimizer(policy.parameters()))

    def unwrap(self, model: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(model)

    def no_sync(self, model: nn.Module, last: bool):
        return self.accelerator.no_sync(model) if not last and self.num_processes > 1 else contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def clip_grad_norm(self, params, max_norm: float) -> float:
        return float(self.accelerator.clip_grad_norm_(params, max_norm))

    def full_state_dict(self, model: nn.Module, *, everywhere: bool = False) -> dict[str, torch.Tensor]:
        """The whole weights as CPU tensors (every rank holds them all)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.unwrap(model).state_dict().items()}

    def load_full_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        self.unwrap(model).load_state_dict(state)

    def optimizer_state_file(self, directory: Path) -> Path | None:
        """Where this rank keeps optimizer state in a checkpoint (None: rank 0's copy serves every rank)."""
        return directory / "learner_state.pt" if self.is_main else None


@STRATEGIES.register("fsdp")
class FullyShardedDataParallel(_Base):
    name = "fsdp"

    def prepare(self, policy: nn.Module, make_optimizer):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy.to(self.device)
        if self.num_processes > 1:
            from rlkit.moe import give_every_expert_a_gradient

            give_every_expert_a_gradient(policy.model)
            mesh = init_device_mesh(self.device.type, (self.num_processes,))
            mixed = _MIXED.get(self.cfg.mixed_precision)
            precision = MixedPrecisionPolicy(param_dtype=mixed, reduce_dtype=torch.float32 if mixed else None)
            units = set(getattr(policy.model, "_no_split_modules", None) or ())
            for module in policy.model.modules():
                if type(module).__name__ in units:
                    fully_shard(module, mesh=mesh, mp_policy=precision)
            # the root is the wrapper, whose forward every path goes through: embeddings, final norm and
            # head are gathered there even when a path calls the decoder directly
            fully_shard(policy, mesh=mesh, mp_policy=precision)
        return policy, make_optimizer(policy.parameters())  # after sharding: the optimizer holds the shards

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model

    def no_sync(self, model: nn.Module, last: bool):
        if self.num_processes == 1:
            return contextlib.nullcontext()
        model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm(self, params, max_norm: float) -> float:
        norm = torch.nn.utils.clip_grad_norm_(list(params), max_norm)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def full_state_dict(self, model: nn.Module, *, everywhere: bool = False) -> dict[str, torch.Tensor]:
        """The whole weights as CPU tensors on rank 0 ({} on the others unless `everywhere`). A collective:
        every rank calls it."""
        if self.num_processes == 1:
            return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        if everywhere:
            full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
            return {k: v.detach().to("cpu", copy=True) for k, v in full.items()}
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_full_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        if self.num_processes == 1:
            model.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))

    def optimizer_state_file(self, directory: Path) -> Path | None:
        # each rank's optimizer holds its own shard: one file per rank (resume with the same number of ranks)
        rank = self.accelerator.process_index
        return directory / ("learner_state.pt" if rank == 0 else f"learner_state_rank{rank}.pt")
