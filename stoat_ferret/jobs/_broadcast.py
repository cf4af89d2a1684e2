"""Following every job at once: numbered job changes, a replay log, coalescing feeds.

The owner of the jobs (the supervisor's actor, or the in-memory queue) calls
:meth:`JobChanges.publish` with a job's record right after each change it
makes to it (created, started, progressed, ended), and :meth:`JobChanges.forget`
when it drops the record. Each change gets the next event id, an integer
that only grows. ``watch_all`` hands out :class:`JobFeed` iterators over the
changes.

Bounded whatever the followers do:

* the replay log keeps the last ``replay`` changes, as (event id, record)
  pairs; a follower that comes back with the id of the last change it saw
  gets what changed since from it, or :class:`ChangesLost` if that id is
  older than the log (or from another run, see below);
* a feed holds at most one pending change per job, the latest: a slow
  follower gets each job's latest state, never a backlog. Beyond ``limit``
  jobs pending it drops them all for one :class:`ChangesLost` (no limit for
  a follower that takes all it holds whenever it wakes: the metrics).

Publishing never waits and never snapshots: a feed takes the snapshot of a
job when it hands the change out. That is the state the change's id names,
since the owner publishes after every change it makes to a job's snapshot
(the invariant that makes this cheap), so a later change would have moved
the job to the end of the feed with a later id. A closed feed takes no more
changes, so it snapshots what it holds when it is closed (once, at the
stop, not per change). Only the event loop's thread touches these objects,
and no method but ``JobFeed.__anext__`` awaits.

Ids carry no run token: the first id of a run is the wall clock at the
queue's creation in microseconds, so an id from an earlier run is older than
every id of this one (and gets :class:`ChangesLost`) *assuming the clock
does not go back between runs* and no run issues more than a million ids a
second for longer than the gap between runs. If it does go back, an old
run's id can fall inside this run's range and be resumed from as if it were
this run's (the follower gets the changes after that number, not a reset);
an id above the latest issued is treated as unknown.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Final

from stoat_ferret.jobs._feed import JobFeed

if TYPE_CHECKING:
    from collections.abc import Collection

    from stoat_ferret.jobs._feed import Entry
    from stoat_ferret.jobs._record import JobRecord

REPLAY_EVENTS: Final = 1024
"""Changes kept for followers that reconnect."""

FEED_LIMIT: Final = 1024
"""Most jobs with a pending change in one feed before it reports :class:`ChangesLost`."""


class JobChanges:
    """Every job change of one queue, numbered, and the feeds that follow them.

    Args:
        replay: how many of the latest changes are kept for :meth:`open_feed`'s ``after``.
    """

    def __init__(self, *, replay: int = REPLAY_EVENTS) -> None:
        if isinstance(replay, bool) or not isinstance(replay, int) or replay < 1:
            raise ValueError(f"replay must be a positive integer, got {replay!r}")
        self._next_id = time.time_ns() // 1000
        self._log: deque[Entry] = deque(maxlen=replay)
        # Invariant: the entry of each known job's latest change (the
        # record's current state); forgotten when its owner drops the record.
        self._latest: dict[str, Entry] = {}
        self._open_feeds: set[JobFeed] = set()  # feeds without a job id filter
        self._feeds_by_job: dict[str, set[JobFeed]] = {}
        self._closed = False

    @property
    def last_event_id(self) -> int:
        """The id of the latest change (one less than the first id, before any)."""
        return self._next_id - 1

    def publish(self, record: JobRecord) -> None:
        """Number the change just made to ``record`` and hand it to the feeds."""
        entry = (self._next_id, record)
        self._next_id += 1
        self._log.append(entry)
        job_id = record.job_id
        self._latest[job_id] = entry
        if self._open_feeds:
            for feed in self._open_feeds:
                feed.push(job_id, entry)
        if self._feeds_by_job and (named := self._feeds_by_job.get(job_id)):
            for feed in named:
                feed.push(job_id, entry)

    def forget(self, job_id: str) -> None:
        """The owner dropped the job: no new feed starts with its state."""
        self._latest.pop(job_id, None)

    def close(self) -> None:
        """No more changes: every feed ends after what it holds, new ones at once."""
        self._closed = True
        for feed in [*self._open_feeds, *(f for s in self._feeds_by_job.values() for f in s)]:
            feed.close()

    def open_feed(
        self,
        *,
        after: int | None = None,
        job_ids: Collection[str] | None = None,
        job_types: Collection[str] | None = None,
        until_terminal: bool = False,
        limit: int | None = FEED_LIMIT,
    ) -> JobFeed:
        """A feed of the changes from now on (see ``AsyncJobQueue.watch_all``).

        Every id it hands out is greater than ``after`` (an id this run
        issued) and than the ids it handed out before. It starts with the
        changes after ``after`` when the log still holds them. A feed naming
        no job whose ``after`` is not in the log starts with one
        :class:`ChangesLost` and nothing else (its follower fetches the job
        list again; the changes after it have greater ids); so does one
        naming a job this queue does not know (dropped while its follower was
        away, its end unseen; or never submitted), unless ``until_terminal``.
        Its id is :attr:`last_event_id`, lower than an ``after`` this run
        never issued: the follower takes it as its new position. Otherwise it
        starts with the current state of the jobs it follows: every job it
        names whose latest change is newer than ``after``, or, with no
        ``after`` and naming none, every job not ended yet. Naming jobs, an
        ``after`` this run never issued (greater than :attr:`last_event_id`:
        garbage, or a run whose clock was ahead) counts as none.

        Raises:
            TypeError: ``job_ids`` or ``job_types`` is a str.
            ValueError: ``limit`` is below 1.
        """
        for name, value in (("job_ids", job_ids), ("job_types", job_types)):
            if isinstance(value, str):  # a collection of its letters: it would follow none
                raise TypeError(f"{name} must be a collection of str, not a str: {value!r}")
        if limit is not None and (isinstance(limit, bool) or limit < 1):
            raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
        named = None if job_ids is None else frozenset(job_ids)
        if named is not None and after is not None and after > self.last_event_id:
            after = None  # never issued by this run: counts as none
        unknown = frozenset() if named is None or until_terminal else named - self._latest.keys()
        logged = after is not None and self._holds_changes_after(after)
        start = [e for e in self._log if after is not None and e[0] > after] if logged else []
        if logged and unknown:  # a dropped job the log holds: its end is sent now, or was seen
            unknown -= {entry[1].job_id for entry in self._log}
        # The follower refetches the list (or the jobs it names: only a fetch
        # tells it one was dropped); a state sent now would carry an older id.
        lost = (after is not None and named is None and not logged) or bool(unknown)
        if lost:
            start = []
        elif not logged:
            start = sorted(
                (
                    entry
                    for job_id, entry in self._latest.items()
                    if job_id in named and (after is None or entry[0] > after)
                )
                if named is not None
                else (entry for entry in self._latest.values() if not entry[1].status.is_terminal)
            )
        feed = JobFeed(
            job_ids=named,
            job_types=None if job_types is None else frozenset(job_types),
            until_terminal=until_terminal and named is not None,
            limit=None if limit is None else max(limit, len(named or ())) + len(start),
            opened_at=self.last_event_id,
        )
        if lost:
            feed.lose(self.last_event_id)
        for entry in start:
            if named is None or entry[1].job_id in named:
                feed.push(entry[1].job_id, entry)
        if named is not None:
            # Named jobs already ended before ``after``, unknown ones and those
            # of a type the feed leaves out have nothing more to say.
            feed.unknown = frozenset(job_id for job_id in named if job_id not in self._latest)
            for job_id in named:
                latest = self._latest.get(job_id)
                if (
                    latest is None
                    or (after is not None and latest[1].status.is_terminal and latest[0] <= after)
                    or (job_types is not None and latest[1].job_type not in job_types)
                ):
                    feed.settle(job_id)
            for job_id in named:
                self._feeds_by_job.setdefault(job_id, set()).add(feed)
        else:
            self._open_feeds.add(feed)
        if self._closed:
            feed.close()
        return feed

    def close_feed(self, feed: JobFeed) -> None:
        """Stop handing changes to ``feed`` (its follower is done with it).

        What it still holds would be snapshotted later under the ids it had,
        while the jobs go on changing: it is dropped, and reading the feed
        again ends at once.
        """
        feed.abandon()
        self._open_feeds.discard(feed)
        for job_id in feed.job_ids or ():
            if (feeds := self._feeds_by_job.get(job_id)) is not None:
                feeds.discard(feed)
                if not feeds:
                    del self._feeds_by_job[job_id]

    def _holds_changes_after(self, after: int) -> bool:
        first = self._log[0][0] if self._log else self._next_id
        return first - 1 <= after <= self.last_event_id
