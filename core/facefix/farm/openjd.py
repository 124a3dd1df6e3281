"""Open Job Description job bundles for a shot list: ``facefix queue SHOTS --export openjd DIR``.

Each shot becomes ``DIR/<shot>/`` with the job template (``install/openjd/facefix-shot.yaml`` of the FaceFix
checkout, or ``--template``), ``parameter_values.yaml`` (the shot's Input, Output, Frames, FramesPerTask,
Args, Tracks, Warm) and ``asset_references.yaml`` (the folders its job reads and writes, for Deadline Cloud's
job attachments): a bundle for ``deadline bundle submit DIR/<shot>``, and ``openjd run`` runs its template.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import FaceFixError, InputError, SettingsError
from ..params import PARAMS
from .queue import Shot, ShotList

__all__ = ["TEMPLATES", "template_path", "shot_args", "export_bundles", "bundle_folder_name", "parameter_args"]

# The templates, in the FaceFix checkout (FaceFix is installed from its checkout, as the README sets it up).
TEMPLATES = Path(__file__).resolve().parents[3] / "install" / "openjd"


def template_path(name: str = "facefix-shot.yaml") -> Path:
    path = TEMPLATES / name
    if not path.is_file():
        raise InputError(f"{path}: the OpenJD template is not there (it is in the FaceFix checkout's install/openjd/; "
                         "give one with --template)")
    return path


def bundle_folder_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "shot"
    return safe


def shot_args(shot: Shot) -> str:
    """The shot's controls and run options as ``facefix restore`` flags (the template's Args). Animated
    controls cannot be given on a command line: a ``SettingsError`` then."""
    words: list[str] = []
    for p in PARAMS:
        if p.name not in shot.values or shot.values[p.name] is None:
            continue
        value = shot.values[p.name]
        if isinstance(value, dict):
            raise SettingsError(f"shot {shot.name}: {p.cli_flag} is animated (keyframes): a farm job takes the "
                                "command line's static values; run it with `facefix queue` instead")
        words += [p.cli_flag, str(getattr(shot.settings, p.name))]
    if shot.matte:
        words += ["--matte", shot.matte]
    if shot.mask:
        words += ["--mask-input", shot.mask]
    if shot.codec and shot.codec != "auto":
        words += ["--codec", shot.codec]
    if shot.model_path:
        words += ["--model-path", shot.model_path]
    if shot.compile:
        words.append("--compile")
    return " ".join(shlex.quote(w) for w in words)


def _frames(shot: Shot) -> list[int]:
    from ..io import open_source
    from .frames import frame_list

    if shot.frames:
        return frame_list(shot.frames)
    src = open_source(shot.input)
    try:
        return list(src.frame_numbers)
    finally:
        src.close()


def _folder_of(path: str) -> str:
    return str(Path(path).parent)


def export_bundles(shots: ShotList, folder: str | os.PathLike[str], *, frames_per_task: int = 10,
                   warm: bool = True, template: str | os.PathLike[str] | None = None) -> list[tuple[str, Path | str]]:
    """Write one job bundle per shot under ``folder``; returns (shot name, bundle folder) per shot written
    and (shot name, error line) per shot that could not be (it is skipped, the others are written)."""
    import yaml

    from ..io import is_movie
    from .frames import openjd_range

    src = Path(template) if template else template_path()
    try:
        template_text = src.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"{src}: cannot read the template ({err.strerror or err})") from None
    if frames_per_task < 1:
        raise SettingsError(f"--frames-per-task {frames_per_task}: at least 1")
    out = Path(folder).expanduser().absolute()
    written: list[tuple[str, Path | str]] = []
    for shot in shots.shots:
        try:
            if shot.error is not None:
                raise SettingsError(shot.error)
            frames = _frames(shot)
            per_task = frames_per_task
            if is_movie(shot.output):  # one file: chunks would each rewrite it
                per_task = max(1, len(frames))
            values: list[dict[str, Any]] = [
                {"name": "Input", "value": shot.input},
                {"name": "Output", "value": shot.output},
                {"name": "Frames", "value": openjd_range(frames)},
                {"name": "FramesPerTask", "value": per_task},
                {"name": "Args", "value": shot_args(shot)},
                {"name": "Tracks", "value": shot.tracks or ""},
                {"name": "Warm", "value": "True" if warm else "False"},
                {"name": "Shot", "value": shot.name},
            ]
            inputs = sorted({_folder_of(p) for p in (shot.input, shot.mask) if p and not is_movie(p)})
            files = sorted(p for p in (shot.tracks, shot.model_path, shot.settings.reference or None,
                                       shot.input if is_movie(shot.input) else None) if p)
            outputs = sorted({_folder_of(p) for p in (shot.output, shot.matte) if p})
            refs = {"assetReferences": {"inputs": {"directories": inputs, "filenames": files},
                                        "outputs": {"directories": outputs}}}
            bundle = out / bundle_folder_name(shot.name)
            bundle.mkdir(parents=True, exist_ok=True)
            (bundle / "template.yaml").write_text(template_text, encoding="utf-8")
            (bundle / "parameter_values.yaml").write_text(
                yaml.safe_dump({"parameterValues": values}, sort_keys=False), encoding="utf-8")
            (bundle / "asset_references.yaml").write_text(yaml.safe_dump(refs, sort_keys=False), encoding="utf-8")
            written.append((shot.name, bundle))
        except FaceFixError as err:
            written.append((shot.name, " ".join(str(err).split())))
        except OSError as err:
            written.append((shot.name, f"cannot write the bundle: {err.strerror or err}"))
    return written


def parameter_args(values: Sequence[dict[str, Any]]) -> list[str]:
    """``openjd run`` arguments (``-p Name=Value``) for a bundle's parameter values."""
    args: list[str] = []
    for v in values:
        args += ["-p", f"{v['name']}={v['value']}"]
    return args
