"""Job types: which handler runs a type, and how long it may take.

Shared by :class:`JobSupervisor` and :class:`InMemoryJobQueue` so that both
validate ``register``, ``submit`` and constructor arguments the same way.
"""

from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING

import attrs

from stoat_ferret.jobs._exceptions import UnknownJobType

if TYPE_CHECKING:
    from stoat_ferret.jobs._models import Handler


def check_timeout(timeout: float | None, what: str) -> float | None:
    """Return ``timeout`` as a float (``None`` stays ``None``).

    ``math.inf`` is allowed and means "no deadline".

    Raises:
        TypeError: ``timeout`` is not a real number.
        ValueError: ``timeout`` is NaN, zero or negative.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {timeout!r}")
    value = _float(timeout)
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {timeout!r}")
    return value


def check_default_timeout(timeout: float) -> float:
    """:func:`check_timeout` for a queue's ``default_timeout``, which may not be None."""
    checked = check_timeout(timeout, "default_timeout")
    if checked is None:
        raise TypeError("default_timeout must be a number of seconds, got None")
    return checked


def check_key(key: object) -> None:
    """Raise TypeError unless ``key`` (a submit's) is a string or None."""
    if key is not None and not isinstance(key, str):
        raise TypeError(f"key must be a string or None, got {key!r}")


def check_count(value: int, what: str) -> int:
    """Return ``value``, a whole number >= 1; else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def check_seconds(value: float, what: str) -> float:
    """Return ``value`` as a float, a number of seconds >= 0; else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}")
    seconds = _float(value)
    if math.isnan(seconds):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}")
    if seconds < 0:
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return seconds


def _float(value: float) -> float:
    """``value`` as a float: an integer too large for one is as good as infinite."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _is_async_callable(handler: object) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an async __call__ counts too
    )


@attrs.frozen
class JobType:
    """A registered job type."""

    name: str
    handler: Handler
    timeout: float | None
    max_running: int | None = None  # None: only ``max_workers`` limits it


@attrs.define
class JobRegistry:
    """The job types a queue knows, and the timeout rule.

    Timeout precedence: ``submit(timeout=)`` > ``register(timeout=)`` > the
    queue's ``default_timeout``.
    """

    default_timeout: float
    _types: dict[str, JobType] = attrs.field(factory=dict, init=False)

    def register(
        self,
        job_type: str,
        handler: Handler,
        *,
        timeout: float | None,
        max_running: int | None = None,
    ) -> None:
        """Add ``job_type``; see ``JobSupervisor.register`` for the rules."""
        if not isinstance(job_type, str) or not job_type:
            raise ValueError(f"job_type must be a non-empty string, got {job_type!r}")
        if not _is_async_callable(handler):
            raise TypeError(
                f"handler for job type {job_type!r} must be an async function "
                f"(async def handler(ctx) -> result), got {handler!r}"
            )
        if job_type in self._types:
            raise ValueError(f"job type {job_type!r} is already registered")
        checked = check_timeout(timeout, f"timeout for job type {job_type!r}")
        if max_running is not None:
            check_count(max_running, f"max_running for job type {job_type!r}")
        self._types[job_type] = JobType(job_type, handler, checked, max_running)

    def get(self, job_type: str) -> JobType:
        """Return the registered type.

        Raises:
            UnknownJobType: nobody registered ``job_type``.
        """
        try:
            return self._types[job_type]
        except (KeyError, TypeError):
            raise UnknownJobType(str(job_type), sorted(self._types)) from None

    def admit(self, job_type: str, timeout: float | None, key: str | None) -> tuple[JobType, float]:
        """A submit's type and resolved timeout, its arguments checked.

        Raises:
            UnknownJobType: nobody registered ``job_type``.
            TypeError, ValueError: a bad ``timeout``; a ``key`` not a string.
        """
        spec = self.get(job_type)
        seconds = self.timeout_for(spec, timeout)
        check_key(key)
        return spec, seconds

    def timeout_for(self, job_type: JobType, timeout: float | None) -> float:
        """Apply the precedence rule to a ``submit(timeout=)`` argument."""
        if timeout is None:
            return self.default_timeout if job_type.timeout is None else job_type.timeout
        checked = check_timeout(timeout, "timeout")
        assert checked is not None
        return checked
