"""_beneath and _links: descending by descriptors, and resolving a link inside the scope."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

import pytest

from stoat_ferret.library import DirectoryGone, DirectoryReplaced, ScanError
from stoat_ferret.library._beneath import (
    MAX_DEPTH,
    containing_root,
    open_directory,
    open_scan_directory,
    split,
)
from stoat_ferret.library._links import (
    CACHED_LINK_COST,
    MAX_LINK_COMPONENTS,
    MAX_LINK_HOPS,
    LinkBudget,
    LinkBudgetSpent,
    LinkCache,
    Outcome,
    resolve_link,
)

if TYPE_CHECKING:
    from pathlib import Path


def _resolve(scope: Path, scope_fd: int, link: str, target: str) -> list[str] | None:
    (scope / link).symlink_to(target)
    outcome = resolve_link(split(str(scope)), split(str(scope)), link, scope_fd)
    return None if outcome is None else outcome[0]


@pytest.mark.parametrize(
    "target",
    ["clip.mp4", "./sub/../clip.mp4", "../lib/clip.mp4", "sub/../../lib/./clip.mp4"],
)
def test_links_that_stay_inside_resolve(scope: Path, scope_fd: int, target: str) -> None:
    """Relative links through ``.``, ``..`` and the scope's own name resolve to the file."""
    assert _resolve(scope, scope_fd, "link.mp4", target) == split(str(scope / "clip.mp4"))


def test_an_absolute_link_inside_resolves(scope: Path, scope_fd: int) -> None:
    """An absolute target under the scope is followed."""
    target = str(scope / "sub" / "deep.mp4")

    assert _resolve(scope, scope_fd, "link.mp4", target) == split(target)


@pytest.mark.parametrize("target", ["../lib-evil/x.mp4", "/etc/passwd", "..", "../..", "/"])
def test_links_that_leave_the_scope_are_refused(scope: Path, scope_fd: int, target: str) -> None:
    """A sibling that starts alike, an absolute path outside, or a directory above: None."""
    assert _resolve(scope, scope_fd, "link.mp4", target) is None


def test_a_link_through_a_file_is_not_a_directory(scope: Path, scope_fd: int) -> None:
    """``clip.mp4/x`` cannot exist: ENOTDIR, a broken link."""
    with pytest.raises(NotADirectoryError):
        _resolve(scope, scope_fd, "link.mp4", "clip.mp4/x")


def test_a_link_to_a_directory_inside_gives_its_stat(scope: Path, scope_fd: int) -> None:
    """The caller sees a directory (and skips it); a trailing ``..`` lands on the scope."""
    (scope / "to-sub").symlink_to("sub")
    outcome = resolve_link(split(str(scope)), split(str(scope)), "to-sub", scope_fd)
    (scope / "up").symlink_to("sub/..")
    back = resolve_link(split(str(scope)), split(str(scope)), "up", scope_fd)

    assert outcome is not None
    assert outcome[0] == split(str(scope / "sub"))
    assert back is not None
    assert back[0] == split(str(scope))


def test_more_than_the_hop_limit_is_a_loop(scope: Path, scope_fd: int) -> None:
    """A chain one link longer than MAX_LINK_HOPS fails with ELOOP, however it ends."""
    (scope / "l0").symlink_to("clip.mp4")
    for index in range(1, MAX_LINK_HOPS + 1):
        (scope / f"l{index}").symlink_to(f"l{index - 1}")
    last = MAX_LINK_HOPS - 1

    reached = resolve_link(split(str(scope)), split(str(scope)), f"l{last}", scope_fd)
    with pytest.raises(OSError, match="Too many levels") as caught:
        resolve_link(split(str(scope)), split(str(scope)), f"l{MAX_LINK_HOPS}", scope_fd)

    assert reached is not None
    assert reached[0] == split(str(scope / "clip.mp4"))
    assert caught.value.errno == errno.ELOOP


