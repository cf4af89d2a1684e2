"""Paging: one page of ``list_jobs``, filtered, newest first, with a total.

Shared by :class:`JobSupervisor` and :class:`InMemoryJobQueue`, so that both
check their arguments and count matches the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from stoat_ferret.jobs._models import JobResult, JobStatus
    from stoat_ferret.jobs._record import JobRecord


@attrs.frozen
class JobPage:
    """One page of :meth:`list_jobs`: the jobs, newest first, and how many matched."""

    jobs: tuple[JobResult, ...]
    total: int


def check_page(limit: int, offset: int) -> None:
    """Raise ValueError for a negative limit or offset."""
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must be >= 0, got limit={limit}, offset={offset}")


def select_page(
    newest_first: Iterable[JobRecord],
    *,
    status: JobStatus | None,
    job_type: str | None,
    limit: int,
    offset: int,
    payload_items: Mapping[str, Any] | None = None,
) -> JobPage:
    """Filter records, count every match, and snapshot one page of them.

    Args:
        newest_first: the records to choose from, newest first.
        status: keep only jobs in this status (None: any).
        job_type: keep only jobs of this type (None: any).
        limit: at most this many jobs on the page.
        offset: skip this many matches first.
        payload_items: keep only jobs whose payload (as shown) is a dict
            holding each of these items.

    Raises:
        ValueError: ``limit`` or ``offset`` is negative.
    """
    check_page(limit, offset)
    page: list[JobResult] = []
    total = 0
    for record in newest_first:
        if status is not None and record.status is not status:
            continue
        if job_type is not None and record.job_type != job_type:
            continue
        if payload_items and not payload_holds(record.shown, payload_items):
            continue
        if offset <= total < offset + limit:
            page.append(record.snapshot())
        total += 1
    return JobPage(tuple(page), total)


def payload_holds(payload: Any, items: Mapping[str, Any]) -> bool:
    """True if ``payload`` is a dict holding every one of ``items`` (compared with ==)."""
    if not isinstance(payload, dict):
        return False
    missing = object()
    return all(payload.get(key, missing) == value for key, value in items.items())
