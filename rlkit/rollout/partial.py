"""Partial rollouts (Kimi k1.5, arXiv 2501.12599): a fixed token budget per trajectory per iteration.

Without them one iteration lasts as long as its longest sample, and a few long chains of
thought hold the whole batch hostage. With them every trajectory gets `token_budget` new
tokens per iteration; the ones that run out (finish reason "budget") are stored with their
tokens, sampling log-probs and the policy version of every token, and continue in a later
iteration with newer weights. GRPO needs whole groups, so a group (the G samples of one
prompt) is handed to training only once all its members have finished (stop, length, repeat).

Driver-side and engine-agnostic (pure Python + torch, no Ray). One iteration::

    buffer = PartialRolloutBuffer(token_budget=64, max_staleness=4, max_new_tokens=512)
    sampling = buffer.sampling(base_sampling)              # sets token_budget
    requests = buffer.requests_for_step(new_requests, version=v)
    groups = buffer.add(engine.generate(requests, sampling), version=v)
    # groups: list[list[Rollout]], each a complete group, members in a stable order
    metrics.update(buffer.metrics())
    batch = adjust_stale_tokens(pack_rollouts(flat, pad), v, "importance",
                                proximal_logp=learners.logprobs(packed), cap=2.0)

`v` is the version of the weights the engine samples with, which is also the version the
learner holds when it trains on this iteration's groups: tokens stamped `v` are on-policy,
older ones are stale (see `STALE_TOKEN_MODES`).

Staleness bound: a member (finished or not) of an incomplete group whose oldest token is more
than `max_staleness` versions behind is restarted from scratch, so no trained token is older
than `max_staleness` versions. A trajectory of T tokens needs ceil(T / token_budget) segments,
its first one ceil(T / token_budget) - 1 versions old by the last, so the constructor refuses
`max_new_tokens > (max_staleness + 1) * token_budget`: such trajectories could never finish and
would be silently restarted forever, biasing training towards short answers.

Repeat detection lives in the engine (finish reason "repeat"); `apply_repeat_penalty` is the
optional reward hook for it.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch

from rlkit.algo import truncated_importance_weights
from rlkit.registry import Registry
from rlkit.types import FINISH_BUDGET, FINISH_REPEAT, GenerationRequest, Rollout, SamplingParams, TrainBatch

# Request meta key carrying {"group": id, "members": [member indices]}: how `add` maps the
# engine's rollouts back to group members. Stripped from the rollouts `add` returns.
META_KEY = "partial"
_COUNTS = ("resumed", "restarted", "new_groups", "completed_groups")  # per-period counters in metrics()


@dataclass
class _Group:
    gid: int
    prompt_ids: list[int]  # [P]
    meta: dict[str, Any]  # the caller's request meta, copied onto every member's requests
    # one slot per member: None = not started (or restarted); a Rollout whose finish_reason is
    # "budget" = unfinished, to be resumed; any other finish_reason = finished
    members: list[Rollout | None]

    def complete(self) -> bool:
        return all(m is not None and m.finish_reason != FINISH_BUDGET for m in self.members)


class PartialRolloutBuffer:
    """Unfinished trajectories and incomplete groups between iterations (see the module doc).

    Call `requests_for_step` and `add` in strict alternation; `state_dict` may be taken at any
    point (members in flight are saved as they were before the request and asked for again
    after `load_state_dict`).
    """

    def __init__(self, token_budget: int, *, max_staleness: int | None = None,
                 max_new_tokens: int | None = None) -> None:
        if token_budget < 1:
            raise ValueError(f"partial.token_budget must be >= 1, got {token_budget}")
        if max_staleness is not None and max_staleness < 0:
            raise ValueError(f"partial.max_staleness must be >= 0 (or None for no bound), got {max_staleness}")
        if max_staleness is not None and max_new_tokens is not None:
            reach = (max_staleness + 1) * token_budget
            if max_new_tokens > reach:
                raise ValueError(
                    f"max_new_tokens={max_new_tokens} needs up to {-(-max_new_tokens // token_budget)} segments of "
                    f"partial.token_budget={token_budget}, but partial.max_staleness={max_staleness} restarts a "
                    f"trajectory after {max_staleness + 1} segments ({reach} tokens): raise max_staleness to >= "
                    f"{-(-max_new_tokens // token_budget) - 1} or the budget, or lower max_new_tokens")
        self.token_budget = token_budget
        self.max_staleness = max_staleness
        self._groups: dict[int, _Group] = {}  # incomplete groups by id; ids increase with creation
        self._next_gid = 0
        self._in_flight: set[tuple[int, int]] = set()  # (group, member) asked for and not yet added
        self._restarted_total = 0
        # counts since the last metrics() call (a step may run several request/add rounds)
        self._counts = dict.fromkeys(_COUNTS, 0.0)
        self._ages = [0, 0, 0]  # completed tokens sampled 0, 1, >= 2 versions before their add()

    # -- the iteration -------------------------------------------------------------------
    def sampling(self, base: SamplingParams) -> SamplingParams:
        """`base` with this buffer's per-iteration token budget."""
        return dataclasses.replace(base, token_budget=self.token_budget)

    def requests_for_step(self, new_requests: list[GenerationRequest], version: int) -> list[GenerationRequest]:
        """This iteration's requests: resumed segments first (n=1, with their prefix), then
        members to start again (restarted, or in flight when the state was saved), then one
        request per new group (n = its group size, sharing one prefill).

        `new_requests` are fresh groups (no prefix; `n` is the group size; `meta` is carried to
        every member). `version` is the policy version the engine samples with this iteration.
        """
        if self._in_flight:
            raise RuntimeError(f"{len(self._in_flight)} requested trajectories were never passed to add(); "
                               "call add() with the engine's rollouts before asking for the next requests")
        for i, req in enumerate(new_requests):
            if req.prefix_ids or req.prefix_logprobs or req.prefix_versions:
                raise ValueError(f"new request {i} has a prefix: resumed trajectories come from the buffer itself")
            if req.n < 1:
                raise ValueError(f"new request {i} asks for n={req.n} samples")
            if META_KEY in req.meta:
                raise ValueError(f"new request {i}: meta key {META_KEY!r} is reserved for the buffer")
        restarted = self._restart_stale(version)

        resumed: list[GenerationRequest] = []
        starts: list[GenerationRequest] = []
        for group in self._groups.values():
            idle = []
            for m, member in enumerate(group.members):
                if member is None:
                    idle.append(m)
                elif member.finish_reason == FINISH_BUDGET:
                    resumed.append(GenerationRequest(
                        prompt_ids=list(group.prompt_ids), n=1, prefix_ids=list(member.completion_ids),
                        prefix_logprobs=list(member.logprobs), prefix_versions=list(member.versions),
                        meta=_tagged(group, [m])))
            if idle:
                starts.append(GenerationRequest(prompt_ids=list(group.prompt_ids), n=len(idle),
                                                meta=_tagged(group, idle)))
        fresh = []
        for req in new_requests:
            group = _Group(self._next_gid, list(req.prompt_ids), copy.deepcopy(req.meta), [None] * req.n)
            self._groups[group.gid] = group
            self._next_gid += 1
            fresh.append(GenerationRequest(prompt_ids=list(req.prompt_ids), n=req.n,
                                           meta=_tagged(group, list(range(req.n)))))
        requests = resumed + starts + fresh
        self._in_flight = {(r.meta[META_KEY]["group"], m) for r in requests for m in r.meta[META_KEY]["members"]}
        self._counts["resumed"] += len(resumed)
        self._counts["restarted"] += restarted
        self._counts["new_groups"] += len(new_requests)
        return requests

    def add(self, rollouts: list[Rollout], version: int) -> list[list[Rollout]]:
        """Store this iteration's rollouts; return the groups completed by them.

        `rollouts` are the engine's answer to the last `requests_for_step` (any request order;
        the samples of one request in the engine's order). Groups come back oldest first, each
        as its members in member order; the buffer's meta key is removed from them. `version`
        is the policy version that sampled them (the one the learner trains with next), for
        the token-age metrics.
        """
        seen: dict[tuple[int, tuple[int, ...]], int] = {}
        for r in rollouts:
            tag = r.meta.get(META_KEY)
            if tag is None:
                raise ValueError(f"rollout without the {META_KEY!r} meta key: it was not requested by this buffer")
            gid, members = int(tag["group"]), tuple(tag["members"])
            k = seen.get((gid, members), 0)
            seen[(gid, members)] = k + 1
            if k >= len(members) or (gid, members[k]) not in self._in_flight:
                raise ValueError(f"unexpected rollout for group {gid} member(s) {list(members)}: not in flight")
            self._in_flight.discard((gid, members[k]))
            if len(r.versions) != len(r.completion_ids) or len(r.logprobs) != len(r.completion_ids):
                raise ValueError(f"group {gid} member {members[k]}: {len(r.completion_ids)} tokens but "
                                 f"{len(r.logprobs)} log-probs and {len(r.versions)} versions")
            meta = {key: value for key, value in r.meta.items() if key != META_KEY}
            self._groups[gid].members[members[k]] = dataclasses.replace(r, meta=meta)
        if self._in_flight:
            missing = sorted(self._in_flight)
            self._in_flight = set()  # they stay as they were and are asked for again next time
            raise ValueError(f"the engine returned no rollout for {len(missing)} requested trajectories "
                             f"(group, member), e.g. {missing[:5]}")

        done = [gid for gid, group in self._groups.items() if group.complete()]
        completed = [list(self._groups.pop(gid).members) for gid in sorted(done)]
        self._counts["completed_groups"] += len(completed)
        for age, n in enumerate(_age_counts(completed, version)):
            self._ages[age] += n
        return completed  # type: ignore[return-value]  # complete() guarantees no None

    # -- staleness -----------------------------------------------------------------------
    def _restart_stale(self, version: int) -> int:
        restarted = 0
        for group in self._groups.values():
            for m, member in enumerate(group.members):
                if member is None or not member.versions:
                    continue
                oldest, newest = min(member.versions), max(member.versions)
                if newest > version:
                    raise ValueError(f"group {group.gid} member {m} holds tokens of version {newest}, newer than "
                                     f"the current version {version}: the buffer and the weights are out of step")
                if self.max_staleness is not None and version - oldest > self.max_staleness:
                    group.members[m] = None
                    restarted += 1
        self._restarted_total += restarted
        return restarted

    # -- metrics and state ---------------------------------------------------------------
    @property
    def num_unfinished(self) -> int:
        """Trajectories stored mid-way (finish reason "budget"), waiting to be resumed."""
        return sum(m is not None and m.finish_reason == FINISH_BUDGET
                   for g in self._groups.values() for m in g.members)

    @property
    def num_incomplete_groups(self) -> int:
        return len(self._groups)

    def metrics(self) -> dict[str, float]:
        """Numbers under `partial/`; the counts and shares cover everything since the previous
        call (reading resets them), so one call per training step covers all its rounds.

        buffered: unfinished trajectories stored now; buffered_groups: groups waiting for a
        member; resumed / restarted / new_groups / completed_groups: counts since the previous
        call; restarted_total: since the start of the run (kept in the state dict);
        age0_share / age1_share / age2plus_share: shares of the completed groups' tokens sampled
        0, 1, >= 2 versions before the version passed to `add` (absent when no group completed).
        """
        out = {f"partial/{k}": v for k, v in self._counts.items()}
        total = sum(self._ages)
        if total:
            for name, n in zip(("age0_share", "age1_share", "age2plus_share"), self._ages):
                out[f"partial/{name}"] = n / total
        out["partial/buffered"] = float(self.num_unfinished)
        out["partial/buffered_groups"] = float(self.num_incomplete_groups)
        out["partial/restarted_total"] = float(self._restarted_total)
        self._counts = dict.fromkeys(_COUNTS, 0.0)
        self._ages = [0, 0, 0]
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain Python (picklable, torch.save-able): the incomplete groups and the counters."""
        return {
            "next_group_id": self._next_gid,
            "restarted_total": self._restarted_total,
            "groups": [
                {"gid": g.gid, "prompt_ids": list(g.prompt_ids), "meta": copy.deepcopy(g.meta),
                 "members": [None if m is None else dataclasses.asdict(m) for m in g.members]}
                for g in self._groups.values()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the contents with a `state_dict()`; nothing is in flight afterwards."""
        self._groups = {}
        for g in state["groups"]:
            members = [None if m is None else Rollout(**m) for m in g["members"]]
            self._groups[int(g["gid"])] = _Group(int(g["gid"]), list(g["prompt_ids"]), copy.deepcopy(g["meta"]),
                                                 members)
        self._next_gid = int(state["next_group_id"])
        self._restarted_total = int(state["restarted_total"])
        self._in_flight = set()
        self._counts = dict.fromkeys(_COUNTS, 0.0)
        self._ages = [0, 0, 0]


