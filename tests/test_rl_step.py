"""What an RL step and an evaluation pass to each other, checked with a stand-in policy whose answers are
known: `train.generate` replaced by one that writes, for each prompt, the task's own right trace or an empty
completion, in a fixed pattern (RL_RIGHT in RL; in the evaluation's samples three rows of four; greedily all).
The model still trains on what it "sampled", so every number of the run's log can be worked out here from the
completions alone."""
import math
import random

import pytest
import torch

import train
from common import encode
from test_train import PAIRS_TINY, log_records

P, G = 2, 4  # PAIRS_TINY's prompts_per_step, samples_per_prompt
RL_RIGHT = [1, 1, 1, 0, 0, 1, 0, 0]  # which of an RL batch's P·G rows are right: 3 of group 0, 1 of group 1
OPTIONS = ["--quit_max=0", "--temperature=0.7", "--wrong_reward=-1", "--length_penalty=0.5",
           "--length_penalty_warmup=0", "--prioritized=true", "--problem_pool=50", "--rl_steps=3"]


def right_trace(task, problem):
    return task.trace(problem, "search", random.Random(0))  # quit_max=0: it searches on until it is right


@pytest.fixture(scope="module")
def stand_in_run(tmp_path_factory):
    """One tiny pairs run with the stand-in policy -> its log records and checkpoint, the stand-in's calls, the
    RL updates' inputs, the pool indices each step chose."""
    out, problems, calls, updates, chosen, phase = tmp_path_factory.mktemp("run"), {}, [], [], [], {}
    make_task, policy_update, choose_problems = train.make_task, train.policy_update, train.choose_problems

    def recording_task(cfg):
        task = make_task(cfg)
        sample = task.sample

        def recorded(split, rng):
            problem = sample(split, rng)
            problems[problem.prompt] = problem
            return problem
        task.sample = recorded
        return task

    def in_phase(name, fn):  # which of train.py's functions the stand-in is sampling for
        def wrapped(*args, **kwargs):
            phase["now"] = name
            return fn(*args, **kwargs)
        return wrapped

    def stand_in_generate(model, prompts, max_new_tokens, temperature=1.0, stop_tokens=(), generator=None, **kw):
        (eot,), completions = stop_tokens, []
        for i, prompt in enumerate(prompts):
            right = RL_RIGHT[i % len(RL_RIGHT)] if phase["now"] == "rollout" else temperature == 0 or i % 4 != 3
            trace = right_trace(task, problems[tokenizer.decode(prompt)])
            completions.append((encode(tokenizer, trace) if right else []) + [eot])
        calls.append(dict(phase=phase["now"], temperature=temperature, prompts=prompts, completions=completions,
                          seed=generator.initial_seed() if generator is not None else None))
        return completions

    def recording_update(run, idx, targets, mask, rewards, group_ids, fused_step=None):
        updates.append(dict(lr=run.optimizer.param_groups[0]["lr"], rewards=rewards.clone(), group_ids=group_ids))
        return policy_update(run, idx, targets, mask, rewards, group_ids, fused_step)

    def recording_choice(run, rng):
        chosen.append(choose_problems(run, rng))
        return chosen[-1]

    cfg = train.parse_config(train.TrainConfig, PAIRS_TINY + OPTIONS)
    task, tokenizer = make_task(cfg), train.get_tokenizer("char")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "make_task", recording_task)
        mp.setattr(train, "generate", stand_in_generate)
        mp.setattr(train, "rollout", in_phase("rollout", train.rollout))
        mp.setattr(train, "evaluate", in_phase("evaluate", train.evaluate))
        mp.setattr(train, "policy_update", recording_update)
        mp.setattr(train, "choose_problems", recording_choice)
        train.main(PAIRS_TINY + OPTIONS + [f"--out_dir={out}"])
    return dict(records=log_records(out), ckpt=torch.load(out / "ckpt.pt", weights_only=True), calls=calls,
                updates=updates, chosen=[indices for indices, _ in chosen], cfg=cfg, task=task, problems=problems)


def rl_records(run):
    return [r for r in run["records"] if r["phase"] == "rl"]


def calls_of(run, phase):
    return [c for c in run["calls"] if c["phase"] == phase]


def kimi_length_reward(completions, right, scale=0.5):
    """The length reward of Kimi k1.5, worked out by hand per group: λ = 0.5 - (len - min) / (max - min)
    (0 if all lengths are equal); a right sample gets λ, a wrong one min(0, λ); times --length_penalty."""
    rewards = []
    for g in range(P):
        lengths = [len(c) for c in completions[g * G:(g + 1) * G]]
        lo, hi = min(lengths), max(lengths)
        for n, r in zip(lengths, right[g * G:(g + 1) * G]):
            lam = 0.5 - (n - lo) / (hi - lo) if hi > lo else 0.0
            rewards.append(scale * (lam if r else min(0.0, lam)))
    return rewards


def test_each_completion_is_scored_against_its_own_problem(stand_in_run):
    # the right traces of their own prompts: scored against another problem they would not be
    assert [r["accuracy"] for r in rl_records(stand_in_run)] == [sum(RL_RIGHT) / len(RL_RIGHT)] * 3


