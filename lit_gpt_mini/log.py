"""Messages for people: one ``logging`` setup that prints each message once per job, on stderr.

Every module logs through ``log = get_logger(__name__)``. Under DDP every rank runs the same code, so a message
is printed by global rank zero only; a rank that has something of its own to say (a node preparing its own data
directory, a warning about its own files) passes ``extra=EVERY_RANK`` and is printed with its rank.
Messages go through ``tqdm.write`` so they do not break a progress bar being drawn.
"""

from __future__ import annotations

import logging
import os

from tqdm import tqdm

ROOT = "lit_gpt_mini"  # every logger of this project (lit_gpt_mini.*, data_modules.*) hangs below this one
EVERY_RANK = {"every_rank": True}


def global_rank() -> int:
    """This process's rank in the job: Lightning's (set by the strategy) or the launcher's environment."""
    try:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        rank = getattr(rank_zero_only, "rank", None)
        if rank is not None:
            return int(rank)
    except ImportError:  # pragma: no cover - lightning is a dependency
        pass
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


class _RankFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        rank = global_rank()
        if getattr(record, "every_rank", False):
            if rank:
                record.msg = f"[rank {rank}] {record.msg}"
            return True
        return rank == 0


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=_stderr())
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _stderr():
    import sys

    return sys.stderr  # looked up per message: tests (and pytest's capsys) replace sys.stderr


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return f"warning: {message}" if record.levelno == logging.WARNING else message


def get_logger(name: str) -> logging.Logger:
    """The logger of module ``name``, printing through the project's handler (installed once)."""
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, _TqdmHandler) for h in root.handlers):
        handler = _TqdmHandler()
        handler.addFilter(_RankFilter())
        handler.setFormatter(_Format("%(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False  # printed once, by this handler, whatever the application configured
    return logging.getLogger(name if name == ROOT or name.startswith(ROOT + ".") else f"{ROOT}.{name}")
