"""
Exact, verifiable rewards for chain-of-thought RL: pure functions of text, no torch.

A reward finds the final answer in a model's completion, compares it exactly with the reference,
and returns 1.0 or 0.0. No learned reward model. A policy under RL will emit every string it can,
so every reward must survive any input (garbage, 1 MB of braces, `__import__('os')`) without
raising, hanging, or running code. The tasks these rewards score (problems, splits, cold-start
traces) are in tasks.py.

    exact_match(completion, "72")                       GSM8K, arithmetic: the final answer equals the reference
    pairs_reward(completion, [5, 4, 8, 3], 11)          "#### 8+3": two given numbers that sum to the target
    countdown_reward(completion, [3, 5, 7, 2], 54)      "<answer>(3+5)*7-2</answer>", read by our own parser
    walk_reward(completion, 1, [4, 1, 5, 5, 4, 2])      "#### 1+4+1-5+5-4-2": a walk kept in 0..9 that ends at 0
    maze_reward(completion, 2, doors, 6)                "#### 2-+++-+": doors that exist, from room 2 to room 0
    step_reward(stats, per_honest_check=0.1)            a process reward (a variant, measured in ablate.py)

    python -m pytest -q tests/test_rewards.py
"""

import re
from collections import Counter
from fractions import Fraction

MAX_SCAN_CHARS = 4096   # answers live at the end: searching only the tail bounds the cost of huge outputs
MAX_ANSWER_CHARS = 200  # a longer "final answer" is not well formed
MAX_NUMBER_CHARS = 100  # longer strings are never converted to numbers (no huge int() conversions)

# -----------------------------------------------------------------------------
# Finding the final answer

# The inside of \boxed{...}: text whose braces nest at most 3 deep. The possessive quantifiers
# (++, *+) never backtrack, so a failed match costs linear time, not exponential.
_BRACED = r"[^{}]*+"
for _ in range(3):
    _BRACED = r"(?:[^{}]++|\{" + _BRACED + r"\})*+"

_ANSWER_PATTERNS = (
    re.compile(r"####[ \t]*([^\n#]*)"),                             # GSM8K: "#### 72"
    re.compile(r"\\boxed\{(" + _BRACED + r")\}"),                    # LaTeX: "\boxed{\frac{1}{2}}"
    re.compile(r"the answer is[ \t]*:?[ \t]*(\S+?)[.,]?(?!\S)", re.IGNORECASE),  # "The answer is 72."
    re.compile(r"<answer>([^<]*+)</answer>"),                       # tags:  "<answer>72</answer>"
)

def _find_last_answer(text: str) -> tuple[int, str] | None:
    """(where its marker starts, answer) for the last answer in text; None if there is none, or if that
    last one is malformed (empty, too long): an earlier answer never stands in for the final one."""
    if not isinstance(text, str):
        return None
    offset = max(0, len(text) - MAX_SCAN_CHARS)
    tail = text[offset:]
    best = None  # (where the answer itself starts, where its marker starts, answer)
    for pattern in _ANSWER_PATTERNS:
        for m in pattern.finditer(tail):
            if best is None or m.start(1) > best[0]:
                best = (m.start(1), m.start(), m.group(1).strip())
    # ordering by where the answer starts lets "The answer is \boxed{5}" resolve to "5"
    return (offset + best[1], best[2]) if best and 0 < len(best[2]) <= MAX_ANSWER_CHARS else None

def extract_answer(text: str) -> str | None:
    """The last final answer in text, in any supported format; None if there is none."""
    return (_find_last_answer(text) or (None, None))[1]

# -----------------------------------------------------------------------------
# Comparing answers

_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")  # no exponents: "1e400" is not a number
_LATEX_FRAC = re.compile(r"([+-]?)\\d?frac\{([^{}]*)\}\{([^{}]*)\}")
_THOUSANDS_COMMA = re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))")

