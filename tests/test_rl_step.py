"""What an RL step and an evaluation pass to each other, checked with a stand-in policy whose answers are
known: `train.generate` replaced by one that writes, for each prompt, the task's own right trace or an empty
completion: in RL the even rows are right, in the evaluation's samples three rows of four, greedily all. The model still trains on what
it "sampled", so every number of the run's log can be worked out here from the completions alone."""
import math
import random
import sys

import pytest
import torch

import train
from common import encode
from test_train import PAIRS_TINY, log_records

P, G = 2, 4  # PAIRS_TINY's prompts_per_step, samples_per_prompt
OPTIONS = ["--quit_max=0", "--temperature=0.7", "--wrong_reward=-1", "--length_penalty=0.5",
           "--length_penalty_warmup=0", "--prioritized=true", "--problem_pool=50", "--rl_steps=3"]


def right_trace(task, problem):
    return task.trace(problem, "search", random.Random(0))  # quit_max=0: it searches on until it is right


@pytest.fixture(scope="module")
def stand_in_run(tmp_path_factory):
    """One tiny pairs run with the stand-in policy -> (its log records, the calls, the RL updates' inputs)."""
    out, problems, calls, updates = tmp_path_factory.mktemp("run"), {}, [], []

    def recording_task(cfg):
        task = make_task(cfg)
        sample = task.sample
        def recorded(split, rng):
            problem = sample(split, rng)
            problems[problem.prompt] = problem
            return problem
        task.sample = recorded
        return task

    def stand_in_generate(model, prompts, max_new_tokens, temperature=1.0, stop_tokens=(), generator=None, **kw):
        caller, (eot,) = sys._getframe(1).f_code.co_name, stop_tokens
        every = 2 if caller == "rollout" else 4  # the last row of every 2 (RL) or 4 (evaluation) is wrong
        completions = []
        for i, prompt in enumerate(prompts):
            problem = problems[tokenizer.decode(prompt)]
            right = temperature == 0 or i % every != every - 1
            completions.append((encode(tokenizer, right_trace(task, problem)) if right else []) + [eot])
        calls.append(dict(caller=caller, temperature=temperature, prompts=prompts, completions=completions,
                          seed=generator.initial_seed() if generator is not None else None))
        return completions

    def recording_update(run, idx, targets, mask, rewards, group_ids, fused_step=None):
        updates.append(dict(lr=run.optimizer.param_groups[0]["lr"], rewards=rewards.clone(), group_ids=group_ids))
        return policy_update(run, idx, targets, mask, rewards, group_ids, fused_step)

    make_task, policy_update = train.make_task, train.policy_update
    cfg = train.parse_config(train.TrainConfig, PAIRS_TINY + OPTIONS)
    task, tokenizer = make_task(cfg), train.get_tokenizer("char")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "make_task", recording_task)
        mp.setattr(train, "generate", stand_in_generate)
        mp.setattr(train, "policy_update", recording_update)
        train.main(PAIRS_TINY + OPTIONS + [f"--out_dir={out}"])
    return dict(records=log_records(out), calls=calls, updates=updates, cfg=cfg, task=task, problems=problems)


def rl_records(run):
    return [r for r in run["records"] if r["phase"] == "rl"]


def rl_calls(run):
    return [c for c in run["calls"] if c["caller"] == "rollout"]


def test_each_completion_is_scored_against_its_own_problem(stand_in_run):
    # half of each group is the right trace of its own prompt: scored against another problem it would not be
    assert [r["accuracy"] for r in rl_records(stand_in_run)] == [0.5, 0.5, 0.5]


def test_the_search_statistics_of_an_rl_step_are_of_its_own_problems(stand_in_run):
    task, tokenizer = stand_in_run["task"], train.get_tokenizer("char")
    for record, call in zip(rl_records(stand_in_run), rl_calls(stand_in_run)):
        assert record["honest_check_share"] == 1.0  # every ✓ and ✗ of a right trace is true of its problem
        attempts = [task.self_check_stats(tokenizer.decode(c[:-1]), stand_in_run["problems"][tokenizer.decode(p)])
                    ["attempts"] for p, c in zip(call["prompts"], call["completions"])]
        assert record["attempts"] == pytest.approx(sum(attempts) / len(attempts)) and max(attempts) > 1


def test_the_samples_of_one_problem_share_a_group_id(stand_in_run):
    for update in stand_in_run["updates"]:
        assert update["group_ids"].tolist() == [0] * G + [1] * G


def test_rewards_are_one_or_wrong_reward_plus_the_length_reward(stand_in_run):
    cfg = stand_in_run["cfg"]
    for step, (update, call) in enumerate(zip(stand_in_run["updates"], rl_calls(stand_in_run))):
        correct = torch.tensor([1.0, 0.0] * (P * G // 2))
        length = train.length_reward(cfg, cfg.sft_steps + step, call["completions"], correct,
                                     torch.arange(P).repeat_interleave(G))
        assert length.abs().sum() > 0  # (the length reward is on: right traces differ in length from empty ones)
        assert update["rewards"].tolist() == pytest.approx((torch.where(correct > 0, 1.0, -1.0) + length).tolist())


def test_the_logged_length_reward_is_the_batch_mean(stand_in_run):
    cfg = stand_in_run["cfg"]
    for step, (record, update) in enumerate(zip(rl_records(stand_in_run), stand_in_run["updates"])):
        correct = torch.tensor([1.0, 0.0] * (P * G // 2))
        expected = (update["rewards"] - torch.where(correct > 0, 1.0, -1.0)).mean().item()
        assert record["length_reward"] == pytest.approx(expected)


def test_each_rl_step_sets_its_own_learning_rate(stand_in_run):
    cfg = stand_in_run["cfg"]  # (in RL's warm-up the rate changes every step)
    lrs = [u["lr"] for u in stand_in_run["updates"]]
    assert lrs == pytest.approx([train.learning_rate(cfg, cfg.sft_steps + s) for s in range(3)]) and len(set(lrs)) > 1


def test_rl_samples_at_the_configured_temperature_with_a_new_seed_each_step(stand_in_run):
    calls = rl_calls(stand_in_run)
    assert [c["temperature"] for c in calls] == [0.7] * 3
    assert len({c["seed"] for c in calls}) == 3


def test_evaluation_samples_greedily_and_at_the_configured_temperature(stand_in_run):
    calls = [c for c in stand_in_run["calls"] if c["caller"] == "evaluate"]
    assert len(calls) == 2 * 4  # after SFT, after each of the 3 RL steps (eval_every=1; the last is finish's)
    assert [c["temperature"] for c in calls] == [0, 0.7] * 4


def test_the_prioritized_pool_remembers_the_share_of_right_samples(stand_in_run):
    # each chosen problem was right in half its samples: weight 1 - 0.5; problems never chosen keep weight 1
    for record in rl_records(stand_in_run):
        assert record["sampling_weight_min"] == pytest.approx(0.5)


def test_eval_statistics_come_from_their_own_completions(stand_in_run):
    evals = [c for c in stand_in_run["calls"] if c["caller"] == "evaluate"]
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
