"""walk_videos: which files a scan sees, and which it reports as errors."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import socket
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

from stoat_ferret.library import (
    ErrorLog,
    ScanError,
    _links,
    _names,
    _walk,
    _walklinks,
    walk_videos,
)
from stoat_ferret.library._beneath import MAX_DEPTH
from stoat_ferret.library._rootlinks import unalias
from tests.library.support import listed_path
from tests.permissions import call_denied

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def _touch(path: Path, content: bytes = b"x") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return str(path)


def _walk_paths(root: Path, *, recursive: bool = True) -> tuple[set[str], list[dict[str, str]]]:
    errors = ErrorLog()
    found = walk_videos(str(root), recursive=recursive, errors=errors)
    return set(found), errors.entries


def test_video_extensions_in_any_case(tmp_path: Path) -> None:
    """Known extensions count whatever their case; every other file is ignored silently."""
    names = ["a.mp4", "b.MKV", "c.WebM", "d.mov", "e.M4V", "f.avi", "g.mpg", "h.MPEG", "i.ts"]
    videos = {_touch(tmp_path / name) for name in [*names, "j.wmv", "k.flv"]}
    for name in ("notes.txt", "clip.mp4.part", "mp4", "clip_mp4", "photo.jpg", "x.mp"):
        _touch(tmp_path / name)

    found, errors = _walk_paths(tmp_path)

    assert found == videos
    assert errors == []


@pytest.mark.parametrize("recursive", [True, False])
def test_apple_double_files_are_ignored_and_hidden_videos_are_not(
    tmp_path: Path, recursive: bool
) -> None:
    """``._clip.mp4`` (macOS's attributes of ``clip.mp4`` on a disk that cannot
    keep them) is no video: ignored silently, as a ``.txt``; a hidden
    ``.clip.mp4`` and a name with ``._`` inside it are videos."""
    videos = {_touch(tmp_path / name) for name in ("clip.mp4", ".clip.mp4", "a._b.mkv")}
    _touch(tmp_path / "._clip.mp4", b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    _touch(tmp_path / "._.MOV")

    found, errors = _walk_paths(tmp_path, recursive=recursive)

    assert found == videos
    assert errors == []
    assert _names.is_video_name("clip.mp4")
    assert not _names.is_video_name("._clip.mp4")


def test_a_recursive_walk_enters_no_trash(tmp_path: Path) -> None:
    """The trashes of file managers (a disk's, a home's, Windows' and macOS's)
    and the recycle bins of file servers (Synology's, QNAP's, Samba's) are
    not entered; ordinary folders named like them (``Trash``, ``Recycler``)
    are."""
    videos = {
        _touch(tmp_path / name)
        for name in (
            "a.mp4",
            "Trash/b.mp4",
            "trash/c.mp4",
            ".Trash-me/d.mp4",
            "share/Trash/e.mp4",
            ".local/Trash/f.mp4",
            "Recycler/g.mp4",
            "Shows/The Recycler/h.mp4",
            ".trash/i.mp4",
        )
    }
    for name in (
        ".Trash/1000/files/x.mp4",
        ".Trash-1000/files/x.mp4",
        "disk/.Trashes/501/x.mp4",
        "$RECYCLE.BIN/S-1-5-21/x.mp4",
        "c/$Recycle.Bin/x.mp4",
        "home/.local/share/Trash/files/x.mp4",
        "nas/video/#recycle/x.mp4",
        "nas/video/@Recycle/x.mp4",
        "share/.recycle/me/x.mp4",
    ):
        _touch(tmp_path / name)

    found, errors = _walk_paths(tmp_path)

    assert found == videos
    assert errors == []


def test_a_recursive_walk_enters_no_snapshot_or_nas_folder(tmp_path: Path) -> None:
    """Snapshot folders (NetApp's, snapper's, ZFS's, Synology's, QNAP's: earlier
    copies of the videos beside them) and the folders a NAS or a file system
    keeps for itself (Synology's index with its preview videos, QNAP's
    thumbnails and transcoded copies, lost+found, Windows' System Volume
    Information) are not entered; folders named like them in another case
    or with more to their name are, and a flat walk of such a folder itself
    takes its videos."""
    videos = {
        _touch(tmp_path / name)
        for name in (
            "a.mp4",
            "snapshot/b.mp4",
            ".Snapshot/c.mp4",
            "snapshots/d.mp4",
            "eaDir/e.mp4",
            "Transcode/f.mp4",
            "zfs/g.mp4",
            "lost+found-old/h.mp4",
        )
    }
    for name in (
        "vol/.snapshot/hourly.0/x.mp4",
        "vol/~snapshot/hourly.0/x.mp4",
        ".snapshots/12/snapshot/x.mp4",
        "pool/.zfs/snapshot/daily/x.mp4",
        "share/#snapshot/GMT+00_2026.12.01/x.mp4",
        "share/@Recently-Snapshot/GMT+00_2026-12-01/x.mp4",
        "video/@eaDir/x.mp4/SYNOPHOTO_FILM_H.mp4",
        "video/.@__thumb/x.mp4",
        "video/@Transcode/x.mp4_240.mp4",
        "lost+found/x.mp4",
        "System Volume Information/x.mp4",
    ):
        _touch(tmp_path / name)

    found, errors = _walk_paths(tmp_path)
    flat, _ = _walk_paths(tmp_path / "video" / "@Transcode", recursive=False)

    assert found == videos
    assert errors == []
    assert flat == {str(tmp_path / "video" / "@Transcode" / "x.mp4_240.mp4")}


def test_reports_size_and_mtime(tmp_path: Path) -> None:
    """Each file's fingerprint is its stat size and st_mtime_ns."""
    path = _touch(tmp_path / "a.mp4", b"12345")
    os.utime(path, ns=(1_000_000_123, 2_000_000_456))

    found = walk_videos(str(tmp_path), recursive=False, errors=ErrorLog())

    assert found == {path: (5, 2_000_000_456)}


def test_recursive_descends_and_non_recursive_stays(tmp_path: Path) -> None:
    """recursive=True finds nested files; recursive=False only the directory's own."""
    top = _touch(tmp_path / "top.mp4")
    nested = _touch(tmp_path / "a" / "b" / "deep.mkv")

    assert _walk_paths(tmp_path)[0] == {top, nested}
    assert _walk_paths(tmp_path, recursive=False)[0] == {top}


def test_directory_symlinks_are_not_followed(tmp_path: Path) -> None:
    """A link to a subdirectory and a link back to the root (a loop) are both
    skipped; one named as a video says why it is no video."""
    real = _touch(tmp_path / "sub" / "clip.mp4")
    (tmp_path / "alias").symlink_to(tmp_path / "sub", target_is_directory=True)
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "folder.mp4").symlink_to(tmp_path / "sub", target_is_directory=True)

    found, errors = _walk_paths(tmp_path)

    assert found == {real}
    assert errors == [
        {
            "path": f"{tmp_path}/folder.mp4",
            "error": "symlink target not a regular file (a directory); skipped",
        }
    ]


