#!/usr/bin/env bash
# Fill ./wheels for bench/gpu_check.sh on an offline GPU machine, where PyPI is reachable: the wheels of what the
# GPU path imports and a CUDA image with torch, lightning and tiktoken lacks (jsonargparse[signatures]: jsonargparse,
# docstring-parser, typeshed-client; pure Python, pinned to the versions of this checkout's environment), and
# GPT-2's tiktoken vocabulary (./wheels/tiktoken_cache) and Tiny Shakespeare (./wheels/tinyshakespeare.txt), which the tests
# read. The data sources' packages (datasets, zstandard,
# wikipedia-api) are not needed there, and wikipedia-api's pins would replace the image's httpx.
#   bash bench/gpu_wheels.sh [TIKTOKEN_CACHE_DIR]          # default: $TIKTOKEN_CACHE_DIR, else ../shared/data/tiktoken_cache
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
cache="${1:-${TIKTOKEN_CACHE_DIR:-../shared/data/tiktoken_cache}}"
[ -d "$cache" ] || { echo "error: no tiktoken cache at $cache: give its path" >&2; exit 1; }
pins=$("$PYTHON" - <<'PY'
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in ("jsonargparse", "docstring-parser", "typeshed-client")))
PY
)
rm -rf wheels
mkdir -p wheels
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d wheels $pins
# writable copies (../shared is read-only, and a read-only folder does not always survive a copy whole), and Tiny
# Shakespeare beside them: the tests read both from LIT_GPT_MINI_SHARED_DATA, which gpu_check.sh points here
cp -r "$cache" wheels/tiktoken_cache
shakespeare="$(dirname "$cache")/tinyshakespeare.txt"
[ -f "$shakespeare" ] && cp "$shakespeare" wheels/
chmod -R u+w wheels
grep -qx '/wheels/' .git/info/exclude 2>/dev/null || echo '/wheels/' >> .git/info/exclude
ls wheels
du -sh wheels
