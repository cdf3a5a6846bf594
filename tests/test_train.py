"""train.py end to end on a tiny config: metrics, checkpoints, exact resume, Ctrl-C, NaN steps,
config errors, DDP, and the GSM8K + Hugging Face GPT-2 path."""
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from functools import partial
from types import SimpleNamespace

import pytest
import torch

import common
import rewards
import tasks
import sample
import train
from model import GPT, GPTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the CPU, also where there is a GPU: resumes are bitwise there (a CUDA test asks for --device=cuda after these)
TINY = ["--device=cpu", "--task=arithmetic", "--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=48", "--digits=2",
        "--sft_steps=4", "--sft_batch_size=8", "--rl_steps=3", "--prompts_per_step=2", "--samples_per_prompt=4",
        "--max_new_tokens=24", "--eval_problems=4", "--pass_k=2", "--eval_every=0", "--ckpt_every=0",
        "--warmup_steps=2"]


def run(tmp_path, *extra, name="out"):
    out = str(tmp_path / name)
    train.main(TINY + [f"--out_dir={out}", *extra])
    return out


def weights(out):
    return torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_smoke_run_logs_every_phase_and_writes_a_loadable_checkpoint(tmp_path):
    out = run(tmp_path, "--eval_every=2")
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["phase"] for r in records].count("sft") == 4
    rl = [r for r in records if r["phase"] == "rl"]
    assert len(rl) == 3 and {"reward_mean", "accuracy", "len_mean", "entropy", "step_by_step"} <= rl[0].keys()
    evals = [r for r in records if r["phase"] == "eval"]
    assert [r["step"] for r in evals] == [4, 6, 7]  # before RL, every 2 RL steps, after RL
    assert {"accuracy", "pass@2", "length", "step_by_step"} <= evals[0].keys()
    ckpt = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)
    assert ckpt["step"] == 7 and ckpt["tokenizer"] == "char" and ckpt["config"]["rl_steps"] == 3
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["before"]["accuracy"] >= 0 and "after" in summary


@pytest.mark.parametrize("options", [[], ["--kl_coef=0.1", "--baseline=none", "--wrong_reward=-1"],
                                     ["--prioritized=true", "--problem_pool=8"]])
def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path, options):
    full = run(tmp_path, "--rl_steps=4", *options, name="full")
    part = run(tmp_path, "--rl_steps=2", *options, name="part")
    train.main([f"--out_dir={part}", "--init_from=resume", "--rl_steps=4"])  # extend the same run
    assert_same_weights(weights(full), weights(part))


def test_resume_restores_the_torch_rng_so_dropout_draws_the_same_masks(tmp_path):
    # dropout is the one consumer of torch's global RNG in training: with dropout=0 a resume that
    # forgot the RNG state would still look exact. baseline none and -1 for wrong: the tiny model is
    # always wrong, and with a group baseline its advantages (so the masks' effect) would all be 0
    options = ["--dropout=0.1", "--baseline=none", "--wrong_reward=-1"]
    full = run(tmp_path, "--rl_steps=4", *options, name="full")
    part = run(tmp_path, "--rl_steps=2", *options, name="part")
    train.main([f"--out_dir={part}", "--init_from=resume", "--rl_steps=4"])
    assert_same_weights(weights(full), weights(part))


def log_records(out):
    """metrics.jsonl without the wall times (which differ from run to run)"""
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("_time")}
            for line in open(os.path.join(out, "metrics.jsonl"))]


def test_resume_across_the_sft_to_rl_boundary_is_exact(tmp_path):
    full = run(tmp_path, name="full")
    part = run(tmp_path, "--rl_steps=0", name="part")  # it ends with its own final eval at step 4
    train.main([f"--out_dir={part}", "--init_from=resume", "--rl_steps=3"])
    assert_same_weights(weights(full), weights(part))
    # the resumed log is the uninterrupted one: the same records, the same losses to the bit, and the same
    # evals (after SFT at 4, at the end at 7: not the stopped run's own final eval at 4)
    assert log_records(full) == log_records(part) and len(log_records(full)) == 4 + 1 + 3 + 1


def test_a_run_resumed_at_step_0_keeps_its_log(tmp_path):
    full = run(tmp_path, "--sft_steps=0", name="full")  # RL from the initial weights
    part = run(tmp_path, "--sft_steps=0", "--rl_steps=0", name="part")  # its checkpoint is at step 0
    train.main([f"--out_dir={part}", "--init_from=resume", "--rl_steps=3"])
    assert_same_weights(weights(full), weights(part))
    assert log_records(full) == log_records(part)  # the eval "before RL" at step 0 is kept, not re-made


@pytest.mark.parametrize("extra", [[], ["--eval_every=2"]])
def test_resuming_a_finished_run_or_extending_it_logs_what_an_uninterrupted_run_would(tmp_path, extra):
    full = run(tmp_path, "--rl_steps=4", *extra, name="full")
    part = run(tmp_path, "--rl_steps=2", *extra, name="part")  # its final eval at 6, and with eval_every=2
    train.main([f"--out_dir={part}", "--init_from=resume", "--rl_steps=2"])  # finished: only its final eval again
    assert [r["step"] for r in log_records(part) if r["phase"] == "eval"] == [4, 6]
    train.main([f"--out_dir={part}", "--init_from=resume", "--rl_steps=4"])  # eval_every=2: 6 is due, else not
    assert log_records(full) == log_records(part)


def test_a_fresh_run_refuses_an_out_dir_that_holds_a_run_unless_told_to_overwrite(tmp_path):
    out = run(tmp_path)
    files = {f: open(os.path.join(out, f), "rb").read() for f in ("ckpt.pt", "metrics.jsonl")}
    with pytest.raises(ValueError, match=f"{out} already holds a run .ckpt.pt, metrics.jsonl.*--overwrite=true"):
        run(tmp_path, "--seed=2")
    assert all(open(os.path.join(out, f), "rb").read() == data for f, data in files.items())  # nothing lost
    os.remove(os.path.join(out, "ckpt.pt"))  # a log alone is a run too (e.g. interrupted before its first save)
    with pytest.raises(ValueError, match="already holds a run .metrics.jsonl."):
        run(tmp_path, "--seed=2")
    run(tmp_path, "--seed=2", "--overwrite=true")
    assert torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["config"]["seed"] == 2


def test_resume_with_fewer_total_steps_than_done_is_refused_naming_both(tmp_path):
    out = run(tmp_path)  # 4 SFT + 3 RL steps
    ckpt = open(os.path.join(out, "ckpt.pt"), "rb").read()
    with pytest.raises(ValueError, match="has done 7 steps, more than sft_steps \\+ rl_steps = 5"):
        train.main([f"--out_dir={out}", "--init_from=resume", "--rl_steps=1"])
    assert open(os.path.join(out, "ckpt.pt"), "rb").read() == ckpt


def test_a_resume_may_not_change_where_sft_ends(tmp_path):
    out = run(tmp_path, "--rl_steps=2")  # 4 SFT steps (their learning rates follow sft_steps), then 2 RL steps
    ckpt = open(os.path.join(out, "ckpt.pt"), "rb").read()
    for sft_steps in (2, 6):  # (2: RL steps 2-3 would be skipped; 6: SFT steps would follow RL's)
        with pytest.raises(ValueError, match=f"has sft_steps=4, which a resume cannot change .--sft_steps={sft_steps}"):
            train.main([f"--out_dir={out}", "--init_from=resume", f"--sft_steps={sft_steps}", "--rl_steps=4"])
    assert open(os.path.join(out, "ckpt.pt"), "rb").read() == ckpt


@pytest.mark.parametrize("fused", ["true", "false"])  # the loss's weights on log π (the default), or the loss
def test_non_finite_loss_skips_the_update_and_keeps_the_weights(tmp_path, monkeypatch, fused):
    sft_only = run(tmp_path, "--rl_steps=0", name="sft_only")
    name = "reinforce_weights" if fused == "true" else "reinforce_loss"
    real = getattr(train, name)
    monkeypatch.setattr(train, name, lambda *a, **k: (lambda loss, m: (loss * float("nan"), m))(*real(*a, **k)))
    out = run(tmp_path, "--rl_steps=2", f"--fused_update={fused}", name="nan")
    ckpt = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)
    assert ckpt["skipped"] == 2
    assert_same_weights(weights(sft_only), ckpt["model"])
    last = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if '"rl"' in line][-1]
    assert last["skipped"] == 2


def test_a_non_finite_sft_loss_is_skipped_and_counted_in_the_sft_records(tmp_path, monkeypatch):
    real_weights = train.sft_weights
    monkeypatch.setattr(train, "sft_weights", lambda *a, **k: real_weights(*a, **k) * float("nan"))
    out = run(tmp_path, "--rl_steps=0")
    sft = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if '"sft"' in line]
    assert [r["skipped"] for r in sft] == [1, 2, 3, 4]  # a run with no RL records still shows them


def test_a_problem_drawn_twice_in_one_step_gets_the_mean_of_both_groups():
    cfg = common.parse_config(train.TrainConfig, ["--prompts_per_step=3", "--samples_per_prompt=2"])
    run = SimpleNamespace(cfg=cfg, pool=[None] * 5, ddp=False, success=torch.full((5,), 0.25))
    correct = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])  # pool problem 3: all right, then all wrong
    train.remember_success(run, [3, 3, 1], correct)
    assert run.success.tolist() == [0.25, 0.5, 0.25, 0.5, 0.25]  # 3: (1 + 0) / 2; 1: its one group


def test_resuming_over_a_damaged_log_line_is_one_error_naming_the_file_and_line(tmp_path):
    out = run(tmp_path)
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write('{"step": 7, "pha\n')  # what a crash in the middle of a write could leave
    lines = sum(1 for _ in open(os.path.join(out, "metrics.jsonl")))
    with pytest.raises(ValueError, match=f"metrics.jsonl:{lines} is not a JSON record"):
        train.main([f"--out_dir={out}", "--init_from=resume", "--rl_steps=4"])


