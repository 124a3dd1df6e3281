"""``facefix models list|pull|import|verify``: parsing, output and exit codes."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest

from facefix.cli_models import add_models_parser
from facefix.models import manager


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="facefix")
    add_models_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_parser_shapes() -> None:
    args = _parse(["models", "pull", "gfpgan-1.4", "--url", "http://x/y.pth", "--quiet"])
    assert (args.name, args.url, args.quiet, args.func.__name__) == (
        "gfpgan-1.4",
        "http://x/y.pth",
        True,
        "cmd_pull",
    )
    args = _parse(["models", "import", "/tmp/f.pth", "--name", "codeformer"])
    assert (args.path, args.name, args.func.__name__) == ("/tmp/f.pth", "codeformer", "cmd_import")
    assert _parse(["models", "verify", "a", "b"]).names == ["a", "b"]
    assert _parse(["models", "list"]).func.__name__ == "cmd_list"
    with pytest.raises(SystemExit):
        _parse(["models"])


def test_list_shows_licence_and_install_state(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FACEFIX_MODELS", str(tmp_path))
    args = _parse(["models", "list"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header == ["NAME", "ROLE", "ARCHITECTURE", "LICENCE", "INSTALLED", "SIZE"]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert "NON-COMMERCIAL" in rows["codeformer"]
    assert "commercial ok" in rows["gfpgan-1.4"] and " no " in rows["gfpgan-1.4"]
    assert "348.6 MB" in rows["gfpgan-1.4"]
    assert "embedded" in rows["passthrough"]
    assert lines[-1] == f"models folder: {tmp_path}"


def test_verify_exit_codes(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FACEFIX_MODELS", str(tmp_path))
    args = _parse(["models", "verify"])
    assert args.func(args) == 0  # nothing installed is not damage
    assert "gfpgan-1.4: missing" in capsys.readouterr().out
    args = _parse(["models", "verify", "codeformer"])
    assert args.func(args) == 1  # asked for by name and missing
    (tmp_path / "GFPGANv1.4.pth").write_bytes(b"not the release file")
    args = _parse(["models", "verify"])
    assert args.func(args) == 1
    assert "gfpgan-1.4: bad-checksum" in capsys.readouterr().out


def test_pull_and_import_report_errors_as_one_line(tmp_path: Path, monkeypatch, capsys, file_server) -> None:
    monkeypatch.setenv("FACEFIX_MODELS", str(tmp_path / "m"))
    file_server.files["/GFPGANv1.4.pth"] = b"a mirror serving the wrong bytes"
    args = _parse(["models", "pull", "gfpgan-1.4", "--url", file_server.url("/GFPGANv1.4.pth"), "--quiet"])
    assert args.func(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not match" in err[0]
    assert not manager.model_path("gfpgan-1.4").exists()

    stray = tmp_path / "stray.pth"
    stray.write_bytes(b"hello")
    args = _parse(["models", "import", str(stray)])
    assert args.func(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and hashlib.sha256(b"hello").hexdigest() in err[0]


def test_pull_warns_about_non_commercial_licence(tmp_path: Path, monkeypatch, capsys, file_server) -> None:
    monkeypatch.setenv("FACEFIX_MODELS", str(tmp_path))
    args = _parse(["models", "pull", "codeformer", "--url", file_server.url("/missing"), "--quiet"])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "NON-COMMERCIAL" in err and "HTTP 404" in err
