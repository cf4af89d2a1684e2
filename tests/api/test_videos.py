"""Video routes: the scan request (status codes, roots, dedupe, back-pressure) and listings."""

from __future__ import annotations

import errno
import functools
import os
import threading
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from stoat_ferret.api import _videos as videos_module
from stoat_ferret.api._errors import RETRY_AFTER_SECONDS
from stoat_ferret.api._paths import PATH_CHECK_THREADS, resolve_scan_path
from stoat_ferret.api.app import create_app
from stoat_ferret.jobs import JobStatus
from stoat_ferret.library import METADATA_FIELDS, _library
from tests.api.support import GatedScan, serving, supervisor_running
from tests.permissions import call_denied

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import httpx

    from stoat_ferret.settings import Settings
    from tests.videos import EncodedVideo

SCAN = "/api/v1/videos/scan"

VIDEO_FIELDS = {
    "id",
    "path",
    "filename",
    "size_bytes",
    "duration_seconds",
    "duration_frames",
    "width",
    "height",
    "frame_rate_numerator",
    "frame_rate_denominator",
    "video_codec",
    "audio_codec",
    "created_at",
    "updated_at",
    *METADATA_FIELDS,
}


async def _scan_and_wait(client: httpx.AsyncClient, path: Path) -> dict[str, Any]:
    accepted = await client.post(SCAN, json={"path": str(path)})
    assert accepted.status_code == 202, accepted.text
    waited = await client.get(f"/api/v1/jobs/{accepted.json()['job_id']}/wait?timeout=20")
    assert waited.status_code == 200, waited.text
    job: dict[str, Any] = waited.json()
    return job


@pytest.mark.anyio
async def test_scan_is_accepted_and_fills_the_library(
    settings: Settings, video_dir: Path, clips: list[EncodedVideo]
) -> None:
    """202 with the job at once; once it completed, the videos are listed by path."""
    app = create_app(settings)

    with anyio.fail_after(30):
        async with serving(app) as client:
            accepted = await client.post(SCAN, json={"path": str(video_dir)})
            job_id = accepted.json()["job_id"]
            waited = await client.get(f"/api/v1/jobs/{job_id}/wait?timeout=20")
            listing = await client.get("/api/v1/videos")

    assert accepted.status_code == 202
    assert accepted.json()["status"] in {"pending", "running", "completed"}
    assert accepted.headers["Location"] == f"/api/v1/jobs/{job_id}"
    assert waited.json()["status"] == "completed"
    assert waited.json()["result"]["added"] == 2
    body = listing.json()
    assert body["total"] == 2
    assert [video["filename"] for video in body["videos"]] == ["a.mp4", "b.mkv"]
    first = body["videos"][0]
    assert set(first) == VIDEO_FIELDS
    assert first["path"] == str(video_dir / "a.mp4")
    assert (first["width"], first["height"]) == (clips[0].width, clips[0].height)
    assert first["video_codec"] == "h264"
    assert first["created_at"].endswith("Z")


class _HungChecks:
    """Scan requests' path checks that hang (a root whose file system does
    not answer) until :meth:`release`; :meth:`entered` returns once ``count``
    more of them are in their threads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._entered = threading.Semaphore(0)
        self._release = threading.Event()
        monkeypatch.setattr("stoat_ferret.api._videos.resolve_scan_path", self._hanging)

    def _hanging(self, *args: Any) -> str:
        self._entered.release()
        self._release.wait(30)
        return resolve_scan_path(*args)

    async def entered(self, count: int) -> None:
        for _ in range(count):
            assert await anyio.to_thread.run_sync(self._entered.acquire, True, 10)

    def release(self) -> None:
        self._release.set()


@pytest.mark.anyio
async def test_path_checks_that_hang_hold_threads_of_their_own(
    settings: Settings, video_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scan requests whose path check hangs hold PATH_CHECK_THREADS threads at
    most; the others wait for a turn holding none, and anyio's default
    limiter (shrunk here to one token), which the library's writes share,
    stays free. Once the checks return, every request is answered."""
    checks = _HungChecks(monkeypatch)
    monkeypatch.setattr("stoat_ferret.api._deps.TURN_WAIT_SECONDS", 60.0)  # no 503 here
    app = create_app(settings)
    default = anyio.to_thread.current_default_thread_limiter()
    tokens = default.total_tokens
    answers: list[int] = []

    async def scan() -> None:
        answers.append((await client.post(SCAN, json={"path": str(video_dir)})).status_code)

    async with serving(app) as client, anyio.create_task_group() as group:
        try:
            with anyio.fail_after(10):
                for _ in range(PATH_CHECK_THREADS + 2):
                    group.start_soon(scan)
                default.total_tokens = 1
                try:
                    await checks.entered(PATH_CHECK_THREADS)  # on the default's one token
                    await anyio.wait_all_tasks_blocked()
                    path_checks = app.state.path_checks
                    held = (path_checks.threads.borrowed_tokens, path_checks.waiting)
                    default_free = default.available_tokens  # its one token
                finally:
                    default.total_tokens = tokens
        finally:
            checks.release()  # the checks return, and every request ends

    assert held == (PATH_CHECK_THREADS, 2)
    assert default_free == 1
    assert answers == [202] * (PATH_CHECK_THREADS + 2)


