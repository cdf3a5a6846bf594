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


def test_rise_profile_says_no_rise_with_the_first_and_last_values():
    assert report.rise_profile([3.0, 2.5, 2.0]) == "no rise (3.00 -> 2.00)"


def test_rise_profile_takes_the_largest_rise_between_two_evals_not_a_larger_dip():
    # rise 0.5; intervals +1, -2, +1.5: the largest share of the rise is 1.5 / 0.5, not the dip's 2 / 0.5
    assert "the largest single interval carries 300% of the rise" in report.rise_profile([1.0, 2.0, 0.0, 1.5])


def test_rise_profile_counts_values_distinct_to_two_decimals():
    # 0.51 and 0.52 are two values to 2 decimals (one, 0.5, to 1)
    assert report.rise_profile([0.0, 0.51, 0.52, 1.0]).endswith(", 2 distinct values in between")


def test_the_example_is_the_first_problem_when_rl_turned_none_from_wrong_to_right(capsys):
    def evaluation(step, examples):
        return {"step": step, "phase": "eval", "accuracy": 0.5, "pass@2": 0.5, "sample_accuracy": 0.5,
                "length": 5.0, "sample_length": 5.0, "examples": examples}
    before = evaluation(10, [["p1 wrong", 0], ["p2 right", 1], ["p3 wrong", 0]])
    after = evaluation(12, [["p1 still wrong", 0], ["p2 now wrong", 0], ["p3 still wrong", 0]])
    summary = {"config": {"pass_k": 2, "eval_problems": 3, "sft_steps": 10}, "before": before, "after": after,
               "sft_time": 1.0, "rl_time": 2.0}
    report.print_summary(summary, [before, after])
    lines = capsys.readouterr().out.splitlines()
    assert "a held-out problem after SFT: 'p1 wrong'" in lines
    assert "the same problem after RL:    'p1 still wrong'" in lines


class Axes:
    """Stands in for a matplotlib Axes: records the (x, y) of each plot call as (axes name, label, x, y)."""
    def __init__(self, plotted, name):
        self.plotted, self.name = plotted, name

    def plot(self, x, y, *args, label=None, **kwargs):
        self.plotted.append((self.name, label, list(x), list(y)))
        return type("Line", (), {"get_label": lambda _: label})()

    def twinx(self):
        return Axes(self.plotted, self.name + " twin")

    def get_legend_handles_labels(self):
        return [], []

    def __getattr__(self, name):  # set, set_ylabel, legend: nothing to record
        return lambda *args, **kwargs: None


def plotted_curves(monkeypatch, records):
    """plot_curves(records) with pyplot's subplots and close replaced -> (what was plotted, the figures closed,
    the figure made)."""
    plt = pytest.importorskip("matplotlib.pyplot")
    plotted, closed = [], []
    fig = type("Figure", (), {"tight_layout": lambda self: None, "savefig": lambda self, *a, **k: None})()
    monkeypatch.setattr(plt, "subplots", lambda *a, **k: (fig, (Axes(plotted, "left"), Axes(plotted, "right"))))
    monkeypatch.setattr(plt, "close", closed.append)
    report.plot_curves(records, "unused.png")
    return plotted, closed, fig


def curve_records(attempts):
    """A hand-made log: evals at steps 10, 12, 14 (SFT ended at 10) and RL batches at steps 10..13, every
    number distinct."""
    evals = [{"step": step, "phase": "eval", "accuracy": 0.1 * i, "sample_accuracy": 0.1 * i + 0.05,
              "length": 10.0 + i, "sample_length": 20.0 + i,
              **({"attempts": 1.0 + i, "sample_attempts": 2.0 + i} if attempts else {})}
             for i, step in enumerate((10, 12, 14))]
    batches = [{"step": step, "phase": "rl", "reward_mean": 0.01 * step, "len_mean": 3.0 * step}
               for step in (10, 11, 12, 13)]
    return [evals[0], batches[0], batches[1], evals[1], batches[2], batches[3], evals[2]]


def test_curves_plot_greedy_and_sampled_accuracy_against_rl_steps_from_the_first_eval(monkeypatch):
    plotted, _, _ = plotted_curves(monkeypatch, curve_records(attempts=False))
    left = [(label, x, y) for axes, label, x, y in plotted if axes == "left"]
    assert left == [("accuracy, greedy", [0, 2, 4], pytest.approx([0.0, 0.1, 0.2])),
                    ("accuracy, sampled", [0, 2, 4], pytest.approx([0.05, 0.15, 0.25]))]


def test_curves_plot_greedy_and_sampled_attempts_when_the_task_counts_them(monkeypatch):
    plotted, _, _ = plotted_curves(monkeypatch, curve_records(attempts=True))
    twin = [(label, x, y) for axes, label, x, y in plotted if axes == "left twin"]
    assert twin == [("attempts, greedy", [0, 2, 4], [1.0, 2.0, 3.0]), ("attempts, sampled", [0, 2, 4], [2.0, 3.0, 4.0])]


