"""
What the commands here share, and the run-file helpers train.py's bookkeeping calls, kept out of the
method's files: the --key=value parser and its number checks, the tokenizers, the device and its
autocast, the torchrun processes and CUDA graphs (the decode step's and the training step's), and a
run's files (an out_dir never overwritten by accident, room for the completions checked before SFT,
the metrics log, checkpoints saved atomically and loaded without running code) with the model a run
starts from. It sits below the method's files, so that nothing imports the trainer to parse a flag
or read a checkpoint.

    python -m pytest -q tests/test_common.py
"""
import inspect
import json
import math
import os
import random
from contextlib import nullcontext
from dataclasses import asdict, fields
from datetime import timedelta

import tiktoken
import torch
import torch.distributed as dist

from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
# the command line: --key=value into a config dataclass

def _parse_value(text, typ, key):
    if typ is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--{key} expects true or false, got {text!r}")
    try:
        return typ(text)
    except ValueError:
        raise ValueError(f"--{key} expects a {typ.__name__}, got {text!r}") from None

def parse_config(cls, argv, base=None):
    """`--key=value` arguments -> a `cls` dataclass; each value is parsed with the type of the
    field's default, unknown keys are refused by name. base: field values to start from (the
    saved config when resuming). -h or --help prints the dataclass itself (each field, its default and
    what it does, as written in the source) and exits."""
    if {"-h", "--help"} & set(argv):
        print(f"every field below is a --key=value flag\n\n{inspect.getsource(cls)}")
        raise SystemExit(0)
    types = {f.name: type(f.default) for f in fields(cls)}
    values = {k: v for k, v in (base or {}).items() if k in types}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"arguments look like --key=value, got {arg!r}")
        key, text = arg[2:].split("=", 1)
        if key not in types:
            raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(types)}")
        values[key] = _parse_value(text, types[key], key)
    return cls(**values)

def check_numbers(cfg, nonnegative=(), at_least_one=()):
    """Refuse, by name, a number that cannot work: inf or nan in any field (they parse as floats and
    would show only later, as NaN weights), a negative value among `nonnegative`, a count below 1 among
    `at_least_one`."""
    for key, value in asdict(cfg).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{key} must be a finite number, got {value}")
    for keys, low in ((nonnegative, 0), (at_least_one, 1)):
        for key in keys:
            if getattr(cfg, key) < low:
                raise ValueError(f"--{key} must be >= {low}, got {getattr(cfg, key)}")

# -----------------------------------------------------------------------------
# tokenizers: text <-> token ids (both are tiktoken encodings)

def get_tokenizer(name):
    """"char": 256 byte tokens, <|endoftext|> (256), a merge (257) and the verdicts ✓, ✗ (258, 259), built
    in code (works offline; the built-in tasks are short strings of digits and symbols). "gpt2":
    GPT-2's BPE (tiktoken fetches its files once, so it needs network or a filled TIKTOKEN_CACHE_DIR)."""
    if name == "char":
        ranks = {bytes([i]): i for i in range(256)}
        # ✓ and ✗ are 3 UTF-8 bytes, E2 9C 93 / E2 9C 97: two merges make each one token
        ranks.update({b"\xe2\x9c": 257, "✓".encode(): 258, "✗".encode(): 259})
        return tiktoken.Encoding(
            name="char",
            pat_str=r"[\s\S]",  # every character is its own piece: only ✓ and ✗ have merges
            mergeable_ranks=ranks,
            special_tokens={"<|endoftext|>": 256},
        )
    if name == "gpt2":
        try:
            return tiktoken.get_encoding("gpt2")
        except Exception as e:  # offline: a requests/connection error from deep inside tiktoken
            raise OSError("the 'gpt2' tokenizer needs its files: connect to the network once, or point "
                          f"TIKTOKEN_CACHE_DIR at a cache that has them ({type(e).__name__})") from e
    raise ValueError(f"unknown tokenizer {name!r}: choose 'char' or 'gpt2'")

