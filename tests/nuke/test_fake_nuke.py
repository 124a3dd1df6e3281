"""The fake ``nuke`` is honest: every public name it has exists in the published ``types-nuke`` stubs of
Foundry's API, and where a stub spells out a signature the fake's parameters are the same."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import pytest


def _stubs() -> Path:
    """The ``nuke-stubs`` package of ``types-nuke`` (a dev dependency)."""
    for entry in sys.path:
        folder = Path(entry) / "nuke-stubs"
        if (folder / "_nuke.pyi").is_file():
            return folder
    pytest.skip("types-nuke is not installed (pip install types-nuke)")


def _stub_api():
    """{name: params or None} of the stub functions, {class: (bases, {method: params or None}, attrs)}."""
    functions: dict[str, list[str] | None] = {}
    classes: dict[str, tuple[list[str], dict[str, list[str] | None], set[str]]] = {}
    names: set[str] = set()

    def params(fn: ast.FunctionDef) -> list[str] | None:
        a = fn.args
        if a.vararg or a.kwarg:
            return None
        out = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
        return out[1:] if out and out[0] in ("self", "cls") else out

    for path in sorted(_stubs().glob("*.pyi")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                p = params(node)
                functions[node.name] = p if node.name not in functions or functions[node.name] is None else (
                    functions[node.name] if p is None else max(p, functions[node.name], key=len))  # overloads
            elif isinstance(node, ast.ClassDef):
                methods: dict[str, list[str] | None] = {}
                attrs: set[str] = set()
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        p = params(item)
                        if item.name in methods and methods[item.name] is not None and p is not None:
                            p = max(p, methods[item.name], key=len)  # overloads: the longest
                        methods[item.name] = p if item.name not in methods or p is None else p
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        attrs.add(item.target.id)
                classes[node.name] = ([b.id for b in node.bases if isinstance(b, ast.Name)], methods, attrs)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return functions, classes, names


def _lookup(classes, cls: str, method: str):
    seen = [cls]
    while seen:
        name = seen.pop(0)
        if name not in classes:
            continue
        bases, methods, attrs = classes[name]
        if method in methods:
            return True, methods[method]
        if method in attrs:
            return True, None
        seen += bases
    return False, None


def test_every_public_name_of_the_fake_is_in_nukes_api(nuke):
    fake = nuke
    functions, classes, names = _stub_api()
    missing, mismatched = [], []
    for name, obj in vars(fake).items():
        if name.startswith("_") or inspect.ismodule(obj) or getattr(obj, "__module__", fake.__name__) != fake.__name__:
            continue
        if inspect.isclass(obj):
            if name not in classes:
                missing.append(name)
                continue
            for meth, fn in vars(obj).items():
                if meth.startswith("_") or not callable(fn) and not isinstance(fn, staticmethod):
                    continue
                found, stub_params = _lookup(classes, name, meth)
                if not found:
                    found, stub_params = _lookup(classes, "object", meth)
                if not found:
                    missing.append(f"{name}.{meth}")
                elif stub_params is not None:
                    mine = [p for p in inspect.signature(fn).parameters if p not in ("self",)]
                    if mine != stub_params:
                        mismatched.append(f"{name}.{meth}{tuple(mine)} != {tuple(stub_params)}")
        elif inspect.isfunction(obj):
            if name not in functions:
                missing.append(name)
            elif functions[name] is not None:
                mine = list(inspect.signature(obj).parameters)
                if mine != functions[name]:
                    mismatched.append(f"{name}{tuple(mine)} != {tuple(functions[name])}")
        elif name not in names:
            missing.append(name)
    assert not missing, f"not in Nuke's API: {missing}"
    assert not mismatched, f"signatures unlike Nuke's: {mismatched}"


def test_the_fake_refuses_what_it_does_not_do(nuke, tmp_path):
    with pytest.raises(RuntimeError, match="unknown command"):
        nuke.createNode("NoSuchNode")
    read = nuke.nodes.Read()
    with pytest.raises(NotImplementedError):
        nuke.execute(read, 1, 1)
    w = nuke.nodes.Write(file=str(tmp_path / "missing" / "a.####.exr"))
    w.setInput(0, nuke.nodes.Constant())
    with pytest.raises(RuntimeError, match="folder does not exist"):
        nuke.execute(w, 1, 1)


def test_knob_animation_behaves_as_documented(nuke):
    n = nuke.nodes.NoOp()
    k = nuke.XY_Knob("p", "point")
    n.addKnob(k)
    nuke.frame(5)
    k.setValue([1.0, 2.0])
    k.setValueAt(7.0, 10, 0)  # not animated: only the value
    assert not k.isAnimated() and k.getValueAt(10, 0) == 7.0
    k.setAnimated(0)  # keys the current frame
    assert k.isAnimated(0) and not k.isAnimated(1) and k.isKeyAt(5, 0)
    k.setValueAt(3.0, 10, 0)
    assert [(key.x, key.y) for key in k.animation(0).keys()] == [(5.0, 7.0), (10.0, 3.0)]
    assert k.getValueAt(7.5, 0) == pytest.approx(5.0) and k.getValueAt(100, 0) == 3.0
    k.setValue(9.0, 0)  # animated: keys the current frame
    assert k.getValueAt(5, 0) == 9.0 and k.getKeyList() == [5.0, 10.0]
    assert k.removeKeyAt(5, 0) and k.getKeyList() == [10.0]
