"""Reads of the store while its writes wait for SQLite's write lock.

In WAL mode a read needs no lock: it reads the last committed snapshot. So
while another process holds the write lock and a write of the store waits on
its busy timeout, reads of the same store still answer at once.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import threading
import time
from contextlib import closing
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import pytest

from stoat_ferret.library import (
    StoreBusy,
    StoreError,
    VideoFilter,
    VideoLibrary,
    VideoStore,
    _library,
    _storefile,
)
from stoat_ferret.library._library import READ_THREADS
from tests.library.support import record

if TYPE_CHECKING:
    from pathlib import Path

    from stoat_ferret.library import Video

# Only a store that makes reads wait behind its writes ever waits this long;
# the test then releases the lock and fails on the order of the two calls.
HANG_GUARD = 10


@pytest.mark.anyio
async def test_a_read_does_not_wait_for_a_write_waiting_on_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connection holds BEGIN IMMEDIATE; the store's write is in its busy
    wait (seen by the statement trace of its connection); a list and a get
    complete meanwhile and see the last commit only; then the write lands."""
    # The write waits until the test releases the lock, however slow the machine.
    monkeypatch.setattr(_storefile, "BUSY_TIMEOUT_MS", 600_000)
    path = tmp_path / "videos.sqlite"
    store = VideoStore.open(path)
    writer = store._writer
    assert writer is not None
    order: list[str] = []
    seen: list[object] = []
    began = anyio.Event()
    read = anyio.Event()

    def traced(statement: str) -> None:
        if statement == "BEGIN IMMEDIATE":  # the write's busy wait comes next
            anyio.from_thread.run_sync(began.set)

    async def write() -> None:
        await library.upsert([record("/m/b.mp4")])
        order.append("write")

    async def read_meanwhile() -> None:
        listed, total = await library.list_videos(10, 0)
        video = await library.get_video(listed[0].id)
        order.append("read")
        seen.extend([total, video])
        read.set()

    with anyio.fail_after(HANG_GUARD * 3):
        async with VideoLibrary(store) as library:
            await library.upsert([record("/m/a.mp4")])
            writer.set_trace_callback(traced)
            with closing(sqlite3.connect(path, isolation_level=None)) as other:
                other.execute("BEGIN IMMEDIATE")  # another process's write lock
                try:
                    async with anyio.create_task_group() as group:
                        group.start_soon(write)
                        await began.wait()
                        group.start_soon(read_meanwhile)
                        with anyio.move_on_after(HANG_GUARD):
                            await read.wait()
                        other.execute("ROLLBACK")
                finally:
                    if other.in_transaction:
                        other.execute("ROLLBACK")
            writer.set_trace_callback(None)
            after, _ = await library.list_videos(10, 0)

    assert order == ["read", "write"], "the read waited for the store's waiting write"
    assert seen[0] == 1
    assert seen[1] is not None
    assert [video.path for video in after] == ["/m/a.mp4", "/m/b.mp4"]


def test_a_list_reads_one_snapshot(tmp_path: Path) -> None:
    """A commit between a list's count and its page cannot make them disagree:
    the read is one transaction on its connection."""
    store = VideoStore.open(tmp_path / "videos.sqlite")
    reader = store._reader
    assert reader is not None
    selects: list[str] = []

    def traced(statement: str) -> None:
        # The page's query begins after the count's, which took the snapshot.
        if statement.startswith("SELECT"):
            selects.append(statement)
            if len(selects) == 2:
                store.upsert([record("/m/b.mp4")])

    try:
        store.upsert([record("/m/a.mp4")])
        reader.set_trace_callback(traced)
        videos, total = store.list_videos(10, 0)
        reader.set_trace_callback(None)

        assert len(selects) == 2  # the count, then the page
        assert ([video.path for video in videos], total) == (["/m/a.mp4"], 1)
        assert store.list_videos(10, 0)[1] == 2
    finally:
        store.close()


