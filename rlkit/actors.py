"""Thin Ray wrappers: rollout actors (one engine each) and learner actors (one rank each).

Each method is a plain call on the wrapped object; any exception in an actor reaches the
driver through `ray.get` as a RayTaskError carrying the actor's traceback, so a failure never
turns into a hang. Faults:
- a rollout actor that dies (its process killed, its node lost) is replaced by a new one with
  the same engine arguments, given the latest weights, and its share of the call is generated
  again: the step goes on, nothing is lost or duplicated;
- a learner rank that dies ends the run with `LearnerDied`, which says to resume from the last
  checkpoint: its optimizer state is gone, and the other ranks wait on it in a collective.
Actors that the cluster cannot place within `timeout_s` (resources taken, a node gone) raise
`PlacementError` naming what they asked for and what the cluster has, instead of waiting.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import ray
import torch
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from rlkit.algo import loss_normalizers
from rlkit.metrics import merge_metrics
from rlkit.placement import ActorResources, PlacementError, describe_cluster
from rlkit.types import GenerationRequest, Rollout, SamplingParams, TrainBatch

READY_TIMEOUT_S = 120.0  # an actor not running this long after it was asked for is not coming
MAX_ROLLOUT_RESTARTS = 3  # per call: a rollout actor that keeps dying is a bug, not a fault


class LearnerDied(RuntimeError):
    """A learner rank died; the run must be resumed from its last checkpoint."""


def init_ray(address: str = "", *, num_cpus: int | None = None) -> None:
    """Start a local Ray ("") or join a cluster ("auto", "host:port", "ray://host:port"); a cluster that does
    not answer is a PlacementError within seconds, not a wait."""
    if ray.is_initialized():
        return
    if address and address != "auto":
        _check_reachable(address)
    _token_auth(joining=bool(address))
    # the driver's environment (threads, paths, what `rlkit.logging.quiet_console` keeps off the console) must
    # reach actors, also on other machines
    env = {k: v for k, v in os.environ.items()
           if k in ("PYTHONPATH", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS",
                    "TRANSFORMERS_NO_ADVISORY_WARNINGS")}
    # Rollout and learner actors take turns on the same cores: spinning OpenMP workers of the
    # idle one would starve the busy one.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": True, "include_dashboard": False}
    if address:
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as err:
            raise PlacementError(f"no Ray cluster answers at ray_address={address!r}: {str(err).splitlines()[0]} "
                                 "(start one with `ray start --head`, or leave ray_address empty for a local Ray)"
                                 ) from None
    else:
        ray.init(num_cpus=num_cpus, **kwargs)


def _token_auth(joining: bool) -> None:
    """Ray's token authentication, stated explicitly (Ray warns on every start when it has to guess). A local
    Ray uses it (Ray's default); a driver joining a cluster sends the token when it has one, which a cluster
    started with authentication needs and one without ignores. RAY_AUTH_MODE set by the user wins."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if not joining or "RAY_AUTH_TOKEN" in os.environ or os.path.exists(token_file):
        os.environ["RAY_AUTH_MODE"] = "token"
        try:  # Ray reads its config once, at import: read it again, as Ray's own `ray start` does
            from ray._raylet import Config

            Config.initialize("")
        except (ImportError, AttributeError):
            pass


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise PlacementError(f"ray_address={address!r} is not auto, host:port or ray://host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        raise PlacementError(f"no Ray cluster answers at ray_address={address!r} ({err.strerror or err}); "
                             "start one with `ray start --head`, or leave ray_address empty for a local Ray") from None


def _options(resources: ActorResources) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_cpus": resources.cpus, "num_gpus": resources.gpus}
    if resources.placement_group is not None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            resources.placement_group, placement_group_bundle_index=resources.bundle)
    return opts


def wait_ready(actors: list, what: str, resources: list[ActorResources], timeout_s: float) -> None:
    """Return once every actor runs; a PlacementError if the cluster has not placed them in `timeout_s`."""
    try:
        ray.get([a.__ray_ready__.remote() for a in actors], timeout=timeout_s)
    except GetTimeoutError:
        asked = ", ".join(f"{r}" for r in resources)
        raise PlacementError(f"{what} were not placed within {timeout_s:.0f} s: they ask for {asked}; "
                             f"the cluster has {describe_cluster()}") from None


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

    def sleep(self) -> None:
        """Give the device memory back while the learner runs (engines that can: `sleep`/`wake_up`)."""
        if hasattr(self.engine, "sleep"):
            self.engine.sleep()

    def wake_up(self) -> None:
        if hasattr(self.engine, "wake_up"):
            self.engine.wake_up()

    def pid(self) -> int:
        return os.getpid()


