"""Host names and web origins as the request guard (``_guard.py``) compares them.

A ``Host`` header is split into its lower-case name and port (an IPv6 name
in brackets), an origin into scheme, host and port (the scheme's default
filled in); anything malformed is None, never an exception.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from starlette.datastructures import Headers

    from stoat_ferret.settings import Settings

_MAX_PORT: Final = 65_535

LOOPBACK_NAMES: Final = ("localhost", "127.0.0.1", "::1")


def trusted_hosts(settings: Settings) -> frozenset[str]:
    """The host names a request may be addressed to, lower case, IPv6 without brackets.

    ``STOAT_HOST`` (unless it is a wildcard address, which names no host),
    the loopback names, and ``STOAT_ALLOWED_HOSTS``.
    """
    bound = settings.host.lower().removeprefix("[").removesuffix("]")
    wildcard = bound in ("0.0.0.0", "::")
    return frozenset((*LOOPBACK_NAMES, *(() if wildcard else (bound,)), *settings.allowed_hosts))


def split_host(header: str) -> tuple[str, int | None] | None:
    """A ``Host`` header's lower-case name and port (``[::1]:8000`` -> ``("::1", 8000)``).

    None if malformed (a name in brackets that is no IPv6 address, a port
    outside 1-65535); the port is None when the header names none.
    """
    if header.startswith("["):
        name, bracket, port = header[1:].partition("]")
        if not bracket or (port and not port.startswith(":")) or not _is_ipv6(name):
            return None
        port = port[1:]
    else:
        name, _, port = header.partition(":")
    # ASCII digits only: str.isdigit says yes to "²", which int() refuses;
    # and at most five after any leading zeros, as a port has (int() refuses
    # more than 4,300 digits, leading zeros counted).
    digits = port.lstrip("0") or "0"
    if not name or (port and not (port.isascii() and port.isdigit() and len(digits) <= 5)):
        return None
    number = int(digits) if port else None
    if number is not None and not 1 <= number <= _MAX_PORT:
        return None
    return name.lower(), number


def _is_ipv6(name: str) -> bool:
    try:
        ipaddress.IPv6Address(name)
    except ValueError:
        return False
    return True


def host_name(header: str) -> str | None:
    """The name part of a ``Host`` header (``[::1]:8000`` -> ``::1``); None if malformed."""
    split = split_host(header)
    return None if split is None else split[0]


OriginKey = tuple[str, str, int]
"""An origin as compared: scheme, lower-case host (IPv6 without brackets), port."""

DEFAULT_PORTS: Final = {"http": 80, "https": 443}

HTTP_SCHEMES: Final = {"ws": "http", "wss": "https"}
"""A WebSocket's scheme, as its page's ``Origin`` spells it."""


# An origin as a browser serialises it (RFC 6454, section 6.2): scheme,
# "://", host and port, nothing else; checked in full by urlsplit after.
_SERIALISED: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\\\s]+")


def origin_key(origin: str) -> OriginKey | None:
    """``origin`` as compared, the scheme's default port filled in; None if it is no
    http(s) origin (``null``, another scheme, a bad port) or not written as a
    browser writes one (a path, even ``/``, a query, a fragment, a user name)."""
    text = origin.strip()
    if not _SERIALISED.fullmatch(text):
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname, DEFAULT_PORTS[scheme] if port is None else port


def claimed_origin(headers: Headers) -> str | None:
    """The origin a browser names: ``Origin``, else the ``Referer``'s; None if neither is sent.

    A ``Referer`` that names no origin gives ``"null"``, which no service has,
    and so does one with a user name or a backslash before its host (a
    browser sends neither: ``http://evil.example\\@localhost/`` is no page of
    localhost's).
    """
    origin = headers.get("origin")
    referer = headers.get("referer")
    if origin is not None or referer is None:
        return origin
    try:
        parts = urlsplit(referer.strip())
        _ = parts.port  # raises ValueError for a port that is not one
    except ValueError:
        return "null"
    host = parts.netloc
    if not (parts.scheme and host) or "@" in host or "\\" in host:
        return "null"
    return f"{parts.scheme}://{host}"
