"""Where the service listens: the socket family of its host, whether that
host resolves, and the dashboard's address a browser here can open."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Final

from stoat_ferret.settings import SettingsError

if TYPE_CHECKING:
    from stoat_ferret.settings import Settings

_LOOPBACK_FOR_WILDCARD: Final = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def address_family(host: str) -> socket.AddressFamily:
    """The family of the socket the service listens on for ``host``: IPv6 for
    an address with a colon, IPv4 for anything else, names included (as uvicorn
    binds them)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def resolve_host(host: str, port: int, name: str) -> None:
    """Raise SettingsError naming the setting ``name`` unless ``host`` resolves
    to an address of its family (a name of IPv6 addresses only cannot be bound)."""
    try:
        socket.getaddrinfo(host, port, address_family(host), socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise SettingsError(f"{name}: cannot use {host!r} ({exc})") from None


def dashboard_url(settings: Settings, *, port: int | str | None = None) -> str:
    """Where a browser on this machine finds the dashboard.

    A wildcard address (listen on every interface) is not one a browser can
    open, so it is shown as the loopback address of its family. ``port``, when
    given, is the port really bound (``STOAT_PORT=0`` lets the system pick),
    or what to write for one not bound yet.
    """
    host = _LOOPBACK_FOR_WILDCARD.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port if port is None else port}/"