@pytest.mark.parametrize("bulk", ["thumbnail_sources", "fingerprints", "mount_points"])
def test_a_jobs_long_read_does_not_hold_up_a_page_of_videos(tmp_path: Path, bulk: str) -> None:
    """A job's read of a whole scope (seconds long in a library of a million) runs
    on a reader of its own: while one is in the middle of its query, a page of
    videos with a short deadline is answered, not StoreBusy."""
    store = VideoStore.open(tmp_path / "videos.sqlite")
    in_query = threading.Event()
    page_done = threading.Event()

    def held(statement: str) -> None:
        # The job's read (in its own thread) holds its reader from here; the
        # page's statements (in this one) go on.
        if statement.startswith("SELECT") and threading.current_thread() is job:
            in_query.set()
            page_done.wait(timeout=HANG_GUARD)

    readers = [store._reader, getattr(store, "_bulk_reader", None)]
    reads = {
        "thumbnail_sources": store.thumbnail_sources,
        "fingerprints": lambda: store.fingerprints("/m", recursive=True),
        "mount_points": lambda: store.mount_points("/m", recursive=True),
    }
    job = threading.Thread(target=reads[bulk])
    try:
        store.upsert([record("/m/a.mp4")])
        for reader in readers:
            if reader is not None:
                reader.set_trace_callback(held)
        job.start()
        try:
            assert in_query.wait(timeout=HANG_GUARD)
            # Were the page waiting for the job's reader, it would end here, StoreBusy,
            # at the deadline: far off, so that a loaded machine's slow read is no failure.
            page = store.list_videos(10, 0, deadline=time.monotonic() + 10.0)
        finally:
            page_done.set()
            job.join()
        assert [video.path for video in page[0]] == ["/m/a.mp4"]
    finally:
        store.close()


@pytest.mark.anyio
async def test_reads_take_at_most_their_own_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads that cannot finish hold READ_THREADS worker threads; the reads
    beyond wait as tasks, and start as threads come free."""
    store = VideoStore.open(tmp_path / "videos.sqlite")
    lock = threading.Lock()
    entered: list[int] = []
    all_in = anyio.Event()
    release = threading.Event()

    def blocked(
        limit: int, offset: int, where: object, *, deadline: float
    ) -> tuple[list[Video], int]:
        with lock:
            entered.append(limit)
            if len(entered) == READ_THREADS:
                anyio.from_thread.run_sync(all_in.set)
        release.wait()
        return [], 0

    monkeypatch.setattr(store, "list_videos", blocked)
    with anyio.fail_after(30):
        async with VideoLibrary(store) as library, anyio.create_task_group() as group:
            for limit in range(READ_THREADS + 3):
                group.start_soon(library.list_videos, limit)
            try:
                await all_in.wait()
                await anyio.wait_all_tasks_blocked()  # the others are at the limiter
                waiting = library._reads.statistics().tasks_waiting
                assert (len(entered), waiting) == (READ_THREADS, 3)
            finally:
                release.set()

    assert sorted(entered) == list(range(READ_THREADS + 3))


@pytest.mark.parametrize("name", [":memory:", "", "file::memory:", "file:stoat.sqlite"])
def test_an_in_memory_database_or_a_uri_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Reads use a second connection, which cannot share an in-memory database;
    and the writer would read a ``file:`` name as a URI, the reader as a path."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match="needs a file path"):
        VideoStore.open(name)
    assert list(tmp_path.iterdir()) == []  # nothing created


@pytest.mark.parametrize("name", ["a?b#c%20 d.sqlite", "caf\udce9.sqlite"])
def test_odd_file_names_are_read_through_the_same_file(tmp_path: Path, name: str) -> None:
    """The reading connection opens the file by URI: names with URI characters,
    and names that are not UTF-8, still reach the file the writes went to."""
    store = VideoStore.open(tmp_path / name)
    try:
        store.upsert([record("/m/a.mp4")])
        assert store.list_videos(10, 0)[1] == 1
    finally:
        store.close()
    # Beside it only its lock file (kept: _lock.py).
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, name + ".lock"]


def test_a_page_not_read_by_its_deadline_is_store_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list with a deadline: one that passes while the query runs interrupts it, one
    that passes while another read holds the reader ends the wait; each is StoreBusy
    (a StoreError), and the reader works for the next read."""
    store = VideoStore.open(tmp_path / "videos.sqlite")
    monotonic = time.monotonic
    try:
        store.upsert([record(f"/m/clip{index}.mp4") for index in range(300)])
        # The clock as the store reads it: the deadline passes once the query runs.
        readings = iter([0.0, 0.0])
        monkeypatch.setattr(_storefile, "monotonic", lambda: next(readings, 2.0))
        with pytest.raises(StoreBusy, match="the read took too long"):
            store.list_videos(10, 0, VideoFilter(q="clip"), deadline=1.0)
        monkeypatch.setattr(_storefile, "monotonic", monotonic)
        blocked: list[BaseException] = []

        def other() -> None:
            try:
                store.list_videos(10, 0, deadline=time.monotonic())
            except BaseException as exc:
                blocked.append(exc)

        with store._reading():  # another read holds the reader: that one gives up
            thread = threading.Thread(target=other)
            thread.start()
            thread.join()
        page, total = store.list_videos(10, 0, deadline=time.monotonic() + 60)
    finally:
        store.close()

    assert [type(exc) for exc in blocked] == [StoreBusy]
    assert "busy with other reads" in str(blocked[0])
    assert issubclass(StoreBusy, StoreError)
    assert (len(page), total) == (10, 300)