def test_open_directory_refuses_a_symlink_on_the_way(scope: Path, scope_fd: int) -> None:
    """A symlinked component is ELOOP (Linux says ENOTDIR); a file is ENOTDIR."""
    (scope / "alias").symlink_to("sub")

    with pytest.raises(OSError, match="a symlink, not followed") as link:
        open_directory(["alias"], scope_fd)
    with pytest.raises(NotADirectoryError):
        open_directory(["clip.mp4"], scope_fd)
    fd = open_directory([], scope_fd)
    os.close(fd)

    assert link.value.errno == errno.ELOOP


def test_open_scan_directory_checks_the_roots(scope: Path, tmp_path: Path) -> None:
    """Inside a root: opened. Outside (the sibling that starts alike too), or a
    root that is gone: ScanError."""
    fd = open_scan_directory(str(scope / "sub"), [str(scope)])
    os.close(fd)

    with pytest.raises(ScanError, match="outside the directories"):
        open_scan_directory(str(tmp_path / "lib-evil"), [str(scope)])
    with pytest.raises(ScanError, match="No such file"):
        open_scan_directory(str(tmp_path / "gone" / "x"), [str(tmp_path / "gone")])


def test_open_scan_directory_refuses_a_swapped_component(scope: Path, tmp_path: Path) -> None:
    """``sub`` replaced by a symlink: DirectoryReplaced; replaced by a file: Not a directory."""
    (scope / "sub" / "deep.mp4").unlink()
    (scope / "sub").rmdir()
    (scope / "sub").symlink_to(tmp_path / "lib-evil")
    (scope / "file").write_bytes(b"")

    with pytest.raises(DirectoryReplaced, match="replaced by a symlink"):
        open_scan_directory(str(scope / "sub"), [str(tmp_path)])
    with pytest.raises(ScanError, match="Not a directory") as not_directory:
        open_scan_directory(str(scope / "file"), [str(tmp_path)])

    assert not isinstance(not_directory.value, DirectoryReplaced)


