"""Video lists: filters, search, sorts, and the plan each page takes (``_query.py``)."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import unicodedata
from typing import TYPE_CHECKING, Any

import pytest

from stoat_ferret.library import SORT_KEYS, VideoFilter, VideoStore, _query, _store
from stoat_ferret.library._keys import KEY_CHARS, filename_key
from stoat_ferret.library._query import (
    check_rows,
    count_query,
    driving_filter,
    filter_clause,
    outermost,
    page_query,
    walk_sort_index,
)
from stoat_ferret.library._rows import COLUMNS
from tests.library.support import record

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VideoStore]:
    opened = VideoStore.open(tmp_path / "videos.sqlite")
    yield opened
    opened.close()


def _library(store: VideoStore) -> None:
    """Six videos that differ in every filtered and sorted column."""
    rows = [
        ("/m/a/Été 100%.mp4", 10, 1920, 1080, 12.0, "h264", "aac", "mov,mp4,m4a,3gp,3g2,mj2"),
        ("/m/a/b/clip_1.mkv", 20, 1280, 720, 3.5, "hevc", "opus", "matroska,webm"),
        ("/m/a/b/clip-1.webm", 30, 640, 480, None, "vp9", None, "matroska,webm"),
        ("/m/ab/x.mov", 40, 3840, 2160, 60.0, "prores", "pcm_s16le", "mov,mp4,m4a,3gp,3g2,mj2"),
        ("/m/zeta.avi", 50, None, None, 1.0, "mpeg4", "mp3", "avi"),
        ("/n/ÉTÉ.mp4", 60, 720, 576, 30.0, "mpeg2video", "mp2", "mpeg"),
    ]
    store.upsert(
        [
            record(
                path,
                size=size,
                width=width,
                height=height,
                duration_seconds=seconds,
                video_codec=video,
                audio_codec=audio,
                container_format=container,
            )
            for path, size, width, height, seconds, video, audio, container in rows
        ]
    )


def _names(store: VideoStore, **where: Any) -> list[str]:
    videos, total = store.list_videos(100, 0, VideoFilter(**where))
    assert total == len(videos)
    return [v.filename for v in videos]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({}, {"Été 100%.mp4", "clip-1.webm", "clip_1.mkv", "x.mov", "zeta.avi", "ÉTÉ.mp4"}),
        ({"q": "CLIP"}, {"clip-1.webm", "clip_1.mkv"}),
        ({"q": "_"}, {"clip_1.mkv"}),
        ({"q": "%"}, {"Été 100%.mp4"}),
        ({"q": "p_1"}, {"clip_1.mkv"}),
        ({"q": "0%."}, {"Été 100%.mp4"}),
        ({"q": "été"}, {"Été 100%.mp4", "ÉTÉ.mp4"}),
        ({"q": "/m/a/b/"}, {"clip-1.webm", "clip_1.mkv"}),
        ({"q": "'; DROP TABLE videos; --"}, set()),
        ({"video_codec": "hevc"}, {"clip_1.mkv"}),
        ({"audio_codec": "aac"}, {"Été 100%.mp4"}),
        ({"container": "mp4"}, {"Été 100%.mp4", "x.mov"}),
        ({"container": "WEBM"}, {"clip-1.webm", "clip_1.mkv"}),
        ({"container": "matroska,webm"}, {"clip-1.webm", "clip_1.mkv"}),
        ({"container": "mp"}, set()),
        ({"min_width": 1280}, {"Été 100%.mp4", "clip_1.mkv", "x.mov"}),
        ({"max_width": 1280, "min_height": 576}, {"clip_1.mkv", "ÉTÉ.mp4"}),
        ({"max_height": 480}, {"clip-1.webm"}),
        ({"min_duration": 3.5, "max_duration": 30}, {"Été 100%.mp4", "clip_1.mkv", "ÉTÉ.mp4"}),
        ({"under": "/m/a"}, {"Été 100%.mp4", "clip-1.webm", "clip_1.mkv"}),
        ({"under": "/m/a/b/"}, {"clip-1.webm", "clip_1.mkv"}),
        ({"under": "/m/a/./b/../b"}, {"clip-1.webm", "clip_1.mkv"}),
        ({"under": "//m/a/b"}, {"clip-1.webm", "clip_1.mkv"}),
        ({"under": "///m//a/b/"}, {"clip-1.webm", "clip_1.mkv"}),
        ({"under": "//", "max_width": 700}, {"clip-1.webm"}),
        (
            {"under": "/", "min_width": 0},
            {"Été 100%.mp4", "clip-1.webm", "clip_1.mkv", "x.mov", "ÉTÉ.mp4"},
        ),
        ({"under": "/m/a", "q": "clip", "container": "matroska"}, {"clip-1.webm", "clip_1.mkv"}),
        ({"min_width": 2000, "max_width": 1000}, set()),
    ],
)
def test_filters(store: VideoStore, where: dict[str, Any], expected: set[str]) -> None:
    """Each filter alone and together; q is literal (% and _ included) and ignores case."""
    _library(store)

    names = _names(store, **where)

    assert set(names) == expected
    assert len(names) == len(expected)


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("filename", ["clip-1.webm", "clip_1.mkv", "ÉTÉ.mp4", "Été 100%.mp4", "x.mov", "zeta.avi"]),
        ("path", ["clip-1.webm", "clip_1.mkv", "Été 100%.mp4", "x.mov", "zeta.avi", "ÉTÉ.mp4"]),
        (
            "-size_bytes",
            ["ÉTÉ.mp4", "zeta.avi", "x.mov", "clip-1.webm", "clip_1.mkv", "Été 100%.mp4"],
        ),
        ("width", ["zeta.avi", "clip-1.webm", "ÉTÉ.mp4", "clip_1.mkv", "Été 100%.mp4", "x.mov"]),
        ("-height", ["x.mov", "Été 100%.mp4", "clip_1.mkv", "ÉTÉ.mp4", "clip-1.webm", "zeta.avi"]),
        (
            "duration_seconds",
            ["clip-1.webm", "zeta.avi", "clip_1.mkv", "Été 100%.mp4", "ÉTÉ.mp4", "x.mov"],
        ),
        ("-path", ["ÉTÉ.mp4", "zeta.avi", "x.mov", "Été 100%.mp4", "clip_1.mkv", "clip-1.webm"]),
    ],
)
def test_sorts(store: VideoStore, sort: str, expected: list[str]) -> None:
    """Ascending and descending; unknown values (NULL) come first ascending, last descending.

    Paths sort by code point; file names as a file manager orders them, letters
    in any case and with any accent together, so ``Été`` comes before ``x``."""
    _library(store)

    assert _names(store, sort=sort) == expected


# Each name's place in a sort by file name: numbers by value, any case and
# accent together, compatibility forms as their plain letters and digits.
_FILE_MANAGER_ORDER = [
    "1.mp4",
    "2 take.mp4",
    "10.mp4",
    "Ångström.mkv",
    "clip2.mp4",
    "Clip9.mp4",
    "clip10.mp4",
    "clip100.mp4",
    "Eclair.mp4",
    "éclair 2.mp4",
    "ÉCLAIR 10.mp4",
    "ﬁlm.mp4",  # the ligature U+FB01: "fi"
    "Film ⑫.mp4",  # a circled 12
    "Zeta.mp4",
    "Ωmega.mp4",
]


@pytest.mark.parametrize("descending", [False, True])
def test_filenames_sort_as_a_file_manager_orders_them(store: VideoStore, descending: bool) -> None:
    """``sort=filename``: numbers by their value (``clip9`` before ``clip10``),
    letters in any case and with any accent together, in either direction."""
    shuffled = _FILE_MANAGER_ORDER[::2] + _FILE_MANAGER_ORDER[1::2]
    store.upsert([record(f"/m/{name}") for name in shuffled])

    names = _names(store, sort="-filename" if descending else "filename")

    assert names == (_FILE_MANAGER_ORDER[::-1] if descending else _FILE_MANAGER_ORDER)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Clip10.MP4", "clip000210\0.mp4"),
        ("clip007", "clip00017\0"),
        ("take 000.mkv", "take 00010\0.mkv"),
        ("Été", "ete\0"),
        (unicodedata.normalize("NFD", "Été.MP4"), "ete\0.mp4"),
        ("ﬁ①", "fi00011\0"),
        ("한국어 2.mp4", "한국어 00012\0.mp4"),  # Hangul syllables stay whole,
        ("Straße", "strasse\0"),
        (".ΐ", ".\u03b9\0"),  # a Greek iota, its marks left out
        (b"a\xffb.mp4", "a\ufffdb\0.mp4"),  # a migration's bytes of a damaged file
    ],
)
def test_filename_key(name: str | bytes, key: str) -> None:
    """The key is folded, decomposed, without marks, spells each number's length
    first, and puts the name before its ending (a hidden file's dot is its name's)."""
    assert filename_key(name) == key


@pytest.mark.parametrize(
    ("name", "begins"),
    [
        ("\ufdfa" * 85 + ".mp4", unicodedata.normalize("NFKD", "\ufdfa") * 7),
        ("1 " * 125 + ".mp4", "00011 " * 21),
        ("a" * 251 + ".mp4", "a" * KEY_CHARS),
    ],
    ids=["18-a-character", "one-digit-numbers", "plain"],
)
def test_a_filename_key_is_never_far_longer_than_a_name(name: str, begins: str) -> None:
    """A name of 255 bytes that decomposes to 18 characters a character, or
    of 125 one-digit numbers (five characters each), keeps a key of
    KEY_CHARS characters, its beginning: the migration that writes the keys
    stays bounded."""
    key = filename_key(name)

    assert len(key) == KEY_CHARS
    assert key.startswith(begins[:KEY_CHARS])


@pytest.mark.parametrize("sort", ["updated_at", "-updated_at", "size_bytes", "-filename"])
def test_ties_are_broken_by_id_so_pages_never_overlap(store: VideoStore, sort: str) -> None:
    """Rows equal in the sort key come in id order (reversed with -): pages tile the list."""
    store.upsert([record(f"/m/{index:02d}.mp4", size=7) for index in range(9)])
    store.upsert([record(f"/m/{index:02d}.mp4", size=7) for index in range(9, 12)])
    where = VideoFilter(sort=sort)

    pages = [store.list_videos(5, offset, where)[0] for offset in (0, 5, 10)]

    ids = [video.id for page in pages for video in page]
    assert len(ids) == len(set(ids)) == 12
    if sort in ("size_bytes",):
        assert ids == sorted(ids)
    if sort == "-filename":
        assert ids == sorted(ids, reverse=True)


def test_total_counts_every_match_beyond_the_page(store: VideoStore) -> None:
    """The total is the number of matches, not the size of the page."""
    _library(store)

    page, total = store.list_videos(1, 1, VideoFilter(under="/m", sort="-size_bytes"))

    assert ([v.filename for v in page], total) == (["x.mov"], 5)


@pytest.mark.parametrize(
    ("where", "filtered"),
    [
        ({"within": ("/m", "/n")}, False),  # the roots hold every video
        ({"within": ("/",)}, False),
        ({"q": "."}, False),  # every path has one
        ({"within": ("/m",)}, True),  # /n's video is not in it
        ({"min_width": 1}, True),  # zeta.avi has no width
    ],
    ids=["roots-all", "root-slash", "q-all", "roots-some", "width"],
)
def test_a_filter_every_video_matches_is_left_out_of_the_page(
    store: VideoStore, monkeypatch: pytest.MonkeyPatch, where: dict[str, Any], filtered: bool
) -> None:
    """With every video a match (scan roots that hold them all, as most
    often), the page is read as with no filter, walking the sort key's index
    alone rather than checking each row an offset skips; the page is the same."""
    _library(store)
    asked: list[VideoFilter] = []

    def spy(columns: str, where: VideoFilter, *args: Any, **kwargs: Any) -> Any:
        asked.append(where)
        return page_query(columns, where, *args, **kwargs)  # the one _store imports

    monkeypatch.setattr(_store, "page_query", spy)
    chosen = VideoFilter(sort="-filename", **where)

    page, total = store.list_videos(2, 1, chosen)

    monkeypatch.undo()
    matching = store.list_videos(100, 0, chosen)[0]
    assert (page, total) == (matching[1:3], len(matching))
    assert asked == [chosen if filtered else VideoFilter(sort="-filename")]


MP4 = "mov,mp4,m4a,3gp,3g2,mj2"


def _codecs(store: VideoStore, *pairs: tuple[str, str, int]) -> None:
    """``count`` MP4 videos of each (video codec, audio codec)."""
    store.upsert(
        [
            record(
                f"/m/{video}-{audio}-{index}.mp4",
                video_codec=video,
                audio_codec=audio,
                container_format=MP4,
            )
            for video, audio, count in pairs
            for index in range(count)
        ]
    )


@pytest.mark.parametrize(
    ("where", "drive"),
    [
        ({"video_codec": "h264", "audio_codec": "ac3"}, "audio_codec"),  # ac3 is rare
        ({"video_codec": "prores", "audio_codec": "aac"}, "video_codec"),  # prores is
        ({"video_codec": "h264", "audio_codec": "aac"}, "video_codec"),  # a tie: the first
        ({"audio_codec": "ac3", "container": "mp4"}, "audio_codec"),
        ({"video_codec": "h264", "container": "mkv"}, "container"),  # none is Matroska
        ({"video_codec": "prores", "container": "mp4"}, "video_codec"),
        ({"video_codec": "h264"}, None),  # one: nothing to choose
        ({"audio_codec": "ac3", "min_width": 1}, None),
    ],
    ids=[
        "rare-audio",
        "rare-video",
        "tie",
        "audio-container",
        "no-container",
        "video-container",
        "one",
        "bound",
    ],
)
def test_of_several_equality_filters_the_rarest_finds_the_rows(
    store: VideoStore, where: dict[str, Any], drive: str | None
) -> None:
    """SQLite cannot tell which equality filter matches fewer rows: the one
    whose sample count is lowest is picked, counted up to DRIVE_SAMPLE."""
    _codecs(store, ("h264", "aac", 6), ("h264", "ac3", 2), ("prores", "aac", 2))
    formats = [MP4]

    with contextlib.closing(sqlite3.connect(store.path)) as raw:
        chosen = driving_filter(VideoFilter(**where), formats, raw.execute)

    assert chosen == drive


@pytest.mark.parametrize(
    ("pairs", "drive", "counted"),
    [
        # 100 h264, 40 ac3: each count past the sample, and the videos' past it
        (
            (("h264", "aac", 60), ("h264", "ac3", 40)),
            "audio_codec",
            ["3)", "3)", "4)", "30)", "30)", "31)", "300)", "300)"],
        ),
        # 40 each: a tie, counted to the end
        (
            (("h264", "ac3", 40), ("vp9", "aac", 1)),
            "video_codec",
            ["3)", "3)", "4)", "30)", "30)", "31)", "300)", "300)"],
        ),
        # 30 videos, each matching both: no count past 30, the videos' number
        ((("h264", "ac3", 30),), "video_codec", ["3)", "3)", "4)", "30)", "30)", "31)"]),
    ],
    ids=["fewer", "tie", "every-video"],
)
def test_equality_filters_that_reach_the_sample_are_counted_further(
    store: VideoStore,
    monkeypatch: pytest.MonkeyPatch,
    pairs: tuple[tuple[str, str, int], ...],
    drive: str,
    counted: list[str],
) -> None:
    """Two filters that both match DRIVE_SAMPLE or more are counted again, ten
    times as far, until one matches fewer, or the videos stored are no more
    than that; a true tie goes to the first."""
    _codecs(store, *pairs)
    monkeypatch.setattr(_query, "DRIVE_SAMPLE", 3)
    caps: list[str] = []

    with contextlib.closing(sqlite3.connect(store.path)) as raw:

        def execute(query: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
            caps.append(query.rsplit("LIMIT ", 1)[1])
            return raw.execute(query, args)

        chosen = driving_filter(VideoFilter(video_codec="h264", audio_codec="ac3"), None, execute)

    assert chosen == drive
    assert caps == counted


@pytest.mark.parametrize(
    ("drive", "index"),
    [("audio_codec", "videos_audio_codec"), ("video_codec", "videos_video_codec")],
)
def test_the_driving_filter_s_index_alone_is_used(
    store: VideoStore, tmp_path: Path, drive: str, index: str
) -> None:
    """The count and a picked page read the driving filter's index; the other
    equality filter is checked on the rows it finds (``+column``)."""
    where = VideoFilter(video_codec="h264", audio_codec="ac3", within=("/m",))
    count, count_args = count_query(where, None, drive)
    page, page_args = page_query(COLUMNS, where, None, walk=False, drive=drive)
    with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite")) as raw:
        counted = " | ".join(
            row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {count}", count_args)
        )

    assert index in counted, counted
    assert index in _plan(tmp_path, page, page_args)


def test_a_list_with_several_equality_filters_finds_exactly_their_videos(
    store: VideoStore,
) -> None:
    _codecs(store, ("h264", "aac", 6), ("h264", "ac3", 2), ("prores", "ac3", 3))

    page, total = store.list_videos(10, 0, VideoFilter(video_codec="h264", audio_codec="ac3"))

    assert total == 2
    assert {video.filename for video in page} == {"h264-ac3-0.mp4", "h264-ac3-1.mp4"}


def _plan(tmp_path: Path, query: str, args: tuple[Any, ...]) -> str:
    """The plan of a page query's page of ids (its subquery); its outer query
    is checked here to read only those rows, by id, and sort only them."""
    with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite")) as raw:
        plan = raw.execute(f"EXPLAIN QUERY PLAN {query}", (*args, 10, 0)).fetchall()
    outer = [(node, detail.split(" SUBQUERY")[0]) for node, parent, _, detail in plan if not parent]
    assert [detail for _, detail in outer] == [
        "SEARCH videos USING INTEGER PRIMARY KEY (rowid=?)",
        "LIST",
        "USE TEMP B-TREE FOR ORDER BY",
    ], plan
    page = {outer[1][0]}  # the subquery's node, then every node below it (q's own subquery)
    for node, parent, _, _ in plan:
        if parent in page:
            page.add(node)
    return " | ".join(detail for node, parent, _, detail in plan if parent in page)


@pytest.mark.parametrize("sort", [*SORT_KEYS, *(f"-{key}" for key in SORT_KEYS)])
@pytest.mark.parametrize(
    "where",
    [
        {},
        {"video_codec": "h264", "min_width": 640},
        {"container": "mp4", "max_duration": 60},
        {"under": "/m", "audio_codec": "aac"},
        {"q": "clip", "min_height": 480},
        {"within": ("/m", "/n/x")},
        {"within": ("/m", "/n/x"), "min_width": 640},
    ],
    ids=["none", "codec", "container", "under", "q", "roots", "roots-width"],
)
def test_a_walked_page_reads_the_sort_index(
    store: VideoStore, tmp_path: Path, sort: str, where: dict[str, Any]
) -> None:
    """Walking, every sort order reads its index in order: no temporary B-tree sorts rows."""
    query, args = page_query(COLUMNS, VideoFilter(sort=sort, **where), ["mov,mp4,m4a"], walk=True)

    details = _plan(tmp_path, query, args)

    assert "TEMP B-TREE" not in details, details
    assert "INDEX" in details, details


@pytest.mark.parametrize(
    "where",
    [
        {},
        {"within": ("/m",)},
        {"within": ("/m", "/n/x", "/o")},
        {"under": "/m/a", "within": ("/m", "/n")},
    ],
    ids=["alone", "one-root", "three-roots", "under-roots"],
)
def test_a_search_s_count_reads_the_search_index_alone(
    store: VideoStore, tmp_path: Path, where: dict[str, Any]
) -> None:
    """A search's count, with the roots and ``under`` or not, reads the
    search index alone, each path's key and the path checked on its entry
    (schema 13): no id of a match gathered first, no row read (900,000
    videos all matching: 0.8 s before, 0.1 s)."""
    query, args = count_query(VideoFilter(q="clip", **where), None)
    with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite")) as raw:
        details = " | ".join(row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {query}", args))

    assert details == "SCAN videos USING COVERING INDEX videos_search"


@pytest.mark.parametrize("sort", ["path", "-updated_at", "filename"])
def test_a_walked_search_checks_each_row_and_gathers_no_ids(
    store: VideoStore, tmp_path: Path, sort: str
) -> None:
    """A walked first page of a search checks each row it reads: it does not
    gather the id of every match first (which, for a search most videos
    match, costs more than the page's rows); deep in the matches, it does."""
    where = VideoFilter(q="clip", within=("/m", "/n"), sort=sort)
    query, args = page_query(COLUMNS, where, None, walk=True, searched=True)
    deep_query, deep_args = page_query(COLUMNS, where, None, walk=True)

    details = _plan(tmp_path, query, args)
    deep = _plan(tmp_path, deep_query, deep_args)

    assert "videos_search" not in details, details
    assert "LIST SUBQUERY" not in details, details
    assert "COVERING INDEX videos_search" in deep, deep  # deep in the matches: their ids


def test_a_walk_checks_rows_while_it_reads_a_small_share_of_the_matches() -> None:
    """A walk up to the ``rows``-th match reads about ``rows * stored /
    matches`` rows: checked each while that is at most a tenth of the matches."""
    assert check_rows(matches=225_000, stored=900_000, rows=100)
    assert check_rows(matches=225_000, stored=900_000, rows=5_625)
    assert not check_rows(matches=225_000, stored=900_000, rows=5_626)
    assert not check_rows(matches=225_000, stored=900_000, rows=54_100)


@pytest.mark.parametrize(
    ("where", "plan"),
    [
        ({"video_codec": "h264", "min_width": 640}, "COVERING INDEX videos_video_codec"),
        ({"container": "mp4", "max_duration": 60}, "COVERING INDEX videos_container"),
        ({"audio_codec": "aac"}, "INDEX videos_audio_codec (audio_codec=?)"),
        ({"min_width": 640}, "COVERING INDEX videos_fingerprint (path>? AND path<?)"),
        ({"max_height": 720}, "COVERING INDEX videos_fingerprint (path>? AND path<?)"),
        (
            {"min_duration": 60, "max_duration": 600, "min_width": 640},
            "COVERING INDEX videos_fingerprint (path>? AND path<?)",
        ),
        ({}, "COVERING INDEX"),
    ],
    ids=["codec", "container", "audio", "width", "height", "duration-width", "roots-only"],
)
def test_a_count_within_the_roots_reads_the_filter_s_index(
    store: VideoStore, tmp_path: Path, where: dict[str, Any], plan: str
) -> None:
    """A count with a video codec or container filter reads that filter's
    index alone, the roots checked there (it ends with the path), not each
    row of the roots' range, which most often holds every video; with an
    audio codec, whose index does not end with the path, SQLite chooses as
    before (the roots may have been narrowed to a few of the rows stored).
    Width, height and duration bounds are checked in the roots' range of the
    path index, which carries them (schema 8): no row is read."""
    condition, args = filter_clause(VideoFilter(within=("/m",), **where), ["mov,mp4,m4a"])
    query = f"SELECT count(*) FROM videos{condition}"
    with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite")) as raw:
        details = " | ".join(row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {query}", args))

    assert plan in details, details


@pytest.mark.parametrize("sort", ["-duration_seconds", "filename", "updated_at"])
@pytest.mark.parametrize(
    ("where", "index"),
    [
        ({"video_codec": "h264", "min_width": 640}, "videos_video_codec"),
        ({"container": "mp4", "max_duration": 60}, "videos_container"),
        ({"audio_codec": "aac"}, "videos_audio_codec"),
        ({"under": "/m"}, "path>? AND path<?"),
    ],
)
def test_a_picked_page_reads_the_filter_index(
    store: VideoStore, tmp_path: Path, sort: str, where: dict[str, Any], index: str
) -> None:
    """Not walking, the filters' index picks the rows, which are then sorted."""
    query, args = page_query(COLUMNS, VideoFilter(sort=sort, **where), ["mov,mp4,m4a"], walk=False)

    details = _plan(tmp_path, query, args)

    assert index in details, details
    assert "TEMP B-TREE FOR ORDER BY" in details, details


def test_the_plan_follows_the_share_of_matches() -> None:
    """Walk when the page's rows are found within the rows a filter would pick."""
    assert walk_sort_index(matches=50_000, stored=100_000, rows=100)
    assert walk_sort_index(matches=3_163, stored=100_000, rows=100)
    assert not walk_sort_index(matches=3_162, stored=100_000, rows=100)
    assert not walk_sort_index(matches=100, stored=100_000, rows=100)
    assert walk_sort_index(matches=10, stored=10, rows=100) is False


@pytest.mark.parametrize(
    ("walk", "rowwise"), [(True, True), (True, False), (False, False)], ids=["rows", "ids", "pick"]
)
def test_both_plans_give_the_same_pages(
    store: VideoStore, walk: bool, rowwise: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever plan is taken, the page and the total are the same (a walk
    checking a search on each row or against the matching ids alike)."""
    _library(store)
    monkeypatch.setattr(_query, "walk_sort_index", lambda matches, stored, rows: walk)
    monkeypatch.setattr(_query, "check_rows", lambda matches, stored, rows: rowwise)
    wheres = [
        VideoFilter(container="mp4", sort="-size_bytes"),
        VideoFilter(under="/m", min_width=700, sort="filename"),
        VideoFilter(q="clip", sort="-duration_seconds"),
        VideoFilter(video_codec="hevc", audio_codec="opus", sort="width"),
        VideoFilter(under="/m/a", sort="-path"),
        VideoFilter(within=("/m/a/b", "/n"), sort="-size_bytes"),
        VideoFilter(under="/m", within=("/m/a/b", "/n"), sort="filename"),
        VideoFilter(within=("/m/a/b", "/n"), sort="path"),
        VideoFilter(within=("/m/a/b", "/n"), sort="-path"),
        VideoFilter(q="clip", within=("/m/a/b", "/n"), sort="filename"),
        VideoFilter(q="e", under="/m", within=("/m", "/n"), sort="-path"),
    ]

    pages = [store.list_videos(2, 1, where) for where in wheres]

    assert [([v.filename for v in page], total) for page, total in pages] == [
        (["Été 100%.mp4"], 2),
        (["Été 100%.mp4", "x.mov"], 3),
        (["clip-1.webm"], 2),
        ([], 1),
        (["clip_1.mkv", "clip-1.webm"], 3),
        (["clip-1.webm", "clip_1.mkv"], 3),
        (["clip_1.mkv"], 2),
        (["clip_1.mkv", "ÉTÉ.mp4"], 3),  # the roots' rows, from the first root's on
        (["clip_1.mkv", "clip-1.webm"], 3),
        (["clip_1.mkv"], 2),
        (["clip-1.webm"], 2),  # "zeta" and "webm"; "Été" is no "e"
    ]


@pytest.mark.parametrize("where", [{"under": "/m"}, {"within": ("/m",)}], ids=["under", "within"])
def test_a_directory_holds_nothing_of_a_sibling_its_name_begins(
    store: VideoStore, where: dict[str, Any]
) -> None:
    """``/m`` holds ``/m/a.mp4``, not the sibling file ``/m0.mp4`` nor the
    directory ``/m0`` ('0' follows '/' in code points: the range of ``/m/``
    ends just before ``/m0``)."""
    store.upsert([record(path) for path in ("/m/a.mp4", "/m0.mp4", "/m0/b.mp4", "/m.mp4")])

    assert _names(store, **where) == ["a.mp4"]


def test_a_page_past_the_last_match_reads_no_rows_and_a_huge_offset_walks_no_further(
    store: VideoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An offset past the matches gives an empty page and the total without a page
    query; an offset near the matches asks the plan chooser about the matches at most
    (not ``limit + offset``: an offset near 2**63 made every such page a full sort)."""
    _library(store)
    asked: list[int] = []
    built: list[str] = []

    def chooser(matches: int, stored: int, rows: int) -> bool:
        asked.append(rows)
        return walk_sort_index(matches, stored, rows)

    def recording(*args: Any, **kwargs: Any) -> tuple[str, tuple[Any, ...]]:
        built.append(page_query(*args, **kwargs)[0])
        return page_query(*args, **kwargs)

    monkeypatch.setattr(_query, "walk_sort_index", chooser)
    monkeypatch.setattr(_store, "page_query", recording)
    where = VideoFilter(container="mp4", sort="-size_bytes")
    past = store.list_videos(10, 2**63 - 1, where)
    none = store.list_videos(0, 0, where)
    near = store.list_videos(10, 1, where)

    assert (past, none) == (([], 2), ([], 2))
    assert [video.filename for video in near[0]] == ["Été 100%.mp4"]
    assert asked == [2]
    assert len(built) == 1


@pytest.mark.parametrize(
    ("sort", "where", "search"),
    [
        ("width", {"min_width": 700, "video_codec": "h264"}, "videos_width (width>?)"),
        ("-width", {"min_width": 700, "max_width": 4000}, "videos_width (width>? AND width<?)"),
        ("height", {"max_height": 1080, "container": "mp4"}, "videos_height (height<?)"),
        (
            "-duration_seconds",
            {"min_duration": 2, "max_duration": 100, "under": "/m"},
            "videos_duration (duration_seconds>? AND duration_seconds<?)",
        ),
    ],
)
def test_a_walk_filtered_on_its_sort_key_seeks_the_range(
    store: VideoStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sort: str,
    where: dict[str, Any],
    search: str,
) -> None:
    """Walking the sort index with bounds on that same key, the store's page
    query searches the range of the index instead of scanning it whole."""
    _library(store)
    built: list[tuple[str, tuple[Any, ...]]] = []

    def recording(*args: Any, **kwargs: Any) -> tuple[str, tuple[Any, ...]]:
        built.append(page_query(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(_query, "walk_sort_index", lambda matches, stored, rows: True)
    monkeypatch.setattr(_store, "page_query", recording)
    store.list_videos(10, 0, VideoFilter(sort=sort, **where))
    [(query, args)] = built

    details = _plan(tmp_path, query, args)

    assert re.search(f"SEARCH videos USING (COVERING )?INDEX {re.escape(search)}", details), details
    assert "TEMP B-TREE" not in details, details


def test_search_matches_composed_and_decomposed_accents(store: VideoStore) -> None:
    """q and the paths are NFC-normalised before case folding: a decomposed (NFD)
    name, as macOS writes it, is found by a precomposed ``été``, and back."""
    decomposed = unicodedata.normalize("NFD", "/m/ÉTÉ plage.mp4")
    composed = "/m/Été ville.mp4"
    store.upsert([record(decomposed), record(composed)])
    plage = unicodedata.normalize("NFD", "ÉTÉ plage.mp4")  # stored as written

    assert set(_names(store, q="été")) == {plage, "Été ville.mp4"}
    assert _names(store, q=unicodedata.normalize("NFD", "été v")) == ["Été ville.mp4"]
    assert _names(store, q="été p") == [plage]


def test_outermost_roots_drop_those_inside_another_and_repeats() -> None:
    """A root inside another (or given twice) adds nothing to the list's
    scope: without it the roots' ranges are disjoint. A sibling whose name
    merely begins like another root's is not inside it."""
    assert outermost(["/m/a", "/m", "/m", "/n/x", "/m a", "/n/x/y"]) == ("/m", "/m a", "/n/x")
    assert outermost(["/srv", "/"]) == ("/",)
    assert outermost([]) == ()


@pytest.mark.parametrize(
    "within",
    [("/m/a", "/n"), ("/m", "/m/a/b", "/n"), ("/m/a/b", "/m/ab", "/nothing")],
    ids=["two", "one inside another", "three"],
)
def test_a_count_within_several_roots_counts_each_video_once(
    store: VideoStore, tmp_path: Path, within: tuple[str, ...]
) -> None:
    """Several roots are counted as a sum of one count a root, each reading
    its own range of an index (no OR of ranges, whose de-duplication cost
    SQLite more), and still count each video once, as the page lists them."""
    _library(store)
    where = VideoFilter(within=within, min_width=1)

    page, total = store.list_videos(100, 0, where)
    query, args = count_query(where, ["mov,mp4,m4a"])
    with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite")) as raw:
        plan = [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {query}", args)]

    assert total == len(page)
    assert total == len({video.id for video in page})
    assert not any("MULTI-INDEX OR" in step for step in plan), plan
    assert sum("path>? AND path<?" in step for step in plan) == len(outermost(within)), plan


@pytest.mark.parametrize(
    ("where", "index"),
    [
        ({"q": "clip"}, "videos_search"),
        ({"video_codec": "h264"}, "videos_video_codec"),
        ({"audio_codec": "aac"}, "videos_audio_codec"),
    ],
    ids=["search", "codec", "audio-codec"],
)
def test_a_count_driven_by_another_index_reads_it_once_whatever_the_roots(
    tmp_path: Path, where: dict[str, Any], index: str
) -> None:
    """A search's or a codec filter's count reads its index once, the roots
    checked there: a sum of one count a root would read it once a root (the
    audio codec's: a review measured 488 ms against 56 ms, 200,000 videos in six roots)."""
    VideoStore.open(tmp_path / "videos.sqlite").close()
    query, args = count_query(VideoFilter(within=("/m", "/n", "/o"), **where), None)
    with contextlib.closing(sqlite3.connect(tmp_path / "videos.sqlite")) as raw:
        plan = [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {query}", args)]

    assert sum(index in step for step in plan) == 1, plan
