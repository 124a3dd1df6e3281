"""Generate ``gizmos/FaceFix.gizmo`` from FaceFix's parameter schema (``facefix schema``).

Pure Python, no Nuke needed: the gizmo is a text file in Nuke's script syntax, and every control on it comes
from the schema: same names, labels, defaults, tooltips (the help), slider ranges (min/max), choices
(Enumeration_Knob), bools (Boolean_Knob), animatable controls animatable and the others not
(``+NO_ANIMATION``). Regenerate after the schema changes::

    .venv/bin/python nuke/facefix_nuke/gizmo.py            # writes gizmos/FaceFix.gizmo
    .venv/bin/python nuke/facefix_nuke/gizmo.py --check    # exit 1 if the committed gizmo is stale

Tabs: **FaceFix** (Analyse and Render buttons, then the look controls by schema group), **Render** (the run
options that mean something in Nuke: frame range, face matte output, compile, cache folder) and **Tracks**
(a FaceTracks file to load, and the knobs Analyse writes: one set per face track, added at run time).

Inside the Group: Input ``Source`` (0) and ``Mask`` (1), a Write for each (disabled; the adapter enables
one for the time of a ``nuke.execute``), the Read that shows the result (its file and range linked to hidden
knobs that the adapter sets, so a saved script shows its render on reopening), a Switch that shows the
result where it was rendered and the Source elsewhere, and the Output.

Python 3.7 compatible (runs inside Nuke 13+ too, though it is a development tool).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["gizmo_text", "knob_lines", "GIZMO_PATH", "ADAPTER_RUN", "IN_NUKE", "HIDDEN_KNOBS", "main"]

REPO = Path(__file__).resolve().parents[2]
GIZMO_PATH = REPO / "gizmos" / "FaceFix.gizmo"
REGENERATE = ".venv/bin/python nuke/facefix_nuke/gizmo.py"

# Nuke's user-knob type ids (the first number of ``addUserKnob {ID name ...}``).
STRING, FILE, INT, ENUM, BOOL, DOUBLE, TAB, PYSCRIPT, TEXT = 1, 2, 3, 4, 6, 7, 20, 22, 26

# Schema controls whose value is a file path get a file browser instead of a text field.
FILE_PARAMS = ("reference",)

# How each run option of the schema appears in Nuke (anything not listed becomes a knob on the Render tab
# and is sent as a job field of the same name).
IN_NUKE: dict[str, str] = {
    "frames": "knob: the frame range; empty = the Source input's range",
    "matte": "knob: also write the face matte there",
    "compile": "knob: sent with the job",
    "tracks": "Tracks tab: a FaceTracks file loaded into the track knobs (the knobs are what renders use)",
    "mask_input": "the node's Mask input (its alpha), written to a sequence for the job",
    "resume": "always on: a render goes into a folder named by the hash of everything it depends on, so "
              "frames already there are this very render's",
    "codec": "not offered: the node renders an EXR sequence",
}
ADAPTER_RUN = ("frames", "matte", "compile")  # run options that are plain knobs the adapter reads

# Knobs the adapter keeps on the node (invisible; saved with the script).
HIDDEN_KNOBS = {
    "ff_params": "the schema controls on this node, for the adapter",
    "ff_run": "the run options on this node that are job fields, for the adapter",
    "ff_schema": "the schema version the gizmo was generated from",
    "ff_result": "the rendered sequence the inner Read shows",
    "ff_first": "its first frame",
    "ff_last": "its last frame",
    "ff_rendered": "1 once something was rendered",
    "ff_analysis": "what Analyse wrote (JSON), to tell the compositor's edits from it",
}

_BARE = re.compile(r"^[A-Za-z0-9_.+\-/:@%]+$")


def tcl(value: Any) -> str:
    """One TCL word: bare when it is safe, else double-quoted with Nuke's escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value)
    text = str(value)
    if text and _BARE.match(text):
        return text
    out = (text.replace("\\", "\\\\").replace('"', '\\"').replace("[", "\\[").replace("$", "\\$")
           .replace("\n", "\\n").replace("\t", "\\t"))
    return f'"{out}"'


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _knob(kind: int, name: str, label: str | None = None, tooltip: str = "", extra: Sequence[str] = (),
          flags: Sequence[str] = ()) -> str:
    parts = [str(kind), name]
    if label is not None:
        parts += ["l", tcl(label)]
    if tooltip:
        parts += ["t", tcl(tooltip)]
    parts += list(extra)
    parts += list(flags)
    return " addUserKnob {" + " ".join(parts) + "}"


