"""install/install_openfx.py: the bundle copied where hosts look (OFX_PLUGIN_PATH, --dest), replaced, removed."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from .conftest import REPO


@pytest.fixture(scope="module")
def installer():
    spec = importlib.util.spec_from_file_location("install_openfx", REPO / "install" / "install_openfx.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_plugin_folder_follows_ofx_plugin_path_else_the_system_s(installer, tmp_path):
    assert installer.plugin_folder({"OFX_PLUGIN_PATH": f"{tmp_path}/a:{tmp_path}/b"}, "Linux") == tmp_path / "a"
    assert str(installer.plugin_folder({}, "Linux")) == "/usr/OFX/Plugins"
    assert str(installer.plugin_folder({}, "Darwin")) == "/Library/OFX/Plugins"


def test_install_replace_and_uninstall(installer, bundle, tmp_path, monkeypatch, capsys):
    built = bundle.parents[2]  # .../FaceFix.ofx.bundle
    dest = tmp_path / "plugins"
    monkeypatch.setenv("OFX_PLUGIN_PATH", str(dest))
    assert installer.main(["--bundle", str(built)]) == 0
    binary = dest / "FaceFix.ofx.bundle" / "Contents" / "Linux-x86-64" / "FaceFix.ofx"
    assert binary.read_bytes() == bundle.read_bytes()
    (binary.parent / "stale").write_text("from an older install")
    assert installer.main(["--bundle", str(built)]) == 0  # replaced, not merged
    assert not (binary.parent / "stale").exists() and binary.exists()
    assert sorted(p.name for p in dest.iterdir()) == ["FaceFix.ofx.bundle"]
    assert installer.main(["--uninstall"]) == 0
    assert not (dest / "FaceFix.ofx.bundle").exists()


def test_a_folder_that_is_not_a_bundle_is_refused_in_one_line(installer, tmp_path, capsys):
    assert installer.main(["--bundle", str(tmp_path), "--dest", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("install_openfx: error: ") and "\n" not in err


def test_without_a_bundle_it_builds_one_with_cmake(installer, tmp_path):
    if not installer.shutil.which("cmake"):
        pytest.skip("no cmake")
    assert installer.main(["--dest", str(tmp_path)]) == 0
    assert (tmp_path / "FaceFix.ofx.bundle" / "Contents" / "Linux-x86-64" / "FaceFix.ofx").is_file()
