"""The command line: a flag per setting, --help, --version, and ``check``."""

from __future__ import annotations

import contextlib
import errno
import grp
import importlib.metadata
import io
import json
import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path, PurePosixPath
from typing import Any

import attrs
import pytest

from stoat_ferret import __version__
from stoat_ferret import _cli as cli_module
from stoat_ferret import _main as main_module
from stoat_ferret import _startup as startup_module
from stoat_ferret._address import dashboard_url
from stoat_ferret._cli import STOP_SIGNALS, build_parser, parse_command
from stoat_ferret._main import main, run
from stoat_ferret._startup import check, check_startup
from stoat_ferret.library import (
    SCHEMA_VERSION,
    StoreError,
    ThreadPriority,
    VideoStore,
    _datadir,
    _lock,
    _thumbdir,
    check_data_directory,
    inspect_database,
    prepare_database,
)
from stoat_ferret.library._schema import MIGRATIONS
from stoat_ferret.settings import ExposureError, Settings, SettingsError, options
from stoat_ferret.settings import _options as options_module
from stoat_ferret.settings import _parsers as parsers_module
from stoat_ferret.settings import _settings as settings_module
from tests.library.support import emptied_beside_its_log, lock_held_elsewhere, record
from tests.library.test_store import _database_at as database_at
from tests.permissions import call_denied
from tests.server import server_environment
from tests.test_settings import readme_row
from tests.videos import write_corrupt_video, write_damaged_database

README = Path(__file__).parent.parent / "README.md"

# Field -> (the flag's text, the value it gives, the variable's text, the value
# it gives). The variable's value differs from the flag's and from the default,
# so each step of "flag, else variable, else default" is seen; a setting with
# two values has the flag give the default. "{tmp}" is the test's tmp_path,
# where the directories a and b exist.
SAMPLES: dict[str, tuple[str, Any, str, Any]] = {
    "host": ("localhost", "localhost", "127.0.0.2", "127.0.0.2"),
    "port": ("9001", 9001, "9002", 9002),
    "database_path": ("{tmp}/flag.db", Path("{tmp}/flag.db"), "{tmp}/var.db", Path("{tmp}/var.db")),
    "scan_roots": ("{tmp}/a", (Path("{tmp}/a"),), "{tmp}/b", (Path("{tmp}/b"),)),
    "job_timeout": ("12.5", 12.5, "30", 30.0),
    "max_workers": ("3", 3, "4", 4),
    "max_pending": ("7", 7, "8", 8),
    "shutdown_grace": ("0", 0.0, "5", 5.0),
    "probe_threads": ("6", 6, "5", 5),  # the default is at most 4
    "probe_priority": ("Idle", ThreadPriority.IDLE, "NORMAL", ThreadPriority.NORMAL),
    "log_level": ("debug", "DEBUG", "Warning", "WARNING"),
    "log_format": ("Text", "text", "JSON", "json"),
    "allowed_hosts": ("Videos.example", ("videos.example",), "b.example", ("b.example",)),
    "allowed_origins": (
        "https://a.example:8443",
        ("https://a.example:8443",),
        "https://b.example",
        ("https://b.example",),
    ),
    "max_streams": ("5", 5, "6", 6),
}


# A reverse proxy's name in STOAT_ALLOWED_HOSTS lets other machines in: the
# token and the roots must be set with it (Settings.check_exposure).
EXPOSED: dict[str, dict[str, str]] = {
    "allowed_hosts": {"STOAT_API_TOKEN": "t" * 32, "STOAT_SCAN_ROOTS": "/tmp"},
}


_SERVE = main_module._serve
"""The real ``_serve``, for the test that needs it to fail as it listens."""


