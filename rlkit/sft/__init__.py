"""Supervised post-training on the RL learner's stack: completion-only SFT and DPO.

- `rlkit.sft.data`: rows (prompt/completion or chat messages) -> token ids with a completion-only
  loss mask, length checks (error / truncate / drop), length-bucketed batches.
- `rlkit.sft.losses`: completion-only NLL and the DPO loss, pure torch.
- `rlkit.sft.trainer`: `SupervisedLearner`, SFT and DPO optimizer steps on accelerate.
- `rlkit.sft.config`: the config sections the supervised recipes nest.
"""