def test_a_new_start_removes_the_old_summary(tmp_path):
    out = run(tmp_path)
    common.start_metrics_log(out, 7, False, False)  # what a resumed run does first
    assert not os.path.exists(os.path.join(out, "summary.json"))
    assert len(open(os.path.join(out, "metrics.jsonl")).readlines()) > 0  # the log before step 7 stays
    assert os.path.exists(os.path.join(out, "ckpt.pt"))


def test_an_overwriting_run_removes_the_old_checkpoint_before_its_first_step(tmp_path, monkeypatch):
    out = run(tmp_path)
    monkeypatch.setattr(train, "sft_batch", lambda *a, **k: 1 / 0)  # a crash before the new run's first save
    with pytest.raises(ZeroDivisionError):
        run(tmp_path, "--seed=2", "--overwrite=true")
    # nothing of the old run is left for --init_from=resume to continue under the new run's (empty) log
    assert not os.path.exists(os.path.join(out, "ckpt.pt"))
    assert open(os.path.join(out, "metrics.jsonl")).read() == ""


@pytest.mark.parametrize("damage", ["cut in half", "random bytes", "empty", "missing", "a bare state_dict"])
def test_a_damaged_or_missing_checkpoint_is_one_clear_error_naming_the_file(tmp_path, damage):
    out = tmp_path / "out"
    out.mkdir()
    path = str(out / "ckpt.pt")
    model, optimizer, cfg = _tiny_policy([])
    common.save_checkpoint(path, model, optimizer, cfg, 7, {"tokenizer": "char"})
    data = open(path, "rb").read()
    if damage == "missing":
        os.remove(path)
    elif damage == "a bare state_dict":
        torch.save(model.state_dict(), path)
    else:
        damaged = {"cut in half": data[:len(data) // 2], "random bytes": random.Random(0).randbytes(len(data)),
                   "empty": b""}[damage]
        open(path, "wb").write(damaged)
    expected = "not found" if damage == "missing" else "is not a train.py checkpoint, or is corrupt"
    resume = [f"--out_dir={out}", "--init_from=resume"]
    for load, arg in ((train.main, resume), (sample.main, [f"--ckpt={path}"])):  # one loader for every reader
        with pytest.raises(ValueError, match=expected) as err:
            load(arg)
        assert path in str(err.value) and "weights_only" not in str(err.value)  # never advise unsafe loading


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos")])
def test_a_full_disk_while_saving_names_the_path_removes_the_tmp_and_keeps_the_old_checkpoint(
        tmp_path, monkeypatch, error):
    path = str(tmp_path / "ckpt.pt")
    model, optimizer, cfg = _tiny_policy([])
    common.save_checkpoint(path, model, optimizer, cfg, 7, {"tokenizer": "char"})
    old = open(path, "rb").read()

    def save_half_then_fail(obj, f):
        f.write(old[:len(old) // 2])  # what a full disk leaves: a partial file
        raise error
    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="is the disk full") as err:
        common.save_checkpoint(path, model, optimizer, cfg, 8, {"tokenizer": "char"})
    assert path in str(err.value)
    assert not os.path.exists(path + ".tmp")
    assert open(path, "rb").read() == old and common.load_checkpoint(path)["step"] == 7


def test_unknown_config_key_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown config key 'lr'"):
        common.parse_config(train.TrainConfig, ["--lr=3"])


@pytest.mark.parametrize("arg, message", [("--rl_steps=many", "--rl_steps expects a int"),
                                          ("--compile=maybe", "--compile expects true or false"),
                                          ("--baseline=median", "--baseline=median is not one of"),
                                          ("rl_steps=3", "look like --key=value"),
                                          ("--task=gsm8k", "needs --data_path"),
                                          ("--device=gpu0", "--device=gpu0 is not a device"),
                                          ("--eval_problems=0", "--eval_problems must be >= 1"),
                                          ("--quit_max=1.5", "--quit_max must be a probability"),
                                          ("--dropout=1", "--dropout must be < 1"),
                                          ("--dtype=float16", "--dtype=float16 is not one of auto, float32"),
                                          ("--tokenizer=bpe", "--tokenizer=bpe is not one of auto, char, gpt2"),
                                          ("--loss_type=ppo", "--loss_type=ppo is not one of"),
                                          ("--temperature=0", "RL needs a temperature > 0"),
                                          ("--loss_type=mirror --tau=0", "--loss_type=mirror needs --tau > 0"),
                                          ("--prioritized=true --problem_pool=0", "needs --problem_pool >= 1"),
                                          ("--clip_eps=-0.2", "--clip_eps must be >= 0"),
                                          ("--kl_coef=-0.1", "--kl_coef must be >= 0"),
                                          ("--length_penalty=-1", "--length_penalty must be >= 0"),
                                          ("--quit_max=-0.1", "--quit_max must be a probability"),
                                          ("--pass_k=0", "--pass_k must be >= 1"),
                                          ("--warmup_steps=0", "--warmup_steps must be >= 1")])
def test_bad_values_name_the_key(arg, message):
    with pytest.raises(ValueError, match=message):
        train.check_config(common.parse_config(train.TrainConfig, arg.split()))


@pytest.mark.parametrize("arg", ["--temperature=-1", "--temperature=0"])
def test_rl_needs_a_positive_temperature(tmp_path, arg):
    # -1 would sample from the inverted distribution; at 0 all G samples of a problem are equal
    with pytest.raises(ValueError, match=f"{arg}(.0)?: RL needs a temperature > 0"):
        run(tmp_path, arg)


@pytest.mark.parametrize("arg, message", [("--device=cuda", "--device=cuda, but torch .* sees no CUDA GPU"),
                                          ("--device=cuda:1", "--device=cuda:1, but torch .* sees no CUDA GPU"),
                                          ("--threads=-1", "--threads must be >= 0"),
                                          ("--sft_lr=inf", "--sft_lr must be a finite number"),
                                          ("--sft_lr=nan", "--sft_lr must be a finite number"),
                                          ("--rl_lr=-0.001", "--rl_lr must be >= 0"),
                                          ("--sft_lr=-1", "--sft_lr must be >= 0")])
def test_a_missing_gpu_bad_threads_or_a_bad_learning_rate_is_refused_before_any_work(tmp_path, monkeypatch,
                                                                                    arg, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only build, also on a GPU machine
    with pytest.raises(ValueError, match=message):
        run(tmp_path, arg)
    assert not os.path.exists(tmp_path / "out")  # nothing was written


@pytest.mark.parametrize("kind, message", [("missing", "is not a file"), ("a directory", "is not a file"),
                                           ("empty", "no problems in the file")])
def test_a_gsm8k_path_that_is_missing_a_directory_or_empty_is_an_error_naming_the_file(tmp_path, kind, message):
    path = tmp_path / "gsm8k.jsonl"
    if kind == "a directory":
        path.mkdir()
    elif kind == "empty":
        path.write_text("")
    with pytest.raises(ValueError, match=message) as err:
        run(tmp_path, "--task=gsm8k", f"--data_path={path}")
    assert str(path) in str(err.value)


def test_max_new_tokens_beyond_the_block_is_refused_before_sft(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "sft_batch", lambda *a: pytest.fail("SFT ran before the check"))
    # TINY: block_size=48 and prompts like "12+34=" of 6 tokens leave room for 42 new tokens
    with pytest.raises(ValueError, match="--max_new_tokens=43 does not fit: the longest prompt has 6 tokens "
                                         "and the model's block_size is 48, so at most 42"):
        run(tmp_path, "--max_new_tokens=43")


def test_command_line_error_exits_non_zero_with_the_message():
    result = subprocess.run([sys.executable, "train.py", "--learning_rate=1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "unknown config key 'learning_rate'" in result.stderr


def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes_exactly(tmp_path):
    out = str(tmp_path / "interrupted")
    # the same thread count in the subprocess as here: float sums depend on it, and an OMP_NUM_THREADS
    # in the environment would otherwise give the two processes different numbers
    args = TINY + ["--sft_steps=400", "--rl_steps=2", f"--threads={torch.get_num_threads()}"]
    proc = subprocess.Popen([sys.executable, "train.py", f"--out_dir={out}", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and not (os.path.exists(metrics) and len(open(metrics).readlines()) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    step = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["step"]
    assert 3 <= step < 400 and "interrupted: saved" in output
    train.main([f"--out_dir={out}", "--init_from=resume"])
    full = str(tmp_path / "full")
    train.main([f"--out_dir={full}", *args])
    assert_same_weights(weights(full), weights(out))


def _ddp_worker(rank, init_file, half_batches, out_path, options):
    torch.set_num_threads(1)  # one thread, as the reference below: a multi-threaded sum may differ in its last bits
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    model, optimizer, cfg = _tiny_policy(options)
    ddp_model = torch.nn.parallel.DistributedDataParallel(model)
    train.policy_update(_as_run(model, optimizer, cfg, ddp_model), *half_batches[rank])
    if rank == 0:
        torch.save(model.state_dict(), out_path)
    torch.distributed.barrier()  # both ranks are done with every collective
    # then leave without the interpreter's teardown: gloo's threads sometimes abort it ("terminate called
    # without an active exception", SIGABRT, seen 1 full-suite run in 4), after the work is done
    os._exit(0)


def _tiny_policy(options):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=32, n_layer=1, n_head=2, n_embd=16))
    cfg = common.parse_config(train.TrainConfig, options)
    return model, model.configure_optimizer(lr=1e-2), cfg


def _as_run(model, optimizer, cfg, train_model=None):
    """What train.policy_update reads of a run: the model (and what trains it), its optimizer, the config."""
    return SimpleNamespace(cfg=cfg, model=model, train_model=train_model or model, optimizer=optimizer,
                           ctx=nullcontext(), device="cpu", ref_model=None, ddp=train_model is not None)


def _random_batch(seed, n_groups, G=4, flat=False):
    """flat: every reward 1, so every group is all-equal (no signal)"""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, 20, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g).tolist()
               for _ in range(n_groups) for _ in range(G)]
    completions = [torch.randint(0, 20, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
                   for _ in prompts]
    idx, targets, mask = train.pad_batch(prompts, completions)
    rewards = torch.ones(len(prompts)) if flat else torch.randint(0, 2, (len(prompts),), generator=g).float()
    group_ids = torch.arange(n_groups).repeat_interleave(G)
    return idx, targets, mask, rewards, group_ids


@pytest.mark.parametrize("options, groups", [
    ([], (3, 3)),                                                    # default: seq-mean
    (["--aggregation=token-mean"], (3, 2)),                          # per-rank token counts differ
    (["--aggregation=const", "--drop_zero_signal=true"], (3, 3)),
    (["--drop_zero_signal=true", "--baseline=rloo"], (2, 4)),        # per-rank kept sequences differ
    (["--drop_zero_signal=true"], (3, -2)),                          # rank 1 trains nothing: all groups flat
    (["--drop_zero_signal=true", "--aggregation=token-mean"], (2, -3)),
    (["--fused_update=false", "--aggregation=token-mean"], (3, 2)),  # the plain update (the others: fused)
])
def test_ddp_step_on_two_processes_equals_one_process_on_the_union_of_their_batches(tmp_path, options, groups):
    halves = [_random_batch(1, groups[0]), _random_batch(2, abs(groups[1]), flat=groups[1] < 0)]
    groups = [abs(n) for n in groups]
    torch.multiprocessing.spawn(_ddp_worker, nprocs=2, join=True,
                                args=(str(tmp_path / "init"), halves, str(tmp_path / "ddp.pt"), options))
    # the union: both halves in one batch (pad to a common length; padding is masked)
    prompts, completions = [], []
    for idx, targets, mask, _, _ in halves:
        for row_idx, row_t, row_m in zip(idx, targets, mask):
            first = int(row_m.float().argmax())  # position of the first completion target
            n = int(row_m.sum())
            prompts.append(row_idx[:first + 1].tolist())
            completions.append(row_t[first:first + n].tolist())
    idx, targets, mask = train.pad_batch(prompts, completions)
    rewards = torch.cat([h[3] for h in halves])
    group_ids = torch.cat([halves[0][4], halves[1][4] + groups[0]])
    model, optimizer, cfg = _tiny_policy(options)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train.policy_update(_as_run(model, optimizer, cfg), idx, targets, mask, rewards, group_ids)
    finally:
        torch.set_num_threads(threads)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    # atol: the attention's key bias has gradient 0 in exact arithmetic (a shift of every key's score leaves the
    # softmax as it is), so it gets rounding noise of ~1e-12, which AdamW's first step divides by eps = 1e-8:
    # moves of up to lr·1e-4 = 1e-6 that differ with the order of the sums. Real updates here are ~lr = 1e-2.
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-5 if k.endswith("attn.c_attn.bias") else 1e-6)


def test_torchrun_with_two_cpu_processes_trains_and_checkpoints(tmp_path):
    out = str(tmp_path / "ddp")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "train.py", f"--out_dir={out}", "--device=cpu", *TINY, "--prioritized=true",
                             "--problem_pool=16"], cwd=ROOT, capture_output=True,  # (its success rates: a DDP sum)
                            text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)
    assert ckpt["step"] == 7 and len(ckpt["success"]) == 16


def test_torchrun_with_more_processes_than_gpus_is_a_clear_error(tmp_path, monkeypatch):
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"started 2 processes on this machine but it has 1 GPU.*--device=cpu"):
        run(tmp_path, "--device=auto")  # (the default)


def test_fused_adamw_skips_a_non_finite_step_on_the_device_and_keeps_weights_and_state():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)  # fused runs on the CPU too
    cfg = train.TrainConfig()
    loss = lambda: model(torch.tensor([[1, 2, 3]]), targets=torch.tensor([[2, 3, 4]]))[1]
    assert train.optimizer_step(model, optimizer, loss(), cfg).item() == 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = {k: v.clone() for k, v in optimizer.state[model.lm_head.weight].items()}
    assert train.optimizer_step(model, optimizer, loss() * float("nan"), cfg).item() == 1
    assert_same_weights(before, model.state_dict())
    for k, v in optimizer.state[model.lm_head.weight].items():
        assert torch.equal(v, state[k]), k  # step count and moments untouched
    assert train.optimizer_step(model, optimizer, loss(), cfg).item() == 0
    assert optimizer.state[model.lm_head.weight]["step"].item() == 2


