"""Weighted combination of several reward functions into one.

The combination follows the same contract as its parts, so a trainer sees a
single reward function, while :meth:`CombinedReward.score` also returns each
part's scores for metrics.

Per sample, only the rewards that apply (did not return ``None``) count:

- default: ``total = sum(w_k * r_k)`` over the applicable rewards. A reward
  that does not apply adds nothing, exactly as if its weight were zero for
  that sample; this is what the R1 recipe's "accuracy + format" means.
- ``normalize=True``: ``total = sum(w_k * r_k) / sum(w_k)`` over the
  applicable rewards, a weighted mean, so samples to which fewer rewards
  apply stay on the same scale. Weights must then be positive.

If no reward applies to a sample its total is ``None``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, Union

from rewards.registry import get

RewardSpec = Union[str, Callable[..., list]]


class RewardError(RuntimeError):
    """A reward function failed or broke the contract; the message names it."""


@dataclass
class CombinedScores:
    """Scores of one batch: ``total[i]`` and ``per_reward[name][i]`` for sample i."""

    total: list[float | None]
    per_reward: dict[str, list[float | None]]

    def means(self) -> dict[str, float | None]:
        """Mean of each reward over the samples it applies to (None if it applies to none)."""
        out: dict[str, float | None] = {}
        for name, values in self.per_reward.items():
            applicable = [v for v in values if v is not None]
            out[name] = sum(applicable) / len(applicable) if applicable else None
        return out


class CombinedReward:
    """A reward function made of weighted reward functions; build it with :func:`combine`."""

    def __init__(self, parts: list[tuple[str, Callable[..., list], float]], normalize: bool) -> None:
        self.parts = parts
        self.normalize = normalize
        # Trainers such as TRL log a reward under its function's __name__.
        self.__name__ = "+".join(name for name, _, _ in parts)

    @property
    def weights(self) -> dict[str, float]:
        return {name: weight for name, _, weight in self.parts}

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        return self.score(completions, **columns).total

    def score(self, completions: Sequence[Any], **columns: Any) -> CombinedScores:
        per_reward = {
            name: _run(name, fn, completions, columns) for name, fn, _ in self.parts
        }
        total: list[float | None] = []
        for i in range(len(completions)):
            applicable = [
                (weight, per_reward[name][i])
                for name, _, weight in self.parts
                if per_reward[name][i] is not None
            ]
            if not applicable:
                total.append(None)
                continue
            value = sum(weight * r for weight, r in applicable)
            if self.normalize:
                value /= sum(weight for weight, _ in applicable)
            total.append(value)
        return CombinedScores(total=total, per_reward=per_reward)

    def __repr__(self) -> str:
        terms = ", ".join(f"{name}={weight:g}" for name, _, weight in self.parts)
        return f"CombinedReward({terms}, normalize={self.normalize})"


def combine(
    spec: Union[Mapping[RewardSpec, float], Sequence[tuple[RewardSpec, float]]],
    *,
    normalize: bool = False,
) -> CombinedReward:
    """Combine rewards given as ``{name: weight}`` or ``[(name_or_function, weight), ...]``.

    Names go through :func:`rewards.get`, so registered names,
    ``file.py:function`` and ``module:function`` all work. A function is
    reported under its ``__name__``.
    """
    pairs = list(spec.items()) if isinstance(spec, Mapping) else list(spec)
    if not pairs:
        raise ValueError("combine() needs at least one (reward, weight) pair")
    parts: list[tuple[str, Callable[..., list], float]] = []
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"expected a (reward, weight) pair, got {pair!r}")
        reward, weight = pair
        name, fn = (reward, get(reward)) if isinstance(reward, str) else (_name_of(reward), reward)
        if not callable(fn):
            raise TypeError(f"reward {name!r} is not callable: it is a {type(fn).__name__}")
        if any(name == taken for taken, _, _ in parts):
            raise ValueError(f"reward {name!r} appears twice; its scores would be indistinguishable")
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
            raise TypeError(f"weight of reward {name!r} must be a finite number, got {weight!r}")
        if normalize and weight <= 0:
            raise ValueError(f"normalize=True needs positive weights; reward {name!r} has weight {weight}")
        parts.append((name, fn, float(weight)))
    return CombinedReward(parts, normalize)


def _run(name: str, fn: Callable[..., list], completions: Sequence[Any], columns: dict) -> list[float | None]:
    try:
        values = fn(completions, **columns)
    except Exception as err:
        raise RewardError(f"reward {name!r} raised {type(err).__name__}: {err}") from err
    try:
        values = list(values)
    except TypeError:
        raise RewardError(
            f"reward {name!r} returned {type(values).__name__}, expected a list of {len(completions)} values"
        ) from None
    if len(values) != len(completions):
        raise RewardError(
            f"reward {name!r} returned {len(values)} values for {len(completions)} completions"
        )
    checked: list[float | None] = []
    for i, value in enumerate(values):
        if value is None:
            checked.append(None)
        elif isinstance(value, numbers.Real) and math.isfinite(value):
            checked.append(float(value))
        else:
            raise RewardError(
                f"reward {name!r} returned {value!r} for sample {i}; expected a finite number or None"
            )
    return checked


def _name_of(fn: Any) -> str:
    inner = getattr(fn, "func", fn)  # functools.partial
    return getattr(fn, "__name__", None) or getattr(inner, "__name__", None) or repr(fn)
