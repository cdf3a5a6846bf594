#!/usr/bin/env bash
# Every GPU measurement of docs/gpu.md in one go, about 7-8 minutes on one H100 or H200 (torch >= 2.11, transformers,
# no network needed). Each table goes to its own file in $OUT, and summary.txt lists each command's
# exit code and seconds. Every command has its own timeout, and none may run past BUDGET seconds
# from the start (default 480), so one hang costs only its own slot. Most important first. Every table also goes
# into $OUT/gpu_check.tgz (one file to copy back from a remote machine); SKIP="name ..." leaves those out.
#
#     OUT=/path/to/folder bash docs/gpu_check.sh
#
# Liger-Kernel's fused linear cross-entropy, a peer row of `bench.py logprobs` (optional): the GPU machine has no
# network, so first download its wheel where there is one, `pip download 'liger-kernel>=0.8.5' --no-deps -d wheels`
# (0.8.5 or later: older ones have no per-token backward for reduction="none")
# (wheels/ is gitignored), and carry wheels/ to the GPU machine; this script unpacks that pure-Python wheel onto
# PYTHONPATH, no pip needed (torch and triton, its dependencies, come with a CUDA build of torch).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
PY=${PYTHON:-python3}  # (some machines have python3 and no python)
BUDGET=${BUDGET:-480}
export PYTHONPATH=.  # the docs/ scripts import the repository's modules
mkdir -p "$OUT"

run() {  # run NAME SECONDS COMMAND...: its output in $OUT/NAME.md, a line in $OUT/summary.txt
    local name=$1 secs=$2 start=$SECONDS
    shift 2
    (( secs > BUDGET - SECONDS )) && secs=$((BUDGET - SECONDS))
    if [[ " ${SKIP:-} " == *" $name "* ]]; then  # SKIP="name ...": a rerun measures only what it lacks
        echo "$name: skipped (SKIP)" | tee -a "$OUT/summary.txt"
        return
    fi
    if (( secs < 10 )); then
        echo "$name: skipped, the $BUDGET s budget is spent" | tee -a "$OUT/summary.txt"
        return
    fi
    # SIGINT at the time limit, as Ctrl-C: pytest still prints its summary, Python its traceback (where it hung);
    # -k: a process that ignores it is killed 10 s later
    timeout -s INT -k 10 "$secs" "$@" > "$OUT/$name.md" 2>&1
    echo "$name: exit $? (124 = timed out after $secs s, 137 = killed 10 s later), $((SECONDS - start)) s" \
        | tee -a "$OUT/summary.txt"
}

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
run versions 30 $PY -c "import torch, transformers; print(torch.__version__, torch.version.cuda, transformers.__version__, torch.cuda.get_device_name(), 'cudnn', torch.backends.cudnn.version(), 'cudnn sdpa', torch.backends.cuda.cudnn_sdp_enabled())"
WHEEL=$(ls -v wheels/liger_kernel-*.whl 2> /dev/null | tail -1)  # the newest (by version), if there are several
if [ -n "$WHEEL" ]; then
    LIGER=$(mktemp -d)
    run liger_unpack 30 $PY -m zipfile -e "$WHEEL" "$LIGER"
    export PYTHONPATH=".:$LIGER"
    run liger_version 30 $PY -c "import importlib.metadata as m, liger_kernel; print(m.version('liger-kernel'))"
fi

# 1. correctness first: on CUDA the fast path (CUDA graph) gives the plain loop's tokens
run fast_equals_eager 90 $PY - <<'EOF'
import torch
from model import GPT, GPTConfig
from sample import generate
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=50, block_size=48, n_layer=2, n_head=2, n_embd=32)).cuda()
with torch.no_grad():  # sharp, and the blocks as strong as the embedding: greedy paths depend on the context
    for name, p in model.named_parameters():
        if p.dim() == 2 and "wpe" not in name:
            p.mul_(20.0)
g = torch.Generator().manual_seed(3)
prompts = [torch.randint(0, 50, (n,), generator=g).tolist() for n in (1, 7, 3, 12, 5, 9, 2, 4)] * 4
contexts = [("float32", torch.autocast("cuda", enabled=False)), ("bf16 autocast", torch.autocast("cuda", dtype=torch.bfloat16))]
for name, ctx in contexts:
    with ctx:
        firsts = [c[0] for c in generate(model, prompts, 1, temperature=0, fast=False)]
        stop = max(set(firsts), key=firsts.count)  # some rows stop at once, others later
        fast, plain = (generate(model, prompts, 30, temperature=0, stop_tokens=(stop,), fast=f) for f in (True, False))
        same = sum(a == b for a, b in zip(fast, plain))  # (bf16: a near-tie may go either way)
        print(f"{name}, greedy: {same}/{len(prompts)} completions identical; lengths {sorted({len(c) for c in plain})}")
with torch.no_grad():  # flatter: sampled rows stop at many different steps
    for name, p in model.named_parameters():
        if p.dim() == 2 and "wpe" not in name:
            p.mul_(3 / 20)
