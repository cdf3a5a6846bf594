"""
The deep-search tasks (tasks.py WalkTask and MazeTask): the depth-first search that writes their traces
against brute force, the problems it draws, their exact rewards, the counts self_check_stats makes of
hand-made completions, and both through train.py and ablate.py --table=deep.

    python -m pytest -q tests/test_deep.py
"""
import itertools
import json
import random
import re

import pytest

import ablate
import train
from rewards import maze_reward, walk_reward, walk_solves
from tasks import LETTERS, MazeTask, Problem, WalkTask, deep_search, depth_first

# room 2's + door has no room (x), its - door leads to 8, ... (the example in MazeTask's docstring)
DOORS = [[3, None], [2, 7], [None, 8], [2, 4], [0, 2], [6, 1], [8, 0], [6, 9], [5, 4], [None, 7]]


def solves_by_brute_force(moves, n_moves, start):
    """Every sign string whose moves all pass: the ways depth_first must find the first of."""
    ways = []
    for signs in itertools.product("+-", repeat=n_moves):
        value, ok = start, True
        for i, sign in enumerate(signs):
            value, passes = moves(value, i, sign)
            if not passes:
                ok = False
                break
        ways += ["".join(signs)] if ok else []
    return ways


@pytest.mark.parametrize("seed", range(5))
def test_depth_first_finds_the_first_way_in_plus_before_minus_order_or_says_there_is_none(seed):
    rng = random.Random(seed)
    for _ in range(200):
        start, digits = rng.randint(0, 9), [rng.randint(1, 9) for _ in range(rng.randint(3, 7))]
        move = WalkTask.mover(digits)
        steps, found = depth_first(start, len(digits), move)
        ways = solves_by_brute_force(move, len(digits), start)
        assert found == bool(ways)
        if found:
            way = "".join(step[2] for step in {s[0]: s for s in steps if s[4]}.values())
            assert way == min(ways, key=lambda w: w.replace("+", "0").replace("-", "1"))  # + before -
            assert walk_solves(str(start) + "".join(f"{s}{d}" for s, d in zip(way, digits)), start, digits)


def test_every_drawn_problem_backs_up_one_move_at_a_time_and_has_its_decisions():
    for task in (WalkTask(), MazeTask()):
        rng = random.Random(1)
        for _ in range(300):
            problem = task.sample("train", rng)
            steps, way = problem.info["steps"], problem.info["way"]
            assert len(steps) <= task.max_steps and all(b[0] >= a[0] - 1 for a, b in zip(steps, steps[1:]))
            assert [i for i, *_ in way] == list(range(len(way))) and all(passes for *_, passes in way)
            move = (WalkTask.mover(problem.info["digits"]) if task.name == "walk"
                    else MazeTask.mover(problem.info["doors"], task.n_moves))
            assert sum(move(v, i, "+")[1] and move(v, i, "-")[1] for i, v, *_ in way[:-1]) >= task.min_decisions
            assert deep_search(problem.info["start"], len(way), move, task.max_steps, task.min_decisions)


def greedy_answer(problem, task):
    """The answer of a rule with no look-ahead: + unless that move fails its check right away."""
    value, signs = problem.info["start"], ""
    move = (WalkTask.mover(problem.info["digits"]) if task.name == "walk"
            else MazeTask.mover(problem.info["doors"], task.n_moves))
    for i in range(len(problem.info["way"])):
        sign = "+" if move(value, i, "+")[1] or not move(value, i, "-")[1] else "-"
        value, signs = move(value, i, sign)[0], signs + sign
        if value is None:
            break
    digits = problem.info.get("digits")
    return "#### " + str(problem.info["start"]) + ("".join(f"{s}{d}" for s, d in zip(signs, digits)) if digits else signs)


@pytest.mark.parametrize("task", [WalkTask(), MazeTask()], ids=["walk", "maze"])
def test_the_first_move_that_passes_its_check_solves_exactly_the_problems_the_search_never_backs_up_on(task):
    rng = random.Random(2)
    problems = [task.sample("train", rng) for _ in range(500)]
    for p in problems:  # so a look-ahead is what the others need: a check that passes is not enough
        backs_up = task.self_check_stats(task.trace(p, "search"), p)["backtracks"] > 0
        assert task.reward(greedy_answer(p, task), p) == (0.0 if backs_up else 1.0)
    backing_up = sum(task.self_check_stats(task.trace(p, "search"), p)["backtracks"] > 0 for p in problems)
    assert 0.3 * len(problems) < backing_up < 0.7 * len(problems)  # (walk 56%, maze 45%)


