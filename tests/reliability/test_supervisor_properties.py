"""The supervisor as a state machine, checked by properties on generated programs.

Hypothesis generates a *program*: a list of operations (register a job type,
with or without a ``max_running`` limit, submit with or without timeout and
key, cancel, cancel one job from two tasks at once, let time pass, follow a
job slowly, close in the middle).
Each example interprets its program inside one ``anyio.run``, on both
backends. On trio the clock is ``MockClock(autojump_threshold=0)``, so hours
of job time cost microseconds. asyncio has no mock clock, so there the same
program runs with a time model that needs no time to pass: every job takes
no time, nothing times out (timeouts are infinite), waits and the grace
period are zero, and only a ``hang`` job stays running, until it is cancelled.
No real thread is involved. After every operation the test waits until every
task is blocked and checks:

* every status a poller or a follower sees moves along the transition table
  (:func:`stoat_ferret.jobs._state.transitions`), and a terminal one never
  changes;
* ``pending <= max_pending``, ``running <= max_workers``, and no more jobs
  of a type run at once than its ``max_running`` (by the statuses, and as
  the handlers count themselves); while the supervisor accepts
  work no job waits while a worker is free, unless the job of its key runs
  or its type runs as many as its limit (never stuck);
* :meth:`JobSupervisor.statistics` equals the counts of the statuses observed;
* each terminal status is one the program allows (a job of 2 s with a 1.5 s
  timeout can only time out or be cancelled, a cancel that returned True
  means ``cancelled``, ...);
* a job is terminal once ``start + min(duration, timeout)`` has passed;
* handlers start in submit order (the workers share one FIFO of jobs), but
  that a keyed job waits for the job of its key that runs, and a job of a
  type at its limit for one of its type to end (later jobs pass them): jobs
  of one key run one at a time, and no job without a key of a limited type
  begins before one of its type submitted earlier (two may begin at one
  instant, in either order);
* ``started_at`` is None exactly for the jobs whose handler never started;
* ``wait`` and ``cancel`` calls given up by their callers change nothing but
  what a cancel does (that they keep nothing behind is shown by live-object
  counts in tests/jobs: ``test_waits_given_up_leave_nothing_on_the_job`` and
  ``test_cancels_given_up_leave_nothing_on_the_job``).

The program ends with ``aclose()`` or by cancelling the task that runs
``run()``; then every accepted job is terminal, ``run()`` has returned, and
every follower has seen the job's terminal status as its last update.

Profiles: ``STOATTEST_RELIABILITY_PROFILE=quick`` (the default, for ``make test``:
100 examples on each backend, 200 programs in all, derandomized so that every
run checks the same programs) or ``soak`` (2,500 on each backend, 5,000 in all,
random).
"""

from __future__ import annotations

import collections
import itertools
import math
import os
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import anyio
import attrs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from loguru import logger
from trio.testing import MockClock

from stoat_ferret.jobs import (
    JobContext,
    JobNotFound,
    JobResult,
    JobStatus,
    JobSupervisor,
    QueueFull,
    SupervisorClosed,
    UnknownJobType,
)
from stoat_ferret.jobs._state import transitions

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus

