"""The in-process job supervisor (work in progress: see issue 3)."""

from __future__ import annotations

from stoat_ferret.jobs._models import Handler, JobContext, JobPage, JobResult, JobStatus

__all__ = ["Handler", "JobContext", "JobPage", "JobResult", "JobStatus"]
