"""A scan stays inside its roots: swapped directories, long link chains, odd paths, overlaps."""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import pytest

from stoat_ferret.jobs import JobContext, JobStatus, JobSupervisor
from stoat_ferret.library import (
    DEFAULT_ERROR_CAP,
    ERROR_PATH_CHARS,
    ERROR_TEXT_CHARS,
    PATH_MAX,
    RESULT_ERRORS_MAX_BYTES,
    ErrorLog,
    ProbeError,
    ScanError,
    ScanErrorsReplaced,
    ThreadPriority,
    VideoLibrary,
    VideoProbe,
    VideoRecord,
    VideoStore,
    _beneath,
    _scan,
    _scanned,
    _scanprobe,
    _scanwrite,
    _walklinks,
    make_scan_handler,
    probe_video,
    walk_videos,
)
from tests.library.support import make_context, path_of
from tests.videos import copy_video

if TYPE_CHECKING:
    from collections.abc import Callable

    from stoat_ferret.jobs import JobResult
    from tests.videos import EncodedVideo

pytestmark = pytest.mark.anyio

TIMEOUT = 30


@pytest.fixture
def roots(tmp_path: Path, clip: EncodedVideo) -> tuple[Path, Path]:
    """``(root, outside)``: a scan root holding ``lib/sub``, and a directory of clips beside it."""
    root = tmp_path / "root"
    (root / "lib" / "sub").mkdir(parents=True)
    copy_video(clip, root / "lib" / "inside.mp4")
    outside = tmp_path / "outside"
    outside.mkdir()
    copy_video(clip, outside / "secret.mp4")
    return root, outside


class OpenedSpy:
    """Replaces the scan's probe_video: records the full path of every file it opens."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened: list[str] = []
        monkeypatch.setattr(_scanprobe, "probe_video", self)

    def __call__(
        self, name: str, *, dir_fd: int | None = None, expect: tuple[int, int] | None = None
    ) -> VideoProbe:
        self.opened.append(os.path.realpath(path_of(name, dir_fd)))
        return probe_video(name, dir_fd=dir_fd, expect=expect)


def _swap_for_link(directory: Path, target: Path) -> None:
    """Replace ``directory`` (and what it holds) by a symlink to ``target``."""
    for entry in directory.iterdir():
        entry.unlink()
    directory.rmdir()
    directory.symlink_to(target, target_is_directory=True)


async def _scan_held_while(
    library: VideoLibrary, scan_root: Path, directory: Path, change: Callable[[], None]
) -> JobResult:
    """Scan ``directory`` (roots: ``scan_root``) held pending behind a gated
    job; ``change`` runs while it waits. The scan's result."""
    gate = anyio.Event()
    gated = anyio.Event()

    async def hold(ctx: JobContext) -> None:
        gated.set()
        await gate.wait()

    supervisor = JobSupervisor(max_workers=1)
    supervisor.register("gate", hold)
    supervisor.register(
        "scan", make_scan_handler(library, roots=[scan_root], probe_priority=ThreadPriority.NORMAL)
    )
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as group:
            await group.start(supervisor.run)
            await supervisor.submit("gate")
            await gated.wait()
            job_id = await supervisor.submit("scan", {"path": str(directory), "recursive": True})
            assert await supervisor.get_status(job_id) is JobStatus.PENDING
            change()
            gate.set()
            job = await supervisor.wait(job_id)
            await supervisor.aclose()
    return job


def _assert_refused_as_replaced(job: JobResult, directory: Path) -> None:
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.result["found"] == 0
    assert [entry["path"] for entry in job.result["errors"]] == [str(directory)]
    assert "replaced by a symlink" in job.result["errors"][0]["error"]


