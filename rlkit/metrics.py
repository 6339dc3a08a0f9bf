"""How metrics of micro-batches and ranks combine into one step's metrics.

Means are weighted by the loss tokens each part saw; a metric named `*_max` is a maximum and
combines as one (the mean of per-part maxima is not the batch's maximum).
"""

from __future__ import annotations

from typing import Iterable, Mapping


def merge_metrics(parts: Iterable[tuple[Mapping[str, float], float]]) -> dict[str, float]:
    """(metrics, weight) pairs -> metrics: token-weighted means, `*_max` as maxima."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    maxima: dict[str, float | None] = {}
    for metrics, weight in parts:
        for key, value in metrics.items():
            if key.endswith("_max"):
                maxima.setdefault(key, None)
                if weight > 0:  # a part with no tokens has no maximum to offer
                    maxima[key] = value if maxima[key] is None else max(maxima[key], value)
            else:
                sums[key] = sums.get(key, 0.0) + value * weight
                weights[key] = weights.get(key, 0.0) + weight
    out = {key: sums[key] / weights[key] if weights[key] > 0 else 0.0 for key in sums}
    out.update({key: 0.0 if value is None else value for key, value in maxima.items()})
    return out
