"""Transcripts as text for the language model: one formatting for every prompt.

A transcript is the list of segments the workers stored (docs/api.md §8), typically
`{"text": str, "offset": float, "duration": float}`. Each usable segment becomes one line,
`<minutes>:<seconds> <text>` (minutes not zero-padded nor wrapped into hours, `75:03 …`,
docs/api.md §4.2), its text on one line. A segment without text is skipped; one without a usable
offset (a finite number >= 0) has no time: the Wiz chat and the AI-note writer, which cite
or look up moments, leave it out; summaries keep its text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any


def segment_offset(segment: Any) -> float | None:
    """The segment's start in seconds, or None when it has no usable one."""
    try:
        offset = float(segment["offset"])
    except (TypeError, ValueError, KeyError):
        return None
    return offset if math.isfinite(offset) and offset >= 0 else None


def segment_text(segment: Any) -> str | None:
    """The segment's text on one line, or None when it has none."""
    text = segment.get("text") if isinstance(segment, dict) else None
    if not isinstance(text, str):
        return None
    return " ".join(text.split()) or None


def timestamp(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def transcript_lines(segments: Iterable[Any], *, timed_only: bool) -> Iterator[tuple[float | None, str]]:
    """(offset, line) for each usable segment, in order."""
    for segment in segments:
        text = segment_text(segment)
        if text is None:
            continue
        offset = segment_offset(segment)
        if offset is None:
            if not timed_only:
                yield None, text
            continue
        yield offset, f"{timestamp(offset)} {text}"


def format_transcript(segments: Iterable[Any], max_chars: int) -> tuple[str, bool]:
    """The timed lines, whole lines kept until `max_chars`; returns (text, truncated)."""
    lines: list[str] = []
    size = 0
    for _, line in transcript_lines(segments, timed_only=True):
        if size + len(line) + 1 > max_chars:
            return "\n".join(lines), True
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines), False


def transcript_window(segments: Iterable[Any], start: float, end: float, max_chars: int) -> str:
    """The timed lines of the segments starting between `start` and `end` seconds (bounded)."""
    window = [
        segment for segment in segments if (offset := segment_offset(segment)) is not None and start <= offset <= end
    ]
    text, _ = format_transcript(window, max_chars)
    return text


def transcript_chunks(segments: Iterable[Any], chunk_chars: int, max_chunks: int) -> list[str]:
    """Every line (untimed ones too), cut into chunks of at most `chunk_chars`; at most
    `max_chunks` of them (the rest is left out)."""
    chunks: list[str] = []
    lines: list[str] = []
    size = 0
    for _, line in transcript_lines(segments, timed_only=False):
        line = line[:chunk_chars]
        if lines and size + len(line) > chunk_chars:  # `size` counts each kept line's newline
            chunks.append("\n".join(lines))
            if len(chunks) == max_chunks:
                return chunks
            lines, size = [], 0
        lines.append(line)
        size += len(line) + 1
    if lines:
        chunks.append("\n".join(lines))
    return chunks
