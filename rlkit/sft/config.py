"""Config sections of the supervised recipes (sft, dpo and the recipes that chain them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SFTDataConfig:
    train: str = ""  # JSONL/JSON/parquet file or Hub dataset: prompt/completion columns or chat messages
    prompt_column: str = "prompt"
    completion_column: str = "completion"
    messages_column: str = "messages"
    template: str = "r1_zero"  # prompt template for prompt/completion rows (a name in rlkit.templates)
    max_length: int = 0  # tokens of prompt + completion (0 = the model's context length)
    overlong: str = "error"  # error | truncate | drop: what to do with longer samples
    max_examples: int = 0  # 0 = all rows

    def validate(self) -> None:
        if self.overlong not in ("error", "truncate", "drop"):
            raise ValueError(f"sft data.overlong must be error, truncate or drop, got {self.overlong!r}")


@dataclass
class OptimConfig:
    device: str = "cpu"
    lr: float = 1e-4
    min_lr_ratio: float = 0.1  # cosine decay to lr * min_lr_ratio (1.0 = constant after warm-up)
    warmup_steps: int = 0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    batch_size: int = 32  # sequences (SFT) or pairs (DPO) per optimizer step
    micro_batch_size: int = 32  # per forward/backward; the loss is normalised over the whole batch
    epochs: int = 1
    max_steps: int = 0  # 0 = epochs decide
    router_aux_coef: float = 0.001  # MoE load-balancing loss coefficient (0 = off; ignored for dense models)
    mixed_precision: str = "no"  # no | bf16 | fp16 (accelerate)
    threads: int = 2  # torch CPU threads


@dataclass
class DPOConfig:
    beta: float = 0.1
    nll_coef: float = 0.0  # weight of the chosen answers' NLL added to the DPO loss (RPO; 0 = plain DPO)
    length_normalize: bool = False  # per-token mean log-probs instead of sums (no reward for ending early)
    pairs: str = ""  # JSONL with prompt, chosen, rejected columns
    prompt_column: str = "prompt"
    chosen_column: str = "chosen"
    rejected_column: str = "rejected"
    template: str = "r1_zero"
    max_length: int = 0  # 0 = the model's context length; longer pairs are an error naming the count


@dataclass
class ColdStartConfig:
    """Where a cold start's SFT rows come from: a dataset, or rendered by the arithmetic task generator."""

    data: str = ""  # prompt/completion or messages dataset; "" = render rows with the task generator
    prompts: str = "data/tiny_math/train.jsonl"  # the task's prompts to render completions for
    samples: int = 400  # rows rendered (a seeded sample of the prompts)
    kinds: dict[str, float] = field(default_factory=lambda: {"careful": 1.0})  # habit -> share of the rows

    def validate(self) -> None:
        from rlkit.tasks.arithmetic import COMPLETION_KINDS

        unknown = sorted(set(self.kinds) - set(COMPLETION_KINDS))
        if not self.data and (unknown or not self.kinds):
            raise ValueError(f"cold start kinds must be some of {COMPLETION_KINDS}, got {sorted(self.kinds)}")
