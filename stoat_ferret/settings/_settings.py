"""The :class:`Settings` class, and reading it from the environment.

Its fields take their validators and normalisers from ``_checks``, and
:meth:`Settings.from_environ` parses each variable with ``_parsers.PARSERS``;
it refuses an unknown ``STOAT_*`` variable (:func:`check_known`) and a blank
token or roots (``_parsers.check_blank``), and redacts a secret from its errors."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

import attrs

from stoat_ferret.library import ThreadPriority
from stoat_ferret.settings._checks import (
    MIN_TOKEN_CHARS,
    SettingsError,
    _absolute,
    _bare_host,
    _check_database_path,
    _check_host,
    _check_log_format,
    _check_log_level,
    _check_names,
    _check_origins,
    _check_port,
    _check_positive_seconds,
    _check_roots,
    _check_seconds,
    _check_token,
    _count_up_to,
    _env,
    _links,
    _normalise_names,
    _normalise_origins,
    _path_pairs,
    _paths,
    _resolve_roots,
    _ways,
    default_probe_threads,
    is_local_name,
    is_loopback,
    usable_cores,
)
from stoat_ferret.settings._parsers import PARSERS, check_blank

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

MAX_WORKERS: Final = 1024
"""The most ``STOAT_MAX_WORKERS`` may be: jobs running at once, each a task."""

MAX_PENDING: Final = 1_000_000
"""The most ``STOAT_MAX_PENDING`` may be: jobs waiting, each a record in memory."""

MAX_PROBE_THREADS: Final = 256
"""The most ``STOAT_PROBE_THREADS`` may be: threads, each with FFmpeg's state."""

MAX_STREAMS: Final = 10_000
"""The most ``STOAT_MAX_STREAMS`` may be: open connections (uvicorn's limit is this plus 100)."""


class ExposureError(SettingsError):
    """Raised when the settings would serve other machines without a token or
    scan roots (:meth:`Settings.check_exposure`), listening on ``host``:``port``."""

    def __init__(self, message: str, *, host: str, port: int) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