@pytest.mark.parametrize("saved_fused, resumed_fused", [(False, True), (True, False)])
def test_a_checkpoint_of_one_optimizer_kernel_resumes_on_the_other(tmp_path, saved_fused, resumed_fused):
    # a run saved on the CPU (plain AdamW) resumed on CUDA (fused AdamW, which optimizer_step hands found_inf),
    # and back: the saved groups name the saving kernel, and must not replace the resuming one's
    def policy(fused):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
        return model, model.configure_optimizer(1e-2, device_type="cuda" if fused else "cpu")  # (fused runs on CPU)
    loss = lambda model: model(torch.tensor([[1, 2, 3]]), targets=torch.tensor([[2, 3, 4]]))[1]
    saved, saved_optimizer = policy(saved_fused)
    train.optimizer_step(saved, saved_optimizer, loss(saved), train.TrainConfig())
    torch.save({"optimizer": saved_optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, tmp_path / "ckpt")
    ckpt = torch.load(tmp_path / "ckpt", weights_only=True)  # (a copy: the loaded state shares no tensor)
    resumed, optimizer = policy(resumed_fused)
    resumed.load_state_dict(saved.state_dict())
    common.restore_training_state(ckpt, optimizer, "cpu")
    assert all(group["fused"] == resumed_fused for group in optimizer.param_groups)
    for model, opt in ((saved, saved_optimizer), (resumed, optimizer)):  # the second step: the same on both
        assert train.optimizer_step(model, opt, loss(model), train.TrainConfig()).item() == 0
    for k, v in saved.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_on_cuda_restores_the_gpus_random_generator(tmp_path):
    out = run(tmp_path, "--device=cuda", "--dropout=0.1", "--rl_steps=1")  # dropout on CUDA draws from the GPU's
    saved = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)["cuda_rng"]
    torch.cuda.manual_seed(12345)  # anything else
    train.set_up([f"--out_dir={out}", "--init_from=resume", "--rl_steps=2"])
    assert torch.equal(torch.cuda.get_rng_state(), saved)


def test_a_resume_writes_to_the_out_dir_it_read_not_the_one_the_checkpoint_names(tmp_path, monkeypatch):
    original = run(tmp_path, name="original")
    files = {f: open(os.path.join(original, f), "rb").read() for f in ("ckpt.pt", "metrics.jsonl")}
    monkeypatch.chdir(tmp_path)
    shutil.copytree(original, tmp_path / "out")  # the default --out_dir=out: a copy of the run
    train.main(["--init_from=resume", "--rl_steps=4"])
    assert all(open(os.path.join(original, f), "rb").read() == data for f, data in files.items())  # untouched
    assert torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)["step"] == 8


def test_gsm8k_file_with_a_local_hugging_face_gpt2_runs_end_to_end(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=260, n_positions=512, n_embd=32,
                                                              n_layer=2, n_head=2))
    hf.save_pretrained(tmp_path / "hf")
    out = str(tmp_path / "gsm8k")
    train.main([f"--out_dir={out}", "--task=gsm8k", f"--data_path={ROOT}/tests/data/gsm8k_tiny.jsonl",
                f"--init_from={tmp_path / 'hf'}", "--tokenizer=char", "--sft_steps=2", "--sft_batch_size=2",
                "--rl_steps=2", "--prompts_per_step=2", "--samples_per_prompt=2", "--max_new_tokens=16",
                "--eval_problems=2", "--pass_k=2", "--eval_every=0", "--ckpt_every=0"])
    ckpt = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)
    assert ckpt["step"] == 4 and ckpt["model_config"]["block_size"] == 512


def test_learning_rate_warms_up_decays_to_a_tenth_in_sft_and_is_constant_after_rl_warm_up():
    cfg = common.parse_config(train.TrainConfig, ["--sft_steps=10", "--warmup_steps=2", "--sft_lr=1.0", "--rl_lr=0.1"])
    cosine = lambda step: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / 10))  # from 1 at step 0 towards 0.1
    expected = {0: 0.5 * cosine(0), 1: cosine(1), 9: cosine(9), 10: 0.05, 11: 0.1, 500: 0.1}  # (RL: its own warm-up)
    assert {step: train.learning_rate(cfg, step) for step in expected} == pytest.approx(expected)
    assert cosine(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 - math.cos(math.pi / 10)))  # near the floor, above it


def test_the_logged_learning_rates_are_the_schedules(tmp_path):
    out = run(tmp_path, "--sft_lr=1e-3", "--rl_lr=1e-4")  # 4 SFT steps, warm-up 2, then 3 RL steps
    lrs = [r["lr"] for r in log_records(out) if r["phase"] in ("sft", "rl")]
    cos = [0.1 + 0.45 * (1 + math.cos(math.pi * s / 4)) for s in range(4)]
    assert lrs == pytest.approx([1e-3 * w * c for w, c in zip((0.5, 1, 1, 1), cos)] + [0.5e-4, 1e-4, 1e-4])


@pytest.mark.parametrize("grad_clip", [0.5, 0.0])
def test_optimizer_step_clips_the_global_gradient_norm_to_grad_clip(grad_clip):
    def model_and_loss():
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
        return model, 1000 * model(torch.tensor([[1, 2, 3]]), targets=torch.tensor([[2, 3, 4]]))[1]
    norm = lambda model: torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    unclipped, loss = model_and_loss()
    loss.backward()
    model, loss = model_and_loss()
    before = [p.detach().clone() for p in model.parameters()]
    cfg = common.parse_config(train.TrainConfig, [f"--grad_clip={grad_clip}"])
    train.optimizer_step(model, torch.optim.SGD(model.parameters(), lr=1.0), loss, cfg)  # a step of -1 x gradient
    step = torch.linalg.vector_norm(torch.stack([(p - b).norm() for p, b in zip(model.parameters(), before)]))
    assert norm(unclipped) > 10  # (so a clip to 0.5 has something to do)
    assert step.item() == pytest.approx(grad_clip or norm(unclipped).item(), rel=1e-4)  # the step took the clipped one


