#!/usr/bin/env bash
# One check of an offline GPU machine, from a copy of this repository with wheels/ in it, in at most 7 minutes;
# every figure is printed as soon as it exists, and one table ends it.
#
#   bash bench/gpu_wheels.sh      # first, where PyPI is reachable: fills ./wheels (git-ignored; copy it along)
#   bash bench/gpu_check.sh       # on the GPU machine, in the repository's root
#   WHEELS=/path/to/wheels PYTHON=python3 bash bench/gpu_check.sh
#   STAGES="gpu_tests train_check" bash bench/gpu_check.sh   # only these stages
#
# Stages, each under its own time limit (seconds), so the table always comes:
#   compile_preflight  45  torch.compile builds and runs a kernel (a C compiler and Python's headers are there)
#   gpu_tests         110  the tests marked gpu (none may be skipped): bf16 compiled step, CUDA sampling = CPU,
#                          HellaSwag CUDA = CPU (fp32; bf16 where its error cannot flip a decision), no host
#                          sync per micro-batch, FSDP on one GPU (clipping, groups, sampling, HellaSwag)
#   hellaswag          45  bench/hellaswag_eval.py: all 10,042 (synthetic) examples in bf16
#   train_check       130  bench/gpu_train_check.py: 150 steps of GPT-2 124M (64 x 1024 tokens) through the
#                          real recipe, compiled; the loss falls, nothing recompiles after warm-up
#   throughput         90  bench/train_throughput.py: GPT-2 124M, B=64 (the train check's graphs, cached), bare
#                          loop vs Lightning: ms/step, tokens/s, MFU, peak memory (each side printed when done)
# Where $OUT is set (the device tool), each stage's log is written there too.
set -uo pipefail
cd "$(dirname "$0")/.."

# No GPU, no check: say so at once (before anything slow is imported).
if [ "${CUDA_VISIBLE_DEVICES-unset}" = "" ] || [ "${CUDA_VISIBLE_DEVICES-unset}" = "-1" ] \
    || ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "error: no CUDA device is visible here (nvidia-smi lists none, or CUDA_VISIBLE_DEVICES hides them):" \
        "bench/gpu_check.sh needs an NVIDIA GPU" >&2
    exit 1
fi

PYTHON="${PYTHON:-python3}"
WHEELS="${WHEELS:-wheels}"
SITE="${SITE:-${TMPDIR:-/tmp}/lit-gpt-mini-site}"
LOGS="${OUT:-$(mktemp -d)}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 LIT_GPT_MINI_REQUIRE_GPU=1
start=$(date +%s)

# GPT-2's vocabulary and Tiny Shakespeare offline: the tests read them from ../shared/data, or from wheels/ where
# gpu_wheels.sh copied them (tiktoken would otherwise try to download the vocabulary).
if [ -z "${LIT_GPT_MINI_SHARED_DATA:-}" ] && [ ! -f ../shared/data/tinyshakespeare.txt ] && [ -f "$WHEELS/tinyshakespeare.txt" ]; then
    export LIT_GPT_MINI_SHARED_DATA="$(cd "$WHEELS" && pwd)"
fi
if [ -z "${TIKTOKEN_CACHE_DIR:-}" ]; then
    for cache in "$WHEELS/tiktoken_cache" ../shared/data/tiktoken_cache; do
        if [ -d "$cache" ]; then export TIKTOKEN_CACHE_DIR="$(cd "$cache" && pwd)"; break; fi
    done
fi
if [ -z "${TIKTOKEN_CACHE_DIR:-}" ] || [ -z "$(ls -A "$TIKTOKEN_CACHE_DIR" 2>/dev/null)" ]; then
    echo "error: no tiktoken cache (GPT-2's vocabulary): run bash bench/gpu_wheels.sh where it is, and copy wheels/" >&2
    exit 1
fi

# What the GPU path imports and a CUDA image lacks (jsonargparse and its two helpers), into a folder of its own:
# the image's Python may be externally managed, and nothing of the image is replaced.
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    if ! "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl; then
        echo "error: pip could not install $WHEELS/*.whl into $SITE (its message is above)" >&2
        exit 1
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c "import jsonargparse, docstring_parser, typeshed_client" 2>/dev/null; then
    echo "error: jsonargparse[signatures] is not importable: run bash bench/gpu_wheels.sh where PyPI is reachable," \
        "then copy wheels/ into this repository" >&2
    exit 1
fi

if ! "$PYTHON" -c "import tiktoken; tiktoken.get_encoding('r50k_base')" 2>"$LOGS/tiktoken.err"; then
    echo "error: GPT-2's vocabulary does not load from TIKTOKEN_CACHE_DIR=$TIKTOKEN_CACHE_DIR ($(ls -l "$TIKTOKEN_CACHE_DIR" | tail -n +2 | tr '\n' ' ')): $(tail -1 "$LOGS/tiktoken.err")" >&2
    exit 1
fi
"$PYTHON" - <<'PY' | tee "$LOGS/versions.txt"
import platform, torch, lightning, tiktoken, jsonargparse
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"lightning {lightning.__version__}, tiktoken {tiktoken.__version__}, jsonargparse {jsonargparse.__version__}")
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")
PY

declare -a NAMES STATUS TIMES
STAGES="${STAGES:-compile_preflight gpu_tests hellaswag train_check throughput}"  # a subset reruns only those
stage() {  # stage NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    case " $STAGES " in *" $name "*) ;; *) return 0 ;; esac
    echo; echo "=== $name (limit ${limit}s) ==="
    local t0=$(date +%s)
    timeout --signal=INT --kill-after=5 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
    local rc=${PIPESTATUS[0]}
    NAMES+=("$name"); TIMES+=("$(( $(date +%s) - t0 ))")
    case $rc in 0) STATUS+=(PASS) ;; 124|130|137) STATUS+=(TIMEOUT) ;; *) STATUS+=("FAIL($rc)") ;; esac
}

stage compile_preflight 45 "$PYTHON" bench/compile_preflight.py --device cuda
if [ "${#STATUS[@]}" -gt 0 ] && [ "${STATUS[0]}" != PASS ]; then
    echo "error: torch.compile preflight: ${STATUS[0]} after ${TIMES[0]}s (see above); the other stages need it" >&2
    exit 1
fi
# the files that hold gpu tests (collecting every file would import the data sources' optional packages)
stage gpu_tests 110 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py tests/test_hellaswag_gpu.py \
    tests/test_host_syncs.py
stage hellaswag 45 "$PYTHON" bench/hellaswag_eval.py --device cuda --examples 10042 --precision bf16
stage train_check 130 env TORCH_LOGS=recompiles "$PYTHON" bench/gpu_train_check.py --work "$(mktemp -d)"
stage throughput 90 "$PYTHON" bench/train_throughput.py --device cuda

echo
echo "=== gpu_check: $(sed -n 2p "$LOGS/versions.txt") ==="
printf '%-18s %-10s %8s\n' stage result seconds
for i in "${!NAMES[@]}"; do printf '%-18s %-10s %8s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${TIMES[$i]}"; done
echo
# every figure the stages printed as JSON lines, one row each
"$PYTHON" bench/report.py "$LOGS"/*.log
echo "total $(( $(date +%s) - start ))s"
for s in "${STATUS[@]}"; do [ "$s" = PASS ] || exit 1; done
