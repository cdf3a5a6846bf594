"""
Tests for rewards.py: answer extraction, exact comparison, robustness
against hostile completions, and the tasks' splits and traces.

    python -m pytest -q tests/test_rewards.py
"""

import itertools
import json
import random
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import rewards  # noqa: E402
import tasks  # noqa: E402
from rewards import answers_match, exact_match, extract_answer, format_reward, normalize_answer, pair_sum  # noqa: E402
from tasks import ArithmeticTask, GSM8KTask, PairsTask, Problem, load_gsm8k  # noqa: E402

GSM8K_TINY = Path(__file__).parent / "data" / "gsm8k_tiny.jsonl"
HUGE_NUMBER = "7" * 10_000


def all_tasks():
    return [ArithmeticTask(), ArithmeticTask(digits=1), GSM8KTask(GSM8K_TINY), PairsTask(), PairsTask(n_numbers=8, max_number=99)]


# -----------------------------------------------------------------------------
# Extraction

@pytest.mark.parametrize("text, expected", [
    ("#### 72", "72"),
    ("She has 3*24 = <<3*24=72>>72 apples.\n#### 72", "72"),
    ("0+7+5=12,1+4+8=13,1+3+6=10 #### 1032", "1032"),
    ("#### 18\n\nQuestion: next one", "18"),
    ("so \\boxed{42}", "42"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),
    ("The answer is 7.", "7"),
    ("The answer is 1,000, I think", "1,000"),
    ("so THE ANSWER IS: 12 apples", "12"),
    ("<answer>(3+4)*5</answer>", "(3+4)*5"),
    ("<answer> 35 </answer>", "35"),
    ("The answer is \\boxed{5}.", "5"),  # the boxed answer starts later, so it is the last
])
def test_extract_answer_understands_each_format(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", [
    "", "   ", "no answer here", "####", "#### \n5", "\\boxed{unclosed", "<answer></answer>",
    "<answer>5", "the answer is", "#" * 10_000, "\\boxed{" * 2_000, "#### " + HUGE_NUMBER,
])
def test_extract_answer_returns_none_without_a_well_formed_answer(text):
    assert extract_answer(text) is None
    assert format_reward(text) == 0.0


@pytest.mark.parametrize("text, expected", [
    ("#### 5\nWait, I made a mistake. #### 6", "6"),
    ("The answer is 5. Hmm, actually \\boxed{6}", "6"),
    ("\\boxed{6} no wait, <answer>7</answer>", "7"),
    ("<answer>7</answer> Let me recheck: the answer is 8", "8"),
])
def test_the_last_answer_in_the_text_counts(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", ["#### 8+6\n####", "#### 8+6 ####", "#### 8+6\n#### 3+1 " + "x" * 300,
                                  "\\boxed{8+6} <answer></answer>"])
def test_a_malformed_last_answer_is_no_answer_not_an_earlier_one(text):
    task, problem = pairs_problem()  # 8+6 is right: it must not score once a later answer replaced it
    assert extract_answer(text) is None and task.reward(text, problem) == 0.0


def test_only_the_tail_of_a_long_completion_is_searched():
    # answers live at the end; a well-formed answer followed by pages of text is not found (and cannot hang us)
    assert extract_answer("#### 5\n" + "x" * 5_000) is None
    assert extract_answer("#### 5" + " and so on" * 1_000) is None  # (here also a 10,000-character "answer")
    assert extract_answer("#### 5\n" + "x" * 4_000) == "5"
    assert extract_answer("and so on " * 1_000 + "#### 5") == "5"


def test_exactly_the_last_max_scan_chars_characters_are_searched():
    pad = rewards.MAX_SCAN_CHARS - len("#### 5\n")
    assert extract_answer("#### 5\n" + "x" * pad) == "5"  # the marker is the tail's first character
    assert extract_answer("#### 5\n" + "x" * (pad + 1)) is None  # one more: the tail starts at "### 5"


def test_rewards_of_a_completion_that_is_not_a_string_are_zero_not_an_error():
    for completion in (None, b"#### 5", 5):
        assert extract_answer(completion) is None
        assert exact_match(completion, "5") == 0.0 and format_reward(completion) == 0.0


def test_an_answer_of_up_to_200_characters_is_well_formed():
    assert extract_answer("#### " + "7" * 200) == "7" * 200 and extract_answer("#### " + "7" * 201) is None


def test_boxed_answers_nest_braces_three_deep():
    assert extract_answer("\\boxed{a{b{c{d}}}}") == "a{b{c{d}}}"


