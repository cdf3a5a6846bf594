"""
Measurements against peers, each printed as one markdown table to paste into the README.

    python bench.py sample     # KV-cached sampler (plain loop, CUDA-graph fast path) vs no-cache loop vs Hugging Face
    python bench.py logprobs   # fused token log-probs vs naive vs PyTorch's linear_cross_entropy (and Liger-Kernel)
    python bench.py rewards    # calls/s and the slowest call of each reward over a fuzz corpus
    python bench.py rl         # one RL step split into sampling, scoring and the update
    python bench.py sft        # SFT steps/s of train.py's cold start, eager vs torch.compile vs a CUDA graph
    python bench.py all        # all five at their default sizes

Sizes are --key=value flags, the fields of each command's dataclass below, e.g.
    python bench.py sample --vocab_size=50257 --new_tokens=32 --repeats=1
    python bench.py sample --gpt2_small=true --batch_size=1   # GPT-2 small in bfloat16, vs the memory roofline
    python bench.py logprobs --N=1024 --chunks=1024
    python bench.py rl --ckpt=out/ckpt.pt --steps=5   # rl and sft also take any field of train.TrainConfig

Every time is measured after a warm-up: sample and logprobs give the median of `repeats` runs, rl the
median over its `steps`, sft the mean step of one timed block; every ratio compares numbers measured
by the same command, on the same machine, at the same moment.
"""
import copy
import importlib.util
import inspect
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import rewards
import tasks
from common import (autocast_context, build_model, check_numbers, decode, encode, get_tokenizer, load_checkpoint,
                    load_model, parse_config, pick_device)
from model import GPT
from reinforce import default_chunk_size, sft_weights, shape_rewards, token_logprobs, weighted_logprob_sum
import sample
from sample import generate
from train import (TrainConfig, check_config, fast_path, fused, make_task, pad_batch, policy_update, sft_batch,
                   step_function, step_rng, train_graph, train_step)

ROOT = os.path.dirname(os.path.abspath(__file__))
HAS_LINEAR_CROSS_ENTROPY = hasattr(F, "linear_cross_entropy")  # torch >= 2.13
HAS_LIGER = importlib.util.find_spec("liger_kernel") is not None  # optional, CUDA only (Triton)

# -----------------------------------------------------------------------------
# the machine, the clock, the table

def machine(device):
    """One line of facts about where the numbers were measured."""
    cpu = platform.processor()
    if not cpu and os.path.exists("/proc/cpuinfo"):  # Linux leaves platform.processor() empty
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = names[0] if names else ""
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    return (f"torch {torch.__version__}, {where}, {torch.get_num_threads()} torch threads on "
            f"{os.cpu_count()} cores, {cpu or platform.machine()}")


def setup(threads, device):
    if threads:
        torch.set_num_threads(threads)
    return pick_device(device)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()  # CUDA runs asynchronously: wait for it before reading the clock


def median_time(fn, repeats, device="cpu"):
    """(median seconds of fn() over `repeats` runs, fn's last result). Warm up before calling."""
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def print_table(title, header, rows):
    print(title + "\n")
    for row in [header, ["---"] * len(header), *rows]:
        print("| " + " | ".join(str(x) for x in row) + " |")

# -----------------------------------------------------------------------------
# sample: tokens/s of greedy decoding, the same random weights in three samplers

@dataclass
class SampleBench:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    vocab_size: int = 8192  # GPT-2's 50257 spends most of each step in the head, the same in all three
    batch_size: int = 32    # B prompts decoded together
    prompt_len: int = 16    # tokens in each (random) prompt
    new_tokens: int = 128   # tokens generated per prompt; no stop token, so every row makes them all
    dtype: str = "float32"  # float32 | bfloat16: the weights (and so the KV cache) of every sampler; autocast:
    #                         float32 weights, every sampler under bfloat16 autocast (train.py's CUDA default)
    gpt2_small: bool = False  # GPT-2 small: n_layer=12 n_head=12 n_embd=768 vocab_size=50257 bfloat16 (overrides those,
    #                           the dtype unless it is autocast)
    bandwidth: float = 3.0e12  # bytes/s assumed for the memory roofline (about what an H100 measures)
    compiled: bool = False  # a row more: the fast path, decode_step through torch.compile (compiled in its warm-up)
    repeats: int = 3
    threads: int = 0        # torch CPU threads (0 = torch's default)
    device: str = "auto"
    seed: int = 1337


