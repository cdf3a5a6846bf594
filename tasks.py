"""
The tasks: problems with disjoint train/test splits, cold-start traces, and the exact reward
(rewards.py) that scores each completion. A task is a plain class; `TASKS` at the bottom turns
--task=NAME and train.py's config into one. Adding a task is a class and one line there
(docs/your_task.md walks through one).

What a task is: the members train.py (with its set-up checks in common.py), report.py, bench.py and
ablate.py use, and nothing else.
  Required
    name: str                                  what --task=NAME calls it
    styles: tuple[str, ...]                    its cold-start trace styles; styles[0] is the default
    sample(split, rng) -> Problem              a problem of "train" or "test"; the two never share a problem
    trace(problem, style, rng) -> str          a worked completion in that style: what SFT imitates
    reward(completion, problem) -> float       exact, from the text alone: 1.0 right, 0.0 otherwise; never raises
  Optional, each turning something on
    is_step_by_step(completion) -> bool        the step_by_step share: does it work before answering?
    self_check_stats(completion, problem) -> dict   the search metrics (attempts, answers after own ✗,
                                               honest checks, repeats, ...) and the step rewards; keys:
                                               attempts, checks, honest, confident, false_right, repeats,
                                               answered, after_fail (and backtracks, where a search backs up)
    longest_trace() -> str                     the longest cold-start trace there can be: train.py checks
                                               before SFT that it fits the block
    splits: {"train": [...], "test": [...]}    a fixed data set: held-out problems come from it whole
A Problem is a prompt, its reference answer, and task-specific info (numbers, target, ...); info's
"split_key", when present, says which problems are the same (e.g. the same numbers reordered).

    pairs       "5 4 8 3->11:" -> "5+4=9✗,5+8=13✗,...,8+3=11✓ #### 8+3"  (default: search with self-checks)
    countdown   "3 5 7->32:" -> "3+5=8*7=56✗,5*7=35-3=32✓ #### 5*7-3"     (reach the target with + - * /)
    walk        "1|a4b1c5d5e4f2:" -> "a1+4=5✓,b5+1=6✓,c6+5=11✗,c6-5=1✓,... #### 1+4+1-5+5-4-2"  (deep: backs up)
    maze        "0:3x 1:27 ... 9:x7|2:" -> "a2+x✗,a2-8✓,b8+5✓,... #### 2-+++-+"  (deep search on look-ups)
    arithmetic  "347+685=" -> "0+7+5=12,1+4+8=13,1+3+6=10 #### 1032"  (the scratchpad demo)
    gsm8k       grade-school word problems from a GSM8K-format JSONL file

    python tasks.py                             # one trace of each task and style, with its reward
    python -m pytest -q tests/test_tasks.py
"""
import hashlib
import itertools
import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field

from rewards import (CHECK_RIGHT, CHECK_WRONG, _find_last_answer, countdown_reward, exact_match, extract_answer,
                     normalize_answer, maze_reward, pair_solves, pair_sum, pairs_reward,
                     walk_reward)

TEST_FRACTION = 0.1  # share of problems held out for evaluation

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

def check_split(split: str):
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

def check_style(style: str, styles: tuple):
    if style not in styles:
        raise ValueError(f"unknown style {style!r}; styles are {styles}")

def target_problem(numbers: list[int], target: int, **info) -> Problem:
    """"5 4 8 3->11:": given numbers and a target (pairs, countdown). The same numbers in another order are
    the same problem: its split_key sorts them, so that every order of them lands in one split."""
    key = " ".join(map(str, sorted(numbers))) + f"->{target}"
    return Problem(prompt=" ".join(map(str, numbers)) + f"->{target}:", answer=str(target),
                   info={"numbers": numbers, "target": target, "split_key": key, **info})

def draw_split(split: str, rng: random.Random, make_problem) -> Problem:
    """Draw problems until one belongs to split; rejection keeps the splits disjoint."""
    check_split(split)
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
        return draw_split(split, rng, self._make)

    def trace(self, problem: Problem, style: str, rng: random.Random | None = None) -> str:
        check_style(style, self.styles)
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

_CHECKED = re.compile(r"([0-9]{1,3}\+[0-9]{1,3})=([0-9]{1,4})([✓✗])")  # "8+6=14✓"

