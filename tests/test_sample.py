"""sample.py: the KV-cached batched sampler against naive full recompute, and its sampling maths."""
import pytest
import torch

from model import GPT, GPTConfig, KVCache
import sample
from sample import generate, sample_next


def tiny_model(vocab_size=50, seed=0, sharpen=20.0, block_size=48):
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32)
    model = GPT(config)
    with torch.no_grad():  # sharper than the 0.02 init, so greedy paths differ between prompts; the blocks too,
        for name, p in model.named_parameters():  # else the tied embedding alone picks the next token (each row
            if p.dim() == 2 and "wpe" not in name:  # repeats its last), and no attention bug changes it
                p.mul_(sharpen)
    return model


def naive_greedy(model, prompt, max_new_tokens, stop_tokens):
    """The obviously correct decoder: recompute the whole sequence for every new token."""
    idx, out = torch.tensor([prompt], device=model.lm_head.weight.device), []
    for _ in range(max_new_tokens):
        token = model(idx)[0, -1].argmax().item()
        out.append(token)
        if token in stop_tokens:
            break
        idx = torch.cat([idx, torch.tensor([[token]], device=idx.device)], dim=1)
    return out


def assert_greedy(model, prompts, completions, max_new_tokens, stop_tokens=(), tol=0.03):
    """Each completion is greedy under `model` recomputed in full, without a cache: each token the argmax of one
    forward pass over its prompt and the tokens before it, up to tol × the largest |logit| (in bfloat16 the cached
    and the full pass round differently, so a near-tie may go either way), ending at its first stop token or
    after max_new_tokens. Stricter than comparing with naive_greedy's tokens where near-ties make paths part."""
    device = model.lm_head.weight.device
    for prompt, completion in zip(prompts, completions):
        logits = model(torch.tensor([prompt + completion], device=device))[0, len(prompt) - 1:-1].float()  # (n, V)
        chosen = logits.gather(1, torch.tensor(completion, device=device)[:, None]).squeeze(1)  # (n,)
        assert (chosen >= logits.max(-1).values - tol * logits.abs().max(-1).values).all(), (prompt, completion)
        stops = [i for i, token in enumerate(completion) if token in stop_tokens]
        assert stops == [len(completion) - 1] if stops else len(completion) == max_new_tokens


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("device, bf16", [("cpu", False), ("cpu", True), pytest.param("cuda", False, marks=CUDA),
                                          pytest.param("cuda", True, marks=CUDA)])  # (CUDA: its masked attention)
@pytest.mark.parametrize("fast", [False, True])
def test_kv_cached_greedy_equals_naive_recompute_for_mixed_prompt_lengths(device, bf16, fast):
    model = tiny_model().to(device).eval()
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 50, (n,), generator=g).tolist() for n in (1, 7, 3, 12, 5, 9, 2, 4)]
    # a stop token that some rows hit early: the most common first greedy token
    firsts = [naive_greedy(model, p, 1, ())[0] for p in prompts]
    stop = max(set(firsts), key=firsts.count)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):  # (bf16: train.py's CUDA default)
        got = generate(model, prompts, 20, temperature=0, stop_tokens=(stop,), fast=fast)
        if bf16:
            assert_greedy(model, prompts, got, 20, (stop,))
        else:
            assert got == [naive_greedy(model, p, 20, (stop,)) for p in prompts]
    assert any(len(c) < 20 for c in got) and any(len(c) == 20 for c in got)  # early and full-length rows


def test_assert_greedy_refuses_another_models_or_a_cut_completion():
    model, other = tiny_model(), tiny_model(seed=1)
    prompts = [[1, 2, 3], [4], [5, 6]]
    completions = [naive_greedy(model, p, 10, ()) for p in prompts]
    assert_greedy(model, prompts, completions, 10)
    with pytest.raises(AssertionError):
        assert_greedy(other, prompts, completions, 10)
    with pytest.raises(AssertionError):  # 9 tokens, no stop token among them
        assert_greedy(model, prompts, [c[:-1] for c in completions], 10)


def test_completions_end_at_the_first_stop_token():
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    out = generate(model, [[1, 2]] * 64, 30, stop_tokens=(7, 11), generator=g)
    for completion in out:
        stops = [i for i, t in enumerate(completion) if t in (7, 11)]
        assert stops == [] and len(completion) == 30 or stops == [len(completion) - 1]


