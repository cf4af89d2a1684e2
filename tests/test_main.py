"""``python -m stoat_ferret`` as a real process: serve, scan, stop with exit status 0.

These tests cross a process boundary, so they poll ``/health`` for readiness
(with a deadline) instead of waiting on an event. Everything listens on a
loopback port the server picks (``STOAT_PORT=0``, tests/server.py); the
database and the scan root live in ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
import uvicorn

import stoat_ferret._server as stoat_server
from stoat_ferret._cli import EXIT_CANNOT_LISTEN
from stoat_ferret._main import main
from stoat_ferret._server import GracefulServer, listen
from stoat_ferret.api import begin_shutdown, create_app
from stoat_ferret.library import VideoStore
from stoat_ferret.settings import Settings
from tests.library.support import record
from tests.processes import first_line
from tests.server import (
    SHUTDOWN_GRACE,
    running_server,
    server_environment,
    stop_hang_guard,
    wait_ready,
)
from tests.test_cli import UNSERVABLE, make_unservable
from tests.videos import make_video, write_corrupt_video

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


def _stop(process: subprocess.Popen[bytes], send: Callable[[int], None]) -> int:
    """Send the stop; the exit status, unless the stop hangs (past the hang guard: fails)."""
    send(process.pid)
    return process.wait(timeout=stop_hang_guard(SHUTDOWN_GRACE))


@pytest.fixture(autouse=True)
def _interrupts_heard() -> Iterator[None]:
    """SIGINT as Python sets it, for these tests of Ctrl+C (in this process
    and in the servers they start), where the run began with it ignored (a
    shell starts a script's background job so: ``make test &``), which the
    service, as Python, leaves alone."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_scan_list_and_stop_with_sigterm(tmp_path: Path) -> None:
    """Scan three clips through the real server, list them, SIGTERM the group: exit 0."""
    env = server_environment(tmp_path)
    root = tmp_path / "root"
    for name in ("one.mp4", "two.mkv", "three.webm"):
        make_video(root / name, audio=None)
    log = tmp_path / "server.log"

    with running_server(tmp_path, env) as process:
        base_url = wait_ready(process, log)
        with httpx.Client(base_url=base_url, timeout=30.0) as client:
            accepted = client.post("/api/v1/videos/scan", json={"path": f"{root}/"})
            job_id = accepted.json()["job_id"]
            finished = client.get(f"/api/v1/jobs/{job_id}/wait", params={"timeout": 20})
            videos = client.get("/api/v1/videos").json()
            events = client.get(f"/api/v1/jobs/{job_id}/events")
        returncode = _stop(process, lambda pid: os.killpg(pid, signal.SIGTERM))

    assert accepted.status_code == 202
    assert finished.status_code == 200
    assert finished.json()["status"] == "completed"
    assert finished.json()["result"]["added"] == 3
    assert videos["total"] == 3
    assert [video["filename"] for video in videos["videos"]] == ["one.mp4", "three.webm", "two.mkv"]
    assert events.text.count("data: ") == 1
    assert returncode == 0
    output = log.read_text()
    assert "Traceback" not in output
    assert f"job_id={job_id}" in output  # structured fields are in the log lines
    assert f"dashboard: {base_url}/\n" in output
    with sqlite3.connect(env["STOAT_DATABASE_PATH"]) as database:
        assert database.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert database.execute("SELECT count(*) FROM videos").fetchone() == (3,)


@pytest.fixture
def children_hear_hang_ups() -> Iterator[None]:
    """A child started meanwhile gets SIGHUP's default action even when the run
    ignores it (``nohup make test``: an ignored signal is inherited, a handled
    one is reset at exec); the run itself still lets a hang-up pass."""
    previous = signal.signal(signal.SIGHUP, lambda number, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


@pytest.mark.usefixtures("children_hear_hang_ups")
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGHUP], ids=["SIGINT", "SIGHUP"])
def test_sigint_or_a_hang_up_to_the_process_exits_0(tmp_path: Path, number: int) -> None:
    """Ctrl+C (SIGINT) stops the service gracefully too, with exit status 0; and
    so does a hang-up (SIGHUP: the terminal it runs in closed)."""
    env = server_environment(tmp_path)

    with running_server(tmp_path, env) as process:
        wait_ready(process, tmp_path / "server.log")
        returncode = _stop(process, lambda pid: os.kill(pid, number))

    assert returncode == 0
    assert "Application shutdown complete" in (tmp_path / "server.log").read_text()