for name, ctx in contexts:
    with ctx:
        draw = lambda f: generate(model, prompts, 30, generator=torch.Generator("cuda").manual_seed(1),
                                  stop_tokens=range(0, 50, 4), fast=f)
        fast, plain = draw(True), draw(False)
        same = sum(a == b for a, b in zip(fast, plain))
        print(f"{name}, sampled with one seed: {same}/{len(prompts)} completions identical, lengths "
              f"{sorted({len(c) for c in plain})}")
EOF

# the tests that only CUDA runs (the SFT and fused RL steps replayed as a CUDA graph equal the eager ones, also
# across a re-capture; a run resumed inside the graphed SFT ends near the uninterrupted one; a kept decode graph
# reads the current weights) and the smoke run
run cuda_tests 120 $PY -m pytest -q tests -k "(cuda or graph or smoke) and not cpu" --durations=10

# 2. the default run, whole (target: at most 30 s), then where an RL step's time goes on its checkpoint
RUN=$(mktemp -d)
run train_default 120 $PY train.py --out_dir="$RUN"
cp "$RUN/summary.json" "$RUN/metrics.jsonl" "$OUT/" 2>/dev/null
run rl_trained 60 $PY bench.py rl --ckpt="$RUN/ckpt.pt" --steps=5
# the same with the plain (unfused, eager) RL update, for the before/after of the RL update's CUDA graph
run rl_trained_plain 60 $PY bench.py rl --ckpt="$RUN/ckpt.pt" --steps=5 --fused_update=false
# the fused update without its graph (and decoding without the fast path): what the graph alone gives
run rl_trained_fused_eager 60 $PY bench.py rl --ckpt="$RUN/ckpt.pt" --steps=5 --cuda_graphs=false
# the same without cuDNN's attention (docs/gpu.md: at 6a817a1 sampling took 2,031 ms per step in the row above, 68x
# the graph's; the guess to test: a cuDNN attention plan is built for every new (rows, keys) shape of the plain loop)
run rl_trained_fused_eager_no_cudnn 60 $PY -c "import sys, runpy, torch
torch.backends.cuda.enable_cudnn_sdp(False)
sys.argv = ['bench.py', 'rl', '--ckpt=$RUN/ckpt.pt', '--steps=5', '--cuda_graphs=false']
runpy.run_path('bench.py', run_name='__main__')"

# 3. the training step: SFT steps/s eager vs one CUDA graph per step (train.py's CUDA default) vs
# torch.compile (capture and compile times in the warm-up column)
run sft_eager_graph_compiled 150 $PY bench.py sft --steps=200 --warmup=10 --variants=eager,graph,compiled

# 4. decoding: every bench.py sample size (fast, plain
# loop, no-cache loop, Hugging Face)
# float32 weights under bf16 autocast (train.py's CUDA default): the decode graph reads bf16 copies of the
# Linears (first), then the other sizes
run sample_gpt2_small_B1_autocast 90 $PY bench.py sample --gpt2_small=true --batch_size=1 --dtype=autocast
run sample_gpt2_small_B1 90 $PY bench.py sample --gpt2_small=true --batch_size=1
run sample_default 60 $PY bench.py sample
run sample_rl_size 60 $PY bench.py sample --n_embd=128 --vocab_size=257 --batch_size=128
run sample_gpt2_small_B64 120 $PY bench.py sample --gpt2_small=true --batch_size=64 --repeats=2

# 5. fused log-probs at N=16384 (F.linear_cross_entropy rows only where torch has it, >= 2.13; Liger-Kernel's row
# where it was installed above)
run logprobs_N16384 120 $PY bench.py logprobs --N=16384 --chunks=0,2048 --repeats=3  # (0: the default, 1024 rows)

# 6. where the time goes: a GPT-2-small decode step (B=1) and an SFT step of the default run
run decode_breakdown 100 $PY docs/decode_breakdown.py
run decode_breakdown_rl_size 60 $PY docs/decode_breakdown.py --rl_size  # (about the RL size)
run sft_breakdown 60 $PY docs/sft_breakdown.py
run attention_variants 60 $PY docs/attention_variants.py  # the static step's attention: SDPA vs written out

# 7. the GPU preset (docs/gpu.md, "A preset that needs a GPU"): about 3 minutes more, which the default budget does not
# leave after the rest: PRESET=1 with BUDGET=720 where the machine may be held that long; else run docs/gpu.md's
# preset command on its own
if [ "${PRESET:-0}" = 1 ]; then
    run preset 300 $PY train.py --numbers=6 --max_number=20 --quit_max=0.3 --n_layer=6 --n_head=6 --n_embd=384 \
        --block_size=192 --max_new_tokens=168 --sft_steps=2000 --sft_batch_size=128 --sft_lr=1e-3 \
        --prompts_per_step=32 --rl_steps=150 --rl_lr=3e-5 --eval_every=15 --out_dir="$RUN-preset"
fi

echo "done: tables in $OUT" | tee -a "$OUT/summary.txt"
# all of them in one archive too (one file to copy back)
tar czf "$OUT/../gpu_check.tgz" --exclude=gpu_check.tgz -C "$OUT" . && mv "$OUT/../gpu_check.tgz" "$OUT/"