def test_evaluate_scores_scripted_completions_with_unbiased_pass_at_n(monkeypatch):
    task = tasks.PairsTask()
    problems = [task.sample("test", random.Random(i)) for i in (1, 2)]
    tokenizer = common.get_tokenizer("char")
    text = lambda s: common.encode(tokenizer, s) + [tokenizer.eot_token]
    right = text(task.trace(problems[0], "direct"))  # "#### a+b" for problem 0
    wrong = text("#### 0+0")
    scripts = iter([[right, wrong],                       # greedy: problem 0 right, problem 1 wrong
                    [wrong, right, wrong, wrong] + [wrong] * 4])  # 4 samples each: 1 of 4 right, 0 of 4 right
    calls = []
    monkeypatch.setattr(train, "generate", lambda model, prompts, *a, **k: calls.append(prompts) or next(scripts))
    cfg = common.parse_config(train.TrainConfig, ["--pass_k=4"])
    model = GPT(GPTConfig(vocab_size=tokenizer.n_vocab, block_size=96, n_layer=1, n_head=1, n_embd=8))  # (unused)
    result = train.evaluate(model, task, tokenizer, problems, cfg, nullcontext())
    # pass@n = mean over problems of 1 - C(k - c, n) / C(k, n): c = 1 gives 1/4, 1/2, 3/4, 1; c = 0 gives 0
    assert result["accuracy"] == 0.5 and result["pass@4"] == 0.5 and result["sample_accuracy"] == 1 / 8
    assert result["pass_at"] == pytest.approx([0.125, 0.25, 0.375, 0.5])
    assert result["length"] == (len(right) + len(wrong)) / 2
    prompt = [common.encode(tokenizer, p.prompt) for p in problems]
    assert calls == [prompt, [prompt[0]] * 4 + [prompt[1]] * 4]  # each problem's k samples side by side


def test_prioritized_problems_are_drawn_in_proportion_to_one_minus_success():
    pool = list(range(4))  # stand-ins for problems
    run_ = SimpleNamespace(cfg=SimpleNamespace(prompts_per_step=4000), pool=pool,
                           success=torch.tensor([0.0, 0.5, 1.0, 0.75]))
    chosen, problems = train.choose_problems(run_, random.Random(0))
    assert problems == chosen
    share = torch.bincount(torch.tensor(chosen), minlength=4).double() / len(chosen)
    torch.testing.assert_close(share, torch.tensor([1.0, 0.5, 0.05, 0.25], dtype=torch.float64) / 1.8, atol=0.03,
                               rtol=0)


def test_a_resume_restores_the_pools_success_rates(tmp_path):
    out = run(tmp_path, "--prioritized=true", "--problem_pool=8", "--rl_steps=2")
    ckpt = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)
    ckpt["success"] = torch.linspace(0, 1, 8)  # (the tiny model is always wrong: its own are all 0)
    torch.save(ckpt, os.path.join(out, "ckpt.pt"))
    resumed = train.set_up([f"--out_dir={out}", "--init_from=resume", "--rl_steps=3"])
    assert torch.equal(resumed.success, torch.linspace(0, 1, 8))


def test_prioritized_sampling_weights_are_one_minus_success_with_a_floor():
    weights = train.sampling_weights(torch.tensor([0.0, 0.25, 1.0, 0.99]))
    torch.testing.assert_close(weights, torch.tensor([1.0, 0.75, 0.05, 0.05]))


@pytest.mark.parametrize("options, metric", [
    (["--loss_type=mirror", "--updates_per_batch=2"], "loss"),
    (["--length_penalty=1.0", "--length_penalty_warmup=1"], "length_reward"),
    (["--prioritized=true", "--problem_pool=16"], "sampling_weight_min"),
    (["--drop_zero_signal=true"], "n_seqs_trained"),
    (["--updates_per_batch=2", "--clip_eps=0.2"], "clip_frac"),
    (["--kl_coef=0.1"], "kl"),
    (["--fused_update=false"], "entropy"),  # the plain update (the default is the fused one)
    (["--dtype=bfloat16"], "entropy"),       # bf16 autocast (the CUDA default) on the CPU: SFT, fused RL, eval
    (["--baseline=rloo", "--std_normalize=true", "--wrong_reward=-1", "--aggregation=const"], "adv_abs_mean"),
])
def test_each_rl_option_runs_end_to_end_and_logs_its_metric(tmp_path, options, metric):
    out = run(tmp_path, *options)
    rl = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if '"rl"' in line]
    assert len(rl) == 3 and all(metric in r and r[metric] == r[metric] for r in rl)  # present, not NaN


def test_length_reward_is_off_during_its_warm_up(tmp_path):
    out = run(tmp_path, "--length_penalty=1.0", "--length_penalty_warmup=2", "--rl_steps=3")
    rl = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if '"rl"' in line]
    assert [r["length_reward"] for r in rl[:2]] == [0.0, 0.0]


def test_length_reward_switches_on_after_its_warm_up_and_is_added_to_the_rewards(tmp_path, monkeypatch):
    cfg = common.parse_config(train.TrainConfig, ["--sft_steps=10", "--length_penalty=0.5", "--length_penalty_warmup=2"])
    completions, correct, groups = [[1] * 4, [1] * 8, [1] * 6, [1] * 2], torch.tensor([1.0, 1.0, 0.0, 0.0]), \
        torch.tensor([0, 0, 1, 1])
    assert torch.equal(train.length_reward(cfg, 11, completions, correct, groups), torch.zeros(4))  # in the warm-up
    # at its end: 0.5 x Kimi's λ = 0.5 - (len - min) / (max - min) in each group, wrong answers only its negative part
    expected = 0.5 * torch.tensor([0.5, -0.5, min(0.0, -0.5), min(0.0, 0.5)])
    torch.testing.assert_close(train.length_reward(cfg, 12, completions, correct, groups), expected)
    # and the update sees it: with a constant length reward of 0.25 the logged mean reward rises by 0.25
    means = {}
    for bonus in (0.0, 0.25):
        monkeypatch.setattr(train, "length_reward", lambda cfg, step, completions, *a: torch.full((len(completions),),
                                                                                                  bonus))
        out = run(tmp_path, "--rl_steps=1", name=f"bonus{bonus}")
        means[bonus] = [r["reward_mean"] for r in log_records(out) if r["phase"] == "rl"][0]
    assert means[0.25] == pytest.approx(means[0.0] + 0.25)


@pytest.mark.parametrize("scratch_frac", [0.0, 0.3, 1.0])
def test_arithmetic_cold_start_mixes_in_step_by_step_traces_at_scratch_frac(scratch_frac):
    cfg = common.parse_config(train.TrainConfig, ["--task=arithmetic", f"--scratch_frac={scratch_frac}",
                                                  "--sft_batch_size=400"])
    task, tokenizer = train.make_task(cfg), common.get_tokenizer("char")
    _, targets, mask = train.sft_batch(task, tokenizer, random.Random(0), cfg, block_size=256)
    traces = [common.decode(tokenizer, row[m].tolist()) for row, m in zip(targets, mask)]
    share = sum(map(task.is_step_by_step, traces)) / len(traces)
    assert abs(share - scratch_frac) <= 3 * math.sqrt(0.3 * 0.7 / 400)  # 3 standard deviations of a binomial share


def test_an_sft_trace_longer_than_the_block_is_a_clear_error():
    cfg = common.parse_config(train.TrainConfig, ["--sft_batch_size=4"])
    with pytest.raises(ValueError, match="a training trace of [0-9]+ tokens exceeds the model's block_size=8"):
        train.sft_batch(train.make_task(cfg), common.get_tokenizer("char"), random.Random(0), cfg, block_size=8)


def test_kl_penalty_is_zero_while_the_policy_equals_the_reference(tmp_path):
    # baseline none and -1 for wrong: the tiny model is always wrong, so every step moves the policy
    out = run(tmp_path, "--kl_coef=0.1", "--rl_steps=2", "--baseline=none", "--wrong_reward=-1")
    rl = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if '"rl"' in line]
    assert rl[0]["kl"] == 0.0  # the first update starts at the reference policy
    assert rl[1]["kl"] > 0.0


def test_several_updates_per_batch_need_a_clip_or_the_mirror_loss():
    with pytest.raises(ValueError, match="updates_per_batch"):
        train.check_config(common.parse_config(train.TrainConfig, ["--updates_per_batch=2"]))


def test_sample_cli_completes_a_prompt_from_a_train_checkpoint(tmp_path, capsys):
    import sample
    out = run(tmp_path)
    sample.main([f"--ckpt={out}/ckpt.pt", "--prompt=12+34=", "--num_samples=2", "--max_new_tokens=8"])
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("12+34=")]
    assert len(printed) == 2
    with pytest.raises(ValueError, match="exceeds the model's block_size=48"):
        sample.main([f"--ckpt={out}/ckpt.pt", "--prompt=" + "1" * 45, "--max_new_tokens=8"])


def test_curves_are_drawn_when_matplotlib_is_installed(tmp_path):
    pytest.importorskip("matplotlib")  # optional: requirements-dev.txt installs it, CI has it
    out = run(tmp_path)
    png = os.path.join(out, "curves.png")
    assert os.path.getsize(png) > 1000 and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("options", [[], ["--aggregation=token-mean", "--baseline=rloo", "--std_normalize=true"],
                                     ["--aggregation=const", "--drop_zero_signal=true", "--wrong_reward=-1"]])
