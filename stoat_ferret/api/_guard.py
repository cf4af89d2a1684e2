"""Who may talk to the service: one ASGI middleware in front of every route.

The service listens on loopback by default, where any web page the user
visits can send it requests, and after DNS rebinding even read the answers.
So, for every HTTP request and WebSocket handshake, in this order (a refused
handshake is closed with code 1008, which the server answers 403):

=====================================  ======  =====================================
refused when                           status  why
=====================================  ======  =====================================
``Host`` is not a name the service is  400     a rebound name (``evil.example``
reached by (:func:`trusted_hosts`)             pointing at 127.0.0.1) is not one
``Host``, ``Origin``, ``Referer``,     400     each check reads one: a second,
``Sec-Fetch-Site``, ``Authorization``          appended by a proxy, could be the
or ``Content-Type`` is sent more than          one that tells the truth
once
a state-changing method (not ``GET``,  403     a page elsewhere may send a request,
``HEAD``, ``OPTIONS``), or any request         but its browser says where from; a
under ``/api/`` or to ``/metrics``,            read too holds a stream's slot or
whose ``Sec-Fetch-Site`` is not                runs a query (a hidden frame of
``same-origin`` (or ``none``), or,             ``/api/v1/events`` would), so the
without that header, whose ``Origin``          API answers only the service's own
(without one, the ``Referer``'s                pages and clients that are no
origin) is neither the service's own           browser
nor allowed
``STOAT_API_TOKEN`` is set, the path   401     with ``WWW-Authenticate: Bearer``;
is under ``/api/`` or is ``/metrics``,         ``/health``, the dashboard page and
and neither ``Authorization: Bearer            its files stay open
<token>`` nor the session cookie
(``_session.py``) made under
``SESSION_SECONDS`` ago is there
the cookie alone, to                   401     a session is started with the
``POST /api/v1/session``                       token, never renewed with its
                                               cookie: a copy of the cookie
                                               (another service on the host
                                               may be sent it) expires
a state change that only the cookie    403     a browser sends the cookie by
authorises, without an ``Origin`` or           itself; clients that are not
``Referer`` of the service's own, or           browsers send the token
``Sec-Fetch-Site: same-origin``
the body is larger than                413     counted as it arrives, whatever
:data:`~stoat_ferret.api._schemas.             ``Content-Length`` says (see
MAX_BODY_BYTES`, or a ``GET``/``HEAD``         :class:`_BodyLimit`)
has a chunked body
a request of another method than       415     no coding is read (with
``GET``/``HEAD`` has a                         ``Accept-Encoding: identity``): a
``Content-Encoding`` but ``identity``          proxy that decodes would see
                                               another body than the service
=====================================  ======  =====================================

Starlette's ``TrustedHostMiddleware`` makes the first check, but answers in
plain text; every refusal here is the API's JSON ``{"detail": ...}``. The
token is compared in constant time and never logged, nor is the cookie.
"""

from __future__ import annotations

import hmac
from contextlib import suppress
from typing import TYPE_CHECKING, Final, Literal

import attrs
from loguru import logger
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketClose

from stoat_ferret.api._json import ApiJSONResponse
from stoat_ferret.api._origins import (
    DEFAULT_PORTS,
    HTTP_SCHEMES,
    claimed_origin,
    host_name,
    origin_key,
    split_host,
    trusted_hosts,
)
from stoat_ferret.api._schemas import MAX_BODY_BYTES
from stoat_ferret.api._session import SESSION_PATH, session_cookies, session_valid

if TYPE_CHECKING:
    from starlette.datastructures import Headers
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from stoat_ferret.settings import Settings

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing, so need no ``Origin`` check."""

WEB_SCHEMES: Final = ("http://", "https://")
"""How a web page's ``Origin`` begins."""

BODILESS_METHODS: Final = frozenset({"GET", "HEAD"})
"""Methods whose requests take no body."""

TOO_BIG: Final = f"the body is larger than {MAX_BODY_BYTES} bytes"
CHUNKED_GET: Final = "a GET or HEAD request takes no chunked body"
ENCODED: Final = "the body must not be compressed or encoded (no Content-Encoding): send it as is"

_ONCE_ONLY: Final = (
    "host",
    "origin",
    "referer",
    "sec-fetch-site",
    "authorization",
    "content-type",
)
"""Headers a request may carry once at most (a browser sends one of each;
a proxy appending its own would make two, of which these checks, and the
JSON-only check of a state change, read the first)."""
_BEARER_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="stoat_ferret"'}


