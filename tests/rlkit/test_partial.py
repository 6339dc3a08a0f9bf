"""Partial rollouts: resuming is exact, versions are per token, groups complete whole, state
survives a checkpoint, staleness restarts, and the stale-token loss modes by hand."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from rlkit.algo import policy_loss
from rlkit.rollout.partial import (
    STALE_TOKEN_MODES,
    PartialRolloutBuffer,
    adjust_stale_tokens,
    apply_repeat_penalty,
    stale_token_metrics,
)
from rlkit.types import (
    FINISH_BUDGET,
    FINISH_LENGTH,
    FINISH_REPEAT,
    FINISH_STOP,
    GenerationRequest,
    Rollout,
    SamplingParams,
    TrainBatch,
)

torch.set_num_threads(1)

WORDS = "<pad> <eos> <unk> What is plus minus the answer so . , ? : 0 1 2 3 4 5 6 7 8 9".split()


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """The HF engine on a random 2-layer MoE with a word-level tokenizer (built in ~1 s)."""
    from rlkit.models import save_random_tiny_model
    from rlkit.rollout.hf import HFEngine

    path = tmp_path_factory.mktemp("partial_tiny_moe")
    # initializer_range 1.0 (not 0.02): greedy on a near-zero random model repeats one token
    # forever, which would make "resumed equals uncut" true for any resume; these weights give
    # varied greedy text, one answer ending in EOS and one at the length cap
    save_random_tiny_model(path, WORDS, split_digits=False, hidden_size=64, intermediate_size=128,
                           moe_intermediate_size=64, num_hidden_layers=2, head_dim=16, num_experts=4,
                           max_position_embeddings=128, initializer_range=1.0)
    return HFEngine(str(path), seed=0)


def _prompts(engine) -> list[GenerationRequest]:
    tok = engine.tokenizer
    # two prompt lengths, so resumed and fresh rows are left-padded differently in one batch
    return [GenerationRequest(tok("What is 1 plus 2 ?")["input_ids"], n=2, meta={"problem": 0}),
            GenerationRequest(tok("What is 7 minus 3 so the answer is ?")["input_ids"], n=2, meta={"problem": 1})]


GREEDY = SamplingParams(max_new_tokens=20, temperature=0.0)


def _run_partial(engine, buffer, new_per_iter, *, bump_version=False, max_iters=20):
    """Drive the buffer until no group is left; returns the completed groups in completion order."""
    done: list[list[Rollout]] = []
    sampling = buffer.sampling(GREEDY)
    for it in range(max_iters):
        new = new_per_iter[it] if it < len(new_per_iter) else []
        if it > 0 and bump_version:  # same weights, next version: only the stamps change
            engine.load_weights(engine.state_dict(), engine.version + 1)
        requests = buffer.requests_for_step(new, version=engine.version)
        done += buffer.add(engine.generate(requests, sampling), version=engine.version)
        if it >= len(new_per_iter) - 1 and buffer.num_incomplete_groups == 0:
            return done
    raise AssertionError("groups never completed")


# ----------------------------------------------------------------------------- (a), (b) with the engine


def test_resumed_greedy_trajectory_equals_uncut_one(engine):
    uncut = engine.generate(_prompts(engine), GREEDY)
    # the test means something only if trajectories are cut at least twice (budget 4), their
    # text is varied (a wrong prefix would show) and both finish reasons occur
    assert min(r.length for r in uncut) > 8, [r.length for r in uncut]
    assert all(len(set(r.completion_ids)) >= 5 for r in uncut), [r.completion_ids for r in uncut]
    assert {r.finish_reason for r in uncut} == {FINISH_STOP, FINISH_LENGTH}
    buffer = PartialRolloutBuffer(token_budget=4)
    groups = _run_partial(engine, buffer, [_prompts(engine)])
    got = {g[0].meta["problem"]: g for g in groups}
    for i, ref in enumerate(uncut):
        r = got[i // 2][i % 2]  # problem i // 2, member i % 2 (members keep the engine's order)
        assert r.completion_ids == ref.completion_ids
        assert r.finish_reason == ref.finish_reason
        # resumed segments re-prefill prompt + prefix in one forward: same numbers up to float error
        torch.testing.assert_close(torch.tensor(r.logprobs), torch.tensor(ref.logprobs), atol=1e-4, rtol=0)
        assert "partial" not in r.meta and r.meta["problem"] == i // 2


def test_a_group_started_while_another_resumes_from_kept_caches_matches_the_uncut_runs(engine, monkeypatch):
    # round 2 mixes both kinds of rows: the first group resumed from the keys/values the engine
    # kept in round 1 (same version), the second group prefilled fresh; later rounds resume both
    first, second = _prompts(engine)
    uncut = engine.generate([first, second], GREEDY)
    calls: list[list[tuple[int, ...]]] = []  # input_ids shape of every forward, by engine call
    generate = engine.generate
    monkeypatch.setattr(engine, "generate", lambda *a: calls.append([]) or generate(*a))
    handle = engine.model.register_forward_pre_hook(
        lambda module, args, kwargs: calls[-1].append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        groups = _run_partial(engine, PartialRolloutBuffer(token_budget=4), [[first], [second]])
    finally:
        handle.remove()
    # round 2: the fresh prompt prefilled once for its 2 samples, the 2 resumed samples forward
    # only their last token over their kept keys/values
    assert calls[1][:2] == [(1, len(second.prompt_ids)), (2, 1)]
    got = {g[0].meta["problem"]: g for g in groups}
    for i, ref in enumerate(uncut):
        r = got[i // 2][i % 2]
        assert (r.completion_ids, r.finish_reason) == (ref.completion_ids, ref.finish_reason)
        torch.testing.assert_close(torch.tensor(r.logprobs), torch.tensor(ref.logprobs), atol=1e-4, rtol=0)


def test_versions_are_tracked_per_token_across_segments(engine):
    engine.version = 0
    try:
        uncut = engine.generate(_prompts(engine)[:1], GREEDY)[0]
        buffer = PartialRolloutBuffer(token_budget=4)
        (group,) = _run_partial(engine, buffer, [_prompts(engine)[:1]], bump_version=True)
    finally:
        engine.version = 0
    r = group[0]
    assert r.completion_ids == uncut.completion_ids  # same weights at every version
    # budget 4 and one version bump per iteration: tokens 0-3 were sampled by version 0, 4-7 by 1, ...
    assert r.versions == [j // 4 for j in range(r.length)]


def test_a_resumed_long_prefix_next_to_a_fresh_prompt_samples_as_each_alone(engine):
    # the batch an iteration really makes: prompt + 12-token prefix beside a bare prompt, so the
    # contexts differ by more than 2x in length and the short one sits behind a lot of padding
    fresh, long = _prompts(engine)[0].prompt_ids, _prompts(engine)[1].prompt_ids
    head = engine.generate([GenerationRequest(long)], SamplingParams(max_new_tokens=12, temperature=0.0))[0]
    resumed = GenerationRequest(long, prefix_ids=head.completion_ids, prefix_logprobs=head.logprobs,
                                prefix_versions=head.versions)
    sampling = SamplingParams(max_new_tokens=20, token_budget=6, temperature=0.0)
    together = engine.generate([resumed, GenerationRequest(fresh)], sampling)
    alone = engine.generate([resumed], sampling) + engine.generate([GenerationRequest(fresh)], sampling)
    assert len(together[0].completion_ids) > 12 and len(together[1].completion_ids) > 0
    for a, b in zip(together, alone):
        assert a.completion_ids == b.completion_ids
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)


def test_request_cap_in_meta_ends_with_length_and_a_prefix_at_the_cap_is_not_resumed(engine):
    prompt = _prompts(engine)[0].prompt_ids
    capped = GenerationRequest(prompt, meta={"max_new_tokens": 3})
    (r,) = engine.generate([capped], SamplingParams(max_new_tokens=20, temperature=0.0))
    eos = engine.eos_ids[0]
    if eos not in r.completion_ids:  # greedy on this model does not stop in 3 tokens
        assert (r.length, r.finish_reason) == (3, FINISH_LENGTH)
    # a resumed prefix already at its cap: nothing to sample, and "length", never "budget" again
    at_cap = GenerationRequest(prompt, prefix_ids=[5, 6, 7], prefix_logprobs=[-1.0] * 3, prefix_versions=[0] * 3,
                               meta={"max_new_tokens": 3})
    (r,) = engine.generate([at_cap], SamplingParams(max_new_tokens=20, token_budget=2))
    assert (r.completion_ids, r.finish_reason) == ([5, 6, 7], FINISH_LENGTH)


# ----------------------------------------------------------------------------- a scripted engine


class ScriptedEngine:
    """Each sample's length is fixed in advance: meta["targets"][member]. Token j of a completion
    is the number j, its log-prob -(j+1)/10, so everything below can be checked by hand."""

    def __init__(self):
        self.version = 0
        self.calls: list[list[GenerationRequest]] = []

    def generate(self, requests, sampling):
        self.calls.append(requests)
        out = []
        for req in requests:
            for member in req.meta["partial"]["members"]:
                target = req.meta["targets"][member]
                start = len(req.prefix_ids)
                end = min(target, start + sampling.token_budget)
                new = list(range(start, end))
                out.append(Rollout(
                    prompt_ids=list(req.prompt_ids), completion_ids=req.prefix_ids + new,
                    logprobs=req.prefix_logprobs + [-(j + 1) / 10 for j in new],
                    versions=req.prefix_versions + [self.version] * len(new),
                    finish_reason=FINISH_STOP if end == target else FINISH_BUDGET, meta=dict(req.meta)))
        return out


def _group(targets, pid):
    return GenerationRequest(prompt_ids=[100 + pid], n=len(targets), meta={"problem": pid, "targets": targets})


def _step(buffer, engine, new, sampling=SamplingParams(max_new_tokens=64)):
    requests = buffer.requests_for_step(new, version=engine.version)
    return requests, buffer.add(engine.generate(requests, buffer.sampling(sampling)), version=engine.version)


# ----------------------------------------------------------------------------- (f) bookkeeping


def test_groups_complete_only_when_every_member_finished():
    engine, buffer = ScriptedEngine(), PartialRolloutBuffer(token_budget=2)
    # iteration 0: groups A and D (all length <= 2) complete, oldest first; group B's member 1
    # (length 5) runs on
    requests, done = _step(buffer, engine, [_group([1, 1, 1], 0), _group([1, 5, 2], 1), _group([2, 1], 3)])
    assert [r.n for r in requests] == [3, 3, 2]  # one request per new group: the prefill is shared
    assert [[r.meta["problem"] for r in g] for g in done] == [[0, 0, 0], [3, 3]]
    assert [r.length for r in done[1]] == [2, 1]  # members in member order
    assert buffer.metrics()["partial/buffered"] == 1.0  # B1 with 2 of its 5 tokens
    assert buffer.metrics()["partial/buffered_groups"] == 1.0

    # iteration 1 (version 1): B1 resumed first, then new group C, which completes at once
    engine.version = 1
    requests, done = _step(buffer, engine, [_group([2, 1, 1], 2)])
    assert [(r.n, r.prefix_ids) for r in requests] == [(1, [0, 1]), (3, [])]
    assert [g[0].meta["problem"] for g in done] == [2]
    assert buffer.metrics()["partial/resumed"] == 1.0

    # iteration 2 (version 2) in two rounds, read once as a step with several rounds would:
    # round 1 resumes B1 (4 -> 5 tokens, B completes) and starts E, which round 2 completes
    engine.version = 2
    _, done = _step(buffer, engine, [_group([3], 4)])
    _, done_e = _step(buffer, engine, [])
    assert [g[0].meta["problem"] for g in done_e] == [4]
    (b,) = done
    assert [r.length for r in b] == [1, 5, 2]
    assert b[1].completion_ids == [0, 1, 2, 3, 4]
    assert b[1].logprobs == pytest.approx([-0.1, -0.2, -0.3, -0.4, -0.5])
    assert b[1].versions == [0, 0, 1, 1, 2]
    assert [r.finish_reason for r in b] == [FINISH_STOP] * 3
    # B's 8 tokens at version 2: age 0 is B1's last token (1), age 1 its tokens 2-3 (2), age 2
    # the other 5 (B0's 1, B1's first 2, B2's 2); E's 3 tokens are all age 0: shares of 11
    m = buffer.metrics()
    assert (m["partial/age0_share"], m["partial/age1_share"], m["partial/age2plus_share"]) == (4 / 11, 2 / 11, 5 / 11)
    # both rounds counted: B1 and then E resumed, B and E completed, one new group
    assert (m["partial/resumed"], m["partial/completed_groups"], m["partial/new_groups"]) == (2.0, 2.0, 1.0)
    assert m["partial/buffered"] == 0.0
    assert buffer.metrics()["partial/completed_groups"] == 0.0  # reading reset the counts


def test_add_maps_rollouts_in_any_request_order_and_refuses_strangers():
    engine, buffer = ScriptedEngine(), PartialRolloutBuffer(token_budget=2)
    requests = buffer.requests_for_step([_group([1, 3], 0), _group([2, 2], 1)], version=0)
    rollouts = engine.generate(requests, SamplingParams(token_budget=2))
    # the two requests' blocks swapped: members are recovered from the meta tag, not positions
    done = buffer.add(rollouts[2:] + rollouts[:2], version=0)
    assert [[r.length for r in g] for g in done] == [[2, 2]]
    with pytest.raises(ValueError, match="not in flight"):
        buffer.add(rollouts[:1], version=0)  # nothing of group 0 is in flight any more


def test_requests_and_add_must_alternate_and_missing_rollouts_are_an_error():
    engine, buffer = ScriptedEngine(), PartialRolloutBuffer(token_budget=2)
    requests = buffer.requests_for_step([_group([3, 3], 0)], version=0)
    with pytest.raises(RuntimeError, match="never passed to add"):
        buffer.requests_for_step([], version=0)
    with pytest.raises(ValueError, match="no rollout for"):
        buffer.add(engine.generate(requests, SamplingParams(token_budget=2))[:1], version=0)
    # the missing member (not started) is asked for again; the member that did come back resumes
    again = buffer.requests_for_step([], version=0)
    assert [(r.n, r.prefix_ids, r.meta["partial"]["members"]) for r in again] == [(1, [0, 1], [0]), (1, [], [1])]


# ----------------------------------------------------------------------------- (c) state round trip


def test_state_dict_round_trip_continues_identically():
    def run(round_trip: bool):
        engine, buffer = ScriptedEngine(), PartialRolloutBuffer(token_budget=2, max_staleness=3)
        out, metrics = [], []
        schedule = [[_group([1, 7], 0)], [_group([4, 1], 1)], [], [], []]
        for it, new in enumerate(schedule):
            engine.version = it
            if round_trip and it == 2:  # saved after a step's metrics were read, as the recipe does
                state = pickle.loads(pickle.dumps(buffer.state_dict()))
                buffer = PartialRolloutBuffer(token_budget=2, max_staleness=3)
                buffer.load_state_dict(state)
            out += _step(buffer, engine, new)[1]
            metrics.append(buffer.metrics())
        return out, metrics

    plain, plain_metrics = run(False)
    restored, restored_metrics = run(True)
    assert [[(r.completion_ids, r.logprobs, r.versions, r.meta) for r in g] for g in restored] == \
        [[(r.completion_ids, r.logprobs, r.versions, r.meta) for r in g] for g in plain]
    assert [[r.length for r in g] for g in plain] == [[4, 1], [1, 7]]  # group 1 finishes first (iteration 2)
    assert restored_metrics == plain_metrics


def test_state_taken_mid_flight_asks_for_the_in_flight_members_again():
    engine, buffer = ScriptedEngine(), PartialRolloutBuffer(token_budget=2)
    _step(buffer, engine, [_group([5], 0)])  # 2 of 5 tokens stored
    buffer.requests_for_step([_group([1, 1], 1)], version=0)  # then the process dies mid-iteration
    fresh = PartialRolloutBuffer(token_budget=2)
    fresh.load_state_dict(pickle.loads(pickle.dumps(buffer.state_dict())))
    requests = fresh.requests_for_step([], version=0)
    # group 0 resumes from its stored 2 tokens; group 1 (never added) starts as one n=2 request
    assert [(r.n, r.prefix_ids, r.meta["problem"]) for r in requests] == [(1, [0, 1], 0), (2, [], 1)]


# ----------------------------------------------------------------------------- (d) staleness


def test_stale_members_restart_from_scratch_and_are_counted():
    engine = ScriptedEngine()
    buffer = PartialRolloutBuffer(token_budget=2, max_staleness=1)
    _step(buffer, engine, [_group([1, 4], 0)])  # version 0: member 0 finishes, member 1 has 2 tokens
    # two optimizer steps in one iteration: at version 2 both members are 2 > 1 versions old; the
    # finished one too, or a trained token could be older than the bound
    engine.version = 2
    requests = buffer.requests_for_step([], version=2)
    assert [(r.n, r.prefix_ids, r.meta["partial"]["members"]) for r in requests] == [(2, [], [0, 1])]
    m = buffer.metrics()
    assert (m["partial/restarted"], m["partial/restarted_total"], m["partial/resumed"]) == (2.0, 2.0, 0.0)
    buffer.add(engine.generate(requests, SamplingParams(token_budget=2)), version=2)
    # version 3: member 1 is 1 version behind, within the bound, so it resumes
    engine.version = 3
    _, (group,) = _step(buffer, engine, [])
    assert [r.versions for r in group] == [[2], [2, 2, 3, 3]]
    assert buffer.metrics()["partial/restarted_total"] == 2.0


def test_budget_and_staleness_that_could_never_finish_a_long_answer_are_refused():
    # 2 segments of 2 tokens reach 4 tokens before the restart: 5 could never finish
    with pytest.raises(ValueError, match="max_staleness"):
        PartialRolloutBuffer(token_budget=2, max_staleness=1, max_new_tokens=5)
    PartialRolloutBuffer(token_budget=2, max_staleness=1, max_new_tokens=4)


def test_tokens_newer_than_the_current_version_are_an_error():
    engine, buffer = ScriptedEngine(), PartialRolloutBuffer(token_budget=2)
    engine.version = 3
    _step(buffer, engine, [_group([5], 0)])
    with pytest.raises(ValueError, match="out of step"):
        buffer.requests_for_step([], version=2)


# ----------------------------------------------------------------------------- (e) stale-token modes


def _hand_batch() -> TrainBatch:
    """Row 0: prompt of 2 tokens, completion of 3 sampled by versions 0, 1, 2 (current: 2).
    Row 1: a one-token completion by version 2, then padding (version -1, off the mask)."""
    return TrainBatch(
        input_ids=torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 0, 0]]),
        attention_mask=torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
        loss_mask=torch.tensor([[0.0, 1, 1, 1], [0, 1, 0, 0]]),  # [N, L-1]
        old_logp=torch.tensor([[0.0, -1.0, -1.0, -0.5], [0, -0.5, 0, 0]]),  # behaviour
        advantages=torch.tensor([1.0, 1.0]),
        versions=torch.tensor([[-1, 0, 1, 2], [-1, 2, -1, -1]]),
    )


PROXIMAL = torch.tensor([[0.0, -0.5, -0.5, -0.5], [0, -0.5, 0, 0]])  # the current policy's log-probs


def test_mask_mode_keeps_only_the_newest_segment():
    out = adjust_stale_tokens(_hand_batch(), 2, "mask")
    assert out.loss_mask.tolist() == [[0, 0, 0, 1], [0, 1, 0, 0]]
    assert out.token_weights is None and torch.equal(out.old_logp, _hand_batch().old_logp)


def test_importance_mode_weights_stale_tokens_and_takes_the_ratio_against_the_proximal_policy():
    out = adjust_stale_tokens(_hand_batch(), 2, "importance", proximal_logp=PROXIMAL, cap=1.5)
    # stale tokens: exp(-0.5 - (-1.0)) = e^0.5 = 1.6487 > cap 1.5 -> 1.5; on-policy tokens 1
    assert out.token_weights[0, 1:].tolist() == [1.5, 1.5, 1.0]
    assert out.token_weights[1, 1].item() == 1.0
    assert out.old_logp[0, 1:].tolist() == [-0.5, -0.5, -0.5]  # stale: proximal; on-policy: behaviour
    assert torch.equal(out.loss_mask, _hand_batch().loss_mask)
    # below the cap the weight is the plain ratio: cap 2 -> e^0.5
    loose = adjust_stale_tokens(_hand_batch(), 2, "importance", proximal_logp=PROXIMAL, cap=2.0)
    assert loose.token_weights[0, 1].item() == pytest.approx(math.exp(0.5))
    # and a proximal policy that likes the token less: exp(-2 - (-1)) = e^-1 = 0.3679
    low = adjust_stale_tokens(_hand_batch(), 2, "importance", proximal_logp=PROXIMAL - 1.5, cap=2.0)
    assert low.token_weights[0, 1].item() == pytest.approx(math.exp(-1.0))


def test_the_modes_in_the_policy_loss_by_hand():
    logp = PROXIMAL.clone()  # the learner at version 2 before its step: its log-probs are the proximal ones

    def loss(batch):
        value, _ = policy_loss(logp, batch.old_logp, batch.advantages, batch.loss_mask,
                               token_weights=batch.token_weights)
        return value.item()

    # importance: every ratio is 1, so the per-token loss is -A * weight:
    # -(1.5 + 1.5 + 1 + 1) / 4 tokens = -1.25
    assert loss(adjust_stale_tokens(_hand_batch(), 2, "importance", proximal_logp=PROXIMAL, cap=1.5)) == \
        pytest.approx(-1.25)
    # mask: the two on-policy tokens, ratio 1: -(1 + 1) / 2 = -1
    assert loss(adjust_stale_tokens(_hand_batch(), 2, "mask")) == pytest.approx(-1.0)
    # keep: stale ratios e^0.5 = 1.65 clipped to 1.2 (A > 0): -(1.2 + 1.2 + 1 + 1) / 4 = -1.1
    assert loss(adjust_stale_tokens(_hand_batch(), 2, "keep")) == pytest.approx(-1.1)


def test_stale_mode_errors_and_metrics():
    assert STALE_TOKEN_MODES.names() == ["importance", "keep", "mask"]
    with pytest.raises(KeyError, match="available: importance, keep, mask"):
        adjust_stale_tokens(_hand_batch(), 2, "drop")
    with pytest.raises(ValueError, match="needs proximal_logp"):
        adjust_stale_tokens(_hand_batch(), 2, "importance")
    with pytest.raises(ValueError, match="newer than the current version"):
        adjust_stale_tokens(_hand_batch(), 1, "mask")
    adjusted = adjust_stale_tokens(_hand_batch(), 2, "importance", proximal_logp=PROXIMAL, cap=1.5)
    # 2 stale of 4 loss tokens; both weighted 1.5
    assert stale_token_metrics(_hand_batch(), adjusted, 2) == {"partial/stale_token_share": 0.5,
                                                               "partial/is_weight_mean": 1.5}


# ----------------------------------------------------------------------------- repeats


def test_repeat_penalty_lowers_only_repeat_finishes():
    rs = [Rollout([1], [2], [-1.0], [0], reason, reward=1.0) for reason in (FINISH_STOP, FINISH_REPEAT, FINISH_LENGTH)]
    assert apply_repeat_penalty(rs, -0.5) == {"partial/repeat_share": 1 / 3}
    assert [r.reward for r in rs] == [1.0, 0.5, 1.0]
