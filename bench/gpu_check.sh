#!/usr/bin/env bash
# One check of a GPU machine, from a bare machine with this repository, in at most 8 minutes; ends with one table.
#
#   bash bench/gpu_check.sh                 # uses ./wheels (if present) for packages the machine lacks
#   WHEELS=/path/to/wheels PYTHON=python3 bash bench/gpu_check.sh
#
# Offline machines: `bash bench/gpu_wheels.sh` (on a machine with PyPI) fills ./wheels with jsonargparse's
# wheels (the one package the checks need that a CUDA image with torch and lightning usually lacks) and GPT-2's
# tiktoken vocabulary (./wheels/tiktoken_cache); wheels for zstandard, wikipedia-api and datasets are installed
# too when present. Each stage has its own time limit, so the table always comes:
#   1. the tests marked gpu: bf16 compiled training step, CUDA sampling = CPU sampling, HellaSwag CUDA = CPU,
#      no host sync per micro-batch, FSDP on one GPU (clipping, parameter groups, sampling, HellaSwag)
#   2. bench/train_throughput.py --device cuda: GPT-2 124M, T=1024, bf16-mixed, compiled, B 16/32/64,
#      Lightning vs a bare loop: ms/step, tokens/s, MFU, peak memory
#   3. bench/hellaswag_eval.py --device cuda --precision bf16: all 10,042 (synthetic) examples, warm-up included
#   4. bench/gpu_train_check.py: 300 steps of GPT-2 124M on local text; the loss falls, nothing recompiles
# Where $OUT is set (the device tool), each stage's log is written there too.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
WHEELS="${WHEELS:-wheels}"
LOGS="${OUT:-$(mktemp -d)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -d "$WHEELS/tiktoken_cache" ] && [ -z "${TIKTOKEN_CACHE_DIR:-}" ]; then
    export TIKTOKEN_CACHE_DIR="$PWD/$WHEELS/tiktoken_cache"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

start=$(date +%s)
if [ -d "$WHEELS" ]; then  # one at a time: a package whose wheels are missing must not stop the others
    for package in 'jsonargparse[signatures]' zstandard wikipedia-api datasets; do
        "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" "$package" 2>&1 | tail -1
    done
fi
"$PYTHON" - <<'PY' | tee "$LOGS/versions.txt"
import platform, torch, lightning, tiktoken
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"lightning {lightning.__version__}, tiktoken {tiktoken.__version__}")
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")
for name in ("jsonargparse", "datasets", "zstandard", "transformers", "pytest"):
    try:
        print(f"  {name} {__import__(name).__version__}")
    except Exception as e:  # a missing package fails its stage below, with its own message
        print(f"  {name}: {type(e).__name__}: {e}")
PY

declare -a NAMES STATUS TIMES
stage() {  # stage NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo; echo "=== $name (limit ${limit}s) ==="
    local t0=$(date +%s)
    timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
    local rc=${PIPESTATUS[0]}
    NAMES+=("$name"); TIMES+=("$(( $(date +%s) - t0 ))")
    case $rc in 0) STATUS+=(PASS) ;; 124|130|137) STATUS+=(TIMEOUT) ;; *) STATUS+=("FAIL($rc)") ;; esac
}

# the files that hold gpu tests (collecting every file would import the data sources' optional packages)
stage gpu_tests 100 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py tests/test_hellaswag_gpu.py \
    tests/test_host_syncs.py
stage throughput 150 "$PYTHON" bench/train_throughput.py --device cuda
stage hellaswag 60 "$PYTHON" bench/hellaswag_eval.py --device cuda --examples 10042 --precision bf16
stage train_300_steps 150 env TORCH_LOGS=recompiles "$PYTHON" bench/gpu_train_check.py --work "$(mktemp -d)"

echo
echo "=== gpu_check: $(sed -n 2p "$LOGS/versions.txt") ==="
printf '%-18s %-10s %8s\n' stage result seconds
for i in "${!NAMES[@]}"; do printf '%-18s %-10s %8s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${TIMES[$i]}"; done
echo
# every figure the stages printed as JSON lines, one row each
"$PYTHON" bench/report.py "$LOGS"/*.log
echo "total $(( $(date +%s) - start ))s"
for s in "${STATUS[@]}"; do [ "$s" = PASS ] || exit 1; done
