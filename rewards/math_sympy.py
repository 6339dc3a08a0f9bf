"""The algebra behind answer comparison: leaves go to latex2sympy2_extended,
equality is decided by exact evaluation, random probing and simplification.

Everything here may be slow on adversarial input, so it runs inside a
killable worker (:mod:`rewards._timeout`); :func:`compare_in_worker` is the
entry point. Two cheap guards come first anyway, so that the usual
pathological answers return at once instead of at the deadline: towers of
powers and huge factorials are never evaluated, only compared as written.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction
from functools import lru_cache

import sympy
from latex2sympy2_extended import latex2sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig
from latex2sympy2_extended.math_normalization import NormalizationConfig

from rewards.math_compare import Comparator, NeedSympy, Oracle, Policy, numbers_equal
from rewards.math_parse import Atom, Interval, Matrix, Node, Num, Relation, Seq, SetUnion, is_name, nesting_depth

__all__ = ["compare_in_worker", "clear_caches", "warm_worker", "to_sympy", "SympyOracle"]

# Our own normaliser has run already; latex2sympy only gets its basic cleanup.
_NORMALIZATION = NormalizationConfig(basic_latex=True, units=False, malformed_operators=False, nits=False,
                                     boxed="none", equations=False)
_CONVERSION = ConversionConfig(interpret_as_mixed_fractions=True, interpret_simple_eq_as_assignment=False,
                               interpret_contains_as_eq=True, lowercase_symbols=False)
_MAX_TEX = 1500
_BIG_FACTORIAL = re.compile(r"\d{4,}\s*!|\\(?:Gamma|binom)")
_MAX_EXPONENT = 10_000  # |base| > 1 raised higher than this is never evaluated
_MAX_DEPTH = 30  # \sqrt{\sqrt{...}} two hundred deep: the parser recurses for seconds
_PROBES = 3
_EXACT_TOL = sympy.Rational(1, 10**20)


def compare_in_worker(gold: Node, pred: Node, policy: Policy) -> bool:
    """Full comparison, algebra included. Meant to run in a killable worker."""
    try:
        return Comparator(policy, SympyOracle(policy)).eq(gold, pred)
    except NeedSympy:
        return False


def clear_caches() -> None:
    to_sympy.cache_clear()


def warm_worker() -> None:
    """Build latex2sympy's parser once, when a worker starts (rewards._timeout calls it)."""
    to_sympy("\\frac{x+1}{2}")
    to_sympy.cache_clear()


@lru_cache(maxsize=8192)
def to_sympy(tex: str):
    """latex2sympy2_extended's reading of ``tex``, or None (unparseable or too big to touch)."""
    if len(tex) > _MAX_TEX or _BIG_FACTORIAL.search(tex) or nesting_depth(tex) > _MAX_DEPTH:
        return None
    try:
        expr = latex2sympy(tex, normalization_config=_NORMALIZATION, conversion_config=_CONVERSION)
    except Exception:
        return None
    if isinstance(expr, str) or not isinstance(expr, (sympy.Basic, sympy.MatrixBase)):
        return None
    return expr if _tame(expr) else None


def _tame(expr, depth: int = 0) -> bool:
    """False for expressions whose evaluation could explode (2^{2^{2^{...}}}, 10^{10^{10}}, 10^5!)."""
    if depth > 60:
        return False
    if isinstance(expr, sympy.MatrixBase):
        return all(_tame(e, depth + 1) for e in expr)
    if not isinstance(expr, sympy.Basic):
        return True
    if isinstance(expr, sympy.Pow):
        base, exp = expr.args
        if not (_tame(base, depth + 1) and _tame(exp, depth + 1)):
            return False
        if exp.is_number:
            try:
                size = abs(complex(exp.evalf(15)))
            except (TypeError, ValueError):
                return False
            if size > _MAX_EXPONENT and not (base.is_number and base.evalf(15) in (0, 1, -1)):
                return False
        return True
    if isinstance(expr, sympy.exp) and expr.args[0].is_number:  # e^{e^{e^{e^e}}}
        if not _tame(expr.args[0], depth + 1):
            return False
        try:
            if abs(complex(expr.args[0].evalf(15))) > _MAX_EXPONENT:
                return False
        except (TypeError, ValueError):
            return False
        return True
    if isinstance(expr, (sympy.factorial, sympy.factorial2, sympy.gamma, sympy.binomial)):
        arg = expr.args[0]
        if arg.is_number:
            try:
                if abs(complex(arg.evalf(15))) > _MAX_EXPONENT:
                    return False
            except (TypeError, ValueError):
                return False
    return all(_tame(a, depth + 1) for a in expr.args)


