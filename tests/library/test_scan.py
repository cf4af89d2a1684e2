"""The scan job handler: counts, rescans, progress, errors and cancellation."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import sys
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import attrs
import pytest

from stoat_ferret.jobs import JobStatus, JobSupervisor
from stoat_ferret.library import (
    ProbeError,
    ProbeProcesses,
    ScanError,
    Stop,
    StoreError,
    ThreadPriority,
    VideoLibrary,
    VideoProbe,
    VideoRecord,
    _ondisk,
    _scan,
    _scanerrors,
    _scanprobe,
    _walk,
    make_scan_handler,
    parse_payload,
    probe_video,
    walk_videos,
)
from stoat_ferret.library._regularfile import CHANGED_SINCE_FOUND
from stoat_ferret.library._schema import MIGRATIONS
from tests.library.support import listed_path, make_context, path_of, record, watched_fifo
from tests.videos import copy_video, make_video

# Real scans probe at normal priority: SCHED_IDLE probe threads can starve for
# seconds on a loaded machine (the priority test sets its own).
NORMAL = ThreadPriority.NORMAL

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

    from stoat_ferret.jobs import JobContext
    from stoat_ferret.library._scanprobe import Unprobed
    from tests.videos import EncodedVideo

    ScanHandler: TypeAlias = Callable[[JobContext], Awaitable[dict[str, Any]]]

pytestmark = pytest.mark.anyio

TIMEOUT = 20


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


class ProbeSpy:
    """Replaces the scan's probe_video; records every call, then probes for real."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self.before: Callable[[str, int], None] | None = None
        monkeypatch.setattr(_scanprobe, "probe_video", self)

    def cancel_at(
        self, count: int, scope: anyio.CancelScope, then: Callable[[], None] | None = None
    ) -> None:
        """Cancel ``scope`` from the probe thread as its ``count``-th probe
        begins (that file is still probed), then call ``then`` there."""
        token = anyio.lowlevel.current_token()  # probe threads are not anyio's workers

        def cancel_during(path: str, calls: int) -> None:
            if calls == count:
                anyio.from_thread.run_sync(scope.cancel, token=token)
                if then is not None:
                    then()

        self.before = cancel_during

    def __call__(
        self, name: str, *, dir_fd: int | None = None, expect: tuple[int, int] | None = None
    ) -> VideoProbe:
        path = path_of(name, dir_fd)
        self.calls.append(path)
        if self.before is not None:
            self.before(path, len(self.calls))
        return probe_video(name, dir_fd=dir_fd, expect=expect)


def _fill(media: Path, clip: EncodedVideo, names: list[str]) -> list[str]:
    paths = []
    for name in names:
        target = media / name
        target.parent.mkdir(parents=True, exist_ok=True)
        paths.append(str(copy_video(clip, target).path))
    return paths


async def test_first_scan_adds_every_video_and_reports_bad_files(
    library: VideoLibrary, media: Path, clips: dict[str, EncodedVideo]
) -> None:
    """Good videos are added with their probe; bad ones are errors and the job completes."""
    copy_video(clips["h264_aac.mp4"], media / "a.mp4")
    (media / "sub").mkdir()
    copy_video(clips["vp9_opus.webm"], media / "sub" / "b.webm")
    (media / "notes.txt").write_text("not a video, not an error")
    (media / "fake.mp4").write_text("a text file named like a video")
    (media / "empty.mkv").write_bytes(b"")
    handler = make_scan_handler(library, probe_priority=NORMAL, probe_threads=2)

    with anyio.fail_after(TIMEOUT):
        result = await handler(make_context(media))
        videos, total = await library.list_videos()

    assert {k: v for k, v in result.items() if k != "errors"} == {
        "found": 4,
        "added": 2,
        "updated": 0,
        "unchanged": 0,
        "failed_unchanged": 0,
        "removed": 0,
        "probed": 4,
        "probe_errors": 2,
        "errors_total": 2,
        "errors_truncated": 0,
    }
    assert [e["path"] for e in result["errors"]] == [
        str(media / "empty.mkv"),
        str(media / "fake.mp4"),
    ]
    assert all("not a readable media file" in e["error"] for e in result["errors"])
    assert total == 2
    assert [(v.path, v.video_codec, v.audio_codec) for v in videos] == [
        (str(media / "a.mp4"), "h264", "aac"),
        (str(media / "sub" / "b.webm"), "vp9", "opus"),
    ]
    assert videos[0].size_bytes == (media / "a.mp4").stat().st_size
    assert videos[0].mtime_ns == (media / "a.mp4").stat().st_mtime_ns


async def test_rescan_of_an_unchanged_tree_probes_nothing(
    library: VideoLibrary, media: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second scan finds every file unchanged and makes no probe call at all."""
    _fill(media, clip, ["a.mp4", "b.mp4", "x/c.mp4"])
    handler = make_scan_handler(library, probe_priority=NORMAL)
    spy = ProbeSpy(monkeypatch)

    with anyio.fail_after(TIMEOUT):
        first = await handler(make_context(media))
        probed_first = len(spy.calls)
        second = await handler(make_context(media))

    assert (first["added"], probed_first) == (3, 3)
    assert (second["found"], second["unchanged"]) == (3, 3)
    assert (second["added"], second["updated"]) == (0, 0)
    assert len(spy.calls) == probed_first


async def test_changed_files_are_probed_again(
    library: VideoLibrary, media: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new mtime alone, or new content, makes a file 'updated' and re-probed."""
    touched, rewritten, same = _fill(media, clip, ["touched.mp4", "rewritten.mp4", "same.mp4"])
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(media))
        before = await library.get_video_by_path(rewritten)
    stat = os.stat(touched)
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    longer = make_video(rewritten, frames=20)
    spy = ProbeSpy(monkeypatch)

    with anyio.fail_after(TIMEOUT):
        result = await handler(make_context(media))
        after = await library.get_video_by_path(rewritten)

    assert (result["updated"], result["unchanged"], result["added"]) == (2, 1, 0)
    assert sorted(spy.calls) == sorted([touched, rewritten])
    assert same not in spy.calls
    assert before is not None
    assert after is not None
    assert after.id == before.id
    assert after.duration_frames == longer.frames == 20
    assert after.size_bytes == longer.size_bytes


