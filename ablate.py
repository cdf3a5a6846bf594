"""
The ablation table: what each piece of the RL recipe does on the default task, in one command.

    python ablate.py                          # 3 seeds x 8 variants, about 13 minutes on 2 CPU cores
    python ablate.py --seeds=1 --rl_steps=10  # a quicker look

For each seed, one cold-start SFT run (train.py with rl_steps=0) is shared by every variant: each
variant copies that checkpoint and continues it with `train.py --init_from=resume` and its own
options, for the same fixed budget of RL steps. The budget is deliberately short: on this task
every variant ends near 100% given enough steps, so what differs is how fast it gets there.
Each variant changes ONE thing from plain REINFORCE. Prints a markdown table; every number comes
from the runs' own out_dir/summary.json.
"""
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass

import train
from sample import parse_config

# name -> train.py options on top of the default config (plain REINFORCE: group-mean baseline, 0 for wrong)
VARIANTS = {
    "plain REINFORCE (group mean baseline, 0 for wrong)": [],
    "-1 for wrong (penalise errors)": ["--wrong_reward=-1"],
    "group std normalisation (GRPO)": ["--std_normalize=true"],
    "leave-one-out baseline (RLOO)": ["--baseline=rloo"],
    "mirror-descent loss (Kimi k1.5, tau=0.1)": ["--loss_type=mirror"],
    "+ length penalty (Kimi k1.5, warm-up 5)": ["--length_penalty=1.0", "--length_penalty_warmup=5"],
    "+ prioritized sampling (Kimi k1.5)": ["--prioritized=true"],
    "+ drop zero-signal groups (DAPO)": ["--drop_zero_signal=true"],
}


@dataclass
class AblationConfig:
    out_dir: str = "out/ablate"  # one folder per SFT seed and per (variant, seed)
    seeds: int = 3               # seeds 1..seeds
    rl_steps: int = 15           # RL budget of every variant
    sft_steps: int = 900         # cold start (shared by all variants of a seed)
    train_args: str = ""         # more train.py options for every run, space-separated (e.g. a smaller model)


def cell(values, digits=3):
    """'mean ± half the range' (with 3 seeds the range says more than a std)."""
    mean = sum(values) / len(values)
    return f"{mean:.{digits}f} ± {(max(values) - min(values)) / 2:.{digits}f}"


def main(argv):
    cfg = parse_config(AblationConfig, argv)
    common = cfg.train_args.split()
    results = {name: [] for name in VARIANTS}
    before = []
    t_start = time.time()
    for seed in range(1, cfg.seeds + 1):
        sft_dir = os.path.join(cfg.out_dir, f"sft-seed{seed}")
        if not os.path.exists(os.path.join(sft_dir, "summary.json")):  # (re)do it; an unfinished one is replaced
            train.main([f"--out_dir={sft_dir}", f"--seed={seed}", f"--sft_steps={cfg.sft_steps}",
                        "--rl_steps=0", "--eval_every=0", "--overwrite=true", *common])
        before.append(json.load(open(os.path.join(sft_dir, "summary.json")))["before"])
        for name, options in VARIANTS.items():
            run_dir = os.path.join(cfg.out_dir, f"variant{list(VARIANTS).index(name)}-seed{seed}")
            shutil.rmtree(run_dir, ignore_errors=True)
            os.makedirs(run_dir)
            for f in ("ckpt.pt", "metrics.jsonl"):
                shutil.copy(os.path.join(sft_dir, f), run_dir)
            train.main([f"--out_dir={run_dir}", "--init_from=resume", f"--rl_steps={cfg.rl_steps}",
                        "--eval_every=0", *common, *options])
            results[name].append(json.load(open(os.path.join(run_dir, "summary.json"))))

    n_eval = next(iter(results.values()))[0]["config"]["eval_problems"]
    print(f"\nheld-out {n_eval} problems, {cfg.rl_steps} RL steps after "
          f"{cfg.sft_steps} SFT steps, seeds 1..{cfg.seeds} (mean ± half-range); "
          f"total {time.time() - t_start:.0f} s\n")
    pass_k = next(k for k in before[0] if k.startswith("pass@"))
    keys = ("accuracy", "sample_accuracy", pass_k, "length", "sample_step_by_step")
    print(f"| variant | greedy accuracy | sampled accuracy | {pass_k} | mean length | step-by-step (sampled) | RL wall time (s) |")
    print("|---|---|---|---|---|---|---|")
    print("| after SFT, before RL | " + " | ".join(cell([b[k] for b in before]) for k in keys) + " | - |")
    for name, runs in results.items():
        cells = [cell([r["after"][k] for r in runs]) for k in keys] + [cell([r["rl_time"] for r in runs], 0)]
        print(f"| {name} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ValueError as e:
        sys.exit(f"ablate.py: error: {e}")