def test_fused_update_takes_the_same_step_as_the_plain_one(options, monkeypatch):
    batch = _random_batch(3, 4)
    results = []
    calls, real = [], train.reinforce_weights  # (so that the test fails if the fused path is not taken)
    monkeypatch.setattr(train, "reinforce_weights", lambda *a, **k: calls.append(1) or real(*a, **k))
    for fused in ("false", "true"):
        model, optimizer, cfg = _tiny_policy(options + [f"--fused_update={fused}"])
        metrics, _ = train.policy_update(_as_run(model, optimizer, cfg), *batch)
        assert len(calls) == (fused == "true")
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}  # left by the step (clipped)
        results.append((model.state_dict(), grads, metrics["loss"], metrics["entropy"]))
    (plain, plain_grads, plain_loss, plain_entropy), (fused, fused_grads, fused_loss, fused_entropy) = results
    assert fused_loss == pytest.approx(plain_loss, rel=1e-5, abs=1e-7)
    assert fused_entropy == pytest.approx(plain_entropy, rel=1e-5) and plain_entropy > 0.1
    for k in plain_grads:
        torch.testing.assert_close(fused_grads[k], plain_grads[k], rtol=1e-4, atol=1e-7)
    for k in plain:
        torch.testing.assert_close(fused[k], plain[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options, is_fused", [([], True), (["--baseline=rloo", "--aggregation=const"], True),
                                               (["--fused_update=false"], False), (["--kl_coef=0.1"], False),
                                               (["--loss_type=mirror"], False),
                                               (["--updates_per_batch=2", "--clip_eps=0.2"], False)])
def test_the_fused_update_is_taken_where_the_loss_is_linear_in_the_log_probs(options, is_fused):
    cfg = common.parse_config(train.TrainConfig, options)
    train.check_config(cfg)  # (none of them is refused: the variants take the plain path)
    assert train.fused(cfg) == is_fused


# -----------------------------------------------------------------------------
# the default task: search with self-checks

PAIRS_TINY = ["--device=cpu", "--task=pairs", "--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=128", "--sft_steps=4",
              "--sft_batch_size=8", "--rl_steps=2", "--prompts_per_step=2", "--samples_per_prompt=4",
              "--max_new_tokens=112", "--eval_problems=4", "--pass_k=2", "--eval_every=1", "--ckpt_every=0",
              "--warmup_steps=2"]
SEARCH_METRICS = ("accuracy", "length", "attempts", "after_fail_share", "honest_check_share")


def test_pairs_run_reports_the_search_metrics_before_and_after_rl_and_at_every_eval(tmp_path):
    out = str(tmp_path / "out")
    train.main(PAIRS_TINY + [f"--out_dir={out}"])
    summary = json.load(open(os.path.join(out, "summary.json")))
    for when in ("before", "after"):
        assert all(key in summary[when] and f"sample_{key}" in summary[when] for key in SEARCH_METRICS[1:])
        assert 0 <= summary[when]["accuracy"] <= 1 and len(summary[when]["pass_at"]) == 2
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    evals = [r for r in records if r["phase"] == "eval"]
    assert len(evals) == 3 and all(key in r for r in evals for key in SEARCH_METRICS)
    assert all("attempts" in r and "after_fail_share" in r for r in records if r["phase"] == "rl")


def test_search_stats_average_attempts_and_count_only_answers_and_checks():
    from tasks import PairsTask, Problem
    task = PairsTask()
    problem = Problem(prompt="3 8 1 6 9->14:", answer="14", info={"numbers": [3, 8, 1, 6, 9], "target": 14})
    texts = ["3+8=11✗,8+6=14✓ #### 8+6",  # 2 attempts, 2 true checks, answer after ✓
             "3+8=12✗ #### 3+8",          # 1 attempt, a wrong sum, answer after ✗
             "3+8=11✗,3+"]                # no answer: counts for attempts, not for answers
    stats = train.search_stats(task, texts, [problem] * 3)
    assert stats["attempts"] == pytest.approx(4 / 3)
    assert stats["after_fail_share"] == pytest.approx(1 / 2)  # 1 of the 2 answers
    assert stats["honest_check_share"] == pytest.approx(3 / 4)  # 12 is not 3+8
    assert train.search_stats(train.make_task(common.parse_config(train.TrainConfig, ["--task=arithmetic"])),
                              ["#### 5"], [None]) == {}


def test_cold_start_style_is_chosen_by_config():
    cfg = common.parse_config(train.TrainConfig, ["--cold_start=direct", "--sft_batch_size=16"])
    task, tokenizer = train.make_task(cfg), common.get_tokenizer("char")
    idx, targets, _ = train.sft_batch(task, tokenizer, train.step_rng(cfg, 0, 0, "sft"), cfg, 128)
    texts = [tokenizer.decode([t for t in row.tolist() if t >= 0 and t != tokenizer.eot_token]) for row in targets]
    assert all(text.startswith("#### ") and "✗" not in text for text in texts)


def test_quit_max_sets_how_often_the_cold_start_gives_up():
    def right_share(quit_max):
        cfg = common.parse_config(train.TrainConfig, [f"--quit_max={quit_max}", "--numbers=6", "--max_number=20"])
        task, rng = train.make_task(cfg), random.Random(0)
        problems = [task.sample("train", rng) for _ in range(1000)]
        return sum(task.reward(task.trace(p, "search", rng), p) for p in problems) / len(problems)
    assert right_share(0.0) == 1.0  # never gives up: every search reaches the right pair
    assert 0.19 < right_share(0.3) < 0.28 and 0.11 < right_share(0.6) < 0.2  # 0.233 and 0.158 in theory


def test_cuda_graphs_flag_turns_the_fast_decoding_path_off(tmp_path, monkeypatch):
    seen = []
    real = train.generate
    monkeypatch.setattr(train, "generate", lambda *a, **kw: seen.append(kw["fast"]) or real(*a, **kw))
    run(tmp_path, "--rl_steps=1", "--cuda_graphs=false", name="off")
    assert seen and set(seen) == {False}
    seen.clear()
    run(tmp_path, "--rl_steps=1", name="on")
    assert seen and set(seen) == {None}  # None: sample.generate decides (on for CUDA, off on CPU)


def varied_sft_batches(lengths=(11, 41, 21, 48, 16, 30), rows=8):
    """SFT batches (idx, targets) of the given token lengths (the TINY block is 48): they cross the static
    step's rounding to 32 and come back, and all their rows but the first are shorter than the batch."""
    g = torch.Generator().manual_seed(0)
    for n in lengths:
        prompts = [torch.randint(1, 50, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g).tolist()
                   for _ in range(rows)]
        completions = [torch.randint(1, 50, (n - len(p) - (i > 0) * (1 + i % 4),), generator=g).tolist()
                       for i, p in enumerate(prompts)]  # the first row fills the batch, the others end 1-4 early
        yield train.pad_batch(prompts, completions)[:2]


def sft_steps(tmp_path, name, make_update, extra=(), lengths=(11, 41, 21, 48, 16, 30)):
    """Varied batches as SFT steps of the TINY config through make_update(run) -> (losses, skip flags, run,
    update)."""
    run_ = train.set_up(TINY + ["--sft_batch_size=8", f"--out_dir={tmp_path / name}", *extra])
    update, losses, skips = make_update(run_), [], []
    for step, (idx, targets) in enumerate(varied_sft_batches(lengths)):
        loss, skip, _ = update(idx, targets, train.sft_weights(targets), train.learning_rate(run_.cfg, step))
        losses.append(loss.item()), skips.append(skip.item())
    return losses, skips, run_, update


def test_sft_step_at_static_shapes_takes_the_plain_steps(tmp_path):
    # what a CUDA graph of the SFT step needs (batches padded into fixed tensors that grow to a longer batch,
    # the learning rate read from a tensor), run eagerly: the plain step's losses and weights, and checkpoints
    # keep plain numbers
    plain = sft_steps(tmp_path, "plain", lambda r: partial(train.train_step, r))
    static = sft_steps(tmp_path, "static", lambda r: train.train_graph(r, capture=False))
    assert static[0] == pytest.approx(plain[0], rel=1e-5) and static[1] == plain[1] == [0.0] * 6
    for k, v in plain[2].model.state_dict().items():
        torch.testing.assert_close(static[2].model.state_dict()[k], v, rtol=1e-4, atol=1e-6)
    groups = static[2].optimizer.state_dict()["param_groups"]
    assert all(isinstance(g["lr"], float) and not g["capturable"] for g in groups)


@pytest.mark.parametrize("entropy", [False, True])  # SFT's step, the fused RL update's
def test_a_training_steps_outputs_hold_no_autograd_graph(tmp_path, entropy):
    # a kept loss would keep the step's autograd graph, and with it AccumulateGrad nodes made on the default
    # stream: on CUDA the next step's graph capture then fails ("operation would make the legacy stream depend
    # on a capturing blocking stream"), as train.py did on its first GPU run with the SFT graph
    run_ = train.set_up(TINY + [f"--out_dir={tmp_path}"])
    idx, targets = next(iter(varied_sft_batches()))
    for step in (partial(train.train_step, run_, entropy=entropy), train.train_graph(run_, False, entropy)):
        outputs = step(idx, targets, train.sft_weights(targets), 1e-3)
        assert all(t.grad_fn is None and not t.requires_grad for t in outputs)


def test_the_static_steps_padding_is_in_no_mean(tmp_path):
    # the fixed tensors' right-padding (to 32 tokens) has target -1: in no loss and no entropy mean
    outputs = []
    for name, make in (("plain", lambda r: partial(train.train_step, r, entropy=True)),
                       ("static", lambda r: train.train_graph(r, capture=False, entropy=True))):
        run_ = train.set_up(TINY + [f"--out_dir={tmp_path / name}"])
        with torch.no_grad():  # peaked predictions that differ with the token (an untrained model's are all uniform)
            run_.model.transformer.wte.weight.mul_(30)
        idx, targets = next(iter(varied_sft_batches(lengths=(11,))))
        outputs.append([t.item() for t in make(run_)(idx, targets, train.sft_weights(targets), 1e-3)])
    (loss, _, entropy), (static_loss, _, static_entropy) = outputs
    assert static_loss == pytest.approx(loss, rel=1e-5) and static_entropy == pytest.approx(entropy, rel=1e-5)


def test_the_varied_batches_pad_their_rows_and_cross_the_rounding():
    # (so that the test above pads, grows its fixed tensors and reuses them)
    batches = list(varied_sft_batches())
    assert [idx.size(1) for idx, _ in batches] == [10, 40, 20, 47, 15, 29]
    assert all(targets[0, -1] >= 0 and (targets[1:, -1] == -1).all() for _, targets in batches)


