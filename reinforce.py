"""
The math of the RL update: rewards, advantages, the policy-gradient loss (it and the SFT loss also as
per-token weights), and the fused log-prob ops they are computed with. torch only, no I/O; train.py
calls these functions, and `python -m pytest -q tests/test_reinforce.py` checks them.

Letters: B sequences, T time steps (prompt + completion; completion_mask marks the trained ones),
G samples per prompt (a "group"), N tokens (rows of hidden states), C channels, V vocabulary.

The objective is the expected exact reward of a sampled completion y ~ π_θ(·|x):
    J(θ) = E_y[r(y)],   ∇J = E_y[(r(y) − b) ∇log π_θ(y)]   (REINFORCE, Williams 1992)
for any baseline b that does not depend on y itself. log π_θ(y) = Σ_t log π_θ(y_t | y_<t), so
the loss is −Σ_t A · log π_θ(y_t) with A = r − b, averaged over tokens or sequences.
The method comes first, then the paper variants (all off by default), then the speed-ups.
"""

import torch

BASELINES = ("none", "batch", "group", "rloo")
AGGREGATIONS = ("seq-mean", "token-mean", "const")
LOSS_TYPES = ("reinforce", "mirror")

# -----------------------------------------------------------------------------
# rewards and advantages

def _check(name, value, valid):
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")

def _groups(group_ids):
    """group_ids (B,) arbitrary ints -> g (B,) in [0, n_groups), n_groups"""
    uniq, g = torch.unique(group_ids, return_inverse=True)
    return g, uniq.numel()

def _group_sum(x, g, n):
    return x.new_zeros(n).index_add_(0, g, x)  # (n,) Σ of x over each group

def _group_min_max(x, g, n):
    lo = x.new_zeros(n).scatter_reduce_(0, g, x, "amin", include_self=False)  # (n,)
    hi = x.new_zeros(n).scatter_reduce_(0, g, x, "amax", include_self=False)  # (n,)
    return lo, hi

def _group_flat(x, g, n):
    """(n,) bool: True where every x in the group is equal (zero variance, no learning signal)"""
    lo, hi = _group_min_max(x, g, n)
    return lo == hi

def shape_rewards(correct, wrong_reward=0.0):
    """correct (B,) 0/1 -> (B,) float: 1 where correct, wrong_reward (0 or −1) elsewhere."""
    correct = correct.float() if not correct.is_floating_point() else correct
    return torch.where(correct > 0.5, 1.0, wrong_reward).to(correct.dtype)

def compute_advantages(rewards, group_ids, baseline="group", std_normalize=False, eps=1e-6):
    """rewards (B,), group_ids (B,) (samples of one prompt share an id) -> advantages A (B,).

    Any baseline b that does not depend on the sample keeps ∇J = E[(r − b) ∇log π] unbiased and
    lowers its variance. Options:
      none:  A = r                                     (REINFORCE, Williams 1992)
      batch: A = r − mean over the batch               (Williams 1992 average-reward baseline)
      group: A = r − mean of its group                 (GRPO, Shao et al. 2024; Dr. GRPO, Liu et al. 2025)
      rloo:  A = r − mean of the OTHER G−1 samples     (RLOO, Kool et al. 2019; Ahmadian et al. 2024)
    The group mean includes the sample itself, so E[A ∇log π] = (G−1)/G ∇J: biased by a constant
    factor, harmless for direction. rloo = G/(G−1) × group and is unbiased; a group of size 1 has
    no other samples, so it gets A = 0. std_normalize divides by the group's reward std (GRPO;
    Dr. GRPO drops it: it up-weights near-unanimous groups). A group whose rewards are all equal
    gets exactly A = 0 under group/rloo/std_normalize: no signal, and 0/0 must not become NaN.
    """
    _check("baseline", baseline, BASELINES)
    r = rewards if rewards.is_floating_point() else rewards.float()  # (B,)
    g, n = _groups(group_ids)
    count = _group_sum(torch.ones_like(r), g, n)[g]  # (B,) G of each sample's group
    total = _group_sum(r, g, n)[g]  # (B,) Σ r over the group
    flat = _group_flat(r, g, n)[g]  # (B,) all-equal group
    if baseline == "none":
        adv = r
    elif baseline == "batch":
        adv = r - r.mean()
    elif baseline == "group":
        adv = r - total / count
    else:  # rloo: r_i − (Σ_j r_j − r_i) / (G − 1)
        adv = r - (total - r) / (count - 1).clamp(min=1)
        adv = torch.where(count > 1, adv, 0.0)
    if baseline in ("group", "rloo"):
        adv = torch.where(flat, 0.0, adv)
    if std_normalize:
        mean = total / count
        std = (_group_sum((r - mean) ** 2, g, n)[g] / count).sqrt()  # (B,) population std
        adv = torch.where(flat, 0.0, adv / (std + eps))
    return adv

