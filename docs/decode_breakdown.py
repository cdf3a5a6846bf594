"""Where a decode step of GPT-2 small (bfloat16, B=1) goes on a GPU: sample.generate with its kept
CUDA graph, the graph replayed alone (no sampling, no bookkeeping), the capture, decode_step
eagerly, its CUDA kernels, and decode_step compiled by torch.compile inside the same kind of graph.
--rl_size: the same for about the RL's size instead (4 layers, 128 wide, V=257, float32, B=128).
CUDA only, except --ops: the PyTorch ops of one decode step, and generate's own ops per token around it,
counted on any device (most of them a kernel each on a GPU, views aside), so that the CPU can see what a
change does to the graph's length and to the work outside it.

    PYTHONPATH=. python docs/decode_breakdown.py
    PYTHONPATH=. python docs/decode_breakdown.py --rl_size
    PYTHONPATH=. python docs/decode_breakdown.py --ops
"""
import sys
import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from model import GPT, GPTConfig, KVCache
import sample
from common import cuda_graph
from sample import generate, decode_step, static_decoder

torch.manual_seed(0)
cfg = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
B, dtype, size = 1, torch.bfloat16, "GPT-2 small, bf16, B=1"
if "--rl_size" in sys.argv:
    cfg, B, dtype = GPTConfig(vocab_size=257, block_size=256, n_layer=4, n_head=4, n_embd=128), 128, torch.float32
    size = "4 layers, 128 wide, V=257, float32, B=128"

if "--ops" in sys.argv:
    class CountOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = GPT(cfg).to(device, dtype).eval()
    cache = KVCache(cfg, B, 192, device, dtype)
    cache.slot = torch.zeros(1, dtype=torch.long, device=device)
    token, pos = (torch.zeros(B, 1, dtype=torch.long, device=device) for _ in range(2))
    views = {"view", "t", "select", "transpose", "split", "unsqueeze", "slice", "expand", "_unsafe_view", "detach"}
    with torch.no_grad(), CountOps() as counter:
        decode_step(model, cache, token, pos)
    work = {op: n for op, n in counter.ops.items() if op not in views}
    print(f"one decode step ({size}, {device}): {sum(work.values())} ops that do work, "
          f"{sum(counter.ops.values()) - sum(work.values())} views; " + ", ".join(f"{op} {n}" for op, n in
                                                                               Counter(work).most_common()))
    # generate's own work per token around the step (sampling, the stop check, bookkeeping): the ops of
    # 32 new tokens less those of 16, per token, less the step's (fast=True: the static step, eagerly here)
    totals = []
    for n in (16, 32):
        with torch.no_grad(), CountOps() as counter:
            generate(model, [[1, 2, 3]] * B, n, temperature=0, stop_tokens=(cfg.vocab_size,), fast=True)  # (no stop)
        totals.append(sum(k not in views and v for k, v in counter.ops.items()))
    print(f"generate's ops per token outside the step: {(totals[1] - totals[0]) / 16 - sum(work.values()):.0f}")
    sys.exit(0)
if not torch.cuda.is_available():
    sys.exit("docs/decode_breakdown.py measures CUDA graphs: it needs a CUDA GPU (or --ops)")
model = GPT(cfg).cuda().to(dtype).eval()
wbytes = sum(p.numel() * p.element_size() for p in model.parameters())
floor = wbytes / 3.0e12
prompt = torch.randint(0, cfg.vocab_size, (B, 16)).tolist()
N = 128

