"""probe_video: what it reports for real clips, and how it refuses everything else."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
import pytest

from stoat_ferret.library import ProbeError, _probe, probe_video
from tests.library.conftest import CLIP_SPECS
from tests.library.support import FifoWatch, watched_fifo
from tests.videos import copy_video, make_video, write_corrupt_video, write_truncated_copy

if TYPE_CHECKING:
    from pathlib import Path

    from tests.videos import EncodedVideo

MiB = 1024 * 1024


@pytest.mark.parametrize("name", sorted(CLIP_SPECS))
def test_probe_reports_what_was_encoded(clips: dict[str, EncodedVideo], name: str) -> None:
    """Size, rate, codecs, duration and frame count match the encoder's output."""
    clip = clips[name]

    probe = probe_video(clip.path)

    assert (probe.width, probe.height) == (clip.width, clip.height)
    assert probe.frame_rate == clip.rate
    assert probe.video_codec == clip.video_codec
    assert probe.audio_codec == clip.audio_codec
    assert probe.duration_seconds == pytest.approx(clip.duration_seconds, abs=0.1)
    assert probe.duration_frames == clip.frames


def test_codec_names_are_not_decoder_names(clips: dict[str, EncodedVideo]) -> None:
    """AV1 is decoded by libdav1d and VP9 may be by libvpx, but the names stay av1 and vp9."""
    names = {probe_video(clips[name].path).video_codec for name in ("av1.mp4", "vp9_opus.webm")}

    assert names == {"av1", "vp9"}


def test_accepts_a_path_object_and_a_str(clip: EncodedVideo) -> None:
    """Both spellings of a path give the same probe."""
    assert probe_video(clip.path) == probe_video(str(clip.path))


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed")
@pytest.mark.parametrize("name", sorted(CLIP_SPECS))
def test_probe_matches_ffprobe(clips: dict[str, EncodedVideo], name: str) -> None:
    """Every field agrees with ffprobe's JSON for the same file."""
    path = clips[name].path
    report = _ffprobe(path)
    video = next(s for s in report["streams"] if s["codec_type"] == "video")
    audio = [s for s in report["streams"] if s["codec_type"] == "audio"]

    probe = probe_video(path)

    assert (probe.width, probe.height) == (video["width"], video["height"])
    assert probe.frame_rate in {
        Fraction(video["r_frame_rate"]),
        Fraction(video["avg_frame_rate"]),
    }
    assert probe.video_codec == video["codec_name"]
    assert probe.audio_codec == (audio[0]["codec_name"] if audio else None)
    durations = [float(d) for d in (report["format"].get("duration"), video.get("duration")) if d]
    assert probe.duration_seconds is not None
    assert min(abs(probe.duration_seconds - d) for d in durations) <= 0.1
    if "nb_frames" in video:
        assert probe.duration_frames == int(video["nb_frames"])


def _ffprobe(path: Path) -> dict[str, Any]:
    command = ["ffprobe", "-v", "error", "-of", "json", "-show_streams", "-show_format"]
    output = subprocess.run([*command, str(path)], capture_output=True, check=True, text=True)
    report: dict[str, Any] = json.loads(output.stdout)
    return report


def test_other_rates_and_sizes(tmp_path: Path) -> None:
    """A 30000/1001 clip of 96x64 comes back with that exact fraction and size."""
    clip = make_video(tmp_path / "ntsc.mp4", width=96, height=64, rate=Fraction(30000, 1001))

    probe = probe_video(clip.path)

    assert probe.frame_rate == Fraction(30000, 1001)
    assert (probe.width, probe.height) == (96, 64)
    assert probe.duration_frames == clip.frames


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not a readable media file"),
        (b"these are some words, not a video\n" * 20, "not a readable media file"),
    ],
    ids=["zero-bytes", "text"],
)
def test_non_videos_raise_probe_error(tmp_path: Path, content: bytes, reason: str) -> None:
    """An empty file and a text file named .mp4 are refused with a readable message."""
    path = tmp_path / "fake.mp4"
    path.write_bytes(content)

    with pytest.raises(ProbeError) as caught:
        probe_video(path)

    assert caught.value.path == str(path)
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}: ")


