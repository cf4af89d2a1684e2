"""Failed probes remembered: a file a probe failed on is not probed again while unchanged."""

from __future__ import annotations

import errno
import os
import shutil
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from stoat_ferret.library import (
    ProbeError,
    ProbeProcesses,
    ThreadPriority,
    VideoLibrary,
    VideoProbe,
    VideoStore,
    _failedprobes,
    _scanerrors,
    _scanprobe,
    make_scan_handler,
    probe_video,
)
from stoat_ferret.library._failedprobes import REMEMBERED, FailedProbe
from stoat_ferret.library._models import ErrorLog
from stoat_ferret.library._scanprobe import sift_failures
from tests.library.support import make_context, path_of
from tests.videos import copy_video

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.videos import EncodedVideo

pytestmark = pytest.mark.anyio

TIMEOUT = 20
NORMAL = ThreadPriority.NORMAL
NOT_A_VIDEO = "not a readable media file"


class Probed:
    """Replaces the scan's probe_video: records each path, then calls ``then``
    (the real probe, unless told otherwise)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self.then: Callable[..., VideoProbe] = probe_video
        monkeypatch.setattr(_scanprobe, "probe_video", self)

    def __call__(
        self, name: str, *, dir_fd: int | None = None, expect: tuple[int, int] | None = None
    ) -> VideoProbe:
        self.calls.append(path_of(name, dir_fd))
        return self.then(name, dir_fd=dir_fd, expect=expect)


@pytest.fixture
def media(tmp_path: Path, clip: EncodedVideo) -> Path:
    """A directory of one video (``good.mp4``) and one text file named like one (``bad.mp4``)."""
    root = tmp_path / "media"
    root.mkdir()
    copy_video(clip, root / "good.mp4")
    (root / "bad.mp4").write_text("not a video")
    return root


def _scan(library: VideoLibrary, path: Path, **kwargs: Any) -> Any:
    return make_scan_handler(library, probe_priority=NORMAL)(make_context(path, **kwargs))


def _remembered(library: VideoLibrary, path: Path) -> dict[str, FailedProbe]:
    return library.failed_probes_blocking(str(path), recursive=True)


def _touch(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


async def test_a_failed_probe_is_not_probed_again_while_unchanged(
    library: VideoLibrary, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second scan probes nothing: the file that failed is counted in
    ``failed_unchanged``, and its ``errors`` entry is the first scan's reason
    with :data:`REMEMBERED` after it."""
    probed = Probed(monkeypatch)
    with anyio.fail_after(TIMEOUT):
        first = await _scan(library, media)
        second = await _scan(library, media)

    bad = str(media / "bad.mp4")
    assert sorted(probed.calls) == [bad, str(media / "good.mp4")]
    assert (first["probe_errors"], first["failed_unchanged"]) == (1, 0)
    assert {k: v for k, v in second.items() if k != "errors"} == {
        "found": 2,
        "added": 0,
        "updated": 0,
        "unchanged": 1,
        "failed_unchanged": 1,
        "removed": 0,
        "probed": 0,
        "probe_errors": 0,
        "errors_total": 1,
        "errors_truncated": 0,
    }
    [reason] = [entry["error"] for entry in first["errors"]]
    assert NOT_A_VIDEO in reason
    assert second["errors"] == [{"path": bad, "error": reason + REMEMBERED}]
    assert _remembered(library, media)[bad] == FailedProbe(
        (os.stat(bad).st_size, os.stat(bad).st_mtime_ns), reason
    )


async def test_the_remembered_entry_is_in_the_stored_error_list(
    library: VideoLibrary, media: Path
) -> None:
    """``GET /jobs/{id}/errors`` serves the store's list: the remembered entry is there."""
    with anyio.fail_after(TIMEOUT):
        await _scan(library, media, job_id="first")
        await _scan(library, media, job_id="second")
        errors, total = await library.scan_errors("second")

    assert total == 1
    assert errors[0][0] == str(media / "bad.mp4")
    assert errors[0][1].endswith(REMEMBERED)