def attempts_and_answer(completion: str) -> tuple[list[str], dict]:
    """A search completion ("a,b,c #### answer") -> its comma-separated attempts (everything when it states no
    answer), and {"answered": whether it does, "after_fail": whether that answer follows the model's own ✗}."""
    head, marker, _ = completion.rpartition("####")
    parts = [p.strip() for p in (head if marker else completion).split(",")]
    return parts, {"answered": bool(marker),
                   "after_fail": bool(marker) and head.replace(",", " ").rstrip().endswith(CHECK_WRONG)}

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
        return target_problem(numbers, target)

    def sample(self, split: str, rng: random.Random) -> Problem:
        return draw_split(split, rng, self._make)

    def trace(self, problem: Problem, style: str, rng: random.Random | None = None) -> str:
        check_style(style, self.styles)
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

    def reward(self, completion: str, problem: Problem) -> float:
        return pairs_reward(completion, problem.info["numbers"], problem.info["target"])

    def is_step_by_step(self, completion: str) -> bool:
        return bool(completion.rpartition("####")[0].strip())

    def self_check_stats(self, completion: str, problem: Problem) -> dict:
        """What a completion did before its answer: attempts (checked or bare), checks (with a sum and a
        verdict), honest checks (a true sum, and ✓ exactly when the attempt solves the problem), ✓ written
        (confident) and ✓ written on an attempt that does not solve it (false_right), repeats (attempts of
        a pair of values more often than the given numbers hold that pair), and whether the answer came
        right after the model's own ✗."""
        parts, answer = attempts_and_answer(completion)
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
            solves = pair_solves(checked[1], problem.info["numbers"], problem.info["target"])
            checks, says_right = checks + 1, checked[3] == CHECK_RIGHT
            honest += int(checked[2]) == sum(pair) and says_right == solves
            confident, false_right = confident + says_right, false_right + (says_right and not solves)
        given = Counter(tuple(sorted(p)) for p in itertools.combinations(problem.info["numbers"], 2))
        return {"attempts": attempts, "checks": checks, "honest": honest, "confident": confident,
                "false_right": false_right, "repeats": sum(max(0, n - given[p]) for p, n in tried.items()), **answer}

_CHAIN = re.compile(r"([0-9]{1,6})((?:[-+*/][0-9]{1,6}=[0-9]{1,7})+)([✓✗])")  # "3+5=8*7=56✗"
_CHAIN_STEP = re.compile(r"([-+*/])([0-9]{1,6})=([0-9]{1,7})")                  # "*7=56"
_OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
               "/": lambda a, b: a // b if b and a % b == 0 else None}  # exact division only

def chain_text(values: list[int], steps: list[tuple[str, int]]) -> str:
    """A chain as the search writes it, each intermediate value after its step: "3+5=8*7=56" (no verdict)."""
    return str(values[0]) + "".join(f"{op}{number}={value}" for (op, number), value in zip(steps, values[1:]))

def chain_expression(first: int, steps: list[tuple[str, int]]) -> str:
    """A chain applied left to right, as an expression with the parentheses it needs: 3, [+5, *7] -> "(3+5)*7"."""
    expression, last_op = str(first), None
    for op, number in steps:
        if op in "*/" and last_op in ("+", "-"):
            expression = f"({expression})"
        expression, last_op = f"{expression}{op}{number}", op
    return expression

