"""JobChanges and JobFeed on their own: numbering, replay, filters, closing, bounds."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from stoat_ferret.jobs import ChangesLost, FeedItem, JobChange, JobFeed, JobStatus
from stoat_ferret.jobs._broadcast import JobChanges
from stoat_ferret.jobs._record import JobRecord, wall_clock_ns
from stoat_ferret.jobs._state import JobEvent

pytestmark = pytest.mark.anyio


def _record(job_id: str, job_type: str = "t") -> JobRecord:
    return JobRecord(job_id, job_type, None, 300.0, None, wall_clock_ns())


async def _drain(feed: JobFeed) -> list[FeedItem]:
    """Everything pending, then the end (the feed is closed first)."""
    feed.close()
    return [item async for item in feed]


def _summary(items: list[FeedItem]) -> list[tuple[str, str]]:
    return [
        (item.job.job_id, item.job.status.value) if isinstance(item, JobChange) else ("lost", "")
        for item in items
    ]


async def test_replay_gives_each_job_once_at_its_latest_id() -> None:
    """Resuming after an id gives each job changed since once, ids increasing, latest state."""
    changes = JobChanges()
    a, b = _record("a"), _record("b")
    changes.publish(a)
    seen = changes.last_event_id
    changes.publish(b)
    a.apply(JobEvent.START)
    changes.publish(a)
    b.apply(JobEvent.START)
    b.apply(JobEvent.COMPLETE)
    changes.publish(b)

    items = await _drain(changes.open_feed(after=seen))

    assert _summary(items) == [("a", "running"), ("b", "completed")]
    ids = [item.event_id for item in items]
    assert ids == sorted(ids)
    assert ids[-1] == changes.last_event_id


async def test_resume_at_the_newest_id_gives_nothing_and_at_the_oldest_everything() -> None:
    """The log's edges: after its last id nothing is missed; before its first, all of it."""
    changes = JobChanges(replay=3)
    records = [_record(name) for name in "abcd"]
    for record in records:
        changes.publish(record)
    first_kept = changes.last_event_id - 2

    newest = await _drain(changes.open_feed(after=changes.last_event_id))
    oldest = await _drain(changes.open_feed(after=first_kept - 1))
    too_old = await _drain(changes.open_feed(after=first_kept - 2))

    assert newest == []
    assert _summary(oldest) == [("b", "pending"), ("c", "pending"), ("d", "pending")]
    # Only the reset: the jobs' states would carry ids older than it.
    assert too_old == [ChangesLost(changes.last_event_id)]


async def test_an_id_never_issued_gets_a_reset_at_the_latest_id_then_later_ids() -> None:
    """An ``after`` greater than any id issued (garbage, or a run whose clock was
    ahead) gets a ChangesLost at the latest id, lower than ``after``: the ids are
    not moved past a client's, and the changes that follow are greater than the
    reset's."""
    changes = JobChanges()
    a = _record("a")
    changes.publish(a)
    latest = changes.last_event_id
    feed = changes.open_feed(after=latest + 10**9)
    a.apply(JobEvent.START)
    changes.publish(a)

    items = await _drain(feed)

    assert items[0] == ChangesLost(latest)
    assert _summary(items[1:]) == [("a", "running")]
    assert [item.event_id for item in items] == [latest, latest + 1]


async def test_named_feed_resumes_only_its_own_jobs() -> None:
    """A feed naming jobs replays their changes only, and never reports ChangesLost."""
    changes = JobChanges(replay=2)
    a, b = _record("a"), _record("b")
    changes.publish(a)
    seen = changes.last_event_id
    changes.publish(b)
    a.apply(JobEvent.START)
    changes.publish(a)

    resumed = await _drain(changes.open_feed(after=seen, job_ids=["a"]))
    for _ in range(3):
        changes.publish(b)  # pushes a's changes out of the log
    too_old = await _drain(changes.open_feed(after=seen, job_ids=["a"]))

    assert _summary(resumed) == [("a", "running")]
    assert _summary(too_old) == [("a", "running")]  # its state, not a reset


