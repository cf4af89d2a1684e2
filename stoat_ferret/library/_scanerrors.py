"""Where one scan's ``errors`` entries go (``_scan.py``): its result keeps the
first few (``ErrorLog``), the store's ``scan_errors`` table every one.

A scan makes its scope's list its own when it starts (the list of the scan
before it is replaced), and stores the entries it meets after its walk,
at its end (after its probes, if any), and whenever :data:`ERRORS_HELD` are held before that:
a tree of a million failures costs the scan a few MB, not hundreds. A scan
that ends early (cancelled, timed out, failed) stores those it met, shielded,
unless the store is what failed; every scan, when it ends, stops owning its
list (``VideoStore.end_scan``), and one that ends with entries unstored has
its list marked incomplete (read, it raises ``ScanErrorsIncomplete``).
A scan that a later scan of the same scope overtook stores nothing more:
the list is that scan's (``VideoStore.add_scan_errors``).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Final

import anyio
import attrs
from loguru import logger

from stoat_ferret.library._exceptions import LibraryError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from stoat_ferret.library._library import VideoLibrary
    from stoat_ferret.library._models import ErrorLog

ERRORS_HELD: Final = 4096
"""``errors`` entries a scan holds in memory at most before it stores them,
during the walk and during the probes."""


@attrs.define(eq=False, kw_only=True)
class ScanErrors:
    """The ``errors`` of the scan ``job_id`` of ``root``: ``log`` holds what is
    met, and what is not stored yet."""

    library: VideoLibrary
    job_id: str
    root: str
    recursive: bool
    log: ErrorLog

    async def begin(self) -> None:
        """Make the scope's list this scan's (the previous scan's is replaced)."""
        await self.library.replace_scan_errors(
            self.job_id, self.root, recursive=self.recursive, errors=()
        )

    async def store(self) -> None:
        """Store the entries met since the last call; kept for later if the
        write does not happen (cancelled before its thread ran, say)."""
        with self._unstored() as taken:
            await self.library.add_scan_errors(
                self.job_id, self.root, recursive=self.recursive, errors=taken
            )

    async def store_if_many(self) -> None:
        """:meth:`store`, once :data:`ERRORS_HELD` are held."""
        if len(self.log.unstored) >= ERRORS_HELD:
            await self.store()

    def store_if_many_here(self) -> None:
        """:meth:`store_if_many` in this thread, the walk's: it holds a token of
        anyio's default thread limiter (``VideoLibrary.add_scan_errors_blocking``
        says why not another thread)."""
        if len(self.log.unstored) >= ERRORS_HELD:
            with self._unstored() as taken:
                self.library.add_scan_errors_blocking(
                    self.job_id, self.root, recursive=self.recursive, errors=taken
                )

    async def keep(self) -> None:
        """Store the entries of a scan that ended early, shielded (the write is
        short), so that a cancelled or timed-out scan's list says what it met;
        a store that fails now is logged, not raised over the scan's ending."""
        with anyio.CancelScope(shield=True):
            try:
                await self.store()
            except LibraryError as exc:
                logger.warning(
                    "scan errors not stored: {error}", job_id=self.job_id, error=str(exc)
                )

    def end(self) -> None:
        """The scan adds no more entries (``VideoStore.end_scan``; never waits);
        any still unstored (the store failed) are lost, and its list says so."""
        self.library.end_scan(
            self.job_id, self.root, recursive=self.recursive, lost=bool(self.log.unstored)
        )

    @contextlib.contextmanager
    def _unstored(self) -> Iterator[list[tuple[str, str]]]:
        """The entries not stored yet, taken for the block to store; put back
        if it does not (it raised, or was cancelled)."""
        taken = self.log.take_unstored()
        try:
            yield taken
        except BaseException:
            self.log.put_back(taken)
            raise