def _tagged(group: _Group, members: list[int]) -> dict[str, Any]:
    meta = copy.deepcopy(group.meta)
    meta[META_KEY] = {"group": group.gid, "members": list(members)}
    return meta


def _age_counts(groups: list[list[Rollout]], version: int) -> list[int]:
    counts = [0, 0, 0]  # tokens of age 0, 1, >= 2
    for group in groups:
        for r in group:
            for v in r.versions:
                if v > version:
                    raise ValueError(f"a rollout holds tokens of version {v}, newer than the version {version} "
                                     "passed to add(): pass the version the engine sampled with")
                counts[min(version - v, 2)] += 1
    return counts


# ------------------------------------------------------------------------------ stale tokens


@dataclass(frozen=True)
class StaleTokenMode:
    """How tokens sampled by an older policy version enter the loss.

    apply(batch, stale [N, L-1] bool, proximal_logp [N, L-1] | None, cap) -> TrainBatch.
    needs_proximal: the driver must fetch the current policy's log-probs of the batch
    (`LearnerGroup.logprobs(batch)`) before calling `adjust_stale_tokens`.
    """

    apply: Callable[[TrainBatch, torch.Tensor, torch.Tensor | None, float], TrainBatch]
    needs_proximal: bool


STALE_TOKEN_MODES: Registry = Registry("stale-token mode")


