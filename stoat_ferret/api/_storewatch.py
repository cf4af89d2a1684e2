"""The lifespan's look at the video store's files, every :data:`WATCH_SECONDS`.

The store looks at its files before each write (the database, its lock, its
write-ahead log or the log's index deleted or replaced: ``_storefile.py``),
and refuses to write once one is. An idle store would learn it only at its
next write, maybe hours later, while ``/health`` said ``ok`` and a crash
meanwhile lost every commit held in a deleted log. :func:`watching` looks
between writes too, in a worker thread: ``/health`` says ``broken`` within
seconds, and a lost log's commits are copied into the database file then.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import anyio
from loguru import logger

from stoat_ferret.library import StoreBroken, StoreError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from stoat_ferret.library import VideoLibrary

WATCH_SECONDS: Final = 5.0
"""How often the store's files are looked at between writes (three ``stat``
calls and a lock's: nothing a machine notices)."""


@asynccontextmanager
async def watching(library: VideoLibrary, *, every: float = WATCH_SECONDS) -> AsyncIterator[None]:
    """Look at ``library``'s files every ``every`` seconds while the block runs
    (the lifespan's), until the store is found broken (logged once, as an
    error). A look that fails (the directory unreadable for now) is logged
    (once while it fails alike), and the next one tries again."""
    async with anyio.create_task_group() as group:
        group.start_soon(_watch_every, library, every, name="stoat_ferret store watch")
        try:
            yield
        finally:
            group.cancel_scope.cancel()


async def _watch_every(library: VideoLibrary, every: float) -> None:
    failing = None  # why the last look failed, logged once while it stays so
    while library.broken is None:
        await anyio.sleep(every)
        try:
            await library.look_at_files()
        except StoreBroken as exc:
            logger.error("video store broken: {reason}", reason=" ".join(str(exc).split()))
            return
        except StoreError as exc:  # the next look tries again
            reason = " ".join(str(exc).split())
            if reason != failing:
                logger.warning("video store files not looked at: {reason}", reason=reason)
            failing = reason
        else:
            failing = None
