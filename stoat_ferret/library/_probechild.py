"""A probe process: ``python -P -m stoat_ferret.library._probechild FD PRIORITY MEMORY``.

Started by ``_probeprocess.ProbeProcess``, which says why. It reads one
request at a time from the ``SOCK_SEQPACKET`` socket ``FD`` (``_probewire.py``:
what to do, the read limit, the CPU seconds allowed, the name, and the file's
descriptor), probes the file with :func:`probe_descriptor` or makes its
thumbnail with :func:`thumbnail_descriptor` (written to the memory file
that came with the request), and sends one JSON answer back. While it
works on a file, ``ITIMER_PROF`` is armed with the CPU seconds allowed: once
they are spent the kernel ends the process with ``SIGPROF`` (no handler is
installed, so FFmpeg need not return for it).

It ends when the socket closes: a thread of its own waits for the other end
to hang up (the service closed it, or ended in any way, even killed) and
ends the process then, even while FFmpeg is busy in a file. First it turns
core dumps off (``RLIMIT_CORE`` 0: each crash of FFmpeg on a hostile file
would otherwise write one as large as its address space). Before its first
request it lowers its priority to ``SCHED_IDLE`` if ``PRIORITY`` is
``idle``, limits its address space to ``MEMORY`` bytes and every file it
writes to a thumbnail's size (:func:`limit_writes`; each limit, or a lower
one the service was given: :func:`set_limit`), imports all it needs,
gives up root and every capability (``_sandbox.drop_privileges``),
confines itself with Landlock where the kernel has it (``_sandbox.py``),
installs its seccomp filter (no new socket, no reach into other processes:
``_seccomp.py``), and says ``ready`` with the Landlock ABI it used (or why
it kept a privilege or the kernel refused either, and ends).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import resource
import select
import signal
import socket
import stat
import sys
import threading
from typing import TYPE_CHECKING, Final

import av
from loguru import logger

from stoat_ferret.library._background import ThreadPriority, lower_priority
from stoat_ferret.library._exceptions import ProbeError
from stoat_ferret.library._limits import CHILD_AGE_SECONDS, MAX_DEADLINE
from stoat_ferret.library._probe import probe_descriptor
from stoat_ferret.library._probewire import (
    CONFINE_FAILED,
    DESCRIPTORS_CUT,
    READY,
    REASON_MAX,
    REQUEST,
    START_FAILED,
    THUMBNAIL,
    UNTURNED,
    encode_answer,
)
from stoat_ferret.library._sandbox import confine, drop_privileges
from stoat_ferret.library._seccomp import filter_system_calls
from stoat_ferret.library._thumbnail import thumbnail_descriptor
from stoat_ferret.library._thumbstore import MAX_THUMBNAIL_BYTES

if TYPE_CHECKING:
    from stoat_ferret.library._models import VideoProbe

_REQUEST_MAX: Final = REQUEST.size + 4096  # a file's name: at most 255 bytes


def main(argv: list[str]) -> None:
    """Serve probe requests on the socket ``argv[0]`` until it closes."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core dump of a hostile file's crash
    fd, priority, memory = argv
    logger.remove()  # nothing to say: the service reports how each file went
    # The CPU budget ends this process by SIGPROF's default action, whatever
    # the service did with the signal (an ignored or blocked one is inherited).
    signal.signal(signal.SIGPROF, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGPROF})
    # The service ends it, by closing its socket: a stop signal sent to every
    # process of the service at once (systemd's, pkill's) must not end it
    # mid-file, before the service stops its work in order.
    for stop in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(stop, signal.SIG_IGN)
    with socket.socket(fileno=int(fd)) as channel, contextlib.suppress(ConnectionError):
        # A ConnectionError: the service closed its end (it is stopping) while
        # this child answered; there is nobody left to answer.
        try:
            if ThreadPriority(priority) is ThreadPriority.IDLE:
                lower_priority()
            set_limit(resource.RLIMIT_AS, int(memory))
            limit_cpu()
            limit_writes()
            _import_all_of_pyav()  # from here on it needs no path
        except Exception as exc:  # the service says why, for every file
            channel.send(START_FAILED + f"{type(exc).__name__}: {exc}".encode()[:REASON_MAX])
            return
        try:
            drop_privileges()  # one thread so far: the hang-up thread starts after
            abi = confine()
            filter_system_calls()
        except OSError as exc:  # fail closed: the service says why, for every file
            channel.send(CONFINE_FAILED + str(exc).encode(errors="replace")[:REASON_MAX])
            return
        threading.Thread(target=_end_on_hang_up, args=(channel,), daemon=True).start()
        channel.send(READY + str(abi).encode())
        serve(channel)