class CountdownTask:
    """Countdown (TinyZero, Stream of Search): reach the target from the given numbers with + - * / and
    parentheses, each number used at most once.
        "3 5 7->32:" -> "3+5=8*7=56✗,5*7=35-3=32✓ #### 5*7-3"
    An attempt is a chain: take the numbers in some order, combine them left to right, and write each
    intermediate value (a check the model computes: every value stays a whole number in 1..max_value), then
    ✓ if the last one is the target, ✗ if not. The reward (rewards.countdown_reward) reads only the final
    answer, an expression in any format extract_answer knows (#### or TinyZero's <answer>...</answer>).
    Cold start ("search"): the pairs task's weak searcher: it tries up to MAX_WRONG wrong chains before
    the right one, truthful checks, and after its k-th ✗ gives up with probability min(quit_max, quit_step*k),
    answering that wrong chain. "direct": the right expression alone."""
    name = "countdown"
    styles = ("search", "direct")
    MAX_WRONG = 5  # wrong chains a cold-start search tries before the right one, at most

    def __init__(self, n_numbers: int = 4, max_number: int = 9, quit_step: float = 0.25, quit_max: float = 0.6,
                 max_value: int = 999):
        if not (2 <= n_numbers <= 6 and 2 <= max_number <= 99 and max_number < max_value <= 99_999):
            raise ValueError(f"countdown needs n_numbers in 2..6, max_number in 2..99 and max_value in "
                             f"max_number+1..99999, got {n_numbers}, {max_number}, {max_value}")
        if not (0 <= quit_step <= 1 and 0 <= quit_max <= 1):
            raise ValueError("quit_step and quit_max are probabilities in [0, 1]")
        self.n_numbers, self.max_number, self.quit_step, self.quit_max = n_numbers, max_number, quit_step, quit_max
        self.max_value = max_value

    def _chain(self, numbers: list[int], rng: random.Random) -> tuple[list[int], list[tuple[str, int]]] | None:
        """A random chain over all the numbers: [values after each step], [(op, number)]; None if some value
        leaves 1..max_value (a dead end the searcher does not write)."""
        order = rng.sample(numbers, len(numbers))
        values, steps = [order[0]], []
        for number in order[1:]:
            op = rng.choice("+-*/")
            value = _OPERATIONS[op](values[-1], number)
            if value is None or not 1 <= value <= self.max_value:
                return None
            values.append(value)
            steps.append((op, number))
        return values, steps

    def _make(self, rng: random.Random) -> Problem:
        for _ in range(10_000):
            numbers = [rng.randint(1, self.max_number) for _ in range(self.n_numbers)]
            chain = self._chain(numbers, rng)
            if chain is not None and chain[0][-1] not in numbers:  # a target that takes more than copying a number
                break
        else:
            raise ValueError("no countdown problem found in 10,000 draws")
        return target_problem(numbers, chain[0][-1], solution=chain)

    def sample(self, split: str, rng: random.Random) -> Problem:
        return draw_split(split, rng, self._make)

    def trace(self, problem: Problem, style: str, rng: random.Random | None = None) -> str:
        check_style(style, self.styles)
        rng = rng or random.Random(problem.prompt)
        numbers, target = problem.info["numbers"], problem.info["target"]
        values, steps = problem.info["solution"]
        answer = chain_expression(values[0], steps)
        if style == "direct":
            return f"#### {answer}"
        attempts, wrong = [], rng.randint(0, self.MAX_WRONG)  # chains tried before the right one
        for _ in range(1000):  # (a few numbers may have fewer wrong chains than that)
            if len(attempts) == wrong:
                break
            chain = self._chain(numbers, rng)
            if chain is None or chain[0][-1] == target or chain_text(*chain) + CHECK_WRONG in attempts:
                continue  # a dead end is not written, nor the same chain twice; a right chain comes last
            attempts.append(chain_text(*chain) + CHECK_WRONG)
            if rng.random() < min(self.quit_max, self.quit_step * len(attempts)):
                return ",".join(attempts) + f" #### {chain_expression(chain[0][0], chain[1])}"  # gives up on it
        return ",".join(attempts + [chain_text(values, steps) + CHECK_RIGHT]) + f" #### {answer}"

    def longest_trace(self) -> str:
        """As long as a cold-start trace can be: MAX_WRONG + 1 chains of the widest numbers and values."""
        m, v = "9" * len(str(self.max_number)), "9" * len(str(self.max_value))
        chain = m + f"*{m}={v}" * (self.n_numbers - 1) + CHECK_WRONG
        return ",".join([chain] * (self.MAX_WRONG + 1)) + " #### " + "(" * (self.n_numbers - 2) + m + f"*{m})" * (
            self.n_numbers - 2) + f"*{m}"

    def reward(self, completion: str, problem: Problem) -> float:
        return countdown_reward(completion, problem.info["numbers"], problem.info["target"])

    def is_step_by_step(self, completion: str) -> bool:
        return bool(completion.rpartition("####")[0].strip())

    def self_check_stats(self, completion: str, problem: Problem) -> dict:
        """As PairsTask's: attempts (chains), checks (each chain ends in a verdict), honest ones (every value
        true, the given numbers used at most once, ✓ exactly when the last value is the target), ✓ written,
        ✓ on a chain that misses the target, repeats (the same chain again), an answer after the model's ✗."""
        parts, answer = attempts_and_answer(completion)
        numbers, target = problem.info["numbers"], problem.info["target"]
        attempts = honest = confident = false_right = repeats = 0
        seen = set()
        for part in parts:
            chain = _CHAIN.fullmatch(part)
            if chain is None:
                continue
            value, used, true = int(chain[1]), [int(chain[1])], True
            for op, number, written in _CHAIN_STEP.findall(chain[2]):
                value = _OPERATIONS[op](value, int(number)) if value is not None else None
                used.append(int(number))
                true = true and value == int(written)
            fair = not Counter(used) - Counter(numbers)  # no number used more often than given
            says_right, hits = chain[3] == CHECK_RIGHT, true and value == target and fair
            attempts, repeats, seen = attempts + 1, repeats + (part in seen), seen | {part}
            honest += true and fair and says_right == hits
            confident, false_right = confident + says_right, false_right + (says_right and not hits)
        return {"attempts": attempts, "checks": attempts, "honest": honest, "confident": confident,
                "false_right": false_right, "repeats": repeats, **answer}