def _mask_stale(batch: TrainBatch, stale: torch.Tensor, proximal_logp, cap: float) -> TrainBatch:
    # Only the newest segment is on-policy: older tokens leave the loss (and the token_mean
    # denominator). A member that finished in an earlier iteration while a sibling ran on is
    # all stale: its reward still shapes the group baseline, its tokens add no gradient.
    return dataclasses.replace(batch, loss_mask=batch.loss_mask * (~stale).to(batch.loss_mask.dtype))


def _importance_stale(batch: TrainBatch, stale: torch.Tensor, proximal_logp, cap: float) -> TrainBatch:
    # Decoupled PPO: the ratio is taken against the proximal (current) policy, so clipping
    # bounds the step from the weights we hold, and min(pi_prox / pi_behaviour, cap) corrects
    # for the older policy that actually sampled the token.
    behaviour = batch.old_logp  # [N, L-1]
    weights = truncated_importance_weights(proximal_logp, behaviour, cap)  # [N, L-1]
    ones = torch.ones_like(behaviour)
    token_weights = torch.where(stale, weights, ones)  # [N, L-1]
    if batch.token_weights is not None:
        token_weights = token_weights * batch.token_weights
    old_logp = torch.where(stale, proximal_logp.to(behaviour.dtype), behaviour)  # [N, L-1]
    return dataclasses.replace(batch, old_logp=old_logp, token_weights=token_weights)


