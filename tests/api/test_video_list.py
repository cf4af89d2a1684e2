"""GET /api/v1/videos: search, filters, sort, their validation, and the metadata in the JSON."""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

from stoat_ferret.api._schemas import VideoOut
from stoat_ferret.api.app import create_app
from stoat_ferret.library import (
    METADATA_FIELDS,
    SORT_KEYS,
    VideoProbe,
    VideoRecord,
    VideoStore,
)
from tests.api.support import serving
from tests.library.support import a_video

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from stoat_ferret.settings import Settings

VIDEOS = "/api/v1/videos"

# path, size, width, height, seconds, video codec, audio codec, container
_ROWS: list[tuple[str, int, int | None, int | None, float | None, str, str | None, str]] = [
    ("/m/a/50% off.mp4", 10, 1920, 1080, 12.0, "h264", "aac", "mov,mp4,m4a,3gp,3g2,mj2"),
    ("/m/a/b/clip_1.mkv", 20, 1280, 720, 3.5, "hevc", "opus", "matroska,webm"),
    ("/m/a/b/clipX1.webm", 30, 640, 480, None, "vp9", None, "matroska,webm"),
    ("/m/ab/Holiday.MOV", 40, 3840, 2160, 60.0, "prores", "pcm_s16le", "mov,mp4,m4a,3gp,3g2,mj2"),
    ("/m/zeta.avi", 50, None, None, 1.0, "mpeg4", "mp3", "avi"),
]


def _stock(settings: Settings, rows: list[tuple[Any, ...]]) -> None:
    settings.database_path.parent.mkdir(parents=True, exist_ok=True)
    store = VideoStore.open(settings.database_path)
    try:
        store.upsert(
            [
                VideoRecord(
                    path=path,
                    directory=path.rpartition("/")[0],
                    filename=path.rpartition("/")[2],
                    size_bytes=size,
                    mtime_ns=1,
                    probe=VideoProbe(
                        width=width,
                        height=height,
                        frame_rate=Fraction(25),
                        duration_seconds=seconds,
                        duration_frames=None,
                        video_codec=video,
                        audio_codec=audio,
                        container_format=container,
                    ),
                )
                for path, size, width, height, seconds, video, audio, container in rows
            ]
        )
    finally:
        store.close()


@pytest.fixture
def stocked(settings: Settings) -> Settings:
    """Settings without scan roots (every stored video shown) whose database
    already holds the videos of :data:`_ROWS`."""
    _stock(settings, _ROWS)
    return attrs.evolve(settings, scan_roots=())


async def _get(settings: Settings, *queries: str | dict[str, Any]) -> list[httpx.Response]:
    async with serving(create_app(settings)) as client:
        return [
            await (
                client.get(VIDEOS, params=query)
                if isinstance(query, dict)
                else client.get(f"{VIDEOS}?{query}")
            )
            for query in queries
        ]


def _names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    body = response.json()
    return [video["filename"] for video in body["videos"]]


@pytest.mark.anyio
async def test_only_the_videos_under_the_scan_roots_are_shown(
    stocked: Settings, scan_root: Path
) -> None:
    """With scan roots, the list (and its total) and a video's own route show
    only the videos under them: those stored before the roots were narrowed
    stay stored, and show again without the roots."""
    _stock(stocked, [(f"{scan_root}/in.mp4", 60, 64, 48, 1.0, "h264", None, "mov,mp4")])
    narrowed = attrs.evolve(stocked, scan_roots=(scan_root,))
    with anyio.fail_after(20):
        async with serving(create_app(narrowed)) as client:
            listed = await client.get(VIDEOS)
            searched = await client.get(VIDEOS, params={"q": "zeta"})
            ids = {video["filename"]: video["id"] for video in listed.json()["videos"]}
            inside = await client.get(f"{VIDEOS}/{ids['in.mp4']}")
            outside = [await client.get(f"{VIDEOS}/{number}") for number in range(1, 6)]
            thumbnail = await client.get(f"{VIDEOS}/1/thumbnail")
        (everything,) = await _get(stocked, "")

    assert _names(listed) == ["in.mp4"]
    assert listed.json()["total"] == 1
    assert searched.json() == {"videos": [], "total": 0, "limit": 100, "offset": 0}
    assert inside.status_code == 200
    assert [response.status_code for response in outside] == [404] * 5
    assert thumbnail.status_code == 404
    assert everything.json()["total"] == len(_ROWS) + 1


