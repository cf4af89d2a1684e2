"""The baseline of the scan-submission benchmark: a FastAPI app that only queues.

``POST /api/v1/videos/scan`` parses the JSON body, puts it on an
``asyncio.Queue`` with ``put_nowait`` (nothing ever reads it) and answers 202
with the same body and ``Location`` header as stoat_ferret. Nothing else: no
path check, no job table, no logging call.

``python -m bench._bare_app PORT`` serves it the way ``python -m stoat_ferret``
serves the service: one uvicorn process on 127.0.0.1, its default HTTP
implementation and event loop (h11 and asyncio here: httptools and uvloop are
not installed), ``lifespan="on"``, the same graceful-shutdown timeout, and the
access log enabled but filtered at WARNING, as ``STOAT_LOG_LEVEL=WARNING``
filters it there. The logging path differs: here uvicorn's own loggers drop
the access record at their level check; stoat_ferret hands it to loguru.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, Final

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

HTTP_GRACE_SECONDS: Final = 3
"""stoat_ferret._server.HTTP_GRACE_SECONDS, repeated so this module imports nothing of it."""

app = FastAPI()
queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()


@app.post("/api/v1/videos/scan")
async def scan(body: dict[str, Any]) -> JSONResponse:
    """Queue the body; answer 202 with a fresh job id."""
    queue.put_nowait(body)
    job_id = os.urandom(16).hex()
    return JSONResponse(
        {"job_id": job_id, "status": "pending"},
        status_code=202,
        headers={"Location": f"/api/v1/jobs/{job_id}"},
    )


def main() -> None:
    """Serve :data:`app` on 127.0.0.1 at the port given as the only argument."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        lifespan="on",
        log_level="warning",
        access_log=True,
        timeout_graceful_shutdown=HTTP_GRACE_SECONDS,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
