"""What the routes take from ``app.state``, as typed FastAPI dependencies.

The app's state lives on ``app.state`` (one way, drawn in ``app.py``'s
docstring); ``app.state`` is untyped, and these functions are the one place
that reads it. They are ``async def`` because they never block: FastAPI runs
plain ``def`` dependencies in a worker thread, a thread hop per dependency
per request. The lifespan fills ``job_queue``, ``library``, ``stopping``
and ``path_checks``;
:func:`~stoat_ferret.api.app.create_app` sets ``settings`` and
``stream_slots`` (and ``job_queue`` when one is injected). Before the
lifespan has run, or after it has ended, the routes that need the missing
part answer 503.

Three dependencies guard routes rather than hand out state:

* :func:`require_json` (415, 422): a route that takes a JSON body declares
  it, so a body a browser may send cross-site without a preflight (no
  ``Content-Type``, ``text/plain``, a form), or declared in a charset other
  than UTF-8, is refused before any work (415), and so is a JSON object with
  a key given twice (422), which FastAPI would read as its last value;
* a stream slot (503 with ``Retry-After``): a long request (an event
  stream, a ``/wait``) holds one of ``STOAT_MAX_STREAMS`` slots
  (:func:`stream_slots`) for as long as its response lasts, taken in a
  dependency with ``yield`` that also takes the route's query model: FastAPI
  calls no dependency whose own parameters failed, so a bad query is 422,
  not 503 when every slot is taken;
* :func:`once_each` (422): a route that takes a query model declares it, so
  that a parameter given twice is refused rather than read as its last value,
  and one that is not UTF-8 once percent-decoded rather than read with
  U+FFFD in place of its bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar, cast, get_args, get_origin
from urllib.parse import unquote_to_bytes

import anyio
import attrs
from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from loguru import logger

from stoat_ferret.api._errors import unavailable
from stoat_ferret.jobs import AsyncJobQueue
from stoat_ferret.library import VideoLibrary
from stoat_ferret.settings import Settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from pydantic import BaseModel


T = TypeVar("T")


def running_state(request: Request, name: str, kind: type[T], missing: str) -> T:
    """``app.state.<name>``, which the lifespan sets while the service runs.

    Raises:
        HTTPException: 503 saying ``missing``: not set (yet, or any more).
    """
    value = getattr(request.app.state, name, None)
    if not isinstance(value, kind):
        raise unavailable(missing)
    return value


async def get_job_queue(request: Request) -> AsyncJobQueue:
    """The app's job queue (``app.state.job_queue``).

    Raises:
        HTTPException: 503, the service has not started.
    """
    queue = getattr(request.app.state, "job_queue", None)
    # Set only by create_app and the lifespan, both typed: no per-request
    # isinstance against the runtime-checkable protocol (it costs ~14 us).
    if queue is None:
        raise unavailable("the service is not running (no job queue)")
    return cast("AsyncJobQueue", queue)


async def get_library(request: Request) -> VideoLibrary:
    """The open video library (``app.state.library``).

    Raises:
        HTTPException: 503, the service has not started or has stopped.
    """
    return running_state(
        request, "library", VideoLibrary, "the service is not running (no video library)"
    )


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings = request.app.state.settings
    assert isinstance(settings, Settings)
    return settings


async def get_stopping(request: Request) -> anyio.Event:
    """Set once the service begins to stop: no new jobs, long requests end.

    Raises:
        HTTPException: 503, the service has not started.
    """
    return running_state(request, "stopping", anyio.Event, "the service is not running")


TURN_WAIT_SECONDS: Final = 2.0
"""How long a request waits for a :class:`ThreadTurns` turn before its 503."""


class ThreadTurns:
    """Blocking calls of one kind that may never return: ``threads`` at once,
    each in a thread of their own.

    A call (a scan request's path check, a thumbnail's read) takes under a
    millisecond, unless its file system does not answer: then it holds its
    thread until it does. A request waits :data:`TURN_WAIT_SECONDS` at most
    for its turn, then is a 503 with ``Retry-After`` saying ``busy``, so that
    calls which do not return hold ``threads`` threads and no request for
    ever. The calls' threads come from :attr:`threads`, as many tokens as
    turns (so never waited for), not from anyio's default limiter, which the
    library's writes share.
    """

    def __init__(self, threads: int, *, busy: str) -> None:
        self._turns = anyio.CapacityLimiter(threads)
        self.threads = anyio.CapacityLimiter(threads)
        self._busy = busy

    @property
    def waiting(self) -> int:
        """Requests waiting for a turn now."""
        return self._turns.statistics().tasks_waiting

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[anyio.CapacityLimiter]:
        """Hold a turn for the block, which runs its call under the limiter yielded.

        Raises:
            HTTPException: 503 with ``Retry-After``, no turn came in time.
        """
        turn, taken = object(), False
        with anyio.move_on_after(TURN_WAIT_SECONDS):
            await self._turns.acquire_on_behalf_of(turn)
            taken = True
        if not taken:
            logger.warning(
                "request refused: {busy}",
                busy=self._busy,
                turns=self._turns.total_tokens,
                waited=TURN_WAIT_SECONDS,
            )
            raise unavailable(self._busy)
        try:
            yield self.threads
        finally:
            self._turns.release_on_behalf_of(turn)


async def get_path_checks(request: Request) -> ThreadTurns:
    """The scan requests' path checks (``app.state.path_checks``).

    Raises:
        HTTPException: 503, the service has not started.
    """
    return running_state(request, "path_checks", ThreadTurns, "the service is not running")


def once_each(model: type[BaseModel]) -> Callable[[Request], Awaitable[None]]:
    """A dependency refusing a query parameter of ``model`` given more than once
    (422), unless the model takes a list there (``job_id`` on the event stream),
    and any parameter whose name or value is not UTF-8 once percent-decoded.

    FastAPI keeps the last of repeated values, so ``?q=cat&q=`` would be read
    as no filter at all; and Starlette decodes ``%FF`` as U+FFFD, so
    ``?q=%FF`` would search for that character. A route declares
    ``dependencies=[Depends(once_each(ItsQuery))]`` next to its
    ``Annotated[ItsQuery, Query()]``.
    """
    single = frozenset(
        field.alias or name
        for name, field in model.model_fields.items()
        if not _takes_a_list(field.annotation)
    )

    async def given_once(request: Request) -> None:
        not_utf8 = _not_utf8(request.scope["query_string"])
        counts = Counter(key for key, _ in request.query_params.multi_items())
        repeated = sorted(key for key, count in counts.items() if count > 1 and key in single)
        errors = [
            {"type": "utf8", "loc": ("query", key), "msg": wrong} for key, wrong in not_utf8.items()
        ]
        errors += [
            {
                "type": "repeated",
                "loc": ("query", key),
                "msg": f"given {counts[key]} times: this parameter takes one value",
            }
            for key in repeated
        ]
        if errors:
            raise RequestValidationError(errors)

    return given_once


def _not_utf8(query: bytes) -> dict[str, str]:
    """The parameters of ``query``, a raw query string, whose name or value is
    not UTF-8 once percent-decoded, or holds a byte past ASCII sent without
    percent-encoding (Starlette reads those as Latin-1; the server in front
    refuses them anyway): name (U+FFFD for what is not UTF-8) -> what is
    wrong, in order."""
    found: dict[str, str] = {}
    for field in query.split(b"&"):
        name = unquote_to_bytes(field.partition(b"=")[0].replace(b"+", b" "))
        if not field.isascii():
            found.setdefault(name.decode(errors="replace"), "sent without percent-encoding")
            continue
        try:
            unquote_to_bytes(field.replace(b"+", b" ")).decode()
        except UnicodeDecodeError:
            found.setdefault(name.decode(errors="replace"), "not UTF-8 once percent-decoded")
    return found


def _takes_a_list(annotation: object) -> bool:
    """``list[...]``, alone or in a union (``list[str] | None``)."""
    if get_origin(annotation) is list:
        return True
    return any(get_origin(arg) is list for arg in get_args(annotation))


def is_json(content_type: str | None) -> bool:
    """True for ``application/json`` and ``application/<anything>+json``, parameters aside."""
    media_type = (content_type or "").partition(";")[0].strip().lower()
    kind, _, subtype = media_type.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


async def require_json(request: Request) -> None:
    """Refuse a body not declared JSON, or declared in a charset other than
    UTF-8 (415), and a JSON object that gives a key twice (422).

    FastAPI has read and parsed the body before its dependencies run: the
    body read here is the one it kept, parsed again (at most 64 KiB) to find
    repeated keys, which a proxy reading the first and the service the last
    would tell apart.

    Raises:
        HTTPException: 415, the ``Content-Type`` is missing, not JSON, or not
            UTF-8; 400, the body is not UTF-8 (FastAPI, as ``json.loads``,
            would read UTF-16 and UTF-32 too, with or without a byte order
            mark) or starts with a byte order mark, or is nested too deeply
            to parse again.
        RequestValidationError: 422, an object of the body gives a key twice.
    """
    content_type = request.headers.get("content-type")
    if not is_json(content_type) or not _utf_8(content_type or ""):
        raise HTTPException(
            415,
            "the body must be JSON in UTF-8, sent with Content-Type: application/json",
            headers={"Accept-Post": "application/json"},
        )
    body = await request.body()
    if not body:
        return  # FastAPI's model says what is missing
    try:
        # Strictly UTF-8: json.loads would guess UTF-16 or UTF-32 from bytes.
        text = body.decode()
    except UnicodeDecodeError:
        raise HTTPException(400, "the body must be JSON in UTF-8") from None
    if text.startswith("\ufeff"):
        raise HTTPException(400, "the body must be JSON in UTF-8, with no byte order mark")
    try:
        json.loads(text, object_pairs_hook=_refuse_repeated_keys)
    except _RepeatedKey as repeated:
        raise RequestValidationError(
            [
                {
                    "type": "repeated",
                    "loc": ("body", repeated.key),
                    "msg": "given twice: each key of a JSON object takes one value",
                }
            ]
        ) from None
    except RecursionError:
        # FastAPI parsed it a few frames nearer the top of the stack.
        raise HTTPException(400, "the body is nested too deeply to read") from None
    except ValueError:
        # FastAPI parsed it (it answers a body that is not JSON before any
        # dependency runs), so it is JSON in another encoding: UTF-16 or UTF-32
        # without a byte order mark is valid UTF-8, NULs and all.
        raise HTTPException(400, "the body must be JSON in UTF-8") from None


def _utf_8(content_type: str) -> bool:
    """Whether ``content_type``'s ``charset``, if it has one, is UTF-8 (each
    one, if it gives several)."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in {
            "utf-8",
            "utf8",
        }:
            return False
    return True


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return found