@pytest.mark.parametrize("fast", [False, True])
def test_decoding_stops_once_every_row_has_stopped(fast):
    # rows stop at different steps (and draw on after it until a quarter of them have): once the last one
    # has stopped there is no forward pass more, so the passes are the prefill and one per step before that
    model, passes = tiny_model(sharpen=3.0), []
    model.register_forward_pre_hook(lambda *_: passes.append(1))
    out = generate(model, [[1, 2]] * 32, 46, stop_tokens=range(10), generator=torch.Generator().manual_seed(0),
                   fast=fast)
    assert all(c[-1] < 10 for c in out) and len({len(c) for c in out}) > 2  # (all stopped, at different steps)
    assert len(passes) == max(len(c) for c in out) < 46


def test_same_generator_seed_gives_the_same_samples():
    model = tiny_model()
    draw = lambda: generate(model, [[1], [2, 3]], 15, generator=torch.Generator().manual_seed(7))
    assert draw() == draw()


def chi_square(counts, probs):
    expected = probs * counts.sum()
    return (((counts - expected) ** 2) / expected).sum().item()


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampling_frequencies_follow_softmax_of_logits_over_temperature(temperature):
    V, n = 8, 20000
    model = tiny_model(vocab_size=V, seed=4, sharpen=4.0)
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]]))[0, -1].double()
    out = generate(model, [[1, 2, 3]] * n, 1, temperature=temperature, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(torch.tensor(out).view(-1), minlength=V).double()
    right = torch.softmax(logits / temperature, -1)
    wrong = torch.softmax(logits / (temperature * 1.3), -1)  # a mis-applied temperature
    critical = 24.32  # chi-square, 7 degrees of freedom, p = 0.001
    assert chi_square(counts, right) < critical
    assert chi_square(counts, wrong) > critical  # the test can tell the difference


@pytest.mark.parametrize("top_k, top_p, wrong_k, wrong_p", [(3, None, 4, None), (None, 0.7, None, 0.85),
                                                        (4, 0.6, None, 0.6)])  # (top-p after top-k: 2 kept, not 3)
def test_top_k_and_top_p_sample_the_renormalised_softmax_of_the_tokens_they_keep(top_k, top_p, wrong_k, wrong_p):
    V, n = 8, 20000
    logits = torch.tensor([[2.0, 1.6, 1.3, 1.0, 0.5, 0.2, -0.4, -1.0]])  # (1, V), best first

    def kept_softmax(k, p):  # float64 reference: the k best tokens, then the smallest nucleus of mass >= p
        probs = torch.softmax(logits[0].double(), -1)
        keep = torch.arange(V) < (k or V)
        if p is not None:
            kept = probs * keep / (probs * keep).sum()
            keep &= (kept.cumsum(-1) - kept) < p  # (sorted: mass before the token below p)
        return probs * keep / (probs * keep).sum()
    tokens = sample_next(logits.expand(n, V), top_k=top_k, top_p=top_p, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=V).double()
    right, wrong = kept_softmax(top_k, top_p), kept_softmax(wrong_k, wrong_p)  # wrong: keeps one token more/less
    assert (counts[right == 0] == 0).all()
    support = right > 0
    critical = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47}[int(support.sum()) - 1]  # chi-square, p = 0.001
    assert chi_square(counts[support], right[support]) < critical
    assert (counts[wrong == 0] > 0).any() or chi_square(counts[wrong > 0], wrong[wrong > 0]) > critical


def test_top_k_never_emits_a_token_outside_the_k_most_likely():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 100, generator=g)
    allowed = torch.topk(logits, 5).indices
    for _ in range(20):
        tokens = sample_next(logits, temperature=1.5, top_k=5, generator=g)
        assert (allowed == tokens[:, None]).any(1).all()


def test_top_p_never_emits_a_token_outside_the_nucleus():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 100, generator=g) * 3
    probs, order = torch.softmax(logits, -1).sort(descending=True)
    in_nucleus = (probs.cumsum(-1) - probs) < 0.6  # (B, V) sorted: mass before the token < p
    for _ in range(20):
        tokens = sample_next(logits, top_p=0.6, generator=g)
        rank = (order == tokens[:, None]).float().argmax(1)
        assert in_nucleus.gather(1, rank[:, None]).all()


def test_top_p_zero_keeps_only_the_best_token():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 100, generator=g)
    for _ in range(5):
        assert torch.equal(sample_next(logits, top_p=0.0, generator=g), logits.argmax(-1))


