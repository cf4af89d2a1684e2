"""``python -m tests.gated_service``: the real service, with scans a test can hold running.

It is ``python -m stoat_ferret`` (same settings, logging, signals and exit
statuses) with one change, for tests that must catch a scan in the middle
whatever the machine's speed: after the scan writes a batch of videos from
a directory that holds a file named :data:`HOLD`, it waits while that file
exists. So the first batch is stored, the rest is not, and the job stays
``running`` (its progress says how many files it probed) until the test
deletes the file, cancels the job, stops or kills the service. When the
gate begins to hold, the service logs :func:`held_line` (at INFO), which a
test waits for (``tests.server.wait_for_line``).

The test is another process, so the file is checked every
:data:`POLL_SECONDS`; the wait is cancellable like the rest of the scan.

``STOATTEST_SCAN_EXITS=CODE`` has every scan's handler raise
``SystemExit(CODE)``: a handler's ``BaseException``, which ends the job
supervisor's ``run()``.

``STOATTEST_CLOSE_FAILS=1`` has the library's close raise (once it has
closed): a lifespan that fails as the service stops.

``STOATTEST_HTTP_GRACE=SECONDS`` replaces how long the server waits for open
requests at shut-down before it hangs up on them
(:data:`stoat_ferret._server.HTTP_GRACE_SECONDS`), for a test that must catch
that wait whatever the machine's speed.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Final

import anyio
from loguru import logger

import stoat_ferret._server
import stoat_ferret.api.app
from stoat_ferret._main import main
from stoat_ferret.library import VideoLibrary

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence
    from datetime import datetime
    from pathlib import Path

    from stoat_ferret.jobs import Handler, JobContext
    from stoat_ferret.library import VideoRecord
    from stoat_ferret.library._models import Applied, Fingerprint, LookedAt

HOLD: Final = "HOLD"
"""The gate: a file of this name in a scanned directory (not a video: the scan ignores it)."""

POLL_SECONDS: Final = 0.02

_write = VideoLibrary.apply


def held_line(directory: Path) -> str:
    """The log line saying the scan of ``directory`` is held by its gate."""
    return f"scan held at {directory.resolve() / HOLD}"


async def _held_apply(
    self: VideoLibrary,
    records: Sequence[VideoRecord],
    deletions: Collection[str],
    *,
    unprobed: Mapping[str, Fingerprint] | None = None,
    written_before: datetime | None = None,
    gone: Callable[[Mapping[str, Fingerprint]], LookedAt] | None = None,
    home: Callable[[str], int | None] | None = None,
) -> Applied:
    applied = await _write(
        self,
        records,
        deletions,
        unprobed=unprobed,
        written_before=written_before,
        gone=gone,
        home=home,
    )
    for gate in {anyio.Path(record.directory, HOLD) for record in records}:
        if await gate.exists():
            logger.info("scan held at {gate}", gate=str(gate))
        # Another process opens the gate: there is no event to wait on.
        while await gate.exists():  # noqa: ASYNC110
            await anyio.sleep(POLL_SECONDS)
    return applied


def _exiting_scans(code: int) -> Callable[..., Handler]:
    def make(*args: object, **options: object) -> Handler:
        async def exits(ctx: JobContext) -> None:
            raise SystemExit(code)

        return exits

    return make


_close = VideoLibrary.aclose


async def _failing_close(self: VideoLibrary) -> None:
    await _close(self)
    raise OSError(5, "Input/output error")


if __name__ == "__main__":
    VideoLibrary.apply = _held_apply  # type: ignore[method-assign]
    if os.environ.get("STOATTEST_CLOSE_FAILS"):
        VideoLibrary.aclose = _failing_close  # type: ignore[method-assign]
    if code := os.environ.get("STOATTEST_SCAN_EXITS"):
        stoat_ferret.api.app.make_scan_handler = _exiting_scans(int(code))  # type: ignore[attr-defined]
    if grace := os.environ.get("STOATTEST_HTTP_GRACE"):
        stoat_ferret._server.HTTP_GRACE_SECONDS = int(grace)  # type: ignore[misc]
    sys.exit(main())
