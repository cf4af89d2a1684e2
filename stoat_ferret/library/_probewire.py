"""What a probe process and the service say to each other (``_probeprocess.py``).

A request is one datagram of a ``SOCK_SEQPACKET`` socket pair: :data:`REQUEST`
(what to do, the read limit, the CPU seconds it may take) and the file's name
in bytes (for messages only), with the file's descriptor attached
(``SCM_RIGHTS``): to probe (:data:`PROBE`), or to make a thumbnail
(:data:`THUMBNAIL`), which also attaches a memory file (``memfd``) for the
image. An answer is one datagram of JSON (:func:`encode_answer`), never a
pickle: a child that a hostile file has taken over can send the service any
bytes, and :func:`decode_answer` only ever builds a :class:`VideoProbe` whose
every field has its declared type, :func:`decode_thumbnail` only reads an
image of the size the store accepts, written as the encoder writes one
(:func:`is_plain_lossy_webp`), or they refuse the answer.
"""

from __future__ import annotations

import json
import math
import os
import struct
from datetime import datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from stoat_ferret.library._exceptions import ProbeError, ShortOfMemory
from stoat_ferret.library._metadata import FULL_TURN
from stoat_ferret.library._models import VideoProbe
from stoat_ferret.library._probe import MAX_DURATION_SECONDS
from stoat_ferret.library._schema import INTEGER_MAX
from stoat_ferret.library._thumbimage import is_plain_lossy_webp
from stoat_ferret.library._thumbnail import UndecodableError
from stoat_ferret.library._thumbstore import MAX_THUMBNAIL_BYTES

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

ANSWER_MAX: Final = 64 * 1024
"""Bytes of one answer at most, well below a socket's send buffer (a datagram
larger than that cannot be sent at all); a longer description is refused.
A description is under a kilobyte: every string in it is bounded by the probe."""

REASON_MAX: Final = 1000
"""Characters of a refusal or of an unexpected error's text kept from an
answer (the scan keeps fewer: ``ERROR_TEXT_CHARS``)."""

READY: Final = b"ready "
"""What a child sends once it is ready for requests, followed by the Landlock
ABI it confined itself with (``0``: none, ``_sandbox.py``)."""

START_FAILED: Final = b"cannot start: "
"""What a child sends instead of :data:`READY` when its set-up failed before
its confinement (its limits, its priority, PyAV's import: a memory limit
too low for it, say), followed by the exception; it then ends."""

CONFINE_FAILED: Final = b"cannot confine: "
"""What a child sends instead when the kernel offers Landlock but refused to
confine it, followed by why; it then ends without serving."""

REQUEST: Final = struct.Struct("<cQd")
"""A request's head: :data:`PROBE`, :data:`THUMBNAIL` or :data:`UNTURNED`,
the read limit in bytes, the CPU seconds allowed. The name's bytes follow."""

PROBE: Final = b"p"
THUMBNAIL: Final = b"t"
UNTURNED: Final = b"u"
"""A thumbnail not turned by the frame's display matrix (the video's rotation
is unknown: ``_thumbnail.make_thumbnail``'s ``turn``)."""

NOT_A_PROBE: Final = "the probe process answered with something not a probe"

DESCRIPTORS_CUT: Final = "the probe process could not take the file's descriptor"
"""A child's refusal when the kernel cut the descriptors off its request (it
holds as many as it may): not the file's doing, so ``transient``."""

# The type of each field of a VideoProbe, from its annotation: a name per
# alternative. A field of a type not listed here fails at import, not in a scan.
_SCALARS: Final[dict[str, tuple[type, ...]]] = {
    "int": (int,),
    "float": (float,),
    "str": (str,),
    "bool": (bool,),
    "None": (type(None),),
    "Fraction": (list,),  # [numerator, denominator]
    "datetime": (str,),  # ISO 8601, in UTC
}
_NAMES: Final = {
    field.name: tuple(name.strip() for name in str(field.type).split("|"))
    for field in attrs.fields(VideoProbe)
}
if not all(name in _SCALARS for names in _NAMES.values() for name in names):
    raise TypeError(f"a VideoProbe field's type cannot cross to the service: {_NAMES}")