async def test_named_feed_never_resends_a_state_at_or_before_its_after() -> None:
    """A named feed whose ``after`` left the log sends only states newer than ``after``."""
    changes = JobChanges(replay=2)
    a, b, c = _record("a"), _record("b"), _record("c")
    changes.publish(a)
    changes.publish(b)
    a.apply(JobEvent.START)
    changes.publish(a)
    seen = changes.last_event_id  # the follower saw a running
    c.apply(JobEvent.START)
    changes.publish(c)
    for _ in range(2):
        changes.publish(b)  # pushes everything up to ``seen`` out of the log

    feed = changes.open_feed(after=seen, job_ids=["a", "b", "c"])
    c.apply(JobEvent.COMPLETE)
    changes.publish(c)
    items = await _drain(feed)

    # a's latest state is the one the follower saw: not sent again.
    assert _summary(items) == [("b", "pending"), ("c", "completed")]
    ids = [item.event_id for item in items if isinstance(item, JobChange)]
    assert all(event_id > seen for event_id in ids)
    assert ids == sorted(ids)


async def test_named_feed_resumed_past_the_log_gets_a_reset_if_a_job_is_gone() -> None:
    """A named feed whose ``after`` left the log, naming a job dropped since (its end
    is in no log any more), starts with one ChangesLost, so that its follower fetches
    the job and learns it is gone, rather than waiting for it for ever. The changes
    after it still come. Resumed from the log, and on an ``until_terminal`` feed
    (which ends for an unknown job), no reset."""
    changes = JobChanges(replay=2)
    a, b = _record("a"), _record("b")
    changes.publish(a)
    changes.publish(b)
    seen = changes.last_event_id
    a.apply(JobEvent.START)
    a.apply(JobEvent.COMPLETE)
    changes.publish(a)
    in_log = await _drain(changes.open_feed(after=seen, job_ids=["a", "b"]))
    changes.forget("a")  # its owner dropped it
    for _ in range(2):
        changes.publish(b)  # pushes a's end out of the log

    feed = changes.open_feed(after=seen, job_ids=["a", "b"])
    b.apply(JobEvent.START)
    changes.publish(b)
    items = await _drain(feed)
    until_terminal = changes.open_feed(after=seen, job_ids=["a"], until_terminal=True)

    assert _summary(in_log) == [("a", "completed")]
    assert _summary(items) == [("lost", ""), ("b", "running")]
    assert items[0] == ChangesLost(changes.last_event_id - 1)
    assert until_terminal.ended


async def test_named_feed_resumed_from_the_log_gets_a_reset_for_a_job_it_does_not_tell() -> None:
    """Resumed from an id the log still holds (an EventSource's reconnect after a
    reset), a feed naming a job this queue does not know, of which the log holds
    nothing, starts with one ChangesLost rather than a silence that never ends; a
    dropped job whose end the log still holds gets that end instead, or nothing
    if the follower saw it already."""
    changes = JobChanges()
    a, b = _record("a"), _record("b")
    changes.publish(a)
    changes.publish(b)
    seen = changes.last_event_id
    a.apply(JobEvent.START)
    a.apply(JobEvent.COMPLETE)
    changes.publish(a)
    changes.forget("a")  # its owner dropped it; its end is still in the log

    end_seen = changes.last_event_id  # a follower that saw a's end, then went away

    never = changes.open_feed(after=seen, job_ids=["never-submitted", "b"])
    dropped = changes.open_feed(after=seen, job_ids=["a", "b"])
    seen_dropped = changes.open_feed(after=end_seen, job_ids=["a", "b"])
    b.apply(JobEvent.START)
    changes.publish(b)
    never_items = await _drain(never)
    dropped_items = await _drain(dropped)
    seen_items = await _drain(seen_dropped)

    assert _summary(never_items) == [("lost", ""), ("b", "running")]
    assert never_items[0] == ChangesLost(changes.last_event_id - 1)
    assert _summary(dropped_items) == [("a", "completed"), ("b", "running")]
    assert _summary(seen_items) == [("b", "running")]  # a's end seen: nothing to reset


