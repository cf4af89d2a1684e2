"""Settings: read from the environment once, every bad value a one-line error."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest

from stoat_ferret.library import ThreadPriority
from stoat_ferret.settings import (
    Option,
    Settings,
    SettingsError,
    default_probe_threads,
    is_loopback,
    known_variables,
    options,
    parse_flag,
)

README = Path(__file__).parent.parent / "README.md"
TOKEN = "a-token-of-24-characters"


def test_defaults_without_environment() -> None:
    """An empty environment gives the documented defaults."""

    settings = Settings.from_environ({})

    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.database_path == Path.cwd() / "data" / "stoat.db"
    assert settings.scan_roots == ()
    assert settings.job_timeout == 300.0
    assert settings.max_workers == 2
    assert settings.max_pending == 1000
    assert settings.shutdown_grace == 10.0
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"
    assert settings.probe_threads == default_probe_threads(len(os.sched_getaffinity(0)))
    assert settings.probe_priority is ThreadPriority.IDLE
    assert settings.allowed_hosts == ()
    assert settings.allowed_origins == ()
    assert settings.api_token is None
    assert settings.max_streams == 64


@pytest.mark.parametrize(
    ("cores", "threads"), [(None, 1), (1, 1), (2, 2), (3, 3), (8, 8), (9, 8), (64, 8)]
)
def test_default_probe_threads_use_every_core(cores: int | None, threads: int) -> None:
    """One thread per usable core, at least 1 and at most 8."""

    assert default_probe_threads(cores) == threads


def test_usable_cores_follow_the_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default counts the cores the process may use, not the machine's."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 7})

    assert Settings().probe_threads == 3


def test_every_variable_is_read(tmp_path: Path) -> None:
    """Each STOAT_* variable sets its field, parsed to its type."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()

    settings = Settings.from_environ(
        {
            "STOAT_HOST": "0.0.0.0",
            "STOAT_PORT": "9001",
            "STOAT_DATABASE_PATH": str(tmp_path / "x.db"),
            "STOAT_SCAN_ROOTS": f"{first}{os.pathsep}{second}{os.pathsep}",
            "STOAT_JOB_TIMEOUT": "12.5",
            "STOAT_MAX_WORKERS": "3",
            "STOAT_MAX_PENDING": "7",
            "STOAT_SHUTDOWN_GRACE": "0",
            "STOAT_LOG_LEVEL": "debug",
            "STOAT_PROBE_THREADS": "6",
            "STOAT_PROBE_PRIORITY": "Normal",
            "STOAT_LOG_FORMAT": "Json",
            "STOAT_ALLOWED_HOSTS": "Videos.example, [::2] ,",
            "STOAT_ALLOWED_ORIGINS": "https://Videos.example:8443/,http://localhost:3000",
            "STOAT_API_TOKEN": TOKEN,
            "STOAT_MAX_STREAMS": "5",
        }
    )

    assert settings.host == "0.0.0.0"
    assert settings.port == 9001
    assert settings.database_path == tmp_path / "x.db"
    assert settings.scan_roots == (Path(os.path.realpath(first)), Path(os.path.realpath(second)))
    assert settings.job_timeout == 12.5
    assert settings.max_workers == 3
    assert settings.max_pending == 7
    assert settings.shutdown_grace == 0.0
    assert settings.log_level == "DEBUG"
    assert settings.probe_threads == 6
    assert settings.probe_priority is ThreadPriority.NORMAL
    assert settings.log_format == "json"
    assert settings.allowed_hosts == ("videos.example", "::2")
    assert settings.allowed_origins == ("https://videos.example:8443", "http://localhost:3000")
    assert settings.api_token == TOKEN
    assert settings.max_streams == 5


def test_empty_variables_take_the_default() -> None:
    """A variable set to an empty string (or blanks) counts as unset."""

    settings = Settings.from_environ({"STOAT_PORT": "", "STOAT_MAX_WORKERS": "  "})

    assert settings.port == 8000
    assert settings.max_workers == Settings().max_workers


