"""ablate.py: the one command that builds an ablation table runs every variant and prints the table."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import ablate
import train

ARITHMETIC = "--task=arithmetic --n_layer=1 --n_embd=16 --eval_problems=4 --digits=2 --block_size=48 --max_new_tokens=24"
PAIRS = "--n_layer=1 --n_embd=16 --eval_problems=4 --pass_k=2 --sft_batch_size=4 --prompts_per_step=2"


@pytest.mark.parametrize("table, tiny, cold_starts", [("recipe", ARITHMETIC, 1), ("cold_start", PAIRS, 3)])
def test_ablation_runs_every_variant_and_prints_one_table_row_each(tmp_path, capsys, table, tiny, cold_starts):
    ablate.main([f"--out_dir={tmp_path}", f"--table={table}", "--seeds=2", "--rl_steps=1", "--sft_steps=2",
                 f"--train_args={tiny}"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "variant" not in line]
    variants = ablate.TABLES[table]
    assert len(rows) == cold_starts + len(variants)  # "after SFT only" per cold start, + one per variant
    assert "held-out 4 problems, 1 RL steps" in out
    for name in variants:
        assert any(row.startswith(f"| {name} |") for row in rows)


def test_parallel_jobs_give_the_same_table_as_one_process(tmp_path, capsys):
    threads, tables = torch.get_num_threads(), []
    for jobs in (1, 3):
        ablate.main([f"--out_dir={tmp_path / str(jobs)}", "--table=recipe", "--seeds=1", "--rl_steps=1",
                     "--sft_steps=2", f"--jobs={jobs}", f"--train_args={ARITHMETIC} --threads=1"])
        rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
        tables.append([row.rsplit("|", 2)[0] for row in rows])  # all but the wall-time column
    torch.set_num_threads(threads)  # (train.py set 1 in this process)
    assert tables[0] == tables[1]


def test_equal_token_accuracy_is_best_of_n_at_the_defaults_token_count():
    runs = [{"after": {"sample_length": 10.0, "pass_at": [0.2, 0.3, 0.4, 0.5]}}]
    assert ablate.equal_token_accuracy(runs, [35.0]).startswith("0.400")  # 35 // 10 = best of 3
    assert ablate.equal_token_accuracy(runs, [500.0]).startswith("0.500")  # at most k
    assert ablate.equal_token_accuracy(runs, [5.0]) == "0.200 ± 0.000"  # a longer policy gets one sample


@pytest.mark.parametrize("arg", ["--rl_steps=20", "--seed=3", "--cold_start=direct", "--out_dir=x"])
def test_train_args_may_not_set_what_ablate_sets_for_each_run(arg, monkeypatch, tmp_path):
    # (train.py takes the last flag: these would turn the cold starts or the variants into other runs)
    fake_train(monkeypatch)  # (were it not refused: no training run)
    with pytest.raises(ValueError, match=f"--train_args={arg}: ablate.py sets {arg.split('=')[0]} for each run"):
        ablate.main([f"--out_dir={tmp_path}", f"--train_args={arg}"])


# -----------------------------------------------------------------------------
# ablate.py around a stand-in for train.main: every number in the table known in advance

# a small table of ours: two cold-start styles; --gain and --length are the stand-in's own options
TABLE = {"the default": ("search", []), "a variant": ("search", ["--gain=0.5", "--length=16"]),
         "another cold start": ("direct", ["--gain=0.04"])}


def evaluation(x, length, attempts=True):
    """A held-out evaluation whose numbers are x (the run) plus an offset per key; its sampled length: length."""
    return {"accuracy": x, "sample_accuracy": x + 0.01, "pass@4": x + 0.02, "pass_at": [x + 0.01, x + 0.012, x + 0.014,
            x + 0.02], "sample_length": length,
            **({"attempts": 1 + x, "sample_attempts": 2 + x, "after_fail_share": x + 0.03, "honest_check_share": x + 0.04}
               if attempts else {})}


def fake_train(monkeypatch, attempts=True):
    """Replaces train.main by a stand-in that records each argv (-> the list returned) and leaves in its
    --out_dir what a train.py run leaves there. A cold start (no --init_from) refuses an out_dir holding a run
    unless --overwrite=true, evaluates to x = seed / 10 (+ 0.2 for the direct style) with sampled length 20 + 10 x
    (its final evaluation, sampled anew: x + 0.005), and saves the first as its "checkpoint"; a resumed run
    evaluates to x = its checkpoint's accuracy + --gain, with sampled length --length (else 30 + 10 x).
    RL wall time: 1000 + 100 x."""
    calls = []

    def main(argv):
        calls.append(argv)
        args = dict(arg[2:].split("=", 1) for arg in argv)
        out, gain = args["out_dir"], float(args.get("gain", 0))
        if args.get("init_from") == "resume":
            with open(os.path.join(out, "ckpt.pt")) as f:
                before = json.load(f)
            x = before["accuracy"] + gain
            after = evaluation(x, float(args.get("length", 30 + 10 * x)), attempts)
            assert os.path.exists(os.path.join(out, "metrics.jsonl"))
        else:
            found = [f for f in ("ckpt.pt", "metrics.jsonl") if os.path.exists(os.path.join(out, f))]
            if found and args.get("overwrite") != "true":
                raise ValueError(f"{out} already holds a run ({', '.join(found)})")
            x = int(args["seed"]) / 10 + (0.2 if args.get("cold_start") == "direct" else 0) + gain
            before, after = evaluation(x, 20 + 10 * x, attempts), evaluation(x + 0.005, 20 + 10 * x, attempts)
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "ckpt.pt"), "w") as f:
                json.dump(before, f)
            with open(os.path.join(out, "metrics.jsonl"), "w") as f:
                f.write(json.dumps({"step": 0, "phase": "eval", "cold start of": out}) + "\n")
        summary = {"before": before, "after": after, "config": {"eval_problems": 7}, "sft_time": 1.0,
                   "rl_time": 100 * after["accuracy"] + 1000}
        with open(os.path.join(out, "summary.json"), "w") as f:
            json.dump(summary, f)
    monkeypatch.setattr(train, "main", main)
    return calls


def ablate_table(monkeypatch, tmp_path, *args, attempts=True):
    """ablate.main on TABLE, seeds 1 and 2, with the stand-in -> the argv of each train.py run."""
    monkeypatch.setitem(ablate.TABLES, "cold_start", TABLE)
    calls = fake_train(monkeypatch, attempts)
    ablate.main([f"--out_dir={tmp_path}", "--seeds=2", "--rl_steps=5", "--sft_steps=3", *args])
    return calls


def option(argv, key):
    return next((arg.split("=", 1)[1] for arg in argv if arg.startswith(f"--{key}=")), None)


def cold_starts(calls):
    return [argv for argv in calls if option(argv, "init_from") is None]


def continued(calls):
    return [argv for argv in calls if option(argv, "init_from") == "resume"]


def table_rows(capsys):
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]


def test_cell_is_the_mean_and_half_the_range():
    assert ablate.cell([2, 6, 1]) == "3.000 ± 2.500"  # (neither end first or last)


def test_each_variant_runs_with_its_own_options_last(monkeypatch, tmp_path):
    calls = ablate_table(monkeypatch, tmp_path)
    ends = [argv[argv.index("--eval_every=0") + 1:] for argv in continued(calls)]  # (the last flag wins in train.py)
    assert ends == [[], ["--gain=0.5", "--length=16"], ["--gain=0.04"]] * 2


def test_every_variant_of_the_real_tables_gets_its_options(monkeypatch, tmp_path):
    monkeypatch.setattr(ablate, "evaluate_harder", lambda out, options: {})  # (the stand-in's checkpoints are JSON)
    monkeypatch.setattr(ablate, "print_long_table", lambda *args: None)
    for table, variants in ablate.TABLES.items():
        calls = fake_train(monkeypatch)
        ablate.main([f"--out_dir={tmp_path / table}", f"--table={table}", "--seeds=1", "--rl_steps=5", "--sft_steps=3"])
        assert [argv[len(argv) - len(options):] for argv, (_, options) in zip(continued(calls), variants.values())] \
            == [options for _, options in variants.values()]


def test_each_variant_runs_the_rl_steps_asked_for(monkeypatch, tmp_path):
    calls = ablate_table(monkeypatch, tmp_path)
    assert [option(argv, "rl_steps") for argv in continued(calls)] == ["5"] * 6


def test_cold_starts_run_the_sft_steps_asked_for_and_no_rl_step(monkeypatch, tmp_path):
    calls = ablate_table(monkeypatch, tmp_path)
    assert [(option(argv, "sft_steps"), option(argv, "rl_steps")) for argv in cold_starts(calls)] == [("3", "0")] * 4


def test_steps_left_at_0_are_train_py_defaults(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(ablate.TABLES, "cold_start", TABLE)
    calls = fake_train(monkeypatch)
    ablate.main([f"--out_dir={tmp_path}", "--seeds=1"])
    defaults = train.TrainConfig()
    assert {option(argv, "sft_steps") for argv in cold_starts(calls)} == {str(defaults.sft_steps)}
    assert {option(argv, "rl_steps") for argv in continued(calls)} == {str(defaults.rl_steps)}
    assert f"{defaults.rl_steps} RL steps after {defaults.sft_steps} SFT steps" in capsys.readouterr().out


def test_one_cold_start_per_style_and_seed_with_seeds_from_1(monkeypatch, tmp_path):
    calls = ablate_table(monkeypatch, tmp_path, "--seeds=3")
    assert [(option(argv, "seed"), option(argv, "cold_start")) for argv in cold_starts(calls)] == \
        [("1", "search"), ("1", "direct"), ("2", "search"), ("2", "direct"), ("3", "search"), ("3", "direct")]


def test_every_cold_start_has_its_own_folder(monkeypatch, tmp_path):
    calls = ablate_table(monkeypatch, tmp_path)
    assert len({option(argv, "out_dir") for argv in cold_starts(calls)}) == 4


def test_every_variant_and_seed_has_its_own_folder(monkeypatch, tmp_path):
    calls = ablate_table(monkeypatch, tmp_path)
    folders = {option(argv, "out_dir") for argv in continued(calls)}
    assert len(folders) == 6 and not folders & {option(argv, "out_dir") for argv in cold_starts(calls)}


def test_a_variant_continues_a_copy_of_its_cold_starts_log(monkeypatch, tmp_path):
    calls = ablate_table(monkeypatch, tmp_path)
    for argv in continued(calls):
        record = json.loads(open(os.path.join(option(argv, "out_dir"), "metrics.jsonl")).readline())
        assert os.path.basename(record["cold start of"]).startswith(f"sft-{'direct' if '--gain=0.04' in argv else 'search'}")
        assert record["cold start of"].endswith(f"-seed{option(argv, 'out_dir')[-1]}")


def test_a_second_call_reuses_the_cold_starts_and_reruns_the_variants(monkeypatch, tmp_path):
    ablate_table(monkeypatch, tmp_path)
    calls = ablate_table(monkeypatch, tmp_path)  # the variants' folders exist now
    assert cold_starts(calls) == [] and len(continued(calls)) == 6


def test_other_train_args_make_other_cold_starts(monkeypatch, tmp_path):
    ablate_table(monkeypatch, tmp_path)
    calls = ablate_table(monkeypatch, tmp_path, "--train_args=--n_layer=2")
    assert len(cold_starts(calls)) == 4 and all(argv[0] == "--n_layer=2" for argv in calls)


def test_other_sft_steps_make_other_cold_starts(monkeypatch, tmp_path):
    ablate_table(monkeypatch, tmp_path)
    calls = ablate_table(monkeypatch, tmp_path, "--sft_steps=4")
    assert [option(argv, "sft_steps") for argv in cold_starts(calls)] == ["4"] * 4


def test_a_cold_start_that_did_not_finish_is_run_again_over_its_folder(monkeypatch, tmp_path):
    calls = ablate_table(monkeypatch, tmp_path)
    unfinished = option(cold_starts(calls)[0], "out_dir")
    os.remove(os.path.join(unfinished, "summary.json"))  # its ckpt.pt and metrics.jsonl are still there
    calls = ablate_table(monkeypatch, tmp_path)
    assert [option(argv, "out_dir") for argv in cold_starts(calls)] == [unfinished]


def test_the_table_has_a_column_per_number_the_task_reports(monkeypatch, tmp_path, capsys):
    ablate_table(monkeypatch, tmp_path)
    header, separator = table_rows(capsys)[:2]
    assert header == ("| variant | greedy accuracy | sampled accuracy | pass@4 | sampled length | attempts (sampled) | "
                      "answers after own ✗ (greedy) | honest checks (greedy) | accuracy at the default's sampled tokens"
                      " | RL wall time (s) |")
    assert separator == "|---" * 10 + "|"


def test_the_table_of_a_task_without_attempts_has_no_search_columns(monkeypatch, tmp_path, capsys):
    ablate_table(monkeypatch, tmp_path, attempts=False)
    header, separator = table_rows(capsys)[:2]
    assert header == "| variant | greedy accuracy | sampled accuracy | pass@4 | sampled length | RL wall time (s) |"
    assert separator == "|---" * 6 + "|"


def test_the_after_sft_rows_show_each_cold_starts_evaluation(monkeypatch, tmp_path, capsys):
    # seeds 1, 2: search cold starts at 0.1, 0.2; direct ones at 0.3, 0.4
    ablate_table(monkeypatch, tmp_path)
    rows = table_rows(capsys)[2:4]
    assert rows == ["| after SFT only (search cold start) | 0.150 ± 0.050 | 0.160 ± 0.050 | 0.170 ± 0.050 | "
                    "21.500 ± 0.500 | 2.150 ± 0.050 | 0.180 ± 0.050 | 0.190 ± 0.050 | - | - |",
                    "| after SFT only (direct cold start) | 0.350 ± 0.050 | 0.360 ± 0.050 | 0.370 ± 0.050 | "
                    "23.500 ± 0.500 | 2.350 ± 0.050 | 0.380 ± 0.050 | 0.390 ± 0.050 | - | - |"]


def test_the_variant_rows_show_each_variants_evaluation_after_rl(monkeypatch, tmp_path, capsys):
    # seeds 1, 2: the default at 0.1, 0.2 (sampled length 31, 32); the variant at 0.6, 0.7 (sampled length 16: at
    # the default's tokens best of 31 // 16 = 1 and 32 // 16 = 2, pass_at 0.61 and 0.712); the other cold start
    # at 0.34, 0.44 (sampled length 33.4, 34.4: best of 1)
    ablate_table(monkeypatch, tmp_path)
    rows = table_rows(capsys)[4:]
    assert rows == [
        "| the default | 0.150 ± 0.050 | 0.160 ± 0.050 | 0.170 ± 0.050 | 31.500 ± 0.500 | 2.150 ± 0.050 | "
        "0.180 ± 0.050 | 0.190 ± 0.050 | 0.160 ± 0.050 | 1015 ± 5 |",
        "| a variant | 0.650 ± 0.050 | 0.660 ± 0.050 | 0.670 ± 0.050 | 16.000 ± 0.000 | 2.650 ± 0.050 | "
        "0.680 ± 0.050 | 0.690 ± 0.050 | 0.661 ± 0.051 (n=1..2) | 1065 ± 5 |",
        "| another cold start | 0.390 ± 0.050 | 0.400 ± 0.050 | 0.410 ± 0.050 | 33.900 ± 0.500 | 2.390 ± 0.050 | "
        "0.420 ± 0.050 | 0.430 ± 0.050 | 0.400 ± 0.050 | 1039 ± 5 |"]


def test_a_variant_that_samples_no_tokens_gets_best_of_k_at_the_defaults_tokens(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(ablate.TABLES, "cold_start", {"the default": ("search", []), "silent": ("search", ["--length=0"])})
    fake_train(monkeypatch)
    ablate.main([f"--out_dir={tmp_path}", "--seeds=2", "--rl_steps=5", "--sft_steps=3"])
    assert table_rows(capsys)[-1].endswith("| 0.170 ± 0.050 (n=4..4) | 1015 ± 5 |")  # pass@4 of 0.1, 0.2


def test_equal_token_accuracy_names_the_smallest_and_largest_n():
    runs = [{"after": {"sample_length": 10.0, "pass_at": [0.2, 0.3, 0.4, 0.5]}},
            {"after": {"sample_length": 20.0, "pass_at": [0.1, 0.2, 0.3, 0.4]}}]
    assert ablate.equal_token_accuracy(runs, [35.0, 20.0]) == "0.250 ± 0.150 (n=1..3)"  # best of 3 and of 1


def test_seeds_below_1_are_refused(monkeypatch, tmp_path):
    fake_train(monkeypatch)  # (were it not refused: no training run)
    with pytest.raises(ValueError, match="--seeds must be >= 1, got 0"):
        ablate.main([f"--out_dir={tmp_path}", "--seeds=0"])


def test_train_args_may_not_set_eval_every(monkeypatch, tmp_path):
    # (each run evaluates once at its end: the table compares the final evaluations)
    fake_train(monkeypatch)  # (were it not refused: no training run)
    with pytest.raises(ValueError, match="--train_args=--eval_every=1: ablate.py sets --eval_every for each run"):
        ablate.main([f"--out_dir={tmp_path}", "--train_args=--eval_every=1"])


def test_parallel_jobs_run_train_py_in_processes_not_in_this_one(monkeypatch):
    ran = []
    monkeypatch.setattr(ablate.subprocess, "run", lambda command, **kwargs: ran.append(command) or
                        subprocess.CompletedProcess(command, 0, "", ""))
    monkeypatch.setattr(train, "main", lambda argv: pytest.fail("train.main called in this process"))
    ablate.run_all([["--seed=1"], ["--seed=2"]], jobs=2)
    script = os.path.join(os.path.dirname(os.path.abspath(ablate.__file__)), "train.py")
    assert sorted(ran) == [[sys.executable, script, "--seed=1"], [sys.executable, script, "--seed=2"]]


def test_a_failing_run_under_parallel_jobs_raises_naming_its_command():
    with pytest.raises(RuntimeError, match="train.py --no_such_key=1 failed:\n.*unknown config key 'no_such_key'"):
        ablate.run_all([["--no_such_key=1"]], jobs=2)


# -----------------------------------------------------------------------------
# the long tables: structured vs free search, outcome vs step rewards (real tiny runs)

@pytest.mark.parametrize("table", ["structure", "process"])
def test_a_long_table_prints_every_cell_as_a_number_its_curves_and_draws_them(tmp_path, capsys, table):
    ablate.main([f"--out_dir={tmp_path}", f"--table={table}", "--seeds=1", "--rl_steps=2", "--sft_steps=2",
                 "--eval_every=1", f"--train_args={PAIRS}"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    variants = ablate.TABLES[table]
    final = rows[:1 + len(dict.fromkeys(s for s, _ in variants.values())) + len(variants)]  # (header, no |---)
    for row in final[1:]:
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        # (nan: the share of honest checks of a tiny untrained model that writes no checks at all)
        assert all(c == "-" or re.fullmatch(r"-?[0-9.]+ ± [0-9.]+|nan ± nan", c) for c in cells), row  # no blank
    for name in variants:
        assert any(row.startswith(f"| {name} |") for row in final)
    curves = rows[len(final):]
    assert curves[0] == "| | variant | 0 | 1 | 2 |"  # an evaluation after SFT and after each RL step
    assert len(curves) == 1 + len(ablate.CURVES) * len(variants)
    assert ("harder task" in final[0]) == (table == "structure")
    assert os.path.getsize(tmp_path / f"{table}.png") > 0 or not matplotlib_installed()


def matplotlib_installed():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_the_structure_table_evaluates_each_final_policy_on_five_numbers(tmp_path, capsys):
    ablate.main([f"--out_dir={tmp_path}", "--table=structure", "--seeds=1", "--rl_steps=1", "--sft_steps=2",
                 f"--train_args={PAIRS}"])
    for i in range(len(ablate.STRUCTURE)):
        harder = json.load(open(tmp_path / f"structure{i}-seed1" / "harder.json"))
        assert harder["options"] == ["--numbers=5", "--max_new_tokens=112"]
        assert all(len(prompt.split("->")[0].split()) == 5 for prompt, _ in harder["examples"])


def test_the_long_tables_share_their_cold_starts(monkeypatch, tmp_path):
    monkeypatch.setattr(ablate, "evaluate_harder", lambda out, options: {})
    monkeypatch.setattr(ablate, "print_long_table", lambda *args: None)
    calls = fake_train(monkeypatch)
    ablate.main([f"--out_dir={tmp_path}", "--table=structure", "--seeds=1", "--rl_steps=5", "--sft_steps=3"])
    ablate.main([f"--out_dir={tmp_path}", "--table=process", "--seeds=1", "--rl_steps=5", "--sft_steps=3"])
    assert [option(argv, "cold_start") for argv in cold_starts(calls)] == ["search", "free"]  # none run again


def test_the_long_tables_default_to_their_own_budget_and_evaluation_cadence(monkeypatch, tmp_path):
    monkeypatch.setattr(ablate, "evaluate_harder", lambda out, options: {})
    monkeypatch.setattr(ablate, "print_long_table", lambda *args: None)
    calls = fake_train(monkeypatch)
    ablate.main([f"--out_dir={tmp_path}", "--table=structure", "--seeds=1", "--sft_steps=3"])
    assert {(option(argv, "rl_steps"), option(argv, "eval_every"), option(argv, "block_size"))
            for argv in continued(calls)} == {("300", "25", "128")}