# -----------------------------------------------------------------------------
# the loss

def _aggregate(x, mask, keep, aggregation, max_len):
    """x, mask (B, T), keep (B,) -> (x reduced over the trained tokens, its normaliser n: x was divided by max(1, n))"""
    m = mask * keep[:, None]  # (B, T) dropped sequences weigh 0
    if aggregation == "seq-mean":
        # mean over sequences of token means (GRPO): short answers' tokens weigh more, a length bias
        norm = keep.sum()
        return ((x * m).sum(1) / mask.sum(1).clamp(min=1)).sum() / norm.clamp(min=1), norm
    # the variants: token-mean, every token weighs the same (DAPO, Yu et al. 2025); const, B · max_len,
    # a normaliser that does not depend on the lengths: unbiased (Dr. GRPO, Liu et al. 2025)
    norm = m.sum() if aggregation == "token-mean" else torch.tensor(float(mask.size(0) * max_len))
    return (x * m).sum() / norm.clamp(min=1), norm

def reinforce_loss(logprobs, old_logprobs, rewards, group_ids, completion_mask, *,
                   baseline="group", std_normalize=False, aggregation="seq-mean", max_len=None,
                   loss_type="reinforce", tau=0.1, clip_eps=0.0, kl_coef=0.0, ref_logprobs=None,
                   drop_zero_signal=False):
    """The policy-gradient loss of one batch of B completions -> (loss to minimise, metrics as floats).

    logprobs (B, T) log π_θ(y_t) with grad (0 at masked positions); old_logprobs (B, T) the same
    under the sampling policy, no grad (= logprobs.detach() when on-policy); rewards (B,);
    group_ids (B,); completion_mask (B, T) 1 on the completion tokens that are trained.
    The defaults are train.TrainConfig's. From loss_type on, the options are paper variants (see
    that section below); loss_type "mirror" ignores baseline, std_normalize, aggregation and clip_eps.
    """
    _check("baseline", baseline, BASELINES)
    _check("aggregation", aggregation, AGGREGATIONS)
    _check("loss_type", loss_type, LOSS_TYPES)
    if aggregation == "const" and loss_type == "reinforce" and max_len is None:
        raise ValueError("aggregation 'const' needs max_len (the normaliser B * max_len)")
    if kl_coef > 0 and ref_logprobs is None:
        raise ValueError("kl_coef > 0 needs ref_logprobs")
    mask = completion_mask.to(logprobs.dtype)  # (B, T)
    r = rewards.to(logprobs.dtype)  # (B,)
    g, n = _groups(group_ids)
    flat = _group_flat(r, g, n)  # (n_groups,) groups without signal
    # DAPO dynamic sampling (Yu et al. 2025): drop all-equal groups from the loss and its normaliser (not const's)
    keep = (~flat[g]).to(mask.dtype) if drop_zero_signal else torch.ones_like(r)  # (B,)
    clip_frac = torch.zeros(())

    if loss_type == "reinforce":
        adv = compute_advantages(r, group_ids, baseline, std_normalize)  # (B,)
        A = adv[:, None]  # (B, 1)
        if clip_eps > 0:
            obj, clip_frac = _clipped_objective(logprobs, old_logprobs, A, mask * keep[:, None], clip_eps)
        else:
            # REINFORCE: ∇J ≈ A ∇log π(y) = Σ_t A ∇log π(y_t), so each token's objective is A · log π(y_t)
            obj = A * logprobs  # (B, T)
        objective, norm = _aggregate(obj, mask, keep, aggregation, max_len)
        loss = -objective
    else:
        loss, norm, adv = _mirror_loss(logprobs, old_logprobs, r, group_ids, mask, keep, tau)

    kl = torch.zeros(())
    if kl_coef > 0:
        how = aggregation if loss_type == "reinforce" else "token-mean"
        kl = _kl_penalty(logprobs, ref_logprobs, mask, keep, how, max_len)
        loss = loss + kl_coef * kl
    lengths, adv = completion_mask.float().sum(1), adv.detach().float()  # (B,) each
    return loss, {
        "reward_mean": r.float().mean().item(), "adv_mean": adv.mean().item(),
        "adv_std": adv.std(unbiased=False).item(), "adv_abs_mean": adv.abs().mean().item(),
        "zero_signal_frac": flat.float().mean().item(), "len_mean": lengths.mean().item(),
        "len_max": lengths.max().item(), "clip_frac": float(clip_frac), "kl": float(kl.detach()),
        "n_seqs_trained": keep.sum().item(),
        "normaliser": float(norm),  # the loss was divided by max(1, this); train.py sums it over DDP ranks
    }