@pytest.mark.parametrize(
    ("name", "instead"),
    [
        ("STOAT_API_TOKEN", "unset it to serve without a token"),
        ("STOAT_SCAN_ROOTS", "unset it to let a scan read any directory"),
    ],
)
@pytest.mark.parametrize("value", ["", "   "])
def test_a_blank_token_or_blank_roots_are_refused(name: str, instead: str, value: str) -> None:
    """Blank, these two would open the service up (no token; any directory), and
    ``STOAT_API_TOKEN=$TOKEN`` with TOKEN unset is more likely a slip than a choice."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ({name: value})

    assert str(refused.value) == (
        f"{name} is set but blank (a variable that expanded to nothing?): {instead}"
    )


def test_blank_roots_given_by_the_flag_are_not_refused(tmp_path: Path) -> None:
    """A flag wins over its variable, blank or not."""
    settings = Settings.from_environ(
        {"STOAT_SCAN_ROOTS": ""}, overrides={"scan_roots": (tmp_path,)}
    )

    assert settings.scan_roots == (Path(os.path.realpath(tmp_path)),)


def test_scan_roots_are_resolved(tmp_path: Path) -> None:
    """A root given through a symlink is stored as its real path."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)

    settings = Settings(scan_roots=(tmp_path / "link",))

    assert settings.scan_roots == (Path(os.path.realpath(real)),)


def test_scan_roots_keep_the_places_their_resolution_read(tmp_path: Path) -> None:
    """Resolving each root as the variable spells it, every place read is kept
    beside the real path (a request may name the root so): the spelling's
    links, and those of their targets (``mine`` to ``home/me``, ``home`` to
    ``var/home``)."""
    (tmp_path / "var" / "home" / "me").mkdir(parents=True)
    (tmp_path / "home").symlink_to("var/home")
    (tmp_path / "mine").symlink_to(tmp_path / "home" / "me")

    settings = Settings.from_environ({"STOAT_SCAN_ROOTS": f"{tmp_path}/x/../mine/"})

    assert settings.scan_roots == (Path(os.path.realpath(tmp_path / "var" / "home" / "me")),)
    expected = [tmp_path / name for name in ("x", "mine", "home", "var", "var/home", "var/home/me")]
    below = [way for way in settings.scan_root_ways if way.is_relative_to(tmp_path)]
    assert below == [tmp_path, *expected]


def test_the_links_the_roots_go_through_are_kept_with_their_resolved_paths(
    tmp_path: Path,
) -> None:
    """``/srv/mine``, a link to ``/home/me/videos``, where ``/home`` is a link
    to ``var/home``: both links, each with where it led at the start (what a
    scan reads a link's absolute target with)."""
    (tmp_path / "var" / "home" / "me" / "videos").mkdir(parents=True)
    (tmp_path / "home").symlink_to("var/home")
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "mine").symlink_to(tmp_path / "home" / "me" / "videos")
    real = Path(os.path.realpath(tmp_path))

    settings = Settings.from_environ({"STOAT_SCAN_ROOTS": str(tmp_path / "srv" / "mine")})

    below = [(link, to) for link, to in settings.scan_root_links if link.is_relative_to(tmp_path)]
    assert below == [
        (tmp_path / "srv" / "mine", real / "var" / "home" / "me" / "videos"),
        (tmp_path / "home", real / "var" / "home"),
    ]
    assert Settings.from_environ({"STOAT_SCAN_ROOTS": str(real)}).scan_root_links == ()
    # Derived once: a copy keeps them as they are.
    evolved = attrs.evolve(settings, max_streams=1)
    assert (evolved.scan_root_ways, evolved.scan_root_links) == (
        settings.scan_root_ways,
        settings.scan_root_links,
    )


