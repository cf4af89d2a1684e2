"""Every API operation fuzzed from the app's own OpenAPI schema with schemathesis.

Schemathesis reads the schema ``create_app`` serves at ``/openapi.json`` and
generates, for each operation, requests that fit it (positive) and requests
that break it (negative: wrong types, out-of-range numbers, undeclared
methods, missing or malformed bodies), then its coverage phase's edge
cases. Each request goes to the app in-process, and the test checks:

* no response is a 5xx (the README: "no client input gives a 5xx");
* every response conforms to the schema: schemathesis' own checks on status
  code, content type, headers and body (``case.call_and_validate()``);
* every 4xx body is JSON carrying ``detail`` (the README: "every error is
  JSON with a readable ``detail``").

The app runs with its lifespan and its real :class:`JobSupervisor`, on a
temporary database with a temporary scan root. Schemathesis' ASGI client
starts the lifespan before the first request (speaking the protocol as
uvicorn does, on one asyncio event loop in a thread of its own), and the
module fixture shuts it down, so the supervisor and SQLite close before the
temporary directory goes. Generated scan paths are relative (422) or
outside the root (403), so the fuzzing never waits on a scan;
:func:`test_a_real_scan_answers_by_the_schema` then runs one real scan of
one clip and validates every answer about it (202, 200 job, stream, 409
cancel, list, video).

Three findings of this test were fixed in the schema, and each keeps a test
of its own: the events 404 is documented as JSON, each event of the stream
has a schema, and the scan body's path documents that it must be absolute.
(A fourth, GET /api/v1/videos/scan read as a video id, is gone with the
``{video_id:int}`` route.) Generated paths never meet a symlink, so
:func:`test_scan_of_odd_links_answers_by_the_schema` adds those: chains
longer than the kernel follows (a ``RecursionError`` and a 500 once), loops
and dangling links, each a documented 4xx.
:data:`EXCLUDED_CHECKS` leaves a check out for one operation when a finding
is a false positive; none is at present.

Profiles: ``STOATTEST_RELIABILITY_PROFILE=quick`` (the default, for ``make
test``: 25 generated requests an operation, derandomized so every run sends
the same ones) or ``soak`` (500, random).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    positive_data_acceptance,
    response_schema_conformance,
)

from stoat_ferret.api.app import create_app
from stoat_ferret.library import ThreadPriority
from stoat_ferret.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fastapi import FastAPI
    from schemathesis import Case, CheckFunction

    from tests.videos import EncodedVideo

settings.register_profile(
    "api-fuzz-quick",
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "api-fuzz-soak",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
PROFILE: Final = settings.get_profile(
    "api-fuzz-" + os.environ.get("STOATTEST_RELIABILITY_PROFILE", "quick")
)


# The schema is the one the app serves at /openapi.json; building it starts
# nothing. Requests go to the running app of :func:`app` instead (``app=`` in
# ``call_and_validate``): schemathesis' ``from_fixture`` cannot run on pytest 9
# (it sets ``request.node._nodeid``, which pytest 9 no longer has).
CONFIG: Final = SchemathesisConfig.from_dict(
    {
        "generation": {"mode": "all"},  # positive and negative
        # Schemathesis' default list of statuses that reject a schema-violating
        # request, plus 413: the scan route refuses a body over 64 KiB before
        # reading it, and documents that 413.
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [
                    *("400", "401", "403", "404", "405", "406", "409", "413", "415"),
                    *("422", "428", "429", "5xx"),
                ]
            }
        },
    }
)
schema: Final = schemathesis.openapi.from_dict(create_app(Settings()).openapi(), config=CONFIG)


@pytest.fixture(scope="module")
def scan_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app's only scan root, empty while the fuzzing runs (resolved)."""
    return Path(os.path.realpath(tmp_path_factory.mktemp("api-fuzz-root")))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, scan_root: Path) -> Iterator[FastAPI]:
    """The app on a fresh database and :func:`scan_root`; its lifespan is shut down after."""
    app = create_app(
        Settings(
            database_path=tmp_path_factory.mktemp("api-fuzz-db") / "stoat.db",
            scan_roots=(scan_root,),
            shutdown_grace=0.0,
            # The Host of schemathesis' ASGI client (Starlette's TestClient).
            allowed_hosts=("testserver",),
            probe_priority=ThreadPriority.NORMAL,  # idle probes starve on a busy machine
        )
    )
    try:
        yield app
    finally:
        # Schemathesis' ASGI client started the lifespan before the first request.
        asgi.shutdown_lifespans()


# Checks left out for one operation each; every entry is a finding, reported
# and pinned by a test below. None at present.
EXCLUDED_CHECKS: Final[dict[str, list[CheckFunction]]] = {}


# GET /api/v1/events streams until the service stops, and schemathesis reads
# each response to its end: it is left out here; tests/api/test_events.py
# covers its refusals and its stream.
@schema.exclude(path="/api/v1/events").parametrize()
@PROFILE
def test_api_answers_every_request_by_its_schema(app: FastAPI, case: Case[Any]) -> None:
    """No 5xx, every response as the schema says, and every 4xx JSON with ``detail``."""
    excluded = EXCLUDED_CHECKS.get(case.operation.label, [])

    response = case.call_and_validate(app=app, excluded_checks=excluded)

    assert response.status_code < 500, case.as_curl_command()
    if 400 <= response.status_code < 500:
        body: Any = response.json()
        assert isinstance(body, dict), (case.as_curl_command(), response.text)
        assert "detail" in body, (case.as_curl_command(), response.text)


