"""The static decode step's attention, two ways, at four sizes: SDPA (its fused kernels) and written out
(q·kᵀ/√hs + mask, softmax, ·v), each captured as a CUDA graph of sample.decode_step (sample.static_decoder) and replayed per token,
with the largest logit difference between them. model.py takes SDPA for half-precision queries (cuDNN's and
flash's kernels) and the written-out form for float32 ones (SDPA's only float32 kernel tiles 64 queries).
CUDA only.

    PYTHONPATH=. python docs/attention_variants.py
"""
import math
import sys
import time

import torch
import torch.nn.functional as F

import model as gpt
from model import GPT, GPTConfig
from sample import release_decoders, static_decoder

if not torch.cuda.is_available():
    sys.exit("docs/attention_variants.py times CUDA graphs: it needs a CUDA GPU")
as_is = gpt.CausalSelfAttention.forward

def attention(self, x, cache=None, mask=None, written_out=False):  # the static step of model.py, either way
    B, T, C = x.size()
    q, k, v = self.c_attn(x).split(C, dim=2)
    q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, 1, hs)
    k, v = cache.write(self.layer_idx, k, v)  # (B, nh, S_max, hs)
    if written_out:
        att = (q * (1.0 / math.sqrt(q.size(-1)))) @ k.transpose(-2, -1) + mask  # (B, nh, 1, S_max)
        y = att.float().softmax(dim=-1).to(v.dtype) @ v  # (softmax in float32 also for bf16)
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

def per_token(step, cache, pos, n=128, repeats=5):
    def replay():
        cache.slot.fill_(16); pos.fill_(16)
        for _ in range(n):
            step()
    replay(); torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); replay(); torch.cuda.synchronize(); times.append(time.perf_counter() - t0)
    return sorted(times)[repeats // 2] / n

sizes = [("GPT-2 small, bf16, B=1", GPTConfig(), 1, torch.bfloat16),
         ("GPT-2 small, bf16, B=64", GPTConfig(), 64, torch.bfloat16),
         ("4 layers, 128 wide, V=257, float32, B=128 (RL size)",
          GPTConfig(vocab_size=257, block_size=256, n_layer=4, n_head=4, n_embd=128), 128, torch.float32),
         ("4 layers, 256 wide, V=8192, float32, B=32 (bench default)",
          GPTConfig(vocab_size=8192, block_size=256, n_layer=4, n_head=4, n_embd=256), 32, torch.float32)]
print("| static decode step, graph replayed, 192 slots | SDPA (µs/token) | written out (µs/token) | "
      "max logit difference (scale) |\n|---|---|---|---|")
for name, cfg, B, dtype in sizes:
    torch.manual_seed(0)
    model = GPT(cfg).cuda().to(dtype).eval()
    seconds, logits = [], []
    for written_out in (False, True):
        gpt.CausalSelfAttention.forward = lambda self, *a, w=written_out: attention(self, *a, written_out=w)
        with torch.no_grad():
            release_decoders()  # (a new capture, with this attention)
            cache, token, pos, step = static_decoder(model, B, 192)  # sample.py's static step, as a CUDA graph
            token.random_(0, cfg.vocab_size, generator=torch.Generator("cuda").manual_seed(1))
            seconds.append(per_token(step, cache, pos))
            cache.valid.zero_(); cache.valid[:, :16] = True  # the same 16 random keys and values for both
            for i, t in enumerate(cache.k + cache.v):
                t.normal_(generator=torch.Generator("cuda").manual_seed(i))
            cache.slot.fill_(16); pos.fill_(16)
            logits.append(step().float().clone())
    gpt.CausalSelfAttention.forward = as_is
    release_decoders()
    print(f"| {name} | {1e6 * seconds[0]:.0f} | {1e6 * seconds[1]:.0f} | "
          f"{(logits[1] - logits[0]).abs().max().item():.1e} ({logits[0].abs().max().item():.2f}) |", flush=True)
