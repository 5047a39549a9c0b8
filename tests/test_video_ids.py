"""normalize_video_id (docs/api.md §3): every YouTube URL form, playlists and junk rejected."""

from __future__ import annotations

import pytest
from marshmallow import Schema

from vidwiz.validation import flatten_errors
from vidwiz.videos.ids import InvalidVideoId, VideoIdField, normalize_video_id

ID = "dQw4w9WgXcQ"
INVALID = "video_id must be a valid YouTube video ID"


@pytest.mark.parametrize(
    "raw",
    [
        ID,
        "a_b-C_d-E_f",
        f"  {ID}\n",
        f"https://www.youtube.com/watch?v={ID}",
        f"http://youtube.com/watch?v={ID}",
        f"youtube.com/watch?v={ID}",
        f"WWW.YOUTUBE.COM/watch?v={ID}",
        f"https://www.youtube.com/watch?v={ID}&t=42s",
        f"https://www.youtube.com/watch?feature=share&v={ID}&si=xyz",
        f"https://m.youtube.com/watch?v={ID}",
        f"https://music.youtube.com/watch?v={ID}&feature=share",
        f"https://youtu.be/{ID}",
        f"youtu.be/{ID}?t=10",
        f"https://www.youtu.be/{ID}",
        f"https://www.youtube.com/shorts/{ID}",
        f"https://youtube.com/shorts/{ID}?feature=share",
        f"https://www.youtube.com/live/{ID}",
        f"https://www.youtube.com/live/{ID}?si=abc",
        f"https://www.youtube.com/embed/{ID}",
        f"https://www.youtube.com/embed/{ID}?start=5",
        f"https://notyoutube.com/watch?v={ID}",  # the reference host check is a substring check
        f"  https://youtu.be/{ID}  ",
    ],
)
def test_accepted_forms_yield_the_id(raw):
    assert normalize_video_id(raw) == ("a_b-C_d-E_f" if raw == "a_b-C_d-E_f" else ID)


@pytest.mark.parametrize(
    "raw, message",
    [
        ("", "video_id cannot be empty"),
        ("   \t", "video_id cannot be empty"),
        ("https://www.youtube.com/playlist?list=PLx0sYbCqOb8TBPRdmBHs5Iftvv9TPboYG", "playlist URLs are not supported"),
        (f"https://www.youtube.com/watch?v={ID}&list=PL123", "playlist URLs are not supported"),
        (f"{ID}list=", "playlist URLs are not supported"),
        ("bad", INVALID),
        (ID[:-1], INVALID),
        (ID + "Q", INVALID),
        ("dQw4w9WgXc!", INVALID),
        ("https://vimeo.com/123456789", INVALID),
        (f"https://vimeo.com/watch?v={ID}", INVALID),
        ("https://www.youtube.com/watch?v=short", INVALID),
        ("https://www.youtube.com/watch", INVALID),
        (f"https://www.youtube.com/v/{ID}", INVALID),
        ("https://www.youtube.com/channel/UCuAXFkgsw1L7xaCfnd5JJOw", INVALID),
        ("https://www.youtube.com/shorts/", INVALID),
        ("https://youtu.be/", INVALID),
        (f"https://youtu.be.evil.com/{ID}", INVALID),
        (f"ftp://youtu.be/{ID}", INVALID),
        ("http://[::1", INVALID),
    ],
)
def test_rejected_inputs_name_the_reason(raw, message):
    with pytest.raises(InvalidVideoId) as caught:
        normalize_video_id(raw)
    assert str(caught.value) == message


class _Body(Schema):
    video_id = VideoIdField(required=True)


def _errors(data):
    from marshmallow import ValidationError

    with pytest.raises(ValidationError) as caught:
        _Body().load(data)
    return flatten_errors(caught.value.messages, "body")


def test_field_normalises_and_reports_value_errors():
    assert _Body().load({"video_id": f"https://youtu.be/{ID}"}) == {"video_id": ID}
    assert _errors({"video_id": "bad"}) == [
        {"field": "body.video_id", "message": f"Value error, {INVALID}", "type": "value_error"}
    ]
    assert _errors({"video_id": 12345678901})[0]["type"] == "string_type"
    assert _errors({})[0] == {"field": "body.video_id", "message": "Field required", "type": "missing"}
