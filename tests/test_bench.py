"""bench.py: the peers it times compute what ours computes, and a command prints its table.
Nothing here is timed."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

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
    corpus = bench.fuzz_corpus(20, seed=3)
    assert corpus == bench.fuzz_corpus(20, seed=3)
    assert len({kind for kind, _ in corpus}) == 10 and all(isinstance(text, str) for _, text in corpus)


def test_rewards_command_prints_one_markdown_table():
    done = subprocess.run([sys.executable, "bench.py", "rewards", "--n=200", "--repeats=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| reward | calls/s") and len(table) == 2 + 5  # header, rule, 5 rewards


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


# -----------------------------------------------------------------------------
# the printed figures: timings made known (a fake clock or a fake median_time), every number checked

def fake_clock(monkeypatch, readings):
    """bench's time.perf_counter returns `readings`, one per call."""
    readings = iter(readings)
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: next(readings)))


def rows_of(out):
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("|")]


def test_print_table_prints_a_title_a_blank_line_and_a_markdown_table(capsys):
    bench.print_table("**t**", ["a", "b"], [[1, "x"], [2.5, "y"]])
    assert capsys.readouterr().out == "**t**\n\n| a | b |\n| --- | --- |\n| 1 | x |\n| 2.5 | y |\n"


def test_median_time_is_the_median_of_runs_each_timed_between_two_syncs(monkeypatch):
    events, calls = [], []
    readings = iter([0.0, 1.0, 10.0, 10.25, 20.0, 24.0])  # runs of 1, 0.25 and 4 seconds: median 1, mean 1.75

    def clock():
        events.append("clock")
        return next(readings)
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(bench, "sync", lambda device: events.append(("sync", device)))
    seconds, out = bench.median_time(lambda: events.append("fn") or calls.append(1) or len(calls), 3, "cuda:0")
    assert (seconds, out) == (1.0, 3)  # out: the last run's result
    assert events == [("sync", "cuda:0"), "clock", "fn", ("sync", "cuda:0"), "clock"] * 3


SAMPLE_SIZES = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--vocab_size=16000", "--batch_size=3", "--prompt_len=4",
                "--new_tokens=4", "--repeats=1", "--bandwidth=1e6", "--device=cpu"]  # B=3, n=4


def sample_with_known_times(monkeypatch, capsys, argv, seconds=(0.5, 2.0, 8.0, 4.0)):
    """bench_sample with each sampler's median time given: fast, eager, nanoGPT, Hugging Face (in run order).
    -> (printed text, {sampler: its row's cells after the label}, our model)"""
    times, models, real = iter(seconds), [], bench.GPT.from_pretrained
    monkeypatch.setattr(bench, "median_time", lambda fn, repeats, device="cpu": (next(times), fn()))
    monkeypatch.setattr(bench.GPT, "from_pretrained", lambda path: models.append(real(path)) or models[-1])
    bench.bench_sample(argv)
    out = capsys.readouterr().out
    rows = rows_of(out)
    return out, dict(zip(["header", "rule", "fast", "eager", "nanoGPT", "Hugging Face"], rows)), models[0]


def test_sample_table_gives_tokens_per_second_seconds_and_ms_per_step_of_each_sampler(monkeypatch, capsys):
    _, rows, _ = sample_with_known_times(monkeypatch, capsys, SAMPLE_SIZES)
    # B * n = 12 tokens in 0.5, 2, 8 and 4 seconds; 4 steps each
    assert [rows[name][1:4] for name in ("fast", "eager", "nanoGPT", "Hugging Face")] == [
        ["24", "0.50", "125.000"], ["6", "2.00", "500.000"], ["2", "8.00", "2000.000"], ["3", "4.00", "1000.000"]]


def test_sample_table_writes_tokens_per_second_with_thousands_separators(monkeypatch, capsys):
    _, rows, _ = sample_with_known_times(monkeypatch, capsys, SAMPLE_SIZES, seconds=(0.004, 0.008, 0.012, 0.006))
    assert [rows[name][1] for name in ("fast", "eager", "nanoGPT", "Hugging Face")] == \
        ["3,000", "1,500", "1,000", "2,000"]  # B * n = 12 tokens