def sft_weights(targets, dtype=torch.float32):
    """The cold start's cross-entropy, −mean log π(target) over targets != -1, as weights on the log-probs
    (weighted_logprob_sum): −1/count on every target, 0 on ignored ones (and everywhere if none counts)."""
    valid = (targets >= 0).to(dtype)  # (B, T)
    return -valid / valid.sum().clamp(min=1)

# -----------------------------------------------------------------------------
# paper variants, all off by default: Kimi k1.5 (mirror descent, length reward), DAPO (token-mean,
# dropping zero-signal groups), Dr. GRPO (const), PPO clip, a KL penalty

def length_penalty(lengths, correct, group_ids):
    """Kimi k1.5 §2.3.3 length reward, per group of samples of one prompt:
        λ = 0.5 − (len − min_len) / (max_len − min_len)
    correct samples get λ (short ones rewarded, long ones penalised), wrong ones min(0, λ) (only
    penalised); a group whose lengths are all equal gets 0. Returns (B,) float; the trainer scales it."""
    L = lengths.float() if not lengths.is_floating_point() else lengths  # (B,)
    g, n = _groups(group_ids)
    lo, hi = (t[g] for t in _group_min_max(L, g, n))  # (B,) each
    lam = 0.5 - (L - lo) / (hi - lo).clamp(min=1e-9)
    lam = torch.where(hi > lo, lam, 0.0)
    return torch.where(correct > 0.5, lam, lam.clamp(max=0.0))

def _clipped_objective(logprobs, old_logprobs, A, m, clip_eps):
    """PPO clip (Schulman et al. 2017), for several steps on one batch: ratio = π_θ/π_old per token,
    objective min(ratio·A, clip(ratio, 1−ε, 1+ε)·A): no gradient once the ratio left [1−ε, 1+ε] on A's side.
    A (B, 1), m (B, T) the trained tokens -> (objective (B, T), clip_frac ())."""
    ratio = (logprobs - old_logprobs).exp()  # (B, T)
    obj = torch.minimum(ratio * A, ratio.clamp(1 - clip_eps, 1 + clip_eps) * A)
    # clip_frac: fraction of trained tokens whose gradient the clip zeroed
    clipped = ((A > 0) & (ratio > 1 + clip_eps)) | ((A < 0) & (ratio < 1 - clip_eps))
    return obj, (clipped * m).sum() / m.sum().clamp(min=1)