def stand_in_capture(fn, state):
    """common.cuda_graph's contract without CUDA: a warm-up run of fn whose changes to `state` are undone, then
    every call runs fn (a replay). On the CPU the graph tests below check the bookkeeping around the capture."""
    saved = [t.detach().clone() for t in state]
    fn()
    with torch.no_grad():
        for t, s in zip(state, saved):
            t.copy_(s)
    return fn


# the graph tests run on CUDA (a real capture) and on the CPU (stand_in_capture): the same bookkeeping
GRAPH_DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                      reason="needs CUDA"))]


def count_captures(monkeypatch, device):
    """Every capture of train.py's steps, on the device's capture (CUDA) or its stand-in (CPU) -> the list."""
    captures, capture = [], common.cuda_graph if device == "cuda" else stand_in_capture
    monkeypatch.setattr(train, "cuda_graph", lambda fn, state: captures.append(1) or capture(fn, state))
    return captures


@pytest.mark.parametrize("device", GRAPH_DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # bfloat16: autocast, train.py's CUDA default
def test_sft_step_replayed_as_a_cuda_graph_takes_the_eager_steps(tmp_path, monkeypatch, dtype, device):
    cuda, lengths = [f"--device={device}", f"--dtype={dtype}"], (11, 21, 41, 48, 16, 30)
    eager = sft_steps(tmp_path, "eager", lambda r: train.train_graph(r, capture=False), cuda, lengths)
    captures = count_captures(monkeypatch, device)
    graph = sft_steps(tmp_path, "graph", train.train_graph, cuda, lengths)
    assert len(captures) == 2  # step 0 eagerly (at 32 tokens), then a capture at 32 and one at 47 (48 - 1)
    # the same kernels, but CUDA's attention backward may add in another order: the same steps up to that
    tol = 1e-4 if dtype == "float32" else 2e-2
    assert graph[0] == pytest.approx(eager[0], rel=tol) and graph[1] == eager[1] == [0.0] * 6
    initial = sft_steps(tmp_path, "initial", train.train_graph, cuda, lengths=())[2].model.state_dict()
    for k, v in eager[2].model.state_dict().items():
        eager_change, graph_change = v - initial[k], graph[2].model.state_dict()[k] - initial[k]
        assert (graph_change - eager_change).norm() <= tol * eager_change.norm() + 1e-7, k
    # a non-finite gradient inside the graph: the step is skipped (AdamW's found_inf), weights and state kept
    model, optimizer, update = graph[2].model, graph[2].optimizer, graph[3]
    with torch.no_grad():
        model.transformer.wpe.weight[0, 0] = float("nan")  # in place: the graph reads it at its next replay
    before = [t.clone() for t in [*model.parameters(), *optimizer.state[model.lm_head.weight].values()]]
    idx, targets = next(varied_sft_batches(lengths=(21,)))
    assert update(idx, targets, train.sft_weights(targets), 1e-3)[1].item() == 1
    after = [*model.parameters(), *optimizer.state[model.lm_head.weight].values()]
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def fused_rl_steps(tmp_path, name, make_step, extra=(), lengths=(11, 41, 21, 48, 16, 30)):
    """Varied batches as fused RL updates (train.policy_update, the default) of the TINY config, each step taken by
    make_step(run) (None: policy_update's own eager train_step) -> (losses and entropies, run)."""
    run_ = train.set_up(TINY + [f"--out_dir={tmp_path / name}", *extra])
    step, losses, calls = make_step(run_), [], []
    if step is not None:  # count its calls: the tests fail if policy_update does not take it
        step = (lambda real: lambda *a: calls.append(1) or real(*a))(step)
    rewards, group_ids = torch.tensor([1., 0, 0, 1, 0, 1, 1, 1]), torch.arange(2).repeat_interleave(4)  # 2 groups
    for idx, targets in varied_sft_batches(lengths):
        batch = [common.to_device(t, run_.device) for t in (idx, targets, targets >= 0, rewards, group_ids)]
        metrics, skipped = train.policy_update(run_, *batch, step)
        losses += [metrics["loss"], metrics["entropy"]]
        assert skipped == 0
    assert len(calls) == (len(lengths) if step is not None else 0)
    return losses, run_


def test_fused_rl_update_at_static_shapes_takes_the_eager_steps(tmp_path):
    # the RL update's CUDA graph (train.train_graph with the REINFORCE weights as a third fixed tensor), run
    # eagerly: the eager fused update's losses and weights
    eager = fused_rl_steps(tmp_path, "eager", lambda r: None)
    static = fused_rl_steps(tmp_path, "static", lambda r: train.train_graph(r, capture=False, entropy=True))
    assert static[0] == pytest.approx(eager[0], rel=1e-5, abs=1e-7) and len(set(eager[0])) == 12  # (losses near 0)
    assert min(eager[0][1::2]) > 1  # the entropies: an untrained model's are large
    for k, v in eager[1].model.state_dict().items():
        torch.testing.assert_close(static[1].model.state_dict()[k], v, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", GRAPH_DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_rl_update_replayed_as_a_cuda_graph_takes_the_eager_steps(tmp_path, monkeypatch, dtype, device):
    cuda, lengths = [f"--device={device}", f"--dtype={dtype}"], (11, 21, 41, 48, 16, 30)
    eager = fused_rl_steps(tmp_path, "eager", lambda r: train.train_graph(r, False, entropy=True), cuda, lengths)
    captures = count_captures(monkeypatch, device)
    graph_step = train.step_function if device == "cuda" else train.train_graph  # (the CPU's default: no graph)
    graph = fused_rl_steps(tmp_path, "graph", lambda r: graph_step(r, entropy=True), cuda, lengths)
    assert len(captures) == 2  # step 0 eagerly, then a capture at 32 tokens and one at 47
    tol = 1e-4 if dtype == "float32" else 2e-2  # CUDA's attention backward may add in another order
    assert graph[0] == pytest.approx(eager[0], rel=tol, abs=1e-6)
    initial = fused_rl_steps(tmp_path, "initial", lambda r: None, cuda, lengths=())[1].model.state_dict()
    for k, v in eager[1].model.state_dict().items():
        eager_change, graph_change = v - initial[k], graph[1].model.state_dict()[k] - initial[k]
        assert (graph_change - eager_change).norm() <= tol * eager_change.norm() + 1e-7, k


@pytest.mark.parametrize("device", GRAPH_DEVICES)
def test_a_run_resumed_in_the_middle_of_the_graphed_sft_ends_near_the_uninterrupted_one(tmp_path, monkeypatch, device):
    # on CUDA a resume is exact only up to rounding: kernels that are not deterministic, and a graph whose
    # padded length restarts from the resumed run's own batches. The resumed run captures at once, with
    # AdamW's state from the checkpoint (a lost state would take other step sizes: far from the full run)
    captures = count_captures(monkeypatch, device)
    if device == "cpu":  # (the CPU's runs take the plain step: here every run takes the graph's, stand-in captured)
        monkeypatch.setattr(train, "step_function", lambda r, entropy=False: train.train_graph(r, entropy=entropy))
    steps = ["--sft_steps=8", "--rl_steps=0", f"--device={device}"]
    initial = weights(run(tmp_path, "--sft_steps=0", "--rl_steps=0", f"--device={device}", name="init"))
    full = weights(run(tmp_path, *steps))
    real = train.end_of_step
    monkeypatch.setattr(train, "end_of_step", lambda r, step: train.STOP.update(requested=step == 4) or real(r, step))
    part = run(tmp_path, *steps, name="part")  # stops after step 4, as after Ctrl-C
    monkeypatch.setattr(train, "end_of_step", real)
    train.STOP["requested"] = False
    assert torch.load(os.path.join(part, "ckpt.pt"), weights_only=True)["step"] == 4
    captures.clear()
    train.main([f"--out_dir={part}", "--init_from=resume"])
    assert len(captures) == 1  # at the resumed run's first step: AdamW's state came with the checkpoint
    for k, v in full.items():
        full_change, resumed_change = v - initial[k], weights(part)[k] - initial[k]
        assert (resumed_change - full_change).norm() <= 5e-2 * full_change.norm() + 1e-6, k


def test_compiled_training_takes_the_same_steps_as_eager(tmp_path):
    # --compile=true runs the same forward and backward through torch.compile (here the CPU's inductor)
    losses = {}
    for flag in ("false", "true"):
        out = run(tmp_path, "--rl_steps=2", f"--compile={flag}", name=flag)
        records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
        losses[flag] = [r["loss"] for r in records if r["phase"] in ("sft", "rl")]
    assert len(losses["true"]) == 6
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--cold_start=search", "--task=arithmetic"], "not a style of --task=arithmetic"),
    (["--numbers=6", "--block_size=64", "--max_new_tokens=40"], "longest cold-start trace needs --block_size >= "),
    (["--loss_type=mirror", "--tau=0"], "needs --tau > 0"),
    (["--prioritized=true", "--problem_pool=0"], "needs --problem_pool >= 1"),
])
def test_task_and_variant_settings_that_cannot_work_are_refused_before_sft(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        train.main(PAIRS_TINY + [f"--out_dir={tmp_path}", *args])
    assert not os.path.exists(tmp_path / "ckpt.pt")


def test_a_run_that_failed_before_its_first_step_does_not_block_the_next(tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(ValueError):
        train.main(TINY + [f"--out_dir={out}", "--cold_start=nope"])
    train.main(TINY + [f"--out_dir={out}"])  # the same out_dir, no --overwrite needed
    assert os.path.exists(os.path.join(out, "ckpt.pt"))


def test_held_out_problems_are_distinct():
    cfg = common.parse_config(train.TrainConfig, ["--eval_problems=200"])
    problems = train.held_out_problems(train.make_task(cfg), cfg)
    assert len(problems) == 200 and len({p.prompt for p in problems}) == 200


def test_the_docs_gpu_preset_command_runs_end_to_end_when_shrunk(tmp_path):
    """The preset's flags, read from docs/gpu.md (so that the documented command cannot rot), on a
    tiny model and a few steps: every flag exists, the task fits the block, SFT, RL and eval run."""
    doc = open(os.path.join(ROOT, "docs", "gpu.md")).read()
    block = doc.split("## A preset that needs a GPU")[1].split("```")[1]
    flags = block.replace("\\\n", " ").split()
    assert flags[:2] == ["python", "train.py"] and "--numbers=6" in flags
    shrink = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--sft_steps=2", "--sft_batch_size=4", "--rl_steps=1",
              "--prompts_per_step=2", "--samples_per_prompt=2", "--eval_problems=3", "--pass_k=2"]
    summary = train.main(flags[2:] + shrink + [f"--out_dir={tmp_path / 'preset'}"])
    assert summary["config"]["numbers"] == 6 and summary["config"]["quit_max"] == 0.3


# what each step draws, and from which split

def test_every_cold_start_trace_ends_with_end_of_text():
    cfg = common.parse_config(train.TrainConfig, TINY)
    tokenizer = common.get_tokenizer("char")
    _, targets, mask = train.sft_batch(train.make_task(cfg), tokenizer, random.Random(0), cfg, 48)
    last = mask.int().cumsum(1).argmax(1)  # (B,) each row's last completion position
    assert (targets[torch.arange(len(targets)), last] == tokenizer.eot_token).all()


def test_each_step_and_rank_draws_its_own_randomness():
    cfg = train.TrainConfig()
    draws = {train.step_rng(cfg, step, rank, what).random()
             for step in (0, 1) for rank in (0, 1) for what in ("sft", "rl")}
    assert len(draws) == 8 and train.step_rng(cfg, 1, 1, "rl").random() == train.step_rng(cfg, 1, 1, "rl").random()


class SplitSpy:
    """A task that records the split of every problem drawn."""
    def __init__(self, task):
        self.task, self.splits = task, []

    def sample(self, split, rng):
        self.splits.append(split)
        return self.task.sample(split, rng)

    def __getattr__(self, name):
        return getattr(self.task, name)


def test_training_draws_from_the_train_split_and_evaluation_from_the_test_split(tmp_path):
    cfg = common.parse_config(train.TrainConfig, TINY)
    task = SplitSpy(train.make_task(cfg))
    train.sft_batch(task, common.get_tokenizer("char"), random.Random(0), cfg, 48)
    _, fresh = train.choose_problems(SimpleNamespace(cfg=cfg, pool=[], task=task), random.Random(0))
    assert set(task.splits) == {"train"} and len(task.splits) == cfg.sft_batch_size + len(fresh)
    run_ = train.set_up(TINY + ["--prioritized=true", "--problem_pool=30", f"--out_dir={tmp_path}"])
    split = lambda p: tasks.split_of(p.info["split_key"])
    assert {split(p) for p in fresh + run_.pool} == {"train"} and {split(p) for p in run_.eval_problems} == {"test"}


def test_the_pool_success_rates_count_every_ranks_problems(monkeypatch):
    # this rank drew problem 1 (one sample of two right); the other rank drew problem 3 (both right)
    others = iter([torch.tensor([0.0, 0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 0.0, 1.0])])  # its sums, then counts
    monkeypatch.setattr(train, "all_sum", lambda value, device: value + next(others))
    run_ = SimpleNamespace(pool=[None] * 4, cfg=SimpleNamespace(prompts_per_step=1, samples_per_prompt=2), ddp=True,
                           device="cpu", success=torch.full((4,), 0.25))
    train.remember_success(run_, [1], torch.tensor([1.0, 0.0]))
    assert run_.success.tolist() == [0.25, 0.5, 0.25, 1.0]


@pytest.mark.parametrize("init", ["scratch", "gpt2"])
def test_the_model_takes_the_dropout_asked_for(tmp_path, init):
    if init == "gpt2":
        transformers = pytest.importorskip("transformers")
        config = transformers.GPT2Config(vocab_size=300, n_positions=32, n_embd=16, n_layer=1, n_head=2)
        transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
        init = str(tmp_path)
    cfg = common.parse_config(train.TrainConfig, [f"--init_from={init}", "--dropout=0.25", "--tokenizer=char"])
    model, _ = common.build_model(cfg, "cpu")
    assert model.config.dropout == 0.25 and model.transformer.drop.p == 0.25


# updates, skips, and what the summary says

def test_updates_per_batch_takes_that_many_steps_and_counts_every_skip(monkeypatch):
    model, optimizer, cfg = _tiny_policy(["--updates_per_batch=3", "--clip_eps=0.2"])
    flags = iter([1.0, 0.0, 1.0])  # the first and the last step not finite
    monkeypatch.setattr(train, "optimizer_step", lambda *a: torch.tensor(next(flags)))
    _, skipped = train.policy_update(_as_run(model, optimizer, cfg), *_random_batch(0, 2))
    assert skipped == 2 and next(flags, None) is None  # three steps taken


def test_the_summary_holds_the_after_sft_and_final_evaluations_times_and_skips(tmp_path, monkeypatch):
    real_weights, calls = train.sft_weights, []

    def first_step_not_finite(targets):  # its gradient is not finite: skipped
        calls.append(1)
        return real_weights(targets) * (float("nan") if len(calls) == 1 else 1.0)
    monkeypatch.setattr(train, "sft_weights", first_step_not_finite)
    out = run(tmp_path, "--eval_every=0")
    with open(os.path.join(out, "summary.json")) as f, open(os.path.join(out, "metrics.jsonl")) as log_file:
        summary, evals = json.load(f), [r for r in map(json.loads, log_file) if r["phase"] == "eval"]
    ckpt = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)
    evals = [{k: v for k, v in record.items() if k not in ("step", "phase")} for record in evals]
    assert summary["before"] == evals[0] and summary["after"] == evals[-1]  # (each with its own eval_time)
    assert summary["skipped_steps"] == ckpt["skipped"] == 1
    assert (summary["sft_time"], summary["rl_time"]) == (ckpt["sft_time"], ckpt["rl_time"])
    assert summary["sft_time"] != summary["rl_time"]


