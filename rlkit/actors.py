"""Thin Ray wrappers: rollout actors (one engine each) and learner actors (one rank each).

Each method is a plain call on the wrapped object; any exception in an actor reaches the
driver through `ray.get` as a RayTaskError carrying the actor's traceback, and a dead actor
as RayActorError, so a failure never turns into a hang.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import ray
import torch

from rlkit.algo import loss_normalizers
from rlkit.metrics import merge_metrics
from rlkit.types import GenerationRequest, Rollout, SamplingParams, TrainBatch


def init_ray(address: str = "", *, num_cpus: int | None = None) -> None:
    if ray.is_initialized():
        return
    # the driver's environment (threads, paths) must reach actors on this machine
    env = {k: v for k, v in os.environ.items()
           if k in ("PYTHONPATH", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "HF_HUB_OFFLINE")}
    # Rollout and learner actors take turns on the same cores: spinning OpenMP workers of the
    # idle one would starve the busy one.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": True, "include_dashboard": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)


@ray.remote
class RolloutActor:
    def __init__(self, engine: str, engine_kwargs: dict[str, Any], threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        from rlkit.rollout.engine import make_engine

        self.engine = make_engine(engine, **engine_kwargs)

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Rollout]:
        return self.engine.generate(requests, sampling)

    def load_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> int:
        self.engine.load_weights(state_dict, version)
        return version

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.engine.state_dict()


@ray.remote
class LearnerActor:
    def __init__(self, rank: int, world_size: int, master_addr: str, master_port: int, kwargs: dict[str, Any]) -> None:
        from rlkit.learner import Learner, set_rank_env

        if world_size > 1:
            set_rank_env(rank, world_size, master_addr, master_port)
        self.learner = Learner(**kwargs)

    def train_step(self, batch: TrainBatch, total_tokens: float, total_seqs: int) -> dict[str, float]:
        return self.learner.train_step(batch, total_tokens=total_tokens, total_seqs=total_seqs)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.learner.state_dict()

    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        return self.learner.logprobs(batch)

    def save(self, directory: str) -> None:
        self.learner.save(directory)

    def load(self, directory: str) -> int:
        return self.learner.load(directory)


class RolloutGroup:
    """N rollout actors; `generate` splits requests across them, balanced by sample count."""

    def __init__(self, num_actors: int, engine: str, engine_kwargs: dict[str, Any], *, threads: int = 1,
                 num_cpus: float = 1, num_gpus: float = 0) -> None:
        if num_actors < 1:
            raise ValueError(f"rollout.num_actors must be >= 1, got {num_actors}")
        self.actors = [
            RolloutActor.options(num_cpus=num_cpus, num_gpus=num_gpus).remote(
                engine, {**engine_kwargs, "seed": engine_kwargs.get("seed", 0) + 1000 * i}, threads)
            for i in range(num_actors)
        ]

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Rollout]:
        shards: list[list[int]] = [[] for _ in self.actors]
        loads = [0] * len(self.actors)
        for i in sorted(range(len(requests)), key=lambda i: -requests[i].n):
            a = loads.index(min(loads))
            shards[a].append(i)
            loads[a] += requests[i].n
        refs = [actor.generate.remote([requests[i] for i in shard], sampling)
                for actor, shard in zip(self.actors, shards) if shard]
        results = ray.get(refs)
        by_request: dict[int, list[Rollout]] = {}
        for shard, rollouts in zip([s for s in shards if s], results):
            pos = 0
            for i in shard:
                by_request[i] = rollouts[pos : pos + requests[i].n]
                pos += requests[i].n
        return [r for i in range(len(requests)) for r in by_request[i]]

    def load_weights(self, state_ref, version: int) -> None:
        ray.get([a.load_weights.remote(state_ref, version) for a in self.actors])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return ray.get(self.actors[0].state_dict.remote())


class LearnerGroup:
    """N learner ranks; `train_step` gives each rank a contiguous share of the batch."""

    def __init__(self, num_learners: int, learner_kwargs: dict[str, Any], *, num_cpus: float = 1,
                 num_gpus: float = 0) -> None:
        if num_learners < 1:
            raise ValueError(f"learner.num_learners must be >= 1, got {num_learners}")
        addr, port = _free_address()
        self.actors = [
            LearnerActor.options(num_cpus=num_cpus, num_gpus=num_gpus).remote(rank, num_learners, addr, port,
                                                                              learner_kwargs)
            for rank in range(num_learners)
        ]

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        norms = loss_normalizers(batch.loss_mask)  # counted over the whole batch, before the split
        total_tokens, total_seqs = float(norms["total_tokens"]), int(norms["total_seqs"])
        total_rows = len(batch)
        if total_tokens == 0:  # everything masked (e.g. all truncated and filtered): nothing to learn
            return {"learner/skipped": 1.0, "learner/tokens": 0.0}
        n = len(self.actors)
        bounds = [round(i * total_rows / n) for i in range(n + 1)]
        refs = [actor.train_step.remote(batch.select(slice(bounds[r], bounds[r + 1])), total_tokens, total_seqs)
                for r, actor in enumerate(self.actors)]
        results = ray.get(refs)
        metrics = merge_metrics([(m, m.get("learner/tokens", 0.0)) for m in results])
        metrics["learner/tokens"] = sum(m.get("learner/tokens", 0.0) for m in results)
        metrics["grad_norm"] = results[0]["grad_norm"]  # after the all-reduce every rank holds the same gradient
        return metrics

    def state_dict_ref(self):
        return self.actors[0].state_dict.remote()

    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        return ray.get(self.actors[0].logprobs.remote(batch))

    def save(self, directory: str) -> None:
        ray.get([a.save.remote(directory) for a in self.actors])

    def load(self, directory: str) -> int:
        return ray.get([a.load.remote(directory) for a in self.actors])[0]


def _free_address() -> tuple[str, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "127.0.0.1", s.getsockname()[1]
