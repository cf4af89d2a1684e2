"""The service's settings: one frozen attrs class, read from the environment once.

:meth:`Settings.from_environ` is called once, by ``python -m stoat_ferret`` (or by
:func:`stoat_ferret.api.app.create_app` when it is given no settings); nothing
reads the environment anywhere else. A bad value raises :class:`SettingsError`
whose message is one line naming the variable, the rule and the value.

Each field's ``metadata`` describes the setting, and everything a user sees
of it is built from there (``stoat-ferret --help``, its flags, the README's
table, checked by a test), so a field added in the same style appears
everywhere by itself:

``env``       the variable (required)
``help``      one line of meaning (required)
``flag``      the command-line flag; ``--`` and the field name, dashed, if absent
``metavar``   what the flag takes (``N``, ``SECONDS``); the name upper-cased if absent
``default``   the default as shown, where the value itself would mislead
``repeat``    what one occurrence of the flag gives (``"a directory"``): the flag
              may be given again, each time adding to the value, and an
              occurrence that gives none is refused
``secret``    set by the variable only (a token): no flag, which ``ps`` and the
              shell's history would show; the default shows as ``unset``; the
              value is redacted in the errors of :meth:`Settings.from_environ`.
              Give such a field ``repr=False`` too.

A variable that is set but empty counts as unset (its default applies). A
flag (:func:`parse_flag`, passed as ``overrides``) wins over its variable.
:meth:`Settings.from_environ` also refuses, so the service does not start:

* a ``STOAT_*`` variable it does not know (a misspelt ``STOAT_SCAN_ROOT``
  would otherwise silently mean "any directory"), naming the closest known one;
* a ``STOAT_HOST`` other than loopback without ``STOAT_API_TOKEN`` or without
  ``STOAT_SCAN_ROOTS`` (:meth:`Settings.check_exposure`): other machines could
  then start scans of any directory, or read the library, without a token.

Switches that only the tests read start with ``STOATTEST_``, not ``STOAT_``.
"""

from __future__ import annotations

import difflib
import errno
import ipaddress
import math
import os
import stat
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from stoat_ferret.library import ThreadPriority, real_path

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

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


