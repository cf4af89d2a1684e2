"""resolve_scan_path: one spelling per directory, and nothing outside the roots."""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from stoat_ferret.api import _paths
from stoat_ferret.api._paths import (
    MAX_SYMLINKS,
    ScanPathRejected,
    is_within,
    real_path,
    resolve_scan_path,
)
from stoat_ferret.settings import Settings
from tests.permissions import call_denied

_OUTSIDE_DETAIL = "the path is outside the directories this service may scan"

if TYPE_CHECKING:
    from collections.abc import Callable


@pytest.fixture
def root(scan_root: Path) -> Path:
    """The scan root with ``sub/inner``, a file, and a sibling ``<root>-evil``."""
    (scan_root / "sub" / "inner").mkdir(parents=True)
    (scan_root / "clip.mp4").write_bytes(b"x")
    (scan_root.parent / f"{scan_root.name}-evil").mkdir()
    (scan_root.parent / "outside").mkdir()
    return scan_root


def _named(name: Any, dir_fd: int | None) -> Path:
    """The full path of ``name`` as looked up in ``dir_fd`` (or as given)."""
    if dir_fd is None:
        return Path(os.fspath(name))
    return Path(_REAL_READLINK(f"/proc/self/fd/{dir_fd}"), os.fspath(name))


_REAL_READLINK: Final = os.readlink


