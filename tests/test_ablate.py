"""ablate.py: the one command that builds the ablation table runs every variant and prints the table."""
import ablate


def test_ablation_runs_every_variant_and_prints_one_table_row_each(tmp_path, capsys):
    tiny = "--task=arithmetic --n_layer=1 --n_embd=16 --eval_problems=4 --digits=2 --block_size=48 --max_new_tokens=24"
    ablate.main([f"--out_dir={tmp_path}", "--seeds=2", "--rl_steps=1", "--sft_steps=2", f"--train_args={tiny}"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "variant" not in line]
    assert len(rows) == 1 + len(ablate.VARIANTS)  # "before RL" + one per variant
    assert "held-out 4 problems, 1 RL steps" in out
    for name in ablate.VARIANTS:
        assert any(row.startswith(f"| {name} |") for row in rows)