def med(fn, n=5):
    fn(); torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
    return sorted(ts)[n // 2]

def per_token(step, cache, pos, repeats=5):
    """Seconds per token of N calls of step (a replay, or decode_step eagerly) from slot 16 of the cache."""
    def replay():
        cache.slot.fill_(16); pos.fill_(16)
        for _ in range(N):
            step()
    return med(replay, repeats) / N

def report(name, per_step):
    print(f"{name}: {per_step * 1e6:8.1f} us/step  {100 * floor / per_step:5.1f}% of roofline", flush=True)

with torch.no_grad():
    report("generate(fast=True), graph kept, 128 tokens", med(lambda: generate(model, prompt, N, temperature=0, fast=True)) / N)
    report("generate(fast=False), plain loop", med(lambda: generate(model, prompt, N, temperature=0, fast=False), 3) / N)
    sample.release_decoders()
    torch.cuda.synchronize(); t0 = time.perf_counter()
    cache, token_in, pos_in, step = static_decoder(model, B, 192)
    torch.cuda.synchronize(); print(f"capture (new static_decoder): {1000 * (time.perf_counter() - t0):.1f} ms")
    report("graph replay only (no sampling, no bookkeeping)", per_token(step, cache, pos_in))
    report("decode_step eager, no graph", per_token(lambda: decode_step(model, cache, token_in, pos_in), cache, pos_in, 3))
    try:  # how many kernels one step is: the graph replays them back to back, so time per kernel = replay / count
        from torch.profiler import ProfilerActivity, profile
        cache.slot.fill_(16); pos_in.fill_(16)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            decode_step(model, cache, token_in, pos_in); torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.device_time for e in kernels)  # us
        print(f"kernels in one decode step: {len(kernels)}, GPU busy {busy:.0f} us of them", flush=True)
        by_name = {}  # kernel name -> (count, us)
        for e in kernels:
            n, t = by_name.get(e.name, (0, 0.0))
            by_name[e.name] = n + 1, t + e.device_time
        for name, (n, t) in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:12]:  # where the busy time goes
            print(f"  {t:7.1f} us  {n:3d}x  {name[:110]}")
    except Exception as e:
        print(f"kernel count failed: {type(e).__name__}: {str(e)[:300]}")
    # which attention kernel SDPA picks matters at q_len 1 over a masked static cache: the graph replayed
    # with each backend SDPA has (a backend that cannot take these inputs says so)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    for backend in (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH):
        try:
            sample.release_decoders()  # (a new capture, under this backend)
            with sdpa_kernel(backend):
                c3, _, p3, g3 = static_decoder(model, B, 192)
            report(f"graph replay only, SDPA backend {backend.name}", per_token(g3, c3, p3))
        except Exception as e:
            print(f"SDPA backend {backend.name} failed: {type(e).__name__}: {str(e)[:200]}")
    for mode in ("default",):
        try:
            torch._dynamo.reset()
            compiled = torch.compile(decode_step, mode=mode, fullgraph=True)
            c2 = KVCache(cfg, B, 192, "cuda", dtype)
            c2.slot = torch.zeros(1, dtype=torch.long, device="cuda")
            t2, p2 = (torch.zeros(B, 1, dtype=torch.long, device="cuda") for _ in range(2))
            t0 = time.perf_counter()
            compiled(model, c2, t2, p2); compiled(model, c2, t2, p2); torch.cuda.synchronize()
            print(f"compile {mode}: {time.perf_counter() - t0:.1f} s", flush=True)
            g = cuda_graph(lambda: compiled(model, c2, t2, p2), [c2.slot, c2.valid, p2])
            report(f"compiled ({mode}) + our graph, replay only", per_token(g, c2, p2))
            # same logits as eager for one step from the same state
            c2.slot.fill_(5); p2.fill_(5); cache.slot.fill_(5); pos_in.fill_(5)
            c2.valid.copy_(cache.valid)
            for mine, theirs in zip(c2.k + c2.v, cache.k + cache.v):
                mine.copy_(theirs)
            a = g().float().clone(); b = decode_step(model, cache, token_in, pos_in).float()
            print(f"  max |compiled - eager| logits: {(a - b).abs().max().item():.3e} (scale {b.abs().max().item():.2f})")
        except Exception as e:
            print(f"compile {mode} failed: {type(e).__name__}: {str(e)[:300]}")
