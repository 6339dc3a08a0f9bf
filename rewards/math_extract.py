"""Find the final answer in a model's text.

Two entry points, strict and lenient:

- :func:`extract_answer` (strict, for rewards): the last ``\\boxed{}``, else
  the last ``<answer>...</answer>``, else "the answer is ...". A completion that
  marks no answer scores 0.
- :func:`locate_answer` (lenient, for comparing two pieces of text such as a
  reference solution and a model's solution): the same marks first, then the
  last piece of mathematics in the text (a ``$...$`` / ``\\(...\\)`` /
  ``\\[...\\]`` span or a bare number), else the whole text.

Both are plain string scanning with linear-time regular expressions: safe on
100k-character chains of thought.
"""

from __future__ import annotations

import bisect
import re

__all__ = ["extract_answer", "locate_answer", "find_boxes", "undouble_backslashes"]

# A doubled backslash before a command name ("\\boxed", "\\frac") comes from
# text that was escaped twice; matrices keep theirs ("\\" ends a row there).
_DOUBLED = re.compile(r"\\\\(?=[A-Za-z{}()\[\]$%])")
_ENVIRONMENTS = ("matrix", "array", "align", "cases")


def undouble_backslashes(text: str) -> str:
    if "\\\\" not in text or any(env in text for env in _ENVIRONMENTS):
        return text
    return _DOUBLED.sub(r"\\", text)


# ---------------------------------------------------------------- boxes

_BOX = re.compile(r"\\(?:boxed|fbox)\b\s*")


def find_boxes(text: str) -> list[tuple[int, int, str]]:
    """Every ``\\boxed{...}`` / ``\\fbox{...}`` as (start, end, content), nested braces respected.

    An unclosed box runs to the end of the text (a truncated completion);
    ``\\boxed 5`` (no braces) takes the next token.
    """
    boxes = []
    pos = 0
    while True:
        m = _BOX.search(text, pos)
        if m is None:
            return boxes
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                c = text[j]
                if c == "\\":
                    j += 2  # an escaped brace \{ does not count
                    continue
                if c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            boxes.append((m.start(), min(j + 1, len(text)), text[i + 1:j]))
            pos = j + 1
        else:
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                boxes.append((m.start(), i + token.end(), token.group(0)))
            pos = i + 1


# Between two boxes that answer together: "\boxed{1} and \boxed{2}",
# "\boxed{(3,3)} \text{ for part (a) and } \boxed{(1,1)}", "\boxed{1},\boxed{2}".
_LATEX_NOISE = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}|\\[A-Za-z]+|\\.|[$]")
_WORD = re.compile(r"[A-Za-z]+")
_CONNECTIVES = {"and", "or"}


def _boxes_answer_together(gap: str) -> bool:
    if len(gap) > 80:
        return False
    words = _WORD.findall(_LATEX_NOISE.sub(lambda m: f" {m.group(1) or ''} ", gap))
    if not words:  # only spacing / punctuation between them
        return True
    return len(words) <= 6 and any(w.lower() in _CONNECTIVES for w in words)


def _last_box_group(text: str) -> tuple[str, int] | None:
    """(the last group of boxes answering together, where the group starts)."""
    boxes = find_boxes(text)
    if not boxes:
        return None
    group = [boxes[-1]]
    for prev in reversed(boxes[:-1]):
        if prev[1] <= group[0][0] and _boxes_answer_together(text[prev[1]:group[0][0]]):
            group.insert(0, prev)
        else:
            break
    contents = [c.strip() for _, _, c in group]
    joined = ", ".join(c for c in contents if c)
    return (joined, group[0][0]) if joined else None


# ---------------------------------------------------------------- tags and phrases

_ANSWER_PHRASE = re.compile(r"\b(?:final answer|the answer)\s*(?:is|:)\s*:?\s*", re.IGNORECASE)
# A sentence ends at ". " / ".\n" / a blank line, or the end of the text; a
# decimal point ("2.5") is not followed by a space.
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n\s*\n|$")


