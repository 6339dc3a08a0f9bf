"""Rollout engines (transformers, vLLM) and partial-rollout bookkeeping."""