def encode(tokenizer, text):
    return tokenizer.encode(text, disallowed_special=())  # model text never becomes a special token

def decode(tokenizer, tokens):
    return tokenizer.decode([t for t in tokens if t != tokenizer.eot_token])  # without end-of-text

# -----------------------------------------------------------------------------
# devices, processes and CUDA graphs

def pick_device(name):
    """"auto" -> cuda if available, else cpu. Any other name is checked here, before any work, so
    that a typo or a GPU this machine does not have is one clear error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device={name} is not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device={name}, but torch {torch.__version__} sees no CUDA GPU here: use --device=cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device={name}, but there are {torch.cuda.device_count()} CUDA GPUs (cuda:0, ...)")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # the current GPU: where CUDA calls that name no device go (streams, RNG)
    return name

def init_processes(cfg):
    """-> (ddp, rank, device). Under torchrun every rank runs this same script: one process
    group (nccl on CUDA, gloo on CPU), one GPU per rank."""
    if "RANK" not in os.environ:
        return False, 0, pick_device(cfg.device)
    use_cuda = torch.cuda.is_available() and cfg.device != "cpu"
    ranks, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])), torch.cuda.device_count()
    if use_cuda and ranks > gpus:  # rank `gpus` would find no device of its own
        raise ValueError(f"torchrun started {ranks} processes on this machine but it has {gpus} GPU(s): "
                         f"use --nproc_per_node={gpus}, or --device=cpu to run every process on the CPU")
    # rank 0 evaluates and checkpoints alone while the others wait in a collective: give it an hour, not nccl's 10 min
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(hours=1))
    device = f"cuda:{int(os.environ['LOCAL_RANK'])}" if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(device)
    return True, dist.get_rank(), device

def all_sum(value, device):
    """Σ over the DDP ranks of a number or a CPU tensor -> a CPU tensor (on the device: nccl sums only CUDA ones)."""
    total = torch.as_tensor(value, dtype=torch.float32).to(device, copy=True)  # (the caller's stays as it was)
    dist.all_reduce(total)
    return total.cpu()

def autocast_context(dtype, device_type):
    """-> (dtype name, context): bfloat16 autocast on CUDA by default, a no-op in float32."""
    dtype = dtype if dtype != "auto" else ("bfloat16" if device_type == "cuda" else "float32")
    return dtype, nullcontext() if dtype == "float32" else torch.autocast(device_type, dtype=torch.bfloat16)

def to_device(tensor, device):
    """A CPU batch -> the device without making the host wait for the GPU (pinned memory: a queued copy)."""
    cpu_to_gpu = tensor.device.type == "cpu" and "cuda" in str(device)
    return tensor.pin_memory().to(device, non_blocking=True) if cpu_to_gpu else tensor.to(device)

def cuda_graph(fn, state):
    """Capture fn() (which reads and writes only tensors that stay alive) as a CUDA graph; return a
    function that replays it and returns fn's outputs, overwritten by the next replay. The decode step
    (sample.py) and the training step (train.py) use it: hundreds of small kernels launched as one.
    `state`: the tensors fn changes in place, put back after the warm-up run, so that the first replay
    makes the step the warm-up made. Under autocast the casts of the weights are captured too (no cast
    cached before the capture is reused): a kept graph must read the weights as they are then."""
    saved = [t.detach().clone() for t in state]
    amp = torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), enabled=torch.is_autocast_enabled("cuda"),
                         cache_enabled=False)
    with torch.cuda.device(state[0].device):  # the state's GPU (streams and capture), not only the current one
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), amp:  # warm up (cuBLAS handles, the allocator) off the capture
            fn()
            with torch.no_grad():  # (the state may be parameters)
                for t, s in zip(state, saved):
                    t.copy_(s)
        torch.cuda.current_stream().wait_stream(stream)
        torch.clear_autocast_cache()  # (fn may re-enable the cache, as train_step does: a cast made before is stale)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), amp:  # records the kernels without running them
            out = fn()
    return lambda: (graph.replay(), out)[1]

# -----------------------------------------------------------------------------
# a run's files (a crash or a hostile file never costs a run), its set-up checks, the model it starts from

def check_out_dir(cfg, ckpt):
    """Never lose a run by accident: a fresh run refuses an out_dir that holds one (unless told to
    overwrite it); a resumed run (ckpt) may not end before the step its checkpoint has reached (it would
    save under a smaller step), nor change sft_steps (where SFT ends and its learning-rate schedule: RL
    steps would be skipped or renumbered, SFT steps would follow RL's, the steps done had another lr)."""
    out_dir, overwrite, total_steps = cfg.out_dir, cfg.overwrite, cfg.sft_steps + cfg.rl_steps
    if ckpt is not None and total_steps < ckpt["step"]:
        raise ValueError(f"--init_from=resume: the checkpoint in {out_dir} has done {ckpt['step']} steps, "
                         f"more than sft_steps + rl_steps = {total_steps}; ask for at least {ckpt['step']}")
    if ckpt is not None and ckpt["config"]["sft_steps"] != cfg.sft_steps:
        raise ValueError(f"--init_from=resume: the run in {out_dir} has sft_steps={ckpt['config']['sft_steps']}, "
                         f"which a resume cannot change (--sft_steps={cfg.sft_steps}); extend it with --rl_steps")
    paths = [os.path.join(out_dir, f) for f in ("ckpt.pt", "metrics.jsonl")]
    # an empty log is what a run that failed before its first step leaves: nothing to lose
    found = [os.path.basename(p) for p in paths if os.path.exists(p) and os.path.getsize(p) > 0]
    if ckpt is None and not overwrite and found:
        raise ValueError(f"{out_dir} already holds a run ({', '.join(found)}): continue it with "
                         "--init_from=resume, replace it with --overwrite=true, or choose another --out_dir")

def check_completion_room(task, tokenizer, problems, cfg, block_size):
    """Refuse now, not after SFT, a max_new_tokens that the longest prompt leaves no room for (over the
    given problems and the training ones: all, as for GSM8K, or a sample of 256)."""
    train = getattr(task, "splits", {}).get("train") or [
        task.sample("train", random.Random(f"{cfg.seed}/lengths/{i}")) for i in range(256)]
    longest = max(len(encode(tokenizer, p.prompt)) for p in problems + train)
    if longest + cfg.max_new_tokens > block_size:
        raise ValueError(f"--max_new_tokens={cfg.max_new_tokens} does not fit: the longest prompt has {longest} "
                         f"tokens and the model's block_size is {block_size}, so at most {block_size - longest}")
    if hasattr(task, "longest_trace"):  # a rare long cold-start trace must not stop SFT halfway (resume included)
        need = longest + len(encode(tokenizer, task.longest_trace())) + 1  # + end-of-text
        if need > block_size:
            raise ValueError(f"the task's longest cold-start trace needs --block_size >= {need} (it is {block_size})")

def start_metrics_log(out_dir, start, fresh, eval_at_start):
    """out_dir/metrics.jsonl (one JSON record per line) for a run that starts at step `start`: empty for a
    fresh run; a resumed one keeps what came before its restart point, and (eval_at_start: the run evaluates
    there, after SFT or every eval_every steps) the first eval made there. Not a finished run's last eval:
    the resumed run makes it again, at its own end. So the log reads as an uninterrupted run's. An old
    summary.json goes: it described the run being replaced or extended, and is written anew at its end.
    A fresh run (over one it replaces: --overwrite) removes the old ckpt.pt too, which a crash before its
    first save would otherwise leave behind to be resumed under the new run's log."""
    path = os.path.join(out_dir, "metrics.jsonl")
    for old in ["summary.json"] + (["ckpt.pt"] if fresh else []):
        if os.path.exists(os.path.join(out_dir, old)):
            os.remove(os.path.join(out_dir, old))
    records = read_log(path) if not fresh and os.path.exists(path) else []  # (a resume may start at step 0)
    evals_at_start = [r for r in records if r["step"] == start and r["phase"] == "eval"]
    kept = [r for r in records if r["step"] < start] + (evals_at_start[:1] if eval_at_start else [])
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)

