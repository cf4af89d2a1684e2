"""The ``scan`` job handler: walk a directory, probe what changed, store the result.

One scan, step by step:

1. Walk the directory in a worker thread (:func:`walk_videos`); the walk checks
   for cancellation every few hundred entries.
2. Read the fingerprints of every stored row in the same scope, in one query.
3. Compare: a file whose ``(size, mtime_ns)`` matches its row is ``unchanged``
   and is neither probed nor written. The rest are probed; rows whose file is
   gone are deleted (``removed``) in one transaction. If the walk could not
   read everything (a directory it could not list, a symlink it could not
   follow: ``errors`` entries), a row it did not see whose file is still a
   regular file there, and may have been hidden behind what could not be
   read, is kept unchanged and not counted.
4. Probe in threads: ``probe_threads`` tasks share one
   ``anyio.CapacityLimiter`` (per handler, so concurrent scans share it too),
   each handing :data:`PROBE_CHUNK` files at a time to one of the handler's
   probe threads, which run at ``SCHED_IDLE`` priority on Linux unless the
   handler is told otherwise (``_background.py`` says why and what it costs).
   Each chunk's results go through a memory stream, as one item, to one
   writer task, which writes them in batches as they arrive: one transaction
   per :data:`WRITE_BATCH` rows or per :data:`FLUSH_SECONDS`, whichever comes
   first. One item a chunk rather than a file: each send and receive is a
   trip through the event loop, which a scan shares with every request.

A file that cannot be probed is an ``errors`` entry and the scan goes on. When
a file that was stored before has changed and can no longer be probed, its row
is deleted with the next batch: its old metadata no longer describes it. It
counts as an error, not as ``removed``.

Cancellation (the supervisor cancels the handler's scope on cancel or timeout)
reaches the walk thread at its next checkpoint, each probe thread before its
next file, and every task at its next await. A probe already running finishes
(FFmpeg cannot be interrupted), but its result is dropped, no new probe
starts, and no batch is written after the cancellation; batches committed
before it stay.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.from_thread
import attrs
from loguru import logger

from stoat_ferret.jobs import JobContext
from stoat_ferret.library._background import BackgroundThreads, ThreadPriority
from stoat_ferret.library._exceptions import ProbeError
from stoat_ferret.library._models import (
    DEFAULT_ERROR_CAP,
    ErrorLog,
    Fingerprint,
    VideoProbe,
    VideoRecord,
)
from stoat_ferret.library._probe import probe_video
from stoat_ferret.library._walk import is_video_name, walk_videos

if TYPE_CHECKING:
    import threading

    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from stoat_ferret.library._library import VideoLibrary

WRITE_BATCH: Final = 256
"""Rows that close a transaction: one holds at least this many (plus the rest of
the last chunk's results), or fewer once :data:`FLUSH_SECONDS` have passed."""

FLUSH_SECONDS: Final = 0.25
"""Longest a probed file waits for its batch to be written."""

PROBE_CHUNK: Final = 8
"""Files probed per worker-thread call."""

ScanHandler = Callable[[JobContext], Awaitable[dict[str, Any]]]


def make_scan_handler(
    library: VideoLibrary,
    *,
    probe_threads: int = 4,
    probe_priority: ThreadPriority = ThreadPriority.IDLE,
    error_cap: int = DEFAULT_ERROR_CAP,
) -> ScanHandler:
    """Build the handler of ``scan`` jobs, which fills ``library``.

    The job payload is ``{"path": <absolute resolved directory>, "recursive": bool}``
    (``recursive`` defaults to True).

    Args:
        library: Where the videos are stored.
        probe_threads: How many files are probed at once, at most, by all the
            scans of this handler together.
        probe_priority: The CPU priority of the probing threads.
        error_cap: How many ``errors`` entries a result lists; the rest are
            counted in ``errors_truncated``.

    Returns:
        An async handler returning ``{"found", "added", "updated", "unchanged",
        "removed", "errors", "errors_truncated"}``.

    Raises:
        ValueError: ``probe_threads`` or ``error_cap`` is out of range.
    """
    if probe_threads < 1:
        raise ValueError(f"probe_threads must be >= 1, got {probe_threads}")
    if error_cap < 0:
        raise ValueError(f"error_cap must be >= 0, got {error_cap}")
    limiter = anyio.CapacityLimiter(probe_threads)
    threads = BackgroundThreads(probe_threads, probe_priority, name="stoat-probe")

    async def scan(ctx: JobContext) -> dict[str, Any]:
        root, recursive = parse_payload(ctx.payload)
        run = _Scan(
            library=library,
            ctx=ctx,
            root=root,
            recursive=recursive,
            limiter=limiter,
            workers=probe_threads,
            threads=threads,
            errors=ErrorLog(cap=error_cap),
        )
        return await run.run()

    return scan


def parse_payload(payload: Any) -> tuple[str, bool]:
    """Return ``(directory, recursive)`` from a scan payload.

    Raises:
        ValueError: The payload is not ``{"path": <absolute str>, "recursive": <bool>}``.
    """
    if not isinstance(payload, Mapping):
        raise ValueError("scan payload must be an object with 'path' and 'recursive'")
    path = payload.get("path")
    recursive = payload.get("recursive", True)
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ValueError(f"scan payload 'path' must be an absolute path, got {path!r}")
    if not isinstance(recursive, bool):
        raise ValueError(f"scan payload 'recursive' must be a boolean, got {recursive!r}")
    return os.path.normpath(path), recursive


@attrs.define(eq=False, kw_only=True)
class _Scan:
    """The state of one scan job. Private to the handler's tasks."""

    library: VideoLibrary
    ctx: JobContext
    root: str
    recursive: bool
    limiter: anyio.CapacityLimiter
    workers: int
    threads: BackgroundThreads
    errors: ErrorLog
    found: dict[str, Fingerprint] = attrs.field(factory=dict)
    known: dict[str, Fingerprint] = attrs.field(factory=dict)
    done: int = 0
    added: int = 0
    updated: int = 0
    # The first unexpected error of a child task; re-raised once the group is closed.
    failure: Exception | None = None

    async def run(self) -> dict[str, Any]:
        log = logger.bind(job_id=self.ctx.job_id, root=self.root, recursive=self.recursive)
        log.info("scan started")
        walk = functools.partial(
            walk_videos,
            self.root,
            recursive=self.recursive,
            errors=self.errors,
            checkpoint=anyio.from_thread.check_cancelled,
        )
        compare = functools.partial(_compare, errors=self.errors)  # read after the walk
        self.found, self.known, to_probe, gone = await self.library.survey(
            walk, self.root, recursive=self.recursive, compare=compare
        )
        unchanged = len(self.found) - len(to_probe)
        if gone:
            await self.library.delete(gone)
        self.done = unchanged
        if to_probe:
            self.report()
            await self.probe_all(to_probe)
        self.ctx.report_progress(1.0, f"probed {self.done}/{len(self.found)} files")

        result = {
            "found": len(self.found),
            "added": self.added,
            "updated": self.updated,
            "unchanged": unchanged,
            "removed": len(gone),
            "errors": sorted(self.errors.entries, key=lambda entry: entry["path"]),
            "errors_truncated": self.errors.truncated,
        }
        log.info(
            "scan finished",
            **{key: value for key, value in result.items() if key != "errors"},
            error_count=len(self.errors),
        )
        return result

    def report(self) -> None:
        self.ctx.report_progress(
            self.done / len(self.found), f"probed {self.done}/{len(self.found)} files"
        )

    async def probe_all(self, paths: list[str]) -> None:
        send, receive = anyio.create_memory_object_stream[list[VideoRecord | str]](
            WRITE_BATCH // PROBE_CHUNK
        )
        # Shared: each chunk is taken by exactly one worker, and cut only
        # then, so a first scan of a million files does not cut them all at once.
        queue = (paths[start : start + PROBE_CHUNK] for start in range(0, len(paths), PROBE_CHUNK))
        chunks = -(-len(paths) // PROBE_CHUNK)
        async with anyio.create_task_group() as group:
            group.start_soon(self.guarded, group, self.write_batches, receive)
            async with send, anyio.create_task_group() as probers:
                for _ in range(min(self.workers, chunks)):
                    probers.start_soon(self.guarded, group, self.probe_worker, queue, send)
        if self.failure is not None:
            raise self.failure

    async def guarded(
        self,
        group: TaskGroup,
        task: Callable[..., Awaitable[None]],
        *args: Any,
    ) -> None:
        # Keeps a child's error out of an ExceptionGroup: the job then fails with
        # the error itself. Cancellation is a BaseException and passes through.
        try:
            await task(*args)
        except Exception as exc:
            if self.failure is None:
                self.failure = exc
            group.cancel_scope.cancel()

    async def probe_worker(
        self, chunks: Iterator[list[str]], send: MemoryObjectSendStream[list[VideoRecord | str]]
    ) -> None:
        for chunk in chunks:
            async with self.limiter:
                outcomes = await self.threads.run_sync(functools.partial(self.probe_chunk, chunk))
            items: list[VideoRecord | str] = []
            for path, outcome in outcomes:
                if isinstance(outcome, str):
                    self.errors.add(path, outcome)
                    if path in self.known:
                        items.append(path)  # its stored metadata no longer describes it
                else:
                    directory, filename = os.path.split(path)
                    size_bytes, mtime_ns = self.found[path]
                    record = VideoRecord(
                        path=path,
                        directory=directory,
                        filename=filename,
                        size_bytes=size_bytes,
                        mtime_ns=mtime_ns,
                        probe=outcome,
                    )
                    items.append(record)
                    if path in self.known:
                        self.updated += 1
                    else:
                        self.added += 1
                self.done += 1
                self.report()
            if items:
                await send.send(items)

    def probe_chunk(
        self, paths: list[str], stop: threading.Event
    ) -> list[tuple[str, VideoProbe | str]]:
        """Probe a few files in this thread: a probe or an error message each.

        One trip to a thread per chunk rather than per file: a trip costs the
        event loop about as much as probing a small file. ``stop`` (set once the
        scan is cancelled) is checked before every file, so none starts after.
        """
        outcomes: list[tuple[str, VideoProbe | str]] = []
        for path in paths:
            if stop.is_set():
                break
            try:
                outcomes.append((path, probe_video(path)))
            except ProbeError as exc:
                logger.debug("probe failed", job_id=self.ctx.job_id, path=path, reason=exc.reason)
                outcomes.append((path, exc.reason))
            except Exception as exc:
                # A PyAV surprise on one odd file must not sink a scan of thousands.
                logger.opt(exception=exc).warning(
                    "probe raised unexpectedly", job_id=self.ctx.job_id, path=path
                )
                outcomes.append((path, f"{type(exc).__name__}: {exc}"))
        return outcomes

    async def write_batches(
        self, receive: MemoryObjectReceiveStream[list[VideoRecord | str]]
    ) -> None:
        # A transaction costs far more than a row: gather WRITE_BATCH items,
        # but never hold the first ones back for longer than FLUSH_SECONDS.
        async with receive:
            async for first in receive:
                batch = list(first)
                with anyio.move_on_after(FLUSH_SECONDS):
                    while len(batch) < WRITE_BATCH:
                        try:
                            batch.extend(await receive.receive())
                        except anyio.EndOfStream:
                            break
                records = [item for item in batch if isinstance(item, VideoRecord)]
                stale = [item for item in batch if isinstance(item, str)]
                await self.library.apply(records, stale)


def _compare(
    found: dict[str, Fingerprint], known: dict[str, Fingerprint], *, errors: ErrorLog
) -> tuple[dict[str, Fingerprint], dict[str, Fingerprint], list[str], set[str]]:
    """``found`` and ``known``, the found paths to probe (new or changed,
    sorted) and the known paths gone. Blocking: run in the survey's thread.

    A known path the walk did not see is not gone if it may just have been
    hidden from the walk (:func:`_maybe_hidden`).
    """
    if found == known:  # one C-level comparison: the common rescan of an unchanged tree
        return found, known, [], set()
    stored = known.get
    to_probe = sorted(path for path, fingerprint in found.items() if stored(path) != fingerprint)
    new = sum(1 for path in to_probe if path not in known)
    # Every known path was found exactly when the found-and-known count equals len(known).
    gone = known.keys() - found.keys() if len(found) - new < len(known) else set()
    if gone and (errors.unread or errors.unfollowed):
        unread = frozenset(errors.unread)
        # A symlink hidden in a directory the walk could not list, or one it
        # could not follow, may be what led to any stored link target.
        links = errors.unfollowed > 0 or bool(unread)
        gone = {path for path in gone if not _maybe_hidden(path, unread, links=links)}
    return found, known, to_probe, gone


def _maybe_hidden(path: str, unread: frozenset[str], *, links: bool) -> bool:
    """True if the walk may have missed ``path``, a stored video not seen.

    That is when the filesystem cannot tell whether it exists, or it is still
    a regular file and either it, or a directory above it, is one the walk
    could not read, or it is a symlink's target (its name is no video name,
    so only a link led to it) and some link may have been hidden (``links``).
    Otherwise it is gone: deleted, replaced by something else than a file, or
    no longer the target of any link the walk could see.
    """
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:  # denied, or an I/O error: it may well be there
        return True
    if not stat.S_ISREG(info.st_mode):
        return False
    if not is_video_name(os.path.basename(path)):
        return links
    parent, above = path, ""
    while parent != above:  # up to "/": a set lookup a level, however many unread paths
        if parent in unread:
            return True
        parent, above = os.path.dirname(parent), parent
    return False