@pytest.fixture
def links_read(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path ``os.readlink`` or ``os.open`` looks up during the test, in order."""
    read: list[Path] = []
    real_open = os.open

    def readlink(name: Any, *, dir_fd: int | None = None) -> str:
        read.append(_named(name, dir_fd))
        return str(_REAL_READLINK(name, dir_fd=dir_fd))

    def open_(name: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        read.append(_named(name, dir_fd))
        return real_open(name, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "readlink", readlink)
    monkeypatch.setattr(os, "open", open_)
    return read


def _rejected(path: str | Path, roots: tuple[Path, ...]) -> ScanPathRejected:
    with pytest.raises(ScanPathRejected) as caught:
        resolve_scan_path(str(path), roots)
    return caught.value


def test_root_itself_is_inside(root: Path) -> None:
    """A root is a directory a scan may walk."""

    assert resolve_scan_path(str(root), (root,)) == str(root)


@pytest.mark.parametrize("suffix", ["/sub", "/sub/", "/sub/.", "/sub/inner/..", "//sub", "/./sub"])
def test_every_spelling_resolves_to_one_path(root: Path, suffix: str) -> None:
    """Trailing separators, ``.``, ``..`` and doubled slashes all give the same path."""

    assert resolve_scan_path(f"{root}{suffix}", (root,)) == str(root / "sub")


def test_symlink_inside_a_root_resolves_to_its_target(root: Path) -> None:
    """A link to a directory inside the root is followed: the target is what is scanned."""
    (root / "link").symlink_to(root / "sub")

    assert resolve_scan_path(str(root / "link"), (root,)) == str(root / "sub")


@pytest.mark.parametrize(
    "outside",
    [
        pytest.param(lambda root: f"{root}/../outside", id="root-dotdot"),
        pytest.param(lambda root: f"{root}/../{root.name}-evil", id="evil-sibling"),
        pytest.param(lambda root: "/", id="filesystem-root"),
        pytest.param(lambda root: f"{root}/link-out", id="symlink-out"),
        pytest.param(lambda root: f"{root}/link-out/missing", id="through-symlink-out"),
        pytest.param(lambda root: f"{root}/../no-such-dir", id="missing-outside"),
        pytest.param(lambda root: f"{root}/dangling-out", id="dangling-symlink-out"),
    ],
)
def test_outside_every_root_is_403(root: Path, outside: Callable[[Path], str]) -> None:
    """Anything that resolves outside the roots is refused, existing or not."""
    (root / "link-out").symlink_to(root.parent / "outside")
    (root / "dangling-out").symlink_to(root.parent / "nowhere")

    rejected = _rejected(outside(root), (root,))

    assert rejected.status_code == 403
    assert str(rejected) == rejected.detail


def test_any_of_several_roots_admits(root: Path, tmp_path: Path) -> None:
    """With several roots, a path inside any one of them is inside."""
    other = tmp_path / "other"
    other.mkdir()

    assert resolve_scan_path(str(other), (root, other)) == str(other)
    assert is_within(root / "sub", (other, root))
    assert not is_within(root.parent, (other, root))


def test_no_roots_admits_any_directory(root: Path) -> None:
    """An empty root list means a scan may go anywhere."""

    assert resolve_scan_path("/", ()) == "/"
    assert resolve_scan_path(str(root.parent / "outside"), ()) == str(root.parent / "outside")


def test_missing_directory_inside_a_root_is_404(root: Path) -> None:
    """A path inside a root that does not exist is not found."""

    missing = _rejected(root / "missing", (root,))
    assert missing.status_code == 404
    assert missing.detail == (
        f"no such directory: {root / 'missing'} (the videos stored from a deleted folder leave"
        " the library when a folder above it, within the scan roots, is scanned with its"
        ' subfolders; from a disk no longer mounted, with "forget_unmounted": true)'
    )
    assert _rejected(root / "missing" / "deeper", (root,)).status_code == 404
    # Climbing out of a missing part is no way back (as the kernel's lookup says).
    assert _rejected(root / "missing" / "..", (root,)).status_code == 404
    assert _rejected(root / "missing" / "x" / ".." / "..", (root,)).status_code == 404


def test_file_is_400(root: Path) -> None:
    """A file is not a directory to scan; neither is a path through a file."""

    assert _rejected(root / "clip.mp4", (root,)).status_code == 400
    assert _rejected(root / "clip.mp4" / "x", (root,)).status_code == 400
    assert _rejected(root / "clip.mp4" / "..", (root,)).status_code == 400


@pytest.mark.parametrize(
    "tail",
    [pytest.param("n" * 300, id="long-component"), pytest.param("/d" * 3000, id="long-path")],
)
def test_name_too_long_is_400(root: Path, tail: str) -> None:
    """ENAMETOOLONG is the client's doing: a 400 that says so."""

    rejected = _rejected(f"{root}/{tail}", (root,))

    assert rejected.status_code == 400
    assert "too long" in rejected.detail


@pytest.mark.parametrize("mode", [0o000, 0o300, 0o600], ids=["none", "no-read", "no-search"])
def test_a_directory_it_may_not_list_is_403(root: Path, mode: int) -> None:
    """A directory this process may not read or search (really denied: see
    tests/permissions.py) is refused at once, not left to fail as a job."""
    (root / "sub").chmod(mode)
    try:
        rejected = call_denied(functools.partial(_rejected, root / "sub", (root,)))
    finally:
        (root / "sub").chmod(0o755)

    assert rejected.status_code == 403
    assert rejected.detail == f"permission denied: {root / 'sub'}"


def test_a_directory_whose_listing_alone_is_refused_is_403(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory that opens but whose listing the file system refuses (as
    procfs's ``map_files`` does, even to root) is refused at once too, not
    left to fail as a job. The refusal is the file system's: here a
    ``scandir`` that raises it, for that directory only."""
    listing = os.scandir
    refused = os.stat(root / "sub")

    def scandir(path: Any = ".") -> Any:
        if isinstance(path, int) and os.fstat(path).st_ino == refused.st_ino:
            raise PermissionError(errno.EACCES, "Permission denied")
        return listing(path)

    monkeypatch.setattr(os, "scandir", scandir)

    rejected = _rejected(root / "sub", (root,))

    assert rejected.status_code == 403
    assert rejected.detail == f"permission denied: {root / 'sub'}"


def test_a_directory_it_may_list_is_accepted_where_a_chmod_binds(root: Path) -> None:
    """The same check passes a directory with read and search permission."""
    (root / "sub").chmod(0o500)
    try:
        resolved = call_denied(functools.partial(resolve_scan_path, str(root / "sub"), (root,)))
    finally:
        (root / "sub").chmod(0o755)

    assert resolved == str(root / "sub")


def test_symlink_loop_is_400(root: Path) -> None:
    """A link that points to itself cannot be resolved."""
    (root / "loop").symlink_to(root / "loop")

    rejected = _rejected(root / "loop", (root,))

    assert rejected.status_code == 400
    assert "symbolic links" in rejected.detail


@pytest.mark.parametrize(
    "tail", ["a\x00b", "missing/a\x00b", "missing/a\x00b/../..", "clip.mp4/a\x00b"]
)
def test_nul_byte_is_400(root: Path, tail: str) -> None:
    """A NUL byte cannot be in a file name (the API refuses it earlier, with
    422), below a missing directory or a file too (nothing is looked up there)."""

    rejected = _rejected(f"{root}/{tail}", (root,))

    assert (rejected.status_code, rejected.detail) == (400, "the path is not a valid file name")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        pytest.param(PermissionError(errno.EACCES, "Permission denied"), 403, id="EACCES"),
        pytest.param(OSError(errno.EINVAL, "Invalid argument"), 400, id="EINVAL"),
        pytest.param(OSError(errno.EIO, "Input/output error"), 503, id="EIO"),
        pytest.param(OSError(errno.ESTALE, "Stale file handle"), 503, id="ESTALE"),
        pytest.param(OSError(errno.ENOTCONN, "not connected"), 503, id="ENOTCONN"),
        pytest.param(OSError(errno.ETIMEDOUT, "Connection timed out"), 503, id="ETIMEDOUT"),
    ],
)
def test_other_open_errors_are_4xx_or_503_when_the_file_system_cannot_answer(
    root: Path, monkeypatch: pytest.MonkeyPatch, error: OSError, status: int
) -> None:
    """A directory that cannot be opened is refused with a 4xx, never a crash;
    a file system that cannot answer now (a FUSE daemon gone, a stale NFS
    handle, an I/O error) is no fault of the request: 503, to try again."""
    real_open = os.open

    def opened(path: Any, *args: Any, **kwargs: Any) -> int:
        if path == "sub" and kwargs.get("dir_fd") is not None:  # below the root
            raise error
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", opened)

    assert _rejected(str(root / "sub"), (root,)).status_code == status


@pytest.mark.parametrize(
    ("requested", "status", "detail"),
    [
        pytest.param("{root}/link", 403, "permission denied: {root}/link", id="inside-the-roots"),
        pytest.param(
            "/proc/1/cwd",
            403,
            _OUTSIDE_DETAIL + " ({root})",
            id="outside-the-roots",
        ),
    ],
)
def test_a_link_realpath_cannot_read_is_403(
    root: Path, monkeypatch: pytest.MonkeyPatch, requested: str, status: int, detail: str
) -> None:
    """Resolution raises when a link on the way cannot be read (``/proc/<pid>/cwd``
    of another user's process): a 403, and outside the roots the same 403 as
    any other path out there."""
    path = requested.format(root=root)

    def readlink(name: Any, *, dir_fd: int | None = None) -> str:
        if str(_named(name, dir_fd)) == path:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(name))
        return str(_REAL_READLINK(name, dir_fd=dir_fd))

    monkeypatch.setattr(os, "readlink", readlink)

    rejected = _rejected(path, (root,))

    assert (rejected.status_code, rejected.detail) == (status, detail.format(root=root))


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOMEM])
def test_running_out_of_descriptors_is_503(
    root: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """The server's own shortage is a 503, not the client's 4xx."""
    real_open = os.open

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        # The root opened as the scan will: by its name, beneath its parent.
        if os.fspath(path) == root.name:
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)

    rejected = _rejected(root / "sub", (root,))

    assert rejected.status_code == 503
    assert rejected.detail == f"the service is short of resources ({os.strerror(code)})"


def _chain(start: Path, target: Path, length: int) -> Path:
    """``length`` links, each to the one before, the first to ``target``; the last one."""
    previous = target
    for index in range(length):
        link = start / f"link{index}"
        link.symlink_to(previous)
        previous = link
    return previous


@pytest.mark.parametrize("length", [MAX_SYMLINKS + 1, 1_200, 5_000])
def test_a_long_symlink_chain_is_400_not_a_recursion_error(root: Path, length: int) -> None:
    """A chain longer than the kernel follows is refused like a loop, whatever its length."""
    (root / "chain").mkdir()
    last = _chain(root / "chain", root / "sub", length)

    rejected = _rejected(last, (root,))

    assert rejected.status_code == 400
    assert rejected.detail == f"too many levels of symbolic links: {last}"


def test_a_chain_the_kernel_follows_is_resolved(root: Path) -> None:
    """Up to MAX_SYMLINKS links resolve to their target."""
    (root / "chain").mkdir()
    last = _chain(root / "chain", root / "sub", MAX_SYMLINKS)

    assert resolve_scan_path(str(last), (root,)) == str(root / "sub")


def test_a_long_chain_outside_the_roots_is_403(root: Path) -> None:
    """Outside the roots a chain is refused as any path out there: nothing leaks."""
    last = _chain(root.parent / "outside", root / "sub", 1_200)

    assert _rejected(last, (root,)).status_code == 403


@pytest.mark.parametrize("name", ["outside", "link-out", "loop", "no-such-dir"])
def test_a_clients_dotdot_outside_the_roots_is_403_whatever_is_there(root: Path, name: str) -> None:
    """``<root>/../x/../<root>`` leaves the roots and comes back by the client's
    own ``..``: 403 whether ``x`` is a plain directory, a link elsewhere, a
    loop or missing. Before, a plain or missing ``x`` led back in (accepted),
    a link did not (403), and a loop was its own 400: the answer told them apart."""
    (root.parent / "link-out").symlink_to(root.parent / "outside" / "deeper")
    (root.parent / "loop").symlink_to("loop")

    rejected = _rejected(f"{root}/../{name}/../{root.name}", (root,))

    assert (rejected.status_code, rejected.detail) == (403, f"{_OUTSIDE_DETAIL} ({root})")


@pytest.mark.parametrize(
    ("code", "status"), [(errno.EMFILE, 503), (errno.ENOMEM, 503), (errno.EACCES, 403)]
)
def test_a_resolution_error_is_told_as_it_is(
    root: Path, monkeypatch: pytest.MonkeyPatch, code: int, status: int
) -> None:
    """Resolution reads only inside the roots and on the way down to them, so
    its failure is the request's (a permission: 403) or the server's own
    shortage of descriptors or memory (503), even one that names no path."""

    def failing(path: str, **kwargs: object) -> str:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("stoat_ferret.api._paths.real_path", failing)

    assert _rejected(root / "sub", (root,)).status_code == status


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param("{parent}/alias/sub", id="absolute-alias"),
        pytest.param("{parent}/relative/sub/inner", id="relative-alias"),
        pytest.param("{parent}/outside/up/sub", id="alias-whose-target-climbs"),
        pytest.param("{parent}/alias/../{name}/sub", id="dotdot-from-an-alias"),
        pytest.param("{root}/out-and-back/sub", id="a-link-in-the-root-out-and-back"),
    ],
)
def test_a_way_into_a_root_through_a_link_outside_is_403(root: Path, spelling: str) -> None:
    """A link outside the roots that leads into one (an alias) is not followed:
    it would be read outside the roots. The 403 names the roots to use instead."""
    (root.parent / "alias").symlink_to(root)
    (root.parent / "relative").symlink_to(root.name)
    (root.parent / "outside" / "up").symlink_to(f"../{root.name}")
    (root / "out-and-back").symlink_to(root.parent / "alias")
    other_root = root.parent / "second"
    other_root.mkdir()
    path = spelling.format(parent=root.parent, name=root.name, root=root)

    rejected = _rejected(path, (root, other_root))

    assert (rejected.status_code, rejected.detail) == (
        403,
        f"{_OUTSIDE_DETAIL} ({root}, {other_root})",
    )


@pytest.mark.parametrize(
    ("requested", "target"),
    [
        pytest.param("{parent}/alias/sub", "sub", id="the-roots-spelling"),
        pytest.param("{parent}/alias/../{name}/sub", "sub", id="dotdot-from-the-spelling"),
        pytest.param("{root}/absolute/inner", "sub/inner", id="a-link-in-the-root-by-its-spelling"),
    ],
)
def test_a_root_spelt_as_the_operator_named_it_is_inside(
    root: Path, requested: str, target: str
) -> None:
    """A root named through a link (``STOAT_SCAN_ROOTS=/home/me/videos``, where
    ``/home`` is a link to ``var/home``) is reached by that spelling too, by a
    request and by a link inside the root written with it: the settings keep
    the spelling, and resolution may read along it."""
    alias = root.parent / "alias"
    alias.symlink_to(root)
    (root / "absolute").symlink_to(alias / "sub")
    path = requested.format(parent=root.parent, name=root.name, root=root)

    assert resolve_scan_path(path, (root,), (alias,)) == str(root / target)


@pytest.mark.parametrize(
    "requested", ["{base}/srv/mine/sub", "{base}/home/me/videos/sub", "{base}/srv/mine/sub/.."]
)
def test_a_root_named_through_a_chain_of_links_is_reached_by_each_spelling(
    tmp_path: Path, requested: str
) -> None:
    """``STOAT_SCAN_ROOTS=/srv/mine``, a link to ``/home/me/videos``, where
    ``/home`` is a link to ``var/home``: the root is reached by the variable's
    spelling, and by the spelling its link was written with (reading ``/home``
    was 403: neither on the way to the real root nor to the variable's)."""
    real = tmp_path / "var" / "home" / "me" / "videos"
    (real / "sub").mkdir(parents=True)
    (tmp_path / "home").symlink_to("var/home")
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "mine").symlink_to(tmp_path / "home" / "me" / "videos")
    settings = Settings.from_environ({"STOAT_SCAN_ROOTS": str(tmp_path / "srv" / "mine")})
    path = requested.format(base=tmp_path)

    resolved = resolve_scan_path(path, settings.scan_roots, settings.scan_root_ways)

    assert resolved in (str(real / "sub"), str(real))


def test_nothing_below_a_spelling_that_no_longer_leads_to_its_root_is_read(
    root: Path, links_read: list[Path]
) -> None:
    """The link the operator named a root by, replaced since by a directory
    (or a mount): a request below it is 403, and nothing there is read but
    the spelling itself."""
    spelling = root.parent / "alias"
    (spelling / "private" / "deeper").mkdir(parents=True)

    with pytest.raises(ScanPathRejected) as refused:
        resolve_scan_path(f"{spelling}/private/deeper/x", (root,), (spelling,))

    assert refused.value.status_code == 403
    assert {place for place in links_read if place.is_relative_to(spelling)} == {spelling}


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param("{parent}/alias/sub", id="an-alias"),
        pytest.param("{parent}/outside/deeper/x", id="a-directory-out-there"),
        pytest.param("{root}/link-out/x", id="a-link-in-the-root-that-leads-out"),
        pytest.param("{root}/../outside/x/../../{name}", id="a-clients-dotdot"),
        pytest.param("/proc/self/cwd/x", id="a-link-of-the-system"),
    ],
)
def test_nothing_outside_the_roots_is_read_to_resolve_a_request(
    root: Path, links_read: list[Path], spelling: str
) -> None:
    """Every link read on the way is inside a root or an ancestor of one: a
    file system out there that does not answer (a dead share, a hung FUSE
    daemon) would hold the request's thread for ever, and a stop with it."""
    (root.parent / "alias").symlink_to(root)
    (root.parent / "outside" / "deeper").mkdir()
    (root / "link-out").symlink_to(root.parent / "outside" / "deeper")
    path = spelling.format(parent=root.parent, name=root.name, root=root)

    assert _rejected(path, (root,)).status_code == 403
    outside = [
        place
        for place in links_read
        if not (place.is_relative_to(root) or root.is_relative_to(place))
    ]
    assert outside == []


@pytest.mark.parametrize(
    ("link", "status"),
    [
        pytest.param("missing/dir", 404, id="dangling"),
        pytest.param("loop-b", 400, id="loop-of-two"),
        pytest.param("../outside", 403, id="out-of-the-root"),
        pytest.param("clip.mp4", 400, id="to-a-file"),
    ],
)
def test_odd_links_are_4xx(root: Path, link: str, status: int) -> None:
    """Dangling links, loops, links out and links to files each get their 4xx."""
    (root / "loop-b").symlink_to("loop-a")
    (root / "loop-a").symlink_to("loop-b")
    (root / "odd").symlink_to(link)

    assert _rejected(root / "odd", (root,)).status_code == status


@pytest.mark.parametrize(
    "spelling",
    [
        "/",
        "//",
        "{root}",
        "{root}/rel",
        "{root}/rel/..",
        "{root}/abs/inner/up",
        "{root}/abs/inner/up/sub/./inner//",
        "{root}/dangling",
        "{root}/dangling/../y",
        "{root}/nope/../sub",
        "{root}/slash{root}/sub",
        "{root}/sub/inner/up/rel/up/abs",
        "{root}/clip.mp4/x",
    ],
)
def test_real_path_agrees_with_realpath(root: Path, spelling: str) -> None:
    """Where os.path.realpath gives an answer, real_path gives the same one."""
    (root / "rel").symlink_to("sub/inner")
    (root / "abs").symlink_to(root / "sub")
    (root / "sub" / "inner" / "up").symlink_to("../..")
    (root / "dangling").symlink_to("missing/x")
    (root / "slash").symlink_to("/")
    path = spelling.format(root=root)

    assert real_path(path) == os.path.realpath(path)


@pytest.mark.parametrize(
    ("spelling", "code"),
    [
        ("{root}/nope/..", errno.ENOENT),
        ("{root}/nope/x/../..", errno.ENOENT),
        ("{root}/dangling/..", errno.ENOENT),
        ("{root}/clip.mp4/..", errno.ENOTDIR),
        ("{root}/clip.mp4/x/..", errno.ENOTDIR),
    ],
)
def test_real_path_told_not_to_climb_the_absent_raises_as_the_kernel_does(
    root: Path, spelling: str, code: int
) -> None:
    """With ``climb_absent=False``, a ``..`` after a part missing or no directory
    raises the kernel's own error for the path, where realpath climbs the text."""
    (root / "dangling").symlink_to("missing/x")
    path = spelling.format(root=root)

    with pytest.raises(OSError, match=os.strerror(code)) as raised:
        real_path(path, climb_absent=False)
    with pytest.raises(OSError, match=os.strerror(code)) as kernel:
        os.stat(path)

    assert raised.value.errno == kernel.value.errno == code
    assert real_path(path) == os.path.realpath(path)


def test_a_directory_replaced_by_a_link_while_it_is_resolved_is_not_followed(
    root: Path, monkeypatch: pytest.MonkeyPatch, links_read: list[Path]
) -> None:
    """Resolution goes on in the directory it looked at: ``a``, passed by the
    vet and looked at, is replaced by a link out of the roots before ``b`` is
    read; nothing out there is read (before, ``b`` was read by its full path,
    through the new link, and the link found there followed back into the
    root), and the scan's own look says the path changed (409)."""
    (root / "a" / "b").mkdir(parents=True)
    outside = root.parent / "outside"
    (outside / "b").symlink_to(root / "sub")  # what reading through the new link finds
    on_the_way_only = _paths._on_the_way_only

    def swapping(
        roots: tuple[Path, ...], ways: tuple[Path, ...]
    ) -> Callable[[str, str, bool], None]:
        vet = on_the_way_only(roots, ways)

        def vet_then_swap(resolved: str, part: str, linked: bool) -> None:
            vet(resolved, part, linked)
            if part == "b":
                (root / "a").rename(root / "a-before")
                (root / "a").symlink_to(outside)

        return vet_then_swap

    monkeypatch.setattr(_paths, "_on_the_way_only", swapping)

    rejected = _rejected(root / "a" / "b", (root,))

    assert (rejected.status_code, rejected.detail) == (409, _paths._CHANGED)
    assert [place for place in links_read if place.is_relative_to(outside)] == []


def test_a_link_to_a_directory_whose_name_is_not_utf8_is_400(root: Path) -> None:
    """A UTF-8 link inside a root may lead to a directory named in another
    encoding: the library stores UTF-8 paths only, so the request is refused
    rather than the scan failing on its first row."""
    latin = os.fsdecode(os.fsencode(str(root)) + b"/caf\xe9")
    os.mkdir(latin)
    (root / "cafe").symlink_to(latin)

    rejected = _rejected(root / "cafe", (root,))

    assert rejected.status_code == 400
    assert "UTF-8" in rejected.detail


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("{outside}", id="an-outside-directory"),
        pytest.param("{outside}/missing", id="an-outside-path-that-is-not-there"),
        pytest.param("/etc/passwd", id="an-outside-file"),
        pytest.param("{root}/sub", id="a-directory-inside"),
    ],
)
def test_a_directory_swapped_for_a_link_after_it_was_resolved_tells_nothing(
    root: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """Between the path's resolution and its look, ``d`` is replaced by a symlink:
    the answer is the same 409 wherever the link leads (before, a stat through it
    told whether a path outside the roots existed, and was a directory)."""
    (root / "d").mkdir()
    resolve = _paths.real_path

    def swapped_after(path: str, **kwargs: Any) -> str:
        resolved = resolve(path, **kwargs)
        (root / "d").rmdir()
        link = target.format(outside=root.parent / "outside", root=root)
        (root / "d").symlink_to(link)
        return resolved

    monkeypatch.setattr(_paths, "real_path", swapped_after)

    rejected = _rejected(root / "d", (root,))

    assert (rejected.status_code, rejected.detail) == (409, _paths._CHANGED)


def test_a_root_removed_since_the_start_is_404(root: Path) -> None:
    """A scan root gone since the service started (a disk unplugged): what is below it is
    missing, 404, as any missing directory (the root's own open failing is no 400)."""
    gone = root / "sub" / "inner"
    gone.rmdir()

    rejected = _rejected(gone / "x", (gone,))

    assert rejected.status_code == 404
