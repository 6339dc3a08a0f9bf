"""Peak memory of one learner step at a Qwen-sized vocabulary on a narrow model, per forward path.

The output projection is where RL learners run out of memory at real sizes: a full forward
materialises [N, L, V] fp32 logits, a log_softmax of the same size and their gradients (at
V = 152k, N = 16, L = 8k about 80 GB per buffer). The learner's default path runs the decoder,
then the projection `learner.logit_chunk_tokens` tokens at a time under activation
checkpointing, so its peak does not grow with N x L x V.

Each configuration runs in a fresh process (peak RSS is per process): build the learner, take
one warm-up step on a small batch, then one measured step on the N x L batch; reported is the
rise of the peak RSS over the RSS before the measured step, and the step's seconds.

Run:
    python benchmarks/learner_memory.py --vocab 151936 --N 2 --L 1024

Printed: one line per configuration, then `memory_ratio=X` last: full-forward peak / default peak.
The default's peak is about three [chunk, V] fp32 buffers (logits, log-softmax, entropy) whatever
N and L are; the full forward's grows with N x L.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONFIGS = {  # name -> LearnerConfig overrides
    "full forward ([N, L, V] logits, as every path did before)": {"forward": "full"},
    "default (chunked projection, packed tree)": {},
    "default + gradient checkpointing": {"gradient_checkpointing": True},
    "default, 256-token chunks": {"logit_chunk_tokens": 256},
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=151936, help="vocabulary size (Qwen2.5/Qwen3: 151936)")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--N", type=int, default=2, help="sequences in the step")
    ap.add_argument("--L", type=int, default=1024, help="tokens per sequence (prompt 64, the rest completion)")
    ap.add_argument("--chunk", type=int, default=1024, help="learner.logit_chunk_tokens")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def batch(n: int, length: int, vocab: int, seed: int):
    import torch

    from rlkit.types import TrainBatch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, length), generator=g)  # [N, L]
    attn = torch.ones(n, length, dtype=torch.long)  # [N, L]
    loss_mask = torch.zeros(n, length - 1)  # [N, L-1]
    loss_mask[:, 63:] = 1.0
    advantages = torch.linspace(-1, 1, n)  # [N]
    return TrainBatch(ids, attn, loss_mask, -5.0 * loss_mask, advantages)


def child(args, spec: dict) -> None:
    import torch

    from rlkit.config import AlgoConfig, LearnerConfig
    from rlkit.learner import Learner

    torch.set_num_threads(1)
    cfg = LearnerConfig(micro_batch_size=args.N, **{"logit_chunk_tokens": args.chunk, **spec["overrides"]})
    learner = Learner(spec["model"], cfg, AlgoConfig())
    small = batch(args.N, 96, args.vocab, seed=1)
    learner.train_step(small, total_tokens=float(small.loss_mask.sum()), total_seqs=args.N)
    big = batch(args.N, args.L, args.vocab, seed=2)
    before = rss_mb()
    start = time.perf_counter()
    learner.train_step(big, total_tokens=float(big.loss_mask.sum()), total_seqs=args.N)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    print(json.dumps({"peak_rise_mb": peak - before, "seconds": seconds, "paths": learner.verified}))


def main(argv=None) -> float:
    args = parse_args(argv)
    if args.child:
        return child(args, json.loads(args.child))
    from transformers import Qwen3Config, Qwen3ForCausalLM

    buffer_gb = args.N * (args.L - 1) * args.vocab * 4 / 2**30
    print(f"vocab={args.vocab} hidden={args.hidden} layers={args.layers} N={args.N} L={args.L} chunk={args.chunk}: "
          f"one fp32 [N, L-1, V] buffer is {buffer_gb:.2f} GiB", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        Qwen3ForCausalLM(Qwen3Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                                     num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                                     head_dim=16, max_position_embeddings=args.L, tie_word_embeddings=True)
                         ).save_pretrained(tmp)
        for name, overrides in CONFIGS.items():
            spec = json.dumps({"model": tmp, "overrides": overrides})
            run = subprocess.run([sys.executable, __file__, *map(str, sum(([f"--{k}", v] for k, v in vars(args).items()
                                                                          if k != "child"), [])),
                                  "--child", spec], capture_output=True, text=True)
            if run.returncode != 0:
                print(f"{name}: failed\n{run.stderr[-2000:]}")
                results[name] = None
                continue
            out = json.loads(run.stdout.strip().splitlines()[-1])
            results[name] = out
            print(f"{name:60s} peak +{out['peak_rise_mb']:8.0f} MiB  step {out['seconds']:6.2f} s  "
                  f"paths {out['paths']}", flush=True)
    full, default = (results[k] for k in list(CONFIGS)[:2])
    ratio = full["peak_rise_mb"] / default["peak_rise_mb"]
    print(f"memory_ratio={ratio:.1f}")
    return ratio


if __name__ == "__main__":
    main()
