"""Helpers shared by the library tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stoat_ferret.jobs import JobContext

if TYPE_CHECKING:
    from pathlib import Path


def make_context(
    path: Path | str,
    *,
    recursive: bool = True,
    progress: list[tuple[float, str | None]] | None = None,
) -> JobContext:
    """A real JobContext for a scan of ``path``; its reports land in ``progress``."""
    reports = progress if progress is not None else []

    def sink(job_id: str, fraction: float, message: str | None) -> None:
        reports.append((fraction, message))

    return JobContext(
        job_id="j",
        job_type="scan",
        payload={"path": str(path), "recursive": recursive},
        sink=sink,
    )