def test_two_spellings_of_one_root_are_one_root(tmp_path: Path) -> None:
    """A root named twice, by a link and by its real path: listed once (check,
    the start-up line), its spelling's places kept."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)

    settings = Settings.from_environ({"STOAT_SCAN_ROOTS": f"{tmp_path}/link:{real}"})

    assert settings.scan_roots == (Path(os.path.realpath(real)),)
    assert tmp_path / "link" in settings.scan_root_ways


def _chain(tmp_path: Path, links: int) -> Path:
    """``link0`` -> ``link1`` -> ... -> ``link<links-1>`` -> ``real`` (a directory)."""
    (tmp_path / "real").mkdir()
    for index in range(links):
        target = f"link{index + 1}" if index + 1 < links else "real"
        (tmp_path / f"link{index}").symlink_to(target)
    return tmp_path / "link0"


def test_a_root_through_a_chain_and_dotdot_is_its_real_path(tmp_path: Path) -> None:
    """A root reached through a 30-link chain, then a link and '..', is stored as its real path."""
    head = _chain(tmp_path, 30)
    (tmp_path / "real" / "sub").mkdir()
    (tmp_path / "up").symlink_to(tmp_path / "real" / "sub")

    settings = Settings(scan_roots=(head, tmp_path / "up" / ".." / "sub"))

    real = Path(os.path.realpath(tmp_path / "real"))
    assert settings.scan_roots == (real, real / "sub")


@pytest.mark.parametrize("links", [41, 1_200])
def test_a_root_that_is_a_long_chain_is_refused(tmp_path: Path, links: int) -> None:
    """A root that is a chain of more links than the kernel follows is a SettingsError, never a
    RecursionError (Python 3.11's realpath recurses once per link)."""
    head = _chain(tmp_path, links)

    with pytest.raises(SettingsError, match=r"^STOAT_SCAN_ROOTS: .*link0 is a symlink loop"):
        Settings.from_environ({"STOAT_SCAN_ROOTS": str(head)})


def test_a_root_that_is_a_loop_is_refused(tmp_path: Path) -> None:
    """A root that is a symlink loop names the variable, or the flag."""
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")

    with pytest.raises(SettingsError, match=r"^STOAT_SCAN_ROOTS: .*a is a symlink loop"):
        Settings(scan_roots=(tmp_path / "a",))
    with pytest.raises(SettingsError, match=r"^--scan-root: .*a is a symlink loop"):
        parse_flag("scan_roots", [str(tmp_path / "a")])


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("STOAT_PORT", "http", "whole number"),
        ("STOAT_PORT", "65536", "0 to 65535"),
        ("STOAT_PORT", "-80", "0 to 65535"),
        ("STOAT_SCAN_ROOTS", "/no/such/directory", "not an existing directory"),
        ("STOAT_JOB_TIMEOUT", "0", "> 0"),
        ("STOAT_JOB_TIMEOUT", "soon", "number of seconds"),
        ("STOAT_JOB_TIMEOUT", "inf", "finite"),
        ("STOAT_MAX_WORKERS", "0", "from 1 to 1,024"),
        ("STOAT_MAX_WORKERS", "100000000", "from 1 to 1,024, got 100000000"),
        ("STOAT_MAX_WORKERS", "1.5", "whole number"),
        ("STOAT_MAX_PENDING", "-1", "from 1 to 1,000,000"),
        ("STOAT_MAX_PENDING", "1000001", "from 1 to 1,000,000"),
        ("STOAT_MAX_STREAMS", "10001", "from 1 to 10,000"),
        ("STOAT_PROBE_THREADS", "0", "from 1 to 256"),
        ("STOAT_PROBE_THREADS", "257", "from 1 to 256"),
        ("STOAT_SCAN_ROOTS", os.pathsep, "names no directory, only separators"),
        ("STOAT_SCAN_ROOTS", f" {os.pathsep} {os.pathsep}", "names no directory"),
        ("STOAT_PROBE_THREADS", "two", "whole number"),
        ("STOAT_PROBE_PRIORITY", "low", "idle or normal"),
        ("STOAT_SHUTDOWN_GRACE", "-1", ">= 0"),
        ("STOAT_SHUTDOWN_GRACE", "nan", "finite"),
        ("STOAT_LOG_LEVEL", "chatty", "one of"),
        ("STOAT_LOG_FORMAT", "xml", "text or json"),
        ("STOAT_HOST", "local host", "host"),
        ("STOAT_ALLOWED_HOSTS", "videos example", "host names"),
        # A Host header's name is compared port aside: these would match nothing.
        ("STOAT_ALLOWED_HOSTS", "https://videos.example", "without scheme, port or wildcard"),
        ("STOAT_ALLOWED_HOSTS", "videos.example:8000", "without scheme, port or wildcard"),
        ("STOAT_ALLOWED_HOSTS", "127.0.0.1:8000", "without scheme, port or wildcard"),
        ("STOAT_ALLOWED_HOSTS", "*.example", "without scheme, port or wildcard"),
        ("STOAT_ALLOWED_HOSTS", "videos.example/app", "without scheme, port or wildcard"),
        ("STOAT_ALLOWED_HOSTS", "videos..example", "without scheme, port or wildcard"),
        # IDNA 2003 would drop the joiner (another host) and make ß ss (not what browsers send).
        ("STOAT_ALLOWED_HOSTS", "a\u200db.example", "a Unicode name browsers read alike"),
        ("STOAT_ALLOWED_HOSTS", "\u2603stra\u00dfe.example", "a Unicode name browsers read alike"),
        ("STOAT_ALLOWED_ORIGINS", "videos.example", "origins like"),
        ("STOAT_ALLOWED_ORIGINS", "http://videos.example/app", "no path"),
        ("STOAT_ALLOWED_ORIGINS", "ftp://videos.example", "origins like"),
        ("STOAT_ALLOWED_ORIGINS", "http://a b", "origins like"),
        ("STOAT_ALLOWED_ORIGINS", "https://user@videos.example", "origins like"),
        ("STOAT_ALLOWED_ORIGINS", "https://videos.example?x", "origins like"),
        ("STOAT_ALLOWED_ORIGINS", "https://videos.example:port", "origins like"),
        ("STOAT_ALLOWED_ORIGINS", "https://videos.example:99999", "origins like"),
        ("STOAT_ALLOWED_ORIGINS", "https://videos..example", "origins like"),
        ("STOAT_ALLOWED_ORIGINS", "https://videos-", "origins like"),
        ("STOAT_API_TOKEN", "short", "at least 16"),
        ("STOAT_API_TOKEN", "sixteen chars \u00e9\u00e9\u00e9", "only letters, digits"),
        ("STOAT_API_TOKEN", "sixteen;chars,and", "only letters, digits"),
        ("STOAT_MAX_STREAMS", "0", "from 1 to 10,000"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, words: str) -> None:
    """A bad value raises SettingsError: one line with the variable and the rule."""

    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({variable: value})

    message = str(caught.value)
    assert variable in message
    assert words in message
    assert "\n" not in message


def test_allowed_names_are_kept_as_a_browser_sends_them(tmp_path: Path) -> None:
    """Case-blind, IPv6 without brackets, a Unicode name in its ``xn--`` form
    (what a browser puts in ``Host``), a trailing dot kept."""
    settings = Settings.from_environ(
        {
            "STOAT_ALLOWED_HOSTS": "B\u00fccher.example,stra\u00dfe.example,\u2603.example,"
            "\u2603.stra\u00dfe.example,example.\u039f\u0394\u039f\u03a3,[::1],fe80::1,"
            "videos.example.,10.0.0.5",
            "STOAT_API_TOKEN": TOKEN,
            "STOAT_SCAN_ROOTS": str(tmp_path),
        }
    )

    assert settings.allowed_hosts == (
        "xn--bcher-kva.example",
        "xn--strae-oqa.example",  # UTS 46 as browsers: not IDNA 2003's strasse.example
        "xn--n3h.example",  # a symbol IDNA 2008 refuses, and browsers take
        "xn--n3h.xn--strae-oqa.example",  # label by label
        "example.xn--pxavbq",  # a final capital sigma, as browsers map it (not lowered to ς)
        "::1",
        "fe80::1",
        "videos.example.",
        "10.0.0.5",
    )


def test_an_ipv6_address_to_listen_on_may_be_given_in_brackets() -> None:
    assert Settings.from_environ({"STOAT_HOST": "[::1]"}).host == "::1"


def test_database_path_that_is_a_directory(tmp_path: Path) -> None:
    """The database path must name a file, not an existing directory."""

    with pytest.raises(SettingsError, match="STOAT_DATABASE_PATH is a directory"):
        Settings.from_environ({"STOAT_DATABASE_PATH": str(tmp_path)})
    with pytest.raises(SettingsError, match="STOAT_DATABASE_PATH must be the path of a file"):
        Settings.from_environ({"STOAT_DATABASE_PATH": "/"})


@pytest.mark.parametrize(
    "origin",
    ["http://video_ui:8000", "https://example.com.", "http://[::1]:8000", "http://10.0.0.5"],
)
def test_real_origins_are_allowed(origin: str) -> None:
    """A Docker service name (an underscore), a name with its trailing dot,
    addresses: each an origin a browser may send."""
    settings = Settings.from_environ({"STOAT_ALLOWED_ORIGINS": origin})

    assert settings.allowed_origins == (origin,)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("n" * 300 + ".db", "File name too long"), ("loop/stoat.db", "Too many levels")],
    ids=["too-long", "link-loop"],
)
def test_a_database_path_that_cannot_be_looked_at_is_one_clear_error(
    tmp_path: Path, name: str, reason: str
) -> None:
    """A path the system refuses to look up (a name too long, a link loop on
    the way, a directory it may not search) is a settings error naming the
    variable and why, not a traceback."""
    (tmp_path / "loop").symlink_to("loop")

    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({"STOAT_DATABASE_PATH": str(tmp_path / name)})

    assert str(caught.value).startswith("STOAT_DATABASE_PATH: cannot use ")
    assert reason in str(caught.value)