@pytest.mark.anyio
async def test_search_takes_percent_and_underscore_literally(stocked: Settings) -> None:
    """q is a case-insensitive substring; % and _ match only themselves, never any text."""
    with anyio.fail_after(20):
        percent, underscore, case, nothing = await _get(
            stocked, {"q": "0%"}, {"q": "p_1"}, {"q": "HOLIDAY.mov"}, {"q": "%"}
        )

    assert _names(percent) == ["50% off.mp4"]
    assert _names(underscore) == ["clip_1.mkv"]
    assert _names(case) == ["Holiday.MOV"]
    assert _names(nothing) == ["50% off.mp4"]
    assert percent.json()["total"] == 1


@pytest.mark.anyio
async def test_filters_combine(stocked: Settings) -> None:
    """Codec, container, size, duration and directory filters, alone and together
    (a decimal may be written 3.5, 35e-1 or 12.)."""
    with anyio.fail_after(20):
        responses = await _get(
            stocked,
            "video_codec=hevc",
            "audio_codec=aac",
            "container=mp4",
            "container=webm&min_width=1000",
            "min_width=1280&max_width=1920&min_height=721",
            "max_height=720",
            "min_duration=3.5&max_duration=12",
            "min_duration=35e-1&max_duration=12.",
            "under=/m/a",
            "under=/m/a/b/&q=clip&sort=-size_bytes",
        )

    assert [_names(r) for r in responses] == [
        ["clip_1.mkv"],
        ["50% off.mp4"],
        ["50% off.mp4", "Holiday.MOV"],
        ["clip_1.mkv"],
        ["50% off.mp4"],
        ["clipX1.webm", "clip_1.mkv"],  # by path: X (0x58) before _ (0x5f)
        ["50% off.mp4", "clip_1.mkv"],
        ["50% off.mp4", "clip_1.mkv"],
        ["50% off.mp4", "clipX1.webm", "clip_1.mkv"],
        ["clipX1.webm", "clip_1.mkv"],
    ]


@pytest.mark.anyio
async def test_codec_and_container_names_match_in_any_case(stocked: Settings) -> None:
    """FFmpeg's names are lower case: HEVC, AAC and MP4 find what hevc, aac and
    mp4 do, rather than nothing."""
    with anyio.fail_after(20):
        responses = await _get(stocked, "video_codec=HEVC", "audio_codec=AAC", "container=Mp4")

    assert [_names(r) for r in responses] == [
        ["clip_1.mkv"],
        ["50% off.mp4"],
        ["50% off.mp4", "Holiday.MOV"],
    ]


@pytest.mark.anyio
async def test_sort_both_ways_with_paging(stocked: Settings) -> None:
    """sort=<field> ascends, sort=-<field> descends; limit/offset page the sorted list."""
    with anyio.fail_after(20):
        by_size, by_width, page = await _get(
            stocked, "sort=-size_bytes", "sort=width", "sort=-duration_seconds&limit=2&offset=1"
        )

    assert _names(by_size) == [
        "zeta.avi",
        "Holiday.MOV",
        "clipX1.webm",
        "clip_1.mkv",
        "50% off.mp4",
    ]
    assert _names(by_width) == [
        "zeta.avi",
        "clipX1.webm",
        "clip_1.mkv",
        "50% off.mp4",
        "Holiday.MOV",
    ]
    assert _names(page) == ["50% off.mp4", "clip_1.mkv"]
    assert (page.json()["total"], page.json()["limit"], page.json()["offset"]) == (5, 2, 1)