def _last_answer_tag(text: str) -> str | None:
    """Content of the last ``<answer>...</answer>`` (case-insensitive), stripped."""
    lower = text.lower()
    close = lower.rfind("</answer>")
    if close < 0:
        return None
    open_ = lower.rfind("<answer>", 0, close)
    if open_ < 0:
        return None
    return text[open_ + len("<answer>"):close].strip() or None


def _answer_phrase(text: str) -> tuple[str, int] | None:
    """(what follows the last "the answer is", where that phrase starts)."""
    last = None
    for last in _ANSWER_PHRASE.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end():last.end() + 2000]  # an answer is short; bounds the scan below
    end = _sentence_end(rest)  # never inside a math span: "is $3.5$ cm." ends after the span
    snippet = rest[:end].strip().strip('"').strip()
    return (snippet, last.start()) if snippet else None


def _sentence_end(rest: str) -> int:
    pos = 0
    while True:
        m = _SENTENCE_END.search(rest, pos)
        end = m.start()
        if _inside_span(rest, end):
            pos = end + 1
            if pos >= len(rest):
                return len(rest)
            continue
        return end


def _inside_span(text: str, index: int) -> bool:
    head = text[:index]
    dollars = len(re.findall(r"(?<!\\)\$", head.replace("$$", "")))
    return dollars % 2 == 1 or head.count("\\(") > head.count("\\)") or head.count("\\[") > head.count("\\]")


def extract_answer(text: str) -> str | None:
    """The answer a completion marks, or ``None`` when it marks none.

    In order: the last ``\\boxed{...}`` (nested braces; ``\\fbox{}`` too;
    boxes written back to back or joined by "and" / commas, as in
    ``\\boxed{1} and \\boxed{2}``, form one answer ``"1, 2"``), else the last
    ``<answer>...</answer>``, else "the answer is ..." / "final answer: ..."
    (case-insensitive, up to the end of that sentence).
    """
    if not isinstance(text, str) or not text:
        return None
    text = undouble_backslashes(text)
    boxed = _last_box_group(text)
    if boxed is not None:
        return boxed[0]
    tag = _last_answer_tag(text)
    if tag:
        return tag
    phrase = _answer_phrase(text)
    return None if phrase is None else phrase[0]


# ---------------------------------------------------------------- lenient location

# Math delimiters. Display spans ($$..$$, \[..\]) may cross lines; inline spans
# ($..$, \(..\)) may not: a "$" pair across lines is two stray dollar signs,
# and what sits between them is not read as maths.
_DELIMITER = re.compile(r"(?<!\\)\$\$|\\\[|\\\]|\\\(|\\\)|(?<!\\)\$")
_CLOSER = {"$$": "$$", "\\[": "\\]", "\\(": "\\)", "$": "$"}


def _spans(text: str) -> list[tuple[int, int, str, bool]]:
    """(start, end, body, inline) of every delimited math span, in one linear pass:
    each opener jumps straight to the next closer of its kind."""
    tokens = [(m.start(), m.end(), m.group(0)) for m in _DELIMITER.finditer(text)]
    following: list[dict[str, int]] = [{}] * (len(tokens) + 1)
    nxt: dict[str, int] = {}
    for i in range(len(tokens) - 1, -1, -1):  # following[i][kind]: first token of that kind after i
        following[i] = dict(nxt)
        nxt[tokens[i][2]] = i
    spans, i = [], 0
    while i < len(tokens):
        start, body_start, tok = tokens[i]
        closer = _CLOSER.get(tok)
        j = following[i].get(closer) if closer else None
        if j is None:
            i += 1
            continue
        body_end, end = tokens[j][0], tokens[j][1]
        spans.append((start, end, text[body_start:body_end], tok in ("$", "\\(")))
        i = j + 1
    return spans


_NUMBER = re.compile(
    r"(?<![A-Za-z0-9.\\_^])[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:\s*/\s*\d+(?:\.\d+)?)?"
    r"(?:\s*(?:\\?%|percent(?:age)?\b|pct\b))?"
)
_TRAILING_PERCENT = re.compile(r"\s*(?:\\?%|percent(?:age)?\b|pct\b)")
_RUN_GAP = re.compile(r"(?:\s|[,;]|\\quad|\\qquad|\\text\{\s*(?:and|or)\s*\}|\b(?:and|or)\b)*")