def _check_count(_: Settings, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(f"{_env(attribute)} must be a whole number >= 1, got {value!r}")


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
    if value.is_dir():
        raise SettingsError(f"{_env(attribute)} is a directory, not a file: {value}")


def _absolute(value: str | os.PathLike[str]) -> Path:
    return Path(value).absolute()


def _resolve_roots(value: Any) -> tuple[Path, ...]:
    """Resolve every root (symlinks followed) so that requests compare real paths.

    With :func:`real_path`, as the API resolves requested directories: in a
    loop, not with ``os.path.realpath``, which recurses once per link in
    Python 3.11 (a long chain raised ``RecursionError``). A root that cannot
    be resolved is left as given, for :func:`_check_roots`.
    """
    roots = []
    for root in value:
        absolute = _absolute(root)
        try:
            roots.append(Path(real_path(os.fspath(absolute))))
        except (OSError, ValueError):
            roots.append(absolute)
    return tuple(roots)


def _check_roots(_: Settings, attribute: attrs.Attribute[tuple[Path, ...]], value: Any) -> None:
    for root in value:
        try:
            is_directory = stat.S_ISDIR(os.stat(root).st_mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # the kernel follows 40 links, as real_path does
                raise SettingsError(
                    f"{_env(attribute)}: {root} is a symlink loop or a chain of too many links"
                ) from None
            is_directory = False
        if not is_directory:
            raise SettingsError(f"{_env(attribute)}: {root} is not an existing directory")


def _check_log_level(_: Settings, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in LOG_LEVELS:
        choices = ", ".join(LOG_LEVELS)
        raise SettingsError(f"{_env(attribute)} must be one of {choices}, got {value!r}")


def _check_names(_: Settings, attribute: attrs.Attribute[tuple[str, ...]], value: Any) -> None:
    for name in value:
        if not isinstance(name, str) or not name or any(ch.isspace() for ch in name):
            raise SettingsError(f"{_env(attribute)} must be host names or addresses, got {name!r}")


def _check_origins(_: Settings, attribute: attrs.Attribute[tuple[str, ...]], value: Any) -> None:
    for origin in value:
        scheme, separator, rest = origin.partition("://")
        if scheme not in ("http", "https") or not separator or not rest or "/" in rest:
            raise SettingsError(
                f"{_env(attribute)} must be origins like https://host:port "
                f"(no path), got {origin!r}"
            )


def _normalise_names(value: Any) -> tuple[str, ...]:
    # Host names compare case-blind; an IPv6 address is matched without brackets.
    return tuple(str(name).strip().lower().removeprefix("[").removesuffix("]") for name in value)


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


@attrs.frozen(kw_only=True)
class Settings:
    """Everything the service reads from its environment, checked on construction.

    Build it with :meth:`from_environ` in the service, or directly in tests.
    Construction touches the filesystem (scan roots are resolved and checked),
    so it belongs at start-up, before the event loop runs.

    Raises:
        SettingsError: a value is out of range, or a scan root is not a directory.
    """

    host: str = attrs.field(
        default="127.0.0.1",
        validator=_check_host,
        metadata={"env": "STOAT_HOST", "help": "address to listen on (must resolve)"},
    )
    port: int = attrs.field(
        default=8000,
        validator=_check_port,
        metadata={"env": "STOAT_PORT", "help": "TCP port, 1-65535; 0: one the system picks"},
    )
    database_path: Path = attrs.field(
        default=Path("data/stoat.db"),
        converter=_absolute,
        validator=_check_database_path,
        metadata={
            "env": "STOAT_DATABASE_PATH",
            "flag": "--database",
            "metavar": "FILE",
            "default": "./data/stoat.db",
            "help": "SQLite file of the video library; its directory is created",
        },
    )
    # Invariant: every root is absolute, resolved and an existing directory.
    # Empty means a scan may touch any directory.
    scan_roots: tuple[Path, ...] = attrs.field(
        default=(),
        converter=_resolve_roots,
        validator=_check_roots,
        metadata={
            "env": "STOAT_SCAN_ROOTS",
            "flag": "--scan-root",
            "metavar": "DIR",
            "repeat": "a directory",
            "default": "none (any directory)",
            "help": f"directories a scan may touch, {os.pathsep!r}-separated in the variable",
        },
    )
    job_timeout: float = attrs.field(
        default=300.0,
        validator=_check_positive_seconds,
        metadata={
            "env": "STOAT_JOB_TIMEOUT",
            "metavar": "SECONDS",
            "help": "seconds a scan may run",
        },
    )
    max_workers: int = attrs.field(
        default=2,
        validator=_check_count,
        metadata={"env": "STOAT_MAX_WORKERS", "metavar": "N", "help": "jobs running at once"},
    )
    max_pending: int = attrs.field(
        default=1000,
        validator=_check_count,
        metadata={
            "env": "STOAT_MAX_PENDING",
            "metavar": "N",
            "help": "jobs waiting to run before scans get 503",
        },
    )
    shutdown_grace: float = attrs.field(
        default=10.0,
        validator=_check_seconds,
        metadata={
            "env": "STOAT_SHUTDOWN_GRACE",
            "metavar": "SECONDS",
            "help": "seconds running jobs get at shutdown before they are cancelled",
        },
    )
    probe_threads: int = attrs.field(
        factory=lambda: default_probe_threads(usable_cores()),
        validator=_check_count,
        metadata={
            "env": "STOAT_PROBE_THREADS",
            "metavar": "N",
            "default": "usable cores, 1 to 8",
            "help": "files probed at once, shared by all scans",
        },
    )
    probe_priority: ThreadPriority = attrs.field(
        default=ThreadPriority.IDLE,
        validator=attrs.validators.instance_of(ThreadPriority),
        metadata={
            "env": "STOAT_PROBE_PRIORITY",
            "metavar": "{idle,normal}",
            "help": "idle: probe threads use only cores nothing else wants (Linux)",
        },
    )
    log_level: str = attrs.field(
        default="INFO",
        validator=_check_log_level,
        metadata={
            "env": "STOAT_LOG_LEVEL",
            "metavar": "LEVEL",
            "help": "TRACE, DEBUG, INFO, SUCCESS, WARNING, ERROR or CRITICAL",
        },
    )
    log_format: str = attrs.field(
        default="text",
        validator=_check_log_format,
        metadata={
            "env": "STOAT_LOG_FORMAT",
            "metavar": "{text,json}",
            "help": "json: one JSON object a line, with every structured field",
        },
    )
    allowed_hosts: tuple[str, ...] = attrs.field(
        default=(),
        converter=_normalise_names,
        validator=_check_names,
        metadata={
            "env": "STOAT_ALLOWED_HOSTS",
            "flag": "--allowed-host",
            "metavar": "HOST",
            "repeat": True,
            "default": "none",
            "help": "more names the service is reached by (the Host header), ','-separated "
            "in the variable; its own host, localhost, 127.0.0.1 and ::1 always are",
        },
    )
    allowed_origins: tuple[str, ...] = attrs.field(
        default=(),
        converter=_normalise_origins,
        validator=_check_origins,
        metadata={
            "env": "STOAT_ALLOWED_ORIGINS",
            "flag": "--allowed-origin",
            "metavar": "ORIGIN",
            "repeat": True,
            "default": "none",
            "help": "more origins (https://host:port) the dashboard may be served from, such "
            "as a proxy's public one, ','-separated in the variable; no CORS headers are sent",
        },
    )
    # A secret: kept out of repr (and so out of every log line).
    api_token: str | None = attrs.field(
        default=None,
        validator=_check_token,
        repr=False,
        metadata={
            "env": "STOAT_API_TOKEN",
            "secret": True,
            "default": "unset",
            "help": "when set, every /api/ request needs it as a Bearer token (16+ characters)",
        },
    )
    max_streams: int = attrs.field(
        default=64,
        validator=_check_count,
        metadata={
            "env": "STOAT_MAX_STREAMS",
            "metavar": "N",
            "help": "event streams and /wait calls open at once before 503",
        },
    )

    def check_exposure(self) -> None:
        """Refuse to serve other machines without a token and scan roots.

        Raises:
            SettingsError: ``host`` is not loopback, and ``api_token`` or
                ``scan_roots`` is missing; the message says which and why.
        """
        if is_loopback(self.host):
            return
        missing = []
        if self.api_token is None:
            missing.append("STOAT_API_TOKEN (or any client could use the API)")
        if not self.scan_roots:
            missing.append("STOAT_SCAN_ROOTS (or a scan could read any directory)")
        if missing:
            raise SettingsError(
                f"STOAT_HOST={self.host} is not a loopback address, so other machines can "
                f"reach the service: set {' and '.join(missing)}"
            )

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """Read the ``STOAT_*`` variables; unset or empty ones take their default.

        Args:
            environ: the variables to read; ``os.environ`` when None.
            overrides: field name -> value (a flag's, from :func:`parse_flag`); such
                a field's variable is not read.

        Raises:
            SettingsError: a variable does not parse, its value is out of
                range, a ``STOAT_*`` variable is unknown, or the settings
                fail :meth:`check_exposure`.
        """
        source = os.environ if environ is None else environ
        check_known(source)
        values: dict[str, Any] = dict(overrides or {})
        secrets: list[str] = []
        try:
            for field in attrs.fields(cls):
                name = _env(field)
                raw = source.get(name, "").strip()
                if raw and field.name not in values:
                    if field.metadata.get("secret"):
                        secrets.append(raw)
                    values[field.name] = _PARSERS[field.name](name, raw)
                    if field.metadata.get("secret"):
                        secrets.append(str(values[field.name]))
            settings = cls(**values)
            settings.check_exposure()
        except SettingsError as exc:
            raise SettingsError(_redacted(str(exc), secrets)) from None
        return settings


def _redacted(message: str, secrets: Sequence[str]) -> str:
    """``message`` without the text of any secret, plain or as ``repr`` escapes it."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        for form in (secret, repr(secret)[1:-1]):
            message = message.replace(form, "<redacted>")
    return message


def known_variables() -> tuple[str, ...]:
    """The ``STOAT_*`` variables the service reads, in the order of the fields."""
    return tuple(_env(field) for field in attrs.fields(Settings))


def check_known(environ: Mapping[str, str]) -> None:
    """Refuse a ``STOAT_*`` variable the service does not read.

    Raises:
        SettingsError: naming the first unknown variable and the closest known one.
    """
    known = known_variables()
    for name in sorted(environ):
        if name.startswith("STOAT_") and name not in known:
            closest = difflib.get_close_matches(name, known, n=1, cutoff=0.0)
            hint = f"; did you mean {closest[0]}?" if closest else ""
            raise SettingsError(f"{name} is not a setting of this service{hint}")


@attrs.frozen(kw_only=True)
class Option:
    """One setting as a user meets it: flag (None for a secret), variable, default, meaning."""

    field: str
    flag: str | None
    env: str
    metavar: str
    default: str
    help: str
    repeat: bool
    secret: bool


def options() -> tuple[Option, ...]:
    """Every setting, in the order of :class:`Settings`' fields, from their metadata."""
    return tuple(_option(field) for field in attrs.fields(Settings))


def _option(field: attrs.Attribute[Any]) -> Option:
    meta = field.metadata
    if "env" not in meta or "help" not in meta:
        raise AssertionError(f"Settings.{field.name}: its metadata needs 'env' and 'help'")
    secret = bool(meta.get("secret", False))
    if secret and ("flag" in meta or "repeat" in meta):
        raise AssertionError(f"Settings.{field.name}: a secret has no flag")
    if secret:
        default = "unset"
    elif "default" in meta:
        default = str(meta["default"])
    else:
        value = field.default
        default = str(getattr(value, "value", value))
        if isinstance(value, float) and value.is_integer():
            default = str(int(value))
    return Option(
        field=field.name,
        flag=None if secret else meta.get("flag", "--" + field.name.replace("_", "-")),
        env=_env(field),
        metavar=meta.get("metavar", field.name.upper()),
        default=default,
        help=meta["help"],
        repeat=bool(meta.get("repeat", False)),
        secret=secret,
    )


def parse_flag(field_name: str, texts: Sequence[str]) -> Any:
    """The value of a setting given by its flag, checked as the variable would be.

    Args:
        field_name: the :class:`Settings` field.
        texts: the flag's arguments in order: the last one counts, or, for a
            ``repeat`` flag, each adds to the value.

    Raises:
        SettingsError: one line naming the flag, the rule and the value.
    """
    field = getattr(attrs.fields(Settings), field_name)
    option = _option(field)
    if option.flag is None:
        raise AssertionError(f"Settings.{field_name} is a secret, set by its variable only")
    parsed: list[Any] = [_PARSERS[field_name](option.flag, text.strip()) for text in texts]
    if option.repeat:
        # An occurrence that gives nothing would not add to the value but, as
        # the flag hides its variable, could empty it: no scan roots, any directory.
        for text, part in zip(texts, parsed, strict=True):
            if not part:
                raise SettingsError(f"{option.flag} needs {field.metadata['repeat']}, got {text!r}")
    value: Any = tuple(item for part in parsed for item in part) if option.repeat else parsed[-1]
    # Check it now, by building settings with it (so that a validator reading
    # another field has real settings to read), and name the flag the user
    # typed instead of the variable in the message. The settings built from
    # the flags and the variables are checked again as a whole.
    try:
        Settings(**{field_name: value})
    except SettingsError as exc:
        raise SettingsError(str(exc).replace(option.env, option.flag)) from None
    return value


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None


def _parse_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number of seconds, got {raw!r}")
    return value


def _parse_roots(_: str, raw: str) -> tuple[str, ...]:
    return tuple(part for part in raw.split(os.pathsep) if part.strip())


def _parse_list(_: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_text(_: str, raw: str) -> str:
    return raw


def _parse_level(_: str, raw: str) -> str:
    return raw.upper()


def _parse_lower(_: str, raw: str) -> str:
    return raw.lower()


def _parse_priority(name: str, raw: str) -> ThreadPriority:
    try:
        return ThreadPriority(raw.lower())
    except ValueError:
        choices = " or ".join(priority.value for priority in ThreadPriority)
        raise SettingsError(f"{name} must be {choices}, got {raw!r}") from None


# Field name -> parser of the variable's text; each parser gets the variable's name.
_PARSERS: Final[dict[str, Callable[[str, str], object]]] = {
    "host": _parse_text,
    "port": _parse_int,
    "database_path": _parse_text,
    "scan_roots": _parse_roots,
    "job_timeout": _parse_float,
    "max_workers": _parse_int,
    "max_pending": _parse_int,
    "shutdown_grace": _parse_float,
    "probe_threads": _parse_int,
    "probe_priority": _parse_priority,
    "log_level": _parse_level,
    "log_format": _parse_lower,
    "allowed_hosts": _parse_list,
    "allowed_origins": _parse_list,
    "api_token": _parse_text,
    "max_streams": _parse_int,
}
