"""The three principles of rewards.math, one class each, every expected value worked out by hand
beside it:

- exactness: an exact gold (integer, fraction, radical, pi, e, repeating decimal) takes only the
  same value; a decimal gold takes what lies within half a unit of its last digit.
- structure: ordered objects (tuples, vectors, matrices, intervals) compare element by element,
  in order and shape; an interval's brackets count.
- notation: scientific notation and repeating decimals are the numbers they denote.

Each class runs through the fast path (plain numbers) and the sympy path (expressions), so
neither can drift from the principle.
"""

from __future__ import annotations

import pytest

from rewards.math import accuracy_reward, is_equivalent
from rewards.math_compare import Policy, decimal_tolerance, numbers_equal
from rewards.math_parse import parse_number

# ---------------------------------------------------------------- exactness

EXACT_GOLD_REJECTS_APPROXIMATIONS = [
    ("\\frac{1}{3}", "0.33"),  # 33/100 != 1/3
    ("\\frac{1}{3}", "0.333333"),  # 333333/10^6 != 1/3, however many 3s
    ("\\frac{1}{12}", "0.0833333333333333"),  # a 16-place approximation is still not 1/12
    ("\\pi", "3.14159"),  # pi is irrational: no decimal equals it
    ("\\sqrt{2}", "1.41421356"),  # 1.41421356^2 = 1.9999999...
    ("e", "2.718281828"),
    ("1", "0.9999999"),  # a near-integer is not the integer
    ("100", "100.0000001"),  # relative error 1e-9, still a different number
    ("1000000", "1000000.5"),  # relative error 5e-7: a fixed 1e-6 epsilon used to accept it
    ("\\frac{x}{3}", "0.333333x"),  # inside an expression, decimals are read at face value
    ("\\frac{\\sqrt{2}}{2}", "0.7071"),  # a radical through the algebra: 0.7071 != 0.70710678...
]

EXACT_GOLD_TAKES_EQUAL_DECIMALS = [
    ("\\frac{1}{2}", "0.5"),  # 0.5 is exactly 1/2
    ("2", "2.0"),  # 2.0 is exactly 2
    ("\\frac{7}{4}", "1.75"),
    ("\\frac{x}{2}", "0.5x"),  # 0.5 read at face value is 1/2
    ("\\frac{\\sqrt{4}}{8}", "0.25"),  # sqrt(4)/8 = 2/8 = 0.25 exactly, through sympy
]

DECIMAL_GOLD_TOLERANCE_FROM_ITS_DIGITS = [
    # gold, pred, equal?  -- tolerance: half a unit of the gold's last digit
    ("0.33", "\\frac{1}{3}", True),  # |0.3333.. - 0.33| = 0.0033 <= 0.005
    ("0.33", "0.334", True),  # 0.004 <= 0.005
    ("0.33", "0.336", False),  # 0.006 > 0.005
    ("0.333", "0.33", False),  # the prediction is coarser than the gold: 0.003 > 0.0005
    ("3.14", "\\pi", True),  # |pi - 3.14| = 0.00159 <= 0.005
    ("3.1416", "\\pi", True),  # |pi - 3.1416| = 7.3e-6 <= 5e-5
    ("3.142", "\\pi", True),  # 0.00041 <= 0.0005
    ("3.141", "\\pi", False),  # 0.00059 > 0.0005
    ("2.5", "2.54", True),  # 0.04 <= 0.05
    ("2.5", "2.56", False),  # 0.06 > 0.05
    ("1.414", "\\sqrt{2}", True),  # |1.41421 - 1.414| = 0.00021 <= 0.0005
    ("2.718", "e", True),  # |2.71828 - 2.718| = 0.00028 <= 0.0005
    ("0.5", "0.6", False),  # 0.1 > 0.05
    ("3.14159265358979", "3.141593", True),  # past 6 significant digits nothing more is demanded
]


@pytest.mark.parametrize("gold, pred", EXACT_GOLD_REJECTS_APPROXIMATIONS)
def test_exact_gold_rejects_approximations(gold, pred):
    assert not is_equivalent(gold, pred)


@pytest.mark.parametrize("gold, pred", EXACT_GOLD_TAKES_EQUAL_DECIMALS)
def test_exact_gold_takes_a_decimal_of_the_same_value(gold, pred):
    assert is_equivalent(gold, pred)


