"""The passes of ``thumbnails`` jobs (``_thumbjob.py``) over the library.

A pass lists every stored video, removes the files of videos no longer
stored (:meth:`ThumbnailStore.sweep`), and makes the thumbnail of each video
whose current version has none and that the job has not tried yet, one at a
time, making way for scans before the listing and before each thumbnail
(``_scangate.py``). After each thumbnail, what it wrote goes if the video's
row went meanwhile, whatever ended the making.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Final

import anyio
import anyio.to_thread
import attrs
from loguru import logger

from stoat_ferret.library._beneath import containing_root
from stoat_ferret.library._scangate import Way
from stoat_ferret.library._thumbmake import StoreFailed

if TYPE_CHECKING:
    from stoat_ferret.library._background import BackgroundThreads, Stop
    from stoat_ferret.library._library import VideoLibrary
    from stoat_ferret.library._scangate import ScanGate
    from stoat_ferret.library._thumbmake import ThumbnailMaker
    from stoat_ferret.library._thumbrun import Source, ThumbnailRun
    from stoat_ferret.library._thumbstore import ThumbnailStore

CHECK_EVERY: Final = 1_000
"""Videos the listing checks between looks for scans and cancellation."""


@attrs.frozen(kw_only=True, eq=False)
class LibraryPasses:
    """The passes of one ``Thumbnailer``'s jobs (its library, store and gate).

    ``threads`` is the job's one background thread, at the probe threads'
    priority; ``limiter`` lets one thumbnail or listing use it at a time.
    """

    library: VideoLibrary
    store: ThumbnailStore
    maker: ThumbnailMaker
    gate: ScanGate
    roots: tuple[str, ...]
    threads: BackgroundThreads
    limiter: anyio.CapacityLimiter = attrs.field(factory=lambda: anyio.CapacityLimiter(1))

    def inside(self, source: Source) -> bool:
        """Whether ``source`` is inside the scan roots (any, without roots)."""
        return containing_root(os.path.dirname(source[1]), self.roots) is not None

    async def make_way(self, run: ThumbnailRun) -> Way:
        """Before the listing and each thumbnail: what the gate says, reported."""

        def pause() -> None:
            run.paused += 1
            run.report("paused for a scan")
            logger.debug("thumbnails paused for a scan")  # the job's fields: its contextualize

        way = await self.gate.make_way(pause)
        if way is Way.STOP:
            run.yielded_to_scan = True
            run.report("gave way to a waiting scan; the rest is queued behind it")
        return way

    async def one_pass(self, run: ThumbnailRun) -> bool:
        """List the library and make what is missing; False if a scan cut it short."""
        if await self.make_way(run) is Way.STOP:  # the listing is work too
            return False
        sources = await self.library.thumbnail_sources()
        # The file-system part runs on the idle thread, and a scan that
        # starts meanwhile cuts it short: the pass is listed again after it.
        missing = functools.partial(self._missing, sources, run.tried)
        async with self.limiter:
            # The sweep first: it claims a directory put back in place (copied
            # back: a new inode), whose thumbnails would all read as missing.
            try:
                run.removed += await self.threads.run_sync(
                    lambda _: self.store.sweep({source[0] for source in sources})
                )
            except OSError as exc:  # cannot list it, or make it again (a full disk)
                run.store_failed = f"cannot use the thumbnails directory ({exc.strerror or exc})"
                return True  # nothing can be made: all stays owed
            run.listed = self.store.remade  # the sweep made it again, if it was removed
            found = await self.threads.run_sync(missing)
            if found is None:
                return False
        todo, run.unchanged, run.outside = found
        run.videos = len(sources)
        run.total = run.made + run.failed + len(todo)
        for source in todo:
            if await self.make_way(run) is not Way.GO:
                return False
            run.report()
            try:
                outcome, gone = await self._make(source, run)
            except StoreFailed as exc:
                run.tried.add(source)
                self._seen(run, source)
                run.fail(source, str(exc))
                run.store_failed = str(exc)
                return True  # the next would fail alike: the rest stays owed
            run.tried.add(source)
            self._seen(run, source)
            if gone:  # its row went meanwhile: what was made went with it
                run.gone.add(source)
                run.removed += 1
                run.total -= 1
            elif outcome is not None:
                run.fail(source, outcome)
        run.report()
        return True

    def _seen(self, run: ThumbnailRun, source: Source) -> None:
        """After ``source``'s write: if that write made the directory again
        (removed or emptied by hand), what the job wrote before it is lost."""
        if self.store.remade != run.listed:
            run.lose(self.store.remade, kept=source)

    def _missing(
        self, sources: list[Source], tried: set[Source], stop: Stop
    ) -> tuple[list[Source], int, int] | None:
        """What to make (missing, not tried by this job), how many had theirs
        before it, and how many are outside the roots; None once a scan runs
        or the job is cancelled (looked at every :data:`CHECK_EVERY` videos,
        from the first)."""
        state = self.store.state
        todo: list[Source] = []
        unchanged = outside = 0
        for index, source in enumerate(sources):
            # An int read in this thread: a scan's start on the loop is seen here.
            if index % CHECK_EVERY == 0 and (stop.is_set() or self.gate.running):
                return None
            if source in tried:
                continue
            if not self.inside(source):
                outside += 1
            elif state(source[0], source[2:4]) is None:
                todo.append(source)
            else:
                unchanged += 1
        return todo, unchanged, outside

    async def _make(self, source: Source, run: ThumbnailRun) -> tuple[str | None, bool]:
        """Make ``source``'s thumbnail (:meth:`ThumbnailMaker.make`), then drop
        what it wrote if its row went meanwhile, even if cancelled or failing:
        a failure of that check then leaves the job's own reason as it was.
        Returns the maker's outcome (None: made; else why not) and whether
        the row went (what was made, or marked failed, is removed)."""
        try:
            async with self.limiter:
                outcome = await self.threads.run_sync(functools.partial(self.maker.make, source))
        except BaseException:
            await self._forget_if_gone(source, run, failing=True)
            raise
        return outcome, await self._forget_if_gone(source, run, failing=False)

    async def _forget_if_gone(self, source: Source, run: ThumbnailRun, *, failing: bool) -> bool:
        """Remove what was written of ``source`` if its row was deleted (or
        changed) meanwhile; whether it did. A deletion's own hook covers what
        commits after this."""
        with anyio.CancelScope(shield=True):
            try:
                video = await self.library.get_video(source[0])
                if video is None or (video.size_bytes, video.mtime_ns) != source[2:4]:
                    await anyio.to_thread.run_sync(self.store.remove, [source[0]])
                    return True
            except Exception:
                if not failing:
                    raise
                logger.opt(exception=True).warning(
                    "thumbnail of video {video_id} not checked against its row; the next "
                    "start's sweep removes it if the row is gone",
                    video_id=source[0],
                )
        return False