@pytest.mark.anyio
async def test_a_page_of_the_library_has_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VideoLibrary.list_videos gives the store a deadline LIST_SECONDS away, taken
    before it waits for a thread: past it, StoreBusy."""
    store = VideoStore.open(tmp_path / "videos.sqlite")
    store.upsert([record("/m/a.mp4")])
    monkeypatch.setattr(_library, "LIST_SECONDS", -1.0)
    with anyio.fail_after(30):
        async with VideoLibrary(store) as library:
            with pytest.raises(StoreBusy):
                await library.list_videos(10, 0)
            monkeypatch.setattr(_library, "LIST_SECONDS", 60.0)
            page, total = await library.list_videos(10, 0)

    assert total == 1
    assert [video.path for video in page] == ["/m/a.mp4"]


@pytest.mark.anyio
async def test_a_video_looked_up_for_a_request_has_a_deadline_and_for_a_job_none(
    tmp_path: Path,
) -> None:
    """VideoLibrary.get_video with ``busy_after`` (a request's) gives up with
    StoreBusy once that has passed; without it (a job's) it waits for the reader."""
    store = VideoStore.open(tmp_path / "videos.sqlite")
    store.upsert([record("/m/a.mp4")])
    with anyio.fail_after(30):
        async with VideoLibrary(store) as library:
            with pytest.raises(StoreBusy):
                await library.get_video(1, busy_after=-1.0)
            found = await library.get_video(1)

    assert found is not None
    assert found.path == "/m/a.mp4"


def test_a_thousand_interrupted_pages_leave_the_reader_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite counts its steps across a cached statement's runs: with the deadline's
    handler still set at the end of the read, about every 330th ROLLBACK was itself
    interrupted, leaving the one reader in its transaction and every later read
    refused. The handler covers the body's queries only."""
    store = VideoStore.open(tmp_path / "videos.sqlite")
    try:
        store.upsert([record(f"/m/clip{index}.mp4") for index in range(300)])
        clock = iter(itertools.cycle([0.0, 0.0, 2.0]))  # passes once the query runs
        monkeypatch.setattr(_storefile, "monotonic", lambda: next(clock))
        busy = 0
        for _ in range(1_000):
            with contextlib.suppress(StoreBusy):
                store.list_videos(10, 0, VideoFilter(q="clip"), deadline=1.0)
                continue
            busy += 1
        monkeypatch.undo()
        in_transaction = store._reader is not None and store._reader.in_transaction
        video = store.get_video(1)
    finally:
        store.close()

    assert busy == 1_000
    assert not in_transaction
    assert video is not None