def _mirror_loss(logprobs, old_logprobs, r, group_ids, mask, keep, tau):
    """Online policy mirror descent (Kimi k1.5 §2.3.2): regress τ·log(π_θ/π_old)(y) onto r − r̄
        ρ_i = Σ_t log π_θ(y_t) − log π_old(y_t),  L = mean_i (r_i − r̄ − τρ_i)² / (2τ)
        ∇L = −mean_i (r_i − r̄ − τρ_i) ∇ρ_i: at ρ = 0 (θ = θ_old) REINFORCE with a group-mean baseline
    -> (loss, normaliser, advantages r − r̄ (B,))"""
    adv = compute_advantages(r, group_ids, "group")  # (B,) r − r̄ (0 in all-equal groups)
    rho = ((logprobs - old_logprobs) * mask).sum(1)  # (B,) sequence log-ratio
    per_seq = (adv - tau * rho) ** 2 / (2 * tau)  # (B,)
    norm = keep.sum()
    return (per_seq * keep).sum() / norm.clamp(min=1), norm, adv

def _kl_penalty(logprobs, ref_logprobs, mask, keep, aggregation, max_len):
    """KL(π_θ ‖ π_ref) per token by the k3 estimator (Schulman 2020), ≥ 0 and unbiased:
    e^d − d − 1 with d = log π_ref − log π_θ, aggregated like the loss."""
    d = ref_logprobs - logprobs  # (B, T)
    return _aggregate(d.exp() - d - 1, mask, keep, aggregation, max_len)[0]

# -----------------------------------------------------------------------------
# speed-up 1: token log-probs without materialising the (N, V) logits

LOGPROB_MEMORY = 200 * 2**20  # bytes: the budget of one chunk's (rows, V) float32 temporaries (twice on CUDA)

def default_chunk_size(vocab_size, budget=None, device_type="cpu"):
    """Rows per chunk so that about two (rows, V) float32 matrices (the logits and one temporary,
    measured with bench.py logprobs) fit in `budget` bytes (None: LOGPROB_MEMORY, doubled on CUDA, where
    small chunks cost more time and memory is plentiful). At most 1024 rows: a small vocabulary gains
    nothing from bigger chunks. GPT-2's V=50257 gives 521 rows on the CPU, 1024 on CUDA."""
    budget = budget or LOGPROB_MEMORY * (2 if device_type == "cuda" else 1)
    return max(1, min(1024, budget // (2 * 4 * vocab_size)))

def _dtypes(hidden, weight):
    """-> (dtype of the head matmuls: under autocast its dtype (bf16), else the inputs'; dtype of
    logits, logsumexp and outputs: at least float32)."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type) and hidden.dtype != torch.float64:
        cdt = torch.get_autocast_dtype(device_type)
    else:
        cdt = torch.promote_types(hidden.dtype, weight.dtype)
    return cdt, torch.promote_types(cdt, torch.float32)

def _logit_chunks(hidden, w, acc, chunk_size):
    """The loop every pass shares (with autocast off): rows [s, e) of hidden (N, C), chunk_size at a
    time -> (s, e, h (n, C) in w's dtype, z = h @ wᵀ (n, V) in acc). One chunk's logits at a time."""
    for s in range(0, hidden.shape[0], chunk_size):
        h = hidden[s:s + chunk_size].to(w.dtype)  # (n, C)
        yield s, s + h.shape[0], h, (h @ w.T).to(acc)  # (n, V)

def _entropy(z, lse):
    """H = −Σ_v p_v log p_v = lse − Σ_v p_v z_v of each row of the logits z (n, V), lse (n,) -> (n,)"""
    return lse - ((z - lse[:, None]).exp() * z).sum(-1)

class TokenLogprobs(torch.autograd.Function):
    """log softmax(hidden @ weight.T)[n, targets[n]], computed chunk_size rows at a time. Only hidden,
    weight, targets and the (N,) logsumexp are saved; backward recomputes each chunk's logits (one
    more head matmul) instead of keeping N*V floats alive between forward and backward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size, return_entropy):
        cdt, acc = _dtypes(hidden, weight)
        N = hidden.shape[0]
        valid = targets >= 0  # (N,) targets == -1 are ignored
        safe = targets.clamp(min=0)  # (N,) a legal index for gather at ignored rows
        logprobs, lse, entropy = (torch.empty(n, dtype=acc, device=hidden.device)
                                  for n in (N, N, N if return_entropy else 0))
        with torch.autocast(hidden.device.type, enabled=False):
            for s, e, _, z in _logit_chunks(hidden, weight.to(cdt), acc, chunk_size):
                lse[s:e] = torch.logsumexp(z, dim=-1)  # (n,)
                # log π(y) = z_y − log Σ_v exp(z_v)
                logprobs[s:e] = z.gather(1, safe[s:e, None]).squeeze(1) - lse[s:e]
                if return_entropy:
                    entropy[s:e] = _entropy(z, lse[s:e])
        logprobs = torch.where(valid, logprobs, 0.0)
        entropy = torch.where(valid, entropy, 0.0) if return_entropy else entropy
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk_size, ctx.cdt = chunk_size, cdt
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logprobs, grad_entropy):
        hidden, weight, targets, lse = ctx.saved_tensors
        acc, safe = lse.dtype, targets.clamp(min=0)
        g = torch.where(targets >= 0, grad_logprobs.to(acc), 0.0)  # (N,) ignored rows get no gradient
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.zeros(hidden.shape, dtype=acc, device=hidden.device) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(ctx.cdt)  # (V, C)
            for s, e, h, z in _logit_chunks(hidden, w, acc, ctx.chunk_size):  # the same logits as forward
                _backprop_chunk(z, lse[s:e], g[s:e], safe[s:e], h, w, grad_h, grad_w, s, e)
        return (grad_h.to(hidden.dtype) if need_h else None, grad_w.to(weight.dtype) if need_w else None,
                None, None, None)

