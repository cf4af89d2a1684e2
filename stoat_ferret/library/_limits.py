"""The caps FFmpeg is held to while it opens a file: frame size and stream count.

Both the probe and the thumbnails open a file through
``_input.BoundedInput.open``, and ``av.open`` runs FFmpeg's stream probe
(``avformat_find_stream_info``), which decodes a frame of every stream whose
parameters the header did not give, and keeps every stream's decoder open
until it is done. Uncapped, a 2 MB MOV claiming one 16000x16000 16-bit RGBA
PNG frame made it fill 2 GB (2.3 to 6.5 s), and a Matroska file of 1,000 tiny
H.264 streams cost 834 MiB. So:

- :data:`MAX_PIXELS` goes to FFmpeg as the codec option ``max_pixels``
  (:data:`DECODER_OPTIONS`, ``av.open``'s ``options``: PyAV 18.1 hands them to
  the format context, which ignores them, and, for each stream that exists
  when the stream probe starts, to the decoder FFmpeg opens for it). That
  decoder refuses a larger frame at once; the stream then has no size
  (FFmpeg drops the one the container claimed) or the one its header gave.
  The probe describes such a video with the size its header gave, or
  without one (as one FFmpeg could decode no frame of); a size known to be
  over the cap is not decoded for a rotation or a thumbnail
  (:func:`frame_size_refusal`); and the frames decoded after the open (the
  rotation's keyframe, the thumbnail's frame) get the same ``max_pixels``,
  so a frame of unknown size is refused when it turns out too large.
- :data:`MAX_STREAMS` is FFmpeg's format option ``max_streams`` (its default
  is 1,000). Past it the MP4/MOV demuxer fails ("Cannot allocate memory"), so
  the probe refuses the file; Matroska and MPEG-TS keep the first
  :data:`MAX_STREAMS` streams (the counts stop there; Matroska's attachments,
  such as a subtitle's fonts, come after its tracks and count too).

What the caps leave open. FFmpeg gives the caller's options only to the
streams that exist when its stream probe starts (``orig_nb_streams`` in
``libavformat/demux.c``: "new streams might appear, no options for those").
A stream it finds while reading packets (every stream of MPEG-PS and FLV,
and of an MPEG-TS whose program table comes after what its header reads) is
decoded uncapped, up to FFmpeg's own limit of about 16000x16000: the probe
refuses the frame size afterwards, once the memory was spent (an 8192x8192
H.264 frame in MPEG-PS or FLV, or in an MPEG-TS after 6 MB of padding: a
335 MiB peak against 72 MiB capped). And the cap is per stream: a file of
many streams each under it costs their sum (eight 4000x4000 16-bit PNG
streams: 1 GiB). The service probes and makes thumbnails in child
processes under :data:`PROBE_MEMORY_LIMIT`, which bounds a file
(``_probeprocess.py``).
"""

from __future__ import annotations

from typing import Final

MAX_PIXELS: Final = 8192 * 4352
"""The largest frame decoded, width x height: 35,651,584, the most H.264 and
HEVC level 6.2 (and AV1 level 6) allow, which DCI 8K (8192x4320) and 8K UHD
(7680x4320) fit. About 53 MB in 8-bit 4:2:0, 285 MB in 16-bit RGBA."""

MAX_STREAMS: Final = 100
"""The most streams FFmpeg opens in one file. A real file has a few dozen at
most (a Blu-ray remux with every dub and subtitle: about 50); each stream
costs its decoder's state during the stream probe (about 0.8 MiB for H.264)."""

DECODER_OPTIONS: Final = {"max_pixels": str(MAX_PIXELS)}
"""FFmpeg codec options for every decoder the library opens."""


def frame_size_refusal(width: int, height: int) -> str | None:
    """Why a video stream of this frame size (as FFmpeg's stream probe left
    it) is not decoded; None if it may be.

    An unknown size (0: no frame decoded in what the stream probe read, or
    one its decoder refused) may be: the decoder is capped all the same.
    """
    if width and height and width * height > MAX_PIXELS:
        return f"a {width}x{height} frame is larger than {MAX_PIXELS} pixels"
    return None


MAX_DEADLINE: Final = 86_400.0
"""The longest CPU budget a probe may be given: a day."""

CHILD_AGE_SECONDS: Final = 600.0
"""A probe child started longer ago is replaced at its next file, however
busy: one a hostile file took over keeps the files of ten minutes at most."""

PROBE_DEADLINE: Final = 30.0
"""CPU seconds a probe process may spend on one file before it is ended
(``_probeprocess.py``; four times as many seconds of wall-clock time are a
backstop, ``WALL_FACTOR``). A probe reads a file's header and a few packets, at most 64 MiB,
and decodes at most a keyframe: milliseconds of CPU. More is FFmpeg stuck in a
hostile file (a Matroska file of 60,000 tags takes it 25 s, and the time
grows faster than the square of their number)."""

PROBE_MEMORY_LIMIT: Final = 2 * 1024 * 1024 * 1024
"""A probe process's address space (``RLIMIT_AS``), in bytes: 2 GiB. A child
that probed a small clip peaked at 145 MiB (``VmPeak``: Python, PyAV,
FFmpeg's libraries); the limit leaves room for several frames of the largest
size :data:`MAX_PIXELS` allows (FFmpeg's stream probe may decode a frame of
each stream, with the decoder's own threads), and bounds what the caps above
cannot (many streams, streams found late)."""
