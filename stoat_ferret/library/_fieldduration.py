"""A Matroska track whose DefaultDuration is a field's, not a frame's.

FFmpeg takes a Matroska track's frame rate (its average and its guess,
ffprobe's ``avg_frame_rate`` and ``r_frame_rate``) from the track's
DefaultDuration, a frame's length the file declares, not from the timestamps
of its frames. Some muxers of interlaced video declare the length of a field
there, half a frame's: FFmpeg then gives twice the frame rate, and a count
made from the duration counts every frame twice. The blocks' own timestamps
still step a frame at a time, and the codec's header (H.264's SPS timing,
MPEG-2's sequence header) gives the frame rate.

:func:`field_duration_rate` takes the codec's rate only where both say so:
the codec's rate is half the declared one, and the timestamps of packets
near the start are about two declared durations apart. Either alone is not enough: a
codec's timing may be wrong (an H.264 SPS whose timing gives half the rate
of a progressive stream whose DefaultDuration is right: its packets are
then one declared duration apart), and a variable-rate file may begin with
frames held longer than its DefaultDuration while its codec gives that rate.
"""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING, Final

import av

from stoat_ferret.library._input import StreamsPastLimit, demuxed, short_of_memory

if TYPE_CHECKING:
    from fractions import Fraction

    from av.container import InputContainer
    from av.video.stream import VideoStream

_MATROSKA: Final = "matroska"

PACKETS: Final = 16
"""How many of the video's packets are read for their timestamps: enough to
hold two frames shown one after the other whatever the order of decoding
(B-frames). Read only for a file whose codec disagrees with its
DefaultDuration."""

_FIELD_STEPS: Final = (1.5, 2.5)
"""How many declared durations apart frames shown one after the other must
be for that duration to be a field's: two, from timestamps kept in whole
milliseconds (33 or 34 ms for two fields of 59.94, 1.98 or 2.04). No more
than 2.5: a variable-rate file whose first frames are held longer is not
taken for one."""


def field_duration_rate(
    container: InputContainer,
    video: VideoStream,
    rate: Fraction,
    codec_rate: Fraction | None,
    *,
    format_name: str,
) -> Fraction | None:
    """The codec's frame rate ``codec_rate`` where ``rate``, FFmpeg's rate of
    a Matroska track, is twice it because the track's DefaultDuration is a
    field's (the module says how that is told); else None.

    Reads up to :data:`PACKETS` of the video's packets from where the
    container is, only for a Matroska file whose ``rate`` is twice
    ``codec_rate``. A packet that cannot be read ends the look; fewer than
    two timestamps are no evidence (None).
    """
    if _MATROSKA not in format_name.split(","):
        return None
    if codec_rate is None or codec_rate.numerator <= 0 or rate != 2 * codec_rate:
        return None
    step = _shortest_step(container, video)
    if step is None or not _FIELD_STEPS[0] <= step * rate <= _FIELD_STEPS[1]:
        return None
    return codec_rate


def _shortest_step(container: InputContainer, video: VideoStream) -> Fraction | None:
    """The shortest time, in seconds, between two of the first
    :data:`PACKETS` packets' presentation timestamps; None for fewer than two."""
    time_base = video.time_base
    if time_base is None:
        return None
    stamps: set[int] = set()
    read = 0
    try:
        # Out of memory is the process's (OutOfMemory passes the except below).
        with short_of_memory(container), demuxed(container, video) as demux:
            for packet in demux:
                if packet.size == 0:
                    continue
                if packet.pts is not None:
                    stamps.add(packet.pts)
                read += 1
                if read >= PACKETS:
                    break
    except (av.FFmpegError, StreamsPastLimit):
        pass
    ordered = sorted(stamps)
    steps = [later - earlier for earlier, later in pairwise(ordered)]
    return min(steps) * time_base if steps else None