def test_a_symlink_leading_outside_is_an_error_whatever_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recursive walk reports a link that leads outside the scanned directory
    (``Movies -> /mnt/nas/Movies``), named as a video or not, whether its
    target is there or not: the videos behind it are left out, and the scan
    says so. A link not named as a video is judged by its target as written
    (only the link is read: no resolution, no link budget spent) unless it
    climbs (``..``) after a named component, which may be a link, and a
    hidden one (``.config``) is left alone. A non-recursive walk enters no
    folder: it reports none of them."""
    outside = tmp_path / "outside"
    _touch(outside / "films" / "clip.mp4")
    root = tmp_path / "library"
    inside = _touch(root / "sub" / "own.mp4")
    (root / "Movies").symlink_to(outside / "films", target_is_directory=True)
    (root / "Unmounted").symlink_to(tmp_path / "nas" / "films", target_is_directory=True)
    (root / "sub" / "notes.txt").symlink_to(_touch(outside / "notes.txt"))
    (root / "sub" / "Up").symlink_to("../../outside/films")  # relative, climbing out
    (root / "Alias").symlink_to(root / "sub", target_is_directory=True)  # inside: walked as sub
    (root / "sub" / "Back").symlink_to("../../library/sub")  # out and back in, as written
    (root / "broken").symlink_to(root / "missing")  # inside and broken: by its name, no video
    (root / ".config").symlink_to(outside)  # hidden
    # "..": after a named component, the text cannot tell; those links are resolved.
    (root / "sub" / "Top").symlink_to("..")  # the scanned directory
    (root / "sub" / "Films").symlink_to("Top/../films")  # Top's parent: outside
    (root / "sub" / "deeper").mkdir()
    (root / "x").mkdir()
    (root / "Deeper").symlink_to("sub/deeper")
    (root / "Near").symlink_to("Deeper/../../x")  # as written outside; in fact x, inside
    resolved: list[str] = []
    resolve = _links.resolve_link

    def counted(*args: Any, **kwargs: Any) -> Any:
        resolved.append(args[2])
        return resolve(*args, **kwargs)

    monkeypatch.setattr(_walklinks, "resolve_link", counted)

    found, errors = _walk_paths(root)

    assert found == {inside}
    assert sorted(errors, key=lambda e: e["path"]) == [
        {"path": str(root / name), "error": "symlink points outside the scanned directory"}
        for name in ("Movies", "Unmounted", "sub/Films", "sub/Up", "sub/notes.txt")
    ]
    assert sorted(resolved) == ["Films", "Near"]  # and video-named links (none here)
    assert _walk_paths(root, recursive=False) == (set(), [])


def test_file_symlink_inside_is_stored_once_under_its_target(tmp_path: Path) -> None:
    """Two links and the file itself give one entry, under the resolved path."""
    real = _touch(tmp_path / "sub" / "clip.mp4")
    (tmp_path / "link.mp4").symlink_to(tmp_path / "sub" / "clip.mp4")
    (tmp_path / "other.MKV").symlink_to(tmp_path / "link.mp4")

    found, errors = _walk_paths(tmp_path)

    assert found == {real}
    assert errors == []


def test_absolute_links_written_with_a_link_of_the_roots_are_read_through_it(
    tmp_path: Path,
) -> None:
    """A root named through a link (``/home -> var/home``): a link in it whose
    absolute target is written with that spelling (``/home/me/videos/...``)
    leads where the spelling does, a video's link and a folder's alike; one
    written so that leads elsewhere (another user's home) is still outside.
    Without the roots' links, all three are outside, as written."""
    root = tmp_path / "var" / "home" / "me" / "videos"
    real = _touch(root / "sub" / "clip.mp4")
    (tmp_path / "home").symlink_to("var/home")
    spelt = tmp_path / "home" / "me" / "videos"
    (root / "link.mp4").symlink_to(spelt / "sub" / "clip.mp4")
    (root / "Sub").symlink_to(spelt / "sub", target_is_directory=True)
    (root / "theirs.mp4").symlink_to(_touch(tmp_path / "home" / "them" / "x.mp4"))
    root_links = ((str(tmp_path / "home"), str(tmp_path / "var" / "home")),)
    outside = "symlink points outside the scanned directory"

    errors = ErrorLog()
    found = walk_videos(str(root), recursive=True, errors=errors, root_links=root_links)

    assert set(found) == {real}
    assert errors.entries == [{"path": str(root / "theirs.mp4"), "error": outside}]
    assert sorted(entry["path"] for entry in _walk_paths(root)[1]) == [
        str(root / name) for name in ("Sub", "link.mp4", "theirs.mp4")
    ]


def test_unalias_reads_leading_links_whole_as_the_kernel_does() -> None:
    """A leading link, as whole components (``//`` and ``.`` read as the
    kernel reads them), again while one leads (a spelling through two links);
    any other target (relative, a sibling spelt alike) is left as written."""
    root_links = (
        ("/srv/mine", "/var/home/me/videos"),
        ("/home", "/var/home"),
        ("/var/home/me", "/data/me"),
    )

    assert unalias("/home/x/a.mp4", root_links) == "/var/home/x/a.mp4"
    assert unalias("/home", root_links) == "/var/home"
    assert unalias("/home/me/a.mp4", root_links) == "/data/me/a.mp4"
    assert unalias("/srv/mine/x", root_links) == "/data/me/videos/x"
    assert unalias("//home/./x//a.mp4", root_links) == "/var/home/./x//a.mp4"
    assert unalias("/homework/a.mp4", root_links) == "/homework/a.mp4"
    assert unalias("home/me/a.mp4", root_links) == "home/me/a.mp4"
    assert unalias("/srv/a.mp4", root_links) == "/srv/a.mp4"
    assert unalias("/home/../etc", root_links) == "/var/home/../etc"
    back_and_forth = (("/a/l1", "/b"), ("/b/l2", "/a"))  # one link read twice
    assert unalias("/a/l1/l2/l1/videos/x", back_and_forth) == "/b/videos/x"


def test_a_spelling_through_two_links_leads_into_the_root_too(tmp_path: Path) -> None:
    """``/home -> var/home`` and ``/var/home/me/videos -> /mnt/nas/videos``: a
    target written ``/home/me/videos/...`` goes through both, and a link to
    such a link (its second hop absolute too) leads where the last one does."""
    root = tmp_path / "mnt" / "nas" / "videos"
    real = _touch(root / "sub" / "a.mp4")
    (tmp_path / "var" / "home" / "me").mkdir(parents=True)
    (tmp_path / "var" / "home" / "me" / "videos").symlink_to(root)
    (tmp_path / "home").symlink_to("var/home")
    spelt = tmp_path / "home" / "me" / "videos"
    (root / "x.mp4").symlink_to(spelt / "sub" / "a.mp4")
    (root / "y.mp4").symlink_to(spelt / "x.mp4")
    (root / "Sub").symlink_to(spelt / "sub", target_is_directory=True)
    root_links = (
        (str(tmp_path / "home"), str(tmp_path / "var" / "home")),
        (str(tmp_path / "var" / "home" / "me" / "videos"), str(root)),
    )

    errors = ErrorLog()
    found = walk_videos(str(root), recursive=True, errors=errors, root_links=root_links)

    assert (set(found), errors.entries) == ({real}, [])


def test_file_symlink_outside_is_an_error(tmp_path: Path) -> None:
    """A link whose target is outside the scanned directory is reported, not followed."""
    outside = _touch(tmp_path / "outside" / "secret.mp4")
    root = tmp_path / "library"
    root.mkdir()
    (root / "leak.mp4").symlink_to(outside)
    (tmp_path / "library-evil").mkdir()
    (root / "sibling.mp4").symlink_to(_touch(tmp_path / "library-evil" / "x.mp4"))

    found, errors = _walk_paths(root)

    assert found == set()
    assert sorted(errors, key=lambda e: e["path"]) == [
        {"path": str(root / "leak.mp4"), "error": "symlink points outside the scanned directory"},
        {
            "path": str(root / "sibling.mp4"),
            "error": "symlink points outside the scanned directory",
        },
    ]


def test_non_recursive_walk_refuses_links_into_subdirectories(tmp_path: Path) -> None:
    """Without recursion the scope is the directory's own files, for links as well:
    the entry says the target is below the directory, not outside it."""
    _touch(tmp_path / "sub" / "clip.mp4")
    (tmp_path / "link.mp4").symlink_to(tmp_path / "sub" / "clip.mp4")

    found, errors = _walk_paths(tmp_path, recursive=False)

    assert found == set()
    assert errors == [
        {
            "path": str(tmp_path / "link.mp4"),
            "error": "symlink points below the scanned directory: outside a scan that is not"
            " recursive",
        }
    ]


def test_broken_and_looping_symlinks_are_errors(tmp_path: Path) -> None:
    """A dangling link and a two-link loop each give one error entry."""
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "missing.mp4")
    (tmp_path / "ping.mp4").symlink_to(tmp_path / "pong.mp4")
    (tmp_path / "pong.mp4").symlink_to(tmp_path / "ping.mp4")

    found, errors = _walk_paths(tmp_path)

    assert found == set()
    by_path = {e["path"]: e["error"] for e in errors}
    assert set(by_path) == {str(tmp_path / n) for n in ("dangling.mp4", "ping.mp4", "pong.mp4")}
    assert all(error.startswith("broken symlink (") for error in by_path.values())


