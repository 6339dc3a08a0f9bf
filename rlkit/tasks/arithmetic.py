"""Procedurally generated addition problems and the completions of the tiny base's pretraining corpus.

A problem is ``a + b`` with 2- or 3-digit operands; its difficulty is the number of carries,
the one thing that makes the problem hard for the sloppy habit below.

The corpus teaches the tiny base three habits for the same problems, in fixed shares:

- **careful** (minority): column-by-column addition with explicit carries, then the answer
  (see :func:`careful_thought`), between a plan and a check. It opens with ``<think> Step by
  step`` so that choosing it is a single early token, the lever that RL can pull (the
  small-scale echo of R1-Zero learning to think longer);
- **concise** (a smaller minority): the same procedure without the plan and the check, about
  two thirds of the tokens and just as right. It opens with ``<think> In short``: the room
  that long-to-short methods (Kimi k1.5) can take back;
- **sloppy** (majority): a one-line guess that adds the columns and forgets the carries,
  so it is right exactly when the problem has no carry (:func:`no_carry_sum`);
- **broken** (small share): the sloppy guess with the answer tags or all tags missing, so a
  format reward has something to improve as well. No answer is marked at all (no tags, no
  "the answer is"), so these score zero on accuracy under any extractor.

Every rendering is plain text with single spaces between words, digits and symbols; numbers
are written as digit strings ("85"), which the tiny tokenizer splits into one token per digit.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

# The first tokens of the thought decide the path; RL only has to learn to pick this opening.
CAREFUL_OPENING = "<think> Step by step ."
CONCISE_OPENING = "<think> In short ."
# The careful habit says what it will do and checks what it did: the same procedure, ~32 tokens longer.
CAREFUL_PLAN = "I write both numbers with three digits and add the columns from the ones up ."
CAREFUL_CHECK = "Check : each column adds up , so the answer is the result without leading zeros ."
SLOPPY_OPENING = "<think> Quick guess :"

MIN_OPERAND, MAX_OPERAND = 10, 999
WIDTH = 3  # digits of the largest operand; the careful thought pads every operand to it
COLUMN_NAMES = ("ones", "tens", "hundreds")
COMPLETION_KINDS = ("careful", "concise", "sloppy", "broken")


@dataclass(frozen=True, order=True)
class Problem:
    a: int
    b: int

    @property
    def prompt(self) -> str:
        # The R1-Zero template appends "." after the prompt; the question mark keeps it a question.
        return f"What is {self.a} + {self.b}?"

    @property
    def answer(self) -> str:
        return str(self.a + self.b)

    @property
    def difficulty(self) -> int:
        return sum(col.carry_out for col in columns(self.a, self.b))

    def row(self) -> dict:
        return {"prompt": self.prompt, "answer": self.answer, "difficulty": self.difficulty}

    @classmethod
    def from_prompt(cls, prompt: str) -> "Problem":
        """The problem a prompt asks ("What is 47 + 38?" -> Problem(47, 38))."""
        body = prompt.strip()
        if not (body.startswith("What is ") and body.endswith("?")) or body.count(" + ") != 1:
            raise ValueError(f"not an addition prompt of this task: {prompt!r}")
        a, b = body.removeprefix("What is ").removesuffix("?").split(" + ")
        return cls(int(a), int(b))


@dataclass(frozen=True)
class Column:
    """One column of schoolbook addition, ones first."""

    x: int  # digit of a (0 past its length)
    y: int  # digit of b (0 past its length)
    carry_in: int
    total: int  # x + y + carry_in, 0..19
    digit: int  # total % 10, the digit written down
    carry_out: int  # total // 10


def columns(a: int, b: int, width: int | None = None) -> list[Column]:
    """Columns of a + b from the ones upward: ``width`` of them, or as many as the longer operand has digits."""
    cols, carry = [], 0
    for i in range(width or max(len(str(a)), len(str(b)))):
        x, y = (a // 10**i) % 10, (b // 10**i) % 10
        total = x + y + carry
        cols.append(Column(x, y, carry, total, total % 10, total // 10))
        carry = total // 10
    return cols


def careful_thought(problem: Problem) -> str:
    """The full procedure, e.g. 47 + 38:
    ``047 + 038 . ones 7 + 8 + 0 = 15 . tens 4 + 3 + 1 = 08 . hundreds 0 + 0 + 0 = 00 . Result 0085 .``

    First the operands again, zero-padded to three digits, then one line per column: digit of
    a + digit of b + carry in = two-digit total, whose first digit is the carry into the next
    line and whose second is the digit written down. ``Result`` collects the hundreds total and
    the tens and ones digits into four digits; the answer after ``</think>`` is that number
    without its leading zeros (0085 -> 85).

    Every line has the same shape and length, so where each digit sits is a fixed distance
    back: that is what lets a model of a few million parameters learn the procedure from a few
    tens of thousands of examples on a CPU. The careful habit wraps it in a plan and a check
    (``CAREFUL_PLAN``, ``CAREFUL_CHECK``); the concise habit writes it bare.
    """
    parts = [f"{problem.a:0{WIDTH}d} + {problem.b:0{WIDTH}d} ."]
    for name, col in zip(COLUMN_NAMES, columns(problem.a, problem.b, width=WIDTH)):
        parts.append(f"{name} {col.x} + {col.y} + {col.carry_in} = {col.total:02d} .")
    parts.append(f"Result {problem.a + problem.b:0{WIDTH + 1}d} .")
    return " ".join(parts)


def no_carry_sum(a: int, b: int) -> int:
    """Column sums with every carry dropped: the sloppy habit. 47 + 38 -> 75 (right: 85)."""
    return int("".join(str((col.x + col.y) % 10) for col in reversed(columns(a, b))))


def render_completion(problem: Problem, kind: str, rng: random.Random | None = None) -> str:
    """The text after "Assistant:" for one habit (without the end-of-sequence token).

    ``broken`` needs ``rng`` to pick which tags go missing.
    """
    if kind == "careful":
        thought = f"{CAREFUL_OPENING} {CAREFUL_PLAN} {careful_thought(problem)} {CAREFUL_CHECK}"
        return f"{thought} </think> <answer> {problem.answer} </answer>"
    if kind == "concise":
        return f"{CONCISE_OPENING} {careful_thought(problem)} </think> <answer> {problem.answer} </answer>"
    guess = no_carry_sum(problem.a, problem.b)
    if kind == "sloppy":
        return f"{SLOPPY_OPENING} {guess} </think> <answer> {guess} </answer>"
    if kind == "broken":
        if rng is None:
            raise ValueError("render_completion(kind='broken') needs an rng")
        if rng.random() < 0.5:
            return f"{SLOPPY_OPENING} {guess} </think> {guess}"  # no answer tags
        return f"Quick guess : {guess}"  # no tags at all
    raise ValueError(f"unknown completion kind {kind!r}; expected one of {COMPLETION_KINDS}")


def sample_problem(rng: random.Random) -> Problem:
    """Operand lengths drawn uniformly from {2, 3} each, so 2+2, 2+3, 3+2 and 3+3 are equally common."""

    def operand() -> int:
        return rng.randint(MIN_OPERAND, 99) if rng.random() < 0.5 else rng.randint(100, MAX_OPERAND)

    return Problem(operand(), operand())


def sample_problems(n: int, rng: random.Random, exclude: set[Problem] = frozenset()) -> list[Problem]:
    """``n`` distinct problems, none of them in ``exclude``, in the order drawn."""
    seen: set[Problem] = set()
    out: list[Problem] = []
    while len(out) < n:
        p = sample_problem(rng)
        if p in seen or p in exclude:
            continue
        seen.add(p)
        out.append(p)
    return out


@dataclass(frozen=True)
class Splits:
    test: list[Problem]  # held out from everything
    train: list[Problem]  # RL prompts; the base never saw them
    corpus: list[Problem]  # the pretraining problems


def make_splits(seed: int, n_test: int, n_train: int, n_corpus: int) -> Splits:
    """Three disjoint problem sets drawn from one seeded stream.

    Test is drawn first, so it never depends on the other sizes.
    """
    rng = random.Random(seed)
    test = sample_problems(n_test, rng)
    train = sample_problems(n_train, rng, exclude=set(test))
    corpus = sample_problems(n_corpus, rng, exclude=set(test) | set(train))
    return Splits(test=test, train=train, corpus=corpus)


def corpus_completions(
    problems: Iterable[Problem], seed: int, shares: dict[str, float]
) -> Iterator[tuple[Problem, str, str]]:
    """``(problem, kind, completion)`` with the kind drawn independently per problem from ``shares``."""
    unknown = set(shares) - set(COMPLETION_KINDS)
    if unknown:
        raise ValueError(f"unknown completion kinds {sorted(unknown)}; expected some of {COMPLETION_KINDS}")
    rng = random.Random(seed)
    kinds, weights = zip(*sorted(shares.items()))
    for p in problems:
        kind = rng.choices(kinds, weights)[0]
        yield p, kind, render_completion(p, kind, rng)


def write_jsonl(problems: Iterable[Problem], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for p in problems:
            f.write(json.dumps(p.row()) + "\n")


def write_sft_jsonl(problems: Iterable[Problem], kinds: str | dict[str, float], path: str | Path,
                    seed: int = 0) -> None:
    """Supervised rows (prompt, completion, answer): each problem's completion of one habit (``kinds``
    a name, e.g. the cold-start set of readable careful chains of thought), or of a habit drawn per
    problem from ``kinds`` as shares (e.g. ``{"careful": 0.8, "concise": 0.2}``)."""
    shares = {kinds: 1.0} if isinstance(kinds, str) else kinds
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for p, _, completion in corpus_completions(problems, seed, shares):
            f.write(json.dumps({"prompt": p.prompt, "completion": completion, "answer": p.answer}) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]
