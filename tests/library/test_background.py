"""BackgroundThreads: blocking work off the event loop, at background CPU priority."""

from __future__ import annotations

import os
import select
import threading

import anyio
import anyio.to_thread
import pytest

from stoat_ferret.library import BackgroundThreads, Stop, ThreadPriority, lower_priority
from tests.library.support import thread_reached

pytestmark = pytest.mark.anyio

TIMEOUT = 20

needs_sched_idle = pytest.mark.skipif(
    not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is a Linux scheduling policy"
)


def _policy(_: Stop) -> int:
    return os.sched_getscheduler(0)


async def test_run_sync_returns_what_the_function_returns() -> None:
    """The function gets an unset stop event; its result comes back to the caller."""
    threads = BackgroundThreads(1, ThreadPriority.NORMAL, name="test")

    def work(stop: Stop) -> tuple[bool, str]:
        return stop.is_set(), threading.current_thread().name

    with anyio.fail_after(TIMEOUT):
        stopped, name = await threads.run_sync(work)

    assert stopped is False
    assert name.startswith("test")
    assert name != threading.current_thread().name


async def test_run_sync_reraises_what_the_function_raises() -> None:
    """An exception in the thread is raised again in the caller, unchanged."""
    threads = BackgroundThreads(1, ThreadPriority.NORMAL, name="test")
    error = LookupError("no such clip")

    def work(_: Stop) -> None:
        raise error

    with anyio.fail_after(TIMEOUT), pytest.raises(LookupError) as caught:
        await threads.run_sync(work)

    assert caught.value is error


async def test_threads_are_reused() -> None:
    """Many calls share at most ``threads`` threads: no thread is started per call."""
    threads = BackgroundThreads(2, ThreadPriority.NORMAL, name="test")
    seen: list[threading.Thread] = []  # holding them keeps their idents from being reused

    def current(_: Stop) -> threading.Thread:
        return threading.current_thread()

    async def call() -> None:
        seen.append(await threads.run_sync(current))

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as group:
            for _ in range(12):
                group.start_soon(call)

    assert len(seen) == 12
    assert 1 <= len(set(seen)) <= 2
    assert threading.current_thread() not in seen


async def test_a_cancelled_caller_starts_nothing() -> None:
    """A caller already cancelled when it calls run_sync never reaches a thread."""
    threads = BackgroundThreads(1, ThreadPriority.NORMAL, name="test")
    calls: list[Stop] = []

    with anyio.CancelScope() as scope:
        scope.cancel()
        await threads.run_sync(calls.append)

    assert scope.cancelled_caught
    assert calls == []


async def test_an_error_raised_after_cancellation_is_dropped() -> None:
    """The cancellation wins over what the stopped function raises."""
    threads = BackgroundThreads(1, ThreadPriority.NORMAL, name="test")
    started = threading.Event()

    def work(stop: Stop) -> None:
        started.set()
        stop.wait(TIMEOUT)
        raise LookupError("raised while stopping")

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as group:
            group.start_soon(threads.run_sync, work)
            await thread_reached(started)
            group.cancel_scope.cancel()

    assert group.cancel_scope.cancelled_caught


async def test_cancellation_sets_stop_and_waits_for_the_function() -> None:
    """A cancelled caller sets stop, and returns only once the function has returned."""
    threads = BackgroundThreads(1, ThreadPriority.NORMAL, name="test")
    started = threading.Event()
    returned = threading.Event()
    results: list[str] = []

    def work(stop: Stop) -> str:
        started.set()
        if stop.wait(TIMEOUT):  # False only if the caller never sets it
            returned.set()
        return "dropped"

    async def call() -> None:
        results.append(await threads.run_sync(work))

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await thread_reached(started)
            group.cancel_scope.cancel()

    assert returned.is_set()
    assert results == []


@needs_sched_idle
async def test_idle_threads_run_under_sched_idle() -> None:
    """IDLE threads run under SCHED_IDLE; the caller's thread keeps its own policy."""
    threads = BackgroundThreads(1, ThreadPriority.IDLE, name="test")
    before = os.sched_getscheduler(0)

    with anyio.fail_after(TIMEOUT):
        policy = await threads.run_sync(_policy)

    assert policy == os.SCHED_IDLE
    assert os.sched_getscheduler(0) == before != os.SCHED_IDLE


@needs_sched_idle
async def test_normal_threads_keep_the_callers_policy() -> None:
    """NORMAL threads run under the policy of the thread that started them."""
    threads = BackgroundThreads(1, ThreadPriority.NORMAL, name="test")

    with anyio.fail_after(TIMEOUT):
        policy = await threads.run_sync(_policy)

    assert policy == os.sched_getscheduler(0) != os.SCHED_IDLE


@needs_sched_idle
def test_lower_priority_moves_only_the_calling_thread() -> None:
    """lower_priority() puts its own thread under SCHED_IDLE and no other."""
    seen: list[tuple[bool, int]] = []

    def lower() -> None:
        seen.append((lower_priority(), os.sched_getscheduler(0)))

    thread = threading.Thread(target=lower)
    thread.start()
    thread.join()

    assert seen == [(True, os.SCHED_IDLE)]
    assert os.sched_getscheduler(0) != os.SCHED_IDLE


def test_stop_wakes_a_wait_on_its_descriptor_set_before_or_after() -> None:
    early = Stop()
    early.set()
    late = Stop()
    fd = late.fileno()
    assert select.select([fd], [], [], 0)[0] == []
    late.set()

    for stop in (early, late):
        assert select.select([stop.fileno()], [], [], 0)[0] == [stop.fileno()]
        assert stop.wait(0)
        stop.close()


async def test_waiting_for_the_threads_leaves_anyios_default_limiter_free() -> None:
    """While every thread runs, a plain ``to_thread`` call still gets a token:
    the callers wait for their threads under a limiter of their own, not under
    anyio's default one (shrunk here to one token)."""
    default = anyio.to_thread.current_default_thread_limiter()
    tokens = default.total_tokens
    default.total_tokens = 1
    threads = BackgroundThreads(2, ThreadPriority.NORMAL, name="test")
    started = threading.Barrier(3)
    release = threading.Event()

    def work(_: Stop) -> None:
        started.wait(TIMEOUT)
        release.wait(TIMEOUT)

    try:
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as group:
                group.start_soon(threads.run_sync, work)
                group.start_soon(threads.run_sync, work)
                await anyio.to_thread.run_sync(started.wait, TIMEOUT)  # both threads are busy
                await anyio.to_thread.run_sync(lambda: None)
                release.set()
    finally:
        release.set()
        default.total_tokens = tokens
