"""The frames of a fragmented MP4, whose header records only some of them.

A fragmented MP4 (FFmpeg's ``movflags`` ``frag_keyframe``, ``empty_moov``,
``frag_every_frame``, ``dash``, ``cmaf``: written for streaming, or so that
a recording cut short stays readable) keeps most of its samples' tables in
fragments (``moof`` boxes) after its header (``moov``). The count FFmpeg
gives (ffprobe's ``nb_frames``) is the header's: none where the header is
empty, the first fragment's samples where it holds them (``frag_keyframe``
without ``empty_moov``). FFmpeg's MP4 reader reads every fragment's table
when it opens a file it can seek in, and indexes each sample: its index
holds them all. Unless a segment index (``sidx``) told it where the
fragments are: it then reads each only when it gets there, and takes the
segment index's end for the video's duration, which counts the video's
start too (two frames of B-frame delay, for x264's usual stream).

:func:`fragmented_frames` tells such a file by an index of more samples
than its header records, and takes the index's count where that is the
duration's (or the duration less the start's); else the count of the
duration less the start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from fractions import Fraction

    from av.video.stream import VideoStream

_COUNT_WITHIN: Final = 1.5
"""How near, in frames, the index's count must be to the duration's for the
index to hold every fragment's samples."""


def fragmented_frames(video: VideoStream, rate: Fraction, seconds: float | None) -> int | None:
    """The count to take for the one ``video`` records, an MP4 or MOV video
    stream of frame rate ``rate`` and duration ``seconds`` (FFmpeg's, where
    believed): None where FFmpeg indexed no more samples than it records
    (not fragmented: its count stands); else as the module says, or 0 (none)
    without a duration, or where the start is not before its end."""
    count = len(video.index_entries)
    if count <= video.frames:
        return None
    time_base = video.time_base
    if seconds is None or time_base is None:
        return 0
    length = seconds - max(video.start_time or 0, 0) * time_base
    if any(abs(span * rate - count) <= _COUNT_WITHIN for span in (seconds, length)):
        return count
    # Below 2**63 for any believed duration and 32-bit rate, as the probe's own count.
    return max(0, round(length * rate))