def test_special_files_named_as_videos_are_errors(tmp_path: Path) -> None:
    """A FIFO or a socket named as a video, or a link so named to one or to a
    folder, is no video and an errors entry saying what it is (it was left out
    without a word); none is opened (a FIFO would hold the walk); a FIFO named
    otherwise is ignored, as any file not named as a video."""
    os.mkfifo(tmp_path / "pipe.mp4")
    os.mkfifo(tmp_path / "pipe.txt")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "socket.mkv"))
    (tmp_path / "to_pipe.mp4").symlink_to(tmp_path / "pipe.mp4")
    (tmp_path / "sub").mkdir()
    (tmp_path / "folder.mov").symlink_to(tmp_path / "sub", target_is_directory=True)

    found, errors = _walk_paths(tmp_path, recursive=False)

    assert found == set()
    assert {e["path"]: e["error"] for e in errors} == {
        f"{tmp_path}/pipe.mp4": "not a regular file (a FIFO); skipped",
        f"{tmp_path}/socket.mkv": "not a regular file (a socket); skipped",
        f"{tmp_path}/to_pipe.mp4": "symlink target not a regular file (a FIFO); skipped",
        f"{tmp_path}/folder.mov": "symlink target not a regular file (a directory); skipped",
    }


def test_non_utf8_names_are_skipped_with_an_error(tmp_path: Path) -> None:
    """Undecodable file and directory names are reported with escapes, and nothing crashes."""
    good = _touch(tmp_path / "good.mp4")
    raw = os.fsencode(tmp_path)
    with open(raw + b"/bad\xff.mp4", "wb"):
        pass
    os.mkdir(raw + b"/dir\xfe")
    with open(raw + b"/dir\xfe/inner.mp4", "wb"):
        pass

    found, errors = _walk_paths(tmp_path)

    assert found == {good}
    assert sorted(e["path"] for e in errors) == [
        f"{tmp_path}/bad\\xff.mp4",
        f"{tmp_path}/dir\\xfe",
    ]
    assert all(e["error"] == "name is not valid UTF-8; skipped" for e in errors)
    json.dumps(errors, ensure_ascii=False).encode("utf-8")


