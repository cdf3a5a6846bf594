"""common.py: the tokenizers, the number checks, what a run's files may hold and the room checks here; the
parser, device checks and checkpoints also through the commands that use them (tests/test_train.py, ...)."""
import os
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import pytest
import torch

import common
import train
from common import check_numbers, get_tokenizer
from model import GPT, GPTConfig
from tasks import Problem


def test_char_tokenizer_round_trips_text_and_has_end_of_text():
    tok = get_tokenizer("char")
    text = "347+685=0+7+5=12 #### 1032\n"
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) == len(text)
    assert tok.eot_token == 256 and tok.n_vocab == 260  # 256 bytes, end-of-text, a merge, ✓, ✗


def test_char_tokenizer_writes_each_verdict_as_one_token():
    tok = get_tokenizer("char")
    text = "7+3+5+2=17✗,7+3+5-2=13✓ #### 7+3+5-2"
    tokens = tok.encode(text)
    assert len(tokens) == len(text) and tok.decode(tokens) == text  # one token per character
    assert tok.encode("✓") != tok.encode("✗") and len(tok.encode("✗✓")) == 2


def test_unknown_tokenizer_is_an_error():
    with pytest.raises(ValueError, match="unknown tokenizer 'bpe9'"):
        get_tokenizer("bpe9")


def test_gpt2_tokenizer_offline_is_a_clear_error(monkeypatch):
    import tiktoken

    def offline(name):
        raise ConnectionError("no network")
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(OSError, match="'gpt2' tokenizer needs its files"):
        get_tokenizer("gpt2")


@dataclass
class Flags:
    lr: float = 0.1
    steps: int = 1


@pytest.mark.parametrize("values, message", [({"lr": float("nan")}, "--lr must be a finite number"),
                                             ({"lr": float("inf")}, "--lr must be a finite number"),
                                             ({"lr": -0.1}, "--lr must be >= 0"),
                                             ({"steps": 0}, "--steps must be >= 1")])
def test_check_numbers_refuses_by_name_a_value_that_cannot_work(values, message):
    with pytest.raises(ValueError, match=message):
        check_numbers(Flags(**values), nonnegative=("lr",), at_least_one=("steps",))
    check_numbers(Flags(), nonnegative=("lr",), at_least_one=("steps",))  # the defaults pass


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_every_field_with_its_default_and_comment(flag, capsys):
    with pytest.raises(SystemExit) as done:
        train.main(["--rl_steps=3", flag])
    printed = capsys.readouterr().out
    assert done.value.code == 0
    assert "class TrainConfig" in printed and "rl_lr: float = 1e-4" in printed and "# optimizer steps of the cold start" in printed


# what a run's files may hold

def test_model_text_that_spells_a_special_token_stays_text():
    tokenizer = get_tokenizer("char")
    tokens = common.encode(tokenizer, "1+2=<|endoftext|>")
    assert tokenizer.eot_token not in tokens and common.decode(tokenizer, tokens) == "1+2=<|endoftext|>"


def test_a_saved_config_resumes_without_the_keys_this_version_no_longer_has():
    cfg = common.parse_config(train.TrainConfig, ["--rl_steps=9"], base={"rl_steps": 5, "sft_steps": 3, "gone": 1})
    assert (cfg.rl_steps, cfg.sft_steps) == (9, 3)


class Hostile:
    """Unpickling this runs code (it creates the file `mark`): a checkpoint is never loaded in a way that lets it."""
    def __init__(self, mark):
        self.mark = mark

    def __reduce__(self):
        return (open, (self.mark, "w"))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    mark, path = str(tmp_path / "it ran"), str(tmp_path / "ckpt.pt")
    torch.save({"model": Hostile(mark), "model_config": {}, "config": {}, "step": 0, "tokenizer": "char"}, path)
    with pytest.raises(ValueError, match="is not a train.py checkpoint"):
        common.load_checkpoint(path)
    assert not os.path.exists(mark)