def _backprop_chunk(z, lse, g, targets, h, w, grad_h, grad_w, s, e):
    """Gradients of Σ_n g_n log p(targets_n) through one chunk's logits z (n, V) (overwritten).
    log p_y = z_y − log Σ_u exp(z_u), so d log p_y / d z_v = 1[v = y] − exp(z_v − lse) = 1[v = y] − p_v;
    chain rule: dL/dz = g · (onehot(y) − softmax(z)), g = dL/d log p_y the upstream gradient."""
    dz = z.sub_(lse[:, None]).exp_().mul_(-g[:, None])  # (n, V) −g·softmax, in place
    dz[torch.arange(e - s, device=dz.device), targets] += g  # + g·onehot
    # z = h Wᵀ, so dL/dh = dz W and dL/dW = dzᵀ h (summed over the chunk's rows)
    if grad_h is not None:
        grad_h[s:e] = dz.to(w.dtype) @ w
    if grad_w is not None:
        grad_w.addmm_(dz.T, h.to(dz.dtype))  # accumulate in place: no (V, C) temporary

def token_logprobs(hidden, weight, targets, chunk_size=None, return_entropy=False):
    """hidden (N, C), weight (V, C), targets (N,) int64 -> logprobs (N,) float32 (float64 for
    float64 inputs); targets == -1 are ignored (logprob 0, no gradient). Leading dims of hidden
    and targets may be anything (e.g. (B, T, C) and (B, T)); the output takes targets' shape.
    With return_entropy also the (detached) entropy of each row's distribution, 0 where ignored.
    chunk_size: rows per chunk (None: default_chunk_size, from the memory budget)."""
    shape = targets.shape
    hidden, targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    chunk_size = chunk_size or default_chunk_size(weight.shape[0], device_type=hidden.device.type)
    logprobs, entropy = TokenLogprobs.apply(hidden, weight, targets, chunk_size, return_entropy)
    return (logprobs.view(shape), entropy.view(shape)) if return_entropy else logprobs.view(shape)

# -----------------------------------------------------------------------------
# speed-up 2: the head's gradient made in the forward pass (the SFT loss, plain on-policy REINFORCE)

