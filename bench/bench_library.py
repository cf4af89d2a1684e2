"""Library list benchmarks: one JSON object per line on stdout, one line per query.

A library of 100,000 stored videos (5,000 with ``quick=True``), spread over
100 directories, four containers and codecs, four widths and random sizes and
durations. Each figure times :meth:`VideoStore.list_videos` (one page of 100,
its ``total`` and the rows made into :class:`Video` values) for one
:class:`VideoFilter`, the first page or (``*_deep``) one 40 % of the library
in, against a plain ``SELECT *`` of the same 100 rows by id
(a second connection to the same file). Information only: no target. Every rep times the
baseline and then the list, back to back; figures are medians of ``reps``.

``ratio`` is list time / plain time (how many plain page reads a filtered,
sorted, counted page costs).
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

from bench._common import emit
from stoat_ferret.library import VideoFilter, VideoProbe, VideoRecord, VideoStore

PAGE: Final = 100
WRITE_BATCH: Final = 10_000

_KINDS: Final = [
    (".mp4", "h264", "aac", "mov,mp4,m4a,3gp,3g2,mj2"),
    (".mkv", "hevc", "opus", "matroska,webm"),
    (".mov", "prores", "pcm_s16le", "mov,mp4,m4a,3gp,3g2,mj2"),
    (".avi", "mpeg4", "mp3", "avi"),
]
_WIDTHS: Final = [(640, 360), (1280, 720), (1920, 1080), (3840, 2160)]

# name -> the filter of one figure, and the offset of its page (as a fraction of the library).
_QUERIES: Final[dict[str, tuple[VideoFilter, float]]] = {
    "sorted": (VideoFilter(sort="-duration_seconds"), 0),
    "filtered_sorted": (
        VideoFilter(container="mp4", min_width=1280, sort="-duration_seconds"),
        0,
    ),
    "codec_sorted": (VideoFilter(video_codec="hevc", sort="size_bytes"), 0),
    "under_sorted": (VideoFilter(under="/lib/d042", sort="filename"), 0),
    "search_sorted": (VideoFilter(q="CLIP0012", sort="-updated_at"), 0),
    # A search every video matches, within the roots, as the dashboard's first letters are.
    "search_broad_roots_sorted": (VideoFilter(q="c", within=("/lib",), sort="-updated_at"), 0),
    # A page deep in a bound that matches about half the library, sorted by another key.
    "bound_sorted_deep": (VideoFilter(min_duration=1800, sort="-size_bytes"), 0.4),
    # Limited to roots that hold every video (the scan roots), with a width bound.
    "roots_width_sorted": (VideoFilter(within=("/lib", "/srv"), min_width=1920, sort="path"), 0),
}


def main(quick: bool = False) -> None:
    """Build the library once, then print one JSON line per query.

    Args:
        quick: A smoke run: 5,000 videos and two reps.
    """
    count = 5_000 if quick else 100_000
    reps = 2 if quick else 7
    with tempfile.TemporaryDirectory(prefix="stoat-bench-") as scratch:
        path = Path(scratch) / "library.sqlite"
        store = VideoStore.open(path)
        try:
            built = time.perf_counter()
            _fill(store, count)
            build_s = time.perf_counter() - built
            with contextlib.closing(sqlite3.connect(path)) as plain:
                for name, (where, deep) in _QUERIES.items():
                    offset = int(count * deep)
                    figure = _bench(store, plain, name, where, offset, count, reps)
                    emit(**figure, build_s=round(build_s, 1), quick=quick)
        finally:
            store.close()


def _fill(store: VideoStore, count: int) -> None:
    rng = random.Random(21)
    for start in range(0, count, WRITE_BATCH):
        records = []
        for index in range(start, min(count, start + WRITE_BATCH)):
            suffix, video, audio, container = _KINDS[index % len(_KINDS)]
            width, height = _WIDTHS[rng.randrange(len(_WIDTHS))]
            directory = f"/lib/d{index % 100:03d}"
            filename = f"Clip{index:06d}{suffix}"
            records.append(
                VideoRecord(
                    path=f"{directory}/{filename}",
                    directory=directory,
                    filename=filename,
                    size_bytes=rng.randrange(1, 10**10),
                    mtime_ns=index,
                    probe=VideoProbe(
                        width=width,
                        height=height,
                        frame_rate=Fraction(25),
                        duration_seconds=round(rng.uniform(1, 3600), 3),
                        duration_frames=None,
                        video_codec=video,
                        audio_codec=audio,
                        container_format=container,
                        video_stream_count=1,
                        audio_stream_count=1,
                    ),
                )
            )
        store.upsert(records)


def _bench(
    store: VideoStore,
    connection: sqlite3.Connection,
    name: str,
    where: VideoFilter,
    offset: int,
    count: int,
    reps: int,
) -> dict[str, Any]:
    listed: list[float] = []
    plain: list[float] = []
    total = 0
    for _ in range(reps):
        videos, total = store.list_videos(PAGE, offset, where)
        ids = [video.id for video in videos]
        query = f"SELECT * FROM videos WHERE id IN ({', '.join('?' * len(ids))})"
        started = time.perf_counter()
        rows = connection.execute(query, ids).fetchall()
        plain.append(time.perf_counter() - started)
        if len(rows) != len(ids):
            raise RuntimeError(f"{name}: the plain SELECT read {len(rows)} of {len(ids)} rows")
        started = time.perf_counter()
        store.list_videos(PAGE, offset, where)
        listed.append(time.perf_counter() - started)
    median = statistics.median(listed)
    baseline = statistics.median(plain)
    return {
        "bench": f"library_list_{name}",
        "videos": count,
        "page": PAGE,
        "offset": offset,
        "matches": total,
        "median_ms": round(median * 1000, 3),
        "baseline": "plain_select_same_page_by_id",
        "baseline_median_ms": round(baseline * 1000, 3),
        "ratio": round(median / baseline, 1),
        "info": True,
        "reps": reps,
    }
