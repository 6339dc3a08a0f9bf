"""Decide whether two parsed answers are the same, under an explicit policy.

The comparison walks the two structures (:mod:`rewards.math_parse`) and asks an
*oracle* only about the leaves and relations it cannot settle itself. Two
oracles exist:

- :class:`Oracle` (this module) settles nothing: it raises :class:`NeedSympy`.
  With it a comparison runs in microseconds in the calling process and either
  decides (numbers, words, list shapes) or says it needs algebra.
- ``rewards.math_sympy.SympyOracle`` does the algebra, in a killable worker.

A ``False`` from the fast pass is final; it is never a guess made for lack of
sympy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Callable, Iterable

from rewards.math_parse import (Alt, Atom, Interval, Matrix, Node, Num, Percent, Relation, Seq, SetUnion,
                                Text, is_name)

__all__ = ["Policy", "NeedSympy", "Oracle", "Comparator", "numbers_equal", "decimal_tolerance", "text_key_of"]

# How "x\%" may be read against a bare number, per percent policy.
_PERCENT_READINGS = {
    "fraction": ("hundredth", "bare"),  # x/100, or x with the sign dropped like a unit
    "number": ("bare",),
    "strict": ("hundredth",),
}
PERCENT_MODES = tuple(_PERCENT_READINGS)


@dataclass(frozen=True)
class Policy:
    """Conventions on which answer checkers disagree. Defaults follow Math-Verify.

    percent: ``"fraction"`` (default): ``10\\%`` is 0.1, and a dropped percent
        sign is forgiven like any unit, so ``10\\%`` also matches ``10``.
        ``"number"``: the sign is only a label, ``10\\%`` == 10 and != 0.1
        (the Hendrycks MATH and NeMo-Skills graders). ``"strict"``: ``10\\%``
        is 0.1 and nothing else.
    ordered_lists: False (default): a bare list ``1, 2, 3`` is a set, equal to
        ``3, 2, 1``. True: bare lists are ordered. Tuples ``(1, 2)`` are always
        ordered, sets ``\\{1, 2\\}`` never.
    units: True (default): trailing units (``\\text{ cm}``, ``miles``,
        degrees) are ignored. False: they must match.
    precision: 6 (default): the most significant digits a decimal gold is held
        to (see :func:`numbers_equal`): ``3.14159265358979`` accepts
        ``3.141593``.
    float_rounding: None (default): an exact gold equals only the same value
        (``1/2`` == ``0.5``; ``1/3`` != ``0.333333``). An int k: Math-Verify's
        convention, an exact gold also equals a decimal that agrees with it
        when both are rounded to k decimal places (``1/3`` == ``0.3333`` at
        k=4; ``1/3`` != ``0.33`` at k=6).
    set_relation: True (default): a relation in one variable equals its
        solution set (``-2 \\le x \\le 7`` == ``[-2, 7]``; ``x \\in S`` == S).
        False: a relation only equals a relation.
    strict: True (default): symbols must match (``f(x)`` != ``f(y)``). False:
        equal up to renaming the variables.
    """

    percent: str = "fraction"
    ordered_lists: bool = False
    units: bool = True
    precision: int = 6
    float_rounding: int | None = None
    set_relation: bool = True
    strict: bool = True

    @classmethod
    def from_flags(cls, flags: dict) -> "Policy":
        known = {f.name: f for f in fields(cls)}
        for key, value in flags.items():
            if key not in known:
                raise TypeError(f"unknown math policy flag {key!r}; known flags: {', '.join(known)}")
            if key == "percent":
                if value not in PERCENT_MODES:
                    raise ValueError(f"percent must be one of {PERCENT_MODES}, got {value!r}")
            elif key == "precision":
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 30:
                    raise ValueError(f"precision must be an int in [1, 30], got {value!r}")
            elif key == "float_rounding":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 30):
                    raise ValueError(f"float_rounding must be None or an int in [0, 30], got {value!r}")
            elif not isinstance(value, bool):
                raise ValueError(f"{key} must be True or False, got {value!r}")
        return cls(**flags)


class NeedSympy(Exception):
    """The fast pass cannot decide without algebra."""


def numbers_equal(gold: Num, pred: Num, policy: Policy) -> bool:
    """Whether ``pred`` states the number ``gold`` states. Exactness comes from
    the gold's spelling (:class:`rewards.math_parse.Num`):

    - An exact gold (integer, fraction, radical, pi, a repeating decimal...)
      equals only the same value. A decimal prediction counts only when it *is*
      that value (``0.5`` for ``1/2``, ``2.0`` for ``2``), never as an
      approximation (``0.333333`` for ``1/3``, ``0.9999999`` for ``1``), unless
      ``policy.float_rounding`` asks for Math-Verify's rounding convention.
    - A decimal gold states its value to the digits it gives, so it equals
      every value within half a unit of its last digit: ``0.33`` accepts
      ``1/3`` and ``0.334``, not ``0.336`` nor the coarser ``0.3``; ``6.02e23``
      accepts ``6.0249e23``. Digits past ``policy.precision`` significant ones
      are not required.
    """
    if gold.value == pred.value:
        return True
    if gold.ulp is not None:
        return abs(pred.value - gold.value) <= decimal_tolerance(gold, policy.precision)
    k = policy.float_rounding
    if k is not None and pred.ulp is not None:
        return _round_places(gold.value, k) == _round_places(pred.value, k)
    return False


def decimal_tolerance(gold: Num, precision: int) -> Fraction:
    """Half a unit of the decimal gold's last digit, or of its ``precision``-th
    significant digit when it gives more digits than that."""
    assert gold.ulp is not None
    half_ulp = gold.ulp / 2
    if gold.value == 0:
        return half_ulp
    magnitude = abs(gold.value)
    leading = len(str(magnitude.numerator // magnitude.denominator)) - 1 if magnitude >= 1 else \
        -len(str(magnitude.denominator // magnitude.numerator))  # 10^leading <= |gold| < 10^(leading+1)
    if magnitude < 1 and Fraction(10) ** (leading + 1) <= magnitude:  # 1/magnitude was a power of ten
        leading += 1
    return max(half_ulp, Fraction(10) ** (leading - precision + 1) / 2)


def _round_places(value: Fraction, places: int) -> Fraction:
    scale = Fraction(10) ** places
    scaled = abs(value) * scale
    rounded = int(scaled + Fraction(1, 2))  # half away from zero
    return (rounded if value >= 0 else -rounded) / scale


class Oracle:
    """Answers the questions that need algebra. This one answers none."""

    def atom_eq(self, g: Atom, p: Atom) -> bool:
        raise NeedSympy

    def equation_eq(self, g: Relation, p: Relation) -> bool:
        raise NeedSympy

    def as_set(self, node: Node) -> object:
        raise NeedSympy

    def sets_eq(self, g: Node, p: Node) -> bool:
        raise NeedSympy

    def matrix_eq(self, g: Node, p: Node) -> bool:
        raise NeedSympy


def text_key_of(node: Node) -> str | None:
    if isinstance(node, Text):
        return node.text
    if isinstance(node, Atom) and not node.unit:
        return node.tex.replace(" ", "").lower()
    return None


_INFINITIES = {"\\infty": 1, "+\\infty": 1, "-\\infty": -1, "\\infty\\infty": 1}
_SETLIKE = (Interval, SetUnion)


class Comparator:
    """``Comparator(policy, oracle).eq(gold, pred)``: is ``pred`` the same answer as ``gold``?"""

    def __init__(self, policy: Policy, oracle: Oracle) -> None:
        self.policy = policy
        self.oracle = oracle

    # --- combinators that keep "cannot decide" apart from "no"

    @staticmethod
    def _any(tests: Iterable[Callable[[], bool]]) -> bool:
        undecided = None
        for test in tests:
            try:
                if test():
                    return True
            except NeedSympy as exc:
                undecided = exc
        if undecided is not None:
            raise undecided
        return False

    @staticmethod
    def _all(tests: Iterable[Callable[[], bool]]) -> bool:
        undecided = None
        for test in tests:
            try:
                if not test():
                    return False
            except NeedSympy as exc:
                undecided = exc
        if undecided is not None:
            raise undecided
        return True

    # --- the walk

    def eq(self, g: Node | None, p: Node | None) -> bool:
        if g is None or p is None:
            return False
        if isinstance(g, Alt):
            return self._any(lambda o=o: self.eq(o, p) for o in g.options)
        if isinstance(p, Alt):
            return self._any(lambda o=o: self.eq(g, o) for o in p.options)
        g, p = _lone(g), _lone(p)
        if g == p:
            return True
        if isinstance(g, Relation) or isinstance(p, Relation):
            return self._relations(g, p)
        if isinstance(g, Percent) or isinstance(p, Percent):
            return self._percent(g, p)
        if isinstance(g, Text) or isinstance(p, Text):
            return text_key_of(g) is not None and text_key_of(g) == text_key_of(p)
        if isinstance(g, Seq) and isinstance(p, Seq):
            return self._seqs(g, p)
        if isinstance(g, Matrix) or isinstance(p, Matrix):
            return self._matrices(g, p)
        if isinstance(g, Atom) and isinstance(p, Atom):
            return self._atoms(g, p)
        if _setlike(g) and _setlike(p):
            return self._sets(g, p)
        if isinstance(g, Atom) or isinstance(p, Atom):  # e.g. "\mathbb{R}" against an interval
            return self.oracle.sets_eq(g, p)
        return False

    def _atoms(self, g: Atom, p: Atom) -> bool:
        if not self.policy.units and g.unit != p.unit:
            return False
        if g.tex == p.tex:
            return True
        if g.num is not None and p.num is not None:
            return numbers_equal(g.num, p.num, self.policy)
        g_inf, p_inf = _INFINITIES.get(g.tex.replace(" ", "")), _INFINITIES.get(p.tex.replace(" ", ""))
        if g_inf is not None or p_inf is not None:
            if g_inf is not None and p_inf is not None:
                return g_inf == p_inf
            if g.num is not None or p.num is not None:
                return False
        return self.oracle.atom_eq(g, p)

    def _percent(self, g: Node, p: Node) -> bool:
        if isinstance(g, Percent) and isinstance(p, Percent):
            return self.eq(g.value, p.value)
        gold_side = isinstance(g, Percent)
        inner = g.value if gold_side else p.value
        other = p if gold_side else g

        def compare(x: Node | None) -> bool:
            return x is not None and (self.eq(x, other) if gold_side else self.eq(other, x))

        readings = {"hundredth": lambda: compare(_hundredth(inner)), "bare": lambda: compare(inner)}
        return self._any(readings[r] for r in _PERCENT_READINGS[self.policy.percent])

    def _relations(self, g: Node, p: Node) -> bool:
        gr = g if isinstance(g, Relation) else None
        pr = p if isinstance(p, Relation) else None
        if gr is not None and pr is not None:
            if gr.kind == "eq" and pr.kind == "eq" and "\\in" not in gr.ops + pr.ops:
                if gr.is_assignment and pr.is_assignment:
                    return self.eq(gr.value, pr.value)
                return self.oracle.equation_eq(gr, pr)
            if gr.kind == "ne" and pr.kind == "ne":
                return self.oracle.equation_eq(gr, pr)
            return self._as_sets(gr, pr)
        if gr is not None:  # gold is a relation, the prediction is not
            if gr.kind == "eq":
                return gr.is_assignment and self.eq(gr.value, p)
            return gr.kind == "ineq" and self.policy.set_relation and self._as_sets(gr, p)
        # The prediction is a relation: a chain of equalities ends with its value.
        if pr.kind == "eq":
            return self.eq(g, pr.value)
        return pr.kind == "ineq" and self.policy.set_relation and self._as_sets(g, pr)

    def _as_sets(self, g: Node, p: Node) -> bool:
        gs, ps = _solution_set(g), _solution_set(p)
        if gs is not None and ps is not None:
            return self.eq(gs, ps)
        return self.oracle.sets_eq(g, p)

    def _seqs(self, g: Seq, p: Seq) -> bool:
        kinds = {g.kind, p.kind}
        if kinds == {"set", "tuple"}:
            return False
        ordered = "tuple" in kinds or (kinds == {"list"} and self.policy.ordered_lists)
        if ordered:
            return len(g.items) == len(p.items) and self._all(
                lambda a=a, b=b: self.eq(a, b) for a, b in zip(g.items, p.items))
        return self._all(lambda a=a: self._any(lambda b=b: self.eq(a, b) for b in p.items) for a in g.items) and \
            self._all(lambda b=b: self._any(lambda a=a: self.eq(a, b) for a in g.items) for b in p.items)

    def _sets(self, g: Node, p: Node) -> bool:
        g, p = _as_interval(g), _as_interval(p)
        if isinstance(g, Interval) and isinstance(p, Interval):
            return (g.left_closed, g.right_closed) == (p.left_closed, p.right_closed) and \
                self._all([lambda: self.eq(g.lo, p.lo), lambda: self.eq(g.hi, p.hi)])
        if isinstance(g, SetUnion) and isinstance(p, SetUnion) and len(g.parts) == len(p.parts):
            try:
                if self._all(lambda a=a: self._any(lambda b=b: self.eq(a, b) for b in p.parts) for a in g.parts):
                    return True
            except NeedSympy:
                pass
        return self.oracle.sets_eq(g, p)  # unions that merge: [0,1] \cup [1,2] = [0,2]

    def _matrices(self, g: Node, p: Node) -> bool:
        if isinstance(g, Matrix) and isinstance(p, Matrix):
            return len(g.rows) == len(p.rows) and all(len(a) == len(b) for a, b in zip(g.rows, p.rows)) and \
                self._all(lambda a=a, b=b: self.eq(a, b)
                          for ra, rb in zip(g.rows, p.rows) for a, b in zip(ra, rb))
        if isinstance(g, Atom) or isinstance(p, Atom):  # a matrix expression: A + B
            return self.oracle.matrix_eq(g, p)
        return False


def _lone(node: Node) -> Node:
    while isinstance(node, Seq) and node.kind != "set" and len(node.items) == 1:
        node = node.items[0]
    return node


def _setlike(node: Node) -> bool:
    return isinstance(node, _SETLIKE) or (isinstance(node, Seq) and node.kind in ("set", "tuple"))


def _as_interval(node: Node) -> Node:
    """``(a, b)`` is both a pair and an open interval; next to an interval it is the interval."""
    if isinstance(node, Seq) and node.kind == "tuple" and len(node.items) == 2:
        return Interval(node.items[0], node.items[1], False, False)
    return node


def _hundredth(node: Node) -> Node | None:
    if not isinstance(node, Atom):
        return None
    num = node.num
    if num is not None:
        num = Num(num.value / 100, None if num.decimals is None else num.decimals + 2, num.exact)  # 33.3% -> 0.333
    return Atom(f"\\frac{{{node.tex}}}{{100}}", num, node.unit)


_SYMBOL = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?")
_OPEN_OPS = {"<": (False, True), ">": (False, False), "\\le": (True, True), "\\ge": (True, False)}
_INF, _NEG_INF = Atom("\\infty"), Atom("-\\infty")


def _solution_set(node: Node) -> Node | None:
    """The set a relation describes, when it can be read off without algebra:
    ``x \\in S`` -> S; ``x > 5`` -> (5, oo); ``-2 \\le x \\le 7`` -> [-2, 7];
    a value v -> {v}; a set -> itself. None when algebra is needed."""
    if not isinstance(node, Relation):
        if _setlike(node):
            return _as_interval(node)
        return Seq("set", (node,)) if isinstance(node, Atom) and node.num is not None else None
    if node.ops == ("\\in",) and is_name(node.texts[0]):
        return _as_interval(node.value)
    if node.kind == "eq" and node.is_assignment:
        return Seq("set", (node.value,))
    if node.kind != "ineq" or not all(op in _OPEN_OPS for op in node.ops):
        return None
    names = [i for i, t in enumerate(node.texts) if _is_symbol(t)]
    bounds_ok = all(isinstance(x, Atom) and x.num is not None for i, x in enumerate(node.parts) if i not in names)
    if len(names) != 1 or not bounds_ok:
        return None
    k = names[0]
    lo, hi, lo_closed, hi_closed = _NEG_INF, _INF, False, False
    for i, op in enumerate(node.ops):  # relation between parts i and i+1
        closed, var_is_smaller = _OPEN_OPS[op]
        if i + 1 == k:  # bound op var
            var_is_smaller = not var_is_smaller
            bound = node.parts[i]
        elif i == k:  # var op bound
            bound = node.parts[i + 1]
        else:
            return None
        if var_is_smaller:
            hi, hi_closed = bound, closed
        else:
            lo, lo_closed = bound, closed
    return Interval(lo, hi, lo_closed, hi_closed)


def _is_symbol(tex: str) -> bool:
    return _SYMBOL.fullmatch(tex.strip()) is not None