_MAX_PLACES = 30  # a decimal inside a computed prediction: its places are unknown, at most the 30 evaluated


def _face_value(expr):
    """``expr`` with every decimal replaced by the exact rational it spells (0.1 -> 1/10)."""
    floats = {f: sympy.Rational(str(f)) for f in expr.atoms(sympy.Float)}
    return expr.xreplace(floats) if floats else expr


def _has_float(expr) -> bool:
    return any(isinstance(a, sympy.Float) for a in sympy.preorder_traversal(expr))


def _value(expr) -> complex | None:
    try:
        v = complex(sympy.N(expr, 30))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return None if v != v or abs(v) == float("inf") else v


def _exact_number(expr) -> Fraction | None:
    """A real constant evaluated to 30 digits, as a Fraction."""
    try:
        v = sympy.N(expr, 30)
    except Exception:
        return None
    if not v.is_real or not v.is_finite:
        return None
    try:
        return Fraction(str(v)) if isinstance(v, sympy.Float) else Fraction(int(v.p), int(v.q))
    except (AttributeError, ValueError, TypeError):
        return None


class SympyOracle(Oracle):
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._rng = random.Random(0)

    # --- leaves

    def atom_eq(self, g: Atom, p: Atom) -> bool:
        a, b = to_sympy(g.tex), to_sympy(p.tex)
        if a is None or b is None:
            return False
        return self.expr_eq(a, b, g.num, p.num)

    def expr_eq(self, a, b, a_num: Num | None = None, b_num: Num | None = None) -> bool:
        if a == b:
            return True
        a, b = _unevaluated_to_plain(a), _unevaluated_to_plain(b)
        if isinstance(a, sympy.MatrixBase) or isinstance(b, sympy.MatrixBase):
            return _matrices_equal(a, b, self.expr_eq)
        if isinstance(a, sympy.Set) or isinstance(b, sympy.Set):
            return isinstance(a, sympy.Set) and isinstance(b, sympy.Set) and self._sets_equal(a, b)
        if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
            return False
        b_decimal = _has_float(b)
        # Decimals inside an expression are read at face value (0.5x is x/2 exactly, 0.333333x is
        # not x/3); only a gold that is a lone decimal number stands for a rounded value (a_num).
        a, b = _face_value(a), _face_value(b)
        if not a.free_symbols and not b.free_symbols:
            return self._constants_equal(a, b, a_num, b_num, b_decimal)
        if self._symbolic_equal(a, b):
            return True
        if not self.policy.strict:  # equal up to renaming the variables: f(x) == f(y)
            sa, sb = sorted(a.free_symbols, key=str), sorted(b.free_symbols, key=str)
            if len(sa) == len(sb) and sa != sb:
                return self._symbolic_equal(a, b.xreplace(dict(zip(sb, sa))))
        return False

    def _constants_equal(self, a, b, a_num: Num | None, b_num: Num | None, b_decimal: bool) -> bool:
        va, vb = _exact_number(a), _exact_number(b)
        if va is not None and vb is not None:
            if abs(va - vb) <= _EXACT_TOL * max(1, abs(va)):  # the same value, to 30 digits
                return True
            gold = a_num or Num(va)  # a computed gold (\sqrt{2}, \pi) is exact
            pred = b_num or (Num(vb, decimals=_MAX_PLACES, exact=False) if b_decimal else Num(vb))
            return numbers_equal(gold, pred, self.policy)
        ca, cb = _value(a), _value(b)  # complex constants
        if ca is None or cb is None:
            return _simplifies_to_zero(a - b)
        return abs(ca - cb) <= 1e-12 * max(1.0, abs(ca))

    def _symbolic_equal(self, a, b) -> bool:
        diff = a - b
        if diff == 0:
            return True
        symbols = sorted(diff.free_symbols | a.free_symbols | b.free_symbols, key=str)
        tol = 1e-12  # both sides are exact here (decimals at face value): only evaluation error
        probed = 0
        for _ in range(_PROBES):
            point = self._point(symbols, integers=diff.has(sympy.Sum, sympy.Product))
            va, vb = _value(a.xreplace(point)), _value(b.xreplace(point))
            if va is None or vb is None:
                continue
            probed += 1
            if abs(va - vb) > tol * max(1.0, abs(va)):
                return False
        if probed == _PROBES:
            return True
        return _simplifies_to_zero(diff)

    def _point(self, symbols, integers: bool) -> dict:
        """A random point to evaluate at: reals in (0.3, 2.7), or small integers when
        sums or products are about (their bounds must be integers, and a sum
        evaluated at 1.7 terms costs seconds)."""
        if integers:
            return {s: sympy.Integer(self._rng.randint(2, 7)) for s in symbols}
        return {s: sympy.Float(self._rng.uniform(0.3, 2.7), 30) for s in symbols}

    # --- relations

    def equation_eq(self, g: Relation, p: Relation) -> bool:
        """Two equations (or two "!=") are the same when lhs - rhs of one is a
        nonzero constant multiple of the other's: 2x+4y-3=0 and y=-x/2+3/4."""
        dg, dp = _difference(g), _difference(p)
        if dg is None or dp is None:
            return False
        if dg == 0 or dp == 0:
            return dg == dp
        ratio = self._constant_ratio(dg, dp)
        return ratio is not None and abs(ratio) > 1e-12

    def _inequalities_eq(self, g: Relation, p: Relation) -> bool:
        """``a < b`` and ``c < d`` agree when b - a is a positive constant multiple
        of d - c and both are strict (or both not): ``x < 1`` and ``-x > -1``."""
        sides = []
        for rel in (g, p):
            if len(rel.ops) != 1 or rel.ops[0] not in ("<", ">", "\\le", "\\ge"):
                return False
            lhs, rhs = (to_sympy(x.tex) if isinstance(x, Atom) else None for x in rel.parts)
            if not (isinstance(lhs, sympy.Expr) and isinstance(rhs, sympy.Expr)):
                return False
            up = rel.ops[0] in ("<", "\\le")
            sides.append((rhs - lhs if up else lhs - rhs, rel.ops[0] in ("<", ">")))
        (dg, strict_g), (dp, strict_p) = sides
        if strict_g != strict_p or dg == 0 or dp == 0:
            return False
        ratio = self._constant_ratio(dg, dp)
        return ratio is not None and ratio.real > 1e-12 and abs(ratio.imag) < 1e-12

    def _constant_ratio(self, dg, dp) -> complex | None:
        """dg / dp when it is the same at random points (or simplifies to a constant), else None."""
        ratio = None
        symbols = sorted(dg.free_symbols | dp.free_symbols, key=str)
        for _ in range(_PROBES):
            point = self._point(symbols, integers=dg.has(sympy.Sum, sympy.Product) or dp.has(sympy.Sum, sympy.Product))
            vg, vp = _value(dg.xreplace(point)), _value(dp.xreplace(point))
            if vg is None or vp is None or vp == 0:
                break
            r = vg / vp
            if ratio is not None and abs(r - ratio) > 1e-9 * max(1.0, abs(ratio)):
                return None
            ratio = r
        else:
            return ratio
        quotient = sympy.simplify(dg / dp)
        return _value(quotient) if quotient.is_number else None

    def as_set(self, node: Node):
        """A sympy set for a set-like node or a relation in one variable; None if there is none."""
        if isinstance(node, Relation):
            return self._relation_set(node)
        if isinstance(node, Interval):
            lo, hi = self._leaf(node.lo), self._leaf(node.hi)
            if lo is None or hi is None:
                return None
            return sympy.Interval(lo, hi, not node.left_closed, not node.right_closed)
        if isinstance(node, Seq) and node.kind == "tuple" and len(node.items) == 2:
            return self.as_set(Interval(node.items[0], node.items[1], False, False))
        if isinstance(node, Seq) and node.kind == "set":
            items = [self._leaf(i) for i in node.items]
            return None if any(i is None for i in items) else sympy.FiniteSet(*items)
        if isinstance(node, SetUnion):
            parts = [self.as_set(x) for x in node.parts]
            return None if any(x is None for x in parts) else sympy.Union(*parts)
        if isinstance(node, Atom):
            expr = to_sympy(node.tex)
            if isinstance(expr, sympy.Set):
                return expr
            return sympy.FiniteSet(expr) if isinstance(expr, sympy.Expr) else None
        return None

    def sets_eq(self, g: Node, p: Node) -> bool:
        if isinstance(g, Relation) and isinstance(p, Relation) and self._inequalities_eq(g, p):
            return True
        a, b = self.as_set(g), self.as_set(p)
        return a is not None and b is not None and self._sets_equal(a, b)

    def _sets_equal(self, a, b) -> bool:
        if a == b:
            return True
        if isinstance(a, sympy.FiniteSet) and isinstance(b, sympy.FiniteSet):
            return all(any(self.expr_eq(x, y) for y in b) for x in a) and \
                all(any(self.expr_eq(x, y) for x in a) for y in b)
        try:
            return bool(sympy.Union(sympy.Complement(a, b), sympy.Complement(b, a)).is_empty)
        except Exception:
            return False

    def _relation_set(self, rel: Relation):
        if rel.ops == ("\\in",) and is_name(rel.texts[0]):
            return self.as_set(rel.value)
        if rel.kind == "eq" and rel.is_assignment:
            value = self._leaf(rel.value)
            return None if value is None else sympy.FiniteSet(value)
        if rel.kind != "ineq":
            return None
        sides = [self._leaf(x) for x in rel.parts]
        if any(s is None or not isinstance(s, sympy.Expr) for s in sides):
            return None
        symbols = set().union(*(s.free_symbols for s in sides))
        ops = {"<": sympy.Lt, ">": sympy.Gt, "\\le": sympy.Le, "\\ge": sympy.Ge}
        if len(symbols) == 1:
            (x,) = symbols
            try:
                result = sympy.Reals
                for i, op in enumerate(rel.ops):
                    result = sympy.Intersection(result, sympy.solveset(ops[op](sides[i], sides[i + 1]), x, sympy.Reals))
                if not result.has(sympy.ConditionSet):  # sympy could not solve it (0 < f(x) < 1)
                    return result
            except Exception:
                pass
        if len(sides) == 3 and is_name(rel.texts[1]):  # 0 < f(x) < 1: the values f(x) takes
            return sympy.Interval(sides[0], sides[2], rel.ops[0] in ("<", ">"), rel.ops[1] in ("<", ">"))
        return None

    def _leaf(self, node: Node):
        if isinstance(node, Atom):
            if node.num is not None:
                return sympy.Rational(node.num.value.numerator, node.num.value.denominator)
            return to_sympy(node.tex)
        return None

    # --- matrices written as expressions (A + B)

    def matrix_eq(self, g: Node, p: Node) -> bool:
        a, b = self._matrix(g), self._matrix(p)
        return a is not None and b is not None and _matrices_equal(a, b, self.expr_eq)

    def _matrix(self, node: Node):
        if isinstance(node, Matrix):
            rows = [[self._leaf(c) for c in row] for row in node.rows]
            if any(c is None for row in rows for c in row) or len({len(r) for r in rows}) != 1:
                return None
            return sympy.Matrix(rows)
        if isinstance(node, Atom):
            expr = to_sympy(node.tex)
            if isinstance(expr, sympy.MatrixExpr):
                try:
                    expr = expr.doit()
                except Exception:
                    return None
            return expr if isinstance(expr, sympy.MatrixBase) else None
        return None


def _matrices_equal(a, b, expr_eq) -> bool:
    if not (isinstance(a, sympy.MatrixBase) and isinstance(b, sympy.MatrixBase)) or a.shape != b.shape:
        return False
    return all(expr_eq(x, y) for x, y in zip(a, b))


def _unevaluated_to_plain(expr):
    if isinstance(expr, sympy.Basic) and expr.has(sympy.UnevaluatedExpr):
        try:
            return expr.doit()
        except Exception:
            return expr
    if isinstance(expr, sympy.MatrixExpr):
        try:
            return expr.doit()
        except Exception:
            return expr
    return expr


def _difference(rel: Relation):
    """lhs - rhs of the last relation of an equation chain (lhs: the named part if any)."""
    i = rel.name_index if rel.name_index is not None else len(rel.parts) - 2
    lhs, rhs = rel.parts[i], rel.parts[-1]
    if not (isinstance(lhs, Atom) and isinstance(rhs, Atom)):
        return None
    a, b = to_sympy(lhs.tex), to_sympy(rhs.tex)
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return None
    return a - b


def _simplifies_to_zero(expr) -> bool:
    try:
        return sympy.simplify(expr) == 0
    except Exception:
        return False
