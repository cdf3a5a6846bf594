"""
Exact, verifiable rewards for chain-of-thought RL, and the tasks that produce them.

A reward here is a pure function of text: find the final answer in a model's completion,
compare it exactly with the reference, return 1.0 or 0.0. No learned reward model, no torch.
A policy under RL will emit every string it can, so every reward must survive any input
(garbage, 1 MB of braces, `__import__('os')`) without raising, hanging, or running code.

Three tasks, each with disjoint train/test splits and worked traces for the cold-start SFT:
    pairs       "5 4 8 3->11:" -> "5+4=9✗,5+8=13✗,...,8+3=11✓ #### 8+3"  (default: search with self-checks)
    arithmetic  "347+685=" -> "0+7+5=12,1+4+8=13,1+3+6=10 #### 1032"  (the scratchpad demo)
    gsm8k       grade-school word problems from a GSM8K-format JSONL file

    python rewards.py                           # one trace of each task and style, with its reward
    python -m pytest -q tests/test_rewards.py
"""

import hashlib
import itertools
import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

MAX_SCAN_CHARS = 4096   # answers live at the end: searching only the tail bounds the cost of huge outputs
MAX_ANSWER_CHARS = 200  # a longer "final answer" is not well formed
MAX_NUMBER_CHARS = 100  # longer strings are never converted to numbers (no huge int() conversions)
TEST_FRACTION = 0.1     # share of problems held out for evaluation

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
# Tasks: problems, disjoint splits, and cold-start traces

@dataclass
class Problem:
    prompt: str                               # text given to the model
    answer: str                               # reference final answer
    info: dict = field(default_factory=dict)  # task-specific data (numbers, target, solution...)