def test_the_search_statistics_of_an_rl_step_are_of_its_own_problems(stand_in_run):
    task, tokenizer = stand_in_run["task"], train.get_tokenizer("char")
    for record, call in zip(rl_records(stand_in_run), calls_of(stand_in_run, "rollout")):
        assert record["honest_check_share"] == 1.0  # every ✓ and ✗ of a right trace is true of its problem
        attempts = [task.self_check_stats(tokenizer.decode(c[:-1]), stand_in_run["problems"][tokenizer.decode(p)])
                    ["attempts"] for p, c in zip(call["prompts"], call["completions"])]
        assert record["attempts"] == pytest.approx(sum(attempts) / len(attempts)) and max(attempts) > 1


def test_the_samples_of_one_problem_share_a_group_id(stand_in_run):
    for update in stand_in_run["updates"]:
        assert update["group_ids"].tolist() == [0] * G + [1] * G


def test_rewards_are_one_or_wrong_reward_plus_the_length_reward(stand_in_run):
    for update, call in zip(stand_in_run["updates"], calls_of(stand_in_run, "rollout")):
        length = kimi_length_reward(call["completions"], RL_RIGHT)
        assert any(length)  # (on: right traces are longer than empty ones)
        expected = [(1.0 if right else -1.0) + reward for right, reward in zip(RL_RIGHT, length)]
        assert update["rewards"].tolist() == pytest.approx(expected)


def test_the_logged_length_reward_is_the_batch_mean(stand_in_run):
    for record, call in zip(rl_records(stand_in_run), calls_of(stand_in_run, "rollout")):
        length = kimi_length_reward(call["completions"], RL_RIGHT)
        assert record["length_reward"] == pytest.approx(sum(length) / len(length))


def test_each_rl_step_sets_its_own_learning_rate(stand_in_run):
    cfg = stand_in_run["cfg"]  # (in RL's warm-up the rate changes every step)
    lrs = [u["lr"] for u in stand_in_run["updates"]]
    assert lrs == pytest.approx([train.learning_rate(cfg, cfg.sft_steps + s) for s in range(3)]) and len(set(lrs)) > 1


def test_rl_samples_at_the_configured_temperature_with_a_new_seed_each_step(stand_in_run):
    calls = calls_of(stand_in_run, "rollout")
    assert [c["temperature"] for c in calls] == [0.7] * 3
    assert len({c["seed"] for c in calls}) == 3


def test_evaluation_samples_greedily_and_at_the_configured_temperature(stand_in_run):
    calls = calls_of(stand_in_run, "evaluate")
    assert len(calls) == 2 * 4  # after SFT, after each of the 3 RL steps (eval_every=1; the last is finish's)
    assert [c["temperature"] for c in calls] == [0, 0.7] * 4


def test_the_prioritized_pool_remembers_each_problems_share_of_right_samples(stand_in_run):
    # group 0 is right 3 times of 4, group 1 once: each pool problem keeps the share of its last draw (the mean
    # of both groups if drawn twice in one step), those never drawn keep 0; the logged weight is min(1 - share)
    share = [sum(RL_RIGHT[g * G:(g + 1) * G]) / G for g in range(P)]  # [0.75, 0.25]
    expected = torch.zeros(50)
    for record, chosen in zip(rl_records(stand_in_run), stand_in_run["chosen"]):
        drawn = {}
        for group, index in enumerate(chosen):
            drawn.setdefault(index, []).append(share[group])
        for index, shares in drawn.items():
            expected[index] = sum(shares) / len(shares)
        assert record["sampling_weight_min"] == pytest.approx((1 - expected).clamp(min=0.05).min().item())
    assert stand_in_run["ckpt"]["success"].tolist() == pytest.approx(expected.tolist())


def test_eval_statistics_come_from_their_own_completions(stand_in_run):
    evals = calls_of(stand_in_run, "evaluate")
    first = [r for r in stand_in_run["records"] if r["phase"] == "eval"][0]  # the after-SFT evaluation
    task, tokenizer = stand_in_run["task"], train.get_tokenizer("char")
    assert first["accuracy"] == 1.0 and first["sample_accuracy"] == 0.75
    assert first["step_by_step"] == 1.0 and first["sample_step_by_step"] == 0.75
    for call, prefix in zip(evals[:2], ("", "sample_")):  # greedy, then sampled
        completions = call["completions"]
        assert first[prefix + "length"] == pytest.approx(sum(map(len, completions)) / len(completions))
        problems = [stand_in_run["problems"][tokenizer.decode(p)] for p in call["prompts"]]
        stats = train.search_stats(task, [tokenizer.decode(c[:-1]) for c in completions], problems)
        assert all(first[prefix + k] == pytest.approx(v) for k, v in stats.items())
    assert first["sample_attempts"] < first["attempts"]  # (the two differ)


def test_a_batch_with_no_checks_has_no_honest_check_share():
    task = train.make_task(train.parse_config(train.TrainConfig, ["--task=pairs"]))
    problems = [task.sample("test", random.Random(i)) for i in range(2)]
    stats = train.search_stats(task, ["", "no checks here"], problems)
    assert stats["attempts"] == 0 and math.isnan(stats["honest_check_share"])