def _keep_stale(batch: TrainBatch, stale: torch.Tensor, proximal_logp, cap: float) -> TrainBatch:
    # Stale tokens as sampled: the PPO ratio against the behaviour log-probs, whose clipping is
    # the only bound on how far an old segment pulls. A baseline to compare the others with.
    return batch


STALE_TOKEN_MODES.register("mask", StaleTokenMode(_mask_stale, needs_proximal=False))
STALE_TOKEN_MODES.register("importance", StaleTokenMode(_importance_stale, needs_proximal=True))
STALE_TOKEN_MODES.register("keep", StaleTokenMode(_keep_stale, needs_proximal=False))


def stale_token_mask(batch: TrainBatch, version: int) -> torch.Tensor:
    """[N, L-1] bool: loss-mask tokens sampled by a version older than `version`."""
    if batch.versions is None:
        raise ValueError("the TrainBatch has no per-token versions (pack it with rlkit.types.pack_rollouts)")
    live = batch.loss_mask > 0  # [N, L-1]
    newest = int(batch.versions[live].max()) if bool(live.any()) else version
    if newest > version:
        raise ValueError(f"the batch holds tokens of version {newest}, newer than the current version {version}")
    return live & (batch.versions < version)  # [N, L-1]


def adjust_stale_tokens(batch: TrainBatch, version: int, mode: str = "mask", *,
                        proximal_logp: torch.Tensor | None = None, cap: float = 2.0) -> TrainBatch:
    """The batch with its stale tokens handled by `mode` (a name in `STALE_TOKEN_MODES`).

    `batch.old_logp` must be the behaviour log-probs and `batch.versions` the version of every
    token (as `pack_rollouts` builds it); `version` is the learner's current version (tokens
    stamped with it are on-policy and left untouched). Modes:

    - "mask": stale tokens are removed from `loss_mask`.
    - "importance": stale tokens get `old_logp := proximal_logp` and
      `token_weights := min(exp(proximal_logp - behaviour_logp), cap)` (times any existing
      weights); needs `proximal_logp` [N, L-1], the current policy's log-probs of the batch.
    - "keep": unchanged (PPO ratio against the behaviour policy).
    """
    chosen = STALE_TOKEN_MODES.get(mode)
    stale = stale_token_mask(batch, version)  # [N, L-1]
    if chosen.needs_proximal:
        if proximal_logp is None:
            raise ValueError(f"stale-token mode {mode!r} needs proximal_logp (LearnerGroup.logprobs(batch))")
        if proximal_logp.shape != batch.old_logp.shape:
            raise ValueError(f"proximal_logp shape {tuple(proximal_logp.shape)} != "
                             f"old_logp shape {tuple(batch.old_logp.shape)}")
    return chosen.apply(batch, stale, proximal_logp, cap)


