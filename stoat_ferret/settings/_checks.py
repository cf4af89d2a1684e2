"""The rules for each setting's value: its normaliser, its validator.

Here too are :class:`SettingsError`, which they raise (one line naming the
variable), :func:`is_loopback`, and the default of ``STOAT_PROBE_THREADS``
(:func:`default_probe_threads`). Nothing here reads the environment: the
fields of :class:`Settings` (in ``_settings``) name their normalisers and
validators; ``_parsers.PARSERS`` maps each field to the parser of its
variable's, or flag's, text.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import math
import os
import re
import stat
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import idna

from stoat_ferret.library import real_path

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import attrs

    from stoat_ferret.settings._settings import Settings

LOG_LEVELS: Final = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
"""The level names loguru knows, the only values ``STOAT_LOG_LEVEL`` takes."""


LOG_FORMATS: Final = ("text", "json")
"""``STOAT_LOG_FORMAT``: loguru's coloured text lines, or one JSON object a line."""


class SettingsError(ValueError):
    """Raised for a setting that cannot be used; the message is one line."""


def _env(attribute: attrs.Attribute[Any]) -> str:
    return str(attribute.metadata["env"])


def _check_host(_: Settings, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        raise SettingsError(f"{_env(attribute)} must be a host name or address, got {value!r}")


def _check_port(_: Settings, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise SettingsError(
            f"{_env(attribute)} must be a port number from 0 to 65535, got {value!r}"
        )


def _count_up_to(maximum: int) -> Callable[[Settings, attrs.Attribute[int], int], None]:
    """A validator of a count: a whole number from 1 to ``maximum``.

    The maximum is far above any sensible value; it keeps a typo (an extra
    zero or three) from making the service allocate for minutes and then fail.
    """

    def check(_: Settings, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
            raise SettingsError(
                f"{_env(attribute)} must be a whole number from 1 to {maximum:,}, got {value!r}"
            )

    return check


def _check_positive_seconds(_: Settings, attribute: attrs.Attribute[float], value: float) -> None:
    if not _is_finite_number(value) or value <= 0:
        raise SettingsError(f"{_env(attribute)} must be a number of seconds > 0, got {value!r}")


def _check_seconds(_: Settings, attribute: attrs.Attribute[float], value: float) -> None:
    if not _is_finite_number(value) or value < 0:
        raise SettingsError(f"{_env(attribute)} must be a number of seconds >= 0, got {value!r}")


def _is_finite_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _check_database_path(_: Settings, attribute: attrs.Attribute[Path], value: Path) -> None:
    if not isinstance(value, Path) or value.name in ("", ".", ".."):
        raise SettingsError(f"{_env(attribute)} must be the path of a file, got {str(value)!r}")
    _relative(attribute, value)
    try:
        mode = os.stat(value).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return  # created when the service starts (or refused then, saying why)
    except OSError as exc:  # denied on the way, a name too long, a link loop...
        reason = exc.strerror or str(exc)
        raise SettingsError(f"{_env(attribute)}: cannot use {value} ({reason})") from None
    if stat.S_ISDIR(mode):
        raise SettingsError(f"{_env(attribute)} is a directory, not a file: {value}")


def _absolute(value: str | os.PathLike[str]) -> Path:
    """``value`` made absolute; left relative if the working directory cannot be
    read (removed since), for the field's validator to refuse (:func:`_relative`):
    a default that a flag or variable replaces is no error."""
    try:
        return Path(value).absolute()  # an absolute path as it is, without the working directory
    except OSError:
        return Path(value)


def _relative(attribute: attrs.Attribute[Any], path: Path) -> None:
    if not path.is_absolute():
        raise SettingsError(
            f"{_env(attribute)}: cannot read the working directory (removed?), which the "
            f"relative path {os.fspath(path)!r} is taken from: give an absolute path"
        )


def _resolve_roots(value: Any) -> tuple[Path, ...]:
    """Resolve every root (symlinks followed) so that requests compare real paths.

    With :func:`real_path`, as the API resolves requested directories: in a
    loop, not with ``os.path.realpath``, which recurses once per link in
    Python 3.11 (a long chain raised ``RecursionError``). A root that cannot
    be resolved is left as given, for :func:`_check_roots`. Two spellings of
    one directory (``/home/me/videos`` and ``/var/home/me/videos``) are one
    root, listed once.
    """
    roots: dict[Path, None] = {}
    for root in value:
        absolute = _absolute(root)
        try:
            if not absolute.is_absolute():  # no working directory: refused as relative
                raise ValueError(absolute)
            roots[Path(real_path(os.fspath(absolute)))] = None
        except (OSError, ValueError):
            roots[absolute] = None
    return tuple(roots)


def _ways(value: Any) -> tuple[Path, ...]:
    """Every place resolving the roots as spelt reads (each link's path, in
    the roots' spellings and in their links' targets), in order, once each.
    A root that cannot be resolved adds what was read before it failed
    (:func:`_check_roots` refuses it)."""
    places: dict[Path, None] = {}

    def record(resolved: str, part: str, linked: bool) -> None:
        if part != "..":
            places[Path(resolved, part)] = None

    for root in value:
        with contextlib.suppress(OSError, ValueError):
            if (absolute := _absolute(root)).is_absolute():  # else refused as relative
                real_path(os.fspath(absolute), vet=record)
    return tuple(places)


def _links(ways: Sequence[Path]) -> tuple[tuple[Path, Path], ...]:
    """The links among ``ways`` (:func:`_ways`), each with its resolved path:
    a link's absolute target written with one (``/home/me/videos/a.mp4``,
    where ``/home`` is a link to ``var/home``) names the file under the
    resolved path (``/var/home/me/videos/a.mp4``)."""
    links: dict[Path, Path] = {}
    for way in ways:
        with contextlib.suppress(OSError, ValueError):
            if os.path.islink(way):
                links[way] = Path(real_path(os.fspath(way)))
    return tuple(links.items())


def _paths(value: Any) -> tuple[Path, ...]:
    """A converter: ``value``'s items as paths."""
    return tuple(Path(item) for item in value)


def _path_pairs(value: Any) -> tuple[tuple[Path, Path], ...]:
    """A converter: ``value``'s pairs as pairs of paths."""
    return tuple((Path(first), Path(second)) for first, second in value)


def _check_roots(_: Settings, attribute: attrs.Attribute[tuple[Path, ...]], value: Any) -> None:
    for root in value:
        _relative(attribute, root)
        try:
            is_directory = stat.S_ISDIR(os.stat(root).st_mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # the kernel follows 40 links, as real_path does
                raise SettingsError(
                    f"{_env(attribute)}: {root} is a symlink loop or a chain of too many links"
                ) from None
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):  # denied, too long...
                raise SettingsError(
                    f"{_env(attribute)}: cannot use {root} ({exc.strerror})"
                ) from None
            is_directory = False
        if not is_directory:
            raise SettingsError(f"{_env(attribute)}: {root} is not an existing directory")
        try:
            os.fspath(root).encode()
        except UnicodeEncodeError:  # bytes Python decoded with surrogates
            raise SettingsError(
                f"{_env(attribute)}: {os.fspath(root)!r} is not UTF-8, which every path"
                " the API takes is: no scan could name it"
            ) from None


def _check_log_level(_: Settings, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in LOG_LEVELS:
        choices = ", ".join(LOG_LEVELS)
        raise SettingsError(f"{_env(attribute)} must be one of {choices}, got {value!r}")


def _check_names(_: Settings, attribute: attrs.Attribute[tuple[str, ...]], value: Any) -> None:
    # Compared with the request's Host, port aside (_guard.py): a scheme, a
    # port or a wildcard here would match nothing, and the service would
    # answer 400 to every request by that name.
    for name in value:
        if not isinstance(name, str) or not (_HOST_NAME.fullmatch(name) or _is_address(name)):
            unicode = isinstance(name, str) and not name.isascii()
            why = " (a Unicode name browsers read alike, or its xn-- form)" if unicode else ""
            raise SettingsError(
                f"{_env(attribute)} must be host names or addresses, without scheme, "
                f"port or wildcard{why}, got {name!r}"
            )


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


# What follows "scheme://" in an origin: a host name (underscores too, as
# Docker's service names have; a trailing dot) or an IPv4 address, or an IPv6
# address in brackets, then an optional port (lower case: normalised first).
_LABEL: Final = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOST_NAME: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_ORIGIN_HOST: Final = re.compile(
    rf"(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?"
)


def _check_origins(_: Settings, attribute: attrs.Attribute[tuple[str, ...]], value: Any) -> None:
    for origin in value:
        scheme, separator, rest = origin.partition("://")
        host = _ORIGIN_HOST.fullmatch(rest)
        port = host and host["port"]
        if scheme not in ("http", "https") or not separator or not host or int(port or 0) > 65535:
            raise SettingsError(
                f"{_env(attribute)} must be origins like https://host:port "
                f"(no path), got {origin!r}"
            )


def _normalise_names(value: Any) -> tuple[str, ...]:
    # Host names compare case-blind; an IPv6 address is matched without brackets.
    return tuple(
        _ascii_name(str(name).strip().removeprefix("[").removesuffix("]")) for name in value
    )


def _ascii_name(name: str) -> str:
    """A Unicode host name in the form a browser sends it (``bücher.example``:
    ``xn--bcher-kva.example``); any other name as it is (checked after)."""
    if name.isascii():
        return name.lower()
    try:  # not lower-cased first: UTS 46 maps case itself (a final Σ is not ς)
        return ".".join(_ascii_label(label) for label in name.split("."))
    except UnicodeError:
        return name  # refused by _check_names


def _ascii_label(label: str) -> str:
    if label.isascii():
        return label.lower()
    try:
        # UTS 46 without the transitional mapping, as browsers do: Python's
        # own "idna" codec (IDNA 2003) makes straße strasse, not xn--strae-oqa.
        return idna.encode(label, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError:
        pass
    # A symbol IDNA 2008 refuses and browsers take (☃), as both spell it; not
    # a label IDNA 2003 would change (a joiner dropped, ß made ss): refused.
    converted = label.encode("idna")
    if converted.decode("idna") != label.lower():
        raise UnicodeError(f"{label!r} has no one form browsers agree on")
    return converted.decode("ascii")


def _bare_host(value: Any) -> Any:
    """An address to listen on without the brackets of an IPv6 literal (``[::1]``)."""
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        return value[1:-1]
    return value


def _normalise_origins(value: Any) -> tuple[str, ...]:
    return tuple(str(origin).strip().lower().removesuffix("/") for origin in value)


MIN_TOKEN_CHARS: Final = 16
"""Shortest ``STOAT_API_TOKEN`` accepted: a guessable token protects nothing."""

# RFC 6750's b64token: safe in a header, a cookie and a URL fragment alike.
_TOKEN_CHARS: Final = frozenset(string.ascii_letters + string.digits + "-._~+/=")


def _check_token(_: Settings, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    # Never quote the value: it is a secret.
    if not isinstance(value, str) or len(value) < MIN_TOKEN_CHARS:
        raise SettingsError(f"{_env(attribute)} must be at least {MIN_TOKEN_CHARS} characters")
    if not set(value) <= _TOKEN_CHARS:
        raise SettingsError(
            f"{_env(attribute)} may hold only letters, digits and - . _ ~ + / = "
            "(try: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )


def is_loopback(host: str) -> bool:
    """True if ``host`` is ``localhost`` or a loopback address (not ``0.0.0.0``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:  # any other name: it may resolve to anything
        return False


def is_local_name(host: str) -> bool:
    """True if ``host`` names this machine only: :func:`is_loopback`, or a name
    under ``.localhost``, which resolves to loopback (RFC 6761)."""
    return is_loopback(host) or host.lower().rstrip(".").endswith(".localhost")


def _check_log_format(_: Settings, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in LOG_FORMATS:
        choices = " or ".join(LOG_FORMATS)
        raise SettingsError(f"{_env(attribute)} must be {choices}, got {value!r}")


MAX_DEFAULT_PROBE_THREADS: Final = 8
"""The most probe threads the default gives, however many cores."""


def usable_cores() -> int:
    """How many cores this process may run on: its CPU affinity, not the machine's count.

    A container or ``taskset`` may give the process 2 of 64 cores;
    ``os.cpu_count()`` would still say 64.
    """
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - no affinity outside Linux
        return os.cpu_count() or 1


def default_probe_threads(cores: int | None) -> int:
    """Threads that probe files at once unless ``STOAT_PROBE_THREADS`` says.

    One per usable core (:func:`usable_cores`), at most
    :data:`MAX_DEFAULT_PROBE_THREADS`. Probe threads run under ``SCHED_IDLE``
    by default (``STOAT_PROBE_PRIORITY``), so the event loop takes a core
    from them the moment it wakes, and no core need be left idle for it.
    Measured through the HTTP API on 2 cores, a first scan ran at 0.49x a
    bare PyAV loop with one thread and at 0.84x with two. A probe holds the
    GIL part of the time, so past a few threads more add little; the cap
    keeps a large machine from starting dozens.
    """
    return max(1, min(MAX_DEFAULT_PROBE_THREADS, cores or 1))