@pytest.mark.parametrize("gold, pred, equal", DECIMAL_GOLD_TOLERANCE_FROM_ITS_DIGITS)
def test_decimal_gold_tolerance_scales_with_its_digits(gold, pred, equal):
    assert is_equivalent(gold, pred) is equal


@pytest.mark.parametrize("spelling, tolerance", [
    ("0.33", "0.005"),  # last digit worth 0.01
    ("2.5", "0.05"),
    ("123456.7", "0.5"),  # 7 significant digits, past precision=6: half of 10^0
    ("0.001234567", "0.000000005"),  # 7 significant digits: the 6th is worth 1e-8
    ("6.02\\times10^{23}", "500000000000000000000"),  # last digit worth 10^21
])
def test_decimal_tolerance(spelling, tolerance):
    from fractions import Fraction

    assert decimal_tolerance(parse_number(spelling), precision=6) == Fraction(tolerance)


def test_exactness_is_a_property_of_the_spelling():
    assert parse_number("0.5").exact is False  # a decimal may be rounded, even when it happens not to be
    assert parse_number("\\frac{1}{2}").exact is True
    assert parse_number("0.\\overline{3}").exact is True  # a repeating decimal is an exact rational
    assert parse_number("3\\times10^{8}").exact is True  # an integer in scientific notation
    assert parse_number("3.0\\times10^{8}").exact is False  # a decimal mantissa: last digit worth 10^7
    assert parse_number("1.5/2").exact is True  # a quotient is read at face value: 3/4


def test_float_rounding_is_an_explicit_policy():
    # Math-Verify's convention, opt-in: round both to k places. 1/12 -> 0.083333 at 6 places
    gold, pred = parse_number("\\frac{1}{12}"), parse_number("0.0833333333333333")
    assert not numbers_equal(gold, pred, Policy())
    assert numbers_equal(gold, pred, Policy(float_rounding=6))
    # 1 -> 1.000000, 0.9999999 -> 1.000000 at 6 places: equal under the convention, not by default
    assert is_equivalent("1", "0.9999999", float_rounding=6)
    assert not is_equivalent("1", "0.9999999")


def test_training_reward_follows_exactness():
    completions = ["\\boxed{0.5}", "\\boxed{0.33}", "\\boxed{\\frac{1}{3}}", "\\boxed{0.\\overline{3}}"]
    golds = ["\\frac{1}{2}", "\\frac{1}{3}", "\\frac{1}{3}", "\\frac{1}{3}"]
    # 0.5 == 1/2; 0.33 != 1/3; 1/3 == 1/3; 0.(3) == 1/3
    assert accuracy_reward(completions, golds) == [1.0, 0.0, 1.0, 1.0]


# ---------------------------------------------------------------- structure

M = "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}"  # rows (1, 2), (3, 4)
M_T = "\\begin{pmatrix}1&3\\\\2&4\\end{pmatrix}"  # its transpose: rows (1, 3), (2, 4)
M_SYM = "\\begin{pmatrix}\\sqrt{2}&x\\\\0&1\\end{pmatrix}"  # entries that need the algebra
M_SYM_T = "\\begin{pmatrix}\\sqrt{2}&0\\\\x&1\\end{pmatrix}"