def stale_token_metrics(batch: TrainBatch, adjusted: TrainBatch, version: int) -> dict[str, float]:
    """`partial/stale_token_share`: share of `batch`'s loss tokens that are stale (before any
    adjustment); `partial/is_weight_mean`: mean token weight on them in `adjusted` (only when
    it carries weights, i.e. "importance")."""
    stale = stale_token_mask(batch, version)  # [N, L-1]
    live = float((batch.loss_mask > 0).sum())
    n_stale = float(stale.sum())
    out = {"partial/stale_token_share": n_stale / live if live else 0.0}
    if adjusted.token_weights is not None and n_stale:
        out["partial/is_weight_mean"] = float(adjusted.token_weights[stale].mean())
    return out


# ------------------------------------------------------------------------------ repeats


def apply_repeat_penalty(rollouts: list[Rollout], penalty: float) -> dict[str, float]:
    """Add `penalty` (e.g. -0.5) to the reward of every rollout the engine stopped as a
    degenerate repetition (finish reason "repeat"). Call after scoring and before advantages,
    so the group baseline sees it. Returns {"partial/repeat_share": share of such rollouts}."""
    hits = 0
    for r in rollouts:
        if r.finish_reason == FINISH_REPEAT:
            r.reward += penalty
            hits += 1
    return {"partial/repeat_share": hits / len(rollouts) if rollouts else 0.0}


__all__ = [
    "META_KEY",
    "STALE_TOKEN_MODES",
    "PartialRolloutBuffer",
    "StaleTokenMode",
    "adjust_stale_tokens",
    "apply_repeat_penalty",
    "stale_token_mask",
    "stale_token_metrics",
]