def split_of(key: str) -> str:
    """'train' or 'test' from a stable hash of key (Python's hash() is salted per process)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return "test" if int.from_bytes(digest[:8], "big") < TEST_FRACTION * 2**64 else "train"

def _check_split(split: str):
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

def _check_style(style: str, styles: tuple):
    if style not in styles:
        raise ValueError(f"unknown style {style!r}; styles are {styles}")

def _draw(split: str, rng: random.Random, make_problem) -> Problem:
    """Draw problems until one belongs to split; rejection keeps the splits disjoint."""
    _check_split(split)
    for _ in range(100_000):
        problem = make_problem(rng)
        if split_of(problem.info.get("split_key", problem.prompt)) == split:
            return problem
    raise RuntimeError(f"no {split} problem found in 100,000 draws: is the problem space tiny?")

class ArithmeticTask:
    """a+b with `digits`-digit operands (4 by default, as train.py's --digits): "2294+8515=" -> "10809".
    Small enough for a char-level model, and its scratch traces show RL what working-before-answering
    looks like."""
    name = "arithmetic"
    styles = ("direct", "scratch")

    def __init__(self, digits: int = 4):
        if not (isinstance(digits, int) and 1 <= digits <= 9):
            raise ValueError(f"digits must be in 1..9, got {digits!r}")
        self.digits = digits

    def _make(self, rng: random.Random) -> Problem:
        lo, hi = 10 ** (self.digits - 1), 10 ** self.digits - 1  # first digit nonzero
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        info = {"a": a, "b": b, "split_key": f"{min(a, b)}+{max(a, b)}"}  # a+b and b+a: the same split
        return Problem(prompt=f"{a}+{b}=", answer=str(a + b), info=info)

    def sample(self, split: str, rng: random.Random) -> Problem:
        return _draw(split, rng, self._make)

    def trace(self, problem: Problem, style: str, rng: random.Random | None = None) -> str:
        _check_style(style, self.styles)
        a, b = problem.info["a"], problem.info["b"]
        if style == "direct":
            return f"#### {a + b}"
        # column addition from the units up: "carry+x+y=sum", the sum's tens digit is the next carry
        columns, carry = [], 0
        for x, y in zip(reversed(str(a)), reversed(str(b))):
            s = carry + int(x) + int(y)
            columns.append(f"{carry}+{x}+{y}={s:02d}")
            carry = s // 10
        # the answer keeps the last carry as its first digit ("0579" for 579), so every answer digit
        # sits at a fixed place in the trace (a lookup a tiny model learns); as a number it is equal
        return ",".join(columns) + f" #### {a + b:0{self.digits + 1}d}"

    def reward(self, completion: str, problem: Problem) -> float:
        return exact_match(completion, problem.answer)

    def is_step_by_step(self, completion: str) -> bool:
        return "=" in completion.rpartition("####")[0]

CHECK_RIGHT, CHECK_WRONG = "✓", "✗"  # the model's own verdict on an attempt (one token each)
_PAIR = re.compile(r"([0-9]{1,3})\+([0-9]{1,3})")  # "8+6"
_CHECKED = re.compile(r"([0-9]{1,3}\+[0-9]{1,3})=([0-9]{1,4})([✓✗])")  # "8+6=14✓"

def pair_sum(expression: str) -> tuple[int, int] | None:
    """(a, b) of "a+b" (two short non-negative integers), None for anything else. No eval."""
    m = _PAIR.fullmatch(expression)
    return None if m is None else (int(m[1]), int(m[2]))

class PairsTask:
    """Countdown-lite, the default task: which two of the given numbers add up to the target?
        "5 4 8 3->11:" -> "5+4=9✗,5+8=13✗,5+3=8✗,4+8=12✗,4+3=7✗,8+3=11✓ #### 8+3"
    Each attempt is a pair, then its sum and the model's own verdict (✓ if the sum is the target);
    after a ✗ it may try again or give up. The reward reads only the final answer (extract_answer's),
    never the checks: what there is to learn is the search, and RL can lengthen it.
    Cold-start traces ("search") come from a weak searcher: pairs in the order given, truthful
    checks, but after its k-th wrong attempt it gives up with probability min(quit_max, quit_step * k)
    and answers that wrong attempt anyway: what RL has to fix. Ablation styles: "unchecked" (the
    attempts without sums and verdicts), "direct" (the right answer alone, no search) and "free" (the
    same searcher, quitting by the same rule, but trying the pairs in a random order of its own)."""
    name = "pairs"
    styles = ("search", "unchecked", "direct", "free")

    def __init__(self, n_numbers: int = 4, max_number: int = 9, quit_step: float = 0.25, quit_max: float = 0.6):
        if not (3 <= n_numbers <= 12 and 2 <= max_number <= 999):
            raise ValueError(f"n_numbers must be in 3..12 and max_number in 2..999, got {n_numbers}, {max_number}")
        if not (0 <= quit_step <= 1 and 0 <= quit_max <= 1):
            raise ValueError("quit_step and quit_max are probabilities in [0, 1]")
        self.n_numbers, self.max_number, self.quit_step, self.quit_max = n_numbers, max_number, quit_step, quit_max

    def _make(self, rng: random.Random) -> Problem:
        for _ in range(10_000):  # one solution exactly, so that finding it takes a search
            numbers = [rng.randint(1, self.max_number) for _ in range(self.n_numbers)]
            i, j = rng.sample(range(self.n_numbers), 2)
            target = numbers[i] + numbers[j]
            if sum(a + b == target for a, b in itertools.combinations(numbers, 2)) == 1:
                break
        else:
            raise ValueError(f"{self.n_numbers} numbers from 1..{self.max_number} almost never have a pair with "
                             "a sum no other pair has: use fewer numbers or a larger max_number")
        # the same numbers in another order are the same problem: they go to the same split
        info = {"numbers": numbers, "target": target, "split_key": " ".join(map(str, sorted(numbers))) + f"->{target}"}
        return Problem(prompt=" ".join(map(str, numbers)) + f"->{target}:", answer=str(target), info=info)

    def sample(self, split: str, rng: random.Random) -> Problem:
        return _draw(split, rng, self._make)

    def trace(self, problem: Problem, style: str, rng: random.Random | None = None) -> str:
        _check_style(style, self.styles)
        rng = rng or random.Random(problem.prompt)
        numbers, target = problem.info["numbers"], problem.info["target"]
        # every pair once, in the order given (1st+2nd, 1st+3rd, ..., 2nd+3rd, ...): a systematic
        # search, so the next attempt is easy to write and the only question is when to stop
        pairs = [f"{a}+{b}" for a, b in itertools.combinations(numbers, 2)]
        if style == "free":  # its own order each time, every pair once: an unstructured search
            pairs = rng.sample(pairs, len(pairs))
        if style == "direct":  # no search: the right answer alone
            return "#### " + next(p for p in pairs if sum(pair_sum(p)) == target)
        attempts = []
        for pair in pairs:
            total = sum(pair_sum(pair))
            verdict = CHECK_RIGHT if total == target else CHECK_WRONG
            attempts.append(pair if style == "unchecked" else f"{pair}={total}{verdict}")
            if total == target:
                break
            if rng.random() < min(self.quit_max, self.quit_step * len(attempts)):
                break  # gives up, and answers an attempt it knows is wrong
        return ",".join(attempts) + f" #### {pair}"

    def longest_trace(self) -> str:
        """The longest cold-start trace there can be: every pair tried, on the largest numbers."""
        m = self.max_number
        return ",".join([f"{m}+{m}={2 * m}{CHECK_WRONG}"] * math.comb(self.n_numbers, 2)) + f" #### {m}+{m}"

    def _solves(self, expression: str, problem: Problem) -> bool:
        """Is "a+b" two of the given numbers (at different places) whose sum is the target?"""
        pair = pair_sum(expression)
        return (pair is not None and sum(pair) == problem.info["target"]
                and not Counter(pair) - Counter(problem.info["numbers"]))

    def reward(self, completion: str, problem: Problem) -> float:
        pred = extract_answer(completion)
        return 1.0 if pred is not None and self._solves(pred, problem) else 0.0

    def is_step_by_step(self, completion: str) -> bool:
        return bool(completion.rpartition("####")[0].strip())

    def self_check_stats(self, completion: str, problem: Problem) -> dict:
        """What a completion did before its answer: attempts (checked or bare), checks (with a sum and a
        verdict), honest checks (a true sum, and ✓ exactly when the attempt solves the problem), ✓ written
        (confident) and ✓ written on an attempt that does not solve it (false_right), repeats (attempts of
        a pair of values more often than the given numbers hold that pair), and whether the answer came
        right after the model's own ✗."""
        head, marker, _ = completion.rpartition("####")
        parts = [p.strip() for p in (head if marker else completion).split(",")]
        attempts = checks = honest = confident = false_right = 0
        tried = Counter()  # (a, b) with a <= b -> times tried
        for part in parts:
            checked = _CHECKED.fullmatch(part)
            pair = pair_sum(part if checked is None else checked[1])
            if pair is None:
                continue
            attempts, tried[tuple(sorted(pair))] = attempts + 1, tried[tuple(sorted(pair))] + 1
            if checked is None:
                continue
            checks, solves, says_right = checks + 1, self._solves(checked[1], problem), checked[3] == CHECK_RIGHT
            honest += int(checked[2]) == sum(pair) and says_right == solves
            confident, false_right = confident + says_right, false_right + (says_right and not solves)
        given = Counter(tuple(sorted(p)) for p in itertools.combinations(problem.info["numbers"], 2))
        return {"attempts": attempts, "checks": checks, "honest": honest, "confident": confident,
                "false_right": false_right, "repeats": sum(max(0, n - given[p]) for p, n in tried.items()),
                "answered": bool(marker),
                "after_fail": bool(marker) and head.replace(",", " ").rstrip().endswith(CHECK_WRONG)}

STEP_REWARD_CAP = 0.5  # a completion's step rewards add up to at most this: less than a right answer's 1

def step_reward(stats: dict, per_honest_check: float = 0.0, per_confident_check: float = 0.0) -> float:
    """A process reward (a variant this method avoids; ablate.py --table=process measures it), from a
    completion's self_check_stats: + per_honest_check for each honest check (a perfect step judge), +
    per_confident_check for each ✓ written, true or not (a step judge that trusts what looks sure), capped
    at STEP_REWARD_CAP so that no amount of checking is worth as much as a right answer. 0 when both are 0."""
    return min(STEP_REWARD_CAP, per_honest_check * stats["honest"] + per_confident_check * stats["confident"])

def load_gsm8k(path) -> list[dict]:
    """Rows {"question", "answer"} of a GSM8K-format JSONL file; the answer ends in "#### N".
    A malformed row raises ValueError naming the file and its 1-based line number."""
    rows = []
    with open(path, "rb") as f:  # bytes, so that bad UTF-8 is also reported with its line
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                raise ValueError(f"{where}: not valid JSON ({e})") from None
            if not (isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("question", "answer"))):
                raise ValueError(f"{where}: expected an object with string fields 'question' and 'answer'")
            ref = row["answer"].rpartition("####")[2].strip()  # the reference: extract_answer must read it back whole
            if "####" not in row["answer"] or extract_answer(f"#### {ref}") != ref or not normalize_answer(ref):
                raise ValueError(f"{where}: answer does not end in '#### <final answer>'")
            rows.append({"question": row["question"], "answer": row["answer"]})
    if not rows:
        raise ValueError(f"{path}: no problems in the file (it is empty, or only blank lines)")
    return rows

class GSM8KTask:
    """Word problems from a GSM8K-format JSONL file; the cold-start trace is the file's own
    worked solution. Rows are split by a hash of the question."""
    name = "gsm8k"
    styles = ("cot",)

    def __init__(self, path):
        rows = load_gsm8k(path)
        if len(rows) < 2:
            raise ValueError(f"{path}: one problem is too few (a train and a test split need at least two)")
        self.splits = {"train": [], "test": []}
        for row in rows:
            answer = normalize_answer(row["answer"].rpartition("####")[2])
            problem = Problem(f"Question: {row['question']}\nAnswer:", answer, {"solution": row["answer"]})
            self.splits[split_of(row["question"])].append(problem)
        # a tiny file can hash entirely into one split: then move one row (the last) across
        for empty, full in (("test", "train"), ("train", "test")):
            if not self.splits[empty]:
                self.splits[empty].append(self.splits[full].pop())

    def sample(self, split: str, rng: random.Random) -> Problem:
        _check_split(split)
        return rng.choice(self.splits[split])

    def trace(self, problem: Problem, style: str, rng: random.Random | None = None) -> str:
        _check_style(style, self.styles)
        return " " + problem.info["solution"]

    def reward(self, completion: str, problem: Problem) -> float:
        return exact_match(completion, problem.answer)

    def is_step_by_step(self, completion: str) -> bool:
        found = _find_last_answer(completion)
        return found is not None and bool(completion[:found[0]].strip())

def get_task(name: str, **kwargs):
    tasks = {"pairs": PairsTask, "arithmetic": ArithmeticTask, "gsm8k": GSM8KTask}
    if name not in tasks:
        raise ValueError(f"unknown task {name!r}; valid names are: {', '.join(tasks)}")
    return tasks[name](**kwargs)

if __name__ == "__main__":
    rng = random.Random(0)
    for task in (PairsTask(), ArithmeticTask(), GSM8KTask("tests/data/gsm8k_tiny.jsonl")):
        problem = task.sample("train", rng)
        for style in task.styles:
            completion = task.trace(problem, style)
            print(f"[{task.name}/{style}] reward={task.reward(completion, problem)}")
            print(problem.prompt + completion + "\n")
