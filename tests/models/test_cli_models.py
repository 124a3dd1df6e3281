"""``facefix models list|pull|import|verify``: parsing, output and exit codes."""

from __future__ import annotations

import argparse
import hashlib
import socket
from pathlib import Path
from types import MappingProxyType

import pytest

from facefix.cli.models import add_models_parser
from facefix.errors import ModelError
from facefix.models import catalog, manager
from facefix.models.catalog import ModelCard


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


def test_list_says_when_a_package_carries_the_weights(tmp_path: Path, monkeypatch, capsys) -> None:
    """dlib's identity weights come from the face-recognition-models package when the models folder lacks them."""
    from facefix import identity_dlib

    monkeypatch.setenv("FACEFIX_MODELS", str(tmp_path))
    for found, state in ((tmp_path / "in-a-package.dat", "package"), (None, "no")):
        monkeypatch.setattr(identity_dlib, "_package_weights", lambda found=found: found)
        args = _parse(["models", "list"])
        assert args.func(args) == 0
        rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:-1]}
        assert state in rows["dlib-resnet-v1"]


def _add_card(monkeypatch: pytest.MonkeyPatch, card: ModelCard) -> None:
    """Put ``card`` in the global catalogue for one test (the catalogue itself is read-only)."""
    cards = MappingProxyType({**catalog.CATALOG, card.name: card})
    monkeypatch.setattr(catalog, "CATALOG", cards)
    monkeypatch.setattr(manager, "CATALOG", cards)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_error_line(err: str) -> str:
    """The single ``facefix: error: ...`` line the CLI printed on stderr (asserts there is exactly one)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("facefix: error: "), lines[0]
    return lines[0]


def test_verify_exit_codes(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FACEFIX_MODELS", str(tmp_path))
    args = _parse(["models", "verify", "codeformer"])
    assert args.func(args) == 1  # asked for by name and missing
    out, err = capsys.readouterr()
    assert "codeformer: missing" in out
    assert "codeformer" in _one_error_line(err) and "not installed" in err
    (tmp_path / "GFPGANv1.4.pth").write_bytes(b"not the release file")
    args = _parse(["models", "verify"])
    assert args.func(args) == 1
    out, err = capsys.readouterr()
    assert "gfpgan-1.4: bad-checksum" in out and "codeformer: missing" in out
    assert "gfpgan-1.4" in _one_error_line(err) and "does not match" in err


def test_verify_with_nothing_installed_fails(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FACEFIX_MODELS", str(tmp_path / "empty"))
    args = _parse(["models", "verify"])
    assert args.func(args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    line = _one_error_line(err)
    assert f"no model files are installed in {tmp_path / 'empty'}; nothing to verify" in line
    assert "facefix models pull NAME" in line


def test_verify_named_models_not_installed(tmp_path: Path, monkeypatch, capsys, tiny_model_file) -> None:
    card = tiny_model_file.card()
    _add_card(monkeypatch, card)
    monkeypatch.setenv("FACEFIX_MODELS", str(tmp_path))
    (tmp_path / "tiny_rf.pth").write_bytes(tiny_model_file.data)
    args = _parse(["models", "verify", "tiny-rf"])
    assert args.func(args) == 0
    assert capsys.readouterr() == ("tiny-rf: ok\n", "")
    args = _parse(["models", "verify", "tiny-rf", "codeformer", "restoreformer"])
    assert args.func(args) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == ["tiny-rf: ok", "codeformer: missing", "restoreformer: missing"]
    assert _one_error_line(err) == (
        f"facefix: error: codeformer, restoreformer: not installed in {tmp_path} "
        "(`facefix models pull NAME` or `facefix models import FILE`)"
    )
    args = _parse(["models", "verify", "gfpgan-9"])
    assert args.func(args) == 1
    assert "unknown model 'gfpgan-9'" in _one_error_line(capsys.readouterr().err)


def test_pull_and_import_report_errors_as_one_line(tmp_path: Path, monkeypatch, capsys, file_server) -> None:
    monkeypatch.setenv("FACEFIX_MODELS", str(tmp_path / "m"))
    file_server.files["/GFPGANv1.4.pth"] = b"a mirror serving the wrong bytes"
    args = _parse(["models", "pull", "gfpgan-1.4", "--url", file_server.url("/GFPGANv1.4.pth"), "--quiet"])
    assert args.func(args) == 1
    assert "does not match" in _one_error_line(capsys.readouterr().err)
    assert not manager.model_path("gfpgan-1.4").exists()
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == []  # no .part, no lock file

    stray = tmp_path / "stray.pth"
    stray.write_bytes(b"hello")
    args = _parse(["models", "import", str(stray)])
    assert args.func(args) == 1
    assert hashlib.sha256(b"hello").hexdigest() in _one_error_line(capsys.readouterr().err)


def test_failed_pull_leaves_no_lock_file(tmp_path: Path, monkeypatch, capsys, file_server) -> None:
    folder = tmp_path / "m"
    monkeypatch.setenv("FACEFIX_MODELS", str(folder))
    for url in (file_server.url("/missing"), f"http://127.0.0.1:{_free_port()}/GFPGANv1.4.pth"):
        args = _parse(["models", "pull", "gfpgan-1.4", "--url", url, "--quiet"])
        assert args.func(args) == 1
        assert "download from" in _one_error_line(capsys.readouterr().err)
        assert list(folder.iterdir()) == []


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "nope.pth: file not found"),
        ("folder", "is a folder, not a model file"),
        ("unrecognised", "matches no model in the catalogue"),
        ("wrong-checksum", "does not match the catalogue's"),
        ("unknown-name", "unknown model 'gfpgan-9'"),
        ("embedded", "passthrough is embedded in FaceFix"),
        ("not-a-model", "not a model file"),
        ("wrong-architecture", "is a RestoreFormer model, not GFPGAN"),
        ("unwritable-folder", "cannot write to the models folder"),
    ],
)
def test_import_errors_are_one_facefix_error_line(
    case: str, expected: str, tmp_path: Path, monkeypatch, capsys, tiny_model_file
) -> None:
    folder = tmp_path / "models"
    monkeypatch.setenv("FACEFIX_MODELS", str(folder))
    hello = tmp_path / "hello.pth"
    hello.write_bytes(b"hello")
    argv = {
        "missing": [str(tmp_path / "nope.pth")],
        "folder": [str(tmp_path)],
        "unrecognised": [str(hello)],
        "wrong-checksum": [str(hello), "--name", "gfpgan-1.4"],
        "unknown-name": [str(hello), "--name", "gfpgan-9"],
        "embedded": [str(hello), "--name", "passthrough"],
        "not-a-model": [str(hello), "--name", "junk"],
        "wrong-architecture": [str(tiny_model_file.path)],
        "unwritable-folder": [str(tiny_model_file.path)],
    }[case]
    if case == "not-a-model":
        junk = ModelCard(
            "junk", "restorer", "GFPGAN", None, hashlib.sha256(b"hello").hexdigest(), "junk.pth", "MIT", True
        )
        _add_card(monkeypatch, junk)
    if case == "wrong-architecture":
        # The tiny RestoreFormer's sha256, on a card that asks for GFPGAN.
        fake = ModelCard(
            "fake-gfpgan", "restorer", "GFPGAN", None, tiny_model_file.sha256, "fake.pth", "MIT", True
        )
        _add_card(monkeypatch, fake)
    if case == "unwritable-folder":
        folder.write_text("a file where the models folder should be")
    args = _parse(["models", "import", *argv])
    assert args.func(args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert expected in _one_error_line(err)
    if folder.is_dir():
        assert list(folder.iterdir()) == []  # a refused import leaves nothing behind


def test_pull_warns_about_non_commercial_licence(tmp_path: Path, monkeypatch, capsys, file_server) -> None:
    monkeypatch.setenv("FACEFIX_MODELS", str(tmp_path))
    args = _parse(["models", "pull", "codeformer", "--url", file_server.url("/missing"), "--quiet"])
    assert args.func(args) == 1
    note, error = capsys.readouterr().err.strip().splitlines()
    assert note.startswith("note: ") and "NON-COMMERCIAL" in note
    assert error.startswith("facefix: error: ") and "HTTP 404" in error


def test_list_error_is_one_facefix_error_line(tmp_path: Path, monkeypatch, capsys) -> None:
    def unreadable(*args: object, **kwargs: object) -> None:
        raise ModelError(f"{tmp_path}/GFPGANv1.4.pth: cannot read model file (Permission denied)")

    monkeypatch.setattr(manager, "verify", unreadable)
    args = _parse(["models", "list"])
    assert args.func(args) == 1
    out, err = capsys.readouterr()
    assert out == "" and "cannot read model file" in _one_error_line(err)