def knob_lines(p: Mapping[str, Any]) -> list[str]:
    """The ``addUserKnob`` line and default-value line of one schema control."""
    name, kind, label, default = p["name"], p["type"], p.get("label") or p["name"], p.get("default")
    tip = (p.get("help") or "").strip()
    if p.get("flag"):
        tip = f"{tip} ({p['flag']})" if tip else str(p["flag"])
    animatable = bool(p.get("animatable"))
    no_anim = [] if animatable else ["+NO_ANIMATION"]
    lo, hi = p.get("min"), p.get("max")
    rng = ["R", _number(lo), _number(hi)] if lo is not None and hi is not None else []
    if kind == "float":
        lines = [_knob(DOUBLE, name, label, tip, rng, no_anim)]
        value = _number(float(default if default is not None else 0.0))
    elif kind == "int":
        lines = [_knob(INT, name, label, tip, rng, no_anim)]
        value = _number(int(default if default is not None else 0))
    elif kind == "bool":
        lines = [_knob(BOOL, name, label, tip, (), no_anim + ["+STARTLINE"])]
        value = tcl(bool(default))
    elif kind == "choice":
        choices = [str(c) for c in p.get("choices") or []]
        if not choices:
            raise ValueError(f"{name}: a choice control without choices")
        menu = "M {" + " ".join(tcl(c) for c in choices) + "}"
        lines = [_knob(ENUM, name, label, tip, [menu], no_anim)]
        value = tcl(str(default if default is not None else choices[0]))
    elif kind == "str":
        lines = [_knob(FILE if name in FILE_PARAMS else STRING, name, label, tip)]
        value = tcl(default or "") if default else ""
    else:
        raise ValueError(f"{name}: unknown control type {kind!r}")
    if value != "":
        lines.append(f" {name} {value}")
    return lines


def _button(name: str, label: str, call: str, tooltip: str, startline: bool = True) -> str:
    command = f"import facefix_nuke\nfacefix_nuke.{call}(nuke.thisNode())"
    return _knob(PYSCRIPT, name, label, tooltip, ["T", tcl(command)], ["+STARTLINE" if startline else "-STARTLINE"])


def _header(title: str, name: str) -> str:
    return _knob(TEXT, name, f"<b>{title}</b>", "", ["T", '""'])


