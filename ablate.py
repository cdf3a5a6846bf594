"""
The ablation tables: what each piece of the method does, in one command, 3 seeds each.

    python ablate.py                          # the default task: cold start with vs without self-checks,
                                              # vs no search at all; 0 vs -1 for wrong; length penalty
    python ablate.py --table=recipe --train_args="--task=arithmetic"   # REINFORCE variants (baselines, Kimi, DAPO)
    python ablate.py --table=structure        # pairs tried in the order given vs in an order of its own, 300 RL steps
    python ablate.py --table=process          # outcome reward vs + a step reward (exact judge, or one that trusts ✓)
    python ablate.py --table=deep             # a deep search (--task=maze) vs answering at once, at equal tokens
    python ablate.py --seeds=1 --rl_steps=10  # a quicker look

For each seed and cold-start style, one SFT run (train.py with rl_steps=0) is shared by every
variant that starts from it: each copies that checkpoint and continues it with `train.py
--init_from=resume` and its own options, for the same fixed budget of RL steps. Each variant
changes ONE thing from the default. Prints a markdown table; every number comes from the runs'
own out_dir/summary.json (and, for structure and process, their metrics.jsonl: the curves, drawn
into out_dir/<table>.png).
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import train
from common import (autocast_context, check_completion_room, check_numbers, get_tokenizer, load_checkpoint,
                    model_from_checkpoint, parse_config, pick_device, read_log)
from report import read_summary

# name -> (cold-start trace style, train.py RL options on top of the default config)
COLD_START = {
    "search with self-checks (default)": ("search", []),
    "search, checks removed (same attempts)": ("unchecked", []),
    "no search: answer only": ("direct", []),
    "-1 for wrong answers": ("search", ["--wrong_reward=-1"]),
    "+ length penalty (Kimi k1.5, warm-up 5)": ("search", ["--length_penalty=1.0", "--length_penalty_warmup=5"]),
}
RECIPE = {
    "plain REINFORCE (group mean baseline, 0 for wrong)": ("", []),
    "-1 for wrong (penalise errors)": ("", ["--wrong_reward=-1"]),
    "group std normalisation (GRPO)": ("", ["--std_normalize=true"]),
    "leave-one-out baseline (RLOO)": ("", ["--baseline=rloo"]),
    "mirror-descent loss (Kimi k1.5, tau=0.1)": ("", ["--loss_type=mirror"]),
    "+ length penalty (Kimi k1.5, warm-up 5)": ("", ["--length_penalty=1.0", "--length_penalty_warmup=5"]),
    "+ prioritized sampling (Kimi k1.5)": ("", ["--prioritized=true"]),
    "+ drop zero-signal groups (DAPO)": ("", ["--drop_zero_signal=true"]),
}
# the method's two claims the default run does not test, each over a longer look (curves, not one final number)
STRUCTURE = {  # the same weak searcher (quit rule, right-answer share, truthful checks); only the order differs
    "structured: pairs in the order given (default)": ("search", []),
    "free: pairs in a random order of its own": ("free", []),
}
PROCESS = {  # the same cold start; rewards for the steps on top of the final answer's, 0.1 each, at most 0.5
    "outcome reward only (default)": ("search", []),
    "+ exact step reward: 0.1 per honest check": ("search", ["--honest_check_reward=0.1"]),
    "+ proxy step reward: 0.1 per ✓ written": ("search", ["--confident_check_reward=0.1"]),
}
DEEP = {  # the maze: a search that catches each wrong door a move later, against answering at once
    "search with checks (default)": ("search", []),
    "search, checks removed (same moves)": ("unchecked", []),
    "no search: answer only": ("direct", []),
}
TABLES = {"cold_start": COLD_START, "recipe": RECIPE, "structure": STRUCTURE, "process": PROCESS, "deep": DEEP}
# what a table asks of its runs beyond train.py's defaults: RL steps, RL steps between evaluations (its curves), SFT
# steps, options every run shares (block_size 128: room for a 5-number search from the start, so structure and process
# share their cold starts), and a harder task each final policy is also evaluated on (never trained on)
SETTINGS = {"structure": {"rl_steps": 300, "eval_every": 25, "shared": ["--block_size=128"],
                          "harder": ["--numbers=5", "--max_new_tokens=112"]},
            "process": {"rl_steps": 100, "eval_every": 10, "shared": ["--block_size=128"]},
            "deep": {"rl_steps": 100, "eval_every": 20, "sft_steps": 2400, "equal_tokens": True,
                     "shared": ["--task=maze", "--numbers=6", "--block_size=160", "--max_new_tokens=104"]}}


@dataclass
class AblationConfig:
    table: str = "cold_start"    # cold_start | recipe | structure | process | deep
    out_dir: str = "out/ablate"  # one folder per (cold start, seed) and per (variant, seed)
    seeds: int = 3               # seeds 1..seeds
    rl_steps: int = 0            # RL budget of every variant (0 = the table's: 300 for structure, else train.py's)
    eval_every: int = -1         # RL steps between held-out evaluations (-1 = the table's: 25, 10 or 0 = at the end)
    sft_steps: int = 0           # cold start, shared by the variants of a seed (0 = the table's: 2400 for deep, else
                                 # train.py's)
    train_args: str = ""         # more train.py options for every run, space-separated (e.g. a smaller model)
    jobs: int = 1                # train.py processes at once (1 = in this process; on a GPU try 15)


def cell(values, digits=3):
    """'mean ± half the range' (with 3 seeds the range says more than a std)."""
    mean = sum(values) / len(values)
    return f"{mean:.{digits}f} ± {(max(values) - min(values)) / 2:.{digits}f}"


def run_all(commands, jobs):
    """Each command is a train.py argument list. jobs=1: one after another in this process; more:
    that many `python train.py` processes at once (on a GPU, small runs fit side by side)."""
    if jobs == 1:
        for argv in commands:
            train.main(argv)
        return
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")

    def run(argv):
        done = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"train.py {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(run, commands))


def run_variants(cfg, variants, shared_args):
    """-> {cold-start style: [summary of its SFT run per seed]}, {variant: [summary per seed]}"""
    seeds, styles = range(1, cfg.seeds + 1), dict.fromkeys(style for style, _ in variants.values())
    # a cold start is kept for reuse only under the same options: they are part of its folder's name
    key = hashlib.sha256(repr((cfg.sft_steps, shared_args)).encode()).hexdigest()[:8]
    sft_dir = lambda style, seed: os.path.join(cfg.out_dir, f"sft-{style or 'default'}-{key}-seed{seed}")
    run_dir = lambda name, seed: run_dirs(cfg, variants, name)[seed - 1]
    # 1. one cold start per (style, seed), kept from an earlier call if it finished
    run_all([[*shared_args, f"--out_dir={sft_dir(style, seed)}", f"--seed={seed}", f"--sft_steps={cfg.sft_steps}",
              "--rl_steps=0", "--eval_every=0", "--overwrite=true", *([f"--cold_start={style}"] if style else [])]
             for seed in seeds for style in styles
             if not os.path.exists(os.path.join(sft_dir(style, seed), "summary.json"))], cfg.jobs)
    # 2. every variant continues a copy of its cold start for the same RL budget
    for seed in seeds:
        for name, (style, _) in variants.items():
            shutil.rmtree(run_dir(name, seed), ignore_errors=True)
            os.makedirs(run_dir(name, seed))
            for f in ("ckpt.pt", "metrics.jsonl"):
                shutil.copy(os.path.join(sft_dir(style, seed), f), run_dir(name, seed))
    run_all([[*shared_args, f"--out_dir={run_dir(name, seed)}", "--init_from=resume", f"--rl_steps={cfg.rl_steps}",
              f"--eval_every={cfg.eval_every}", *options] for seed in seeds for name, (_, options) in variants.items()],
            cfg.jobs)
    return ({style: [read_summary(sft_dir(style, seed)) for seed in seeds] for style in styles},
            {name: [read_summary(run_dir(name, seed)) for seed in seeds] for name in variants})


def main(argv):
    cfg = parse_config(AblationConfig, argv)
    if cfg.table not in TABLES:
        raise ValueError(f"--table={cfg.table} is not one of {', '.join(TABLES)}")
    check_numbers(cfg, at_least_one=("jobs", "seeds"))
    owned = {"out_dir", "seed", "sft_steps", "rl_steps", "cold_start", "overwrite", "eval_every"}  # (init_from: SFT's)
    for arg in cfg.train_args.split():  # (a later flag wins in train.py: these would undo what each run is)
        if arg.startswith("--") and arg[2:].split("=", 1)[0] in owned:
            raise ValueError(f"--train_args={arg}: ablate.py sets {arg.split('=')[0]} for each run itself (use its "
                             f"own --sft_steps, --rl_steps, --seeds, --out_dir)")
    defaults, settings = train.TrainConfig(), SETTINGS.get(cfg.table, {})
    cfg.rl_steps = cfg.rl_steps or settings.get("rl_steps", defaults.rl_steps)
    cfg.sft_steps = cfg.sft_steps or settings.get("sft_steps", defaults.sft_steps)
    cfg.eval_every = settings.get("eval_every", 0) if cfg.eval_every < 0 else cfg.eval_every
    variants = TABLES[cfg.table]
    t_start = time.time()
    sft, results = run_variants(cfg, variants, settings.get("shared", []) + cfg.train_args.split())
    harder = {}
    if "harder" in settings:  # each final policy on problems of a harder task, never trained on
        harder = {name: [evaluate_harder(run_dir, settings["harder"]) for run_dir in run_dirs(cfg, variants, name)]
                  for name in variants}

    first = next(iter(results.values()))[0]
    pass_k = next(k for k in first["after"] if k.startswith("pass@"))
    print(f"\nheld-out {first['config']['eval_problems']} problems, {cfg.rl_steps} RL steps after "
          f"{cfg.sft_steps} SFT steps, seeds 1..{cfg.seeds} (mean ± half-range); total {time.time() - t_start:.0f} s\n")
    if cfg.table in LONG_COLUMNS:
        print_long_table(cfg, variants, sft, results, harder, pass_k)
        return
    keys = ["accuracy", "sample_accuracy", pass_k, "sample_length"]
    names = ["greedy accuracy", "sampled accuracy", pass_k, "sampled length"]
    if "attempts" in first["after"]:
        keys += ["sample_attempts", "after_fail_share", "honest_check_share"]
        names += ["attempts (sampled)", "answers after own ✗ (greedy)", "honest checks (greedy)"]
        names.append("accuracy at the default's sampled tokens")
    print("| variant | " + " | ".join(names) + " | RL wall time (s) |")
    print("|---" * (len(names) + 2) + "|")
    for style, runs in sft.items():
        row = [cell([r["before"][k] for r in runs]) for k in keys]
        print(f"| after SFT only ({style or 'default'} cold start) | " + " | ".join(row) + " |" + " - |" * (len(names) - len(keys) + 1))
    default_tokens = [r["after"]["sample_length"] for r in next(iter(results.values()))]
    for name, runs in results.items():
        cells = [cell([r["after"][k] for r in runs]) for k in keys]
        if "attempts" in first["after"]:
            cells.append(equal_token_accuracy(runs, default_tokens))
        cells.append(cell([r["rl_time"] for r in runs], 0))
        print(f"| {name} | " + " | ".join(cells) + " |")


def run_dirs(cfg, variants, name):
    """The out_dir of each seed's run of one variant (as run_variants names them)."""
    return [os.path.join(cfg.out_dir, f"{cfg.table}{list(variants).index(name)}-seed{seed}")
            for seed in range(1, cfg.seeds + 1)]


