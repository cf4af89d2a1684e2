"""One run of the jobs benchmark's workloads, for counting instructions.

``valgrind --tool=callgrind python -m bench.instructions RUN JOBS BACKEND``
counts the instructions of one ``anyio.run`` of ``JOBS`` noop jobs through
``RUN`` (``supervisor``, ``minimal`` or ``bare``, see ``bench_jobs``). The
count for 12,000 jobs minus the count for 2,000, divided by 10,000, is the
cost of one job with start-up and imports cancelled out (supervisor.md,
Performance). ``make bench`` does not run this; callgrind is not needed
for anything else.
"""

from __future__ import annotations

import argparse

import anyio
from loguru import logger

from bench.bench_jobs import RUNS, _supervisor_run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("run", choices=["supervisor", *RUNS])
    parser.add_argument("jobs", type=int)
    parser.add_argument("backend", choices=["asyncio", "trio"])
    args = parser.parse_args()
    logger.remove()  # as in the benchmark: lifecycle logging with no handler
    run = _supervisor_run if args.run == "supervisor" else RUNS[args.run]
    anyio.run(run, args.jobs, backend=args.backend)


if __name__ == "__main__":
    main()
