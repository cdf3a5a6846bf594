"""
The whole method in one loop: a cold-start SFT on worked traces, then REINFORCE with an exact
reward. With no arguments it trains a small GPT from scratch, on the CPU, on a search task
(tasks.PairsTask: try a pair, check its sum, try again) and prints how accuracy, length,
attempts and the model's own checks move together before, during and after RL.

    python train.py                                   # the default run
    python train.py --rl_steps=300 --baseline=rloo    # any field of TrainConfig as --key=value
    python train.py --task=arithmetic                 # the scratchpad task (README: its demo's flags)
    python train.py --init_from=resume                # continue out/ckpt.pt exactly
    torchrun --standalone --nproc_per_node=2 train.py # data-parallel (gloo on CPU, nccl on CUDA)
"""
import copy
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from common import (all_sum, append_record, autocast_context, build_model, check_completion_room, check_numbers,
                    check_out_dir, cuda_graph, decode, encode, get_tokenizer, init_processes, load_checkpoint,
                    parse_config, pick_device, restore_training_state, save_checkpoint, start_metrics_log, to_device)
from model import GPT
from reinforce import (AGGREGATIONS, BASELINES, LOSS_TYPES, length_penalty, linear_in_logprobs, reinforce_loss,
                       reinforce_weights, sft_weights, shape_rewards, token_logprobs, weighted_logprob_sum)
from report import print_report
from rewards import step_reward
from tasks import TASKS
from sample import generate, release_decoders

@dataclass
class TrainConfig:
    # run
    out_dir: str = "out"            # checkpoint, metrics.jsonl, summary.json, curves.png
    overwrite: bool = False         # a fresh run may replace the run already in out_dir (else it refuses: nothing lost)
    seed: int = 1337
    device: str = "auto"            # auto = cuda if available, else cpu
    dtype: str = "auto"             # float32 | bfloat16; auto = bfloat16 on CUDA, float32 on CPU
    threads: int = 0                # CPU threads for torch (0 = torch's default)
    # speed-ups (the same method; equal results up to rounding)
    compile: bool = False           # torch.compile the training forward pass
    cuda_graphs: bool = True        # on CUDA: decode, SFT, fused RL steps as CUDA graphs (training: no DDP/compile)
    fused_update: bool = True       # RL loss linear in log π (plain REINFORCE): head gradient in the forward pass
    # task (tasks.py)
    task: str = "pairs"             # pairs | countdown | walk | maze | arithmetic | gsm8k (tasks.py)
    numbers: int = 4                # pairs, countdown: how many numbers are given; walk: digits; maze: moves
    max_number: int = 9             # pairs, countdown: the numbers are drawn from 1..max_number; walk: digits
    quit_max: float = 0.6           # pairs, countdown: the cold start quits after its k-th ✗ w.p. min(quit_max, k/4)
    digits: int = 4                 # arithmetic: digits of each operand (difficulty)
    data_path: str = ""             # gsm8k: a JSONL file with "question" and "answer" per line
    cold_start: str = ""            # style of the SFT traces (the task's styles, e.g. pairs: search | unchecked |
                                    # direct | free); "" = the task's first
    scratch_frac: float = 0.3       # arithmetic: share of cold-start traces that work step by step (the rest: direct)
    # model
    init_from: str = "scratch"      # scratch | resume | gpt2 (or gpt2-medium, ...) | a local Hugging Face directory
    tokenizer: str = "auto"         # char | gpt2; auto = char from scratch, gpt2 for pretrained weights
    n_layer: int = 4                # model shape when training from scratch (~0.8M parameters)
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 96            # longest prompt + completion
    dropout: float = 0.0
    # cold start: supervised fine-tuning on the task's traces
    sft_steps: int = 1200           # optimizer steps of the cold start (0 = straight to RL)
    sft_batch_size: int = 64        # traces per SFT step
    sft_lr: float = 2e-3            # peak; linear warm-up then cosine decay to sft_lr / 10
    warmup_steps: int = 50          # linear learning-rate warm-up, at the start of SFT and of RL
    # RL
    rl_steps: int = 100             # RL steps after the cold start
    prompts_per_step: int = 16      # P problems per step
    samples_per_prompt: int = 8     # G completions per problem (a "group")
    max_new_tokens: int = 80        # longest completion (it ends earlier at end-of-text)
    temperature: float = 1.0        # sampling temperature during RL
    rl_lr: float = 1e-4             # constant after warm-up, so a resumed run may extend rl_steps
    wrong_reward: float = 0.0       # reward of a wrong or unparsable answer: 0, or -1 to penalise errors
    baseline: str = "group"         # none | batch | group | rloo (reinforce.compute_advantages)
    # the loss normaliser: seq-mean (GRPO) has a length bias that the variants token-mean (DAPO) and
    # const (Dr. GRPO) remove; it stays the default because the README's numbers were measured with it
    aggregation: str = "seq-mean"   # seq-mean | token-mean | const
    weight_decay: float = 0.0       # AdamW decay on the blocks' matrices
    grad_clip: float = 1.0          # clip the global gradient norm (0 = off)
    # evaluation and checkpoints
    eval_every: int = 10            # RL steps between held-out evaluations (0 = only before and after RL)
    eval_problems: int = 200        # held-out test problems
    pass_k: int = 8                 # samples per problem for pass@k
    ckpt_every: int = 100           # steps between checkpoints (0 = only at the end)
    # paper variants (off by default): the default run reads without them (README, "Options")
    std_normalize: bool = False     # divide advantages by the group's reward std (GRPO)
    loss_type: str = "reinforce"    # reinforce | mirror (Kimi k1.5 online mirror descent)
    tau: float = 0.1                # mirror: strength of the log-ratio regulariser
    updates_per_batch: int = 1      # >1: several optimizer steps on one batch (needs clip_eps or loss_type=mirror)
    clip_eps: float = 0.0           # PPO ratio clipping for updates_per_batch > 1 (0 = off)
    kl_coef: float = 0.0            # KL penalty to the frozen post-SFT policy (k3 estimator; 0 = off)
    length_penalty: float = 0.0     # Kimi k1.5 length reward coefficient (0 = off)
    length_penalty_warmup: int = 0  # RL steps before the length reward switches on
    drop_zero_signal: bool = False  # leave groups with all-equal rewards out of the loss (DAPO)
    prioritized: bool = False       # sample training problems in proportion to 1 - success rate (Kimi k1.5)
    problem_pool: int = 2000        # prioritized: size of the fixed pool of training problems
    honest_check_reward: float = 0.0     # step reward: + this per honest check, a perfect judge (≤ 0.5 in all)
    confident_check_reward: float = 0.0  # step reward: + this per ✓ written, true or not (a judge easy to fool)

