"""Writing a file whole or not at all, relative to a directory's descriptor.

:func:`write_atomically` writes under a temporary name (``.<random>.part``,
created exclusively, never through a symbolic link), flushes the data to the
disk (``fsync``) and renames it over the final name: a reader sees the whole
file or none, even after a crash. Blocking: use a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from typing import Final

NEW_FILE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
"""Flags that create a file that is not there yet, never through a link."""

TEMPORARY_ATTEMPTS: Final = 100
"""Random temporary names tried before giving up (each taken one is a collision)."""


def write_atomically(directory: int, name: str, data: bytes, mode: int) -> None:
    """Write ``data`` as ``name`` in the open ``directory``, whole or not at all.

    Raises:
        OSError: it cannot be written; the temporary file is removed, and
            ``name`` is as it was.
    """
    for _ in range(TEMPORARY_ATTEMPTS):
        temporary = f".{secrets.token_hex(8)}.part"
        try:
            handle = os.open(temporary, NEW_FILE, mode, dir_fd=directory)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(errno.EEXIST, "no free temporary name")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=directory)
        raise
