"""Which samples and problems to train on: DAPO dynamic sampling, k1.5 prioritised and curriculum sampling.

Everything here is data-agnostic: problems are indices 0..P-1 and samples are
opaque objects kept in contiguous groups of G (one group per prompt).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from rlkit.algo.advantages import as_groups


# --------------------------------------------------------------------------- dynamic sampling


def dynamic_sampling_mask(rewards: Tensor | Sequence[float], group_size: int, *, atol: float = 0.0) -> Tensor:
    """DAPO (arXiv:2503.14476): [N] rewards -> [N // G] bool, True for informative groups.

    A group whose rewards are all equal (all right or all wrong) has zero
    group-relative advantage and so no gradient; it is False. Rewards within
    ``atol`` of each other count as equal.
    """
    grouped = as_groups(torch.as_tensor(rewards, dtype=torch.float32), group_size)  # [B, G]
    spread = grouped.max(dim=1).values - grouped.min(dim=1).values  # [B]
    return spread > atol  # [B]


class DynamicSamplingBuffer:
    """Collects informative groups across generation rounds until ``target_groups`` are gathered.

        buf = DynamicSamplingBuffer(target_groups=32)
        while not buf.add(samples, rewards, group_size=G):
            samples, rewards = generate_more()
        samples, rewards = buf.take()

    Groups beyond ``target_groups`` are dropped at ``take()`` (counted in
    ``surplus_groups``) rather than carried over, so every batch stays on-policy.
    Counters cover the rounds since the last ``take()``; ``take()`` moves them to
    ``last_metrics``.
    """

    def __init__(self, target_groups: int, *, atol: float = 0.0) -> None:
        if target_groups < 1:
            raise ValueError(f"target_groups must be >= 1, got {target_groups}")
        self.target_groups = target_groups
        self.atol = atol
        self.last_metrics: dict[str, float] = {}
        self._reset()

    def _reset(self) -> None:
        self._groups: list[tuple[list[Any], Tensor]] = []  # (items of one group, rewards [G])
        self.kept_groups = 0
        self.dropped_groups = 0
        self.rounds = 0

    @property
    def full(self) -> bool:
        return len(self._groups) >= self.target_groups

    def add(self, items: Sequence[Any], rewards: Tensor | Sequence[float], group_size: int) -> bool:
        """Keep the informative groups of one generation round; return whether the buffer is full."""
        rewards = torch.as_tensor(rewards, dtype=torch.float32)  # [N]
        if len(items) != rewards.shape[0]:
            raise ValueError(f"got {len(items)} items but {rewards.shape[0]} rewards; need one reward per item")
        keep = dynamic_sampling_mask(rewards, group_size, atol=self.atol)  # [B]
        grouped = rewards.reshape(-1, group_size)  # [B, G]
        for b, informative in enumerate(keep.tolist()):
            if informative:
                self._groups.append((list(items[b * group_size : (b + 1) * group_size]), grouped[b].clone()))
        self.kept_groups += int(keep.sum())
        self.dropped_groups += int((~keep).sum())
        self.rounds += 1
        return self.full

    def take(self, *, allow_partial: bool = False) -> tuple[list[Any], Tensor]:
        """Return (items, rewards [target_groups * G]) in arrival order and empty the buffer.

        Raises if fewer than ``target_groups`` were gathered, unless ``allow_partial``
        (e.g. when a recipe caps the number of generation rounds).
        """
        if not self.full and not allow_partial:
            raise RuntimeError(
                f"dynamic sampling buffer holds {len(self._groups)} of {self.target_groups} groups; "
                "add more rounds or pass allow_partial=True"
            )
        chosen = self._groups[: self.target_groups]
        items = [x for group_items, _ in chosen for x in group_items]
        rewards = torch.cat([r for _, r in chosen]) if chosen else torch.zeros(0)  # [K * G]
        self.last_metrics = self.metrics()
        self.last_metrics["surplus_groups"] = float(max(len(self._groups) - self.target_groups, 0))
        self._reset()
        return items, rewards

    def metrics(self) -> dict[str, float]:
        seen = self.kept_groups + self.dropped_groups
        return {
            "kept_groups": float(self.kept_groups),
            "dropped_groups": float(self.dropped_groups),
            "rounds": float(self.rounds),
            "kept_frac": self.kept_groups / seen if seen else 0.0,
        }

    def __len__(self) -> int:
        return len(self._groups)


# --------------------------------------------------------------------------- prioritised sampling


class PrioritizedSampler:
    """Kimi k1.5 (arXiv:2501.12599) prioritised sampling of problems.

    Problem i is drawn with probability proportional to max(1 - s_i, floor), where
    s_i is its tracked success rate. k1.5 uses 1 - s_i; the floor keeps problems
    that are always solved at a small chance instead of zero (so a regression on
    them can still be noticed, and ``sample(k)`` can always draw k distinct problems).

    s_i starts at 0 for unseen problems (they get the highest priority). The first
    observation sets s_i; later ones follow an exponential moving average
    s_i <- ema * s_i + (1 - ema) * x, so recent results of the changing policy count
    most. ``ema=None`` keeps the plain running mean of all observations instead.
    """

    def __init__(self, num_problems: int, *, ema: float | None = 0.5, floor: float = 0.05, seed: int = 0) -> None:
        if num_problems < 1:
            raise ValueError(f"num_problems must be >= 1, got {num_problems}")
        if ema is not None and not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1) or None (running mean), got {ema}")
        if not 0.0 < floor <= 1.0:
            raise ValueError(f"floor must be in (0, 1], got {floor}")
        self.num_problems = num_problems
        self.ema = ema
        self.floor = floor
        self.success = torch.zeros(num_problems, dtype=torch.float64)  # [P]
        self.counts = torch.zeros(num_problems, dtype=torch.int64)  # [P] observations per problem
        self._gen = torch.Generator().manual_seed(seed)

    def update(self, problem_ids: Sequence[int] | Tensor, success_rates: Sequence[float] | Tensor) -> None:
        """Record success rates in [0, 1] (e.g. the share of a group's samples that were right)."""
        ids = torch.as_tensor(problem_ids, dtype=torch.int64).reshape(-1)  # [K]
        rates = torch.as_tensor(success_rates, dtype=torch.float64).reshape(-1)  # [K]
        if ids.shape != rates.shape:
            raise ValueError(f"got {ids.numel()} problem ids but {rates.numel()} success rates")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.num_problems):
            raise ValueError(f"problem ids must be in [0, {self.num_problems}), got {ids.tolist()}")
        if rates.numel() and (rates.min() < 0 or rates.max() > 1 or rates.isnan().any()):
            raise ValueError(f"success rates must be in [0, 1], got {rates.tolist()}")
        # Sequential so a problem seen twice in one call is updated twice, in order.
        for i, x in zip(ids.tolist(), rates.tolist()):
            n = int(self.counts[i])
            if n == 0:
                new = x
            elif self.ema is None:
                new = (float(self.success[i]) * n + x) / (n + 1)
            else:
                new = self.ema * float(self.success[i]) + (1.0 - self.ema) * x
            self.success[i] = new
            self.counts[i] = n + 1

    def weights(self) -> Tensor:
        """Unnormalised draw weights max(1 - s_i, floor), [P]."""
        return (1.0 - self.success).clamp_min(self.floor)  # [P]

    def sample(self, k: int) -> list[int]:
        """Draw k distinct problem ids."""
        if not 0 <= k <= self.num_problems:
            raise ValueError(f"cannot draw k={k} distinct problems out of {self.num_problems}")
        if k == 0:
            return []
        return torch.multinomial(self.weights(), k, replacement=False, generator=self._gen).tolist()

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_problems": self.num_problems,
            "ema": self.ema,
            "floor": self.floor,
            "success": self.success.clone(),
            "counts": self.counts.clone(),
            "rng_state": self._gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_problems"] != self.num_problems:
            raise ValueError(
                f"checkpoint has num_problems={state['num_problems']}, this sampler has {self.num_problems}"
            )
        self.ema = state["ema"]
        self.floor = state["floor"]
        self.success = state["success"].clone().to(torch.float64)
        self.counts = state["counts"].clone().to(torch.int64)
        self._gen.set_state(state["rng_state"])


# --------------------------------------------------------------------------- curriculum


def curriculum_order(difficulties: Sequence[float] | Tensor, *, ascending: bool = True) -> list[int]:
    """Problem indices sorted by difficulty, easiest first (hardest first if not ascending).

    The sort is stable: equal difficulties keep their dataset order in both directions.
    """
    values = torch.as_tensor(difficulties, dtype=torch.float64).reshape(-1).tolist()
    bad = [i for i, v in enumerate(values) if math.isnan(v)]
    if bad:
        raise ValueError(f"difficulties must not be NaN; NaN at indices {bad[:10]}")
    return sorted(range(len(values)), key=values.__getitem__, reverse=not ascending)


class CurriculumSampler:
    """Kimi k1.5 curriculum: walk problems from easy to hard in batches, wrapping around.

    Ties between equal difficulties are broken by a permutation drawn once from
    ``seed``, so problems of one difficulty are not visited in file order. The
    order is fixed for the whole run; after the hardest problem the walk starts
    again from the easiest (``epoch`` counts the passes).
    """

    def __init__(self, difficulties: Sequence[float] | Tensor, seed: int = 0, *, ascending: bool = True) -> None:
        values = torch.as_tensor(difficulties, dtype=torch.float64).reshape(-1)  # [P]
        if values.numel() == 0:
            raise ValueError("CurriculumSampler needs at least one problem")
        perm = torch.randperm(values.numel(), generator=torch.Generator().manual_seed(seed))  # [P]
        shuffled_order = curriculum_order(values[perm], ascending=ascending)
        self.order: list[int] = [int(perm[j]) for j in shuffled_order]
        self.seed = seed
        self.ascending = ascending
        self.position = 0
        self.epoch = 0

    def sample(self, k: int) -> list[int]:
        """The next k problem ids along the curriculum (distinct while k <= number of problems)."""
        n = len(self.order)
        if not 0 <= k <= n:
            raise ValueError(f"k must be in [0, {n}] (the number of problems), got {k}")
        out = []
        for _ in range(k):
            out.append(self.order[self.position])
            self.position += 1
            if self.position == n:
                self.position = 0
                self.epoch += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_problems": len(self.order),
            "seed": self.seed,
            "ascending": self.ascending,
            "position": self.position,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = (len(self.order), self.seed, self.ascending)
        theirs = (state["num_problems"], state["seed"], state["ascending"])
        if theirs != mine:
            raise ValueError(
                f"checkpoint is for (num_problems, seed, ascending)={theirs}, this sampler has {mine}"
            )
        self.position = int(state["position"])
        self.epoch = int(state["epoch"])


__all__ = [
    "CurriculumSampler",
    "DynamicSamplingBuffer",
    "PrioritizedSampler",
    "curriculum_order",
    "dynamic_sampling_mask",
]
