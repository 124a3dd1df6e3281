"""Frame ranges between Open Job Description and the command line.

OpenJD's range expressions (``1001-1100``, ``1,5,9-12``, ``1001-1100:2``: a step after a colon) split a job's
``Frames`` into task chunks; the command line's ``--frames`` (fileseq: ``1001-1100``, ``1001-1100x2``,
``1,5,9-12``) reads a step after an ``x`` and a colon as something else (fileseq's "staggered" ranges). A
farm task gets OpenJD's syntax; ``frame_list`` reads both and ``frames_arg`` writes a list back in the
syntax both read, so a chunk reaches ``facefix restore --frames`` meaning what OpenJD meant.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import SettingsError

__all__ = ["frame_list", "frames_arg", "openjd_range"]

_OPENJD_PART = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*(?::\s*(-?\d+)\s*)?)?$")


def frame_list(text: str, option: str = "--frames") -> list[int]:
    """The frames of ``text``, in order, without repeats: an OpenJD range expression (a step after ``:``) or
    the command line's syntax (a step after ``x``); a one-line ``SettingsError`` naming ``option`` else."""
    text = str(text).strip()
    if not text:
        raise SettingsError(f"{option}: no frames given")
    if ":" not in text:
        from ..io.sequence import parse_frames

        return list(dict.fromkeys(parse_frames(text, option=option)))
    frames: list[int] = []
    for part in text.split(","):
        m = _OPENJD_PART.match(part)
        if m is None:
            raise SettingsError(f"{option} {text!r} is not a frame range (e.g. 1001-1100, 1001-1100:2, 1,5,9-12)")
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) is not None else start
        step = int(m.group(3)) if m.group(3) is not None else 1
        if step == 0 or (end - start) * step < 0:
            raise SettingsError(f"{option} {part.strip()!r}: the step does not lead from {start} to {end}")
        frames.extend(range(start, end + (1 if step > 0 else -1), step))
    ordered = list(dict.fromkeys(frames))
    if not ordered:
        raise SettingsError(f"{option} {text!r} names no frames")
    return ordered


def _runs(frames: Sequence[int]) -> list[tuple[int, int, int]]:
    """``frames`` (sorted, distinct) as (start, end, step) runs: contiguous runs first, then three or more
    single frames at an equal step as one stepped run."""
    runs: list[tuple[int, int, int]] = []
    for f in frames:
        if runs and runs[-1][2] == 1 and f == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], f, 1)
        else:
            runs.append((f, f, 1))
    out: list[tuple[int, int, int]] = []
    for run in runs:
        if run[0] == run[1] and out and out[-1][0] != out[-1][1] and out[-1][2] > 1 \
                and run[0] - out[-1][1] == out[-1][2]:
            out[-1] = (out[-1][0], run[0], out[-1][2])  # continues a stepped run
            continue
        if run[0] == run[1] and len(out) >= 2 and all(r[0] == r[1] for r in out[-2:]) \
                and run[0] - out[-1][0] == out[-1][0] - out[-2][0]:
            step = run[0] - out[-1][0]
            out[-2:] = [(out[-2][0], run[0], step)]  # three single frames at one step
            continue
        out.append(run)
    return out


def frames_arg(frames: Sequence[int]) -> str:
    """``frames`` as a ``--frames`` value the command line reads (``1001-1010``, ``1001-1019x2``, ``1,5``)."""
    ordered = sorted(set(int(f) for f in frames))
    if not ordered:
        raise SettingsError("--frames: no frames")
    parts = []
    for start, end, step in _runs(ordered):
        parts.append(str(start) if start == end else f"{start}-{end}" + (f"x{step}" if step != 1 else ""))
    return ",".join(parts)


def openjd_range(frames: Sequence[int]) -> str:
    """``frames`` as an OpenJD range expression (``1001-1010``, ``1001-1019:2``, ``1,5``)."""
    return frames_arg(frames).replace("x", ":")
