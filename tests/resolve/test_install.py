"""install/install_resolve.py: the per-user Scripts folder on the three systems, the copy (or links), the config
the installed adapter reads."""

from __future__ import annotations

import importlib.util
import json
import runpy
import sys
from pathlib import PurePosixPath, PureWindowsPath

import pytest

from .conftest import REPO, _forget_adapter


@pytest.fixture
def installer():
    spec = importlib.util.spec_from_file_location("install_resolve", REPO / "install" / "install_resolve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scripts_folder_per_system(installer):
    linux = installer.scripts_folder("linux", {}, "/home/ana")
    assert linux == PurePosixPath("/home/ana/.local/share/DaVinciResolve/Fusion/Scripts")
    mac = installer.scripts_folder("darwin", {}, "/Users/ana")
    assert mac == PurePosixPath("/Users/ana/Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion/Scripts")
    win = installer.scripts_folder("win32", {"APPDATA": r"C:\Users\ana\AppData\Roaming"}, r"C:\Users\ana")
    assert win == PureWindowsPath(r"C:\Users\ana\AppData\Roaming\Blackmagic Design\DaVinci Resolve\Support\Fusion\Scripts")
    assert str(win).startswith("C:\\Users\\ana\\AppData\\Roaming\\Blackmagic Design")
    # no APPDATA: the roaming folder under the home folder
    assert installer.scripts_folder("win32", {}, r"D:\ana") == PureWindowsPath(
        r"D:\ana\AppData\Roaming\Blackmagic Design\DaVinci Resolve\Support\Fusion\Scripts")
    with pytest.raises(installer.InstallError, match="name the Scripts folder"):
        installer.scripts_folder("aix", {}, "/home/ana")


def test_serve_command_is_this_environment(installer, tmp_path):
    bin_ = tmp_path / "venv" / "bin"
    bin_.mkdir(parents=True)
    python = bin_ / "python"
    assert installer.serve_command(str(python), "linux") == [str(python), "-m", "facefix.cli", "serve"]
    (bin_ / "facefix").write_text("#!/bin/sh\n")
    assert installer.serve_command(str(python), "linux") == [str(bin_ / "facefix"), "serve"]
    scripts = tmp_path / "win" / "Scripts"
    scripts.mkdir(parents=True)
    (scripts / "facefix.exe").write_text("")
    assert installer.serve_command(str(scripts / "python.exe"), "win32") == [str(scripts / "facefix.exe"), "serve"]


@pytest.mark.parametrize("link", [False, True], ids=["copy", "link"])
def test_install_then_the_installed_adapter_reads_its_config(installer, tmp_path, monkeypatch, link):
    target = tmp_path / "Scripts"
    lines = installer.install(target, root=REPO, serve=["/opt/ff/bin/facefix", "serve"], link=link,
                              renders=str(tmp_path / "renders"))
    assert len(lines) == 4
    for rel in ("Utility/FaceFix.py", "Comp/FaceFix.py", "Modules/facefix_resolve/__init__.py"):
        assert (target / rel).is_file()
    assert (target / "Modules" / "facefix_resolve").is_symlink() == link
    config = json.loads((target / "Modules" / "facefix_config.json").read_text())
    assert config == {"root": str(REPO), "serve": ["/opt/ff/bin/facefix", "serve"], "renders": str(tmp_path / "renders")}
    assert not (REPO / "resolve" / "Modules" / "facefix_config.json").exists()  # a link writes nothing into the checkout
    # the installed adapter, imported from the Scripts folder as the installed scripts import it
    _forget_adapter()
    monkeypatch.syspath_prepend(str(target / "Modules"))
    monkeypatch.delenv("FACEFIX_ROOT", raising=False)
    monkeypatch.delenv("FACEFIX_RESOLVE_RENDERS", raising=False)
    try:
        from facefix_resolve import config as cfg

        assert cfg.facefix_root() == REPO
        assert cfg.client_path() == REPO / "core" / "facefix" / "bridge" / "client.py"
        assert cfg.serve_command() == ["/opt/ff/bin/facefix", "serve"]
        assert cfg.renders_root() == tmp_path / "renders"
        monkeypatch.setenv("FACEFIX_ROOT", str(tmp_path / "elsewhere"))
        with pytest.raises(cfg.AdapterError, match="no FaceFix bridge client there"):
            cfg.client_path()
    finally:
        _forget_adapter()
    # again: replaces what is there; uninstall removes it all
    installer.install(target, root=REPO, serve=None, link=link)
    assert json.loads((target / "Modules" / "facefix_config.json").read_text()) == {"root": str(REPO)}
    assert len(installer.uninstall(target)) == 4
    assert not any((target / d).exists() and any((target / d).iterdir()) for d in ("Utility", "Comp", "Modules"))
    assert (REPO / "resolve" / "Modules" / "facefix_resolve" / "__init__.py").is_file()  # the checkout is intact


def test_main_installs_into_the_users_folder(installer, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert installer.main(["--serve", "/opt/ff/bin/facefix serve"]) == 0
    target = tmp_path / ".local" / "share" / "DaVinciResolve" / "Fusion" / "Scripts"
    assert (target / "Utility" / "FaceFix.py").is_file()
    config = json.loads((target / "Modules" / "facefix_config.json").read_text())
    assert config["serve"] == ["/opt/ff/bin/facefix", "serve"] and config["root"] == str(REPO)
    assert "Workspace > Scripts > Utility > FaceFix" in capsys.readouterr().out
    assert installer.main(["--uninstall"]) == 0
    assert not (target / "Utility" / "FaceFix.py").exists()
    assert installer.main(["--scripts-dir", str(tmp_path / "x"), "--root", str(tmp_path), "--dry-run"]) == 0
    assert not (tmp_path / "x").exists()


def test_installed_script_runs_in_resolve(installer, dvr, server, tmp_path, monkeypatch):
    """The copied Utility script finds its adapter beside it (or, without ``__file__``, through Fusion's
    ``Scripts:`` path map), opens the dialog from the bridge's schema, and closes."""
    target = tmp_path / "Scripts"
    installer.install(target, root=REPO, serve=None)
    resolve = dvr.Resolve()
    fusion = resolve.Fusion()
    fusion._paths["Scripts:"] = str(target)
    resolve.GetProjectManager().CreateProject("p").GetMediaPool().CreateEmptyTimeline("t")
    _forget_adapter()
    try:
        code = compile((target / "Utility" / "FaceFix.py").read_text(), "FaceFix.py", "exec")
        exec(code, {"resolve": resolve, "fusion": fusion, "bmd": dvr, "__name__": "__main__"})  # no __file__
        assert sys.modules["facefix_resolve"].__file__.startswith(str(target))
        (win,) = dvr._windows
        assert win.Find("FF_strength") is not None and win.Find("FFRun_codec") is not None
        runpy.run_path(str(target / "Comp" / "FaceFix.py"), init_globals={"resolve": resolve, "fusion": fusion,
                                                                          "bmd": dvr})
        assert dvr._windows[-1].Find("FFMask") is not None
    finally:
        _forget_adapter()
        sys.path[:] = [p for p in sys.path if not p.startswith(str(target))]
