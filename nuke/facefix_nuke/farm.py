"""Render a script's FaceFix nodes headless: what ``nuke -t facefix_render.py`` runs.

    nuke -t /path/to/facefix/nuke/facefix_render.py SCRIPT.nk [FIRST-LAST] [--node NAME]... [--write NAME]...
         [--save]

Every FaceFix node (or those named with ``--node``) is rendered over FIRST-LAST (default: each node's own
frame range knob, else its Source's range) through the FaceFix bridge, into its cache folder; a render that
is already there is not done again. ``--write NAME`` then executes those Write nodes over the same range in
the same session (the comp that uses the FaceFix result). ``--save`` saves the script, so that the nodes
keep pointing at their results when the artist opens it. Exit status 0 on success, 1 with a one-line
``facefix_render: error: ...`` otherwise, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    import nuke

    from . import node as ff

    ap = argparse.ArgumentParser(prog="nuke -t facefix_render.py",
                                 description="Render a Nuke script's FaceFix nodes through the FaceFix bridge.")
    ap.add_argument("script", help="the .nk script")
    ap.add_argument("frames", nargs="?", help="FIRST-LAST (default: each node's frame range)")
    ap.add_argument("--node", action="append", default=[], help="render only this FaceFix node (repeatable)")
    ap.add_argument("--write", action="append", default=[], help="then execute this Write node (repeatable)")
    ap.add_argument("--save", action="store_true", help="save the script afterwards")
    args = ap.parse_args(list(sys.argv[1:] if argv is None else argv))
    first = last = None
    if args.frames:
        try:
            frames = ff.frame_list(args.frames)
        except ff.AdapterError as err:
            ap.error(str(err))
        first, last = frames[0], frames[-1]
    try:
        nuke.scriptOpen(args.script)
        if args.node:
            nodes: list[nuke.Node] = []
            for name in args.node:
                n = nuke.toNode(name)
                if n is None or n.Class() != "FaceFix":
                    raise ff.AdapterError(f"{args.script}: no FaceFix node named {name}")
                nodes.append(n)
        else:
            nodes = ff.facefix_nodes()
            if not nodes:
                raise ff.AdapterError(f"{args.script}: no FaceFix node")
        for n in nodes:
            out = ff.render(n, first, last)
            print(f"facefix_render: {n.fullName()}: {n['ff_status'].value()} -> {out}", flush=True)
        for name in args.write:
            w = nuke.toNode(name)
            if w is None:
                raise ff.AdapterError(f"{args.script}: no node named {name}")
            a = first if first is not None else w.firstFrame()
            b = last if last is not None else w.lastFrame()
            nuke.execute(w, a, b)
            print(f"facefix_render: {name}: wrote {a}-{b}", flush=True)
        if args.save:
            nuke.scriptSave()
    except Exception as err:
        if not ff._ours(err) and not isinstance(err, (RuntimeError, OSError)):
            raise
        print(f"facefix_render: error: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
        return 1
    return 0