async def test_a_feed_without_after_naming_an_unknown_job_gets_a_reset() -> None:
    """With no ``after`` either, a feed naming a job this queue does not know
    (never submitted, or dropped) starts with one ChangesLost, so that its
    follower fetches the job and learns it is gone, instead of a silence
    that never ends; later changes of the jobs it names still come. An
    ``until_terminal`` feed ends for it instead; all known: no reset."""
    changes = JobChanges()
    b, ended = _record("b"), _record("ended")
    changes.publish(b)
    ended.apply(JobEvent.START)
    ended.apply(JobEvent.COMPLETE)
    changes.publish(ended)

    feed = changes.open_feed(job_ids=["gone", "b", "ended"])
    b.apply(JobEvent.START)
    changes.publish(b)
    items = await _drain(feed)
    known = await _drain(changes.open_feed(job_ids=["b"]))
    until_terminal = changes.open_feed(job_ids=["gone"], until_terminal=True)

    assert _summary(items) == [("lost", ""), ("b", "running")]
    assert items[0] == ChangesLost(changes.last_event_id - 1)
    assert _summary(known) == [("b", "running")]
    assert until_terminal.ended


async def test_a_named_feed_after_an_id_never_issued_gets_a_reset_for_an_unknown_job() -> None:
    """An ``after`` this run never issued (a run whose clock was ahead) counts
    as none for a named feed: one naming a job this queue does not know still
    starts with a ChangesLost, not a silence that never ends, and the known
    job's state follows it."""
    changes = JobChanges()
    b = _record("b")
    changes.publish(b)
    latest = changes.last_event_id

    feed = changes.open_feed(after=latest + 10**9, job_ids=["gone", "b"])
    b.apply(JobEvent.START)
    changes.publish(b)
    items = await _drain(feed)

    assert items[0] == ChangesLost(latest)
    assert _summary(items[1:]) == [("b", "running")]


async def test_a_feed_naming_known_jobs_after_an_id_never_issued_starts_with_their_state() -> None:
    """Naming only jobs this queue knows, an ``after`` this run never issued
    (a run whose clock was ahead) still counts as none: the feed starts with
    each job's current state, not with nothing (whose follower would wait
    for a change that may never come)."""
    changes = JobChanges()
    b = _record("b")
    changes.publish(b)

    feed = changes.open_feed(after=changes.last_event_id + 10**9, job_ids=["b"])
    items = await _drain(feed)

    assert _summary(items) == [("b", "pending")]


@pytest.mark.parametrize(
    "arguments",
    [{"job_ids": "scan-1"}, {"job_types": "scan"}, {"limit": 0}, {"limit": True}],
    ids=["job-ids-str", "job-types-str", "limit-0", "limit-bool"],
)
def test_a_feed_is_refused_arguments_that_would_follow_nothing(arguments: dict[str, Any]) -> None:
    """A str where a collection goes (its letters: nothing would match) is a
    TypeError; a limit below 1 (every change a reset) a ValueError."""
    changes = JobChanges()
    error = TypeError if "limit" not in arguments else ValueError

    with pytest.raises(error):
        changes.open_feed(**arguments)


async def test_type_filter_applies_to_replay_and_to_new_changes() -> None:
    """job_types keeps other types out of the start and of what follows."""
    changes = JobChanges()
    changes.publish(_record("scan-1", "scan"))
    changes.publish(_record("other-1", "other"))

    feed = changes.open_feed(job_types=["scan"])
    changes.publish(_record("other-2", "other"))
    changes.publish(_record("scan-2", "scan"))

    assert _summary(await _drain(feed)) == [("scan-1", "pending"), ("scan-2", "pending")]


async def test_two_feeds_on_one_job_are_independent() -> None:
    """Closing one of two feeds naming a job leaves the other one fed (and the closed
    one ends at once)."""
    changes = JobChanges()
    a = _record("a")
    changes.publish(a)
    created = changes.last_event_id
    first = changes.open_feed(job_ids=["a"])
    second = changes.open_feed(job_ids=["a"])
    changes.close_feed(first)
    a.apply(JobEvent.START)
    changes.publish(a)

    from_second = await _drain(second)
    changes.close_feed(second)
    changes.publish(a)  # nobody follows "a" any more
    from_first = await _drain(first)

    assert _summary(from_second) == [("a", "running")]
    assert [item.event_id for item in from_second] == [created + 1]
    assert from_first == []  # what it held is dropped at its close, and nothing comes after


