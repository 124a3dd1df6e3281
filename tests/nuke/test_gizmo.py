"""gizmos/FaceFix.gizmo is generated from the live parameter schema, and Nuke (the fake) reads it as the
FaceFix node: knobs with the schema's names, types, defaults, ranges, tooltips and animation; the Group's
inputs, Writes, Read, Switch and Output."""

from __future__ import annotations

import copy
import subprocess
import sys

from facefix.params import schema

from .conftest import GIZMOS, PLUGIN, REPO

KNOB_CLASS = {"float": "Double_Knob", "int": "Int_Knob", "bool": "Boolean_Knob", "choice": "Enumeration_Knob"}


def _generator():
    sys.path.insert(0, str(PLUGIN))
    try:
        from facefix_nuke import gizmo
    finally:
        sys.path.remove(str(PLUGIN))
    return gizmo


def test_the_committed_gizmo_is_generated_from_the_live_schema():
    gizmo = _generator()
    expected = gizmo.gizmo_text(schema())
    committed = (GIZMOS / "FaceFix.gizmo").read_text(encoding="utf-8")
    assert committed == expected, ("gizmos/FaceFix.gizmo is stale (the parameter schema changed): regenerate it "
                                   f"with `{gizmo.REGENERATE}` and commit it")


def test_the_generator_command_checks_and_writes(tmp_path):
    cmd = [sys.executable, str(PLUGIN / "facefix_nuke" / "gizmo.py")]
    assert subprocess.run(cmd + ["--check"], cwd=REPO, capture_output=True).returncode == 0
    changed = copy.deepcopy(schema())
    changed["params"][1]["default"] = 0.25
    (tmp_path / "schema.json").write_text(__import__("json").dumps(changed))
    out = tmp_path / "FaceFix.gizmo"
    stale = subprocess.run(cmd + ["--check", "--schema", str(tmp_path / "schema.json")], cwd=REPO,
                           capture_output=True, text=True)
    assert stale.returncode == 1 and "regenerate it with" in stale.stderr
    assert subprocess.run(cmd + ["--schema", str(tmp_path / "schema.json"), "--output", str(out)],
                          cwd=REPO, capture_output=True).returncode == 0
    assert f" {changed['params'][1]['name']} 0.25\n" in out.read_text()


def test_the_node_has_the_schemas_controls(nuke, ff):
    node = nuke.createNode("FaceFix")
    assert node.Class() == "FaceFix" and node.maxInputs() == 2
    for p in schema()["params"]:
        k = node.knob(p["name"])
        assert k is not None, p["name"]
        if p["type"] == "str":
            assert k.Class() in ("String_Knob", "File_Knob")
            assert k.value() == p["default"]
        else:
            assert k.Class() == KNOB_CLASS[p["type"]], p["name"]
        assert k.label() == p["label"] and p["help"] in k.tooltip() and p["flag"] in k.tooltip()
        if p["type"] == "choice":
            assert k.values() == [str(c) for c in p["choices"]] and k.value() == str(p["default"])
        elif p["type"] == "bool":
            assert k.value() is bool(p["default"])
        elif p["type"] in ("float", "int"):
            assert k.value() == p["default"]
            if p["min"] is not None:
                assert (k.min(), k.max()) == (p["min"], p["max"])
        if p["type"] != "str":
            assert k.getFlag(nuke.NO_ANIMATION) is (not p["animatable"]), p["name"]
    assert node["ff_params"].value().split() == [p["name"] for p in schema()["params"]]
    assert node["ff_schema"].value() == schema()["version"]


def test_run_options_tabs_and_buttons(nuke, ff):
    gizmo = _generator()
    node = nuke.createNode("FaceFix")
    knobs = node.allKnobs()
    tabs = [k.label() for k in knobs if k.Class() == "Tab_Knob"]
    assert tabs == ["FaceFix", "Render", "Tracks"]
    tab_of, tab = {}, None
    for k in knobs:
        tab = k.label() if k.Class() == "Tab_Knob" else tab
        tab_of[k.name()] = tab
    for p in schema()["run"]:  # each run option is a knob or has a stated place in Nuke
        assert node.knob(p["name"]) is not None or p["name"] in gizmo.IN_NUKE, p["name"]
    assert tab_of["frames"] == tab_of["matte"] == tab_of["compile"] == tab_of["cache_dir"] == "Render"
    assert tab_of["tracks"] == tab_of["ff_load_tracks"] == "Tracks" and knobs[-1].name().startswith("ff_")
    assert "Source input's frame range" in node["frames"].tooltip() and node["frames"].value() == ""
    for button, call in (("ff_analyse", "analyse"), ("ff_render", "render"), ("ff_load_tracks", "load_tracks")):
        assert node[button].Class() == "PyScript_Knob"
        assert f"facefix_nuke.{call}(nuke.thisNode())" in node[button].command()
    assert tab_of["ff_analyse"] == tab_of["ff_render"] == "FaceFix"
    for hidden in gizmo.HIDDEN_KNOBS:
        assert not node[hidden].visible()


def test_inside_the_group(nuke, ff):
    node = nuke.createNode("FaceFix")
    inside = {n.name(): n for n in node.nodes()}
    assert {n.Class() for n in inside.values()} == {"Input", "Write", "Read", "Switch", "Output"}
    assert inside["Source"]["number"].value() == 0 and inside["Mask"]["number"].value() == 1
    assert inside["WriteSource"].input(0) is inside["Source"] and inside["WriteMask"].input(0) is inside["Mask"]
    for w in ("WriteSource", "WriteMask"):
        assert inside[w]["disable"].value() and inside[w]["file_type"].value() == "exr"
        assert inside[w]["datatype"].value() == "32 bit float" and inside[w]["raw"].value()
        assert inside[w]["channels"].value() == "rgba" and inside[w]["metadata"].value() == "no metadata"
    show = inside["Show"]
    assert show.input(0) is inside["Source"] and show.input(1) is inside["Result"]
    assert inside["Output1"].input(0) is show
    assert inside["Result"]["file"].value() == "[value parent.ff_result]" and inside["Result"]["raw"].value()
    # nothing rendered: the node shows its Source
    src = nuke.nodes.Constant(color=[0.25, 0.5, 0.75, 1.0])
    node.setInput(0, src)
    assert show._which(1) == 0
    node["ff_result"].setValue("/nowhere/facefix.####.exr")
    node["ff_first"].setValue(10)
    node["ff_last"].setValue(20)
    node["ff_rendered"].setValue(True)
    assert [show._which(t) for t in (9, 10, 20, 21)] == [0, 1, 1, 0]  # the result where it was rendered
