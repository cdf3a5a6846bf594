"""
The rollout engine: turn a model and a batch of prompts into completions, fast. RL spends most
of its time here (the tokenizers that turn text into prompts are in common.py).

    python sample.py --ckpt=out/ckpt.pt --prompt="5 4 8 3->11:" --num_samples=4

How `generate` works: prompts of different lengths are left-padded into one (B, T) batch; one
batched forward pass ("prefill") fills a preallocated KV cache; then each step feeds only the
newest token of every unfinished row. Rows that hit a stop token are dropped from the batch (and
from the cache) once they are a quarter of it, so finished rows soon cost nothing more.

On CUDA a small model's step is hundreds of tiny kernels that take longer to launch than to run.
There (fast=None: on when CUDA) each step is one replay of a CUDA graph of `decode_step`, a step with
static shapes: the batch never shrinks (finished rows decode on, unread), the cache is written at a
slot held in a tensor, attention covers the whole cache under its `valid` mask; under autocast it
reads copies of the Linear layers already in autocast's dtype (one cast per call, not per token).
Sampling stays outside the graph, on the rows the plain loop samples: both paths draw the same tokens
(bitwise on the CPU; on CUDA other shapes may take other kernels, so a near-tie could go either way)."""
import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.func import functional_call

from common import check_numbers, cuda_graph, decode, encode, load_model, parse_config, pick_device
from model import KVCache

# -----------------------------------------------------------------------------
# Sampling

def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """logits (B, V) -> next tokens (B,). temperature 0 is greedy (argmax)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:  # keep the k most likely tokens
        kth_best = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p is not None:  # nucleus: the smallest set of tokens whose probability reaches top_p
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the better tokens
        outside = mass_before >= top_p  # (B, V)
        outside[:, 0] = False  # the best token always stays, so top_p=0 is greedy
        sorted_logits = sorted_logits.masked_fill(outside, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(1, order, sorted_logits)
    probs = logits.softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)

def decode_step(model, cache, token, pos, weights=None):
    """One new token for each of the B rows, with static shapes: token (B, 1) and pos (B, 1) are
    the inputs, cache.slot (1,) the slot they go to; pos and slot are advanced in place (the caller
    writes the next token into `token`), so calling it again, or replaying a CUDA graph of it, makes
    the next step. weights: tensors used instead of the model's own, by name. -> logits (B, V)."""
    cache.valid.index_fill_(1, cache.slot, True)  # the new token's own slot becomes visible
    inputs = dict(cache=cache, positions=pos)  # tie_weights=False: lm_head's copy, wte's lookup in full precision
    logits = functional_call(model, weights, (token,), inputs, tie_weights=False) if weights else model(token, **inputs)
    pos.add_(1)
    cache.slot.add_(1)
    return logits[:, -1]  # (B, V)

def cache_dtype(model):
    """The dtype the keys and values come out in: autocast's (bf16) when it is on, else the weights'
    (float64 weights too: autocast leaves them as they are)."""
    weight = model.transformer.wte.weight
    autocast = torch.is_autocast_enabled(weight.device.type) and weight.dtype != torch.float64
    return torch.get_autocast_dtype(weight.device.type) if autocast else weight.dtype

def prefill(model, prompts, size, cache=None):
    """Left-pad the prompts into one (B, T) batch and run it through the model at once, filling a
    KV cache of `size` slots (a new one, or `cache` reused from an earlier call). -> (cache, logits
    (B, V) of the last position, next_pos (B,) the position of each row's first new token)."""
    device, longest = model.transformer.wte.weight.device, max(len(p) for p in prompts)
    pad = torch.tensor([longest - len(p) for p in prompts], device=device)  # (B,) left padding
    idx = torch.tensor([[0] * (longest - len(p)) + list(p) for p in prompts], device=device)  # (B, T)
    positions = (torch.arange(longest, device=device)[None] - pad[:, None]).clamp(min=0)  # (B, T)
    if cache is None:
        cache = KVCache(model.config, len(prompts), size, device, cache_dtype(model))
    else:  # reused: the earlier call's slots are no longer visible, and hold no NaN a masked product could spread
        for t in (cache.valid, *cache.k, *cache.v):
            t.zero_()
    cache.length, slot, cache.slot = 0, cache.slot, None  # the prompts are written in dynamic mode
    cache.valid[:, :longest] = torch.arange(longest, device=device)[None] >= pad[:, None]  # real prompt tokens
    try:
        hidden = model(idx, cache=cache, positions=positions, return_hidden=True)  # (B, T, C): all rows at once
    finally:  # (also after an error: a kept cache must keep its slot tensor, which its graph reads)
        cache.slot = slot
    logits = model.lm_head(hidden[:, -1])  # (B, V): only the last position is needed, not (B, T, V)
    return cache, logits, positions[:, -1] + 1

