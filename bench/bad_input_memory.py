"""Memory when a source meets one enormous line: peak RSS of reading it, against reading a normal file.

The case: a ~32 KB ``.zst`` holding one 1 GiB line (then two normal rows) read by the Reddit module, and
the same line in a ``.jsonl.gz`` read by the FineWeb module. Each read runs in a fresh process that imports
the module, reads every document and prints its peak RSS; the baseline process reads a small normal file, so
the difference is what the long line cost. Also the Reddit reader's speed on a normal dump (Shakespeare
speeches as comments).

    python bench/bad_input_memory.py              # 1 GiB line
    python bench/bad_input_memory.py --gib 0.25
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402

SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
ROW = b'{"body": "a normal comment, long enough to keep", "author": "a", "subreddit": "x", "score": 3}'

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
kind, path = sys.argv[1], sys.argv[2]
from pathlib import Path
from data_modules.reddit import RedditDataModule
from data_modules.fineweb import DocumentReader
start = time.perf_counter()  # (after the imports: torch and lightning take seconds)
if kind == "reddit":
    dm = RedditDataModule(path=path, min_score=1, min_length=5)
    docs = sum(1 for _ in dm.documents())
    skipped = dm.counts.get("too long", 0)
else:
    reader = DocumentReader("text")
    docs = sum(1 for _ in reader.jsonl(Path(path)))
    skipped = reader.skipped.get("line too long", 0)
seconds = time.perf_counter() - start
print(json.dumps({{"docs": docs, "too_long": skipped, "seconds": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def run(kind: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), kind, str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_bomb(path: Path, gib: float, compress) -> None:
    with compress(path) as w:
        w.write(ROW + b"\n")
        for _ in range(int(gib * 1024)):
            w.write(b"a" * (1 << 20))
        w.write(b"\n" + ROW + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0, help="size of the long line in GiB")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small_zst, bomb_zst = tmp / "RC_small.zst", tmp / "RC_bomb.zst"
        small_zst.write_bytes(zstandard.ZstdCompressor().compress((ROW + b"\n") * 2))
        write_bomb(bomb_zst, args.gib, lambda p: zstandard.ZstdCompressor(level=3).stream_writer(open(p, "wb")))
        small_gz, bomb_gz = tmp / "small.jsonl.gz", tmp / "bomb.jsonl.gz"
        text_row = b'{"text": "a normal document"}'
        small_gz.write_bytes(gzip.compress((text_row + b"\n") * 2))
        with gzip.open(bomb_gz, "wb", compresslevel=1) as w:
            w.write(text_row + b"\n")
            for _ in range(int(args.gib * 1024)):
                w.write(b"a" * (1 << 20))
            w.write(b"\n" + text_row + b"\n")
        for kind, small, bomb in (("reddit", small_zst, bomb_zst), ("fineweb", small_gz, bomb_gz)):
            base, big = run(kind, small), run(kind, bomb)
            rows.append((kind, bomb.stat().st_size, base, big))
        normal = tmp / "RC_normal.zst"
        speeches = [s for s in SHAKESPEARE.read_text(encoding="utf-8").split("\n\n") if s.strip()] * 8
        data = "".join(json.dumps({"body": s, "author": "a", "subreddit": "x", "score": 3}) + "\n" for s in speeches)
        normal.write_bytes(zstandard.ZstdCompressor(level=3).compress(data.encode()))
        read = run("reddit", normal)

    print(f"one {args.gib:g} GiB line (skipped as too long at the default max_line_bytes, 64 MiB)")
    print(f"{'source':<10}{'file size':>12}{'docs kept':>11}{'baseline RSS':>14}{'RSS with the line':>19}{'extra':>9}{'seconds':>9}")
    for kind, size, base, big in rows:
        print(f"{kind:<10}{size:>10,} B{big['docs']:>11}{base['peak_rss_mb']:>11.0f} MB{big['peak_rss_mb']:>16.0f} MB"
              f"{big['peak_rss_mb'] - base['peak_rss_mb']:>6.0f} MB{big['seconds']:>9.2f}")
    mb = len(data.encode()) / 1e6
    print(f"\nReddit reader on a normal dump: {mb:.1f} MB of rows, {read['docs']:,} comments, {read['seconds']:.2f} s "
          f"({mb / read['seconds']:.1f} MB/s)")
    for kind, size, base, big in rows:
        case = f"{kind}_{args.gib:g}GiB_line"
        emit("bad_input_memory", case, "peak_rss_mb", round(big["peak_rss_mb"], 1))
        emit("bad_input_memory", case, "extra_rss_mb_over_baseline", round(big["peak_rss_mb"] - base["peak_rss_mb"], 1))
    emit("bad_input_memory", "reddit_normal_dump", "read_mb_per_s", round(mb / read["seconds"], 2))


if __name__ == "__main__":
    main()