settings.register_profile(
    "reliability-quick",
    max_examples=100,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "reliability-soak",
    max_examples=2_500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE: Final = settings.get_profile(
    "reliability-" + os.environ.get("STOATTEST_RELIABILITY_PROFILE", "quick")
)

KINDS: Final = ("complete", "fail", "hang", "progress")
DEFAULT_TIMEOUT: Final = 10.0
# Durations are whole seconds and timeouts end in .5 (or are infinite), so a
# job never finishes at the very instant its deadline passes.
DURATIONS: Final = (0.0, 1.0, 2.0, 3.0, 5.0)
TIMEOUTS: Final = (None, 0.5, 1.5, 2.5, 4.5, math.inf)
EDGES: Final = {(src, dst) for src, _, dst in transitions()}
# A program of mock time is short; a deadlock would jump straight to this.
PROGRAM_DEADLINE: Final = 100_000


def _reachable() -> set[tuple[JobStatus, JobStatus]]:
    """Pairs (a, b) with b reachable from a in zero or more edges."""
    pairs = {(status, status) for status in JobStatus}
    changed = True
    while changed:
        changed = False
        for a, b in list(pairs):
            for src, dst in EDGES:
                if src == b and (a, dst) not in pairs:
                    pairs.add((a, dst))
                    changed = True
    return pairs


REACHABLE: Final = _reachable()


# ------------------------------------------------------------------ operations


@attrs.frozen
class Register:
    kind: str
    timeout: float | None
    max_running: int | None = None


@attrs.frozen
class Submit:
    kind: str
    duration: float
    timeout: float | None
    key: str | None


@attrs.frozen
class Cancel:
    index: int  # into the accepted jobs, modulo their number


@attrs.frozen
class CancelTwice:
    """Two cancel() calls for one job, at once."""

    index: int


@attrs.frozen
class CancelUnknown:
    pass


@attrs.frozen
class Sleep:
    seconds: float


@attrs.frozen
class Follow:
    index: int
    slowness: float  # seconds the follower sleeps after each update


@attrs.frozen
class Close:
    pass


@attrs.frozen
class GiveUp:
    """A ``wait`` (or a ``cancel``) whose caller gives up once it is blocked."""

    index: int
    cancel: bool


Operation: TypeAlias = (
    Register | Submit | Cancel | CancelTwice | CancelUnknown | Sleep | Follow | Close | GiveUp
)

_kinds = st.sampled_from(KINDS)
_timeouts = st.sampled_from(TIMEOUTS)
_limits = st.sampled_from((None, 1, 2))  # a type's max_running
_submits = st.builds(
    Submit,
    _kinds,
    st.sampled_from(DURATIONS),
    _timeouts,
    st.one_of(st.none(), st.sampled_from(("a", "b"))),
)
_cancels = st.builds(Cancel, st.integers(0, 50))
_sleeps = st.builds(Sleep, st.sampled_from((0.0, 0.5, 1.0, 2.5, 7.0, 100.0)))
# Each kind of step with its weight: most steps submit, cancel or let time
# pass. (st.one_of would not do: it drops a strategy listed twice, so
# listing one more than once does not weigh it.)
_WEIGHTED: Final[tuple[tuple[st.SearchStrategy[Operation], int], ...]] = (
    (_submits, 6),
    (_cancels, 2),
    (_sleeps, 3),
    (st.builds(CancelTwice, st.integers(0, 50)), 1),
    (st.builds(Register, _kinds, _timeouts, _limits), 1),
    (st.builds(Follow, st.integers(0, 50), st.sampled_from((0.0, 0.25, 1.0, 3.0))), 1),
    (st.just(CancelUnknown()), 1),
    (st.builds(GiveUp, st.integers(0, 50), st.booleans()), 1),
)
OPERATIONS: Final = st.sampled_from(
    [strategy for strategy, weight in _WEIGHTED for _ in range(weight)]
).flatmap(lambda strategy: strategy)


@st.composite
def programs(draw: st.DrawFn) -> list[Operation]:
    """Most kinds registered first, then the body; sometimes a close and a few steps after."""
    program: list[Operation] = [
        Register(kind, draw(_timeouts), draw(_limits)) for kind in KINDS if draw(st.integers(0, 4))
    ]
    program += draw(st.lists(OPERATIONS, min_size=15, max_size=50))
    if draw(st.booleans()):
        program.append(Close())
        program += draw(st.lists(OPERATIONS, max_size=5))
    return program


@attrs.frozen
class Config:
    max_workers: int
    max_pending: int
    shutdown_grace: float
    hard_stop: bool  # end by cancelling run() instead of aclose()


def without_time(config: Config, program: list[Operation]) -> tuple[Config, list[Operation]]:
    """The program under asyncio's time model: no job needs time to pass.

    Every duration, wait and grace period becomes zero and every timeout
    infinite, so only a ``hang`` job stays running, until it is cancelled.
    """

    def timeless(operation: Operation) -> Operation:
        match operation:
            case Register(kind, timeout, limit):
                return Register(kind, None if timeout is None else math.inf, limit)
            case Submit(kind, _, timeout, key):
                return Submit(kind, 0.0, None if timeout is None else math.inf, key)
            case Sleep():
                return Sleep(0.0)
            case Follow(index, _):
                return Follow(index, 0.0)
        return operation

    return attrs.evolve(config, shutdown_grace=0.0), [timeless(op) for op in program]


CONFIGS: Final = st.builds(
    Config,
    st.integers(1, 3),
    st.integers(1, 8),
    st.sampled_from((0.0, 1.0, 2.5)),
    st.booleans(),
)


# ------------------------------------------------------------------ the model


@attrs.define(eq=False)
class ModelJob:
    """What the test knows about one accepted job."""

    job_id: str
    kind: str
    duration: float
    timeout: float
    key: str | None
    status: JobStatus = JobStatus.PENDING
    cancelled_by_request: bool = False
    # Set when the supervisor stopped (aclose or cancelled run) while this job was live.
    shutdown_ends: set[JobStatus] | None = None

    @property
    def natural_end(self) -> JobStatus:
        """How the job ends if nobody cancels it."""
        if self.kind == "hang" or self.duration > self.timeout:
            return JobStatus.TIMEOUT
        return JobStatus.FAILED if self.kind == "fail" else JobStatus.COMPLETED

    def allowed_ends(self) -> set[JobStatus]:
        if self.cancelled_by_request:
            return {JobStatus.CANCELLED}
        if self.shutdown_ends is not None:
            return self.shutdown_ends
        return {self.natural_end}

    def on_shutdown(self, *, started: float | None, now: float, grace: float) -> None:
        """Decide how a live job may end once the supervisor stops at ``now``.

        ``grace`` is None for a hard stop. A pending job never starts; a running
        one ends its own way if that comes before the grace ends, else cancelled.
        """
        if started is None:
            self.shutdown_ends = {JobStatus.CANCELLED}
            return
        finish = math.inf if self.kind == "hang" else started + self.duration
        own_end = min(finish, started + self.timeout)
        if own_end < now + grace:
            self.shutdown_ends = {self.natural_end}
        elif own_end > now + grace:
            self.shutdown_ends = {JobStatus.CANCELLED}
        else:  # the same instant: either may win
            self.shutdown_ends = {self.natural_end, JobStatus.CANCELLED}


SETTLE_YIELDS: Final = 20


async def settle() -> None:
    """Return once every other task is blocked: ``anyio.wait_all_tasks_blocked()``.

    On asyncio that call sleeps 0.1 s (real time) whenever it finds a task
    ready to run, and an operation of a program leaves a short chain of ready
    tasks behind it (the actor, a worker, a handler, followers). Checkpoints
    first let that chain run out, so the call usually finds every task blocked
    and returns at once. It is still the call that decides: the checkpoints
    only save time, they never make a check run early.
    """
    for _ in range(SETTLE_YIELDS):
        await anyio.lowlevel.checkpoint()
    await anyio.wait_all_tasks_blocked()


@attrs.define(eq=False)
class Follower:
    job_id: str
    seen: list[JobResult] = attrs.field(factory=list)
    done: bool = False


async def handler(ctx: JobContext) -> Any:
    """Every kind in one handler: the job type name says what to do."""
    duration: float = ctx.payload["duration"]
    ctx.payload["starts"][ctx.job_id] = anyio.current_time()  # in start order
    # Handlers of each type and of each key running now, and the most at once.
    live, peak = ctx.payload["live"], ctx.payload["peak"]
    groups = (("type", ctx.job_type), ("key", ctx.payload["key"]))
    for group in groups:
        live[group] += 1
        peak[group] = max(peak[group], live[group])
    try:
        if ctx.job_type == "hang":
            await anyio.sleep_forever()
        if ctx.job_type == "progress":
            steps = 4
            for step in range(1, steps + 1):
                await anyio.sleep(duration / steps)
                ctx.report_progress(step / steps, f"{step}/{steps}")
            return {"steps": steps}
        await anyio.sleep(duration)
        if ctx.job_type == "fail":
            raise ValueError(f"failed after {duration:g} s")
        return {"slept": duration}
    finally:  # however it ends
        ctx.payload["ends"][ctx.job_id] = anyio.current_time()
        for group in groups:
            live[group] -= 1


@attrs.define(eq=False)
class Program:
    """Interprets one generated program against a real JobSupervisor and a model."""

    config: Config
    supervisor: JobSupervisor
    default_timeout: float
    registered: dict[str, float | None] = attrs.field(factory=dict)
    limits: dict[str, int] = attrs.field(factory=dict)  # the types with a max_running
    jobs: dict[str, ModelJob] = attrs.field(factory=dict)
    order: list[str] = attrs.field(factory=list)
    followers: list[Follower] = attrs.field(factory=list)
    # job id -> clock time its handler started, and ended (returned or raised)
    starts: dict[str, float] = attrs.field(factory=dict)
    ends: dict[str, float] = attrs.field(factory=dict)
    # ("type", kind) or ("key", key) -> handlers running now, and the most at once
    live: collections.Counter[tuple[str, str | None]] = attrs.field(factory=collections.Counter)
    peak: collections.Counter[tuple[str, str | None]] = attrs.field(factory=collections.Counter)
    closed: bool = False

    def payload(self, op: Submit) -> dict[str, Any]:
        return {
            "duration": op.duration,
            "key": op.key,
            "starts": self.starts,
            "ends": self.ends,
            "live": self.live,
            "peak": self.peak,
        }

    def effective_timeout(self, kind: str, timeout: float | None) -> float:
        if timeout is not None:
            return timeout
        registered = self.registered[kind]
        return self.default_timeout if registered is None else registered

    def order_group(self, job_id: str) -> tuple[str, str | None]:
        """The jobs that start in submit order among themselves: those of
        one key; without a key, those of one limited type, and the rest."""
        job = self.jobs[job_id]
        if job.key is not None:
            return ("key", job.key)
        return ("type", job.kind if job.kind in self.limits else None)

    def live_pending(self) -> int:
        return sum(1 for job in self.jobs.values() if job.status is JobStatus.PENDING)

    async def apply(self, operation: Operation, followers: TaskGroup) -> None:
        sup = self.supervisor
        match operation:
            case Register(kind, timeout, limit):
                if kind in self.registered:
                    with pytest.raises(ValueError, match="already registered"):
                        sup.register(kind, handler, timeout=timeout, max_running=limit)
                else:
                    sup.register(kind, handler, timeout=timeout, max_running=limit)
                    self.registered[kind] = timeout
                    if limit is not None:
                        self.limits[kind] = limit
            case Submit():
                await self.submit(operation)
            case Cancel(index):
                if not self.order:
                    return
                job = self.jobs[self.order[index % len(self.order)]]
                before = job.status
                cancelled = await sup.cancel(job.job_id)
                assert cancelled is (not before.is_terminal), (before, cancelled)
                if cancelled:
                    job.cancelled_by_request = True
            case CancelTwice(index):
                if not self.order:
                    return
                job = self.jobs[self.order[index % len(self.order)]]
                before = job.status
                answers: list[bool] = []

                async def cancel() -> None:
                    answers.append(await sup.cancel(job.job_id))

                async with anyio.create_task_group() as both:
                    both.start_soon(cancel)
                    both.start_soon(cancel)
                # A pending job is cancelled by one of them (the other finds it
                # terminal); a running one by both, which wait for its end.
                assert any(answers) is (not before.is_terminal), (before, answers)
                if any(answers):
                    job.cancelled_by_request = True
            case CancelUnknown():
                with pytest.raises(JobNotFound):
                    await sup.cancel("0" * 32)
            case Sleep(seconds):
                await anyio.sleep(seconds)
            case Follow(index, slowness):
                if self.order:
                    follower = Follower(self.order[index % len(self.order)])
                    self.followers.append(follower)
                    followers.start_soon(self.follow, follower, slowness)
            case Close():
                await self.close()
            case GiveUp(index, cancel=by_cancel):
                if not self.order:
                    return
                job = self.jobs[self.order[index % len(self.order)]]
                before = job.status
                call = sup.cancel if by_cancel else sup.wait
                async with anyio.create_task_group() as impatient:
                    impatient.start_soon(call, job.job_id)
                    await settle()
                    impatient.cancel_scope.cancel()
                # A cancel takes effect even if its caller stops waiting.
                if by_cancel and not before.is_terminal:
                    job.cancelled_by_request = True

    async def submit(self, op: Submit) -> None:
        sup = self.supervisor
        if self.closed:
            with pytest.raises(SupervisorClosed):
                await sup.submit(op.kind, self.payload(op), timeout=op.timeout, key=op.key)
            return
        if op.kind not in self.registered:
            with pytest.raises(UnknownJobType):
                await sup.submit(op.kind, self.payload(op), timeout=op.timeout, key=op.key)
            return
        active = [
            job
            for job in self.jobs.values()
            if op.key is not None and job.key == op.key and job.status is JobStatus.PENDING
        ]  # a key names its job while it is pending
        if not active and self.live_pending() >= self.config.max_pending:
            with pytest.raises(QueueFull) as refused:
                await sup.submit(op.kind, self.payload(op), timeout=op.timeout, key=op.key)
            assert not isinstance(refused.value, SupervisorClosed)
            return
        job_id = await sup.submit(op.kind, self.payload(op), timeout=op.timeout, key=op.key)
        if active:
            assert job_id == active[0].job_id  # deduplicated on the key
            return
        assert job_id not in self.jobs
        self.jobs[job_id] = ModelJob(
            job_id, op.kind, op.duration, self.effective_timeout(op.kind, op.timeout), op.key
        )
        self.order.append(job_id)

    async def follow(self, follower: Follower, slowness: float) -> None:
        async with self.supervisor.watch(follower.job_id) as updates:
            async for update in updates:
                follower.seen.append(update)
                await anyio.sleep(slowness)
        follower.done = True

    async def close(self) -> None:
        self.mark_shut_down(hard=False)
        await self.supervisor.aclose()
        self.closed = True

    def mark_shut_down(self, *, hard: bool) -> None:
        now = anyio.current_time()
        grace = 0.0 if hard else self.config.shutdown_grace
        for job in self.jobs.values():
            if not job.status.is_terminal and job.shutdown_ends is None:
                started = self.starts.get(job.job_id)
                if hard:  # a hard stop ends every live job cancelled at once
                    job.shutdown_ends = {JobStatus.CANCELLED}
                else:
                    job.on_shutdown(started=started, now=now, grace=grace)

    # ------------------------------------------------------------ checks

    async def check(self) -> None:
        """The invariants, once every task is blocked (nothing can change meanwhile)."""
        await settle()
        sup = self.supervisor
        stats = sup.statistics()
        counts: dict[JobStatus, int] = defaultdict(int)
        for job_id in self.order:
            job = self.jobs[job_id]
            result = await sup.get_result(job_id)
            assert (job.status, result.status) in REACHABLE, (job.status, result.status)
            if job.status.is_terminal:
                assert result.status is job.status, "a terminal status changed"
            job.status = result.status
            counts[result.status] += 1
            check_snapshot(result)
            # started_at is set exactly for the jobs whose handler started.
            assert (result.started_at is None) is (job_id not in self.starts), (job, result)
            if result.status.is_terminal:
                assert result.status in job.allowed_ends(), (job, result)

        now = anyio.current_time()
        for job_id, start in self.starts.items():
            job = self.jobs[job_id]
            own_end = start + min(math.inf if job.kind == "hang" else job.duration, job.timeout)
            if now >= own_end:
                assert job.status.is_terminal, (job, start, now)
        # A keyed job waits for the job of its key that runs, and a job of a
        # type at its limit for one of its type to end, while later jobs
        # pass them: the jobs without a key start in submit order, those of
        # each limited type among themselves and the others among
        # themselves; so do those of each key, one at a time.
        in_order: dict[tuple[str, str | None], list[str]] = defaultdict(list)
        for job_id in self.starts:  # in start order
            in_order[self.order_group(job_id)].append(job_id)
        for group, started in in_order.items():
            members = set(started)
            submitted = [job_id for job_id in self.order if job_id in members]
            if group[0] == "type" and group[1] is not None:
                # Two slots passed on in one batch of the actor wake two
                # workers at one instant, which may begin in either order:
                # none begins before a job submitted earlier.
                times = [self.starts[job_id] for job_id in submitted]
                assert times == sorted(times), f"handlers of {group} started out of submit order"
            else:
                assert started == submitted, f"handlers of {group} started out of submit order"
        # Counted by the handlers themselves, so even jobs that take no time,
        # or a slot passed on before its handler has ended, are seen.
        for kind, limit in self.limits.items():
            most = self.peak["type", kind]
            assert most <= limit, f"{most} handlers of {kind} ran at once (limit {limit})"
        for (what, key), most in self.peak.items():
            assert what == "type" or key is None or most <= 1, f"{most} jobs of key {key} at once"
        running_keys = [
            job.key for job in self.jobs.values() if job.key and job.status is JobStatus.RUNNING
        ]
        assert len(running_keys) == len(set(running_keys)), "two jobs of one key are running"
        running_kinds = collections.Counter(
            job.kind for job in self.jobs.values() if job.status is JobStatus.RUNNING
        )
        for kind, limit in self.limits.items():
            assert running_kinds[kind] <= limit, f"more than {limit} jobs of {kind} are running"

        assert stats.pending <= self.config.max_pending
        assert stats.running <= self.config.max_workers
        assert stats.pending == counts[JobStatus.PENDING]
        assert stats.running == counts[JobStatus.RUNNING]
        assert stats.submitted == len(self.order)
        assert stats.finished == sum(n for status, n in counts.items() if status.is_terminal)
        assert stats.completed == counts[JobStatus.COMPLETED]
        assert stats.failed == counts[JobStatus.FAILED]
        assert stats.timeout == counts[JobStatus.TIMEOUT]
        assert stats.cancelled == counts[JobStatus.CANCELLED]
        assert stats.accepting is not self.closed
        free_to_start = [
            job
            for job in self.jobs.values()
            if job.status is JobStatus.PENDING
            and job.key not in running_keys
            and running_kinds[job.kind] < self.limits.get(job.kind, math.inf)
        ]
        if stats.accepting and free_to_start:
            # Never stuck: a job waits only while every worker is busy, while
            # the job of its key runs, or while its type runs its limit.
            assert stats.running == self.config.max_workers, stats
        if stats.accepting and stats.running < self.config.max_workers:
            # A worker is idle, so the work stream is empty: no assignment is
            # left to carry a withdrawn id, and none may stay (two cancels of
            # one job once left one for good).
            assert not sup._shared.withdrawn, sup._shared.withdrawn
        # No call is waiting at a check, so no record holds a reply: abandoned
        # wait() and cancel() calls (GiveUp) left the job's record as it was.
        for record in sup._actor.table.jobs.values():
            assert not record.waiters, f"{record.job_id} keeps a wait() given up"
            assert not record.cancellers, f"{record.job_id} keeps a cancel() given up"

        for follower in self.followers:
            check_follower(follower)


def check_snapshot(result: JobResult) -> None:
    if result.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.TIMEOUT):
        assert result.started_at is not None
    if result.status.is_terminal:
        assert result.finished_at is not None
    else:
        assert result.finished_at is None
    if result.status is JobStatus.COMPLETED:
        assert result.result is not None
        assert result.error is None
    elif result.status in (JobStatus.FAILED, JobStatus.TIMEOUT, JobStatus.CANCELLED):
        assert result.error


