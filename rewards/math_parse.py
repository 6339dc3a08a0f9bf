"""Read the structure of a normalised answer: lists, tuples, sets, intervals,
relations, percentages, matrices, words and single expressions.

Only the outer structure is read here, by splitting at top-level commas,
relation signs, ``\\cup`` and matching brackets. Each leaf stays a LaTeX string
(:class:`Atom`) for :mod:`rewards.math_sympy` to hand to latex2sympy2_extended,
so no LaTeX grammar is written here. Leaves that are plain numbers are also
read exactly (as :class:`fractions.Fraction`), which is what lets most answers
be compared without sympy at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Union as _U

__all__ = ["Num", "Atom", "Text", "Seq", "Interval", "SetUnion", "Relation", "Percent", "Matrix", "Alt",
           "Node", "parse_answer", "parse_number", "is_name", "nesting_depth"]


@dataclass(frozen=True)
class Num:
    """A number read exactly from its spelling.

    Exactness is a property of the spelling, never of the value: an integer, a
    fraction, a mixed number, a repeating decimal (``0.1\\overline{6}``) and an
    integer in scientific notation (``3\\times10^{8}``) are exact. A decimal
    (``0.33``, ``6.02e23``) is not: it may be a rounded value, and it stands for
    every value within half a unit of its last digit (:attr:`ulp`).
    """

    value: Fraction
    # Places of the last digit written: "0.330" -> 3, "6.02e23" -> 2 - 23 = -21 (the last digit
    # is worth 10^21). None for exact spellings.
    decimals: int | None = None
    exact: bool = True  # False exactly when the spelling is a decimal (decimals is set)

    @property
    def ulp(self) -> Fraction | None:
        """The worth of the last digit written (``0.33`` -> 1/100), or None for an exact number."""
        return None if self.decimals is None else Fraction(10) ** -self.decimals


@dataclass(frozen=True)
class Atom:
    tex: str  # one expression in LaTeX, e.g. "\frac{x}{7}+\frac{2}{7}"
    num: Num | None = None  # set when tex is a plain number
    unit: str = ""  # trailing unit ("cm", "\circ"); only filled when units are compared


@dataclass(frozen=True)
class Text:
    text: str  # lower-case words without spaces: "evelyn", "(c)"


@dataclass(frozen=True)
class Seq:
    kind: str  # "list" (1, 2), "tuple" ((1, 2): ordered), "set" (\{1, 2\})
    items: tuple["Node", ...]


@dataclass(frozen=True)
class Interval:
    lo: "Node"
    hi: "Node"
    left_closed: bool
    right_closed: bool


@dataclass(frozen=True)
class SetUnion:
    parts: tuple["Node", ...]  # A \cup B \cup ...


@dataclass(frozen=True)
class Relation:
    """A chain ``p0 op1 p1 op2 p2 ...`` such as ``x = 5+5+1 = 11`` or ``-2 \\le x \\le 7``."""

    parts: tuple["Node", ...]
    ops: tuple[str, ...]  # "=", "<", ">", "\le", "\ge", "\ne", "\in"; len(parts) - 1 of them
    texts: tuple[str, ...]  # source of each part, for recognising names

    @property
    def kind(self) -> str:
        if all(op in ("=", "\\in") for op in self.ops):
            return "eq"
        if all(op in ("<", ">", "\\le", "\\ge") for op in self.ops):
            return "ineq"
        return "ne" if self.ops == ("\\ne",) else "mixed"

    @property
    def value(self) -> "Node":
        return self.parts[-1]

    @property
    def name_index(self) -> int | None:
        """Index of the last part before the value that is a name (``x``, ``f(x)``, ``(p,q)``)."""
        for i in range(len(self.texts) - 2, -1, -1):
            if is_name(self.texts[i]):
                return i
        return None

    @property
    def is_assignment(self) -> bool:
        return self.kind == "eq" and self.name_index is not None


@dataclass(frozen=True)
class Percent:
    value: "Node"  # 28\% -> Percent(Atom("28"))


@dataclass(frozen=True)
class Matrix:
    rows: tuple[tuple["Node", ...], ...]


@dataclass(frozen=True)
class Alt:
    options: tuple["Node", ...]  # readings of an ambiguous spelling: "1,22" is 1.22 or the list 1, 22


Node = _U[Atom, Text, Seq, Interval, SetUnion, Relation, Percent, Matrix, Alt]

# ---------------------------------------------------------------- names and numbers

_SUBSCRIPT = re.compile(r"_\s*(?:\{[^{}]*\}|[A-Za-z0-9])")
_TEXTLIKE = re.compile(r"\\(?:text|mathrm|operatorname)\s*\{[^{}]*\}")


def is_name(tex: str) -> bool:
    """Whether ``tex`` names a quantity rather than computes one: ``x``, ``a_{37}``,
    ``f(x)``, ``|AB|``, ``\\frac{NO}{BO}``, ``(p,q)``; not ``2x+z`` or ``7``."""
    t = _TEXTLIKE.sub("x", _SUBSCRIPT.sub("", tex)).strip()
    if not re.search(r"[A-Za-z]", t) or re.search(r"\d", t) or t.startswith("-"):
        return False
    return re.search(r"(?<=[^\s(\[{,])\s*[+-]", t) is None


_INT = re.compile(r"([+-]?)(\d+)")
_DEC = re.compile(r"([+-]?)(\d*)\.(\d+)")
_FRAC = re.compile(r"([+-]?)\\frac\{\s*([+-]?\d+)\s*\}\{\s*([+-]?\d+)\s*\}")
_SLASH = re.compile(r"([+-]?)(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)")
_MIXED = re.compile(r"([+-]?)(\d+)\s*\\frac\{\s*(\d+)\s*\}\{\s*(\d+)\s*\}")
# 6.02\times10^{23}, 1.5\cdot10^{-3} (math_normalize spells 6.02e23 and 2.5E-3 this way)
_SCIENTIFIC = re.compile(r"([+-]?)(\d+)(?:\.(\d+))?(?:\\times|\\cdot)10\^(?:\{([+-]?\d+)\}|(\d))")
# 0.\overline{3}, 0.1\overline{6}, 1.\overline{27}, 0.\dot{3}, 0.(3): the digits after the fixed ones repeat
_REPEATING = re.compile(r"([+-]?)(\d*)\.(\d*)(?:\\overline\{(\d+)\}|\\overline(\d)|\\dot\{(\d)\}|\\dot(\d)|\((\d+)\))")
_MAX_DIGITS = 1000
_MAX_EXPONENT = 400  # 10^400 is past any answer; bigger exponents are left to the bounded algebra
MAX_ITEMS = 100
MAX_DEPTH = 40


def parse_number(tex: str) -> Num | None:
    """Read a plain number: ``-5``, ``.4``, ``1000.0``, ``\\frac{10}{9}``, ``10/9``, ``918\\frac{1}{2}``,
    ``6.02\\times10^{23}``, ``0.1\\overline{6}``."""
    s = tex.replace(" ", "")
    if len(s) > _MAX_DIGITS:
        return None
    sign = -1 if s.startswith("-") else 1
    if m := _INT.fullmatch(s):
        return Num(Fraction(sign * int(m.group(2))))
    if m := _DEC.fullmatch(s):
        whole, frac = m.group(2) or "0", m.group(3)
        return Num(sign * Fraction(int(whole + frac), 10 ** len(frac)), decimals=len(frac), exact=False)
    if m := _FRAC.fullmatch(s):
        num, den = int(m.group(2)), int(m.group(3))
        return Num(sign * Fraction(num, den)) if den else None
    if m := _SLASH.fullmatch(s):  # decimals in a quotient are read at face value: 1.5/2 is 3/4
        num, den = Fraction(m.group(2)), Fraction(m.group(3))
        return Num(sign * num / den) if den else None
    if m := _MIXED.fullmatch(s):  # a mixed number, as the MATH dataset writes them
        whole, num, den = int(m.group(2)), int(m.group(3)), int(m.group(4))
        return Num(sign * (whole + Fraction(num, den))) if den else None
    if m := _SCIENTIFIC.fullmatch(s):
        exponent = int(m.group(4) or m.group(5))
        if abs(exponent) > _MAX_EXPONENT:
            return None
        frac = m.group(3) or ""
        value = sign * Fraction(int(m.group(2) + frac), 10 ** len(frac)) * Fraction(10) ** exponent
        if not frac:  # 3\times10^{8} is the integer 300000000
            return Num(value)
        return Num(value, decimals=len(frac) - exponent, exact=False)
    if m := _REPEATING.fullmatch(s):
        whole, fixed = m.group(2) or "0", m.group(3)
        cycle = next(g for g in m.groups()[3:] if g)
        # x = whole.fixed(cycle)(cycle)...: the cycle adds cycle / (10^len(cycle) - 1), shifted past `fixed`
        value = Fraction(int(whole + fixed), 10 ** len(fixed)) + \
            Fraction(int(cycle), (10 ** len(cycle) - 1) * 10 ** len(fixed))
        return Num(sign * value)
    return None


def _comma_number(s: str) -> Atom | None:
    """``7,425,000`` (thousands) or ``1,22`` / ``0,111`` (decimal comma), else None."""
    if m := re.fullmatch(r"([+-]?)([1-9]\d{0,2}(?:,\d{3})+)(\.\d+)?", s):
        plain = m.group(1) + m.group(2).replace(",", "") + (m.group(3) or "")
        return Atom(plain, parse_number(plain))
    if m := re.fullmatch(r"([+-]?\d+),(\d{2,})", s):
        plain = f"{m.group(1)}.{m.group(2)}"
        return Atom(plain, parse_number(plain))
    return None


# ---------------------------------------------------------------- bracket-aware scanning

_TOKEN = re.compile(r"\\begin\s*\{[^{}]*\}|\\end\s*\{[^{}]*\}|\\[A-Za-z]+|\\.|.", re.DOTALL)
_OPENERS = {"(", "[", "{", "\\{", "\\lbrace", "\\langle"}
_CLOSERS = {")", "]", "}", "\\}", "\\rbrace", "\\rangle"}
RELATION_OPS = {"=", "<", ">", "\\le", "\\ge", "\\ne", "\\in", "\\approx"}


def _tokens(s: str) -> list[tuple[int, int, str, int]]:
    """(start, end, token, depth before it) for every token; a command is one token."""
    out, depth = [], 0
    for m in _TOKEN.finditer(s):
        tok = m.group(0)
        if tok in _CLOSERS or tok.startswith("\\end"):
            depth = max(0, depth - 1)
        out.append((m.start(), m.end(), tok, depth))
        if tok in _OPENERS or tok.startswith("\\begin"):
            depth += 1
    return out


def _split_top(s: str, seps: set[str]) -> tuple[list[str], list[str]]:
    """Split at separator tokens outside every bracket; returns (pieces, separators)."""
    pieces, found, start = [], [], 0
    for a, b, tok, depth in _tokens(s):
        if depth == 0 and tok in seps:
            pieces.append(s[start:a])
            found.append(tok)
            start = b
    pieces.append(s[start:])
    return pieces, found


def _outer(s: str) -> tuple[str, str, str] | None:
    """(opener, closer, inside) when the first bracket of ``s`` closes at its very end."""
    toks = _tokens(s)
    if len(toks) < 2 or toks[0][2] not in _OPENERS or toks[-1][2] not in _CLOSERS:
        return None
    for a, b, tok, depth in toks[1:-1]:
        if depth == 0:  # closed before the end: "(1,2),(3,4)"
            return None
    return toks[0][2], toks[-1][2], s[toks[0][1]:toks[-1][0]]


# ---------------------------------------------------------------- parsing

_MATRIX = re.compile(r"\\begin\{([pbvBV]?matrix|array|smallmatrix)\}(?:\s*\{[^{}]*\})?"
                     r"((?:(?!\\begin\{|\\end\{).)*)\\end\{\1\}", re.DOTALL)
_TEXT_WHOLE = re.compile(r"\\(?:text|textnormal|mbox)\s*\{([^{}]*)\}")
_WORDS = re.compile(r"[A-Za-z]{3,}(?: [A-Za-z]+)*|yes|no", re.IGNORECASE)
_CHOICE = re.compile(r"\(?([A-Ea-e])\)?[.:)]\s+(\S.*)")
_UNIT_GROUP = re.compile(r"(.*?[\d}).\]a-zA-Z])\s*(\\(?:text|mbox|textnormal|mathrm)\s*\{([^{}]*)\}(?:\s*\^\s*\{?\d\}?)?)$")
_UNIT_WORD = re.compile(r"(.*?[\d})\]])\s+([A-Za-z]{2,}(?:\s+[A-Za-z]{2,})*(?:\s*\^\s*\{?\d\}?)?)$")
_DEGREE = re.compile(r"(.+?)\s*\\circ$")
_RATIO = re.compile(r"([+-]?\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)")


def parse_answer(s: str, keep_units: bool = False) -> Node | None:
    """Structure of a normalised answer string, or None for an empty one."""
    s = s.strip()
    if not s:
        return None
    if nesting_depth(s) > MAX_DEPTH:  # the bracket walk is quadratic in depth: compare as written
        return Text(s.replace(" ", ""))
    return _Parser(keep_units).answer(s)


def nesting_depth(tex: str) -> int:
    """Deepest bracket nesting in ``tex`` (all of ``{([`` count)."""
    depth = deepest = 0
    for c in tex:
        if c in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "})]":
            depth -= 1
    return deepest


class _Parser:
    def __init__(self, keep_units: bool) -> None:
        self.keep_units = keep_units

    def answer(self, s: str) -> Node:
        groups, _ = _split_top(s, {";"})
        groups = [g.strip() for g in groups if g.strip()]
        if len(groups) > 1:
            if any(len(_split_top(g, {","})[0]) > 1 for g in groups):  # "p=5,q=2;p=7,q=2"
                return Seq("list", tuple(Seq("tuple", self.items(g)) for g in groups))
            return Seq("list", tuple(self.single(g) for g in groups))
        items = self.items(s)
        if len(items) > MAX_ITEMS:  # matching is quadratic in the item count: compare as written
            return Text(s.replace(" ", ""))
        node = items[0] if len(items) == 1 else Seq("list", items)
        number = _comma_number(s.replace(" ", "")) if " " not in s else None
        return Alt((number, node)) if number is not None else node

    def items(self, s: str) -> tuple[Node, ...]:
        pieces, _ = _split_top(s, {",", ";"})
        return tuple(self.single(p.strip()) for p in pieces if p.strip())

    def single(self, s: str) -> Node:
        s = s.strip()
        outer = _outer(s)
        if outer is not None:
            opener, closer, inside = outer
            has_comma = len(_split_top(inside, {",", ";"})[0]) > 1
            if opener == "{" and closer == "}":  # TeX grouping braces: "{1,3}" is just 1,3
                return self.answer(inside.strip()) if inside.strip() else Text("")
            if opener in ("(", "[") and closer in (")", "]") and not has_comma and (opener, closer) in (("(", ")"), ("[", "]")):
                return self.single(inside)
        if m := _CHOICE.fullmatch(s):  # "C. x = 42": the option letter, or what follows it
            return Alt((Text(m.group(1).lower()), self.single(m.group(2))))
        pm = len(re.findall(r"\\(?:pm|mp)(?![A-Za-z])", s))
        if pm == 1:  # 1 \pm \sqrt{19}: both roots
            plus, minus = (re.sub(r"\\(?:pm|mp)(?![A-Za-z])", sign, s) for sign in ("+", "-"))
            return Seq("set", (self.single(plus), self.single(minus)))
        pieces, ops = _split_top(s, RELATION_OPS)
        if ops and all(p.strip() for p in pieces):
            return self.relation([p.strip() for p in pieces], ops)
        pieces, ops = _split_top(s, {"\\cup"})
        if ops and all(p.strip() for p in pieces):
            return SetUnion(tuple(self.single(p) for p in pieces))
        if s.endswith("\\%") and s[:-2].strip():
            return Percent(self.single(s[:-2]))
        if outer is not None:
            node = self.bracketed(*outer)
            if node is not None:
                return node
        if m := _MATRIX.fullmatch(s):
            return self.matrix(m.group(2))
        if m := _TEXT_WHOLE.fullmatch(s):
            return Text(_text_key(m.group(1)))
        if _WORDS.fullmatch(s):
            return Text(_text_key(s))
        return self.leaf(s)

    def relation(self, texts: list[str], ops: list[str]) -> Node:
        if "\\approx" in ops:  # "x = 1/3 \approx 0.33": the exact value counts
            cut = ops.index("\\approx")
            if cut >= 1 or not is_name(texts[0]):
                texts, ops = texts[:cut + 1], ops[:cut]
            else:
                ops = ["=" if op == "\\approx" else op for op in ops]
        if not ops:
            return self.single(texts[0])
        return Relation(tuple(self.single(t) for t in texts), tuple(ops), tuple(texts))

    def bracketed(self, opener: str, closer: str, inside: str) -> Node | None:
        items = self.items(inside)
        if opener in ("\\{", "\\lbrace") and closer in ("\\}", "\\rbrace"):
            return Seq("set", items)
        if (opener, closer) == ("\\langle", "\\rangle"):  # a vector: ordered, like a tuple
            return Seq("tuple", items)
        if opener not in ("(", "[") or closer not in (")", "]"):
            return None
        if (opener, closer) != ("(", ")") and len(items) == 2:
            return Interval(items[0], items[1], opener == "[", closer == "]")
        return Seq("tuple", items)

    def matrix(self, body: str) -> Node:
        body = re.sub(r"\\hline", "", body)
        rows = [r for r in re.split(r"\\\\", body) if r.strip()]
        return Matrix(tuple(tuple(self.single(c) for c in r.split("&")) for r in rows))

    def leaf(self, s: str) -> Node:
        unit = ""
        for pattern in (_UNIT_GROUP, _UNIT_WORD):
            m = pattern.fullmatch(s)
            if m and m.group(1).strip() and not is_name(m.group(1)):
                s, unit = m.group(1).strip(), _text_key(m.group(2))
                break
        if m := _DEGREE.fullmatch(s):
            s, unit = m.group(1).strip(), "\\circ"
        if not self.keep_units:
            unit = ""
        if m := _RATIO.fullmatch(s):
            den = Fraction(m.group(2))
            if den == 0:  # a clock time such as 12:00, not a ratio
                return Text(_text_key(s))
            return Atom(s, Num(Fraction(m.group(1)) / den), unit)  # decimals at face value, as for 1.5/2
        if s != s.strip("()") and s.startswith("(") and s.endswith(")") and len(s.strip("()")) == 1:
            s = s.strip("()")  # an option label "(C)"
        return Atom(s, parse_number(s), unit)


def _text_key(s: str) -> str:
    s = re.sub(r"\\[A-Za-z]+\s*\{([^{}]*)\}", r"\1", s)
    key = re.sub(r"\s+", "", s).lower()
    if re.fullmatch(r"\([a-z]\)", key):  # "(C)" -> "c"
        key = key[1]
    return key
