"""The scan errors of a :class:`~stoat_ferret.library.VideoStore`: a base class of it.

``scan_errors`` holds every ``errors`` entry of a scan, in the
order met, keyed by job id; a job's result lists only the first few. Each
scan of a directory (with the same ``recursive``) replaces the list of the
scan before it when it starts (that list reads as replaced at once, and its
rows are deleted in pieces right after: ``VideoLibrary.replace_scan_errors``),
and owns that directory's list from then on;
a scan that no longer owns it (a later scan of the same directory started
meanwhile) stores nothing more, so a list is never a mix of two scans. A
scan becomes the owner once its new list is committed, and stops being one
when it ends (``end_scan``, carried out when the next scan begins), so the
owners, kept in memory, are the scans running (and those ended since the last
began), not every directory ever scanned. It remembers which scans' lists
were replaced (the last ``REPLACED_KEPT``): :meth:`VideoStore.scan_errors`
tells a replaced list from an empty one. The table is emptied when the store opens,
by the process that holds the database's lock (``_lock.py``; no other
process can open the store meanwhile): job ids do not outlive the process.

A list is kept while its scan's job is known: the service's lifespan asks
the store which scans have lists (:meth:`ScanErrorStore.scan_error_jobs`)
every few minutes and deletes those of jobs its queue has dropped
(:meth:`ScanErrorStore.forget_scan_errors`; ``api/_scan_errors.py``).

The statements are ``_errorrows.py``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stoat_ferret.library._errorrows import (
    delete_job_errors,
    error_page,
    insert_errors,
    listed_jobs,
    scope_jobs,
)
from stoat_ferret.library._exceptions import ScanErrorsIncomplete, ScanErrorsReplaced
from stoat_ferret.library._storefile import StoreFile

if TYPE_CHECKING:
    from collections.abc import Sequence

    from stoat_ferret.library._errorrows import ErrorOwners


class ScanErrorStore(StoreFile):
    """The ``scan_errors`` table of a store; its subclass sets ``_error_owners``."""

    _error_owners: ErrorOwners

    def replace_scan_errors(
        self, job_id: str, directory: str, *, recursive: bool, errors: Sequence[tuple[str, str]]
    ) -> list[str]:
        """Make ``job_id`` the owner of this scope's list, store ``errors``
        (the first of ``job_id``, if any), and return the earlier scans of the
        scope whose lists it replaces, for the caller to delete with
        :meth:`forget_scan_errors`. Those read as replaced from before this
        commit on, so no reader sees a list of theirs half deleted; deleting
        them in pieces keeps a list of a million entries from holding the
        write lock (every scan's writes wait for it) for seconds."""
        # The owner changes once the new list is committed (a failed commit
        # leaves the previous owner, whose list is still there), under the
        # same hold of the lock as the commit.
        scope, owners = (directory, recursive), self._error_owners
        with self._write_lock:
            marked: list[str] = []
            try:
                with self._writing() as connection:
                    stored = scope_jobs(connection, directory, recursive, but=job_id)
                    marked = owners.replacing(scope, job_id, stored)
                    insert_errors(connection, job_id, directory, recursive, errors)
            except BaseException:
                owners.unmark(marked)
                raise
            owners.take(scope, job_id)
        return stored

    def add_scan_errors(
        self, job_id: str, directory: str, *, recursive: bool, errors: Sequence[tuple[str, str]]
    ) -> None:
        """Store more ``(path, error)`` entries of the scan ``job_id``, after its
        others; nothing if a later scan of this scope has replaced them, nor
        once ``job_id`` has ended (:meth:`end_scan`) and another scan has begun."""
        if errors:
            with self._writing() as connection:
                if self._error_owners.owns((directory, recursive), job_id):
                    insert_errors(connection, job_id, directory, recursive, errors)

    def end_scan(self, job_id: str, directory: str, *, recursive: bool, lost: bool = False) -> None:
        """The scan ``job_id`` adds no more errors: forget it as its scope's owner.
        ``lost``: it met entries it could not store (the store failed), so
        its list is short (:meth:`scan_errors` raises ``ScanErrorsIncomplete``).

        Its list stays stored. Never waits, so any thread may call it, the
        event loop's too: the next :meth:`replace_scan_errors` carries it
        out, under the write lock. So the map of owners holds the scans
        running and those ended since the last scan began, not every scope
        ever scanned.
        """
        self._error_owners.end((directory, recursive), job_id, lost=lost)

    def scan_errors(
        self, job_id: str, limit: int, offset: int, *, deadline: float | None = None
    ) -> tuple[list[tuple[str, str]], int]:
        """Return one page of a scan's ``(path, error)`` entries in the order met, and the total.

        ``deadline``: a ``time.monotonic()`` reading the answer must come by
        (its wait for the reader included).

        Raises:
            ValueError: ``limit`` or ``offset`` is negative.
            ScanErrorsReplaced: A later scan of the same scope replaced the list.
            ScanErrorsIncomplete: The scan ended before it stored every entry.
            StoreBusy: not answered by ``deadline``.
        """
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got {limit} and {offset}")
        with self._reading(deadline) as connection:
            page = error_page(connection, job_id, limit, offset)
        # Asked after the read: a list replaced meanwhile is not served either.
        if self._error_owners.was_replaced(job_id):
            raise ScanErrorsReplaced(job_id)
        if self._error_owners.was_lost(job_id):
            raise ScanErrorsIncomplete(job_id)
        return page

    def scan_error_jobs(self) -> list[str]:
        """The scans that have errors stored (a read of the lifespan's sweep, not
        of a request: the reader of the jobs' reads)."""
        with self._reading(bulk=True) as connection:
            return listed_jobs(connection)

    def forget_scan_errors(self, job_id: str, *, limit: int) -> int:
        """Delete up to ``limit`` stored errors of the scan ``job_id`` (whose job
        is forgotten, or whose list a later scan replaced: no job id is ever
        given to another job), in one transaction; how many went. In pieces,
        so that a list of a million entries does not hold the write lock (a
        scan's writes wait for it) for seconds."""
        with self._writing() as connection:
            return delete_job_errors(connection, job_id, limit)
