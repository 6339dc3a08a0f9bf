"""Train-vs-rollout routing mismatch of an MoE policy, with and without routing replay.

The rollout engine (hf, KV-cached, left-padded batches) and the learner (packed or plain full
forwards) compute the same policy with different arithmetic; on tokens whose router scores are
nearly tied, the two pick different experts, and the importance ratio on those tokens measures
the difference in routing rather than a difference in policy. This samples B x G completions
of held-out prompts with the engine recording its routes, then scores the same tokens in the
learner without and with replaying them, at the same weights (the on-policy case, where the
ratio should be exactly 1):

- route mismatch: share of (token, MoE layer) pairs whose expert set in the learner differs
  from the engine's (with replay the learner's own choice, before it is replaced);
- |dlogp|: mean absolute difference of the learner's and the engine's log-probs per token;
- KL: k3 estimate of KL(engine || learner) per token, the `mismatch/kl` metric of training.

Run (fp32 and bf16 on the DeepSeek-V3-shaped tiny base):
    python benchmarks/moe_routing.py --model data/models/tiny-dsv3 --dtype float32
    python benchmarks/moe_routing.py --model data/models/tiny-dsv3 --dtype bfloat16

Printed: a row per mode, then `kl_ratio=X` last: KL without replay / KL with replay.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from rlkit import moe  # noqa: E402
from rlkit.config import AlgoConfig, LearnerConfig  # noqa: E402
from rlkit.data import build_problems, load_rows  # noqa: E402
from rlkit.learner import Learner  # noqa: E402
from rlkit.rollout.hf import HFEngine  # noqa: E402
from rlkit.types import GenerationRequest, SamplingParams, pack_rollouts  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "data" / "models" / "tiny-dsv3"))
    ap.add_argument("--data", default=str(ROOT / "data" / "tiny_math" / "test.jsonl"))
    ap.add_argument("--dtype", default="float32", help="float32 | bfloat16 (engine and learner)")
    ap.add_argument("--B", type=int, default=32, help="prompts")
    ap.add_argument("--G", type=int, default=4, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv=None) -> float:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    engine = HFEngine(args.model, dtype=args.dtype, seed=args.seed, record_routes=True)
    rows = load_rows(args.data, required=["prompt"])[: args.B]
    problems = build_problems(rows, engine.tokenizer, prompt_column="prompt", template="r1_zero")
    rollouts = engine.generate([GenerationRequest(p.prompt_ids, n=args.G) for p in problems],
                               SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0, seed=args.seed))
    batch = pack_rollouts(rollouts, engine.pad_id)
    mask = batch.loss_mask > 0
    tokens = int(mask.sum())
    print(f"model={args.model} dtype={args.dtype} samples={len(rollouts)} completion tokens={tokens} "
          f"MoE layers={batch.routes.shape[2]} top-k={batch.routes.shape[3]}")
    results = {}
    for replay in (False, True):
        learner = Learner(args.model, LearnerConfig(), AlgoConfig(routing_replay=replay), dtype=args.dtype)
        with torch.no_grad():
            if replay:
                moe.set_replay(learner.policy, batch.routes.flatten(0, 1))
                moe.replay_mismatch(learner.policy)
            out = learner.forward(batch)
            differ = (moe.replay_mismatch(learner.policy) if replay
                      else moe.route_mismatch(out.experts, batch.routes, batch.attention_mask))
        delta = (out.logp.float() - batch.old_logp)[mask]  # learner - engine
        kl = float((delta.exp() - 1 - delta).mean())
        results[replay] = kl
        print(f"{'with replay' if replay else 'without replay':16s} route mismatch {differ:.4f}  "
              f"|dlogp| {float(delta.abs().mean()):.2e}  max |dlogp| {float(delta.abs().max()):.2e}  KL {kl:.2e}")
    ratio = results[False] / max(results[True], 1e-30)
    print(f"kl_ratio={ratio:.1f}")
    return ratio


if __name__ == "__main__":
    main()
