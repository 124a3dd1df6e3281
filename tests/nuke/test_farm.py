"""Farm: ``nuke -t nuke/facefix_render.py script.nk [first-last]`` renders a saved script's FaceFix nodes
headless (init.py from NUKE_PATH, no menu.py, no GUI), then the Write nodes named with --write."""

from __future__ import annotations

import runpy
import sys

import numpy as np
import pytest

from .conftest import FIRST, PLUGIN, N, read_exr


def nuke_t(nuke, monkeypatch, *args):
    """``nuke -t facefix_render.py ARGS``: a terminal session runs init.py, then the script with its argv."""
    nuke.GUI = False
    nuke.env["gui"] = False
    nuke.scriptClear()
    runpy.run_path(str(PLUGIN / "init.py"))
    monkeypatch.setattr(sys, "argv", [str(PLUGIN / "facefix_render.py"), *map(str, args)])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(PLUGIN / "facefix_render.py"), run_name="__main__")
    return done.value.code


def test_nuke_t_renders_the_scripts_facefix_nodes(nuke, ff, server, plate, tmp_path, monkeypatch, capsys):
    pattern, frames, _ = plate
    read = nuke.nodes.Read(file=str(pattern), first=FIRST, last=FIRST + N - 1)
    node = nuke.createNode("FaceFix")
    node.setInput(0, read)
    node["device"].setValue("cpu")
    ff.analyse(node)  # the artist analysed (and maybe edited) in the GUI, then saved
    comp = nuke.nodes.Write(file=str(tmp_path / "comp" / "comp.####.exr"), channels="rgba",
                            datatype="32 bit float", create_directories=True)
    comp.setInput(0, node)
    script = tmp_path / "shot.nk"
    nuke.scriptSaveAs(str(script))
    jobs = len(server.submitted)

    assert nuke_t(nuke, monkeypatch, script, f"{FIRST}-{FIRST + N - 1}", "--write", "Write1", "--save") == 0
    out = capsys.readouterr().out
    assert "facefix_render: FaceFix1: Rendered" in out and "facefix_render: Write1: wrote" in out
    assert [s.kind for s in server.submitted[jobs:]] == ["restore"]
    assert server.submitted[-1].tracks is not None  # the artist's tracks, from the saved knobs
    nuke.scriptOpen(str(script))  # --save: the script points at the result
    result = nuke.toNode("FaceFix1")["ff_result"].value()
    assert result
    for n in range(FIRST, FIRST + N):
        shown = read_exr(str(tmp_path / "comp" / f"comp.{n:04d}.exr"))
        assert np.array_equal(shown, read_exr(result.replace("####", f"{n:04d}")))
        assert (shown[..., :3] != frames[n]).any()

    # a farm chunk again: nothing rendered twice
    assert nuke_t(nuke, monkeypatch, script, f"{FIRST}-{FIRST + N - 1}") == 0
    assert len(server.submitted) == jobs + 1 and "cached" in capsys.readouterr().out

    # failures are one line and a non-zero exit
    assert nuke_t(nuke, monkeypatch, script, "--node", "Nope") == 1
    assert "facefix_render: error:" in capsys.readouterr().err
    assert nuke_t(nuke, monkeypatch, script, "first-last") == 2