# -----------------------------------------------------------------------------
# config checks (the --key=value parser is common.parse_config)

def check_config(cfg):
    """Refuse every value that cannot work, by name, before any work."""
    choices = {"dtype": ("auto", "float32", "bfloat16"), "baseline": BASELINES, "aggregation": AGGREGATIONS,
               "loss_type": LOSS_TYPES, "tokenizer": ("auto", "char", "gpt2")}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"--{key}={getattr(cfg, key)} is not one of {', '.join(allowed)}")
    check_numbers(cfg, nonnegative=("sft_steps", "rl_steps", "eval_every", "ckpt_every", "threads", "sft_lr", "rl_lr",
                                    "weight_decay", "grad_clip", "dropout", "kl_coef", "clip_eps", "length_penalty",
                                    "honest_check_reward", "confident_check_reward"),
                  at_least_one=("warmup_steps", "updates_per_batch", "prompts_per_step", "samples_per_prompt",
                                "pass_k", "max_new_tokens", "sft_batch_size", "eval_problems"))
    rules = [  # (broken, why), then the paper variants' cross-field rules
        (cfg.dropout >= 1, "--dropout must be < 1 (it is the share of activations zeroed)"),
        (not 0 <= cfg.quit_max <= 1, f"--quit_max must be a probability in [0, 1], got {cfg.quit_max}"),
        (cfg.temperature <= 0, f"--temperature={cfg.temperature}: RL needs a temperature > 0 (below 0 it samples "
         "from the inverted distribution; at 0 a problem's samples are all the same, so their advantages are 0)"),
        (cfg.task == "gsm8k" and not cfg.data_path,
         "--task=gsm8k needs --data_path=a JSONL file with 'question' and 'answer' per line"),
        (cfg.task == "gsm8k" and not os.path.isfile(cfg.data_path),
         f"--data_path={cfg.data_path} is not a file (missing, or a directory)"),
        (cfg.loss_type == "mirror" and cfg.tau <= 0, "--loss_type=mirror needs --tau > 0 (the loss divides by it)"),
        (cfg.prioritized and cfg.problem_pool < 1, "--prioritized=true needs --problem_pool >= 1 (its problems)"),
        (cfg.updates_per_batch > 1 and cfg.clip_eps == 0 and cfg.loss_type != "mirror",
         "--updates_per_batch > 1 re-uses samples from an older policy: set --clip_eps or --loss_type=mirror")]
    for broken, why in rules:
        if broken:
            raise ValueError(why)
    pick_device(cfg.device)  # a typo or a missing GPU fails here, before any work

STOP = {"requested": False}  # set by Ctrl-C (see the end of the file): finish the step, save, exit

def make_task(cfg):
    """The task --task names (tasks.TASKS: what a task is, and the one line that adds one), from cfg's fields."""
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; valid names are: {', '.join(TASKS)}")
    task = TASKS[cfg.task](cfg)
    if cfg.cold_start and cfg.cold_start not in task.styles:
        raise ValueError(f"--cold_start={cfg.cold_start} is not a style of --task={cfg.task}: {', '.join(task.styles)}")
    if (cfg.honest_check_reward or cfg.confident_check_reward) and not hasattr(task, "self_check_stats"):
        raise ValueError(f"--honest_check_reward and --confident_check_reward count self-checks: --task={cfg.task} "
                         "writes none")
    return task

# -----------------------------------------------------------------------------
# batches

def step_rng(cfg, step, rank, what):
    """Every step's randomness is a pure function of (seed, step, rank): a resumed run draws
    exactly what the uninterrupted one would have, with no generator state to carry over."""
    return random.Random(f"{cfg.seed}/{what}/{step}/{rank}")

def pad_batch(prompts, completions, pad_id=0):
    """Token lists -> idx (B, T) inputs, targets (B, T) next tokens with -1 except on completion tokens, and
    completion_mask (B, T). Right-padded: causal attention never looks ahead at pads (no logit or loss changes)."""
    T = max(len(p) + len(c) for p, c in zip(prompts, completions)) - 1
    idx = torch.tensor([((p + c)[:-1] + [pad_id] * T)[:T] for p, c in zip(prompts, completions)])
    targets = torch.tensor([([-1] * (len(p) - 1) + c + [-1] * T)[:T] for p, c in zip(prompts, completions)])
    return idx, targets, targets >= 0  # position t predicts token t+1

