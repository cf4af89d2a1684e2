"""The scan errors of a :class:`~stoat_ferret.library.VideoLibrary`: a base class of it.

The async face of ``ScanErrorStore`` (``_storeerrors.py``): each call runs the
store's blocking method in a worker thread, as ``_library.py`` says.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Final

import anyio
import anyio.to_thread

if TYPE_CHECKING:
    from collections.abc import Sequence

    from stoat_ferret.library._store import VideoStore

FORGET_ROWS: Final = 10_000
"""Stored errors of a forgotten or replaced scan deleted in one transaction:
tens of milliseconds of the write lock, where a list of a million took seconds."""


class ScanErrorLibrary:
    """The scan errors of the library's store; its subclass sets ``_store`` and ``_reads``."""

    _store: VideoStore
    _reads: anyio.CapacityLimiter

    async def replace_scan_errors(
        self, job_id: str, directory: str, *, recursive: bool, errors: Sequence[tuple[str, str]]
    ) -> None:
        """Replace the stored errors of this scope with those of the scan
        ``job_id``, which owns the scope's list from now on; the replaced
        lists are deleted :data:`FORGET_ROWS` a transaction
        (:meth:`forget_scan_errors`). They read as replaced from the first
        transaction on; rows a cancellation leaves go with the next scan of
        the scope, or when the lifespan's sweep finds their jobs forgotten."""
        replaced = await anyio.to_thread.run_sync(
            functools.partial(
                self._store.replace_scan_errors,
                job_id,
                directory,
                recursive=recursive,
                errors=errors,
            )
        )
        await self.forget_scan_errors(replaced)

    async def add_scan_errors(
        self, job_id: str, directory: str, *, recursive: bool, errors: Sequence[tuple[str, str]]
    ) -> None:
        """Store more errors of the scan ``job_id``; nothing if a later scan
        of the same scope has replaced its list, nor once ``job_id`` has
        ended (:meth:`end_scan`) and another scan has begun."""
        if errors:
            await anyio.to_thread.run_sync(
                functools.partial(
                    self._store.add_scan_errors,
                    job_id,
                    directory,
                    recursive=recursive,
                    errors=errors,
                )
            )

    def add_scan_errors_blocking(
        self, job_id: str, directory: str, *, recursive: bool, errors: Sequence[tuple[str, str]]
    ) -> None:
        """:meth:`add_scan_errors`, in the calling thread: for the worker thread
        of a scan's walk. That thread holds a token of anyio's default thread
        limiter, which :meth:`add_scan_errors` would wait for another of: with
        every token held by such walks, none would ever be given back."""
        if errors:
            self._store.add_scan_errors(job_id, directory, recursive=recursive, errors=errors)

    def end_scan(self, job_id: str, directory: str, *, recursive: bool, lost: bool = False) -> None:
        """The scan ``job_id`` adds no more errors; ``lost``: some it met were
        not stored (:meth:`VideoStore.end_scan`; never waits, so it needs no
        worker thread)."""
        self._store.end_scan(job_id, directory, recursive=recursive, lost=lost)

    async def scan_error_jobs(self) -> list[str]:
        """The scans that have errors stored."""
        return await anyio.to_thread.run_sync(self._store.scan_error_jobs)  # not a request's

    async def forget_scan_errors(self, job_ids: Sequence[str]) -> None:
        """Delete the stored errors of the scans ``job_ids``, :data:`FORGET_ROWS`
        a transaction (a cancellation waits for one at most, and its wait for
        the write lock)."""
        for job_id in job_ids:
            forget = functools.partial(self._store.forget_scan_errors, job_id, limit=FORGET_ROWS)
            while await anyio.to_thread.run_sync(forget) == FORGET_ROWS:
                pass

    async def scan_errors(
        self, job_id: str, limit: int = 100, offset: int = 0, *, busy_after: float | None = None
    ) -> tuple[list[tuple[str, str]], int]:
        """Return one page of the stored ``(path, error)`` entries of a scan, and their total.

        ``busy_after``: seconds the answer may take, its wait for a thread and
        the reader included (a request's, as ``VideoLibrary.get_video``'s).

        Raises:
            ValueError: ``limit`` or ``offset`` is negative.
            ScanErrorsReplaced: A later scan of the same scope replaced the list.
            ScanErrorsIncomplete: The scan ended before it stored every entry.
            StoreBusy: not answered within ``busy_after``.
        """
        deadline = None if busy_after is None else time.monotonic() + busy_after
        return await anyio.to_thread.run_sync(
            functools.partial(self._store.scan_errors, job_id, limit, offset, deadline=deadline),
            limiter=self._reads,
        )
