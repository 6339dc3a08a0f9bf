"""The rollout-engine contract, the registry of engines, and the config -> engine arguments.

An engine turns token ids (a prompt, or a prompt plus an unfinished completion) into new
tokens with their sampling log-probabilities, the policy version of every token and a finish
reason (`stop`, `length`, `budget`, `repeat`). It never computes rewards and never sees the
optimizer.

Log-probs are under the distribution actually sampled from: softmax(logits / T) restricted to
the top-p nucleus and renormalised, greedy (T = 0) scored under T = 1; `rlkit.algo.logprobs`
defines it and the learner uses the same definition. A call with `sampling.seed` set draws from
a generator of its own: it neither resets nor advances the engine's training stream.

Engines are selected by name from config (`rollout.engine: hf | vllm`); `engine_setup` turns the
`rollout` and `model` sections into an engine's constructor arguments and checks them before
any actor starts.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

from rlkit.config import ModelConfig, RolloutConfig
from rlkit.registry import Registry
from rlkit.types import GenerationRequest, Rollout, SamplingParams

ENGINES = Registry("rollout engine")


class EngineUnavailable(RuntimeError):
    """An engine's library is missing or broken; the message is one line saying what to install."""


class RolloutEngine(Protocol):
    version: int  # number of weight syncs received; stamped on every sampled token

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Rollout]:
        """One Rollout per sample: `requests[i].n` of them for request i, in request order."""
        ...

    def load_weights(self, state_dict: dict[str, Any], version: int) -> None:
        """Replace the policy weights (a full state dict of CPU tensors) and set the version."""
        ...


def _register_builtin() -> None:
    import rlkit.rollout.hf  # noqa: F401  (registers "hf")
    import rlkit.rollout.vllm  # noqa: F401  (registers "vllm"; imports vLLM only when an engine is built)


def engine_class(name: str) -> type:
    _register_builtin()
    if name not in ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; available: {', '.join(ENGINES.names())}")
    return ENGINES.get(name)


def make_engine(name: str, **kwargs: Any) -> RolloutEngine:
    return engine_class(name)(**kwargs)


# ----------------------------------------------------------------------------- config -> engine
# rollout.<field> (or another section's value) -> the engine constructor argument it becomes; an
# engine takes the ones its __init__ names
_OPTION_FIELDS = ("device", "repeat_ngram", "repeat_window", "tensor_parallel_size", "memory_share", "max_model_len",
                  "record_routes")


@dataclass
class EngineSetup:
    name: str  # registry name
    kwargs: dict[str, Any]  # constructor arguments (RolloutGroup adds 1000 * i to each actor's seed)
    num_gpus: float  # per rollout actor


def engine_setup(rollout: RolloutConfig, model: ModelConfig, *, seed: int, gpus_visible: int | None = None,
                 record_routes: bool = False) -> EngineSetup:
    """The engine's constructor arguments from the config, checked here (on the driver, before Ray
    starts) as far as they can be without starting an engine. A non-default `rollout` option that the
    chosen engine does not take is an error naming it, not silently ignored. `record_routes` asks for
    the MoE routes of every token (routing replay) whatever `rollout.record_routes` says."""
    if record_routes and not rollout.record_routes:
        rollout = replace(rollout, record_routes=True)
    cls = engine_class(rollout.engine)
    takes = set(inspect.signature(cls.__init__).parameters)
    defaults = {f.name: f.default for f in fields(RolloutConfig)}
    kwargs: dict[str, Any] = {"model_path": model.path, "dtype": rollout.dtype or model.dtype, "seed": seed}
    for name in _OPTION_FIELDS:
        value = getattr(rollout, name)
        if name in takes:
            kwargs[name] = value
        elif value != defaults[name]:
            raise ValueError(f"rollout.{name}={value!r} is not an option of rollout.engine={rollout.engine}")
    if "trust_remote_code" in takes:
        kwargs["trust_remote_code"] = model.trust_remote_code
    elif model.trust_remote_code:
        raise ValueError(f"model.trust_remote_code is not supported by rollout.engine={rollout.engine}")
    check = getattr(cls, "check_settings", None)
    if check is not None:
        check(**kwargs, num_actors=rollout.num_actors, gpus_visible=gpus_visible)
    gpus_per_actor = kwargs.get("tensor_parallel_size", 1) if rollout.device == "cuda" else 0
    return EngineSetup(rollout.engine, kwargs, gpus_per_actor)


# ----------------------------------------------------------------------------- shared by engines
def sample_cap(req: GenerationRequest, k: int, default: int) -> int:
    """The completion cap of sample k of `req`: meta["max_new_tokens"] lowers the sampling cap for
    the request (an int) or for each of its n samples (a list)."""
    cap = req.meta.get("max_new_tokens", default)
    return int(cap[k] if isinstance(cap, (list, tuple)) else cap)


def eos_token_ids(generation_config, tokenizer) -> list[int]:
    """Every token that ends a completion: the generation config's eos ids, then the tokenizer's."""
    ids: list[int] = []
    for source in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if source is None:
            continue
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("the tokenizer and generation config define no eos token: generation could never stop")
    return ids
