"""Placement plans from the config and the cluster's resources (pure logic: no Ray, no GPU needed)."""

from __future__ import annotations

import pytest

from rlkit.placement import PlacementError, plan


def test_cpu_actors_share_the_cores_so_two_learners_and_a_rollout_start_on_two():
    p = plan(rollout_actors=1, learners=2, rollout_device="cpu", learner_device="cpu", cluster={"CPU": 2.0})
    # 3 actors on 2 CPUs: 2/3 each, 2.0 in all, none of them waiting for a core
    assert [r.cpus for r in p.rollout + p.learner] == pytest.approx([2 / 3] * 3)
    assert sum(r.cpus for r in p.rollout + p.learner) == pytest.approx(2.0)
    assert p.bundles is None
    # a big machine: one CPU each (the reservation is a scheduling share, not the threads)
    big = plan(rollout_actors=2, learners=2, rollout_device="cpu", learner_device="cpu", cluster={"CPU": 64.0})
    assert [r.cpus for r in big.rollout + big.learner] == [1.0] * 4


def test_colocated_gpus_put_rank_i_and_engine_i_in_bundle_i_with_fractions():
    p = plan(rollout_actors=4, learners=4, rollout_device="cuda", learner_device="cuda", rollout_gpu_share=0.4,
             cluster={"CPU": 16.0, "GPU": 4.0})
    assert p.bundles == [{"GPU": 1.0, "CPU": 2.0}] * 4
    assert [(r.bundle, r.gpus) for r in p.rollout] == [(i, 0.4) for i in range(4)]
    assert [(r.bundle, r.gpus) for r in p.learner] == [(i, pytest.approx(0.6)) for i in range(4)]
    # each bundle's GPU is shared out exactly, and its CPUs too
    for i in range(4):
        assert p.rollout[i].gpus + p.learner[i].gpus == pytest.approx(1.0)
        assert p.rollout[i].cpus + p.learner[i].cpus == pytest.approx(2.0)
    # one GPU: learner and engine side by side on it
    one = plan(rollout_actors=1, learners=1, rollout_device="cuda", learner_device="cuda", cluster={"CPU": 8, "GPU": 1})
    assert one.bundles == [{"GPU": 1.0, "CPU": 2.0}] and one.learner[0].gpus == 0.5 and one.rollout[0].gpus == 0.5


def test_separate_gpus_give_engines_their_tensor_parallel_share():
    p = plan(rollout_actors=2, learners=4, rollout_device="cuda", learner_device="cuda", tensor_parallel=2,
             colocate=False, cluster={"CPU": 32.0, "GPU": 8.0})
    assert [r.gpus for r in p.rollout] == [2, 2] and [r.gpus for r in p.learner] == [1] * 4 and p.bundles is None


@pytest.mark.parametrize("request_, cluster, message", [
    (dict(rollout_device="cuda", learner_device="cpu"), {"CPU": 2.0}, "ask for GPUs; the cluster has none"),
    (dict(rollout_device="cuda", learner_device="cuda", learners=2), {"CPU": 8.0, "GPU": 1.0},
     "need 2 GPUs; the cluster has 1"),
    (dict(rollout_device="cuda", learner_device="cuda", colocate=False, tensor_parallel=2), {"CPU": 8.0, "GPU": 2.0},
     "= 3 GPUs; the cluster has 2"),
    (dict(rollout_device="cuda", learner_device="cuda", tensor_parallel=2), {"CPU": 8.0, "GPU": 4.0},
     "needs placement.colocate=false"),
])
def test_requests_the_cluster_cannot_hold_are_refused_naming_both(request_, cluster, message):
    args = dict(rollout_actors=1, learners=1, rollout_device="cpu", learner_device="cpu")
    args.update(request_)
    with pytest.raises(PlacementError, match=message):
        plan(cluster=cluster, **args)
