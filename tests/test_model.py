"""model.py: our GPT against Hugging Face's GPT-2 on the same weights, and its own fast paths."""
import pytest
import torch

from model import GPT, GPTConfig, KVCache

transformers = pytest.importorskip("transformers")  # installed by requirements-dev.txt (CI has it)


def tiny_config(**kw):
    return GPTConfig(**{"vocab_size": 97, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 16, **kw})


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A small randomly initialised Hugging Face GPT-2, saved the way `save_pretrained` does."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=3, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # HF zero-inits biases; randomise them so the test would see a bias mix-up
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    path = tmp_path_factory.mktemp("hf_gpt2")
    hf.save_pretrained(path)
    return path


def test_forward_returns_logits_for_every_position():
    model = GPT(tiny_config())
    idx = torch.randint(0, 97, (3, 10))
    assert model(idx).shape == (3, 10, 97)


def test_forward_with_targets_returns_mean_cross_entropy():
    model = GPT(tiny_config())
    idx, targets = torch.randint(0, 97, (2, 8)), torch.randint(0, 97, (2, 8))
    targets[0, :3] = -1  # ignored
    logits, loss = model(idx, targets)
    expected = torch.nn.functional.cross_entropy(logits.view(-1, 97), targets.view(-1), ignore_index=-1)
    torch.testing.assert_close(loss, expected)


def test_hidden_states_through_the_head_are_the_logits():
    model = GPT(tiny_config())
    idx = torch.randint(0, 97, (2, 8))
    hidden = model(idx, return_hidden=True)
    torch.testing.assert_close(hidden @ model.lm_head.weight.T, model(idx))


def test_lm_head_is_tied_to_the_token_embedding():
    model = GPT(tiny_config())
    assert model.lm_head.weight is model.transformer.wte.weight


def test_sequence_longer_than_block_size_is_an_error():
    model = GPT(tiny_config())
    with pytest.raises(ValueError, match="block_size=32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_incremental_decoding_with_kv_cache_equals_full_forward_in_float64():
    torch.manual_seed(1)
    model = GPT(tiny_config()).double().eval()
    idx = torch.randint(0, 97, (2, 12))
    full = model(idx)
    cache = KVCache(model.config, 2, 12, "cpu", torch.float64)
    cache.valid[:] = True
    steps = [model(idx[:, :5], cache=cache)] + [model(idx[:, t:t + 1], cache=cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-12)


def test_static_decoding_steps_equal_full_forward_in_float64():
    # the static step (a cache slot held in a tensor, attention over every slot under `valid`) writes its float32
    # and float64 attention out by hand; slots not yet written hold garbage that the mask must hide
    torch.manual_seed(1)
    model = GPT(tiny_config()).double().eval()
    idx = torch.randint(0, 97, (2, 12))
    full = model(idx)
    cache = KVCache(model.config, 2, 16, "cpu", torch.float64)
    for t in cache.k + cache.v:
        t.normal_(std=100.0)
    cache.valid[:, :5] = True
    steps = [model(idx[:, :5], cache=cache)]  # the prompt, in dynamic mode
    cache.slot = torch.tensor([5])
    for t in range(5, 12):
        cache.valid[:, t] = True
        steps.append(model(idx[:, t:t + 1], cache=cache, positions=torch.full((2, 1), t)))
        cache.slot += 1
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-12)


def test_optimizer_decays_only_block_matrices():
    model = GPT(tiny_config())
    opt = model.configure_optimizer(lr=1e-3, weight_decay=0.1)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[i].endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for i in decayed)
    assert id(model.transformer.wte.weight) not in decayed
    assert len(decayed) == 4 * model.config.n_layer
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    in_groups = sorted(id(p) for g in opt.param_groups for p in g["params"])
    assert in_groups == sorted(id(p) for p in model.parameters())  # every parameter, once


