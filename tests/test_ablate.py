"""ablate.py: the one command that builds an ablation table runs every variant and prints the table."""
import pytest
import torch

import ablate

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
def test_train_args_may_not_set_what_ablate_sets_for_each_run(arg):
    # (train.py takes the last flag: these would turn the cold starts or the variants into other runs)
    with pytest.raises(ValueError, match=f"--train_args={arg}: ablate.py sets {arg.split('=')[0]} for each run"):
        ablate.main([f"--train_args={arg}"])