async def test_deleted_files_are_removed(
    library: VideoLibrary, media: Path, clip: EncodedVideo
) -> None:
    """Rows whose file is gone are deleted and counted."""
    kept, gone = _fill(media, clip, ["kept.mp4", "sub/gone.mp4"])
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(media))
        os.remove(gone)
        result = await handler(make_context(media))
        videos, _ = await library.list_videos()

    assert (result["removed"], result["unchanged"], result["found"]) == (1, 1, 1)
    assert [v.path for v in videos] == [kept]


async def test_the_comparison_with_the_store_runs_in_a_worker_thread(
    library: VideoLibrary, media: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Comparing a large tree with its rows takes long: never on the event loop."""
    _, gone = _fill(media, clip, ["kept.mp4", "gone.mp4"])
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(media))
    os.remove(gone)
    _fill(media, clip, ["new.mp4"])
    threads: list[threading.Thread] = []
    compare = _scanprobe.compare

    def recording_compare(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return compare(*args, **kwargs)

    monkeypatch.setattr(_scan, "compare", recording_compare)
    with anyio.fail_after(TIMEOUT):
        result = await handler(make_context(media))

    assert (result["added"], result["removed"], result["unchanged"]) == (1, 1, 1)
    assert len(threads) == 1
    assert threads[0] is not threading.main_thread()  # the loop's thread in these tests


async def test_non_recursive_scan_touches_only_the_directory_own_files(
    library: VideoLibrary, media: Path, clip: EncodedVideo
) -> None:
    """recursive=False neither adds nor removes anything below the directory."""
    top, nested = _fill(media, clip, ["top.mp4", "sub/nested.mp4"])
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(media, recursive=True))
        os.remove(top)
        os.remove(nested)
        flat = await handler(make_context(media, recursive=False))
        left = [v.path for v in (await library.list_videos())[0]]
        deep = await handler(make_context(media, recursive=True))

    assert (flat["found"], flat["removed"]) == (0, 1)
    assert left == [nested]
    assert deep["removed"] == 1


async def test_sibling_directory_is_out_of_scope(
    library: VideoLibrary, tmp_path: Path, clip: EncodedVideo
) -> None:
    """Scanning <dir> never removes the rows of <dir>-evil."""
    (tmp_path / "lib").mkdir()
    (evil,) = _fill(tmp_path / "lib-evil", clip, ["x.mp4"])
    handler = make_scan_handler(library, probe_priority=NORMAL)

    with anyio.fail_after(TIMEOUT):
        await handler(make_context(tmp_path / "lib-evil"))
        result = await handler(make_context(tmp_path / "lib"))
        videos, _ = await library.list_videos()

    assert result["removed"] == 0
    assert [v.path for v in videos] == [evil]


async def test_progress_is_reported_per_file_up_to_one(
    library: VideoLibrary, media: Path, clip: EncodedVideo
) -> None:
    """Fractions rise to 1.0 with 'probed k/n files' messages."""
    _fill(media, clip, [f"{i}.mp4" for i in range(4)])
    progress: list[tuple[float, str | None]] = []

    with anyio.fail_after(TIMEOUT):
        await make_scan_handler(library, probe_priority=NORMAL)(
            make_context(media, progress=progress)
        )

    fractions = [fraction for fraction, _ in progress]
    assert fractions == sorted(fractions)
    assert progress[0] == (0.0, "probed 0/4 files")
    assert progress[-1] == (1.0, "probed 4/4 files")
    assert {message for _, message in progress} == {f"probed {i}/4 files" for i in range(5)}


async def test_a_rescan_progress_counts_the_files_it_probes_and_says_the_unchanged(
    library: VideoLibrary, media: Path, clip: EncodedVideo
) -> None:
    """A rescan probes only what changed: its messages count those, and name
    the unchanged ones apart, while the fraction counts every file found."""
    paths = _fill(media, clip, [f"{i}.mp4" for i in range(4)])
    scan = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await scan(make_context(media))
    _fill(media, clip, ["new.mp4"])
    os.utime(paths[0], ns=(1, 1))  # changed: probed again
    progress: list[tuple[float, str | None]] = []

    with anyio.fail_after(TIMEOUT):
        result = await scan(make_context(media, progress=progress))

    assert (result["probed"], result["unchanged"]) == (2, 3)
    assert progress[0] == (3 / 5, "probed 0/2 files (3 unchanged)")
    assert progress[-1] == (1.0, "probed 2/2 files (3 unchanged)")
    unchanged: list[tuple[float, str | None]] = []
    with anyio.fail_after(TIMEOUT):
        await scan(make_context(media, progress=unchanged))
    assert unchanged == [(1.0, "probed 0/0 files (5 unchanged)")]


async def test_empty_directory_reports_done(library: VideoLibrary, media: Path) -> None:
    """Nothing found: a single report of 1.0 and all counts zero."""
    progress: list[tuple[float, str | None]] = []

    with anyio.fail_after(TIMEOUT):
        result = await make_scan_handler(library, probe_priority=NORMAL)(
            make_context(media, progress=progress)
        )

    assert progress == [(1.0, "probed 0/0 files")]
    assert result == {
        "found": 0,
        "added": 0,
        "updated": 0,
        "unchanged": 0,
        "failed_unchanged": 0,
        "removed": 0,
        "probed": 0,
        "probe_errors": 0,
        "errors": [],
        "errors_total": 0,
        "errors_truncated": 0,
    }


async def test_errors_are_capped_and_the_rest_counted(library: VideoLibrary, media: Path) -> None:
    """With a cap of 3, seven bad files give three entries and errors_truncated == 4."""
    for index in range(7):
        (media / f"bad{index}.mp4").write_text("nope")

    with anyio.fail_after(TIMEOUT):
        result = await make_scan_handler(library, probe_priority=NORMAL, error_cap=3)(
            make_context(media)
        )

    assert result["found"] == 7
    assert len(result["errors"]) == 3
    assert result["errors_truncated"] == 4


async def test_walk_errors_appear_in_the_result(
    library: VideoLibrary, media: Path, tmp_path: Path, clip: EncodedVideo
) -> None:
    """A symlink that points outside the scanned directory is listed in errors."""
    (outside,) = _fill(tmp_path / "elsewhere", clip, ["x.mp4"])
    (media / "link.mp4").symlink_to(outside)

    with anyio.fail_after(TIMEOUT):
        result = await make_scan_handler(library, probe_priority=NORMAL)(make_context(media))

    assert result["errors"] == [
        {"path": str(media / "link.mp4"), "error": "symlink points outside the scanned directory"}
    ]
    assert result["found"] == 0


async def test_playlists_named_like_videos_are_errors_and_open_nothing(
    library: VideoLibrary, media: Path, tmp_path: Path, clip: EncodedVideo
) -> None:
    """ffconcat texts naming a FIFO and a video outside: the scan completes, storing neither.

    Followed, the first would hang a probe thread that no cancel, timeout or
    signal can stop, and the second would store a file outside the directory.
    """
    (good,) = _fill(media, clip, ["good.mp4"])
    _fill(tmp_path / "elsewhere", clip, ["real.mp4"])
    (media / "out").symlink_to(tmp_path / "elsewhere")
    (media / "to-fifo.mp4").write_text("ffconcat version 1.0\nfile pipe\n")
    (media / "to-outside.mkv").write_text("ffconcat version 1.0\nfile out/real.mp4\n")

    with watched_fifo(media / "pipe") as fifo, anyio.fail_after(TIMEOUT):
        result = await make_scan_handler(library, probe_priority=NORMAL)(make_context(media))
        videos, _ = await library.list_videos()

    assert not fifo.opened
    assert (result["found"], result["added"]) == (3, 1)
    assert [e["path"] for e in result["errors"]] == [
        str(media / "out"),  # the walk's: a link leading outside, not followed
        str(media / "to-fifo.mp4"),
        str(media / "to-outside.mkv"),
    ]
    assert [v.path for v in videos] == [good]


class _Denying:
    """Replaces the walk's os.scandir: listing ``directory`` and stat'ing ``file`` fail with EIO."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, directory: str, file: str) -> None:
        self.directory = directory
        self.file = file
        self.real = os.scandir
        monkeypatch.setattr(os, "scandir", self)  # only the walk lists directories here

    def __call__(self, directory: int) -> Any:
        path = listed_path(directory)
        if path == self.directory:
            raise OSError(errno.EIO, "Input/output error", path)
        return _DenyingEntries(self.real(directory), os.path.join(path, ""), self.file)


class _DenyingEntries:
    def __init__(self, entries: Any, prefix: str, file: str) -> None:
        self.entries = entries
        self.prefix = prefix
        self.file = file

    def __enter__(self) -> Iterator[Any]:
        for entry in self.entries.__enter__():
            yield _DenyingEntry(entry) if self.prefix + entry.name == self.file else entry

    def __exit__(self, *exc: object) -> None:
        self.entries.__exit__(*exc)


class _DenyingEntry:
    def __init__(self, entry: os.DirEntry[str]) -> None:
        self.entry = entry

    def __getattr__(self, name: str) -> Any:
        return getattr(self.entry, name)

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        raise OSError(errno.EIO, "Input/output error", self.entry.path)


async def test_stored_videos_the_walk_cannot_read_are_kept(
    library: VideoLibrary, media: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory that cannot be listed and a file that cannot be stat'ed on a
    rescan are errors; what was stored from them stays and is not ``removed``.
    A deleted video in a sibling whose name starts alike is removed."""
    kept = _fill(media, clip, ["sick/a.mp4", "sick/deeper/b.mp4", "stat.mp4"])
    (deleted,) = _fill(media, clip, ["sick-too/c.mp4"])
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(media))
    os.remove(deleted)
    _Denying(monkeypatch, directory=str(media / "sick"), file=str(media / "stat.mp4"))

    with anyio.fail_after(TIMEOUT):
        result = await handler(make_context(media))
        videos, _ = await library.list_videos()

    assert result["errors"] == [
        {"path": str(media / "sick"), "error": "Input/output error"},
        {"path": str(media / "stat.mp4"), "error": "Input/output error"},
    ]
    assert (result["found"], result["removed"]) == (0, 1)
    assert [video.path for video in videos] == kept


async def test_what_an_unreadable_directory_cannot_hide_is_still_removed(
    library: VideoLibrary, media: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a directory the walk cannot list (but can look into), a deleted
    video and one replaced by a FIFO are removed; a link target whose link
    was deleted is kept, then and after a clean rescan: its file is still
    there, and another scan's link may lead to it."""
    deleted, replaced, _ = _fill(
        media, clip, ["sick/deleted.mp4", "sick/replaced.mp4", "sick/kept.mp4"]
    )
    (target,) = _fill(media, clip, ["open/video.bin"])
    (media / "link.mp4").symlink_to(target)
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        first = await handler(make_context(media))
    os.remove(deleted)
    os.remove(replaced)
    os.mkfifo(replaced)
    os.remove(media / "link.mp4")

    with monkeypatch.context() as denied, anyio.fail_after(TIMEOUT):
        _Denying(denied, directory=str(media / "sick"), file="")
        second = await handler(make_context(media))
        stored_meanwhile = [video.path for video in (await library.list_videos())[0]]
    with anyio.fail_after(TIMEOUT):
        third = await handler(make_context(media))
        stored_after = [video.path for video in (await library.list_videos())[0]]

    assert first["added"] == 4
    assert [e["path"] for e in second["errors"]] == [str(media / "sick")]
    assert second["removed"] == 2
    assert stored_meanwhile == [target, str(media / "sick" / "kept.mp4")]
    assert third["removed"] == 0
    assert third["errors"] == [
        {"path": str(replaced), "error": "not a regular file (a FIFO); skipped"}
    ]
    assert stored_after == [target, str(media / "sick" / "kept.mp4")]


async def test_a_video_moved_to_the_trash_leaves_the_library(
    library: VideoLibrary, media: Path, clip: EncodedVideo
) -> None:
    """A stored video a file manager deletes (moved into ``.Trash-1000``,
    which a recursive scan does not enter) is removed by the next scan, and
    no video already in a trash is added; a folder merely named ``Trash``
    is scanned. A row stored in a trash (by a scan of the trash itself, or a
    release that entered them) stays while its file is there, as any row
    whose file the walk did not see: scans never remove each other's rows."""
    kept, deleted = _fill(media, clip, ["kept.mp4", "Trash/deleted.mp4"])
    (old,) = _fill(media, clip, [".Trash-1000/files/old.mp4"])
    _fill(media, clip, ["$RECYCLE.BIN/S-1-5-21/$R1.mp4", "Recycler/r.mp4"])
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        first = await handler(make_context(media))
        await library.upsert([record(old)])
        trash = media / ".Trash-1000" / "files" / "deleted.mp4"
        os.rename(deleted, trash)
        second = await handler(make_context(media))
        stored = sorted(video.path for video in (await library.list_videos(10, 0))[0])

    assert (first["found"], first["added"], first["errors_total"]) == (3, 3, 0)
    assert (second["found"], second["removed"], second["errors_total"]) == (2, 1, 0)
    assert stored == sorted([old, kept, str(media / "Recycler" / "r.mp4")])


async def test_a_stored_file_that_turns_unreadable_is_dropped(
    library: VideoLibrary, media: Path, clip: EncodedVideo
) -> None:
    """Its stale row is deleted, it is an error, and it counts as removed (the
    library holds one video less)."""
    (path,) = _fill(media, clip, ["a.mp4"])
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(media))
        await anyio.Path(path).write_bytes(b"overwritten with junk")
        result = await handler(make_context(media))
        row = await library.get_video_by_path(path)

    assert row is None
    assert (result["removed"], result["updated"]) == (1, 0)
    assert [e["path"] for e in result["errors"]] == [path]


@pytest.fixture
def probes() -> Iterator[ProbeProcesses]:
    children = ProbeProcesses(NORMAL)
    yield children
    children.close()


def _directory_out_of_descriptors(
    monkeypatch: pytest.MonkeyPatch, library: VideoLibrary, probes: ProbeProcesses
) -> ScanHandler:
    def open_on_its_disk(directory: str, **kwargs: Any) -> int:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(_scanprobe, "open_on_its_disk", open_on_its_disk)
    return make_scan_handler(library, probe_priority=NORMAL)


def _directory_swapped_for_a_moment(
    monkeypatch: pytest.MonkeyPatch, library: VideoLibrary, probes: ProbeProcesses
) -> ScanHandler:
    # What opening a directory swapped for a symlink gives; swapped back at
    # once, the file is where it was, unchanged since the walk.
    def open_on_its_disk(directory: str, **kwargs: Any) -> int:
        raise OSError(errno.ELOOP, "a symlink, not followed")

    monkeypatch.setattr(_scanprobe, "open_on_its_disk", open_on_its_disk)
    return make_scan_handler(library, probe_priority=NORMAL)


def _probe_process_that_cannot_start(
    monkeypatch: pytest.MonkeyPatch, library: VideoLibrary, probes: ProbeProcesses
) -> ScanHandler:
    false = shutil.which("false")
    assert false is not None
    monkeypatch.setattr(sys, "executable", false)  # the child "interpreter" exits at once
    return make_scan_handler(library, probe_priority=NORMAL, probes=probes)


@pytest.mark.parametrize(
    "failing",
    [
        _directory_out_of_descriptors,
        _probe_process_that_cannot_start,
        _directory_swapped_for_a_moment,
    ],
    ids=["out-of-descriptors", "no-probe-process", "directory-swapped"],
)
async def test_a_changed_file_that_fails_for_want_of_resources_keeps_its_row(
    library: VideoLibrary,
    media: Path,
    clip: EncodedVideo,
    monkeypatch: pytest.MonkeyPatch,
    probes: ProbeProcesses,
    failing: Callable[[pytest.MonkeyPatch, VideoLibrary, ProbeProcesses], ScanHandler],
) -> None:
    """A failure that says nothing about the file (the service out of
    descriptors, a probe process that cannot start, its directory swapped
    for a symlink while the probe opened it, by someone who can rename in
    its parent) is an error entry, and the row stays as it was (its id, and
    so its thumbnail); the next scan sees the file changed and probes it."""
    (path,) = _fill(media, clip, ["a.mp4"])
    with anyio.fail_after(TIMEOUT):
        await make_scan_handler(library, probe_priority=NORMAL)(make_context(media))
        stored = await library.get_video_by_path(path)
        os.utime(path, ns=(1, 1))
        with monkeypatch.context() as patched:
            result = await failing(patched, library, probes)(make_context(media))
        kept = await library.get_video_by_path(path)
        again = await make_scan_handler(library, probe_priority=NORMAL)(make_context(media))
        updated = await library.get_video_by_path(path)

    assert [e["path"] for e in result["errors"]] == [path]
    assert (result["removed"], result["updated"]) == (0, 0)
    assert kept == stored
    assert again["updated"] == 1
    assert stored is not None
    assert updated is not None
    assert (updated.id, updated.mtime_ns) == (stored.id, 1)


async def test_a_scans_start_and_end_are_logged_with_its_job_id_and_type(
    library: VideoLibrary, media: Path, clip: EncodedVideo, log_records: list[Any]
) -> None:
    """The lines "scan started" and "scan finished" carry the structured
    fields every job's line does: its id and its type."""
    _fill(media, clip, ["a.mp4"])

    with anyio.fail_after(TIMEOUT):
        await make_scan_handler(library, probe_priority=NORMAL)(make_context(media))

    said = {r["message"]: r["extra"] for r in log_records if r["message"].startswith("scan ")}
    for message in ("scan started", "scan finished"):
        assert (said[message]["job_id"], said[message]["job_type"]) == ("j", "scan")


def _surprise_probing(monkeypatch: pytest.MonkeyPatch, odd: str) -> None:
    """The probe raises a RuntimeError, "PyAV surprise", for ``odd`` only."""

    def probe(name: str, *, dir_fd: int | None = None, expect: object = None) -> VideoProbe:
        if path_of(name, dir_fd) == odd:
            raise RuntimeError("PyAV surprise")
        return probe_video(name, dir_fd=dir_fd)

    monkeypatch.setattr(_scanprobe, "probe_video", probe)


async def test_every_line_a_scan_logs_names_its_job_even_in_its_probe_threads(
    library: VideoLibrary,
    media: Path,
    clip: EncodedVideo,
    monkeypatch: pytest.MonkeyPatch,
    log_records: list[Any],
) -> None:
    """A probe's failure (logged in a probe thread) and a probe's surprise
    carry the job's id and type, as the scan's own lines do."""
    _, odd = _fill(media, clip, ["good.mp4", "odd.mp4"])
    (media / "notes.mp4").write_bytes(b"not a video")

    _surprise_probing(monkeypatch, odd)

    with anyio.fail_after(TIMEOUT):
        await make_scan_handler(library, probe_priority=NORMAL)(make_context(media))

    said = [
        (r["message"], r["extra"].get("job_id"), r["extra"].get("job_type")) for r in log_records
    ]
    assert {"probe failed", "probe raised unexpectedly"} <= {message for message, _, _ in said}
    assert [line for line in said if line[1:] != ("j", "scan")] == []


@pytest.mark.parametrize(
    ("gone", "error", "level", "traceback"),
    [
        pytest.param("asked", "DirectoryGone: cannot scan ", "WARNING", False, id="asked-for"),
        pytest.param("root", "ScanError: cannot scan ", "ERROR", True, id="scan-root"),
    ],
)
async def test_a_scan_of_a_directory_gone_is_a_warning_unless_it_is_the_root(
    library: VideoLibrary,
    media: Path,
    log_records: list[Any],
    gone: str,
    error: str,
    level: str,
    traceback: bool,
) -> None:
    """A directory removed between the request and the job's start fails the
    job as a WARNING without a traceback (the directory asked for, not the
    code: DirectoryGone is a JobFailed); the operator's scan root itself
    gone (unmounted, removed) is no client's doing: an ERROR with one."""
    supervisor = JobSupervisor()
    supervisor.register("scan", make_scan_handler(library, roots=(media,), probe_priority=NORMAL))
    path = media / "asked" if gone == "asked" else media  # "asked" never was
    if gone == "root":
        os.rmdir(media)

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            result = await supervisor.wait(await supervisor.submit("scan", {"path": str(path)}))
            await supervisor.aclose()

    assert result.status is JobStatus.FAILED
    assert str(result.error).startswith(error)
    [line] = [r for r in log_records if r["extra"].get("status") == "failed"]
    assert (line["level"].name, line["exception"] is not None) == (level, traceback)


async def test_an_unexpected_probe_exception_is_an_error_entry(
    library: VideoLibrary, media: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe that raises something odd costs that file only."""
    good, odd = _fill(media, clip, ["good.mp4", "odd.mp4"])

    _surprise_probing(monkeypatch, odd)

    with anyio.fail_after(TIMEOUT):
        result = await make_scan_handler(library, probe_priority=NORMAL)(make_context(media))

    assert result["added"] == 1
    assert result["errors"] == [{"path": odd, "error": "RuntimeError: PyAV surprise"}]
    assert await library.get_video_by_path(good) is not None


async def test_a_row_the_store_cannot_hold_is_an_error_entry(
    library: VideoLibrary, media: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe that gives a number beyond SQLite's INTEGER (which the probe's
    bounds should prevent) costs that file only: an errors entry, neither added
    nor updated; its batch's other rows are stored and its old row goes."""
    good, old = _fill(media, clip, ["good.mp4", "old.mp4"])
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(media))
    (new,) = _fill(media, clip, ["new.mp4"])
    stat = os.stat(old)
    os.utime(old, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    def probe(name: str, *, dir_fd: int | None = None, expect: object = None) -> VideoProbe:
        found = probe_video(name, dir_fd=dir_fd)
        return attrs.evolve(found, duration_frames=2**63)

    monkeypatch.setattr(_scanprobe, "probe_video", probe)

    with anyio.fail_after(TIMEOUT):
        result = await handler(make_context(media))
        videos, _ = await library.list_videos(10, 0)

    reason = "not stored: duration_frames is beyond a 64-bit integer"
    assert result["errors"] == [{"path": new, "error": reason}, {"path": old, "error": reason}]
    assert (result["added"], result["updated"], result["unchanged"]) == (0, 0, 1)
    assert [video.path for video in videos] == [good]


async def test_a_store_failure_fails_the_job_with_that_error(
    library: VideoLibrary, media: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's StoreError comes out as itself, not wrapped in an ExceptionGroup."""
    _fill(media, clip, ["a.mp4", "b.mp4"])

    async def broken_apply(*args: Any, **kwargs: Any) -> None:
        raise StoreError("video store /x: disk I/O error")

    monkeypatch.setattr(library, "apply", broken_apply)

    with anyio.fail_after(TIMEOUT), pytest.raises(StoreError, match="disk I/O error"):
        await make_scan_handler(library, probe_priority=NORMAL)(make_context(media))


async def test_vanished_directory_fails_clearly(library: VideoLibrary, tmp_path: Path) -> None:
    """A directory that no longer exists ends the job with a ScanError."""
    with anyio.fail_after(TIMEOUT), pytest.raises(ScanError, match="No such file or directory"):
        await make_scan_handler(library, probe_priority=NORMAL)(make_context(tmp_path / "gone"))


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {"path": "relative/dir"},
        {"path": 3},
        {"path": "/abs", "recursive": "yes"},
        {"path": "/abs", "forget_unmounted": 1},
        {"path": "/caf\udce9"},  # not UTF-8: a name the store cannot hold
    ],
)
def test_bad_payloads_are_value_errors(payload: Any) -> None:
    """The handler refuses payloads that are not {'path': absolute UTF-8, 'recursive': bool}."""
    with pytest.raises(ValueError, match="scan payload"):
        parse_payload(payload)


def test_payload_is_normalised_and_recursive_by_default() -> None:
    """Trailing slashes go; recursive defaults to True, forget_unmounted to False."""
    assert parse_payload({"path": "/media/films/"}) == ("/media/films", True, False)
    assert parse_payload({"path": "/media", "recursive": False}) == ("/media", False, False)
    assert parse_payload({"path": "/media", "forget_unmounted": True}).forget_unmounted


def test_handler_arguments_are_checked(tmp_path: Path) -> None:
    """probe_threads below one and a negative cap are refused at build time."""
    library = VideoLibrary.__new__(VideoLibrary)
    with pytest.raises(ValueError, match="probe_threads"):
        make_scan_handler(library, probe_priority=NORMAL, probe_threads=0)
    with pytest.raises(ValueError, match="error_cap"):
        make_scan_handler(library, probe_priority=NORMAL, error_cap=-1)


async def test_cancellation_stops_probing_and_writing(
    library: VideoLibrary, media: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled during a probe in the second chunk: no later probe, nothing
    of that chunk written (the first chunk's rows may be), old rows stay."""
    (old,) = _fill(media, clip, ["0-old.mp4"])
    handler = make_scan_handler(library, probe_priority=NORMAL, probe_threads=1)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(media))
    fresh = _fill(
        media, clip, [f"{i:02}-new.mp4" for i in range(1, 2 * _scanprobe.PROBE_CHUNK + 1)]
    )
    cancel_at = _scanprobe.PROBE_CHUNK + 3
    spy = ProbeSpy(monkeypatch)
    stops: list[Stop] = []  # the stop event of each probe_chunk call
    stopped: list[bool] = []  # whether the chunk was told to stop in time
    probe_chunk = _scan.ScanRun.probe_chunk

    def recording_probe_chunk(
        self: _scan.ScanRun, paths: list[str], stop: Stop
    ) -> list[tuple[str, VideoRecord | Unprobed]]:
        stops.append(stop)
        return probe_chunk(self, paths, stop)

    monkeypatch.setattr(_scan.ScanRun, "probe_chunk", recording_probe_chunk)

    with anyio.fail_after(TIMEOUT):
        with anyio.CancelScope() as scope:
            # The next file, in the same chunk, must not be probed: return once
            # the loop has handled the cancellation and told this chunk to stop.
            spy.cancel_at(cancel_at, scope, then=lambda: stopped.append(stops[-1].wait(TIMEOUT)))
            await handler(make_context(media))
        stored = {v.path for v in (await library.list_videos())[0]}

    assert scope.cancelled_caught
    assert stopped == [True]
    assert len(stops) == 2
    assert spy.calls == fresh[:cancel_at]
    assert old in stored
    assert stored <= {old, *fresh[: _scanprobe.PROBE_CHUNK]}


async def test_a_cancelled_scan_keeps_the_errors_it_met(
    library: VideoLibrary, media: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled (as by a cancel or its timeout) in its second chunk of probes,
    a scan has stored the errors of its first chunk: its error list says what
    it met, rather than nothing."""
    broken = [media / f"{index:02}-broken.mp4" for index in range(3)]
    for path in broken:
        path.write_text("not a video")
    _fill(media, clip, [f"{i:02}-new.mp4" for i in range(3, 2 * _scanprobe.PROBE_CHUNK + 1)])
    cancel_at = _scanprobe.PROBE_CHUNK + 3
    spy = ProbeSpy(monkeypatch)
    handler = make_scan_handler(library, probe_priority=NORMAL, probe_threads=1)
    context = make_context(media)

    with anyio.fail_after(TIMEOUT):
        with anyio.CancelScope() as scope:
            spy.cancel_at(cancel_at, scope)
            await handler(context)
        stored, total = await library.scan_errors(context.job_id)

    assert scope.cancelled_caught
    assert total == len(broken)
    assert sorted(path for path, _ in stored) == [str(path) for path in broken]


async def test_a_scan_cancelled_as_its_walk_ends_keeps_the_walks_errors(
    library: VideoLibrary, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled just as the survey returns (its timeout, say), before the walk's
    errors are written: they are kept all the same, none taken and lost."""
    for index in range(3):
        (media / f"broken{index}.mp4").symlink_to(media / f"nowhere{index}")
    survey = library.survey
    context = make_context(media)

    with anyio.fail_after(TIMEOUT):
        with anyio.CancelScope() as scope:

            async def survey_then_cancelled(*args: Any, **kwargs: Any) -> Any:
                found = await survey(*args, **kwargs)
                scope.cancel()
                return found

            monkeypatch.setattr(library, "survey", survey_then_cancelled)
            await make_scan_handler(library, probe_priority=NORMAL)(context)
        _, total = await library.scan_errors(context.job_id)

    assert scope.cancelled_caught
    assert total == 3


async def test_a_scan_ended_by_its_store_does_not_wait_on_it_again(
    library: VideoLibrary, media: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan whose store fails ends with that error at once: it does not try
    to keep its errors in the failing store (another busy timeout's wait)."""
    _fill(media, clip, ["a.mp4"])
    (media / "broken.mp4").write_text("not a video")
    add_scan_errors = library.add_scan_errors
    failed: list[bool] = []
    tried_after: list[bool] = []

    async def broken_apply(*args: Any, **kwargs: Any) -> None:
        failed.append(True)
        raise StoreError("video store /x: disk I/O error")

    async def add(*args: Any, **kwargs: Any) -> None:
        tried_after.extend(failed)
        await add_scan_errors(*args, **kwargs)

    monkeypatch.setattr(library, "apply", broken_apply)
    monkeypatch.setattr(library, "add_scan_errors", add)
    with anyio.fail_after(TIMEOUT), pytest.raises(StoreError, match="disk I/O error"):
        await make_scan_handler(library, probe_priority=NORMAL)(make_context(media))

    assert failed == [True]
    assert tried_after == []


async def test_errors_left_unstored_by_a_failing_store_do_not_hide_its_error(
    library: VideoLibrary,
    media: Path,
    clip: EncodedVideo,
    monkeypatch: pytest.MonkeyPatch,
    log_records: list[Any],
) -> None:
    """A scan that fails (here: a bug in its writer), and whose store then
    fails as it keeps the errors it met, fails with the first error; the
    second is logged."""
    _fill(media, clip, ["a.mp4"])
    (media / "broken.mp4").write_text("not a video")
    add_scan_errors = library.add_scan_errors
    failed: list[bool] = []

    async def broken_apply(*args: Any, **kwargs: Any) -> None:
        failed.append(True)
        raise RuntimeError("a bug in the writer")

    async def add_after_apply(*args: Any, **kwargs: Any) -> None:
        if failed:  # the probes' errors, once apply has failed
            raise StoreError("video store /x: broken now")
        await add_scan_errors(*args, **kwargs)

    monkeypatch.setattr(library, "apply", broken_apply)
    monkeypatch.setattr(library, "add_scan_errors", add_after_apply)
    with anyio.fail_after(TIMEOUT), pytest.raises(RuntimeError, match="a bug in the writer"):
        await make_scan_handler(library, probe_priority=NORMAL)(make_context(media))

    assert [r["message"] for r in log_records if r["level"].name == "WARNING"] == [
        "scan errors not stored: video store /x: broken now"
    ]


async def test_a_scan_that_ended_adds_no_errors_and_leaves_no_owner(
    library: VideoLibrary, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each scan, finished or failed, says it ended: once the next scan has
    begun, its list is kept but no longer owned, so the store's map of
    owners does not grow with every directory ever scanned."""
    ended: list[tuple[str, str, bool, bool]] = []
    end_scan = library.end_scan

    def end(job_id: str, directory: str, *, recursive: bool, lost: bool = False) -> None:
        ended.append((job_id, directory, recursive, lost))
        end_scan(job_id, directory, recursive=recursive, lost=lost)

    monkeypatch.setattr(library, "end_scan", end)
    (media / "broken.mp4").write_text("not a video")
    (media / "sub").mkdir()
    handler = make_scan_handler(library, probe_priority=NORMAL)
    first = make_context(media)
    with anyio.fail_after(TIMEOUT):
        await handler(first)
        await handler(make_context(media / "sub"))
        await library.add_scan_errors(
            first.job_id, str(media), recursive=True, errors=[("/late.mp4", "late")]
        )
        errors, total = await library.scan_errors(first.job_id)

    assert [(directory, recursive, lost) for _, directory, recursive, lost in ended] == [
        (str(media), True, False),
        (str(media / "sub"), True, False),
    ]
    assert total == 1
    assert errors[0][0] == str(media / "broken.mp4")


async def test_cancellation_stops_the_walk(
    library: VideoLibrary, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler's walk honours cancellation at its first checkpoint; nothing is probed."""
    for index in range(_walk.CHECK_EVERY * 3):
        (media / f"{index}.txt").write_bytes(b"")
    checkpoints: list[int] = []
    spy = ProbeSpy(monkeypatch)

    with anyio.fail_after(TIMEOUT), anyio.CancelScope() as scope:

        def walk(*args: Any, checkpoint: Callable[[], None], **kwargs: Any) -> Any:
            def cancelling_checkpoint() -> None:
                checkpoints.append(1)
                anyio.from_thread.run_sync(scope.cancel)
                checkpoint()

            return walk_videos(*args, checkpoint=cancelling_checkpoint, **kwargs)

        monkeypatch.setattr(_scan, "walk_videos", walk)
        await make_scan_handler(library, probe_priority=NORMAL)(make_context(media))

    assert scope.cancelled_caught
    assert checkpoints == [1]
    assert spy.calls == []


async def test_a_file_swapped_away_and_back_before_its_write_is_not_stored_as_the_other(
    library: VideoLibrary, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another file put in a file's place as it is probed, and the two put
    back before the batch is written (``mv`` twice, a sync tool's swap): the
    probe opened the other file, whose size and time are not what the walk
    saw, so the file is an errors entry (transient: the next scan probes it
    again), not a row of the other's metadata with its own fingerprint, which
    every later scan would take for unchanged (a review saw 61 of 300 so)."""
    small, large = media / "small.mp4", media / "large.mp4"
    make_video(small, width=64, height=48)
    make_video(large, width=128, height=96)

    def swap() -> None:
        os.rename(small, media / "swapping")
        os.rename(large, small)
        os.rename(media / "swapping", large)

    def probed_swapped(
        name: str, *, dir_fd: int | None = None, expect: tuple[int, int] | None = None
    ) -> VideoProbe:
        if name != "small.mp4":
            return probe_video(name, dir_fd=dir_fd, expect=expect)
        swap()
        try:
            return probe_video(name, dir_fd=dir_fd, expect=expect)
        finally:
            swap()

    monkeypatch.setattr(_scanprobe, "probe_video", probed_swapped)
    # One probe thread: the other file is not probed while the two are swapped.
    handler = make_scan_handler(library, probe_priority=NORMAL, probe_threads=1)

    with anyio.fail_after(TIMEOUT):
        result = await handler(make_context(media))
        stored = await library.get_video_by_path(str(small))
        other = await library.get_video_by_path(str(large))

    assert stored is None
    assert other is not None
    assert (other.width, other.height) == (128, 96)
    assert result["errors"] == [{"path": str(small), "error": CHANGED_SINCE_FOUND}]


async def test_concurrent_probes_respect_probe_threads(
    library: VideoLibrary, media: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two scans of one handler share its limiter: with probe_threads=1, one probe at a time."""
    _fill(media / "one", clip, [f"{i:02d}.mp4" for i in range(24)])
    _fill(media / "two", clip, [f"{i:02d}.mp4" for i in range(24)])
    running: list[int] = [0]
    peak: list[int] = [0]
    guard = threading.Lock()

    def probe(name: str, *, dir_fd: int | None = None, expect: object = None) -> VideoProbe:
        with guard:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return probe_video(name, dir_fd=dir_fd)
        finally:
            with guard:
                running[0] -= 1

    monkeypatch.setattr(_scanprobe, "probe_video", probe)
    handler = make_scan_handler(library, probe_priority=NORMAL, probe_threads=1)

    async def scan(directory: Path) -> None:
        await handler(make_context(directory))

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as group:
            group.start_soon(scan, media / "one")
            group.start_soon(scan, media / "two")

    assert peak == [1]
    assert (await library.list_videos())[1] == 48


def test_probe_error_keeps_path_and_reason() -> None:
    """ProbeError carries the path and the reason separately."""
    error = ProbeError("/m/a.mp4", "no video stream")

    assert (error.path, error.reason, str(error)) == (
        "/m/a.mp4",
        "no video stream",
        "/m/a.mp4: no video stream",
    )


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
@pytest.mark.parametrize("priority", list(ThreadPriority))
async def test_probes_run_at_the_handlers_priority(
    library: VideoLibrary,
    media: Path,
    clip: EncodedVideo,
    monkeypatch: pytest.MonkeyPatch,
    priority: ThreadPriority,
) -> None:
    """Every probe runs under SCHED_IDLE by default, and at the caller's policy for NORMAL."""
    _fill(media, clip, [f"{i:02d}.mp4" for i in range(3 * _scanprobe.PROBE_CHUNK)])
    policies: list[int] = []

    def probe(name: str, *, dir_fd: int | None = None, expect: object = None) -> VideoProbe:
        policies.append(os.sched_getscheduler(0))
        return probe_video(name, dir_fd=dir_fd)

    monkeypatch.setattr(_scanprobe, "probe_video", probe)
    handler = make_scan_handler(library, probe_threads=2, probe_priority=priority)

    with anyio.fail_after(TIMEOUT):
        result = await handler(make_context(media))

    expected = os.SCHED_IDLE if priority is ThreadPriority.IDLE else os.sched_getscheduler(0)
    assert result["added"] == len(policies) == 3 * _scanprobe.PROBE_CHUNK
    assert set(policies) == {expected}


async def test_a_row_stored_before_the_metadata_counts_as_updated_once(
    tmp_path: Path, media: Path, clips: dict[str, EncodedVideo]
) -> None:
    """After the schema 2 migration, the next scan fills the metadata of an unchanged
    file (one "updated"), and the scan after it finds the file unchanged."""
    video = copy_video(clips["h264_10bit_rotated.mp4"], media / "a.mp4")
    info = video.path.stat()
    database = tmp_path / "v1.sqlite"
    with contextlib.closing(sqlite3.connect(database)) as raw:
        for statement in MIGRATIONS[1]:
            raw.execute(statement)
        raw.execute(
            "INSERT INTO videos (path, directory, filename, size_bytes, mtime_ns, video_codec,"
            " created_at, updated_at) VALUES (?, ?, 'a.mp4', ?, ?, 'h264', ?, ?)",
            (str(video.path), str(media), info.st_size, info.st_mtime_ns, *["2024-01-01"] * 2),
        )
        raw.execute("PRAGMA user_version = 1")
        raw.commit()

    with anyio.fail_after(TIMEOUT):
        async with await VideoLibrary.open(database) as library:
            handler = make_scan_handler(library, probe_priority=NORMAL)
            first = await handler(make_context(media))
            (stored,), _ = await library.list_videos()
            second = await handler(make_context(media))

    assert (first["updated"], first["unchanged"], first["added"]) == (1, 0, 0)
    assert (second["updated"], second["unchanged"]) == (0, 1)
    assert (stored.pixel_format, stored.rotation, stored.timecode) == (
        "yuv420p10le",
        90,
        "01:02:03:04",
    )
    assert stored.created_at == datetime(2024, 1, 1)


def test_a_failed_directory_open_does_not_close_a_descriptor_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When opening the next directory raises (anything, not only OSError), the
    descriptor of the one before, closed already, is not closed again: by then
    its number may be another thread's."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.mp4").write_bytes(b"")
    taken: list[int] = []
    real_open = _ondisk.open_on_its_disk

    def open_on_its_disk(directory: str, **kwargs: Any) -> int:
        if taken or directory != str(tmp_path / "b"):
            return real_open(directory, **kwargs)
        taken.append(os.open(os.devnull, os.O_RDONLY))  # the number just freed
        raise MemoryError

    def refuse(name: str, dir_fd: int, stop: Stop, expect: tuple[int, int]) -> VideoProbe:
        raise ProbeError(name, "not a video")

    monkeypatch.setattr(_scanprobe, "open_on_its_disk", open_on_its_disk)
    root_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        paths = [str(tmp_path / "a" / "x.mp4"), str(tmp_path / "b" / "x.mp4")]
        with pytest.raises(MemoryError):
            _scanprobe.probe_files(
                paths,
                Stop(),
                probe=refuse,
                root=str(tmp_path),
                root_fd=root_fd,
                found=dict.fromkeys(paths, (1, 1)),
            )
        os.fstat(taken[0])  # still open: raises EBADF if probe_files closed it
    finally:
        os.close(root_fd)
        for fd in taken:
            os.close(fd)


async def test_a_scan_stores_its_errors_as_they_pile_up_not_all_at_its_end(
    library: VideoLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tree of many failures is not held in memory until the scan ends: once
    ERRORS_HELD entries are held (4 here), the walk (at its next checkpoint) and
    the probes (after their chunk) store them; every entry is stored once."""
    monkeypatch.setattr(_scanerrors, "ERRORS_HELD", 4)
    monkeypatch.setattr(_walk, "CHECK_EVERY", 1)
    media = tmp_path / "media"
    media.mkdir()
    for index in range(20):  # the walk's errors: dangling links
        (media / f"gone{index:02d}.mp4").symlink_to(tmp_path / "nowhere")
    for index in range(40):  # the probes' (chunks of 10: a quarter of 40)
        (media / f"bad{index:02d}.mp4").write_bytes(b"not a video")
    sizes: list[int] = []
    add, add_blocking = library.add_scan_errors, library.add_scan_errors_blocking

    async def recording(job_id: str, directory: str, **kwargs: Any) -> None:
        if kwargs["errors"]:
            sizes.append(len(kwargs["errors"]))
        await add(job_id, directory, **kwargs)

    def recording_blocking(job_id: str, directory: str, **kwargs: Any) -> None:
        sizes.append(len(kwargs["errors"]))
        add_blocking(job_id, directory, **kwargs)

    monkeypatch.setattr(library, "add_scan_errors", recording)
    monkeypatch.setattr(library, "add_scan_errors_blocking", recording_blocking)
    handler = make_scan_handler(library, probe_threads=1, probe_priority=NORMAL)
    context = make_context(media)

    with anyio.fail_after(TIMEOUT):
        result = await handler(context)
        stored, total = await library.scan_errors(context.job_id, 100, 0)

    assert result["errors_total"] == total == 60
    assert sorted(path for path, _ in stored) == sorted(str(path) for path in media.iterdir())
    assert sum(sizes) == 60
    assert max(sizes) <= 4 - 1 + 10  # held at most: one short of 4, and a chunk's


async def test_a_walk_that_stores_its_errors_needs_no_second_thread(
    library: VideoLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk's thread holds a token of anyio's default thread limiter: were its
    errors stored through another worker thread, scans that hold every token
    (here the one there is) would each wait for a second for ever. It stores
    them itself, and the scan completes."""
    monkeypatch.setattr(_scanerrors, "ERRORS_HELD", 4)
    monkeypatch.setattr(_walk, "CHECK_EVERY", 1)
    media = tmp_path / "media"
    media.mkdir()
    for index in range(20):
        (media / f"gone{index:02d}.mp4").symlink_to(tmp_path / "nowhere")
    limiter = anyio.to_thread.current_default_thread_limiter()
    tokens, limiter.total_tokens = limiter.total_tokens, 1  # the loop may serve other tests
    handler = make_scan_handler(library, probe_priority=NORMAL)
    context = make_context(media)

    try:
        with anyio.fail_after(TIMEOUT):
            result = await handler(context)
    finally:
        limiter.total_tokens = tokens
    stored, total = await library.scan_errors(context.job_id, 100, 0)

    assert result["errors_total"] == total == 20
    assert sorted(path for path, _ in stored) == sorted(str(path) for path in media.iterdir())