def test_curves_plot_greedy_and_sampled_length_when_the_task_has_no_attempts(monkeypatch):
    plotted, _, _ = plotted_curves(monkeypatch, curve_records(attempts=False))
    twin = [(label, x, y) for axes, label, x, y in plotted if axes == "left twin"]
    assert twin == [("length, greedy", [0, 2, 4], [10.0, 11.0, 12.0]),
                    ("length, sampled", [0, 2, 4], [20.0, 21.0, 22.0])]


def test_curves_plot_the_training_batches_reward_and_length_against_rl_steps(monkeypatch):
    plotted, _, _ = plotted_curves(monkeypatch, curve_records(attempts=True))
    right = [(axes, label, x, y) for axes, label, x, y in plotted if axes.startswith("right")]
    assert right == [("right", "mean reward", [0, 1, 2, 3], [0.1, 0.11, 0.12, 0.13]),
                     ("right twin", "length", [0, 1, 2, 3], [30.0, 33.0, 36.0, 39.0])]


def test_curves_of_a_run_without_rl_steps_plot_its_evaluations_from_step_0(monkeypatch):
    # (an SFT-only run, as ablate.py's cold starts are: evaluations, no RL batches)
    evaluation = {"step": 4, "phase": "eval", "accuracy": 0.3, "sample_accuracy": 0.2, "length": 7.0,
                  "sample_length": 8.0}
    plotted, _, _ = plotted_curves(monkeypatch, [evaluation])
    assert ("left", "accuracy, greedy", [0], [0.3]) in plotted and ("right", "mean reward", [], []) in plotted


def test_curves_close_their_figure(monkeypatch):
    _, closed, fig = plotted_curves(monkeypatch, curve_records(attempts=True))
    assert closed == [fig]


def test_report_names_a_missing_metrics_log(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"before": {}, "after": {}, "config": {}, "sft_time": 1.0,
                                                        "rl_time": 2.0}))
    with pytest.raises(ValueError, match=f"{tmp_path / 'metrics.jsonl'} not found"):
        report.main([f"--out_dir={tmp_path}"])


def test_report_refuses_a_summary_that_is_not_a_dict(tmp_path):
    (tmp_path / "summary.json").write_text("[]")
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="is not a train.py summary"):
        report.main([f"--out_dir={tmp_path}"])


@pytest.mark.parametrize("missing", ["sft_time", "rl_time"])
def test_report_refuses_a_summary_without_a_wall_time(tmp_path, missing):
    evaluation = {"accuracy": 0.5, "pass@2": 0.5, "sample_accuracy": 0.5, "examples": [["p", 0]]}
    summary = {"before": evaluation, "after": evaluation, "config": {"pass_k": 2, "eval_problems": 1, "sft_steps": 1},
               "sft_time": 1.0, "rl_time": 2.0}
    del summary[missing]
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="is not a train.py summary"):
        report.main([f"--out_dir={tmp_path}"])


def fake_summary(out_dir, seed, x):
    """a finished run's summary.json whose evaluations are x (after SFT) and x + 0.5 (after RL), in every key"""
    os.makedirs(out_dir)
    evaluation = lambda v: {key: v for _, key, _ in report.SEED_ROWS}
    summary = {"before": evaluation(x), "after": evaluation(x + 0.5), "config": {"seed": seed}, "sft_time": 1.0,
               "rl_time": 1.0}
    (out_dir / "summary.json").write_text(json.dumps(summary))
    return str(out_dir)


def test_the_seed_table_has_a_column_per_run_and_writes_the_numbers_it_shows(tmp_path, capsys):
    runs = [fake_summary(tmp_path / f"s{seed}", seed, seed / 10) for seed in (1, 2)]
    report.main([f"--runs={','.join(runs)}", f"--results={tmp_path / 'results.json'}"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| held-out (200 problems) | seed 1: after SFT → after RL | seed 2: after SFT → after RL |"
    assert lines[2] == "| greedy accuracy | 0.100 → 0.600 | 0.200 → 0.700 |"
    assert lines[4] == "| attempts, sampled | 0.10 → 0.60 | 0.20 → 0.70 |"  # two digits for attempts
    assert len(lines) == 2 + len(report.SEED_ROWS)
    results = json.loads((tmp_path / "results.json").read_text())
    assert report.seed_table(results) == lines and results["2"]["after"]["accuracy"] == 0.7


def test_the_seed_table_names_a_run_that_has_not_finished(tmp_path):
    with pytest.raises(ValueError, match="unfinished/summary.json not found"):
        report.main([f"--runs={tmp_path / 'unfinished'}"])