def _signal_masks(pid: int) -> dict[str, int]:
    """The process's ignored and caught signals (``/proc/<pid>/status``), as masks."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        fields = dict(line.split(":\t", 1) for line in status if line[:6] in ("SigIgn", "SigCgt"))
    return {name: int(value, 16) for name, value in fields.items()}


@pytest.mark.parametrize("number", [signal.SIGHUP, signal.SIGINT], ids=["SIGHUP", "SIGINT"])
def test_a_service_started_with_a_stop_signal_ignored_leaves_it_ignored(
    tmp_path: Path, number: int
) -> None:
    """Started under ``nohup`` (SIGHUP ignored), the service leaves SIGHUP ignored:
    it outlives its terminal; started as a script's background job (SIGINT
    ignored, as shells start one), a Ctrl+C in the terminal leaves it
    running. SIGTERM still stops it."""
    env = server_environment(tmp_path)
    previous = signal.signal(number, signal.SIG_IGN)  # inherited across exec
    try:
        with running_server(tmp_path, env) as process:
            signal.signal(number, previous)
            base_url = wait_ready(process, tmp_path / "server.log")
            masks = _signal_masks(process.pid)
            os.kill(process.pid, number)  # discarded by the kernel: ignored
            health = httpx.get(f"{base_url}/health", timeout=30).status_code
            returncode = _stop(process, lambda pid: os.kill(pid, signal.SIGTERM))
    finally:
        signal.signal(number, previous)

    bit = 1 << (number - 1)
    assert (masks["SigIgn"] & bit, masks["SigCgt"] & bit) == (bit, 0)
    assert masks["SigCgt"] & (1 << (signal.SIGTERM - 1))
    assert health == 200
    assert returncode == 0


def test_a_service_whose_job_supervisor_fails_stops_and_exits_1(tmp_path: Path) -> None:
    """A scan's handler raises SystemExit (a BaseException ends the job
    supervisor's run(), and with it the app's lifespan): the service does not
    go on answering every scan with 503 for ever; it stops as for a stop
    signal, logs the crash with its traceback, and exits 1, for a service
    manager to restart it."""
    env = server_environment(tmp_path, STOATTEST_SCAN_EXITS="7")
    root = tmp_path / "root"
    make_video(root / "one.mp4", audio=None)
    log = tmp_path / "server.log"

    with running_server(tmp_path, env, module="tests.gated_service") as process:
        base_url = wait_ready(process, log)
        accepted = httpx.post(f"{base_url}/api/v1/videos/scan", json={"path": str(root)})
        returncode = process.wait(timeout=stop_hang_guard(SHUTDOWN_GRACE))

    output = log.read_text()
    assert accepted.status_code == 202
    assert returncode == 1
    assert (
        "stoat_ferret crashed: RuntimeError: the app's lifespan failed while it served:"
        " SystemExit: 7" in output
    )


def test_a_stop_whose_shut_down_fails_exits_1(tmp_path: Path) -> None:
    """SIGTERM, and the library cannot be closed (an I/O error): the stop goes
    on, but the service exits 1, saying the lifespan failed as it stopped, not
    0 as if all was well."""
    env = server_environment(tmp_path, STOATTEST_CLOSE_FAILS="1")
    log = tmp_path / "server.log"

    with running_server(tmp_path, env, module="tests.gated_service") as process:
        wait_ready(process, log)
        returncode = _stop(process, lambda pid: os.kill(pid, signal.SIGTERM))

    output = log.read_text()
    assert returncode == 1
    assert "the app's lifespan failed as it stopped: OSError: [Errno 5]" in output


def test_json_log_from_flags_that_win_over_variables(tmp_path: Path) -> None:
    """Flags beat variables; with --log-format json every line of the log is a JSON object,
    from the first: the store's start-up check logs (a row dated ahead of the clock) before
    the server starts."""
    env = server_environment(tmp_path, STOAT_PORT="not a port", STOAT_LOG_FORMAT="text")
    root = tmp_path / "root"
    make_video(root / "one.mp4", audio=None)
    log = tmp_path / "server.log"
    (tmp_path / "data").mkdir(mode=0o700)
    store = VideoStore.open(env["STOAT_DATABASE_PATH"])
    store.upsert([record(str(root / "gone.mp4"))])
    store.close()
    with contextlib.closing(sqlite3.connect(env["STOAT_DATABASE_PATH"])) as raw:
        raw.execute("UPDATE videos SET updated_at = '2999-01-01T00:00:00.000000+00:00'")
        raw.commit()

    # --port 0: the system picks one, which the dashboard line names.
    args = ["--port", "0", "--log-format", "json", "--log-level", "debug"]
    with running_server(tmp_path, env, args=args) as process:
        base_url = wait_ready(process, log)
        with httpx.Client(base_url=base_url, timeout=30.0) as client:
            job_id = client.post("/api/v1/videos/scan", json={"path": str(root)}).json()["job_id"]
            client.get(f"/api/v1/jobs/{job_id}/wait", params={"timeout": 20})
        returncode = _stop(process, lambda pid: os.killpg(pid, signal.SIGTERM))

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert returncode == 0
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    messages = [line["message"] for line in lines]
    assert f"dashboard: {base_url}/" in messages
    # Run as python -m, the command's own records are named after its module, not __main__.
    [exits] = [line for line in lines if line["message"] == "stoat_ferret exits"]
    assert exits["logger"] == "stoat_ferret._main"
    # Every connection holds a descriptor: the server may open as many as it is allowed.
    [limit] = [line["limit"] for line in lines if line["message"] == "open files limit"]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert limit == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
    assert any("dated ahead of the clock" in message for message in messages)
    statuses = [
        line["status"] for line in lines if line.get("job_id") == job_id and "status" in line
    ]
    assert statuses[0] == "pending"
    assert statuses[-1] == "completed"
    access = {(line.get("method"), line.get("path"), line.get("http_status")) for line in lines}
    assert ("POST", "/api/v1/videos/scan", 202) in access
    assert ("GET", "/health", 200) in access


BAD_SETTINGS = {
    "port-not-a-number": {"STOAT_PORT": "eighty"},
    "port-out-of-range": {"STOAT_PORT": "70000"},
    "root-missing": {"STOAT_SCAN_ROOTS": "/no/such/directory"},
    "root-a-symlink-loop": {"STOAT_SCAN_ROOTS": "{tmp}/loop"},
    "negative-workers": {"STOAT_MAX_WORKERS": "-2"},
    "negative-grace": {"STOAT_SHUTDOWN_GRACE": "-1"},
    "bad-log-level": {"STOAT_LOG_LEVEL": "loud"},
    "database-under-a-file": {"STOAT_DATABASE_PATH": "{tmp}/file/stoat.db"},
    "corrupt-database": {"STOAT_DATABASE_PATH": "{tmp}/corrupt.db"},
    "database-directory-world-writable": {"STOAT_DATABASE_PATH": "{tmp}/open/stoat.db"},
    "database-a-symlink": {"STOAT_DATABASE_PATH": "{tmp}/link.db"},
    "misspelt-variable": {"STOAT_SCAN_ROOT": "{tmp}"},
    "beyond-loopback-without-token": {"STOAT_HOST": "0.0.0.0"},
}


def _badserver_environment(tmp_path: Path, case: str) -> dict[str, str]:
    (tmp_path / "file").write_text("a regular file, not a directory")
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    (tmp_path / "link.db").symlink_to(tmp_path / "elsewhere.db")
    write_corrupt_video(tmp_path / "corrupt.db")
    env = server_environment(tmp_path)
    env.update({key: value.format(tmp=tmp_path) for key, value in BAD_SETTINGS[case].items()})
    return env


def _check_one_line(case: str, stderr: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("stoat-ferret: ")
    if case == "corrupt-database":
        assert "not a database" in lines[0]
    else:
        assert next(iter(BAD_SETTINGS[case])) in lines[0]


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_main_returns_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """main() refuses a bad setting or database before binding: 2, one line on stderr."""
    for key, value in _badserver_environment(tmp_path, case).items():
        monkeypatch.setenv(key, value)

    status = main([])

    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    _check_one_line(case, captured.err)


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize(
    ("argv", "named"),
    [
        pytest.param(["--port", "{port}"], "(STOAT_HOST, --port)", id="port-by-flag"),
        pytest.param([], "(STOAT_HOST, STOAT_PORT)", id="by-variables"),
    ],
)
def test_a_port_in_use_exits_with_one_line_naming_the_settings_given(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    named: str,
) -> None:
    """Another process listens there: one line on stderr, naming the setting as the user
    gave it (the flag, else the variable), and the exit status for it."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for key, value in server_environment(tmp_path, STOAT_PORT=str(port)).items():
            monkeypatch.setenv(key, value)
        status = main([arg.format(port=port) for arg in argv])

    [line] = capsys.readouterr().err.splitlines()
    assert status == EXIT_CANNOT_LISTEN
    assert line == (
        f"stoat-ferret: cannot listen on 127.0.0.1:{port} {named}: {os.strerror(errno.EADDRINUSE)}"
    )