def gizmo_text(schema: Mapping[str, Any]) -> str:
    """The whole ``FaceFix.gizmo`` for ``schema`` (``facefix.params.schema()`` or ``facefix schema``'s JSON)."""
    version = str(schema.get("version", ""))
    params: list[Mapping[str, Any]] = list(schema.get("params", []))
    run: list[Mapping[str, Any]] = list(schema.get("run", []))
    run_by_name = {p["name"]: p for p in run}
    out = [
        f"# FaceFix.gizmo: GENERATED from the FaceFix parameter schema ({version}) by nuke/facefix_nuke/gizmo.py.",
        f"# Do not edit by hand: change core/facefix/params.py, then run `{REGENERATE}`.",
        "version 13.0 v1",
        "Gizmo {",
        " inputs 2",
        " help " + tcl("FaceFix: face restoration. Analyse finds and tracks the faces of the Source over the frame "
                       "range and writes them as animated knobs on the Tracks tab (edit them freely: what the knobs "
                       "say is what renders use); Render restores the faces through the FaceFix bridge and shows "
                       "the result. The Mask input's alpha limits where the fix applies. Every pixel outside the "
                       "face matte stays the Source's own."),
        " tile_color 0x7f5fa3ff",
        " label " + tcl("[value model]"),
        _knob(TAB, "facefix", "FaceFix"),
        _button("ff_analyse", "Analyse", "analyse", "Detect and track the faces of the Source over the frame range "
                "and write them to the Tracks tab (replacing the tracks there)."),
        _button("ff_render", "Render", "render", "Restore the faces over the frame range through the FaceFix "
                "bridge, with the knobs' values and tracks, and show the result (nothing is rendered again when "
                "nothing changed).", startline=False),
        _knob(TEXT, "ff_status", "", "", ["T", '""'], ["+STARTLINE"]),
    ]
    group = None
    for p in params:
        if p.get("group") != group:
            group = p.get("group")
            title = str(group or "").replace("_", " ").capitalize()
            out.append(_header(title, f"ff_group_{group}"))
        out += knob_lines(p)
    out.append(_knob(TAB, "ff_render_tab", "Render"))
    for name in run_by_name:
        if name in ("tracks", "mask_input", "resume", "codec"):
            continue
        p = dict(run_by_name[name])
        if name == "frames":
            p["help"] = ("Frames to analyse and render, e.g. 1001-1100, 1001-1100x2 or 1,5,9-12. Empty: the Source "
                         "input's frame range.")
        if name == "matte":
            tip = (p.get("help") or "") + " E.g. /shots/faces/matte.####.exr; empty: none."
            out.append(_knob(FILE, "matte", "Face matte", f"{tip} ({p.get('flag', '--matte')})"))
            continue
        out += knob_lines(p)
    out.append(_knob(FILE, "cache_dir", "Cache folder",
                     "Where renders go, one folder per set of inputs and settings (nothing is rendered twice). "
                     "Empty: $FACEFIX_NUKE_CACHE, else facefix_cache beside the script, else the temporary folder."))
    out.append(_knob(TAB, "ff_tracks_tab", "Tracks"))
    tracks_help = (run_by_name.get("tracks", {}).get("help") or "FaceTracks JSON.")
    out.append(_knob(FILE, "tracks", "FaceTracks file", tracks_help + " Load writes it to the track knobs below "
                     "(as Analyse does); renders use the knobs."))
    out.append(_button("ff_load_tracks", "Load", "load_tracks", "Load the FaceTracks file into the track knobs.",
                       startline=False))
    out.append(_knob(TEXT, "ff_tracks_help", "", "", ["T", tcl(
        "One set of knobs per face track: enable, box, and the 5 landmarks (eyes, nose tip, mouth corners), "
        "keyed on every frame by Analyse. Edit, delete or add keys: renders use what the knobs say, and mark "
        "the frames you changed as the host's.")], ["+STARTLINE"]))
    param_names = " ".join(p["name"] for p in params)
    run_names = " ".join(n for n in run_by_name if n not in IN_NUKE or n in ADAPTER_RUN)
    for name, kind in (("ff_params", STRING), ("ff_run", STRING), ("ff_schema", STRING), ("ff_result", FILE),
                       ("ff_first", INT), ("ff_last", INT), ("ff_rendered", BOOL), ("ff_analysis", STRING)):
        out.append(_knob(kind, name, None, HIDDEN_KNOBS[name], (), ["+INVISIBLE"]))
    out += [f" ff_params {tcl(param_names)}", f" ff_run {tcl(run_names)}", f" ff_schema {tcl(version)}",
            " ff_first 1", " ff_last 1"]
    out += [
        "}",
        " Input {",
        "  inputs 0",
        "  name Source",
        "  xpos 0",
        "  ypos -200",
        " }",
        "set Nsource [stack 0]",
        " Write {",
        "  channels rgba",
        "  file_type exr",
        "  datatype \"32 bit float\"",
        "  compression none",
        "  metadata \"no metadata\"",
        "  raw true",
        "  name WriteSource",
        "  disable true",
        "  xpos 150",
        "  ypos -200",
        " }",
        " Input {",
        "  inputs 0",
        "  name Mask",
        "  number 1",
        "  xpos 300",
        "  ypos -200",
        " }",
        " Write {",
        "  channels rgba",
        "  file_type exr",
        "  datatype \"32 bit float\"",
        "  compression none",
        "  metadata \"no metadata\"",
        "  raw true",
        "  name WriteMask",
        "  disable true",
        "  xpos 300",
        "  ypos -100",
        " }",
        " Read {",
        "  file " + tcl("[value parent.ff_result]"),
        "  first {{parent.ff_first}}",
        "  last {{parent.ff_last}}",
        "  raw true",
        "  on_error black",
        "  name Result",
        "  xpos 150",
        "  ypos -50",
        " }",
        "push $Nsource",
        " Switch {",
        "  inputs 2",
        "  which {{\"parent.ff_rendered && frame >= parent.ff_first && frame <= parent.ff_last\"}}",
        "  name Show",
        "  xpos 0",
        "  ypos 0",
        " }",
        " Output {",
        "  name Output1",
        "  xpos 0",
        "  ypos 100",
        " }",
        "end_group",
    ]
    return "\n".join(out) + "\n"


def _live_schema() -> dict[str, Any]:
    try:
        from facefix.params import schema
    except ImportError:
        sys.path.insert(0, str(REPO / "core"))
        from facefix.params import schema
    return schema()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate gizmos/FaceFix.gizmo from the FaceFix parameter schema.")
    ap.add_argument("--schema", help="a schema JSON file (from `facefix schema`); default: the live schema")
    ap.add_argument("--output", default=str(GIZMO_PATH), help="where to write (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file is not up to date")
    args = ap.parse_args(argv)
    schema = json.loads(Path(args.schema).read_text(encoding="utf-8")) if args.schema else _live_schema()
    text = gizmo_text(schema)
    out = Path(args.output)
    if args.check:
        current = out.read_text(encoding="utf-8") if out.exists() else ""
        if current != text:
            print(f"{out} is stale: regenerate it with `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