def test_a_real_scan_answers_by_the_schema(
    app: FastAPI, scan_root: Path, clip: EncodedVideo
) -> None:
    """A scan of one clip, then its job and video, every answer validated by the schema.
    In a directory of its own, its job and video picked by it: the module's other
    tests may have scanned (and stored) before."""
    folder = scan_root / "real-scan"
    folder.mkdir()
    shutil.copyfile(clip.path, folder / "clip.mp4")

    def call(path: str, method: str, **parts: Any) -> Any:
        case = schema[path][method].Case(**parts)
        return case.call_and_validate(app=app).json()

    accepted = call(
        "/api/v1/videos/scan", "POST", body={"path": str(folder)}, media_type="application/json"
    )
    job = {"job_id": accepted["job_id"]}
    done = call("/api/v1/jobs/{job_id}/wait", "GET", path_parameters=job, query={"timeout": 30})
    events = schema["/api/v1/jobs/{job_id}/events"]["GET"].Case(path_parameters=job)
    # Every event is checked by test_events_are_documented_per_event (a finding).
    stream = events.call_and_validate(app=app, excluded_checks=[response_schema_conformance])
    refused = call(
        "/api/v1/jobs/{job_id}/cancel",
        "POST",
        path_parameters=job,
        body={},
        media_type="application/json",
    )
    # The scan submits a thumbnails job when it ends, which may be done by now too.
    mine = {"status": "completed", "job_type": "scan", "path": str(folder)}
    listed = call("/api/v1/jobs", "GET", query=mine)
    videos = call("/api/v1/videos", "GET", query={"under": str(folder)})
    video_id = {"video_id": videos["videos"][0]["id"]}
    video = call("/api/v1/videos/{video_id}", "GET", path_parameters=video_id)

    assert done["status"] == "completed", done
    assert done["result"]["added"] == 1, done
    assert stream.status_code == 200
    assert stream.headers["content-type"][0].startswith("text/event-stream")
    assert refused["status"] == "completed"
    assert [j["job_id"] for j in listed["jobs"]] == [accepted["job_id"]]
    assert [v["filename"] for v in videos["videos"]] == ["clip.mp4"]
    assert video["path"] == str(folder / "clip.mp4")


def test_events_404_is_documented_as_json(app: FastAPI) -> None:
    """An unknown job's event stream answers a 404 whose content type the schema documents."""
    case = schema["/api/v1/jobs/{job_id}/events"]["GET"].Case(path_parameters={"job_id": "0"})

    response = case.call_and_validate(app=app)

    assert response.status_code == 404


@given(case=schema["/api/v1/videos/scan"]["POST"].as_strategy(GenerationMode.POSITIVE))
@PROFILE
def test_scan_accepts_every_body_its_schema_allows(app: FastAPI, case: Case[Any]) -> None:
    """A scan body the schema allows is never refused as malformed (422)."""
    case.call_and_validate(app=app, checks=[positive_data_acceptance])


def test_events_are_documented_per_event(app: FastAPI, scan_root: Path) -> None:
    """The event stream of a finished scan conforms to the schema, event by event."""
    scan = schema["/api/v1/videos/scan"]["POST"].Case(
        body={"path": str(scan_root)}, media_type="application/json"
    )
    job = {"job_id": scan.call(app=app).json()["job_id"]}
    wait = schema["/api/v1/jobs/{job_id}/wait"]["GET"].Case(
        path_parameters=job, query={"timeout": 30}
    )
    assert wait.call(app=app).json()["status"] == "completed"
    events = schema["/api/v1/jobs/{job_id}/events"]["GET"].Case(path_parameters=job)

    response = events.call_and_validate(app=app)

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("make_link", "status"),
    [
        pytest.param(lambda base: _chain(base, 1_200), 400, id="chain-of-1200"),
        pytest.param(lambda base: _chain(base, 41), 400, id="chain-of-41"),
        pytest.param(lambda base: _loop(base), 400, id="loop"),
        pytest.param(lambda base: _dangling(base), 404, id="dangling"),
    ],
)
def test_scan_of_odd_links_answers_by_the_schema(
    app: FastAPI, scan_root: Path, make_link: Any, status: int
) -> None:
    """Symlink chains of any length, loops and dangling links: a documented 4xx, never a 5xx."""
    base = scan_root / f"links-{status}-{len(os.listdir(scan_root))}"
    base.mkdir()
    link: Path = make_link(base)
    case = schema["/api/v1/videos/scan"]["POST"].Case(
        body={"path": str(link)}, media_type="application/json"
    )

    response = case.call_and_validate(app=app)

    assert response.status_code == status, response.text
    assert response.json()["detail"]


def _chain(base: Path, length: int) -> Path:
    previous = base
    for index in range(length):
        link = base / f"link{index}"
        link.symlink_to(previous)
        previous = link
    return previous


def _loop(base: Path) -> Path:
    (base / "a").symlink_to("b")
    (base / "b").symlink_to("a")
    return base / "a"


def _dangling(base: Path) -> Path:
    (base / "gone").symlink_to(base / "missing")
    return base / "gone"