def check_follower(follower: Follower) -> None:
    """A follower's statuses walk the table edge by edge; progress never goes back."""
    statuses = [update.status for update in follower.seen]
    for before, after in itertools.pairwise(statuses):
        assert before == after or (before, after) in EDGES, statuses
        assert not before.is_terminal, f"an update after the terminal one: {statuses}"
    progress = [update.progress for update in follower.seen if update.progress is not None]
    assert progress == sorted(progress), progress


async def interpret(
    config: Config, program: list[Operation], default_timeout: float, deadline: float
) -> Program:
    supervisor = JobSupervisor(
        default_timeout=default_timeout,
        max_workers=config.max_workers,
        max_pending=config.max_pending,
        shutdown_grace=config.shutdown_grace,
        retention=10 * PROGRAM_DEADLINE,  # nothing is evicted during a program
    )
    model = Program(config, supervisor, default_timeout)
    run_returned = anyio.Event()

    async def run_supervisor(*, task_status: TaskStatus[None]) -> None:
        await supervisor.run(task_status=task_status)
        run_returned.set()

    with anyio.fail_after(deadline):
        async with anyio.create_task_group() as followers:
            async with anyio.create_task_group() as hosting:
                await hosting.start(run_supervisor)
                await model.check()
                for operation in program:
                    await model.apply(operation, followers)
                    await model.check()
                model.mark_shut_down(hard=config.hard_stop)
                if config.hard_stop:
                    hosting.cancel_scope.cancel()
                else:
                    await supervisor.aclose()
            model.closed = True
            await settle()
            assert run_returned.is_set() or config.hard_stop
            await model.check()
        # Every follower has ended, after the terminal state.
        for follower in model.followers:
            assert follower.done
            assert follower.seen, "a follower got nothing"
            final = model.jobs[follower.job_id].status
            assert follower.seen[-1].status is final, (follower.seen, final)

    for job in model.jobs.values():
        assert job.status.is_terminal, job
    stats = supervisor.statistics()
    assert stats.pending == stats.running == 0
    assert stats.finished == stats.submitted == len(model.jobs)
    return model


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@PROFILE
@given(config=CONFIGS, program=programs())
def test_any_program_keeps_every_job_accounted_for(
    backend: str, config: Config, program: list[Operation]
) -> None:
    """Any program: legal moves only, exact statistics, every job ends, every follower sees it."""

    model = run_program(config, program, backend=backend)

    for job in model.jobs.values():
        event(f"job ended {job.status}")
    event(f"{len(model.jobs) // 5 * 5}+ jobs accepted")
    for kind, limit in model.limits.items():
        if model.peak["type", kind] == limit:
            event("a type ran as many jobs as its max_running")