async def test_a_directory_swapped_while_the_job_waits_is_an_error_entry(
    library: VideoLibrary,
    roots: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Held pending behind a gated job, the requested directory becomes a
    symlink to outside the root: the scan completes with an errors entry,
    opens nothing outside and stores nothing."""
    root, outside = roots
    target = root / "lib" / "sub"
    spy = OpenedSpy(monkeypatch)

    job = await _scan_held_while(library, root, target, lambda: _swap_for_link(target, outside))

    _assert_refused_as_replaced(job, target)
    assert spy.opened == []
    assert await library.list_videos() == ([], 0)


@pytest.mark.parametrize("swapped", ["the root", "above the root"])
async def test_a_root_swapped_while_the_job_waits_is_an_error_entry(
    library: VideoLibrary,
    roots: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    swapped: str,
) -> None:
    """The roots are resolved, so a symlink on a root's own path was put there
    since: the root (or a directory above it), replaced while the scan waits
    by a symlink to a tree of the same shape outside, is not followed (a
    review: it was, and the file outside was stored under the root's path)."""
    root, outside = roots
    scan_root = root / "lib"
    (outside / "lib" / "sub").mkdir(parents=True)
    shutil.copy(outside / "secret.mp4", outside / "lib" / "secret.mp4")
    target = scan_root if swapped == "the root" else root
    spy = OpenedSpy(monkeypatch)

    def swap() -> None:
        shutil.rmtree(target)
        target.symlink_to(outside / "lib" if swapped == "the root" else outside)

    job = await _scan_held_while(library, scan_root, scan_root, swap)

    _assert_refused_as_replaced(job, scan_root)
    assert spy.opened == []
    assert await library.list_videos() == ([], 0)


async def test_a_directory_outside_the_roots_fails_the_job(
    library: VideoLibrary, roots: tuple[Path, Path]
) -> None:
    """The roots are checked again at job start: a payload outside every root fails."""
    root, outside = roots

    with anyio.fail_after(TIMEOUT), pytest.raises(ScanError, match="outside the directories"):
        await make_scan_handler(
            library, roots=[root / "lib"], probe_priority=ThreadPriority.NORMAL
        )(make_context(outside))
    assert (await library.list_videos())[1] == 0


async def test_a_directory_above_the_scan_swapped_keeps_the_stored_rows(
    library: VideoLibrary, roots: tuple[Path, Path], clip: EncodedVideo
) -> None:
    """A rescan after ``lib`` became a symlink reads nothing and removes nothing."""
    root, outside = roots
    handler = make_scan_handler(library, roots=[root], probe_priority=ThreadPriority.NORMAL)
    copy_video(clip, root / "lib" / "sub" / "kept.mp4")
    with anyio.fail_after(TIMEOUT):
        first = await handler(make_context(root / "lib" / "sub"))
    moved = root / "moved"
    (root / "lib").rename(moved)
    (root / "lib").symlink_to(outside, target_is_directory=True)

    with anyio.fail_after(TIMEOUT):
        second = await handler(make_context(root / "lib" / "sub"))
        stored = [video.path for video in (await library.list_videos())[0]]

    assert first["added"] == 1
    assert (second["found"], second["removed"]) == (0, 0)
    assert [entry["path"] for entry in second["errors"]] == [str(root / "lib" / "sub")]
    assert stored == [str(root / "lib" / "sub" / "kept.mp4")]


async def test_a_directory_swapped_during_the_walk_is_not_entered(
    roots: tuple[Path, Path],
) -> None:
    """The walk's hook swaps ``sub`` for a link to outside just before it is
    opened: an errors entry, and nothing from outside is found."""
    root, outside = roots
    sub = root / "lib" / "sub"
    errors = ErrorLog()

    def swap(path: str) -> None:
        if path == str(sub):
            _swap_for_link(sub, outside)

    found = walk_videos(str(root / "lib"), recursive=True, errors=errors, before_open=swap)

    assert set(found) == {str(root / "lib" / "inside.mp4")}
    assert [entry["path"] for entry in errors.entries] == [str(sub)]
    assert "replaced by a symlink" in errors.entries[0]["error"]


async def test_a_file_directory_swapped_before_the_probe_is_not_opened(
    library: VideoLibrary,
    roots: tuple[Path, Path],
    clip: EncodedVideo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between the walk and the probe ``sub`` becomes a link to a directory
    holding a file of the same name: the probe refuses it."""
    root, outside = roots
    sub = root / "lib" / "sub"
    copy_video(clip, sub / "secret.mp4")
    spy = OpenedSpy(monkeypatch)
    walk = walk_videos

    def walk_then_swap(*args: Any, **kwargs: Any) -> Any:
        found = walk(*args, **kwargs)
        _swap_for_link(sub, outside)
        return found

    monkeypatch.setattr(_scan, "walk_videos", walk_then_swap)

    with anyio.fail_after(TIMEOUT):
        result = await make_scan_handler(
            library, roots=[root], probe_priority=ThreadPriority.NORMAL
        )(make_context(root / "lib"))
        stored = [video.path for video in (await library.list_videos())[0]]

    assert str(outside / "secret.mp4") not in spy.opened
    assert stored == [str(root / "lib" / "inside.mp4")]
    assert [entry["path"] for entry in result["errors"]] == [str(sub / "secret.mp4")]
    assert "replaced" in result["errors"][0]["error"]


async def test_a_chain_of_1200_links_is_an_error_entry(
    library: VideoLibrary, roots: tuple[Path, Path]
) -> None:
    """A chain of 1,200 symlinks to a clip inside the library: the 40 links
    nearest the clip lead to it, each of the other 1,160 (more than 40 hops
    away) is one errors entry; no RecursionError, and the scan completes."""
    root, _ = roots
    chain = root / "lib" / "chain"
    chain.mkdir()
    (chain / "link0000.mp4").symlink_to(root / "lib" / "inside.mp4")
    for index in range(1, 1200):
        (chain / f"link{index:04d}.mp4").symlink_to(f"link{index - 1:04d}.mp4")

    with anyio.fail_after(TIMEOUT):
        result = await make_scan_handler(
            library, roots=[root], probe_priority=ThreadPriority.NORMAL
        )(make_context(root / "lib"))

    assert result["errors_total"] == 1200 - 40  # each link more than 40 hops from the file
    assert result["found"] == 1
    assert result["added"] == 1
    assert all("Too many levels of symbolic links" in e["error"] for e in result["errors"])


async def test_a_scan_past_its_link_budget_stores_everything_else(
    library: VideoLibrary,
    roots: tuple[Path, Path],
    clip: EncodedVideo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The walk's budget of link components pays for one link of four (its
    name, ``..``, ``data``, ``clip.bin``): that one leads to its clip, each of
    the other three is one errors entry saying why, and the scan completes,
    storing every video it found by its name and the one link's target."""
    monkeypatch.setattr(_walklinks, "MAX_WALK_LINK_COMPONENTS", 4)
    root, _ = roots
    lib = root / "lib"
    copy_video(clip, lib / "sub" / "other.mp4")
    (lib / "data").mkdir()
    copy_video(clip, lib / "data" / "clip.bin")
    (lib / "links").mkdir()
    for index in range(4):
        (lib / "links" / f"l{index}.mp4").symlink_to("../data/clip.bin")

    with anyio.fail_after(TIMEOUT):
        result = await make_scan_handler(
            library, roots=[root], probe_priority=ThreadPriority.NORMAL
        )(make_context(lib))
        stored = {video.path for video in (await library.list_videos())[0]}

    assert stored == {str(lib / name) for name in ("inside.mp4", "sub/other.mp4", "data/clip.bin")}
    assert (result["found"], result["added"], result["errors_total"]) == (3, 3, 3)
    assert all("symlink not followed" in entry["error"] for entry in result["errors"])


def test_loops_dangling_links_and_bad_names_are_error_entries(tmp_path: Path) -> None:
    """A loop, a dangling link, a name that is not UTF-8: each one errors entry."""
    (tmp_path / "a.mp4").symlink_to("b.mp4")
    (tmp_path / "b.mp4").symlink_to("a.mp4")
    (tmp_path / "dangling.mp4").symlink_to("nowhere.mp4")
    os.mkdir(os.path.join(os.fsencode(tmp_path), b"dir-\xfe"))
    errors = ErrorLog()

    found = walk_videos(str(tmp_path), recursive=True, errors=errors)

    assert found == {}
    assert sorted((e["path"], e["error"]) for e in errors.entries) == [
        (str(tmp_path / "a.mp4"), "broken symlink (Too many levels of symbolic links)"),
        (str(tmp_path / "b.mp4"), "broken symlink (Too many levels of symbolic links)"),
        (str(tmp_path / "dangling.mp4"), "broken symlink (No such file or directory)"),
        (str(tmp_path / "dir-\\xfe"), "name is not valid UTF-8; skipped"),
    ]


def test_a_path_over_path_max_is_an_error_entry(tmp_path: Path) -> None:
    """Directories nested past PATH_MAX (made by descriptor): one entry, the walk completes."""
    name = "d" * 250
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    depth = 0
    try:
        while len(str(tmp_path)) + depth * (len(name) + 1) < PATH_MAX + 300:
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            depth += 1
        os.close(os.open("deep.mp4", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    finally:
        os.close(fd)
    (tmp_path / "top.mp4").write_bytes(b"x")
    errors = ErrorLog()

    found = walk_videos(str(tmp_path), recursive=True, errors=errors)

    assert set(found) == {str(tmp_path / "top.mp4")}
    assert len(errors.entries) == 1
    assert errors.entries[0]["error"].endswith("(PATH_MAX); skipped")
    assert len(os.fsencode(errors.entries[0]["path"])) <= PATH_MAX


def test_a_path_of_path_max_bytes_is_an_error_entry_and_one_byte_less_is_walked(
    tmp_path: Path,
) -> None:
    """The bound is exact: a file or a directory whose path is PATH_MAX bytes
    is an errors entry (not entered), one of PATH_MAX - 1 bytes is walked."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    deepest = str(tmp_path)
    try:
        while PATH_MAX - len(os.fsencode(deepest)) - 1 > 250:  # room left for one more name
            name = "d" * min(200, PATH_MAX - len(os.fsencode(deepest)) - 1 - 250)
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, deepest = child, f"{deepest}/{name}"
        room = PATH_MAX - len(os.fsencode(deepest)) - 1  # a name of this length: PATH_MAX bytes
        names = {"f" * (room - 5) + ".mp4": "walked", "f" * (room - 4) + ".mp4": "too long"}
        for name in names:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT, dir_fd=fd))
        os.mkdir("d" * room, dir_fd=fd)
    finally:
        os.close(fd)
    errors = ErrorLog()

    found = walk_videos(str(tmp_path), recursive=True, errors=errors)

    walked, too_long = (f"{deepest}/{name}" for name in names)
    assert len(os.fsencode(too_long)) == PATH_MAX
    assert set(found) == {walked}
    assert [entry["error"].endswith("(PATH_MAX); skipped") for entry in errors.entries] == [
        True,
        True,
    ]


async def test_overlapping_scans_never_delete_each_others_rows(
    library: VideoLibrary,
    roots: tuple[Path, Path],
    clip: EncodedVideo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``lib`` recursive is held between its walk and its comparison while
    ``lib`` flat and ``lib/sub`` store two new files: it keeps both rows and
    still removes the file that was really deleted."""
    root, _ = roots
    lib = root / "lib"
    (lib / "deeper").mkdir()
    doomed = copy_video(clip, lib / "deeper" / "doomed.mp4").path  # only the held scan's
    handler = make_scan_handler(library, roots=[root], probe_priority=ThreadPriority.NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(lib))
    os.unlink(doomed)
    others: list[dict[str, Any]] = []
    walk = walk_videos

    async def other_scans() -> None:
        copy_video(clip, lib / "flat-new.mp4")
        copy_video(clip, lib / "sub" / "sub-new.mp4")
        async with anyio.create_task_group() as group:

            async def run(path: Path, recursive: bool) -> None:
                others.append(await handler(make_context(path, recursive=recursive)))

            group.start_soon(run, lib, False)
            group.start_soon(run, lib / "sub", True)

    def walk_then_let_others_run(*args: Any, **kwargs: Any) -> Any:
        found = walk(*args, **kwargs)
        if args[0] == str(lib) and kwargs["recursive"]:
            anyio.from_thread.run(other_scans)  # both finish before this walk returns
        return found

    monkeypatch.setattr(_scan, "walk_videos", walk_then_let_others_run)

    with anyio.fail_after(TIMEOUT):
        held = await handler(make_context(lib))
        stored = {video.path for video in (await library.list_videos())[0]}

    assert sorted(result["added"] for result in others) == [1, 1]
    assert held["removed"] == 1
    assert stored == {
        str(lib / "inside.mp4"),
        str(lib / "flat-new.mp4"),
        str(lib / "sub" / "sub-new.mp4"),
    }


async def test_a_slower_scan_does_not_write_back_a_row_another_scan_removed(
    library: VideoLibrary, tmp_path: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scan A probes a changed file; before A writes, the file is deleted and
    scan B of the same directory removes its row as gone. A writes no row
    for it (before, it wrote the row back under a new id)."""
    media = tmp_path / "media"
    media.mkdir()
    path = copy_video(clip, media / "a.mp4").path
    kept = copy_video(clip, media / "b.mp4").path
    handler = make_scan_handler(library, probe_priority=ThreadPriority.NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(media))
    for changed in (path, kept):
        await anyio.Path(changed).write_bytes(await anyio.Path(changed).read_bytes() + b"x")
    later: list[dict[str, Any]] = []
    apply = library.apply
    a_writes = True

    async def scan_b_then_apply(*args: Any, **kwargs: Any) -> Any:
        nonlocal a_writes
        if a_writes:  # A's first write; B's own writes pass straight through
            a_writes = False
            os.unlink(path)
            later.append(await handler(make_context(media)))
        return await apply(*args, **kwargs)

    monkeypatch.setattr(library, "apply", scan_b_then_apply)
    with anyio.fail_after(TIMEOUT):
        held = await handler(make_context(media))
        stored = [video.path for video in (await library.list_videos())[0]]

    assert (later[0]["removed"], later[0]["updated"]) == (1, 1)
    assert (held["updated"], held["removed"]) == (1, 0)  # b.mp4; a.mp4's row was B's to remove
    assert stored == [str(kept)]


@pytest.mark.parametrize("stored_before", [False, True], ids=["new", "stored"])
async def test_a_slower_scan_does_not_write_its_older_look_over_a_newer_row(
    library: VideoLibrary,
    tmp_path: Path,
    clip: EncodedVideo,
    monkeypatch: pytest.MonkeyPatch,
    stored_before: bool,
) -> None:
    """Scan A has probed a file; before A writes, the file is rewritten and
    scan B stores what it holds now. A does not write its older look over
    B's row: an errors entry says the file changed, it is neither added nor
    updated, and A's other file is written."""
    media = tmp_path / "media"
    media.mkdir()
    path = copy_video(clip, media / "a.mp4").path
    other = copy_video(clip, media / "b.mp4").path
    handler = make_scan_handler(library, probe_priority=ThreadPriority.NORMAL)
    if stored_before:
        with anyio.fail_after(TIMEOUT):
            await handler(make_context(media))
        await anyio.Path(other).write_bytes(await anyio.Path(other).read_bytes() + b"x")
        await anyio.Path(path).write_bytes(await anyio.Path(path).read_bytes() + b"x")
    later: list[dict[str, Any]] = []
    apply = library.apply
    a_writes = True

    async def rewritten_and_scanned_then_apply(*args: Any, **kwargs: Any) -> Any:
        nonlocal a_writes
        if a_writes:  # A's first write; B's own writes pass straight through
            a_writes = False
            await anyio.Path(path).write_bytes(await anyio.Path(path).read_bytes() + b"yy")
            later.append(await handler(make_context(media)))
        return await apply(*args, **kwargs)

    monkeypatch.setattr(library, "apply", rewritten_and_scanned_then_apply)
    with anyio.fail_after(TIMEOUT):
        held = await handler(make_context(media))
        stored = {video.path: video for video in (await library.list_videos())[0]}

    now = os.stat(path)
    assert later[0]["errors"] == []
    assert (stored[str(path)].size_bytes, stored[str(path)].mtime_ns) == (
        now.st_size,
        now.st_mtime_ns,
    )
    assert stored[str(other)].size_bytes == os.stat(other).st_size
    assert held["errors"] == [{"path": str(path), "error": _scanwrite.CHANGED_DURING_SCAN}]
    written = "updated" if stored_before else "added"
    assert held[written] == 1  # b.mp4 alone
    assert held["added" if stored_before else "updated"] == 0


async def test_a_file_deleted_between_its_probe_and_its_write_gets_no_row(
    library: VideoLibrary, tmp_path: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file is new, one was stored and changed; both are deleted right
    after their probe: neither is written, the stored one's row goes and
    counts as removed, and the scan completes."""
    media = tmp_path / "media"
    media.mkdir()
    stored_before = copy_video(clip, media / "old.mp4").path
    handler = make_scan_handler(library, probe_priority=ThreadPriority.NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(media))
    await anyio.Path(stored_before).write_bytes(await anyio.Path(stored_before).read_bytes() + b"x")
    new = copy_video(clip, media / "new.mp4").path
    kept = copy_video(clip, media / "kept.mp4").path

    def probe_then_deleted(
        name: str, *, dir_fd: int | None = None, expect: object = None
    ) -> VideoProbe:
        probe = probe_video(name, dir_fd=dir_fd)
        if name != "kept.mp4":
            os.unlink(name, dir_fd=dir_fd)
        return probe

    monkeypatch.setattr(_scanprobe, "probe_video", probe_then_deleted)
    with anyio.fail_after(TIMEOUT):
        result = await handler(make_context(media))
        stored = [video.path for video in (await library.list_videos())[0]]

    assert not await anyio.Path(new).exists()
    keys = ("found", "added", "updated", "removed", "probed", "probe_errors")
    assert {key: result[key] for key in keys} == {
        "found": 3,
        "added": 1,
        "updated": 0,
        "removed": 1,
        "probed": 3,  # and none of them failed: the two deleted are not probe errors
        "probe_errors": 0,
    }
    assert result["errors"] == []
    assert stored == [str(kept)]


async def test_a_scanned_directory_replaced_mid_scan_loses_no_rows(
    library: VideoLibrary, tmp_path: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a scan's probes and its write, its directory is replaced by
    another holding the same names (and the old one deleted): its
    descriptor now shows an empty, deleted directory, which says nothing of
    the files at the path. No row is deleted as gone (before, every one was),
    and none is written from the old directory's probes: one errors entry."""
    media = tmp_path / "media"
    media.mkdir()
    paths = [copy_video(clip, media / name).path for name in ("a.mp4", "b.mp4")]
    handler = make_scan_handler(library, probe_priority=ThreadPriority.NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(media))
    for changed in paths:
        await anyio.Path(changed).write_bytes(await anyio.Path(changed).read_bytes() + b"x")
    apply = library.apply
    swapped: list[bool] = []

    async def swapped_then_apply(*args: Any, **kwargs: Any) -> Any:
        if not swapped:
            swapped.append(True)
            os.rename(media, tmp_path / "old")
            media.mkdir()
            for path in paths:
                copy_video(clip, Path(path))
            shutil.rmtree(tmp_path / "old")
        return await apply(*args, **kwargs)

    monkeypatch.setattr(library, "apply", swapped_then_apply)
    with anyio.fail_after(TIMEOUT):
        result = await handler(make_context(media))
        stored = [video.path for video in (await library.list_videos())[0]]

    assert swapped == [True]
    assert (result["updated"], result["removed"]) == (0, 0)
    assert (result["probed"], result["probe_errors"]) == (2, 0)
    assert [entry["path"] for entry in result["errors"]] == [str(media)]
    assert stored == [str(path) for path in paths]


async def test_a_directory_replaced_by_a_link_after_the_walk_gets_no_row_under_it(
    library: VideoLibrary, roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scanned directory is moved away and a symlink to outside the roots put in
    its place after the walk: the probes read the old directory through the scan's
    descriptor, but no row is stored under the path, which now leads outside; one
    errors entry says why."""
    root, outside = roots

    def walk_then_swap(*args: Any, **kwargs: Any) -> dict[str, Any]:
        found = walk_videos(*args, **kwargs)
        os.rename(root / "lib", root / "moved")
        (root / "lib").symlink_to(outside, target_is_directory=True)
        return found

    monkeypatch.setattr(_scan, "walk_videos", walk_then_swap)
    handler = make_scan_handler(library, roots=[str(root)], probe_priority=ThreadPriority.NORMAL)
    with anyio.fail_after(TIMEOUT):
        result = await handler(make_context(root / "lib"))
        stored = [video.path for video in (await library.list_videos())[0]]

    assert (result["found"], result["added"]) == (1, 0)
    assert [entry["path"] for entry in result["errors"]] == [str(root / "lib")]
    assert "during the scan" in result["errors"][0]["error"]
    assert stored == []


async def test_a_directory_replaced_after_an_unchanged_walk_says_so_and_keeps_its_rows(
    library: VideoLibrary,
    roots: tuple[Path, Path],
    clip: EncodedVideo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rescan finds nothing to probe, and its directory is moved away and a
    symlink to outside put in its place once the walk ends (a file of it
    deleted too): no batch would be written to say so, yet the result has
    its one errors entry, the rows stay, and nothing is probed."""
    root, outside = roots
    changed = copy_video(clip, root / "lib" / "b.mp4").path
    handler = make_scan_handler(library, roots=[str(root)], probe_priority=ThreadPriority.NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(root / "lib"))
        before = sorted(video.path for video in (await library.list_videos())[0])
    os.utime(changed, ns=(0, 0))  # to probe, were the directory still there

    def walk_then_swap(*args: Any, **kwargs: Any) -> dict[str, Any]:
        found = walk_videos(*args, **kwargs)
        os.rename(root / "lib", root / "moved")
        os.remove(root / "moved" / "b.mp4")
        (root / "lib").symlink_to(outside, target_is_directory=True)
        return found

    monkeypatch.setattr(_scan, "walk_videos", walk_then_swap)
    written: list[str] = []

    async def spy(*args: Any, **kwargs: Any) -> None:
        written.append("a write")

    monkeypatch.setattr(library, "place", spy)  # the walk's file systems, on its rows
    monkeypatch.setattr(library, "update_mount_points", spy)
    with anyio.fail_after(TIMEOUT):
        result = await handler(make_context(root / "lib", forget_unmounted=True))
        after = sorted(video.path for video in (await library.list_videos())[0])

    assert written == []  # nothing of the walk is stored: its directory is not there
    assert [(entry["path"], entry["error"]) for entry in result["errors"]] == [
        (str(root / "lib"), _scanned.REPLACED_DURING_SCAN)
    ]
    assert (result["removed"], result["probed"], result["updated"]) == (0, 0, 0)
    assert after == before


async def test_the_videos_of_a_scanned_directory_found_empty_are_kept(
    library: VideoLibrary, tmp_path: Path, clip: EncodedVideo
) -> None:
    """A disk not mounted leaves an empty mount point: a scan of it keeps
    the videos stored under it, and one ``errors`` entry says why. Once the
    directory holds anything at all (here an empty subdirectory), a scan
    removes them."""
    nas = tmp_path / "nas"
    (nas / "films").mkdir(parents=True)
    stored = [str(copy_video(clip, nas / name).path) for name in ("a.mp4", "films/b.mp4")]
    handler = make_scan_handler(library, probe_priority=ThreadPriority.NORMAL)
    with anyio.fail_after(TIMEOUT):
        first = await handler(make_context(nas))
    shutil.rmtree(nas)
    nas.mkdir()  # the mount point, the disk not mounted

    with anyio.fail_after(TIMEOUT):
        unmounted = await handler(make_context(nas))
        flat = await handler(make_context(nas, recursive=False))
        kept = [video.path for video in (await library.list_videos())[0]]
    (nas / "films").mkdir()  # an empty subdirectory is something: not a mount point
    with anyio.fail_after(TIMEOUT):
        emptied = await handler(make_context(nas))
        left = (await library.list_videos())[1]

    assert first["added"] == 2
    assert (unmounted["removed"], unmounted["errors_total"]) == (0, 1)
    assert unmounted["errors"][0]["path"] == str(nas)
    assert "empty, but 2 stored video(s) were in it: kept" in unmounted["errors"][0]["error"]
    assert (flat["removed"], flat["errors_total"]) == (0, 1)  # a.mp4 only, kept too
    assert kept == stored
    assert (emptied["removed"], emptied["errors_total"]) == (2, 0)
    assert left == 0


async def test_a_link_target_another_scan_stores_meanwhile_is_kept(
    library: VideoLibrary,
    roots: tuple[Path, Path],
    clip: EncodedVideo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While ``lib`` is held after its walk, ``lib/sub`` stores the target of a
    new link (a file no walk finds by its name): the held scan keeps that row,
    written after it began, though only a link leads there."""
    root, _ = roots
    lib = root / "lib"
    handler = make_scan_handler(library, roots=[root], probe_priority=ThreadPriority.NORMAL)
    walk = walk_videos

    async def other_scan() -> None:
        copy_video(clip, lib / "sub" / "data.bin")
        (lib / "sub" / "link.mp4").symlink_to("data.bin")
        assert (await handler(make_context(lib / "sub")))["added"] == 1

    def walk_then_let_the_other_run(*args: Any, **kwargs: Any) -> Any:
        found = walk(*args, **kwargs)
        if args[0] == str(lib):
            anyio.from_thread.run(other_scan)
        return found

    monkeypatch.setattr(_scan, "walk_videos", walk_then_let_the_other_run)

    with anyio.fail_after(TIMEOUT):
        held = await handler(make_context(lib))
        stored = {video.path for video in (await library.list_videos())[0]}

    assert held["removed"] == 0
    assert stored == {str(lib / "inside.mp4"), str(lib / "sub" / "data.bin")}


async def test_the_result_is_bounded_in_bytes_and_the_store_keeps_every_error(
    library: VideoLibrary, tmp_path: Path
) -> None:
    """1,000 unreadable files with 200-character names: the result lists 20
    cut entries within RESULT_ERRORS_MAX_BYTES, counts all 1,000, and the
    store keeps all 1,000, served in pages."""
    media = tmp_path / "media"
    media.mkdir()
    for index in range(1000):
        (media / f"{index:04d}{'x' * 192}.mp4").write_bytes(b"not a video")
    context = functools.partial(make_context, media)

    with anyio.fail_after(TIMEOUT):
        result = await make_scan_handler(library, probe_priority=ThreadPriority.NORMAL)(context())
        pages = [await library.scan_errors("j", limit=300, offset=300 * i) for i in range(4)]

    entries = json.dumps(result["errors"], ensure_ascii=False).encode()
    assert len(result["errors"]) == DEFAULT_ERROR_CAP
    assert (result["errors_total"], result["errors_truncated"]) == (1000, 980)
    assert len(entries) <= RESULT_ERRORS_MAX_BYTES
    assert len(json.dumps(result).encode()) <= RESULT_ERRORS_MAX_BYTES + 200
    assert [(len(page), total) for page, total in pages] == [(300, 1000)] * 3 + [(100, 1000)]
    stored = [path for page, _ in pages for path, _ in page]
    assert sorted(stored) == sorted(str(path) for path in media.iterdir())


def _worst_json_bytes(value: Any) -> int:
    """Bytes of ``value`` as JSON, the larger of ASCII-only (what the API writes) and UTF-8."""
    return max(len(json.dumps(value)), len(json.dumps(value, ensure_ascii=False).encode()))


async def test_long_odd_paths_and_messages_are_cut_within_the_byte_bound(
    library: VideoLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths of about 3,800 characters and 1,000-character messages, full of
    control characters and characters outside the BMP (the costliest in
    JSON): each listed path keeps its end behind ``…``, each message its
    start, and the entries stay within RESULT_ERRORS_MAX_BYTES."""
    name = "\x01" * 100 + "a" * 140 + "\U0001f600"
    deep = tmp_path.joinpath("media", *[name] * 15)
    deep.mkdir(parents=True)
    for index in range(DEFAULT_ERROR_CAP + 5):
        (deep / (f"{index:02d}" + "\x02" * 40 + "\U0001f600.mp4")).write_bytes(b"x")
    reason = "\x07\U0001f600" * 500

    def failing_probe(name: str, *, dir_fd: int | None = None, expect: object = None) -> VideoProbe:
        raise ProbeError(name, reason)

    monkeypatch.setattr(_scanprobe, "probe_video", failing_probe)

    with anyio.fail_after(TIMEOUT):
        result = await make_scan_handler(library, probe_priority=ThreadPriority.NORMAL)(
            make_context(tmp_path / "media")
        )

    entries = result["errors"]
    assert result["errors_total"] == DEFAULT_ERROR_CAP + 5
    assert len(entries) == DEFAULT_ERROR_CAP
    assert _worst_json_bytes(entries) <= RESULT_ERRORS_MAX_BYTES
    for entry in entries:
        full = str(deep / entry["path"].rsplit("/", 1)[1])
        assert len(full) > 3700
        assert entry["path"] == "…" + full[-(ERROR_PATH_CHARS - 1) :]
        assert entry["error"] == reason[: ERROR_TEXT_CHARS - 1] + "…"


async def test_a_scan_of_a_subdirectory_keeps_a_link_target_another_scan_stored(
    library: VideoLibrary, roots: tuple[Path, Path], clip: EncodedVideo
) -> None:
    """Scan ``lib``: ``lib/a/link.mp4`` leads to ``lib/sub/data.bin``, stored.
    Then scan ``lib/sub``, which meets no link to it: the file is still
    there, so its row stays."""
    root, _ = roots
    lib = root / "lib"
    copy_video(clip, lib / "sub" / "data.bin")
    (lib / "a").mkdir()
    (lib / "a" / "link.mp4").symlink_to("../sub/data.bin")
    handler = make_scan_handler(library, roots=[root], probe_priority=ThreadPriority.NORMAL)

    with anyio.fail_after(TIMEOUT):
        first = await handler(make_context(lib))
        second = await handler(make_context(lib / "sub"))
        stored = {video.path for video in (await library.list_videos())[0]}

    assert first["added"] == 2
    assert second["removed"] == 0
    assert stored == {str(lib / "inside.mp4"), str(lib / "sub" / "data.bin")}


async def test_a_row_another_scan_rewrites_while_its_probe_fails_is_kept(
    library: VideoLibrary, tmp_path: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored file changed and no longer probes, but while this scan probes
    it another scan (here: another connection to the same store) writes its
    row afresh: the stale-row delete keeps that newer row."""
    media = tmp_path / "media"
    media.mkdir()
    path = copy_video(clip, media / "a.mp4").path
    handler = make_scan_handler(library, probe_priority=ThreadPriority.NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(media))
    (fresh,) = (await library.list_videos())[0]
    await anyio.Path(path).write_bytes(await anyio.Path(path).read_bytes() + b"changed")

    def rewritten_then_failing(
        name: str, *, dir_fd: int | None = None, expect: object = None
    ) -> VideoProbe:
        other = VideoStore.open(tmp_path / "state" / "videos.sqlite")
        try:
            other.upsert(
                [
                    VideoRecord(
                        path=str(path),
                        directory=str(media),
                        filename=name,
                        size_bytes=1,
                        mtime_ns=1,
                        probe=probe_video(str(path)),
                    )
                ]
            )
        finally:
            other.close()
        raise ProbeError(name, "not a video any more")

    monkeypatch.setattr(_scanprobe, "probe_video", rewritten_then_failing)

    with anyio.fail_after(TIMEOUT):
        result = await handler(make_context(media))
        stored = (await library.list_videos())[0]

    assert result["errors_total"] == 1
    assert [(video.path, video.size_bytes) for video in stored] == [(fresh.path, 1)]


async def test_a_scan_overtaken_by_a_later_scan_of_its_directory_stores_no_errors(
    library: VideoLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scan A of ``media`` is held after its walk while scan B of ``media``
    runs whole: B's list is complete and stays; A, overtaken, stores nothing
    more, and its list reads as replaced (not as empty)."""
    media = tmp_path / "media"
    media.mkdir()
    for index in range(3):
        (media / f"bad{index}.mp4").write_bytes(b"not a video")
    handler = make_scan_handler(library, probe_priority=ThreadPriority.NORMAL)
    later: list[dict[str, Any]] = []
    walk = walk_videos

    async def scan_b() -> None:
        context = JobContext(
            job_id="b",
            job_type="scan",
            payload={"path": str(media), "recursive": True},
            sink=lambda *_: None,
        )
        later.append(await handler(context))

    held: list[bool] = []

    def walk_then_let_b_run(*args: Any, **kwargs: Any) -> Any:
        found = walk(*args, **kwargs)
        if not held:  # A's walk, not B's
            held.append(True)
            anyio.from_thread.run(scan_b)
        return found

    monkeypatch.setattr(_scan, "walk_videos", walk_then_let_b_run)

    with anyio.fail_after(TIMEOUT):
        overtaken = await handler(make_context(media))
        b_errors = await library.scan_errors("b", limit=100, offset=0)
        with pytest.raises(ScanErrorsReplaced):
            await library.scan_errors("j", limit=100, offset=0)

    assert (overtaken["errors_total"], later[0]["errors_total"]) == (3, 3)
    assert b_errors[1] == 3
    assert sorted(path for path, _ in b_errors[0]) == sorted(str(p) for p in media.iterdir())


async def test_a_batch_is_written_when_the_directory_cannot_be_looked_at_again(
    library: VideoLibrary, tmp_path: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening the scanned directory's path again fails for a reason that says
    nothing of it (out of descriptors) just before the write: that is no sign of
    a replacement, and the probes are stored, as before such a check existed."""
    media = tmp_path / "media"
    media.mkdir()
    paths = [copy_video(clip, media / name).path for name in ("a.mp4", "b.mp4")]

    def out_of_descriptors(*args: Any) -> int:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    def walk_then_fail(*args: Any, **kwargs: Any) -> dict[str, Any]:
        found = walk_videos(*args, **kwargs)
        monkeypatch.setattr(_beneath, "open_below_root", out_of_descriptors)
        monkeypatch.setattr(_scanned, "open_below_root", out_of_descriptors, raising=False)
        return found

    monkeypatch.setattr(_scan, "walk_videos", walk_then_fail)
    handler = make_scan_handler(library, probe_priority=ThreadPriority.NORMAL)
    with anyio.fail_after(TIMEOUT):
        result = await handler(make_context(media))
        stored = [video.path for video in (await library.list_videos())[0]]

    assert (result["added"], result["errors"]) == (2, [])
    assert stored == [str(path) for path in paths]


async def test_a_batch_of_stale_rows_alone_is_not_applied_once_the_directory_is_replaced(
    library: VideoLibrary, tmp_path: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored video changed and no longer probes: its row would go with the next
    batch. The directory is replaced (a good video at the same path) just before
    that batch, which holds no record: the row stays, and one errors entry says
    the directory was replaced."""
    media = tmp_path / "media"
    media.mkdir()
    path = copy_video(clip, media / "a.mp4").path
    handler = make_scan_handler(library, probe_priority=ThreadPriority.NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(media))
    await anyio.Path(path).write_bytes(b"not a video any more")
    apply = library.apply

    async def swapped_then_apply(records: Any, stale: Any, **kwargs: Any) -> Any:
        os.rename(media, tmp_path / "old")
        media.mkdir()
        copy_video(clip, Path(path))
        return await apply(records, stale, **kwargs)

    monkeypatch.setattr(library, "apply", swapped_then_apply)
    with anyio.fail_after(TIMEOUT):
        result = await handler(make_context(media))
        stored = [video.path for video in (await library.list_videos())[0]]

    assert stored == [str(path)]
    assert str(media) in [entry["path"] for entry in result["errors"]]


async def test_no_chunk_is_probed_once_a_batch_finds_the_directory_replaced(
    library: VideoLibrary, tmp_path: Path, clip: EncodedVideo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a batch finds the scanned directory replaced, nothing more is written, so
    nothing more is probed: the chunk being probed then is finished, and no later one
    is begun (before, every file was probed and its row thrown away)."""
    media = tmp_path / "media"
    media.mkdir()
    chunk = _scanprobe.PROBE_CHUNK
    names = [f"v{index:02d}.mp4" for index in range(4 * chunk)]  # four chunks, one thread
    for name in names:
        copy_video(clip, media / name)
    monkeypatch.setattr(_scanwrite, "WRITE_BATCH", chunk)  # each chunk a batch of its own
    token = anyio.lowlevel.current_token()  # probe threads are not anyio's workers
    first_batch_done = anyio.Event()
    probed: list[str] = []
    apply = library.apply

    async def replaced_then_apply(records: Any, stale: Any, **kwargs: Any) -> Any:
        try:
            if not first_batch_done.is_set():
                os.rename(media, tmp_path / "old")  # the probes read it through the descriptor
                media.mkdir()
            return await apply(records, stale, **kwargs)
        finally:
            first_batch_done.set()

    def probe(name: str, *, dir_fd: int | None = None, expect: object = None) -> VideoProbe:
        probed.append(name)
        if len(probed) == chunk + 1:  # the second chunk: after the first batch's write
            anyio.from_thread.run(first_batch_done.wait, token=token)
        return probe_video(name, dir_fd=dir_fd)

    monkeypatch.setattr(library, "apply", replaced_then_apply)
    monkeypatch.setattr(_scanprobe, "probe_video", probe)
    with anyio.fail_after(TIMEOUT):
        result = await make_scan_handler(
            library, probe_threads=1, probe_priority=ThreadPriority.NORMAL
        )(make_context(media))
        stored = (await library.list_videos())[0]

    assert probed == names[: 2 * chunk]
    assert (result["found"], result["added"]) == (4 * chunk, 0)
    assert [entry["path"] for entry in result["errors"]] == [str(media)]
    assert stored == []


async def test_a_stored_file_whose_failed_probe_read_it_half_copied_keeps_its_row(
    library: VideoLibrary,
    tmp_path: Path,
    clip: EncodedVideo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two stored files are being copied over when a scan walks them, so their
    probes fail. One copy finishes before the batch is written: that file is
    no longer the one the walk saw, so its row, id and all, stays for the next
    scan, with an errors entry saying it changed beside the probe's. The other
    is still the file the walk saw, which cannot be probed: its row goes."""
    media = tmp_path / "media"
    media.mkdir()
    copied = copy_video(clip, media / "a.mp4").path
    broken = copy_video(clip, media / "b.mp4").path
    handler = make_scan_handler(library, probe_priority=ThreadPriority.NORMAL)
    with anyio.fail_after(TIMEOUT):
        await handler(make_context(media))
        ids = {video.path: video.id for video in (await library.list_videos())[0]}
    whole = await anyio.Path(copied).read_bytes()
    for path in (copied, broken):
        await anyio.Path(path).write_bytes(whole[:100])  # the copy's first bytes
    apply = library.apply

    async def copy_finished_then_apply(*args: Any, **kwargs: Any) -> Any:
        await anyio.Path(copied).write_bytes(whole)
        return await apply(*args, **kwargs)

    monkeypatch.setattr(library, "apply", copy_finished_then_apply)
    with anyio.fail_after(TIMEOUT):
        result = await handler(make_context(media))
        stored = {video.path: video.id for video in (await library.list_videos())[0]}

    assert stored == {str(copied): ids[str(copied)]}
    errors = [(entry["path"], entry["error"]) for entry in result["errors"]]
    assert (str(copied), _scanwrite.CHANGED_DURING_SCAN) in errors
    assert sorted(path for path, _ in errors) == sorted([str(broken), str(copied), str(copied)])
    assert (result["probe_errors"], result["removed"], result["updated"]) == (2, 1, 0)  # broken
