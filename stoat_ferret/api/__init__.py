"""The HTTP API: a FastAPI app over the job queue and the video library.

:func:`create_app` builds the app and :func:`lifespan` runs it (the library
and the job supervisor live exactly as long as it); :func:`begin_shutdown`
is how the server tells it to stop taking work. The routes live in private
modules: ``_videos`` (scan, videos), ``_thumbnails`` (a video's thumbnail),
``_jobs`` (jobs, wait, cancel), ``_scan_errors`` (a scan's errors),
``_events`` (the two event streams), ``_metrics``, ``_health``,
``_dashboard`` (the web page at ``/``, its files in ``static/``, and
``POST /api/v1/session``) and ``_docs`` (Swagger UI at ``/docs``, from this
server's own files).
"""

from __future__ import annotations

from stoat_ferret.api.app import begin_shutdown, create_app, end_grace, lifespan

__all__ = ["begin_shutdown", "create_app", "end_grace", "lifespan"]
