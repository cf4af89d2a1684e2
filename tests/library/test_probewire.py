"""What a probe child and the service say to each other: every answer a
child may send, and only a well-formed one accepted (``_probewire.py``)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from stoat_ferret.library import ProbeError, VideoProbe, make_thumbnail
from stoat_ferret.library._exceptions import ShortOfMemory
from stoat_ferret.library._probewire import (
    NOT_A_PROBE,
    ProbeRaised,
    decode_answer,
    decode_thumbnail,
    encode_answer,
)
from stoat_ferret.library._thumbimage import is_plain_lossy_webp
from stoat_ferret.library._thumbnail import UndecodableError
from stoat_ferret.library._thumbstore import MAX_THUMBNAIL_BYTES
from tests.library.support import PROBE, webp_image
from tests.videos import make_video

if TYPE_CHECKING:
    from pathlib import Path


def test_a_probe_that_raised_in_the_child_is_reported_as_such() -> None:
    answer = encode_answer(KeyError("codec"))

    with pytest.raises(ProbeRaised, match=r"^KeyError: 'codec'$"):
        decode_answer("a.mp4", answer)


@pytest.mark.parametrize("transient", [False, True])
def test_a_refusal_crosses_with_its_reason_and_whether_the_file_is_to_blame(
    *, transient: bool
) -> None:
    """A refusal that says nothing of the file (a read its file system could
    not answer) stays ``transient`` across: the scan keeps the file's row."""
    refusal = ProbeError("x/a.mp4", "no video stream", transient=transient)

    with pytest.raises(ProbeError) as refused:
        decode_answer("a.mp4", encode_answer(refusal))

    assert (refused.value.path, refused.value.reason) == ("a.mp4", "no video stream")
    assert refused.value.transient is transient


def test_out_of_memory_crosses_as_such_for_the_child_to_be_replaced() -> None:
    """The service ends a child that ran out of memory (``_probeprocess.py``): the
    answer keeps what it was, transient, apart from other transient refusals."""
    with pytest.raises(ShortOfMemory) as refused:
        decode_answer("a.mp4", encode_answer(ShortOfMemory("x/a.mp4", "cannot decode")))
    with pytest.raises(ProbeError) as other:
        decode_answer("a.mp4", encode_answer(ProbeError("a.mp4", "I/O error", transient=True)))

    assert (refused.value.path, refused.value.reason) == ("a.mp4", "cannot decode")
    assert refused.value.transient
    assert not isinstance(other.value, ShortOfMemory)


_GOOD = attrs.evolve(
    PROBE,
    duration_seconds=1.5,
    audio_codec=None,
    interlaced=True,
    creation_time=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
    mirrored=False,
)


def test_a_description_crosses_unchanged() -> None:
    assert decode_answer("a.mp4", encode_answer(_GOOD)) == _GOOD


def _fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = json.loads(encode_answer(_GOOD))["probe"]
    fields.update(changes)
    return fields


@pytest.mark.parametrize(
    "answer",
    [
        b"",
        b"\xff not json",
        b"[]",
        b'{"probe": {}}',
        b'{"probe": 1}',
        b'{"refused": 3}',
        b'{"unavailable": 3}',
        b'{"short_of_memory": 3}',
        b'{"unexpected": null}',
        b'{"gift": "x"}',
        b'{"refused": "a", "probe": {}}',
        b'{"undecodable": "a"}',  # a thumbnail's verdict, not a probe's
        json.dumps({"probe": _fields(width=True)}).encode(),  # a bool is no size
        json.dumps({"probe": _fields(width=64.0)}).encode(),
        json.dumps({"probe": _fields(width="64")}).encode(),
        json.dumps({"probe": _fields(interlaced=1)}).encode(),
        json.dumps({"probe": _fields(duration_seconds=3)}).encode(),
        json.dumps({"probe": _fields(video_codec=None)}).encode(),
        json.dumps({"probe": _fields(frame_rate=[1, 0])}).encode(),
        json.dumps({"probe": _fields(frame_rate=[0, 1])}).encode(),
        json.dumps({"probe": _fields(frame_rate=[-25, 1])}).encode(),
        json.dumps({"probe": _fields(video_codec="h264\nforged log line")}).encode(),
        json.dumps({"probe": _fields(pixel_format="x" * 1001)}).encode(),
        json.dumps({"probe": _fields(frame_rate=[1.5, 2])}).encode(),
        json.dumps({"probe": _fields(frame_rate=[1, 2, 3])}).encode(),
        json.dumps({"probe": _fields(creation_time="yesterday")}).encode(),
        json.dumps({"probe": _fields(extra=1)}).encode(),
        json.dumps({"probe": _fields(duration_seconds=float("inf"))}).encode(),
        json.dumps({"probe": _fields(duration_seconds=float("nan"))}).encode(),
        json.dumps({"probe": _fields(duration_seconds=1.5)}).encode().replace(b"1.5", b"1e999"),
        json.dumps({"probe": _fields(creation_time="2024-05-06T07:08:09")}).encode(),  # naive
        json.dumps({"probe": _fields(creation_time="2024-05-06T07:08:09+02:00")}).encode(),
        # Well typed, but numbers the probe never gives (a child lying):
        json.dumps({"probe": _fields(width=-64)}).encode(),
        json.dumps({"probe": _fields(height=2**63)}).encode(),
        json.dumps({"probe": _fields(duration_seconds=-1e300)}).encode(),
        json.dumps({"probe": _fields(duration_seconds=1e300)}).encode(),  # past 100 years
        json.dumps({"probe": _fields(duration_frames=-7)}).encode(),
        json.dumps({"probe": _fields(duration_frames=0)}).encode(),
        json.dumps({"probe": _fields(rotation=123_456_789)}).encode(),
        json.dumps({"probe": _fields(audio_sample_rate=-48_000)}).encode(),
        json.dumps({"probe": _fields(display_width=-1)}).encode(),
        json.dumps({"probe": _fields(subtitle_stream_count=-1)}).encode(),
        json.dumps({"probe": _fields(video_codec="")}).encode(),
        b"[" * 100_000 + b"]" * 100_000,
        b'{"probe": ' * 10_000 + b"}" * 10_000,
    ],
)
def test_an_answer_that_is_not_a_description_is_refused(answer: bytes) -> None:
    """A child a hostile file took over may send anything: only a well-typed
    description, its numbers within the probe's own bounds, becomes a probe;
    anything else refuses the file."""
    with pytest.raises(ProbeError) as refused:
        decode_answer("a.mp4", answer)

    assert refused.value.reason == NOT_A_PROBE