def test_sample_table_divides_each_samplers_time_by_the_eager_paths_on_the_cpu(monkeypatch, capsys):
    out, rows, _ = sample_with_known_times(monkeypatch, capsys, SAMPLE_SIZES)
    assert rows["header"][-1] == "ours (eager) is faster by" and "rows identical to ours (eager;" in out
    assert [rows[name][-1] for name in ("fast", "eager", "nanoGPT", "Hugging Face")] == \
        ["0.25x", "1.00x", "4.00x", "2.00x"]


@pytest.mark.parametrize("dtype, size", [("float32", 4), ("autocast", 2)])  # autocast: fp32 weights read as bf16
def test_memory_roofline_reads_every_weight_once_per_step_at_the_bandwidth(monkeypatch, capsys, dtype, size):
    out, rows, model = sample_with_known_times(monkeypatch, capsys, SAMPLE_SIZES + [f"--dtype={dtype}"])
    weight_bytes = size * sum(p.numel() for p in model.parameters())
    floor = weight_bytes / 1e6  # seconds per step at --bandwidth=1e6
    assert f"memory roofline: {weight_bytes / 1e6:,.1f} MB of weights" in out
    assert f"= {1e6 * floor:,.1f} µs per step at best" in out
    for name, seconds in [("fast", 0.5), ("eager", 2.0), ("nanoGPT", 8.0), ("Hugging Face", 4.0)]:
        assert rows[name][4] == f"{100 * floor / (seconds / 4):.1f}%"  # the floor over the time of one of 4 steps


def test_rows_identical_counts_the_first_four_rows_and_gives_the_largest_parting_gap(monkeypatch, capsys):
    naive, hf = bench.naive_generate, bench.hf_generate

    def swap(out, rows):  # another token at position 2 of these rows
        out[rows, 2] = (out[rows, 2] + 1) % 64
        return out
    monkeypatch.setattr(bench, "naive_generate", lambda model, idx, n: swap(naive(model, idx, n), [1, 3]))
    monkeypatch.setattr(bench, "hf_generate", lambda model, idx, n: swap(hf(model, idx, n), [0]))
    gaps = [0.05, 0.2, 0.01]  # nanoGPT's rows 1 and 3, then Hugging Face's row 0
    monkeypatch.setattr(bench, "parting_gap", lambda model, prompt, a, b: 0.0 if a == b else gaps.pop(0))
    bench.bench_sample(["--n_layer=1", "--n_head=2", "--n_embd=16", "--vocab_size=64", "--batch_size=5",
                        "--prompt_len=4", "--new_tokens=5", "--repeats=1", "--device=cpu"])
    part = "(the others part where the two tokens' logits are at most {} of the largest |logit| apart)"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"rows identical to ours (eager; first 4 rows): fast: 4/4, nanoGPT: 2/4 {part.format('20.00%')}, "
        f"Hugging Face: 3/4 {part.format('1.00%')}")


def test_parting_gap_is_over_the_largest_absolute_logit_after_the_common_prefix():
    seen = []

    class Model:  # at every position: logits -10, 2, 1
        lm_head = SimpleNamespace(weight=torch.zeros(1))

        def __call__(self, idx):
            seen.append(idx.tolist())
            return torch.tensor([-10.0, 2.0, 1.0]).expand(1, idx.size(1), 3)
    assert bench.parting_gap(Model(), [2, 2], [0, 1, 0], [0, 2, 1]) == pytest.approx(0.1)  # |2 - 1| / |-10|
    assert seen == [[[2, 2, 0]]]  # the prompt and the tokens before the parting


def test_parting_gap_is_the_same_whichever_completion_has_the_larger_logit():
    class Model:  # at every position: logits -10, 2, 1
        lm_head = SimpleNamespace(weight=torch.zeros(1))

        def __call__(self, idx):
            return torch.tensor([-10.0, 2.0, 1.0]).expand(1, idx.size(1), 3)
    assert bench.parting_gap(Model(), [2], [0, 2], [0, 1]) == bench.parting_gap(Model(), [2], [0, 1], [0, 2]) == \
        pytest.approx(0.1)