def parse_number(s: str) -> Fraction | None:
    """Exact value of "12", "-3.50", "7/2" or "\\frac{7}{2}"; None for anything else."""
    # guard the length before converting: int() on a 10,000-digit string raises in Python 3.11,
    # and a short exponent like 1e400 would stand for a huge value, so neither is a number here
    if len(s) > MAX_NUMBER_CHARS:
        return None
    if m := _LATEX_FRAC.fullmatch(s):
        s = f"{m[1]}{m[2]}/{m[3]}"
    top, slash, bottom = s.partition("/")
    if not _DECIMAL.fullmatch(top) or (slash and (not _DECIMAL.fullmatch(bottom) or Fraction(bottom) == 0)):
        return None
    return Fraction(top) / Fraction(bottom) if slash else Fraction(top)  # safe: short plain decimals

def normalize_answer(ans: str) -> str:
    """Drop formatting that does not change the answer: "$ 1,000." -> "1000", "+4" -> "4"."""
    s = "".join(ans.split())  # all whitespace
    s = s.replace("\\$", "").replace("$", "").removesuffix(".")
    return _THOUSANDS_COMMA.sub("", s).removeprefix("+")

def answers_match(pred: str, ref: str) -> bool:
    """Numbers compare as exact fractions ("3.50" == "7/2"); anything else as normalised text."""
    pred, ref = normalize_answer(pred), normalize_answer(ref)
    if not pred or not ref:
        return False
    a, b = parse_number(pred), parse_number(ref)
    return a == b if a is not None and b is not None else pred == ref

def exact_match(completion: str, answer: str) -> float:
    """1.0 if the completion's final answer equals the reference answer, else 0.0."""
    pred = extract_answer(completion)
    return 1.0 if pred is not None and answers_match(pred, answer) else 0.0

def format_reward(completion: str) -> float:
    """1.0 if the completion states a final answer at all, right or wrong."""
    return 1.0 if extract_answer(completion) is not None else 0.0

# -----------------------------------------------------------------------------
# Countdown: an arithmetic expression over given numbers, read by our own bounded parser (never eval)

MAX_EXPRESSION_DEPTH = 16        # parentheses nested deeper than this are not an answer
MAX_VALUE = Fraction(10**12)     # |numerator| and denominator of every intermediate value stay below this
_EXPRESSION_TOKEN = re.compile(r"\s*(?:([0-9]{1,6})|([-+*/()]))")

def _expression_tokens(text: str) -> list[str] | None:
    """"(3+5)*7" -> ["(", "3", "+", "5", ")", "*", "7"]; None if anything else is in the text."""
    tokens, pos = [], 0
    while pos < len(text.rstrip()):
        m = _EXPRESSION_TOKEN.match(text, pos)
        if m is None:
            return None
        tokens.append(m[1] or m[2])
        pos = m.end()
    return tokens

def evaluate_expression(text: str) -> tuple[Fraction, list[int]] | None:
    """The exact value of an expression of non-negative integers, + - * / and parentheses, and the numbers
    it uses, in order; None if it is not one, divides by zero, nests deeper than MAX_EXPRESSION_DEPTH or
    makes a value beyond MAX_VALUE. Unary minus is not allowed (Countdown combines the given numbers)."""
    tokens = _expression_tokens(text) if isinstance(text, str) and len(text) <= MAX_ANSWER_CHARS else None
    if not tokens:
        return None
    numbers, pos = [], 0

    def bounded(value):
        if abs(value.numerator) >= MAX_VALUE or value.denominator >= MAX_VALUE:
            raise ValueError("value out of bounds")
        return value

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def expression(depth):  # term (("+" | "-") term)*
        value = term(depth)
        while peek() in ("+", "-"):
            op, right = take(), term(depth)
            value = bounded(value + right if op == "+" else value - right)
        return value

    def term(depth):  # factor (("*" | "/") factor)*
        value = factor(depth)
        while peek() in ("*", "/"):
            op, right = take(), factor(depth)
            if op == "/" and right == 0:
                raise ValueError("division by zero")
            value = bounded(value * right if op == "*" else value / right)
        return value

    def factor(depth):  # number | "(" expression ")"
        token = take() if peek() is not None else None
        if token == "(" and depth < MAX_EXPRESSION_DEPTH:
            value = expression(depth + 1)
            if peek() == ")":
                take()
                return value
        elif token is not None and token.isdigit():
            numbers.append(int(token))
            return Fraction(int(token))
        raise ValueError(f"unexpected {token!r}")

    try:
        value = expression(0)
    except ValueError:
        return None
    return (value, numbers) if pos == len(tokens) else None

