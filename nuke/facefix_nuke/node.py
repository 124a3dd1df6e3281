"""The FaceFix node in Nuke: Analyse, Render and Load on a FaceFix gizmo, through the FaceFix bridge.

Frames go to the bridge as files: the node's Source (and its Mask input, when connected) is rendered by the
Write nodes inside the gizmo to linear float EXR sequences (``raw``: the working space's values, untouched),
the bridge reads those and writes its result as a float EXR sequence, and the gizmo's inner Read shows it.

Python 3.7+ (Nuke 13 and later); imports nothing of ``facefix`` (the bridge client is loaded by path).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import nuke

from . import install, tracks
from .install import AdapterError

__all__ = ["analyse", "render", "load_tracks", "facefix_nodes", "frame_list", "cache_root", "PREROLL"]

PREROLL = 6  # frames before the range the bridge reads for temporal stabilisation (the core's maximum)
REPAIR_WINDOW = 3  # frames before and after a frame that --deboil / --dewarp read (the core's repair window)
TRACK_KNOB = re.compile(r"^ff_t(\d+)_(box|enable|lm\d|div)$")
DONE_FILE = "facefix-render.json"
PATTERN = "####"


# ------------------------------------------------------------------------------------------ entry points


def analyse(node: nuke.Node) -> None:
    """The Analyse button: track the Source's faces over the frame range into the Tracks tab's knobs."""
    _entry(node, "Analyse", lambda: _analyse(node))


def render(node: nuke.Node, first: int | None = None, last: int | None = None) -> str | None:
    """The Render button (and ``nuke -t``): restore the faces over ``first``..``last`` (default: the frame
    range knob, else the Source's range) and point the inner Read at the result; returns its file pattern.
    Nothing is rendered when the cache already holds this very render."""
    result: list[str] = []
    _entry(node, "Render", lambda: result.append(_render(node, first, last)))
    return result[0] if result else None


def load_tracks(node: nuke.Node) -> None:
    """The Load button: write the FaceTracks file named on the Tracks tab into the track knobs."""
    _entry(node, "Load", lambda: _load(node))


def facefix_nodes(group: nuke.Group | None = None) -> list[nuke.Node]:
    """Every FaceFix node of the script (inside groups too)."""
    return [n for n in nuke.allNodes(group=group or nuke.root(), recurseGroups=True) if n.Class() == "FaceFix"]


def _entry(node: nuke.Node, what: str, work: Callable[[], None]) -> None:
    """Run a button's work: in the GUI, a failure is a message box and a status line; in ``nuke -t`` it
    raises (the farm must see it fail)."""
    try:
        work()
    except Exception as err:
        if not _ours(err):
            raise
        text = str(err)
        _status(node, f"{what}: {'cancelled' if text == 'cancelled' else 'failed: ' + text}")
        if not nuke.GUI:
            raise
        if text != "cancelled":
            nuke.message(f"FaceFix {what} ({node.name()}): {text}")


def _ours(err: BaseException) -> bool:
    if isinstance(err, AdapterError):
        return True
    client = sys.modules.get(install.CLIENT_MODULE)
    return client is not None and isinstance(err, client.BridgeError)


# --------------------------------------------------------------------------------------------- analyse


def _analyse(node: nuke.Node) -> None:
    frames, spec = _frames(node)
    first, last = frames[0], frames[-1]
    height = _source(node).height()
    work = _work_dir(node)
    source = _write(node, "WriteSource", work / "source", "source", first, last)
    output = work / "analysis" / "tracks.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    job = {"kind": "track", "input": source, "output": str(output), "frames": spec,
           "settings": _settings(node, range(first, last + 1))}
    _run_job(node, job, f"FaceFix: analysing {node.name()}")
    try:
        data = json.loads(output.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise AdapterError(f"{output}: the bridge's tracks cannot be read ({err})") from None
    n = _set_tracks(node, data, height, str(output))
    _status(node, f"Analysed {spec}: {n} face track{'' if n == 1 else 's'}")


def _load(node: nuke.Node) -> None:
    path = node["tracks"].value().strip()
    if not path:
        raise AdapterError("name a FaceTracks file on the Tracks tab first")
    try:
        data = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
        tracks.check_facetracks(data, path)
    except (OSError, ValueError) as err:
        raise AdapterError(f"{path}: {err}") from None
    n = _set_tracks(node, data, _source(node).height(), str(Path(path).expanduser().resolve()))
    _status(node, f"Loaded {n} face track{'' if n == 1 else 's'} from {Path(path).name}")


# ---------------------------------------------------------------------------------------------- render


def _render(node: nuke.Node, first: int | None, last: int | None) -> str:
    frames, spec = _frames(node, first, last)
    source_node = _source(node)
    height = source_node.height()
    preroll, lookahead = _frame_window(node, range(frames[0], frames[-1] + 1))
    start = max(frames[0] - preroll, min(source_node.firstFrame(), frames[0]))
    end = min(frames[-1] + lookahead, max(source_node.lastFrame(), frames[-1]))
    work = _work_dir(node)
    source = _write(node, "WriteSource", work / "source", "source", start, end)
    mask = None
    if node.input(1) is not None:
        mask = _write(node, "WriteMask", work / "mask", "mask", start, end)
    settings = _settings(node, range(start, end + 1))
    facetracks = _tracks_from_knobs(node, range(start, end + 1), height)
    job: dict[str, Any] = {"kind": "restore", "input": source, "frames": spec, "settings": settings,
                           "resume": True}
    if facetracks is not None:
        job["tracks"] = facetracks
    if mask is not None:
        job["mask"] = mask
    matte = node["matte"].value().strip() if node.knob("matte") else ""
    if matte:
        job["matte"] = os.path.abspath(os.path.expanduser(matte))
    for name in node["ff_run"].value().split():
        if name in ("frames", "matte"):
            continue
        value = _knob_value(_knob(node, name), [])
        if value not in (None, "", False):
            job[name] = value
    key = _cache_key(node, job, start, end)
    out_dir = cache_root(node) / "renders" / key
    output = str(out_dir / f"facefix.{PATTERN}.exr")
    job["output"] = output
    done = out_dir / DONE_FILE
    if _complete(done, output, frames, job.get("matte")):
        _show(node, output, frames)
        _status(node, f"Rendered {spec} (cached: nothing changed)")
        return output
    out_dir.mkdir(parents=True, exist_ok=True)
    if job.get("matte"):
        Path(job["matte"]).parent.mkdir(parents=True, exist_ok=True)
    final = _run_job(node, job, f"FaceFix: rendering {node.name()}")
    done.write_text(json.dumps({"frames": spec, "key": key, "summary": final.get("summary", "")}, indent=1),
                    encoding="utf-8")
    _show(node, output, frames)
    _status(node, f"Rendered {spec}: {final.get('summary', '')}")
    return output


def _complete(done: Path, output: str, frames: list[int], matte: str | None) -> bool:
    if not done.is_file():
        return False
    patterns = [output] + ([matte] if matte else [])
    return all(os.path.isfile(_frame_file(p, n)) for p in patterns for n in frames)


def _show(node: nuke.Node, output: str, frames: list[int]) -> None:
    node["ff_result"].setValue(output)
    node["ff_first"].setValue(frames[0])
    node["ff_last"].setValue(frames[-1])
    node["ff_rendered"].setValue(True)
    read = node.node("Result") if isinstance(node, nuke.Group) else None
    reload = read.knob("reload") if read is not None else None
    if isinstance(reload, nuke.Script_Knob):
        reload.execute()  # the Read forgets frames it cached from an earlier render


def _cache_key(node: nuke.Node, job: Mapping[str, Any], start: int, end: int) -> str:
    """Everything the render depends on: the frames handed to the bridge (their pixels), the settings, the
    tracks, the frame range, the schema the knobs come from. Equal keys: the same render."""
    digest = hashlib.sha256()
    parts = {k: v for k, v in job.items() if k not in ("input", "mask", "output", "compile")}
    parts["schema"] = node["ff_schema"].value() if node.knob("ff_schema") else ""
    parts["written"] = [start, end]
    digest.update(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    for name in ("input", "mask"):
        if job.get(name):
            for n in range(start, end + 1):
                digest.update(f"{name}:{n}:".encode())
                digest.update(_file_digest(_frame_file(job[name], n)))
    return digest.hexdigest()[:20]


def _file_digest(path: str) -> bytes:
    """A digest of a frame file's image: for an OpenEXR file its image attributes and pixel chunks only (writers
    stamp headers with the time and other metadata that say nothing of the pixels), else all its bytes."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            start = _exr_image_header(f, h)
            if start is None:
                h = hashlib.sha256()
                start = 0
            f.seek(start)
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as err:
        raise AdapterError(f"{path}: cannot be read ({err.strerror or err})") from None
    return h.digest()


