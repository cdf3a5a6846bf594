"""
Tests for reinforce.py: the fused log-probs against the naive ones, advantages and losses on
hand-computed examples, and the estimator's (un)biasedness on a bandit whose gradient is exact.

    python -m pytest -q tests/test_reinforce.py
"""

import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from reinforce import (compute_advantages, length_penalty, reinforce_loss, sft_weights,  # noqa: E402
                       shape_rewards, token_logprobs, weighted_logprob_sum)

f64 = torch.float64

# -----------------------------------------------------------------------------
# token_logprobs: fused and chunked vs the naive log_softmax(h @ W.T).gather

def naive_logprobs(h, W, t):
    logp = torch.log_softmax(h @ W.T, dim=-1)  # (N, V) materialised
    lp = logp.gather(1, t.clamp(min=0)[:, None]).squeeze(1)
    return torch.where(t >= 0, lp, 0.0)

def random_problem(N=37, C=8, V=23, dtype=f64, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, C, generator=g, dtype=dtype)
    W = torch.randn(V, C, generator=g, dtype=dtype) * 0.7
    t = torch.randint(0, V, (N,), generator=g)
    t[::5] = -1  # every fifth token ignored
    return h, W, t

def test_default_chunk_keeps_two_float32_chunk_matrices_within_the_memory_budget():
    from reinforce import LOGPROB_MEMORY, default_chunk_size
    rows = default_chunk_size(50257)  # GPT-2's vocabulary
    assert 2 * 4 * rows * 50257 <= LOGPROB_MEMORY < 2 * 4 * (rows + 1) * 50257
    assert default_chunk_size(50257, budget=LOGPROB_MEMORY // 4) == rows // 4
    assert default_chunk_size(257) == 1024 and default_chunk_size(10**12) == 1  # capped, never 0


def test_default_chunk_on_cuda_has_twice_the_budget():
    from reinforce import default_chunk_size
    assert default_chunk_size(50257, device_type="cuda") == 1024  # 2x the budget: 1043 rows, capped at 1024
    assert (default_chunk_size(200_000, device_type="cuda"), default_chunk_size(200_000)) == (262, 131)


def test_log_prob_ops_ask_for_the_chunk_of_their_inputs_device(monkeypatch):
    import reinforce
    asked = []
    record = lambda V, budget=None, device_type="?": asked.append(device_type) or 8  # (a legal chunk)
    monkeypatch.setattr(reinforce, "default_chunk_size", record)
    h, W, t = random_problem()
    reinforce.token_logprobs(h, W, t)
    reinforce.weighted_logprob_sum(h, W, t, torch.ones(t.shape, dtype=h.dtype))
    assert asked == ["cpu", "cpu"]


def test_token_logprobs_without_a_chunk_size_uses_the_budget_chunk(monkeypatch):
    import reinforce
    used = []
    apply = reinforce.TokenLogprobs.apply
    monkeypatch.setattr(reinforce.TokenLogprobs, "apply", lambda *a: used.append(a[3]) or apply(*a))
    monkeypatch.setattr(reinforce, "LOGPROB_MEMORY", 2 * 4 * 23 * 5)  # room for 5 rows of V=23
    h, W, t = random_problem()
    torch.testing.assert_close(token_logprobs(h, W, t), naive_logprobs(h, W, t))
    assert used == [5]


@pytest.mark.parametrize("chunk_size", [1, 8, 2048])  # 1 row at a time, N=37 not a multiple of 8, chunk > N
def test_token_logprobs_match_naive_values_and_grads(chunk_size):
    h, W, t = random_problem()
    upstream = torch.randn(h.shape[0], dtype=f64, generator=torch.Generator().manual_seed(1))
    h1, W1 = h.clone().requires_grad_(), W.clone().requires_grad_()
    lp = token_logprobs(h1, W1, t, chunk_size=chunk_size)
    (lp * upstream).sum().backward()
    h2, W2 = h.clone().requires_grad_(), W.clone().requires_grad_()
    ref = naive_logprobs(h2, W2, t)
    (ref * upstream).sum().backward()
    assert lp.dtype == f64
    torch.testing.assert_close(lp, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(W1.grad, W2.grad, rtol=1e-12, atol=1e-12)

def test_token_logprobs_ignored_targets_give_zero_value_and_zero_grad():
    h, W, t = random_problem()
    h.requires_grad_()
    lp = token_logprobs(h, W, t, chunk_size=8)
    lp.sum().backward()
    ignored = t == -1
    assert (lp[ignored] == 0).all() and (lp[~ignored] < 0).all()
    assert (h.grad[ignored] == 0).all() and (h.grad[~ignored] != 0).any()

def test_token_logprobs_entropy_matches_naive():
    h, W, t = random_problem()
    lp, ent = token_logprobs(h, W, t, chunk_size=8, return_entropy=True)
    logp = torch.log_softmax(h @ W.T, dim=-1)
    ref = -(logp.exp() * logp).sum(-1)
    torch.testing.assert_close(ent, torch.where(t >= 0, ref, 0.0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lp, naive_logprobs(h, W, t))

def test_token_logprobs_gradcheck():
    h, W, t = random_problem(N=5, C=3, V=7)
    h.requires_grad_(), W.requires_grad_()
    assert torch.autograd.gradcheck(lambda h, W: token_logprobs(h, W, t, chunk_size=2), (h, W))

def test_token_logprobs_saves_only_inputs_and_logsumexp():
    # the memory claim: nothing of size N*V is kept between forward and backward
    N, C, V = 37, 8, 23
    h, W, t = random_problem(N, C, V)
    lp = token_logprobs(h.requires_grad_(), W, t, chunk_size=8)
    node = lp.grad_fn
    while type(node).__name__ != "TokenLogprobsBackward":  # skip the reshape views
        node = node.next_functions[0][0]
    saved = node.saved_tensors
    assert sum(s.numel() for s in saved) == N * C + V * C + N + N  # hidden, weight, targets, lse

def test_token_logprobs_accepts_batch_time_shape():
    h, W, t = random_problem(N=24)
    lp = token_logprobs(h.view(4, 6, -1), W, t.view(4, 6), chunk_size=5)
    assert lp.shape == (4, 6)
    torch.testing.assert_close(lp.view(-1), naive_logprobs(h, W, t))

def test_token_logprobs_bf16_autocast_close_to_float32():
    h, W, t = random_problem(N=64, C=32, V=50, dtype=torch.float32)
    h1, W1 = h.clone().requires_grad_(), W.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp = token_logprobs(h1, W1, t, chunk_size=16)
    lp.sum().backward()
    h2, W2 = h.clone().requires_grad_(), W.clone().requires_grad_()
    naive_logprobs(h2, W2, t).sum().backward()
    assert lp.dtype == torch.float32 and h1.grad.dtype == torch.float32 and W1.grad.dtype == torch.float32
    torch.testing.assert_close(lp, naive_logprobs(h, W, t), rtol=0, atol=0.1)
    torch.testing.assert_close(h1.grad, h2.grad, rtol=0, atol=0.05)
    torch.testing.assert_close(W1.grad, W2.grad, rtol=0, atol=0.1)

def test_float64_inputs_under_autocast_stay_float64_bitwise():  # (autocast leaves float64 alone: so must we)
    h, W, t = random_problem(N=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp = token_logprobs(h, W, t, chunk_size=4)
    assert lp.dtype == f64 and torch.equal(lp, token_logprobs(h, W, t, chunk_size=4))

def test_token_logprobs_bf16_inputs_give_float32_logprobs_and_bf16_grads():
    h, W, t = random_problem(N=16, dtype=torch.bfloat16)
    h.requires_grad_(), W.requires_grad_()
    lp = token_logprobs(h, W, t, chunk_size=4)
    lp.sum().backward()
    assert lp.dtype == torch.float32 and h.grad.dtype == torch.bfloat16 and W.grad.dtype == torch.bfloat16

def sft_loss(h, W, t, **kw):  # the cold start's loss as train.train_step takes it
    return weighted_logprob_sum(h, W, t, sft_weights(t, h.dtype), **kw)[0]

def test_sft_weights_give_the_cross_entropy_in_value_and_gradients():
    h, W, t = random_problem()  # float64
    h.requires_grad_(), W.requires_grad_()
    loss = sft_loss(h, W, t, chunk_size=8)
    grads = torch.autograd.grad(2.0 * loss, (h, W))  # an upstream gradient other than 1
    expected = F.cross_entropy(h @ W.T, t, ignore_index=-1)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, torch.autograd.grad(2.0 * expected, (h, W))):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)

def test_sft_weights_without_any_target_give_zero_not_nan():
    h, W, t = random_problem()
    h.requires_grad_()
    loss = sft_loss(h, W, torch.full_like(t, -1))
    loss.backward()
    assert loss.item() == 0 and h.grad.abs().max() == 0

# -----------------------------------------------------------------------------
# rewards and advantages, by hand

R = torch.tensor([1., 0., 0., 1., 1., 1., 1., 1.], dtype=f64)  # two groups of 4, the second all correct
GROUPS = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])

