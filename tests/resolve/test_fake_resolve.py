"""The fake ``DaVinciResolveScript`` is honest: its Resolve half is checked name by name and argument by argument
against ``fusionscript-stubs`` (Blackmagic's scripting README as stubs), the adapter's Fusion Protocols against
the fake's Fusion half; and the stubs really type-check the adapter (a wrong call fails mypy)."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .conftest import MODULES, REPO

RESOLVE_CLASSES = ("Resolve", "ProjectManager", "Project", "MediaPool", "Folder", "MediaPoolItem", "Timeline",
                   "TimelineItem")


def stub_file() -> Path:
    for key in ("purelib", "platlib"):
        path = Path(sysconfig.get_paths()[key]) / "fusionscript-stubs" / "fusionscript.pyi"
        if path.is_file():
            return path
    pytest.fail("fusionscript-stubs is not installed (pip install -e '.[dev]')")


def stub_methods() -> dict[str, dict[str, list[list[str]]]]:
    """class -> method -> every overload's parameter names (without self)."""
    tree = ast.parse(stub_file().read_text(encoding="utf-8"))
    out: dict[str, dict[str, list[list[str]]]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            methods = out.setdefault(node.name, {})
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef):
                    names = [a.arg for a in fn.args.args[1:]]
                    methods.setdefault(fn.name, []).append(names)
    return out


def test_every_resolve_method_of_the_fake_is_documented(dvr):
    stubs = stub_methods()
    checked = 0
    for cls in RESOLVE_CLASSES:
        fake = getattr(dvr, cls)
        for name, fn in inspect.getmembers(fake, inspect.isfunction):
            if name.startswith("_"):
                continue
            assert name in stubs[cls], f"{cls}.{name} is not in Resolve's scripting API"
            params = [p.name for p in inspect.signature(fn).parameters.values()
                      if p.name != "self" and p.kind is not inspect.Parameter.VAR_POSITIONAL]
            overloads = stubs[cls][name]
            assert any(o[:len(params)] == params for o in overloads), f"{cls}.{name}{params} vs {overloads}"
            checked += 1
    assert checked > 60


def test_the_adapters_fusion_protocols_are_in_the_fake(dvr, ffr):
    from facefix_resolve import fusion_api

    fake_of = {"FusionApp": dvr.Fusion, "Comp": dvr.Comp, "Tool": dvr.Tool, "FuInput": dvr.Input,
               "FuOutput": dvr.Output, "Bmd": dvr}
    surface = {"FusionApp": "Fusion", "Comp": "Comp", "Tool": "Tool", "FuInput": "Input", "FuOutput": "Output",
               "Bmd": "Bmd"}
    for proto, fake in fake_of.items():
        members = [n for n in vars(getattr(fusion_api, proto)) if not n.startswith("_")]
        members += list(getattr(getattr(fusion_api, proto), "__annotations__", {}))
        for name in set(members):
            assert name in dvr.FUSION_SURFACE[surface[proto]], f"{proto}.{name} is not in the fake's Fusion surface"
            if name not in ("ActiveTool", "CurrentTime", "UIManager", "Name"):
                assert callable(getattr(fake, name)), f"{proto}.{name}"


def test_lua_tables_parse(dvr):
    table = dvr.readstring('{ Tools = ordered() { A = Blur { Inputs = { X = Input { Value = -1.5e-3, }, '
                           'S = Input { Value = "a \\"b\\"", }, L = Input { Value = { 1, 2 }, }, }, '
                           'K = { [3] = { 0, Flags = { Linear = true } } } }, }, -- a comment\n }')
    blur = table["Tools"]["A"]
    assert blur["__ctor"] == "Blur" and blur["Inputs"]["X"]["Value"] == -0.0015
    assert blur["Inputs"]["S"]["Value"] == 'a "b"' and blur["Inputs"]["L"]["Value"] == {1: 1, 2: 2}
    assert blur["K"][3] == {1: 0, "Flags": {"Linear": True}}


def test_the_fake_places_and_refuses_like_resolve(dvr, footage):
    pattern, movie, _ = footage
    resolve = dvr.Resolve()
    pool = resolve.GetProjectManager().CreateProject("p").GetMediaPool()
    seq = pool.ImportMedia([{"FilePath": str(pattern).replace("####", "%04d"), "StartIndex": 1001, "EndIndex": 1008}])[0]
    assert seq.GetClipProperty("File Path").endswith("plate.[1001-1008].png")
    assert seq.GetClipProperty("Frames") == "8" and seq.GetClipProperty("Resolution") == "160x192"
    mov = pool.ImportMedia([str(movie)])[0]
    assert mov.GetClipProperty("Frames") == "8" and mov.GetClipProperty("FPS") == "24.000"
    assert pool.ImportMedia(["/nowhere.mov"]) == []
    timeline = pool.CreateEmptyTimeline("t")
    (a,) = pool.AppendToTimeline([{"mediaPoolItem": seq, "startFrame": 2, "endFrame": 5, "trackIndex": 1,
                                   "recordFrame": 100}])
    assert (a.GetStart(), a.GetDuration(), a.GetLeftOffset(), a.GetEnd()) == (100, 4, 2, 104)
    assert pool.AppendToTimeline([{"mediaPoolItem": mov, "startFrame": 0, "endFrame": 3, "trackIndex": 1,
                                   "recordFrame": 102}]) == []  # would overwrite
    assert pool.AppendToTimeline([{"mediaPoolItem": mov, "startFrame": 0, "endFrame": 3, "trackIndex": 2,
                                   "recordFrame": 102}]) == []  # no V2
    assert timeline.AddTrack("video") and timeline.GetTrackCount("video") == 2
    (b,) = pool.AppendToTimeline([{"mediaPoolItem": mov, "startFrame": 0, "endFrame": 3, "trackIndex": 2,
                                   "recordFrame": 102}])
    assert b.GetTrackTypeAndIndex() == ["video", 2] and len(timeline._refused) == 2
    timeline._playhead = 101
    assert timeline.GetCurrentVideoItem() is a
    timeline._playhead = 103
    assert timeline.GetCurrentVideoItem() is b


def test_stubs_type_check_the_adapter(tmp_path):
    """The adapter passes mypy against fusionscript-stubs, and a call that is not in the API fails it: the
    stubs are really what CI checks the Resolve calls against."""
    bad = tmp_path / "bad_call.py"
    bad.write_text("from __future__ import annotations\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                   "    from fusionscript import TimelineItem\n\n\ndef f(item: TimelineItem) -> int:\n"
                   "    return int(item.GetLeftOfset(False))\n")
    mypy = [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(mypy + [str(bad)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 1 and 'has no attribute "GetLeftOfset"' in done.stdout, done.stdout + done.stderr
    done = subprocess.run(mypy + [str(MODULES / "facefix_resolve")], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
