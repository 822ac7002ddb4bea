"""Lines of a byte stream with a cap on their length, so memory stays bounded whatever the input holds."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional

DEFAULT_MAX_LINE_BYTES = 64 << 20  # far above any real document; a longer "line" is a broken file


def capped_lines(chunks: Iterable[bytes], max_bytes: int) -> Iterator[tuple[int, Optional[bytes]]]:
    """``(line number, line)`` for each ``\\n``-separated line of the concatenated ``chunks`` (without the
    ``\\n``; a last line without one is yielded too). A line longer than ``max_bytes`` is yielded as
    ``(number, None)`` and is never held whole: at most ``max_bytes`` plus one chunk are in memory.

    An exception raised by ``chunks`` (a truncated file) propagates, dropping the unfinished line before it.
    """
    number, pending, too_long = 0, bytearray(), False
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            number += 1
            if not too_long and len(pending) + end - start <= max_bytes:
                if pending:
                    pending += chunk[start:end]
                    yield number, bytes(pending)
                else:  # the usual case: the whole line is in this chunk
                    yield number, chunk[start:end]
            else:
                yield number, None
            pending.clear()
            too_long, start = False, end + 1
        if not too_long:
            pending += chunk[start:]
            if len(pending) > max_bytes:
                too_long = True
                pending.clear()
    if too_long or pending:
        yield number + 1, None if too_long else bytes(pending)


def line_cap_setting(max_bytes: int) -> dict[str, Any]:
    """The cap as a shard-directory setting: absent at the default, so that directories prepared before the
    cap existed stay valid (no real document is a line of 64 MB)."""
    return {} if max_bytes == DEFAULT_MAX_LINE_BYTES else {"max_line_bytes": max_bytes}