def test_a_checkpoint_without_its_tokenizer_is_refused(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    torch.save({"model": {}, "model_config": {}, "config": {}, "step": 0}, path)
    with pytest.raises(ValueError, match="keys missing"):
        common.load_checkpoint(path)


def test_a_checkpoint_missing_a_weight_is_an_error_naming_it():
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    state = model.state_dict()
    del state["lm_head.weight"], state["transformer.wte.weight"]  # (tied: one tensor, two names)
    with pytest.raises(RuntimeError, match="Missing key.*wte.weight"):
        common.model_from_checkpoint({"model": state, "model_config": asdict(model.config)}, "cpu")


def test_an_out_dir_with_only_an_empty_log_is_free_for_a_fresh_run(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")  # what a run that failed before its first step leaves
    common.check_out_dir(common.parse_config(train.TrainConfig, [f"--out_dir={tmp_path}"]), None)
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n')
    with pytest.raises(ValueError, match="already holds a run"):
        common.check_out_dir(common.parse_config(train.TrainConfig, [f"--out_dir={tmp_path}"]), None)


# room for the completions: exact fits pass, one token more does not

def room_task(train_prompt, trace=None):
    """A task with one training problem and, if given, a longest cold-start trace."""
    task = SimpleNamespace(splits={"train": [Problem(train_prompt, "", {})]})
    if trace is not None:
        task.longest_trace = lambda: trace
    return task


def check_room(task, max_new_tokens, block_size, eval_prompt="ab"):
    cfg = common.parse_config(train.TrainConfig, [f"--max_new_tokens={max_new_tokens}"])
    common.check_completion_room(task, get_tokenizer("char"), [Problem(eval_prompt, "", {})], cfg, block_size)


def test_completion_room_counts_the_training_prompts_too():
    check_room(room_task("abcdefghij"), max_new_tokens=20, block_size=30)  # exactly full
    with pytest.raises(ValueError, match="the longest prompt has 10 tokens"):
        check_room(room_task("abcdefghij"), max_new_tokens=21, block_size=30)


def test_the_longest_cold_start_trace_needs_room_for_its_end_of_text():
    check_room(room_task("abc", trace="x" * 10), max_new_tokens=1, block_size=14)  # 3 + 10 + end-of-text
    with pytest.raises(ValueError, match="needs --block_size >= 14"):
        check_room(room_task("abc", trace="x" * 10), max_new_tokens=1, block_size=13)


# the parser's conversions, and the device a name picks

@pytest.mark.parametrize("text, value", [("true", True), ("True", True), ("YES", True), ("on", True), ("1", True),
                                         ("false", False), ("FALSE", False), ("no", False), ("Off", False),
                                         ("0", False)])
def test_a_bool_flag_takes_true_false_yes_no_on_off_or_1_0_in_any_case(text, value):
    assert common.parse_config(train.TrainConfig, [f"--compile={text}"]).compile is value


def test_a_flag_value_may_hold_an_equals_sign():
    cfg = common.parse_config(train.TrainConfig, ["--data_path=runs/lr=3.jsonl"])
    assert cfg.data_path == "runs/lr=3.jsonl"


def test_a_flag_without_a_value_is_refused_as_not_key_value():
    with pytest.raises(ValueError, match="arguments look like --key=value, got '--compile'"):
        common.parse_config(train.TrainConfig, ["--compile"])


@pytest.mark.parametrize("available", [True, False])
def test_auto_picks_cuda_where_there_is_a_gpu_else_the_cpu(monkeypatch, available):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert common.pick_device("auto") == ("cuda" if available else "cpu")


def test_a_gpu_index_past_the_machines_last_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one GPU: cuda:0 only
    with pytest.raises(ValueError, match=r"--device=cuda:1, but there are 1 CUDA GPUs"):
        common.pick_device("cuda:1")


def test_a_count_flag_refuses_a_fraction_rather_than_rounding_it():
    with pytest.raises(ValueError, match="--rl_steps expects a int, got '3.5'"):
        common.parse_config(train.TrainConfig, ["--rl_steps=3.5"])
    assert common.parse_config(train.TrainConfig, ["--rl_lr=3"]).rl_lr == 3.0  # (a float flag takes a whole number)
