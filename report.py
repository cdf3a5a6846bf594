"""
What a finished run did, read back from its out_dir: the held-out evaluation after SFT and after
RL side by side, the held-out curve during RL (one column per evaluation), how gradual each rise
was, and curves.png. train.py prints this at the end of every run; this file prints it again for
any finished run, e.g. to compare forks: it reads summary.json and metrics.jsonl and redraws
curves.png. Nothing here is the method. With --runs it reads several finished runs (one per seed)
and prints the README's seed table, writing the numbers it shows to a JSON file (docs/results.json:
the one source the README's headline numbers come from, checked by tests/test_docs.py).

    python report.py --out_dir=out
    python report.py --runs=out/seed1,out/seed2,out/seed3 --results=docs/results.json
"""
import json
import os
import sys
from dataclasses import dataclass

from common import parse_config, read_log

# (label, key in an eval record); rows whose key a task does not report are left out
SUMMARY_ROWS = [("greedy accuracy", "accuracy"), ("pass@k", "pass@k"), ("sampled accuracy", "sample_accuracy")] + [
    (f"{name}, {how}", prefix + key) for name, key in (
        ("length (tokens)", "length"), ("attempts", "attempts"), ("answers after own ✗", "after_fail_share"),
        ("honest checks", "honest_check_share"), ("step-by-step share", "step_by_step"))
    for how, prefix in (("greedy", ""), ("sampled", "sample_"))]

def print_report(summary, log_path, png_path):
    """The tables (print_summary) and curves.png (plot_curves) of a run, its metrics.jsonl read once."""
    records = read_log(log_path)
    print_summary(summary, records)
    plot_curves(records, png_path)

def print_summary(summary, records):
    """The before/after table, then the held-out curve: how accuracy, length and the search moved
    together during RL (one column per evaluation)."""
    cfg, before, after = summary["config"], summary["before"], summary["after"]
    k = f"pass@{cfg['pass_k']}"
    rows = [(name.replace("pass@k", k), key.replace("pass@k", k)) for name, key in SUMMARY_ROWS]
    rows = [(name, key) for name, key in rows if key in after]
    print(f"\n{'held-out (' + str(cfg['eval_problems']) + ' problems)':<32}{'after SFT':>12}{'after RL':>12}")
    for name, key in rows:
        print(f"{name:<32}{before[key]:>12.3f}{after[key]:>12.3f}")
    print(f"{'wall time (s)':<32}{summary['sft_time']:>12.0f}{summary['rl_time']:>12.0f}")
    evals = [r for r in records if r["phase"] == "eval"]
    if all("eval_time" in r for r in evals):  # (logs written before it was recorded have none)
        print(f"{'held-out evaluations (s)':<32}{sum(r['eval_time'] for r in evals):>24.0f}  ({len(evals)} of them)")
    # the same held-out problem before and after RL: the first one that RL turned from wrong to right
    pairs = list(zip(before["examples"], after["examples"]))
    (text_before, _), (text_after, _) = next(((b, a) for b, a in pairs if a[1] > b[1]), pairs[0])
    print(f"a held-out problem after SFT: {text_before!r}")
    print(f"the same problem after RL:    {text_after!r}")
    print(f"\n{'RL step':<32}" + "".join(f"{r['step'] - cfg['sft_steps']:>6}" for r in evals))
    for name, key in rows:
        digits = 1 if "length" in key or "attempts" in key else 2
        if key != k:  # (pass@k has no curve)
            print(f"{name:<32}" + "".join(f"{r[key]:>6.{digits}f}" for r in evals))
    for key in ("attempts", "sample_attempts", "length", "sample_length"):
        if key in after and len(evals) > 2:
            print(f"{key}: {rise_profile([r[key] for r in evals])}")

def rise_profile(values):
    """Was the rise gradual? The total change from first to last value, the largest share of it that
    one interval between two evals carries, and how many distinct values (to 2 decimals) the evals between
    the first and the last take, other than the two end values. Read them together: a switch followed by
    noise around the plateau also has several distinct values, but one interval then carries ~100%."""
    rise = values[-1] - values[0]
    if rise <= 0:
        return f"no rise ({values[0]:.2f} -> {values[-1]:.2f})"
    largest = max(b - a for a, b in zip(values, values[1:]))
    distinct = len({round(v, 2) for v in values[1:-1]} - {round(values[0], 2), round(values[-1], 2)})
    return (f"{values[0]:.2f} -> {values[-1]:.2f}, the largest single interval carries {largest / rise:.0%} "
            f"of the rise, {distinct} distinct values in between")

