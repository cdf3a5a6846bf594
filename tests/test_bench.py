"""bench.py: the peers it times compute what ours computes, and a command prints its table.
Nothing here is timed."""
import os
import subprocess
import sys

import pytest
import torch

import bench
from reinforce import token_logprobs
from model import GPT, GPTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_logprob_problem():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(50, 16, generator=g, requires_grad=True)  # (N, C)
    W = torch.randn(97, 16, generator=g, requires_grad=True)  # (V, C)
    t = torch.randint(0, 97, (50,), generator=g)  # (N,)
    upstream = torch.randn(50, generator=g)  # (N,) dL/dlog π
    return h, W, t, upstream


def values_and_grads(fn, h, W, t, upstream):
    h.grad = W.grad = None
    logprobs = fn(h, W, t)
    (logprobs * upstream).sum().backward()
    return logprobs.detach(), h.grad.clone(), W.grad.clone()


@pytest.mark.parametrize("name", ["naive", "torch", "torch chunked"])
def test_peer_logprobs_equal_ours_in_value_and_gradient(name):
    if name.startswith("torch") and not bench.HAS_LINEAR_CROSS_ENTROPY:
        pytest.skip(f"torch {torch.__version__} has no F.linear_cross_entropy")
    peer = {"naive": bench.naive_logprobs,
            "torch": bench.torch_logprobs,
            "torch chunked": lambda h, W, t: bench.torch_logprobs(h, W, t, chunk=16)}[name]
    problem = tiny_logprob_problem()
    expected = values_and_grads(lambda h, W, t: token_logprobs(h, W, t, chunk_size=16), *problem)
    for got, want in zip(values_and_grads(peer, *problem), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Liger-Kernel's Triton kernels need CUDA")
def test_liger_peer_logprobs_equal_ours_on_cuda():
    pytest.importorskip("liger_kernel")  # optional: bench.py logprobs adds its row where it is installed
    h, W, t, upstream = (x.detach().cuda() for x in tiny_logprob_problem())
    h.requires_grad_(), W.requires_grad_()
    expected = values_and_grads(lambda h, W, t: token_logprobs(h, W, t, chunk_size=16), h, W, t, upstream)
    for got, want in zip(values_and_grads(bench.liger_logprobs, h, W, t, upstream), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_logprobs_command_prints_a_row_per_implementation_and_chunk():
    out, table = table_of(["logprobs", "--N=64", "--C=8", "--V=50", "--chunks=16", "--repeats=1", "--device=cpu"])
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]) for line in table[2:]}
    ours = [bench.LOGPROB_IMPLS[impl] for impl in ("ours", "fused")]
    assert {(bench.LOGPROB_IMPLS["naive"], "—"), *((name, "16") for name in ours)} <= rows
    assert (bench.LOGPROB_IMPLS["liger"], "—") in rows  # on the CPU: a row that says why it was not run
    assert "needs CUDA" in out or "not installed" in out
    assert all("failed" not in line for line in table)


def test_naive_sampler_is_greedy_decoding_without_a_cache():
    from sample import generate
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    idx = torch.randint(0, 97, (3, 5))
    assert bench.naive_generate(model, idx, 10).tolist() == generate(model, idx.tolist(), 10, temperature=0)


def test_parting_gap_is_the_top_two_gap_where_two_completions_first_differ():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    prompt, best = [5, 7, 11], [3, 1, 4, 1, 5]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + best[:2]]))[0, -1]  # at the third token, where the rows part
    first, second = logits.topk(2).indices.tolist()
    expected = ((logits[first] - logits[second]) / logits.abs().max()).item()
    assert bench.parting_gap(model, prompt, best[:2] + [first, 9], best[:2] + [second, 9]) == pytest.approx(expected)
    assert bench.parting_gap(model, prompt, best, best) == 0.0


def test_sample_command_says_where_a_peers_rows_part_from_ours(monkeypatch, capsys):
    naive = bench.naive_generate
    def one_row_parts(model, idx, n):  # the no-cache loop, with row 1's third token swapped for the runner-up
        out = naive(model, idx, n)
        with torch.no_grad():
            logits = model(torch.cat([idx[1:2], out[1:2, :2]], dim=1))[0, -1]  # (V,)
        out[1, 2] = logits.topk(2).indices[1]
        return out
    monkeypatch.setattr(bench, "naive_generate", one_row_parts)
    bench.bench_sample(["--n_layer=1", "--n_head=2", "--n_embd=16", "--vocab_size=64", "--batch_size=3",
                        "--prompt_len=4", "--new_tokens=5", "--repeats=1"])
    line = capsys.readouterr().out.splitlines()[-1]
    assert "fast: 3/3" in line and "Hugging Face: 3/3" in line and "nanoGPT: 2/3 (the others part where" in line


def test_fuzz_corpus_is_seeded_and_covers_every_kind():
    corpus = bench.fuzz_corpus(18, seed=3)
    assert corpus == bench.fuzz_corpus(18, seed=3)
    assert len({kind for kind, _ in corpus}) == 9 and all(isinstance(text, str) for _, text in corpus)


