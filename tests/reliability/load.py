"""A load client for the real server, run as a process of its own.

``python -m tests.reliability.load --url http://127.0.0.1:PORT --root DIR
--submissions N --directories D --seconds T --server-pid PID`` sends ``N``
scan submissions over the directories ``DIR/d000`` .. ``DIR/d{D-1}`` and,
while they go on, polls, waits for, follows (Server-Sent Events) and cancels
the jobs they return, and pages through the job list. Then it waits until
every accepted job has ended, pages through the whole job list, checks it,
and writes one JSON line on stdout (logs go to stderr).

What the line proves, when its counters are zero and ``aborted`` is null:

* every 202 job id is in the job list (``lost``) and terminal
  (``non_terminal``), and the list holds no job that no 202 returned
  (``phantom``; the ``thumbnails`` jobs the service submits after scans are
  left out): nothing was lost or invented under load;
* every 503 carried ``Retry-After`` (``missing_retry_after``), and no answer
  was another 5xx (``server_errors``);
* every answer was one its route may give (``anomalies``): a poll never
  404s, a 200 wait is terminal and a 408 is not, every event stream ends
  with the job's terminal state and only then, a 200 cancel says
  ``cancelled`` and that is the job's final state (``cancel_mismatches``), a
  409 cancel says how the job ended, one job id never serves two different
  scans, and every completed scan found exactly the files of its directory
  with no error (``result_mismatches``);
* every accepted job ended ``completed``, or ``cancelled`` because this
  client cancelled it (``unexpected_ends``): a scan that ends ``failed`` or
  ``timeout`` (a locked database, say), or is cancelled by someone else, is
  a failure of the run, not an outcome to count;
* every job a 202 returned reached the one stream of every job
  (``GET /api/v1/events``, followed for the whole run) as a terminal event,
  and that stream's ids only grew (``stream_missed``; a ``reset`` on it
  would show in ``event_streams``);
* the server's memory stayed bounded: ``server_rss_mb`` has its resident
  size before the load, the largest sampled during it, after it, and the
  kernel's high-water mark (``VmHWM``, which includes start-up);
  ``--max-rss-growth-mb`` turns the growth into a check.

Bounds: only a loopback address is accepted (``--url`` must name a loopback
IP literal, so no name is resolved); at most ``--max-requests`` requests are
sent (by default ``3 * N + 1000``, above what the mix below can need); each
request has its own timeout; and the whole run stops at ``--seconds``.
Hitting any bound, or a transport error, ends the run at once with
``aborted`` saying why, instead of hanging. The exit status is 0 when every
check passed, 1 when one failed (the line is written either way), 2 for bad
arguments.

The request mix is fixed by ``--seed`` (which directory each submission asks
for; the outcomes depend on timing): a fifth of the submissions go to five
"hot" directories so that repeats meet their pending job (same id) or
queue the next scan of a running one's directory, three quarters are
recursive, the other quarter flat (another job key).
For each 202, every second submission polls the job once; for each job id
seen for the first time, every second is waited for (``/wait``, with a
timeout of 2 s and 0.05 s in turn, so both 200 and 408 come back),
every third is followed as an event stream, every fifth is cancelled; every
fiftieth submission lists a page of jobs. The follow-up requests run in
tasks of their own, fed through bounded memory streams, so they overlap the
submissions. Submitters do not honour ``Retry-After``: the point is to keep
the queue full.

Latency is from sending a request to reading its whole answer. Waits and
event streams last as long as their job by design, so the overall p50/p99
count only the routes that answer at once (submit, poll, cancel, list);
``latency_ms_by_kind`` has every kind.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import random
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import anyio
import attrs
from anyio.streams.buffered import BufferedByteReceiveStream
from loguru import logger

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from types import TracebackType

    from anyio.abc import SocketStream, TaskStatus
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

SCAN: Final = "/api/v1/videos/scan"
JOBS: Final = "/api/v1/jobs"
EVENTS: Final = "/api/v1/events"

TERMINAL: Final = frozenset({"completed", "failed", "timeout", "cancelled"})
STATUSES: Final = TERMINAL | {"pending", "running"}

SUBMITTERS: Final = 8
POLLERS: Final = 2
WAITERS: Final = 4
FOLLOWERS: Final = 4
CANCELLERS: Final = 2
LISTERS: Final = 1

HOT_DIRECTORIES: Final = 5
"""Every fifth submission goes to one of the first five directories."""

WAIT_SECONDS: Final = (2.0, 0.05)
"""The ``timeout`` of the waits during the load, in turn: most jobs end within
the first, few within the second, so both 200 and 408 answers come."""

SETTLE_WAIT_SECONDS: Final = 10.0
"""The ``timeout`` of each wait for a job still running after the load."""

REQUEST_SECONDS: Final = 30.0
"""Longest a request that answers at once may take."""

STREAM_SECONDS: Final = 60.0
"""Longest a wait or an event stream may take (above the server's job timeout in the test)."""

PAGE: Final = 1000
"""The job list's largest page (``MAX_LIMIT`` in ``stoat_ferret/api/_schemas.py``)."""

FOLLOW_BUFFER: Final = 256
"""Follow-ups queued per kind before submitters wait for the followers."""

RSS_SAMPLE_SECONDS: Final = 0.1

SAMPLES: Final = 20
"""Ids or descriptions quoted per failed check (the counts are complete)."""

LATENCY_KINDS: Final = ("submit", "poll", "cancel", "list")
"""Kinds that answer at once: the overall latency figures are theirs."""

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


class LoadAborted(Exception):
    """A bound was hit or the connection failed: the run ends, saying why."""


# ------------------------------------------------------------------ HTTP


@attrs.frozen
class Reply:
    """One HTTP answer: status, headers (lower-case names) and the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 as this client reads it."""


MAX_HEAD: Final = 64 * 1024
MAX_CHUNK_LINE: Final = 1024


class Connection:
    """One keep-alive HTTP/1.1 connection on an anyio TCP stream.

    Reads a body by ``Content-Length`` or as chunks (the event streams).
    Reconnects on the next request if the server said ``Connection: close``.
    httpx spends about 1.2 ms of CPU a request on a 2-core machine (see
    ``bench/bench_api.py``); this costs much less, so the client does not
    set the pace (the report's ``client_cpu_share`` shows it).
    """

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._stream: SocketStream | None = None
        self._buffered: BufferedByteReceiveStream | None = None

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._stream is not None:
            stream, self._stream, self._buffered = self._stream, None, None
            await stream.aclose()

    async def request(self, method: str, target: str, body: bytes | None = None) -> Reply:
        """Send one request and read its whole answer."""
        if self._stream is None:
            self._stream = await anyio.connect_tcp(self._host, self._port)
            self._buffered = BufferedByteReceiveStream(self._stream)
        assert self._buffered is not None
        head = f"{method} {target} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        await self._stream.send(head.encode("ascii") + b"\r\n" + (body or b""))
        status, headers = _parse_head(await self._buffered.receive_until(b"\r\n\r\n", MAX_HEAD))
        if "content-length" in headers:
            content = await self._buffered.receive_exactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            content = await self._read_chunks(self._buffered)
        else:
            raise ProtocolError(f"{method} {target}: no Content-Length and not chunked")
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return Reply(status, headers, content)

    @staticmethod
    async def _read_chunks(buffered: BufferedByteReceiveStream) -> bytes:
        parts: list[bytes] = []
        while True:
            line = await buffered.receive_until(b"\r\n", MAX_CHUNK_LINE)
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                while await buffered.receive_until(b"\r\n", MAX_HEAD):  # trailers
                    pass
                return b"".join(parts)
            parts.append(await buffered.receive_exactly(size))
            if await buffered.receive_exactly(2) != b"\r\n":
                raise ProtocolError("a chunk does not end with CRLF")


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.1 status line: {status_line!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def loopback_address(url: str) -> tuple[str, int]:
    """Host and port of ``url``, which must be ``http://`` + a loopback IP literal + a port.

    Raises:
        ValueError: anything else (a name is refused rather than resolved).
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise ValueError(f"--url must look like http://127.0.0.1:PORT, got {url!r}")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        raise ValueError(f"--url must name a loopback IP address, got {parts.hostname!r}") from None
    if not address.is_loopback:
        raise ValueError(f"--url must be a loopback address, got {parts.hostname!r}")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"--url must have no path or query, got {url!r}")
    return parts.hostname, parts.port


# ------------------------------------------------------------------ the run


@attrs.frozen(kw_only=True)
class Config:
    """What one run does; see the module docstring and ``--help``."""

    host: str
    port: int
    root: Path
    submissions: int
    directories: int
    seconds: float
    server_pid: int
    max_requests: int
    max_rss_growth_mb: float | None
    seed: int


@attrs.define
class Followups:
    """The send ends of the streams that feed the follow-up tasks."""

    poll: MemoryObjectSendStream[str]
    wait: MemoryObjectSendStream[str]
    events: MemoryObjectSendStream[str]
    cancel: MemoryObjectSendStream[str]
    list: MemoryObjectSendStream[int]

    def clone(self) -> Followups:
        return Followups(
            self.poll.clone(),
            self.wait.clone(),
            self.events.clone(),
            self.cancel.clone(),
            self.list.clone(),
        )

    def close(self) -> None:
        for stream in (self.poll, self.wait, self.events, self.cancel, self.list):
            stream.close()


@attrs.define
class Memory:
    """The server's resident set size in MB, read from ``/proc/<pid>/status``."""

    pid: int
    before: float = 0.0
    max_sampled: float = 0.0
    samples: int = 0
    after: float = 0.0
    high_water: float = 0.0

    def read(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MB now.

        Raises:
            LoadAborted: the server process is gone.
        """
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError as exc:
            raise LoadAborted(f"cannot read the server's memory: {exc}") from None
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return _kib_to_mb(fields["VmRSS"]), _kib_to_mb(fields["VmHWM"])

    def sample(self) -> None:
        rss, _ = self.read()
        self.max_sampled = max(self.max_sampled, rss)
        self.samples += 1

    async def sample_forever(self) -> None:
        while True:
            self.sample()
            await anyio.sleep(RSS_SAMPLE_SECONDS)

    def as_json(self) -> dict[str, Any]:
        return {
            "before": round(self.before, 1),
            "max_sampled": round(self.max_sampled, 1),
            "after": round(self.after, 1),
            "peak_hwm": round(self.high_water, 1),
            "growth": round(max(self.max_sampled, self.after) - self.before, 1),
            "samples": self.samples,
        }


def _kib_to_mb(field: str) -> float:
    value, unit = field.split()
    assert unit == "kB", field
    return int(value) / 1024


@attrs.define
class Failures:
    """One failed check: how many times, and the first few ids or descriptions."""

    count: int = 0
    sample: list[str] = attrs.field(factory=list)

    def add(self, what: str) -> None:
        self.count += 1
        if len(self.sample) < SAMPLES:
            self.sample.append(what)

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "sample": self.sample}


CHECKS: Final = (
    "lost",
    "non_terminal",
    "phantom",
    "missing_retry_after",
    "server_errors",
    "anomalies",
    "cancel_mismatches",
    "result_mismatches",
    "unexpected_ends",
    "stream_missed",
)


class LoadRun:
    """One run of the load: the requests, their tallies and the final checks."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.memory = Memory(config.server_pid)
        self.directories = [config.root / f"d{index:03d}" for index in range(config.directories)]
        # Files each scan must find: (directory, recursive) -> count. Only clips are there.
        self.expected: dict[tuple[str, bool], int] = {}
        for directory in self.directories:
            own = sum(1 for entry in directory.iterdir() if entry.is_file())
            every = sum(len(files) for _, _, files in os.walk(directory))
            self.expected[str(directory), False] = own
            self.expected[str(directory), True] = every
        rng = random.Random(config.seed)
        self.plan = [self._pick(rng, index) for index in range(config.submissions)]
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.by_kind: dict[str, Counter[int]] = {}
        self.latencies: dict[str, list[float]] = {}
        self.accepted: dict[str, tuple[str, bool]] = {}  # job id -> the scan it serves
        self.accepted_202 = 0
        self.cancelled: set[str] = set()  # ids a cancel answered 200 for
        self.final: dict[str, dict[str, Any]] = {}
        self.streams = Counter[str]()
        # The stream of every job: each job's last status on it, the last id.
        self.on_stream: dict[str, str] = {}
        self.last_stream_id = -1
        self.stream_progress = anyio.Event()
        self.stream_ended = False
        self.failures = {name: Failures() for name in CHECKS}
        self.aborted: str | None = None
        self.load_seconds = 0.0
        self.load_requests = 0

    def _pick(self, rng: random.Random, index: int) -> tuple[str, bool]:
        hot = index % 5 == 0
        directory = rng.randrange(HOT_DIRECTORIES if hot else self.config.directories)
        return str(self.directories[directory]), rng.random() < 0.75

    # -------------------------------------------------------------- requests

    async def call(
        self,
        connection: Connection,
        kind: str,
        method: str,
        target: str,
        body: bytes | None = None,
        *,
        timeout: float = REQUEST_SECONDS,
    ) -> Reply:
        """Send one request within the budget and its timeout; tally its answer.

        Raises:
            LoadAborted: the budget is spent, the timeout passed, or the connection failed.
        """
        if self.requests.total() >= self.config.max_requests:
            raise LoadAborted(f"the budget of {self.config.max_requests} requests is spent")
        self.requests[kind] += 1
        started = time.perf_counter()
        try:
            with anyio.fail_after(timeout):
                reply = await connection.request(method, target, body)
        except TimeoutError:
            raise LoadAborted(f"{kind}: {method} {target} unanswered after {timeout} s") from None
        except (
            OSError,
            anyio.EndOfStream,
            anyio.IncompleteRead,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.DelimiterNotFound,
            ProtocolError,
            ValueError,
        ) as exc:
            raise LoadAborted(f"{kind}: {method} {target} failed: {exc!r}") from None
        self.latencies.setdefault(kind, []).append(time.perf_counter() - started)
        self.statuses[reply.status] += 1
        self.by_kind.setdefault(kind, Counter())[reply.status] += 1
        if reply.status == 503 and "retry-after" not in reply.headers:
            self.failures["missing_retry_after"].add(f"{method} {target}")
        elif reply.status >= 500 and reply.status != 503:
            self.failures["server_errors"].add(f"{reply.status} {method} {target}")
        return reply

    def anomaly(self, what: str) -> None:
        self.failures["anomalies"].add(what)

    def job_json(self, reply: Reply, what: str) -> dict[str, Any] | None:
        """The job in ``reply``'s body, or None (an anomaly) if it is not one."""
        try:
            job = json.loads(reply.body)
        except ValueError:
            self.anomaly(f"{what}: not JSON: {reply.body[:200]!r}")
            return None
        if not isinstance(job, dict) or job.get("status") not in STATUSES:
            self.anomaly(f"{what}: not a job: {reply.body[:200]!r}")
            return None
        return job

    @staticmethod
    def listing(reply: Reply, what: str) -> dict[str, Any]:
        """The job list page in ``reply``'s body.

        Raises:
            LoadAborted: it is not one (the checks need the list).
        """
        try:
            page = json.loads(reply.body)
            valid = isinstance(page["total"], int) and all(
                isinstance(job["job_id"], str) and job["status"] in STATUSES for job in page["jobs"]
            )
        except (ValueError, KeyError, TypeError):
            valid = False
        if not valid:
            raise LoadAborted(f"{what}: not a job list: {reply.body[:200]!r}")
        result: dict[str, Any] = page
        return result

    # -------------------------------------------------------------- phases

    async def run(self) -> None:
        """Load, settle, verify; record why if a bound ended the run."""
        with anyio.move_on_after(self.config.seconds) as bound:
            try:
                self.memory.before, _ = self.memory.read()
                self.memory.max_sampled = self.memory.before
                async with anyio.create_task_group() as group:
                    group.start_soon(self.memory.sample_forever)
                    await group.start(self.follow_all)
                    started = time.perf_counter()
                    await self.load()
                    self.load_seconds = time.perf_counter() - started
                    self.load_requests = self.requests.total()
                    logger.info(
                        "load done: {} requests in {:.1f} s", self.load_requests, self.load_seconds
                    )
                    await self.settle()
                    await self.verify()
                    await self.check_stream()
                    group.cancel_scope.cancel()
            except* LoadAborted as group_error:  # raised here or in a task
                self.aborted = "; ".join(sorted({str(error) for error in _leaves(group_error)}))
        if bound.cancelled_caught:
            self.aborted = f"the time bound of {self.config.seconds} s was hit"
        if self.aborted is not None:
            logger.error("aborted: {}", self.aborted)
        try:
            self.memory.after, self.memory.high_water = self.memory.read()
        except LoadAborted as exc:
            self.aborted = f"{self.aborted}; {exc}" if self.aborted else str(exc)

    async def load(self) -> None:
        """Submissions, and the follow-ups they feed, all at once."""
        streams = {
            "poll": anyio.create_memory_object_stream[str](FOLLOW_BUFFER),
            "wait": anyio.create_memory_object_stream[str](FOLLOW_BUFFER),
            "events": anyio.create_memory_object_stream[str](FOLLOW_BUFFER),
            "cancel": anyio.create_memory_object_stream[str](FOLLOW_BUFFER),
        }
        list_send, list_receive = anyio.create_memory_object_stream[int](FOLLOW_BUFFER)
        followups = Followups(
            streams["poll"][0],
            streams["wait"][0],
            streams["events"][0],
            streams["cancel"][0],
            list_send,
        )
        todo = iter(range(self.config.submissions))  # shared: each index goes to one task
        workers = (
            (self.poller, streams["poll"][1], POLLERS),
            (self.waiter, streams["wait"][1], WAITERS),
            (self.follower, streams["events"][1], FOLLOWERS),
            (self.canceller, streams["cancel"][1], CANCELLERS),
        )
        async with anyio.create_task_group() as group:
            for worker, receive, count in workers:
                for _ in range(count):
                    group.start_soon(worker, receive.clone())
                receive.close()
            for _ in range(LISTERS):
                group.start_soon(self.lister, list_receive.clone())
            list_receive.close()
            for _ in range(SUBMITTERS):
                group.start_soon(self.submitter, todo, followups.clone())
            followups.close()

    def connection(self) -> Connection:
        return Connection(self.config.host, self.config.port)

    async def submitter(self, todo: Iterator[int], out: Followups) -> None:
        """Submit scans; feed each answer's follow-ups to the other tasks."""
        async with self.connection() as connection:
            try:
                for index in todo:
                    await self.submit(connection, index, out)
            finally:
                out.close()

    async def submit(self, connection: Connection, index: int, out: Followups) -> None:
        path, recursive = self.plan[index]
        body = json.dumps({"path": path, "recursive": recursive}).encode()
        reply = await self.call(connection, "submit", "POST", SCAN, body)
        if index % 50 == 0:
            await out.list.send(index // 50)
        if reply.status == 503:
            return
        if reply.status != 202:
            self.anomaly(f"submit {path}: {reply.status} {reply.body[:200]!r}")
            return
        job = self.job_json(reply, f"submit {path}")
        if job is None or not isinstance(job.get("job_id"), str):
            return
        job_id: str = job["job_id"]
        self.accepted_202 += 1
        known = self.accepted.get(job_id)
        if known is None:
            self.accepted[job_id] = (path, recursive)
        elif known != (path, recursive):
            self.anomaly(f"job {job_id} serves {known} and {(path, recursive)}")
        if index % 2 == 0:
            await out.poll.send(job_id)
        if known is None:  # the first time this id is seen
            ordinal = len(self.accepted)
            if ordinal % 2 == 0:
                await out.wait.send(job_id)
            if ordinal % 3 == 0:
                await out.events.send(job_id)
            if ordinal % 5 == 0:
                await out.cancel.send(job_id)

    async def poller(self, ids: MemoryObjectReceiveStream[str]) -> None:
        """GET each job once: 200, itself, a valid status (a 404 would be a lost job)."""
        async with self.connection() as connection, ids:
            async for job_id in ids:
                reply = await self.call(connection, "poll", "GET", f"{JOBS}/{job_id}")
                if reply.status != 200:
                    self.anomaly(f"poll {job_id}: {reply.status} {reply.body[:200]!r}")
                    continue
                job = self.job_json(reply, f"poll {job_id}")
                if job is not None and job.get("job_id") != job_id:
                    self.anomaly(f"poll {job_id}: answered about {job.get('job_id')}")

    async def waiter(self, ids: MemoryObjectReceiveStream[str]) -> None:
        """Wait for each job briefly: 200 means terminal, 408 means not yet."""
        async with self.connection() as connection, ids:
            async for job_id in ids:
                timeout = WAIT_SECONDS[self.requests["wait"] % len(WAIT_SECONDS)]
                target = f"{JOBS}/{job_id}/wait?timeout={timeout}"
                reply = await self.call(connection, "wait", "GET", target, timeout=STREAM_SECONDS)
                job = self.job_json(reply, f"wait {job_id}")
                if job is None:
                    continue
                if reply.status == 200 and job["status"] not in TERMINAL:
                    self.anomaly(f"wait {job_id}: 200 but {job['status']}")
                elif reply.status == 408 and job["status"] in TERMINAL:
                    self.anomaly(f"wait {job_id}: 408 but {job['status']}")
                elif reply.status not in (200, 408):
                    self.anomaly(f"wait {job_id}: {reply.status}")

    async def follower(self, ids: MemoryObjectReceiveStream[str]) -> None:
        """Follow each job's events to their end: only the last is terminal, and it is."""
        async with self.connection() as connection, ids:
            async for job_id in ids:
                target = f"{JOBS}/{job_id}/events"
                reply = await self.call(connection, "events", "GET", target, timeout=STREAM_SECONDS)
                if reply.status != 200:
                    self.anomaly(f"events {job_id}: {reply.status} {reply.body[:200]!r}")
                    continue
                self.check_events(job_id, reply.body)

    def check_events(self, job_id: str, body: bytes) -> None:
        statuses: list[str] = []
        for line in body.split(b"\n"):
            if line.startswith(b"data: "):
                try:
                    event = json.loads(line[len(b"data: ") :])
                except ValueError:
                    event = {}
                if not isinstance(event, dict) or event.get("job_id") != job_id:
                    self.anomaly(f"events {job_id}: not an event of this job: {line[:200]!r}")
                    continue
                statuses.append(str(event.get("status")))
        self.streams["streams"] += 1
        self.streams["events"] += len(statuses)
        if not statuses or statuses[-1] not in TERMINAL:
            self.anomaly(f"events {job_id}: ended without a terminal state: {statuses}")
        elif any(status in TERMINAL for status in statuses[:-1]):
            self.anomaly(f"events {job_id}: went on after a terminal state: {statuses}")

    async def canceller(self, ids: MemoryObjectReceiveStream[str]) -> None:
        """Cancel each job: 200 says cancelled, 409 says how it had already ended."""
        async with self.connection() as connection, ids:
            async for job_id in ids:
                reply = await self.call(
                    connection, "cancel", "POST", f"{JOBS}/{job_id}/cancel", b"{}"
                )
                job = self.job_json(reply, f"cancel {job_id}")
                if job is None:
                    continue
                if reply.status == 200 and job["status"] == "cancelled":
                    self.cancelled.add(job_id)
                elif reply.status != 409 or job["status"] not in TERMINAL:
                    self.anomaly(f"cancel {job_id}: {reply.status} {job['status']}")

    async def lister(self, pages: MemoryObjectReceiveStream[int]) -> None:
        """List a page of jobs now and then: 200 and a well-formed page."""
        async with self.connection() as connection, pages:
            async for page in pages:
                target = f"{JOBS}?limit=100&offset={(page % 5) * 100}"
                reply = await self.call(connection, "list", "GET", target)
                if reply.status != 200:
                    self.anomaly(f"list {target}: {reply.status}")
                    continue
                listing = self.listing(reply, f"list {target}")
                if len(listing["jobs"]) > 100 or listing["total"] < len(listing["jobs"]):
                    self.anomaly(f"list {target}: {len(listing['jobs'])} of {listing['total']}")

    async def list_all(self, connection: Connection, kind: str) -> dict[str, dict[str, Any]]:
        """Every job in the list, by id, paged :data:`PAGE` at a time (nothing submits now)."""
        jobs: dict[str, dict[str, Any]] = {}
        offset, total = 0, None
        while total is None or offset < total:
            target = f"{JOBS}?limit={PAGE}&offset={offset}"
            reply = await self.call(connection, kind, "GET", target)
            if reply.status != 200:
                raise LoadAborted(f"{kind}: {target} answered {reply.status}")
            listing = self.listing(reply, f"{kind} {target}")
            if total is not None and listing["total"] != total:
                self.anomaly(f"{kind}: the list's total went from {total} to {listing['total']}")
            total = listing["total"]
            if not listing["jobs"] and offset < total:
                self.anomaly(f"{kind}: an empty page at {offset} of {total}")
                break
            for job in listing["jobs"]:
                if job["job_id"] in jobs:
                    self.anomaly(f"{kind}: job {job['job_id']} listed twice")
                jobs[job["job_id"]] = job
            offset += len(listing["jobs"])
        return jobs

    async def follow_all(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Follow the stream of every job for the whole run (started once it answers 200)."""
        try:
            stream = await anyio.connect_tcp(self.config.host, self.config.port)
            async with stream:
                buffered = BufferedByteReceiveStream(stream)
                host = f"{self.config.host}:{self.config.port}"
                await stream.send(f"GET {EVENTS} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                status, headers = _parse_head(await buffered.receive_until(b"\r\n\r\n", MAX_HEAD))
                self.streams["every_job_streams"] += 1
                if status != 200 or headers.get("transfer-encoding", "").lower() != "chunked":
                    raise LoadAborted(f"events: GET {EVENTS} answered {status}")
                task_status.started()
                rest = b""
                while True:
                    line = await buffered.receive_until(b"\r\n", MAX_CHUNK_LINE)
                    size = int(line.split(b";", 1)[0], 16)
                    if size == 0:
                        break
                    *blocks, rest = (rest + await buffered.receive_exactly(size)).split(b"\n\n")
                    await buffered.receive_exactly(2)
                    for block in blocks:
                        self.on_stream_event(block)
        except (
            OSError,
            anyio.EndOfStream,
            anyio.IncompleteRead,
            anyio.BrokenResourceError,
            anyio.DelimiterNotFound,
            ProtocolError,
            ValueError,
        ) as exc:
            raise LoadAborted(f"events: GET {EVENTS} failed: {exc!r}") from None
        self.stream_ended = True
        self.stream_progress.set()

    def on_stream_event(self, block: bytes) -> None:
        fields = dict(line.split(": ", 1) for line in block.decode().split("\n") if ": " in line)
        if fields.get("event") == "reset":
            self.streams["every_job_resets"] += 1
        if fields.get("event") != "job":
            return
        self.streams["every_job_events"] += 1
        event_id = int(fields.get("id", "-1"))
        if event_id <= self.last_stream_id:
            self.anomaly(f"events: id {event_id} after {self.last_stream_id}")
        self.last_stream_id = event_id
        job = json.loads(fields.get("data", "null"))
        if not isinstance(job, dict) or job.get("status") not in STATUSES:
            self.anomaly(f"events: not a job: {block[:200]!r}")
            return
        self.on_stream[str(job.get("job_id"))] = job["status"]
        self.stream_progress.set()

    async def check_stream(self) -> None:
        """Every accepted job must reach the stream of every job as a terminal event."""

        def missing() -> list[str]:
            return [
                job_id for job_id in self.accepted if self.on_stream.get(job_id) not in TERMINAL
            ]

        with anyio.move_on_after(STREAM_SECONDS):
            while missing() and not self.stream_ended:
                self.stream_progress = anyio.Event()
                await self.stream_progress.wait()
        if self.stream_ended:
            self.anomaly(f"events: GET {EVENTS} ended before the run did")
        for job_id in missing():
            self.failures["stream_missed"].add(f"{job_id} {self.on_stream.get(job_id)}")

    async def settle(self) -> None:
        """Wait until every accepted job that is listed has ended."""
        async with self.connection() as connection:
            while True:
                jobs = await self.list_all(connection, "settle")
                running = [
                    job_id
                    for job_id in self.accepted
                    if job_id in jobs and jobs[job_id]["status"] not in TERMINAL
                ]
                if not running:
                    return
                for job_id in running:
                    target = f"{JOBS}/{job_id}/wait?timeout={SETTLE_WAIT_SECONDS}"
                    await self.call(connection, "settle", "GET", target, timeout=STREAM_SECONDS)

    async def verify(self) -> None:
        """Page through the whole list once more and check every accepted id against it."""
        async with self.connection() as connection:
            listed = await self.list_all(connection, "verify")
        # The thumbnails jobs the service submits itself after scans are not the load's.
        self.final = {key: job for key, job in listed.items() if job["job_type"] != "thumbnails"}
        for job_id, scan in self.accepted.items():
            job = self.final.get(job_id)
            if job is None:
                self.failures["lost"].add(job_id)
                continue
            if job["status"] not in TERMINAL:
                self.failures["non_terminal"].add(f"{job_id} {job['status']}")
            if job_id in self.cancelled and job["status"] != "cancelled":
                self.failures["cancel_mismatches"].add(f"{job_id} {job['status']}")
            # A job this client cancelled is cancel_mismatches' business.
            if job_id not in self.cancelled and job["status"] in TERMINAL - {"completed"}:
                self.failures["unexpected_ends"].add(
                    f"{job_id} {job['status']}: {job.get('error')}"
                )
            if job["status"] == "completed":
                result = job["result"] or {}
                if result.get("found") != self.expected[scan] or result.get("errors") != []:
                    self.failures["result_mismatches"].add(
                        f"{job_id} {scan}: found {result.get('found')} of "
                        f"{self.expected[scan]}, errors {result.get('errors')}"
                    )
        for job_id in self.final.keys() - self.accepted.keys():
            self.failures["phantom"].add(job_id)

    # -------------------------------------------------------------- report

    @property
    def ok(self) -> bool:
        limit = self.config.max_rss_growth_mb
        memory = self.memory.as_json()
        return (
            self.aborted is None
            and all(failure.count == 0 for failure in self.failures.values())
            and (limit is None or memory["growth"] <= limit)
        )

    def report(self, seconds: float) -> dict[str, Any]:
        overall = [value for kind in LATENCY_KINDS for value in self.latencies.get(kind, [])]
        return {
            "ok": self.ok,
            "aborted": self.aborted,
            "submissions": self.config.submissions,
            "directories": self.config.directories,
            "seed": self.config.seed,
            "seconds": round(seconds, 2),
            "load_seconds": round(self.load_seconds, 2),
            "requests_total": self.requests.total(),
            "requests": dict(sorted(self.requests.items())),
            "requests_per_s": round(self.load_requests / self.load_seconds, 1)
            if self.load_seconds
            else None,
            "statuses": {str(code): count for code, count in sorted(self.statuses.items())},
            "statuses_by_kind": {
                kind: {str(code): count for code, count in sorted(counts.items())}
                for kind, counts in sorted(self.by_kind.items())
            },
            "latency_ms": _percentiles(overall),
            "latency_ms_by_kind": {
                kind: _percentiles(values) for kind, values in sorted(self.latencies.items())
            },
            "accepted_202": self.accepted_202,
            "distinct_jobs": len(self.accepted),
            "final_statuses": dict(
                sorted(Counter(job["status"] for job in self.final.values()).items())
            ),
            "cancelled_by_request": len(self.cancelled),
            "event_streams": dict(self.streams),
            **{name: failure.as_json() for name, failure in self.failures.items()},
            "server_rss_mb": self.memory.as_json(),
            # CPU this client used over the run: near 1.0 would mean it set the pace.
            "client_cpu_share": round(time.process_time() / seconds, 3) if seconds else None,
            "max_rss_growth_mb": self.config.max_rss_growth_mb,
        }


def _leaves(group: BaseExceptionGroup[Any]) -> Iterator[BaseException]:
    """The exceptions in ``group`` and in the groups nested in it."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error)
        else:
            yield error


def _percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50, p99 and max in ms by nearest rank, and the count."""
    if not values:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(fraction: float) -> float:
        return round(ordered[max(0, math.ceil(len(ordered) * fraction) - 1)] * 1000, 2)

    return {"count": len(ordered), "p50": rank(0.50), "p99": rank(0.99), "max": rank(1.0)}


# ------------------------------------------------------------------ the tree


def make_tree(root: Path, clip: Path, directories: int) -> int:
    """Make ``root/d000`` .. with hard links of ``clip``; return how many files.

    Every fifth directory is empty; the others hold one to three clips, and
    every second one also a clip in ``sub/``, so a recursive scan finds more
    than a flat one. Hard links share the clip's inode, size and mtime: a
    second scan finds them unchanged. Falls back to copies across devices.
    """
    files = 0
    for index in range(directories):
        directory = root / f"d{index:03d}"
        directory.mkdir(parents=True)
        if index % 5 == 4:
            continue
        targets = [directory / f"clip{number}.mp4" for number in range(1 + index % 3)]
        if index % 2 == 0:
            (directory / "sub").mkdir()
            targets.append(directory / "sub" / "clip.mp4")
        for target in targets:
            try:
                os.link(clip, target)
            except OSError:
                shutil.copyfile(clip, target)
        files += len(targets)
    return files


# ------------------------------------------------------------------ command line


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """Read the command line (see ``--help``); exits 2 on a bad argument."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.reliability.load",
        description="Bounded load against a stoat_ferret server on a loopback address.",
    )
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT (loopback only)")
    parser.add_argument("--root", required=True, type=Path, help="holds d000, d001, ...")
    parser.add_argument("--submissions", required=True, type=int)
    parser.add_argument("--directories", required=True, type=int)
    parser.add_argument("--seconds", required=True, type=float, help="bound of the whole run")
    parser.add_argument("--server-pid", required=True, type=int, help="for /proc/PID/status")
    parser.add_argument("--max-requests", type=int, help="default: 3 * submissions + 1000")
    parser.add_argument("--max-rss-growth-mb", type=float, help="fail above this growth")
    parser.add_argument("--seed", type=int, default=0, help="fixes the submissions' order")
    args = parser.parse_args(argv)
    try:
        host, port = loopback_address(args.url)
    except ValueError as exc:
        parser.error(str(exc))
    if args.submissions < 1 or args.directories < 1 or not 0 < args.seconds < 24 * 3600:
        parser.error("--submissions and --directories must be >= 1, --seconds in (0, 86400)")
    missing = [
        f"d{index:03d}"
        for index in range(args.directories)
        if not (args.root / f"d{index:03d}").is_dir()
    ]
    if missing:
        parser.error(f"--root {args.root} lacks {', '.join(missing[:5])}")
    return Config(
        host=host,
        port=port,
        root=args.root.resolve(),
        submissions=args.submissions,
        directories=args.directories,
        seconds=args.seconds,
        server_pid=args.server_pid,
        max_requests=args.max_requests or 3 * args.submissions + 1000,
        max_rss_growth_mb=args.max_rss_growth_mb,
        seed=args.seed,
    )


def emit(line: dict[str, Any]) -> None:
    """Write the report: one JSON line on stdout."""
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load once; write its JSON line; 0 if every check passed, else 1."""
    config = parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="INFO")
    run = LoadRun(config)
    started = time.perf_counter()
    anyio.run(run.run)
    report = run.report(time.perf_counter() - started)
    emit(report)
    return EXIT_OK if report["ok"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
