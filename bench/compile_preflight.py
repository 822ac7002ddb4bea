"""Can ``torch.compile`` build and run kernels on this machine? A few seconds, before the long stages need it.

Inductor writes C++ (CPU) or Triton (CUDA) kernels and builds them: Triton needs a C compiler and Python's
headers to build its launcher, and a machine without them fails only at the first compiled step, minutes into
a run. This compiles a small MLP's forward and backward under bf16 autocast (as the recipes train), runs it,
compares it with eager, and prints one JSON line; on failure one ``error:`` line saying what is missing.

    python bench/compile_preflight.py                 # CUDA
    python bench/compile_preflight.py --device cpu    # the same check for the CPU's C++ kernels
"""

from __future__ import annotations

import argparse
import shutil
import sys
import sysconfig
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import emit  # noqa: E402


def missing_build_tools() -> list[str]:
    """What inductor's kernel builds need and this machine lacks."""
    missing = []
    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
        missing.append("a C compiler (apt-get install gcc)")
    include = sysconfig.get_paths().get("include")
    if not include or not (Path(include) / "Python.h").is_file():
        missing.append(f"Python's headers (Python.h in {include}; apt-get install python3-dev)")
    return missing


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: torch sees no CUDA device", file=sys.stderr)
        return 1
    missing = missing_build_tools()
    if missing:
        print(f"error: torch.compile cannot build kernels here: missing {' and '.join(missing)}", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(approximate="tanh"),
                                torch.nn.Linear(1024, 256)).to(args.device)
    x = torch.randn(64, 256, device=args.device)
    compiled = torch.compile(model)
    t0 = time.perf_counter()
    try:
        with torch.autocast(args.device, dtype=torch.bfloat16):
            loss = compiled(x).float().square().mean()
        loss.backward()
        if args.device == "cuda":
            torch.cuda.synchronize()
    except Exception as e:  # inductor's build errors come in many types; the first line says what failed
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        print(f"error: torch.compile failed on {args.device}: {type(e).__name__}: {first}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - t0
    with torch.autocast(args.device, dtype=torch.bfloat16):
        eager = model(x).float().square().mean()
    if not torch.allclose(loss, eager, rtol=2e-2):
        print(f"error: the compiled forward gives {loss.item()}, eager {eager.item()}", file=sys.stderr)
        return 1
    print(f"torch.compile on {args.device}: forward + backward built and run in {seconds:.1f} s")
    emit("compile_preflight", args.device, "compile_seconds", round(seconds, 2), torch=torch.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