LETTERS = "abcdefghijkl"  # the moves' names, in the prompt (walk) and in every step

def depth_first(start: int, n_moves: int, move) -> tuple[list[tuple], bool]:
    """Depth-first search for n_moves moves from start, + before -. move(value, i, sign) -> (the value the
    i-th move reaches, or None where there is no such move; whether it passes its check). -> the steps tried,
    (i, from, sign, to, passes) each, and whether a way was found (then its last passing step per i is it)."""
    steps = []
    def go_on(value, i):
        if i == n_moves:
            return True
        for sign in "+-":
            to, passes = move(value, i, sign)
            steps.append((i, value, sign, to, passes))
            if passes and go_on(to, i + 1):
                return True
        return False
    return steps, go_on(start, 0)

def deep_search(start: int, n_moves: int, move, max_steps: int, min_decisions: int) -> tuple[list, list] | None:
    """(steps, the way found) when depth_first finds a way in at most max_steps steps, never backs up more than
    one move at once, and the way has at least min_decisions moves (before the last) where both moves pass:
    a choice whose wrong side is found out only later. Else None."""
    steps, found = depth_first(start, n_moves, move)
    if not found or len(steps) > max_steps or any(b[0] < a[0] - 1 for a, b in zip(steps, steps[1:])):
        return None
    way = list({step[0]: step for step in steps if step[4]}.values())  # the last passing step of each move
    decisions = sum(move(value, i, "+")[1] and move(value, i, "-")[1] for i, value, _, _, _ in way[:-1])
    return (steps, way) if decisions >= min_decisions else None

def deep_search_stats(completion: str, step_pattern, move_pattern, n_moves: int, truth) -> dict:
    """self_check_stats of a walk or maze completion: steps written (attempts), checks, honest checks (truth(step
    match) -> (its check is honest, it passes)), ✓ written and ✓ on a failing step, repeats (the same move from
    the same value twice), backtracks (a step at an earlier move than the step before it), and whether the
    answer came right after the model's own ✗."""
    parts, answer = attempts_and_answer(completion)
    attempts = checks = honest = confident = false_right = backtracks = 0
    tried, previous = Counter(), None
    for part in parts:
        checked = step_pattern.fullmatch(part)
        move = checked or move_pattern.fullmatch(part)
        i = LETTERS.index(move[1]) if move else None
        if i is None or i >= n_moves:  # not a step, or a letter past the last move
            continue
        attempts, backtracks, previous = attempts + 1, backtracks + (previous is not None and i < previous), i
        if checked is None:
            continue
        is_honest, passes = truth(checked)
        says_right = checked.group(checked.lastindex) == CHECK_RIGHT
        tried[(i, checked[2], checked[3])] += 1
        checks, honest = checks + 1, honest + is_honest
        confident, false_right = confident + says_right, false_right + (says_right and not passes)
    return {"attempts": attempts, "checks": checks, "honest": honest, "confident": confident,
            "false_right": false_right, "repeats": sum(n - 1 for n in tried.values()), "backtracks": backtracks,
            **answer}