EXR_IMAGE_ATTRIBUTES = {"channels", "compression", "dataWindow", "displayWindow", "lineOrder", "pixelAspectRatio",
                        "screenWindowCenter", "screenWindowWidth", "tiles"}


def _exr_image_header(f: Any, h: Any) -> int | None:
    """For a single-part OpenEXR file: feed ``h`` the header attributes that describe the image, and return
    where its pixel chunks begin (after the offset table, whose absolute offsets move with the header's
    length). None for anything else."""
    head = f.read(1 << 16)
    if len(head) < 8 or struct.unpack("<I", head[:4])[0] != 20000630:
        return None
    version = struct.unpack("<I", head[4:8])[0]
    if version & 0x1800:  # deep or multi-part: hashed whole
        return None
    pos = 8
    while True:
        end = head.find(b"\0", pos)
        if end < 0:
            return None
        name = head[pos:end]
        pos = end + 1
        if not name:
            break
        end = head.find(b"\0", pos)
        if end < 0 or end + 5 > len(head):
            return None
        kind = head[pos:end]
        size = struct.unpack("<i", head[end + 1:end + 5])[0]
        pos = end + 5
        if size < 0 or pos + size > len(head):
            return None
        if name.decode("latin-1") in EXR_IMAGE_ATTRIBUTES:
            h.update(name + b"\0" + kind + b"\0" + head[pos:pos + size])
        pos += size
    first = None  # the offset table runs up to the first chunk: the smallest offset in it
    while first is None or pos < first:
        f.seek(pos)
        raw = f.read(8)
        if len(raw) < 8:
            return None
        offset = struct.unpack("<Q", raw)[0]
        if offset <= pos:
            return None
        first = offset if first is None else min(first, offset)
        pos += 8
    return first


