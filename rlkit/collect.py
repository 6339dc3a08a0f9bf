"""One step's worth of scored GRPO groups: prompt choice, generation rounds, rewards.

Plain GRPO is one round: B prompts x G samples, scored. Two options add rounds:
- partial rollouts (Kimi k1.5): each round gives every trajectory `token_budget` new tokens;
  unfinished ones wait in the `PartialRolloutBuffer` and groups come out once all members end.
  New groups are started so that `groups_in_flight` groups (default B) are being generated:
  more in flight keeps each round's batch full while long trajectories run on, at the price
  of more tokens sampled by older weights (bounded by the buffer's staleness limit).
- dynamic sampling (DAPO): groups whose rewards are all equal (zero advantage) are dropped.
Either way rounds repeat until B groups are gathered, or `max_rounds` is reached with at least
one group (then the step trains on what it has and says so in `batch/groups`). With dynamic
sampling a step trains on B groups; informative groups beyond B (a round or the partial buffer
can finish several at once) are kept, already scored, for the next step (`batch/carried_groups`),
never thrown away. Their tokens are then one policy version old, which the partial rollouts'
stale-token handling (or the PPO ratio against their behaviour log-probs) accounts for.

Scoring can overlap generation (`scorer.overlap_chunks` > 1, rounds without partial rollouts):
a round's new groups are generated in that many chunks, and each chunk is scored in a
background thread while the next one is generated, so a slow verifier (sandboxed unit tests,
a reward model) hides behind generation instead of stalling the loop. `time/reward_s` is the
scoring time, `time/reward_wait_s` the part of it the loop waited for.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from rlkit.algo import dynamic_sampling_mask
from rlkit.data import Problem
from rlkit.prompt_samplers import PromptSampler
from rlkit.rollout.partial import PartialRolloutBuffer
from rlkit.scoring import Scorer, is_summed
from rlkit.types import GenerationRequest, Rollout, SamplingParams

# Without any complete group a step has nothing to learn from, so rounds go on past max_rounds
# up to this many before giving up with an error (e.g. every sample truncated mid-group forever).
HARD_ROUND_LIMIT = 64


class Collector:
    def __init__(self, generate: Callable[[list[GenerationRequest], SamplingParams], list[Rollout]],
                 problems: list[Problem], scorer: Scorer, sampler: PromptSampler, *, group_size: int,
                 groups_per_step: int, sampling: SamplingParams, dynamic: bool = False, max_rounds: int = 1,
                 partial: PartialRolloutBuffer | None = None, groups_in_flight: int = 0) -> None:
        self.generate, self.problems, self.scorer, self.sampler = generate, problems, scorer, sampler
        self.group_size, self.groups_per_step = group_size, groups_per_step
        self.sampling = partial.sampling(sampling) if partial is not None else sampling
        self.dynamic, self.partial = dynamic, partial
        self.max_rounds = max(1, max_rounds) if (dynamic or partial is not None) else 1
        self.groups_in_flight = max(groups_in_flight, groups_per_step)
        self._carried: list[list[Rollout]] = []  # scored, informative groups beyond the last step's B
        self.overlap_chunks = getattr(scorer, "overlap_chunks", 1) if partial is None else 1
        self._score_thread: ThreadPoolExecutor | None = None

    def collect(self, version: int) -> tuple[list[list[Rollout]], dict[str, float]]:
        """Scored groups (each G rollouts of one problem, rewards set) and this step's metrics."""
        G = self.group_size
        kept, self._carried = self._carried, []
        carried = len(kept)
        sums: dict[str, float] = {}
        scored_samples = dropped = rounds = 0
        t_gen = t_wait = 0.0
        while len(kept) < self.groups_per_step:
            rounds += 1
            if self.partial is not None:
                start = self.groups_in_flight - self.partial.num_incomplete_groups
            else:
                start = self.groups_per_step
            ids = self.sampler.next_batch(max(0, start))
            new = [GenerationRequest(self.problems[i].prompt_ids, n=G, meta={"problem": i}) for i in ids]
            requests = self.partial.requests_for_step(new, version) if self.partial is not None else new
            if self.overlap_chunks > 1 and len(requests) > 1:
                batches, gen_s, wait_s = self._generate_and_score_overlapped(requests)
            else:
                t0 = time.perf_counter()
                rollouts = self.generate(requests, self.sampling)
                gen_s = time.perf_counter() - t0
                if self.partial is not None:
                    groups = self.partial.add(rollouts, version)
                else:
                    groups = [rollouts[i : i + G] for i in range(0, len(rollouts), G)]
                batches = [(groups, self._score(groups))] if groups else []
                wait_s = sum(m["time/reward_s"] for _, m in batches)
            t_gen += gen_s
            t_wait += wait_s
            for groups, metrics in batches:
                flat = [r for g in groups for r in g]
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + (v if is_summed(k) else v * len(flat))
                scored_samples += len(flat)
                self.sampler.update([g[0].meta["problem"] for g in groups],
                                    [sum(r.meta.get("correct", False) for r in g) / G for g in groups])
                if self.dynamic:
                    informative = dynamic_sampling_mask([r.reward for r in flat], G).tolist()
                    dropped += informative.count(False)
                    groups = [g for g, keep in zip(groups, informative) if keep]
                kept.extend(groups)
            if rounds >= self.max_rounds and kept:
                break
            if rounds >= HARD_ROUND_LIMIT:
                raise RuntimeError(f"no complete, informative group after {rounds} generation rounds; "
                                   "check the token budget, max_new_tokens and the rewards")
        if self.dynamic and len(kept) > self.groups_per_step:
            kept, self._carried = kept[: self.groups_per_step], kept[self.groups_per_step:]
        out = {k: (v if is_summed(k) else v / scored_samples) for k, v in sums.items()} if scored_samples else {}
        if not scored_samples:  # every group came from the last step's surplus
            flat = [r for g in kept for r in g]
            out["reward/mean"] = sum(r.reward for r in flat) / len(flat)
        out.update({"batch/groups": float(len(kept)), "batch/rounds": float(rounds), "time/generate_s": t_gen,
                    "time/reward_wait_s": t_wait, "batch/carried_groups": float(carried)})
        if self.dynamic:
            out["batch/dropped_groups"] = float(dropped)
        if self.partial is not None:
            out.update(self.partial.metrics())
        return kept, out

    def _score(self, groups: list[list[Rollout]]) -> dict[str, float]:
        flat = [r for g in groups for r in g]
        return self.scorer.score(flat, [self.problems[g[0].meta["problem"]] for g in groups], self.group_size)

    def _generate_and_score_overlapped(self, requests: list[GenerationRequest]):
        """Generate `requests` in chunks, scoring each chunk while the next one is generated.
        Returns ([(groups, metrics)] in request order, generation seconds, seconds waited for scores)."""
        G, k = self.group_size, min(self.overlap_chunks, len(requests))
        bounds = [round(i * len(requests) / k) for i in range(k + 1)]
        if self._score_thread is None:
            self._score_thread = ThreadPoolExecutor(1, thread_name_prefix="rlkit-score")
        pending, gen_s = [], 0.0
        for a, b in zip(bounds, bounds[1:]):
            t0 = time.perf_counter()
            rollouts = self.generate(requests[a:b], self.sampling)
            gen_s += time.perf_counter() - t0
            groups = [rollouts[i : i + G] for i in range(0, len(rollouts), G)]
            pending.append((groups, self._score_thread.submit(self._score, groups)))
        t0 = time.perf_counter()
        batches = [(groups, future.result()) for groups, future in pending]
        return batches, gen_s, time.perf_counter() - t0

    def close(self) -> None:
        if self._score_thread is not None:
            self._score_thread.shutdown(wait=True)
            self._score_thread = None
        close = getattr(self.scorer, "close", None)
        if callable(close):
            close()

    def state_dict(self) -> dict:
        state = {"sampler": self.sampler.state_dict(),
                 "carried": [[dataclasses.asdict(r) for r in g] for g in self._carried]}
        if self.partial is not None:
            state["partial"] = self.partial.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self._carried = [[Rollout(**r) for r in g] for g in state.get("carried", [])]
        if self.partial is not None and "partial" in state:
            self.partial.load_state_dict(state["partial"])
