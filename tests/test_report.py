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
