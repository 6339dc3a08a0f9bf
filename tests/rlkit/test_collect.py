"""Collector scheduling: dynamic sampling refills, partial rollouts carry groups. A scripted engine
stands in for the model here because only the bookkeeping is under test."""

from __future__ import annotations

import pytest

from rlkit.collect import Collector
from rlkit.data import Problem
from rlkit.prompt_samplers import make_prompt_sampler
from rlkit.rollout.partial import PartialRolloutBuffer
from rlkit.scoring import Scorer
from rlkit.types import FINISH_BUDGET, FINISH_STOP, Rollout, SamplingParams

def parity_reward(completions, answer, **kw):
    # 1.0 when the completion's text equals the gold answer, else 0.0
    return [float(c == a) for c, a in zip(completions, answer)]


def _problems(answers):
    return [Problem(index=i, prompt=f"q{i}", prompt_ids=[1, 2, i + 3], columns={"answer": a})
            for i, a in enumerate(answers)]


class ScriptedEngine:
    """Problem i's samples answer `script[i][k]`; a sample needs `length[i]` tokens to finish."""

    def __init__(self, script, length):
        self.script, self.length, self.calls = script, length, 0

    def generate(self, requests, sampling):
        self.calls += 1
        out = []
        for req in requests:
            i = req.meta["problem"]
            for k in range(req.n):
                done = len(req.prefix_ids)
                step = min(self.length[i] - done, sampling.token_budget or 10**9)
                ids = req.prefix_ids + [7] * step
                finished = len(ids) >= self.length[i]
                member = req.meta.get("partial", {}).get("members", [k])[k] if "partial" in req.meta else k
                out.append(Rollout(prompt_ids=req.prompt_ids, completion_ids=ids, logprobs=[-1.0] * len(ids),
                                   versions=req.prefix_versions + [0] * step,
                                   finish_reason=FINISH_STOP if finished else FINISH_BUDGET,
                                   text=self.script[i][member % len(self.script[i])], meta=dict(req.meta)))
        return out


def _collector(engine, problems, **kw):
    scorer = Scorer({parity_reward: 1.0}, "parity_reward")
    sampler = make_prompt_sampler("in_order", problems, seed=0, difficulty_column="")
    return Collector(engine.generate, problems, scorer, sampler, group_size=2, groups_per_step=2,
                     sampling=SamplingParams(max_new_tokens=64), **kw)


def test_plain_grpo_is_one_round_of_b_groups():
    problems = _problems(["a", "b", "c"])
    engine = ScriptedEngine({0: ["a", "x"], 1: ["b", "b"], 2: ["x", "x"]}, {0: 3, 1: 3, 2: 3})
    groups, metrics = _collector(engine, problems).collect(version=0)
    assert [g[0].meta["problem"] for g in groups] == [0, 1]  # in_order: problems 0 and 1
    assert metrics["batch/rounds"] == 1 and engine.calls == 1
    assert [r.reward for r in groups[0]] == [1.0, 0.0]  # "a" matches, "x" does not


def test_dynamic_sampling_drops_uniform_groups_and_refills():
    # problem 1 (all right) and problem 2 (all wrong) have zero advantage: dropped.
    problems = _problems(["a", "b", "c", "d"])
    engine = ScriptedEngine({0: ["a", "x"], 1: ["b", "b"], 2: ["x", "x"], 3: ["d", "y"]}, {i: 3 for i in range(4)})
    groups, metrics = _collector(engine, problems, dynamic=True, max_rounds=4).collect(version=0)
    # round 1 draws problems 0,1 -> keeps 0; round 2 draws 2,3 -> keeps 3; batch full after 2 rounds
    assert [g[0].meta["problem"] for g in groups] == [0, 3]
    assert metrics["batch/rounds"] == 2 and metrics["batch/dropped_groups"] == 2


def test_partial_rollouts_finish_short_groups_first_and_carry_long_ones():
    # problem 0 needs 4 tokens, problem 1 needs 12; budget 4 tokens per round
    problems = _problems(["a", "b", "c", "d"])
    engine = ScriptedEngine({i: ["a", "x"] for i in range(4)}, {0: 4, 1: 12, 2: 4, 3: 4})
    buffer = PartialRolloutBuffer(4, max_staleness=4, max_new_tokens=16)
    collector = _collector(engine, problems, partial=buffer, max_rounds=1)
    groups, metrics = collector.collect(version=0)
    # round 1: problems 0 and 1 start; 0 finishes (4 tokens), 1 stops at the budget -> 1 group
    assert [g[0].meta["problem"] for g in groups] == [0]
    assert buffer.num_unfinished == 2  # both members of problem 1 wait
    groups, metrics = collector.collect(version=1)
    # next step: problem 1 resumes (tokens 5-8) while problem 2 starts and finishes
    assert [g[0].meta["problem"] for g in groups] == [2]
    assert metrics["partial/resumed"] == 2
    state = collector.state_dict()
    groups, _ = collector.collect(version=2)
    assert [g[0].meta["problem"] for g in groups] == [1, 3]  # problem 1's 12th token arrives
    assert [r.versions for r in groups[0]] == [[0] * 12] * 2
    # the checkpointed state replays the same step
    fresh = _collector(ScriptedEngine(engine.script, engine.length), problems,
                       partial=PartialRolloutBuffer(4, max_staleness=4, max_new_tokens=16), max_rounds=1)
    fresh.load_state_dict(state)
    again, _ = fresh.collect(version=2)
    assert [g[0].meta["problem"] for g in again] == [1, 3]