@pytest.mark.parametrize("arg, message", [("--top_p=-0.1", "--top_p must be in"), ("--top_p=1.5", "--top_p must be in"),
                                          ("--top_k=-1", "--top_k must be >= 0"),
                                          ("--max_new_tokens=-1", "--max_new_tokens must be >= 1"),
                                          ("--num_samples=0", "--num_samples must be >= 1"),
                                          ("--temperature=-1", "--temperature must be"),
                                          ("--temperature=nan", "--temperature must be"),
                                          ("--temperature=inf", "--temperature must be a finite number"),
                                          ("--top_p=nan", "--top_p must be")])
def test_sample_cli_refuses_bad_sampling_options_by_name_before_loading(tmp_path, arg, message):
    with pytest.raises(ValueError, match=message):
        sample.main([f"--ckpt={tmp_path / 'none.pt'}", arg])  # refused before the checkpoint is read


def test_temperature_zero_is_argmax():
    logits = torch.randn(10, 30)
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(-1))


def test_prompt_plus_new_tokens_longer_than_block_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"40 tokens \+ max_new_tokens=10 = 50 exceeds .*block_size=48"):
        generate(tiny_model(), [[1] * 40], 10)


def test_generate_takes_a_prompt_that_exactly_fills_the_block_with_its_new_tokens():
    assert sample.check_prompts([[1] * 8, [2] * 3], 24, 32) == 8
    with pytest.raises(ValueError, match="exceeds the model's block_size=32"):
        sample.check_prompts([[1] * 8], 25, 32)


def test_empty_prompts_are_an_error():
    with pytest.raises(ValueError, match="non-empty"):
        generate(tiny_model(), [], 5)
    with pytest.raises(ValueError, match="non-empty"):
        generate(tiny_model(), [[1], []], 5)


@pytest.mark.parametrize("setting", [dict(temperature=-1.0), dict(temperature=float("inf")), dict(top_k=0),
                                     dict(top_p=1.5), dict(top_p=-0.1), dict(max_new_tokens=-1)])
def test_generate_refuses_a_sampling_setting_that_has_no_meaning(setting):
    # (a negative temperature would silently draw from the inverted distribution; top_k=0 would crash in topk)
    with pytest.raises(ValueError, match="generate needs max_new_tokens >= 0, a finite temperature >= 0"):
        generate(tiny_model(), [[1, 2]], **{"max_new_tokens": 4, **setting})


@pytest.mark.parametrize("setting", [dict(temperature=0.0), dict(top_k=1), dict(top_p=0.0), dict(top_p=1.0),
                                     dict(max_new_tokens=0)])
def test_generate_takes_each_sampling_settings_least_and_greatest_meaningful_value(setting):
    # temperature 0 and top_p 0 are greedy, top_k 1 too; top_p 1 keeps every token; 0 new tokens: nothing to do
    assert sample.check_prompts([[1, 2]], **{"max_new_tokens": 4, "block_size": 8, **setting}) == 2


@pytest.mark.parametrize("fast", [False, True])
def test_a_float64_model_under_autocast_decodes_in_float64(fast):
    model = tiny_model().double()  # autocast leaves float64 as it is, so its cache must stay float64 too
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sample.cache_dtype(model) == torch.float64 and sample.autocast_copies(model) == {}
        out = generate(model, [[1, 2, 3], [4]], 6, temperature=0, fast=fast)
    assert out == generate(model, [[1, 2, 3], [4]], 6, temperature=0, fast=fast)


def test_generate_under_bfloat16_autocast_keeps_a_bfloat16_cache_and_equals_full_recompute(monkeypatch):
    model, dtypes = tiny_model(), []
    monkeypatch.setattr(sample, "KVCache", lambda *a: dtypes.append(a[-1]) or KVCache(*a))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = generate(model, [[1, 2, 3], [4]], 6, temperature=0)
        expected = [naive_greedy(model, p, 6, ()) for p in ([1, 2, 3], [4])]  # the same autocast, no cache
    assert dtypes == [torch.bfloat16] and out == expected


def mixed_prompts_and_a_common_stop(model):
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 50, (n,), generator=g).tolist() for n in (1, 7, 3, 12, 5, 9, 2, 4)]
    firsts = [naive_greedy(model, p, 1, ())[0] for p in prompts]
    return prompts, max(set(firsts), key=firsts.count)  # a stop token some rows hit at once