@pytest.mark.anyio
async def test_a_scan_request_waits_a_while_for_a_path_check_then_is_503(
    settings: Settings, video_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every path check hung, a further scan request waits
    TURN_WAIT_SECONDS (shortened here) for its turn, then is a 503 with
    Retry-After saying why; the hung ones are answered once their checks return."""
    checks = _HungChecks(monkeypatch)
    monkeypatch.setattr("stoat_ferret.api._deps.TURN_WAIT_SECONDS", 0.05)
    app = create_app(settings)
    answers: list[int] = []

    async def scan() -> None:
        answers.append((await client.post(SCAN, json={"path": str(video_dir)})).status_code)

    async with serving(app) as client, anyio.create_task_group() as group:
        try:
            with anyio.fail_after(10):
                for _ in range(PATH_CHECK_THREADS):
                    group.start_soon(scan)
                await checks.entered(PATH_CHECK_THREADS)
                refused = await client.post(SCAN, json={"path": str(video_dir)})
        finally:
            checks.release()

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert "every path check is busy" in refused.json()["detail"]
    assert answers == [202] * PATH_CHECK_THREADS


@pytest.mark.anyio
async def test_videos_page_and_get_one(settings: Settings, video_dir: Path) -> None:
    """limit and offset page the list (total stays); a listed id is found, others 404."""
    app = create_app(settings)

    with anyio.fail_after(30):
        async with serving(app) as client:
            await _scan_and_wait(client, video_dir)
            second = (await client.get("/api/v1/videos?limit=1&offset=1")).json()
            beyond = (await client.get("/api/v1/videos?offset=10")).json()
            video_id = second["videos"][0]["id"]
            found = await client.get(f"/api/v1/videos/{video_id}")
            missing = await client.get("/api/v1/videos/424242")
            huge = await client.get("/api/v1/videos/99999999999999999999999")
            # int() refuses over 4,300 digits: this was a 500.
            endless = await client.get("/api/v1/videos/" + "9" * 4301)
            endless_head = await client.head("/api/v1/videos/" + "9" * 4301)
            zeros = await client.get(f"/api/v1/videos/{'0' * 5000}{video_id}")
            negative = await client.get("/api/v1/videos/-1")

    assert [v["filename"] for v in second["videos"]] == ["b.mkv"]
    assert (second["total"], second["limit"], second["offset"]) == (2, 1, 1)
    assert beyond["videos"] == []
    assert beyond["total"] == 2
    assert found.status_code == 200
    assert found.json() == second["videos"][0]
    codes = [missing, huge, endless, endless_head, negative]
    assert [response.status_code for response in codes] == [404] * 5
    assert endless.json() == {"detail": "Not Found"}
    assert zeros.json() == found.json()  # leading zeros name the same video
    assert "no video" in missing.json()["detail"]


@pytest.mark.anyio
async def test_a_page_not_answered_in_time_is_503_with_retry_after(
    shared_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of the library that cannot be read within LIST_SECONDS (the store busy
    with other reads, or too broad a search): 503 with Retry-After, saying so."""
    monkeypatch.setattr(_library, "LIST_SECONDS", -1.0)
    with anyio.fail_after(10):
        busy = await shared_client.get("/api/v1/videos", params={"q": "clip"})
    monkeypatch.setattr(_library, "LIST_SECONDS", 60.0)
    with anyio.fail_after(10):
        again = await shared_client.get("/api/v1/videos", params={"q": "clip"})

    assert busy.status_code == 503, busy.text
    assert busy.headers["Retry-After"].isdigit()
    assert "did not answer in time" in busy.json()["detail"]
    assert again.status_code == 200, again.text


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/api/v1/videos/1", "/api/v1/videos/1/thumbnail"])
async def test_a_video_not_read_in_time_is_503_with_retry_after(
    shared_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """A video (or its thumbnail) whose row cannot be read within LIST_SECONDS
    (the one reader busy with broad searches) is a 503 with Retry-After, as a
    page is, rather than a wait behind every search queued before it."""
    monkeypatch.setattr(videos_module, "LIST_SECONDS", -1.0)
    with anyio.fail_after(10):
        busy = await shared_client.get(path)
    monkeypatch.setattr(videos_module, "LIST_SECONDS", 60.0)
    with anyio.fail_after(10):
        again = await shared_client.get(path)

    assert busy.status_code == 503, busy.text
    assert busy.headers["Retry-After"].isdigit()
    assert again.status_code == 404, again.text  # read: the shared library holds no video


@pytest.mark.anyio
@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "offset=-1", "limit=ten", "offset=1e3", "limit="]
)
async def test_videos_page_bounds_are_422(shared_client: httpx.AsyncClient, query: str) -> None:
    """1 <= limit <= 1000 and offset >= 0, integers; anything else is 422."""

    with anyio.fail_after(10):
        response = await shared_client.get(f"/api/v1/videos?{query}")

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "query"