def test_a_walk_trace_writes_every_value_and_check_truthfully():
    task = WalkTask()
    problem = next(p for p in (task.sample("train", random.Random(s)) for s in range(10_000))
                   if p.info["steps"] != p.info["way"])  # one with a failed step
    trace = task.trace(problem, "search")
    value_at = {}
    for step in trace.rpartition(" #### ")[0].split(","):
        letter, start, sign, digit, to, check = re.fullmatch(r"([a-l])(\d)([+-])(\d)=(-?\d+)([✓✗])", step).groups()
        i = LETTERS.index(letter)
        assert int(digit) == problem.info["digits"][i] and int(start) == value_at.get(i, problem.info["start"])
        assert int(to) == int(start) + (int(digit) if sign == "+" else -int(digit))
        passes = 0 <= int(to) <= 9 and (i < len(problem.info["digits"]) - 1 or int(to) == 0)
        assert check == ("✓" if passes else "✗")
        if passes:
            value_at[i + 1] = int(to)
    assert task.reward(trace, problem) == 1.0 and trace.endswith(" #### " + problem.answer)


def test_the_styles_are_the_same_moves_written_with_less():
    for task in (WalkTask(), MazeTask()):
        problem = task.sample("test", random.Random(3))
        search, unchecked = task.trace(problem, "search"), task.trace(problem, "unchecked")
        assert [(s[0], s[2]) for s in search.split(" #### ")[0].split(",")] == \
               [(s[0], s[1]) for s in unchecked.split(" #### ")[0].split(",")]
        path = task.trace(problem, "path").split(" #### ")[0].split(",")
        assert len(path) == len(problem.info["way"]) and all(step.endswith("✓") for step in path)
        assert task.trace(problem, "direct") == "#### " + problem.answer


@pytest.mark.parametrize("answer, reward", [
    ("1+4+1-5+5-4-2", 1.0),
    ("1 + 4 + 1 - 5 + 5 - 4 - 2", 1.0),   # spaces are fine
    ("1+4+1-5+5-4+2", 0.0),               # ends at 4, not 0
    ("1+4+1+5-5-4-2", 0.0),               # 11 on the way: leaves 0..9 (and comes back)
    ("1-4+1+5+5-4-2", 0.0),               # -3 on the way
    ("2+4+1-5+5-4-3", 0.0),               # another start
    ("1+1+4-5+5-4-2", 0.0),               # the digits in another order
    ("1+4+1-5+5-4", 0.0),                 # a digit left out
    ("1+4+1-5+5-4-2-0", 0.0),             # a digit more
    ("1+4+1-5+5-4*2", 0.0), ("", 0.0), ("1+4+1-5+5-4-2)", 0.0), ("one", 0.0),
])
def test_walk_reward_case_table(answer, reward):
    assert walk_reward("a1+4=5✓ #### " + answer, 1, [4, 1, 5, 5, 4, 2]) == reward


@pytest.mark.parametrize("answer, reward", [
    ("2-+++-+", 1.0),    # 2 -> 8 -> 5 -> 6 -> 8 -> 4 -> 0
    ("2+++++-", 0.0),    # room 2 has no + door
    ("2-+++--", 0.0),    # ends in room 2
    ("2-+++-", 0.0), ("2-+++-++", 0.0),  # a door short, a door more
    ("3-+++-+", 0.0),    # another start
    ("2-+*+-+", 0.0), ("", 0.0), ("2 - + + + - +", 1.0),
])
def test_maze_reward_case_table(answer, reward):
    assert maze_reward("a2+x✗ #### " + answer, 2, DOORS, 6) == reward


def test_maze_steps_are_one_look_up_each_and_checked_truthfully():
    task = MazeTask()
    problem = next(p for p in (task.sample("train", random.Random(s)) for s in range(100)) if "x" in task.trace(p, "search"))
    for step in task.trace(problem, "search").rpartition(" #### ")[0].split(","):
        letter, room, sign, to, check = re.fullmatch(r"([a-l])(\d)([+-])([\dx])([✓✗])", step).groups()
        door = problem.info["doors"][int(room)][0 if sign == "+" else 1]
        assert to == ("x" if door is None else str(door))
        last = LETTERS.index(letter) == task.n_moves - 1
        assert check == ("✓" if door is not None and (not last or door == 0) else "✗")
    doors = " ".join(f"{room}:" + "".join("x" if d is None else str(d) for d in problem.info["doors"][room])
                     for room in range(10))
    assert problem.prompt == doors + f"|{problem.info['start']}:"


def test_walk_self_check_stats_on_hand_made_completions():
    task = WalkTask()
    problem = Problem("1|a4b1c5d5e4f2:", "1+4+1-5+5-4-2", {"start": 1, "digits": [4, 1, 5, 5, 4, 2]})
    honest = "a1+4=5✓,b5+1=6✓,c6+5=11✗,c6-5=1✓,d1+5=6✓,e6+4=10✗,e6-4=2✓,f2+2=4✗,f2-2=0✓ #### 1+4+1-5+5-4-2"
    assert task.self_check_stats(honest, problem) == {
        "attempts": 9, "checks": 9, "honest": 9, "confident": 6, "false_right": 0, "repeats": 0, "backtracks": 0,
        "answered": True, "after_fail": False}
    # a wrong sum, a ✓ on a value out of range, a backtrack (c to b), b5+ and c6+ twice (one with a wrong
    # digit), an honest ✗ on a last value that is not 0, and the answer after it
    lies = "a1+4=6✓,b5+1=6✓,c6+5=11✓,b5+1=6✓,c6+3=3✓,f2+2=4✗ #### 1+4+1-5+5-4-2"
    assert task.self_check_stats(lies, problem) == {
        "attempts": 6, "checks": 6, "honest": 3, "confident": 5, "false_right": 2, "repeats": 2, "backtracks": 1,
        "answered": True, "after_fail": True}
    assert task.self_check_stats("a+4,b+1,a-4 #### 1", problem)["backtracks"] == 1
    assert task.self_check_stats("z1+4=5✓,g1+1=2✓ garbage", problem)["attempts"] == 0  # no such letters


