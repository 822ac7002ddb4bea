"""Streams of documents as units of work: batches of about N characters, mapped over a process pool in input
order with a bounded number of tasks in flight, so an endless stream never piles up in memory."""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import signal
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def batched(texts: Iterable[str], chars: int) -> Iterator[list[str]]:
    """The texts in order, grouped into lists of at least ``chars`` characters (the last may hold fewer)."""
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def ordered_map(
    function: Callable[..., R], tasks: Iterable[T], *args: Any, pool: Optional[Any] = None, num_proc: int = 1
) -> Iterator[R]:
    """``function(task, *args)`` for each task, in input order: in ``pool`` (a ``multiprocessing`` pool of
    ``num_proc`` processes) when given, else here. ``Pool.imap`` would read the whole (possibly endless) task
    stream into its queue; this keeps at most two tasks per process in flight and hands on each result as soon
    as it and those before it are done (a slow stream must not hold finished work)."""
    if pool is None:
        for task in tasks:
            yield function(task, *args)
        return
    in_flight = 2 * num_proc
    pending: deque = deque()
    for task in tasks:
        pending.append(pool.apply_async(function, (task, *args)))
        while pending and (pending[0].ready() or len(pending) >= in_flight):
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def process_pool(
    num_proc: int, initializer: Optional[Callable[..., None]] = None, initargs: tuple = ()
) -> multiprocessing.pool.Pool:
    """A pool of ``num_proc`` forked processes for :func:`ordered_map`. Its workers ignore Ctrl-C: a terminal
    sends it to every process of the job, and only the main process answers it (it ends the pool and says, in
    one line, how to resume), not each worker with a traceback of its own."""
    return multiprocessing.get_context("fork").Pool(num_proc, initializer=_start_worker, initargs=(initializer, initargs))


def _start_worker(initializer: Optional[Callable[..., None]], initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)