async def test_a_closed_feed_takes_no_more_changes() -> None:
    """A feed closed (as an event stream is when the service begins to stop)
    ends after what it held then, however fast its jobs change meanwhile:
    a reader slower than a job's progress would otherwise never see it end."""
    changes = JobChanges()
    a = _record("a")
    changes.publish(a)
    created = changes.last_event_id
    feed = changes.open_feed()  # still registered with the queue's changes
    feed.close()
    a.apply(JobEvent.START)
    changes.publish(a)
    for fraction in (0.25, 0.5):
        a.progress = fraction
        changes.publish(a)

    items = [item async for item in feed]

    assert [item.event_id for item in items] == [created]


async def test_a_closed_feed_hands_out_each_job_as_it_was_at_its_id() -> None:
    """What a feed holds when it is closed is handed out in the state its id names:
    the jobs' later changes (which a closed feed does not take, so their ids never
    reach its reader) do not show under the older id."""
    changes = JobChanges()
    a, b = _record("a"), _record("b")
    changes.publish(a)
    feed = changes.open_feed()
    a.apply(JobEvent.START)
    a.progress = 0.25
    changes.publish(a)
    changes.publish(b)
    held = {"a": changes.last_event_id - 1, "b": changes.last_event_id}
    feed.close()
    a.progress = 0.75
    changes.publish(a)
    a.apply(JobEvent.COMPLETE)
    changes.publish(a)
    b.apply(JobEvent.CANCEL)
    changes.publish(b)

    items = [item async for item in feed]

    assert [
        (item.event_id, item.job.job_id, item.job.status.value, item.job.progress)
        for item in items
        if isinstance(item, JobChange)
    ] == [(held["a"], "a", "running", 0.25), (held["b"], "b", "pending", None)]
    assert len(items) == 2


async def test_feed_opened_after_close_ends_after_its_start() -> None:
    """Once the queue has stopped, a new feed hands out the current states, then ends."""
    changes = JobChanges()
    a = _record("a")
    changes.publish(a)
    changes.close()

    feed = changes.open_feed()
    items = [item async for item in feed]

    assert _summary(items) == [("a", "pending")]


async def test_waiting_follower_is_woken_by_a_change() -> None:
    """A follower blocked on an empty feed gets the next change."""
    changes = JobChanges()
    feed = changes.open_feed()
    got: list[FeedItem] = []

    async def follow() -> None:
        got.append(await feed.__anext__())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(follow)
            await anyio.wait_all_tasks_blocked()
            changes.publish(_record("a"))

    assert _summary(got) == [("a", "pending")]
    assert got[0].event_id == changes.last_event_id


async def test_until_terminal_waits_for_a_named_job_then_ends() -> None:
    """until_terminal: the named job's changes up to its end, then the end of the feed."""
    changes = JobChanges()
    a = _record("a")
    changes.publish(a)
    feed = changes.open_feed(job_ids=["a"], until_terminal=True)
    got: list[FeedItem] = []

    async def follow() -> None:
        got.extend([item async for item in feed])

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(follow)
            await anyio.wait_all_tasks_blocked()
            a.apply(JobEvent.START)
            changes.publish(a)
            await anyio.wait_all_tasks_blocked()
            a.apply(JobEvent.CANCEL)
            changes.publish(a)

    assert _summary(got) == [("a", "pending"), ("a", "running"), ("a", "cancelled")]
    assert a.status is JobStatus.CANCELLED


async def test_a_second_reader_of_one_feed_is_refused() -> None:
    """One reader at a time, as a ``watch()`` stream: a second task reading a
    feed another waits on gets BusyResourceError rather than silently taking
    its changes; once the first is cancelled, the feed may be read again."""
    changes = JobChanges()
    feed = changes.open_feed()

    async def first_reader() -> None:
        await feed.__anext__()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(first_reader)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(anyio.BusyResourceError):
                await feed.__anext__()
            group.cancel_scope.cancel()
        changes.publish(_record("a"))
        again = await feed.__anext__()

    assert _summary([again]) == [("a", "pending")]


