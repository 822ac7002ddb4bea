#!/usr/bin/env bash
# Fill ./wheels for bench/gpu_check.sh on an offline GPU machine: wheels of what a CUDA image with torch,
# lightning and tiktoken lacks, and GPT-2's tiktoken vocabulary. Run it where PyPI is reachable.
#   bash bench/gpu_wheels.sh [PYTHON_VERSION] [TIKTOKEN_CACHE_DIR]     # defaults: 3.12, ../shared/data/tiktoken_cache
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-3.12}"
cache="${2:-${TIKTOKEN_CACHE_DIR:-../shared/data/tiktoken_cache}}"
mkdir -p wheels
pip download -q --only-binary=:all: --python-version "$version" --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d wheels 'jsonargparse[signatures]' zstandard \
    wikipedia-api
cp -r "$cache" wheels/tiktoken_cache
grep -qx '/wheels/' .git/info/exclude 2>/dev/null || echo '/wheels/' >> .git/info/exclude
du -sh wheels