def test_a_root_whose_path_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """The API takes UTF-8 paths only (a JSON string cannot hold others), so a
    root whose name is not UTF-8 could never be scanned: refused at start."""
    root = os.path.join(os.fsencode(tmp_path), b"vlat\xe9")
    os.mkdir(root)

    with pytest.raises(SettingsError, match=r"STOAT_SCAN_ROOTS: .*vlat\\udce9.* is not UTF-8"):
        Settings.from_environ({"STOAT_SCAN_ROOTS": os.fsdecode(root)})


def test_scan_root_that_is_a_file(tmp_path: Path) -> None:
    """A scan root must be a directory."""
    file = tmp_path / "file"
    file.write_text("x")

    with pytest.raises(SettingsError, match="STOAT_SCAN_ROOTS"):
        Settings(scan_roots=(file,))


def test_direct_construction_is_checked_too() -> None:
    """Building Settings in code runs the same checks as the environment does."""

    with pytest.raises(SettingsError, match="STOAT_MAX_WORKERS"):
        Settings(max_workers=0)
    with pytest.raises(SettingsError, match="STOAT_PORT"):
        Settings(port=True)


def test_overrides_win_over_variables() -> None:
    """A field in ``overrides`` (a flag's value) is taken as is; its variable is not read."""

    settings = Settings.from_environ(
        {"STOAT_PORT": "not a port", "STOAT_MAX_WORKERS": "5"}, overrides={"port": 9000}
    )

    assert settings.port == 9000
    assert settings.max_workers == 5