@pytest.fixture(autouse=True)
def _never_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` never serves in these tests: a bad flag no longer refused
    fails its test instead of starting the service in the test process,
    which then serves until it is stopped (a review: the run hung)."""

    def served(*args: object, **kwargs: object) -> int:
        raise AssertionError("main() went on to serve")

    monkeypatch.setattr(main_module, "_serve", served)


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    """``tmp_path`` resolved, holding the directories ``a`` and ``b``."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    return Path(os.path.realpath(tmp_path))


def _fill(value: Any, tmp: Path) -> Any:
    if isinstance(value, str):
        return value.format(tmp=tmp)
    if isinstance(value, Path):
        return Path(str(value).format(tmp=tmp))
    if isinstance(value, tuple):
        return tuple(_fill(item, tmp) for item in value)
    return value


def test_every_setting_has_a_sample() -> None:
    """SAMPLES covers every setting, so a new one cannot go untested."""

    assert sorted(SAMPLES) == sorted(option.field for option in options() if not option.secret)


@pytest.mark.parametrize("field", sorted(SAMPLES))
def test_each_flag_sets_its_field_and_wins_over_its_variable(tmp: Path, field: str) -> None:
    """``--flag X`` with ``STOAT_VAR=Y`` set: the field is X; without the flag, Y."""
    option = next(option for option in options() if option.field == field)
    flag_text, flag_value, variable_text, variable_value = (
        _fill(value, tmp) for value in SAMPLES[field]
    )
    environ = {option.env: variable_text, **EXPOSED.get(field, {})}

    if option.flag is not None:  # a secret has none: test_a_secret_has_no_flag
        _, from_flag, _ = parse_command([option.flag, flag_text], environ)
        assert getattr(from_flag, field) == flag_value
    _, from_variable, _ = parse_command([], environ)
    _, from_default, _ = parse_command([], {})

    assert getattr(from_variable, field) == variable_value
    assert getattr(from_default, field) == getattr(Settings(), field)
    assert variable_value not in (flag_value, getattr(from_default, field))


def test_scan_root_repeats_and_other_flags_take_the_last(tmp: Path) -> None:
    """``--scan-root`` adds a root each time; ``--port`` given twice keeps the last."""

    _, settings, _ = parse_command(
        ["--scan-root", f"{tmp}/a", "--scan-root", f"{tmp}/b", "--port", "1", "--port", "2"], {}
    )

    assert settings.scan_roots == (tmp / "a", tmp / "b")
    assert {tmp / "a", tmp / "b"} <= set(settings.scan_root_ways)
    assert settings.port == 2


def test_a_list_flag_takes_commas_as_its_variable_does(tmp: Path) -> None:
    """``--allowed-host`` and ``--allowed-origin`` split a value on commas,
    as their variables do (the help says so), and add up when repeated."""
    exposed = {"STOAT_API_TOKEN": "t" * 32, "STOAT_SCAN_ROOTS": str(tmp)}

    _, settings, _ = parse_command(
        [
            "--allowed-host",
            "a.example, b.example",
            "--allowed-host",
            "c.example",
            "--allowed-origin",
            "https://a.example,https://b.example",
        ],
        exposed,
    )

    assert settings.allowed_hosts == ("a.example", "b.example", "c.example")
    assert settings.allowed_origins == ("https://a.example", "https://b.example")


def test_a_flag_hides_a_bad_variable() -> None:
    """The variable of a setting given by its flag is not read, so it cannot fail."""

    _, settings, _ = parse_command(["--port", "9000"], {"STOAT_PORT": "eighty"})

    assert settings.port == 9000


@pytest.mark.parametrize(
    ("argv", "environ"),
    [
        pytest.param(["--database", "{db}", "--port", "9000"], {}, id="database-by-flag"),
        pytest.param(["--port", "9000"], {"STOAT_DATABASE_PATH": "{db}"}, id="by-variable"),
    ],
)
def test_a_flag_is_not_refused_for_the_default_of_another_setting(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], environ: dict[str, str]
) -> None:
    """A ./data/stoat.db that is a directory (the default database path, here unusable)
    does not make --port fail when the database is given elsewhere: each flag is checked
    alone, and the whole settings with the database the user named."""
    (tmp / "cwd" / "data" / "stoat.db").mkdir(parents=True)
    monkeypatch.chdir(tmp / "cwd")
    database = str(tmp / "db" / "s.db")

    _, settings, _ = parse_command(
        [arg.format(db=database) for arg in argv],
        {key: value.format(db=database) for key, value in environ.items()},
    )

    assert (settings.port, settings.database_path) == (9000, Path(database))


def test_command_defaults_to_serve_and_takes_check() -> None:
    """No command means serve; ``check`` may come before or after the flags."""

    assert parse_command([], {})[0] == "serve"
    assert parse_command(["check", "--port", "9000"], {})[0] == "check"
    assert parse_command(["--port", "9000", "check"], {})[0] == "check"


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        (["--port", "eighty"], "--port must be a whole number, got 'eighty'"),
        (["--port", "\u0663"], "--port must be a whole number, got '\u0663'"),
        (["--port", "8_000"], "--port must be a whole number, got '8_000'"),
        (["--port", "9" * 5000], "--port must be a whole number, got '999"),  # int() refuses
        (["--job-timeout", "\u0663"], "--job-timeout must be a number of seconds, got '\u0663'"),
        (["--job-timeout", "1_0"], "--job-timeout must be a number of seconds, got '1_0'"),
        (["--port", "70000"], "--port must be a port number from 0 to 65535, got 70000"),
        (["--max-workers", "0"], "--max-workers must be a whole number from 1 to 1,024, got 0"),
        (["--job-timeout", "inf"], "--job-timeout must be a finite number of seconds"),
        (["--scan-root", "/no/such/dir"], "--scan-root: /no/such/dir is not an existing directory"),
        (  # the flag's name replaces the variable's at the start, not in the value
            ["--scan-root", "/no/STOAT_SCAN_ROOTS"],
            "--scan-root: /no/STOAT_SCAN_ROOTS is not an existing directory",
        ),
        (
            ["--scan-root", "~/videos"],
            "--scan-root: a '~' is not expanded here: write the path out, got '~/videos'",
        ),
        (  # not "missing": it cannot be looked at
            ["--scan-root", "/tmp/" + "n" * 300],
            f"--scan-root: cannot use /tmp/{'n' * 300} (File name too long)",
        ),
        (["--scan-root", ""], "--scan-root needs a directory, got ''"),
        (["--database", ""], "--database needs a value, got ''"),  # not the working directory
        (["--database", "/srv/stoat/."], "--database must be the path of a file, not a directory"),
        (["--port", " "], "--port needs a value, got ' '"),
        (["--allowed-host", ""], "--allowed-host needs a host name, got ''"),
        (["--allowed-origin", " "], "--allowed-origin needs an origin, got ' '"),
        (  # a flag names one directory: the separator is a part of its name
            ["--scan-root", "/tmp", "--scan-root", "/no/such:/tmp"],
            "--scan-root: /no/such:/tmp is not an existing directory",
        ),
        (["--log-format", "xml"], "--log-format must be text or json, got 'xml'"),
        (["--probe-priority", "low"], "--probe-priority must be idle or normal, got 'low'"),
        (["--prot", "9000"], "unrecognized arguments: --prot"),
        (["--port"], "argument --port: expected one argument"),
        (["serv"], "unknown command 'serv': serve or check"),
    ],
)
def test_a_bad_flag_exits_2_with_the_usage_and_one_sentence(
    capsys: pytest.CaptureFixture[str], argv: list[str], sentence: str
) -> None:
    """argparse's error: the usage line, then ``stoat-ferret: error: <what is wrong>``."""

    with pytest.raises(SystemExit) as exited:
        main(argv)

    captured = capsys.readouterr()
    assert exited.value.code == 2
    assert captured.out == ""
    usage, error = captured.err.splitlines()
    assert usage == "usage: stoat-ferret [serve|check] [options]"
    assert error.startswith(f"stoat-ferret: error: {sentence}")


@pytest.mark.usefixtures("_restored_logging")
def test_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    """--help exits 0 and shows each setting's flag, variable, default and meaning."""

    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    assert exited.value.code == 0
    _assert_lists_every_setting(capsys.readouterr().out)


def _assert_lists_every_setting(help_text: str) -> None:
    text = " ".join(help_text.split())  # argparse wraps the lines
    for option in options():
        if option.flag is None:
            assert f"{option.env} {option.help} [default: unset]" in text
        else:
            assert f"{option.flag} {option.metavar} {option.help} [{option.env}; default:" in text
            assert f"default: {option.default}" in text


def test_readme_shows_the_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's collapsed ``stoat-ferret --help`` block is its output at 80 columns."""
    monkeypatch.setenv("COLUMNS", "80")
    block = re.search(
        r"<summary><code>stoat-ferret --help</code></summary>\n\n```text\n(.*?)```",
        README.read_text(),
        re.DOTALL,
    )

    assert block is not None
    assert block.group(1) == build_parser().format_help()


def _check_token(_: Settings, attribute: attrs.Attribute[str], value: str) -> None:
    if value and len(value) < 32:  # quoted, as a careless validator might: redacted
        raise SettingsError(f"{attribute.metadata['env']} is too short: {value!r}")


@attrs.frozen(kw_only=True)
class _WithSecret(Settings):
    """The settings plus a secret, as a token setting would be declared."""

    api_token: str = attrs.field(
        default="",
        repr=False,
        validator=_check_token,
        metadata={"env": "STOAT_API_TOKEN", "help": "token clients must send", "secret": True},
    )


def _use_settings(monkeypatch: pytest.MonkeyPatch, settings_class: type[Settings]) -> None:
    """Make ``settings_class`` the settings wherever the code looks ``Settings`` up by name.

    ``known_variables`` (so ``check_known``) reads it in ``_settings``; ``options``
    and ``parse_flag`` in ``_options``; the command line in ``_cli``.
    """
    for module in (settings_module, options_module, cli_module):
        monkeypatch.setattr(module, "Settings", settings_class)


@pytest.fixture
def with_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings have the secret field ``api_token`` (``STOAT_API_TOKEN``)."""
    _use_settings(monkeypatch, _WithSecret)
    monkeypatch.setitem(parsers_module.PARSERS, "api_token", parsers_module._parse_text)


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.usefixtures("with_secret")
def test_a_secret_has_no_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """A secret is read from its variable only: its flag is an unknown argument."""
    token = "a-token-of-32-characters-or-so-x"

    _, settings, names = parse_command([], {"STOAT_API_TOKEN": token})
    with pytest.raises(SystemExit) as exited:
        main(["--api-token", token])

    assert settings.api_token == token
    assert names["api_token"] == "STOAT_API_TOKEN"
    assert exited.value.code == 2
    assert "unrecognized arguments: --api-token" in capsys.readouterr().err
    assert token not in repr(settings)


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.usefixtures("with_secret")
@pytest.mark.usefixtures("with_secret")
@pytest.mark.parametrize(
    "token", ["s3cr3t-s3cr3t-s3cr3t", "it's a secret, for sure", "tab\there and then some"]
)
def test_a_secret_is_redacted_in_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], token: str
) -> None:
    """A bad secret's error says what is wrong without the value, plain or escaped."""
    monkeypatch.setenv("STOAT_API_TOKEN", token)

    with pytest.raises(SettingsError) as raised:
        _WithSecret.from_environ({"STOAT_API_TOKEN": token})
    status = main(["check"])

    message = str(raised.value)
    assert message.startswith("STOAT_API_TOKEN is too short: ")
    assert "<redacted>" in message
    assert token not in message
    assert repr(token)[1:-1] not in message
    assert status == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"stoat-ferret: {message}"


@pytest.mark.usefixtures("with_secret")
def test_a_secret_in_help_and_readme_is_variable_only() -> None:
    """--help lists a secret under its own heading with its default unset; the README row too."""
    [secret] = [option for option in options() if option.secret]

    help_text = build_parser().format_help()

    _assert_lists_every_setting(help_text)
    assert "secrets (variable only, never a flag):\n  STOAT_API_TOKEN " in help_text
    assert "--api-token" not in help_text
    assert (secret.flag, secret.default) == (None, "unset")
    assert readme_row(secret) == (
        "| (variable only) | `STOAT_API_TOKEN` | `unset` | token clients must send |"
    )


def _check_burst(settings: Settings, attribute: attrs.Attribute[int], value: int) -> None:
    if value < settings.max_workers:
        raise SettingsError(f"{attribute.metadata['env']} must be >= the jobs running at once")


@attrs.frozen(kw_only=True)
class _WithCrossCheck(Settings):
    """The settings plus one whose validator reads another field, as some will."""

    burst: int = attrs.field(
        default=4,
        validator=_check_burst,
        metadata={"env": "STOAT_BURST", "metavar": "N", "help": "jobs at once in a burst"},
    )


@pytest.mark.usefixtures("_restored_logging")
def test_a_flag_checked_against_another_setting_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A validator that reads another field gets real settings: a bad flag is exit 2, named."""
    _use_settings(monkeypatch, _WithCrossCheck)
    monkeypatch.setitem(parsers_module.PARSERS, "burst", parsers_module._parse_int)

    _, settings, _ = parse_command(["--burst", "6"], {})
    with pytest.raises(SystemExit) as exited:
        main(["--burst", "1"])

    assert settings.burst == 6  # type: ignore[attr-defined]
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "stoat-ferret: error: --burst must be >= the jobs running at once"
    )


@pytest.mark.usefixtures("_restored_logging")
def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the name and version and exits 0."""

    with pytest.raises(SystemExit) as exited:
        main(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out == f"stoat-ferret {__version__}\n"


@pytest.mark.usefixtures("_restored_logging")
def test_console_script_is_run() -> None:
    """``pip install`` gives a ``stoat-ferret`` command running what ``python -m
    stoat_ferret`` runs: run(), main() as the process's own."""

    [script] = importlib.metadata.entry_points(group="console_scripts", name="stoat-ferret")

    assert script.load() is run


def test_a_host_name_of_ipv6_addresses_only_is_a_bad_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service listens on IPv4 for a host name (IPv6 for an address with a
    colon): a name that resolves to IPv6 addresses only cannot be bound, so it is
    refused before, as one that does not resolve (check said "ok" of it)."""
    real = socket.getaddrinfo

    def ipv6_only(host: str, *args: Any, **kwargs: Any) -> Any:
        family = args[1] if len(args) > 1 else kwargs.get("family", 0)
        if host == "sixonly.test" and family != socket.AF_INET6:
            if family == socket.AF_INET:
                raise socket.gaierror(
                    socket.EAI_ADDRFAMILY, "Address family for hostname not supported"
                )
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", 0, 0, 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", ipv6_only)

    with pytest.raises(SettingsError, match=r"^STOAT_HOST: cannot use 'sixonly\.test'"):
        check_startup(Settings(host="sixonly.test", database_path=tmp_path / "x.db"))


@pytest.mark.usefixtures("_restored_logging")
def test_check_on_a_good_setup(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check creates nothing (a new database is said to be new), binds nothing,
    prints one line, returns 0."""
    database = tmp / "new" / "stoat.db"
    with socket.socket() as taken:  # check must not try to bind the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["check", "--port", str(port), "--database", str(database)]
        status = main([*argv, "--scan-root", str(tmp / "a"), "--scan-root", str(tmp / "b")])

    captured = capsys.readouterr()
    assert status == 0
    assert captured.err == ""
    assert captured.out == (
        f"ok: would serve http://127.0.0.1:{port}/ from {database} "
        f"(new database: serving creates it with schema {SCHEMA_VERSION}, 0 videos);"
        f" scan roots: {tmp / 'a'}, {tmp / 'b'}; API token: none\n"
    )
    assert not database.parent.exists()


@pytest.mark.usefixtures("_restored_logging")
def test_check_says_whether_the_api_needs_a_token(
    tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether the token is set shows on check's line (never the token)."""
    token = "a-token-of-sixteen-or-more"
    monkeypatch.setenv("STOAT_API_TOKEN", token)

    status = main(["check", "--database", str(tmp / "stoat.db"), "--port", "0"])

    out = capsys.readouterr().out
    assert status == 0
    assert out.endswith("; scan roots: any directory; API token: required\n")
    assert token not in out


@pytest.mark.usefixtures("_restored_logging")
def test_check_names_the_links_the_roots_are_spelt_through(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A root named through links (``home -> var/home``): check names it
    resolved, and the links its spelling goes through, where each led."""
    (tmp / "var" / "home" / "me").mkdir(parents=True)
    (tmp / "home").symlink_to("var/home")
    argv = ["check", "--database", str(tmp / "stoat.db"), "--port", "0"]

    status = main([*argv, "--scan-root", str(tmp / "home" / "me")])

    assert status == 0
    assert capsys.readouterr().out.endswith(
        f"; scan roots: {tmp / 'var' / 'home' / 'me'}"
        f" (through {tmp / 'home'} -> {tmp / 'var' / 'home'}); API token: none\n"
    )


@pytest.mark.usefixtures("_restored_logging")
def test_check_with_port_0_says_the_system_picks_the_port(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A check binds nothing, so with port 0 it has no port to show: not ``:0``."""
    status = main(["check", "--database", str(tmp / "stoat.db"), "--port", "0"])

    assert status == 0
    assert capsys.readouterr().out.startswith(
        f"ok: would serve http://127.0.0.1:<port>/ (a port the system picks) from {tmp}"
    )


# Case -> (variables, flags, words of the one line); "{tmp}" as in SAMPLES. A
# problem found after the settings are read names what the user typed.
BROKEN: dict[str, tuple[dict[str, str], list[str], str]] = {
    "bad-variable": ({"STOAT_MAX_PENDING": "none"}, [], "STOAT_MAX_PENDING must be a whole number"),
    "corrupt-database": ({"STOAT_DATABASE_PATH": "{tmp}/corrupt.db"}, [], "file is not a database"),
    "database-under-a-file": (
        {"STOAT_DATABASE_PATH": "{tmp}/file/stoat.db"},
        [],
        "STOAT_DATABASE_PATH: cannot create, or write in, the directory",
    ),
    "database-under-a-file-by-flag": (
        {"STOAT_DATABASE_PATH": "{tmp}/ok.db"},
        ["--database", "{tmp}/file/stoat.db"],
        "--database: cannot create, or write in, the directory",
    ),
    "database-named-as-a-directory": (
        {"STOAT_DATABASE_PATH": "{tmp}/wanted/"},
        [],
        "STOAT_DATABASE_PATH must be the path of a file, not a directory, got '{tmp}/wanted/'",
    ),
    "database-under-a-tilde": (
        {"STOAT_DATABASE_PATH": "~/data/stoat.db"},
        [],
        "STOAT_DATABASE_PATH: a '~' is not expanded here: write the path out,"
        " got '~/data/stoat.db'",
    ),
    "root-under-a-tilde": (
        {"STOAT_SCAN_ROOTS": "{tmp}/a:~/videos"},
        [],
        "STOAT_SCAN_ROOTS: a '~' is not expanded here: write the path out, got '~/videos'",
    ),
    "root-with-a-space-too-many": (
        {"STOAT_SCAN_ROOTS": "{tmp}/a: {tmp}/b"},
        [],
        "STOAT_SCAN_ROOTS: ' {tmp}/b' begins or ends with white space (name such a"
        " directory with --scan-root)",
    ),
    "unlistable-root": (
        {"STOAT_SCAN_ROOTS": "{tmp}/a"},
        [],
        "stoat-ferret: STOAT_SCAN_ROOTS: cannot list {tmp}/a",
    ),
    "unlistable-root-by-flag": (
        {"STOAT_SCAN_ROOTS": "{tmp}/b"},
        ["--scan-root", "{tmp}/a"],
        "stoat-ferret: --scan-root: cannot list {tmp}/a",
    ),
}


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_on_a_broken_setup(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """check returns 2 and prints one line naming the problem, nothing on stdout."""
    write_corrupt_video(tmp / "corrupt.db")
    (tmp / "file").write_text("a regular file")
    variables, flags, words = BROKEN[case]
    for key, value in server_environment(tmp).items():
        monkeypatch.setenv(key, value)
    for key, value in variables.items():
        monkeypatch.setenv(key, value.format(tmp=tmp))
    argv = ["check", *(flag.format(tmp=tmp) for flag in flags)]
    (tmp / "a").chmod(0)
    try:
        status = call_denied(lambda: main(argv))
    finally:
        (tmp / "a").chmod(0o755)

    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("stoat-ferret: ")
    assert words.format(tmp=tmp) in line


def test_check_as_a_process(tmp_path: Path) -> None:
    """``python -m stoat_ferret check``: exit 0 and one line; with a bad root, 2 and one line."""
    env = server_environment(tmp_path)

    good = subprocess.run(
        [sys.executable, "-m", "stoat_ferret", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    bad = subprocess.run(
        [sys.executable, "-m", "stoat_ferret", "check", "--scan-root", str(tmp_path / "none")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (good.returncode, good.stderr) == (0, "")
    assert good.stdout.startswith(
        "ok: would serve http://127.0.0.1:<port>/ (a port the system picks) from "
    )
    assert good.stdout.count("\n") == 1
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.splitlines()[-1].endswith(f"{tmp_path / 'none'} is not an existing directory")
    assert len(bad.stderr.splitlines()) == 2  # usage, then the sentence


def test_check_with_standard_error_closed_still_checks(tmp_path: Path) -> None:
    """Started with standard error closed (``2>&-``), the command logs
    nowhere but still checks: exit 0 and its line on stdout (it exited 1,
    silently, when the log's sink was None)."""
    env = server_environment(tmp_path)

    closed = subprocess.run(
        [sys.executable, "-m", "stoat_ferret", "check"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.close(2),
    )

    assert closed.returncode == 0
    assert closed.stdout.startswith("ok: would serve ")


def _close_input_and_errors() -> None:
    os.close(0)
    os.close(2)


def test_a_standard_descriptor_closed_at_start_is_given_dev_null() -> None:
    """Started with standard error (or input) closed, the command puts
    ``/dev/null`` in its place before opening anything, so that no file it
    opens later (a lock file, the database) takes its number."""
    script = (
        "import os\n"
        "from stoat_ferret._main import fill_standard_descriptors\n"
        "fill_standard_descriptors()\n"
        "print(os.readlink('/proc/self/fd/0'), os.readlink('/proc/self/fd/2'))\n"
    )

    closed = subprocess.run(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=_close_input_and_errors,
    )

    assert (closed.returncode, closed.stdout.split()) == (0, [os.devnull, os.devnull])


@pytest.mark.usefixtures("_restored_logging")
def test_a_relative_path_without_a_working_directory_is_a_bad_setting(tmp_path: Path) -> None:
    """Run from a directory removed since: the default database's relative path has
    nothing to be relative to: 2, one line naming the setting, no traceback (and
    with a standard error that cannot be written, 2 all the same); so has a
    relative scan root (it is not taken from ``/``). Absolute paths, by flag
    or variable, need no working directory."""
    gone = tmp_path / "gone"
    script = (
        "import os, sys\n"
        "from stoat_ferret._main import main\n"
        "os.mkdir(sys.argv[1])\n"
        "os.chdir(sys.argv[1])\n"
        "os.rmdir(sys.argv[1])\n"
        "sys.exit(main(sys.argv[2:]))\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("STOAT_")}
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    absolute = ["--database", str(tmp_path / "data" / "stoat.db"), "--scan-root", str(tmp_path)]

    def run(*arguments: str, **options: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script, str(gone), "check", "--port", "0", *arguments],
            env=env,
            text=True,
            timeout=60,
            check=False,
            **options,
        )

    relative = run(capture_output=True)
    with open(os.devnull, "w") as nowhere, open("/dev/full", "w") as full:
        lost = run(stdout=nowhere, stderr=full)
    given = run(*absolute, capture_output=True)
    root = run(*absolute, "--scan-root", "etc", capture_output=True)

    assert (relative.returncode, relative.stdout) == (2, ""), relative.stderr
    [line] = relative.stderr.splitlines()
    assert line.startswith("stoat-ferret: STOAT_DATABASE_PATH: cannot read the working directory")
    assert "'data/stoat.db'" in line
    assert lost.returncode == 2
    assert (given.returncode, given.stderr) == (0, "")
    assert (root.returncode, root.stdout) == (2, ""), root.stderr
    [usage, line] = root.stderr.splitlines()  # a flag's refusal: argparse's usage first
    assert usage.startswith("usage: stoat-ferret")
    assert line.startswith("stoat-ferret: error: --scan-root: cannot read the working directory")
    assert "'etc'" in line


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080/"),
        ("localhost", "http://localhost:8080/"),
        ("0.0.0.0", "http://127.0.0.1:8080/"),
        ("::1", "http://[::1]:8080/"),
        ("::", "http://[::1]:8080/"),
    ],
)
def test_dashboard_url_is_one_a_browser_here_can_open(host: str, url: str) -> None:
    """The start-up line's address: IPv6 in brackets, a wildcard as loopback."""

    assert dashboard_url(Settings(host=host, port=8080)) == url


def test_unresolvable_host_is_a_bad_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host name that does not resolve is refused before binding, naming how it was given."""

    def no_such_host(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)

    with pytest.raises(SettingsError, match=r"^STOAT_HOST: cannot use 'nowhere\.invalid'"):
        check_startup(Settings(host="nowhere.invalid", database_path=tmp_path / "x.db"))
    exposed = {"STOAT_API_TOKEN": "a-token-of-24-characters", "STOAT_SCAN_ROOTS": str(tmp_path)}
    _, settings, names = parse_command(
        ["--host", "nowhere.invalid", "--database", str(tmp_path / "x.db")], exposed
    )
    with pytest.raises(SettingsError, match=r"^--host: cannot use 'nowhere\.invalid'"):
        check_startup(settings, names)
    # Without the token and roots a host beyond loopback needs, a typo in its
    # name is still told as such, not as "set a token".
    for argv, environ, name in [
        (["--host", "nowhere.invalid"], {}, "--host"),
        ([], {"STOAT_HOST": "nowhere.invalid"}, "STOAT_HOST"),
    ]:
        with pytest.raises(SettingsError, match=rf"^{name}: cannot use 'nowhere\.invalid'"):
            parse_command(argv, environ)


def test_a_host_beyond_loopback_that_resolves_needs_a_token_and_roots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The exposure error stays for a host that resolves: it names what to set."""
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: [])

    with pytest.raises(ExposureError, match=r"^--host=|^STOAT_HOST=") as caught:
        parse_command(["--host", "media.example"], {})

    assert "set STOAT_API_TOKEN" in str(caught.value)
    assert (caught.value.host, caught.value.port) == ("media.example", 8000)


@pytest.mark.usefixtures("_restored_logging")
def test_a_database_others_may_read_is_noted_by_check_and_warned_of_by_serving(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database of an earlier version (mode 0644, its write-ahead log too):
    check says so at the end of its line, and serving's start-up warns, each
    naming the files and the command that makes them private; a private one
    (0600, as serving creates it) gets neither."""
    data = tmp / "my data"
    data.mkdir(mode=0o700)
    database = data / "stoat.db"
    prepare_database(database, "--database")  # as serving makes it: 0600
    VideoStore.open(database).close()
    assert main(["check", "--database", str(database)]) == 0
    private = capsys.readouterr().out
    check_startup(Settings(database_path=database)).release()  # logs as main() set up
    private_start = capsys.readouterr().err
    database.chmod(0o644)
    (data / "stoat.db-wal").write_bytes(b"")
    (data / "stoat.db-wal").chmod(0o640)
    command = f"chmod 600 '{database}' '{database}-wal'"  # not stoat.db*: the thumbnails too
    expected = f"stoat.db, stoat.db-wal may be read by other users: {command}"

    assert main(["check", "--database", str(database)]) == 0
    noted = capsys.readouterr().out
    check_startup(Settings(database_path=database)).release()  # (its close drops the -wal)
    warned = capsys.readouterr().err.splitlines()
    database.chmod(0o644)
    (data / "stoat.db-wal").write_bytes(b"")
    (data / "stoat.db-wal").chmod(0o640)
    thumbnails = data / "stoat.db.thumbnails"
    thumbnails.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(["sh", "-c", command], check=True, timeout=60)  # what it says to run: it works
    assert main(["check", "--database", str(database)]) == 0
    after = capsys.readouterr().out

    assert "may be read" not in private
    assert private_start == ""
    assert noted.rstrip().endswith(f"; {expected}")
    [warning] = warned  # (the log line shortens its long fields)
    assert "WARNING" in warning
    assert "may be read by other users: chmod 600" in warning
    assert "may be read" not in after
    assert stat.S_IMODE(thumbnails.stat().st_mode) == 0o700  # left as it was


@pytest.mark.usefixtures("_restored_logging")
def test_check_leaves_a_served_store_alone(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check beside a running service (its store open, holding scan errors)
    changes nothing: the errors stay, the id and journal mode are as they were."""
    database = tmp / "stoat.db"
    store = VideoStore.open(database)
    try:
        store.replace_scan_errors("job", "/m", recursive=True, errors=[("/m/1.mp4", "bad")])

        status = main(["check", "--database", str(database)])

        assert store.scan_errors("job", 10, 0) == ([("/m/1.mp4", "bad")], 1)
    finally:
        store.close()
    captured = capsys.readouterr()
    assert status == 0
    assert f"(schema {SCHEMA_VERSION}, 0 videos)" in captured.out


@pytest.mark.usefixtures("_restored_logging")
def test_check_says_an_old_schema_needs_migration_and_does_not_migrate(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older schema is reported ("needs migration"), not migrated, not made WAL."""
    database = tmp / "old.db"
    with contextlib.closing(sqlite3.connect(database)) as raw:
        for statement in MIGRATIONS[1]:
            raw.execute(statement)
        raw.execute("PRAGMA user_version = 1")
    before = database.read_bytes()

    status = main(["check", "--database", str(database)])

    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert f"(schema 1, needs migration to {SCHEMA_VERSION} (serving does it), 0 videos)" in (
        captured.out
    )
    assert database.read_bytes() == before


# Case -> the words of check's one line on stderr (exit 2).
UNSERVABLE: dict[str, str] = {
    "damaged": "is damaged: PRAGMA quick_check: ",
    "foreign": "it is not a stoat_ferret database (user_version 0, tables: bookmarks)",
    "thumbnails-a-file": "stoat.db.thumbnails is not a directory",
    # 245 bytes: the file is fine, but not "<name>.thumbnails" (256).
    "name-too-long": "is too long (245 bytes): at most 244, so that the files named after it fit",
}


def make_unservable(tmp: Path, case: str) -> Path:
    """The database path of an ``UNSERVABLE`` case, made in ``tmp``."""
    database = tmp / "data" / ("n" * 242 + ".db" if case == "name-too-long" else "stoat.db")
    database.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if case == "damaged":
        write_damaged_database(database)
    elif case == "foreign":
        with contextlib.closing(sqlite3.connect(database)) as raw:
            raw.execute("CREATE TABLE bookmarks (url TEXT)")
    else:
        VideoStore.open(database).close()
        if case == "thumbnails-a-file":
            database.with_name("stoat.db.thumbnails").touch()
    return database


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize("case", sorted(UNSERVABLE))
def test_check_refuses_what_serving_could_not_start_with(
    tmp: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """A damaged database (its header intact), someone else's SQLite file, a
    thumbnails path that is a file: exit 2, one line, the file unchanged."""
    database = make_unservable(tmp, case)
    before = database.read_bytes()

    status = main(["check", "--database", str(database)])

    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("stoat-ferret: ")
    assert UNSERVABLE[case] in line
    assert database.read_bytes() == before


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize("suffix", ["-journal", "-wal", "-shm", ".lock"])
@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink"])
def test_a_database_companion_that_is_not_a_regular_file_is_refused(
    tmp: Path, capsys: pytest.CaptureFixture[str], suffix: str, kind: str
) -> None:
    """Where SQLite keeps the database's journal, log or shared memory, or the
    service its lock, a FIFO (SQLite would block opening it, deaf to SIGTERM), a
    directory or a link is refused by check and by serving alike, before SQLite
    opens anything: exit 2, one line."""
    data = tmp / "data"
    data.mkdir(mode=0o700)
    database = data / "stoat.db"
    companion = data / f"stoat.db{suffix}"
    if kind == "fifo":
        os.mkfifo(companion, 0o600)
    elif kind == "directory":
        companion.mkdir()
    else:
        companion.symlink_to(tmp / "elsewhere")

    status, line = _check_line(database, capsys)

    assert status == 2
    assert f"{companion} is not a regular file" in line
    with pytest.raises(StoreError, match="is not a regular file"):
        prepare_database(database, "--database")  # as serving does
    assert not database.exists()


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize("suffix", ["", ".lock", "-wal", "-shm", "-journal"])
def test_check_refuses_a_database_or_lock_the_service_cannot_write(
    tmp: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    """A database, its lock, or SQLite's file beside it (a crashed run as another
    user may leave one) the service's user may only read: serving would fail to
    start ("attempt to write a readonly database", or its lock), so check says
    so: exit 2, one line."""
    data = tmp / "data"
    data.mkdir(mode=0o700)
    database = data / "stoat.db"
    assert main(["check", "--database", str(database)]) == 0  # the control: all fine
    VideoStore.open(database).close()
    read_only = data / f"stoat.db{suffix}"
    read_only.write_bytes(b"\xd9\xd5\x05\xf9")  # a journal's header: unfinished, rolled back
    read_only.chmod(0o400)
    capsys.readouterr()

    status = call_denied(lambda: main(["check", "--database", str(database)]))

    captured = capsys.readouterr()
    assert status == 2
    [line] = captured.err.splitlines()
    assert f"cannot write to {read_only}" in line


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize("suffix", ["", ".lock", "-wal", "-shm", "-journal"])
def test_serving_refuses_a_database_or_lock_it_cannot_write_as_check_does(
    tmp: Path, suffix: str
) -> None:
    """Serving's start-up says which file it cannot write, as check does,
    rather than SQLite's "unable to open database file"."""
    data = tmp / "data"
    data.mkdir(mode=0o700)
    database = data / "stoat.db"
    VideoStore.open(database).close()
    read_only = data / f"stoat.db{suffix}"
    read_only.write_bytes(b"\xd9\xd5\x05\xf9")  # a journal's header: unfinished
    read_only.chmod(0o400)

    message = call_denied(lambda: _start_refused(database))

    assert message == f"STOAT_DATABASE_PATH: cannot write to {read_only} (Permission denied)"


def _start_refused(database: Path) -> str:
    """Why serving's start-up check refuses ``database`` (it must)."""
    with pytest.raises(StoreError) as refused:
        check_startup(Settings(database_path=database)).release()
    return str(refused.value)


@pytest.mark.usefixtures("_restored_logging")
def test_a_database_on_a_read_only_file_system_is_said_to_be_so(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database the service cannot write because its file system is mounted
    read-only says so (EROFS), not "Permission denied", which would send the
    operator to the file's mode. (The mount is pretended: ``statvfs`` says
    read-only, and the file's mode denies the write ``os.access`` asks about.)"""
    data = tmp / "data"
    data.mkdir(mode=0o700)
    database = data / "stoat.db"
    VideoStore.open(database).close()
    database.chmod(0o400)
    real_statvfs = os.statvfs

    def read_only(path: Any) -> Any:
        found = real_statvfs(path)
        return os.statvfs_result((*found[:8], found.f_flag | os.ST_RDONLY, found.f_namemax))

    monkeypatch.setattr(os, "statvfs", read_only)

    message = call_denied(lambda: _start_refused(database))

    assert message == f"STOAT_DATABASE_PATH: cannot write to {database} (Read-only file system)"


@pytest.mark.usefixtures("_restored_logging")
def test_a_data_directory_on_a_read_only_file_system_is_said_to_be_so(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Check, of the directory that would hold a new database, on a file system
    mounted read-only: EROFS, as serving's own attempt there would say, not
    "Permission denied". (Pretended: ``statvfs`` says read-only, ``os.access``
    says no.)"""
    data = tmp / "data"
    data.mkdir(mode=0o700)
    real_statvfs = os.statvfs

    def read_only(path: Any) -> Any:
        found = real_statvfs(path)
        return os.statvfs_result((*found[:8], found.f_flag | os.ST_RDONLY, found.f_namemax))

    monkeypatch.setattr(os, "statvfs", read_only)
    # access(2) asks with the real user's full capabilities: root passes it whatever the mode.
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)

    with pytest.raises(StoreError) as refused:
        check(Settings(database_path=data / "stoat.db"))

    assert str(refused.value).endswith(f"{data}/stoat.db (Read-only file system)")


@pytest.mark.usefixtures("_restored_logging")
def test_check_passes_a_finished_journal_it_cannot_write(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty or zeroed rollback journal is a finished one: SQLite never writes
    it, so serving starts though the user may only read it, and check says ok."""
    data = tmp / "data"
    data.mkdir(mode=0o700)
    database = data / "stoat.db"
    VideoStore.open(database).close()
    journal = data / "stoat.db-journal"
    journal.write_bytes(b"\0" * 512)
    journal.chmod(0o400)

    status = call_denied(lambda: main(["check", "--database", str(database)]))

    assert status == 0, capsys.readouterr().err


class _Unwritable:
    """A standard output that refuses every write, as a full disk does."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_check_whose_line_cannot_be_written_exits_2_with_one_line(
    tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stdout: str
) -> None:
    """Standard output full, or closed (``>&-``: Python's is None then): the check's
    line cannot be printed, which a script must not take for success: exit 2 and
    why on standard error, not a traceback."""
    monkeypatch.setattr(sys, "stdout", _Unwritable() if stdout == "full" else None)

    status = main(["check", "--database", str(tmp / "data" / "stoat.db")])

    [line] = capsys.readouterr().err.splitlines()
    assert status == 2
    assert line.startswith("stoat-ferret: cannot write to standard output (")


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize("flag", ["--help", "--version"])
@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_help_or_version_that_cannot_be_written_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stdout: str, flag: str
) -> None:
    """As a check's line: argparse drops a write that fails and exits 0, so a
    script would take the help it never got for shown; exit 2 and why instead."""
    monkeypatch.setattr(sys, "stdout", _Unwritable() if stdout == "full" else None)

    status = main([flag])

    [line] = capsys.readouterr().err.splitlines()
    assert status == 2
    assert line.startswith("stoat-ferret: cannot write to standard output (")


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize(
    ("name", "encoding", "shown"),
    [
        (b"donn\xe9es", "utf-8", "donn\\udce9es"),  # not UTF-8: a surrogate escape
        ("donn\u00e9es".encode(), "ascii", "donn\\xe9es"),  # UTF-8, on an ASCII output
    ],
    ids=["not-utf8", "ascii-output"],
)
def test_check_shows_a_path_that_is_not_utf8_escaped_on_a_strict_output(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, name: bytes, encoding: str, shown: str
) -> None:
    """A database whose path the standard output cannot encode (not UTF-8 on
    a UTF-8 locale's output, or not ASCII on an ASCII one's), which encodes
    strictly: the check passes and shows the path escaped, rather than
    failing as if standard output were closed."""
    directory = os.path.join(os.fsencode(tmp), name)
    os.mkdir(directory, 0o700)
    database = os.fsdecode(os.path.join(directory, b"stoat.db"))
    output = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(output, encoding=encoding))

    status = main(["check", "--database", database])

    sys.stdout.flush()
    assert status == 0
    assert f"{shown}/stoat.db" in output.getvalue().decode(encoding)


@pytest.mark.usefixtures("_restored_logging")
def test_check_shows_a_path_with_a_line_break_or_an_escape_on_one_line(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database path holding a line break and a terminal's escape: check's
    one line shows them escaped (a script reading its first line, or one
    starting "ok:", is not fooled; a terminal obeys nothing), and so does
    the one line of an error about such a path."""
    directory = tmp / "x\nok: fake"
    directory.mkdir(mode=0o700)
    database = directory / "a\x1b[31m.db"

    (tmp / "a file\n\x1b[2J").write_text("")  # no directory to hold a database
    status = main(["check", "--database", str(database)])
    refused = main(["check", "--database", str(tmp / "a file\n\x1b[2J" / "stoat.db")])

    out, err = capsys.readouterr()
    assert status == 0
    assert out.count("\n") == 1
    assert f"from {tmp}/x\\nok: fake/a\\x1b[31m.db " in out
    assert refused == 2
    assert err.count("\n") == 1
    assert "\x1b" not in err
    assert "a file \\x1b[2J/stoat.db" in err


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize(
    "free",
    [
        pytest.param((0, 10), id="no-block"),
        # Room for the database, not for the files a start makes beside it
        # (the lock, SQLite's log files, the thumbnails' directory and mark).
        pytest.param((100_000, 7), id="seven-inodes"),
    ],
)
def test_check_refuses_a_new_database_on_a_full_disk(
    tmp: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    free: tuple[int, int],
) -> None:
    """Serving could not create the database, or SQLite its log files, on a
    file system with no block or inode left ("database or disk is full"), so
    check says so, from under 1 MiB or 8 inodes left: exit 2, one line."""
    database = tmp / "data" / "stoat.db"
    assert main(["check", "--database", str(database)]) == 0  # the control: room left
    capsys.readouterr()
    blocks, inodes = free
    full = os.statvfs_result((4096, 4096, 200_000, blocks, blocks, 100, inodes, inodes, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda _path: full)

    status, line = _check_line(database, capsys)

    assert status == 2
    assert line.endswith(  # 9 inodes: 8, and one for the directory to make
        f"the directory of {database} (its file system is full: under 1 MiB or 9 inodes left)"
    )
    assert not database.parent.exists()


@pytest.mark.usefixtures("_restored_logging")
def test_check_refuses_an_old_database_whose_migration_would_fill_the_disk(
    tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of an older schema needs room to be migrated: serving would
    fail on a disk without it, so check says so, rather than "needs
    migration". Each step asks its share of the file (MIGRATION_SPACE, or
    its own in STEP_SPACE), and they add up: every step runs in one
    transaction. Made a hundred times the file, each of the seven steps from
    schema 7 asks 700 times its size; made light, those from schema 8 pass;
    a step of its own (schema 4's copy of the table) counts beside the rest."""
    data = tmp / "data"
    data.mkdir(mode=0o700)
    database = data / "stoat.db"
    database_at(database, 7)  # steps 8 to 14
    newer = data / "newer.db"
    database_at(newer, 8)
    two_mib = os.statvfs_result((4096, 4096, 1_000_000, 512, 512, 100, 10, 10, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda _path: two_mib)
    assert main(["check", "--database", str(database)]) == 0  # the control: room enough
    capsys.readouterr()
    monkeypatch.setattr(startup_module, "MIGRATION_SPACE", 100.0)  # a hundred times its size
    monkeypatch.setattr(startup_module, "STEP_SPACE", {})
    needed = int(database.stat().st_size * 700.0) / (1 << 20)
    older = data / "older.db"
    database_at(older, 3)  # steps 4 to 14
    older_needs = int(older.stat().st_size * (100.0 + 10 * 0.15)) / (1 << 20)

    status = main(["check", "--database", str(database)])
    light = dict.fromkeys(range(9, 15), 0.01)
    monkeypatch.setattr(startup_module, "STEP_SPACE", light)
    assert main(["check", "--database", str(newer)]) == 0  # steps 9-14 ask 0.06 in all
    monkeypatch.setattr(startup_module, "MIGRATION_SPACE", 0.15)
    monkeypatch.setattr(startup_module, "STEP_SPACE", {4: 100.0})
    assert main(["check", "--database", str(database)]) == 0  # schema 7: 7 * 0.15 fits
    older_status = main(["check", "--database", str(older)])

    [line, older_line] = capsys.readouterr().err.splitlines()
    assert status == 2
    assert line == (
        f"stoat-ferret: {database}: its migration needs about {needed:,.1f} MiB free beside it,"
        " 2.0 MiB left"
    )
    assert older_status == 2
    assert older_line.startswith(
        f"stoat-ferret: {older}: its migration needs about {older_needs:,.1f} MiB free beside it"
    )


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize(("share", "status"), [(1.0, 2), (1.25, 0)])
def test_check_asks_room_for_the_file_name_keys_of_schema_14(
    tmp: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    share: float,
    status: int,
) -> None:
    """Schema 14 writes a key into every row, which a file at schema 13 needs
    room for (STEP_SPACE: 1.2 of its size; 0.45 to 0.71 measured), more than
    the 0.15 of a step that makes an index again: free space of the file's
    size is too little, 125 % enough."""
    data = tmp / "data"
    data.mkdir(mode=0o700)
    database = data / "stoat.db"
    database_at(database, 13)
    with contextlib.closing(sqlite3.connect(database)) as raw:  # 4 MiB, past check's 1 MiB
        raw.executemany(
            "INSERT INTO videos (path, directory, filename, size_bytes, mtime_ns,"
            " created_at, updated_at) VALUES (?, '/m', ?, 1, 1, '', '')",
            ((f"/m/{index:0200d}", f"{index:0200d}") for index in range(10_000)),
        )
        raw.commit()
    size = database.stat().st_size
    blocks = int(size * share) // 512
    room = os.statvfs_result((512, 512, 10**9, blocks, blocks, 100, 10, 10, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda _path: room)

    found = main(["check", "--database", str(database)])

    err = capsys.readouterr().err
    assert found == status, err
    if status:
        needed = int(size * 1.2) / (1 << 20)
        assert f"its migration needs about {needed:,.1f} MiB free beside it" in err


def _check_line(database: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``check --database database``: its exit status and its one line on stderr."""
    status = main(["check", "--database", str(database)])
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("stoat-ferret: --database: ")
    return status, line


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize("mode", [0o777, 0o1777])
def test_a_world_writable_database_directory_is_refused(
    tmp: Path, capsys: pytest.CaptureFixture[str], mode: int
) -> None:
    """Every user can create names there (also with the sticky bit, as /tmp): exit 2, one line."""
    (tmp / "open").mkdir()
    (tmp / "open").chmod(mode)

    status, line = _check_line(tmp / "open" / "stoat.db", capsys)

    assert status == 2
    assert "is writable by every user" in line
    assert not (tmp / "open" / "stoat.db").exists()


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize("how", ["below", "a-link-in-it", "not-made-yet"])
def test_a_data_directory_another_user_could_move_is_refused(
    tmp: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    """A directory above the data directory that every user may write into (no sticky
    bit) lets them rename the data directory and put theirs in its place: exit 2, one
    line, nothing made. So does a link to the data directory kept in such a directory,
    and check says so of a data directory serving has yet to make."""
    (tmp / "open").mkdir()
    (tmp / "open").chmod(0o777)
    data = tmp / "open" / "data"
    if how != "not-made-yet":
        data.mkdir(mode=0o700)
    if how == "a-link-in-it":
        (tmp / "private").mkdir(mode=0o700)
        (tmp / "private" / "data").mkdir(mode=0o700)
        (tmp / "open" / "data").rmdir()
        (tmp / "open" / "data").symlink_to(tmp / "private" / "data")

    status, line = _check_line(data / "stoat.db", capsys)

    assert status == 2
    assert f"{tmp / 'open'}, above the directory of" in line
    assert "is writable by every user" in line
    with pytest.raises(StoreError, match="above the directory of"):
        prepare_database(data / "stoat.db", "--database")  # as serving does
    assert not (data / "stoat.db").exists()
    assert data.exists() is (how != "not-made-yet")  # nothing made before the refusal


@pytest.mark.usefixtures("_restored_logging")
def test_a_link_in_the_middle_of_the_way_to_the_data_directory_is_checked_too(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The data directory is a link (in a private directory) to a second link, kept in a
    directory every user may write into, which leads on to a private directory: that
    user could point the second link at a directory of theirs, so it is refused (exit
    2, one line), though the way as given and the way to where it leads are private."""
    (tmp / "private").mkdir(mode=0o700)
    (tmp / "real" / "data").mkdir(parents=True, mode=0o700)
    (tmp / "open").mkdir()
    (tmp / "open").chmod(0o777)
    (tmp / "open" / "hop").symlink_to(tmp / "real" / "data")
    (tmp / "private" / "data").symlink_to(tmp / "open" / "hop")
    database = tmp / "private" / "data" / "stoat.db"

    status, line = _check_line(database, capsys)

    assert status == 2
    assert f"{tmp / 'open'}, above the directory of" in line
    assert "is writable by every user" in line
    with pytest.raises(StoreError, match="above the directory of"):
        prepare_database(database, "--database")  # as serving does
    assert not (tmp / "real" / "data" / "stoat.db").exists()


def test_a_dot_dot_after_a_link_is_checked_where_the_kernel_takes_it(tmp: Path) -> None:
    """``safe/link/../data``: the kernel follows the link, then goes to its target's
    parent, a directory every user may write into: refused there (dropping ``link/..``
    as text would have looked at ``safe`` instead, and accepted it)."""
    (tmp / "safe").mkdir(mode=0o700)
    (tmp / "open" / "sub").mkdir(parents=True)
    (tmp / "open").chmod(0o777)
    (tmp / "open" / "data").mkdir(mode=0o700)
    (tmp / "safe" / "link").symlink_to(tmp / "open" / "sub")

    with pytest.raises(StoreError, match=f"{tmp / 'open'}, above the directory of"):
        prepare_database(tmp / "safe" / "link" / ".." / "data" / "stoat.db", "--database")

    assert not (tmp / "open" / "data" / "stoat.db").exists()


def test_a_directory_a_dot_dot_leaves_is_checked_too(tmp: Path) -> None:
    """A link's target goes through a directory of another user, in a sticky directory,
    only to leave it by ``..``: its owner may replace it by a link, whose ``..`` then
    leads elsewhere. Refused."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    (tmp / "private").mkdir(mode=0o700)
    (tmp / "sticky" / "theirs").mkdir(parents=True)
    (tmp / "sticky").chmod(0o1777)
    (tmp / "sticky" / "data").mkdir(mode=0o700)
    os.chown(tmp / "sticky" / "theirs", 54321, -1)
    (tmp / "private" / "data").symlink_to(f"{tmp / 'sticky' / 'theirs'}/../data")

    with pytest.raises(StoreError, match=f"{tmp / 'sticky' / 'theirs'}, left by a '..'"):
        prepare_database(tmp / "private" / "data" / "stoat.db", "--database")


def test_a_directory_of_another_user_a_dot_dot_leaves_is_fine_outside_a_sticky_one(
    tmp: Path,
) -> None:
    """``home/alice/../svc``: alice's directory is another user's, but its parent is
    not sticky and only trusted users may write into it, so nobody who could replace
    alice's directory is untrusted: accepted, and the database made."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    (tmp / "home" / "alice").mkdir(parents=True)
    (tmp / "home" / "svc").mkdir(mode=0o700)
    os.chown(tmp / "home" / "alice", 54321, -1)
    database = tmp / "home" / "alice" / ".." / "svc" / "data" / "stoat.db"

    prepare_database(database, "--database")

    assert (tmp / "home" / "svc" / "data" / "stoat.db").is_file()


def test_a_missing_data_directory_after_a_dot_dot_is_made_where_the_kernel_takes_it(
    tmp: Path,
) -> None:
    """``safe/link/../data`` with ``data`` missing: it is made beside the link's target,
    where the kernel's ".." leads and the checks looked, not beside the link."""
    (tmp / "safe").mkdir(mode=0o700)
    (tmp / "real" / "sub").mkdir(parents=True, mode=0o700)
    (tmp / "real").chmod(0o700)
    (tmp / "safe" / "link").symlink_to(tmp / "real" / "sub")

    prepare_database(tmp / "safe" / "link" / ".." / "data" / "stoat.db", "--database")

    assert (tmp / "real" / "data" / "stoat.db").is_file()
    assert not (tmp / "safe" / "data").exists()


def test_a_directory_above_made_by_another_during_the_start_is_refused(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data directory's parent is missing, in a sticky directory: another user makes
    it (writable by every user) between the service's look at the way and its mkdir,
    which keeps it. The way is looked at again once made: refused, no database made."""
    (tmp / "shared").mkdir()
    (tmp / "shared").chmod(0o1777)
    made = tmp / "shared" / "made"
    make = _datadir.make_private_directories

    def raced(path: str | os.PathLike[str]) -> None:
        made.mkdir()
        made.chmod(0o777)  # theirs to rename in
        make(path)

    monkeypatch.setattr(_datadir, "make_private_directories", raced)

    with pytest.raises(StoreError, match=f"{made}, above the directory of"):
        prepare_database(made / "data" / "stoat.db", "--database")

    assert not (made / "data" / "stoat.db").exists()


def test_a_database_1200_directories_down_has_them_made(tmp: Path) -> None:
    """Each missing directory is made, 0o700, however many: one call a level
    raised RecursionError past about a thousand (a 2,400-byte path: within PATH_MAX)."""
    deep = tmp.joinpath(*["d"] * 1200)

    try:
        prepare_database(deep / "stoat.db", "--database")
        modes = [stat.S_IMODE(os.stat(path).st_mode) for path in (tmp / "d", deep)]
    finally:  # removed a level at a time: shutil.rmtree recurses too
        for level in range(1200, 0, -1):
            directory = tmp.joinpath(*["d"] * level)
            for entry in os.listdir(directory) if directory.is_dir() else ():
                if entry != "d":
                    os.unlink(directory / entry)
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(directory)

    assert modes == [0o700] * 2


def test_a_link_of_another_user_in_the_middle_of_the_way_is_refused(tmp: Path) -> None:
    """The data directory is a link of ours to a second link, in a sticky directory,
    which leads on to a private directory. In a sticky directory a link's owner may
    replace it: the second link belongs to another user, so it is refused."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a link to another user")
    (tmp / "private").mkdir(mode=0o700)
    (tmp / "real" / "data").mkdir(parents=True, mode=0o700)
    (tmp / "shared").mkdir()
    (tmp / "shared").chmod(0o1777)
    (tmp / "shared" / "hop").symlink_to(tmp / "real" / "data")
    os.lchown(tmp / "shared" / "hop", 54321, -1)
    (tmp / "private" / "data").symlink_to(tmp / "shared" / "hop")

    with pytest.raises(StoreError, match="a link on the way to the directory of") as refused:
        prepare_database(tmp / "private" / "data" / "stoat.db", "--database")

    assert f"{tmp / 'shared' / 'hop'}, a link on the way" in str(refused.value)
    assert "belongs to user" in str(refused.value)
    assert not (tmp / "real" / "data" / "stoat.db").exists()


@pytest.mark.parametrize(("mode", "refused"), [(0o755, False), (0o775, True)])
def test_a_directory_above_of_an_unmapped_owner_is_taken_for_the_hosts_root(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, mode: int, *, refused: bool
) -> None:
    """In a user namespace that does not map the host's root, / and every directory of
    the host's root show the kernel's overflow uid (nobody): taken for root, so that the
    service can start there, as long as no group or other user may write into it."""
    above = tmp / "host"
    (above / "data").mkdir(parents=True)
    above.chmod(mode)
    if os.geteuid() == 0:
        os.chown(above, 54321, -1)
        unmapped = 54321
    else:  # ours, and so is the way up: the service runs as someone else
        unmapped = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: unmapped + 1)
    monkeypatch.setattr(_datadir, "_overflow_uid", lambda: unmapped)

    if refused:
        with pytest.raises(StoreError, match="is writable by others than its owner"):
            _datadir._refuse_movable(above / "data" / "stoat.db", "--database")
    else:
        _datadir._refuse_movable(above / "data" / "stoat.db", "--database")


@pytest.mark.parametrize(
    ("uid_map", "trusted"),
    [
        pytest.param("0 0 4294967295\n", None, id="no-namespace"),
        pytest.param("0 1000 1\n", 65534, id="unshare-r"),
        pytest.param("0 100000 65536\n", None, id="userns-remap-maps-nobody"),
        pytest.param("0 1000 1\n1 100000 65534\n", None, id="two-ranges-the-second-maps-it"),
        pytest.param("0 1000 1\n1 100000 65533\n", 65534, id="two-ranges-short-of-it"),
    ],
)
def test_the_overflow_uid_is_trusted_only_where_no_user_has_it(
    uid_map: str, trusted: int | None
) -> None:
    """Outside a user namespace, and in one that maps a user to 65534 (Docker's
    userns-remap, rootless Podman, LXD), nobody is a real user: not trusted. Only
    where no user has it does it stand for owners the namespace does not map."""

    assert _datadir.unmapped_uid(uid_map, 65534) == trusted


@pytest.mark.usefixtures("_restored_logging")
def test_a_link_as_the_data_directory_must_be_trusteds(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a sticky directory a link's owner may replace it: a link as the data directory
    that another user owns is refused, wherever it leads."""
    (tmp / "private" / "data").mkdir(parents=True, mode=0o700)
    (tmp / "shared").mkdir()
    (tmp / "shared").chmod(0o1777)
    (tmp / "shared" / "data").symlink_to(tmp / "private" / "data")
    if os.geteuid() == 0:
        os.lchown(tmp / "shared" / "data", 54321, -1)
    else:  # the link is ours: the service runs as someone else, and so do tmp's owners
        pytest.skip("needs root to give a link to another user")
    monkeypatch.setattr(_datadir, "_overflow_uid", lambda: None)

    status, line = _check_line(tmp / "shared" / "data" / "stoat.db", capsys)

    assert status == 2
    assert "the link to the directory of" in line
    assert "belongs to user" in line


@pytest.mark.usefixtures("_restored_logging")
def test_a_data_directory_below_a_sticky_one_is_accepted(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the sticky bit (as /tmp), only an entry's owner may rename it: accepted."""
    (tmp / "shared").mkdir()
    (tmp / "shared").chmod(0o1777)
    (tmp / "shared" / "data").mkdir(mode=0o700)

    database = tmp / "shared" / "data" / "stoat.db"

    assert main(["check", "--database", str(database)]) == 0
    prepare_database(database, "--database")  # as serving does: made
    assert database.exists()


@pytest.mark.usefixtures("_restored_logging")
def test_a_database_directory_of_another_user_is_refused(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Owned by a user other than the service's (and not root): exit 2, one line."""
    (tmp / "theirs").mkdir()
    if os.geteuid() == 0:
        os.chown(tmp / "theirs", 54321, -1)
    else:  # the directory is ours: the service runs as someone else
        real = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: real + 1)

    status, line = _check_line(tmp / "theirs" / "stoat.db", capsys)

    assert status == 2
    assert "belongs to user" in line
    assert not (tmp / "theirs" / "stoat.db").exists()


def _group_writable(tmp: Path, mode: int) -> tuple[Path, int]:
    """A directory ``tmp/shared`` of ``mode``, and its group id."""
    shared = tmp / "shared"
    shared.mkdir()
    shared.chmod(mode)
    return shared, shared.stat().st_gid


def _user_named(name: str, gid: int) -> pwd.struct_passwd:
    return pwd.struct_passwd((name, "x", os.geteuid(), gid, "", "/", "/bin/sh"))


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize(
    ("group_name", "members", "refused"),
    [
        pytest.param("owner", [], False, id="private group"),
        pytest.param("owner", ["owner"], False, id="private group listing its owner"),
        pytest.param("owner", ["mallory"], True, id="private group with another member"),
        # No member listed, but a shared group's users may come from elsewhere
        # (LDAP, nested groups): not provably private, so refused.
        pytest.param("staff", [], True, id="shared group"),
    ],
)
def test_a_group_writable_database_directory_needs_its_owners_private_group(
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    group_name: str,
    members: list[str],
    refused: bool,
) -> None:
    """0775 of the owner's private group (Ubuntu's umask 002) is fine; any other
    group that may write is refused: exit 2, one line naming it."""
    shared, gid = _group_writable(tmp, 0o775)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: _user_named("owner", gid))
    monkeypatch.setattr(
        grp, "getgrgid", lambda _: grp.struct_group((group_name, "x", gid, members))
    )
    monkeypatch.setattr(os, "getxattr", _no_acl)

    status = main(["check", "--database", str(shared / "stoat.db")])

    captured = capsys.readouterr()
    if refused:
        assert status == 2
        [line] = captured.err.splitlines()
        assert f"is writable by group {group_name}, not the private group of its owner" in line
    else:
        assert (status, captured.err) == (0, "")


@pytest.mark.skipif(os.geteuid() != 0, reason="the directory must belong to root")
@pytest.mark.usefixtures("_restored_logging")
def test_roots_directory_of_the_service_users_private_group_is_accepted(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``root:stoat 0775`` for a service running as ``stoat``: only root and the
    service may write there. Accepted."""
    shared, gid = _group_writable(tmp, 0o775)
    users = {
        0: pwd.struct_passwd(("root", "x", 0, gid + 1, "", "/", "/bin/sh")),
        54321: pwd.struct_passwd(("stoat", "x", 54321, gid, "", "/", "/bin/sh")),
    }
    monkeypatch.setattr(os, "geteuid", lambda: 54321)
    monkeypatch.setattr(pwd, "getpwuid", users.__getitem__)
    monkeypatch.setattr(grp, "getgrgid", lambda _: grp.struct_group(("stoat", "x", gid, [])))
    monkeypatch.setattr(pwd, "getpwall", lambda: list(users.values()))
    monkeypatch.setattr(os, "getxattr", _no_acl)

    check_data_directory(shared / "stoat.db", "--database")

    assert capsys.readouterr().err == ""


@pytest.mark.usefixtures("_restored_logging")
def test_a_group_another_user_has_as_primary_group_is_not_private(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``useradd -g owner bob``: bob writes where the owner's group may, though the
    group lists no member. Refused."""
    shared, gid = _group_writable(tmp, 0o775)
    bob = pwd.struct_passwd(("bob", "x", 54321, gid, "", "/", "/bin/sh"))
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: _user_named("owner", gid))
    monkeypatch.setattr(grp, "getgrgid", lambda _: grp.struct_group(("owner", "x", gid, [])))
    monkeypatch.setattr(pwd, "getpwall", lambda: [_user_named("owner", gid), bob])
    monkeypatch.setattr(os, "getxattr", _no_acl)

    status = main(["check", "--database", str(shared / "stoat.db")])

    [line] = capsys.readouterr().err.splitlines()
    assert status == 2
    assert "is writable by group owner, not the private group" in line


def _no_acl(path: object, attribute: str) -> bytes:
    raise OSError(errno.ENODATA, "No data available")


@pytest.mark.usefixtures("_restored_logging")
def test_a_group_writable_database_directory_with_an_acl_is_refused(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With an access ACL the group bits are its mask: a named user may write, whatever
    the group. Refused, one line."""
    shared, gid = _group_writable(tmp, 0o770)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: _user_named("owner", gid))
    monkeypatch.setattr(grp, "getgrgid", lambda _: grp.struct_group(("owner", "x", gid, [])))
    acl_reads: list[str] = []

    def an_acl(path: object, attribute: str) -> bytes:
        acl_reads.append(attribute)
        return b"\x02\x00\x00\x00"

    monkeypatch.setattr(os, "getxattr", an_acl)

    status = main(["check", "--database", str(shared / "stoat.db")])

    [line] = capsys.readouterr().err.splitlines()
    assert status == 2
    assert "has an access ACL that may let others write" in line
    assert acl_reads == ["system.posix_acl_access"]


def test_serving_refuses_a_damaged_database_before_writing_to_it(tmp: Path) -> None:
    """The start-up check reads first (quick_check on a read-only connection): the
    damaged file is refused as it was, not switched to WAL nor migrated."""
    (tmp / "data").mkdir(mode=0o700)
    database = write_damaged_database(tmp / "data" / "stoat.db")
    before = database.read_bytes()

    with pytest.raises(StoreError, match="is damaged: PRAGMA quick_check"):
        check_startup(Settings(database_path=database))

    assert database.read_bytes() == before


def test_check_says_serving_would_leave_a_linked_thumbnails_directory_alone(tmp: Path) -> None:
    """The start-up's own rule, read only: a symbolic link in the thumbnails'
    place is noted (serving runs without thumbnails), its target untouched."""
    (tmp / "data").mkdir(mode=0o700)
    (tmp / "elsewhere").mkdir()
    (tmp / "data" / "stoat.db.thumbnails").symlink_to(tmp / "elsewhere")

    line = startup_module.check(Settings(database_path=tmp / "data" / "stoat.db"))

    assert line.endswith(
        f"thumbnails: {tmp / 'data' / 'stoat.db.thumbnails'} is a symbolic link:"
        " serving would leave it alone, without thumbnails"
    )
    assert list((tmp / "elsewhere").iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_directory_the_system_will_not_make_is_one_error_not_a_recursion() -> None:
    """/proc takes no new directory: mkdir says "missing" however often it is asked."""
    with pytest.raises(StoreError, match="cannot create the directory of"):
        prepare_database(Path("/proc/no-such-dir/x/stoat.db"), "--database")


CRASH_MID_TRANSACTION = """
import os, sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA journal_mode=DELETE")
connection.execute("PRAGMA cache_size=1")  # spill to the file: the journal is hot
connection.execute("BEGIN")
for index in range(2000):
    connection.execute(
        "INSERT INTO videos (path, directory, filename, size_bytes, mtime_ns, created_at,"
        " updated_at) VALUES (?, '/', 'a', 1, 1, 'x', 'x')",
        (f"/p{index:04d}" * 20,),
    )
os._exit(0)  # a crash: no rollback, no close
"""


def test_serving_starts_after_a_crash_left_a_rollback_journal(tmp: Path) -> None:
    """Where WAL is refused, a crash leaves a hot journal that only a writer can
    roll back: the start-up opens the store first then, and starts."""
    (tmp / "data").mkdir(mode=0o700)
    database = tmp / "data" / "stoat.db"
    VideoStore.open(database).close()
    subprocess.run(
        [sys.executable, "-c", CRASH_MID_TRANSACTION, str(database)], check=True, timeout=60
    )
    assert (tmp / "data" / "stoat.db-journal").exists()

    check_startup(Settings(database_path=database)).release()

    store = VideoStore.open(database)
    try:
        assert store.list_videos(1, 0)[1] == 0  # the crashed transaction rolled back
    finally:
        store.close()


@pytest.mark.usefixtures("_restored_logging")
def test_check_reads_what_a_crash_left_through_a_copy_and_changes_nothing(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hot rollback journal, which serving rolls back (above), cannot be read through
    read-only (check said "attempt to write a readonly database", exit 2): check rolls
    back a copy of both and reads that, and the file and its journal stay as they were."""
    (tmp / "data").mkdir(mode=0o700)
    database = tmp / "data" / "stoat.db"
    store = VideoStore.open(database)
    store.upsert([record("/m/a.mp4")])
    store.close()
    subprocess.run(
        [sys.executable, "-c", CRASH_MID_TRANSACTION, str(database)], check=True, timeout=60
    )
    before = database.read_bytes(), (tmp / "data" / "stoat.db-journal").read_bytes()

    status = main(["check", "--database", str(database)])

    out = capsys.readouterr().out
    assert status == 0
    assert "a crash left a rollback journal, which serving rolls back; schema" in out
    assert f"schema {SCHEMA_VERSION}, 1 videos" in out  # the crashed transaction rolled back
    after = database.read_bytes(), (tmp / "data" / "stoat.db-journal").read_bytes()
    assert after == before


@pytest.mark.usefixtures("_restored_logging")
def test_check_reads_again_a_database_that_a_service_rolled_back_while_it_was_copied(
    tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service starts between the copy of the journal and the copy of the file: it rolls
    the file back and writes to it. The copy would then be rolled back with a journal it
    no longer matches (a truncated, "damaged" file): check sees the file changed, and
    reads it again, now without a hot journal."""
    (tmp / "data").mkdir(mode=0o700)
    database = tmp / "data" / "stoat.db"
    VideoStore.open(database).close()
    subprocess.run(
        [sys.executable, "-c", CRASH_MID_TRANSACTION, str(database)], check=True, timeout=60
    )
    copy = shutil.copyfile

    def a_service_starts_meanwhile(source: str, target: str) -> str:
        copied = copy(source, target)
        if source.endswith("-journal"):
            store = VideoStore.open(database)  # rolls back, then writes
            store.upsert([record("/m/a.mp4"), record("/m/b.mp4")])
            store.close()
        return copied

    monkeypatch.setattr(shutil, "copyfile", a_service_starts_meanwhile)

    status = main(["check", "--database", str(database)])

    out = capsys.readouterr().out
    assert status == 0
    assert f"schema {SCHEMA_VERSION}, 2 videos" in out
    assert "rollback journal" not in out


@pytest.mark.usefixtures("_restored_logging")
def test_check_refuses_a_one_byte_file(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file of one byte is no database: check refuses it (SQLite alone would
    call it a new one, schema 0, and serving would write one over it)."""
    (tmp / "data").mkdir(mode=0o700)
    database = tmp / "data" / "stoat.db"
    database.write_bytes(b"\n")

    status = main(["check", "--database", str(database)])

    [line] = capsys.readouterr().err.splitlines()
    assert status == 2
    assert line.endswith("it is not an SQLite database (1 byte, shorter than SQLite's header)")
    assert database.read_bytes() == b"\n"


@pytest.mark.usefixtures("_restored_logging")
def test_check_refuses_an_emptied_file_and_keeps_the_log_beside_it(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty database beside a log that holds commits: check refuses it and
    changes nothing (SQLite, even reading, would delete the log)."""
    (tmp / "data").mkdir(mode=0o700)
    database = tmp / "data" / "stoat.db"
    log = emptied_beside_its_log(database)

    status = main(["check", "--database", str(database)])

    [line] = capsys.readouterr().err.splitlines()
    assert status == 2
    assert line.endswith(
        "holds commits: restore the database from a backup, or move the"
        " log away to start an empty library"
    )
    assert database.read_bytes() == b""
    assert (tmp / "data" / "stoat.db-wal").read_bytes() == log


@pytest.mark.usefixtures("_restored_logging")
def test_check_refuses_a_missing_file_beside_a_log_of_commits(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The database deleted, its log of commits left: serving would refuse it,
    so check does too (not "would serve ... new database"), and makes nothing."""
    (tmp / "data").mkdir(mode=0o700)
    database = tmp / "data" / "stoat.db"
    emptied_beside_its_log(database)
    database.unlink()

    status = main(["check", "--database", str(database)])

    [line] = capsys.readouterr().err.splitlines()
    assert status == 2
    assert "it is missing, but its write-ahead log" in line
    assert not database.exists()


@pytest.mark.usefixtures("_restored_logging")
def test_check_refuses_a_file_that_is_no_database_whatever_journal_is_beside_it(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal's presence is no reason to pass a file over: one that is not a database
    is refused by check as serving refuses it."""
    (tmp / "data").mkdir(mode=0o700)
    database = tmp / "data" / "stoat.db"
    database.write_bytes(b"not a database at all" * 100)
    (tmp / "data" / "stoat.db-journal").write_bytes(b"")

    status = main(["check", "--database", str(database)])

    [line] = capsys.readouterr().err.splitlines()
    assert status == 2
    assert line.endswith("file is not a database")


@pytest.mark.usefixtures("_restored_logging")
def test_a_fifo_in_the_databases_place_is_refused_not_waited_on(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Opening a FIFO would block until a writer came: refused first, one line.
    (Should it block in an open of the FIFO, a writer comes every 30 s, so
    that the test fails rather than hangs: main() ignores a stop signal's
    default.)"""
    (tmp / "data").mkdir(mode=0o700)
    fifo = tmp / "data" / "stoat.db"
    os.mkfifo(fifo)
    done, rescued = threading.Event(), threading.Event()

    def rescue() -> None:
        while not done.wait(30):
            with contextlib.suppress(OSError):  # ENXIO: no reader waits
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                rescued.set()

    rescuer = threading.Thread(target=rescue)
    rescuer.start()
    try:
        status = main(["check", "--database", str(fifo)])
    finally:
        done.set()
        rescuer.join()

    [line] = capsys.readouterr().err.splitlines()
    assert not rescued.is_set()
    assert status == 2
    assert line.endswith("stoat.db is not a regular file")


@pytest.mark.usefixtures("_restored_logging")
def test_a_symlinked_database_file_is_refused(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite would follow a link in the database's place: exit 2, one line, target untouched."""
    (tmp / "data").mkdir(mode=0o700)
    (tmp / "data" / "stoat.db").symlink_to(tmp / "elsewhere.db")

    status, line = _check_line(tmp / "data" / "stoat.db", capsys)

    assert status == 2
    assert "is a symbolic link" in line
    assert not (tmp / "elsewhere.db").exists()


@pytest.mark.usefixtures("_restored_logging")
def test_a_database_file_with_another_name_is_refused(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hard link would let a second service serve the same file under its
    other name (the lock goes by the name), each with its own journal: exit 2,
    one line, both names untouched."""
    (tmp / "data").mkdir(mode=0o700)
    database = tmp / "data" / "stoat.db"
    VideoStore.open(database).close()
    os.link(database, tmp / "data" / "copy.db")
    before = database.read_bytes()

    status, line = _check_line(database, capsys)

    assert status == 2
    assert line.endswith(
        f"{database} has 1 other name(s) (hard links): give the database a name of its own"
        " (copy it; a second service could serve it under another)"
    )
    assert database.read_bytes() == before


@pytest.mark.usefixtures("_restored_logging")
def test_a_new_data_directory_and_database_are_private(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Serving's start-up creates each missing directory 0700 and the database
    0600, whatever the umask (``check`` creates nothing)."""
    database = tmp / "new" / "deeper" / "stoat.db"
    old_umask = os.umask(0)
    try:
        startup_module.check_startup(Settings(database_path=database)).release()
    finally:
        os.umask(old_umask)

    assert capsys.readouterr().err == ""
    assert stat.S_IMODE(os.stat(tmp / "new").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp / "new" / "deeper").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(database).st_mode) == 0o600


def test_the_names_made_after_the_database_are_the_ones_checked() -> None:
    """The length check knows every file named after the database."""
    assert {_lock.LOCK_SUFFIX, _thumbdir.SUFFIX} <= set(_datadir.COMPANION_SUFFIXES)


@pytest.mark.parametrize("written", ["8000\r", " 8000 ", "\u00a08000", "+8000", "08000"])
def test_a_number_as_an_env_file_may_write_it_is_read(written: str) -> None:
    """White space around it (a CRLF env file's \\r among it), a sign, leading zeros: the
    number the user meant."""

    _, settings, _ = parse_command([], {"STOAT_PORT": written})

    assert settings.port == 8000


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize(
    ("variable", "said"),
    [
        ("STOAT_PORT", "STOAT_PORT must be a whole number, got '<redacted>'"),
        ("STOAT_JOB_TIMEOUT", "STOAT_JOB_TIMEOUT must be a number of seconds, got '<redacted>'"),
        ("STOAT_PROBE_PRIORITY", "STOAT_PROBE_PRIORITY must be idle or normal, got '<redacted>'"),
    ],
)
def test_a_token_pasted_into_a_setting_read_before_it_is_redacted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, said: str
) -> None:
    """The token's value is redacted from the error of a variable read before
    the token's own (a swapped deploy template), not only from those after it."""
    token = "abcdefghijklmnopqrstuvwxyz012345"
    monkeypatch.setenv("STOAT_API_TOKEN", token)
    monkeypatch.setenv(variable, token)

    status = main(["check"])

    [line] = capsys.readouterr().err.splitlines()
    assert status == 2
    assert said in line, line
    assert token not in line


@pytest.mark.usefixtures("_restored_logging")
def test_a_token_in_the_database_path_is_redacted_from_the_store_s_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An error found after the settings were read (here, the database's: not
    this service's file) does not repeat the token either."""
    token = "abcdefghijklmnopqrstuvwxyz012345"
    database = tmp_path / f"{token}.db"
    database.write_text("not a database\n" * 100)
    monkeypatch.setenv("STOAT_API_TOKEN", token)
    monkeypatch.setenv("STOAT_DATABASE_PATH", str(database))

    status = main(["check"])

    [line] = capsys.readouterr().err.splitlines()
    assert status == 2
    assert f"{tmp_path}/<redacted>.db" in line, line
    assert token not in line


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize("cause", ["database", "port in use"])
def test_with_the_json_log_an_error_after_the_log_is_set_up_is_a_json_record(
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cause: str,
) -> None:
    """With ``--log-format json`` every line on stderr is JSON: an unusable
    database, or a port in use, found once the log is set up, is one CRITICAL
    record, not a plain line after the JSON ones."""
    database = tmp / "data" / "stoat.db"
    database.parent.mkdir(mode=0o700)
    if cause == "database":
        database.write_text("not a database\n" * 100)
    monkeypatch.setattr(main_module, "_serve", _SERVE)  # it cannot listen: the port is taken
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        monkeypatch.setenv("STOAT_DATABASE_PATH", str(database))
        status = main(["--log-format", "json", "--port", str(port)])

    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    [error] = [record for record in records if record["level"] == "CRITICAL"]
    assert status == (2 if cause == "database" else 1)
    expected = "file is not a database" if cause == "database" else "cannot listen on"
    assert expected in error["message"], error


@pytest.mark.usefixtures("_restored_logging")
def test_a_huge_flag_value_s_error_is_cut_too(capsys: pytest.CaptureFixture[str]) -> None:
    """A flag's value of 100,000 characters in argparse's error: cut as a
    variable's is, MAX_LINE_CHARS in all, its start and its end kept."""
    with pytest.raises(SystemExit):
        main(["check", "--job-timeout", "9" * 100_000 + "x"])

    usage, line = capsys.readouterr().err.splitlines()
    assert usage.startswith("usage: stoat-ferret")
    assert len(line) == cli_module.MAX_LINE_CHARS
    assert line.startswith(
        "stoat-ferret: error: --job-timeout must be a number of seconds, got '99"
    )
    assert line.endswith("999x'")


@pytest.mark.usefixtures("_restored_logging")
def test_a_huge_value_s_error_keeps_its_start_and_its_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A value of 100,000 characters is not quoted back whole: the line keeps
    its start (which setting) and its end (why), MAX_LINE_CHARS in all."""
    monkeypatch.setenv("STOAT_JOB_TIMEOUT", "9" * 100_000 + "x")

    status = main(["check"])

    [line] = capsys.readouterr().err.splitlines()
    assert status == 2
    assert len(line) == cli_module.MAX_LINE_CHARS
    assert line.startswith("stoat-ferret: STOAT_JOB_TIMEOUT must be a number of seconds, got '999")
    assert line.endswith("999x'")
    assert "…" in line


@pytest.mark.usefixtures("_restored_logging")
def test_serving_says_it_checks_a_large_database_before_it_does(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, log_records: list[Any]
) -> None:
    """A database of SAID_CHECK_BYTES or more (its quick_check reads every
    page: seconds, cold) gets a log line first; a smaller one none."""
    data = tmp / "data"
    data.mkdir(mode=0o700)
    database = data / "stoat.db"
    VideoStore.open(database).close()
    check_startup(Settings(database_path=database)).release()
    quiet = [record for record in log_records if record["message"].startswith("checking")]
    monkeypatch.setattr(startup_module, "SAID_CHECK_BYTES", database.stat().st_size)

    check_startup(Settings(database_path=database)).release()

    said = [record["message"] for record in log_records if record["message"].startswith("checking")]
    assert quiet == []
    assert said == [f"checking video store {database} (quick_check)"]


def test_the_check_s_thread_leaves_the_stop_signals_to_the_waiting_one(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database's check runs in a thread that blocks the stop signals, so
    the kernel gives a stop to the thread waiting for it, whose wait the
    signal's handler ends (given to the check's thread, it would run on, and
    the wait with it: a CI run hung so); the waiting thread's mask is as it was."""
    database = tmp / "stoat.db"
    VideoStore.open(database).close()
    masks: list[set[int | signal.Signals]] = []

    def inspect(*args: Any, **kwargs: Any) -> Any:
        masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, []))
        return inspect_database(*args, **kwargs)

    monkeypatch.setattr(startup_module, "inspect_database", inspect)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])

    startup_module.inspect_interruptibly(database)

    assert set(STOP_SIGNALS) <= masks[0]
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


def test_a_stop_pending_as_the_check_blocks_the_signals_leaves_the_mask_as_it_was(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop signal pending as the stop signals are blocked for the check's
    thread has its handler run (and raise) from that very call, once the mask
    has changed: the waiting thread's mask is put back all the same (a stop
    signal left blocked would make every later Ctrl+C do nothing)."""
    database = tmp / "stoat.db"
    VideoStore.open(database).close()
    real = signal.pthread_sigmask

    def pending_stop(how: int, mask: Any) -> set[int | signal.Signals]:
        previous = real(how, mask)
        if how == signal.SIG_BLOCK and set(STOP_SIGNALS) <= set(mask):
            raise KeyboardInterrupt  # the handler of a stop that came meanwhile
        return previous

    before = real(signal.SIG_BLOCK, [])
    monkeypatch.setattr(signal, "pthread_sigmask", pending_stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            startup_module.inspect_interruptibly(database)
    finally:
        monkeypatch.undo()
        after = real(signal.SIG_SETMASK, before)  # the mask as it was left; put back

    assert after == before


def test_serving_a_database_served_elsewhere_is_refused_before_its_check(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process serving the database is said at once, not after a
    quick_check that reads every page (seconds, for a large store) in vain."""
    data = tmp / "data"
    data.mkdir(mode=0o700)
    database = data / "stoat.db"
    VideoStore.open(database).close()
    checked: list[Path] = []
    monkeypatch.setattr(startup_module, "inspect_interruptibly", checked.append)

    with lock_held_elsewhere(database), pytest.raises(StoreError, match="already served"):
        check_startup(Settings(database_path=database))

    assert checked == []


@pytest.mark.parametrize("free", [7, 9])
def test_serving_needs_the_inodes_check_asks_for_no_more(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, free: int
) -> None:
    """Check asks for 8 free inodes before anything is made; serving asks as
    much before it makes the database and its lock, and for the rest (the
    thumbnails' directory and mark, SQLite's log files) after. So with 9 free
    both go on (serving refused the thumbnails with 7 left), and with 7 both
    refuse, serving before it has made anything."""
    data = tmp / "data"
    data.mkdir(mode=0o700)
    database = data / "stoat.db"

    def statvfs(path: Any) -> os.statvfs_result:
        left = free - len(os.listdir(data))  # each file made takes one
        return os.statvfs_result((4096, 4096, 200_000, 100_000, 100_000, 100, left, left, 0, 255))

    monkeypatch.setattr(os, "statvfs", statvfs)

    if free >= 8:
        check_startup(Settings(database_path=database)).release()
    else:
        with pytest.raises(StoreError, match="its file system is full"):
            check_startup(Settings(database_path=database))
        assert os.listdir(data) == []


@pytest.mark.usefixtures("_restored_logging")
def test_serving_needs_the_room_check_asks_for_no_more(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Check asks for 1 MiB free before anything is made; serving asks as much
    before it makes the database (94 KB new) and its lock, and no more room for
    the thumbnails after: with 20 KB over 1 MiB free, both go on (serving
    refused the thumbnails, where check said ok)."""
    data = tmp / "data"
    data.mkdir(mode=0o700)
    database = data / "stoat.db"

    def statvfs(path: Any) -> os.statvfs_result:
        used = sum(entry.stat().st_size for entry in os.scandir(data) if entry.is_file())
        blocks = ((1 << 20) + 20_000 - used) // 4096
        return os.statvfs_result((4096, 4096, 200_000, blocks, blocks, 100, 1000, 1000, 0, 255))

    monkeypatch.setattr(os, "statvfs", statvfs)

    assert main(["check", "--database", str(database)]) == 0
    check_startup(Settings(database_path=database)).release()


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize("free", [8, 10, 11])
def test_check_asks_an_inode_for_each_directory_serving_makes(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, free: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database three directories down that are not there yet: serving makes
    them, the database and its lock, then the thumbnails' four, so check asks
    8 inodes and one for each directory (11), as serving does before it makes
    anything: check says ok exactly when serving starts (with 8 free, check
    said ok and serving refused the thumbnails with 3 left)."""

    home = tmp / "home"
    home.mkdir(mode=0o700)

    def statvfs(path: Any) -> os.statvfs_result:
        left = free - sum(len(files) + len(dirs) for _, dirs, files in os.walk(home))
        return os.statvfs_result((4096, 4096, 200_000, 100_000, 100_000, 100, left, left, 0, 255))

    monkeypatch.setattr(os, "statvfs", statvfs)
    database = home / "x" / "y" / "z" / "stoat.db"

    checked = main(["check", "--database", str(database)]) == 0
    capsys.readouterr()
    try:
        check_startup(Settings(database_path=database)).release()
    except StoreError:
        served = False
        assert os.listdir(home) == []  # refused before it made anything
    else:
        served = True

    assert checked == served == (free >= 11)


def test_serving_from_a_directory_it_cannot_write_in_says_so(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data directory the service cannot write in (mode 0500, an immutable
    one, a read-only mount) is said as check says it, in one line, not in
    SQLite's words ("attempt to write a readonly database")."""
    data = tmp / "data"
    data.mkdir(mode=0o700)
    database = data / "stoat.db"
    VideoStore.open(database).close()
    real_access = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        if os.fspath(path) == str(data) and mode & os.W_OK:
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)

    with pytest.raises(StoreError) as refused:
        check_startup(Settings(database_path=database))

    assert str(refused.value) == f"STOAT_DATABASE_PATH: cannot write in {data} (Permission denied)"


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize(
    ("where", "said"),
    [
        # Settings that fold the case of the value they quote.
        ({"STOAT_LOG_FORMAT": "TOKEN"}, "STOAT_LOG_FORMAT must be text or json, got '<redacted>'"),
        ({"STOAT_LOG_LEVEL": "TOKEN"}, "STOAT_LOG_LEVEL must be one of"),
        # A flag's value, in argparse's error.
        ({"argv": ["check", "--port", "TOKEN"]}, "--port must be a whole number, got '<redacted>'"),
        # A path, its runs of '/' made one.
        ({"STOAT_DATABASE_PATH": "AFILE/TOKEN/x.db"}, "/a-file/<redacted>/x.db"),
        # A path's last part, its end '/' dropped.
        ({"STOAT_SCAN_ROOTS": "AFILE/../TOKEN"}, "/<redacted> is not an existing directory"),
    ],
    ids=["lower-cased", "upper-cased", "flag", "path", "path-end"],
)
def test_a_token_is_redacted_whatever_the_error_did_to_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    where: dict[str, Any],
    said: str,
) -> None:
    """The token's value is redacted whether the error quotes it folded to
    lower or upper case, in a flag's error (argparse's), or in a path whose
    runs of '/' were made one, its '/./' too, its end '/' dropped and its
    leading ones joined to the directory's (a token may hold '/' and '.')."""
    token = "//Abcdefgh//ijk/./lmnop+q=/"
    monkeypatch.setenv("STOAT_API_TOKEN", token)
    (tmp_path / "a-file").write_text("not a directory\n")

    def filled(text: str) -> str:
        return text.replace("TOKEN", token).replace("AFILE", str(tmp_path / "a-file"))

    argv = [filled(arg) for arg in where.pop("argv", ["check"])]
    for name, value in where.items():
        monkeypatch.setenv(name, filled(value))

    with contextlib.suppress(SystemExit):
        main(argv)

    err = capsys.readouterr().err
    assert said in err, err
    for form in (token, token.lower(), token.upper(), str(PurePosixPath(token))):
        assert form not in err
    normalised = str(PurePosixPath(token)).lstrip("/")
    for piece in (normalised[start : start + 12] for start in range(len(normalised) - 11)):
        assert piece.lower() not in err.lower(), piece  # nor most of it