def test_shape_rewards():
    correct = torch.tensor([1., 0., 1.])
    assert shape_rewards(correct).tolist() == [1., 0., 1.]
    assert shape_rewards(correct, wrong_reward=-1.0).tolist() == [1., -1., 1.]
    assert shape_rewards(correct.to(f64)).dtype == f64 and shape_rewards(torch.tensor([True])).dtype == torch.float32

def test_advantages_none_is_the_reward():
    assert compute_advantages(R, GROUPS, "none").tolist() == R.tolist()

def test_advantages_batch_baseline():
    # batch mean = 6/8 = 0.75
    assert compute_advantages(R, GROUPS, "batch").tolist() == [.25, -.75, -.75, .25, .25, .25, .25, .25]

def test_advantages_group_baseline():
    # group means 0.5 and 1
    assert compute_advantages(R, GROUPS, "group").tolist() == [.5, -.5, -.5, .5, 0, 0, 0, 0]

def test_advantages_rloo_baseline():
    # sample 0: 1 − (0 + 0 + 1)/3 = 2/3; sample 1: 0 − (1 + 0 + 1)/3 = −2/3
    expected = torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0, 0, 0, 0], dtype=f64)
    torch.testing.assert_close(compute_advantages(R, GROUPS, "rloo"), expected)

