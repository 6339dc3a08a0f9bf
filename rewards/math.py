"""Math answer verification: is the model's final answer the reference answer?

Public API::

    extract_answer(text) -> str | None          # the answer a completion marks
    is_equivalent(gold, pred, **policy) -> bool  # mathematical equivalence
    is_equivalent_batch(golds, preds, **policy) -> list[bool]
    accuracy_reward(completions, answer, **kw) -> list[float | None]   # registered as "math_accuracy"
    stats() / reset_stats()                      # counters for training metrics

How a pair is decided, cheapest first:

1. Both sides are located (:mod:`rewards.math_extract`), respelled into one
   canonical LaTeX form (:mod:`rewards.math_normalize`) and split into their
   structure (:mod:`rewards.math_parse`). Identical spellings are equal.
2. A fast pass in this process (:mod:`rewards.math_compare`) decides what
   needs no algebra: exact numbers and fractions, words, list and interval
   shapes, percentages. Most answers stop here.
3. The rest goes to sympy (:mod:`rewards.math_sympy`, leaves parsed by
   latex2sympy2_extended) in a pool of killable worker processes
   (:mod:`rewards._timeout`). Each check has a hard deadline (``timeout_s``,
   2 s by default) that holds from any thread or process, Ray actors
   included; past it the worker is killed and replaced, the check counts as
   not equal, and ``stats()["timeouts"]`` goes up.

What may compare numerically (:func:`rewards.math_compare.numbers_equal`):
exactness is read from the gold's spelling. An exact gold (an integer, a
fraction, a radical, pi, e, a repeating decimal) equals only the same value:
``0.5`` for ``1/2``, never ``0.333333`` for ``1/3`` nor ``0.9999999`` for
``1``. A gold that is a decimal states its value to the digits it gives and
takes anything within half a unit of its last digit (``0.33`` takes ``1/3``,
``6.02e23`` takes ``6.024e23``). Decimals inside expressions are read at face
value (``0.5x`` is ``x/2``). Ordered objects (tuples, ``\\langle\\rangle``
vectors, matrices, intervals) compare element by element, in order and shape,
brackets included; a transposed matrix is a different answer. Scientific
notation (``6.02e23``, ``1.5\\times10^{-3}``) and repeating decimals
(``0.1\\overline{6}``) are the numbers they denote.

Policy flags (keyword arguments of ``is_equivalent`` / ``accuracy_reward``) pick
a side where checkers disagree; see :class:`rewards.math_compare.Policy`:
``percent`` ("fraction" | "number" | "strict"), ``ordered_lists``, ``units``,
``precision``, ``float_rounding``, ``set_relation``, ``strict``.

Environment: ``RLKIT_MATH_WORKERS`` sets the worker count (default: 2, or 1 on
a one-core machine).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, Sequence

from rewards._timeout import KillablePool, WorkerStartError
from rewards.math_compare import Comparator, NeedSympy, Oracle, Policy
from rewards.math_extract import extract_answer, locate_answer
from rewards.math_normalize import normalize
from rewards.math_parse import Node, parse_answer

__all__ = ["extract_answer", "is_equivalent", "is_equivalent_batch", "accuracy_reward", "stats", "reset_stats",
           "clear_caches", "Policy", "DEFAULT_TIMEOUT_S"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 2.0
MAX_ANSWER_CHARS = 2000  # longer "answers" are compared by spelling only, never parsed
_POLICY_FLAGS = frozenset(f.name for f in fields(Policy))
_FAST = Oracle()


# ---------------------------------------------------------------- counters

_STATS_LOCK = threading.Lock()
_STATS = dict.fromkeys(("checks", "fast", "sympy", "timeouts", "errors"), 0)


def stats() -> dict[str, int]:
    """Counters since the last :func:`reset_stats`: ``checks`` (pairs compared),
    ``fast`` (decided without sympy), ``sympy`` (sent to a worker),
    ``timeouts`` (past the deadline: scored as not equal), ``errors`` (a worker
    failed: scored as not equal)."""
    with _STATS_LOCK:
        return dict(_STATS)


def reset_stats() -> None:
    with _STATS_LOCK:
        for key in _STATS:
            _STATS[key] = 0


def clear_caches() -> None:
    """Forget every parsed answer, here and in the workers (benchmarks use it)."""
    from rewards.math_sympy import clear_caches as clear_worker_caches

    _prepare_gold.cache_clear()
    clear_worker_caches()
    if _POOL is not None and _POOL_PID == os.getpid():
        _POOL.broadcast(clear_worker_caches)


def _count(**deltas: int) -> None:
    with _STATS_LOCK:
        for key, n in deltas.items():
            _STATS[key] += n


# ---------------------------------------------------------------- preparation

@dataclass(frozen=True)
class _Prepared:
    spelling: str  # canonical spelling of the located answer
    node: Node | None  # its structure; None when only the spelling can be compared


def _prepare(text: str, keep_units: bool) -> _Prepared | None:
    located = locate_answer(text)
    if located is None or not located.strip():
        return None
    if len(located) > MAX_ANSWER_CHARS:  # not an answer anyone writes: compare it as written
        return _Prepared(located, None)
    spelling = normalize(located)
    try:
        node = parse_answer(spelling, keep_units)
    except RecursionError:  # ((((((...)))))) nested past Python's limit
        node = None
    return _Prepared(spelling, node) if spelling else None


# A reference answer is compared with every sample of its group: read it once.
_prepare_gold = lru_cache(maxsize=4096)(_prepare)


def _policy(flags: dict[str, Any]) -> Policy:
    return Policy.from_flags(flags) if flags else Policy()


# ---------------------------------------------------------------- the worker pool

_POOL: KillablePool | None = None
_POOL_PID = -1
_POOL_LOCK = threading.Lock()
_IN_PROCESS = False  # set when no worker process can be started here


def _pool() -> KillablePool:
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():  # a forked child must not share its parent's pipes
            size = int(os.environ.get("RLKIT_MATH_WORKERS", min(2, os.cpu_count() or 1)))
            _POOL, _POOL_PID = KillablePool(size=max(1, size), preload=("rewards.math_sympy",)), os.getpid()
        return _POOL


def _decide(pairs: Sequence[tuple[_Prepared | None, _Prepared | None]], policy: Policy,
            timeout_s: float | None) -> list[bool]:
    global _IN_PROCESS
    verdicts = [False] * len(pairs)
    slow: list[int] = []
    fast = Comparator(policy, _FAST)
    for i, (g, p) in enumerate(pairs):
        if g is None or p is None:
            continue
        if g.spelling == p.spelling:
            verdicts[i] = True
            continue
        if g.node is None or p.node is None:
            continue
        try:
            verdicts[i] = fast.eq(g.node, p.node)
        except NeedSympy:
            slow.append(i)
        except RecursionError:
            pass
    compared = sum(g is not None and p is not None for g, p in pairs)
    _count(checks=compared, fast=compared - len(slow), sympy=len(slow))
    if not slow:
        return verdicts
    jobs = [(pairs[i][0].node, pairs[i][1].node, policy) for i in slow]
    if not _IN_PROCESS:
        try:
            from rewards.math_sympy import compare_in_worker

            outcomes = _pool().run(compare_in_worker, jobs, timeout_s or DEFAULT_TIMEOUT_S)
        except (WorkerStartError, OSError) as exc:
            log.warning("math verifier: no worker process can be started here (%s); checking in-process "
                        "without a time bound", exc)
            _IN_PROCESS = True
    if _IN_PROCESS:
        from rewards.math_sympy import compare_in_worker

        for i, job in zip(slow, jobs):
            verdicts[i] = bool(compare_in_worker(*job))
        return verdicts
    for i, outcome in zip(slow, outcomes):
        if outcome.timed_out:
            _count(timeouts=1)
        elif not outcome.ok:
            _count(errors=1)
            log.debug("math verifier worker error: %s", outcome.error)
        verdicts[i] = bool(outcome.ok and outcome.value)
    return verdicts


# ---------------------------------------------------------------- public API

def is_equivalent(gold: str, pred: str, *, timeout_s: float | None = None, **policy: Any) -> bool:
    """Whether ``pred`` states the same answer as ``gold``.

    Either side may be a bare answer (``"\\frac{1}{2}"``) or text containing
    one (a ``\\boxed{}``, a math span, "the answer is ..."; see
    :func:`rewards.math_extract.locate_answer`). ``policy`` flags are those of
    :class:`rewards.math_compare.Policy`; an unknown flag is a TypeError.
    ``timeout_s`` bounds the algebra (default :data:`DEFAULT_TIMEOUT_S`);
    past it the answer counts as not equal.
    """
    pol = _policy(policy)
    if not isinstance(gold, str) or not isinstance(pred, str):
        return False
    g = _prepare_gold(gold, not pol.units)
    p = _prepare(pred, not pol.units)
    return _decide([(g, p)], pol, timeout_s)[0]


def is_equivalent_batch(golds: Sequence[str], preds: Sequence[str], *, timeout_s: float | None = None,
                        **policy: Any) -> list[bool]:
    """:func:`is_equivalent` over pairs, the algebra spread over the worker pool."""
    if len(golds) != len(preds):
        raise ValueError(f"golds and preds differ in length: {len(golds)} != {len(preds)}")
    pol = _policy(policy)
    pairs = [(_prepare_gold(g, not pol.units) if isinstance(g, str) else None,
              _prepare(p, not pol.units) if isinstance(p, str) else None) for g, p in zip(golds, preds)]
    return _decide(pairs, pol, timeout_s)


def accuracy_reward(completions: Sequence[Any], answer: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """TRL-style reward: 1.0 when a completion's marked answer equals the
    reference, 0.0 when it differs or marks none, None when the reference is
    missing or unreadable (the reward does not apply).

    ``completions``: strings or chat lists (the last message's content is
    read). ``answer``: the reference column, one per completion, bare or with a
    ``\\boxed{}``. Other dataset columns in ``kwargs`` are ignored, except the
    policy flags of :class:`rewards.math_compare.Policy` and ``timeout_s``.
    """
    if len(completions) != len(answer):
        raise ValueError(f"accuracy_reward got {len(completions)} completions but {len(answer)} answers")
    timeout_s = kwargs.get("timeout_s")
    # A list-valued keyword is a dataset column that happens to share a flag's name, not a flag.
    pol = _policy({k: v for k, v in kwargs.items() if k in _POLICY_FLAGS and not isinstance(v, (list, tuple))})
    rewards: list[float | None] = [None] * len(completions)
    pairs, where = [], []
    for i, (completion, gold) in enumerate(zip(completions, answer)):
        if isinstance(gold, (int, float)) and not isinstance(gold, bool) and gold == gold:
            gold = str(gold)
        g = _prepare_gold(gold, not pol.units) if isinstance(gold, str) and gold.strip() else None
        if g is None:
            continue  # no usable reference: the reward does not apply
        marked = extract_answer(_completion_text(completion))
        p = _prepare(marked, not pol.units) if marked is not None else None
        rewards[i] = 0.0
        if p is not None:
            pairs.append((g, p))
            where.append(i)
    for i, ok in zip(where, _decide(pairs, pol, timeout_s)):
        rewards[i] = 1.0 if ok else 0.0
    return rewards


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = completion.get("content", "")
        return completion if isinstance(completion, str) else _completion_text(completion)
    if isinstance(completion, (list, tuple)) and completion:
        last = completion[-1]
        if isinstance(last, dict) and last.get("type") == "text":  # content given as parts
            return "".join(part.get("text", "") for part in completion if isinstance(part, dict))
        return _completion_text(last)
    return ""