# ----------------------------------------------------------------------------------------- the bridge


def _frame_window(node: nuke.Node, frames: range) -> tuple[int, int]:
    """Frames before and after the range that its result reads (the temporal pre-roll plus the repair window
    before it, the repair window after it), as the bridge counts them for the node's controls
    (``Session.preroll`` / ``lookahead``); the core's maxima for the controls that are on where it cannot say."""
    settings = _settings(node, frames)
    settings.pop("upscale", None)  # the window does not depend on it, and the frame query refuses it
    client = install.load_client()
    try:
        got = client.Bridge.ensure(command=install.serve_command()).frame_window(settings)
        return int(got["preroll"]), int(got["lookahead"])
    except client.BridgeError:  # a bridge that cannot say (an older one)
        repair = REPAIR_WINDOW if any(_ever_on(node, n, frames) for n in ("deboil", "dewarp")) else 0
        return (PREROLL if _ever_on(node, "temporal", frames) else 0) + repair, repair


def _ever_on(node: nuke.Node, name: str, frames: range) -> bool:
    """Whether the node's knob ``name`` (if it has one) is above 0 on any of ``frames``."""
    k = node.knob(name)
    if k is None:
        return False
    if k.isAnimated():
        return any(float(k.getValueAt(f)) > 0 for f in frames)
    return float(k.value()) > 0


