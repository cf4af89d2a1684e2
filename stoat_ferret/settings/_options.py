"""The settings as a user meets them: :class:`Option` (flag, variable, default,
meaning) built from each field's metadata for ``--help`` and the README, and
:func:`parse_flag`, which checks a flag's value as its variable's would be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from stoat_ferret.settings._checks import SettingsError, _env
from stoat_ferret.settings._parsers import FLAG_PARSERS, PARSERS
from stoat_ferret.settings._settings import Settings, setting_fields

if TYPE_CHECKING:
    from collections.abc import Sequence


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
    return tuple(_option(field) for field in setting_fields(Settings))


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
    if not option.repeat:
        for text in texts:
            if not text.strip():  # a variable's empty value is its default; a flag's, a mistake
                raise SettingsError(f"{option.flag} needs a value, got {text!r}")
    if field_name in FLAG_PARSERS:  # a flag's own parser takes the text as typed
        parsed: list[Any] = [FLAG_PARSERS[field_name](option.flag, text) for text in texts]
    else:
        parsed = [PARSERS[field_name](option.flag, text.strip()) for text in texts]
    if option.repeat:
        # An occurrence that gives nothing would not add to the value but, as
        # the flag hides its variable, could empty it: no scan roots, any directory.
        for text, part in zip(texts, parsed, strict=True):
            if not part:
                raise SettingsError(f"{option.flag} needs {field.metadata['repeat']}, got {text!r}")
    value: Any = tuple(item for part in parsed for item in part) if option.repeat else parsed[-1]
    # Check it now, and name the flag the user typed instead of the variable
    # in the message. Its validator gets real settings (one may read another
    # field), built with this value and unchecked, since checking them would
    # check the other fields' defaults too, such as a ./data/stoat.db that a
    # --database flag is about to replace. The settings built from the flags
    # and the variables are checked again as a whole. attrs' switch is the
    # process's, not thread-safe: this runs while the command line is read,
    # before any thread starts.
    try:
        with attrs.validators.disabled():
            alone = Settings(**{field_name: value})
        if field.validator is not None:
            field.validator(alone, field, getattr(alone, field_name))
    except SettingsError as exc:
        # The setting's name leads the message; the value quoted after may hold it too.
        message = str(exc)
        if message.startswith(option.env):
            message = option.flag + message.removeprefix(option.env)
        raise SettingsError(message) from None
    return value