@pytest.mark.anyio
async def test_root_itself_is_scanned(settings: Settings, scan_root: Path) -> None:
    """A scan root is inside itself: 202."""
    app = create_app(settings)

    with anyio.fail_after(10):
        async with serving(app) as client:
            response = await client.post(SCAN, json={"path": str(scan_root), "recursive": False})

    assert response.status_code == 202


@pytest.mark.anyio
@pytest.mark.parametrize(
    "outside",
    [
        pytest.param(lambda root: f"{root}/../outside", id="root-dotdot"),
        pytest.param(lambda root: f"{root}/link-out", id="symlink-pointing-out"),
        pytest.param(lambda root: f"{root}-evil", id="evil-sibling"),
        pytest.param(lambda root: "/", id="filesystem-root"),
        pytest.param(lambda root: f"{root}/../missing", id="missing-outside"),
    ],
)
async def test_outside_the_roots_is_403(
    settings: Settings, scan_root: Path, outside: Callable[[Path], str]
) -> None:
    """Every way out of the roots is refused with 403, and no job is made."""
    (scan_root.parent / "outside").mkdir()
    (scan_root.parent / f"{scan_root.name}-evil").mkdir()
    (scan_root / "link-out").symlink_to(scan_root.parent / "outside")
    app = create_app(settings)

    with anyio.fail_after(10):
        async with serving(app) as client:
            response = await client.post(SCAN, json={"path": outside(scan_root)})
            jobs = (await client.get("/api/v1/jobs")).json()

    assert response.status_code == 403
    assert "outside" in response.json()["detail"]
    assert "retry-after" not in response.headers  # no retry makes it inside
    assert jobs["total"] == 0


def test_a_directory_the_service_may_not_list_is_403(settings: Settings, scan_root: Path) -> None:
    """A chmod 000 directory (really denied: see tests/permissions.py) is
    refused with 403 at once, and no job is made that could only fail.

    On asyncio only: the route resolves paths in a worker thread, and only
    asyncio's worker threads inherit the dropped capabilities.
    """
    closed = scan_root / "closed"
    closed.mkdir()
    closed.chmod(0)

    async def post_scan() -> tuple[int, dict[str, Any], int]:
        app = create_app(settings)
        with anyio.fail_after(10):
            async with serving(app) as client:
                response = await client.post(SCAN, json={"path": str(closed)})
                jobs = (await client.get("/api/v1/jobs")).json()
        return response.status_code, response.json(), jobs["total"]

    try:
        status, body, jobs = call_denied(functools.partial(anyio.run, post_scan, backend="asyncio"))
    finally:
        closed.chmod(0o755)

    assert (status, body, jobs) == (403, {"detail": f"permission denied: {closed}"}, 0)


