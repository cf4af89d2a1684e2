"""The counts of one ``thumbnails`` job (``_thumbjob.py``), its progress and its result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from stoat_ferret.library._models import ErrorLog

if TYPE_CHECKING:
    from stoat_ferret.jobs import JobContext

Source = tuple[int, str, int, int, bool]
"""A video as the job sees it: (id, path, size_bytes, mtime_ns)."""


@attrs.define(eq=False, kw_only=True)
class ThumbnailRun:
    """The counts of one job, over all its passes. Private to the job's task."""

    ctx: JobContext
    errors: ErrorLog
    videos: int = 0
    unchanged: int = 0
    outside: int = 0  # stored videos outside the roots: not tried
    removed: int = 0
    yielded_to_scan: bool = False
    # Why the store could not write a thumbnail (disk full, ...): the job
    # ended there, failed, and the rest is owed.
    store_failed: str | None = None
    paused: int = 0  # times it paused while scans ran
    # Made and failed out of this many found missing so far (the listing
    # after a pause may find more), and the fraction last reported.
    total: int = 0
    # Invariant: never lowered; it holds while a later listing grows the total.
    fraction: float = 0.0
    # Sources tried by this job, made or not: a later pass skips them; of
    # them, those that failed, with why (``errors`` lists the first), and
    # those whose row went meanwhile; the rest were made, or are being made.
    tried: set[Source] = attrs.field(factory=set)
    failures: dict[Source, str] = attrs.field(factory=dict)
    gone: set[Source] = attrs.field(factory=set)
    # The store's ``remade`` the job last saw (at its listing, or a write):
    # once it differs, what was written before went with the directory.
    listed: int = 0
    relist: bool = False  # something went so: list again once this pass ends

    @property
    def made(self) -> int:
        return len(self.tried) - len(self.failures) - len(self.gone)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def fail(self, source: Source, why: str) -> None:
        self.failures[source] = why
        self.errors.add(source[1], why)

    def lose(self, remade: int, kept: Source | None = None) -> None:
        """The directory was made again (``remade``: removed or emptied by
        hand), ``kept`` written into the new one: what this job wrote before
        went with the old, so it is tried again, and counted (its error
        listed) once it is; the pass that follows lists again."""
        lost = self.tried - {kept}
        self.tried -= lost
        self.gone -= lost
        if not lost.isdisjoint(self.failures):
            self.failures = {s: why for s, why in self.failures.items() if s not in lost}
            self.errors = ErrorLog(cap=self.errors.cap, stored=False)
            for source, why in self.failures.items():
                self.errors.add(source[1], why)
        self.listed, self.relist = remade, True

    def report(self, state: str | None = None) -> None:
        """Report the counts (``state`` appended), never a lower fraction."""
        done = self.made + self.failed
        if self.total:
            self.fraction = max(self.fraction, done / self.total)
        self.ctx.report_progress(self.fraction, _message(done, self.failed, self.total, state))

    def result(self) -> dict[str, Any]:
        return {
            "videos": self.videos,
            "made": self.made,
            "failed": self.failed,
            "unchanged": self.unchanged,
            "outside": self.outside,
            "removed": self.removed,
            "errors": sorted(self.errors.entries, key=lambda entry: entry["path"]),
            "errors_truncated": self.errors.truncated,
            "yielded_to_scan": self.yielded_to_scan,
            "paused_for_scans": self.paused,
        }


def _message(done: int, failed: int, total: int, state: str | None = None) -> str:
    if not total:  # not listed yet (paused, giving way), or listed with none to make
        return f"thumbnails; {state}" if state else "thumbnails: nothing to make"
    if failed:  # tried: made, or found to have no frame to make one of
        counts = f"thumbnails: {done}/{total} done, {failed} of them failed"
    else:
        counts = f"thumbnails: {done}/{total} made"
    return f"{counts}; {state}" if state else counts
