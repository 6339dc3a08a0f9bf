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


def load_model(path: str, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
    """A causal LM in HF format; `trust_remote_code` runs the modeling code shipped with it (DeepSeek, Kimi...)."""
    from transformers import AutoModelForCausalLM

    check_model_path(path)
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise FileNotFoundError(f"could not load a causal LM from {path!r}: {e}") from None


def load_tokenizer(path: str, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    check_model_path(path)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # right padding is masked everywhere, so EOS is a safe pad
    return tok


def context_length(path: str, *, trust_remote_code: bool = False) -> int | None:
    """The model's maximum positions (None if its config does not say)."""
    from transformers import AutoConfig

    check_model_path(path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    return getattr(config, "max_position_embeddings", None)


def disable_dropout(model) -> None:
    """Switch every dropout off, in modules and in the attention's functional dropout rate.

    RL compares log-probs of the same policy at sampling and at training; a dropout mask drawn
    at either would make the on-policy ratio noise instead of 1. `eval()` would also do it, but
    activation checkpointing in transformers only runs in training mode.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in ("attention_dropout", "dropout", "attn_dropout", "hidden_dropout", "activation_dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


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


def save_random_tiny_model(path, words, *, seed: int = 0, split_digits: bool = True, config=None, **shape) -> str:
    """A randomly initialised tiny model and a word-level tokenizer over `words`, saved in HF format.

    For tests and benchmarks (built in about a second). `words` must hold "<pad>", "<eos>" and
    "<unk>"; text splits on whitespace (and into single digits with `split_digits`). The model is
    a Qwen3-MoE whose `tiny_moe_config` `shape` overrides (vocab_size defaults to len(words)), or
    any architecture given as a transformers `config`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    splits = [pre_tokenizers.WhitespaceSplit()]
    if split_digits:
        splits.append(pre_tokenizers.Digits(individual_digits=True))
    core.pre_tokenizer = pre_tokenizers.Sequence(splits)
    core.decoder = decoders.WordPiece(prefix="##")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(seed)
    if config is None:
        config = tiny_moe_config(shape.pop("vocab_size", len(vocab)), **shape)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
