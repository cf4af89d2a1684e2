"""stoat_ferret: the backend of a video-editing tool.

``stoat_ferret.jobs`` is the in-process job supervisor, ``stoat_ferret.library``
scans, probes and stores videos, and ``stoat_ferret.api`` is the FastAPI app.
"""

from __future__ import annotations

__version__ = "0.1.0"