def test_every_field_describes_its_setting() -> None:
    """Each field has a variable and one line of help; flags and variables are unique."""

    described = options()

    derived = ("scan_root_ways", "scan_root_links")
    settings = [f.name for f in attrs.fields(Settings) if f.name not in derived]
    assert [option.field for option in described] == settings
    for option in described:
        assert option.env.startswith("STOAT_")
        assert option.flag is None if option.secret else str(option.flag).startswith("--")
        assert option.help
        assert "\n" not in option.help
        # A pipe would split the README's table cell.
        assert "|" not in option.help + option.metavar + option.default
    flags = [option.flag for option in described if option.flag is not None]
    assert len(set(flags)) == len(flags)
    assert len({option.env for option in described}) == len(described)


def test_shown_defaults_are_the_defaults() -> None:
    """The default --help and the README show is the value an empty environment gives."""
    defaults = Settings.from_environ({})

    shown = {option.field: option.default for option in options()}

    assert shown["port"] == str(defaults.port)
    assert shown["job_timeout"] == "300"
    assert shown["probe_priority"] == defaults.probe_priority.value
    assert Path(shown["database_path"]).absolute() == defaults.database_path
    assert shown["probe_threads"] == "usable cores, 1 to 8"


def test_a_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    """parse_flag checks as the variable would, but names the flag in the message."""

    with pytest.raises(SettingsError, match=r"^--port must be a port number"):
        parse_flag("port", ["70000"])
    with pytest.raises(SettingsError, match=r"^--database is a directory"):
        parse_flag("database_path", [str(tmp_path)])
    with pytest.raises(SettingsError, match=r"^--scan-root: /no/such is not an existing"):
        parse_flag("scan_roots", [str(tmp_path), "/no/such"])
    first, second, third = (str(tmp_path / name) for name in "abc")
    for name in (first, second, third):
        os.mkdir(name)
    assert parse_flag("scan_roots", [first, second, third]) == (first, second, third)
    # A flag names one directory: a separator is a part of its name.
    with_separator = str(tmp_path / f"b{os.pathsep}c")
    os.mkdir(with_separator)
    assert parse_flag("scan_roots", [first, with_separator]) == (first, with_separator)
    # ... and a space at its end, as typed: "/srv/videos " is another directory.
    with pytest.raises(SettingsError, match=r"^--scan-root: .*/a  is not an existing directory"):
        parse_flag("scan_roots", [f"{first} "])
    spaced = str(tmp_path / "a ")
    os.mkdir(spaced)
    assert parse_flag("scan_roots", [f"{first} "]) == (spaced,)
    assert parse_flag("max_workers", ["2", " 3 "]) == 3


