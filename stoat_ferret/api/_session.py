"""The dashboard's session cookie: what it holds, how long it lasts, how a request's is read.

A browser cannot put a header on an ``EventSource``, so the dashboard trades
the API token for a cookie (``POST /api/v1/session``, ``_dashboard.py``),
which :class:`~stoat_ferret.api._guard.RequestGuard` accepts as it accepts
the token, for state changes only with the browser vouching for their
origin. The cookie holds no token: see :func:`session_value`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from starlette.datastructures import Headers

SESSION_PATH: Final = "/api/v1/session"
"""Where the token is traded for the cookie; the cookie alone is refused there
(:class:`~stoat_ferret.api._guard.RequestGuard`), so a session is never renewed."""

TOKEN_COOKIE: Final = "stoat_token"
"""The cookie the dashboard's session sets (``POST /api/v1/session``); the API accepts it."""

SESSION_KEY: Final = "stoat-session"

SESSION_SECONDS: Final = 12 * 3600
"""How long a session cookie is accepted from the moment it was made: a
working day. It is never renewed; the dashboard asks for the token again
(its sign-in form) once the API refuses the cookie. A copy of the cookie,
which another service on the same host may be sent, is good for as long."""

SESSION_SKEW_SECONDS: Final = 60
"""How far in the future a session's date may be (clocks of one host agree)."""

wall_clock = time.time
"""The clock sessions are dated by."""


def session_value(token: str, issued: int) -> str:
    """What :data:`TOKEN_COOKIE` holds: ``<issued>.<mac>``, where ``issued``
    is when the session was made (Unix seconds) and ``mac`` is
    ``HMAC-SHA256(token, "stoat-session:<issued>")`` in hex.

    Not the token itself: browsers do not keep cookies apart by port, so any
    other service on the same host name may be sent this cookie. What it
    learns opens the API only as this cookie, never as the
    ``Authorization: Bearer`` token, and only until :data:`SESSION_SECONDS`
    after ``issued``: the date is under the MAC. It opens all of the API
    that the cookie does, state changes included: the origin check on
    those (``_guard.py``) keeps other sites' pages in a browser from using
    the browser's cookie, but a program holding a copy sends the origin it
    likes.
    """
    return f"{issued}.{_session_mac(token.encode(), issued).decode()}"


def _session_mac(token: bytes, issued: int) -> bytes:
    message = f"{SESSION_KEY}:{issued}".encode()
    return hmac.new(token, message, hashlib.sha256).hexdigest().encode()


def session_valid(token: bytes, value: str) -> bool:
    """Whether ``value`` is a :func:`session_value` of ``token`` made less
    than :data:`SESSION_SECONDS` ago. The MAC is compared in constant time,
    whatever the rest of ``value`` looks like."""
    issued_text, _, mac = value.partition(".")
    # ASCII digits only, and few (int() of a long string costs, a date needs 10).
    digits = issued_text.isascii() and issued_text.isdigit() and len(issued_text) <= 12
    issued = int(issued_text) if digits else 0
    dated = digits and str(issued) == issued_text  # as session_value writes it
    matches = hmac.compare_digest(mac.encode(), _session_mac(token, issued))
    age = wall_clock() - issued
    return matches and dated and -SESSION_SKEW_SECONDS <= age < SESSION_SECONDS


MAX_SESSION_COOKIES: Final = 16
"""The most :data:`TOKEN_COOKIE` values of one request that are checked."""


def session_cookies(headers: Headers) -> list[str]:
    """Each :data:`TOKEN_COOKIE` value the request sends, the first
    :data:`MAX_SESSION_COOKIES` of them.

    A browser sends a host's cookies of every port, so a page of another
    service on the host can set cookies of this name for other paths, which
    the browser sends too; ``Request.cookies`` keeps only one value of a
    name, which could then be one of those and log the dashboard out. So
    every value is read, as ``Cookie`` headers carry them (``name=value``
    pairs split by ``;``; a session value needs no quoting). This cannot
    stop such a page from logging the dashboard out for good: a cookie of
    the same name and path replaces the dashboard's in the browser, and
    more than :data:`MAX_SESSION_COOKIES` of longer paths come before it.
    It lets no one in either way.
    """
    values: list[str] = []
    for header in headers.getlist("cookie"):
        for pair in header.split(";"):
            name, equals, value = pair.partition("=")
            if equals and name.strip() == TOKEN_COOKIE:
                values.append(value.strip())
                if len(values) == MAX_SESSION_COOKIES:
                    return values
    return values
