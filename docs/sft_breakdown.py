"""Where one eager SFT step of the default run (train.train_step without its CUDA graph, as with
--cuda_graphs=false) goes on a GPU: host time of the batch, the forward and
the backward + AdamW over 100 steps, then torch.profiler tables of 10 steps. CUDA only.

    PYTHONPATH=. python docs/sft_breakdown.py
"""
import sys
import time

import torch
if not torch.cuda.is_available():
    sys.exit("docs/sft_breakdown.py profiles CUDA kernels: it needs a CUDA GPU")
from torch.profiler import profile, ProfilerActivity
from common import autocast_context, build_model, get_tokenizer, to_device
from reinforce import sft_weights, weighted_logprob_sum
from train import TrainConfig, make_task, optimizer_step, sft_batch, step_rng
cfg = TrainConfig()
model, tk = build_model(cfg, "cuda"); tok = get_tokenizer(tk); task = make_task(cfg)
opt = model.configure_optimizer(cfg.sft_lr, device_type="cuda")
_, ctx = autocast_context("auto", "cuda")
def step(s, parts=None):
    t0 = time.perf_counter()
    idx, targets, _ = sft_batch(task, tok, step_rng(cfg, s, 0, "sft"), cfg, model.config.block_size)
    t1 = time.perf_counter()
    with ctx:
        hidden = model(to_device(idx, "cuda"), return_hidden=True)
        targets = to_device(targets, "cuda")
        loss = weighted_logprob_sum(hidden, model.lm_head.weight, targets, sft_weights(targets))[0]
    t2 = time.perf_counter()
    optimizer_step(model, opt, loss, cfg)
    t3 = time.perf_counter()
    if parts is not None:
        parts.append((t1 - t0, t2 - t1, t3 - t2))
for s in range(20): step(s)
torch.cuda.synchronize()
parts = []; t0 = time.perf_counter()
for s in range(100): step(s, parts)
torch.cuda.synchronize(); dt = (time.perf_counter() - t0) / 100
import statistics as st
print(f"SFT step {1000*dt:.2f} ms; host: batch {1000*st.mean(p[0] for p in parts):.2f} ms, forward+loss {1000*st.mean(p[1] for p in parts):.2f} ms, backward+clip+adamw {1000*st.mean(p[2] for p in parts):.2f} ms")
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for s in range(10): step(s)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))