def parse_bench(cls, argv):
    """A bench's --key=value flags, refusing by name a size, repeat or step count below 1 and a float that
    is not finite (threads, seed and chunk may be 0: torch's default, a seed, the default chunk)."""
    cfg = parse_config(cls, argv)
    check_numbers(cfg, at_least_one=[f.name for f in fields(cls) if type(f.default) is int
                                     and f.name not in ("threads", "seed", "chunk", "warmup")])
    return cfg


def sample_sizes(argv):
    """The SampleBench of a command line, with --gpt2_small's sizes applied."""
    cfg = parse_bench(SampleBench, argv)
    if cfg.gpt2_small:
        cfg = replace(cfg, n_layer=12, n_head=12, n_embd=768, vocab_size=50257,
                      dtype="autocast" if cfg.dtype == "autocast" else "bfloat16")
    if cfg.dtype not in ("float32", "bfloat16", "autocast"):
        raise ValueError(f"--dtype={cfg.dtype} is not one of float32, bfloat16, autocast")
    return cfg


@contextmanager
def compiled_decode_step():
    """Inside: sample.decode_step compiled by torch.compile. Kept decoders are dropped on the way in and out
    (a kept CUDA graph holds the step it was captured with)."""
    plain, sample.decode_step = sample.decode_step, torch.compile(sample.decode_step)
    sample.release_decoders()
    try:
        yield
    finally:
        sample.decode_step = plain
        sample.release_decoders()


@torch.no_grad()
def naive_generate(model, idx, max_new_tokens):
    """nanoGPT's loop without a cache: run the whole sequence again for every new token.
    As in nanoGPT, only the last position goes through the head."""
    for _ in range(max_new_tokens):
        h = model(idx, return_hidden=True)[:, -1]  # (B, C)
        next_token = model.lm_head(h).argmax(dim=-1)  # (B,)
        idx = torch.cat([idx, next_token[:, None]], dim=1)  # (B, T + 1)
    return idx[:, -max_new_tokens:]


@torch.no_grad()
def hf_generate(hf, idx, max_new_tokens):
    """Greedy Hugging Face generate; the config has no eos token, so every row makes all tokens."""
    out = hf.generate(idx, attention_mask=torch.ones_like(idx), do_sample=False, pad_token_id=0,
                      max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)
    return out[:, idx.size(1):]