class RequestGuard:
    """The checks of the table above, as a pure ASGI middleware.

    Args:
        app: the application it guards.
        settings: where the allowed hosts, origins and the token come from.
    """

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.hosts = trusted_hosts(settings)
        self.origins = frozenset(filter(None, map(origin_key, settings.allowed_origins)))
        token = settings.api_token
        self.token = None if token is None else token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        refusal = self.refusal(connection)
        if scope["type"] == "websocket":  # no body to limit
            if refusal is None:
                await self.app(scope, receive, send)
            else:
                await _closed(refusal, scope, receive, send)
            return
        if refusal is not None:
            await refused(refusal, scope, receive, send)
            return
        too_big = self.body_refusal(connection)
        if too_big is not None:  # answered without reading a byte of the body
            await refused(too_big, scope, receive, send)
            return
        limit = _BodyLimit(scope, receive, send)
        await self.app(scope, limit.receive, limit.send)

    @staticmethod
    def body_refusal(connection: HTTPConnection) -> ApiJSONResponse | None:
        """413 for a body its headers already show to be too large; None otherwise.

        A ``GET`` or ``HEAD`` with a chunked body (no length given) is 413 at
        once: an event stream reads its body only to notice the client
        leaving, after its answer has begun, too late for a 413. One with a
        small ``Content-Length`` goes on (a ``GET`` of a ``POST`` route is
        routing's 405).
        """
        headers = connection.headers
        declared = headers.get("content-length", "")
        # ASCII digits only: str.isdigit says yes to "²", which int() refuses;
        # a length of more digits than the limit's (leading zeros aside) is
        # over it, and is not given to int(), which refuses more than 4,300
        # digits, leading zeros counted.
        digits = declared.lstrip("0") or "0"
        if not (declared.isascii() and declared.isdigit()):
            size = 0
        elif len(digits) > len(str(MAX_BODY_BYTES)):
            size = MAX_BODY_BYTES + 1
        else:
            size = int(digits)
        bodiless = connection.scope["method"] in BODILESS_METHODS
        if bodiless and "transfer-encoding" in headers:
            return refuse(413, CHUNKED_GET)
        if size > MAX_BODY_BYTES:
            return refuse(413, TOO_BIG)
        # Every line of the header, each a list: two lines are one list (RFC 9110).
        lines = headers.getlist("content-encoding")
        codings = {coding.strip().lower() for line in lines for coding in line.split(",")}
        if not bodiless and codings - {"", "identity"}:  # empty elements are ignored
            return refuse(415, ENCODED, {"Accept-Encoding": "identity"})
        return None

    def refusal(self, connection: HTTPConnection) -> ApiJSONResponse | None:
        """The answer refusing this request, or None if it may go on."""
        headers = connection.headers
        host = host_name(headers.get("host", ""))
        if host is None or host not in self.hosts:
            return refuse(400, "this service is not reached by that Host name")
        for name in _ONCE_ONLY:  # the checks below read one: a second must not be the true one
            if len(headers.getlist(name)) > 1:
                return refuse(400, f"more than one {name} header")
        # A WebSocket is no CORS request: a page anywhere may open one, as it may POST.
        unsafe = connection.scope.get("method", "WEBSOCKET") not in SAFE_METHODS
        # The path as routing sees it: below a proxy's prefix (root_path), if any.
        path = connection.scope["path"].removeprefix(connection.scope.get("root_path", ""))
        api = path.startswith("/api/") or path == "/metrics"
        if (unsafe or api) and not self.from_here(headers, connection):
            if unsafe:
                return refuse(403, "a request from another web origin may not change anything")
            return refuse(403, "a page on another web origin may not use the API")
        if self.token is None or not api:
            return None
        credential = self.credential(connection)
        if credential is None:
            return refuse(
                401,
                "this service needs its API token: send Authorization: Bearer <token>",
                _BEARER_CHALLENGE,
            )
        if credential == "cookie" and path == SESSION_PATH:
            return refuse(
                401,
                "a session is started with the API token (Authorization: Bearer <token>),"
                " not renewed with its cookie",
                _BEARER_CHALLENGE,
            )
        if credential == "cookie" and unsafe and not self.vouched_for(headers, connection):
            # A browser sends the cookie by itself; the change must say where it is from.
            return refuse(
                403,
                "a change made with the dashboard's cookie must come from the dashboard "
                "(Origin or Sec-Fetch-Site: same-origin); other clients send the token",
            )
        return None

    def from_here(self, headers: Headers, connection: HTTPConnection) -> bool:
        """False if the browser says the request comes from another origin.

        ``Sec-Fetch-Site`` decides when the browser sends it (no page can set
        it): ``same-origin``, or ``none`` for what the user typed (unless an
        ``Origin`` names another web origin), passes, anything else is
        refused. Where the browser sends none (an older
        one, or a URL it does not deem trustworthy: plain http to a name
        other than localhost), the ``Origin``, or failing that the
        ``Referer``'s origin, must be the service's own or an allowed one.
        Deciding on the browser's word first keeps the dashboard working
        behind a proxy whose scheme or host the service does not see. A
        request with none of these (curl, a script) is from no web page; so
        is, to this check, a read made by a browser too old to send
        ``Sec-Fetch-Site`` for a page that asked for no ``Referer`` (the
        README says what that leaves open, and how much of it the token closes).
        """
        site = headers.get("sec-fetch-site")
        if site == "none":
            # What the user typed or opened from a bookmark: a browser sends
            # no web page's Origin with it (a reload keeps its Referer, which
            # behind a proxy may name a scheme the service does not see).
            # An http(s) Origin is a web page's, however it is written (not
            # "null", nor a browser extension's chrome-extension://...).
            origin = headers.get("origin")
            web_page = origin is not None and origin.strip().lower().startswith(WEB_SCHEMES)
            return not web_page or self.same_origin(origin or "", connection)
        if site is not None:
            return site == "same-origin"
        origin = claimed_origin(headers)
        return origin is None or self.same_origin(origin, connection)

    def vouched_for(self, headers: Headers, connection: HTTPConnection) -> bool:
        """True if the browser says the request is same-origin, or names its
        origin and that is the service's own or an allowed one."""
        if headers.get("sec-fetch-site") == "same-origin":
            return True
        origin = claimed_origin(headers)
        return origin is not None and self.same_origin(origin, connection)

    def same_origin(self, origin: str, connection: HTTPConnection) -> bool:
        """True if ``origin`` is the one the request was addressed to, or an allowed one.

        Compared as (scheme, host, port), the port defaulting to the scheme's.
        """
        key = origin_key(origin)
        if key is None:
            return False
        # Not connection.url: it parses the Host header, which may be anything.
        sent_as: str = connection.scope["scheme"]
        scheme = HTTP_SCHEMES.get(sent_as, sent_as)
        host = split_host(connection.headers.get("host", ""))
        own = None if host is None else (scheme, host[0], host[1] or DEFAULT_PORTS.get(scheme))
        return key == own or key in self.origins

    def credential(self, connection: HTTPConnection) -> Literal["bearer", "cookie"] | None:
        """What carries the token: the ``Authorization`` header, else the cookie, else None."""
        assert self.token is not None
        scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
        offered = credentials.strip() if scheme.lower() == "bearer" else ""
        # Both compared, always, each in constant time.
        bearer = hmac.compare_digest(offered.encode(), self.token)
        offered_sessions = session_cookies(connection.headers) or [""]
        cookie = any(session_valid(self.token, value) for value in offered_sessions)
        return "bearer" if bearer else "cookie" if cookie else None