def test_advantages_rloo_group_of_one_is_zero():
    adv = compute_advantages(torch.tensor([1., 0., 1.]), torch.tensor([0, 0, 1]), "rloo")
    assert adv.tolist() == [1., -1., 0.]

def test_advantages_std_normalize():
    # group 0: mean .5, population std .5 -> ±1; group 1 has zero variance -> exactly 0
    adv = compute_advantages(R, GROUPS, "group", std_normalize=True, eps=0.0)
    assert adv.tolist() == [1., -1., -1., 1., 0., 0., 0., 0.]
    adv = compute_advantages(R, GROUPS, "group", std_normalize=True)  # default eps barely matters
    torch.testing.assert_close(adv, torch.tensor([1., -1., -1., 1., 0., 0., 0., 0.], dtype=f64), atol=1e-5, rtol=0)

def test_advantages_non_contiguous_group_ids():
    # the same two groups, interleaved and with arbitrary ids
    perm = torch.tensor([0, 4, 1, 5, 2, 6, 3, 7])
    ids = torch.where(GROUPS == 0, 42, -7)[perm]
    for baseline in ("batch", "group", "rloo"):
        torch.testing.assert_close(compute_advantages(R[perm], ids, baseline),
                                   compute_advantages(R, GROUPS, baseline)[perm])

def test_advantages_all_equal_rewards_are_exact_zeros():
    r = torch.full((6,), 0.1, dtype=torch.float32)  # 0.1 is not exact in binary: mean could round
    ids = torch.tensor([3, 3, 3, 9, 9, 9])
    for baseline in ("group", "rloo"):
        for std_normalize in (False, True):
            adv = compute_advantages(r, ids, baseline, std_normalize=std_normalize)
            assert (adv == 0).all(), (baseline, std_normalize)
    assert (compute_advantages(r, ids, "none", std_normalize=True) == 0).all()  # not r / eps = 1e5

def test_std_normalize_adds_eps_to_the_std_rather_than_flooring_it():
    # a group [0, 2e-6]: A = ±1e-6, population std 1e-6, so A / (std + eps) = ±1e-6 / 2e-6 = ±0.5
    r, ids = torch.tensor([0., 2e-6], dtype=f64), torch.tensor([0, 0])
    adv = compute_advantages(r, ids, "group", std_normalize=True, eps=1e-6)
    torch.testing.assert_close(adv, torch.tensor([-0.5, 0.5], dtype=f64), rtol=1e-9, atol=0)


def test_length_penalty_by_hand():
    lengths = torch.tensor([10, 20, 30, 12, 7, 7])
    correct = torch.tensor([1., 1., 0., 0., 1., 0.])
    ids = torch.tensor([5, 5, 5, 5, 2, 2])
    # group 5: min 10, max 30, λ = 0.5 − (len − 10)/20 = [0.5, 0, −0.5, 0.4]; wrong ones get min(0, λ)
    # group 2: all lengths equal -> 0
    assert length_penalty(lengths, correct, ids).tolist() == pytest.approx([0.5, 0.0, -0.5, 0.0, 0.0, 0.0])

# -----------------------------------------------------------------------------
# the loss, by hand