async def test_until_terminal_ends_for_a_named_job_its_type_filter_leaves_out() -> None:
    """A named job of a type the feed leaves out will never be handed out:
    it is settled at once, so an until_terminal feed does not wait for it."""
    changes = JobChanges()
    changes.publish(_record("a", "other"))
    changes.publish(_record("b", "t"))
    feed = changes.open_feed(job_ids=["a", "b"], job_types=["t"], until_terminal=True)
    b = _record("b", "t")
    b.apply(JobEvent.CANCEL)

    with anyio.fail_after(5):
        first = await feed.__anext__()
        changes.publish(b)
        rest = [item async for item in feed]

    assert _summary([first, *rest]) == [("b", "pending"), ("b", "cancelled")]


async def test_two_readers_that_start_while_a_change_is_pending_do_not_both_wait() -> None:
    """Both get past the first change's checkpoint; the one that finds nothing
    left to read while the other waits is refused, rather than taking over
    the other's wake-up (which would then wait for ever)."""
    changes = JobChanges()
    feed = changes.open_feed()
    changes.publish(_record("x"))
    got: dict[str, list[str]] = {"A": [], "B": []}
    refused: list[str] = []

    async def reader(name: str) -> None:
        try:
            async for item in feed:
                assert isinstance(item, JobChange)
                got[name].append(item.job.job_id)
        except anyio.BusyResourceError:
            refused.append(name)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(reader, "A")
            group.start_soon(reader, "B")
            await anyio.wait_all_tasks_blocked()
            changes.publish(_record("y"))
            await anyio.wait_all_tasks_blocked()
            feed.close()

    assert len(refused) == 1
    [reading] = {"A", "B"} - set(refused)
    assert got[reading][-1] == "y"  # the reader left waiting was woken
    assert sorted(got["A"] + got["B"]) == ["x", "y"]


async def test_a_feed_past_its_limit_loses_its_changes_and_one_without_keeps_them() -> None:
    """Past ``limit`` jobs pending, a feed drops them for one ChangesLost; with
    no limit (the metrics' feed, which takes all it holds each time it
    wakes) it keeps every job's latest change."""
    changes = JobChanges()
    limited, unlimited = changes.open_feed(limit=3), changes.open_feed(limit=None)
    for name in "abcde":
        changes.publish(_record(name))

    assert _summary(await _drain(limited)) == [("lost", ""), ("e", "pending")]
    assert _summary(await _drain(unlimited)) == [(name, "pending") for name in "abcde"]


async def test_a_feed_starts_with_every_job_not_ended_even_past_its_limit() -> None:
    """A new feed starts with the state of every job not ended yet, however
    many (more than ``limit`` with a large queue), not with a ChangesLost and
    the last few, and keeps room for ``limit`` jobs' changes beside them;
    past that, it loses them as before."""
    changes = JobChanges()
    for name in "abcde":
        changes.publish(_record(name))

    feed = changes.open_feed(limit=3)
    for name in "fgh":  # the limit's room, beside the five it starts with
        changes.publish(_record(name))
    started = [feed.receive_nowait() for _ in range(8)]
    for name in "ijklmnopqr":  # q is the ninth pending: all are lost, then r
        changes.publish(_record(name))

    assert _summary(started) == [(name, "pending") for name in "abcdefgh"]
    assert _summary(await _drain(feed)) == [("lost", ""), ("r", "pending")]


async def test_receive_nowait_hands_out_what_is_there_and_never_waits() -> None:
    """WouldBlock while nothing is pending, each change in turn once there,
    EndOfStream once the feed is closed and emptied."""
    changes = JobChanges()
    feed = changes.open_feed()

    with pytest.raises(anyio.WouldBlock):
        feed.receive_nowait()
    changes.publish(_record("a"))
    changes.publish(_record("b"))
    first, second = feed.receive_nowait(), feed.receive_nowait()
    with pytest.raises(anyio.WouldBlock):
        feed.receive_nowait()
    feed.close()

    assert _summary([first, second]) == [("a", "pending"), ("b", "pending")]
    with pytest.raises(anyio.EndOfStream):
        feed.receive_nowait()
