"""The scan requests seen lately, as the client spelt them, and the job each one got.

A scan request names a directory in some spelling; the route resolves it in
a worker thread (symlinks, ``..``) and submits a job keyed by the resolved
directory. Clients repeat themselves: a button pressed twice, a watcher that
asks again, a dashboard on several screens. When the same spelling comes
back while the job it got is still pending or running, the route answers
with that job at once, without resolving the path again or asking the job
queue for the key: that is what a fresh resolution would almost always
give, and it saves a thread hop and a round trip through the supervisor.

"Almost": if the directory was renamed or removed, or a symlink on its way
re-pointed, after the first request was accepted, the repeat joins the job
already queued for it instead of getting a 404 or a job of its own. That is
the answer it would have had a moment earlier, and the job itself reports
what it finds when it runs. A repeat after the job has ended is resolved
afresh.
"""

from __future__ import annotations

import hashlib
from typing import Final, NamedTuple

import attrs

SPELLINGS_KEPT: Final = 4096
"""Most spellings remembered; the oldest is forgotten first."""


class ScanJob(NamedTuple):
    """The job a scan request got, and the directory it resolved to."""

    job_id: str
    directory: str


def _digest(path: str) -> bytes:
    # A spelling may be 16,000 characters (lone surrogates too, from JSON):
    # kept whole, 4,096 of them could hold half a gigabyte. A 128-bit digest
    # keeps each entry small; two spellings sharing one is a 2**-128 chance.
    return hashlib.blake2b(path.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@attrs.define(eq=False)
class RecentScans:
    """A bounded map from (spelling, recursive) to the :class:`ScanJob` that request got.

    Keyed by a digest of the spelling, so its memory is bounded whatever the
    spellings; the resolved directories it keeps are real paths under a scan
    root. Only the event loop's thread touches it, and no method awaits.
    """

    limit: int = SPELLINGS_KEPT
    _jobs: dict[tuple[bytes, bool], ScanJob] = attrs.field(factory=dict, init=False)

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, path: str, *, recursive: bool) -> ScanJob | None:
        """The job a request spelt like this got last, if remembered."""
        return self._jobs.get((_digest(path), recursive))

    def remember(self, path: str, job: ScanJob, *, recursive: bool) -> None:
        """Note the job this request got; forget the oldest spelling beyond the limit."""
        key = (_digest(path), recursive)
        self._jobs.pop(key, None)  # re-inserted last: the newest
        self._jobs[key] = job
        if len(self._jobs) > self.limit:
            del self._jobs[next(iter(self._jobs))]
