"""Movies (mp4, mov, avi, mkv) through PyAV.

Convention: the first decoded frame is frame 0. Pixels are float32 (H, W, 3) RGB in [0, 1],
display-referred as the movie holds them (decoded through rgb48 when the stream has more than 8 bits
per sample, else rgb24; the YUV matrix is the stream's own tag, ITU-R BT.601 when untagged).
Written movies are tagged BT.709 (limited range), except MJPEG (BT.601, full range), as JPEG defines.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

from ..errors import InputError, OutputError, SettingsError
from .atomic import atomic_path
from .frames import Frame, FrameFormat
from .sequence import parse_frames

__all__ = ["MovieSource", "MovieSink", "MOVIE_EXTENSIONS", "CODECS", "Codec", "fps_fraction", "resolve_codec"]

MOVIE_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".avi", ".mkv")


@dataclass(frozen=True)
class Codec:
    """An encoder and how we drive it: pixel format, options and the colour tags it gets."""

    encoder: str
    pix_fmt: str
    options: Mapping[str, str]
    bits: int
    colorspace: int = Colorspace.ITU709.value
    color_range: int = ColorRange.MPEG.value


CODECS: Mapping[str, Codec] = {
    "h264": Codec("libx264", "yuv420p", {"crf": "16", "preset": "medium"}, 8),
    "h264-10": Codec("libx264", "yuv420p10le", {"crf": "16", "preset": "medium"}, 10),
    "h265": Codec("libx265", "yuv420p10le", {"crf": "18", "preset": "medium", "x265-params": "log-level=error"}, 10),
    "prores": Codec("prores_ks", "yuv422p10le", {"profile": "3", "vendor": "apl0"}, 10),  # ProRes 422 HQ
    "dnxhr": Codec("dnxhd", "yuv422p10le", {"profile": "dnxhr_hqx"}, 10),
    "mjpeg": Codec("mjpeg", "yuvj420p", {"q:v": "2"}, 8, Colorspace.ITU601.value, ColorRange.JPEG.value),
    "ffv1": Codec("ffv1", "yuv444p10le", {"level": "3"}, 10),
}
_ALIASES = {"prores_hq": "prores", "prores422": "prores", "hevc": "h265", "x264": "h264", "jpeg": "mjpeg"}
_DEFAULT_CODEC = {".mov": "prores", ".mp4": "h264", ".mkv": "h264", ".avi": "mjpeg"}
# Forward gaps shorter than this are decoded through rather than sought over.
_SEEK_MIN_GAP = 48


def fps_fraction(fps: float) -> Fraction:
    """An exact rate for ``fps``: NTSC rates (23.976, 29.97, 59.94) become n*1000/1001."""
    if fps <= 0:
        raise SettingsError(f"--fps must be positive, got {fps}")
    for base in (24, 30, 48, 60, 120):
        if abs(fps - base * 1000 / 1001) < 5e-3:
            return Fraction(base * 1000, 1001)
    return Fraction(fps).limit_denominator(1000)


def _ffmpeg_message(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


# ------------------------------------------------------------------------------------------------ source


class MovieSource:
    """Frames of a movie, decoded forward one at a time (nothing cached).

    ``frames`` selects frames (FrameSet string, frame 0 = first decoded frame). Jumps backward or far
    forward seek to a keyframe only when the stream has a constant frame rate (frame index = pts * fps
    is then exact); otherwise the movie is decoded again from the start.
    """

    kind = "movie"

    def __init__(self, path: str | os.PathLike[str], frames: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"file not found: {self.path}")
        self._container: Any
        self._decoded: Iterator[Any] | None = None
        self._next = 0  # index of the frame the decoder yields next
        self._open()
        stream = self._stream
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate else 24.0
        self.has_audio = len(self._container.streams.audio) > 0
        self.frame_count = self._count_frames()
        if self.frame_count == 0:
            raise InputError(f"no frames in movie {self.path}")
        if frames is None:
            self.frame_numbers = list(range(self.frame_count))
        else:
            self.frame_numbers = parse_frames(frames)
            outside = [n for n in self.frame_numbers if n < 0 or n >= self.frame_count]
            if outside:
                raise InputError(
                    f"frame {outside[0]} is missing: {self.path} has frames 0-{self.frame_count - 1}"
                )
        self._can_seek = bool(
            stream.average_rate and stream.base_rate and stream.average_rate == stream.base_rate
        )
        pix_fmt = stream.codec_context.pix_fmt or "yuv420p"
        try:
            depth = max(c.bits for c in av.VideoFormat(pix_fmt).components)
        except (ValueError, TypeError):
            depth = 8
        self._rgb_format = "rgb48le" if depth > 8 else "rgb24"
        self.format = FrameFormat(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            channel_names=("R", "G", "B"),
            pixel_type="uint16" if depth > 8 else "uint8",
            bits_per_sample=int(depth),
            attributes={
                "codec": stream.codec_context.name,
                "pix_fmt": pix_fmt,
                "fps": self.fps,
                "container": self._container.format.name,
            },
            file_format="movie",
        )

    def _open(self) -> None:
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as err:
            raise InputError(f"cannot read movie {self.path}: {_ffmpeg_message(err)}") from err
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"no video stream in {self.path}")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._decoded = None
        self._pending: Any = None
        self._next = 0

    def _count_frames(self) -> int:
        if self._stream.frames > 0:
            return int(self._stream.frames)
        # Containers without a frame count (mkv, some avi): count packets; cheap, nothing decoded.
        try:
            with av.open(str(self.path)) as probe:
                vs = probe.streams.video[0]
                return sum(1 for p in probe.demux(vs) if p.size > 0)
        except (av.error.FFmpegError, OSError) as err:
            raise InputError(f"cannot read movie {self.path}: {_ffmpeg_message(err)}") from err

    @property
    def is_float(self) -> bool:
        return False

    def path_for(self, number: int) -> str:
        return str(self.path)

    def _frame_index(self, frame: Any) -> int | None:
        if frame.pts is None or frame.time_base is None:
            return None
        start = self._stream.start_time or 0
        return int(round(float((frame.pts - start) * frame.time_base) * self.fps))

    def _seek_to(self, number: int) -> None:
        """Put the decoder at or before frame ``number``."""
        if self._can_seek and number > 0:
            stream = self._stream
            start = stream.start_time or 0
            target = start + int(Fraction(number) / Fraction(self.fps).limit_denominator(100000) / stream.time_base)
            try:
                self._container.seek(target, stream=stream, backward=True, any_frame=False)
                self._decoded = iter(self._container.decode(stream))
                first = next(self._decoded)
                index = self._frame_index(first)
                if index is not None and index <= number:
                    self._pending = first
                    self._next = index
                    return
            except (av.error.FFmpegError, StopIteration):
                pass
        self._container.close()
        self._open()

    def read(self, number: int, codes: bool = False) -> Frame:
        """Frame ``number`` as float32 (``codes`` is accepted for the Source protocol: a movie's decoded
        RGB is a conversion of its YUV, not the stored codes, so it is always normalised)."""
        number = int(number)
        if number < 0 or number >= self.frame_count:
            raise InputError(f"frame {number} is missing: {self.path} has frames 0-{self.frame_count - 1}")
        if number < self._next or (self._can_seek and number - self._next > _SEEK_MIN_GAP):
            self._seek_to(number)
        if self._decoded is None:
            self._decoded = iter(self._container.decode(self._stream))
        try:
            while True:
                if self._pending is not None:
                    frame, self._pending = self._pending, None
                else:
                    frame = next(self._decoded)
                index = self._next
                self._next += 1
                if index == number:
                    break
        except StopIteration:
            raise InputError(f"frame {number} is missing: {self.path} ended after {self._next} frames") from None
        except av.error.FFmpegError as err:
            raise InputError(f"corrupt movie {self.path} at frame {number}: {_ffmpeg_message(err)}") from err
        rgb = frame.to_ndarray(format=self._rgb_format)
        scale = 65535.0 if self._rgb_format == "rgb48le" else 255.0
        pixels = (rgb.astype(np.float32) / np.float32(scale)).astype(np.float32)
        return Frame(number=number, pixels=pixels, format=self.format)

    def __iter__(self) -> Iterator[Frame]:
        for n in self.frame_numbers:
            yield self.read(n)

    def __len__(self) -> int:
        return len(self.frame_numbers)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> MovieSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -------------------------------------------------------------------------------------------------- sink


def resolve_codec(path: Path, codec: str) -> Codec:
    name = codec.lower()
    if name == "auto":
        name = _DEFAULT_CODEC[path.suffix.lower()]
    name = _ALIASES.get(name, name)
    if name not in CODECS:
        raise SettingsError(f"--codec {codec!r} is unknown; use auto or one of {', '.join(CODECS)}")
    return CODECS[name]


class MovieSink:
    """Encodes frames into a movie; the file appears only when ``close()`` succeeds.

    Frames are written in the order given (their numbers are not used for timing). Float RGB is
    clamped to [0, 1] and handed to the encoder as rgb48 (16 bits) for >8-bit codecs, else rgb24.
    With ``audio_from``, that file's first audio stream is copied packet for packet (no re-encode),
    starting ``audio_start_s`` seconds into it and cut at the end of the video. Resuming is not
    possible: ``is_done()`` is always False.
    """

    kind = "movie"

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        codec: str = "auto",
        audio_from: str | os.PathLike[str] | None = None,
        *,
        audio_start_s: float = 0.0,
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in MOVIE_EXTENSIONS:
            raise OutputError(
                f"cannot write {self.path}: unknown movie extension; use one of {', '.join(MOVIE_EXTENSIONS)}"
            )
        self.codec = resolve_codec(self.path, codec)
        self.rate = fps_fraction(float(fps))
        self.fps = float(self.rate)
        self.audio_from = Path(audio_from) if audio_from is not None else None
        if self.audio_from is not None and not self.audio_from.is_file():
            raise InputError(f"file not found: {self.audio_from} (--audio-from)")
        self.audio_start_s = float(audio_start_s)
        self._atomic = atomic_path(self.path)
        self._tmp: Path = self._atomic.__enter__()  # raises OutputError for a bad folder
        self._container: Any = None
        self._video: Any = None
        self._audio_in: Any = None
        self._audio_out: Any = None
        self._audio_packets: Iterator[Any] | None = None
        self._audio_next: Any = None
        self._audio_offset = 0
        self._count = 0
        self._size: tuple[int, int] | None = None
        self._finished = False

    def path_for(self, number: int) -> str:
        return str(self.path)

    def is_done(self, number: int) -> bool:
        return False

    def _start(self, width: int, height: int) -> None:
        sub_w = 2 if self.codec.pix_fmt.startswith(("yuv420", "yuvj420", "yuv422")) else 1
        sub_h = 2 if self.codec.pix_fmt.startswith(("yuv420", "yuvj420")) else 1
        if width % sub_w or height % sub_h:
            raise OutputError(
                f"cannot write {self.path}: {self.codec.pix_fmt} needs even sizes, got {width}x{height}"
            )
        try:
            self._container = av.open(str(self._tmp), mode="w", format=_muxer_for(self.path))
            video = self._container.add_stream(self.codec.encoder, rate=self.rate)
            video.width, video.height = width, height
            video.pix_fmt = self.codec.pix_fmt
            video.options = dict(self.codec.options)
            cc = video.codec_context
            cc.colorspace = self.codec.colorspace
            cc.color_range = self.codec.color_range
            if self.codec.colorspace == Colorspace.ITU709.value:
                cc.color_primaries = 1
                cc.color_trc = 1
            self._video = video
            if self.audio_from is not None:
                self._start_audio()
        except (av.error.FFmpegError, ValueError) as err:
            raise OutputError(f"cannot write {self.path}: {_ffmpeg_message(err)}") from err
        self._size = (width, height)

    def _start_audio(self) -> None:
        try:
            self._audio_in = av.open(str(self.audio_from))
        except (av.error.FFmpegError, OSError) as err:
            raise InputError(f"cannot read audio from {self.audio_from}: {_ffmpeg_message(err)}") from err
        if not self._audio_in.streams.audio:
            self._audio_in.close()
            self._audio_in = None
            return
        in_stream = self._audio_in.streams.audio[0]
        self._audio_out = self._container.add_stream_from_template(in_stream)
        tb = in_stream.time_base
        self._audio_offset = (in_stream.start_time or 0) + int(round(self.audio_start_s / tb))
        self._audio_packets = iter(self._audio_in.demux(in_stream))

    def _mux_audio_until(self, seconds: float | None) -> None:
        """Copy audio packets that start before ``seconds`` of output time (None: to the video end)."""
        if self._audio_packets is None:
            return
        end = float(Fraction(self._count) / self.rate)
        limit = end if seconds is None else min(seconds, end)
        while True:
            pkt = self._audio_next
            if pkt is None:
                pkt = next(self._audio_packets, None)
                if pkt is None:
                    self._audio_packets = None
                    return
                if pkt.dts is None or pkt.pts is None:
                    continue  # the demuxer's final empty packet
                if self.audio_start_s > 0 and pkt.pts + (pkt.duration or 0) <= self._audio_offset:
                    continue  # before the start of the clip (from 0, encoder priming is kept)
                pkt.pts -= self._audio_offset
                pkt.dts -= self._audio_offset
            if float(pkt.pts * pkt.time_base) >= limit:
                self._audio_next = pkt
                if seconds is None:
                    self._audio_packets = None  # past the end of the video: the rest is dropped
                return
            self._audio_next = None
            pkt.stream = self._audio_out
            self._container.mux(pkt)

    def write(self, frame: Frame) -> None:
        """Encode one frame; on any error the movie is aborted (nothing is left on disk)."""
        try:
            self._write(frame)
        except BaseException:
            self.abort()
            raise

    def _write(self, frame: Frame) -> None:
        if self._finished:
            raise OutputError(f"cannot write frame {frame.number} to {self.path}: the movie is closed")
        h, w = frame.pixels.shape[:2]
        if self._size is None:
            self._start(w, h)
        elif self._size != (w, h):
            raise OutputError(
                f"cannot write frame {frame.number} to {self.path}: size {w}x{h} differs from "
                f"{self._size[0]}x{self._size[1]}"
            )
        rgb = np.nan_to_num(frame.unit_pixels()[..., :3], nan=0.0, posinf=1.0, neginf=0.0)  # codes too
        rgb = np.clip(rgb, 0.0, 1.0)
        if self.codec.bits > 8:
            vf = av.VideoFrame.from_ndarray(np.rint(rgb * 65535.0).astype(np.uint16), format="rgb48le")
        else:
            vf = av.VideoFrame.from_ndarray(np.rint(rgb * 255.0).astype(np.uint8), format="rgb24")
        try:
            vf = vf.reformat(
                format=self.codec.pix_fmt,
                src_colorspace=self.codec.colorspace,
                dst_colorspace=self.codec.colorspace,
                src_color_range=ColorRange.JPEG,
                dst_color_range=self.codec.color_range,
            )
            vf.pts = self._count
            self._count += 1
            for packet in self._video.encode(vf):
                self._mux_audio_until(float(packet.pts * packet.time_base) if packet.pts is not None else None)
                self._container.mux(packet)
        except av.error.FFmpegError as err:
            raise OutputError(f"cannot write frame {frame.number} to {self.path}: {_ffmpeg_message(err)}") from err

    def close(self) -> None:
        """Finish the movie and move it into place; on any error nothing is left behind."""
        if self._finished:
            return
        try:
            if self._container is None:
                raise OutputError(f"cannot write {self.path}: no frames were written")
            try:
                for packet in self._video.encode():
                    self._container.mux(packet)
                self._mux_audio_until(None)
                self._container.close()
                self._container = None
            except av.error.FFmpegError as err:
                raise OutputError(f"cannot write {self.path}: {_ffmpeg_message(err)}") from err
        except BaseException:
            self.abort()
            raise
        self._close_audio_source()
        self._finished = True
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop the movie being written: no output, no temporary file."""
        if self._finished:
            return
        self._finished = True
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        self._close_audio_source()
        err = OutputError(f"writing {self.path} was aborted")
        with contextlib.suppress(OutputError):
            self._atomic.__exit__(OutputError, err, None)

    def _close_audio_source(self) -> None:
        if self._audio_in is not None:
            with contextlib.suppress(Exception):
                self._audio_in.close()
            self._audio_in = None

    def __enter__(self) -> MovieSink:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # Never leave a half-written temporary file behind when close() was not reached.
        with contextlib.suppress(Exception):
            self.abort()


def _muxer_for(path: Path) -> str:
    return {".mp4": "mp4", ".mov": "mov", ".avi": "avi", ".mkv": "matroska"}[path.suffix.lower()]