def test_logits_match_huggingface_gpt2_on_the_same_weights(hf_dir):
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).double().eval()
    ours = GPT.from_pretrained(str(hf_dir)).double().eval()
    idx = torch.randint(0, 97, (3, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for model in (hf, ours):  # 10x the init's weights: activations leave GELU's near-linear range
            for p in model.parameters():
                p.mul_(10)
        logits = hf(idx).logits
        diff = (ours(idx) - logits).abs().max().item()
    assert logits.abs().max() > 1 and diff < 1e-9 * logits.abs().max()  # float64: the same computation


def test_from_pretrained_takes_the_dropout_asked_for(hf_dir):
    assert GPT.from_pretrained(str(hf_dir), dropout=0.1).config.dropout == 0.1


def test_dropout_is_off_in_eval_mode():
    torch.manual_seed(0)
    model, plain = GPT(tiny_config(dropout=0.5)).eval(), GPT(tiny_config())
    plain.load_state_dict(model.state_dict())
    idx = torch.randint(0, 97, (2, 12))
    assert torch.equal(model(idx), plain.eval()(idx))
    assert not torch.equal(model.train()(idx), model(idx))  # (and on in training)


def test_residual_projections_start_smaller_with_depth():  # GPT-2: std 0.02 / sqrt(2 · n_layer) (here 0.005)
    torch.manual_seed(0)
    model = GPT(tiny_config(n_layer=8, n_embd=64))
    for name, p in model.named_parameters():
        if name.endswith(".weight") and p.dim() == 2:
            expected = 0.02 / 4 if name.endswith("c_proj.weight") else 0.02
            assert abs(p.std().item() / expected - 1) < 0.1, name


def test_num_params_leaves_out_the_position_table():
    model = GPT(tiny_config())
    assert model.num_params() == sum(p.numel() for p in model.parameters()) - 32 * 16


@pytest.mark.parametrize("device_type, fused", [("cpu", False), ("cuda", True)])
def test_adamw_is_fused_on_cuda(device_type, fused):  # (the fused kernel takes the skip flag as found_inf)
    assert GPT(tiny_config()).configure_optimizer(1e-3, device_type=device_type).defaults["fused"] is fused


def test_greedy_continuations_match_huggingface_generate(hf_dir):
    from sample import generate
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    ours = GPT.from_pretrained(str(hf_dir))
    prompts = [[5, 17, 3, 88], [42, 1, 9, 60, 7, 7], [13]]
    longest = max(map(len, prompts))
    padded = torch.tensor([[0] * (longest - len(p)) + p for p in prompts])  # HF: left padding + mask
    attention_mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
    expected = hf.generate(padded, attention_mask=attention_mask, max_new_tokens=12, do_sample=False,
                           pad_token_id=0)
    got = generate(ours, prompts, 12, temperature=0)
    assert got == expected[:, longest:].tolist()


def test_from_pretrained_names_the_missing_directory(tmp_path):
    with pytest.raises(OSError, match="no_such_model"):
        GPT.from_pretrained(str(tmp_path / "no_such_model"))


def test_attn_mask_lets_a_query_see_the_real_tokens_up_to_itself_and_always_itself():
    cache = KVCache(tiny_config(), 2, 6, "cpu", torch.float64)
    cache.valid[0, 2:4] = True  # row 0: two pad slots, then its prompt
    cache.valid[1, :4] = True
    O, X = 0.0, -65504.0
    assert cache.attn_mask(4).tolist() == [[[[O, X, X, X], [X, O, X, X], [X, X, O, X], [X, X, O, O]]],
                                           [[[O, X, X, X], [O, O, X, X], [O, O, O, X], [O, O, O, O]]]]


def test_static_steps_leave_the_cache_length_where_it_was():
    model = GPT(tiny_config()).eval()
    cache = KVCache(model.config, 1, 8, "cpu", torch.float32)
    cache.valid[:, :4] = True
    model(torch.tensor([[1, 2, 3, 4]]), cache=cache)
    cache.slot = torch.tensor([4])
    cache.valid[:, 4] = True
    model(torch.tensor([[5]]), cache=cache, positions=torch.tensor([[4]]))
    assert cache.length == 4


def test_optimizer_leaves_out_frozen_parameters():
    model = GPT(tiny_config())
    model.transformer.wpe.weight.requires_grad_(False)
    opt = model.configure_optimizer(lr=1e-3, weight_decay=0.1)
    in_groups = sorted(id(p) for g in opt.param_groups for p in g["params"])
    assert in_groups == sorted(id(p) for p in model.parameters() if p is not model.transformer.wpe.weight)


def test_optimizer_betas_default_to_gpt2s_and_can_be_set():
    model = GPT(tiny_config())
    assert model.configure_optimizer(lr=1e-3).defaults["betas"] == (0.9, 0.95)
    assert model.configure_optimizer(lr=1e-3, betas=(0.8, 0.99)).defaults["betas"] == (0.8, 0.99)


def test_linear_biases_start_at_zero():
    model = GPT(tiny_config())
    biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.Linear) and m.bias is not None]
    assert len(biases) == 4 * model.config.n_layer and all(torch.equal(b, torch.zeros_like(b)) for b in biases)
