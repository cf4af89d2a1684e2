"""The library's values: Video.to_json, ErrorLog and the exception messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest

from stoat_ferret.library import (
    DEFAULT_ERROR_CAP,
    ERROR_PATH_CHARS,
    ERROR_TEXT_CHARS,
    METADATA_FIELDS,
    RESULT_ERRORS_MAX_BYTES,
    SORT_KEYS,
    ErrorLog,
    ScanError,
    Video,
    VideoFilter,
    VideoProbe,
)
from stoat_ferret.library._models import iso_utc
from tests.library.support import a_video


def test_iso_utc_converts_to_utc_with_a_z() -> None:
    """An aware time in another zone is shown in UTC, always with microseconds."""
    paris = timezone(timedelta(hours=1))

    assert iso_utc(datetime(2024, 3, 1, 13, 0, tzinfo=paris)) == "2024-03-01T12:00:00.000000Z"
    assert iso_utc(datetime(2024, 3, 1, 12, 0, 0, 5, tzinfo=UTC)) == "2024-03-01T12:00:00.000005Z"


def test_video_to_json_values() -> None:
    """Every public field is copied as is; the times become strings."""
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    video = a_video(
        id=7,
        video_codec="h264",
        updated_at=moment + timedelta(seconds=1),
        container_format="mov,mp4,m4a,3gp,3g2,mj2",
        rotation=-90,
        mirrored=True,
        interlaced=False,
        audio_stream_count=0,
        creation_time=datetime(2020, 5, 6, 9, 8, 7, tzinfo=timezone(timedelta(hours=2))),
    )

    assert video.to_json() == {
        "id": 7,
        "path": "/m/a.mp4",
        "filename": "a.mp4",
        "size_bytes": 10,
        "duration_seconds": None,
        "duration_frames": None,
        "width": None,
        "height": None,
        "frame_rate_numerator": None,
        "frame_rate_denominator": None,
        "video_codec": "h264",
        "audio_codec": None,
        "created_at": "2024-01-02T03:04:05.000000Z",
        "updated_at": "2024-01-02T03:04:06.000000Z",
        **dict.fromkeys(METADATA_FIELDS),
        "container_format": "mov,mp4,m4a,3gp,3g2,mj2",
        "rotation": -90,
        "mirrored": True,
        "interlaced": False,
        "audio_stream_count": 0,
        "creation_time": "2020-05-06T07:08:07.000000Z",
    }


def test_metadata_fields_are_the_issue_names() -> None:
    """The editing metadata keeps the names the API promises, in this order."""
    assert METADATA_FIELDS == (
        "container_format",
        "bit_rate",
        "video_bit_rate",
        "pixel_format",
        "bit_depth",
        "color_space",
        "color_transfer",
        "color_primaries",
        "color_range",
        "rotation",
        "display_width",
        "display_height",
        "sample_aspect_ratio",
        "interlaced",
        "video_stream_count",
        "audio_stream_count",
        "subtitle_stream_count",
        "audio_channels",
        "audio_channel_layout",
        "audio_sample_rate",
        "timecode",
        "creation_time",
        "mirrored",
    )


@pytest.mark.parametrize(("model", "first"), [(VideoProbe, "width"), (Video, "id")])
def test_the_metadata_comes_after_a_models_own_fields(model: type, first: str) -> None:
    """VideoProbe and Video declare the metadata once (a shared base) and still
    list their own fields first, the metadata last in its order: reprs lead
    with what tells videos apart."""
    names = tuple(field.name for field in attrs.fields(model))

    assert names[0] == first
    assert names[-len(METADATA_FIELDS) :] == METADATA_FIELDS


@pytest.mark.parametrize("sort", [*SORT_KEYS, *(f"-{key}" for key in SORT_KEYS)])
def test_video_filter_takes_every_sort_key_both_ways(sort: str) -> None:
    """Each sort key is accepted, ascending and with '-' descending."""
    assert VideoFilter(sort=sort).sort == sort


@pytest.mark.parametrize("sort", ["mtime_ns", "--path", "path;", "", "-", "Path"])
def test_video_filter_refuses_an_unknown_sort_key(sort: str) -> None:
    """Anything but a known column (with one optional '-') is a ValueError."""
    with pytest.raises(ValueError, match="cannot sort by"):
        VideoFilter(sort=sort)


def test_video_filter_refuses_a_relative_under() -> None:
    """``under`` names an absolute directory."""
    with pytest.raises(ValueError, match="absolute directory"):
        VideoFilter(under="media/clips")


def test_video_filter_refuses_relative_roots() -> None:
    """``within`` names absolute directories (the scan roots)."""
    with pytest.raises(ValueError, match="absolute directories"):
        VideoFilter(within=("/srv/videos", "media"))


def test_error_log_keeps_the_first_entries_and_counts_the_rest() -> None:
    """Past the cap, entries are only counted."""
    log = ErrorLog(cap=2)
    for index in range(5):
        log.add(f"/m/{index}", "bad")

    assert log.entries == [{"path": "/m/0", "error": "bad"}, {"path": "/m/1", "error": "bad"}]
    assert (log.truncated, len(log)) == (3, 5)


def test_unread_paths_are_all_kept_beyond_the_cap() -> None:
    """Paths the walk could not read or follow are errors, capped; all are
    listed in ``unread`` or counted in ``unfollowed``."""
    log = ErrorLog(cap=1)
    log.add("/m/bad.mp4", "bad")
    for index in range(3):
        log.add_unread(f"/m/d{index}", "Permission denied")
    log.add_unfollowed("/m/link.mp4", "cannot follow symlink (Permission denied)")

    assert log.entries == [{"path": "/m/bad.mp4", "error": "bad"}]
    assert (log.truncated, len(log)) == (4, 5)
    assert (log.unread, log.unfollowed) == (["/m/d0", "/m/d1", "/m/d2"], 1)


def test_scan_error_message() -> None:
    """ScanError names the directory and the cause."""
    assert str(ScanError("/m", "Permission denied")) == "cannot scan /m: Permission denied"


def test_error_entries_cut_paths_to_error_path_chars_and_messages_to_error_text_chars() -> None:
    """A listed path keeps its last ERROR_PATH_CHARS - 1 characters behind ``…``,
    a message its first ERROR_TEXT_CHARS - 1 before ``…``; the store gets the
    whole path and the cut message; what fits exactly is left alone."""
    long_path = "/" + "p" * 5000 + "/end.mp4"
    long_text = "start " + "m" * 5000
    fits_path = "/" + "f" * (ERROR_PATH_CHARS - 1)
    fits_text = "t" * ERROR_TEXT_CHARS
    log = ErrorLog()

    log.add(long_path, long_text)
    log.add(fits_path, fits_text)
    log.add(fits_path + "x", fits_text + "x")

    cut, fits, over = log.entries
    assert cut["path"] == "…" + long_path[-(ERROR_PATH_CHARS - 1) :]
    assert cut["error"] == long_text[: ERROR_TEXT_CHARS - 1] + "…"
    assert (len(cut["path"]), len(cut["error"])) == (ERROR_PATH_CHARS, ERROR_TEXT_CHARS)
    assert fits == {"path": fits_path, "error": fits_text}
    assert (len(over["path"]), len(over["error"])) == (ERROR_PATH_CHARS, ERROR_TEXT_CHARS)
    assert over["path"] == "…" + fits_path[2:] + "x"
    assert log.take_unstored()[0] == (long_path, cut["error"])


def test_the_worst_error_entries_fit_the_result_byte_bound_and_nearly_fill_it() -> None:
    """Paths and messages of characters outside the BMP, each two ``\\uXXXX``
    escapes in the API's ASCII-only JSON (12 bytes): the worst case the bound
    is made for. They fit, and fill it to within the keys' allowance."""
    errors = ErrorLog()
    for number in range(DEFAULT_ERROR_CAP + 5):
        errors.add("/" + "\N{GRINNING FACE}" * 2000 + str(number), "\N{GRINNING FACE}" * 2000)

    encoded = json.dumps(errors.entries, ensure_ascii=True, separators=(",", ":"))

    assert len(errors.entries) == DEFAULT_ERROR_CAP
    assert len(encoded) <= RESULT_ERRORS_MAX_BYTES
    assert len(encoded) >= 0.95 * RESULT_ERRORS_MAX_BYTES
