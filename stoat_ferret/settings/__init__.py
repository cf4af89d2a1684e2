"""The service's settings: one frozen attrs class, read from the environment once.

:meth:`Settings.from_environ` is called once, by ``python -m stoat_ferret`` (or by
:func:`stoat_ferret.api.app.create_app` when it is given no settings); nothing
else in the service reads the environment, except uvicorn's own
``FORWARDED_ALLOW_IPS`` (the README, "Behind a reverse proxy"). A bad value
raises :class:`SettingsError` whose message is one line naming the variable,
the rule and the value.

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
* a ``STOAT_API_TOKEN`` or ``STOAT_SCAN_ROOTS`` set but blank, unless a flag
  gave the setting (``_parsers.BLANK_REFUSED``): empty, they would mean no
  token and any directory;
* a ``STOAT_HOST`` other than loopback, or a name in ``STOAT_ALLOWED_HOSTS``
  other than loopback's (a reverse proxy's), without ``STOAT_API_TOKEN`` or
  without ``STOAT_SCAN_ROOTS`` (:meth:`Settings.check_exposure`): other
  machines could then start scans of any directory, or read the library,
  without a token.

Switches that only the tests read start with ``STOATTEST_``, not ``STOAT_``.

The code lives in private modules: ``_parsers`` (each value's parser),
``_checks`` (its normaliser and validator), ``_settings`` (the class, read
from the environment) and ``_options`` (the flags and the help built from it).
"""

from __future__ import annotations

from stoat_ferret.settings._checks import (
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_DEFAULT_PROBE_THREADS,
    MIN_TOKEN_CHARS,
    SettingsError,
    default_probe_threads,
    is_loopback,
    usable_cores,
)
from stoat_ferret.settings._options import Option, options, parse_flag
from stoat_ferret.settings._settings import (
    ExposureError,
    Settings,
    check_known,
    known_variables,
    redact_secrets,
)

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_DEFAULT_PROBE_THREADS",
    "MIN_TOKEN_CHARS",
    "ExposureError",
    "Option",
    "Settings",
    "SettingsError",
    "check_known",
    "default_probe_threads",
    "is_loopback",
    "known_variables",
    "options",
    "parse_flag",
    "redact_secrets",
    "usable_cores",
]
