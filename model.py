"""
A GPT in one file: GPT-2's architecture and parameter names, so Hugging Face GPT-2 weights load
by name, plus the two things RL needs from a model: a KV cache for fast sampling (sample.py) and
the final hidden states, so that log-probs never build the (B, T, V) logits (reinforce.py).

    model = GPT(GPTConfig(vocab_size=300, block_size=64, n_layer=4, n_head=4, n_embd=128))
    logits = model(idx)                      # (B, T, V)
    model = GPT.from_pretrained("gpt2")      # or a local directory written by save_pretrained

Letters: B batch, T time (tokens), C channels (n_embd), V vocab, nh heads, hs head size,
S keys visible to attention (cached + new).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

@dataclass
class GPTConfig:
    vocab_size: int = 50257  # GPT-2's BPE vocabulary; the offline char tokenizer is much smaller
    block_size: int = 1024   # longest sequence (prompt + completion) the position table covers
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True        # GPT-2 has biases in Linear and LayerNorm layers

    def __post_init__(self):
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")

class KVCache:
    """Preallocated keys and values, one tensor per layer (torch.compile writes a slice of one big tensor by copying
    all of it), written at explicit positions. Prompts of different lengths are left-padded; `valid` marks the
    slots that hold real tokens. Static mode (`slot` a (1,) tensor, see sample.decode_step): each step writes one
    token at that position and attends over all max_len slots under `valid`, so no shape ever changes and the
    step can be captured as a CUDA graph; `length` then stays where it was."""

    def __init__(self, config, batch_size, max_len, device, dtype):
        shape = (batch_size, config.n_head, max_len, config.n_embd // config.n_head)  # (B, nh, S_max, hs)
        self.k, self.v = ([torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
                          for _ in range(2))  # keys, values of each layer
        self.valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)  # (B, S_max)
        self.length = 0  # slots [0, length) are filled
        self.slot = None  # static mode: (1,) long tensor, the slot the next token is written to

    def write(self, layer, k, v):
        """Store this step's (B, nh, T, hs) keys/values; return all keys/values so far."""
        if self.slot is not None:  # static: (B, nh, 1, hs) at a tensor position; return every slot
            self.k[layer].index_copy_(2, self.slot, k.to(self.k[layer].dtype))
            self.v[layer].index_copy_(2, self.slot, v.to(self.v[layer].dtype))
            return self.k[layer], self.v[layer]  # (B, nh, S_max, hs)
        T = k.size(2)
        self.k[layer][:, :, self.length:self.length + T] = k
        self.v[layer][:, :, self.length:self.length + T] = v
        return self.k[layer][:, :, :self.length + T], self.v[layer][:, :, :self.length + T]

    def attn_mask(self, T):
        """(B, 1, T, S) added to the attention scores: 0 where query t may see key s (a real token at or before t),
        else −65504 (fp16's lowest, SDPA's own choice for cuDNN: exp gives 0 as for −inf, and no kernel meets inf).
        Made once for all layers (SDPA would convert a bool mask in each); a query always sees itself (no empty row)."""
        sees = self.valid[:, None, None, :]  # (B, 1, 1, S_max) static, T = 1: the slots written so far, this step's too
        if self.slot is None:
            S = self.length + T
            q_pos = torch.arange(self.length, S, device=self.valid.device)[:, None]  # (T, 1)
            k_pos = torch.arange(S, device=self.valid.device)[None, :]               # (1, S)
            sees = ((k_pos <= q_pos) & self.valid[:, None, :S] | (k_pos == q_pos))[:, None]  # (B, 1, T, S)
        return torch.zeros(sees.shape, dtype=self.k[0].dtype, device=sees.device).masked_fill_(~sees, -65504.0)

    def keep(self, rows):
        """Drop finished sequences: keep only the batch rows in `rows` (a LongTensor)."""
        self.k, self.v = [k[rows] for k in self.k], [v[rows] for v in self.v]
        self.valid = self.valid[rows]