def bench_sample(argv):
    cfg = sample_sizes(argv)
    device = setup(cfg.threads, cfg.device)
    dtype = torch.float32 if cfg.dtype == "autocast" else getattr(torch, cfg.dtype)  # of the weights
    ctx = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=cfg.dtype == "autocast")
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging
    logging.disable_progress_bar()  # keep the output a clean table
    torch.manual_seed(cfg.seed)
    # one random Hugging Face GPT-2, saved and loaded back as ours: the same weights in both
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.prompt_len + cfg.new_tokens,
                                    n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0,
                                    embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None))
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = GPT.from_pretrained(tmp).to(device, dtype).eval()
    hf = hf.to(device, dtype).eval()  # eval: no dropout
    B, n = cfg.batch_size, cfg.new_tokens
    idx = torch.randint(0, cfg.vocab_size, (B, cfg.prompt_len), device=device)  # (B, T)
    graph = "replayed as a CUDA graph" if device.startswith("cuda") else "run eagerly (no CUDA graph on cpu)"
    runs = [("fast", f"ours: `sample.generate(fast=True)`, static-shape step {graph}",
             lambda k: generate(ours, idx.tolist(), k, temperature=0, fast=True)),
            ("eager", "ours: `sample.generate(fast=False)`, the plain KV-cache loop",
             lambda k: generate(ours, idx.tolist(), k, temperature=0, fast=False)),
            ("nanoGPT", "nanoGPT-style loop, no cache", lambda k: naive_generate(ours, idx, k).tolist()),
            ("Hugging Face", "Hugging Face `GPT2LMHeadModel.generate` (DynamicCache)",
             lambda k: hf_generate(hf, idx, k).tolist())]
    if cfg.compiled:
        where = " in the CUDA graph" if device.startswith("cuda") else ", no CUDA graph on cpu"
        runs.insert(1, ("compiled", f"ours: `sample.generate(fast=True)`, `decode_step` through `torch.compile`{where}",
                        runs[0][2]))  # the fast path's call, run inside compiled_decode_step()
    default = "fast" if device.startswith("cuda") else "eager"  # what generate does with fast=None
    seconds, outputs = {}, {}
    for name, _, run in runs:
        with ctx, compiled_decode_step() if name == "compiled" else nullcontext():
            run(n if name in ("fast", "compiled") else min(8, n))  # warm-up: the fast path captures (compiles) here
            seconds[name], outputs[name] = median_time(lambda: run(n), cfg.repeats, device)
    # the memory roofline: every weight is read once per step (under autocast: in bf16), at best at the bandwidth
    weight_bytes = sum(p.numel() * (2 if cfg.dtype == "autocast" else p.element_size()) for p in ours.parameters())
    floor = weight_bytes / cfg.bandwidth  # seconds per step
    rows = [[label, f"{B * n / seconds[name]:,.0f}", f"{seconds[name]:.2f}", f"{1000 * seconds[name] / n:.3f}",
             f"{100 * floor / (seconds[name] / n):.1f}%", f"{seconds[name] / seconds[default]:.2f}x"]
            for name, label, _ in runs]
    print_table(f"**sample**: {machine(device)}. Greedy, B={B}, prompt {cfg.prompt_len} tokens, {n} new "
                f"tokens; random GPT-2-shaped model n_layer={cfg.n_layer} n_head={cfg.n_head} "
                f"n_embd={cfg.n_embd} vocab_size={cfg.vocab_size}, {cfg.dtype}; median of {cfg.repeats}.",
                ["sampler", "tokens/s", "seconds", "ms/step", "of memory roofline",
                 f"ours ({default}) is faster by"], rows)
    print(f"\nmemory roofline: {weight_bytes / 1e6:,.1f} MB of weights read once per step at an assumed "
          f"{cfg.bandwidth:.2g} B/s (--bandwidth) = {1e6 * floor:,.1f} µs per step at best (KV cache reads left out)")
    shown, agree = range(min(4, B)), []
    for peer in (name for name, _, _ in runs if name != default):
        same = sum(outputs[peer][i] == outputs[default][i] for i in shown)
        with ctx:
            gaps = [parting_gap(ours, idx[i].tolist(), outputs[default][i], outputs[peer][i]) for i in shown]
        agree.append(f"{peer}: {same}/{len(shown)}" + ("" if same == len(shown) else
                     f" (the others part where the two tokens' logits are at most {max(gaps):.2%} of the largest "
                     "|logit| apart)"))
    print(f"rows identical to ours ({default}; first {len(shown)} rows): " + ", ".join(agree))


@torch.no_grad()
def parting_gap(model, prompt, a, b):
    """Where two greedy completions a, b first differ, how near a tie was it? -> |logit(a_t) - logit(b_t)| over the
    largest |logit| in a full pass of model over prompt + a[:t] (0: they never part). Kernels that round otherwise
    (bf16, another batch shape) may flip a near-tie; a large gap means a bug, not rounding."""
    t = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if t is None:
        return 0.0
    logits = model(torch.tensor([prompt + a[:t]], device=model.lm_head.weight.device))[0, -1].float()  # (V,)
    return ((logits[a[t]] - logits[b[t]]).abs() / logits.abs().max()).item()

# -----------------------------------------------------------------------------
# logprobs: time and peak memory of log π(target), forward + backward, one process per row

@dataclass
class LogprobsBench:
    N: int = 4096                  # tokens (rows of hidden states)
    C: int = 768                   # channels: GPT-2 small's n_embd
    V: int = 50257                 # GPT-2's vocabulary
    chunks: str = "0,256,1024,4096"  # chunk sizes (rows) for ours and PyTorch's (0 = each one's default)
    repeats: int = 3
    threads: int = 0
    device: str = "auto"
    seed: int = 1337
    impl: str = ""                 # set by the parent for each worker: naive | ours | fused | torch | liger
    chunk: int = 0                 # set by the parent for each worker (0 = the implementation's default)


def naive_logprobs(h, W, t):
    """The obvious way: build all (N, V) logits, log-softmax them, pick each target's entry."""
    return torch.log_softmax(h @ W.T, dim=-1).gather(1, t[:, None]).squeeze(1)