def test_a_self_correcting_completion_gets_credit_for_its_final_answer():
    assert exact_match("347+685 is about #### 1000. No: 7+5=12, carry 1... #### 1032", "1032") == 1.0


def test_a_completion_that_ends_on_a_wrong_answer_gets_nothing():
    assert exact_match("#### 1032\nOn second thought, #### 1031", "1032") == 0.0


# -----------------------------------------------------------------------------
# Normalisation and equality

@pytest.mark.parametrize("raw, normal", [
    (" 1,000 ", "1000"), ("$5", "5"), ("5.", "5"), ("+4", "4"), ("$1,234,567.50.", "1234567.50"),
    ("\\$12", "12"), ("1,23", "1,23"), ("-7", "-7"),
])
def test_normalize_answer_drops_formatting(raw, normal):
    assert normalize_answer(raw) == normal


@pytest.mark.parametrize("pred, ref", [
    ("1,000", "1000"), ("$ 1,000", "1000"), ("\\dfrac{1}{2}", "0.5"), ("$5", "5"), ("3.50", "7/2"), ("3.5", "3.50"),
    ("+4", "4"), ("5.", "5"),
    ("\\frac{1}{2}", "0.5"), ("-\\frac{3}{4}", "-0.75"), (".5", "1/2"), ("0", "-0"), ("abc", " abc "),
])
def test_equal_answers_match(pred, ref):
    assert answers_match(pred, ref)


@pytest.mark.parametrize("pred, ref", [
    ("5", "6"), ("3.51", "7/2"), ("-4", "4"), ("", ""), ("", "0"), ("1/0", "1"), ("abc", "abd"),
    ("1,2345", "12345"), ("Yes", "yes"),  # (text compares exactly: case counts)
    ("1e400", "1"), ("1e0", "1"), (HUGE_NUMBER, "1"), (HUGE_NUMBER, HUGE_NUMBER[:-1]),
])
def test_different_answers_do_not_match(pred, ref):
    assert not answers_match(pred, ref)


def test_a_number_of_up_to_100_characters_is_compared_by_value():
    assert answers_match("0" * 99 + "5", "5")  # 100 characters: a number, equal to 5
    assert not answers_match("0" * 100 + "5", "5")  # 101: too long to convert, compared as text


def test_a_latex_fraction_is_a_number_only_when_it_is_the_whole_answer():
    assert answers_match("\\frac{1}{2}", "0.5") and not answers_match("\\frac{1}{2}3", "0.5")


@pytest.mark.parametrize("completion, answer, reward", [
    ("#### 1032", "1032", 1.0),
    ("#### 1,032", "1032", 1.0),
    ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("The answer is $18.", "18", 1.0),
    ("#### 1033", "1032", 0.0),
    ("1032", "1032", 0.0),  # a bare number is not a stated final answer
    ("", "1032", 0.0),
    ("#### 1e400", "1", 0.0),
    ("#### " + HUGE_NUMBER, HUGE_NUMBER, 0.0),  # far too long to be an answer
])
def test_exact_match(completion, answer, reward):
    assert exact_match(completion, answer) == reward


def test_format_reward_credits_any_stated_answer_right_or_wrong():
    assert format_reward("#### 9999") == 1.0
    assert format_reward("I think it is 9999") == 0.0


def test_extraction_is_fast_on_100kb_of_garbage():
    rng = random.Random(0)
    texts = ["".join(rng.choice("0123456789{}#<>/\\boxed answer ") for _ in range(100_000)),
             "####" * 25_000, "\\boxed{" * 15_000, "<answer>" * 12_500, "the answer is " * 7_000]
    start = time.perf_counter()
    for _ in range(20):
        for text in texts:
            exact_match(text, "5"), format_reward(text)
    per_call = (time.perf_counter() - start) / (20 * len(texts) * 2)
    assert per_call < 0.005  # typically ~0.3 ms; the bound is loose for busy machines


# -----------------------------------------------------------------------------
# Fuzz: no reward ever raises, and every reward is 0.0 or 1.0

def random_completion(rng: random.Random) -> str:
    pieces = ["####", " ", "\n", "\\boxed{", "{", "}", "<answer>", "</answer>", "The answer is ",
              "(", ")", "+", "-", "*", "/", "**", ".", ",", "$", "1e400", "\\frac{1}{2}", "0",
              "__import__('os')", "9" * rng.randint(1, 400), str(rng.randint(0, 10**6))]
    kind = rng.random()
    if kind < 0.3:  # random unicode, including surrogates and control characters
        return "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 50)))
    if kind < 0.9:  # a soup of answer-shaped fragments
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
    return rng.choice(pieces) * rng.randint(1, 5_000)  # one fragment, repeated a lot