def test_missing_root_raises_scan_error(tmp_path: Path) -> None:
    """A root that vanished ends the walk with a clear ScanError."""
    with pytest.raises(ScanError, match=r"cannot scan .*gone: No such file or directory"):
        walk_videos(str(tmp_path / "gone"), recursive=True, errors=ErrorLog())


def test_file_root_raises_scan_error(tmp_path: Path) -> None:
    """A root that is a file is not a directory."""
    path = _touch(tmp_path / "a.mp4")

    with pytest.raises(ScanError, match="Not a directory"):
        walk_videos(path, recursive=True, errors=ErrorLog())


def test_unlistable_subdirectory_is_an_error_and_the_walk_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subdirectory whose listing fails is one error entry; its siblings are still walked."""
    good = _touch(tmp_path / "good" / "a.mp4")
    _touch(tmp_path / "locked" / "b.mp4")
    real_scandir = os.scandir

    def scandir(directory: int) -> Any:
        if listed_path(directory) == str(tmp_path / "locked"):
            raise PermissionError(13, "Permission denied", directory)
        return real_scandir(directory)

    monkeypatch.setattr(os, "scandir", scandir)

    found, errors = _walk_paths(tmp_path)

    assert found == {good}
    assert errors == [{"path": str(tmp_path / "locked"), "error": "Permission denied"}]


def test_unreadable_subdirectory_for_real(tmp_path: Path) -> None:
    """With real permissions (root's DAC capabilities dropped): a chmod 000
    subdirectory is an error entry, and the walk goes on."""
    _touch(tmp_path / "locked" / "b.mp4")
    good = _touch(tmp_path / "a.mp4")
    (tmp_path / "locked").chmod(0)
    try:
        found, errors = call_denied(functools.partial(_walk_paths, tmp_path))
    finally:
        (tmp_path / "locked").chmod(0o755)

    assert found == {good}
    assert errors == [{"path": str(tmp_path / "locked"), "error": "Permission denied"}]


def test_checkpoint_is_called_every_check_every_entries(tmp_path: Path) -> None:
    """Entries of every kind count towards the cancellation checkpoint."""
    for index in range(_walk.CHECK_EVERY * 2 + 10):
        _touch(tmp_path / f"{index % 3}" / f"f{index}.txt")
    calls: list[int] = []

    walk_videos(
        str(tmp_path), recursive=True, errors=ErrorLog(), checkpoint=lambda: calls.append(1)
    )

    # 3 directory entries at the top plus 522 files below them.
    assert len(calls) == (_walk.CHECK_EVERY * 2 + 10 + 3) // _walk.CHECK_EVERY


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("stopped", [False, True], ids=["walked-whole", "stopped-deep-down"])
def test_the_walk_closes_every_directory_it_opened(tmp_path: Path, stopped: bool) -> None:
    """Each directory's descriptor is closed once it is listed, or when the walk
    is stopped deep down (cancelled): none is left open, scan after scan."""
    for index in range(100):
        (tmp_path / "many" / f"d{index}" / "deeper").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    opened: list[str] = []

    def before_open(path: str) -> None:
        opened.append(path)
        if stopped and path == str(tmp_path / "a" / "b" / "c"):
            raise _Stop  # as the scan's checkpoint does when its job is cancelled

    before = _open_descriptors()
    with contextlib.suppress(_Stop):
        walk_videos(str(tmp_path), recursive=True, errors=ErrorLog(), before_open=before_open)

    assert str(tmp_path / "a" / "b" / "c") in opened
    assert _open_descriptors() == before


@pytest.mark.parametrize("replacement", ["file", "symlink"])
def test_a_subdirectory_replaced_before_it_is_opened_is_an_error_entry(
    tmp_path: Path, replacement: str
) -> None:
    """A subdirectory listed, then replaced by a file or a symlink before it is
    opened, is an errors entry saying so (its stored videos are kept), not an
    unreadable directory."""
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "elsewhere").mkdir()

    def before_open(path: str) -> None:
        if path == str(sub):
            sub.rmdir()
            if replacement == "file":
                sub.write_bytes(b"x")
            else:
                sub.symlink_to(tmp_path / "elsewhere")

    errors = ErrorLog()
    walk_videos(str(tmp_path), recursive=True, errors=errors, before_open=before_open)

    assert errors.entries == [{"path": str(sub), "error": _walk._REPLACED}]


def test_subdirectories_that_fail_to_open_reach_the_checkpoint_too(tmp_path: Path) -> None:
    """Thousands of subdirectories whose names are not UTF-8 (each an errors
    entry, never listed) still reach the checkpoint as they are opened, which
    stores the errors and notices a cancellation: not only the parent's listing."""
    count = _walk.CHECK_EVERY * 4
    for index in range(count):
        os.mkdir(os.fsencode(tmp_path) + b"/\xff" + str(index).encode())
    errors = ErrorLog()
    seen_at_checkpoints: list[int] = []

    walk_videos(
        str(tmp_path),
        recursive=True,
        errors=errors,
        checkpoint=lambda: seen_at_checkpoints.append(errors.total),
    )

    assert errors.total == count
    # The listing's checkpoints come before any error; the later ones, among them.
    assert max(seen_at_checkpoints) >= count - _walk.CHECK_EVERY


@pytest.mark.anyio
async def test_cancelling_the_host_task_stops_the_walk(tmp_path: Path) -> None:
    """check_cancelled in the worker thread ends the walk at the next checkpoint."""
    for index in range(_walk.CHECK_EVERY * 4):
        _touch(tmp_path / f"f{index}.txt")
    calls: list[int] = []
    with anyio.fail_after(10), anyio.CancelScope() as scope:

        def checkpoint() -> None:
            calls.append(1)
            anyio.from_thread.run_sync(scope.cancel)
            anyio.from_thread.check_cancelled()

        walk = functools.partial(
            walk_videos, str(tmp_path), recursive=True, errors=ErrorLog(), checkpoint=checkpoint
        )
        await anyio.to_thread.run_sync(walk)

    assert scope.cancelled_caught
    assert calls == [1]


class _Stop(Exception):
    """What the scan's checkpoint raises when its job is cancelled."""


def test_the_walk_checks_for_cancellation_at_each_link_hop(tmp_path: Path) -> None:
    """A directory of a few entries, one of them a chain of 10 links: the
    walk's checkpoint runs while the chain resolves, so it can stop there."""
    _touch(tmp_path / "clip.mp4")
    (tmp_path / "l0.mp4").symlink_to("clip.mp4")
    for index in range(1, 10):
        (tmp_path / f"l{index}.mp4").symlink_to(f"l{index - 1}.mp4")
    calls = 0

    def checkpoint() -> None:
        nonlocal calls
        calls += 1
        raise _Stop

    with pytest.raises(_Stop):
        walk_videos(str(tmp_path), recursive=True, errors=ErrorLog(), checkpoint=checkpoint)

    assert calls == 1


def test_a_walk_stopped_while_listing_a_subdirectory_closes_its_descriptor(
    tmp_path: Path,
) -> None:
    """The checkpoint raises in the middle of a subdirectory's listing, before
    its descriptor is on the walk's stack: no descriptor is left open."""
    for index in range(_walk.CHECK_EVERY + 10):
        _touch(tmp_path / "sub" / f"{index}.txt")

    def checkpoint() -> None:
        raise _Stop

    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(_Stop):
        walk_videos(str(tmp_path), recursive=True, errors=ErrorLog(), checkpoint=checkpoint)

    assert sorted(os.listdir("/proc/self/fd")) == before


def test_a_directory_deeper_than_max_depth_is_an_unread_error(tmp_path: Path) -> None:
    """The last level allowed is walked; the one below is one unread errors entry."""
    last = tmp_path.joinpath(*["d"] * MAX_DEPTH)
    kept = _touch(last / "kept.mp4")
    _touch(last / "d" / "too-deep.mp4")
    errors = ErrorLog()

    found = walk_videos(str(tmp_path), recursive=True, errors=errors)

    assert set(found) == {kept}
    assert errors.entries == [
        {
            "path": str(last / "d"),
            "error": f"more than {MAX_DEPTH} levels below the scanned directory; not read",
        }
    ]
    assert errors.unread == [str(last / "d")]


@pytest.mark.anyio
async def test_cancelling_the_host_task_stops_a_link_resolution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan is cancelled while the walk follows a chain of 30 links (at
    its first readlink): the walk stops at the next hop, with no readlink more."""
    _touch(tmp_path / "clip.mp4")
    (tmp_path / "l0.mp4").symlink_to("clip.mp4")
    for index in range(1, 30):
        (tmp_path / f"l{index}.mp4").symlink_to(f"l{index - 1}.mp4")
    read: list[str] = []
    real_readlink = os.readlink
    with anyio.fail_after(10), anyio.CancelScope() as scope:

        def readlink(*args: Any, **kwargs: Any) -> str:
            read.append(args[0])
            anyio.from_thread.run_sync(scope.cancel)
            return str(real_readlink(*args, **kwargs))

        monkeypatch.setattr(os, "readlink", readlink)
        walk = functools.partial(
            walk_videos,
            str(tmp_path),
            recursive=True,
            errors=ErrorLog(),
            checkpoint=anyio.from_thread.check_cancelled,
        )
        await anyio.to_thread.run_sync(walk)

    assert scope.cancelled_caught
    assert len(read) == 1


def test_past_the_walk_s_link_budget_each_further_link_is_an_error_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five links of 5 components each (their own name, then a target of 4),
    a budget of 15 for the walk: three are followed (whichever the listing
    gives first), each of the other two is one errors entry saying why (not
    followed: their targets may be there), and the files found by their own
    names are all found, in every directory."""
    monkeypatch.setattr(_walklinks, "MAX_WALK_LINK_COMPONENTS", 15)
    targets = {_touch(tmp_path / "data" / f"{index}.bin") for index in range(5)}
    for index in range(5):
        (tmp_path / f"l{index}.mp4").symlink_to(f"data/../data/{index}.bin")
    plain = {_touch(tmp_path / "top.mp4"), _touch(tmp_path / "sub" / "deep.mkv")}
    errors = ErrorLog()

    found = walk_videos(str(tmp_path), recursive=True, errors=errors)

    assert len(set(found) & targets) == 3
    assert set(found) - targets == plain
    assert len(errors.entries) == errors.unfollowed == 2
    assert {entry["error"] for entry in errors.entries} == {
        "symlink not followed: this scan has met 15 path components resolving symlinks, its limit"
    }
    assert errors.unread == []


def test_a_climbing_link_deep_in_the_tree_is_resolved_from_the_walk_s_descriptors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten links ``Up<i> -> a/..`` six levels down: each opens its ``a`` and no
    directory above it again (a link budget does not count those openings)."""
    deep = tmp_path / "1" / "2" / "3" / "4" / "5" / "6"
    (deep / "a").mkdir(parents=True)
    for index in range(10):
        (deep / f"Up{index}").symlink_to("a/..")
    opened: list[str] = []
    real_open = os.open

    def counting(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting)

    found, errors = _walk_paths(tmp_path)

    assert (found, errors) == (set(), [])  # each leads to 6: inside
    assert opened.count("a") == 1 + 10  # the walk's own, then one a link
    assert [opened.count(level) for level in "123456"] == [1] * 6  # the walk's only


def test_a_climbing_folder_link_that_cannot_be_resolved_says_so_as_a_video_s_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error on the way (here, looking at ``sub``): the link may well
    lead outside, so it is an errors entry, not followed, for a folder link
    as for a video's."""
    root = tmp_path / "lib"
    (root / "sub").mkdir(parents=True)
    (root / "Films").symlink_to("sub/../../outside")
    (root / "clip.mkv").symlink_to("sub/../../out.mkv")
    real_stat = os.stat

    def failing(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if path == "sub" and kwargs.get("dir_fd") is not None:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", failing)
    errors = ErrorLog()

    walk_videos(str(root), recursive=True, errors=errors)

    assert sorted((entry["path"], entry["error"]) for entry in errors.entries) == [
        (str(root / "Films"), "cannot follow symlink (Input/output error)"),
        (str(root / "clip.mkv"), "cannot follow symlink (Input/output error)"),
    ]
    assert errors.unfollowed == 2


def test_past_the_budget_a_climbing_folder_link_is_an_error_entry_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Links not named as videos whose text climbs after a name are resolved,
    from the same budget: past it, each is an errors entry saying it was not
    followed (it may lead outside), as a video's link is."""
    monkeypatch.setattr(_walklinks, "MAX_WALK_LINK_COMPONENTS", 15)
    root = tmp_path / "library"
    (root / "data").mkdir(parents=True)
    for index in range(5):
        (root / f"Films{index}").symlink_to("data/../../outside")
    errors = ErrorLog()

    found = walk_videos(str(root), recursive=True, errors=errors)

    assert found == {}
    reasons = sorted(entry["error"] for entry in errors.entries)
    assert len(reasons) == 5
    assert reasons.count("symlink points outside the scanned directory") >= 1
    assert (
        errors.unfollowed
        == len(reasons) - reasons.count("symlink points outside the scanned directory")
        >= 1
    )
    assert set(reasons) == {
        "symlink points outside the scanned directory",
        "symlink not followed: this scan has met 15 path components resolving symlinks, its limit",
    }


class _Untyped:
    """A directory entry of a file system that gives no type in its listing,
    whose lstat fails with EIO for one kind of question (``is_dir``,
    ``is_file`` or ``is_symlink``): as ``os.DirEntry`` does there."""

    def __init__(self, entry: os.DirEntry[str], failing: str) -> None:
        self.entry = entry
        self.name = entry.name
        self.failing = failing

    def __getattr__(self, attribute: str) -> Any:
        if attribute == self.failing:

            def failed(*args: Any, **kwargs: Any) -> bool:
                raise OSError(errno.EIO, os.strerror(errno.EIO))

            return failed
        return getattr(self.entry, attribute)


@pytest.mark.parametrize("failing", ["is_dir", "is_file", "is_symlink"])
@pytest.mark.parametrize("where", ["root", "subdirectory"])
def test_an_entry_that_cannot_be_stat_ed_is_one_unread_entry_and_the_listing_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str, where: str
) -> None:
    """Where the listing gives no type, asking one lstats the entry; an I/O
    error there is that entry's errors entry (unread: it may be a directory
    of videos), and every other entry of its directory is still walked, at
    the scan's root as below it (no ScanError, nothing else lost)."""
    directory = tmp_path if where == "root" else tmp_path / "sub"
    clip = _touch(directory / "clip.mp4")
    (directory / "bad.mp4").symlink_to("clip.mp4")  # not a directory, nor a file
    others = {_touch(directory / f"{index:03d}.mp4") for index in range(300)}
    deep = _touch(directory / "deeper" / "deep.mkv")
    real_scandir = os.scandir

    @contextlib.contextmanager
    def scandir(fd: int) -> Iterator[Any]:
        with real_scandir(fd) as entries:
            yield (
                _Untyped(entry, failing) if entry.name == "bad.mp4" else entry for entry in entries
            )

    monkeypatch.setattr(os, "scandir", scandir)
    errors = ErrorLog()

    found = walk_videos(str(tmp_path), recursive=True, errors=errors)

    assert set(found) == {clip, deep, *others}
    assert errors.entries == [{"path": str(directory / "bad.mp4"), "error": "Input/output error"}]
    assert errors.unread == [str(directory / "bad.mp4")]