def autocast_copies(model):
    """Under autocast, with weights in another dtype than its own (fp32 under bf16): {name: a copy in its dtype}
    of every nn.Linear weight and bias, else {}. A CUDA graph replays autocast's casts of the weights at every
    replay; the decode graph reads these instead (decode_step), refreshed once per generate call
    (refresh_copies). The same values: autocast rounds to its dtype as .to() does."""
    device_type = model.transformer.wte.weight.device.type
    if not torch.is_autocast_enabled(device_type):
        return {}
    dtype = torch.get_autocast_dtype(device_type)
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    return {f"{name}.{key}": p.detach().to(dtype) for name, m in linears  # (autocast leaves float64 as it is)
            for key, p in m.named_parameters(recurse=False) if p.dtype not in (dtype, torch.float64)}

def refresh_copies(model, copies):
    """Copy the model's current weights into autocast_copies' tensors, in place (a graph reads their memory)."""
    if not copies:
        return
    params = dict(model.named_parameters(remove_duplicate=False))  # (with lm_head.weight, tied to wte)
    with torch.no_grad():
        for name, copy in copies.items():
            copy.copy_(params[name])

_decoders = {}  # the fast path's caches and CUDA graphs, kept for the next call of the same shape

def static_decoder(model, B, size):
    """The fast path's (cache, token_in, pos_in, step) for B rows and `size` slots. step() decodes token_in
    (B, 1) at pos_in (B, 1) for all B rows -> logits (B, V): on CUDA a CUDA graph of decode_step, else eagerly.
    A capture costs dozens of steps, so graphs and caches are kept for later calls (the four shapes used
    last, until release_decoders()): an RL run captures once per batch shape."""
    weight, dtype = model.transformer.wte.weight, cache_dtype(model)
    key = (id(model), tuple(p.data_ptr() for p in model.parameters()), weight.dtype, B, size, dtype,
           torch.is_autocast_enabled(weight.device.type), torch.is_inference_mode_enabled())  # model, shape, modes
    if key in _decoders:
        _decoders[key] = _decoders.pop(key)  # now the one used last
    else:
        if len(_decoders) == 4:
            del _decoders[next(iter(_decoders))]  # the one used longest ago
        cache = KVCache(model.config, B, size, weight.device, dtype)
        cache.slot = torch.zeros(1, dtype=torch.long, device=weight.device)
        token_in = torch.zeros(B, 1, dtype=torch.long, device=weight.device)  # (B, 1)
        pos_in = torch.zeros(B, 1, dtype=torch.long, device=weight.device)    # (B, 1)
        copies = autocast_copies(model)  # under autocast: its Linear layers already cast, not at every replay
        step = lambda: decode_step(model, cache, token_in, pos_in, copies)  # (B, V)
        if weight.device.type == "cuda":
            step = cuda_graph(step, [cache.slot, cache.valid, pos_in])
        _decoders[key] = model, cache, token_in, pos_in, step, copies  # (the model too: its id stays its own)
    refresh_copies(model, _decoders[key][5])  # this call's weights (an optimizer step may have changed them)
    return _decoders[key][1:5]

def release_decoders():
    """Free the kept caches and CUDA graphs (their memory), e.g. after an evaluation's large batch."""
    _decoders.clear()

# -----------------------------------------------------------------------------
# generate: its inputs checked, the model in eval mode, then prefill and decode