def test_fuzz_rewards_never_raise_and_return_zero_or_one():
    rng = random.Random(1234)
    tasks = all_tasks()
    problems = [(task, task.sample("train", rng)) for task in tasks]
    for _ in range(3_000):
        text = random_completion(rng)
        rewards = [exact_match(text, "1032"), exact_match(text, "1/2"), format_reward(text)]
        rewards += [task.reward(text, problem) for task, problem in problems]
        assert all(r in (0.0, 1.0) for r in rewards), (text, rewards)
        for task, _ in problems:
            assert task.is_step_by_step(text) in (True, False)


# -----------------------------------------------------------------------------
# Tasks

@pytest.mark.parametrize("task", all_tasks(), ids=lambda t: t.name)
def test_sampling_is_deterministic_under_a_seed(task):
    def draw(seed):
        rng = random.Random(seed)
        return [task.sample(split, rng) for split in ("train", "test") * 5]
    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_pairs_splits_share_no_problem_even_reordered():
    task = PairsTask()
    rng = random.Random(0)
    key = lambda p: (tuple(sorted(p.info["numbers"])), p.info["target"])
    train = {key(task.sample("train", rng)) for _ in range(5_000)}
    test = {key(task.sample("test", rng)) for _ in range(500)}
    assert len(test) > 100 and not train & test  # (4 digits: a few thousand problems up to reordering)


@pytest.mark.parametrize("task", [ArithmeticTask(), PairsTask()], ids=lambda t: t.name)
def test_train_and_test_splits_share_no_prompt(task):
    rng = random.Random(0)
    train = {task.sample("train", rng).prompt for _ in range(2_000)}
    test = {task.sample("test", rng).prompt for _ in range(300)}
    assert len(test) > 250 and not train & test


def test_gsm8k_sample_draws_from_the_split_asked_for():
    task, rng = GSM8KTask(GSM8K_TINY), random.Random(0)
    for split in ("train", "test"):
        assert all(task.sample(split, rng) in task.splits[split] for _ in range(50))


def test_a_gsm8k_file_that_hashes_into_one_split_still_gives_both(tmp_path):
    rows = [{"question": f"How many is {i}?", "answer": f"{i} #### {i}"} for i in range(3)]
    assert {tasks.split_of(row["question"]) for row in rows} == {"train"}  # (as most questions do)
    path = tmp_path / "three.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = GSM8KTask(path)
    assert len(task.splits["train"]) == 2 and len(task.splits["test"]) == 1


def test_gsm8k_reference_answers_are_normalised(tmp_path):
    rows = [{"question": f"How many is {i}?", "answer": f"work #### $1,00{i}."} for i in range(3)]
    path = tmp_path / "money.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = GSM8KTask(path)
    assert sorted(p.answer for p in task.splits["train"] + task.splits["test"]) == ["1000", "1001", "1002"]


def test_gsm8k_splits_are_disjoint_and_both_non_empty():
    task = GSM8KTask(GSM8K_TINY)
    train, test = ({p.prompt for p in task.splits[s]} for s in ("train", "test"))
    assert train and test and not train & test
    assert len(train) + len(test) == len(load_gsm8k(GSM8K_TINY))


@pytest.mark.parametrize("task", [t for t in all_tasks() if t.name != "pairs"], ids=lambda t: t.name)
def test_every_sft_trace_earns_full_reward(task):  # (a pairs search may give up: see its own tests)
    rng = random.Random(0)
    for i in range(200):
        problem = task.sample("train" if i % 4 else "test", rng)
        for style in task.styles:
            assert task.reward(task.trace(problem, style), problem) == 1.0, (problem, style)


def test_arithmetic_problem_and_trace_formats():
    task = ArithmeticTask(digits=3)
    problem = task.sample("train", random.Random(0))
    a, b = problem.info["a"], problem.info["b"]
    assert problem.prompt == f"{a}+{b}=" and problem.answer == str(a + b)
    assert 100 <= a <= 999 and 100 <= b <= 999
    problem.info.update(a=347, b=685)
    assert task.trace(problem, "direct") == "#### 1032"
    assert task.trace(problem, "scratch") == "0+7+5=12,1+4+8=13,1+3+6=10 #### 1032"
    problem.info.update(a=123, b=456)
    assert task.trace(problem, "scratch") == "0+3+6=09,0+2+5=07,0+1+4=05 #### 0579"  # the carry digit stays


