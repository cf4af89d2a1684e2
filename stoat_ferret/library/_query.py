"""The SQL of a video list: its filters, its order and the plan of its page.

Everything here is SQL text and bound parameters, built from a
:class:`VideoFilter`: no value ever becomes SQL text, and the ``ORDER BY``
comes from a fixed table. :meth:`VideoStore.list_videos` runs it. Every
sort key has an index (``path`` its unique one), so an unfiltered page walks
an index and stops after ``offset + limit`` rows. The count of a filtered
list comes first, from the filters' indexes (the codec and container
indexes carry the size and duration bounds, so such a count reads no row);
from it, :func:`walk_sort_index` picks the plan of the page; of several
equality filters, :func:`driving_filter` picks whose index finds the rows
(the one query here run, by the ``execute`` it is given). The search ``q`` is
``instr`` over ``search_path``, :func:`~stoat_ferret.library._keys.search_key`
of the path, read from its own covering index: no pattern characters at all,
so ``%`` and ``_`` need no escaping. A sort by file name is by
``filename_order``, :func:`~stoat_ferret.library._keys.filename_key` of the name.

Scope queries use :func:`subtree_bounds`: every path under a directory is a
range of the path index, ``'<dir>/' <= path < '<dir>0'``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

import attrs

from stoat_ferret.library._keys import search_key
from stoat_ferret.library._models import VideoFilter

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Sequence

# sort key (without its "-") -> what ORDER BY sorts on; each has an index.
_SORTED_ON: Final = {
    "path": "path",
    "filename": "filename_order",
    "duration_seconds": "duration_seconds",
    "size_bytes": "size_bytes",
    "width": "width",
    "height": "height",
    "updated_at": "updated_at",
}

# Every distinct container format, in a few index seeks each (a "loose index
# scan"): there are a handful of them however many videos there are.
FORMATS: Final = """
WITH RECURSIVE formats (name) AS (
    SELECT min(container_format) FROM videos
    UNION ALL
    SELECT (SELECT min(container_format) FROM videos WHERE container_format > name)
    FROM formats WHERE name IS NOT NULL
)
SELECT name FROM formats WHERE name IS NOT NULL
"""


def walk_sort_index(matches: int, stored: int, rows: int) -> bool:
    """Whether a page is best found by walking the sort key's index.

    Walking it, checking each row against the filters, reads about
    ``rows * stored / matches`` rows before it has the first ``rows``
    matches; the filters' own indexes (or, for ``q``, one pass over the
    paths) find all ``matches`` rows, which are then sorted. Walk when that
    reads fewer rows. SQLite cannot tell by itself: without ``ANALYZE``
    statistics it does not know how many rows a filter matches, and picked
    the wrong plan for both a selective filter (100 ms, walking 100,000 rows
    for 100) and a broad one (40 ms, sorting 37,000 rows for 100).
    """
    return rows * stored <= matches * matches


def plan_page(
    where: VideoFilter,
    formats: Sequence[str] | None,
    matches: int,
    rows: int,
    execute: Callable[[str, tuple[Any, ...]], sqlite3.Cursor],
) -> tuple[VideoFilter, bool, bool]:
    """The plan of a page reaching the ``rows``-th of the ``matches`` videos
    ``where`` selects: its filter (none, where every video matches: the
    roots hold them all, as most often; one snapshot), whether it walks the
    sort key's index (:func:`walk_sort_index`; always without filters), and
    whether that walk checks the search on each row (:func:`check_rows`).
    ``execute`` (a reading connection's) counts the videos stored. ``rows``
    is at most ``matches`` (an offset near 2**63 would otherwise always
    pick a full sort)."""
    if not filter_clause(where, formats)[0]:
        return where, True, False
    (stored,) = execute("SELECT count(*) FROM videos", ()).fetchone()
    if matches == stored:
        return VideoFilter(sort=where.sort), True, False
    walk = walk_sort_index(matches, stored, rows)
    return where, walk, walk and check_rows(matches, stored, rows)


ROW_CHECK_SHARE: Final = 10
"""A walked page of a search checks each row it reads for the search
(:func:`check_rows`) while it reads at most this share of the matches'
count; past it, it checks ids gathered from the search index first."""


def check_rows(matches: int, stored: int, rows: int) -> bool:
    """Whether a walked page of a search, up to its ``rows``-th match, checks
    the search on each row it reads rather than against the ids of every
    match, gathered from the search index first. A walk reads about ``rows *
    stored / matches`` rows, each a lookup of the table: cheaper than
    gathering every match while they are a small share of the matches (the
    first pages of a broad search: 900,000 videos, 225,000 matching, 0.1
    ms against 150), dearer deep in it (offset 54,000: 1.2 s against 0.5)."""
    return rows * stored * ROW_CHECK_SHARE <= matches * matches


def page_query(
    columns: str,
    where: VideoFilter,
    formats: Sequence[str] | None,
    *,
    walk: bool,
    drive: str | None = None,
    searched: bool = False,
) -> tuple[str, tuple[Any, ...]]:
    """The ``SELECT columns`` of one page (``LIMIT ? OFFSET ?`` last) and its arguments
    but those two.

    The plan is chosen with unary ``+``, SQLite's documented way to keep a
    term from using an index: to walk the sort index, the filters are written
    ``+column``, except bounds on the sort key itself, which make the walk a
    range of its index (``width >= ?`` sorted by width seeks its first row);
    to pick the rows by the filters, the sort key is (``ORDER BY +column``). A
    ``path`` sort always walks the path index, which ``under`` and ``within`` also use.

    ``searched`` (with ``walk``): the search is checked on each row read
    (:func:`check_rows`).

    Either plan finds the page's ids alone (a subquery), and only the
    ``limit`` rows of those ids are then read whole, and sorted again: the
    rows an offset skips are never read whole, nor sorted whole (a page
    at offset 50,000 of a bound matching half of 100,000 rows, sorted by
    another key: 356 ms when every match was sorted with its columns, 55 ms).
    """
    column = where.sort.removeprefix("-")
    direction = " DESC" if where.sort.startswith("-") else ""
    by_path = column == "path"
    condition, args = filter_clause(
        where,
        formats,
        indexed=not walk,
        path_indexed=by_path or not walk,
        sort_column=column if walk else None,
        path_walk=by_path and walk,
        drive=drive,
        searched=searched and walk,
    )
    plus = "" if walk else "+"
    ties = "" if by_path else f", id{direction}"  # paths are unique
    order = f"{_SORTED_ON[column]}{direction}{ties}"
    page = f"SELECT id FROM videos{condition} ORDER BY {plus}{order} LIMIT ? OFFSET ?"
    return f"SELECT {columns} FROM videos WHERE id IN ({page}) ORDER BY +{order}", args


def filter_clause(
    where: VideoFilter,
    formats: Sequence[str] | None = None,
    *,
    indexed: bool = True,
    path_indexed: bool = True,
    sort_column: str | None = None,
    path_walk: bool = False,
    drive: str | None = None,
    searched: bool = False,
) -> tuple[str, tuple[Any, ...]]:
    """The ``WHERE`` clause (with a leading space, or empty) and its arguments.

    ``formats``, the stored container formats, turns a ``container`` alias
    into the exact formats that have it (``mp4`` into ``mov,mp4,m4a,...``), so
    the container filter is an indexed ``IN``. Without it, the alias is looked
    for in each row's format. ``indexed=False`` writes every column ``+column``
    so that no filter uses an index; ``path_indexed`` is the same for ``under``
    and ``within``,
    and the bounds on ``sort_column`` stay without ``+`` whatever ``indexed`` says.
    ``path_walk`` (a page walked in path order): several ``within`` roots are one
    range of the path index, from the first root's to the last one's, each
    root checked row by row; as an ``OR`` of ranges, SQLite would read every
    range and sort the rows it found, however small the page. ``drive``
    (:func:`driving_filter`): the one equality filter whose index is used;
    the others are written ``+column``. The search ``q`` is the ids that the
    search index matches (a subquery), but with ``searched`` a check of each
    path's key: on each entry of the search index (a count of a search alone,
    :func:`count_query`), or on each row a walk reads (a first page of a
    broad search: :func:`check_rows`).
    """
    terms: list[str] = []
    args: list[Any] = []
    plus = "" if indexed else "+"
    covered = False  # a video codec or container term, whose index ends with the path

    def equal(column: str) -> str:  # "" where the filter uses its index
        return "+" if not indexed or drive not in (None, column) else ""

    def add(term: str, *values: Any) -> None:
        terms.append(term)
        args.extend(values)

    if where.q and searched:
        # Checked on each row a walk reads, or on each entry of the search index.
        add("instr(search_path, ?) > 0", search_key(where.q))
    elif where.q:
        # The ids of the matching paths, found by reading the search index
        # alone: a tenth of the pages a scan of the table would read.
        matching = "SELECT id FROM videos WHERE instr(search_path, ?) > 0"
        add(f"{plus}id IN ({matching})", search_key(where.q))
    # FFmpeg's names are lower case: a filter in another case means them.
    if where.video_codec is not None:
        add(f"{equal('video_codec')}video_codec = ?", where.video_codec.lower())
        covered = not equal("video_codec")
    if where.audio_codec is not None:
        add(f"{equal('audio_codec')}audio_codec = ?", where.audio_codec.lower())
    if where.container is not None:
        if formats is None:
            add("instr(',' || container_format || ',', ?) > 0", f",{where.container.lower()},")
        else:
            names = _formats_named(where.container, formats)
            listed = ", ".join("?" * len(names))
            add(f"{equal('container')}container_format IN ({listed})", *names)
            covered = covered or not equal("container")
    for column, low, high in (
        ("width", where.min_width, where.max_width),
        ("height", where.min_height, where.max_height),
        ("duration_seconds", where.min_duration, where.max_duration),
    ):
        bound = "" if column == sort_column else plus
        if low is not None:
            add(f"{bound}{column} >= ?", low)
        if high is not None:
            add(f"{bound}{column} <= ?", high)
    if where.under is not None:
        path = "path" if path_indexed else "+path"
        # normpath keeps POSIX's "//" prefix, which no stored (resolved) path has.
        directory = "/" + os.path.normpath(where.under).lstrip("/")
        add(f"{path} >= ? AND {path} < ?", *subtree_bounds(directory))
    if where.within:
        bounds = [subtree_bounds(root) for root in outermost(where.within)]
        # The roots most often hold every stored video: their ranges narrow
        # nothing, and given them indexed, SQLite would look up every row in
        # them for a video codec or container filter. With one, they are checked in
        # its index instead, which ends with the path (schema 7): no row is
        # read, however few of the rows the roots hold (narrowed since the
        # scans). A width, height or duration index does not end with it; the
        # roots' ranges of the path index carry those bounds (schema 8), so
        # there the bounds are checked without reading the rows.
        path = "path" if path_indexed and (path_walk or not covered) else "+path"
        if path_walk and len(bounds) > 1:
            add("path >= ? AND path < ?", min(low for low, _ in bounds), max(h for _, h in bounds))
            path = "+path"
        ranges = " OR ".join(f"{path} >= ? AND {path} < ?" for _ in bounds)
        add(f"({ranges})", *(bound for pair in bounds for bound in pair))
    return (" WHERE " + " AND ".join(terms) if terms else ""), tuple(args)


def _formats_named(container: str, formats: Sequence[str]) -> list[str]:
    """The stored formats the ``container`` filter names: itself, or one of its aliases."""
    alias = container.lower()
    return [name for name in formats if alias == name or alias in name.split(",")]


DRIVE_SAMPLE: Final = 10_000
"""How many matches of each equality filter :func:`driving_filter` counts
first; those that reach it are counted again ten times as far."""


def driving_filter(
    where: VideoFilter,
    formats: Sequence[str] | None,
    execute: Callable[[str, tuple[Any, ...]], sqlite3.Cursor],
) -> str | None:
    """Of two or more equality filters (video codec, audio codec, container),
    the one that matches the fewest videos, each counted up to
    :data:`DRIVE_SAMPLE` in its own index with ``execute`` (a reading
    connection's), and those that reach it again up to ten times as many,
    until one has fewest (a filter of 5 % of a million videos is no tie
    with one of 85 %); None with fewer. Its index finds the rows
    (``drive`` of :func:`filter_clause`); the others are checked on them.
    SQLite has no statistics to tell which is rarer and takes the first: a
    video codec and an audio codec over 100,000 videos took 91 ms through
    the common one's index, 1 ms through the rare one's; over a million,
    past the list's deadline. Ties go to the first, whose index may carry
    the bounds and the roots; so do filters that all match every video
    stored, once a count of the videos (up to the cap) says so: counted no
    further (a million videos, two such filters: 0.61 s with a last count
    of each to ten million)."""
    terms: dict[str, tuple[str, tuple[Any, ...]]] = {}
    if where.video_codec is not None:
        terms["video_codec"] = ("video_codec = ?", (where.video_codec.lower(),))
    if where.audio_codec is not None:
        terms["audio_codec"] = ("audio_codec = ?", (where.audio_codec.lower(),))
    if where.container is not None and formats is not None:
        names = _formats_named(where.container, formats)
        terms["container"] = (f"container_format IN ({', '.join('?' * len(names))})", (*names,))
    if len(terms) < 2:
        return None
    tied, cap = list(terms), DRIVE_SAMPLE
    while True:  # those that reach the cap are counted again, ten times as far
        found = {
            column: execute(
                f"SELECT count(*) FROM (SELECT 1 FROM videos WHERE {terms[column][0]}"
                f" LIMIT {cap:d})",
                terms[column][1],
            ).fetchone()[0]
            for column in tied
        }
        fewest = min(found.values())
        tied = [column for column in tied if found[column] == fewest]
        if len(tied) == 1 or fewest < cap:
            return tied[0]
        stored = f"SELECT count(*) FROM (SELECT 1 FROM videos LIMIT {cap + 1:d})"
        if execute(stored, ()).fetchone()[0] <= cap:  # each matches every video
            return tied[0]
        cap *= 10


def count_query(
    where: VideoFilter, formats: Sequence[str] | None, drive: str | None = None
) -> tuple[str, tuple[Any, ...]]:
    """The ``SELECT`` of how many videos ``where`` selects, and its arguments.

    Within several scan roots, a sum of one count a root, each reading its
    own range of an index: as one ``OR`` of ranges, SQLite reads them all and
    keeps a set of the rows it has counted (1,000,000 videos, two roots
    holding them: 217 ms against 86; 100,000: 9.3 ms against 3.8). The
    ranges are disjoint once a root inside another is dropped
    (:func:`outermost`), so the sum counts each video once. Not when a search
    or a codec or container filter drives the count (or is there:
    several equality filters have a ``drive``): its index is read once, the
    roots checked there, and a sum would read it once a root.
    """
    if where.q and attrs.evolve(where, q=None, under=None, within=()) == VideoFilter(
        sort=where.sort
    ):
        # A search alone, or with the roots and ``under``, which the search
        # index holds (it ends with the path, schema 13): that index is read
        # alone, the roots checked on its entries, no id gathered.
        condition, args = filter_clause(where, formats, path_indexed=False, searched=True)
        return f"SELECT count(*) FROM videos{condition}", args
    roots = outermost(where.within)
    by_its_index = bool(where.q) or where.video_codec is not None or where.audio_codec is not None
    by_its_index = by_its_index or (where.container is not None and formats is not None)
    if len(roots) < 2 or by_its_index:
        condition, args = filter_clause(where, formats, drive=drive)
        return f"SELECT count(*) FROM videos{condition}", args
    counts: list[str] = []
    arguments: list[Any] = []
    for root in roots:
        condition, args = filter_clause(attrs.evolve(where, within=(root,)), formats, drive=drive)
        counts.append(f"(SELECT count(*) FROM videos{condition})")
        arguments.extend(args)
    return "SELECT " + " + ".join(counts), tuple(arguments)


def outermost(roots: Sequence[str]) -> tuple[str, ...]:
    """``roots`` (absolute, normalised directories) without those inside
    another, nor repeated: directories whose subtrees are disjoint, sorted."""
    kept: list[str] = []
    for root in sorted(set(roots)):
        below = subtree_bounds(root)[0]  # its subtree, "<root>/"
        inside = (low <= below < high for low, high in map(subtree_bounds, kept))
        if not any(inside):
            kept.append(root)
    return tuple(kept)


def subtree_bounds(directory: str) -> tuple[str, str]:
    """Return ``(low, high)`` with ``low <= path < high`` exactly for paths under ``directory``."""
    prefix = directory if directory.endswith("/") else directory + "/"
    return prefix, prefix[:-1] + "0"