def test_evaluations_fall_every_eval_every_rl_steps_counted_from_the_end_of_sft():
    cfg = common.parse_config(train.TrainConfig, ["--sft_steps=7", "--rl_steps=20", "--eval_every=5"])
    assert [step for step in range(28) if train.eval_due(cfg, step)] == [12, 17, 22]  # (7: after SFT; 27: finish's)


# checkpoints: an interrupted SFT loses no record

def test_a_checkpoint_in_sft_logs_every_step_before_it(tmp_path, monkeypatch):
    real = train.end_of_step

    def ctrl_c_after_step_3(run_, step):  # as after Ctrl-C: a checkpoint, then stop; the log holds steps 0, 1, 2
        train.STOP["requested"] = step == 3
        return real(run_, step)
    monkeypatch.setattr(train, "end_of_step", ctrl_c_after_step_3)
    try:
        out = run(tmp_path, "--sft_steps=10")
    finally:
        train.STOP["requested"] = False
    assert [r["step"] for r in log_records(out) if r["phase"] == "sft"] == [0, 1, 2]


def test_a_cold_start_batch_may_fill_the_block_exactly():
    cfg = common.parse_config(train.TrainConfig, TINY)
    task, tokenizer = train.make_task(cfg), common.get_tokenizer("char")
    idx, _, _ = train.sft_batch(task, tokenizer, random.Random(0), cfg, 48)
    longest = idx.size(1) + 1  # (inputs and targets are the traces shifted by one)
    train.sft_batch(task, tokenizer, random.Random(0), cfg, longest)
    with pytest.raises(ValueError, match=f"a training trace of {longest} tokens exceeds"):
        train.sft_batch(task, tokenizer, random.Random(0), cfg, longest - 1)


# what a mutation run over train.py and common.py found untested: the step's kind, its fixed tensors' rows,
# DDP's scale, an overflowing norm, the checkpoint rule, a longer warm-up, the config's refusals

@pytest.mark.parametrize("device, options, ddp, graphed", [
    ("cuda", [], False, True), ("cuda:1", [], False, True), ("cpu", [], False, False),
    ("cuda", ["--cuda_graphs=false"], False, False), ("cuda", ["--compile=true"], False, False),
    ("cuda", [], True, False)])
def test_the_training_step_is_a_cuda_graph_only_on_cuda_with_cuda_graphs_and_without_ddp_or_compile(
        monkeypatch, device, options, ddp, graphed):
    monkeypatch.setattr(train, "train_graph", lambda run_, entropy=False: ("graph", entropy))
    run_ = SimpleNamespace(cfg=common.parse_config(train.TrainConfig, options), device=device, ddp=ddp)
    step = train.step_function(run_, entropy=True)
    if graphed:
        assert step == ("graph", True)
    else:
        assert (step.func, step.args, step.keywords) == (train.train_step, (run_,), {"entropy": True})


def test_the_static_step_takes_a_batch_of_another_number_of_rows(tmp_path):
    # (an RL batch has P·G rows, SFT's sft_batch_size): its fixed tensors are made anew, the plain step's losses
    losses = []
    for name, make in (("plain", lambda r: partial(train.train_step, r)),
                       ("static", lambda r: train.train_graph(r, capture=False))):
        run_ = train.set_up(TINY + [f"--out_dir={tmp_path / name}"])
        update = make(run_)
        for rows in (8, 4, 8):
            idx, targets = next(varied_sft_batches(lengths=(21,), rows=rows))
            losses.append(update(idx, targets, train.sft_weights(targets), 1e-3)[0].item())
    assert losses[3:] == pytest.approx(losses[:3], rel=1e-5)


