"""In-place weight sync into a running vLLM engine: the learner's transformers state dict in, the
engine's weights replaced without a restart. Used by `rlkit.rollout.vllm.VLLMEngine.load_weights`."""

from __future__ import annotations

from typing import Any

import torch


class CheckpointFormat:
    """Turns a transformers state dict into checkpoint-format tensors, the names and layouts vLLM's
    loaders read (see `reload_in_place`)."""

    def __init__(self, model_path: str, trust_remote_code: bool = False) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        with torch.device("meta"):  # only its class and config are read: no memory, no init
            self.model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)

    def __call__(self, state_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
        from transformers.core_model_loading import revert_weight_conversion

        return revert_weight_conversion(self.model, dict(state_dict))


def reload_in_place(llm, checkpoint_format: CheckpointFormat, state_dict: dict[str, Any], *, cpu: bool) -> None:
    """Load `state_dict` into the model of every worker of `llm` (a `vllm.LLM`), without a restart.

    1. Names and layouts: transformers 5 holds some weights in a layout of its own (MoE experts
       fused, `mlp.experts.gate_up_proj` [E, 2I, H]), while vLLM's loaders read checkpoint names
       (`mlp.experts.{e}.gate_proj.weight` ...). `revert_weight_conversion`, the function
       `save_pretrained` uses, turns the state dict back into checkpoint format for any model
       transformers converts, instead of a map written here for one architecture.
    2. Every worker loads those tensors with vLLM's `reload_weights` (through `collective_rpc`, vLLM's
       interface for running code in its workers; the same call on CPU and GPU, and no worker
       extension class to register). On GPUs this is the whole sync. The tensors travel as arguments:
       by reference with one worker, through vLLM's message queue with tensor parallelism (for large
       models vLLM's NCCL weight-transfer engine would avoid that copy; not used here).
    3. On CPU only, `_refresh_cpu_kernels` then redoes two steps that the reload skips.
    The caller resets the prefix cache: its keys/values were computed by the old weights.
    """
    weights = checkpoint_format(state_dict)
    llm.collective_rpc(_reload_worker_weights, args=(list(weights.items()), cpu))


def _reload_worker_weights(worker, weights: list[tuple[str, torch.Tensor]], cpu: bool) -> int:
    """Runs in each vLLM worker (`collective_rpc`): load checkpoint-format weights in place."""
    runner = worker.model_runner
    if hasattr(runner, "reload_weights"):
        runner.reload_weights(weights_iterator=iter(weights))
    else:
        from vllm.model_executor.model_loader.reload import reload_weights

        reload_weights(worker.vllm_config, runner.get_model(), weights_iterator=iter(weights), weights_path=None,
                       is_checkpoint_format=True)
    return _refresh_cpu_kernels(runner.get_model()) if cpu else 0


def _refresh_cpu_kernels(model: torch.nn.Module) -> int:
    """Redo the CPU weight packing that vLLM's in-place reload leaves stale; returns the layers redone.

    - MoE experts: on a reload `UnquantizedFusedMoEMethod` sees its kernel already built
      (`is_weight_update`), copies the new, unpacked expert weights into the storage that holds the
      prepacked ones and skips the prepack, so the CPU kernel reads unpacked data as packed. Without
      the experts' own `process_weights_after_loading` run again, the tiny MoE's log-probs after a
      sync are off by 5 to 16 nats from transformers holding the same weights (vLLM 0.32, fp32).
    - Embedding and LM head: `process_weights_after_loading` of the embedding method builds the
      head's CPU GEMM (`cpu_linear`) from its weight. A tied head has no weights of its own to reload,
      so that GEMM is never rebuilt; where vLLM packs a copy of the weight for it (its small-GEMM
      kernel: AMX with bf16/fp16) it would keep computing with the first weights. Rebuilding it is
      cheap and exact. On a CPU without AMX in fp32 (where rlkit's tests run) the head reads the weight
      in place and the sync is exact without this step; the experts' step is what the tests rely on.
    Dense linear layers need nothing: the reload re-runs their processing on the new weights.
    """
    from vllm.model_executor.layers.fused_moe.unquantized_fused_moe_method import UnquantizedFusedMoEMethod
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    redone = 0
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if isinstance(method, UnquantizedEmbeddingMethod):
            method.process_weights_after_loading(module)
            redone += 1
        elif isinstance(method, UnquantizedFusedMoEMethod):
            method.moe_kernel.fused_experts.process_weights_after_loading(module)
            redone += 1
        elif method is not None and "MoE" in type(method).__name__:
            raise NotImplementedError(f"in-place weight sync on CPU is checked for unquantized models only, "
                                      f"not {type(method).__name__}")
    return redone