def test_static_shape_fast_path_greedy_equals_the_plain_loop_token_for_token():
    model = tiny_model().eval()
    prompts, stop = mixed_prompts_and_a_common_stop(model)
    fast = generate(model, prompts, 20, temperature=0, stop_tokens=(stop,), fast=True)
    assert fast == generate(model, prompts, 20, temperature=0, stop_tokens=(stop,), fast=False)
    assert any(len(c) < 20 for c in fast) and any(len(c) == 20 for c in fast)  # early and full-length rows


def test_static_shape_fast_path_samples_the_same_tokens_from_the_same_seed():
    model = tiny_model(sharpen=3.0)
    prompts = [[3, 4, 5], [9], [1, 2, 3, 4, 5, 6]] * 8
    draw = lambda fast: generate(model, prompts, 12, stop_tokens=range(0, 50, 4),
                                 generator=torch.Generator().manual_seed(5), fast=fast)
    fast, plain = draw(True), draw(False)
    assert len({len(c) for c in plain}) > 2  # rows stop at different steps: the plain batch shrinks
    assert fast == plain


def test_static_shape_fast_path_runs_under_bfloat16_autocast():
    model = tiny_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = generate(model, [[1, 2, 3], [4]], 6, temperature=0, fast=True)
        plain = generate(model, [[1, 2, 3], [4]], 6, temperature=0, fast=False)
    assert fast == plain


def test_fast_path_is_off_by_default_on_cpu(monkeypatch):
    import sample
    monkeypatch.setattr(sample, "decode_step", lambda *a: pytest.fail("the static step ran on CPU by default"))
    generate(tiny_model(), [[1, 2]], 4)


def reuse_across_calls(device, ctx, bf16_on_cuda=False):
    """Three fast calls on one model: other prompt lengths, then weights changed in place (as an
    optimizer step does). Each must equal the plain loop (bf16 on CUDA: both greedy up to near-ties, as
    the two take other kernels there), and all must share one kept decoder."""
    model = tiny_model().to(device)
    prompts, stop = mixed_prompts_and_a_common_stop(model.cpu())
    model.to(device)
    sample._decoders.clear()
    outputs = []
    for call in range(3):
        if call == 2:
            torch.manual_seed(1)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.3 * torch.randn_like(p))
        these = prompts if call == 0 else [[p[-1]] + p for p in prompts]  # other lengths, same batch size
        with ctx:
            fast = generate(model, these, 20, temperature=0, stop_tokens=(stop,), fast=True)
            plain = generate(model, these, 20, temperature=0, stop_tokens=(stop,), fast=False)
            if bf16_on_cuda:
                for completions in (fast, plain):
                    assert_greedy(model, these, completions, 20, (stop,))
            else:
                assert fast == plain
        outputs.append(fast)
    assert len(sample._decoders) == 1  # one capture, reused by the later calls
    assert outputs[2] != outputs[1]  # the third generate decoded with the changed weights


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # bf16: through the Linear layers' copies
def test_fast_path_reuses_its_kept_cache_across_calls_and_still_equals_the_plain_loop(dtype):
    reuse_across_calls("cpu", torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32))


def test_under_autocast_the_decode_step_reads_low_precision_copies_of_the_linear_layers_bitwise():
    # a CUDA graph would replay autocast's cast of every weight at every token; the copies are cast once per call
    model = tiny_model().eval()
    linears = {f"{n}.{k}" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
               for k, _ in m.named_parameters(recurse=False)}
    assert "lm_head.weight" in linears and sample.autocast_copies(model) == {}  # none without autocast
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        copies = sample.autocast_copies(model)
        assert set(copies) == linears and all(c.dtype == torch.bfloat16 for c in copies.values())
        logits = []
        for weights in (None, copies):  # two static steps each, from an empty cache
            cache, pos = KVCache(model.config, 2, 8, "cpu", torch.bfloat16), torch.zeros(2, 1, dtype=torch.long)
            cache.slot = torch.zeros(1, dtype=torch.long)
            logits += [sample.decode_step(model, cache, torch.tensor([[3], [7]]), pos, weights) for _ in range(2)]
        assert torch.equal(logits[0], logits[2]) and torch.equal(logits[1], logits[3])
        assert not torch.equal(logits[0], logits[1])  # (the second step saw the first in its cache)
        copies["lm_head.weight"].mul_(2)  # the step reads the copies, not the model's own weights
        cache, pos = KVCache(model.config, 2, 8, "cpu", torch.bfloat16), torch.zeros(2, 1, dtype=torch.long)
        cache.slot = torch.zeros(1, dtype=torch.long)
        assert torch.equal(sample.decode_step(model, cache, torch.tensor([[3], [7]]), pos, copies), 2 * logits[0])
    assert model.transformer.wte.weight.dtype == torch.float32  # the model's own weights are untouched


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kept_cuda_graph_reads_the_current_weights_under_autocast(dtype):
    reuse_across_calls("cuda", torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32),
                       bf16_on_cuda=dtype == torch.bfloat16)