@attrs.frozen(kw_only=True)
class Settings:
    """Everything the service reads from its environment, checked on construction.

    Build it with :meth:`from_environ` in the service (or tests: directly,
    where a root named through a link is then known by its resolved path
    alone). Construction touches the filesystem (scan roots are resolved and
    checked), so it belongs at start-up, before the event loop runs.

    Raises:
        SettingsError: a value is out of range, or a scan root is not a directory.
    """

    host: str = attrs.field(
        default="127.0.0.1",
        converter=_bare_host,
        validator=_check_host,
        metadata={
            "env": "STOAT_HOST",
            "help": "address to listen on (must resolve; a name, to an IPv4 address)",
        },
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
            "help": (
                f"directories a scan may touch, {os.pathsep!r}-separated in the variable"
                " (a flag names one, which may hold it)"
            ),
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
        validator=_count_up_to(MAX_WORKERS),
        metadata={"env": "STOAT_MAX_WORKERS", "metavar": "N", "help": "jobs running at once"},
    )
    max_pending: int = attrs.field(
        default=1000,
        validator=_count_up_to(MAX_PENDING),
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
        validator=_count_up_to(MAX_PROBE_THREADS),
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
            "help": "idle: probe threads and processes use only cores nothing else wants (Linux)",
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
            "repeat": "a host name",
            "default": "none",
            "help": "more names the service is reached by (the Host header's, without port; "
            "a Unicode name in either form), ','-separated "
            "in the variable and in a flag; its own host, localhost, 127.0.0.1 and ::1 always are; "
            "a name other than loopback's needs the API token and scan roots",
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
            "repeat": "an origin",
            "default": "none",
            "help": "more origins (https://host:port) the dashboard may be served from, as a "
            "proxy's public one, ','-separated in the variable and in a flag; no CORS headers sent",
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
        validator=_count_up_to(MAX_STREAMS),
        metadata={
            "env": "STOAT_MAX_STREAMS",
            "metavar": "N",
            "help": "event streams and /wait calls open at once before 503",
        },
    )
    # Not settings: from the roots as spelt, by from_environ alone (_checks._ways,
    # _links); a direct construction or evolve keeps what it is given.
    scan_root_ways: tuple[Path, ...] = attrs.field(default=(), converter=_paths)
    scan_root_links: tuple[tuple[Path, Path], ...] = attrs.field(default=(), converter=_path_pairs)

    def check_exposure(self) -> None:
        """Refuse to serve other machines without a token and scan roots.

        Other machines may reach it if it listens beyond loopback (``127.1``
        too: only written out), or answers to a name in ``allowed_hosts`` not loopback's.

        Raises:
            SettingsError: either is so, and ``api_token`` or ``scan_roots``
                is missing; the message says which and why.
        """
        others = [name for name in self.allowed_hosts if not is_local_name(name)]
        if not is_loopback(self.host):
            why = f"STOAT_HOST={self.host} is not localhost or a written-out loopback address"
        elif others:
            why = f"STOAT_ALLOWED_HOSTS names {', '.join(others)} (a reverse proxy's name)"
        else:
            return
        missing = []
        if self.api_token is None:
            missing.append("STOAT_API_TOKEN (or any client could use the API)")
        if not self.scan_roots or Path("/") in self.scan_roots:  # / is any directory
            missing.append("STOAT_SCAN_ROOTS, not / (or a scan could read any directory)")
        if missing:
            raise ExposureError(
                f"{why}, so other machines may reach the service: set {' and '.join(missing)}",
                host=self.host,
                port=self.port,
            )

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """Read the ``STOAT_*`` variables; unset or empty ones take their default (but two).

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
        check_blank(source, values)
        # Every secret as given, before any variable is read: one pasted into
        # another variable too (a swapped template) is redacted from its error.
        secrets = secret_values(source, cls)
        try:
            for field in setting_fields(cls):
                name = _env(field)
                raw = source.get(name, "").strip()
                if raw and field.name not in values:
                    values[field.name] = PARSERS[field.name](name, raw)
                    if field.metadata.get("secret"):
                        secrets.append(str(values[field.name]))
            if "scan_roots" in values:
                ways = values.setdefault("scan_root_ways", _ways(values["scan_roots"]))
                values.setdefault("scan_root_links", _links(ways))
            settings = cls(**values)
            settings.check_exposure()
        except ExposureError as exc:
            redacted = _redacted(str(exc), secrets)
            raise ExposureError(redacted, host=exc.host, port=exc.port) from None
        except SettingsError as exc:
            raise SettingsError(_redacted(str(exc), secrets)) from None
        return settings


def secret_values(
    environ: Mapping[str, str], settings_class: type[Settings] | None = None
) -> list[str]:
    """The values the secret variables (the token) of ``settings_class``
    (:class:`Settings` when None) have in ``environ``, as given."""
    return [
        raw
        for field in setting_fields(settings_class or Settings)
        if field.metadata.get("secret") and (raw := environ.get(_env(field), "").strip())
    ]


def redact_secrets(message: str, environ: Mapping[str, str] | None = None) -> str:
    """``message`` without the value of any secret variable of ``environ``
    (``os.environ`` when None): for an error about the settings, the host or
    the database said after :meth:`Settings.from_environ` (which redacts its own)."""
    return _redacted(message, secret_values(os.environ if environ is None else environ))


REDACTED: Final = "<redacted>"
"""What a secret's value is replaced by in a message."""


def _redacted(message: str, secrets: Sequence[str]) -> str:
    """``message`` without any secret's value long enough to be a token
    (:data:`MIN_TOKEN_CHARS`: a shorter one is refused as a token, and
    redacting a few letters would garble every word that holds them): in any
    case (a setting may fold a value's case before it quotes it), as given,
    as ``repr`` escapes it, or as a path's part (its runs of ``/`` and its
    ``/./`` made one ``/``, an end ``/`` dropped, as ``pathlib`` does; its
    leading ``/`` too, as when it is joined to a directory). In one pass,
    the longest form first."""
    forms = {
        form
        for secret in secrets
        if len(secret) >= MIN_TOKEN_CHARS
        for path in (str(PurePosixPath(secret)),)
        # a form too short to be a token (one of "////...": "/") is no secret
        for form in (secret, repr(secret)[1:-1], path, path.lstrip("/"))
        if len(form) >= MIN_TOKEN_CHARS
    }
    if not forms:
        return message
    pattern = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
    return re.sub(pattern, REDACTED, message, flags=re.IGNORECASE)


def known_variables() -> tuple[str, ...]:
    """The ``STOAT_*`` variables the service reads, in the order of the fields."""
    return tuple(_env(field) for field in setting_fields(Settings))


def setting_fields(settings_class: type[Settings]) -> tuple[attrs.Attribute[Any], ...]:
    """The fields of ``settings_class`` that are settings (each with its variable)."""
    return tuple(field for field in attrs.fields(settings_class) if "env" in field.metadata)


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