def evaluate_harder(out, options):
    """A finished run's final policy on the held-out problems of its task changed by options (train.py flags,
    e.g. more numbers) -> train.evaluate's dict, also saved as out/harder.json."""
    ckpt = load_checkpoint(os.path.join(out, "ckpt.pt"))
    cfg = parse_config(train.TrainConfig, options, base=ckpt["config"])
    device = pick_device(cfg.device)
    _, ctx = autocast_context(cfg.dtype, "cuda" if "cuda" in device else "cpu")
    task, model, tokenizer = train.make_task(cfg), model_from_checkpoint(ckpt, device), get_tokenizer(ckpt["tokenizer"])
    problems = train.held_out_problems(task, cfg)
    check_completion_room(task, tokenizer, problems, cfg, model.config.block_size)
    result = train.evaluate(model, task, tokenizer, problems, cfg, ctx)
    with open(os.path.join(out, "harder.json"), "w") as f:
        json.dump({"options": options, **result}, f, indent=2)
    return result


# the long tables' columns: (label, key in an evaluation); "sample_" keys are the sampled completions'
LONG_COLUMNS = {
    "structure": [("greedy accuracy", "accuracy"), ("sampled accuracy", "sample_accuracy"), ("pass@k", "pass@k"),
                  ("attempts (sampled)", "sample_attempts"), ("repeated attempts (sampled)", "sample_repeated_attempts"),
                  ("honest checks (sampled)", "sample_honest_check_share"), ("sampled length", "sample_length")],
    "process": [("greedy accuracy", "accuracy"), ("sampled accuracy", "sample_accuracy"),
                ("attempts (sampled)", "sample_attempts"), ("checks (sampled)", "sample_checks"),
                ("honest checks (sampled)", "sample_honest_check_share"),
                ("✓ on a wrong attempt (sampled)", "sample_false_right_checks"), ("sampled length", "sample_length")],
    "deep": [("greedy accuracy", "accuracy"), ("sampled accuracy", "sample_accuracy"), ("pass@k", "pass@k"),
             ("steps (sampled)", "sample_attempts"), ("backtracks (sampled)", "sample_backtracks"),
             ("honest checks (sampled)", "sample_honest_check_share"), ("sampled length", "sample_length")]}
