"""The one machine-readable line per figure that every bench script prints after its table."""

from __future__ import annotations

import json


def emit(bench: str, case: str, metric: str, value: float, **context: object) -> None:
    """Print ``{"bench", "case", "metric", "value", ...context}`` as one JSON line (compare runs with grep/jq)."""
    print(json.dumps({"bench": bench, "case": case, "metric": metric, "value": value, **context}), flush=True)


def table(lines: "list[str]") -> str:
    """The figures among ``lines`` (any text with JSON lines mixed in), one row each."""
    rows = []
    for line in lines:
        if line.startswith('{"bench"'):
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    out = [f"{'bench':18s} {'case':44s} {'metric':32s} {'value':>12s}"]
    out += [f"{r['bench']:18s} {r['case']:44s} {r['metric']:32s} {r['value']!s:>12s}" for r in rows]
    return "\n".join(out)


if __name__ == "__main__":  # python bench/report.py LOG... : the figures of those logs as one table
    import sys

    lines = []
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines += f.readlines()
    print(table(lines))