def read_log(path):
    """metrics.jsonl -> its records; a damaged line (a crash mid-write) is one error naming file and line."""
    records = []
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            try:
                records.append(json.loads(line))
            except ValueError:
                raise ValueError(f"{path}:{lineno} is not a JSON record") from None
    return records

def append_record(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")

def save_checkpoint(path, model, optimizer, cfg, step, extra):
    """Atomic: write a temp file, then rename over the old one (a crash leaves one or the other)."""
    device = model.lm_head.weight.device  # (on CUDA, dropout draws from the GPU's generator)
    ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": asdict(cfg),
            "model_config": asdict(model.config), "step": step, "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None, **extra}
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename, or a power cut could leave an empty ckpt.pt
    except (OSError, RuntimeError) as e:  # a full disk surfaces as either (torch's zip writer: "unexpected pos")
        if os.path.exists(tmp):
            os.remove(tmp)
        raise OSError(f"could not save the checkpoint {path} ({e}); is the disk full? "
                      "The previous checkpoint, if any, is intact") from e
    os.replace(tmp, path)

def restore_training_state(ckpt, optimizer, device):
    """A checkpoint's optimizer state and random generators, into this process. The optimizer keeps its own
    kernel (fused AdamW on CUDA, not on the CPU), so a run saved on one device resumes on another."""
    kernel = {k: optimizer.defaults[k] for k in ("fused", "foreach", "capturable")}
    optimizer.load_state_dict({**ckpt["optimizer"], "param_groups": [  # (the saved groups name the saving kernel)
        {**group, **kernel} for group in ckpt["optimizer"]["param_groups"]]})
    torch.set_rng_state(ckpt["torch_rng"])
    if "cuda" in str(device) and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ckpt["cuda_rng"], device)