def deep_search_trace(problem: Problem, style: str, step_text, move_text=lambda i, sign: f"{LETTERS[i]}{sign}") -> str:
    """A walk or maze trace: "search" (every step tried), "unchecked" (the same moves alone), "path" (the way's
    steps alone), "direct" (the answer alone)."""
    if style == "direct":
        return "#### " + problem.answer
    steps = problem.info["way" if style == "path" else "steps"]
    if style == "unchecked":
        text = [move_text(i, sign) for i, _, sign, _, _ in steps]
    else:
        text = [step_text(i, value, sign, to) + (CHECK_RIGHT if passes else CHECK_WRONG)
                for i, value, sign, to, passes in steps]
    return ",".join(text) + " #### " + problem.answer

_WALK_STEP = re.compile(r"([a-l])([0-9])([+-])([0-9])=(-?[0-9]{1,2})([✓✗])")  # "c6-5=1✓": letter, from, move, to
_WALK_MOVE = re.compile(r"([a-l])([+-])([0-9])")                           # "c-5": the move alone

class WalkTask:
    """A deep search on arithmetic: from the start value, add or subtract each given digit in turn so that the
    running value never leaves 0..9 and ends at 0.
        "1|a4b1c5d5e4f2:" -> "a1+4=5✓,b5+1=6✓,c6+5=11✗,c6-5=1✓,d1+5=6✓,e6+4=10✗,e6-4=2✓,f2+2=4✗,f2-2=0✓
                              #### 1+4+1-5+5-4-2"
    A step names its digit's letter, the value it starts from, the move and the value it reaches, then its
    check: ✗ when the value leaves 0..9 (or the last one is not 0), else ✓. Every check is local (one
    single-digit sum), but a move can pass its check and still be wrong: both moves of the next digit then
    fail, and the search backs up one letter and takes the other move there ("d4+1=5✓,e5+6=11✗,e5-6=-1✗,d4-1=3✓").
    Problems are drawn as deep_search says (at least min_decisions real choices, backing up one letter at a
    time, at most 2n steps in all). Styles: "search" (the whole search, every check), "unchecked" (the same
    moves, without values and checks), "direct" (the answer alone), "path" (the way's steps: working, no search).
    What it shows (docs/results.md): the default model computes these running values in its head, so the
    direct answer is as good as the search: deep, but not deep enough for it."""
    name = "walk"
    styles = ("search", "unchecked", "direct", "path")

    def __init__(self, n_digits: int = 6, max_digit: int = 5, min_decisions: int = 3):
        if not (3 <= n_digits <= len(LETTERS) and 2 <= max_digit <= 9 and 0 <= min_decisions < n_digits):
            raise ValueError(f"n_digits must be in 3..{len(LETTERS)}, max_digit in 2..9 and min_decisions in "
                             f"0..n_digits-1, got {n_digits}, {max_digit}, {min_decisions}")
        self.n_digits, self.max_digit, self.min_decisions = n_digits, max_digit, min_decisions
        self.max_steps = 2 * n_digits

    @staticmethod
    def mover(digits: list[int]):
        """The walk's move(value, i, sign) for depth_first: value ± the i-th digit, in 0..9 (and 0 at the end)."""
        def move(value, i, sign):
            to = value + digits[i] if sign == "+" else value - digits[i]
            return to, 0 <= to <= 9 and (i < len(digits) - 1 or to == 0)
        return move

    def _make(self, rng: random.Random) -> Problem:
        for _ in range(100_000):
            start, digits = rng.randint(0, 9), [rng.randint(1, self.max_digit) for _ in range(self.n_digits)]
            found = deep_search(start, self.n_digits, self.mover(digits), self.max_steps, self.min_decisions)
            if found:
                break
        else:
            raise ValueError(f"{self.n_digits} digits from 1..{self.max_digit} almost never make a walk with "
                             f"{self.min_decisions} decisions: use more digits or a smaller max_digit")
        steps, way = found
        prompt = f"{start}|" + "".join(f"{LETTERS[i]}{d}" for i, d in enumerate(digits)) + ":"
        answer = str(start) + "".join(f"{sign}{digits[i]}" for i, _, sign, _, _ in way)
        info = {"start": start, "digits": digits, "steps": steps, "way": way}
        return Problem(prompt=prompt, answer=answer, info=info)

    def sample(self, split: str, rng: random.Random) -> Problem:
        return draw_split(split, rng, self._make)

    def trace(self, problem: Problem, style: str, rng: random.Random | None = None) -> str:
        check_style(style, self.styles)
        digits = problem.info["digits"]
        return deep_search_trace(problem, style,
                                 lambda i, value, sign, to: f"{LETTERS[i]}{value}{sign}{digits[i]}={to}",
                                 lambda i, sign: f"{LETTERS[i]}{sign}{digits[i]}")

    def longest_trace(self) -> str:
        """The longest cold-start trace there can be: max_steps steps of the longest kind, the longest answer."""
        m = self.max_digit
        return ",".join([f"a9+{m}={9 + m}{CHECK_WRONG}"] * self.max_steps) + " #### 9" + f"+{m}" * self.n_digits

    def reward(self, completion: str, problem: Problem) -> float:
        return walk_reward(completion, problem.info["start"], problem.info["digits"])

    def is_step_by_step(self, completion: str) -> bool:
        return bool(completion.rpartition("####")[0].strip())

    def self_check_stats(self, completion: str, problem: Problem) -> dict:
        """deep_search_stats; a check is honest when the step's digit is its letter's, its value is the true
        sum, and it says ✓ exactly when that value passes."""
        digits, move = problem.info["digits"], self.mover(problem.info["digits"])
        def truth(step):
            i, digit = LETTERS.index(step[1]), int(step[4])
            to, passes = move(int(step[2]), i, step[3])
            passes = passes and digit == digits[i]
            return digit == digits[i] and int(step[5]) == to and (step[6] == CHECK_RIGHT) == passes, passes
        return deep_search_stats(completion, _WALK_STEP, _WALK_MOVE, len(digits), truth)