def limit_cpu() -> None:
    """Set a CPU time this process cannot outlast (``RLIMIT_CPU``, hard: the
    kernel kills it there): more than it may spend in its life, every core
    busy for :data:`CHILD_AGE_SECONDS` and then a file's longest budget. The
    service ends a child that spends past a file's budget; this bounds one a
    hostile file took over that disarmed its timer and outlived the service."""
    set_limit(resource.RLIMIT_CPU, int(CHILD_AGE_SECONDS * (os.cpu_count() or 1) + MAX_DEADLINE))


def set_limit(kind: int, value: int) -> None:
    """Set the resource limit ``kind``, soft and hard, to ``value``, or keep the
    lower hard limit the service was given (``ulimit -H``, systemd's
    ``LimitAS=``): no process may raise its hard limit, and a child that
    tried failed to start, so every file failed (a review, under ``prlimit
    --as``)."""
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


MAX_DESCRIPTORS: Final = 64
"""Descriptors a probe process may hold (``RLIMIT_NOFILE``): its socket, a
request's one or two, what FFmpeg and Python open, and room to spare."""


def limit_writes() -> None:
    """Keep every file this process writes to a thumbnail's size, and its
    descriptors few.

    It writes only thumbnails, into the memory file the service hands it;
    but memory files are not counted by ``RLIMIT_AS``, and a child that a
    hostile file took over could otherwise fill one with all the machine's
    memory (the seccomp filter keeps it from making more of them).
    ``RLIMIT_FSIZE`` makes a write or a truncation past the limit fail
    (``EFBIG``), ``SIGXFSZ`` ignored so that it is an error, not the
    process's end; ``RLIMIT_NOFILE`` bounds what it can hold through
    descriptors (pipes' buffers among them).
    """
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    set_limit(resource.RLIMIT_FSIZE, MAX_THUMBNAIL_BYTES)
    set_limit(resource.RLIMIT_NOFILE, MAX_DESCRIPTORS)


_NOT_NEEDED: Final = frozenset({"av.__main__", "av.datasets"})  # a CLI; test files to download


def _import_all_of_pyav() -> None:
    """Import every PyAV module now: PyAV imports some on first use (``av.subtitles``
    when a file has subtitles), which a confined child could not."""
    for module in pkgutil.walk_packages(av.__path__, "av."):
        if module.name not in _NOT_NEEDED:
            importlib.import_module(module.name)


def serve(channel: socket.socket) -> None:
    """Answer each request on ``channel``, one at a time, until it closes."""
    while True:
        request, fds, flags, _ = socket.recv_fds(channel, _REQUEST_MAX, 2)
        if not request:
            return  # the service closed its end
        with contextlib.ExitStack() as descriptors:
            for received in fds:
                descriptors.callback(os.close, received)
            if len(request) <= REQUEST.size:
                return  # not a request of ProbeProcess: nothing to answer
            if flags & socket.MSG_CTRUNC:  # no room for its descriptors: say so, and end
                name = os.fsdecode(request[REQUEST.size :])
                channel.send(encode_answer(ProbeError(name, DESCRIPTORS_CUT)))
                return
            kind, read_limit, seconds = REQUEST.unpack_from(request)
            if len(fds) != (2 if kind in (THUMBNAIL, UNTURNED) else 1):
                return
            name = os.fsdecode(request[REQUEST.size :])
            signal.setitimer(signal.ITIMER_PROF, seconds)
            try:
                outcome = _outcome(name, fds, read_limit, turn=kind == THUMBNAIL)
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
            channel.send(encode_answer(outcome))


def _outcome(
    name: str, fds: list[int], read_limit: int, *, turn: bool
) -> VideoProbe | int | Exception:
    try:
        info = os.fstat(fds[0])
        if not stat.S_ISREG(info.st_mode):  # the service sends only regular files
            return ProbeError(name, "not a regular file")
        if len(fds) == 1:
            return probe_descriptor(
                name, fds[0], info.st_size, read_limit=read_limit, python_reads=True
            )
        image = thumbnail_descriptor(name, fds[0], info.st_size, read_limit=read_limit, turn=turn)
        with open(fds[1], "wb", closefd=False) as memory:
            memory.write(image)
        return len(image)
    except Exception as exc:  # a ProbeError refuses the file; the service logs any other
        return exc


def _end_on_hang_up(channel: socket.socket) -> None:
    """End this process once the service's end of ``channel`` is gone.

    ``poll`` with no events asked for still reports a hang-up: the socket's
    other end closed, which the kernel does when the service closes it or
    its process ends, however it ends. The main thread may be inside FFmpeg,
    which does not hold the GIL while it decodes, nor Python while a read
    of the file waits on the disk, so this thread runs.
    """
    hang_ups = select.poll()
    hang_ups.register(channel, 0)
    hang_ups.poll()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