def test_a_kept_decoder_survives_an_error_during_prefill(monkeypatch):
    model, prompts = tiny_model(), [[1, 2, 3], [4]]
    sample.release_decoders()
    first = generate(model, prompts, 6, temperature=0, fast=True)
    monkeypatch.setattr(model.transformer.ln_f, "forward", lambda x: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        generate(model, prompts, 6, temperature=0, fast=True)
    monkeypatch.undo()
    assert generate(model, prompts, 6, temperature=0, fast=True) == first


@pytest.mark.parametrize("training", [True, False])
def test_generate_gives_the_model_its_mode_back_also_after_an_error(monkeypatch, training):
    model = tiny_model().train(training)
    assert generate(model, [[1, 2]], 3) and model.training == training
    modes = []
    monkeypatch.setattr(sample, "sample_next", lambda *a, **k: modes.append(model.training) or 1 / 0)  # e.g. Ctrl-C
    with pytest.raises(ZeroDivisionError):
        generate(model, [[1, 2]], 3)
    assert modes == [False]  # it samples in eval mode (no dropout)
    assert model.training == training  # (a trainer's model left in eval mode would train with dropout off)


def test_fast_path_under_inference_mode_does_not_spoil_later_calls():
    model, prompts = tiny_model(), [[1, 2, 3], [4]]
    sample.release_decoders()
    with torch.inference_mode():
        inside = generate(model, prompts, 6, temperature=0, fast=True)
    assert generate(model, prompts, 6, temperature=0, fast=True) == inside


def test_release_decoders_frees_every_kept_cache():
    generate(tiny_model(), [[1, 2, 3]], 4, temperature=0, fast=True)
    assert sample._decoders
    sample.release_decoders()
    assert not sample._decoders


def test_top_k_larger_than_the_vocabulary_keeps_every_token():
    logits = torch.randn(16, 10, generator=torch.Generator().manual_seed(0))
    draw = lambda **k: sample_next(logits, generator=torch.Generator().manual_seed(1), **k)
    assert torch.equal(draw(top_k=13), draw())


def test_top_p_stops_at_the_token_whose_mass_reaches_it_exactly():
    # four equal logits: each token has probability 0.25 exactly, so the two best reach top_p = 0.5 and a third
    # (the mass before it is 0.5, not below) stays out
    tokens = sample_next(torch.zeros(4000, 4), top_p=0.5, generator=torch.Generator().manual_seed(0))
    assert len(set(tokens.tolist())) == 2


def test_prefill_gives_each_row_the_position_after_its_own_prompt():
    model = tiny_model()
    with torch.no_grad():
        cache, logits, next_pos = sample.prefill(model, [[5, 6, 7], [8], [9, 10]], 8)
    assert next_pos.tolist() == [3, 1, 2]  # (left-padded rows: the position counts the row's own tokens only)


def scripted_stops(monkeypatch, stop, stop_at):
    """sample.sample_next replaced: at step t the row at index stop_at[t] of the current batch draws `stop`, every
    other row draws 1; -> the batch sizes it was called with, one per step."""
    sizes = []

    def fake(logits, *args, **kwargs):
        t = len(sizes)
        sizes.append(logits.size(0))
        token = torch.ones(logits.size(0), dtype=torch.long)
        if t in stop_at:
            token[stop_at[t]] = stop
        return token
    monkeypatch.setattr(sample, "sample_next", fake)
    return sizes


@pytest.mark.parametrize("fast", [False, True])
def test_finished_rows_leave_the_batch_once_they_are_a_quarter_of_it(monkeypatch, fast):
    # 8 rows: one stops at step 0 (an eighth: all 8 go on), another at step 1 (a quarter: the 6 left go on)
    sizes = scripted_stops(monkeypatch, 7, {0: 0, 1: 1})
    out = generate(tiny_model(), [[2, 3]] * 8, 5, stop_tokens=(7,), fast=fast)
    assert sizes == [8, 8, 6, 6, 6]
    assert out == [[7], [1, 7]] + [[1] * 5] * 6


@pytest.mark.parametrize("fast", [False, True])
def test_no_forward_pass_follows_the_last_new_token(fast):
    model, passes = tiny_model(), []
    model.register_forward_pre_hook(lambda *_: passes.append(1))
    out = generate(model, [[1, 2], [3]], 7, generator=torch.Generator().manual_seed(0), fast=fast)
    assert [len(c) for c in out] == [7, 7] and len(passes) == 7  # the prefill, then one per token but the last


def test_a_kept_decoder_does_not_spread_nan_left_in_its_cache_by_an_earlier_call():
    # (e.g. keys that overflowed once): a masked slot's 0 weight times a NaN value is NaN, so every slot is zeroed
    model, prompts = tiny_model(), [[1, 2, 3], [4]]
    sample.release_decoders()
    bias = model.transformer.h[0].attn.c_attn.bias
    saved = bias.detach().clone()
    with torch.no_grad():
        bias.fill_(float("nan"))
        generate(model, prompts, 10, temperature=0, fast=True)  # fills the kept cache's slots with NaN
        bias.copy_(saved)
    assert generate(model, prompts, 10, temperature=0, fast=True) == generate(model, prompts, 10, temperature=0)


def test_fast_calls_of_one_batch_size_but_a_larger_cache_get_a_decoder_of_their_own():
    model, prompts = tiny_model(block_size=160), [[1, 2, 3], [4]]
    sample.release_decoders()
    for max_new_tokens in (10, 70):  # caches of 64, then 128 slots
        fast = generate(model, prompts, max_new_tokens, temperature=0, fast=True)
        assert fast == generate(model, prompts, max_new_tokens, temperature=0, fast=False)
    assert len(sample._decoders) == 2


def test_fast_calls_of_one_cache_size_but_more_rows_get_a_decoder_of_their_own():
    model = tiny_model()
    sample.release_decoders()
    for prompts in ([[1, 2, 3], [4]], [[1, 2, 3], [4], [5, 6]]):
        fast = generate(model, prompts, 10, temperature=0, fast=True)
        assert fast == generate(model, prompts, 10, temperature=0, fast=False)
    assert len(sample._decoders) == 2


def test_kept_decoders_are_the_four_used_last():
    model = tiny_model()
    sample.release_decoders()
    for B in (1, 2, 3, 4, 1, 5):  # B=1 used again before B=5 comes: B=2 is the one used longest ago
        generate(model, [[1, 2]] * B, 2, temperature=0, fast=True)
    assert [token_in.size(0) for _, _, token_in, *_ in sample._decoders.values()] == [3, 4, 1, 5]


def test_a_fast_call_under_float16_autocast_after_one_under_bfloat16_decodes_with_a_float16_cache(monkeypatch):
    model, dtypes = tiny_model(), []
    sample.release_decoders()
    monkeypatch.setattr(sample, "KVCache", lambda *a: dtypes.append(a[-1]) or KVCache(*a))
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            generate(model, [[1, 2, 3], [4]], 6, temperature=0, fast=True)
    assert dtypes == [torch.bfloat16, torch.float16]


def test_fast_calls_with_and_without_autocast_keep_a_decoder_each():
    # a bfloat16 model's cache is bfloat16 either way, but a CUDA graph captured under autocast (float32 norms and
    # softmax) must not replay for a call without it
    model = tiny_model().to(torch.bfloat16)
    sample.release_decoders()
    for enabled in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            generate(model, [[1, 2, 3], [4]], 6, temperature=0, fast=True)
    assert len(sample._decoders) == 2


def test_a_model_whose_weights_moved_to_new_memory_gets_a_new_decoder():
    # a CUDA graph reads the weights at the addresses it was captured with: after .double().float() (new tensors,
    # same dtype) the kept one would read freed memory
    model = tiny_model()
    sample.release_decoders()
    generate(model, [[1, 2, 3], [4]], 6, temperature=0, fast=True)
    old = [p.data for p in model.parameters()]  # (kept alive: the new tensors cannot take their addresses)
    model.double().float()
    assert all(p.data_ptr() != o.data_ptr() for p, o in zip(model.parameters(), old))
    generate(model, [[1, 2, 3], [4]], 6, temperature=0, fast=True)
    assert len(sample._decoders) == 2