def torch_logprobs(h, W, t, chunk=0):
    """PyTorch's chunked linear_cross_entropy (torch >= 2.13). Cross-entropy is −log p(target)."""
    from torch.nn.modules.linear_cross_entropy_options import LinearCrossEntropyOptions
    options = (LinearCrossEntropyOptions() if chunk == 0 else
               LinearCrossEntropyOptions(chunking_method=None, batch_chunk_size=chunk))
    return -F.linear_cross_entropy(h, W, t, reduction="none", options=options)


def liger_logprobs(h, W, t):
    """Liger-Kernel's fused linear cross-entropy (Triton: CUDA only), its per-token form (reduction "none",
    whose backward recomputes each chunk's logits, as token_logprobs does). Cross-entropy is −log p(target)."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    return -LigerFusedLinearCrossEntropyLoss(reduction="none")(W, h, t)


def peak_memory(device):
    """Bytes: on CPU the peak resident set size of this process so far (ru_maxrss: KiB on Linux,
    bytes on macOS); on CUDA the peak of torch's allocated memory."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def logprobs_worker(argv):
    """One implementation in a fresh process, so that its memory peak is its own. Prints JSON.

    extra = peak − base − grads. base: the memory once h (N, C), W (V, C), targets and the upstream
    gradient exist (after a tiny warm-up; nothing bigger lived before them, so the peak so far is
    the current size). peak: the high-water mark over the warm-up and timed runs. grads: the bytes
    of dL/dh and dL/dW, which every implementation returns. So extra is what an implementation
    builds or keeps on top: logits, softmax, temporaries."""
    cfg = parse_bench(LogprobsBench, argv)
    device = setup(cfg.threads, cfg.device)
    torch.manual_seed(cfg.seed)
    fn = {"naive": naive_logprobs, "ours": lambda h, W, t: token_logprobs(h, W, t, chunk_size=cfg.chunk),
          "fused": lambda h, W, t: weighted_logprob_sum(h, W, t, torch.ones(len(t), device=t.device), cfg.chunk)[0],
          "torch": lambda h, W, t: torch_logprobs(h, W, t, cfg.chunk), "liger": liger_logprobs}[cfg.impl]
    # a tiny run first: the first pass pages in library code and starts autograd's threads,
    # which would otherwise count as memory of the implementation
    tiny_h, tiny_W = (torch.randn(n, cfg.C, device=device, requires_grad=True) for n in (64, 256))
    fn(tiny_h, tiny_W, torch.randint(0, 256, (64,), device=device)).sum().backward()
    del tiny_h, tiny_W
    h = torch.randn(cfg.N, cfg.C, device=device).requires_grad_()  # (N, C) final hidden states
    W = torch.empty(cfg.V, cfg.C, device=device).normal_(std=0.02).requires_grad_()  # (V, C) made in place
    t = torch.randint(0, cfg.V, (cfg.N,), device=device)  # (N,) targets
    g = torch.randn(cfg.N, device=device)  # (N,) upstream dL/dlog π: in RL the advantage over the normaliser

    def step():
        h.grad = W.grad = None  # the last run's gradients are freed, this run's are new
        if cfg.impl == "fused":  # g is known before the sum: the gradient is made in the forward pass
            weighted_logprob_sum(h, W, t, g, chunk_size=cfg.chunk)[0].backward()
        else:
            (fn(h, W, t) * g).sum().backward()

    sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device) if device.startswith("cuda") else peak_memory(device)
    step()  # warm-up
    seconds, _ = median_time(step, cfg.repeats, device)
    grads = (h.numel() + W.numel()) * h.element_size()
    print(json.dumps({"ms": 1000 * seconds, "extra_mib": (peak_memory(device) - base - grads) / 2**20}))


LOGPROB_IMPLS = {"naive": "naive `log_softmax(h @ W.T).gather`", "ours": "ours `reinforce.token_logprobs`",
                 "fused": "ours, gradient in forward `reinforce.weighted_logprob_sum`",
                 "torch": "PyTorch `F.linear_cross_entropy`",
                 "liger": "Liger-Kernel `LigerFusedLinearCrossEntropyLoss(reduction=\"none\")`"}