HARDER_COLUMNS = [("greedy accuracy", "accuracy"), ("sampled accuracy", "sample_accuracy"),
                  ("attempts (sampled)", "sample_attempts"), ("repeated attempts (sampled)", "sample_repeated_attempts")]
CURVES = [("greedy accuracy", "accuracy"), ("sampled accuracy", "sample_accuracy"),
          ("attempts (sampled)", "sample_attempts"), ("repeated attempts (sampled)", "sample_repeated_attempts"),
          ("checks (sampled)", "sample_checks"), ("honest checks (sampled)", "sample_honest_check_share"),
          ("✓ on a wrong attempt (sampled)", "sample_false_right_checks")]


def print_long_table(cfg, variants, sft, results, harder, pass_k):
    """structure and process: the final table (after SFT, after RL, and on the harder task if any), then the
    held-out curves, each value the mean over seeds, and their picture, <out_dir>/<table>.png."""
    columns = [(label.replace("pass@k", pass_k), key.replace("pass@k", pass_k)) for label, key in LONG_COLUMNS[cfg.table]]
    extra = [(f"{label}, harder task", key) for label, key in HARDER_COLUMNS] if harder else []
    equal_tokens = SETTINGS[cfg.table].get("equal_tokens", False)  # + best-of-n at the first variant's tokens
    if equal_tokens:
        extra.append(("best-of-n at the first variant's sampled tokens", None))
    print("| variant | " + " | ".join(label for label, _ in columns + extra) + " | RL wall time (s) |")
    print("|---" * (len(columns) + len(extra) + 2) + "|")
    for style, runs in sft.items():
        print(f"| after SFT only ({style} cold start) | " + " | ".join(cell([r["before"][k] for r in runs])
                                                                      for _, k in columns) + " |" + " - |" * (len(extra) + 1))
    first_tokens = [r["after"]["sample_length"] for r in next(iter(results.values()))]
    for name, runs in results.items():
        cells = [cell([r["after"][k] for r in runs]) for _, k in columns]
        cells += [cell([h[k] for h in harder[name]]) for _, k in extra if k is not None]
        cells += [equal_token_accuracy(runs, first_tokens)] if equal_tokens else []
        print(f"| {name} | " + " | ".join(cells + [cell([r["rl_time"] for r in runs], 0)]) + " |")
    if harder:
        print(f"\nharder task: the final policies on held-out problems of train.py "
              f"{' '.join(SETTINGS[cfg.table]['harder'])}, never trained on")
    curves = {name: mean_curves(run_dirs(cfg, variants, name), cfg.sft_steps) for name in variants}
    steps = next(iter(curves.values()))["steps"]
    print(f"\nheld-out curves during RL, mean over {cfg.seeds} seed(s)\n")
    print("| | variant | " + " | ".join(str(s) for s in steps) + " |")
    print("|---" * (len(steps) + 2) + "|")
    for label, key in CURVES:
        for i, (name, curve) in enumerate(curves.items()):
            print(f"| {label if i == 0 else ''} | {name.split(':')[0]} | "
                  + " | ".join(f"{v:.2f}" for v in curve[key]) + " |")
    draw_curves(curves, os.path.join(cfg.out_dir, f"{cfg.table}.png"))


