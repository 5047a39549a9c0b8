"""vidwiz/transcripts.py: the one formatting of transcripts for the language model. A segment's
text is put on one line; a time is shown only for a finite offset >= 0; the chat and the
AI-note writer use the timed lines only, summaries every line."""

from __future__ import annotations

from vidwiz.transcripts import format_transcript, transcript_chunks, transcript_window


def test_format_transcript():
    segments = [
        {"text": "Hello", "offset": 1.9},
        {"text": "no offset"},
        {"offset": 3.0},
        {"text": "bad offset", "offset": "soon"},
        {"text": "not a number", "offset": float("nan")},
        {"text": "string offset", "offset": "61.5"},
        {"text": "Much later", "offset": 4503.0},
    ]
    assert format_transcript(segments, 10_000) == ("0:01 Hello\n1:01 string offset\n75:03 Much later", False)
    assert format_transcript(segments, 30) == ("0:01 Hello\n1:01 string offset", True)
    assert format_transcript([], 100) == ("", False)


def test_one_line_per_segment_and_negative_offsets_are_untimed():
    segments = [
        {"text": "  two\nlines\t here ", "offset": 0},
        {"text": "before the start", "offset": -0.5},
        {"text": " \n ", "offset": 2},
        {"text": 42, "offset": 3},
        "junk",
        {"text": "infinite", "offset": float("inf")},
        {"text": "last", "offset": 3600},
    ]
    assert format_transcript(segments, 1000) == ("0:00 two lines here\n60:00 last", False)
    # Summaries keep the untimed text (on one line too), never a time for it.
    assert transcript_chunks(segments, 1000, 5) == ["0:00 two lines here\nbefore the start\ninfinite\n60:00 last"]


def test_window_keeps_the_timed_lines_between_its_bounds():
    segments = [{"text": f"at {second}", "offset": second} for second in (0, 30, 60, 90, 120)]
    segments.append({"text": "untimed"})
    assert transcript_window(segments, 30, 90, 1000) == "0:30 at 30\n1:00 at 60\n1:30 at 90"
    assert transcript_window(segments, 30, 90, 22) == "0:30 at 30\n1:00 at 60"  # whole lines only
    assert transcript_window(segments, 500, 600, 1000) == ""


def test_chunks_are_bounded_in_size_and_number():
    segments = [{"text": "x" * 9, "offset": float(i)} for i in range(10)]  # lines of 14 characters
    chunks = transcript_chunks(segments, 30, 3)
    assert chunks == [f"0:0{i} xxxxxxxxx\n0:0{i + 1} xxxxxxxxx" for i in (0, 2, 4)]  # 29 characters each
    assert transcript_chunks([{"text": "y" * 50}], 20, 3) == ["y" * 20]  # one long line is cut
    assert transcript_chunks([], 20, 3) == []