@pytest.mark.usefixtures("_restored_logging")
def test_a_name_that_does_not_resolve_at_bind_time_says_why_in_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The host resolved when it was checked, but not as the socket is bound (DNS
    changed meanwhile, or no address of the socket's family): getaddrinfo's own
    words, not "Unknown error -2" (its code is not an errno)."""
    for key, value in server_environment(tmp_path).items():
        monkeypatch.setenv(key, value)

    def unresolved(settings: Settings) -> None:
        # As socket.create_server raises it: its bind resolves the name.
        raise OSError(
            socket.EAI_NONAME,
            "Name or service not known (while attempting to bind on address ('nowhere', 0))",
        )

    monkeypatch.setattr(stoat_server, "listen", unresolved)
    status = main([])

    [line] = capsys.readouterr().err.splitlines()
    assert status == EXIT_CANNOT_LISTEN
    assert line.endswith("): Name or service not known")


# main() in a process of its own, with the arguments after argv[2], told to stop
# (by the signal named in argv[1]) while it reads its arguments or settings,
# checks the database or runs the check (the step named in argv[2], of
# stoat_ferret._main or else of stoat_ferret._cli): the signal comes before
# uvicorn has any handler; nothing may be served.
_STOPPED = """
import os, signal, sys
import stoat_ferret._main as stoat_main
import stoat_ferret._cli as cli
number, step, arguments = signal.Signals[sys.argv[1]], sys.argv[2], sys.argv[3:]
module = stoat_main if hasattr(stoat_main, step) else cli
doing = getattr(module, step)
def interrupted(*args):
    os.kill(os.getpid(), number)  # handled before the next line of Python
    return doing(*args)
def served(*args):
    raise AssertionError("served")
setattr(module, step, interrupted)
stoat_main._serve = served
before = [signal.getsignal(each) for each in cli.STOP_SIGNALS]
status = stoat_main.main(arguments)
assert [signal.getsignal(each) for each in cli.STOP_SIGNALS] == before
sys.exit(status)
"""


@pytest.mark.usefixtures("children_hear_hang_ups")
@pytest.mark.parametrize(
    ("arguments", "step", "stopped"),
    [
        ([], "parse_arguments", 0),
        ([], "read_settings", 0),
        ([], "check_startup", 0),
        (["check"], "parse_arguments", 128),
        (["check"], "read_settings", 128),
        (["check"], "check", 128),
        (["--database", "check"], "parse_arguments", 0),
    ],
    ids=[
        "serve-arguments",
        "serve-settings",
        "serve-database",
        "check-arguments",
        "check-settings",
        "check",
        "serve-with-a-value-check",
    ],
)
@pytest.mark.parametrize(
    "number", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)
def test_a_stop_before_serving_ends_with_one_line_and_the_commands_status(
    tmp_path: Path, number: signal.Signals, arguments: list[str], step: str, stopped: int
) -> None:
    """SIGINT or SIGTERM before uvicorn takes the signals over: one line, no
    traceback, nothing served, the process's own handlers back as they were.
    A serve stopped so exits 0, as a stopped server does; a check cut short did
    not pass: not 0 (a script's ``check && ...`` must not go on), but what a
    shell gives an interrupted command, 128 plus the signal's number."""
    # The developer's own STOAT_ variables dropped: a stray one would change the outcome.
    env = {key: value for key, value in os.environ.items() if not key.startswith("STOAT_")}
    env["STOAT_DATABASE_PATH"] = str(tmp_path / "stoat.db")

    done = subprocess.run(
        [sys.executable, "-c", _STOPPED, number.name, step, *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    status = stopped + number if stopped else 0
    assert (done.returncode, done.stdout) == (status, ""), done.stderr
    assert done.stderr == f"stoat-ferret: stopped by {number.name}\n"


# main() in a process of its own, with the arguments after argv[2], told to stop
# (by the signal named in argv[1]) as the step named in argv[2] begins, where
# the _Stopped its handler raises is dropped: as CPython drops an exception a
# signal's handler raises inside compile(), when a module is imported from
# source (PYTHONDONTWRITEBYTECODE=1, a first run, a read-only checkout).
_STOP_LOST = """
import os, signal, sys
import stoat_ferret._main as stoat_main
import stoat_ferret._server as server
from stoat_ferret.library import StoreError
number, arguments = signal.Signals[sys.argv[1]], sys.argv[3:]
step, _, then = sys.argv[2].partition(":")
module = server if step == "listen" else stoat_main
doing = getattr(module, step)
def dropped(*args):
    try:
        os.kill(os.getpid(), number)  # its handler raises before the next line
    except stoat_main._Stopped:
        if then == "store":  # as SQLite turns a callback's exception into its own
            raise StoreError("cannot open video store x: user-defined function raised exception")
        pass  # lost, as inside compile()
    return doing(*args)
setattr(module, step, dropped)
sys.exit(stoat_main.main(arguments))
"""


@pytest.mark.parametrize(
    ("arguments", "step", "stopped"),
    [
        ([], "check_startup", 0),
        ([], "check_startup:store", 0),
        ([], "listen", 0),
        (["check"], "check", 128),
        (["check"], "check:store", 128),
    ],
    ids=["serve", "serve-migrating", "serve-binding", "check", "check-migrating"],
)
def test_a_stop_whose_exception_python_dropped_still_stops(
    tmp_path: Path, arguments: list[str], step: str, stopped: int
) -> None:
    """A SIGTERM before the server takes the signals over, whose exception was
    lost on its way: the service does not serve on as if none came (a
    review saw it, three times in 25 starts, compiling the web stack). Lost
    before the web stack is imported, it stops there, as a stop that was not
    lost would (one line, 0); lost later, as the address is bound, the server
    takes it as its own first stop (0); a check ends as a stopped one (143,
    its one line). Turned into a StoreError (a migration's search key, a
    callback SQLite runs, met it), it is a stop all the same, not an error
    about the store (2)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("STOAT_")}
    env["STOAT_DATABASE_PATH"] = str(tmp_path / "stoat.db")
    env["STOAT_PORT"] = "0"

    done = subprocess.run(
        [sys.executable, "-c", _STOP_LOST, "SIGTERM", step, *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == (stopped + signal.SIGTERM if stopped else 0), done.stderr
    if step == "listen":
        assert "stop requested: shutting down" in done.stderr
        assert "stoat_ferret exits" in done.stderr
    else:
        assert (done.stdout, done.stderr) == ("", "stoat-ferret: stopped by SIGTERM\n")


# main() in a process of its own, with its arguments after argv[1], whose look
# at the database (the check's, or serving's before it writes) runs a statement
# that SQLite would run for hours, in C, where Python runs no signal's handler;
# with no progress handler, as during quick_check's long step, which calls none.
# The statement's first row writes a line to stdout: the test then sends the stop.
_STUCK_IN_SQLITE = """
import os, sys
import stoat_ferret._main as stoat_main
import stoat_ferret.library._inspection as inspection
real_identify = inspection.identify
def identify(connection, name):
    version = real_identify(connection, name)
    connection.set_progress_handler(None, 0)
    connection.create_function("started", 0, lambda: os.write(1, b"in SQLite\\n"))
    endless = "WITH RECURSIVE c(x) AS (SELECT started() UNION ALL SELECT x + 1 FROM c)"
    connection.execute(endless + " SELECT count(*) FROM c").fetchone()
    return version
def served(*args):
    raise AssertionError("served")
inspection.identify = identify
stoat_main._serve = served
sys.exit(stoat_main.main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("arguments", "stopped"), [([], 0), (["check"], 128)], ids=["serve", "check"]
)
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_while_sqlite_checks_the_database_ends_it_at_once(
    tmp_path: Path, number: signal.Signals, arguments: list[str], stopped: int
) -> None:
    """The database's quick_check reads every page (seconds, cold, for a large
    one): a stop signal then interrupts the statement, rather than waiting for
    it, and the command ends as any stop before serving does."""
    database = tmp_path / "stoat.db"
    VideoStore.open(database).close()
    env = {key: value for key, value in os.environ.items() if not key.startswith("STOAT_")}
    env["STOAT_DATABASE_PATH"] = str(database)

    with subprocess.Popen(
        [sys.executable, "-c", _STUCK_IN_SQLITE, *arguments],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            started = first_line(process.stdout)
            process.send_signal(number)
            out, err = process.communicate(timeout=60)
        finally:
            process.kill()

    status = stopped + number if stopped else 0
    assert (started, process.returncode, out) == ("in SQLite\n", status, ""), err
    assert err == f"stoat-ferret: stopped by {number.name}\n"


def _serve_once(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m stoat_ferret`` in ``env``, expected to end by itself (a refusal)."""
    return subprocess.run(
        [sys.executable, "-m", "stoat_ferret"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_a_stop_before_serving_with_the_log_in_json_is_one_record_of_it(
    tmp_path: Path, level: str
) -> None:
    """Once the log is set up in JSON, the stop's line is one record of it (every
    line of the log is JSON), at INFO (a stop asked for is no error), or at the
    log's level if that is higher: the line is never lost."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("STOAT_")}
    env["STOAT_DATABASE_PATH"] = str(tmp_path / "stoat.db")
    arguments = ["--log-format", "json", "--log-level", level]

    done = subprocess.run(
        [sys.executable, "-c", _STOPPED, "SIGTERM", "check_startup", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (done.returncode, done.stdout) == (0, ""), done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(record["level"], record["message"]) for record in records][-1] == (
        level,
        "stopped by SIGTERM",
    )


@pytest.mark.parametrize("case", ["port-not-a-number", "corrupt-database", "misspelt-variable"])
def test_process_exits_2_with_one_line(tmp_path: Path, case: str) -> None:
    """The real process: exit status 2, one line on stderr, nothing else, no traceback."""
    run = _serve_once(_badserver_environment(tmp_path, case))

    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    _check_one_line(case, run.stderr)


def test_graceful_server_does_not_raise_the_signal_again() -> None:
    """A SIGTERM while serving asks for a graceful stop; afterwards the process lives on."""
    server = GracefulServer(uvicorn.Config(_no_app), on_stop=lambda: None)
    before = signal.getsignal(signal.SIGTERM)

    with server.capture_signals():
        signal.raise_signal(signal.SIGTERM)  # runs the Python handler before returning
    # uvicorn's own capture_signals would raise SIGTERM here, killing pytest.

    assert server.should_exit
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # uvicorn runs on asyncio only
@pytest.mark.anyio
async def test_server_stops_the_app_before_its_lifespan_ends(tmp_path: Path) -> None:
    """On shut-down the server calls on_stop first, then ends the app's lifespan."""
    settings = Settings(port=0, database_path=tmp_path / "stoat.db")
    app = create_app(settings)
    record: list[str] = []
    running = anyio.Event()

    async def watched(scope: Any, receive: Any, send: Any) -> None:
        async def spy_receive() -> Any:
            message = await receive()
            record.append(message["type"])
            return message

        async def spy_send(message: Any) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                running.set()

        await app(scope, spy_receive, spy_send)

    def on_stop() -> None:
        record.append("on_stop")
        begin_shutdown(app)

    config = uvicorn.Config(watched, port=settings.port, lifespan="on", log_config=None)
    server = GracefulServer(config, on_stop=on_stop)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve)
            await running.wait()
            server.should_exit = True

    assert record == ["lifespan.startup", "on_stop", "lifespan.shutdown"]
    assert app.state.stopping.is_set()


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("never called")


def test_idle_connections_keep_nobody_out(tmp_path: Path) -> None:
    """Through uvicorn: 150 connections that send nothing (a page's preconnects,
    say) do not count against the requests answered at once
    (STOAT_MAX_STREAMS + 100, here 101): a request beside them is answered.
    (With uvicorn's own limit_concurrency, which counts connections, it was
    503 for as long as they stayed open.)"""
    env = server_environment(tmp_path, STOAT_MAX_STREAMS="1")
    with running_server(tmp_path, env) as process:
        base_url = wait_ready(process, tmp_path / "server.log")
        address = httpx.URL(base_url)
        assert address.port is not None
        with contextlib.ExitStack() as idle:
            for _ in range(150):
                idle.enter_context(socket.create_connection((address.host, address.port)))
            with httpx.Client(base_url=base_url, timeout=30.0) as client:
                health = client.get("/health")
        returncode = _stop(process, lambda pid: os.killpg(pid, signal.SIGTERM))

    assert health.status_code == 200, health.text
    assert returncode == 0


def test_the_real_server_guards_and_answers_head(tmp_path: Path) -> None:
    """Through uvicorn: HEAD /health is 200 with no body, a foreign Host is 400, and with
    STOAT_API_TOKEN the API needs it while /health does not."""
    token = "real-server-token-0123456789"
    env = server_environment(tmp_path, STOAT_API_TOKEN=token)

    with running_server(tmp_path, env) as process:
        base_url = wait_ready(process, tmp_path / "server.log")
        with httpx.Client(base_url=base_url, timeout=30.0) as client:
            head = client.head("/health")
            foreign = client.get("/health", headers={"Host": "evil.example"})
            anonymous = client.get("/api/v1/jobs")
            bearer = client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        returncode = _stop(process, lambda pid: os.killpg(pid, signal.SIGTERM))

    assert (head.status_code, head.content) == (200, b"")
    assert foreign.status_code == 400
    assert anonymous.status_code == 401
    assert bearer.status_code == 200
    assert returncode == 0
    assert token not in (tmp_path / "server.log").read_text()


def _has_ipv6_loopback() -> bool:
    """Whether ``::1`` can be bound here: not where IPv6 is disabled (a
    container network's default), though the sockets support it."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        return False
    return True


needs_ipv6_loopback = pytest.mark.skipif(
    not _has_ipv6_loopback(), reason="IPv6 is disabled here: no ::1 to bind"
)


@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason="no dual-stack IPv6 here")
def test_listening_on_every_ipv6_address_takes_ipv4_too(tmp_path: Path) -> None:
    """STOAT_HOST=:: is every address, IPv4 included (as uvicorn's own bind was)."""
    settings = Settings(host="::", port=0, database_path=tmp_path / "stoat.db")

    with listen(settings) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=30.0):
            accepted, peer = listener.accept()
            accepted.close()

    assert peer[0] == "::ffff:127.0.0.1"


@needs_ipv6_loopback
def test_listening_on_one_ipv6_address_is_ipv6_only(tmp_path: Path) -> None:
    """Only the wildcard is dual-stack: STOAT_HOST=::1 binds an IPv6-only socket."""
    settings = Settings(host="::1", port=0, database_path=tmp_path / "stoat.db")

    with listen(settings) as listener:
        v6only = listener.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)

    assert listener.family == socket.AF_INET6
    assert v6only == 1


@pytest.mark.parametrize(
    ("host", "client_host"),
    [
        ("127.0.0.1", "127.0.0.1"),
        pytest.param("::1", "::1", marks=needs_ipv6_loopback),
        ("::", "127.0.0.1"),
    ],
    ids=["ipv4", "ipv6", "dual-stack-ipv4-client"],
)
def test_connections_the_server_accepts_send_without_delay(
    tmp_path: Path, host: str, client_host: str
) -> None:
    """An asyncio server on the listener (as uvicorn serves it) accepts
    connections with TCP_NODELAY: without it, each response on a kept-alive
    connection waited for the client's delayed ACK (about 40 ms). The wildcard
    ``::`` listener is dual-stack: an IPv4 client comes in on it too."""
    settings = Settings(host=host, port=0, database_path=tmp_path / "stoat.db")
    seen: list[int] = []

    async def accept_one() -> None:
        made = asyncio.Event()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted = transport.get_extra_info("socket")
                seen.append(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()
                made.set()

        loop = asyncio.get_running_loop()
        server = await loop.create_server(Probe, sock=listen(settings))
        async with server:
            port = server.sockets[0].getsockname()[1]
            _, writer = await asyncio.open_connection(client_host, port)
            writer.close()
            await made.wait()

    asyncio.run(asyncio.wait_for(accept_one(), timeout=30.0))
    (nodelay,) = seen
    assert nodelay != 0


def test_a_second_serve_of_one_database_exits_2_with_one_line(tmp_path: Path) -> None:
    """While one service runs, a second on the same database (another port)
    exits 2 with one line, and the first goes on serving."""
    env = server_environment(tmp_path)

    with running_server(tmp_path, env) as process:
        base_url = wait_ready(process, tmp_path / "server.log")
        second = _serve_once(env)
        with httpx.Client(base_url=base_url, timeout=30.0) as client:
            still = client.get("/api/v1/videos")
        returncode = _stop(process, lambda pid: os.killpg(pid, signal.SIGTERM))

    assert second.returncode == 2, second.stderr
    assert second.stdout == ""
    [line] = second.stderr.splitlines()
    lock = env["STOAT_DATABASE_PATH"] + ".lock"
    assert line == (
        f"stoat-ferret: cannot open video store {env['STOAT_DATABASE_PATH']}: it is already"
        f" served by another process (which holds {lock})"
    )
    assert still.status_code == 200
    assert returncode == 0


@pytest.mark.parametrize("case", ["damaged", "thumbnails-a-file"])
def test_serve_refuses_what_it_cannot_start_with_in_one_line(tmp_path: Path, case: str) -> None:
    """A damaged database whose header is intact, or a thumbnails path that is
    a file: exit 2 and one line before anything binds, no traceback."""
    database = make_unservable(tmp_path, case)
    env = server_environment(tmp_path, STOAT_DATABASE_PATH=str(database))

    run = _serve_once(env)

    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    [line] = run.stderr.splitlines()
    assert line.startswith("stoat-ferret: ")
    assert UNSERVABLE[case] in line


_SIGNALLED = """
import contextlib, os, signal, sys
from stoat_ferret import _main as stoat_main

when = sys.argv[1]
command = ["stoat-ferret", "check"]
if when == "in-the-end":  # a SIGTERM as main()'s finally gives the first handler back
    real_say, real_signal, done = stoat_main._say, signal.signal, []

    def say(*args, **kwargs):
        status = real_say(*args, **kwargs)
        done.append(True)
        return status

    def spied(number, handler):
        if done and number == signal.SIGINT:  # SIGTERM's handler still main()'s own
            os.kill(os.getpid(), signal.SIGTERM)
        return real_signal(number, handler)

    stoat_main._say, signal.signal = say, spied
elif when == "twice":  # a first stop while the arguments are read, a second as it is told
    real_parse, real_stderr = stoat_main.parse_arguments, sys.stderr

    class Stderr:
        def write(self, text):
            if "stopped by" in text:
                os.kill(os.getpid(), signal.SIGINT)
            return real_stderr.write(text)

        def flush(self):
            real_stderr.flush()

    def parse(argv):
        arguments = real_parse(argv)
        os.kill(os.getpid(), signal.SIGTERM)
        return arguments

    stoat_main.parse_arguments, sys.stderr = parse, Stderr()
else:  # served (and stopped) or failed to start, then a signal as the handlers come back
    from stoat_ferret import _server

    Server = _server.GracefulServer
    real_capture, real_startup = Server.capture_signals, Server.startup

    @contextlib.contextmanager
    def capture(self):
        try:
            with real_capture(self):
                yield
        finally:
            os.kill(os.getpid(), signal.SIGINT)

    async def startup(self, sockets=None):
        await real_startup(self, sockets=sockets)
        os.kill(os.getpid(), signal.SIGTERM)

    Server.capture_signals, Server.startup = capture, startup
    if when == "failed-start":
        from starlette.applications import Starlette

        @contextlib.asynccontextmanager
        async def failing(app):
            raise RuntimeError("the app could not start")
            yield

        _server.create_app = lambda settings: Starlette(lifespan=failing)
    command = ["stoat-ferret"]
sys.argv = command
status = stoat_main.run()
for number in (signal.SIGINT, signal.SIGTERM):  # after run(): the process only exits
    os.kill(os.getpid(), number)
sys.stdout.write(f"still here after {status}")
sys.exit(status)
"""


@pytest.mark.parametrize(
    ("when", "status", "told"),
    [
        pytest.param("in-the-end", 0, None, id="as-the-command-ends"),
        pytest.param("twice", 128 + signal.SIGTERM, "SIGTERM", id="twice"),
        pytest.param("after-serving", 0, None, id="as-the-server-ends"),
        pytest.param("failed-start", 3, None, id="as-a-failed-start-ends"),
    ],
)
def test_a_signal_once_the_command_ends_or_is_stopped_changes_nothing(
    tmp_path: Path, when: str, status: int, told: str | None
) -> None:
    """A stop signal once the command has ended (as main() gives the handlers
    back, or while Python ends the process: a second or more on a busy
    machine), or a second one while a stop is under way (told, or served), or
    one as a server that failed to start gives the handlers back, changes
    nothing: the status is the command's (uvicorn's 3 for the failed start),
    with one "stopped by" line for the first stop at most, never a traceback
    or the default's 130 or 143."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("STOAT_")}
    env["STOAT_DATABASE_PATH"] = str(tmp_path / "stoat.db")
    env["STOAT_PORT"] = "0"

    done = subprocess.run(
        [sys.executable, "-c", _SIGNALLED, when],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == status, done.stderr
    if when != "failed-start":  # uvicorn's SystemExit(3) passes through run()
        assert done.stdout.endswith(f"still here after {status}"), done.stdout
    told_lines = [line for line in done.stderr.splitlines() if "stopped by" in line]
    assert told_lines == ([] if told is None else [f"stoat-ferret: stopped by {told}"])
    assert "_Stopped" not in done.stderr
    if when != "failed-start":  # that one's log has the app's own traceback
        assert "Traceback" not in done.stderr
    if when == "after-serving":
        assert "stoat_ferret exits" in done.stderr