def countdown_reward(completion: str, numbers: list[int], target: int) -> float:
    """1.0 if the completion's final answer (any format extract_answer knows, e.g. <answer>(3+5)*7-2</answer>)
    is an expression whose value is exactly the target and that uses each given number at most once, else 0.0."""
    answer = extract_answer(completion)
    found = evaluate_expression(answer) if answer is not None else None
    if found is None:
        return 0.0
    value, used = found
    return 1.0 if value == target and not Counter(used) - Counter(numbers) else 0.0

# -----------------------------------------------------------------------------
# The pairs task's answers, and the step rewards a variant adds for its checks

CHECK_RIGHT, CHECK_WRONG = "✓", "✗"  # the model's own verdict on an attempt (one token each)
_PAIR = re.compile(r"([0-9]{1,3})\+([0-9]{1,3})")  # "8+6"

def pair_sum(expression: str) -> tuple[int, int] | None:
    """(a, b) of "a+b" (two short non-negative integers), None for anything else. No eval."""
    m = _PAIR.fullmatch(expression)
    return None if m is None else (int(m[1]), int(m[2]))

def pair_solves(expression: str, numbers: list[int], target: int) -> bool:
    """Is "a+b" two of the given numbers (at different places) whose sum is the target?"""
    pair = pair_sum(expression)
    return pair is not None and sum(pair) == target and not Counter(pair) - Counter(numbers)

def pairs_reward(completion: str, numbers: list[int], target: int) -> float:
    """1.0 if the completion's final answer is "a+b", two of the given numbers that sum to the target, else 0.0.
    Only the final answer counts: the checks written before it never do."""
    answer = extract_answer(completion)
    return 1.0 if answer is not None and pair_solves(answer, numbers, target) else 0.0

_WALK_ANSWER = re.compile(r"[0-9](?:[+-][0-9])+")  # "1+4+1-5+5-4-2": a start digit, then a sign before each digit

def walk_solves(expression: str, start: int, digits: list[int]) -> bool:
    """Is expression the start, then every given digit in order with a sign, its running value never
    outside 0..9 and its last value 0? (Short by construction: a final answer is at most 200 characters.)"""
    expression = expression.replace(" ", "")
    if not _WALK_ANSWER.fullmatch(expression) or int(expression[0]) != start:
        return False
    signs, written = expression[1::2], [int(digit) for digit in expression[2::2]]
    if written != list(digits):
        return False
    value = start
    for sign, digit in zip(signs, written):
        value = value + digit if sign == "+" else value - digit
        if not 0 <= value <= 9:
            return False
    return value == 0

def walk_reward(completion: str, start: int, digits: list[int]) -> float:
    """1.0 if the completion's final answer is a walk that solves the problem (walk_solves), else 0.0."""
    answer = extract_answer(completion)
    return 1.0 if answer is not None and walk_solves(answer, start, digits) else 0.0

def maze_reward(completion: str, start: int, doors: list[list], n_moves: int) -> float:
    """1.0 if the completion's final answer is the start room, then n_moves doors ("2-+++-+") that exist and
    lead from it to room 0 (doors[room] = [the + door's room or None, the - door's]), else 0.0."""
    answer = (extract_answer(completion) or "").replace(" ", "")
    if not (len(answer) == n_moves + 1 and answer[0].isdigit() and int(answer[0]) == start
            and set(answer[1:]) <= {"+", "-"}):
        return 0.0
    room = start
    for sign in answer[1:]:
        room = doors[room][0 if sign == "+" else 1]
        if room is None:
            return 0.0
    return 1.0 if room == 0 else 0.0

STEP_REWARD_CAP = 0.5  # a completion's step rewards add up to at most this: less than a right answer's 1

def step_reward(stats: dict, per_honest_check: float = 0.0, per_confident_check: float = 0.0) -> float:
    """A process reward (a variant this method avoids; ablate.py --table=process measures it), from a
    completion's self_check_stats: + per_honest_check for each honest check (a perfect step judge), +
    per_confident_check for each ✓ written, true or not (a step judge that trusts what looks sure), capped
    at STEP_REWARD_CAP so that no amount of checking is worth as much as a right answer. 0 when both are 0."""
    return min(STEP_REWARD_CAP, per_honest_check * stats["honest"] + per_confident_check * stats["confident"])
