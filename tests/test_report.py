"""report.py: a finished run's before/after table and curves, printed again from its out_dir."""
import json
import os

import pytest

import report
from test_train import run


def test_report_prints_again_the_table_and_curve_the_run_printed(tmp_path, capsys):
    out = run(tmp_path, "--eval_every=1")
    printed_by_train = capsys.readouterr().out
    report.main([f"--out_dir={out}"])
    printed_by_report = capsys.readouterr().out
    table = printed_by_report[printed_by_report.index("held-out (4 problems)"):]
    assert "greedy accuracy" in table and "RL step" in table and "attempts" not in table  # arithmetic: no checks
    assert table in printed_by_train


def test_report_adds_up_the_time_of_every_held_out_evaluation(tmp_path, capsys):
    out = run(tmp_path, "--eval_every=1")  # before RL, after each of the 3 RL steps (the last is the final one)
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    seconds = [r["eval_time"] for r in records if r["phase"] == "eval"]
    assert len(seconds) == 4 and all(s > 0 for s in seconds)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("held-out evaluations (s)"))
    assert line.split()[3:] == [f"{sum(seconds):.0f}", "(4", "of", "them)"]


def test_report_redraws_the_curves(tmp_path):
    pytest.importorskip("matplotlib")
    out = run(tmp_path, "--eval_every=1")
    os.remove(os.path.join(out, "curves.png"))
    report.main([f"--out_dir={out}"])
    assert open(os.path.join(out, "curves.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_report_names_the_missing_file_of_an_unfinished_run(tmp_path):
    os.makedirs(tmp_path / "half")
    (tmp_path / "half" / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="summary.json not found"):
        report.main([f"--out_dir={tmp_path / 'half'}"])


@pytest.mark.parametrize("content", ["{not json", json.dumps({"before": {}})])
def test_report_refuses_a_summary_that_train_did_not_write(tmp_path, content):
    (tmp_path / "summary.json").write_text(content)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="is not a train.py summary"):
        report.main([f"--out_dir={tmp_path}"])


def test_rise_profile_tells_a_step_from_a_gradual_rise():
    assert "carries 100% of the rise, 0 distinct" in report.rise_profile([2.0, 2.0, 4.0, 4.0])
    assert "carries 25% of the rise, 3 distinct" in report.rise_profile([1.0, 1.5, 2.0, 2.5, 3.0])
    assert report.rise_profile([3.0, 2.0]).startswith("no rise")


def test_report_names_the_line_of_a_damaged_log(tmp_path):
    out = run(tmp_path)
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write('{"step": 9, "pha\n')  # what a crash mid-write could leave
    lines = sum(1 for _ in open(os.path.join(out, "metrics.jsonl")))
    with pytest.raises(ValueError, match=f"metrics.jsonl:{lines} is not a JSON record"):
        report.main([f"--out_dir={out}"])


def test_the_summary_table_puts_each_number_in_its_row_and_column(capsys):
    # a hand-made run: every value distinct, so a row or column mixed up shows
    def evaluation(step, accuracy, attempts, length, right):
        return {"step": step, "phase": "eval", "accuracy": accuracy, "pass@4": accuracy + 0.1,
                "sample_accuracy": accuracy + 0.05, "attempts": attempts, "sample_attempts": attempts + 0.5,
                "length": length, "sample_length": length + 1, "eval_time": 2.0,
                "examples": [["p1 wrong", 0], ["p2 " + ("right" if right else "wrong"), right]]}
    records = [evaluation(10, 0.1, 1.0, 5.0, 0), evaluation(12, 0.4, 1.21, 6.0, 1), evaluation(14, 0.7, 2.0, 9.0, 1)]
    summary = {"config": {"pass_k": 4, "eval_problems": 3, "sft_steps": 10}, "before": records[0],
               "after": records[-1], "sft_time": 11.0, "rl_time": 22.0}
    report.print_summary(summary, records)
    lines = capsys.readouterr().out.splitlines()
    row = lambda name, *cells: f"{name:<32}" + "".join(cells)
    assert row("held-out (3 problems)", f"{'after SFT':>12}", f"{'after RL':>12}") in lines
    assert row("greedy accuracy", f"{0.1:>12.3f}", f"{0.7:>12.3f}") in lines
    assert row("pass@4", f"{0.2:>12.3f}", f"{0.8:>12.3f}") in lines
    assert row("length (tokens), greedy", f"{5.0:>12.3f}", f"{9.0:>12.3f}") in lines
    assert row("length (tokens), sampled", f"{6.0:>12.3f}", f"{10.0:>12.3f}") in lines
    assert row("wall time (s)", f"{11:>12}", f"{22:>12}") in lines
    assert row("held-out evaluations (s)", f"{6:>24}") + "  (3 of them)" in lines
    assert "a held-out problem after SFT: 'p2 wrong'" in lines and "the same problem after RL:    'p2 right'" in lines
    assert row("RL step", f"{0:>6}{2:>6}{4:>6}") in lines
    assert row("attempts, greedy", f"{1.0:>6.1f}{1.2:>6.1f}{2.0:>6.1f}") in lines
    assert row("sampled accuracy", f"{0.15:>6.2f}{0.45:>6.2f}{0.75:>6.2f}") in lines
    assert "attempts: 1.00 -> 2.00, the largest single interval carries 79% of the rise, 1 distinct values in between" \
        in lines
    assert "length: 5.00 -> 9.00, the largest single interval carries 75% of the rise, 1 distinct values in between" \
        in lines
