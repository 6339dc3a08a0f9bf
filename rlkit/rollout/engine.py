"""The rollout-engine contract and the registry of engines.

An engine turns token ids (a prompt, or a prompt plus an unfinished completion) into new
tokens with their sampling log-probabilities, the policy version of every token and a finish
reason (`stop`, `length`, `budget`, `repeat`). It never computes rewards and never sees the
optimizer.

Log-probs are under the distribution actually sampled from: softmax(logits / T) restricted to
the top-p nucleus and renormalised, greedy (T = 0) scored under T = 1; `rlkit.algo.logprobs`
defines it and the learner uses the same definition. A call with `sampling.seed` set draws from
a generator of its own: it neither resets nor advances the engine's training stream. Engines are selected by name from config (`rollout.engine: hf`); a vLLM engine would
register itself here the same way.
"""

from __future__ import annotations

from typing import Any, Protocol

from rlkit.registry import Registry
from rlkit.types import GenerationRequest, Rollout, SamplingParams

ENGINES = Registry("rollout engine")


class RolloutEngine(Protocol):
    version: int  # number of weight syncs received; stamped on every sampled token

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Rollout]:
        """One Rollout per sample: `requests[i].n` of them for request i, in request order."""
        ...

    def load_weights(self, state_dict: dict[str, Any], version: int) -> None:
        """Replace the policy weights (a full state dict of CPU tensors) and set the version."""
        ...


def make_engine(name: str, **kwargs: Any) -> RolloutEngine:
    import rlkit.rollout.hf  # noqa: F401  (registers "hf")

    if name not in ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; available: {', '.join(ENGINES.names())} "
                         "(a vLLM engine is not part of this release)")
    return ENGINES.get(name)(**kwargs)