def test_under_ddp_a_ranks_loss_is_scaled_by_the_world_size_over_all_ranks_normalisers(monkeypatch):
    # this rank's loss was divided by its normaliser 3, the other rank's by 5; DDP averages the two gradients:
    # × 3 · 2 / 8 makes the mean the sum of both ranks' terms over 8
    monkeypatch.setattr(train.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(train, "all_sum", lambda value, device: torch.tensor(value + 5.0))
    assert train.ddp_scale(SimpleNamespace(ddp=True, device="cpu"), {"normaliser": 3.0}) == pytest.approx(0.75)
    assert train.ddp_scale(SimpleNamespace(ddp=False), {"normaliser": 3.0}) == 1.0


def test_under_ddp_a_step_where_no_rank_has_a_trained_token_is_scaled_by_zero(monkeypatch):
    monkeypatch.setattr(train.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(train, "all_sum", lambda value, device: torch.tensor(float(value)))  # the other's: 0 too
    assert train.ddp_scale(SimpleNamespace(ddp=True, device="cpu"), {"normaliser": 0.0}) == 0.0


def test_a_gradient_whose_norm_overflows_to_inf_skips_the_step():
    # every gradient is finite (3e38 < float32's max) but their norm is not: clipping would scale them to 0
    # and AdamW would still decay the weights and count a step. Skipped, as for a NaN: nothing changes
    layer = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.1)
    before = [p.detach().clone() for p in layer.parameters()]
    loss = layer.weight.sum() * 3e38
    assert train.optimizer_step(layer, optimizer, loss, train.TrainConfig()).item() == 1
    assert all(torch.equal(p, b) for p, b in zip(layer.parameters(), before)) and not optimizer.state


def test_a_checkpoint_is_saved_every_ckpt_every_steps_and_with_zero_only_at_the_end(monkeypatch):
    saved = []
    monkeypatch.setattr(train, "checkpoint", lambda run_, step: saved.append(step))
    for every in (3, 0):
        run_ = SimpleNamespace(cfg=common.parse_config(train.TrainConfig, [f"--ckpt_every={every}"]), ddp=False,
                               master=True)
        assert not any(train.end_of_step(run_, step) for step in range(1, 8))  # no stop asked for
    assert saved == [3, 6]  # (0: finish saves the last step)


def test_under_ddp_every_rank_saves_and_stops_when_another_rank_was_interrupted(monkeypatch):
    saved = []
    monkeypatch.setattr(train, "checkpoint", lambda run_, step: saved.append(step))
    monkeypatch.setattr(train, "all_sum", lambda value, device: torch.tensor(value + 1.0))  # the other: Ctrl-C
    run_ = SimpleNamespace(cfg=common.parse_config(train.TrainConfig, ["--ckpt_every=0"]), ddp=True, master=True,
                           device="cpu", path=lambda name: name)
    assert train.end_of_step(run_, 5) and saved == [5]


def test_the_learning_rate_warms_up_by_a_warmup_steps_th_of_its_peak_per_step():
    cfg = common.parse_config(train.TrainConfig, ["--sft_steps=10", "--warmup_steps=4", "--sft_lr=1.0", "--rl_lr=0.1"])
    cosine = lambda step: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / 10))
    expected = {0: 0.25 * cosine(0), 1: 0.5 * cosine(1), 2: 0.75 * cosine(2), 3: cosine(3),
                10: 0.025, 11: 0.05, 12: 0.075, 13: 0.1, 14: 0.1}
    assert {step: train.learning_rate(cfg, step) for step in expected} == pytest.approx(expected)


NONNEGATIVE = ("sft_steps", "rl_steps", "eval_every", "ckpt_every", "threads", "sft_lr", "rl_lr", "weight_decay",
               "grad_clip", "dropout", "kl_coef", "clip_eps", "length_penalty")
AT_LEAST_ONE = ("warmup_steps", "updates_per_batch", "prompts_per_step", "samples_per_prompt", "pass_k",
                "max_new_tokens", "sft_batch_size", "eval_problems")


@pytest.mark.parametrize("key, text, low", [(k, "-1", 0) for k in NONNEGATIVE] + [(k, "0", 1) for k in AT_LEAST_ONE])
def test_every_count_rate_and_coefficient_below_its_least_value_is_refused_by_name(key, text, low):
    with pytest.raises(ValueError, match=f"--{key} must be >= {low}, got {text}"):
        train.check_config(common.parse_config(train.TrainConfig, [f"--{key}={text}"]))


def test_several_updates_per_batch_with_the_mirror_loss_need_no_clip():
    train.check_config(common.parse_config(train.TrainConfig, ["--updates_per_batch=2", "--loss_type=mirror"]))


def test_solved_pool_problems_are_still_drawn_at_the_floors_weight():
    run_ = SimpleNamespace(cfg=SimpleNamespace(prompts_per_step=4000), pool=list(range(4)),
                           success=torch.tensor([1.0, 1.0, 1.0, 0.0]))  # three solved, one never right
    chosen, _ = train.choose_problems(run_, random.Random(0))
    share = torch.bincount(torch.tensor(chosen), minlength=4).double() / len(chosen)
    torch.testing.assert_close(share, torch.tensor([0.05, 0.05, 0.05, 1.0], dtype=torch.float64) / 1.15, atol=0.01,
                               rtol=0)


def test_a_cold_start_that_always_quits_is_a_valid_quit_max():
    train.check_config(common.parse_config(train.TrainConfig, ["--quit_max=1"]))  # a probability: [0, 1]


def test_the_held_out_problems_are_drawn_from_the_runs_seed():
    def prompts(seed):
        cfg = common.parse_config(train.TrainConfig, [f"--seed={seed}", "--eval_problems=20"])
        return [p.prompt for p in train.held_out_problems(train.make_task(cfg), cfg)]
    assert prompts(1) == prompts(1) and prompts(1) != prompts(2)


def test_a_resumed_run_counts_on_from_the_skipped_steps_of_the_run_it_continues(tmp_path, monkeypatch):
    real_weights = train.sft_weights
    monkeypatch.setattr(train, "sft_weights", lambda *a, **k: real_weights(*a, **k) * float("nan"))
    out = run(tmp_path, "--rl_steps=0")  # its 4 SFT steps all skipped
    monkeypatch.setattr(train, "sft_weights", real_weights)
    summary = train.main([f"--out_dir={out}", "--init_from=resume", "--rl_steps=1"])  # one RL step, not skipped
    assert summary["skipped_steps"] == 4


def test_the_logged_rl_entropy_is_the_same_with_the_fused_update_as_without(tmp_path):
    entropies = {}
    for fused in ("true", "false"):
        out = run(tmp_path, "--rl_steps=1", f"--fused_update={fused}", name=fused)
        entropies[fused] = [r["entropy"] for r in log_records(out) if r["phase"] == "rl"]
    assert entropies["true"] == pytest.approx(entropies["false"], rel=1e-4) and entropies["true"][0] > 1


# -----------------------------------------------------------------------------
# process rewards (a variant: ablate.py --table=process)

AS_PAIRS = ["--task=pairs", "--block_size=96", "--max_new_tokens=60"]  # TINY on the pairs task


def test_step_rewards_are_off_by_default_and_none_is_added():
    cfg = common.parse_config(train.TrainConfig, [])
    assert cfg.honest_check_reward == cfg.confident_check_reward == 0.0
    assert train.step_rewards(cfg, tasks.PairsTask(), ["3+8=11✗ #### 3+8"], [None]) is None


def test_step_rewards_score_each_completion_against_its_own_problem():
    cfg = common.parse_config(train.TrainConfig, ["--samples_per_prompt=2", "--honest_check_reward=0.1"])
    task = tasks.PairsTask()
    problems = [tasks.Problem("3 8 1 6->14:", "14", {"numbers": [3, 8, 1, 6], "target": 14}),
                tasks.Problem("3 8 1 6->11:", "11", {"numbers": [3, 8, 1, 6], "target": 11})]
    texts = ["3+8=11✗ #### 3+8", "8+6=14✓ #### 8+6", "3+8=11✗ #### 3+8", "3+8=11✓ #### 3+8"]
    # 3+8=11✗ is honest for target 14, dishonest for 11; 3+8=11✓ is honest for 11
    torch.testing.assert_close(train.step_rewards(cfg, task, texts, problems), torch.tensor([0.1, 0.1, 0.0, 0.1]))


@pytest.mark.parametrize("flag", ["--honest_check_reward=0.1", "--confident_check_reward=0.1"])
def test_a_step_reward_is_added_to_the_rewards_and_logged(tmp_path, monkeypatch, flag):
    means = {}
    for bonus in (None, 0.5):
        monkeypatch.setattr(train, "step_rewards", lambda cfg, task, texts, problems:
                            None if bonus is None else torch.full((len(texts),), bonus))
        out = run(tmp_path, *AS_PAIRS, "--rl_steps=1", flag, name=f"step{bonus}")
        record = [r for r in log_records(out) if r["phase"] == "rl"][0]
        means[bonus] = record["reward_mean"]
        assert ("step_reward" in record) == (bonus is not None)
    assert means[0.5] == pytest.approx(means[None] + 0.5)


def test_step_rewards_run_end_to_end_on_the_pairs_task(tmp_path):
    out = run(tmp_path, *AS_PAIRS, "--honest_check_reward=0.1", "--confident_check_reward=0.1")
    rl = [r for r in log_records(out) if r["phase"] == "rl"]
    assert len(rl) == 3 and all(0 <= r["step_reward"] <= rewards.STEP_REWARD_CAP for r in rl)


@pytest.mark.parametrize("flag", ["--honest_check_reward=0.1", "--confident_check_reward=0.1"])
def test_step_rewards_on_a_task_without_checks_are_refused(tmp_path, flag):
    with pytest.raises(ValueError, match="count self-checks: --task=arithmetic writes none"):
        run(tmp_path, flag)


def test_a_negative_step_reward_is_refused():
    with pytest.raises(ValueError, match="--honest_check_reward must be >= 0"):
        train.check_config(common.parse_config(train.TrainConfig, ["--honest_check_reward=-0.1"]))


def test_every_evaluation_counts_repeated_attempts_checks_and_false_check_marks(tmp_path):
    out = run(tmp_path, *AS_PAIRS)
    final = [r for r in log_records(out) if r["phase"] == "eval"][-1]
    for key in ("repeated_attempts", "checks", "false_right_checks"):
        assert final[key] >= 0 and final[f"sample_{key}"] >= 0