# Each field's JSON types, compared exactly (the parser makes no subclass; a
# bool, an int to isinstance, is not one here), under VideoProbe's own names.
_FIELDS: Final = {
    key: frozenset(kind for name in names for kind in _SCALARS[name])
    for key, names in _NAMES.items()
}


class ProbeRaised(Exception):
    """A probe raised unexpectedly in a child process; the message says what
    (the exception's type and text)."""


def encode_answer(outcome: VideoProbe | int | Exception) -> bytes:
    """The child's answer for one file: its probe, the size of its thumbnail
    (written to the memory file), why it gives no frame (an
    :class:`UndecodableError`), why it was refused (a :class:`ProbeError`;
    ``unavailable`` if it is ``transient``, ``short_of_memory`` for a
    :class:`ShortOfMemory`), or what a probe raised unexpectedly. At most
    :data:`ANSWER_MAX` bytes."""
    if isinstance(outcome, int):
        message: dict[str, Any] = {"thumbnail": outcome}
    elif isinstance(outcome, VideoProbe):
        fields: dict[str, Any] = attrs.asdict(outcome, recurse=False)
        rate, moment = outcome.frame_rate, outcome.creation_time
        fields["frame_rate"] = None if rate is None else [rate.numerator, rate.denominator]
        fields["creation_time"] = None if moment is None else moment.isoformat()
        message = {"probe": fields}
    elif isinstance(outcome, UndecodableError):
        message = {"undecodable": outcome.reason[:REASON_MAX]}
    elif isinstance(outcome, ShortOfMemory):  # for the service to replace the child
        message = {"short_of_memory": outcome.reason[:REASON_MAX]}
    elif isinstance(outcome, ProbeError):
        # "unavailable": the failure said nothing of the file (a read its
        # file system could not answer), for the service to keep its row.
        kind = "unavailable" if outcome.transient else "refused"
        message = {kind: outcome.reason[:REASON_MAX]}
    else:
        message = {"unexpected": f"{type(outcome).__name__}: {outcome}"[:REASON_MAX]}
    answer = json.dumps(message, allow_nan=False).encode()
    if len(answer) > ANSWER_MAX:
        return json.dumps({"refused": "its description is too long"}).encode()
    return answer


def decode_answer(name: str, answer: bytes) -> VideoProbe:
    """The probe in a child's ``answer`` about ``name``.

    Raises:
        ProbeError: The child refused the file. Its ``reason`` is
            :data:`NOT_A_PROBE` if the answer is not a well-formed description
            (a child's answer is not trusted).
        ProbeRaised: A probe in the child raised unexpectedly.
    """

    def probe(kind: str, body: object) -> VideoProbe | None:
        return _probe(body) if kind == "probe" and isinstance(body, dict) else None

    return _decoded(name, answer, probe, undecodable=False)


def decode_thumbnail(name: str, answer: bytes, image: int) -> bytes:
    """The thumbnail a child wrote to the memory file ``image``, of the size
    its ``answer`` gives.

    Raises:
        UndecodableError: The file gives no frame.
        ProbeError: The child refused the file (the reason may be
            :data:`NOT_A_PROBE`, as for :func:`decode_answer`).
        ProbeRaised: Making the thumbnail raised unexpectedly in the child.
    """

    def thumbnail(kind: str, body: object) -> bytes | None:
        if kind == "thumbnail" and type(body) is int and 0 < body <= MAX_THUMBNAIL_BYTES:
            written = os.pread(image, body + 1, 0)
            if len(written) == body and is_plain_lossy_webp(written):  # all of it
                return written
        return None

    return _decoded(name, answer, thumbnail, undecodable=True)


def _decoded(
    name: str, answer: bytes, result: Callable[[str, object], T | None], *, undecodable: bool
) -> T:
    """What ``result`` makes of ``answer``'s one key and its value, or the
    refusal or error the answer reports instead (an ``undecodable`` one only
    where it may be: for a thumbnail).

    Raises:
        UndecodableError, ProbeError, ProbeRaised: As the answer says; a
            ProbeError with :data:`NOT_A_PROBE` for an answer of any other shape.
    """
    try:
        message = _DECODER.decode(answer.decode())
        if isinstance(message, dict) and len(message) == 1:
            [(kind, body)] = message.items()
            made = result(kind, body)
            if made is not None:
                return made
            if undecodable and kind == "undecodable" and isinstance(body, str):
                raise UndecodableError(name, printable(body))
            if kind == "refused" and isinstance(body, str):
                raise ProbeError(name, printable(body), transient=body == DESCRIPTORS_CUT)
            if kind == "unavailable" and isinstance(body, str):
                raise ProbeError(name, printable(body), transient=True)
            if kind == "short_of_memory" and isinstance(body, str):
                raise ShortOfMemory(name, printable(body))
            if kind == "unexpected" and isinstance(body, str):
                raise ProbeRaised(printable(body))
    # JSON, a type or a value out of place, a nesting too deep for the parser.
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        raise ProbeError(name, NOT_A_PROBE) from exc
    raise ProbeError(name, NOT_A_PROBE)


