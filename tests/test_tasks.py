"""
Every task held to the interface tasks.py writes down (disjoint splits, traces that score as their
style promises, a reward that survives hostile text, self-check counts on hand-made completions),
Countdown's own reward and traces, and the worked example of docs/your_task.md built from its text.

    python -m pytest -q tests/test_tasks.py
"""
import builtins
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import common
import rewards
import tasks
import train
from rewards import countdown_reward, evaluate_expression
from tasks import CountdownTask, Problem

ROOT = Path(__file__).resolve().parent.parent
GSM8K_TINY = ROOT / "tests" / "data" / "gsm8k_tiny.jsonl"
DOC = ROOT / "docs" / "your_task.md"


def doc_task():
    """LargestTask from docs/your_task.md: its first python block run in tasks.py's namespace (where the doc
    says it goes), and the registration line, its second block -> (the class, TASKS' new entry)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    namespace = dict(vars(tasks))
    exec(blocks[0], namespace)  # our own doc's code, never model output
    name, make = re.fullmatch(r'\s*"(\w+)": (lambda cfg: .*),\s*', blocks[1]).groups()
    return namespace["LargestTask"], name, eval(make, namespace)


def every_task():
    largest = doc_task()[0]
    return [tasks.PairsTask(), tasks.PairsTask(n_numbers=6, max_number=20), CountdownTask(n_numbers=3),
            CountdownTask(), tasks.ArithmeticTask(digits=2), tasks.ArithmeticTask(), tasks.GSM8KTask(GSM8K_TINY),
            tasks.WalkTask(), tasks.WalkTask(n_digits=8, max_digit=4, min_decisions=4), tasks.MazeTask(),
            tasks.MazeTask(n_moves=4, min_decisions=2), largest(), largest(n_numbers=6, max_number=99)]


TASKS = every_task()
IDS = [f"{t.name}-{i}" for i, t in enumerate(TASKS)]


# -----------------------------------------------------------------------------
# the interface, for every task

@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_the_two_splits_never_share_a_problem(task):
    rng = random.Random(0)
    same = lambda p: p.info.get("split_key", p.prompt)  # the task's own notion of "the same problem"
    train_keys = {same(task.sample("train", rng)) for _ in range(2_000)}
    test_keys = {same(task.sample("test", rng)) for _ in range(300)}
    assert test_keys and not train_keys & test_keys


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_every_cold_start_style_scores_as_it_promises(task):
    # a trace with checks is right exactly when it does not answer after its own ✗; an "unchecked" one is the
    # search without its checks (right as often); every other style answers right, straight or after working
    rng = random.Random(1)
    for _ in range(200):
        problem = task.sample("train", rng)
        for style in task.styles:
            trace = task.trace(problem, style, random.Random(7))
            reward = task.reward(trace, problem)
            if style == "unchecked":
                assert reward == task.reward(task.trace(problem, "search", random.Random(7)), problem)
            elif hasattr(task, "self_check_stats") and task.self_check_stats(trace, problem)["checks"]:
                assert reward == (not task.self_check_stats(trace, problem)["after_fail"]), (style, trace)
            else:
                assert reward == 1.0, (style, trace)


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_every_style_has_a_trace_and_unknown_ones_are_refused(task):
    problem = task.sample("train", random.Random(2))
    assert all(isinstance(task.trace(problem, style, random.Random(0)), str) for style in task.styles)
    with pytest.raises(ValueError, match="unknown style"):
        task.trace(problem, "telepathy", random.Random(0))


def hostile_strings(n, seed=0):
    """n strings no task may score as right: garbage, code, huge numbers, deep nesting, answer markers with
    nothing (or nonsense) after them, expressions no one can evaluate."""
    rng = random.Random(seed)
    pieces = ["####", " ", "\n", "\\boxed{", "{", "}", "<answer>", "</answer>", "The answer is ", "(", ")", "+", "*",
              "**", "/", "$", "1e400", "__import__('os')", "9" * 400, "x", "✓", "✗", ",", "="]
    makers = [
        lambda: "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 60))),
        lambda: "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))) + " #### x",
        lambda: rng.choice(pieces) * rng.randint(1, 5_000),
        lambda: "<answer>" + "(" * (d := rng.randint(10, 5_000)) + "1" + ")" * d + "</answer>",
        lambda: f"<answer>{rng.choice(['9**9**9**9', '9^9^9^9', '1/0', '1/(1-1)', 'exec(input())'])}</answer>",
        lambda: "#### " + "9" * rng.randint(300, 100_000),
        lambda: "".join(rng.choices("0123456789+-*/()#<>answer ", k=100_000)) + " ####",
        lambda: "#### " + "*".join(["99"] * rng.randint(2, 60)) + " ####",
    ]
    return [makers[i % len(makers)]() for i in range(n)]


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_the_reward_never_raises_and_is_0_on_2000_hostile_strings(task):
    problem = task.sample("test", random.Random(3))
    for text in hostile_strings(2_000):
        assert task.reward(text, problem) == 0.0, text[:80]


@pytest.mark.parametrize("task", [t for t in TASKS if hasattr(t, "self_check_stats")], ids=lambda t: t.name)
def test_self_check_stats_of_the_tasks_own_traces_count_every_check_as_honest(task):
    rng = random.Random(4)
    for _ in range(200):
        problem = task.sample("train", rng)
        trace = task.trace(problem, task.styles[0], rng)
        stats = task.self_check_stats(trace, problem)
        assert stats["honest"] == stats["checks"] == stats["attempts"] >= 1 and stats["repeats"] == 0, trace
        assert stats["false_right"] == 0 and stats["answered"]


def test_the_doc_task_registers_with_its_one_line():
    _, name, make = doc_task()
    cfg = SimpleNamespace(numbers=6, max_number=20)
    assert name == "largest" and make(cfg).name == "largest" and make(cfg).n_numbers == 6


def test_the_doc_task_trains_end_to_end_with_train_py(tmp_path, monkeypatch):
    _, name, make = doc_task()
    monkeypatch.setitem(tasks.TASKS, name, make)
    out = tmp_path / "out"
    summary = train.main(["--task=largest", "--numbers=3", "--device=cpu", "--n_layer=1", "--n_head=2",
                          "--n_embd=16", "--block_size=48", "--sft_steps=4", "--sft_batch_size=8", "--rl_steps=2",
                          "--prompts_per_step=2", "--samples_per_prompt=4", "--max_new_tokens=24",
                          "--eval_problems=4", "--pass_k=2", f"--out_dir={out}"])
    assert summary["config"]["task"] == "largest" and 0 <= summary["after"]["accuracy"] <= 1
    assert (out / "ckpt.pt").exists()


# -----------------------------------------------------------------------------
# Countdown: the reward (our own parser, never eval) and the traces

NUMBERS, TARGET = [3, 5, 7, 2], 54  # (3+5)*7-2


@pytest.mark.parametrize("completion, reward", [
    ("#### (3+5)*7-2", 1.0),
    ("<answer>(3+5)*7-2</answer>", 1.0),            # TinyZero's format
    ("<answer> ( 3 + 5 ) * 7 - 2 </answer>", 1.0),  # spaces are fine
    ("#### 7*(5+3)-2", 1.0),                        # any order of the numbers
    ("#### 2*27", 0.0),                             # 27 is not given
    ("#### (3+3)*9", 0.0),                          # a number used twice (and 9 not given)
    ("#### (5+5)*5+2+2", 0.0),                      # 5 used three times
    ("#### 7*7+5", 0.0),                            # 7 used twice
    ("#### (3+5)*7-2/0", 0.0),                      # division by zero
    ("#### ((3+5)*7-2", 0.0),                       # unbalanced parentheses
    ("#### (3+5))*7-2", 0.0),
    ("#### (3+5)*7-", 0.0),                         # a dangling operator
    ("#### -(3+5)*7-2", 0.0),                       # no unary minus
    ("#### (3+5)*7-2.0", 0.0),                      # whole numbers only
    ("#### __import__('os').system('true')", 0.0),  # code is not an expression
    ("#### 54", 0.0),                               # the target alone uses no number
    ("#### (3+5)*7-2 ####", 0.0),                   # the last answer is empty: no answer
    ("(3+5)*7-2", 0.0),                             # no final answer stated
    ("#### 7*2*3+5-3", 0.0),                        # 3 used twice
    ("#### 7/7", 0.0),                              # 7 used twice, and 1 is not the target
    ("#### 3*(5+7)/2*3", 0.0),
])
def test_countdown_reward_case_table(completion, reward):
    assert countdown_reward(completion, NUMBERS, TARGET) == reward


def test_countdown_reward_is_exact_over_fractions():
    assert countdown_reward("#### 7/2*4", [7, 2, 4], 14) == 1.0  # 3.5 * 4, exactly
    assert countdown_reward("#### 1/3+1/3", [1, 3, 1, 3], 1) == 0.0  # 2/3, not rounded to 1


def test_countdown_reward_never_runs_model_output(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("model output was run")
    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.setattr(builtins, "compile", refuse)
    assert countdown_reward("#### (3+5)*7-2", NUMBERS, TARGET) == 1.0
    assert countdown_reward("#### __import__('os').system('touch /tmp/pwned')", NUMBERS, TARGET) == 0.0


@pytest.mark.parametrize("text", ["9**9**9**9", "9^9^9^9", "(" * 5_000 + "1" + ")" * 5_000, "99*" * 60 + "99",
                                  "(((((((((((((((((((1)))))))))))))))))))"])
def test_expressions_beyond_the_bounds_are_not_answers(text):
    assert evaluate_expression(text) is None


@pytest.mark.parametrize("completion", [
    "<answer>9**9**9**9</answer>", "<answer>" + "(" * 5_000 + "1" + ")" * 5_000 + "</answer>",
    "#### " + "(" * 90 + "1" + ")" * 90, "#### " + "*".join(["999999"] * 28),
    "".join(random.Random(0).choices("0123456789+-*/() #<>answer", k=100_000)),
    "#### " + "9" * 100_000, "<answer>" * 12_500])
def test_countdown_reward_takes_under_10_ms_on_hostile_input(completion):
    times = []
    for _ in range(3):
        start = time.perf_counter()
        assert countdown_reward(completion, NUMBERS, TARGET) == 0.0
        times.append(time.perf_counter() - start)
    assert sorted(times)[1] < 0.010  # the median of three (typically well under 1 ms)


def test_countdown_problems_are_reachable_with_every_number_once():
    task, rng = CountdownTask(), random.Random(5)
    for _ in range(300):
        problem = task.sample("train", rng)
        numbers, target = problem.info["numbers"], problem.info["target"]
        assert problem.prompt == " ".join(map(str, numbers)) + f"->{target}:" and target not in numbers
        assert task.reward(task.trace(problem, "direct"), problem) == 1.0
        assert all(1 <= n <= 9 for n in numbers) and len(numbers) == 4


def test_countdown_search_traces_check_every_intermediate_value():
    task = CountdownTask(n_numbers=3)
    problem = Problem("3 5 7->32:", "32", {"numbers": [3, 5, 7], "target": 32,
                                             "solution": ([5, 35, 32], [("*", 7), ("-", 3)])})
    trace = task.trace(problem, "search", random.Random(0))
    for attempt in trace.rpartition(" #### ")[0].split(","):
        first, *steps = re.split(r"(?=[-+*/])", attempt[:-1])
        value = int(first)
        for step in steps:
            op, number, written = re.fullmatch(r"([-+*/])(\d+)=(\d+)", step).groups()
            value = {"+": value + int(number), "-": value - int(number), "*": value * int(number),
                     "/": value // int(number)}[op]
            assert value == int(written), attempt
        assert attempt[-1] == ("✓" if value == 32 else "✗")
    assert trace.endswith("5*7=35-3=32✓ #### 5*7-3") or "✓" not in trace


def test_countdown_cold_start_quits_like_the_pairs_one():
    task, rng = CountdownTask(n_numbers=3), random.Random(6)
    stats = [task.self_check_stats(task.trace(p, "search", rng), p)
             for p in (task.sample("train", rng) for _ in range(1_000))]
    after_fail = sum(s["after_fail"] for s in stats) / len(stats)
    assert 0.2 < after_fail < 0.8 and max(s["attempts"] for s in stats) == CountdownTask.MAX_WRONG + 1


def test_countdown_self_check_stats_on_hand_made_completions():
    task = CountdownTask(n_numbers=3)
    problem = Problem("3 5 7->32:", "32", {"numbers": [3, 5, 7], "target": 32})
    stats = task.self_check_stats
    assert stats("3+5=8*7=56✗,5*7=35-3=32✓ #### 5*7-3", problem) == {
        "attempts": 2, "checks": 2, "honest": 2, "confident": 1, "false_right": 0, "repeats": 0, "answered": True,
        "after_fail": False}
    # a wrong value, a lying ✓, a number used twice, and the same chain again; the answer after a ✗
    lies = "3+5=9*7=63✗,3+5=8*7=56✓,5*5=25+7=32✓,3+5=9*7=63✗ #### 3+5"
    assert stats(lies, problem) == {"attempts": 4, "checks": 4, "honest": 0, "confident": 2, "false_right": 2,
                                    "repeats": 1, "answered": True, "after_fail": True}
    assert stats("#### 5*7-3", problem)["attempts"] == 0 and stats("garbage ✓✗ ,,", problem)["attempts"] == 0


def test_countdown_longest_trace_is_at_least_as_long_as_every_trace():
    for n in (2, 3, 4):
        task, rng = CountdownTask(n_numbers=n), random.Random(n)
        longest = len(task.longest_trace())
        assert all(len(task.trace(p, "search", rng)) <= longest
                   for p in (task.sample("train", rng) for _ in range(500)))


@pytest.mark.parametrize("kwargs", [{"n_numbers": 1}, {"n_numbers": 7}, {"max_number": 1}, {"max_number": 100},
                                    {"max_value": 5}, {"quit_max": 1.5}])
def test_countdown_settings_out_of_range_are_refused(kwargs):
    with pytest.raises(ValueError):
        CountdownTask(**kwargs)


def test_countdown_runs_end_to_end_with_train_py(tmp_path):
    summary = train.main(["--task=countdown", "--numbers=3", "--device=cpu", "--n_layer=1", "--n_head=2",
                          "--n_embd=16", "--block_size=128", "--sft_steps=4", "--sft_batch_size=8", "--rl_steps=2",
                          "--prompts_per_step=2", "--samples_per_prompt=4", "--max_new_tokens=96",
                          "--eval_problems=4", "--pass_k=2", f"--out_dir={tmp_path}"])
    assert {"attempts", "honest_check_share", "sample_repeated_attempts"} <= summary["after"].keys()


# -----------------------------------------------------------------------------
# hostile command lines: one clear line, no long wait, no traceback

def test_more_eval_problems_than_the_test_split_holds_is_refused_naming_how_many(tmp_path):
    cfg = common.parse_config(train.TrainConfig, ["--eval_problems=100000"])
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"--eval_problems=100000: the test split of --task=pairs gave (\d+) "
                                         r"distinct problems .* ask for at most \1"):
        train.held_out_problems(train.make_task(cfg), cfg)
    assert time.perf_counter() - start < 60  # (it drew for minutes: 2,000,000 draws)


def test_as_many_eval_problems_as_the_split_holds_are_all_found():
    cfg = common.parse_config(train.TrainConfig, ["--task=countdown", "--numbers=3", "--max_number=3",
                                                  "--eval_problems=1000"])
    with pytest.raises(ValueError, match=r"gave (\d+) distinct problems") as refused:
        train.held_out_problems(train.make_task(cfg), cfg)
    found = int(re.search(r"gave (\d+)", str(refused.value))[1])
    cfg.eval_problems = found
    assert len(train.held_out_problems(train.make_task(cfg), cfg)) == found


def test_the_gpt2_tokenizer_offline_is_one_line_from_the_command_line(tmp_path):
    # tiktoken's download replaced by a failing one: what a machine with no network sees
    script = ("import sys, runpy, tiktoken\n"
              "def offline(name): raise ConnectionError('no network')\n"
              "tiktoken.get_encoding = offline\n"
              f"sys.argv = ['train.py', '--tokenizer=gpt2', '--out_dir={tmp_path}']\n"
              "runpy.run_path('train.py', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "train.py: error: the 'gpt2' tokenizer needs its files: connect to the network once, or point "
        "TIKTOKEN_CACHE_DIR at a cache that has them (ConnectionError)"]


def test_an_unknown_task_is_refused_naming_every_known_one():
    cfg = common.parse_config(train.TrainConfig, ["--task=chess"])
    with pytest.raises(ValueError, match="unknown task 'chess'; valid names are: " + ", ".join(tasks.TASKS)):
        train.make_task(cfg)


def test_the_interface_docstring_names_every_member_the_commands_use_on_a_task_and_nothing_else():
    used = set()
    for name in ("train.py", "common.py", "report.py", "bench.py", "ablate.py"):
        source = (ROOT / name).read_text()
        used |= set(re.findall(r"\btask\.(\w+)", source))
        used |= set(re.findall(r"(?:hasattr|getattr)\(task, \"(\w+)\"", source))
    interface = tasks.__doc__.split("What a task is")[1].split("A Problem is")[0]
    documented = set(re.findall(r"^    (\w+)(?:\(|:)", interface, re.M))
    assert used == documented, (used - documented, documented - used)