def _run_job(node: nuke.Node, job: dict[str, Any], title: str) -> dict[str, Any]:
    client = install.load_client()
    bridge = client.Bridge.ensure(command=install.serve_command())
    task = nuke.ProgressTask(title)
    task.setMessage("waiting for the FaceFix bridge")

    percent = [0]

    def on_progress(done: int, total: int) -> None:
        percent[0] = int(100 * done / total) if total else 0
        task.setProgress(percent[0])
        task.setMessage(f"{done} of {total} frames")

    def should_cancel() -> bool:
        task.setProgress(percent[0])  # lets Nuke handle the Cancel button while this waits
        return bool(task.isCancelled())

    job_id = bridge.submit(job)
    final: dict[str, Any] = bridge.wait(job_id, on_progress=on_progress, should_cancel=should_cancel)
    return final  # the progress bar closes when ``task`` goes away, with this call


# -------------------------------------------------------------------------------------------- knobs


def _knob(node: nuke.Node, name: str) -> nuke.Knob:
    k = node.knob(name)
    if k is None:
        raise AdapterError(f"{node.name()} has no knob {name}: is it a FaceFix node of this version? "
                           "(regenerate gizmos/FaceFix.gizmo)")
    return k


def _knob_value(k: nuke.Knob, frames: Any) -> Any:
    """A control's value for the bridge: animated knobs as {"frame": value} over ``frames``."""
    if isinstance(k, nuke.Enumeration_Knob):
        return str(k.value())
    if isinstance(k, nuke.Boolean_Knob):
        return bool(k.value())
    if isinstance(k, nuke.Array_Knob):
        cast: Callable[[Any], Any] = int if isinstance(k, nuke.Int_Knob) else float
        if k.isAnimated():
            return {str(n): cast(k.getValueAt(n, 0)) for n in frames}
        return cast(k.getValue(0))
    return str(k.value())


def _settings(node: nuke.Node, frames: Any) -> dict[str, Any]:
    frames = list(frames)
    return {name: _knob_value(_knob(node, name), frames) for name in node["ff_params"].value().split()}


def _status(node: nuke.Node, text: str) -> None:
    k = node.knob("ff_status")
    if k is not None:
        k.setValue(text)


# ------------------------------------------------------------------------------------------ the tracks


def _track_ids(node: nuke.Node) -> list[int]:
    ids = set()
    for name in node.knobs():
        m = TRACK_KNOB.match(name)
        if m and m.group(2) == "box":
            ids.add(int(m.group(1)))
    return sorted(ids)


def _track_knobs(node: nuke.Node, tid: int) -> list[nuke.Knob]:
    return [_knob(node, f"ff_t{tid}_box")] + [_knob(node, f"ff_t{tid}_lm{i}") for i in range(5)]