def _no_constant(text: str) -> None:
    raise ValueError(f"not a JSON number: {text}")


# One parser for every answer, as json.loads keeps one for its defaults: with
# any option it makes a new one, and its scanner, each call (3 microseconds).
_DECODER: Final = json.JSONDecoder(parse_constant=_no_constant)


def printable(text: str) -> str:
    """``text`` cut to :data:`REASON_MAX`, its control characters (a line
    break in a log line) as spaces."""
    return "".join(char if char.isprintable() else " " for char in text[:REASON_MAX])


def _probe(body: dict[str, Any]) -> VideoProbe:
    if body.keys() != _FIELDS.keys():
        raise ValueError("not the fields of a probe")
    # Copied under VideoProbe's own names, not the parser's copies of them:
    # a keyword argument finds its parameter by identity, or else by
    # comparing names one by one (4 microseconds an answer).
    fields: dict[str, Any] = {}
    for key, kinds in _FIELDS.items():
        value = fields[key] = body[key]
        kind = type(value)
        if kind not in kinds:
            raise TypeError(f"{key} is {kind.__name__}")
        if kind is float and not math.isfinite(value):
            raise ValueError(f"{key} is not finite")
        # FFmpeg's names and the probe's tags: short, printable (the probe
        # bounds every tag it keeps).
        if kind is str and (len(value) > REASON_MAX or not value.isprintable()):
            raise ValueError(f"{key} is not a short printable text")
    rate, moment = fields["frame_rate"], fields["creation_time"]
    if rate is not None:
        numerator, denominator = rate
        if type(numerator) is not int or type(denominator) is not int:
            raise TypeError("frame_rate is not a fraction")
        if numerator <= 0 or denominator <= 0:  # the probe gives positive rates only
            raise ValueError("frame_rate is not a positive fraction")
        fields["frame_rate"] = Fraction(numerator, denominator)
    if moment is not None:
        fields["creation_time"] = when = datetime.fromisoformat(moment)
        if when.utcoffset() != timedelta(0):
            raise ValueError("creation_time is not in UTC")
    _check_ranges(fields)
    return VideoProbe(**fields)


# The bounds the probe keeps (``_probe.py``, ``_metadata.py``), held here too:
# the service does not take a child's word for them.
_POSITIVE: Final = (
    "width",
    "height",
    "duration_frames",
    "bit_rate",
    "video_bit_rate",
    "audio_channels",
    "audio_sample_rate",
)
_NOT_NEGATIVE: Final = (
    "bit_depth",
    "display_width",
    "display_height",
    "video_stream_count",
    "audio_stream_count",
    "subtitle_stream_count",
)


def _check_ranges(fields: dict[str, Any]) -> None:
    """Raise ValueError if a number of a child's probe is one the probe never gives."""
    if not fields["video_codec"]:
        raise ValueError("video_codec is empty")
    for key in _POSITIVE:
        if fields[key] is not None and not 0 < fields[key] <= INTEGER_MAX:
            raise ValueError(f"{key} is not a positive 64-bit integer")
    for key in _NOT_NEGATIVE:
        if fields[key] is not None and not 0 <= fields[key] <= INTEGER_MAX:
            raise ValueError(f"{key} is negative or too large")
    seconds, rotation = fields["duration_seconds"], fields["rotation"]
    if seconds is not None and not 0 < seconds <= MAX_DURATION_SECONDS:
        raise ValueError("duration_seconds is not a duration a file may have")
    if rotation is not None and abs(rotation) > FULL_TURN:
        raise ValueError("rotation is more than a full turn")