def test_arithmetic_operands_are_every_number_with_exactly_the_given_digits():
    task, rng = ArithmeticTask(digits=1), random.Random(0)
    problems = [task.sample("train", rng) for _ in range(500)]
    assert {p.info[k] for p in problems for k in "ab"} == set(range(1, 10))  # 1..9: both ends, never 0 or 10


def test_scratch_traces_are_step_by_step_and_direct_ones_are_not():
    task = ArithmeticTask(digits=3)
    problem = task.sample("train", random.Random(0))
    assert task.is_step_by_step(task.trace(problem, "scratch"))
    assert not task.is_step_by_step(task.trace(problem, "direct"))
    assert not task.is_step_by_step("no answer = given")


def test_pairs_step_by_step_needs_work_before_the_answer():
    assert PairsTask().is_step_by_step("3+8=11✗ #### 8+6") and not PairsTask().is_step_by_step(" #### 8+6")


def test_gsm8k_step_by_step_reads_the_marker_of_a_long_completion():
    text = " " * 4_500 + "x" * 600 + " #### 4"  # the work: 600 characters just before the answer, after 4,500 blanks
    assert GSM8KTask(GSM8K_TINY).is_step_by_step(text) and not GSM8KTask(GSM8K_TINY).is_step_by_step(" #### 4")


def test_gsm8k_step_by_step():
    gsm8k = GSM8KTask(GSM8K_TINY)
    problem = gsm8k.sample("train", random.Random(0))
    assert gsm8k.is_step_by_step(gsm8k.trace(problem, "cot"))
    assert not gsm8k.is_step_by_step(" #### 4")


def test_gsm8k_problem_format():
    problem = GSM8KTask(GSM8K_TINY).splits["train"][0]
    assert problem.prompt.startswith("Question: ") and problem.prompt.endswith("\nAnswer:")
    assert problem.answer == "48"