def hand_batch():
    # two sequences of one group; rewards [1, 0] -> group advantages [0.5, −0.5]
    lp = torch.tensor([[-1., -2., 0.], [-1., 0., 0.]], dtype=f64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    return lp, torch.tensor([1., 0.], dtype=f64), torch.tensor([0, 0]), mask

@pytest.mark.parametrize("aggregation, expected", [
    ("token-mean", 1 / 3),   # objective A·lp on tokens: [−0.5, −1.0] and [0.5]; sum −1 over 3 tokens
    ("seq-mean", 0.125),     # token means −0.75 and 0.5, their mean −0.125
    ("const", 0.1),          # sum −1 over B · max_len = 2 · 5
])
def test_aggregation_by_hand(aggregation, expected):
    lp, r, ids, mask = hand_batch()
    loss, metrics = reinforce_loss(lp, lp.detach(), r, ids, mask, aggregation=aggregation, max_len=5)
    assert loss.item() == pytest.approx(expected)
    assert metrics["len_mean"] == 1.5 and metrics["len_max"] == 2 and metrics["reward_mean"] == 0.5
    assert metrics["adv_abs_mean"] == 0.5 and metrics["n_seqs_trained"] == 2
    assert metrics["adv_std"] == 0.5  # population std of [0.5, -0.5]

def test_seq_mean_counts_a_sequence_without_trained_tokens_as_zero_not_nan():
    lp, r, ids, mask = hand_batch()
    mask[1] = False  # (e.g. a completion cut to nothing)
    loss, _ = reinforce_loss(lp, lp.detach(), r, ids, mask, aggregation="seq-mean")
    loss.backward()
    assert loss.item() == pytest.approx(0.75 / 2) and torch.isfinite(lp.grad).all()  # token mean −0.75, and 0

def test_reinforce_gradient_is_minus_advantage_over_tokens():
    lp, r, ids, mask = hand_batch()
    loss, _ = reinforce_loss(lp, lp.detach(), r, ids, mask, aggregation="token-mean")
    loss.backward()
    # d loss / d lp = −A / #tokens on completion tokens, 0 elsewhere
    expected = torch.tensor([[-0.5, -0.5, 0], [0.5, 0, 0]], dtype=f64) / 3
    torch.testing.assert_close(lp.grad, expected)

def test_drop_zero_signal_trains_on_informative_groups_only():
    g = torch.Generator().manual_seed(0)
    lp = (-torch.rand(4, 5, generator=g, dtype=f64)).requires_grad_()
    mask = torch.ones(4, 5, dtype=torch.bool)
    r, ids = torch.tensor([1., -1., 1., 1.], dtype=f64), torch.tensor([0, 0, 1, 1])
    # baseline "none" so the all-correct group would otherwise push its samples up
    loss, metrics = reinforce_loss(lp, lp.detach(), r, ids, mask, baseline="none", drop_zero_signal=True)
    alone, _ = reinforce_loss(lp[:2], lp[:2].detach(), r[:2], ids[:2], mask[:2], baseline="none")
    torch.testing.assert_close(loss, alone)
    loss.backward()
    assert (lp.grad[2:] == 0).all() and (lp.grad[:2] != 0).all()
    assert metrics["zero_signal_frac"] == 0.5 and metrics["n_seqs_trained"] == 2

@pytest.mark.parametrize("options", [dict(aggregation="token-mean"), dict(aggregation="seq-mean"),
                                     dict(aggregation="const", max_len=5), dict(loss_type="mirror"),
                                     dict(aggregation="seq-mean", kl_coef=0.5), dict(aggregation="const", max_len=5,
                                                                                     kl_coef=0.5),
                                     dict(clip_eps=0.1)], ids=lambda o: "-".join(map(str, o.values())))
def test_drop_zero_signal_gives_the_loss_and_metrics_of_the_informative_groups_alone(options):
    """Dropping the flat group leaves the loss of the others alone, with their normaliser, except under const,
    whose normaliser B · max_len keeps counting every sequence: a constant, as its name says."""
    g = torch.Generator().manual_seed(1)
    lp = (-torch.rand(6, 5, generator=g, dtype=f64)).requires_grad_()
    old = lp.detach() + 0.3 * torch.randn(6, 5, generator=g, dtype=f64)  # off-policy: mirror's ρ, clip's ratio ≠ 1
    ref = lp.detach() + 0.2 * torch.randn(6, 5, generator=g, dtype=f64)
    mask = torch.arange(5)[None] < torch.tensor([5, 2, 4, 1, 3, 5])[:, None]  # (6, 5) lengths 5 2 4 1 3 5
    r, ids = torch.tensor([1., 1., 1., 0., 0., 1.], dtype=f64), torch.tensor([0, 0, 1, 1, 2, 2])  # group 0 flat
    both = dict(baseline="none", ref_logprobs=ref, **options)  # "none": the flat group would push its samples up
    loss, metrics = reinforce_loss(lp, old, r, ids, mask, drop_zero_signal=True, **both)
    kept = slice(2, 6)
    alone, alone_metrics = reinforce_loss(lp[kept], old[kept], r[kept], ids[kept], mask[kept],
                                          **{**both, "ref_logprobs": ref[kept]})
    if options.get("aggregation") == "const":  # its normaliser stays B · max_len, whatever is dropped (README)
        assert metrics["normaliser"] == 6 * 5 and alone_metrics["normaliser"] == 4 * 5
        loss, metrics["kl"] = loss * 6 / 4, metrics["kl"] * 6 / 4
    torch.testing.assert_close(loss, alone)
    assert metrics["kl"] == pytest.approx(alone_metrics["kl"]) and metrics["clip_frac"] == alone_metrics["clip_frac"]
    assert options.get("aggregation") == "const" or metrics["normaliser"] == alone_metrics["normaliser"]
    loss.backward()
    assert (lp.grad[:2] == 0).all() and (lp.grad[2:][mask[2:]] != 0).any()

def test_kl_is_aggregated_like_the_loss():
    lp, r, ids, mask = hand_batch()
    ref = lp.detach() + torch.tensor([[0.3, -0.2, 0.], [0.1, 0., 0.]], dtype=f64)
    _, m = reinforce_loss(lp, lp.detach(), r, ids, mask, kl_coef=0.5, ref_logprobs=ref, aggregation="seq-mean")
    k3 = lambda d: math.exp(d) - d - 1
    assert m["kl"] == pytest.approx(((k3(0.3) + k3(-0.2)) / 2 + k3(0.1)) / 2)  # mean over sequences of token means

def test_mirror_needs_no_max_len_whatever_the_aggregation():  # (it ignores the aggregation)
    lp, r, ids, mask = hand_batch()
    reinforce_loss(lp, lp.detach(), r, ids, mask, loss_type="mirror", aggregation="const")

def test_drop_zero_signal_all_groups_flat_gives_zero_loss_not_nan():
    lp = torch.randn(4, 3, dtype=f64).requires_grad_()
    r, ids = torch.tensor([1., 1., 0., 0.], dtype=f64), torch.tensor([0, 0, 1, 1])
    for aggregation in ("token-mean", "seq-mean", "const"):
        for loss_type in ("reinforce", "mirror"):
            lp.grad = None
            loss, m = reinforce_loss(lp, lp.detach(), r, ids, torch.ones(4, 3), baseline="none", max_len=3,
                                     aggregation=aggregation, loss_type=loss_type, drop_zero_signal=True)
            loss.backward()
            assert loss.item() == 0 and (lp.grad == 0).all() and m["n_seqs_trained"] == 0

def test_kl_k3_is_zero_at_reference_and_positive_elsewhere():
    lp, r, ids, mask = hand_batch()
    plain, _ = reinforce_loss(lp, lp.detach(), r, ids, mask, aggregation="token-mean")
    same, m = reinforce_loss(lp, lp.detach(), r, ids, mask, kl_coef=0.5, ref_logprobs=lp.detach(),
                             aggregation="token-mean")
    assert m["kl"] == 0 and same.item() == plain.item()
    ref = lp.detach() + torch.tensor([[0.3, -0.2, 0.], [0.1, 0., 0.]], dtype=f64)
    other, m = reinforce_loss(lp, lp.detach(), r, ids, mask, kl_coef=0.5, ref_logprobs=ref, aggregation="token-mean")
    k3 = lambda d: math.exp(d) - d - 1
    assert m["kl"] == pytest.approx((k3(0.3) + k3(-0.2) + k3(0.1)) / 3)
    assert other.item() == pytest.approx(plain.item() + 0.5 * m["kl"])

def test_clip_frac_and_clipped_objective_by_hand():
    # advantages [0.5, −0.5]; ratios chosen per token, ε = 0.2
    lp = torch.zeros(2, 3, dtype=f64, requires_grad=True)
    ratio = torch.tensor([[1.65, 1.0, 1.65], [0.6, 1.5, 1.65]], dtype=f64)  # the third column is padding
    old = -ratio.log()  # so exp(lp − old) = ratio
    r, ids, mask = torch.tensor([1., 0.], dtype=f64), torch.tensor([0, 0]), torch.tensor([[1, 1, 0], [1, 1, 0]])
    loss, m = reinforce_loss(lp, old, r, ids, mask, clip_eps=0.2)
    # tokens: min(1.65·.5, 1.2·.5) = .6 clipped; 1·.5 = .5; min(.6·−.5, .8·−.5) = −.4 clipped;
    # min(1.5·−.5, 1.2·−.5) = −.75, not clipped (the pessimistic side): |ratio − 1| > ε is not enough
    assert loss.item() == pytest.approx(-(0.6 + 0.5 - 0.4 - 0.75) / 4)
    assert m["clip_frac"] == 0.5  # of the trained tokens: the padding's ratio counts for nothing
    loss.backward()
    assert lp.grad[0, 0] == 0 and lp.grad[1, 0] == 0 and lp.grad[0, 1] != 0 and lp.grad[1, 1] != 0

def test_clip_frac_does_not_count_tokens_without_advantage():
    # a flat group: A = 0 exactly, so no clip zeroes any gradient, however far the ratio moved
    lp = torch.zeros(2, 2, dtype=f64, requires_grad=True)
    old = -torch.full((2, 2), 1.5, dtype=f64).log()  # every ratio exp(lp − old) = 1.5 > 1 + ε
    r, ids, mask = torch.tensor([1., 1.], dtype=f64), torch.tensor([0, 0]), torch.ones(2, 2)
    _, m = reinforce_loss(lp, old, r, ids, mask, clip_eps=0.2)
    assert m["clip_frac"] == 0

def test_clip_frac_counts_a_negative_advantage_token_only_when_its_ratio_is_below_one_minus_eps():
    # advantages [0.5, −0.5]; the second sequence's ratios 0.7 (clipped: < 0.8) and 0.9 (inside [0.8, 1.2])
    lp = torch.zeros(2, 2, dtype=f64, requires_grad=True)
    old = -torch.tensor([[1.0, 1.0], [0.7, 0.9]], dtype=f64).log()
    r, ids, mask = torch.tensor([1., 0.], dtype=f64), torch.tensor([0, 0]), torch.ones(2, 2)
    _, m = reinforce_loss(lp, old, r, ids, mask, clip_eps=0.2)
    assert m["clip_frac"] == 0.25

def test_mirror_loss_sums_the_log_ratio_over_trained_tokens_only():
    lp, r, ids, mask = hand_batch()  # advantages [0.5, −0.5]
    old = lp.detach() - torch.tensor([[0.1, 0.2, 5.0], [0.3, 7.0, 7.0]], dtype=f64)  # padding moved a lot
    loss, _ = reinforce_loss(lp, old, r, ids, mask, loss_type="mirror", tau=0.1)
    # ρ = [0.1 + 0.2, 0.3] = [0.3, 0.3]: L = ((0.5 − 0.03)² + (−0.5 − 0.03)²) / (2 · 0.1) / 2
    assert loss.item() == pytest.approx((0.47 ** 2 + 0.53 ** 2) / 0.2 / 2, rel=1e-12)

def test_reinforce_loss_divides_its_advantages_by_the_group_std_when_asked():
    lp, r, ids, mask = hand_batch()  # rewards [1, 0]: A = ±0.5, std 0.5 -> ±0.5 / (0.5 + 1e-6)
    loss, m = reinforce_loss(lp, lp.detach(), r, ids, mask, aggregation="token-mean", std_normalize=True)
    a = 0.5 / (0.5 + 1e-6)
    assert loss.item() == pytest.approx(-(a * (-1 - 2) + -a * -1) / 3, rel=1e-12)  # ≈ 2/3, not 1/3
    assert m["adv_abs_mean"] == pytest.approx(a, rel=1e-6)

def test_adv_mean_metric_is_the_signed_mean_of_the_advantages():
    lp, r, ids, mask = hand_batch()  # advantages [0.5, −0.5]
    _, m = reinforce_loss(lp, lp.detach(), r, ids, mask)
    assert m["adv_mean"] == 0 and m["adv_abs_mean"] == 0.5

def test_zero_signal_frac_is_the_share_of_groups_not_of_samples():
    lp = torch.zeros(5, 2, dtype=f64, requires_grad=True)
    r, ids = torch.tensor([1., 1., 1., 1., 0.], dtype=f64), torch.tensor([0, 0, 0, 1, 1])  # 3 flat samples, 1 of 2 groups
    _, m = reinforce_loss(lp, lp.detach(), r, ids, torch.ones(5, 2))
    assert m["zero_signal_frac"] == 0.5


def test_a_group_whose_rewards_are_all_negative_is_zero_signal():
    # wrong_reward = −1: an all-wrong group is as flat as an all-right one, and is dropped like it
    lp = torch.zeros(4, 2, dtype=f64, requires_grad=True)
    r, ids = torch.tensor([-1., -1., 1., -1.], dtype=f64), torch.tensor([0, 0, 1, 1])
    _, m = reinforce_loss(lp, lp.detach(), r, ids, torch.ones(4, 2), baseline="none", drop_zero_signal=True)
    assert m["zero_signal_frac"] == 0.5 and m["n_seqs_trained"] == 2

def test_unknown_options_raise_value_error_naming_them():
    lp, r, ids, mask = hand_batch()
    with pytest.raises(ValueError, match="baseline 'mean'"):
        compute_advantages(r, ids, baseline="mean")
    with pytest.raises(ValueError, match="baseline 'mean'"):
        reinforce_loss(lp, lp.detach(), r, ids, mask, baseline="mean")
    with pytest.raises(ValueError, match="aggregation 'sum'"):
        reinforce_loss(lp, lp.detach(), r, ids, mask, aggregation="sum")
    with pytest.raises(ValueError, match="loss_type 'ppo'"):
        reinforce_loss(lp, lp.detach(), r, ids, mask, loss_type="ppo")
    with pytest.raises(ValueError, match="max_len"):
        reinforce_loss(lp, lp.detach(), r, ids, mask, aggregation="const")
    with pytest.raises(ValueError, match="ref_logprobs"):
        reinforce_loss(lp, lp.detach(), r, ids, mask, kl_coef=0.1)

# -----------------------------------------------------------------------------
# the estimator on a bandit: π = softmax(θ) over K actions, J = Σ_a π_a r_a, ∇J = π ⊙ (r − J)

THETA = torch.tensor([0.5, -0.3, 0.1, 0.8, -1.0], dtype=f64)
BANDIT_R = torch.tensor([1., 0., 0., 1., 0.], dtype=f64)  # exact 0/1 rewards

def bandit_gradients(baseline, G=4, n_batches=40, groups_per_batch=500, seed=0):
    """(n_batches, K) REINFORCE estimates of ∇J from reinforce_loss, and the exact ∇J"""
    gen = torch.Generator().manual_seed(seed)
    pi = torch.softmax(THETA, -1)
    exact = pi * (BANDIT_R - (pi * BANDIT_R).sum())
    B = G * groups_per_batch
    ids = torch.arange(groups_per_batch).repeat_interleave(G)
    grads = []
    for _ in range(n_batches):
        theta = THETA.clone().requires_grad_()
        a = torch.multinomial(pi, B, replacement=True, generator=gen)  # (B,) sampled actions
        lp = torch.log_softmax(theta, -1)[a][:, None]  # (B, 1) one-token completions
        loss, _ = reinforce_loss(lp, lp.detach(), BANDIT_R[a], ids, torch.ones(B, 1), baseline=baseline)
        loss.backward()
        grads.append(-theta.grad)  # the loss is −J's estimate
    return torch.stack(grads), exact

def assert_mean_matches(grads, target, n_sigma=4.5):
    mean, stderr = grads.mean(0), grads.std(0) / math.sqrt(grads.shape[0])
    assert ((mean - target).abs() < n_sigma * stderr).all(), (mean, target, stderr)

@pytest.mark.parametrize("baseline", ["none", "batch", "rloo"])
def test_reinforce_gradient_is_unbiased(baseline):
    # "batch" includes the sample too, but with 2000 samples the 1/B bias is far below the noise
    grads, exact = bandit_gradients(baseline)
    assert_mean_matches(grads, exact)

def test_group_mean_baseline_is_biased_by_g_minus_one_over_g():
    # A_i = r_i − (1/G) Σ_j r_j = (G−1)/G · (r_i − mean of the others), and the others are independent of a_i
    G = 4
    grads, exact = bandit_gradients("group", G=G)
    assert_mean_matches(grads, (G - 1) / G * exact)
    stderr = grads.std(0) / math.sqrt(grads.shape[0])
    assert ((grads.mean(0) - exact).abs() > 4.5 * stderr).any()  # and the bias is plainly visible

def test_baselines_reduce_variance():
    var_none = bandit_gradients("none", n_batches=20)[0].var(0).sum()
    var_rloo = bandit_gradients("rloo", n_batches=20)[0].var(0).sum()
    assert var_rloo < var_none

# -----------------------------------------------------------------------------
# mirror descent, and a step of learning

def toy_sequences(B=12, T=6, K=5, seed=0):
    """a position-wise policy: θ (T, K) logits, sampled sequences with ragged lengths"""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(T, K, generator=g, dtype=f64).requires_grad_()
    y = torch.randint(0, K, (B, T), generator=g)
    mask = torch.arange(T)[None, :] < torch.randint(1, T + 1, (B, 1), generator=g)  # (B, T)
    rewards = torch.tensor([1., 0., 0., 1., 1., 1., 0., 0., 1., 0., 1., 0.], dtype=f64)
    ids = torch.arange(B) // 4  # three prompts, G = 4; the last group is flat
    rewards[8:] = 1.0
    return theta, y, mask, rewards, ids

def toy_logprobs(theta, y, mask):
    T = y.shape[1]
    lp = torch.log_softmax(theta, -1)[torch.arange(T)[None, :], y]  # (B, T)
    return lp * mask

@pytest.mark.parametrize("tau", [1e-3, 0.1, 1.0])
def test_mirror_descent_gradient_equals_group_baseline_reinforce(tau):
    theta, y, mask, r, ids = toy_sequences()
    lp = toy_logprobs(theta, y, mask)
    loss, _ = reinforce_loss(lp, lp.detach(), r, ids, mask, loss_type="mirror", tau=tau)
    g_mirror, = torch.autograd.grad(loss, theta, retain_graph=True)
    A = compute_advantages(r, ids, "group")
    reinforce = -(A[:, None] * lp).sum(1).mean()  # sequence-level sum, mean over sequences
    g_reinforce, = torch.autograd.grad(reinforce, theta)
    torch.testing.assert_close(g_mirror, g_reinforce, rtol=1e-12, atol=1e-15)
    assert loss.item() == pytest.approx((A ** 2).mean().item() / (2 * tau))  # at ρ = 0, L = mean A²/(2τ)

def test_sgd_step_raises_probability_of_rewarded_samples():
    # a one-context policy through the fused head: π = softmax(W h), reward 1 for even tokens
    gen = torch.Generator().manual_seed(0)
    V, C, B = 6, 4, 32
    h = torch.randn(1, C, generator=gen).expand(B, C)
    W = (0.5 * torch.randn(V, C, generator=gen)).requires_grad_()
    with torch.no_grad():
        a = torch.multinomial(torch.softmax(h[0] @ W.T, -1), B, replacement=True, generator=gen)
    rewarded = a % 2 == 0
    ids = torch.arange(B) // 8
    lp = token_logprobs(h, W, a)[:, None]
    loss, _ = reinforce_loss(lp, lp.detach(), rewarded.float(), ids, torch.ones(B, 1))
    loss.backward()
    with torch.no_grad():
        W -= 1.0 * W.grad
        lp_after = token_logprobs(h, W, a)[:, None]
    assert lp_after[rewarded].mean() > lp[rewarded].mean()
    assert lp_after[~rewarded].mean() < lp[~rewarded].mean()
    pi_before, pi_after = lp.detach().exp(), lp_after.exp()
    assert (pi_after[rewarded] > pi_before[rewarded]).all()


# -----------------------------------------------------------------------------
# weighted_logprob_sum: the gradient computed during the forward pass

@pytest.mark.parametrize("chunk_size", [1, 8, 1000])
def test_weighted_logprob_sum_equals_naive_value_and_gradients_in_float64(chunk_size):
    from reinforce import weighted_logprob_sum
    torch.manual_seed(11)
    N, C, V = 37, 6, 13
    h = torch.randn(N, C, dtype=torch.float64, requires_grad=True)
    W = torch.randn(V, C, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, V, (N,))
    t[[0, 5, 36]] = -1  # ignored rows: no value, no gradient
    coef = torch.randn(N, dtype=torch.float64)
    total, logprobs, entropy = weighted_logprob_sum(h, W, t, coef, chunk_size=chunk_size, return_entropy=True)
    (3.0 * total).backward()  # an upstream gradient other than 1
    grads = h.grad.clone(), W.grad.clone()
    h.grad = W.grad = None
    valid = t >= 0
    naive_lp = torch.log_softmax(h @ W.T, -1).gather(1, t.clamp(min=0)[:, None]).squeeze(1) * valid
    naive_total = (coef * naive_lp).sum()
    (3.0 * naive_total).backward()
    torch.testing.assert_close(total, naive_total, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logprobs, naive_lp.detach(), rtol=1e-12, atol=1e-12)
    naive_entropy = torch.distributions.Categorical(logits=h @ W.T).entropy().detach() * valid
    torch.testing.assert_close(entropy, naive_entropy, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0], h.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[1], W.grad, rtol=1e-10, atol=1e-12)
    assert grads[0][[0, 5, 36]].abs().max() == 0