@pytest.mark.anyio
async def test_a_server_out_of_descriptors_is_503_with_retry_after(
    settings: Settings, scan_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EMFILE while checking the directory is the server's trouble: 503 with
    Retry-After, and no job."""
    real_open = os.open

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        # The root opened as the scan will: by its name, beneath its parent.
        if os.fspath(path) == scan_root.name:
            raise OSError(errno.EMFILE, "Too many open files", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    app = create_app(settings)
    with anyio.fail_after(10):
        async with serving(app) as client:
            monkeypatch.setattr(os, "open", open_)
            response = await client.post(SCAN, json={"path": str(scan_root)})
            monkeypatch.undo()
            jobs = (await client.get("/api/v1/jobs")).json()

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert response.json() == {"detail": "the service is short of resources (Too many open files)"}
    assert jobs["total"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("make_path", "status"),
    [
        pytest.param(lambda root: f"{root}/missing", 404, id="missing"),
        pytest.param(lambda root: f"{root}/file.mp4", 400, id="a-file"),
        pytest.param(lambda root: f"{root}/{'n' * 300}", 400, id="name-too-long"),
        pytest.param(lambda root: f"{root}{'/d' * 3000}", 400, id="path-too-long"),
    ],
)
async def test_unusable_paths(
    settings: Settings, scan_root: Path, make_path: Callable[[Path], str], status: int
) -> None:
    """Missing is 404; a file, or a name too long for the OS, is 400."""
    (scan_root / "file.mp4").write_bytes(b"x")
    app = create_app(settings)

    with anyio.fail_after(10):
        async with serving(app) as client:
            response = await client.post(SCAN, json={"path": make_path(scan_root)})

    assert response.status_code == status
    assert isinstance(response.json()["detail"], str)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "request_kwargs",
    [
        pytest.param({"json": {}}, id="missing-path"),
        pytest.param({"json": {"path": 42}}, id="path-not-a-string"),
        pytest.param({"json": {"path": "/x", "recursive": "yes"}}, id="recursive-not-a-bool"),
        pytest.param({"json": {"path": "/x", "recursive": 1}}, id="recursive-an-int"),
        pytest.param({"json": {"path": "/x", "forget_unmounted": "yes"}}, id="forget-not-a-bool"),
        pytest.param({"json": {"path": "/x", "forget_unmounted": 1}}, id="forget-an-int"),
        pytest.param({"json": {"path": "/x", "forget_unmounted": None}}, id="forget-null"),
        pytest.param({"json": ["/x"]}, id="not-an-object"),
        pytest.param({"json": "/x"}, id="a-string"),
        pytest.param({"content": b"null"}, id="null"),
        pytest.param({"json": {"path": "/tmp/a\x00b"}}, id="nul-byte"),
        pytest.param({"json": {"path": "relative/dir"}}, id="relative-path"),
        pytest.param({"json": {"path": ""}}, id="empty-path"),
        pytest.param({"json": {"path": "/x", "recursve": True}}, id="unknown-field"),
        pytest.param({"content": b'{"path": "/\\ud800"}'}, id="lone-surrogate"),
        pytest.param({"content": b'{"path": '}, id="bad-json"),
        pytest.param({"content": b""}, id="empty-body"),
    ],
)
async def test_bad_bodies_are_422(
    shared_client: httpx.AsyncClient, request_kwargs: dict[str, Any]
) -> None:
    """Whatever is wrong with the body, the answer is 422 with a detail list."""
    if "content" in request_kwargs:
        request_kwargs.setdefault("headers", {"Content-Type": "application/json"})

    with anyio.fail_after(10):
        response = await shared_client.post(SCAN, **request_kwargs)

    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail
    assert all(set(error) == {"loc", "msg", "type"} for error in detail)
    assert detail[0]["loc"][0] == "body"


@pytest.mark.anyio
@pytest.mark.anyio
@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\xff\xfe\xfa", id="binary"),
        pytest.param(b"[" * 50_000, id="deeply-nested"),
        pytest.param(b"9" * 5_000, id="huge-number"),
    ],
)
async def test_bodies_json_cannot_read_are_400(
    shared_client: httpx.AsyncClient, content: bytes
) -> None:
    """A body declared JSON that the JSON parser cannot read at all is FastAPI's own 400."""

    with anyio.fail_after(10):
        response = await shared_client.post(
            SCAN, content=content, headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 400, response.text
    assert response.json() == {"detail": "There was an error parsing the body"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "request_kwargs",
    [
        pytest.param({"content": b'{"path": "/x"}'}, id="no-content-type"),
        pytest.param({"content": b""}, id="empty-without-content-type"),
        pytest.param(
            {"content": b'{"path": "/x"}', "headers": {"Content-Type": "text/plain"}},
            id="json-as-text-plain",
        ),
        pytest.param({"data": {"path": "/x"}}, id="form-body"),
        pytest.param({"files": {"path": b"/x"}}, id="multipart"),
        pytest.param(
            {"content": b'{"path": "/x"}', "headers": {"Content-Type": "application/jsonx"}},
            id="almost-json",
        ),
    ],
)
async def test_bodies_not_declared_json_are_415(
    settings: Settings, scan_root: Path, request_kwargs: dict[str, Any]
) -> None:
    """A body a page elsewhere could send without a preflight is 415, and makes no job."""
    if request_kwargs.get("content"):
        request_kwargs["content"] = request_kwargs["content"].replace(
            b"/x", str(scan_root).encode()
        )

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            response = await client.post(SCAN, **request_kwargs)
            jobs = (await client.get("/api/v1/jobs")).json()

    assert response.status_code == 415, response.text
    assert response.json()["detail"].startswith("the body must be JSON")
    assert jobs["total"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content_type", ["application/json", "Application/JSON; charset=utf-8", "application/scan+json"]
)
async def test_json_content_types_are_accepted(
    settings: Settings, scan_root: Path, content_type: str
) -> None:
    """JSON, with a charset or as a +json type, starts a scan."""
    body = f'{{"path": "{scan_root}"}}'.encode()

    with anyio.fail_after(10):
        async with serving(create_app(settings)) as client:
            response = await client.post(SCAN, content=body, headers={"Content-Type": content_type})

    assert response.status_code == 202, response.text


@pytest.mark.anyio
async def test_get_of_the_scan_path_is_405(shared_client: httpx.AsyncClient) -> None:
    """The scan path takes POST only; a GET is routing's own 405, not a bad video id."""

    with anyio.fail_after(10):
        response = await shared_client.get(SCAN)

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert isinstance(response.json()["detail"], str)


@pytest.mark.anyio
async def test_huge_body_is_413(shared_client: httpx.AsyncClient) -> None:
    """A body far larger than any scan request is refused before it is parsed."""

    with anyio.fail_after(10):
        response = await shared_client.post(
            SCAN, content=b" " * 100_000, headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 413


@pytest.mark.anyio
async def test_same_directory_gets_the_same_job(settings: Settings, scan_root: Path) -> None:
    """A request made while the directory's scan runs gets a new job (the
    running one may have listed the directory already), which waits for it,
    a worker free or not: scans of one directory never run side by side.
    While it waits, every spelling of the directory gets its id; once it has
    ended, a new one again. A flat scan is another job, and passes it."""
    sub = scan_root / "sub"
    (sub / "inner").mkdir(parents=True)
    (scan_root / "link").symlink_to(sub)
    spellings = [f"{sub}/", f"{sub}/.", f"{sub}/inner/..", f"{scan_root}//sub", f"{scan_root}/link"]
    scan = GatedScan()
    recursive, flat_payload = (
        {"path": str(sub), "recursive": True},
        {"path": str(sub), "recursive": False},
    )

    with anyio.fail_after(10):
        async with supervisor_running(max_workers=2) as supervisor:
            supervisor.register("scan", scan)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                first = (await client.post(SCAN, json={"path": str(sub)})).json()["job_id"]
                await scan.running()
                queued = (await client.post(SCAN, json={"path": str(sub)})).json()["job_id"]
                again = [
                    (await client.post(SCAN, json={"path": path})).json()["job_id"]
                    for path in spellings
                ]
                flat = (await client.post(SCAN, json=flat_payload)).json()["job_id"]
                await anyio.wait_all_tasks_blocked()
                waiting = (await client.get(f"/api/v1/jobs/{queued}")).json()["status"]
                scan.release.set()
                await client.get(f"/api/v1/jobs/{queued}/wait")
                after = await client.post(SCAN, json={"path": str(sub)})

    assert queued != first
    assert again == [queued] * len(spellings)
    assert flat not in (first, queued)
    assert waiting == "pending"  # one of the two workers was free
    assert scan.payloads[:3] == [recursive, flat_payload, recursive]
    assert after.status_code == 202
    assert after.json()["job_id"] not in (first, queued, flat)


@pytest.mark.anyio
async def test_a_scan_that_forgets_unmounted_disks_is_a_job_of_its_own(
    settings: Settings, scan_root: Path
) -> None:
    """``forget_unmounted`` goes into the payload, and into the job key: it
    is not folded into a pending scan that keeps what it does not find
    mounted, nor that one into it; two such requests share a job."""
    sub = scan_root / "sub"
    sub.mkdir()
    scan = GatedScan()
    forget = {"path": str(sub), "forget_unmounted": True}

    with anyio.fail_after(10):
        async with supervisor_running(max_workers=1) as supervisor:
            supervisor.register("scan", scan)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                blocker = (await client.post(SCAN, json={"path": str(scan_root)})).json()
                await scan.running()
                keeping = (await client.post(SCAN, json={"path": str(sub)})).json()["job_id"]
                forgetting = (await client.post(SCAN, json=forget)).json()["job_id"]
                again = (await client.post(SCAN, json=forget)).json()["job_id"]
                kept_again = (await client.post(SCAN, json={"path": str(sub)})).json()["job_id"]
                listed = {
                    job["job_id"]: job["payload"]
                    for job in (await client.get("/api/v1/jobs")).json()["jobs"]
                }
                scan.release.set()
                await client.get(f"/api/v1/jobs/{blocker['job_id']}/wait")

    assert len({blocker["job_id"], keeping, forgetting}) == 3
    assert (again, kept_again) == (forgetting, keeping)
    assert listed[keeping] == {"path": str(sub), "recursive": True}
    assert listed[forgetting] == {"path": str(sub), "recursive": True, "forget_unmounted": True}


@pytest.mark.anyio
async def test_full_queue_is_503_with_retry_after(settings: Settings, scan_root: Path) -> None:
    """One scan running, one pending, max_pending=1: the third gets 503 and Retry-After."""
    # The first answer may say pending or running: it races the worker.
    for name in ("a", "b", "c"):
        (scan_root / name).mkdir()
    scan = GatedScan()

    with anyio.fail_after(10):
        async with supervisor_running(max_workers=1, max_pending=1) as supervisor:
            supervisor.register("scan", scan)
            async with serving(create_app(settings, job_queue=supervisor)) as client:
                running = await client.post(SCAN, json={"path": str(scan_root / "a")})
                await scan.running()
                pending = await client.post(SCAN, json={"path": str(scan_root / "b")})
                refused = await client.post(SCAN, json={"path": str(scan_root / "c")})
                scan.release.set()

    assert running.status_code == 202
    assert pending.json()["status"] == JobStatus.PENDING
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.json()["detail"] == (
        "the job queue takes no more work now (pending jobs at their limit of 1); try again later"
    )


@pytest.mark.anyio
async def test_closed_queue_is_503(settings: Settings, scan_root: Path) -> None:
    """An injected queue that is shutting down refuses scans with 503."""
    with anyio.fail_after(10):
        async with (
            supervisor_running() as supervisor,
            serving(create_app(settings, job_queue=supervisor)) as client,
        ):
            await supervisor.aclose()
            response = await client.post(SCAN, json={"path": str(scan_root)})

    assert response.status_code == 503
    assert "Retry-After" in response.headers