@ray.remote
class LearnerActor:
    """One rank. Built in two calls: `address` (rank 0: where the others meet it), then `start`."""

    def address(self) -> tuple[str, int]:
        with socket.socket() as s:
            s.bind(("", 0))
            return ray.util.get_node_ip_address(), s.getsockname()[1]

    def start(self, rank: int, world_size: int, master_addr: str, master_port: int, kwargs: dict[str, Any]) -> None:
        from rlkit.learner import Learner, set_rank_env

        if world_size > 1:
            set_rank_env(rank, world_size, master_addr, master_port)
        self.learner = Learner(**kwargs)

    def train_step(self, batch: TrainBatch, total_tokens: float, total_seqs: int) -> dict[str, float]:
        return self.learner.train_step(batch, total_tokens=total_tokens, total_seqs=total_seqs)

    def state_dict(self, everywhere: bool = False) -> dict[str, torch.Tensor]:
        return self.learner.state_dict(everywhere)

    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        return self.learner.logprobs(batch)

    def parameters_held(self) -> int:
        """Parameter elements this rank holds: the whole model under DDP, its shard under FSDP."""
        return sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in self.learner.model.parameters())

    def save(self, directory: str) -> None:
        self.learner.save(directory)

    def load(self, directory: str) -> int:
        return self.learner.load(directory)

    def pid(self) -> int:
        return os.getpid()


class RolloutGroup:
    """N rollout actors; `generate` splits requests across them, balanced by sample count."""

    def __init__(self, num_actors: int, engine: str, engine_kwargs: dict[str, Any], *, threads: int = 1,
                 num_cpus: float = 1, num_gpus: float = 0, resources: list[ActorResources] | None = None,
                 timeout_s: float = READY_TIMEOUT_S) -> None:
        if num_actors < 1:
            raise ValueError(f"rollout.num_actors must be >= 1, got {num_actors}")
        self.engine, self.engine_kwargs, self.threads = engine, engine_kwargs, threads
        self.resources = resources or [ActorResources(num_cpus, num_gpus)] * num_actors
        self.actors = [self._start(i) for i in range(num_actors)]
        self._weights: tuple[Any, int] | None = None  # (state dict ref, version) last loaded: a replacement gets it
        wait_ready(self.actors, f"{num_actors} rollout actor(s)", self.resources, timeout_s)

    def _start(self, i: int):
        kwargs = {**self.engine_kwargs, "seed": self.engine_kwargs.get("seed", 0) + 1000 * i}
        return RolloutActor.options(**_options(self.resources[i])).remote(self.engine, kwargs, self.threads)

    def _replace(self, i: int, err: Exception) -> None:
        print(f"rollout actor {i} died ({type(err).__name__}); starting a new one and generating its share again",
              file=sys.stderr, flush=True)
        self.actors[i] = self._start(i)
        if self._weights is not None:
            ray.get(self.actors[i].load_weights.remote(*self._weights))

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Rollout]:
        shards: list[list[int]] = [[] for _ in self.actors]
        loads = [0] * len(self.actors)
        for i in sorted(range(len(requests)), key=lambda i: -requests[i].n):
            a = loads.index(min(loads))
            shards[a].append(i)
            loads[a] += requests[i].n
        busy = [a for a, shard in enumerate(shards) if shard]
        results = self._call(busy, lambda a: self.actors[a].generate.remote([requests[i] for i in shards[a]],
                                                                            sampling))
        by_request: dict[int, list[Rollout]] = {}
        for a in busy:
            pos = 0
            for i in shards[a]:
                by_request[i] = results[a][pos : pos + requests[i].n]
                pos += requests[i].n
        return [r for i in range(len(requests)) for r in by_request[i]]

    def _call(self, which: list[int], submit) -> dict[int, Any]:
        """`submit(a)` on each actor a in `which`; a dead actor is replaced and asked again."""
        pending = {a: submit(a) for a in which}
        results: dict[int, Any] = {}
        restarts = 0
        while pending:
            for a, ref in list(pending.items()):
                try:
                    results[a] = ray.get(ref)
                    del pending[a]
                except RayActorError as err:
                    if isinstance(err, RayTaskError):  # the actor is alive: an input of the task was lost
                        raise
                    restarts += 1
                    if restarts > MAX_ROLLOUT_RESTARTS * len(self.actors):
                        raise
                    self._replace(a, err)
                    pending[a] = submit(a)
        return results

    def load_weights(self, state_ref, version: int) -> None:
        self._weights = (state_ref, version)
        self._call(list(range(len(self.actors))), lambda a: self.actors[a].load_weights.remote(state_ref, version))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._call([0], lambda a: self.actors[a].state_dict.remote())[0]

    def sleep(self) -> None:
        """Colocated on GPUs: the engines release their memory while the learner trains."""
        self._call(list(range(len(self.actors))), lambda a: self.actors[a].sleep.remote())

    def wake_up(self) -> None:
        self._call(list(range(len(self.actors))), lambda a: self.actors[a].wake_up.remote())