def plot_curves(records, png_path):
    """If matplotlib is installed (optional): held-out accuracy with length or attempts (do they rise
    together?), and the training batches' reward and length."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rl, ev = ([r for r in records if r["phase"] == phase] for phase in ("rl", "eval"))
    if not ev:  # (a run cut short before its first evaluation)
        return
    step0 = ev[0]["step"]
    x, xr = [r["step"] - step0 for r in ev], [r["step"] - step0 for r in rl]
    key = "attempts" if "attempts" in ev[0] else "length"
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4))
    left.plot(x, [r["accuracy"] for r in ev], "o-", color="C0", label="accuracy, greedy")
    left.plot(x, [r["sample_accuracy"] for r in ev], "o--", color="C0", alpha=0.6, label="accuracy, sampled")
    if "after_fail_share" in ev[0]:
        left.plot(x, [r["after_fail_share"] for r in ev], "s-", color="C3", label="answers after own ✗, greedy")
    left.set(ylim=(0, 1), xlabel="RL step", title="held-out: accuracy vs thinking")
    twin = left.twinx()
    twin.plot(x, [r[key] for r in ev], "^-", color="C2", label=f"{key}, greedy")
    twin.plot(x, [r[f"sample_{key}"] for r in ev], "^--", color="C2", alpha=0.6, label=f"{key}, sampled")
    twin.set_ylabel(key)
    lines = left.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    left.legend(lines, [h.get_label() for h in lines], loc="center right", fontsize=8)
    right.plot(xr, [r["reward_mean"] for r in rl], color="C0", label="mean reward")
    right.set(xlabel="RL step", title="training batches: reward and length (tokens)")
    twin = right.twinx()
    twin.plot(xr, [r["len_mean"] for r in rl], color="C2", label="length")
    right.legend(loc="upper left")
    twin.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)

# the README's seed table: (label, key in an eval record, digits)
SEED_ROWS = [("greedy accuracy", "accuracy", 3), ("sampled accuracy", "sample_accuracy", 3),
             ("attempts, sampled", "sample_attempts", 2), ("answers after own ✗, greedy", "after_fail_share", 3),
             ("honest checks, sampled", "sample_honest_check_share", 3)]

def seed_results(summaries):
    """{seed: {"before": {key: value}, "after": {...}}} of the SEED_ROWS keys, from one summary per seed."""
    return {str(s["config"]["seed"]): {when: {key: s[when][key] for _, key, _ in SEED_ROWS}
                                       for when in ("before", "after")} for s in summaries}

def seed_table(results):
    """The markdown table of seed_results: one column per seed, each cell "after SFT → after RL"."""
    seeds = list(results)
    lines = ["| held-out (200 problems) | " + " | ".join(f"seed {s}: after SFT → after RL" for s in seeds) + " |",
             "|---" * (len(seeds) + 1) + "|"]
    for label, key, digits in SEED_ROWS:
        cells = [f"{results[s]['before'][key]:.{digits}f} → {results[s]['after'][key]:.{digits}f}" for s in seeds]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines

def read_summary(out_dir):
    summary_path = os.path.join(out_dir, "summary.json")
    if not os.path.isfile(summary_path):
        raise ValueError(f"{summary_path} not found: train.py writes it into out_dir when the run ends")
    with open(summary_path) as f:
        try:
            summary = json.load(f)
        except ValueError as e:
            raise ValueError(f"{summary_path} is not a train.py summary ({e})") from None
    if not (isinstance(summary, dict) and {"before", "after", "config", "sft_time", "rl_time"} <= summary.keys()):
        raise ValueError(f"{summary_path} is not a train.py summary (keys missing)")
    return summary

@dataclass
class ReportConfig:
    out_dir: str = "out"  # a finished train.py run: its summary.json and metrics.jsonl
    runs: str = ""        # or: finished runs, comma-separated (one per seed) -> the seed table
    results: str = ""     # with runs: also write the seed table's numbers to this JSON file

def main(argv):
    cfg = parse_config(ReportConfig, argv)
    if cfg.runs:
        results = seed_results([read_summary(out) for out in cfg.runs.split(",")])
        print("\n".join(seed_table(results)))
        if cfg.results:
            with open(cfg.results, "w") as f:
                json.dump(results, f, indent=2)
                f.write("\n")
        return
    summary, log_path = read_summary(cfg.out_dir), os.path.join(cfg.out_dir, "metrics.jsonl")
    if not os.path.isfile(log_path):
        raise ValueError(f"{log_path} not found: train.py writes it into out_dir")
    print_report(summary, log_path, os.path.join(cfg.out_dir, "curves.png"))

if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ValueError as e:
        sys.exit(f"report.py: error: {e}")