def logprobs_with_known_results(monkeypatch, capsys, results):
    """bench_logprobs with each worker's (ms, extra MiB) given, or None for a worker that fails.
    -> {(implementation, chunk): the row's other cells}"""
    def worker(cmd, **kwargs):  # a stand-in for the worker process: its JSON line
        assert cmd[1:3] == [os.path.join(bench.ROOT, "bench.py"), "_logprobs_worker"]
        impl = next(arg.split("=", 1)[1] for arg in cmd if arg.startswith("--impl="))
        if results[impl] is None:
            return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="Traceback ...\nRuntimeError: out of memory\n")
        ms, mib = results[impl]
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps({"ms": ms, "extra_mib": mib}) + "\n", stderr="")
    monkeypatch.setattr(bench, "subprocess", SimpleNamespace(run=worker))  # (not subprocess.run: platform uses it)
    bench.bench_logprobs(["--N=8", "--C=4", "--V=16", "--chunks=16", "--repeats=1", "--device=cpu"])
    return {(row[0], row[1]): row[2:] for row in rows_of(capsys.readouterr().out)[2:]}


def test_logprobs_table_compares_each_rows_time_and_memory_with_naives(monkeypatch, capsys):
    rows = logprobs_with_known_results(monkeypatch, capsys, {"naive": (400.0, 1024.0), "ours": (100.0, 64.0),
                                                             "fused": (60.0, 32.0), "torch": (200.0, 512.0)})
    assert rows[bench.LOGPROB_IMPLS["naive"], "—"] == ["400", "1,024", "1.00", "1.00"]
    assert rows[bench.LOGPROB_IMPLS["ours"], "16"] == ["100", "64", "0.25", "0.06"]
    assert rows[bench.LOGPROB_IMPLS["fused"], "16"] == ["60", "32", "0.15", "0.03"]


def test_logprobs_table_says_why_a_worker_failed_and_goes_on(monkeypatch, capsys):
    rows = logprobs_with_known_results(monkeypatch, capsys, {"naive": (400.0, 1024.0), "ours": None,
                                                             "fused": (60.0, 32.0), "torch": (200.0, 512.0)})
    assert rows[bench.LOGPROB_IMPLS["ours"], "16"] == ["failed: RuntimeError: out of memory", "", "", ""]
    assert rows[bench.LOGPROB_IMPLS["fused"], "16"] == ["60", "32", "0.15", "0.03"]


def test_logprobs_worker_prints_ms_and_the_peak_beyond_inputs_and_both_gradients(monkeypatch, capsys):
    base = 2**30
    grads = (8 * 4 + 16 * 4) * 4  # dL/dh (N, C) and dL/dW (V, C), float32
    peaks = iter([base, base + grads + 3 * 2**20])
    monkeypatch.setattr(bench, "peak_memory", lambda device: next(peaks))
    monkeypatch.setattr(bench, "median_time", lambda fn, repeats, device="cpu": (0.25, fn()))
    bench.logprobs_worker(["--impl=naive", "--N=8", "--C=4", "--V=16", "--repeats=1", "--device=cpu"])
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"ms": 250.0, "extra_mib": 3.0}


@pytest.mark.parametrize("platform, expected", [("linux", 3 * 1024), ("darwin", 3)])  # ru_maxrss: KiB | bytes
def test_peak_memory_on_the_cpu_is_ru_maxrss_in_bytes(monkeypatch, platform, expected):
    rusage = SimpleNamespace(ru_maxrss=3)
    monkeypatch.setattr(bench, "resource", SimpleNamespace(RUSAGE_SELF=0, getrusage=lambda who: rusage))
    monkeypatch.setattr(bench, "sys", SimpleNamespace(platform=platform))
    assert bench.peak_memory("cpu") == expected


def test_rewards_table_gives_the_median_pass_and_the_slowest_call_with_its_kind(monkeypatch, capsys):
    monkeypatch.setattr(bench, "fuzz_corpus", lambda n, seed: [("a", "x"), ("b", "y"), ("c", "z")])
    u = 2**-10  # seconds
    calls = [1, 1, 1, 1, 10, 1, 2, 2, 2]  # 3 passes of 3 calls (3u, 12u, 6u: median 6u); slowest: 10u, kind b
    readings, now = [], 0.0
    for dt in calls * 5:  # the same for each of the 5 rewards
        readings += [now, now + dt * u]
        now += 1.0
    fake_clock(monkeypatch, readings)
    bench.bench_rewards(["--n=3", "--repeats=3"])
    rows = rows_of(capsys.readouterr().out)[2:]
    assert len(rows) == 5 and all(row[1:] == ["512", f"{1e6 * 2 * u:.1f}", "9,766", "b"] for row in rows)


