"""Frames in and out: image sequences and stills (OpenImageIO) and movies (PyAV).

``open_source(path, frames)`` and ``open_sink(path, like, fps)`` pick the reader or writer from the
extension; both stream one frame at a time, so memory stays flat whatever the clip's length.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from .frames import Frame, FrameFormat
from .movie import MOVIE_EXTENSIONS, MovieSink, MovieSource
from .sequence import (
    ImageSequenceSink,
    ImageSequenceSource,
    frame_paths,
    parse_frames,
    parse_pattern,
    read_frame,
    write_frame,
)

__all__ = [
    "Frame",
    "FrameFormat",
    "Source",
    "Sink",
    "ImageSequenceSource",
    "ImageSequenceSink",
    "MovieSource",
    "MovieSink",
    "open_source",
    "open_sink",
    "is_movie",
    "parse_frames",
    "parse_pattern",
    "read_frame",
    "write_frame",
    "output_paths",
]


@runtime_checkable
class Source(Protocol):
    """Where frames come from: an image sequence, a still or a movie."""

    kind: str
    frame_numbers: list[int]

    @property
    def fps(self) -> float: ...

    @property
    def format(self) -> FrameFormat: ...

    @property
    def is_float(self) -> bool: ...

    def read(self, number: int, codes: bool = False) -> Frame:
        """Frame ``number``; ``codes``: keep integer codes where the reader can (see ``facefix.io.frames``)."""
        ...

    def path_for(self, number: int) -> str: ...

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Where frames go. ``is_done(n)`` says whether frame ``n`` is already written (for resuming)."""

    kind: str

    def write(self, frame: Frame) -> None: ...

    def path_for(self, number: int) -> str: ...

    def is_done(self, number: int) -> bool: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def is_movie(path: str | os.PathLike[str]) -> bool:
    """True for movie files (mp4, mov, avi, mkv), judged by the extension."""
    return Path(str(path)).suffix.lower() in MOVIE_EXTENSIONS


def open_source(path: str | os.PathLike[str], frames: str | None = None) -> Source:
    """A movie or image-sequence source for ``path`` (``frames``: a FrameSet string, or None for all)."""
    if is_movie(path):
        return MovieSource(path, frames)
    return ImageSequenceSource(path, frames)


def open_sink(
    path: str | os.PathLike[str],
    like: FrameFormat | None,
    fps: float,
    codec: str = "auto",
    audio_from: str | os.PathLike[str] | None = None,
) -> Sink:
    """A movie or image-sequence sink for ``path``; ``like`` is the source's format (for sequences)."""
    if is_movie(path):
        return MovieSink(path, fps, codec=codec, audio_from=audio_from)
    return ImageSequenceSink(path, like, fps=fps)


def output_paths(path: str | os.PathLike[str], numbers: Iterable[int]) -> list[str]:
    """The files a sink for ``path`` would write for frames ``numbers`` (a movie or a still: the one file)."""
    if is_movie(path):
        return [str(path)]
    seq = parse_pattern(str(path))
    if seq is None:
        return [str(path)]
    path_of = frame_paths(seq)
    return [path_of(n) for n in numbers]