class WeightedLogprobSum(torch.autograd.Function):
    """Σ_n c_n · log p(y_n) for coefficients c known BEFORE the sum is taken, with the gradient
    computed during the forward pass. REINFORCE is such a sum: its loss is Σ_t c_t log π(y_t), c_t = −A/norm,
    and A is fixed once the rewards are in; so is the cold start's cross-entropy (every c = −1/count).
    So dL/dz = c·(onehot − softmax) is known chunk by chunk while the logits are there, and backward
    has nothing left to recompute: 3 head matmuls (logits, dh, dW) instead of token_logprobs' 4.
    Saved: dh (N, C) and dW (V, C), the gradients' own size."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, coef, chunk_size, return_entropy):
        cdt, acc = _dtypes(hidden, weight)
        c, safe = torch.where(targets >= 0, coef.to(acc), 0.0), targets.clamp(min=0)  # (N,) ignored rows: c = 0
        logprobs, entropy = (torch.zeros(n, dtype=acc, device=hidden.device)
                             for n in (len(hidden), len(hidden) if return_entropy else 0))  # (N,), (N,) or (0,)
        grad_h, grad_w = (torch.zeros(x.shape, dtype=acc, device=x.device) for x in (hidden, weight))  # dh, dW
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(cdt)  # (V, C)
            for s, e, h, z in _logit_chunks(hidden, w, acc, chunk_size):
                lse = torch.logsumexp(z, dim=-1)  # (n,)
                logprobs[s:e] = z.gather(1, safe[s:e, None]).squeeze(1) - lse
                if return_entropy:  # (before _backprop_chunk overwrites z)
                    entropy[s:e] = _entropy(z, lse)
                _backprop_chunk(z, lse, c[s:e], safe[s:e], h, w, grad_h, grad_w, s, e)
        logprobs = torch.where(targets >= 0, logprobs, 0.0)
        entropy = torch.where(targets >= 0, entropy, 0.0) if return_entropy else entropy
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = hidden.dtype, weight.dtype
        ctx.mark_non_differentiable(logprobs, entropy)
        return (c * logprobs).sum(), logprobs, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total, grad_logprobs, grad_entropy):
        grad_h, grad_w = ctx.saved_tensors  # d total / d hidden, d total / d weight
        return (grad_h.mul_(grad_total).to(ctx.dtypes[0]), grad_w.mul_(grad_total).to(ctx.dtypes[1]),
                None, None, None, None)

def weighted_logprob_sum(hidden, weight, targets, coef, chunk_size=None, return_entropy=False):
    """hidden (N, C), weight (V, C), targets (N,), coef (N,) no grad -> (Σ_n coef_n · log p(targets_n),
    logprobs (N,) and, with return_entropy, each row's entropy (N,) (else an empty tensor, as token_logprobs),
    both detached and 0 where ignored), the gradient made in the forward pass. chunk_size: rows per chunk."""
    return WeightedLogprobSum.apply(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1),
                                    coef.reshape(-1).detach(), chunk_size or default_chunk_size(
                                        weight.shape[0], device_type=hidden.device.type), return_entropy)

def linear_in_logprobs(loss_type="reinforce", clip_eps=0.0, kl_coef=0.0, **_):  # reinforce_loss's options
    return loss_type == "reinforce" and not (clip_eps or kl_coef)  # plain on-policy REINFORCE: no clip, KL, mirror

def reinforce_weights(rewards, group_ids, mask, **options):
    """rewards, group_ids (B,), mask (B, T) -> (w (B, T), metrics): reinforce_loss as weights on the log-probs
    (weighted_logprob_sum). Plain on-policy REINFORCE is linear in them: loss = Σ_t w_t log π(y_t), with
        w_t = ∂loss/∂log π(y_t) = −A/norm on trained tokens (seq-mean: −A/(len·norm); 0 elsewhere),
    the same at every value of the log-probs, so the weights are the loss's gradient at a zero "probe"."""
    if not linear_in_logprobs(**options):  # (train.fused sends the other losses down the plain path)
        raise ValueError("reinforce_weights needs a loss linear in the log-probs: no clip_eps, kl_coef or mirror")
    probe = torch.zeros(mask.shape, device=mask.device, requires_grad=True)  # (B, T) float32
    loss, metrics = reinforce_loss(probe, probe.detach(), rewards, group_ids, mask, **options)
    return torch.autograd.grad(loss, probe)[0], metrics  # (B, T) w_t