def test_weighted_logprob_sum_with_advantages_gives_the_reinforce_gradient():
    """coef = A/n per completion token reproduces reinforce_loss's token-mean gradient."""
    from reinforce import weighted_logprob_sum
    torch.manual_seed(12)
    B, T, C, V = 4, 5, 8, 11
    h = torch.randn(B, T, C, dtype=torch.float64, requires_grad=True)
    W = torch.randn(V, C, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, V, (B, T))
    mask = torch.rand(B, T) > 0.3
    t[~mask] = -1
    rewards, groups = torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1])
    lp = torch.log_softmax(h @ W.T, -1).gather(-1, t.clamp(min=0)[..., None]).squeeze(-1) * mask  # naive, float64
    loss, _ = reinforce_loss(lp, lp.detach(), rewards, groups, mask, baseline="none", aggregation="token-mean")
    loss.backward()
    expected = h.grad.clone(), W.grad.clone()
    h.grad = W.grad = None
    coef = -rewards[:, None].double() * mask / mask.sum()  # d loss / d log π(y_t)
    total, _, entropy = weighted_logprob_sum(h, W, t, coef)
    assert entropy.numel() == 0  # not asked for: not computed
    total.backward()
    torch.testing.assert_close(total, loss)
    torch.testing.assert_close(h.grad, expected[0])
    torch.testing.assert_close(W.grad, expected[1])


@pytest.mark.parametrize("option", [{"loss_type": "mirror"}, {"clip_eps": 0.2}, {"kl_coef": 0.1}])
def test_reinforce_weights_refuse_a_loss_that_is_not_linear_in_the_log_probs(option):
    from reinforce import reinforce_weights
    mask = torch.ones(len(R), 3)
    assert reinforce_weights(R.float(), GROUPS, mask)[0].shape == (len(R), 3)  # the plain loss: its weights
    with pytest.raises(ValueError, match="linear in the log-probs"):
        reinforce_weights(R.float(), GROUPS, mask, **option)


def test_reinforce_weights_are_the_gradient_of_reinforce_loss_with_respect_to_the_log_probs():
    from reinforce import reinforce_weights
    _, r, ids, mask = hand_batch()  # advantages [0.5, −0.5], 3 trained tokens
    w, metrics = reinforce_weights(r.float(), ids, mask, aggregation="token-mean")
    expected = torch.tensor([[-0.5, -0.5, 0], [0.5, 0, 0]]) / 3  # −A / #tokens on trained tokens, as reinforce_loss's
    torch.testing.assert_close(w, expected)
    assert metrics["adv_abs_mean"] == 0.5
