"""The parser of each setting's text: a variable's (:data:`PARSERS`), or a
flag's where it is not the same (:data:`FLAG_PARSERS`). Each gets the
variable's (or flag's) name, for its one-line :class:`SettingsError`; the
value it returns is then normalised and validated (``_checks``)."""

from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING, Final

from stoat_ferret.library import ThreadPriority
from stoat_ferret.settings._checks import SettingsError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

_WHOLE_NUMBER: Final = re.compile(r"[+-]?[0-9]{1,30}", re.ASCII)
_DECIMAL: Final = re.compile(
    r"[+-]?([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})([eE][+-]?[0-9]{1,4})?", re.ASCII
)
"""What a number setting takes: ASCII digits (``int()`` and ``float()`` would
also take "٣", an Arabic-Indic three, and "8_000", which no one means), and
few enough of them that Python's limit on the digits of a number (4,300) is
never reached: a larger value is out of every range anyway."""


def _parse_int(name: str, raw: str) -> int:
    text = raw.strip()
    if _WHOLE_NUMBER.fullmatch(text) is None:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}")
    return int(text)


def _parse_float(name: str, raw: str) -> float:
    text = raw.strip()
    if text.lower().lstrip("+-") in ("inf", "infinity", "nan"):
        raise SettingsError(f"{name} must be a finite number of seconds, got {raw!r}")
    if _DECIMAL.fullmatch(text) is None:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}")
    value = float(text)
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number of seconds, got {raw!r}")
    return value


def _parse_roots(name: str, raw: str) -> tuple[str, ...]:
    roots = tuple(part for part in raw.split(os.pathsep) if part)
    if not any(root.strip() for root in roots):
        # Separators alone are more likely a variable that expanded to
        # nothing ("$VIDEOS:") than a wish for no roots (any directory).
        raise SettingsError(f"{name} names no directory, only separators: {raw!r}")
    for root in roots:
        # "/a: /b" is more likely a space too many than a directory " /b"
        # (relative, from the working directory): a flag may name one.
        if root != root.strip():
            raise SettingsError(
                f"{name}: {root!r} begins or ends with white space (name such a"
                " directory with --scan-root)"
            )
        _unexpanded(name, root)
    return roots


def _parse_one_root(name: str, raw: str) -> tuple[str, ...]:
    """One ``--scan-root`` flag: one directory, whatever it holds (``:``, or a
    space at either end, too); nothing for white space alone."""
    return (_unexpanded(name, raw),) if raw.strip() else ()


def _parse_list(_: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_text(_: str, raw: str) -> str:
    return raw


def _parse_file(name: str, raw: str) -> str:
    # Path() drops a final "/" or "/.": a directory meant would become a file's name.
    if raw.endswith(("/", "/.")):
        raise SettingsError(f"{name} must be the path of a file, not a directory, got {raw!r}")
    return _unexpanded(name, raw)


def _unexpanded(name: str, raw: str) -> str:
    """``raw``, unless it begins with ``~``: only a shell makes that a home
    directory (systemd's ``Environment=`` does not), and taken as it is, it
    would be a directory ``~`` in the working one."""
    if raw.startswith("~"):
        raise SettingsError(f"{name}: a '~' is not expanded here: write the path out, got {raw!r}")
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
PARSERS: Final[dict[str, Callable[[str, str], object]]] = {
    "host": _parse_text,
    "port": _parse_int,
    "database_path": _parse_file,
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

# Field name -> parser of one flag's text, where it is not the variable's.
FLAG_PARSERS: Final[dict[str, Callable[[str, str], object]]] = {
    "scan_roots": _parse_one_root,
}


BLANK_REFUSED: Final = {
    "api_token": "unset it to serve without a token",
    "scan_roots": "unset it to let a scan read any directory",
}
"""Settings whose variable (``STOAT_`` and the name) is refused when set but
blank, with what to do instead: an empty variable counts as unset, but for
these two that opens the service up, and ``STOAT_API_TOKEN=$TOKEN`` with
``TOKEN`` unset is more likely a mistake than a choice."""


def check_blank(environ: Mapping[str, str], flagged: Collection[str] = ()) -> None:
    """Refuse a variable of :data:`BLANK_REFUSED` set to nothing but white
    space, unless a flag gave its setting (``flagged``: the settings' names).

    Raises:
        SettingsError: naming it, and what to do instead.
    """
    for field, instead in BLANK_REFUSED.items():
        name = f"STOAT_{field.upper()}"
        if field not in flagged and name in environ and not environ[name].strip():
            raise SettingsError(
                f"{name} is set but blank (a variable that expanded to nothing?): {instead}"
            )