class LearnerGroup:
    """N learner ranks; `train_step` gives each rank a contiguous share of the batch."""

    def __init__(self, num_learners: int, learner_kwargs: dict[str, Any], *, num_cpus: float = 1,
                 num_gpus: float = 0, resources: list[ActorResources] | None = None,
                 timeout_s: float = READY_TIMEOUT_S) -> None:
        if num_learners < 1:
            raise ValueError(f"learner.num_learners must be >= 1, got {num_learners}")
        resources = resources or [ActorResources(num_cpus, num_gpus)] * num_learners
        self.actors = [LearnerActor.options(**_options(r)).remote() for r in resources]
        wait_ready(self.actors, f"{num_learners} learner rank(s)", resources, timeout_s)
        # ranks meet at rank 0's node, on a port free there (the driver may be on another machine)
        addr, port = ray.get(self.actors[0].address.remote())
        self._get([a.start.remote(rank, num_learners, addr, port, learner_kwargs)
                   for rank, a in enumerate(self.actors)])

    def _get(self, refs):
        try:
            return ray.get(refs)
        except RayActorError as err:
            raise LearnerDied(f"a learner rank died ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None

    def _split(self, batch: TrainBatch) -> list[TrainBatch]:
        n, rows = len(self.actors), len(batch)
        bounds = [round(i * rows / n) for i in range(n + 1)]
        return [batch.select(slice(bounds[r], bounds[r + 1])) for r in range(n)]

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        norms = loss_normalizers(batch.loss_mask)  # counted over the whole batch, before the split
        total_tokens, total_seqs = float(norms["total_tokens"]), int(norms["total_seqs"])
        if total_tokens == 0:  # everything masked (e.g. all truncated and filtered): nothing to learn
            return {"learner/skipped": 1.0, "learner/tokens": 0.0}
        if len(batch) < len(self.actors):
            raise ValueError(f"a batch of {len(batch)} sequences cannot feed {len(self.actors)} learner ranks")
        results = self._get([a.train_step.remote(share, total_tokens, total_seqs)
                             for a, share in zip(self.actors, self._split(batch))])
        metrics = merge_metrics([(m, m.get("learner/tokens", 0.0)) for m in results])
        metrics["learner/tokens"] = sum(m.get("learner/tokens", 0.0) for m in results)
        metrics["grad_norm"] = results[0]["grad_norm"]  # after the all-reduce every rank holds the same gradient
        return metrics

    def state_dict_ref(self):
        """Rank 0's whole weights in the object store (every rank takes part: under FSDP gathering is collective)."""
        refs = [a.state_dict.remote() for a in self.actors]
        self._get(refs[1:])
        return refs[0]

    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """[N, L-1]: each rank scores its share of the rows (under FSDP every rank must run every forward)."""
        if len(batch) < len(self.actors):
            raise ValueError(f"a batch of {len(batch)} sequences cannot feed {len(self.actors)} learner ranks")
        return torch.cat(self._get([a.logprobs.remote(share) for a, share in zip(self.actors, self._split(batch))]))

    def save(self, directory: str) -> None:
        self._get([a.save.remote(directory) for a in self.actors])

    def load(self, directory: str) -> int:
        return self._get([a.load.remote(directory) for a in self.actors])[0]
