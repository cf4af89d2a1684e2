"""The ``scan`` job type's handler: :func:`make_scan_handler` and its payload.

The handler checks the payload (:func:`parse_payload`) and runs one
:class:`~stoat_ferret.library._scan.ScanRun` per job (``_scan.py`` says how
a scan goes); the probe threads and their limiter are the handler's,
shared by every scan it runs, and the child processes it probes in are
the ones it is given (the service's).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio
from loguru import logger

from stoat_ferret.jobs import JobContext
from stoat_ferret.library._background import BackgroundThreads, ThreadPriority
from stoat_ferret.library._models import DEFAULT_ERROR_CAP, ErrorLog
from stoat_ferret.library._names import is_utf8
from stoat_ferret.library._scan import ScanRun
from stoat_ferret.library._scanprobe import probe_in_thread

if TYPE_CHECKING:
    from stoat_ferret.library._library import VideoLibrary
    from stoat_ferret.library._probepool import ProbeProcesses

ScanHandler = Callable[[JobContext], Awaitable[dict[str, Any]]]


def make_scan_handler(
    library: VideoLibrary,
    *,
    roots: Sequence[str | os.PathLike[str]] = (),
    root_links: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]] = (),
    probe_threads: int = 4,
    probe_priority: ThreadPriority = ThreadPriority.IDLE,
    probes: ProbeProcesses | None = None,
    error_cap: int = DEFAULT_ERROR_CAP,
) -> ScanHandler:
    """Build the handler of ``scan`` jobs, which fills ``library``.

    The job payload is ``{"path": <absolute resolved directory>, "recursive":
    bool = True, "forget_unmounted": bool = False}`` (:func:`parse_payload`).

    Args:
        library: Where the videos are stored.
        roots: The resolved directories a scan may read (the settings'
            ``scan_roots``); empty allows any. Checked again when each job
            starts, on the directory it opens.
        root_links: The links the roots' spellings go through, each with
            its resolved path (the settings' ``scan_root_links``): a link in
            a scanned tree whose absolute target starts with one is read
            with the resolved path, as leading into the root.
        probe_threads: How many files are probed at once, at most, by all the
            scans of this handler together.
        probe_priority: The CPU priority of the probing threads.
        probes: The child processes that probe the files (the service's);
            without, the threads do, where FFmpeg cannot be stopped.
        error_cap: How many ``errors`` entries a result lists; ``errors_total``
            counts them all, ``errors_truncated`` those not listed.

    Returns:
        An async handler returning ``{"found", "added", "updated", "unchanged",
        "failed_unchanged", "removed", "probed", "probe_errors", "errors",
        "errors_total", "errors_truncated"}``.

    Raises:
        ValueError: ``probe_threads`` or ``error_cap`` is out of range.
    """
    if probe_threads < 1:
        raise ValueError(f"probe_threads must be >= 1, got {probe_threads}")
    if error_cap < 0:
        raise ValueError(f"error_cap must be >= 0, got {error_cap}")
    limiter = anyio.CapacityLimiter(probe_threads)
    threads = BackgroundThreads(probe_threads, probe_priority, name="stoat-probe")
    allowed = tuple(os.fspath(root) for root in roots)
    links = tuple((os.fspath(link), os.fspath(resolved)) for link, resolved in root_links)
    probe = probe_in_thread if probes is None else probes.probe

    async def scan(ctx: JobContext) -> dict[str, Any]:
        payload = parse_payload(ctx.payload)
        run = ScanRun(
            library=library,
            ctx=ctx,
            root=payload.path,
            recursive=payload.recursive,
            roots=allowed,
            root_links=links,
            forget_unmounted=payload.forget_unmounted,
            limiter=limiter,
            workers=probe_threads,
            threads=threads,
            probe=probe,
            errors=ErrorLog(cap=error_cap),
        )
        # Every line the scan logs, in its tasks and threads, names the job.
        with logger.contextualize(job_id=ctx.job_id, job_type=ctx.job_type):
            return await run.run()

    return scan


class ScanPayload(NamedTuple):
    """What a scan job is asked to do (:func:`parse_payload`)."""

    path: str
    """The directory to scan: absolute, normalised."""
    recursive: bool
    """Whether its subdirectories are scanned too."""
    forget_unmounted: bool
    """Whether the videos of disks this scan does not find mounted, which a
    scan otherwise keeps (``_mounts.py``), are removed as gone."""


def parse_payload(payload: Any) -> ScanPayload:
    """The :class:`ScanPayload` of a scan job's payload.

    Raises:
        ValueError: The payload is not ``{"path": <absolute UTF-8 str>,
            "recursive": <bool>, "forget_unmounted": <bool>}`` (the last two
            optional: True and False).
    """
    if not isinstance(payload, Mapping):
        raise ValueError("scan payload must be an object with 'path' and 'recursive'")
    path = payload.get("path")
    recursive = payload.get("recursive", True)
    forget = payload.get("forget_unmounted", False)
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ValueError(f"scan payload 'path' must be an absolute path, got {path!r}")
    if not path.isascii() and not is_utf8(path):  # the store holds UTF-8 paths only
        raise ValueError(f"scan payload 'path' must be valid UTF-8, got {path!r}")
    if not isinstance(recursive, bool):
        raise ValueError(f"scan payload 'recursive' must be a boolean, got {recursive!r}")
    if not isinstance(forget, bool):
        raise ValueError(f"scan payload 'forget_unmounted' must be a boolean, got {forget!r}")
    return ScanPayload(os.path.normpath(path), recursive, forget)
