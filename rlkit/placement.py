"""Where actors go: a placement plan from the config and the cluster, checked before any actor starts.

Rollout engines and learner ranks take turns (generate, then learn), so they can share devices:
- CPU: every rollout actor and learner rank reserves an equal share of the cluster's CPUs,
  at most one each (a reservation is a scheduling share; the threads each actor runs are
  `learner.threads` / the engine's). `learner.num_learners=2` plus a rollout actor thus starts
  on 2 cores.
- GPU, colocated (`placement.colocate`, the default): one placement-group bundle per GPU;
  learner rank i and rollout actor i share bundle i, each reserving a fraction of its GPU
  (`placement.rollout_gpu_share`, the rest to the learner). The engine's memory share
  (`rollout.memory_share`) must fit in that fraction beside the learner.
- GPU, separate: learner ranks get a whole GPU each, rollout actors
  `rollout.tensor_parallel_size` each.
A plan the cluster cannot hold (more GPUs than it has, GPUs on a CPU-only cluster, more ranks
than devices) is a `PlacementError` naming the request and what the cluster has, at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class PlacementError(RuntimeError):
    """The cluster cannot place what the config asks for."""


@dataclass
class ActorResources:
    cpus: float  # logical CPUs reserved
    gpus: float = 0.0  # GPUs (a fraction when colocated)
    placement_group: Any = None  # ray PlacementGroup, or None
    bundle: int = -1  # bundle index within it

    def __str__(self) -> str:
        where = f" in bundle {self.bundle}" if self.placement_group is not None else ""
        return f"{{CPU: {self.cpus:g}, GPU: {self.gpus:g}}}{where}"


@dataclass
class Plan:
    rollout: list[ActorResources]  # one per rollout actor
    learner: list[ActorResources]  # one per rank
    bundles: list[dict[str, float]] | None = None  # the placement group to create (GPU colocation)


def plan(*, rollout_actors: int, learners: int, rollout_device: str, learner_device: str,
         tensor_parallel: int = 1, colocate: bool = True, rollout_gpu_share: float = 0.5,
         cluster: dict[str, float]) -> Plan:
    """Per-actor reservations for a cluster with `cluster` resources ({"CPU": n, "GPU": m, ...})."""
    cpus, gpus = float(cluster.get("CPU", 0)), int(cluster.get("GPU", 0))
    want_gpus = rollout_device == "cuda" or learner_device == "cuda"
    if want_gpus and gpus == 0:
        raise PlacementError(f"rollout.device={rollout_device}, learner.device={learner_device} ask for GPUs; "
                             f"the cluster has none ({describe(cluster)})")
    actors = rollout_actors + learners
    share = min(1.0, cpus / actors) if cpus > 0 else 0.0
    if share <= 0:
        raise PlacementError(f"the cluster has no CPUs to place {actors} actors on ({describe(cluster)})")
    if not want_gpus:
        return Plan([ActorResources(share)] * rollout_actors, [ActorResources(share)] * learners)
    if rollout_device == "cuda" and learner_device == "cuda" and colocate:
        if tensor_parallel != 1:
            raise PlacementError("placement.colocate=true shares each GPU between one learner rank and one rollout "
                                 f"engine; rollout.tensor_parallel_size={tensor_parallel} needs placement.colocate=false")
        slots = max(rollout_actors, learners)
        if slots > gpus:
            raise PlacementError(f"colocated, {learners} learner rank(s) and {rollout_actors} rollout actor(s) need "
                                 f"{slots} GPUs; the cluster has {gpus} ({describe(cluster)})")
        if not 0 < rollout_gpu_share < 1:
            raise PlacementError(f"placement.rollout_gpu_share must be in (0, 1), got {rollout_gpu_share}")
        per_bundle_cpus = min(2.0, cpus / slots)
        bundles = [{"GPU": 1.0, "CPU": per_bundle_cpus} for _ in range(slots)]
        half = per_bundle_cpus / 2
        rollout = [ActorResources(half, rollout_gpu_share, bundle=i) for i in range(rollout_actors)]
        learner = [ActorResources(half, 1.0 - rollout_gpu_share, bundle=i) for i in range(learners)]
        return Plan(rollout, learner, bundles)
    rollout_gpus = tensor_parallel if rollout_device == "cuda" else 0
    learner_gpus = 1 if learner_device == "cuda" else 0
    needed = rollout_actors * rollout_gpus + learners * learner_gpus
    if needed > gpus:
        raise PlacementError(f"{learners} learner rank(s) x {learner_gpus} GPU + {rollout_actors} rollout actor(s) x "
                             f"{rollout_gpus} GPU = {needed} GPUs; the cluster has {gpus} ({describe(cluster)})")
    return Plan([ActorResources(share, rollout_gpus)] * rollout_actors, [ActorResources(share, learner_gpus)] * learners)


def describe(resources: dict[str, float]) -> str:
    """{CPU: n, GPU: m, memory: x GiB} of a Ray resource dict."""
    parts = [f"{key}: {resources[key]:g}" for key in ("CPU", "GPU") if key in resources]
    if "memory" in resources:
        parts.append(f"memory: {resources['memory'] / 2**30:.1f} GiB")
    return "{" + ", ".join(parts) + "}" if parts else "{no CPUs or GPUs}"


def this_machine() -> dict[str, float]:
    """The resources a local Ray started here would have (for checks before it starts)."""
    import os

    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def describe_cluster() -> str:
    """What the running Ray cluster has in all and has free now."""
    import ray

    return f"{describe(ray.cluster_resources())} in all, {describe(ray.available_resources())} free"


def place(placement_plan: Plan, *, timeout_s: float) -> Plan:
    """Create the plan's placement group (if any) and wait for it; fill it into the reservations."""
    if placement_plan.bundles is None:
        return placement_plan
    import ray
    from ray.util.placement_group import placement_group

    group = placement_group(placement_plan.bundles, strategy="PACK")
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        raise PlacementError(f"a placement group of {len(placement_plan.bundles)} bundles "
                             f"{placement_plan.bundles[0]} was not placed within {timeout_s:.0f} s; "
                             f"the cluster has {describe_cluster()}")
    for r in placement_plan.rollout + placement_plan.learner:
        r.placement_group = group
    return placement_plan


def for_config(rollout, learner, placement, *, tensor_parallel: int = 1, cluster: dict[str, float] | None = None) -> Plan:
    """The plan for a recipe's `rollout`, `learner` and `placement` sections, on `cluster` (default: the
    running Ray cluster's resources)."""
    if cluster is None:
        import ray

        cluster = ray.cluster_resources()
    return plan(rollout_actors=rollout.num_actors, learners=learner.num_learners, rollout_device=rollout.device,
                learner_device=learner.device, tensor_parallel=tensor_parallel, colocate=placement.colocate,
                rollout_gpu_share=placement.rollout_gpu_share, cluster=cluster)


def colocated_gpus(rollout, learner, placement) -> bool:
    """Whether rollout engines share GPUs with learner ranks (then engines sleep while the learner runs)."""
    return placement.colocate and rollout.device == "cuda" and learner.device == "cuda"