def check_prompts(prompts, max_new_tokens, block_size, temperature=1.0, top_k=None, top_p=None):
    """generate's inputs -> the longest prompt's length; a clear error for no prompts, an empty one,
    no room, or a setting with no meaning (not a silent odd draw: a negative temperature inverts the odds)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs a non-empty list of non-empty prompts")
    if not (max_new_tokens >= 0 and 0 <= temperature < math.inf and (top_k is None or top_k >= 1)
            and (top_p is None or 0 <= top_p <= 1)):
        raise ValueError(f"generate needs max_new_tokens >= 0, a finite temperature >= 0, top_k >= 1 or None and "
                         f"top_p in [0, 1] or None; got {max_new_tokens}, {temperature}, {top_k}, {top_p}")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > block_size:
        raise ValueError(f"prompt of {longest} tokens + max_new_tokens={max_new_tokens} = "
                         f"{longest + max_new_tokens} exceeds the model's block_size={block_size}")
    return longest

@contextmanager
def eval_mode(model):
    """model.eval() inside; then the mode it had before, also after an error (sampling must not leave a
    model in training, or a trainer's model in eval mode: dropout silently off)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)

@torch.no_grad()
def generate(model, prompts, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
             stop_tokens=(), generator=None, fast=None):
    """prompts: a list of token lists (any lengths) -> one list of new tokens per prompt, ending at (and
    including) the first stop token. fast: decode with the static-shape `decode_step`, a CUDA graph on
    CUDA (None = on when the model is on CUDA; on CPU the same step runs eagerly, for tests)."""
    longest = check_prompts(prompts, max_new_tokens, model.config.block_size, temperature, top_k, top_p)
    device, B, size = model.transformer.wte.weight.device, len(prompts), longest + max_new_tokens
    with eval_mode(model):  # (its train/eval mode comes back afterwards, also after an error)
        fast = device.type == "cuda" if fast is None else fast
        if fast:  # static shapes (see decode_step); a round cache size, so that other prompt lengths reuse it
            size = min(-(-size // 64) * 64, model.config.block_size)
            cache, token_in, pos_in, step = static_decoder(model, B, size)
        cache, logits, next_pos = prefill(model, prompts, size, cache if fast else None)  # (B, V) logits of the prompts
        if fast:
            cache.slot.fill_(longest)
            pos_in.copy_(next_pos[:, None])

        new_tokens = torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)  # (B, max_new_tokens)
        active = torch.arange(B, device=device)  # (b,) the original row of each row still in the batch
        finished = torch.zeros(B, dtype=torch.bool, device=device)  # (b,) rows that already hit a stop token
        stop = torch.tensor(list(stop_tokens), dtype=torch.long, device=device)
        for t in range(max_new_tokens):
            token = sample_next(logits, temperature, top_k, top_p, generator)  # (b,)
            new_tokens[active, t] = token  # what a row adds after its first stop token is cut off below
            finished |= torch.isin(token, stop)
            n_finished = int(finished.sum()) if len(stop) else 0  # the step's one host-device sync
            if n_finished == len(active) or t == max_new_tokens - 1:
                break
            # Drop finished rows from the batch (and the cache) once they are a quarter of it: fewer rows
            # cost less per step, and waiting for a quarter keeps the cache copies to a few per call.
            if 4 * n_finished >= len(active):
                keep = (~finished).nonzero().squeeze(1)
                active, token, next_pos, finished = active[keep], token[keep], next_pos[keep], finished[keep]
                if not fast:  # (a static cache keeps every row)
                    cache.keep(keep)
            if fast:
                token_in.index_copy_(0, active, token[:, None])
                logits = step()  # (B, V)
                logits = logits if len(active) == B else logits[active]  # (b, V): the plain loop's rows
            else:
                cache.valid[:, cache.length] = True
                logits = model(token[:, None], cache=cache, positions=next_pos[:, None])[:, -1]  # (b, V)
            next_pos = next_pos + 1

        # each row ends at (and includes) its first stop token: the tokens before it, + 1 if there is one
        before_stop = (~torch.isin(new_tokens, stop)).long().cumprod(dim=1).sum(dim=1)  # (B,)
        lengths = torch.where(before_stop < max_new_tokens, before_stop + 1, before_stop)  # (B,)
        return [row[:n] for row, n in zip(new_tokens.tolist(), lengths.tolist())]

# -----------------------------------------------------------------------------
# Command line: sample from a checkpoint written by train.py

@dataclass
class SampleConfig:
    ckpt: str = "out/ckpt.pt"  # checkpoint written by train.py
    prompt: str = "5 4 8 3->11:"  # text to complete (a problem of the default task)
    num_samples: int = 4       # completions to draw
    max_new_tokens: int = 64
    temperature: float = 1.0   # 0 = greedy
    top_k: int = 0             # 0 = off
    top_p: float = 1.0         # 1 = off, 0 = only the best token
    seed: int = 1337
    device: str = "auto"       # auto = cuda if available, else cpu

def main(argv):
    cfg = parse_config(SampleConfig, argv)
    check_numbers(cfg, nonnegative=("temperature", "top_k"), at_least_one=("num_samples", "max_new_tokens"))
    if not 0 <= cfg.top_p <= 1:
        raise ValueError(f"--top_p must be in [0, 1] (1 = off, 0 = only the best token), got {cfg.top_p}")
    device = pick_device(cfg.device)
    model, tokenizer = load_model(cfg.ckpt, device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    prompt = encode(tokenizer, cfg.prompt)
    completions = generate(model, [prompt] * cfg.num_samples, cfg.max_new_tokens, cfg.temperature,
                           top_k=cfg.top_k or None, top_p=cfg.top_p if cfg.top_p < 1 else None,
                           stop_tokens=(tokenizer.eot_token,), generator=generator)
    for completion in completions:
        print(f"{cfg.prompt}{decode(tokenizer, completion)}\n---")

if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ValueError as e:
        sys.exit(f"sample.py: error: {e}")