def _readme_table() -> list[str]:
    lines = README.read_text().splitlines()
    start = lines.index("| Flag | Variable | Default | Meaning |")
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start + 2 : end]


def readme_row(option: Option) -> str:
    """The README settings table's row for ``option``."""
    flag = "(variable only)" if option.flag is None else f"`{option.flag} {option.metavar}`"
    repeat = " (repeatable)" if option.repeat else ""
    return f"| {flag} | `{option.env}` | `{option.default}` | {option.help}{repeat} |"


def test_readme_settings_table_is_the_settings_class() -> None:
    """README's settings table lists every field's flag, variable, default and help, in order."""

    assert _readme_table() == [readme_row(option) for option in options()]


def test_the_token_is_never_shown() -> None:
    """The token is out of the settings' repr, and out of its own error message."""
    settings = Settings(api_token=TOKEN)

    assert TOKEN not in repr(settings)
    with pytest.raises(SettingsError) as caught:
        Settings(api_token="short-secret")
    assert "short-secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("misspelt", "closest"),
    [
        ("STOAT_SCAN_ROOT", "STOAT_SCAN_ROOTS"),
        ("STOAT_APITOKEN", "STOAT_API_TOKEN"),
        ("STOAT_ALLOWED_HOST", "STOAT_ALLOWED_HOSTS"),
        ("STOAT_RELIABILITY_PROFILE", None),
    ],
)
def test_an_unknown_variable_names_the_closest_known_one(
    misspelt: str, closest: str | None
) -> None:
    """A STOAT_* variable the service does not read is refused, never ignored."""

    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({misspelt: "/srv/videos"})

    message = str(caught.value)
    assert message.startswith(f"{misspelt} is not a setting of this service; did you mean STOAT_")
    if closest is not None:
        assert message.endswith(f"did you mean {closest}?")
    assert "\n" not in message


def test_other_variables_are_not_settings() -> None:
    """Variables without the STOAT_ prefix (the tests' STOATTEST_ ones too) are ignored."""

    settings = Settings.from_environ({"STOATTEST_RELIABILITY_PROFILE": "soak", "HOME": "/"})

    assert settings == Settings()