def mean_curves(out_dirs, sft_steps):
    """{"steps": RL steps of the evaluations, key: mean over the runs at each one} from each run's metrics.jsonl."""
    evals = [[r for r in read_log(os.path.join(out, "metrics.jsonl")) if r["phase"] == "eval"] for out in out_dirs]
    curves = {"steps": [r["step"] - sft_steps for r in evals[0]]}
    for _, key in CURVES:
        curves[key] = [sum(run[i][key] for run in evals) / len(evals) for i in range(len(curves["steps"]))]
    return curves


def draw_curves(curves, png_path):
    """One panel per curve, one line per variant (matplotlib is optional: no picture without it)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, (label, key) in zip(axes.flat, CURVES):
        for name, curve in curves.items():
            ax.plot(curve["steps"], curve[key], "o-", markersize=3, label=name)
        ax.set(title=label, xlabel="RL step")
    axes.flat[-1].axis("off")
    axes.flat[-1].legend(*axes.flat[0].get_legend_handles_labels(), loc="center", fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


def equal_token_accuracy(runs, default_tokens):
    """Accuracy when a variant may sample as many tokens per problem as the default policy does:
    best-of-n with the exact reward as the judge (pass@n), n = the default's sampled length over this
    variant's, rounded down, at least 1 and at most k. A policy as long as the default gets n = 1."""
    values, ns = [], []
    for run, tokens in zip(runs, default_tokens):
        n = max(1, min(len(run["after"]["pass_at"]), int(tokens // max(1.0, run["after"]["sample_length"]))))
        values.append(run["after"]["pass_at"][n - 1])
        ns.append(n)
    return cell(values) + f" (n={min(ns)}..{max(ns)})" if max(ns) > 1 else cell(values)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, RuntimeError) as e:  # RuntimeError: a train.py run failed under --jobs
        sys.exit(f"ablate.py: error: {e}")
