"""A probe process: ``python -m stoat_ferret.library._probechild FD PARENT PRIORITY MEMORY``.

Started by ``_probeprocess.ProbeProcess``, which says why. It reads one
request at a time from the ``SOCK_SEQPACKET`` socket ``FD`` (the read limit,
the name, and the descriptor of the name's directory), probes the file with
:func:`probe_video` and sends one JSON answer back. It ends when the socket
closes, and the kernel kills it when the thread that started it (in process
``PARENT``) ends. Before its first request it lowers its priority to
``SCHED_IDLE`` if ``PRIORITY`` is ``idle``, limits its address space to
``MEMORY`` bytes, and says ``ready``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import socket
import sys
from typing import TYPE_CHECKING, Final

from loguru import logger

from stoat_ferret.library._background import ThreadPriority, lower_priority
from stoat_ferret.library._probe import probe_video
from stoat_ferret.library._probeprocess import READY, REQUEST, encode_answer

if TYPE_CHECKING:
    from stoat_ferret.library._models import VideoProbe

_PR_SET_PDEATHSIG: Final = 1
"""``prctl`` option (``<linux/prctl.h>``): the signal a process gets when its parent dies."""

_REQUEST_MAX: Final = REQUEST.size + 4096  # a name is at most NAME_MAX (255) bytes


def main(argv: list[str]) -> None:
    """Serve probe requests on the socket ``argv[0]`` until it closes."""
    fd, parent, priority, memory = argv
    _die_with_parent(int(parent))
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    if ThreadPriority(priority) is ThreadPriority.IDLE:
        lower_priority()
    limit = int(memory)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with socket.socket(fileno=int(fd)) as channel, contextlib.suppress(ConnectionError):
        # A ConnectionError: the service closed its end (it is stopping) while
        # this child answered; there is nobody left to answer.
        channel.send(READY)
        serve(channel)


def serve(channel: socket.socket) -> None:
    """Answer each request on ``channel``, one at a time, until it closes."""
    while True:
        request, fds, _, _ = socket.recv_fds(channel, _REQUEST_MAX, 1)
        if not request:
            return  # the service closed its end
        with contextlib.ExitStack() as descriptors:
            for received in fds:
                descriptors.callback(os.close, received)
            if len(fds) != 1 or len(request) <= REQUEST.size:
                return  # not a request of ProbeProcess: nothing to answer
            [read_limit] = REQUEST.unpack_from(request)
            name = os.fsdecode(request[REQUEST.size :])
            channel.send(encode_answer(_outcome(name, fds[0], read_limit)))


def _outcome(name: str, dir_fd: int, read_limit: int) -> VideoProbe | Exception:
    try:
        return probe_video(name, read_limit=read_limit, dir_fd=dir_fd)
    except Exception as exc:  # a ProbeError refuses the file; the service logs any other
        return exc


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when the thread that started it ends (Linux)."""
    if not sys.platform.startswith("linux"):  # pragma: no cover - Linux-only call
        return
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl: nobody to signal it
        raise SystemExit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