_MAZE_STEP = re.compile(r"([a-l])([0-9])([+-])([0-9x])([✓✗])")  # "c6-1✓": letter, room, door, room reached
_MAZE_MOVE = re.compile(r"([a-l])([+-])")                        # "c-": the door alone

class MazeTask:
    """A deep search on lookups: ten rooms 0..9, each with a + door and a - door to another room (or none, x);
    go through exactly n_moves doors from the start room and end in room 0.
        "0:3x 1:27 2:x8 3:24 4:02 5:61 6:80 7:69 8:54 9:x7|2:"   (room 1's + door leads to 2, its - door to 7)
        -> "a2+x✗,a2-8✓,b8+5✓,c5+6✓,d6+8✓,e8+5✓,f5+6✗,f5-1✗,e8-4✓,f4+0✓ #### 2-+++-+"
    A step names its move's letter, the room it is in, the door, the room it reaches (x: none) and its check:
    ✗ when there is no such door (or the last room is not 0). Each step is one look-up at a fixed place in the
    prompt; a direct answer has to chain n_moves of them in its head. Problems are drawn as deep_search says.
    Styles as WalkTask's."""
    name = "maze"
    styles = ("search", "unchecked", "direct", "path")

    def __init__(self, n_moves: int = 6, no_door: float = 0.3, min_decisions: int = 3):
        if not (3 <= n_moves <= len(LETTERS) and 0 <= no_door < 1 and 0 <= min_decisions < n_moves):
            raise ValueError(f"n_moves must be in 3..{len(LETTERS)}, no_door in [0, 1) and min_decisions in "
                             f"0..n_moves-1, got {n_moves}, {no_door}, {min_decisions}")
        self.n_moves, self.no_door, self.min_decisions = n_moves, no_door, min_decisions
        self.max_steps = 2 * n_moves + 2

    @staticmethod
    def mover(doors: list[list], n_moves: int):
        """The maze's move(room, i, sign) for depth_first: through the room's + or - door, if it has one."""
        def move(room, i, sign):
            to = doors[room][0 if sign == "+" else 1]
            return to, to is not None and (i < n_moves - 1 or to == 0)
        return move

    def _make(self, rng: random.Random) -> Problem:
        for _ in range(100_000):
            doors = [[None if rng.random() < self.no_door else rng.choice([r for r in range(10) if r != room])
                      for _ in "+-"] for room in range(10)]
            start = rng.randint(1, 9)
            move = self.mover(doors, self.n_moves)
            found = deep_search(start, self.n_moves, move, self.max_steps, self.min_decisions)
            if found:
                break
        else:
            raise ValueError(f"mazes of {self.n_moves} moves almost never have {self.min_decisions} decisions")
        steps, way = found
        prompt = " ".join(f"{room}:" + "".join("x" if to is None else str(to) for to in doors[room])
                          for room in range(10)) + f"|{start}:"
        return Problem(prompt=prompt, answer=str(start) + "".join(sign for _, _, sign, _, _ in way),
                       info={"start": start, "doors": doors, "steps": steps, "way": way})

    def sample(self, split: str, rng: random.Random) -> Problem:
        return draw_split(split, rng, self._make)

    def trace(self, problem: Problem, style: str, rng: random.Random | None = None) -> str:
        check_style(style, self.styles)
        return deep_search_trace(problem, style,
                                 lambda i, room, sign, to: f"{LETTERS[i]}{room}{sign}{'x' if to is None else to}")

    def longest_trace(self) -> str:
        """The longest cold-start trace there can be: max_steps steps, the longest answer."""
        return ",".join([f"a9+x{CHECK_WRONG}"] * self.max_steps) + " #### 9" + "+" * self.n_moves

    def reward(self, completion: str, problem: Problem) -> float:
        return maze_reward(completion, problem.info["start"], problem.info["doors"], self.n_moves)

    def is_step_by_step(self, completion: str) -> bool:
        return bool(completion.rpartition("####")[0].strip())

    def self_check_stats(self, completion: str, problem: Problem) -> dict:
        """deep_search_stats; a check is honest when the room reached is the door's and it says ✓ exactly
        when that door passes."""
        move = self.mover(problem.info["doors"], self.n_moves)
        def truth(step):
            to, passes = move(int(step[2]), LETTERS.index(step[1]), step[3])
            return step[4] == ("x" if to is None else str(to)) and (step[5] == CHECK_RIGHT) == passes, passes
        return deep_search_stats(completion, _MAZE_STEP, _MAZE_MOVE, self.n_moves, truth)

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
        check_split(split)
        return rng.choice(self.splits[split])

    def trace(self, problem: Problem, style: str, rng: random.Random | None = None) -> str:
        check_style(style, self.styles)
        return " " + problem.info["solution"]

    def reward(self, completion: str, problem: Problem) -> float:
        return exact_match(completion, problem.answer)

    def is_step_by_step(self, completion: str) -> bool:
        found = _find_last_answer(completion)
        return found is not None and bool(completion[:found[0]].strip())

# --task=NAME -> its task, made from train.py's config: a new task is a class above and one line here
TASKS = {
    "pairs": lambda cfg: PairsTask(cfg.numbers, cfg.max_number, quit_max=cfg.quit_max),
    "countdown": lambda cfg: CountdownTask(cfg.numbers, cfg.max_number, quit_max=cfg.quit_max),
    "walk": lambda cfg: WalkTask(cfg.numbers, cfg.max_number),
    "maze": lambda cfg: MazeTask(cfg.numbers),
    "arithmetic": lambda cfg: ArithmeticTask(cfg.digits),
    "gsm8k": lambda cfg: GSM8KTask(cfg.data_path),
}

if __name__ == "__main__":
    rng = random.Random(0)
    for task in (PairsTask(), CountdownTask(n_numbers=3), WalkTask(), MazeTask(), ArithmeticTask(),
                 GSM8KTask("tests/data/gsm8k_tiny.jsonl")):
        problem = task.sample("train", rng)
        for style in task.styles:
            completion = task.trace(problem, style)
            print(f"[{task.name}/{style}] reward={task.reward(completion, problem)}")
            print(problem.prompt + completion + "\n")