# A bare environment outside any $...$: "the matrix is \begin{pmatrix}1&2\\3&4\end{pmatrix}".
# Bounded length, so a text full of unclosed \begin{...} stays linear.
_ENVIRONMENT = re.compile(r"\\begin\{([A-Za-z]+\*?)\}.{0,4000}?\\end\{\1\}", re.DOTALL)


def _candidates(text: str) -> list[tuple[int, int, str]]:
    """Math spans, bare environments and bare numbers outside them, in reading order."""
    spans, masked = [], []
    for start, end, body, inline in _spans(text):
        masked.append((start, end))
        if inline and "\n" in body:
            continue
        body = body.strip()
        if body:
            after = _TRAILING_PERCENT.match(text, end)  # "$28$ %"
            spans.append((start, after.end() if after else end, body + ("\\%" if after else "")))
    for m in _ENVIRONMENT.finditer(text):
        if not any(a <= m.start() < b for a, b in masked):
            masked.append((m.start(), m.end()))
            spans.append((m.start(), m.end(), m.group(0)))
    masked.sort()
    starts = [a for a, _ in masked]
    numbers = []
    for m in _NUMBER.finditer(text):
        k = bisect.bisect_right(starts, m.start()) - 1
        if k < 0 or m.start() >= masked[k][1]:
            numbers.append((m.start(), m.end(), m.group(0).rstrip(",").strip()))
    return sorted(spans + numbers)


def _last_run(text: str, items: list[tuple[int, int, str]]) -> str:
    """The last candidate, joined with those just before it when only
    separators stand between them ("$1$, $2$ and $3$")."""
    run = [items[-1]]
    for prev in reversed(items[:-1]):
        gap = text[prev[1]:run[0][0]]
        if prev[1] <= run[0][0] and gap.strip() and _RUN_GAP.fullmatch(gap):
            run.insert(0, prev)
        else:
            break
    return ", ".join(body for _, _, body in run)


_PROSE_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_NOT_PROSE = {"and", "percent", "percentage", "pct", "sin", "cos", "tan", "cot", "sec", "csc", "log",
              "exp", "sqrt", "max", "min", "gcd", "lcm", "mod", "frac", "infty"}
# \text{...} groups, and environment names: a bare \begin{pmatrix}...\end{pmatrix} is mathematics, not prose.
_TEXT_GROUP = re.compile(r"\\(?:text|mathrm|textbf|mbox|textnormal|operatorname|begin|end)\s*\{[^{}]*\}")


_QUANTITY = re.compile(r"\s*[-+]?[\d.,/]*\d\s*[A-Za-z]{2,}(?:\s+[A-Za-z]{2,}){0,2}\s*\.?\s*")  # "125 miles"


def _is_prose(text: str) -> bool:
    if _QUANTITY.fullmatch(text):
        return False
    bare = _TEXT_GROUP.sub(" ", text)
    return any(w.lower() not in _NOT_PROSE for w in _PROSE_WORD.findall(bare))


def locate_answer(text: str) -> str | None:
    """The answer in ``text``, leniently: a marked answer (see
    :func:`extract_answer`), else the last math span or bare number (with the
    ones just before it when only commas / "and" separate them), else the
    whole text when it reads as an answer rather than prose."""
    if not isinstance(text, str):
        return None
    text = undouble_backslashes(text.strip())
    if not text:
        return None
    boxed = _last_box_group(text)
    phrase = _answer_phrase(text)
    if phrase is not None and (boxed is None or phrase[1] > boxed[1]):
        # "... \boxed{255} ... The final answer is $10,455$.": the later statement wins
        found = locate_answer(phrase[0]) if phrase[0] != text else None
        if found:
            return found
    if boxed is not None:
        return boxed[0]
    tag = _last_answer_tag(text)
    if tag:
        return locate_answer(tag)
    tail = text[-20000:]  # the answer sits at the end; bounds the scan on huge inputs
    if _spans(tail) or _is_prose(tail):
        items = _candidates(tail)
        text = tail
        if items:
            return _last_run(text, items)
    return text