def test_fuzz_corpus_long_garbage_runs_from_ten_to_a_hundred_thousand_characters():
    lengths = [len(text) for kind, text in bench.fuzz_corpus(100, seed=0) if kind == "long garbage"]
    assert len(lengths) == 10 and all(10_000 <= n <= 100_000 for n in lengths)


RL_TINY = ["--steps=3", "--task=arithmetic", "--n_layer=1", "--n_embd=16", "--n_head=2", "--digits=2", "--block_size=40",
           "--prompts_per_step=2", "--samples_per_prompt=2", "--max_new_tokens=8", "--device=cpu"]


def test_rl_table_gives_each_phases_median_its_share_of_the_step_and_tokens_per_second(monkeypatch, capsys):
    lengths = iter([3, 3, 2, 4, 3])  # of each of the B=4 completions, per step: 2 warm-up steps, 3 timed
    monkeypatch.setattr(bench, "generate", lambda model, prompts, n, **kwargs: [[1] * k for k in [next(lengths)]
                                                                                 for _ in prompts])
    phases = [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.5, 0.25, 1.0], [2.0, 0.25, 0.5], [0.75, 0.5, 4.0]]
    readings, now = [], 0.0
    for sampling, scoring, update in phases:  # t0, t1, t2, t3 of each step
        readings += [now, now + sampling, now + sampling + scoring, now + sampling + scoring + update]
        now += 100.0
    fake_clock(monkeypatch, readings)
    bench.bench_rl(RL_TINY)
    out = capsys.readouterr().out
    # medians 0.75, 0.25, 1.0 and whole steps of 1.75, 2.75, 5.25: 2.75; tokens 8, 16, 12
    assert [row[1:] for row in rows_of(out)[2:]] == [["750.0", "27%", "16"], ["250.0", "9%", "32"],
                                                    ["1,000.0", "36%", "8"], ["2,750.0", "100%", "5"]]
    assert "B=2x2=4 completions of 3.0 tokens on average" in out and out.splitlines()[-1] == "dominant: update"


def test_sft_table_gives_the_warm_up_steps_per_second_and_ms_per_step(monkeypatch, capsys):
    fake_clock(monkeypatch, [100.0, 101.5, 200.0, 200.5])  # warm-up 1.5 s; 2 timed steps in 0.5 s
    bench.bench_sft(["--steps=2", "--warmup=1", "--variants=eager", "--task=arithmetic", "--n_layer=1", "--n_embd=16",
                     "--n_head=2", "--digits=2", "--block_size=40", "--sft_batch_size=4"])
    assert rows_of(capsys.readouterr().out)[2:] == [["eager", "1.5", "4.0", "250.00"]]


def test_parse_bench_lets_threads_seed_chunk_and_warmup_be_zero():
    assert bench.parse_bench(bench.SFTBench, ["--warmup=0"]).warmup == 0
    cfg = bench.parse_bench(bench.LogprobsBench, ["--threads=0", "--seed=0", "--chunk=0"])
    assert (cfg.threads, cfg.seed, cfg.chunk) == (0, 0, 0)


def test_an_unknown_flag_of_a_bench_that_runs_train_py_lists_the_benchs_own_flags_too():
    with pytest.raises(ValueError, match="unknown config key 'nope'.*; and the bench's own: steps, ckpt$"):
        bench.main(["rl", "--nope=1"])


def test_gpt2_small_flag_keeps_autocast():
    assert bench.sample_sizes(["--gpt2_small=true", "--dtype=autocast"]).dtype == "autocast"


def test_sample_refuses_a_dtype_other_than_float32_bfloat16_or_autocast():
    with pytest.raises(ValueError, match="--dtype=float16 is not one of float32, bfloat16, autocast"):
        bench.sample_sizes(["--dtype=float16"])