def test_corrupt_mp4_raises_probe_error(tmp_path: Path) -> None:
    """An MP4 header followed by garbage is refused."""
    path = write_corrupt_video(tmp_path / "corrupt.mp4")

    with pytest.raises(ProbeError, match="not a readable media file"):
        probe_video(path)


def test_truncated_mp4_raises_probe_error(clip: EncodedVideo, tmp_path: Path) -> None:
    """An MP4 cut before its index (moov) is refused."""
    path = write_truncated_copy(clip.path, tmp_path / "cut.mp4", keep=clip.size_bytes // 3)

    with pytest.raises(ProbeError, match="not a readable media file"):
        probe_video(path)


def test_audio_only_file_raises_probe_error(tmp_path: Path) -> None:
    """A file with sound and no picture has no video stream."""
    path = tmp_path / "song.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=48_000)
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame(format="s16", layout="stereo", samples=1024)
        frame.planes[0].update(bytes(frame.planes[0].buffer_size))
        frame.sample_rate = 48_000
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))

    with pytest.raises(ProbeError, match="no video stream"):
        probe_video(path)


def test_missing_file_raises_probe_error(tmp_path: Path) -> None:
    """A path that does not exist names the OS error."""
    with pytest.raises(ProbeError, match="No such file or directory"):
        probe_video(tmp_path / "gone.mp4")


def test_directory_raises_probe_error(tmp_path: Path) -> None:
    """A directory is not a regular file."""
    (tmp_path / "folder.mp4").mkdir()

    with pytest.raises(ProbeError, match="not a regular file"):
        probe_video(tmp_path / "folder.mp4")


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO named like a video is refused at once instead of waiting for a writer."""
    os.mkfifo(tmp_path / "pipe.mp4")

    with pytest.raises(ProbeError, match="not a regular file"):
        probe_video(tmp_path / "pipe.mp4")


def test_a_playlist_naming_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    """An ffconcat text named .mp4 is not followed to the FIFO it names.

    FFmpeg recognises its concat demuxer from the content, and that demuxer
    would open the FIFO and wait for a writer for ever, in a thread no
    cancellation reaches. The probe only lets FFmpeg use video containers.
    """
    playlist = tmp_path / "list.mp4"
    playlist.write_text("ffconcat version 1.0\nfile pipe\n")

    with watched_fifo(tmp_path / "pipe") as fifo, pytest.raises(ProbeError) as caught:
        probe_video(playlist)

    assert caught.value.reason == (
        "not a readable media file (Invalid argument: most often not a video container)"
    )
    assert not fifo.opened


def test_a_playlist_naming_a_video_elsewhere_is_refused(clip: EncodedVideo, tmp_path: Path) -> None:
    """An ffconcat text cannot make the probe describe a file outside its directory."""
    (tmp_path / "elsewhere").mkdir()
    copy_video(clip, tmp_path / "elsewhere" / "real.mp4")
    media = tmp_path / "media"
    media.mkdir()
    (media / "out").symlink_to(tmp_path / "elsewhere")
    playlist = media / "list.mp4"
    playlist.write_text("ffconcat version 1.0\nfile out/real.mp4\n")

    with pytest.raises(ProbeError, match="not a readable media file"):
        probe_video(playlist)


def test_a_symlink_in_the_place_of_the_file_is_not_followed(
    clip: EncodedVideo, tmp_path: Path
) -> None:
    """The walk records real files only; a link put in a file's place after the
    walk, to a video elsewhere, is refused and the other video is not read."""
    (tmp_path / "elsewhere").mkdir()
    elsewhere = copy_video(clip, tmp_path / "elsewhere" / "other.mp4").path
    (tmp_path / "clip.mp4").symlink_to(elsewhere)

    with pytest.raises(ProbeError, match="not a regular file"):
        probe_video(tmp_path / "clip.mp4")


def test_ffmpeg_reads_the_file_the_probe_checked_not_the_name(
    clip: EncodedVideo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Swapped for a FIFO right after the probe has checked it, the file is
    still what FFmpeg reads: the probe hands it the checked descriptor."""
    video = copy_video(clip, tmp_path / "clip.mp4").path
    real_fstat = os.fstat
    watches: list[FifoWatch] = []
    with contextlib.ExitStack() as fifos:

        def fstat_then_swap(fd: int) -> os.stat_result:
            checked = real_fstat(fd)
            if not watches:  # the first check only
                video.unlink()
                watches.append(fifos.enter_context(watched_fifo(video)))  # never blocks a reader
            return checked

        monkeypatch.setattr(os, "fstat", fstat_then_swap)

        probe = probe_video(video)

    assert probe.video_codec == clip.video_codec
    assert [watch.opened for watch in watches] == [False]


