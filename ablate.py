"""
The ablation tables: what each piece of the method does, in one command, 3 seeds each.

    python ablate.py                          # the default task: cold start with vs without self-checks,
                                              # vs no search at all; 0 vs -1 for wrong; length penalty
    python ablate.py --table=recipe --train_args="--task=arithmetic"   # REINFORCE variants (baselines, Kimi, DAPO)
    python ablate.py --seeds=1 --rl_steps=10  # a quicker look

For each seed and cold-start style, one SFT run (train.py with rl_steps=0) is shared by every
variant that starts from it: each copies that checkpoint and continues it with `train.py
--init_from=resume` and its own options, for the same fixed budget of RL steps. Each variant
changes ONE thing from the default. Prints a markdown table; every number comes from the runs'
own out_dir/summary.json.
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
from common import check_numbers, parse_config

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
TABLES = {"cold_start": COLD_START, "recipe": RECIPE}


@dataclass
class AblationConfig:
    table: str = "cold_start"    # cold_start | recipe
    out_dir: str = "out/ablate"  # one folder per (cold start, seed) and per (variant, seed)
    seeds: int = 3               # seeds 1..seeds
    rl_steps: int = 0            # RL budget of every variant (0 = train.py's default rl_steps)
    sft_steps: int = 0           # cold start, shared by the variants of a seed (0 = train.py's default)
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
    run_dir = lambda name, seed: os.path.join(cfg.out_dir, f"{cfg.table}{list(variants).index(name)}-seed{seed}")
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
              "--eval_every=0", *options] for seed in seeds for name, (_, options) in variants.items()],
            cfg.jobs)
    def summary(out):
        with open(os.path.join(out, "summary.json")) as f:
            return json.load(f)
    return ({style: [summary(sft_dir(style, seed)) for seed in seeds] for style in styles},
            {name: [summary(run_dir(name, seed)) for seed in seeds] for name in variants})


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
    defaults = train.TrainConfig()
    cfg.rl_steps, cfg.sft_steps = cfg.rl_steps or defaults.rl_steps, cfg.sft_steps or defaults.sft_steps
    variants = TABLES[cfg.table]
    t_start = time.time()
    sft, results = run_variants(cfg, variants, cfg.train_args.split())

    first = next(iter(results.values()))[0]
    pass_k = next(k for k in first["after"] if k.startswith("pass@"))
    print(f"\nheld-out {first['config']['eval_problems']} problems, {cfg.rl_steps} RL steps after "
          f"{cfg.sft_steps} SFT steps, seeds 1..{cfg.seeds} (mean ± half-range); total {time.time() - t_start:.0f} s\n")
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
