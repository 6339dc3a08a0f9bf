"""Loading policies and tokenizers (HF format, local path or Hub id) and MoE introspection."""

from __future__ import annotations

from pathlib import Path

import torch

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(_DTYPES)}") from None


def check_model_path(path: str) -> None:
    """Fail early, before any actor starts, on a local-looking path that does not exist."""
    p = Path(path)
    looks_local = path.startswith((".", "/", "~")) or p.exists() or path.count("/") != 1
    if looks_local and not p.expanduser().is_dir():
        raise FileNotFoundError(f"model path not found: {path!r} (not a directory; a Hub id looks like 'org/name')")


def load_model(path: str, *, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    check_model_path(path)
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as e:
        raise FileNotFoundError(f"could not load a causal LM from {path!r}: {e}") from None


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    check_model_path(path)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # right padding is masked everywhere, so EOS is a safe pad
    return tok


def context_length(path: str) -> int | None:
    """The model's maximum positions (None if its config does not say)."""
    from transformers import AutoConfig

    check_model_path(path)
    return getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)


def num_experts(model) -> int:
    """Routed experts per MoE layer (0 for a dense model), across the common config spellings."""
    cfg = model.config
    for attr in ("num_experts", "num_local_experts", "n_routed_experts"):
        value = getattr(cfg, attr, None)
        if value:
            return int(value)
    return 0


def experts_per_token(model) -> int:
    return int(getattr(model.config, "num_experts_per_tok", 0) or 0)


def expert_load_metrics(router_logits, attention_mask: torch.Tensor, top_k: int) -> dict[str, float]:
    """How evenly the routed tokens spread over experts, averaged over layers.

    router_logits: tuple over layers of [B*L, E]; attention_mask: [B, L].
    `moe/load_max` is the busiest expert's share divided by the uniform share 1/E (1.0 = perfect
    balance, E = every token to one expert); `moe/load_cv` the coefficient of variation of loads.
    """
    valid = attention_mask.reshape(-1).bool()  # [B*L]
    maxes, cvs = [], []
    for layer_logits in router_logits:
        if layer_logits is None:
            continue
        logits = layer_logits.detach().float()[valid]  # [n, E]
        experts = logits.shape[-1]
        chosen = logits.topk(top_k, dim=-1).indices.reshape(-1)  # [n*k]
        load = torch.bincount(chosen, minlength=experts).float()  # [E]
        share = load / load.sum().clamp(min=1)
        maxes.append(float(share.max() * experts))
        cvs.append(float(load.std(unbiased=False) / load.mean().clamp(min=1e-9)))
    if not maxes:
        return {}
    return {"moe/load_max": sum(maxes) / len(maxes), "moe/load_cv": sum(cvs) / len(cvs)}


def tiny_moe_config(vocab_size: int, **overrides):
    """A few-million-parameter Qwen3-MoE config: the shape of the embedded tiny base."""
    from transformers import Qwen3MoeConfig

    shape = dict(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=256, moe_intermediate_size=128,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        num_experts=8, num_experts_per_tok=2, decoder_sparse_step=1, norm_topk_prob=True,
        max_position_embeddings=512, tie_word_embeddings=True, router_aux_loss_coef=0.01,
    )
    shape.update(overrides)
    return Qwen3MoeConfig(**shape)