def refuse(status: int, detail: str, headers: dict[str, str] | None = None) -> ApiJSONResponse:
    """A refusal: the API's JSON error body, ``{"detail": detail}``."""
    return ApiJSONResponse({"detail": detail}, status_code=status, headers=headers)


async def refused(response: ApiJSONResponse, scope: Scope, receive: Receive, send: Send) -> None:
    """Send ``response`` (a :func:`refuse`), logged as a refused request."""
    method, path = scope["method"], scope["path"]
    logger.info("request refused", http_status=response.status_code, method=method, path=path)
    await response(scope, receive, send)


async def _closed(response: ApiJSONResponse, scope: Scope, receive: Receive, send: Send) -> None:
    """Refuse a WebSocket handshake: close code 1008 (policy), which the server sends as 403.

    A close before the handshake is accepted carries no reason to the client.
    """
    logger.info("websocket refused", http_status=response.status_code, path=scope["path"])
    await WebSocketClose(code=1008)(scope, receive, send)


@attrs.define(eq=False)
class _BodyLimit:
    """One request's ``receive`` and ``send``, cut off once the body passes the limit.

    Whoever reads the body past :data:`MAX_BODY_BYTES` (the route parsing
    it, or a long response listening for the client to leave) is told the
    client has gone (``http.disconnect``), so nothing raises in the app. The
    guard answers 413 itself if the response has not begun, or else ends it
    where it is; whatever the app sends after that goes nowhere.
    """

    scope: Scope
    _receive: Receive
    _send: Send
    size: int = 0
    started: bool = False
    ended: bool = False
    cut_off: bool = False

    async def receive(self) -> Message:
        if self.cut_off:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > MAX_BODY_BYTES:
                await self.cut()
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.cut_off:
            return
        if message["type"] == "http.response.start":
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.ended = True
        await self._send(message)

    async def cut(self) -> None:
        """Answer 413, or end the response already under way; the app's sends stop here."""
        self.cut_off = True
        with suppress(OSError):  # the client may have left meanwhile: nothing to tell it
            if not self.started:
                await refused(refuse(413, TOO_BIG), self.scope, self._receive, self._send)
            elif not self.ended:
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})