def _set_tracks(node: nuke.Node, data: Mapping[str, Any], height: int, file: str | None) -> int:
    """Replace the track knobs with ``data``'s tracks: one key per frame (Nuke's coordinates)."""
    for k in [k for name, k in node.knobs().items() if TRACK_KNOB.match(name)]:
        node.removeKnob(k)
    try:
        analysis = tracks.analysis_of(data, float(height), file)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise AdapterError(f"{file or 'tracks'}: malformed FaceTracks ({type(err).__name__}: {err})") from None
    now = nuke.frame()
    for tid_text, per_frame in sorted(analysis["tracks"].items(), key=lambda kv: int(kv[0])):
        tid = int(tid_text)
        keyed = sorted(int(n) for n in per_frame)
        if not keyed:
            continue
        node.addKnob(nuke.Text_Knob(f"ff_t{tid}_div", f"<b>Track {tid}</b>"))
        enable = nuke.Boolean_Knob(f"ff_t{tid}_enable", "enable")
        enable.setValue(True)
        enable.setTooltip(f"Fix face track {tid}. Animate it to leave the face alone on some frames.")
        node.addKnob(enable)
        box = nuke.BBox_Knob(f"ff_t{tid}_box", "box")
        box.setTooltip("The face's box (x, y, r, t), keyed on every frame by Analyse.")
        node.addKnob(box)
        channels: list[tuple[nuke.Knob, int, int]] = [(box, c, c) for c in range(4)]
        for i, label in enumerate(tracks.LANDMARKS):
            lm = nuke.XY_Knob(f"ff_t{tid}_lm{i}", label)
            lm.setTooltip(f"The {label} (x, y), keyed on every frame by Analyse.")
            node.addKnob(lm)
            channels += [(lm, 0, 4 + 2 * i), (lm, 1, 5 + 2 * i)]
        for k, c, at in channels:  # the 14 values of a frame: box x, y, r, t, then each landmark's x, y
            _key(k, c, {n: per_frame[str(n)][0][at] for n in keyed}, now)
        gaps = [n for n in range(keyed[0], keyed[-1] + 1) if str(n) not in per_frame]
        if gaps:  # the face is missing on some frames inside the track: the enable knob says so
            _key(enable, 0, {n: 0.0 if n in gaps else 1.0 for n in range(keyed[0], keyed[-1] + 1)}, now)
    node["ff_analysis"].setValue(json.dumps(analysis, separators=(",", ":")))
    return len(analysis["tracks"])


def _key(k: nuke.Knob, channel: int, values: Mapping[int, float], now: int) -> None:
    """Key ``values`` {frame: value} on one channel of ``k``, and nothing else."""
    k.clearAnimated(channel)
    k.setAnimated(channel)  # keys the current frame
    for n, v in values.items():
        k.setValueAt(v, n, channel)
    if now not in values:
        k.removeKeyAt(now, channel)