def test_maze_self_check_stats_on_hand_made_completions():
    task = MazeTask()
    problem = Problem("", "2-+++-+", {"start": 2, "doors": DOORS})
    honest = "a2+x✗,a2-8✓,b8+5✓,c5+6✓,d6+8✓,e8+5✓,f5+6✗,f5-1✗,e8-4✓,f4+0✓ #### 2-+++-+"
    assert task.self_check_stats(honest, problem) == {
        "attempts": 10, "checks": 10, "honest": 10, "confident": 7, "false_right": 0, "repeats": 0, "backtracks": 1,
        "answered": True, "after_fail": False}
    lies = "a2+8✓,a2-8✓,b8+5✓,f5+6✓ #### 2-+++-+"  # a door that is not there, a ✓ on a last room that is not 0
    assert task.self_check_stats(lies, problem) == {
        "attempts": 4, "checks": 4, "honest": 2, "confident": 4, "false_right": 2, "repeats": 0, "backtracks": 0,
        "answered": True, "after_fail": False}


def test_longest_trace_is_at_least_as_long_as_every_trace():
    for task in (WalkTask(), WalkTask(n_digits=8, max_digit=4, min_decisions=4), MazeTask(), MazeTask(n_moves=4)):
        rng, longest = random.Random(4), len(task.longest_trace())
        assert all(len(task.trace(p, style)) <= longest for p in (task.sample("train", rng) for _ in range(500))
                   for style in task.styles)


@pytest.mark.parametrize("make", [lambda: WalkTask(n_digits=2), lambda: WalkTask(max_digit=10),
                                  lambda: WalkTask(min_decisions=6), lambda: MazeTask(n_moves=13),
                                  lambda: MazeTask(no_door=1.0), lambda: MazeTask(min_decisions=-1)])
def test_settings_out_of_range_are_refused(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("task, flags", [("walk", ["--numbers=6", "--max_number=5", "--block_size=144",
                                                   "--max_new_tokens=128"]),
                                         ("maze", ["--numbers=6", "--block_size=160", "--max_new_tokens=104"])])
def test_the_deep_tasks_run_end_to_end_with_train_py_and_log_backtracks(tmp_path, task, flags):
    summary = train.main([f"--task={task}", *flags, "--device=cpu", "--n_layer=1", "--n_head=2", "--n_embd=16",
                          "--sft_steps=4", "--sft_batch_size=8", "--rl_steps=2", "--prompts_per_step=2",
                          "--samples_per_prompt=4", "--eval_problems=4", "--pass_k=2", f"--out_dir={tmp_path}"])
    assert {"backtracks", "sample_backtracks", "honest_check_share"} <= summary["after"].keys()


def test_the_deep_table_prints_every_cell_and_best_of_n_at_the_search_policys_tokens(tmp_path, capsys):
    ablate.main([f"--out_dir={tmp_path}", "--table=deep", "--seeds=1", "--rl_steps=1", "--sft_steps=2",
                 "--eval_every=1", "--train_args=--n_layer=1 --n_embd=16 --eval_problems=4 --pass_k=4 "
                 "--sft_batch_size=4 --prompts_per_step=2"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert "backtracks (sampled)" in rows[0] and "best-of-n at the first variant's sampled tokens" in rows[0]
    final = rows[1:1 + 2 * len(ablate.DEEP)]  # after SFT per cold start, then each variant after RL
    for row in final:
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        assert all(c == "-" or re.fullmatch(r"-?[0-9.]+ ± [0-9.]+( \(n=\d+\.\.\d+\))?|nan ± nan", c) for c in cells), row
    assert json.load(open(tmp_path / "deep0-seed1" / "summary.json"))["config"]["task"] == "maze"


def test_the_deep_table_defaults_to_the_maze_with_its_longer_cold_start(monkeypatch, tmp_path):
    class Recorded(Exception):
        pass
    def record(cfg, variants, shared):
        raise Recorded(cfg, shared)
    monkeypatch.setattr(ablate, "run_variants", record)
    with pytest.raises(Recorded) as recorded:
        ablate.main([f"--out_dir={tmp_path}", "--table=deep", "--train_args=--task=walk --max_number=5"])
    cfg, shared = recorded.value.args
    assert (cfg.sft_steps, cfg.rl_steps, cfg.eval_every) == (2400, 100, 20)
    assert shared[:2] == ["--task=maze", "--numbers=6"] and shared[-2:] == ["--task=walk", "--max_number=5"]  # yours last