@pytest.mark.anyio
async def test_empty_values_are_no_filter(stocked: Settings) -> None:
    """A form's empty text fields (q=, video_codec=, under=...) select every video."""
    with anyio.fail_after(20):
        (response,) = await _get(stocked, "q=&video_codec=&audio_codec=&under=&container=")

    assert len(_names(response)) == 5


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("sort=mtime_ns", "sort"),
        ("sort=--path", "sort"),
        ("sort=path%20DESC", "sort"),
        ("sort=id;DROP%20TABLE%20videos", "sort"),
        ("min_width=-1", "min_width"),
        ("min_width=", "min_width"),
        ("max_height=wide", "max_height"),
        ("min_duration=nan", "min_duration"),
        ("max_duration=inf", "max_duration"),
        ("under=relative/dir", "under"),
        ("under=/m%00x", "under"),
        ("under=/m/a/..", "under"),
        ("under=/m/../m/a", "under"),
        ("q=" + "x" * 16_385, "q"),
        ("video_codec=" + "x" * 257, "video_codec"),
        ("colour=red", "colour"),
        ("limit=0", "limit"),
        ("limit=1_0", "limit"),
        ("limit=%2B5", "limit"),
        ("offset=%200%20", "offset"),
        ("min_duration=1_0.5", "min_duration"),
    ],
)
async def test_bad_parameters_are_422(
    shared_client: httpx.AsyncClient, query: str, field: str
) -> None:
    """An unknown sort field, a bad bound, a number not in plain digits, a
    relative directory (or one with a ``..``: the stored paths are resolved)
    or an unknown parameter: 422."""
    with anyio.fail_after(10):
        response = await shared_client.get(f"{VIDEOS}?{query}")

    assert response.status_code == 422, response.text
    locations = [error["loc"] for error in response.json()["detail"]]
    assert ["query", field] in locations, locations


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("offset=-1", "offset", "must be 0 or more"),
        ("limit=-5", "limit", "must be 1 or more"),
        ("max_duration=-2.5", "max_duration", "must be 0 or more"),
        ("offset=-x", "offset", "must be written in plain digits (0-9)"),
        ("offset=-0", "offset", "must be written in plain digits (0-9)"),  # not below 0
    ],
)
async def test_a_negative_number_is_told_its_least_value(
    shared_client: httpx.AsyncClient, query: str, field: str, message: str
) -> None:
    """A number written with a minus sign is refused for its bound, not for its
    writing: the client meant a number, and the message says which are taken."""
    with anyio.fail_after(10):
        response = await shared_client.get(f"{VIDEOS}?{query}")

    assert response.status_code == 422, response.text
    messages = {e["msg"] for e in response.json()["detail"] if e["loc"] == ["query", field]}
    assert messages == {f"Value error, {message}"}, response.text


@pytest.mark.anyio
async def test_every_sort_key_is_accepted(shared_client: httpx.AsyncClient) -> None:
    """Each documented key, ascending and descending, is a 200."""
    keys = [*SORT_KEYS, *(f"-{key}" for key in SORT_KEYS)]

    with anyio.fail_after(10):
        statuses = [(await shared_client.get(f"{VIDEOS}?sort={key}")).status_code for key in keys]

    assert statuses == [200] * len(keys)


@pytest.mark.anyio
async def test_the_openapi_schema_lists_the_parameters(shared_client: httpx.AsyncClient) -> None:
    """Clients can read every query parameter, and the sort keys, from /openapi.json."""
    with anyio.fail_after(10):
        schema = (await shared_client.get("/openapi.json")).json()

    parameters = {p["name"]: p for p in schema["paths"][VIDEOS]["get"]["parameters"]}
    assert set(parameters) == {
        "limit",
        "offset",
        "q",
        "video_codec",
        "audio_codec",
        "container",
        "min_width",
        "max_width",
        "min_height",
        "max_height",
        "min_duration",
        "max_duration",
        "under",
        "sort",
    }
    sort_schema = parameters["sort"]["schema"]
    assert set(sort_schema["enum"]) == {*SORT_KEYS, *(f"-{key}" for key in SORT_KEYS)}
    video_schema = schema["components"]["schemas"]["VideoOut"]["properties"]
    assert set(METADATA_FIELDS) <= set(video_schema)


def test_the_response_model_lists_every_key_of_a_video() -> None:
    """``VideoOut``, the video routes' response model, has exactly the keys of
    ``Video.to_json``, in order: FastAPI drops from every response a key the
    model lacks, and the model is written out by hand (it carries the examples)."""
    video = a_video()

    assert list(VideoOut.model_fields) == list(video.to_json())


@pytest.mark.anyio
async def test_a_scanned_video_shows_its_metadata(settings: Settings, video_dir: Path) -> None:
    """After a scan the list and the single video carry the editing metadata."""
    app = create_app(settings)

    with anyio.fail_after(30):
        async with serving(app) as client:
            accepted = await client.post(f"{VIDEOS}/scan", json={"path": str(video_dir)})
            await client.get(f"/api/v1/jobs/{accepted.json()['job_id']}/wait?timeout=20")
            listing = (await client.get(VIDEOS, params={"container": "mp4"})).json()
            one = (await client.get(f"{VIDEOS}/{listing['videos'][0]['id']}")).json()

    (video,) = listing["videos"]
    assert video == one
    assert video["container_format"] == "mov,mp4,m4a,3gp,3g2,mj2"
    assert (video["pixel_format"], video["bit_depth"]) == ("yuv420p", 8)
    assert (video["display_width"], video["display_height"]) == (64, 48)
    assert (video["video_stream_count"], video["audio_stream_count"]) == (1, 1)
    assert (video["audio_channels"], video["audio_sample_rate"]) == (2, 48_000)
    assert video["subtitle_stream_count"] == 0
    assert video["rotation"] is None
    assert video["bit_rate"] > 0