def run_program(config: Config, program: list[Operation], *, backend: str = "trio") -> Program:
    """Interpret ``program`` on trio's mock clock, or on asyncio without time
    (:func:`without_time`), with the supervisor's logging off."""
    # Failed jobs log a traceback each; thousands of them would only cost time.
    logger.disable("stoat_ferret")
    try:
        if backend == "asyncio":
            config, program = without_time(config, program)
            # Real seconds here: a program without time takes milliseconds.
            return anyio.run(interpret, config, program, math.inf, 60, backend="asyncio")
        return anyio.run(
            interpret,
            config,
            program,
            DEFAULT_TIMEOUT,
            PROGRAM_DEADLINE,
            backend="trio",
            backend_options={"clock": MockClock(autojump_threshold=0)},
        )
    finally:
        logger.enable("stoat_ferret")


def test_a_keyed_job_let_go_into_a_type_at_its_limit_waits_for_a_slot() -> None:
    """The second job of key "a" is of a type limited to one, whose one job
    (submitted after it, unkeyed) runs when the first job of "a" ends: it
    waits for that job, with a worker free."""
    config = Config(max_workers=3, max_pending=8, shutdown_grace=0.0, hard_stop=False)
    program: list[Operation] = [Register("complete", None, 1), Register("fail", None)]
    program += [Submit("fail", 2.0, None, "a"), Submit("complete", 2.0, None, "a")]
    program += [Sleep(1.0), Submit("complete", 2.0, None, None), Sleep(5.0)]

    model = run_program(config, program)

    assert model.peak["type", "complete"] == 1
    _, second, third = model.order
    assert model.starts[third] < model.starts[second]  # the unkeyed job passed it
    assert model.ends[third] <= model.starts[second]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_jobs_held_for_their_type_start_in_submit_order(backend: str) -> None:
    """Three jobs of a type limited to one, with workers free: the two held
    behind the first start in the order they were submitted, as the model
    checks (the generated programs seldom hold two jobs of one type at once;
    this one does, so a slot handed to the newest held job fails here).
    A ``hang`` job on asyncio, where no job takes time: each is cancelled
    in turn, which frees the slot."""
    config = Config(max_workers=3, max_pending=8, shutdown_grace=0.0, hard_stop=False)
    kind = "hang" if backend == "asyncio" else "complete"
    program: list[Operation] = [Register(kind, None, 1)]
    program += [Submit(kind, 2.0, None, None) for _ in range(3)]
    program += [Sleep(1.0), Cancel(0), Sleep(2.0), Cancel(1), Sleep(2.0), Cancel(2), Sleep(2.0)]
    if backend == "trio":
        program = [operation for operation in program if not isinstance(operation, Cancel)]

    model = run_program(config, program, backend=backend)

    first, second, third = model.order
    assert set(model.starts) == {first, second, third}, "a held job never started"
    assert model.starts[first] <= model.starts[second] <= model.starts[third]
    assert model.ends[first] <= model.starts[second]
    assert model.ends[second] <= model.starts[third]


def test_a_fixed_program_ends_each_job_the_one_way_it_can() -> None:
    """The interpreter is not vacuous: one job of each kind ends as predicted
    (the second submit of key "a" comes once its first job runs: a new job)."""

    config = Config(max_workers=4, max_pending=8, shutdown_grace=0.0, hard_stop=False)
    program: list[Operation] = [Register(kind, None) for kind in KINDS]
    program += [Submit(kind, 1.0, 2.5, None) for kind in KINDS]
    program += [Follow(index, 0.25) for index in range(len(KINDS))]
    program += [Sleep(5.0), Submit("complete", 3.0, None, "a"), Submit("fail", 0.0, None, "a")]
    program += [Sleep(1.0), Cancel(4), Submit("progress", 0.0, None, None), Close()]

    model = run_program(config, program)

    statuses = [model.jobs[job_id].status for job_id in model.order]
    assert statuses == [
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.TIMEOUT,
        JobStatus.COMPLETED,
        JobStatus.CANCELLED,
        JobStatus.FAILED,
        JobStatus.COMPLETED,
    ]
    progress = [update.progress for update in model.followers[3].seen]
    assert progress[-1] == 1.0
    assert [update.status for update in model.followers[2].seen][-1] is JobStatus.TIMEOUT