@attrs.define(eq=False)
class StreamSlots:
    """How many long requests (event streams, waits) may be open at once.

    Only the event loop's thread touches it, and :meth:`hold` never awaits,
    so a plain counter is enough.
    """

    limit: int
    # Invariant: 0 <= in_use <= limit.
    in_use: int = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Take a slot for the block.

        Raises:
            HTTPException: 503 with ``Retry-After``, every slot is taken.
        """
        if self.in_use >= self.limit:
            logger.warning("long request refused: every slot is taken", limit=self.limit)
            raise unavailable(
                f"too many event streams and waits are open ({self.limit}, STOAT_MAX_STREAMS)"
            )
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1


def stream_slots(request: Request) -> StreamSlots:
    """The app's :class:`StreamSlots`: a long request holds one of them (its
    dependency with ``yield``, so until the response has been sent, the last
    event of a stream included) with ``with stream_slots(request).hold():``."""
    slots = request.app.state.stream_slots
    assert isinstance(slots, StreamSlots)
    return slots


JobQueueDep = Annotated[AsyncJobQueue, Depends(get_job_queue)]
LibraryDep = Annotated[VideoLibrary, Depends(get_library)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoppingDep = Annotated[anyio.Event, Depends(get_stopping)]
PathChecksDep = Annotated[ThreadTurns, Depends(get_path_checks)]
