"""common.py: the tokenizers and the number checks here; the parser, device checks, run files and
checkpoints are tested through the commands that use them (tests/test_train.py, test_sample.py)."""
from dataclasses import dataclass

import pytest

import train
from common import check_numbers, get_tokenizer


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
    with pytest.raises(RuntimeError, match="'gpt2' tokenizer needs its files"):
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