async def test_a_rescan_stores_its_remembered_entries_as_it_goes(
    library: VideoLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rescan lists each file unchanged since its probe failed as it sifts
    them, storing the entries whenever ERRORS_HELD (4 here) are held, not all
    at its end: a million such files are a few thousand entries in memory and
    one short write at a time. Every entry is stored once."""
    media = tmp_path / "media"
    media.mkdir()
    for index in range(10):
        (media / f"bad{index}.mp4").write_text("not a video")
    with anyio.fail_after(TIMEOUT):
        await _scan(library, media, job_id="first")
    monkeypatch.setattr(_scanerrors, "ERRORS_HELD", 4)
    sizes: list[int] = []
    add_blocking = library.add_scan_errors_blocking

    def recording(job_id: str, directory: str, **kwargs: Any) -> None:
        sizes.append(len(kwargs["errors"]))
        add_blocking(job_id, directory, **kwargs)

    monkeypatch.setattr(library, "add_scan_errors_blocking", recording)
    with anyio.fail_after(TIMEOUT):
        second = await _scan(library, media, job_id="second")
        stored, total = await library.scan_errors("second")

    assert (second["failed_unchanged"], total) == (10, 10)
    assert sizes == [4, 4]  # in the survey's thread; the last 2 with the scan's end
    assert sorted(path for path, _ in stored) == sorted(str(path) for path in media.iterdir())


async def test_a_changed_file_is_probed_again_and_its_failure_forgotten(
    library: VideoLibrary, media: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new modification time alone has the file probed again; once it is a
    video, it is added and its failure is forgotten."""
    bad = media / "bad.mp4"
    with anyio.fail_after(TIMEOUT):
        await _scan(library, media)
        _touch(bad)
        probed = Probed(monkeypatch)
        touched = await _scan(library, media)
        calls_after_touch = list(probed.calls)
        copy_video(clip, bad)
        fixed = await _scan(library, media)

    assert calls_after_touch == [str(bad)]
    assert (touched["probe_errors"], touched["failed_unchanged"]) == (1, 0)
    assert not touched["errors"][0]["error"].endswith(REMEMBERED)
    assert (fixed["added"], fixed["failed_unchanged"], fixed["errors_total"]) == (1, 0, 0)
    assert _remembered(library, media) == {}


async def test_a_video_that_breaks_loses_its_row_and_is_then_remembered(
    library: VideoLibrary, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored video overwritten with junk: the next scan deletes its row
    and remembers the failure; the one after does not probe it."""
    good = media / "good.mp4"
    with anyio.fail_after(TIMEOUT):
        await _scan(library, media)
        good.write_bytes(b"junk, no longer a video")
        broken = await _scan(library, media)
        probed = Probed(monkeypatch)
        after = await _scan(library, media)
        stored = await library.get_video_by_path(str(good))

    assert (broken["probe_errors"], broken["failed_unchanged"], broken["updated"]) == (1, 1, 0)
    assert stored is None
    assert probed.calls == []
    assert (after["failed_unchanged"], after["unchanged"], after["probed"]) == (2, 0, 0)


def _denied(name: str, **kwargs: Any) -> VideoProbe:
    raise ProbeError(name, "cannot read it (Permission denied)", transient=True)


def _surprised(name: str, **kwargs: Any) -> VideoProbe:
    raise RuntimeError("a bug")


@pytest.mark.parametrize(
    "failing", [_denied, _surprised], ids=["says-nothing-of-the-file", "the-probers-surprise"]
)
async def test_a_failure_not_of_the_files_doing_is_not_remembered(
    library: VideoLibrary,
    media: Path,
    monkeypatch: pytest.MonkeyPatch,
    failing: Callable[..., VideoProbe],
) -> None:
    """A transient failure (denied, a file system that did not answer), or an
    unexpected exception (the prober's, not the file's), is tried again by
    the next scan."""
    probed = Probed(monkeypatch)
    probed.then = failing
    with anyio.fail_after(TIMEOUT):
        await _scan(library, media)
        second = await _scan(library, media)

    assert len(probed.calls) == 4
    assert (second["probe_errors"], second["failed_unchanged"]) == (2, 0)
    assert _remembered(library, media) == {}


async def test_another_prober_probes_every_remembered_file_again(
    library: VideoLibrary, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure remembered by another prober (a newer FFmpeg may read the
    file) is probed again, and remembered anew by this one."""
    with anyio.fail_after(TIMEOUT):
        await _scan(library, media)
        monkeypatch.setattr(_failedprobes, "PROBER", "probe 1, PyAV 0, FFmpeg 0")
        probed = Probed(monkeypatch)
        second = await _scan(library, media)
        third = await _scan(library, media)

    assert probed.calls == [str(media / "bad.mp4")]
    assert (second["probe_errors"], second["failed_unchanged"]) == (1, 0)
    assert third["failed_unchanged"] == 1


async def test_the_failure_of_a_file_gone_is_forgotten(library: VideoLibrary, media: Path) -> None:
    with anyio.fail_after(TIMEOUT):
        await _scan(library, media)
        (media / "bad.mp4").unlink()
        second = await _scan(library, media)

    assert (second["found"], second["failed_unchanged"]) == (1, 0)
    assert _remembered(library, media) == {}


async def test_scopes_read_and_forget_only_their_own_failures(
    library: VideoLibrary, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure remembered by a recursive scan serves a scan of its own
    directory; a flat scan of the directory above neither probes it nor
    forgets it (the file is outside its scope)."""
    sub = media / "sub"
    sub.mkdir()
    shutil.move(media / "bad.mp4", sub / "bad.mp4")
    with anyio.fail_after(TIMEOUT):
        await _scan(library, media)
        probed = Probed(monkeypatch)
        flat = await _scan(library, media, recursive=False)
        own = await _scan(library, sub, recursive=False)

    assert probed.calls == []
    assert (flat["found"], flat["failed_unchanged"]) == (1, 0)
    assert (own["found"], own["failed_unchanged"]) == (1, 1)
    assert list(_remembered(library, media)) == [str(sub / "bad.mp4")]


async def test_the_probe_processes_failure_is_remembered(
    library: VideoLibrary, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's way: the failure a probe process reports is remembered
    (its ProbeError crosses the pipe with ``transient`` False)."""
    probes = ProbeProcesses(NORMAL)
    calls: list[str] = []
    probe = probes.probe

    def counted(name: str, dir_fd: int, *args: Any) -> VideoProbe:
        calls.append(name)
        return probe(name, dir_fd, *args)

    monkeypatch.setattr(probes, "probe", counted)
    try:
        handler = make_scan_handler(library, probe_priority=NORMAL, probes=probes)
        with anyio.fail_after(TIMEOUT):
            first = await handler(make_context(media))
            second = await handler(make_context(media))
    finally:
        probes.close()

    assert sorted(calls) == ["bad.mp4", "good.mp4"]
    assert first["probe_errors"] == 1
    assert second["failed_unchanged"] == 1


def test_a_path_or_reason_sqlite_cannot_take_is_not_remembered(tmp_path: Path) -> None:
    """A name that is not UTF-8 (a lone surrogate) is probed again rather than
    failing the write of the rest."""
    store = VideoStore.open(tmp_path / "videos.sqlite")
    try:
        store.note_failed_probes(
            {
                "/m/\udcff.mp4": FailedProbe((1, 2), "no"),
                "/m/ok.mp4": FailedProbe((1, 2), "no \udcff"),
                "/m/kept.mp4": FailedProbe((3, 4), "not a readable media file"),
            },
            ["/m/\udcfe.mp4"],
        )
        remembered = store.failed_probes("/m", recursive=False)
    finally:
        store.close()

    assert remembered == {"/m/kept.mp4": FailedProbe((3, 4), "not a readable media file")}


async def test_no_failure_is_remembered_once_the_directory_is_replaced(
    library: VideoLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scanned directory moved away and a copy put at its path (the same
    sizes and times) while a batch of failures alone is probed: nothing is
    remembered of the copy, which was never probed, and one entry says the
    directory was replaced."""
    media = tmp_path / "media"
    media.mkdir()
    (media / "bad.mp4").write_text("not a video")
    probed = Probed(monkeypatch)

    def replaced_meanwhile(name: str, **kwargs: Any) -> VideoProbe:
        try:
            return probe_video(name, **kwargs)
        finally:
            media.rename(tmp_path / "moved")
            shutil.copytree(tmp_path / "moved", media)  # copy2: sizes and times kept

    probed.then = replaced_meanwhile
    with anyio.fail_after(TIMEOUT):
        result = await _scan(library, media)

    assert result["probe_errors"] == 1
    assert str(media) in [entry["path"] for entry in result["errors"]]
    assert _remembered(library, media) == {}


def test_a_scan_that_could_not_read_a_directory_forgets_only_what_it_saw() -> None:
    """Remembered failures of files the walk did not find are kept when they
    are in a directory that went unread (they may be there), and only then;
    those found changed, or with a stored video, go whatever was unread."""
    failed = {
        "/m/unseen.mp4": FailedProbe((1, 1), "no"),
        "/m/sub/deeper/unseen.mp4": FailedProbe((1, 1), "no"),
        "/m/changed.mp4": FailedProbe((1, 1), "no"),
        "/m/stored.mp4": FailedProbe((1, 1), "no"),
        "/m/same.mp4": FailedProbe((1, 1), "no"),
    }
    found = {"/m/changed.mp4": (2, 2), "/m/stored.mp4": (1, 1), "/m/same.mp4": (1, 1)}
    known = {"/m/stored.mp4": (1, 1)}
    forgotten = []
    for unread in ([], ["/m/sub"]):
        errors = ErrorLog()
        for path in unread:
            errors.add_unread(path, "denied")
        to_probe, count, forget = sift_failures(
            found, known, ["/m/changed.mp4", "/m/same.mp4"], failed, errors, lambda: None
        )
        assert (to_probe, count) == (["/m/changed.mp4"], 1)
        assert [entry["path"] for entry in errors.entries][-1] == "/m/same.mp4"
        forgotten.append(sorted(forget))

    assert forgotten == [
        ["/m/changed.mp4", "/m/stored.mp4", "/m/sub/deeper/unseen.mp4", "/m/unseen.mp4"],
        ["/m/changed.mp4", "/m/stored.mp4", "/m/unseen.mp4"],
    ]


async def test_the_progress_tells_unchanged_files_from_failures_not_probed_again(
    library: VideoLibrary, media: Path
) -> None:
    progress: list[tuple[float, str | None]] = []
    handler = make_scan_handler(library, probe_priority=NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(media))
        await handler(make_context(media, progress=progress))

    assert progress[-1] == (
        1.0,
        "probed 0/0 files (1 unchanged, 1 unchanged since their probe failed)",
    )


@pytest.mark.parametrize("code", [errno.EKEYEXPIRED, errno.EUCLEAN, errno.EREMOTEIO])
async def test_a_file_its_file_system_would_not_open_is_not_remembered(
    library: VideoLibrary, media: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """An open refused by the file system of the moment (a share's ticket
    expired, a damaged file system): the next scan, the share back, adds the
    video rather than skipping it as a failure."""
    real_open = os.open
    refusing = [True]

    def open_refusing(name: Any, *args: Any, **kwargs: Any) -> int:
        if refusing[0] and os.fspath(name) == "good.mp4":
            raise OSError(code, os.strerror(code))
        return real_open(name, *args, **kwargs)

    with anyio.fail_after(TIMEOUT):
        with monkeypatch.context() as patched:
            patched.setattr(os, "open", open_refusing)
            first = await _scan(library, media)
        second = await _scan(library, media)

    assert (first["added"], first["probe_errors"]) == (0, 2)
    assert (second["added"], second["failed_unchanged"]) == (1, 1)


@pytest.mark.parametrize("there", ["nothing", "a-fifo"])
async def test_a_video_moved_away_for_a_moment_is_not_remembered(
    library: VideoLibrary, media: Path, monkeypatch: pytest.MonkeyPatch, there: str
) -> None:
    """A file the walk found, moved away as it is probed (nothing, or a FIFO,
    at its name then) and put back: the failure says nothing of it, so the
    next scan probes it again and adds it."""
    good = media / "good.mp4"
    probed = Probed(monkeypatch)

    def moved_away(name: str, **kwargs: Any) -> VideoProbe:
        if name != "good.mp4":
            return probe_video(name, **kwargs)
        good.rename(media / "away")
        if there == "a-fifo":
            os.mkfifo(good)
        try:
            return probe_video(name, **kwargs)
        finally:
            if there == "a-fifo":
                good.unlink()
            (media / "away").rename(good)

    probed.then = moved_away
    with anyio.fail_after(TIMEOUT):
        first = await _scan(library, media)
        probed.then = probe_video
        second = await _scan(library, media)

    assert (first["added"], first["probe_errors"]) == (0, 2)
    assert (second["added"], second["failed_unchanged"]) == (1, 1)
