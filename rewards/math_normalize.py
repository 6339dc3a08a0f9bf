"""Rewrite an answer string into one canonical LaTeX spelling.

Only spelling changes here, never meaning: ``\\dfrac`` -> ``\\frac``,
``\\frac12`` -> ``\\frac{1}{2}``, ``\\left(`` -> ``(``, ``>=`` -> ``\\ge``,
``14{,}916`` -> ``14916``, ``6.02e23`` -> ``6.02\\times10^{23}``, "percent" -> ``\\%``, stray ``$`` and trailing
full stops removed, "and" / "or" between answers -> ``,``. Units and
structure (lists, intervals, relations) are read later, by
:mod:`rewards.math_parse`, because which of them matter is a policy choice.
"""

from __future__ import annotations

import re

__all__ = ["normalize"]

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u22c5": "\\cdot ",
    "\u00f7": "\\div ", "\u2264": "\\le ", "\u2265": "\\ge ", "\u2260": "\\ne ", "\u221e": "\\infty ",
    "\u03c0": "\\pi ", "\u221a": "\\sqrt", "\u00b0": "^\\circ", "\u00b2": "^2", "\u00b3": "^3",
    "\u222a": "\\cup ", "\u2229": "\\cap ", "\u2208": "\\in ", "\u00b1": "\\pm ", "\u2248": "\\approx ",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u20ac": "", "\u00a3": "",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))

# Thousands separators: "14{,}916", "14 {, }916", "11,\! 111", "10\,000" (all between digit groups).
_THOUSANDS = re.compile(r"(?<=\d)\s*(?:\{\s*,\s*\}|,\s*\\!|\\,|\\!\s*,)\s*(?=\d{3}(?!\d))")
_SPACING = re.compile(r"(?<!\\)\\(?:q?quad|[,;:! ])|~|\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits)\b")
_SIZING = re.compile(r"\\(?:left|right|middle|[bB]igg?[lr]?)(?![A-Za-z])\s*\.?")
_FRAC_VARIANT = re.compile(r"\\[dtc]frac(?![A-Za-z])")
# \frac12, \frac1{72}, \frac3{3}, \frac{9}4: one-character arguments get braces.
_FRAC_SHORT = re.compile(r"\\frac\s*(\{[^{}]*\}|[0-9A-Za-z])\s*(\{[^{}]*\}|[0-9A-Za-z])")
_SQRT_SHORT = re.compile(r"\\sqrt\s*([0-9A-Za-z])")  # TeX reads one token: \sqrt25 is \sqrt{2}5
_STYLE_ONE = re.compile(r"\\(?:mathrm|mathbf|mathit|mathsf|textbf|textit|boldsymbol|bm)\s*\{([^{}]*)\}")
_RELATIONS = [
    (re.compile(r"\\(?:leqslant|leq|le)(?![A-Za-z])|<=|=<"), r"\\le "),
    (re.compile(r"\\(?:geqslant|geq|ge)(?![A-Za-z])|>=|=>"), r"\\ge "),
    (re.compile(r"\\(?:neq|ne)(?![A-Za-z])|!="), r"\\ne "),
    (re.compile(r"\\lt(?![A-Za-z])"), "<"),
    (re.compile(r"\\gt(?![A-Za-z])"), ">"),
]
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree\b|\^\s*\{\s*\\text\{\s*o\s*\}\s*\}")
_PERCENT_WORD = re.compile(r"\s*(?:\\%|%|\\text\{\s*(?:\\%|%|percent(?:age)?|pct)\s*\}|\bpercent(?:age)?\b|\bpct\b)")
_CONNECTIVE = re.compile(r"\\text\{\s*(?:and|or)\s*\}|(?<![A-Za-z\\])(?:and|or)(?![A-Za-z])")
_CURRENCY = re.compile(r"\\\$|\$|\\(?:euro|pounds?|yen)\b|\\textdollar\b")
_INFINITY = re.compile(r"\\infin(?:ity)?\b|\binfinity\b|\binf\b")
# A computer's scientific notation, 6.02e23 / 2.5E-3, read as the number it denotes. Only a whole
# token: "2e" alone is 2 times e, and x^2e-3 is no number.
_E_NOTATION = re.compile(r"(?<![\w.\\^_{])(\d+(?:\.\d+)?)[eE]([+-]?\d+)(?![\w.])")
_BOX_WRAP = re.compile(r"\\(?:boxed|fbox)\s*\{")


def _unwrap_boxes(s: str) -> str:
    while True:
        m = _BOX_WRAP.search(s)
        if not m:
            return s
        depth, j = 1, m.end()
        while j < len(s) and depth:
            depth += {"{": 1, "}": -1}.get(s[j], 0)
            j += 1
        inner = s[m.end():j - 1] if depth == 0 else s[m.end():]
        s = s[:m.start()] + inner + s[j:]


def normalize(answer: str) -> str:
    """Canonical spelling of one answer (see the module docstring)."""
    s = answer.strip()
    s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], s)
    s = _unwrap_boxes(s)
    s = _THOUSANDS.sub("", s)
    s = _E_NOTATION.sub(lambda m: f"{m.group(1)}\\times10^{{{int(m.group(2))}}}", s)
    s = _SIZING.sub("", s)
    s = _SPACING.sub(" ", s)
    s = _FRAC_VARIANT.sub(r"\\frac", s)
    s = _FRAC_SHORT.sub(lambda m: "\\frac" + _brace(m.group(1)) + _brace(m.group(2)), s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    s = _STYLE_ONE.sub(r"\1", s)
    for pattern, repl in _RELATIONS:
        s = pattern.sub(repl, s)
    s = _DEGREES.sub("\\\\circ ", s)
    s = _INFINITY.sub(r"\\infty", s)
    s = _PERCENT_WORD.sub(r"\\%", s)
    s = _CURRENCY.sub("", s)
    s = _CONNECTIVE.sub(",", s)
    s = s.replace("\\emptyset", "\\varnothing")
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"(?:[.,;:\s]|\\\\|\\)+$", "", s)  # "5.", "185\", "4,"
    s = re.sub(r"^[,;\s]+", "", s)
    s = re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", s))
    if re.fullmatch(r"\d{1,3}(?: \d{3})+(?:\.\d+)?", s):  # "1 000 000"
        s = s.replace(" ", "")
    return s


def _brace(arg: str) -> str:
    return arg if arg.startswith("{") else "{" + arg + "}"