def bench_logprobs(argv):
    cfg = parse_bench(LogprobsBench, argv)
    device = setup(cfg.threads, cfg.device)
    chunks = [int(c) for c in cfg.chunks.split(",")]
    variants = [("naive", 0)] + [("ours", c) for c in chunks] + [("fused", c) for c in chunks]
    variants += [("torch", c) for c in dict.fromkeys([0] + chunks)] if HAS_LINEAR_CROSS_ENTROPY else []
    variants += [("liger", 0)] if HAS_LIGER and device.startswith("cuda") else []
    rows, naive = [], None
    for impl, chunk in variants:
        args = [f"--{k}={v}" for k, v in {**asdict(cfg), "impl": impl, "chunk": chunk}.items()]
        done = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), "_logprobs_worker", *args],
                              capture_output=True, text=True)
        budget_rows = default_chunk_size(cfg.V, device_type=device.split(":")[0])  # ours: from the budget
        auto = "auto" if impl in ("torch", "liger") else f"default ({budget_rows})"
        row = [LOGPROB_IMPLS[impl], "—" if impl == "naive" else chunk or auto]
        if done.returncode != 0:  # e.g. out of memory: say so in the table and go on
            rows.append(row + ["failed: " + "".join(done.stderr.strip().splitlines()[-1:]), "", "", ""])
            continue
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]  # (a library may print too)
        if not lines:
            rows.append(row + ["failed: no result printed", "", "", ""])
            continue
        r = json.loads(lines[-1])
        naive = r if impl == "naive" else naive
        ratios = [f"{r[k] / naive[k]:.2f}" if naive else "—" for k in ("ms", "extra_mib")]
        rows.append(row + [f"{r['ms']:,.0f}", f"{r['extra_mib']:,.0f}", *ratios])
    if not HAS_LINEAR_CROSS_ENTROPY:
        rows.append([LOGPROB_IMPLS["torch"], "—", f"not in torch {torch.__version__}", "", "", ""])
    if not (HAS_LIGER and device.startswith("cuda")):  # (pip install liger-kernel; its Triton kernels need CUDA)
        rows.append([LOGPROB_IMPLS["liger"], "—", "needs CUDA" if HAS_LIGER else "not installed", "", "", ""])
    memory = "allocated CUDA memory" if device.startswith("cuda") else "RSS"
    print_table(f"**logprobs**: {machine(device)}. N={cfg.N} tokens, C={cfg.C}, V={cfg.V}, float32; forward + "
                f"backward of Σ g·log π(target), median of {cfg.repeats}; peak extra memory = peak {memory} "
                f"beyond inputs, weights and their gradients, each row in its own process.",
                ["implementation", "chunk", "fwd+bwd (ms)", "peak extra memory (MiB)", "time vs naive",
                 "memory vs naive"], rows)

# -----------------------------------------------------------------------------
# rewards: throughput and worst case of the exact rewards on hostile and real completions

@dataclass
class RewardsBench:
    n: int = 5000  # completions in the fuzz corpus
    repeats: int = 3
    seed: int = 1337


HOSTILE = ["9**9**9**9", "9^9^9^9", "*".join(["99"] * 60), "1/0", "1/(1-1)", "__import__('os').system('ls')",
           "-" * 150 + "1", "1" * 300, "((((((((", "2" + "*2" * 99, "99999999999999999999/7" * 9, "1e308*1e308"]
MARKERS = ["####", "#### 1 ", "\\boxed{", "\\boxed{1}", "The answer is ", "<answer>", "<answer>1</answer>", "{", "("]