def test_rewards_command_prints_one_markdown_table():
    done = subprocess.run([sys.executable, "bench.py", "rewards", "--n=200", "--repeats=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| reward | calls/s") and len(table) == 2 + 4  # header, rule, 4 rewards


@pytest.mark.parametrize("update", [["--fused_update=false"], [], ["--kl_coef=0.05"]])  # []: the default, fused
def test_rl_command_times_the_three_phases_of_a_step(update):
    tiny = ["--steps=1", "--task=arithmetic", "--n_layer=1", "--n_embd=16", "--n_head=2", "--digits=2", "--block_size=40",
            "--prompts_per_step=2", "--samples_per_prompt=2", "--max_new_tokens=8", *update]
    done = subprocess.run([sys.executable, "bench.py", "rl", *tiny], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| phase | ms/step") and len(table) == 2 + 4  # 3 phases + the whole step
    assert ("fused update" in done.stdout) == (not update)  # (KL is not linear in log π: the plain update)


def test_sft_bench_refuses_a_warm_up_that_would_time_the_compile():
    with pytest.raises(ValueError, match="--variants=compiled needs --warmup >= 2"):
        bench.main(["sft", "--variants=compiled", "--warmup=1", "--steps=1"])


def test_unknown_command_or_flag_is_refused_by_name():
    with pytest.raises(ValueError, match="nope"):
        bench.main(["rewards", "--nope=1"])
    with pytest.raises(ValueError, match="usage"):
        bench.main(["nope"])


def test_help_of_a_bench_that_runs_train_py_shows_both_configs(capsys):
    with pytest.raises(SystemExit) as done:
        bench.main(["rl", "--help"])
    printed = capsys.readouterr().out
    assert done.value.code == 0 and "class RLBench" in printed and "class TrainConfig" in printed


@pytest.mark.parametrize("args, message", [(["rewards", "--repeats=0"], "--repeats must be >= 1"),
                                           (["sample", "--batch_size=0"], "--batch_size must be >= 1"),
                                           (["rl", "--steps=-1"], "--steps must be >= 1"),
                                           (["sample", "--bandwidth=inf"], "--bandwidth must be a finite number")])
def test_a_count_below_one_or_a_non_finite_number_is_refused_by_name(args, message):
    with pytest.raises(ValueError, match=message):
        bench.main(args)


def table_of(args):
    done = subprocess.run([sys.executable, "bench.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout, [line for line in done.stdout.splitlines() if line.startswith("|")]


@pytest.mark.parametrize("dtype, compiled", [("float32", True), ("autocast", False)])  # autocast: fp32 weights, bf16
def test_sample_command_times_fast_and_eager_paths_and_prints_the_memory_roofline(dtype, compiled):
    out, table = table_of(["sample", "--n_layer=1", "--n_head=2", "--n_embd=16", "--vocab_size=64", "--batch_size=2",
                           "--prompt_len=4", "--new_tokens=4", "--repeats=1", "--bandwidth=1e9", f"--dtype={dtype}",
                           f"--compiled={compiled}"])
    assert "of memory roofline" in table[0] and len(table) == 2 + 4 + compiled  # fast, eager, no cache, HF (, compiled)
    assert "fast=True" in table[2] and "fast=False" in table[3 + compiled] and f", {dtype};" in out
    assert "at an assumed 1e+09 B/s" in out
    if compiled:  # (compiled by inductor, for real: the slowest test of this file)
        assert "torch.compile" in table[3] and "compiled: 2/2," in out  # the same tokens as the plain loop


def test_compiled_row_decodes_through_a_compiled_step_and_drops_the_kept_decoders(monkeypatch):
    compiled_calls = []
    def fake_compile(fn):  # a stand-in for torch.compile that records each call of what it compiled
        return lambda *args, **kwargs: compiled_calls.append(fn) or fn(*args, **kwargs)
    monkeypatch.setattr(torch, "compile", fake_compile)
    model, plain = GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=8)), bench.sample.decode_step
    expected = bench.generate(model, [[1, 2, 3]], 4, temperature=0, fast=True)
    assert bench.sample._decoders  # kept, its step the plain one (on CUDA: a graph of it)
    with bench.compiled_decode_step():
        assert not bench.sample._decoders
        assert bench.generate(model, [[1, 2, 3]], 4, temperature=0, fast=True) == expected
        assert compiled_calls == [plain] * 3  # the 3 decode steps after the prompt's
    assert bench.sample.decode_step is plain and not bench.sample._decoders


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's answer")
def test_sft_graph_variant_on_the_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match="--variants=graph captures a CUDA graph: it needs a CUDA device"):
        bench.main(["sft", "--variants=graph", "--steps=1"])


def test_gpt2_small_flag_gives_gpt2_small_in_bfloat16():
    cfg = bench.sample_sizes(["--gpt2_small=true", "--batch_size=1"])
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cfg.dtype, cfg.batch_size) == \
        (12, 12, 768, 50257, "bfloat16", 1)


def test_sft_command_prints_steps_per_second():
    _, table = table_of(["sft", "--task=arithmetic", "--steps=2", "--warmup=1", "--variants=eager", "--n_layer=1",
                         "--n_embd=16", "--n_head=2", "--digits=2", "--block_size=40", "--sft_batch_size=4"])
    assert table[0].startswith("| train step | warm-up (s) | steps/s") and len(table) == 2 + 1


def test_decode_breakdown_counts_the_ops_of_a_step_and_of_generates_loop_on_the_cpu():
    done = subprocess.run([sys.executable, "docs/decode_breakdown.py", "--ops"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr
    step, loop = done.stdout.splitlines()[-2:]
    assert "ops that do work" in step and "addmm 48" in step  # GPT-2 small: 4 Linear layers in each of 12 blocks
    assert 0 < int(loop.split(": ")[1]) < 10  # (12 before the lengths were found after the loop)