class CausalSelfAttention(nn.Module):

    def __init__(self, config, layer_idx):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.dropout, self.layer_idx = config.n_head, config.dropout, layer_idx

    def forward(self, x, cache=None, mask=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if cache is None:  # training / full recompute: plain causal attention
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:              # incremental decoding: attend over everything cached so far
            k, v = cache.write(self.layer_idx, k, v)  # (B, nh, S, hs)
            if cache.slot is None or q.dtype in (torch.float16, torch.bfloat16):
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            else:  # the static step (T = 1) in float32/64: on CUDA SDPA's float32 kernel tiles 64 queries (63 idle)
                att = (q * (1.0 / math.sqrt(q.size(-1)))) @ k.transpose(-2, -1) + mask  # (B, nh, 1, S_max)
                y = att.softmax(dim=-1) @ v  # (B, nh, 1, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y))

class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))

class Block(nn.Module):

    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, mask=None):
        x = x + self.attn(self.ln_1(x), cache, mask)  # pre-norm residual blocks, as in GPT-2
        return x + self.mlp(self.ln_2(x))

class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: the residual stream's variance must not grow with depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self):
        """Parameter count without the position table (as in nanoGPT)."""
        return sum(p.numel() for p in self.parameters()) - self.transformer.wpe.weight.numel()

    def forward(self, idx, targets=None, cache=None, positions=None, return_hidden=False):
        """idx (B, T) token ids -> logits (B, T, V); with targets (B, T) (-1 = ignore) also the mean
        cross-entropy; with return_hidden the final hidden states (B, T, C) instead. cache: a KVCache
        for incremental decoding, with positions (B, T) of each token (rows are left-padded)."""
        B, T = idx.size()
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size={self.config.block_size}")
        if positions is None:
            positions = torch.arange(start, start + T, device=idx.device)[None]  # (1, T)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))  # (B, T, C)
        mask = cache.attn_mask(T) if cache is not None else None  # built once, shared by all layers
        for block in self.transformer.h:
            x = block(x, cache, mask)
        if cache is not None and cache.slot is None:
            cache.length += T
        h = self.transformer.ln_f(x)  # (B, T, C)
        if return_hidden:
            return h
        logits = self.lm_head(h)  # (B, T, V)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizer(self, lr, weight_decay=0.0, betas=(0.9, 0.95), device_type="cpu"):
        """AdamW; weight decay only on the matrices of the blocks (not norms, biases, embeddings)."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            is_matrix = p.dim() >= 2 and not name.startswith(("transformer.wte", "transformer.wpe"))
            (decay if is_matrix else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=(device_type == "cuda"))

    @classmethod
    def from_pretrained(cls, name_or_path, dropout=0.0):
        """GPT-2 weights in Hugging Face format: a hub name ("gpt2", "gpt2-medium", ...; needs network
        or the local HF cache) or a directory written by `save_pretrained`."""
        try:
            from transformers import GPT2LMHeadModel  # needed only here
        except ImportError as e:
            raise ImportError("GPT.from_pretrained needs `pip install transformers`") from e
        try:
            hf = GPT2LMHeadModel.from_pretrained(name_or_path)
        except OSError as e:
            raise OSError(f"could not load GPT-2 weights from {name_or_path!r}: no local directory by "
                          f"that name and the Hugging Face hub is unreachable ({e})") from e
        c = hf.config
        config = GPTConfig(vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer,
                           n_head=c.n_head, n_embd=c.n_embd, dropout=dropout, bias=True)
        model = cls(config)
        sd, hf_sd = model.state_dict(), hf.state_dict()
        # HF's GPT-2 stores these four as Conv1D, i.e. (in, out): transpose into nn.Linear's (out, in).
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        with torch.no_grad():
            for key in sd:
                sd[key].copy_(hf_sd[key].t() if key.endswith(transposed) else hf_sd[key])
        return model