def fuzz_corpus(n, seed):
    """[(kind, text)]: garbage of every size, hostile answers, and real traces of every task."""
    rng = random.Random(seed)
    alphabet = [chr(i) for i in range(32, 127)] + ["\n", "\t", "é", "中"]
    blob = "".join(rng.choices(alphabet, k=200_000))  # long garbage is cut from this at random
    arithmetic, pairs, countdown = tasks.ArithmeticTask(digits=4), tasks.PairsTask(), tasks.CountdownTask()
    gsm8k = tasks.GSM8KTask(os.path.join(ROOT, "tests", "data", "gsm8k_tiny.jsonl"))

    def trace(task):
        return task.trace(task.sample("train", rng), rng.choice(task.styles))

    makers = [
        ("garbage", lambda: "".join(rng.choices(alphabet, k=rng.randint(0, 300)))),
        ("long garbage", lambda: blob[rng.randrange(100_000):][:rng.randint(10_000, 100_000)]),
        ("hostile expression", lambda: f"<answer>{rng.choice(HOSTILE)}</answer>"),
        ("deep parentheses", lambda: "<answer>" + "(" * (d := rng.randint(10, 5000)) + "1" + ")" * d + "</answer>"),
        ("huge number", lambda: "#### " + "9" * rng.randint(100, 100_000)),
        ("repeated markers", lambda: rng.choice(MARKERS) * rng.randint(100, 20_000)),
        ("arithmetic trace", lambda: trace(arithmetic)),
        ("pairs trace", lambda: trace(pairs)),
        ("countdown trace", lambda: trace(countdown)),
        ("gsm8k trace", lambda: trace(gsm8k)),
    ]
    return [(kind, make()) for kind, make in (makers[i % len(makers)] for i in range(n))]


def bench_rewards(argv):
    cfg = parse_bench(RewardsBench, argv)
    corpus = fuzz_corpus(cfg.n, cfg.seed)
    arithmetic, pairs, countdown = tasks.ArithmeticTask(digits=4), tasks.PairsTask(), tasks.CountdownTask()
    rng = random.Random(cfg.seed)
    a, p = arithmetic.sample("test", rng), pairs.sample("test", rng)  # what every call checks against
    c = countdown.sample("test", rng)
    functions = {
        "`rewards.exact_match`": lambda text: rewards.exact_match(text, a.answer),
        "`rewards.format_reward`": rewards.format_reward,
        "`ArithmeticTask.reward`": lambda text: arithmetic.reward(text, a),
        "`PairsTask.reward`": lambda text: pairs.reward(text, p),
        "`CountdownTask.reward`": lambda text: countdown.reward(text, c),
    }
    rows = []
    for name, fn in functions.items():
        for _, text in corpus[:100]:  # warm-up
            fn(text)
        totals, slowest = [], (0.0, "")  # seconds per pass; (seconds, kind) of the slowest call
        for _ in range(cfg.repeats):
            totals.append(0.0)
            for kind, text in corpus:
                t0 = time.perf_counter()
                fn(text)
                dt = time.perf_counter() - t0
                totals[-1] += dt
                slowest = max(slowest, (dt, kind))
        total = statistics.median(totals)
        rows.append([name, f"{len(corpus) / total:,.0f}", f"{1e6 * total / len(corpus):.1f}",
                     f"{1e6 * slowest[0]:,.0f}", slowest[1]])
    kinds = ", ".join(dict.fromkeys(kind for kind, _ in corpus))
    print_table(f"**rewards**: {machine('cpu')}. {len(corpus)} completions ({kinds}; up to 100,000 "
                f"characters), seed {cfg.seed}; median of {cfg.repeats} passes, slowest call over all passes.",
                ["reward", "calls/s", "mean (µs)", "slowest call (µs)", "slowest input"], rows)

# -----------------------------------------------------------------------------
# rl: where the time of one RL step goes

@dataclass
class RLBench:
    steps: int = 3  # timed RL steps, after two warm-up steps (a graphed fused update captures in the second)
    ckpt: str = ""  # a train.py checkpoint, for realistic lengths ("" = random weights, which babble)


def bench_and_train_configs(cls, argv):
    """-> (the bench's own cls config, train.TrainConfig from the other flags; with a --ckpt, on top
    of the checkpoint's saved config)."""
    own = [arg for arg in argv if arg[2:].split("=", 1)[0] in {f.name for f in fields(cls)}]
    if {"-h", "--help"} & set(argv):  # the bench's own flags here; train.py's below, where TrainConfig is parsed
        print(f"the bench's own flags:\n\n{inspect.getsource(cls)}\nand train.py's, for the run it measures:")
    bench = parse_bench(cls, own)
    ckpt = getattr(bench, "ckpt", "")
    saved = load_checkpoint(ckpt)["config"] if ckpt else None
    try:
        cfg = parse_config(TrainConfig, [arg for arg in argv if arg not in own], base=saved)
    except ValueError as e:
        raise ValueError(f"{e}; and the bench's own: {', '.join(f.name for f in fields(cls))}") from None
    check_config(cfg)
    return bench, cfg