def test_a_component_swapped_back_before_it_is_looked_at_is_replaced_not_a_file(
    scope: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sub`` is a symlink when opened (ENOTDIR) and a directory again when
    looked at: it changed under the open, DirectoryReplaced (an ``errors``
    entry), not "Not a directory" (a failed job)."""
    (scope / "sub").rename(scope / "sub.real")
    (scope / "sub").symlink_to(tmp_path / "lib-evil")
    real_stat = os.stat

    def swapped_back(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if path == "sub" and (scope / "sub").is_symlink():
            (scope / "sub").unlink()
            (scope / "sub.real").rename(scope / "sub")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", swapped_back)

    with pytest.raises(DirectoryReplaced, match="replaced by a symlink"):
        open_scan_directory(str(scope / "sub"), [str(tmp_path)])

    assert (scope / "sub").is_dir()
    assert not (scope / "sub").is_symlink()


class _Opens:
    """Counts ``os.open`` calls: the work a link resolution does, one per directory opened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = os.open

        def counting(*args: Any, **kwargs: Any) -> int:
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(os, "open", counting)


def _hostile_chain(scope: Path, depth: int) -> tuple[list[str], str]:
    """A chain of MAX_LINK_HOPS links in a directory ``depth`` levels down, each
    going all the way up to the scope and down again to the next: ``(directory, head)``."""
    deep = scope.joinpath(*["d"] * depth)
    deep.mkdir(parents=True)
    (deep / "clip.mp4").write_bytes(b"clip")
    detour = "../" * depth + "d/" * depth
    (deep / "l0").symlink_to(detour + "clip.mp4")
    for index in range(1, MAX_LINK_HOPS):
        (deep / f"l{index}").symlink_to(f"{detour}l{index - 1}")
    return split(str(deep)), f"l{MAX_LINK_HOPS - 1}"


def test_a_deep_chain_resolves_with_one_open_per_component(
    scope: Path, scope_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 hops, each up and down 40 levels (3,280 components): resolved with at
    most one open per component, not one per level for each."""
    directory, head = _hostile_chain(scope, 40)
    opens = _Opens(monkeypatch)

    outcome = resolve_link(split(str(scope)), directory, head, scope_fd)

    assert outcome is not None
    assert outcome[0] == [*directory, "clip.mp4"]
    assert opens.count <= MAX_LINK_HOPS * 41 + 40  # each hop's way down, and the way to the link


def test_a_chain_past_the_component_limit_is_a_loop(
    scope: Path, scope_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up and down 100 levels per hop: ELOOP once MAX_LINK_COMPONENTS are looked at,
    after at most that many opens."""
    directory, head = _hostile_chain(scope, 100)
    opens = _Opens(monkeypatch)

    with pytest.raises(OSError, match="Too many levels") as caught:
        resolve_link(split(str(scope)), directory, head, scope_fd)

    assert caught.value.errno == errno.ELOOP
    assert opens.count <= MAX_LINK_COMPONENTS + 100


def test_a_link_deeper_than_the_walk_goes_holds_no_more_descriptors_than_it(
    scope: Path, scope_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link may lead through MAX_DEPTH directories below the scope, as the walk
    may go; through one more it fails with ELOOP, saying why, before opening it:
    a target thousands of levels deep cannot take every descriptor the process has."""
    deep = scope.joinpath(*["d"] * (MAX_DEPTH + 1))
    deep.mkdir(parents=True)
    (deep.parent / "clip.mp4").write_bytes(b"clip")
    (deep / "clip.mp4").write_bytes(b"clip")
    (scope / "deepest.mp4").symlink_to("d/" * MAX_DEPTH + "clip.mp4")
    (scope / "too-deep.mp4").symlink_to("d/" * (MAX_DEPTH + 1) + "clip.mp4")
    opens = _Opens(monkeypatch)

    reached = resolve_link(split(str(scope)), split(str(scope)), "deepest.mp4", scope_fd)
    with pytest.raises(OSError, match=f"more than {MAX_DEPTH} levels") as caught:
        resolve_link(split(str(scope)), split(str(scope)), "too-deep.mp4", scope_fd)

    assert reached is not None
    assert reached[0] == split(str(deep.parent / "clip.mp4"))
    assert caught.value.errno == errno.ELOOP
    assert opens.count == 2 * MAX_DEPTH


def test_a_resolved_chain_is_cached_for_the_walk(
    scope: Path, scope_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The links met on the way from another are kept: a second link to one of
    them costs no open but the way down to its own directory. The link the walk
    met itself is not kept (a walk meets each of its own once)."""
    directory, head = _hostile_chain(scope, 10)
    (scope.joinpath(*["d"] * 10) / "again").symlink_to(f"l{MAX_LINK_HOPS - 2}")
    cache = LinkCache()
    first = resolve_link(split(str(scope)), directory, head, scope_fd, cache=cache)
    opens = _Opens(monkeypatch)

    second = resolve_link(split(str(scope)), directory, "again", scope_fd, cache=cache)
    (scope.joinpath(*["d"] * 10) / "over").symlink_to("again")
    with pytest.raises(OSError, match="Too many levels"):  # 41 hops, one cached chain in them
        resolve_link(split(str(scope)), directory, "over", scope_fd, cache=cache)

    assert first is not None
    assert second == first
    assert opens.count == 2 * 10  # only the way down to the links' directory, for each call
    assert sorted(path[-1] for path in cache) == sorted(
        f"l{index}" for index in range(MAX_LINK_HOPS - 1)
    )


def test_a_walks_link_cache_lets_go_of_the_least_recently_used_links(
    scope: Path, scope_fd: int
) -> None:
    """The cache keeps each link with its path's and target's components and a
    fixed cost, up to its bound (unbounded, half a million links deep in a tree
    held gigabytes); past it, it lets go of the link looked up least recently,
    and a link let go resolves all the same."""
    here = split(str(scope))
    (scope / "clip.mp4").touch()
    for index in range(3):
        (scope / f"{index}.mp4").symlink_to("clip.mp4")
        (scope / f"to-{index}.mp4").symlink_to(f"{index}.mp4")  # the walk's own links
    # Each of these costs its path (one more than the scope's), its target's, and the rest.
    each = 2 * (len(here) + 1) + CACHED_LINK_COST
    cache = LinkCache(2 * each)

    def resolve(index: int) -> Outcome:
        return resolve_link(here, here, f"to-{index}.mp4", scope_fd, cache=cache)

    outcomes = [resolve(0), resolve(1), resolve(0), resolve(2)]  # 0 again: 1 is the oldest

    assert [outcome[0] for outcome in outcomes if outcome is not None] == [[*here, "clip.mp4"]] * 4
    assert [path[-1] for path in cache] == ["0.mp4", "2.mp4"]
    assert cache.left == 0


def test_a_cached_error_holds_no_traceback(scope: Path, scope_fd: int) -> None:
    """A dangling link's error is cached without its traceback (which would keep
    the resolution's frames and their lists alive for the walk); met again, it
    raises the same error."""
    here = split(str(scope))
    (scope / "gone.mp4").symlink_to("missing.mp4")
    (scope / "a.mp4").symlink_to("gone.mp4")
    (scope / "b.mp4").symlink_to("gone.mp4")
    cache = LinkCache()

    with pytest.raises(FileNotFoundError):
        resolve_link(here, here, "a.mp4", scope_fd, cache=cache)
    cached = cache.get((*here, "gone.mp4"))
    with pytest.raises(OSError, match="No such file") as again:
        resolve_link(here, here, "b.mp4", scope_fd, cache=cache)

    assert cached is not None
    assert isinstance(cached[0], OSError)
    assert cached[0].__traceback__ is None
    assert again.value.errno == errno.ENOENT


def test_a_chain_many_links_lead_to_stays_cached_past_the_bound(scope: Path, scope_fd: int) -> None:
    """Links met once fill the cache; then 50 links lead, each through a link of
    its own (which the cache keeps, letting go of another), to one chain of two.
    The chain's head stays cached (each of the 50 looks it up: the least recently
    used go first, not the oldest), so each costs its own three components of the
    walk's budget, not the chain's two more: all 50 resolve within a budget that
    resolving the chain each time would spend."""
    here = split(str(scope))
    (scope / "clip.mp4").touch()
    (scope / "c1").symlink_to("clip.mp4")
    (scope / "c0").symlink_to("c1")
    for index in range(5):  # each kept: met on the way from the walk's own link
        (scope / f"filler{index}").symlink_to("clip.mp4")
        (scope / f"once{index}.mp4").symlink_to(f"filler{index}")
    for index in range(50):  # each through a link of its own: each resolution keeps one
        (scope / f"m{index}").symlink_to("c0")
        (scope / f"{index}.mp4").symlink_to(f"m{index}")
    each = 2 * (len(here) + 1) + CACHED_LINK_COST
    cache = LinkCache(3 * each)
    budget = LinkBudget(5 * 3 + 5 + 49 * 3 + 10)  # the fillers, the first whole, 49 cached

    for index in range(5):
        resolve_link(here, here, f"once{index}.mp4", scope_fd, cache=cache, budget=budget)
    ends = [
        resolve_link(here, here, f"{index}.mp4", scope_fd, cache=cache, budget=budget)
        for index in range(50)
    ]

    assert all(end is not None and end[0] == [*here, "clip.mp4"] for end in ends)
    assert (*here, "c0") in set(cache)


def test_the_links_of_one_walk_share_one_budget_of_components(
    scope: Path, scope_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each component a resolution meets takes one from the walk's budget, a
    target's all at once as it is read, whichever link it is for: a link to a
    link of 3 components takes 5 of 8 (its name, its target's 1, that link's
    target's 3); the next link's target is more than is left, and it stops
    having opened nothing; a link to the cached link takes its own 2; with the
    budget spent a link opens nothing, and the spent budget is no outcome
    cached for the link."""
    (scope / "mid").symlink_to("sub/../clip.mp4")
    (scope / "one.mp4").symlink_to("mid")
    (scope / "two.mp4").symlink_to("sub/../clip.mp4")
    (scope / "three.mp4").symlink_to("mid")
    budget = LinkBudget(8)
    cache = LinkCache()
    here = split(str(scope))

    first = resolve_link(here, here, "one.mp4", scope_fd, cache=cache, budget=budget)
    left = budget.left
    opens = _Opens(monkeypatch)
    with pytest.raises(LinkBudgetSpent, match="met 8 path components") as spent:
        resolve_link(here, here, "two.mp4", scope_fd, cache=cache, budget=budget)
    after_two = budget.left
    again = resolve_link(here, here, "three.mp4", scope_fd, cache=cache, budget=budget)
    with pytest.raises(LinkBudgetSpent):
        resolve_link(here, here, "two.mp4", scope_fd, cache=cache, budget=budget)

    assert first is not None
    assert first[0] == split(str(scope / "clip.mp4"))
    assert (left, after_two, budget.left) == (3, 2, 0)
    assert again == first
    assert opens.count == 0
    assert spent.value.errno == errno.ELOOP
    assert [path[-1] for path in cache] == ["mid"]


def test_a_target_of_thousands_of_empty_parts_costs_them_when_it_is_read(
    scope: Path, scope_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link to ``x`` followed by 4,094 slashes, ``x`` being that link itself:
    ``x`` is always the next part, so each hop would look at one part but add
    4,095 to the list, 40 hops before the hop limit (164,000 parts, for a
    budget charge of 41). The parts count against the link's limit and the
    walk's budget as the target is read: the second target is past the
    link's limit, and the budget paid for the first."""
    (scope / "x").symlink_to("x" + "/" * 4094)
    budget = LinkBudget()
    here = split(str(scope))
    readlink = os.readlink
    targets: list[str] = []

    def counted(*args: Any, **kwargs: Any) -> str:
        targets.append(readlink(*args, **kwargs))
        return targets[-1]

    monkeypatch.setattr(os, "readlink", counted)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        resolve_link(here, here, "x", scope_fd, budget=budget)

    assert len(targets) == 2
    assert budget.total - budget.left == 1 + 4095


class _Stop(Exception):
    pass


def test_a_checkpoint_per_hop_stops_a_resolution_and_closes_its_descriptors(
    scope: Path, scope_fd: int
) -> None:
    """The checkpoint runs once per link followed; when it raises, the resolution
    stops there and every descriptor it opened is closed."""
    directory, head = _hostile_chain(scope, 10)
    calls = 0

    def checkpoint() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise _Stop

    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(_Stop):
        resolve_link(split(str(scope)), directory, head, scope_fd, checkpoint=checkpoint)

    assert calls == 3
    assert sorted(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize("roots", [("/a", "/a/b"), ("/a/b", "/a")])
def test_the_outermost_root_holds_a_directory_whatever_the_order(
    roots: tuple[str, ...],
) -> None:
    """A directory below a root inside another is opened from the outer one, whatever the
    order the roots were given in: the inner root is crossed like any directory."""

    assert containing_root("/a/b/c", roots) == "/a"
    assert containing_root("/a/c", roots) == "/a"


def test_an_inner_root_swapped_for_a_link_is_not_followed(tmp_path: Path) -> None:
    """Whoever may write into an outer root may put a link in an inner root's place: a
    scan below the inner root then stops there (DirectoryReplaced), nothing outside read."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    roots = [str(tmp_path / "a" / "b"), str(tmp_path / "a")]
    (tmp_path / "a" / "b").rmdir()
    (tmp_path / "a" / "b").symlink_to(tmp_path / "outside")

    with pytest.raises(DirectoryReplaced):
        open_scan_directory(str(tmp_path / "a" / "b"), roots)


def test_a_root_that_is_now_a_symlink_is_a_swap(tmp_path: Path) -> None:
    """The roots are resolved: a symlink in a root's place (here a loop) was
    put there since, and is refused as one below a root is (DirectoryReplaced)."""
    root = tmp_path / "root"
    root.symlink_to(root)  # a loop

    with pytest.raises(DirectoryReplaced, match="replaced by a symlink"):
        open_scan_directory(str(root / "sub"), [str(root)])


def test_a_root_that_cannot_be_opened_is_a_scan_error_not_a_swap(tmp_path: Path) -> None:
    """A root that is gone or not a directory is a plain ScanError saying why."""
    gone = tmp_path / "gone"
    a_file = tmp_path / "file"
    a_file.write_bytes(b"")

    for root, why in ((gone, "No such file"), (a_file, "Not a directory")):
        with pytest.raises(ScanError) as refused:
            open_scan_directory(str(root / "sub"), [str(root)])
        assert not isinstance(refused.value, DirectoryReplaced | DirectoryGone)
        assert why in refused.value.reason