def test_every_field_has_its_variable() -> None:
    """The known variables are exactly the fields' variables, each once."""

    assert known_variables() == tuple(option.env for option in options())
    assert len(set(known_variables())) == len(known_variables())


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("LocalHost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("videos.example", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    """Only localhost and loopback addresses count as loopback; a name may resolve anywhere."""

    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("environ", "missing"),
    [
        ({}, ["STOAT_API_TOKEN", "STOAT_SCAN_ROOTS"]),
        ({"STOAT_API_TOKEN": TOKEN}, ["STOAT_SCAN_ROOTS"]),
        ({"STOAT_SCAN_ROOTS": "ROOT"}, ["STOAT_API_TOKEN"]),
    ],
)
def test_beyond_loopback_needs_a_token_and_roots(
    tmp_path: Path, environ: dict[str, str], missing: list[str]
) -> None:
    """Binding beyond loopback without a token or roots is refused, saying which and why."""
    environ = {key: value.replace("ROOT", str(tmp_path)) for key, value in environ.items()}

    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({"STOAT_HOST": "0.0.0.0", **environ})

    message = str(caught.value)
    assert message.startswith(
        "STOAT_HOST=0.0.0.0 is not localhost or a written-out loopback address, so other"
        " machines may reach the service: set "
    )
    for name in ("STOAT_API_TOKEN", "STOAT_SCAN_ROOTS"):
        assert (f"set {name}" in message or f"and {name}" in message) is (name in missing)
    assert "\n" not in message


@pytest.mark.parametrize("host", ["127.1", "localhost.", "2130706433"])
def test_a_loopback_address_not_written_out_is_refused_as_any_other(host: str) -> None:
    """Spellings the system reads as loopback but the check does not: refused
    without a token (safe), and the message says what the check reads as
    loopback rather than that the host is not one."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({"STOAT_HOST": host})

    assert str(caught.value).startswith(
        f"STOAT_HOST={host} is not localhost or a written-out loopback address"
    )


@pytest.mark.parametrize(
    ("names", "refused"),
    [
        ("videos.example", True),
        ("localhost,127.0.0.2,[::1],stoat.localhost", False),
        ("stoat.localhost,10.0.0.5", True),
    ],
)
def test_a_proxys_name_needs_a_token_and_roots(
    tmp_path: Path, names: str, *, refused: bool
) -> None:
    """On loopback, but answering to a name other machines use (a reverse
    proxy's): a page elsewhere may send header-less reads by that name, so
    the token is required as beyond loopback. Loopback's own names are not."""
    environ = {"STOAT_ALLOWED_HOSTS": names}

    if refused:
        with pytest.raises(SettingsError) as caught:
            Settings.from_environ(environ)
        allowed = Settings.from_environ(
            {**environ, "STOAT_API_TOKEN": TOKEN, "STOAT_SCAN_ROOTS": str(tmp_path)}
        )
        assert str(caught.value).startswith("STOAT_ALLOWED_HOSTS names ")
        assert "set STOAT_API_TOKEN" in str(caught.value)
        assert "and STOAT_SCAN_ROOTS" in str(caught.value)
        assert allowed.api_token == TOKEN
    else:
        assert Settings.from_environ(environ).api_token is None


def test_beyond_loopback_a_root_of_slash_is_no_root(tmp_path: Path) -> None:
    """A scan root of ``/`` lets a scan read any directory, as none does: beyond
    loopback it is refused as none is, among other roots too."""
    environ = {"STOAT_HOST": "0.0.0.0", "STOAT_API_TOKEN": TOKEN}

    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({**environ, "STOAT_SCAN_ROOTS": f"{tmp_path}:/"})

    assert "set STOAT_SCAN_ROOTS, not / (or a scan could read any directory)" in str(caught.value)
    assert Settings.from_environ({"STOAT_SCAN_ROOTS": "/"}).scan_roots == (Path("/"),)


def test_beyond_loopback_with_a_token_and_roots(tmp_path: Path) -> None:
    """With both, any address may be bound."""

    settings = Settings.from_environ(
        {"STOAT_HOST": "0.0.0.0", "STOAT_API_TOKEN": TOKEN, "STOAT_SCAN_ROOTS": str(tmp_path)}
    )

    assert settings.host == "0.0.0.0"