def bench_rl(argv):
    bench, cfg = bench_and_train_configs(RLBench, argv)
    device = setup(cfg.threads, cfg.device)
    torch.manual_seed(cfg.seed)
    if bench.ckpt:
        model, tokenizer = load_model(bench.ckpt, device)
    else:
        model, tokenizer_name = build_model(cfg, device)
        tokenizer = get_tokenizer(tokenizer_name)
    device_type = device.split(":")[0]
    dtype, ctx = autocast_context(cfg.dtype, device_type)
    task = make_task(cfg)
    optimizer = model.configure_optimizer(cfg.rl_lr, cfg.weight_decay, device_type=device_type)
    P, G, eot = cfg.prompts_per_step, cfg.samples_per_prompt, tokenizer.eot_token
    rng, gen = random.Random(cfg.seed), torch.Generator(device=device).manual_seed(cfg.seed)

    def rl_step():
        """-> [seconds sampling, scoring, updating], completion tokens. The calls train.py makes."""
        problems = [task.sample("train", rng) for _ in range(P)]
        prompts = [encode(tokenizer, p.prompt) for p in problems for _ in range(G)]
        t0 = time.perf_counter()
        with ctx:
            completions = generate(model, prompts, cfg.max_new_tokens, temperature=cfg.temperature,
                                   stop_tokens=(eot,), generator=gen, fast=fast_path(cfg))
        t1 = time.perf_counter()
        correct = torch.tensor([task.reward(decode(tokenizer, comp), problems[i // G])
                                for i, comp in enumerate(completions)])  # (B,)
        t2 = time.perf_counter()
        idx, targets, mask = pad_batch(prompts, completions)
        group_ids = torch.arange(P).repeat_interleave(G)  # (B,)
        policy_update(run, idx.to(device), targets.to(device), mask.to(device),
                      shape_rewards(correct, cfg.wrong_reward).to(device), group_ids.to(device), fused_step)
        t3 = time.perf_counter()  # policy_update reads the loss with .item(): the device is done
        return [t1 - t0, t2 - t1, t3 - t2], sum(len(comp) for comp in completions)

    train_model = torch.compile(model) if cfg.compile else model  # as train.py: the update's forward only
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if cfg.kl_coef > 0 else None  # as train.start_rl
    run = SimpleNamespace(cfg=cfg, ctx=ctx, device=device, model=model, train_model=train_model, optimizer=optimizer,
                          ref_model=ref_model, ddp=False)
    fused_step = step_function(run, entropy=True) if fused(cfg) else None  # as train.py: on CUDA a graph replay
    rl_step(), rl_step()  # warm-up (a graphed fused update captures in its second step)
    results = [rl_step() for _ in range(bench.steps)]
    results = [(times + [sum(times)], n) for times, n in results]  # the whole step as a 4th phase
    phases = ["sampling (`sample.generate`, KV cache)", "scoring (decode + `task.reward`)",
              "update (`train.policy_update`: forward, backward, AdamW)", "whole step"]
    seconds = [statistics.median(times[i] for times, _ in results) for i in range(4)]
    rows = [[phase, f"{1000 * s:,.1f}", f"{100 * s / seconds[3]:.0f}%",
             f"{statistics.median(n / times[i] for times, n in results):,.0f}"]
            for i, (phase, s) in enumerate(zip(phases, seconds))]
    length = statistics.mean(n for _, n in results) / (P * G)
    c, weights = model.config, f"checkpoint {bench.ckpt}" if bench.ckpt else "random weights"
    print_table(f"**rl**: {machine(device)}. Task {cfg.task}, {weights} "
                f"(n_layer={c.n_layer} n_head={c.n_head} n_embd={c.n_embd} vocab_size={c.vocab_size}), "
                f"B={P}x{G}={P * G} completions of {length:.1f} tokens on average (max_new_tokens="
                f"{cfg.max_new_tokens}), {dtype}{', compiled update' if cfg.compile else ''}"
                f"{', fused update' if fused(cfg) else ''}; "
                f"median of {bench.steps} steps after a warm-up.",
                ["phase", "ms/step", "share", "completion tokens/s"], rows)
    print(f"\ndominant: {phases[seconds.index(max(seconds[:3]))].split(' (')[0]}")

# -----------------------------------------------------------------------------
# sft: steps/s of the cold start, eager and compiled

@dataclass
class SFTBench:
    steps: int = 50                   # timed SFT steps, after the warm-up
    warmup: int = 5                   # untimed steps first (torch.compile compiles in these, twice: see below)
    variants: str = "eager,compiled"  # eager: train.py's default; compiled: its --compile=true;
    #                                   graph: its CUDA default, one CUDA graph per step (CUDA only)


def bench_sft(argv):
    """train.py's SFT step (batch, forward, fused log-prob loss, backward, clip, AdamW) on the train.py
    flags given (default: the default run's sizes), from a fresh model per variant."""
    bench, cfg = bench_and_train_configs(SFTBench, argv)
    device = setup(cfg.threads, cfg.device)
    device_type = device.split(":")[0]
    dtype, ctx = autocast_context(cfg.dtype, device_type)
    task = make_task(cfg)
    rows = []
    for variant in bench.variants.split(","):  # (all checked before any is timed)
        if variant not in ("eager", "compiled", "graph"):
            raise ValueError(f"--variants: {variant!r} is not eager, compiled or graph")
        if variant == "graph" and device_type != "cuda":
            raise ValueError("--variants=graph captures a CUDA graph: it needs a CUDA device")
        if variant != "eager" and bench.warmup < 2:  # (the graph captures at step 2; compile compiles twice)
            raise ValueError(f"--variants={variant} needs --warmup >= 2, or its capture or compile would be timed")
    for variant in bench.variants.split(","):
        torch.manual_seed(cfg.seed)
        model, tokenizer_name = build_model(cfg, device)
        tokenizer = get_tokenizer(tokenizer_name)
        optimizer = model.configure_optimizer(cfg.sft_lr, cfg.weight_decay, device_type=device_type)
        net = torch.compile(model) if variant == "compiled" else model
        run = SimpleNamespace(cfg=cfg, ctx=ctx, device=device, model=model, train_model=net, optimizer=optimizer)
        update = train_graph(run) if variant == "graph" else partial(train_step, run)  # as train.py's main picks

        def one_step(step):  # the body of train.py's SFT loop, without its logging
            idx, targets, _ = sft_batch(task, tokenizer, step_rng(cfg, step, 0, "sft"), cfg, model.config.block_size)
            return update(idx, targets, sft_weights(targets), cfg.sft_lr)

        # batches differ in length: a compiled model compiles for the first length, then once more
        # for lengths in general (dynamic shapes), so the warm-up needs at least two lengths
        t0 = time.perf_counter()
        for step in range(bench.warmup):
            one_step(step)
        sync(device)
        warmup = time.perf_counter() - t0
        seconds, _ = median_time(lambda: [one_step(bench.warmup + i) for i in range(bench.steps)], 1, device)
        rows.append([variant, f"{warmup:.1f}", f"{bench.steps / seconds:,.1f}", f"{1000 * seconds / bench.steps:.2f}"])
    c = model.config
    print_table(f"**sft**: {machine(device)}. Task {cfg.task}, n_layer={c.n_layer} n_head={c.n_head} "
                f"n_embd={c.n_embd} vocab_size={c.vocab_size}, {cfg.sft_batch_size} traces per step, {dtype}; "
                f"{bench.steps} timed steps after {bench.warmup} warm-up steps.",
                ["train step", "warm-up (s)", "steps/s", "ms/step"], rows)

# -----------------------------------------------------------------------------

COMMANDS = {"sample": bench_sample, "logprobs": bench_logprobs, "rewards": bench_rewards, "rl": bench_rl,
            "sft": bench_sft}


def main(argv):
    if argv and argv[0] == "_logprobs_worker":  # internal: one row of the logprobs table
        return logprobs_worker(argv[1:])
    if not argv or argv[0] not in (*COMMANDS, "all"):
        raise ValueError(f"usage: python bench.py {{{'|'.join(COMMANDS)}|all}} [--key=value ...]")
    if argv[0] != "all":
        return COMMANDS[argv[0]](argv[1:])
    if argv[1:]:
        raise ValueError("'all' runs every command at its default sizes and takes no flags")
    for command in COMMANDS.values():
        command([])
        print()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ValueError as e:
        sys.exit(f"bench.py: error: {e}")