class _ReadCounter:
    """Counts the bytes FFmpeg pulls through the probe's reader."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.total = 0
        original = _probe._BoundedReader.read

        def counting_read(reader: _probe._BoundedReader, size: int) -> bytes:
            data = original(reader, size)
            self.total += len(data)
            return data

        monkeypatch.setattr(_probe._BoundedReader, "read", counting_read)


def test_huge_sparse_tail_is_not_read(
    clip: EncodedVideo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MP4 followed by a 64 GiB hole is described after reading only its head."""
    video = copy_video(clip, tmp_path / "huge.mp4")
    os.truncate(video.path, 64 * 1024 * MiB)
    counter = _ReadCounter(monkeypatch)

    probe = probe_video(video.path)

    assert (probe.width, probe.height, probe.video_codec) == (64, 48, "h264")
    assert probe.duration_frames == clip.frames
    assert counter.total < MiB


def test_read_limit_bounds_a_demuxer_that_scans_to_the_end(
    clips: dict[str, EncodedVideo], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MPEG-PS followed by 64 GiB of zeros: FFmpeg would scan it all; the probe stops."""
    video = copy_video(clips["mpeg2_mp2.mpg"], tmp_path / "huge.mpg")
    os.truncate(video.path, 64 * 1024 * MiB)
    counter = _ReadCounter(monkeypatch)

    probe = probe_video(video.path, read_limit=2 * MiB)

    assert probe.video_codec == "mpeg2video"
    assert counter.total <= 2 * MiB


def test_a_limit_hit_before_any_stream_is_reported(
    clip: EncodedVideo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the limit runs out before FFmpeg finds a stream, the message says so."""
    path = tmp_path / "late.mp4"
    path.write_bytes(clip.path.read_bytes())
    counter = _ReadCounter(monkeypatch)

    with pytest.raises(ProbeError, match="no media stream found in the first 100 bytes"):
        probe_video(path, read_limit=100)

    assert counter.total == 100


def test_files_within_the_limit_use_ffmpeg_file_io(
    clip: EncodedVideo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file no bigger than the limit cannot be over-read, so no Python reader is used."""
    counter = _ReadCounter(monkeypatch)

    probe = probe_video(clip.path, read_limit=clip.size_bytes)

    assert probe.video_codec == "h264"
    assert counter.total == 0


@pytest.mark.parametrize("name", ["a:b.mp4", "100% #1 ?.mp4", "concat:x.mp4", "file:y.mp4"])
def test_names_ffmpeg_could_take_for_urls(
    clip: EncodedVideo, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Colons, percent signs and protocol prefixes are plain characters, even in relative paths."""
    copy_video(clip, tmp_path / name)
    monkeypatch.chdir(tmp_path)

    assert probe_video(name).video_codec == "h264"


def test_parse_clock_reads_matroska_durations() -> None:
    """The Matroska DURATION tag is HH:MM:SS.nnnnnnnnn; anything else is unknown."""
    assert _probe._parse_clock("01:02:03.500000000") == pytest.approx(3723.5)
    assert _probe._parse_clock("00:00:00.000000000") is None
    assert _probe._parse_clock("soon") is None
    assert _probe._parse_clock("1:2") is None