def sft_batch(task, tokenizer, rng, cfg, block_size):
    """Cold-start batch: worked traces of the task, in the cold_start style if set; else the task's
    first style, except that arithmetic uses a scratchpad with probability scratch_frac."""
    prompts, completions = [], []
    for _ in range(cfg.sft_batch_size):
        problem = task.sample("train", rng)
        style = cfg.cold_start or task.styles[0]
        if not cfg.cold_start and task.name == "arithmetic" and rng.random() < cfg.scratch_frac:
            style = rng.choice(task.styles[1:])  # a step-by-step style
        prompts.append(encode(tokenizer, problem.prompt))
        completions.append(encode(tokenizer, task.trace(problem, style, rng)) + [tokenizer.eot_token])
    longest = max(len(p) + len(c) for p, c in zip(prompts, completions))
    if longest > block_size:
        raise ValueError(f"a training trace of {longest} tokens exceeds the model's block_size={block_size}")
    return pad_batch(prompts, completions)

def sampling_weights(success, floor=0.05):
    """Kimi k1.5 prioritized sampling: draw problem i with probability proportional to 1 - success_i,
    so compute goes to what the policy gets wrong; the floor keeps solved problems coming back."""
    return (1 - success).clamp(min=floor)

# -----------------------------------------------------------------------------
# one optimizer step on a weighted sum of log-probs (SFT, the fused RL update), and as one CUDA graph

def train_step(run, idx, targets, weights, lr, entropy=False):
    """An optimizer step at learning rate lr on the loss Σ_t w_t log π(y_t) of the tokens idx, targets, weights
    (B, T): the cold start's cross-entropy (reinforce.sft_weights) or the REINFORCE loss (reinforce_weights),
    the head's gradient made in the forward pass. -> (loss, skip, mean entropy of π at the targets: 0 unless asked)"""
    set_lr(run.optimizer, lr)
    with run.ctx:
        hidden = run.train_model(to_device(idx, run.device), return_hidden=True)  # (B, T, C)
        targets, weights = to_device(targets, run.device), to_device(weights, run.device)
        loss, _, token_entropy = weighted_logprob_sum(hidden, run.model.lm_head.weight, targets, weights,
                                                      return_entropy=entropy)  # (), (B*T,)
    skip = optimizer_step(run.train_model, run.optimizer, loss, run.cfg)
    # detached: a kept autograd graph keeps AccumulateGrad nodes of the default stream; a capture then fails
    return loss.detach(), skip, token_entropy.sum() / (targets >= 0).sum().clamp(min=1)

