"""nuke/ is a NUKE_PATH plugin folder: init.py registers the gizmo folder and the adapter, menu.py adds
Nodes > FaceFix > FaceFix; the adapter finds FaceFix through $FACEFIX_ROOT or facefix_config.json."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys

import pytest

from .conftest import GIZMOS, PLUGIN, REPO


def test_init_registers_the_gizmo_folder_and_the_adapter(nuke, monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(PLUGIN)])
    runpy.run_path(str(PLUGIN / "init.py"))
    assert str(GIZMOS) in nuke.pluginPath()
    assert str(PLUGIN) in sys.path  # the adapter (facefix_nuke) is importable
    assert "facefix_nuke" in sys.modules
    assert nuke.createNode("FaceFix").Class() == "FaceFix"  # found on the plugin path


def test_menu_creates_the_gizmo(nuke):
    runpy.run_path(str(PLUGIN / "init.py"))
    runpy.run_path(str(PLUGIN / "menu.py"))
    item = nuke.menu("Nodes").findItem("FaceFix/FaceFix")
    assert item is not None and item.script() == "nuke.createNode('FaceFix')"
    item.invoke()
    created = nuke.allNodes("FaceFix")
    assert len(created) == 1 and created[0].name() == "FaceFix1"


def test_facefix_root_and_config(nuke, ff, tmp_path, monkeypatch):
    from facefix_nuke import install

    # from a checkout, nothing to set: the folder above nuke/
    assert install.facefix_root() == REPO
    assert install.client_path() == REPO / "core" / "facefix" / "bridge" / "client.py"
    client = install.load_client()
    assert client.Bridge and issubclass(client.BridgeError, Exception)

    # an installer's facefix_config.json beside init.py
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    monkeypatch.setattr(install, "PLUGIN_DIR", plugin)
    root = tmp_path / "facefix"
    (root / "core" / "facefix" / "bridge").mkdir(parents=True)
    (root / "core" / "facefix" / "bridge" / "client.py").write_text("class BridgeError(Exception): pass\n")
    (root / "gizmos").mkdir()
    (root / "gizmos" / "FaceFix.gizmo").write_text("")
    (plugin / "facefix_config.json").write_text(json.dumps({"root": str(root), "serve": ["/opt/ff/facefix", "serve"]}))
    assert install.facefix_root() == root
    assert install.client_path() == root / "core" / "facefix" / "bridge" / "client.py"
    assert install.serve_command() == ["/opt/ff/facefix", "serve"]
    assert install.gizmo_dirs()[0] == (root / "gizmos").resolve()

    # $FACEFIX_ROOT wins over the config
    other = tmp_path / "other"
    (other / "core" / "facefix" / "bridge").mkdir(parents=True)
    (other / "core" / "facefix" / "bridge" / "client.py").write_text("")
    monkeypatch.setenv("FACEFIX_ROOT", str(other))
    assert install.client_path() == other / "core" / "facefix" / "bridge" / "client.py"

    # nothing found: one line saying what to set
    monkeypatch.setenv("FACEFIX_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(install.AdapterError, match="FACEFIX_ROOT"):
        install.client_path()
    monkeypatch.delenv("FACEFIX_ROOT")
    (plugin / "facefix_config.json").write_text("{not json")
    with pytest.raises(install.AdapterError, match="facefix_config.json"):
        install.facefix_root()


def test_the_adapter_does_not_import_facefix(tmp_path):
    """Inside Nuke the adapter loads only the bridge client, by path: neither the facefix package nor torch."""
    code = f"""
import sys, importlib.util
spec = importlib.util.spec_from_file_location("nuke", {str(PLUGIN.parent / 'tests' / 'nuke' / 'fake_nuke.py')!r})
nuke = importlib.util.module_from_spec(spec); sys.modules["nuke"] = nuke; spec.loader.exec_module(nuke)
sys.path.insert(0, {str(PLUGIN)!r})
import facefix_nuke, facefix_nuke.node, facefix_nuke.farm
from facefix_nuke import install
install.load_client()
bad = [m for m in sys.modules if m == "facefix" or m.startswith("facefix.") or m == "torch"]
print("BAD" if bad else "ok", bad)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip().startswith("ok"), out.stdout + out.stderr