def test_dynamic_sampling_with_partial_rollouts_keeps_surplus_groups_for_the_next_step():
    # 4 groups in flight, B=2, every problem finishes in one round and is informative ("a" right,
    # "x" wrong): round 1 completes 4 groups. Two train now; the other two are the next step's.
    problems = _problems(["a", "a", "a", "a", "a", "a"])
    engine = ScriptedEngine({i: ["a", "x"] for i in range(6)}, {i: 4 for i in range(6)})
    buffer = PartialRolloutBuffer(4, max_staleness=4, max_new_tokens=16)
    collector = _collector(engine, problems, partial=buffer, dynamic=True, max_rounds=4, groups_in_flight=4)
    groups, metrics = collector.collect(version=0)
    assert [g[0].meta["problem"] for g in groups] == [0, 1]
    assert metrics["batch/carried_groups"] == 0 and engine.calls == 1
    state = collector.state_dict()
    groups, metrics = collector.collect(version=1)
    # problems 2 and 3 were generated and scored in step 0: nothing is lost, nothing regenerated
    assert [g[0].meta["problem"] for g in groups] == [2, 3]
    assert metrics["batch/carried_groups"] == 2 and metrics["batch/rounds"] == 0 and engine.calls == 1
    assert metrics["reward/mean"] == 0.5 and [r.reward for r in groups[0]] == [1.0, 0.0]
    # a resumed run trains on the same surplus groups
    fresh = _collector(ScriptedEngine(engine.script, engine.length), problems,
                       partial=PartialRolloutBuffer(4, max_staleness=4, max_new_tokens=16), dynamic=True,
                       max_rounds=4, groups_in_flight=4)
    fresh.load_state_dict(state)
    again, _ = fresh.collect(version=1)
    assert [g[0].meta["problem"] for g in again] == [2, 3] and [r.reward for r in again[0]] == [1.0, 0.0]


def test_overlapped_scoring_gives_the_same_groups_and_hides_scoring_behind_generation():
    # 4 groups, 2 chunks: generating a chunk takes 0.4 s, scoring one 0.4 s. Chunk 1 is scored while
    # chunk 2 is generated, so the loop waits only for chunk 2's scoring: ~0.4 s of the ~0.8 s.
    import time

    def slow_parity(completions, answer, **kw):
        time.sleep(0.4)
        return parity_reward(completions, answer)

    class SlowEngine(ScriptedEngine):
        def generate(self, requests, sampling):
            time.sleep(0.4)
            return super().generate(requests, sampling)

    problems = _problems(["a", "b", "c", "d"])
    script = {0: ["a", "x"], 1: ["b", "b"], 2: ["x", "c"], 3: ["d", "d"]}
    results = {}
    for chunks in (1, 2):
        engine = SlowEngine(script, {i: 3 for i in range(4)})
        scorer = Scorer({slow_parity: 1.0}, "slow_parity", overlap_chunks=chunks)
        sampler = make_prompt_sampler("in_order", problems, seed=0, difficulty_column="")
        collector = Collector(engine.generate, problems, scorer, sampler, group_size=2, groups_per_step=4,
                              sampling=SamplingParams(max_new_tokens=64))
        groups, metrics = collector.collect(version=0)
        collector.close()
        results[chunks] = ([[r.reward for r in g] for g in groups], metrics, engine.calls)
    assert results[1][0] == results[2][0] == [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]]
    assert results[1][2] == 1 and results[2][2] == 2  # one engine call per chunk
    plain, overlapped = results[1][1], results[2][1]
    assert plain["time/reward_wait_s"] == pytest.approx(plain["time/reward_s"], rel=0.05)  # nothing hidden
    assert overlapped["time/reward_s"] >= 0.75  # two chunks of 0.4 s were scored
    assert overlapped["time/reward_wait_s"] < 0.65  # but the loop waited for about one of them