def test_every_field_of_a_probe_has_a_type_the_answer_carries() -> None:
    """A field added to VideoProbe crosses the boundary (or this fails)."""
    strings = {
        field.name: "x"
        for field in attrs.fields(VideoProbe)
        if "str" in str(field.type) and field.name != "video_codec"
    }
    every = VideoProbe(**{**attrs.asdict(_GOOD, recurse=False), **strings})
    assert decode_answer("a.mp4", encode_answer(every)) == every


def test_a_reason_is_cut_and_printable() -> None:
    with pytest.raises(ProbeError) as refused:
        decode_answer("a.mp4", json.dumps({"refused": "line\nbreak" + "x" * 5000}).encode())

    assert refused.value.reason.startswith("line break")
    assert len(refused.value.reason) == 1000


def _memory_file(content: bytes) -> int:
    image = os.memfd_create("image")
    os.write(image, content)
    return image


@pytest.mark.parametrize(
    ("answer", "content"),
    [
        (b'{"thumbnail": 0}', b""),
        (b'{"thumbnail": 5}', b"1234"),  # shorter than it says
        (b'{"thumbnail": 3}', b"1234"),  # longer
        (b'{"thumbnail": "4"}', b"1234"),
        (b'{"thumbnail": true}', b"1"),
        (json.dumps({"thumbnail": MAX_THUMBNAIL_BYTES + 1}).encode(), b"1"),
        (b'{"probe": {}}', b""),
        (b'{"thumbnail": 12}', b"RIFF\0\0\0\0JPEG"),  # not a WebP image
        (b'{"thumbnail": 12}', b"GIF89a\0\0WEBP"),
    ],
)
def test_an_answer_that_is_not_a_thumbnail_is_refused(answer: bytes, content: bytes) -> None:
    image = _memory_file(content)
    try:
        with pytest.raises(ProbeError) as refused:
            decode_thumbnail("a.mp4", answer, image)
    finally:
        os.close(image)
    assert refused.value.reason == NOT_A_PROBE


@pytest.mark.parametrize("size", [(320, 180), (320, 2), (320, 1280)])
def test_a_plain_lossy_webp_of_the_thumbnails_size_passes(size: tuple[int, int]) -> None:
    width, height = size
    assert is_plain_lossy_webp(webp_image(width=width, height=height))


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param({"fourcc": b"VP8L"}, id="lossless"),
        pytest.param({"fourcc": b"VP8X"}, id="extended"),
        pytest.param({"after": b"EXIF\4\0\0\0abcd"}, id="a-chunk-after"),
        pytest.param({"riff_slack": 2}, id="riff-size-wrong"),
        pytest.param({"width": 321}, id="another-width"),
        pytest.param({"width": 320 | 1 << 14}, id="scaled"),
        pytest.param({"height": 1282}, id="too-tall"),
        pytest.param({"height": 1}, id="too-short"),
        pytest.param({"key_frame": False}, id="no-key-frame"),
        pytest.param({"version": 3}, id="another-version"),
        pytest.param({"shown": 0}, id="not-shown"),
        pytest.param({"partition": 40}, id="partition-past-the-chunk"),
        pytest.param({"partition": 0}, id="no-partition"),
    ],
)
def test_a_webp_other_than_the_encoders_is_refused(changed: dict[str, Any]) -> None:
    """A child taken over by a hostile file could send any image to the
    dashboard's browser: only what the thumbnail's encoder writes passes."""
    image = _memory_file(data := webp_image(**changed))
    try:
        with pytest.raises(ProbeError) as refused:
            decode_thumbnail("a.mp4", encode_answer(len(data)), image)
    finally:
        os.close(image)

    assert not is_plain_lossy_webp(data)
    assert refused.value.reason == NOT_A_PROBE


def test_the_thumbnails_the_encoder_makes_pass(tmp_path: Path) -> None:
    """The check fits the encoder: a wide, a tall (capped) and a narrow clip's thumbnails."""
    for number, (width, height) in enumerate([(128, 96), (64, 480), (480, 8)]):
        clip = make_video(tmp_path / f"clip{number}.mp4", width=width, height=height).path
        info = clip.stat()
        thumbnail = make_thumbnail(str(clip), (info.st_size, info.st_mtime_ns))
        assert is_plain_lossy_webp(thumbnail), (width, height)


def test_a_thumbnail_crosses_with_its_size() -> None:
    webp = webp_image()
    image = _memory_file(webp)
    try:
        assert decode_thumbnail("a.mp4", encode_answer(len(webp)), image) == webp
        with pytest.raises(UndecodableError) as undecodable:
            decode_thumbnail("a.mp4", encode_answer(UndecodableError("a", "no keyframe")), image)
    finally:
        os.close(image)
    assert (undecodable.value.path, undecodable.value.reason) == ("a.mp4", "no keyframe")