STRUCTURE = [
    # gold, pred, equal?
    (M, M, True),
    (M, M_T, False),  # transposed: entry (1,2) is 2 vs 3
    (M_SYM, M_SYM_T, False),  # transposed, decided by sympy: entry (1,2) is x vs 0
    (M_SYM, "\\begin{pmatrix}\\frac{2}{\\sqrt{2}}&x\\\\0&1\\end{pmatrix}", True),  # 2/sqrt(2) = sqrt(2)
    ("\\begin{pmatrix}1\\\\2\\\\3\\end{pmatrix}", "\\begin{pmatrix}1&2&3\\end{pmatrix}", False),  # 3x1 vs 1x3
    ("\\begin{pmatrix}1&2\\end{pmatrix}", "\\begin{pmatrix}1&2&0\\end{pmatrix}", False),  # 1x2 vs 1x3
    (f"The matrix is {M}", f"so we get {M_T}", False),  # bare text: located as matrices, not as "4"
    ("(1,2,3)", "(3,2,1)", False),  # a tuple is ordered
    ("(1,2,3)", "(1,2)", False),  # and has a length
    ("(\\sqrt{2}, 1)", "(1, \\sqrt{2})", False),  # ordered through the algebra too
    ("(\\sqrt{2}, 1)", "(\\frac{2}{\\sqrt{2}}, 1)", True),
    ("\\langle 1,2\\rangle", "\\langle 2,1\\rangle", False),  # a vector is ordered
    ("\\langle 1,2\\rangle", "\\langle 1, 2\\rangle", True),
    ("(1,2)", "[1,2]", False),  # open vs closed interval
    ("[1,2)", "[1,2]", False),  # the right bracket differs
    ("(1,2]", "(1,2]", True),
    ("(\\sqrt{2}, 3]", "[\\sqrt{2}, 3]", False),  # brackets count when the ends need sympy
    ("\\{1,2\\}", "(1,2)", False),  # a set is not an interval nor a pair
    ("\\{1,2\\}", "\\{2,1\\}", True),  # a set has no order
    ("[0,1]\\cup[2,3]", "[2,3]\\cup[0,1]", True),  # a union of sets has no order
]


@pytest.mark.parametrize("gold, pred, equal", STRUCTURE)
def test_structure(gold, pred, equal):
    assert is_equivalent(gold, pred) is equal


def test_structure_in_the_training_reward():
    # boxed matrices through the strict extraction: same matrix 1.0, transposed 0.0
    assert accuracy_reward([f"\\boxed{{{M}}}", f"\\boxed{{{M_T}}}"], [M, M]) == [1.0, 0.0]


# ---------------------------------------------------------------- notation

NOTATION = [
    # gold, pred, equal?
    ("6.02\\times10^{23}", "6.02e23", True),  # the same spelling two ways
    ("6.02\\times10^{23}", "602000000000000000000000", True),  # 6.02 * 10^23 exactly
    ("6.02 \\cdot 10^{23}", "6.02E+23", True),
    ("6.02e23", "6.03e23", False),  # 1e21 apart, tolerance 5e20
    ("6.02e23", "6.024e23", True),  # 4e20 apart, within 5e20
    ("1.5\\times10^{-3}", "0.0015", True),  # 1.5 / 1000
    ("1.5\\times10^{-3}", "\\frac{3}{2000}", True),
    ("2.5e-3", "0.0025", True),
    ("2.5e-3", "0.0026", False),  # 1e-4 apart, tolerance 5e-5
    ("2.5\\times10^{-3}", "2.6\\times10^{-3}", False),
    ("3\\times10^{8}", "300000000", True),  # an integer mantissa: exact
    ("3\\times10^{8}", "300000001", False),  # so no tolerance at all
    ("1e-3", "\\frac{1}{1000}", True),
    ("0.\\overline{3}", "\\frac{1}{3}", True),  # 0.333... = 3/9
    ("0.1\\overline{6}", "\\frac{1}{6}", True),  # 0.1666... = 1/10 + 6/90 = 15/90
    ("1.\\overline{27}", "\\frac{14}{11}", True),  # 1 + 27/99 = 126/99 = 14/11
    ("0.\\overline{9}", "1", True),  # 9/9
    ("0.\\dot{6}", "\\frac{2}{3}", True),
    ("\\frac{1}{3}", "0.\\overline{3}", True),  # either side
    ("0.\\overline{3}", "0.33", False),  # 1/3 is exact; 0.33 is not it
    ("0.\\overline{3}", "0.3", False),
    ("2e", "2 e", True),  # no exponent: 2 times Euler's e, not notation
    ("2e", "5.43656", False),  # 2e = 5.43656.. is exact: no decimal equals it
]


@pytest.mark.parametrize("gold, pred, equal", NOTATION)
def test_notation(gold, pred, equal):
    assert is_equivalent(gold, pred) is equal


@pytest.mark.parametrize("spelling, value", [
    ("6.02\\times10^{23}", "602000000000000000000000"),
    ("-2.5\\times10^{-3}", "-1/400"),  # -0.0025
    ("0.1\\overline{6}", "1/6"),
    ("-0.\\overline{45}", "-5/11"),  # 45/99
    ("0.(3)", "1/3"),
])
def test_notation_values(spelling, value):
    from fractions import Fraction

    assert parse_number(spelling).value == Fraction(value)