@pytest.mark.parametrize("lines, message", [
    (['{"question": "q", "answer": "a #### 1"}', "{not json"], "not valid JSON"),
    (['{"question": "q"}'], "string fields"),
    (['{"question": "q", "answer": 5}'], "string fields"),
    (['["question", "answer"]'], "string fields"),
    (['{"question": "q", "answer": "no final answer"}'], "####"),
    (['{"question": "q", "answer": "nothing after ####  "}'], "####"),
    (['{"question": "q", "answer": "only a sign #### $"}'], "####"),  # nothing left to compare: unsolvable
    (['{"question": "q", "answer": "#### 72\\nmore text"}'], "####"),  # would be the reference "72moretext"
    (['{"question": "q", "answer": "#### 5 # about"}'], "####"),  # an answer is read up to a "#": never "5#about"
    (['{"question": "q", "answer": "#### ' + "9" * 201 + '"}'], "####"),  # longer than an answer may be
])
def test_gsm8k_loader_names_file_and_line_of_a_malformed_row(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n\n".join(lines) + "\n")  # blank lines are skipped but still counted
    with pytest.raises(ValueError, match=message) as err:
        load_gsm8k(path)
    assert f"{path}:{2 * len(lines) - 1}:" in str(err.value)


def test_gsm8k_loader_skips_blank_lines(tmp_path):
    path = tmp_path / "ok.jsonl"
    rows = [{"question": f"q{i}", "answer": f"work\n#### {i}"} for i in range(3)]
    path.write_text("\n\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_gsm8k(path) == rows


def test_gsm8k_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        GSM8KTask(path)


@pytest.mark.parametrize("lines, message", [([], "no problems in the file"),
                                            (["", "  "], "no problems in the file"),
                                            (['{"question": "q", "answer": "a #### 1"}'], "one problem is too few")])
def test_gsm8k_file_with_too_few_problems_names_the_file(tmp_path, lines, message):
    path = tmp_path / "few.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(ValueError, match=message) as err:
        GSM8KTask(path)
    assert str(err.value).startswith(f"{path}: ")


def test_gsm8k_directory_names_the_path(tmp_path):
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        GSM8KTask(tmp_path)


def test_tasks_builds_each_task_from_the_config_fields_it_names():
    cfg = SimpleNamespace(numbers=5, max_number=8, quit_max=0.3, digits=2, data_path=GSM8K_TINY)
    built = {name: make(cfg) for name, make in tasks.TASKS.items()}
    assert {name: task.name for name, task in built.items()} == {name: name for name in tasks.TASKS}
    assert (built["pairs"].n_numbers, built["pairs"].max_number, built["pairs"].quit_max) == (5, 8, 0.3)
    assert (built["countdown"].n_numbers, built["countdown"].max_number, built["countdown"].quit_max) == (5, 8, 0.3)
    assert (built["walk"].n_digits, built["walk"].max_digit, built["maze"].n_moves) == (5, 8, 5)
    assert built["arithmetic"].digits == 2 and len(built["gsm8k"].splits["test"]) >= 1


@pytest.mark.parametrize("make, message", [
    (lambda: ArithmeticTask(digits=0), "digits must be in 1..9"), (lambda: ArithmeticTask(digits=10), "digits must"),
    (lambda: ArithmeticTask().sample("val", random.Random(0)), "split must be 'train' or 'test'"),
    (lambda: ArithmeticTask().trace(ArithmeticTask().sample("train", random.Random(0)), "cot"), "unknown style 'cot'"),
    (lambda: PairsTask(n_numbers=2), "n_numbers must be in 3..12"), (lambda: PairsTask(max_number=1000), "max_number"),
    (lambda: PairsTask(quit_step=1.5), "quit_step and quit_max are probabilities"),
])
def test_bad_task_arguments_raise_a_value_error_that_says_why(make, message):
    with pytest.raises(ValueError, match=message):
        task = make()
        task.sample("train", random.Random(0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_number=1), "max_number in 2..999"),
    (dict(quit_max=1.5), "quit_step and quit_max are probabilities"),
    (dict(quit_max=-0.1), "quit_step and quit_max are probabilities"),
])
def test_pairs_task_refuses_settings_just_outside_their_ranges(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PairsTask(**kwargs)


def test_arithmetic_splits_keep_a_plus_b_and_b_plus_a_together():
    task = ArithmeticTask(digits=2)
    rng = random.Random(0)
    test = {task.sample("test", rng).prompt for _ in range(300)}
    train = {task.sample("train", rng).prompt for _ in range(3000)}
    swapped = {"+".join(reversed(p[:-1].split("+"))) + "=" for p in test}
    assert not swapped & train


# -----------------------------------------------------------------------------
# The pairs task: try, check, try again

def pairs_problem(numbers=(3, 8, 1, 6, 9), target=14):
    return PairsTask(n_numbers=len(numbers)), Problem(prompt=" ".join(map(str, numbers)) + f"->{target}:",
                                                      answer=str(target), info={"numbers": list(numbers), "target": target})


def test_pair_sum_reads_only_two_numbers_joined_by_plus():
    assert pair_sum("8+6") == (8, 6) and pair_sum("12+305") == (12, 305)
    for bad in ("", "8+", "+6", "8-6", "8+6+1", "8 + 6", "-8+6", "8*6", "__import__('os')", "8+6" * 200):
        assert pair_sum(bad) is None, bad


def test_pairs_problems_have_exactly_one_solution_and_print_numbers_and_target():
    task = PairsTask()
    rng = random.Random(0)
    for _ in range(200):
        problem = task.sample("train", rng)
        numbers, target = problem.info["numbers"], problem.info["target"]
        assert problem.prompt == " ".join(map(str, numbers)) + f"->{target}:" and len(numbers) == 4
        assert sum(a + b == target for a, b in itertools.combinations(numbers, 2)) == 1


def test_pair_sum_refuses_numbers_of_more_than_three_digits():
    assert pair_sum("999+999") == (999, 999)
    assert pair_sum("1000+1") is None and pair_sum("1+1000") is None


def test_pairs_numbers_are_drawn_from_one_to_max_number():
    task, rng = PairsTask(), random.Random(0)
    drawn = {n for _ in range(500) for n in task.sample("train", rng).info["numbers"]}
    assert drawn == set(range(1, 10))  # both ends, never 0


def search_traces(n, seed):
    """n cold-start search traces of the default PairsTask -> [(problem, trace, self-check stats)]"""
    task, rng, out = PairsTask(), random.Random(seed), []
    for _ in range(n):
        problem = task.sample("train", rng)
        trace = task.trace(problem, "search", rng)
        out.append((problem, trace, task.self_check_stats(trace, problem)))
    return out


def test_search_traces_write_only_truthful_checks():
    for problem, trace, stats in search_traces(500, seed=1):
        assert stats["checks"] == stats["attempts"] >= 1 and stats["honest"] == stats["checks"], trace
        head, _, answer = trace.rpartition(" #### ")
        attempts = head.split(",")
        assert re.sub(r"=[0-9]+[✓✗]", "", attempts[-1]) == answer  # the answer is the last attempt
        assert all(a.endswith("✗") for a in attempts[:-1])  # a ✓ ends the search


def test_search_traces_try_the_pairs_in_the_order_given_without_repeating_one():
    task, problem = pairs_problem((3, 8, 1, 6, 9), 15)  # 6+9, the last pair
    never_quits = PairsTask(quit_step=0.0)
    trace = never_quits.trace(problem, "search", random.Random(0))
    assert trace == ("3+8=11✗,3+1=4✗,3+6=9✗,3+9=12✗,8+1=9✗,8+6=14✗,8+9=17✗,1+6=7✗,1+9=10✗,6+9=15✓"
                     " #### 6+9")


def test_the_cold_start_is_sometimes_right_and_often_quits_after_its_own_fail():
    traces = search_traces(2000, seed=2)
    stats = [s for _, _, s in traces]
    right = sum(PairsTask().reward(trace, problem) for problem, trace, _ in traces)
    after_fail = sum(s["after_fail"] for s in stats) / len(stats)
    assert 0.2 < right / len(stats) < 0.8 and 0.2 < after_fail < 0.8
    assert abs(right / len(stats) + after_fail - 1) < 1e-9  # wrong exactly when it quit after a ✗
    assert max(s["attempts"] for s in stats) == 6  # full searches exist: SFT trains every position RL can reach


class ScriptedRandom:
    """an rng whose random() returns the given draws in turn"""
    def __init__(self, draws):
        self.draws = iter(draws)

    def random(self):
        return next(self.draws)


def test_the_search_quits_after_its_kth_wrong_attempt_with_probability_min_quit_max_k_times_quit_step():
    task, problem = pairs_problem((3, 8, 1, 6, 9), 15)  # 6+9, the last of 10 pairs
    # quit_step 0.25, quit_max 0.6: it quits after the k-th ✗ iff draw < min(0.6, 0.25k) = 0.25, 0.5, 0.6, 0.6, ...
    trace = task.trace(problem, "search", ScriptedRandom([0.3, 0.55, 0.65, 0.61, 0.59]))
    assert trace == "3+8=11✗,3+1=4✗,3+6=9✗,3+9=12✗,8+1=9✗ #### 8+1"  # the fifth draw is the first below


def test_unchecked_traces_are_the_search_traces_without_their_checks():
    task = PairsTask()
    problem = task.sample("train", random.Random(3))
    for seed in range(20):
        searched = task.trace(problem, "search", random.Random(seed))
        unchecked = task.trace(problem, "unchecked", random.Random(seed))
        assert unchecked == re.sub(r"=[0-9]+[✓✗]", "", searched)
        stats = task.self_check_stats(unchecked, problem)
        assert stats["checks"] == 0 and stats["attempts"] == searched.count(",") + 1


def test_direct_traces_answer_right_with_no_search():
    task = PairsTask()
    rng = random.Random(4)
    for _ in range(100):
        problem = task.sample("train", rng)
        trace = task.trace(problem, "direct", rng)
        assert trace.startswith("#### ") and "," not in trace and task.reward(trace, problem) == 1.0
        assert not task.is_step_by_step(trace)


def test_pairs_reward_reads_only_the_final_answer_not_the_checks():
    task, problem = pairs_problem()  # 3 8 1 6 9 -> 14: only 8+6
    assert task.reward("3+8=11✗,8+6=14✓ #### 3+8", problem) == 0.0  # a wrong answer after a ✓
    assert task.reward("3+8=14✓ #### 3+8", problem) == 0.0  # ... after a lying ✓
    assert task.reward("8+6=15✗ #### 8+6", problem) == 1.0  # a right answer after a (lying) ✗
    assert task.reward("#### 8+6", problem) == task.reward("#### 6+8", problem) == 1.0
    assert task.reward("8+6=14✓", problem) == 0.0  # no final answer


def test_pairs_reward_needs_two_given_numbers():
    task, problem = pairs_problem((3, 7, 1, 6, 9), 14)  # 7+7 is 14 but there is one 7; 13+1 uses no given 13
    for wrong in ("#### 7+7", "#### 13+1", "#### 14", "#### 5+9", "#### 3+1+1+9", "#### 6+8 extra", "#### 8+6-0"):
        assert task.reward(wrong, problem) == 0.0, wrong
    assert task.reward("#### 7+7", pairs_problem((3, 7, 1, 7, 9), 14)[1]) == 1.0  # two 7s given


def test_self_check_stats_on_hand_made_completions():
    task, problem = pairs_problem()
    stats = task.self_check_stats
    honest_search = "3+8=11✗,3+1=4✗,8+6=14✓ #### 8+6"
    assert stats(honest_search, problem) == {"attempts": 3, "checks": 3, "honest": 3, "confident": 1,
                                             "false_right": 0, "repeats": 0, "answered": True, "after_fail": False}
    # a wrong sum, a lying ✓ and a lying ✗ are three dishonest checks; the answer follows a ✗
    lies = "3+8=12✗,3+1=4✓,8+6=14✗ #### 8+6"
    assert stats(lies, problem) == {"attempts": 3, "checks": 3, "honest": 0, "confident": 1, "false_right": 1,
                                    "repeats": 0, "answered": True, "after_fail": True}
    # a ✓ on a pair that is not two of the given numbers is not a true verdict
    assert stats("7+7=14✓ #### 7+7", problem)["honest"] == 0
    assert stats("#### 8+6", problem) == {"attempts": 0, "checks": 0, "honest": 0, "confident": 0, "false_right": 0,
                                          "repeats": 0, "answered": True, "after_fail": False}
    assert stats("3+8=11✗,3+1", problem) == {"attempts": 2, "checks": 1, "honest": 1, "confident": 0,
                                             "false_right": 0, "repeats": 0, "answered": False, "after_fail": False}
    assert stats("garbage ✗✓ ,,, = ####", problem)["attempts"] == 0
    for text in ("3+8=11✗, #### 3+8", "3+8=11✗\n#### 3+8"):  # a comma or a newline before the answer hides no ✗
        assert stats(text, problem)["after_fail"], text


@pytest.mark.parametrize("n_numbers", [3, 6])
def test_longest_trace_tries_every_pair(n_numbers):
    task = PairsTask(n_numbers=n_numbers, max_number=20)
    problem = task.sample("train", random.Random(0))
    assert task.self_check_stats(task.longest_trace(), problem)["attempts"] == n_numbers * (n_numbers - 1) // 2


def test_longest_trace_is_every_pair_checked_on_the_largest_number():
    assert PairsTask(n_numbers=3, max_number=20).longest_trace() == "20+20=40✗,20+20=40✗,20+20=40✗ #### 20+20"


def test_self_check_stats_read_four_digit_sums_of_three_digit_numbers():
    task, problem = pairs_problem((999, 998, 5), 1997)
    stats = task.self_check_stats("999+5=1004✗,999+998=1997✓ #### 999+998", problem)
    assert stats["checks"] == stats["honest"] == 2


def test_task_sizes_at_their_limits_are_accepted():
    assert ArithmeticTask(digits=9).sample("train", random.Random(0)).info["a"] >= 10 ** 8
    assert len(PairsTask(n_numbers=3).sample("train", random.Random(0)).info["numbers"]) == 3


def test_quitting_early_is_a_parameter_of_the_cold_start():
    rng = random.Random(5)
    problems = [PairsTask().sample("train", rng) for _ in range(300)]
    never_quits, quits_at_once = PairsTask(quit_step=0.0), PairsTask(quit_step=1.0, quit_max=1.0)
    assert all(never_quits.reward(never_quits.trace(p, "search", rng), p) == 1.0 for p in problems)
    assert all(quits_at_once.trace(p, "search", rng).count(",") == 0 for p in problems)


def test_pairs_settings_without_unique_solutions_are_a_clear_error_not_a_hang():
    class AllOnes(random.Random):  # every number drawn is 1: every pair has the same sum
        def randint(self, a, b):
            return 1
    with pytest.raises(ValueError, match="fewer numbers or a larger max_number"):
        PairsTask().sample("train", AllOnes(0))


def test_arithmetic_task_default_is_the_configs_default():
    import train
    assert ArithmeticTask().digits == train.TrainConfig().digits == 4


# -----------------------------------------------------------------------------
# the free cold start (ablate.py --table=structure) and the step rewards (--table=process)

def test_self_check_stats_count_a_pair_tried_again_as_a_repeat_in_either_order_checked_or_not():
    task, problem = pairs_problem()  # 3 8 1 6 9 -> 14
    stats = task.self_check_stats("3+8=11✗,8+3=11✗,3+1,3+8=11✗,8+6=14✓ #### 8+6", problem)
    assert stats["repeats"] == 2 and stats["attempts"] == 5


def test_a_pair_the_numbers_hold_twice_may_be_tried_twice_without_a_repeat():
    task, problem = pairs_problem((5, 5, 3, 8), 13)  # 5+3 twice (1st and 2nd 5), 5+8 the answer
    assert task.self_check_stats("5+3=8✗,5+3=8✗,5+8=13✓ #### 5+8", problem)["repeats"] == 0
    assert task.self_check_stats("5+3=8✗,5+3=8✗,3+5=8✗ #### 5+3", problem)["repeats"] == 1


def test_self_check_stats_count_every_check_mark_and_the_false_ones():
    task, problem = pairs_problem()  # 3 8 1 6 9 -> 14: only 8+6
    stats = task.self_check_stats("3+8=14✓,3+1=4✓,8+6=14✓,6+9=14✗ #### 8+6", problem)
    assert (stats["confident"], stats["false_right"], stats["honest"]) == (3, 2, 0 + 0 + 1 + 0)


def free_and_structured(n, seed):
    """n problems, each with a structured (search) and a free trace -> [(problem, search trace, free trace)]"""
    task, rng = PairsTask(), random.Random(seed)
    return [(p, task.trace(p, "search", rng), task.trace(p, "free", rng))
            for p in (task.sample("train", rng) for _ in range(n))]


def test_free_traces_write_only_truthful_checks_and_answer_their_last_attempt():
    task = PairsTask()
    for problem, _, trace in free_and_structured(500, seed=1):
        stats = task.self_check_stats(trace, problem)
        assert stats["checks"] == stats["attempts"] >= 1 and stats["honest"] == stats["checks"], trace
        head, _, answer = trace.rpartition(" #### ")
        assert re.sub(r"=[0-9]+[✓✗]", "", head.split(",")[-1]) == answer


def test_free_traces_never_repeat_a_pair_and_take_them_in_orders_of_their_own():
    task, problem = pairs_problem((3, 8, 1, 6, 9), 15)  # 6+9, the last pair in the given order
    never_quits = PairsTask(quit_step=0.0)
    orders = set()
    for seed in range(50):
        trace = never_quits.trace(problem, "free", random.Random(seed))
        attempts = [a.split("=")[0] for a in trace.rpartition(" #### ")[0].split(",")]
        given = [f"{a}+{b}" for a, b in itertools.combinations(problem.info["numbers"], 2)]
        assert len(set(attempts)) == len(attempts) and set(attempts) <= set(given)  # each pair at most once
        assert attempts[-1] == "6+9" and never_quits.self_check_stats(trace, problem)["repeats"] == 0
        orders.add(tuple(attempts))
    assert len(orders) > 40  # not one fixed order


def test_free_and_structured_cold_starts_quit_alike_and_are_right_alike_over_4000_traces():
    task = PairsTask()
    traces = free_and_structured(4000, seed=7)
    n = len(traces)
    right = [sum(task.reward(t[pick], t[0]) for t in traces) / n for pick in (1, 2)]  # the share of right traces
    assert 0.2 < right[0] < 0.8 and abs(right[0] - right[1]) < 4 * (0.25 * 2 / n) ** 0.5  # within 4 standard errors
    for k in range(1, 7):  # the same quit rule: as many traces stop after k attempts
        shares = [sum(task.self_check_stats(t[pick], t[0])["attempts"] == k for t in traces) / n for pick in (1, 2)]
        assert abs(shares[0] - shares[1]) < 4 * (0.25 * 2 / n) ** 0.5, (k, shares)


@pytest.mark.parametrize("completion, honest, confident, expected", [
    ("3+8=11✗ #### 3+8", 0.1, 0.0, 0.1),                   # an honest ✗: the exact judge pays
    ("3+8=11✗ #### 3+8", 0.0, 0.1, 0.0),                   # ... the proxy pays only for ✓
    ("3+8=14✓ #### 3+8", 0.1, 0.0, 0.0),                   # a lying ✓: the exact judge pays nothing
    ("3+8=14✓ #### 3+8", 0.0, 0.1, 0.1),                   # ... the proxy pays it
    ("3+8=12✗ #### 3+8", 0.1, 0.1, 0.0),                   # a wrong sum: neither pays
    ("#### 8+6", 0.1, 0.1, 0.0),                           # no checks at all
    ("3+8=11✗,3+1=4✗,8+6=14✓ #### 8+6", 0.1, 0.1, 0.4),    # three honest checks, one ✓
    ("3+8=11✗,3+1=4✗,8+6=14✓ #### 8+6", 0.0, 0.0, 0.0),    # λ = 0: no step reward at all
    (",".join(["3+8=11✗"] * 9) + " #### 3+8", 0.1, 0.0, 0.5),  # nine honest checks: capped at 0.5
])
def test_step_reward_pays_per_honest_check_or_per_check_mark_capped(completion, honest, confident, expected):
    task, problem = pairs_problem()  # 3 8 1 6 9 -> 14: only 8+6
    reward = rewards.step_reward(task.self_check_stats(completion, problem), honest, confident)
    assert reward == pytest.approx(expected)