def train_graph(run, capture=True, entropy=False):
    """train_step at static shapes, replayed as one CUDA graph (common.cuda_graph): a small model's step is
    ~300 kernel launches from Python that take longer than the GPU's work. Each batch is right-padded (no
    logit or loss changes) into fixed tensors as long as the longest batch so far, rounded up to 32 (a longer
    one makes new ones and a new graph); the learning rate is a tensor the graph reads. The first step runs
    eagerly (AdamW makes its state); capture=False: every step (tests). -> fn(idx, targets, weights, lr)"""
    longest, device, optimizer = run.model.config.block_size - 1, run.device, run.optimizer
    lr, fixed, graph, pads = torch.zeros((), device=device), [], [], (0, -1, 0.0)  # inputs, targets, weights

    def static_step():  # AdamW refuses a capture unless `capturable`, and warns when that runs uncaptured
        for group in optimizer.param_groups:
            group["capturable"] = torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
        return train_step(run, *fixed, lr, entropy)

    def step(idx, targets, weights, lr_value):
        batch = idx, targets, weights  # (B, T) each
        if not fixed or idx.size(1) > fixed[0].size(1) or len(idx) != len(fixed[0]):  # longer, or another B
            T = min(-(-idx.size(1) // 32) * 32, longest)
            fixed[:], graph[:] = [torch.full((len(t), T), pad, dtype=t.dtype, device=device)
                                  for t, pad in zip(batch, pads)], []
        for inputs, t, pad in zip(fixed, batch, pads):
            inputs.copy_(to_device(F.pad(t, (0, inputs.size(1) - t.size(1)), value=pad), device))
        lr.fill_(lr_value)
        if capture and optimizer.state and not graph:  # its warm-up run's step is undone: the replay makes it
            graph.append(cuda_graph(static_step, [*run.model.parameters(),
                                                  *(t for s in optimizer.state.values() for t in s.values())]))
        outputs = graph[0]() if graph else static_step()
        for group in optimizer.param_groups:  # checkpoints keep plain numbers, not the graph's tensor and flag
            group.update(lr=lr_value, capturable=False)
        return [t.clone() for t in outputs]  # loss, skip, entropy (the next replay overwrites the graph's own)
    return step

def step_function(run, entropy=False):
    """train_step as the run takes it: on CUDA with --cuda_graphs, not under DDP or --compile, one graph replay."""
    graphed = run.cfg.cuda_graphs and "cuda" in run.device and not (run.cfg.compile or run.ddp)
    return train_graph(run, entropy=entropy) if graphed else partial(train_step, run, entropy=entropy)

def fused(cfg):
    """--fused_update applies where the RL loss is linear in the log-probs: plain on-policy REINFORCE."""
    return cfg.fused_update and linear_in_logprobs(**asdict(cfg))

# -----------------------------------------------------------------------------
# the RL update

def completion_logprobs(net, head, idx, targets, ctx, **kw):
    """log π(y_t) (B, T) of the completion tokens under net (0 elsewhere), from its hidden states
    and head's lm_head: the (B, T, V) logits are never built. kw: return_entropy."""
    with ctx:  # under autocast the lm_head matmuls of token_logprobs run in bfloat16 too
        hidden = net(idx, return_hidden=True)  # (B, T, C)
        return token_logprobs(hidden, head.lm_head.weight, targets, **kw)  # (B, T)

def policy_update(run, idx, targets, mask, rewards, group_ids, fused_step=None):
    """idx, targets, mask (B, T) from pad_batch, rewards, group_ids (B,) -> cfg.updates_per_batch optimizer steps
    of the REINFORCE loss -> (metrics, steps skipped: a gradient not finite). fused_step: --fused_update's step."""
    cfg, model, raw, ctx, ref_model = run.cfg, run.train_model, run.model, run.ctx, run.ref_model
    with torch.no_grad():
        old = (completion_logprobs(raw, raw, idx, targets, ctx)  # log π_old (B, T): for several updates, mirror
               if cfg.updates_per_batch > 1 or cfg.loss_type == "mirror" else None)
        ref = completion_logprobs(ref_model, ref_model, idx, targets, ctx) if ref_model is not None else None
    options = dict(baseline=cfg.baseline, std_normalize=cfg.std_normalize, aggregation=cfg.aggregation,
                   max_len=cfg.max_new_tokens, loss_type=cfg.loss_type, tau=cfg.tau, clip_eps=cfg.clip_eps,
                   kl_coef=cfg.kl_coef, ref_logprobs=ref, drop_zero_signal=cfg.drop_zero_signal)
    skipped = 0
    for _ in range(cfg.updates_per_batch):
        if fused(cfg):  # the same loss as Σ_t w_t log π(y_t), the head's gradient made in the forward pass
            weights, metrics = reinforce_weights(rewards, group_ids, mask, **options)  # (B, T)
            step, lr = fused_step or partial(train_step, run, entropy=True), run.optimizer.param_groups[0]["lr"]
            loss, skip, entropy = step(idx, targets, weights * ddp_scale(run, metrics), lr)
        else:
            logprobs, entropy = completion_logprobs(model, raw, idx, targets, ctx, return_entropy=True)  # (B, T)
            loss, metrics = reinforce_loss(logprobs, logprobs.detach() if old is None else old, rewards,
                                           group_ids, mask, **options)
            entropy, loss = entropy.sum() / mask.sum().clamp(min=1), loss * ddp_scale(run, metrics)
            skip = optimizer_step(model, run.optimizer, loss, cfg)
        skipped += skip
    metrics["loss"], metrics["entropy"] = loss.item(), entropy.item()
    return metrics, int(skipped)

def ddp_scale(run, metrics):
    """Each DDP rank divides by its own normaliser (0: nothing trained), DDP averages: × this = Σ / Σ normalisers."""
    norm = metrics["normaliser"]
    return norm * dist.get_world_size() / max(1.0, all_sum(norm, run.device).item()) if run.ddp else 1.0

def optimizer_step(model, optimizer, loss, cfg):
    """backward, clip, step -> 1 (a 0-dim float tensor) if the step was skipped because the gradient
    norm is not finite (weights and optimizer state untouched), else 0. The fused AdamW (CUDA) takes
    the flag as its `found_inf`, as GradScaler does, so the host never waits for the norm. Under DDP
    the norm is of the averaged gradients, the same on every rank: all ranks skip together."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    skip = (~torch.isfinite(norm)).float()  # () 1.0 = skip this step
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = skip  # read by the fused kernel: no update, step count unchanged
        optimizer.step()
    elif skip.item() == 0:  # a host check (free on the CPU)
        optimizer.step()
    else:
        optimizer.zero_grad(set_to_none=True)
    return skip

def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr

def fast_path(cfg):
    return None if cfg.cuda_graphs else False  # None: the fast path wherever it is on by default (CUDA)

def rollout(model, task, tokenizer, problems, cfg, generator, ctx):
    """Each problem's prompt G times -> completions (KV-cached sampler) -> exact rewards.
    Returns prompts and completions (token lists), texts, correct (B,), and the seconds it took."""
    G, t0 = cfg.samples_per_prompt, time.time()
    prompts = [encode(tokenizer, p.prompt) for p in problems for _ in range(G)]
    with ctx:
        completions = generate(model, prompts, cfg.max_new_tokens, temperature=cfg.temperature, fast=fast_path(cfg),
                               stop_tokens=(tokenizer.eot_token,), generator=generator)
    texts = [decode(tokenizer, c) for c in completions]
    correct = torch.tensor([task.reward(t, problems[i // G]) for i, t in enumerate(texts)])  # (B,) 1 or 0
    return prompts, completions, texts, correct, time.time() - t0

# -----------------------------------------------------------------------------
# evaluation on the held-out split

def search_stats(task, texts, problems):
    """How the completions searched (tasks with self-checks only, else {}): attempts per completion, the
    share of answers given right after the model's own ✗, the share of honest checks (nan if none); per
    completion, repeated attempts, checks written and ✓ written on an attempt that does not solve the problem
    (and backtracks, for a task that counts them)."""
    if not hasattr(task, "self_check_stats"):
        return {}
    stats = [task.self_check_stats(t, p) for t, p in zip(texts, problems)]
    total = {k: sum(s[k] for s in stats) for k in stats[0]}
    return {"attempts": total["attempts"] / len(stats),
            "after_fail_share": total["after_fail"] / max(1, total["answered"]),
            "honest_check_share": total["honest"] / total["checks"] if total["checks"] else float("nan"),
            "repeated_attempts": total["repeats"] / len(stats), "checks": total["checks"] / len(stats),
            "false_right_checks": total["false_right"] / len(stats),
            **({"backtracks": total["backtracks"] / len(stats)} if "backtracks" in total else {})}

def step_by_step(task, texts, key="step_by_step"):
    """{key: the share of completions that work before they answer}, or {} for a task that cannot tell."""
    return {key: sum(map(task.is_step_by_step, texts)) / len(texts)} if hasattr(task, "is_step_by_step") else {}

@torch.no_grad()
def evaluate(model, task, tokenizer, problems, cfg, ctx):
    """On held-out test problems: greedy accuracy, pass@k (k samples at the RL temperature), the
    sampled accuracy, length and search statistics of greedy and of sampled completions."""
    k, eot, t0 = cfg.pass_k, tokenizer.eot_token, time.time()
    prompts = [encode(tokenizer, p.prompt) for p in problems]
    with ctx:
        greedy = generate(model, prompts, cfg.max_new_tokens, temperature=0, stop_tokens=(eot,), fast=fast_path(cfg))
        gen = torch.Generator(device=model.transformer.wte.weight.device).manual_seed(cfg.seed)
        sampled = generate(model, [p for p in prompts for _ in range(k)], cfg.max_new_tokens, fast=fast_path(cfg),
                           temperature=cfg.temperature, stop_tokens=(eot,), generator=gen)
    release_decoders()  # the eval batches' kept caches (k times the problems) would hold memory through RL
    greedy_text, sampled_text = [decode(tokenizer, c) for c in greedy], [decode(tokenizer, c) for c in sampled]
    sampled_problems = [p for p in problems for _ in range(k)]
    correct = [task.reward(t, p) for t, p in zip(greedy_text, problems)]
    sampled_correct = [task.reward(t, p) for t, p in zip(sampled_text, sampled_problems)]
    right_of_k = [int(sum(sampled_correct[i:i + k])) for i in range(0, len(sampled_correct), k)]  # c of k per problem
    return {
        "accuracy": sum(correct) / len(problems), f"pass@{k}": sum(c > 0 for c in right_of_k) / len(problems),
        # pass@n for n = 1..k from the same k samples, unbiased: 1 - C(k - c, n) / C(k, n) (Chen et al. 2021)
        "pass_at": [sum(1 - math.comb(k - c, n) / math.comb(k, n) for c in right_of_k) / len(problems)
                    for n in range(1, k + 1)],
        "sample_accuracy": sum(sampled_correct) / len(sampled_correct),
        "length": sum(len(c) for c in greedy) / len(greedy),
        "sample_length": sum(len(c) for c in sampled) / len(sampled),
        **search_stats(task, greedy_text, problems),
        **{f"sample_{key}": v for key, v in search_stats(task, sampled_text, sampled_problems).items()},
        **step_by_step(task, greedy_text), **step_by_step(task, sampled_text, "sample_step_by_step"),
        "examples": [[p.prompt + text, r] for p, text, r in list(zip(problems, greedy_text, correct))[:20]],
        "eval_time": time.time() - t0,  # seconds: sampling (the most of it) and scoring
    }

# -----------------------------------------------------------------------------
# the method, one step at a time (the bookkeeping is in the helpers below)

def main(argv):
    """The method: set up, cold start (SFT), then RL. -> the summary (None if interrupted, or not rank 0)."""
    run = set_up(argv)  # config, processes and devices, task, model, optimizer, out_dir and its log
    cfg, model, task, tokenizer, ctx = run.cfg, run.model, run.task, run.tokenizer, run.ctx

    # ---- phase 1: cold start, supervised fine-tuning on the task's worked traces -------------
    sft_update = step_function(run)  # a CUDA graph replay on CUDA (train_graph), else eager train_step
    for step in progress_bar(run, "sft"):
        t0, lr = time.time(), learning_rate(cfg, step)
        idx, targets, _ = sft_batch(task, tokenizer, step_rng(cfg, step, run.rank, "sft"), cfg, model.config.block_size)
        loss, skip, _ = sft_update(idx, targets, sft_weights(targets), lr)  # −mean log π(target); clip, AdamW
        log_sft_step(run, step, lr, loss, skip)
        run.state["sft_time"] += time.time() - t0
        if step + 1 == cfg.sft_steps:
            evaluate_before_rl(run)
        if end_of_step(run, step + 1):  # a checkpoint when due; after Ctrl-C, save and stop
            return None

    sft_update, rl_update = None, (step_function(run, entropy=True) if fused(cfg) else None)  # (frees SFT's graph)

    # ---- phase 2: RL with exact rewards ------------------------------------------------------
    start_rl(run)  # the "after SFT" eval if there was no SFT; the KL reference policy
    G, P = cfg.samples_per_prompt, cfg.prompts_per_step
    group_ids = torch.arange(P).repeat_interleave(G)  # (B,) the samples of one problem share an id
    for step in progress_bar(run, "rl"):
        t0 = time.time()
        lr = set_lr(run.optimizer, learning_rate(cfg, step))
        # 1. P problems: fresh ones, or from a pool by 1 - success rate (prioritized, a variant)
        rng = step_rng(cfg, step, run.rank, "rl")
        chosen, problems = choose_problems(run, rng)
        # 2. rollout: G completions per problem from the KV-cached sampler, each scored exactly
        generator = torch.Generator(device=run.device).manual_seed(rng.getrandbits(62))
        prompts, completions, texts, correct, t_sample = rollout(model, task, tokenizer, problems, cfg, generator, ctx)
        # 3. rewards r: 1 if right, else wrong_reward (0 or -1); + the Kimi k1.5 length reward and the step
        #    rewards for checks (variants, off by default)
        len_reward = length_reward(cfg, step, completions, correct, group_ids)  # (B,)
        rewards = shape_rewards(correct, cfg.wrong_reward) + len_reward  # (B,)
        process = step_rewards(cfg, task, texts, problems)  # (B,) or None
        rewards = rewards if process is None else rewards + process
        remember_success(run, chosen, correct)
        # 4. advantages A = r - b and the REINFORCE update, loss = -sum_t A log pi(y_t) / norm
        idx, targets, mask = pad_batch(prompts, completions)  # (B, T) each
        t_update = time.time()
        batch = [to_device(t, run.device) for t in (idx, targets, mask, rewards, group_ids)]
        metrics, skipped = policy_update(run, *batch, rl_update)
        t_update = time.time() - t_update
        run.state["rl_time"] += time.time() - t0
        log_rl_step(run, step, lr, problems, texts, correct, len_reward, process, metrics, skipped, t_sample, t_update)
        # 5. held-out evaluation and checkpoint
        if run.master and eval_due(cfg, step + 1):
            held_out = evaluate(model, task, tokenizer, run.eval_problems, cfg, ctx)
            log(run, {"step": step + 1, "phase": "eval", **held_out})
        if end_of_step(run, step + 1):
            return None
    return finish(run)  # the last eval and checkpoint; summary.json, the before/after table, curves.png

# -----------------------------------------------------------------------------
# the run's bookkeeping: set-up, logs, checkpoints, summary.json

@dataclass
class Run:
    """What one training run holds between steps; set_up makes it, main reads the method off it."""
    cfg: TrainConfig
    ckpt: dict | None               # the checkpoint resumed from (None for a fresh run)
    ddp: bool                       # under torchrun: one process per rank
    rank: int
    device: str
    ctx: object                     # autocast context, a no-op in float32
    task: object                    # tasks.py: problems, traces, exact rewards (rewards.py)
    tokenizer: object
    tokenizer_name: str
    model: GPT                      # the weights (what is saved and sampled from)
    train_model: torch.nn.Module    # what the updates run: model, compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer
    eval_problems: list             # held-out test problems, the same at every evaluation
    pool: list                      # prioritized: the fixed training problems ([] otherwise)
    success: torch.Tensor           # (len(pool),) the last success rate of each pool problem
    start: int                      # the step this process starts at (> 0 when resuming)
    state: dict                     # the after-SFT eval, skipped steps, wall times: saved in checkpoints
    ref_model: GPT | None = None    # with kl_coef > 0: the frozen policy that RL starts from
    sft_pending: list = field(default_factory=list)  # (step, lr, loss, skip) still on the device
    bar: object = None              # the current phase's progress bar

    @property
    def master(self):
        return self.rank == 0

    def path(self, name):
        return os.path.join(self.cfg.out_dir, name)

def held_out_problems(task, cfg):
    """cfg.eval_problems distinct test problems (a repeat would count twice), each drawn from its own
    seeded generator; a test split smaller than that (a small GSM8K file) is used whole."""
    problems, last_new = {}, 0  # prompt -> problem, in the order drawn; the draw that found the last new one
    for i in range(20 * cfg.eval_problems):
        if len(problems) == cfg.eval_problems:
            break
        if i - last_new > 2000 and not hasattr(task, "splits"):  # none new in 2,000 draws: the split is used up
            raise ValueError(f"--eval_problems={cfg.eval_problems}: the test split of --task={cfg.task} gave "
                             f"{len(problems)} distinct problems in {i:,} draws and no new one in the last 2,000; "
                             f"ask for at most {len(problems)}")
        problem = task.sample("test", random.Random(f"{cfg.seed}/eval/{i}"))
        if problem.prompt not in problems:
            problems[problem.prompt], last_new = problem, i
    return list(problems.values())

def set_up(argv):
    """Everything before the first step -> Run: the checked config (resuming: the saved one, updated by argv,
    in the out_dir read from: a copied run never writes into its original), processes and devices, the task
    and its held-out problems, the model and optimizer (restored when resuming), out_dir and its metrics log."""
    cfg, ckpt = parse_config(TrainConfig, argv), None
    if cfg.init_from == "resume":
        ckpt = load_checkpoint(os.path.join(cfg.out_dir, "ckpt.pt"))
        cfg = parse_config(TrainConfig, argv, base={**ckpt["config"], "init_from": "resume", "out_dir": cfg.out_dir})
    check_config(cfg)
    check_out_dir(cfg, ckpt)  # before any rank writes there
    ddp, rank, device = init_processes(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device_type = "cuda" if "cuda" in device else "cpu"
    dtype, ctx = autocast_context(cfg.dtype, device_type)
    torch.manual_seed(cfg.seed)
    task = make_task(cfg)
    model, tokenizer_name = build_model(cfg, device, ckpt)
    tokenizer = get_tokenizer(tokenizer_name)
    eval_problems = held_out_problems(task, cfg)
    pool = [task.sample("train", random.Random(f"{cfg.seed}/pool/{i}"))  # prioritized sampling draws from it
            for i in range(cfg.problem_pool if cfg.prioritized else 0)]
    check_completion_room(task, tokenizer, eval_problems + pool, cfg, model.config.block_size)
    optimizer = model.configure_optimizer(cfg.sft_lr, cfg.weight_decay, device_type=device_type)
    start, state = 0, {"before": None, "skipped": 0, "sft_time": 0.0, "rl_time": 0.0}
    success = torch.zeros(len(pool))
    if ckpt is not None:
        restore_training_state(ckpt, optimizer, device)
        start = ckpt["step"]
        state.update({k: ckpt[k] for k in state})
        if len(ckpt["success"]) == len(pool):  # (empty when the saved run did not prioritize)
            success = ckpt["success"]
    if rank == 0:
        print(f"{model.num_params() / 1e6:.2f}M parameters, tokenizer {tokenizer_name}, device {device}, {dtype}")
    train_model = torch.compile(model) if cfg.compile else model
    if ddp:
        train_model = DDP(train_model, device_ids=[device] if device_type == "cuda" else None)
    run = Run(cfg, ckpt, ddp, rank, device, ctx, task, tokenizer, tokenizer_name, model, train_model, optimizer,
              eval_problems, pool, success, start, state)
    os.makedirs(cfg.out_dir, exist_ok=True)
    if run.master:
        start_metrics_log(cfg.out_dir, start, ckpt is None, start == cfg.sft_steps or eval_due(cfg, start))
    return run

def log(run, record):
    if run.master:
        append_record(run.path("metrics.jsonl"), record)

def progress_bar(run, phase):
    """The steps of one phase ("sft" or "rl") still to run (a resumed run starts where it stopped)."""
    cfg = run.cfg
    first, last = (0, cfg.sft_steps) if phase == "sft" else (cfg.sft_steps, cfg.sft_steps + cfg.rl_steps)
    run.bar = tqdm(range(max(run.start, first), last), desc=phase, disable=not run.master,
                   initial=min(max(0, run.start - first), last - first), total=last - first)
    return run.bar

def learning_rate(cfg, step):
    """SFT: linear warm-up, then cosine decay to a tenth of the peak. RL: linear warm-up, then
    constant (so a resumed run may extend rl_steps)."""
    if step < cfg.sft_steps:
        decay = 0.5 * (1 + math.cos(math.pi * step / max(1, cfg.sft_steps)))
        return cfg.sft_lr * min(1.0, (step + 1) / cfg.warmup_steps) * (0.1 + 0.9 * decay)
    return cfg.rl_lr * min(1.0, (step - cfg.sft_steps + 1) / cfg.warmup_steps)

def log_sft_step(run, step, lr, loss, skip):
    """Keep the step's loss and skip flag on the device; read them 50 steps at a time (and at
    every checkpoint), so that SFT does not wait for the host after every step."""
    run.sft_pending.append((step, lr, loss.detach(), skip))
    if len(run.sft_pending) == 50 or step + 1 == run.cfg.sft_steps:
        flush_sft_log(run)

def flush_sft_log(run):
    """Read the pending SFT losses and skip flags in one host sync (not one per step); log them."""
    if run.sft_pending:
        numbers = torch.stack([torch.stack([loss, skip.to(loss.dtype)])
                               for _, _, loss, skip in run.sft_pending]).tolist()  # [[loss, skip], ...]
        for (step, lr, _, _), (loss, skip) in zip(run.sft_pending, numbers):
            run.state["skipped"] += int(skip)
            log(run, {"step": step, "phase": "sft", "loss": loss, "lr": lr, "skipped": run.state["skipped"]})
        run.bar.set_postfix(loss=f"{numbers[-1][0]:.3f}")
        run.sft_pending.clear()

def evaluate_before_rl(run):
    """The "after SFT" column of the summary; saved with the checkpoints."""
    run.state["before"] = evaluate(run.model, run.task, run.tokenizer, run.eval_problems, run.cfg,
                                   run.ctx) if run.master else {}
    log(run, {"step": run.cfg.sft_steps, "phase": "eval", **run.state["before"]})
    if run.master:
        print("after SFT: " + ", ".join(f"{k} {v:.3f}" for k, v in run.state["before"].items() if isinstance(v, float)))

def start_rl(run):
    if run.state["before"] is None:  # no SFT steps at all (e.g. RL straight from GPT-2 weights)
        evaluate_before_rl(run)
    if run.cfg.kl_coef > 0:  # KL is measured against the policy RL started from
        run.ref_model = copy.deepcopy(run.model).eval().requires_grad_(False)
        if run.ckpt is not None and "ref_model" in run.ckpt:
            run.ref_model.load_state_dict(run.ckpt["ref_model"])

def choose_problems(run, rng):
    """-> (indices into the pool, P training problems): fresh ones, drawn uniformly; or, prioritized
    (Kimi k1.5), drawn from the fixed pool in proportion to 1 - success rate."""
    P = run.cfg.prompts_per_step
    if not run.pool:
        return [], [run.task.sample("train", rng) for _ in range(P)]
    chosen = rng.choices(range(len(run.pool)), weights=sampling_weights(run.success).tolist(), k=P)
    return chosen, [run.pool[i] for i in chosen]

def remember_success(run, chosen, correct):
    """Prioritized: each chosen pool problem's success rate this step (all ranks' problems, so ranks agree)."""
    if not run.pool:
        return
    P, G = run.cfg.prompts_per_step, run.cfg.samples_per_prompt
    index = (torch.tensor(chosen),)  # a problem drawn twice: both groups count (accumulate), then averaged
    update = torch.zeros(len(run.pool)).index_put_(index, correct.view(P, G).mean(1), accumulate=True)
    seen = torch.zeros(len(run.pool)).index_put_(index, torch.ones(P), accumulate=True)
    if run.ddp:
        update, seen = all_sum(update, run.device), all_sum(seen, run.device)
    run.success = torch.where(seen > 0, update / seen.clamp(min=1), run.success)

def length_reward(cfg, step, completions, correct, group_ids):
    """(B,) the Kimi k1.5 length reward, scaled by cfg.length_penalty; 0 when off or in its warm-up."""
    if cfg.length_penalty > 0 and step - cfg.sft_steps >= cfg.length_penalty_warmup:
        lengths = torch.tensor([len(c) for c in completions], dtype=torch.float)  # (B,)
        return cfg.length_penalty * length_penalty(lengths, correct, group_ids)
    return torch.zeros(len(completions))

def step_rewards(cfg, task, texts, problems):
    """(B,) process rewards, one per completion (rewards.step_reward: per honest check, per ✓ written), or None
    when both are 0 (the default: the reward is the final answer's alone). problems: P, each sampled G times."""
    if not (cfg.honest_check_reward or cfg.confident_check_reward):
        return None
    G = cfg.samples_per_prompt
    return torch.tensor([step_reward(task.self_check_stats(text, problems[i // G]), cfg.honest_check_reward,
                                     cfg.confident_check_reward) for i, text in enumerate(texts)])

def log_rl_step(run, step, lr, problems, texts, correct, len_reward, process, metrics, skipped, t_sample, t_update):
    """One line of metrics.jsonl per RL step: the batch's accuracy, length and search, the loss's metrics."""
    task, G = run.task, run.cfg.samples_per_prompt
    run.state["skipped"] += skipped
    record = {"step": step, "phase": "rl", "lr": lr, "accuracy": correct.mean().item(),
              **step_by_step(task, texts), **search_stats(task, texts, [p for p in problems for _ in range(G)]),
              "length_reward": len_reward.mean().item(), "skipped": run.state["skipped"],
              **({"step_reward": process.mean().item()} if process is not None else {}),
              "sample_time": t_sample, "update_time": t_update, **metrics}
    if run.pool:
        record["sampling_weight_min"] = sampling_weights(run.success).min().item()
    log(run, record)
    search = ({"tries": f"{record['attempts']:.1f}"} if "attempts" in record  # a self-check task: its attempts
              else {"think": f"{record['step_by_step']:.2f}"} if "step_by_step" in record else {})
    run.bar.set_postfix(acc=f"{record['accuracy']:.2f}", len=f"{metrics['len_mean']:.0f}", **search)

def eval_due(cfg, step):
    """A held-out evaluation every eval_every RL steps; none in SFT, at its end or at the last step (others do)."""
    return cfg.eval_every and 0 < step - cfg.sft_steps < cfg.rl_steps and (step - cfg.sft_steps) % cfg.eval_every == 0

def checkpoint(run, step):
    flush_sft_log(run)
    ref = {"ref_model": run.ref_model.state_dict()} if run.ref_model is not None else {}
    save_checkpoint(run.path("ckpt.pt"), run.model, run.optimizer, run.cfg, step,
                    {**run.state, "tokenizer": run.tokenizer_name, "success": run.success, **ref})

def end_of_step(run, step):
    """Checkpoint when due or when Ctrl-C was pressed (on any rank); True means stop now."""
    stop = STOP["requested"]  # under DDP: if any rank was interrupted, so that all stop at the same step
    stop = all_sum(float(stop), run.device).item() > 0 if run.ddp else stop
    if run.master and (stop or (run.cfg.ckpt_every and step % run.cfg.ckpt_every == 0)):
        checkpoint(run, step)
        if stop:
            print(f"interrupted: saved {run.path('ckpt.pt')} at step {step}")
    return stop

def finish(run):
    """After the last step: the final held-out eval and checkpoint, summary.json, the printed
    before/after table and curves.png. -> the summary (None on other ranks than 0)."""
    cfg, summary = run.cfg, None
    if run.master:
        after = evaluate(run.model, run.task, run.tokenizer, run.eval_problems, cfg, run.ctx)
        log(run, {"step": cfg.sft_steps + cfg.rl_steps, "phase": "eval", **after})
        checkpoint(run, cfg.sft_steps + cfg.rl_steps)
        summary = {"before": run.state["before"], "after": after, "sft_time": run.state["sft_time"],
                   "rl_time": run.state["rl_time"], "skipped_steps": run.state["skipped"], "config": asdict(cfg)}
        with open(run.path("summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print_report(summary, run.path("metrics.jsonl"), run.path("curves.png"))
    if run.ddp:  # leave together: a rank that tears down gloo while rank 0 still evaluates can abort (SIGABRT)
        dist.barrier()
        dist.destroy_process_group()
    return summary

if __name__ == "__main__":
    signal.signal(signal.SIGINT, lambda *_: STOP.update(requested=True))
    try:
        main(sys.argv[1:])
    except (ValueError, OSError) as e:  # bad input, a missing file, a full disk: one line, no traceback
        sys.exit(f"train.py: error: {e}")
    if "LOCAL_RANK" in os.environ:  # under torchrun: all is saved and closed; skip the interpreter's teardown,
        sys.stdout.flush(), sys.stderr.flush()  # where gloo's threads sometimes abort the process (SIGABRT)
        os._exit(0)