def _tracks_from_knobs(node: nuke.Node, frames: Any, height: int) -> dict[str, Any] | None:
    """The FaceTracks the render uses: what the track knobs say on every frame of ``frames`` where a track
    is enabled and inside its keys (or everywhere, for a track that is not animated)."""
    ids = _track_ids(node)
    if not ids:
        return None
    frames = list(frames)
    try:
        analysis = json.loads(node["ff_analysis"].value() or "null")
    except ValueError:
        analysis = None
    meshes = None
    if isinstance(analysis, dict) and analysis.get("file"):
        try:
            meshes = json.loads(Path(analysis["file"]).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meshes = None
    values: dict[int, dict[int, list[float]]] = {}
    for tid in ids:
        knobs = _track_knobs(node, tid)
        enable = _knob(node, f"ff_t{tid}_enable")
        keys = sorted({int(round(t)) for k in knobs for t in k.getKeyList()})
        span = [n for n in frames if not keys or keys[0] <= n <= keys[-1]]
        values[tid] = {}
        for n in span:
            if float(enable.getValueAt(n, 0)) < 0.5:
                continue
            row = [float(knobs[0].getValueAt(n, c)) for c in range(4)]
            for lm in knobs[1:]:
                row += [float(lm.getValueAt(n, 0)), float(lm.getValueAt(n, 1))]
            values[tid][n] = row
    try:
        return tracks.build_tracks(values, analysis if isinstance(analysis, dict) else None, float(height), meshes)
    except ValueError as err:
        raise AdapterError(str(err)) from None


# ----------------------------------------------------------------------------------------- frames, files


def frame_list(spec: str) -> list[int]:
    """``1001-1100``, ``1001-1100x2``, ``1,5,9-12`` -> the frames, sorted."""
    out: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        m = re.match(r"^(-?\d+)(?:-(-?\d+)(?:x(\d+))?)?$", part)
        if not m:
            raise AdapterError(f"frames: {spec!r} is not a frame range such as 1001-1100, 1001-1100x2 or 1,5,9-12")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        step = int(m.group(3) or 1)
        if b < a or step < 1:
            raise AdapterError(f"frames: {part!r} runs backwards (write first-last)")
        out.update(range(a, b + 1, step))
    return sorted(out)


def _frames(node: nuke.Node, first: int | None = None, last: int | None = None) -> tuple[list[int], str]:
    """The frames to work on, and how to say them to the bridge."""
    if first is not None or last is not None:
        src = _source(node)
        a = int(first if first is not None else src.firstFrame())
        b = int(last if last is not None else src.lastFrame())
        spec = f"{a}-{b}"
    else:
        spec = node["frames"].value().strip() if node.knob("frames") else ""
        if not spec:
            src = _source(node)
            spec = f"{src.firstFrame()}-{src.lastFrame()}"
    frames = frame_list(spec)
    if not frames:
        raise AdapterError("frames: no frames to work on")
    return frames, spec


def _source(node: nuke.Node) -> nuke.Node:
    src = node.input(0)
    if src is None:
        raise AdapterError(f"{node.name()}: connect the Source input")
    return src


def _frame_file(pattern: str, n: int) -> str:
    """One frame's file of a sequence pattern (``####``, ``@@@@``, ``%04d``)."""
    path = re.sub(r"#+|@+", lambda m: f"{n:0{len(m.group(0))}d}", pattern)
    return re.sub(r"%(0\d+)?d", lambda m: ("%" + (m.group(1) or "") + "d") % n, path)


def cache_root(node: nuke.Node) -> Path:
    """Where renders go: the node's cache folder knob, else $FACEFIX_NUKE_CACHE, else facefix_cache beside
    the script, else the temporary folder."""
    own = node["cache_dir"].value().strip() if node.knob("cache_dir") else ""
    if own:
        return Path(os.path.abspath(os.path.expanduser(os.path.expandvars(own))))
    env = os.environ.get("FACEFIX_NUKE_CACHE", "").strip()
    if env:
        return Path(os.path.abspath(os.path.expanduser(env)))
    script = _script_path()
    if script:
        return Path(script).parent / "facefix_cache"
    return Path(tempfile.gettempdir()) / "facefix_nuke"


def _script_path() -> str:
    name = nuke.root().knob("name")
    return str(name.value()) if name is not None else ""


def _work_dir(node: nuke.Node) -> Path:
    """The node's own folder for the frames it hands to the bridge (rewritten on every Analyse/Render)."""
    script = _script_path()
    stem = Path(script).stem if script else "untitled"
    return cache_root(node) / "work" / stem / re.sub(r"[^A-Za-z0-9_.-]", "_", node.fullName())


def _write(node: nuke.Node, write_name: str, folder: Path, stem: str, first: int, last: int) -> str:
    """Render one of the gizmo's Write nodes over ``first``..``last`` to ``folder``; returns the pattern."""
    write = node.node(write_name) if isinstance(node, nuke.Group) else None
    if write is None:
        raise AdapterError(f"{node.name()} has no {write_name} inside: is it a FaceFix node of this version?")
    folder.mkdir(parents=True, exist_ok=True)
    pattern = str(folder / f"{stem}.{PATTERN}.exr")
    write["file"].setValue(pattern)
    write["disable"].setValue(False)
    try:
        nuke.execute(write, first, last)
    except RuntimeError as err:
        if "cancel" in str(err).lower():
            raise AdapterError("cancelled") from None
        raise AdapterError(f"{write_name}: {err}") from None
    finally:
        write["disable"].setValue(True)
    return pattern