def load_checkpoint(path, map_location="cpu"):
    """A train.py checkpoint dict, or one ValueError naming the file. weights_only: loading never
    runs code from the file, so a corrupt or hostile file can only fail, never act."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path} not found (train.py writes <out_dir>/ckpt.pt)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # cut short, empty or random bytes: zip, pickle and EOF errors. torch's own
        # message can advise weights_only=False, which would run the file's code: never pass it on
        raise ValueError(f"{path} is not a train.py checkpoint, or is corrupt ({type(e).__name__})") from None
    if not (isinstance(ckpt, dict) and {"model", "model_config", "config", "step", "tokenizer"} <= ckpt.keys()):
        raise ValueError(f"{path} is not a train.py checkpoint, or is corrupt (keys missing)")
    return ckpt

def model_from_checkpoint(ckpt, device):
    """The GPT saved in a train.py checkpoint dict."""
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device)

def load_model(path, device):
    """Rebuild the model and tokenizer from a train.py checkpoint."""
    ckpt = load_checkpoint(path, map_location=device)
    return model_from_checkpoint(ckpt, device), get_tokenizer(ckpt["tokenizer"])

def build_model(cfg, device, ckpt=None):
    """-> (model, tokenizer name): from a checkpoint (resume), from scratch, or from GPT-2 weights."""
    if ckpt is not None:
        return model_from_checkpoint(ckpt, device), ckpt["tokenizer"]
    if cfg.init_from == "scratch":
        tokenizer_name = "char" if cfg.tokenizer == "auto" else cfg.tokenizer
        vocab_size = get_tokenizer(tokenizer_name).n_vocab
        model = GPT(GPTConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                              n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=False))
    else:  # pretrained GPT-2: a hub name or a local Hugging Face directory
        tokenizer_name = "gpt2" if cfg.tokenizer == "auto" else cfg.tokenizer
        model = GPT.from_pretrained(cfg.init_from, dropout=cfg.dropout)
        if get_tokenizer(tokenizer_name).n_vocab > model.config.vocab_size:
            raise ValueError(f"tokenizer {tokenizer_name!r} has more tokens than the model's vocab_size")
    return model.to(device), tokenizer_name
