"""Pretrain the embedded tiny base models from scratch on a synthetic addition corpus.

What it does: draws three disjoint sets of 2-3 digit addition problems from one seed (held-out
test, RL train prompts, pretraining corpus) and renders each corpus problem in the R1-Zero
template followed by one of four habits (``rlkit.tasks.arithmetic``): a careful column-by-column
procedure with carries (a minority, opening "<think> Step by step ."), the same procedure written
concisely, column totals only (a smaller minority, opening "<think> In short ."), a one-line
sloppy guess (the majority, opening "<think> Quick guess :") and a small share with broken tags.
It builds the word-level tokenizer, trains a 2.5M-parameter Qwen3-MoE (3 layers, 8 routed
experts, top-2; or, with `model.kind: dense`, a smaller dense Qwen3: the distillation student)
with AdamW, saves model + tokenizer + generation config in HF format and the splits as JSONL,
and then measures on the held-out test set: accuracy sampled at T=1, accuracy with the careful
(and the concise) opening forced, the share of well-formed completions and the completion
length of each habit.

Why this shape: the base "reasons a little" and leaves RL a clear, reachable improvement. The
careful procedure is in its weights but chosen only about a third of the time, so R1-Zero-style
RL can raise accuracy by moving probability onto the longer careful thought (the small-scale
echo of R1-Zero's growing responses), and the format reward has broken outputs to fix. The
concise form is chosen less often than the careful one, so an RL-trained model thinks mostly at
length, and long-to-short methods have a shorter procedure of equal accuracy to move it onto.

How it departs from usual pretraining:
- Loss only on completion tokens (after "Assistant:", end-of-sequence included); the template
  and the question are input only.
- Drills: `drill_share` of the corpus is careful (or, `drill_concise_share` of them, concise)
  completions whose opening carries no loss. They teach the procedures without teaching the base
  to choose them, so the base's choice follows the habit shares alone
  (P("Step" after "<think>") ~ careful / (careful + concise + sloppy + broken/2)).
- The constant template preamble (everything up to "User:") is run once per step without
  gradient, and its key/value cache is shared by the whole batch; only question + completion are
  trained through. Forward values are unchanged; only the gradient path through the preamble's
  own activations is dropped, and the tokens per step fall by two thirds.
- The first `bare_steps` leave the preamble out altogether: without 73 constant tokens to
  attend to, the model finds the digits of the question several times faster. RoPE is relative,
  so what it learns carries over when the preamble comes in.
- Batches are bucketed by length (careful completions are ~4x longer than sloppy ones), so the
  loss is divided by a constant, not by the batch's own token count, and gradients are not
  clipped: either would weigh the tokens of short and long batches differently and skew the
  habit the base prefers (clipping at 1.0 halved the careful share in a trial run).
- The MoE load-balancing loss is added, measured over real (non-padding) tokens. The
  DeepSeek-V3-shaped base (`model.kind: deepseek_v3`) is balanced as DeepSeek-V3 was instead:
  routing-bias steps after every optimizer step plus a tiny sequence-wise loss (`rlkit.moe`).

Launch (writes data/models/tiny-moe and data/tiny_math; about 9 minutes on 2 CPU cores
shared with other work, less on an idle pair):
    rlkit run pretrain_tiny_base --config recipes/configs/pretrain_tiny_base.yaml
The dense student (data/models/tiny-dense, same corpus and tokenizer, splits not rewritten):
    rlkit run pretrain_tiny_base --config recipes/configs/pretrain_tiny_base_dense.yaml
A DeepSeek-V3-shaped MoE (data/models/tiny-dsv3: MLA, a shared expert, a dense first layer,
sigmoid routing with a bias; same corpus and tokenizer, splits not rewritten):
    rlkit run pretrain_tiny_base --config recipes/configs/pretrain_tiny_base_deepseek_v3.yaml
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a 2-core machine shared with other work,
# spinning threads made a training step 10x slower (same numbers either way). Set before torch
# loads its OpenMP runtime; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import (DeepseekV3Config, DeepseekV3ForCausalLM, GenerationConfig, Qwen3Config,  # noqa: E402
                          Qwen3ForCausalLM, Qwen3MoeForCausalLM)
from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func  # noqa: E402

import rewards  # noqa: E402
from rlkit import moe as moe_util  # noqa: E402
from rlkit.models import tiny_moe_config  # noqa: E402
from rlkit.tasks import arithmetic  # noqa: E402
from rlkit.tasks.tokenizer import build_tokenizer  # noqa: E402
from rlkit.templates import apply_template  # noqa: E402

TEMPLATE = "r1_zero"


@dataclass
class ModelShape:
    kind: str = "moe"  # moe (Qwen3-MoE) | dense (Qwen3) | deepseek_v3 (MLA, shared expert, sigmoid routing)
    hidden_size: int = 128
    num_layers: int = 3  # with 2 layers copying the 4-digit Result into the answer failed ~14% of the time
    num_heads: int = 4
    num_kv_heads: int = 2
    num_experts: int = 8
    experts_per_token: int = 2
    expert_intermediate_size: int = 256
    intermediate_size: int = 384  # the MLP width of a dense model (unused by the MoE)
    max_position_embeddings: int = 256  # template <= 86 tokens + completion <= 96 fits with room
    router_aux_loss_coef: float = 0.01
    # deepseek_v3 only: latent attention, the shared expert, dense first layers, group-limited sigmoid
    # routing, balanced as DeepSeek-V3 was (routing-bias steps plus a tiny sequence-wise loss, no aux loss)
    kv_lora_rank: int = 32
    qk_nope_head_dim: int = 16
    qk_rope_head_dim: int = 16
    v_head_dim: int = 32
    n_shared_experts: int = 1
    first_k_dense: int = 1
    n_group: int = 2
    topk_group: int = 1
    bias_balance_speed: float = 0.001
    seq_balance_coef: float = 0.0001


@dataclass
class Config:
    seed: int = 0
    output_dir: str = "data/models/tiny-moe"
    data_dir: str = "data/tiny_math"
    write_data: bool = True  # write the splits to data_dir (a second base on the same corpus need not)
    n_test: int = 256
    n_train: int = 4000
    n_corpus: int = 50000
    n_cold_start: int = 400  # careful completions of training problems written as cold_start.jsonl (SFT data)
    # Share of corpus problems rendered as careful drills whose opening carries no loss.
    drill_share: float = 0.4
    drill_concise_share: float = 0.0  # of the drills, the share written in the concise form
    # Shares of the habits among the other problems (rlkit.tasks.arithmetic.COMPLETION_KINDS).
    careful_share: float = 0.3
    concise_share: float = 0.0
    sloppy_share: float = 0.6
    broken_share: float = 0.1
    model: ModelShape = field(default_factory=ModelShape)
    steps: int = 2000
    bare_steps: int = 800  # steps without the template preamble, at the start
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 0.0  # 0 = no clipping (see the docstring)
    threads: int = 2
    log_every: int = 100
    eval_samples_per_problem: int = 4
    eval_temperature: float = 1.0
    eval_batch_size: int = 128
    max_new_tokens: int = 96


def main(cfg: Config) -> None:
    # ---------------------------------------------------------------- setup
    t_start = time.time()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    splits = arithmetic.make_splits(cfg.seed, cfg.n_test, cfg.n_train, cfg.n_corpus)
    n_drill = round(cfg.drill_share * len(splits.corpus))
    n_concise_drill = round(cfg.drill_concise_share * n_drill)
    drills = [(p, "drill" if i >= n_concise_drill else "concise_drill",
               arithmetic.render_completion(p, "careful" if i >= n_concise_drill else "concise"))
              for i, p in enumerate(splits.corpus[:n_drill])]
    shares = {"careful": cfg.careful_share, "concise": cfg.concise_share, "sloppy": cfg.sloppy_share,
              "broken": cfg.broken_share}
    habits = list(arithmetic.corpus_completions(splits.corpus[n_drill:], cfg.seed + 1,
                                                {k: v for k, v in shares.items() if v > 0}))
    corpus = drills + habits
    kind_counts = {k: sum(kind == k for _, kind, _ in corpus)
                   for k in ("drill", "concise_drill", *arithmetic.COMPLETION_KINDS)}
    print(f"corpus: {len(corpus)} problems, {kind_counts}")

    # The vocabulary is every word of the template and of the corpus; tags and digits always.
    tok = build_tokenizer([apply_template(TEMPLATE, splits.test[0].prompt)] + [c for _, _, c in corpus])
    preamble_text = apply_template(TEMPLATE, "{prompt}").split("{prompt}")[0].rstrip()
    preamble = tok(preamble_text)["input_ids"]  # the constant part every sequence starts with
    print(f"vocab {len(tok)}; template tokens: preamble {len(preamble)}, "
          f"with a 3+3 digit question {len(tok(apply_template(TEMPLATE, 'What is 999 + 999?'))['input_ids'])}")

    # Suffix = question + completion + EOS; the preamble is shared through the KV cache.
    # A drill teaches the procedure but not the choice of it: its opening carries no loss.
    n_opening = {"drill": len(tok(arithmetic.CAREFUL_OPENING)["input_ids"]),
                 "concise_drill": len(tok(arithmetic.CONCISE_OPENING)["input_ids"])}
    all_prompt_ids = tok([apply_template(TEMPLATE, p.prompt) for p, _, _ in corpus])["input_ids"]
    all_completion_ids = tok([completion for _, _, completion in corpus])["input_ids"]
    rows, masks = [], []
    for (_, kind, _), prompt_ids, completion_ids in zip(corpus, all_prompt_ids, all_completion_ids):
        completion_ids = completion_ids + [tok.eos_token_id]
        assert prompt_ids[: len(preamble)] == preamble
        question = prompt_ids[len(preamble):]
        unlearned = n_opening.get(kind, 0)
        rows.append(question + completion_ids)
        masks.append([0] * (len(question) + unlearned) + [1] * (len(completion_ids) - unlearned))
    loss_tokens_per_row = sum(map(sum, masks)) / len(masks)
    longest = max(len(preamble) + len(r) for r in rows)
    assert longest <= cfg.model.max_position_embeddings, f"longest sequence {longest} exceeds max positions"
    mean_len = {k: mean([len(tok(c)["input_ids"]) + 1 for _, kind, c in habits[:3000] if kind == k])
                for k in arithmetic.COMPLETION_KINDS}
    print(f"corpus completion tokens (mean of 3000, incl. EOS): {mean_len}")

    m = cfg.model
    if m.kind not in ("moe", "dense", "deepseek_v3"):
        raise ValueError(f"model.kind must be moe, dense or deepseek_v3, got {m.kind!r}")
    moe = m.kind == "moe"
    deepseek = m.kind == "deepseek_v3"
    if deepseek:
        model_cfg = DeepseekV3Config(
            vocab_size=len(tok), hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
            moe_intermediate_size=m.expert_intermediate_size, num_hidden_layers=m.num_layers,
            num_attention_heads=m.num_heads, num_key_value_heads=m.num_heads, n_shared_experts=m.n_shared_experts,
            n_routed_experts=m.num_experts, num_experts_per_tok=m.experts_per_token, n_group=m.n_group,
            topk_group=m.topk_group, first_k_dense_replace=m.first_k_dense, routed_scaling_factor=1.0,
            kv_lora_rank=m.kv_lora_rank, q_lora_rank=None, qk_nope_head_dim=m.qk_nope_head_dim,
            qk_rope_head_dim=m.qk_rope_head_dim, v_head_dim=m.v_head_dim,
            max_position_embeddings=m.max_position_embeddings, tie_word_embeddings=True,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
            # how DeepSeek's own configs name the routing transformers always does (vLLM reads these)
            topk_method="noaux_tc", scoring_func="sigmoid",
        )
        model = DeepseekV3ForCausalLM(model_cfg)
        balancer = moe_util.BiasBalancer(model, m.bias_balance_speed)
    elif moe:
        model_cfg = tiny_moe_config(
            # intermediate_size is the dense MLP's, unused: every layer is a sparse MoE layer.
            len(tok), hidden_size=m.hidden_size, intermediate_size=2 * m.hidden_size,
            moe_intermediate_size=m.expert_intermediate_size, num_hidden_layers=m.num_layers,
            num_attention_heads=m.num_heads, num_key_value_heads=m.num_kv_heads,
            head_dim=m.hidden_size // m.num_heads, num_experts=m.num_experts, num_experts_per_tok=m.experts_per_token,
            max_position_embeddings=m.max_position_embeddings, router_aux_loss_coef=m.router_aux_loss_coef,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
        )
        model = Qwen3MoeForCausalLM(model_cfg)
    else:
        model_cfg = Qwen3Config(
            vocab_size=len(tok), hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
            num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads, num_key_value_heads=m.num_kv_heads,
            head_dim=m.hidden_size // m.num_heads, max_position_embeddings=m.max_position_embeddings,
            tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            bos_token_id=None,
        )
        model = Qwen3ForCausalLM(model_cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, "
          f"{f'{m.num_experts} experts top-{m.experts_per_token}' if moe or deepseek else 'dense'}, "
          f"{m.num_layers} layers, hidden {m.hidden_size}")

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    # ---------------------------------------------------------------- loop
    order_rng = random.Random(cfg.seed + 2)
    batches: list[list[int]] = []
    preamble_ids = torch.tensor([preamble])  # [1, P]
    model.train()
    t_train = time.time()
    running: dict[str, list[float]] = {"all": [], "careful": [], "sloppy": []}  # mean loss per token
    kinds = [kind for _, kind, _ in corpus]
    clipped = 0
    for step in range(cfg.steps):
        if not batches:  # a new pass over the corpus
            batches = length_bucketed_batches([len(r) for r in rows], cfg.batch_size, order_rng)
        batch = batches.pop()
        width = max(len(rows[i]) for i in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)  # [B, T]
        loss_mask = torch.zeros(len(batch), width)  # [B, T]
        for j, i in enumerate(batch):
            ids[j, : len(rows[i])] = torch.tensor(rows[i])
            loss_mask[j, : len(masks[i])] = torch.tensor(masks[i], dtype=torch.float)
        real = (torch.arange(width)[None] < torch.tensor([len(rows[i]) for i in batch])[:, None]).long()  # [B, T]

        # No attention mask: padding is on the right, so the causal mask already keeps it out of
        # every real token's view.
        router = {"output_router_logits": True} if moe else {}
        if step >= cfg.bare_steps:
            with torch.no_grad():
                cache = model(input_ids=preamble_ids, use_cache=True).past_key_values
            cache.batch_repeat_interleave(len(batch))
            router.update(past_key_values=cache, use_cache=True)
        with moe_util.capture(model) as routed:  # the routers' choices, for DeepSeek-V3's balancing
            out = model(input_ids=ids, **router)
        # Position t predicts token t+1; the last question token predicts the first completion token.
        logits = out.logits[:, :-1]  # [B, T-1, V]
        target, weight = ids[:, 1:], loss_mask[:, 1:]  # [B, T-1]
        nll = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # [B, T-1]
        # Normalised by a constant, not by this batch's token count: batches are bucketed by
        # length, and per-batch normalisation would weigh a token of a short (sloppy) batch ~4x
        # more than one of a long (careful) batch, skewing which habit the base prefers.
        lm_loss = (nll * weight).sum() / (len(batch) * loss_tokens_per_row)
        # Balance measured over real tokens only (the model's own aux_loss would count padding).
        aux_loss = (load_balancing_loss_func(out.router_logits, m.num_experts, m.experts_per_token, real)
                    if moe else torch.zeros(()))
        loss = lm_loss + m.router_aux_loss_coef * aux_loss
        if deepseek:
            layers = [routed.layer(i) for i in range(len(routed))]
            aux_loss = moe_util.sequence_balance_loss(tuple(lg for lg, _ in layers), tuple(e for _, e in layers), real,
                                                      m.experts_per_token)
            loss = lm_loss + m.seq_balance_coef * aux_loss
            balancer.add(moe_util.expert_loads(tuple(e for _, e in layers), real, m.num_experts))

        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
        clipped += int(cfg.grad_clip > 0 and grad_norm > cfg.grad_clip)
        opt.step()
        if deepseek:
            balancer.update()
        running["all"].append(lm_loss.item())
        with torch.no_grad():  # the procedure and the guess are learned at different speeds: watch both
            per_seq = (nll * weight).sum(1) / weight.sum(1).clamp(min=1)  # [B]
            for j, i in enumerate(batch):
                running["careful" if kinds[i] in ("careful", "drill", "concise", "concise_drill")
                        else "sloppy"].append(per_seq[j].item())
        if (step + 1) % cfg.log_every == 0 or step == cfg.steps - 1:
            elapsed = time.time() - t_train
            means = {k: sum(v) / max(1, len(v)) for k, v in running.items()}
            print(f"step {step + 1}/{cfg.steps}  loss {means['all']:.4f} (careful {means['careful']:.3f}, "
                  f"sloppy/broken {means['sloppy']:.3f})  "
                  f"aux {aux_loss.item():.3f}  |g| {grad_norm:.2f} (clipped {clipped})  lr {lr_at(step):.2e}  "
                  f"{elapsed:.0f}s", flush=True)
            running = {k: [] for k in running}
    train_seconds = time.time() - t_train

    # ---------------------------------------------------------------- save
    model.eval()
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=cfg.max_new_tokens,
    )
    out_dir = Path(cfg.output_dir)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    if cfg.write_data:
        arithmetic.write_jsonl(splits.train, Path(cfg.data_dir) / "train.jsonl")
        arithmetic.write_jsonl(splits.test, Path(cfg.data_dir) / "test.jsonl")
        cold = random.Random(cfg.seed + 4).sample(splits.train, min(cfg.n_cold_start, len(splits.train)))
        arithmetic.write_sft_jsonl(cold, "careful", Path(cfg.data_dir) / "cold_start.jsonl")
    print(f"saved model + tokenizer to {out_dir}" + (f", splits to {cfg.data_dir}" if cfg.write_data else ""))

    # ---------------------------------------------------------------- checks
    # Scored with the same rewards an R1-Zero run uses: the answer inside <answer></answer>
    # (math_accuracy) and the <think>...</think> <answer>...</answer> shape (think_format).
    t_eval = time.time()
    k = cfg.eval_samples_per_problem
    opening = arithmetic.CAREFUL_OPENING
    prompts = [apply_template(TEMPLATE, p.prompt) for p in splits.test]
    free = sample(model, tok, prompts, cfg, samples=k, temperature=cfg.eval_temperature)
    forced = [f"{prompt} {opening}" for prompt in prompts]
    forced_greedy = [f"{opening} {c}" for c in sample(model, tok, forced, cfg, samples=1, temperature=0.0)]
    forced_sampled = [f"{opening} {c}"
                      for c in sample(model, tok, forced, cfg, samples=1, temperature=cfg.eval_temperature)]
    concise_checks = {}
    if cfg.concise_share > 0 or cfg.drill_concise_share > 0:
        short = arithmetic.CONCISE_OPENING
        forced_short = [f"{prompt} {short}" for prompt in prompts]
        for name, temp in (("greedy", 0.0), (f"T{cfg.eval_temperature:g}", cfg.eval_temperature)):
            texts = [f"{short} {c}" for c in sample(model, tok, forced_short, cfg, samples=1, temperature=temp)]
            concise_checks[f"forced_concise_accuracy_{name}"] = mean(score(texts, splits.test, 1))

    correct = score(free, splits.test, k)
    habit = [classify(c) for c in free]
    report = {
        "params": n_params,
        "train_seconds": round(train_seconds, 1),
        f"sampled_accuracy_T{cfg.eval_temperature:g}": mean(correct),
        "sampled_format_share": mean(rewards.get("think_format")(free)),
        "sampled_careful_share": habit.count("careful") / len(habit),
        "forced_careful_accuracy_greedy": mean(score(forced_greedy, splits.test, 1)),
        f"forced_careful_accuracy_T{cfg.eval_temperature:g}": mean(score(forced_sampled, splits.test, 1)),
        **concise_checks,
        "sampled_concise_share": habit.count("concise") / len(habit),
        "mean_completion_tokens": mean([len(tok(c)["input_ids"]) + 1 for c in free]),
        "accuracy_by_habit": {h: mean([c for c, hh in zip(correct, habit) if hh == h]) for h in HABITS},
        "mean_completion_tokens_by_habit": {
            h: mean([len(tok(c)["input_ids"]) + 1 for c, hh in zip(free, habit) if hh == h]) for h in HABITS
        },  # +1: the end-of-sequence token
        "corpus_completion_tokens": mean_len,
    }
    print(f"checks took {time.time() - t_eval:.0f}s; total {time.time() - t_start:.0f}s")
    print(json.dumps(report, indent=1))
    for text in free[:6]:
        print("  sample:", text)


HABITS = ("careful", "concise", "sloppy", "other")


def length_bucketed_batches(
    lengths: list[int], batch_size: int, rng: random.Random, bucket: int = 16
) -> list[list[int]]:
    """One shuffled pass in batches of similar length: careful thoughts are ~4x longer than
    sloppy ones, and padding them together would waste about half of every step.

    Lengths are compared in steps of ``bucket`` tokens only, keeping the shuffled order within
    a step: sorting on exact length would put all 2-digit answers in one batch and all 4-digit
    answers in another, and the model would swing between them from batch to batch.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = 32 * batch_size
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start: start + chunk], key=lambda i: lengths[i] // bucket)  # stable: keeps the shuffle
        batches += [part[i: i + batch_size] for i in range(0, len(part) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    return batches


def sample(model, tok, prompts: list[str], cfg: Config, *, samples: int, temperature: float) -> list[str]:
    """Completions (decoded, prompt excluded), ``samples`` per prompt in prompt order; T=0 means greedy."""
    torch.manual_seed(cfg.seed + 3)
    tok.padding_side = "left"  # generation appends on the right
    expanded = [p for p in prompts for _ in range(samples)]
    texts = []
    for start in range(0, len(expanded), cfg.eval_batch_size):
        enc = tok(expanded[start: start + cfg.eval_batch_size], return_tensors="pt", padding=True)
        with torch.no_grad():
            # top_k=0, top_p=1: the model's own distribution, as RL samples it.
            how = (dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0
                   else dict(do_sample=False, temperature=None, top_k=None, top_p=None))
            gen = model.generate(
                **enc, **how, max_new_tokens=cfg.max_new_tokens,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            )  # [b, prompt + new]
        texts += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    tok.padding_side = "right"
    return texts


def score(completions: list[str], problems: list, samples: int) -> list[float]:
    """math_accuracy of each completion; completion i answers problem i // samples."""
    answers = [problems[i // samples].answer for i in range(len(completions))]
    return [float(r or 0.0) for r in rewards.get("math_accuracy")(completions, answer=answers)]


def classify(completion: str) -> str:
    if completion.startswith(arithmetic.CAREFUL_OPENING):
        return "careful"
    if completion.startswith(arithmetic.CONCISE_OPENING):
        return "concise"
    if completion.startswith(arithmetic.SLOPPY_OPENING):
        return "sloppy"
    return "other"


def mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


if __name__ == "__main__":
    from rlkit.cli import run_recipe_from_argv

    run_recipe_from_argv(Config, main)
