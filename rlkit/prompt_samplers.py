"""Which problems a step trains on: shuffled epochs, k1.5 prioritised sampling, or a curriculum.

Every sampler answers `next_batch(k) -> problem indices`, learns from `update(ids, success)`
(the per-problem success rate of the group just scored; ignored where it does not apply) and
keeps its whole state, RNG included, in `state_dict()` for checkpoints.
"""

from __future__ import annotations

from typing import Any, Protocol

from rlkit.algo import CurriculumSampler, PrioritizedSampler
from rlkit.data import Problem, PromptSource
from rlkit.registry import Registry

PROMPT_SAMPLERS = Registry("prompt sampler")


class PromptSampler(Protocol):
    def next_batch(self, k: int) -> list[int]: ...

    def update(self, ids: list[int], success: list[float]) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@PROMPT_SAMPLERS.register("shuffle")
class ShuffledEpochs(PromptSource):
    def __init__(self, problems: list[Problem], *, seed: int, difficulty_column: str = "") -> None:
        super().__init__(len(problems), seed=seed, shuffle=True)

    def update(self, ids: list[int], success: list[float]) -> None:
        pass


@PROMPT_SAMPLERS.register("in_order")
class InOrder(ShuffledEpochs):
    def __init__(self, problems: list[Problem], *, seed: int, difficulty_column: str = "") -> None:
        PromptSource.__init__(self, len(problems), seed=seed, shuffle=False)


@PROMPT_SAMPLERS.register("prioritized")
class Prioritized:
    """Kimi k1.5 (arXiv 2501.12599): problem i drawn with probability ∝ 1 − s_i, s_i its success rate."""

    def __init__(self, problems: list[Problem], *, seed: int, difficulty_column: str = "") -> None:
        self.inner = PrioritizedSampler(len(problems), seed=seed)

    def next_batch(self, k: int) -> list[int]:
        return self.inner.sample(k)

    def update(self, ids: list[int], success: list[float]) -> None:
        self.inner.update(ids, success)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


@PROMPT_SAMPLERS.register("curriculum")
class Curriculum(Prioritized):
    """Easy to hard by a difficulty column (k1.5's curriculum), then around again."""

    def __init__(self, problems: list[Problem], *, seed: int, difficulty_column: str = "difficulty") -> None:
        missing = [p.index for p in problems if p.columns.get(difficulty_column) is None]
        if missing:
            raise ValueError(f"curriculum sampling needs a {difficulty_column!r} column; "
                             f"{len(missing)} rows lack it (first: row {missing[0]})")
        self.inner = CurriculumSampler([float(p.columns[difficulty_column]) for p in problems], seed=seed)

    def update(self, ids: list[int], success: list[float]) -> None:
        pass


def make_prompt_sampler(kind: str, problems: list[Problem], *, seed: int, difficulty_column: str) -> PromptSampler:
    return PROMPT_SAMPLERS.get(kind)(problems, seed=seed, difficulty_column=difficulty_column)
