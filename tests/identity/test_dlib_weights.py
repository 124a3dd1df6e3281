"""Where the dlib weights come from: the models folder (pulled as dlib's .bz2, or imported) and the package.

Pulls go to a local HTTP server; the files served are the real .dat (from ``face-recognition-models``)
compressed here, so the catalogue's sha256 is checked on the real bytes.
"""

from __future__ import annotations

import bz2
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from facefix.errors import ChecksumError, ModelError
from facefix.identity_dlib import (
    MODEL_NAME,
    WEIGHTS_FILENAME,
    WEIGHTS_SHA256,
    find_weights,
    load_dlib_embedder,
)
from facefix.models import manager
from facefix.models.catalog import get_card

PACKAGED = find_weights()
pytestmark = pytest.mark.skipif(PACKAGED is None, reason="dlib weights not installed (pip install face-recognition-models)")


@pytest.fixture(scope="module")
def dat() -> bytes:
    assert PACKAGED is not None
    return Path(PACKAGED).read_bytes()


@pytest.fixture(scope="module")
def dat_bz2(dat: bytes) -> bytes:
    return bz2.compress(dat, compresslevel=1)


@pytest.fixture()
def served() -> Iterator[tuple[str, dict[str, bytes]]]:
    """(base URL, path -> bytes) of a throwaway HTTP server on 127.0.0.1."""
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            data = files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_card():
    card = get_card(MODEL_NAME)
    assert card.role == "identity" and card.compression == "bz2" and card.commercial_use
    assert card.url == "http://dlib.net/files/dlib_face_recognition_resnet_model_v1.dat.bz2"
    assert card.sha256 == WEIGHTS_SHA256 and card.filename == WEIGHTS_FILENAME
    assert "public domain" in card.license.lower()


def test_pull_decompresses_verifies_and_is_found_first(served, dat, dat_bz2, tmp_path, monkeypatch):
    base, files = served
    files["/files/m.dat.bz2"] = dat_bz2
    folder = tmp_path / "models"
    monkeypatch.setenv("FACEFIX_MODELS", str(folder))
    path = manager.pull(MODEL_NAME, url=base + "/files/m.dat.bz2", progress=False)
    assert path == folder / WEIGHTS_FILENAME and path.read_bytes() == dat
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".facefix-verified")) == [WEIGHTS_FILENAME]
    assert manager.resolve(MODEL_NAME) == path
    assert find_weights() == path  # the models folder wins over the package
    assert load_dlib_embedder().name == MODEL_NAME


def test_mirror_may_hold_the_plain_file(served, dat, tmp_path, monkeypatch):
    base, files = served
    files["/mirror/" + WEIGHTS_FILENAME] = dat
    monkeypatch.setenv("FACEFIX_MODEL_MIRROR", base + "/mirror")
    path = manager.pull(MODEL_NAME, progress=False, directory=tmp_path)
    assert path.read_bytes() == dat


@pytest.mark.parametrize("payload", ["other", "corrupt"])
def test_wrong_or_corrupt_download_leaves_nothing(served, dat_bz2, tmp_path, payload):
    base, files = served
    files["/x.bz2"] = bz2.compress(b"not the model") if payload == "other" else dat_bz2[:100] + bytes(500)
    with pytest.raises(ChecksumError) as err:
        manager.pull(MODEL_NAME, url=base + "/x.bz2", progress=False, directory=tmp_path)
    assert "\n" not in str(err.value)
    assert ("does not match" if payload == "other" else "not a valid .bz2") in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_import_of_the_bz2_by_checksum(dat, dat_bz2, tmp_path):
    src = tmp_path / "dlib_face_recognition_resnet_model_v1.dat.bz2"
    src.write_bytes(dat_bz2)
    path = manager.import_file(src, directory=tmp_path / "models")
    assert path.name == WEIGHTS_FILENAME and path.read_bytes() == dat
    broken = tmp_path / "broken.dat.bz2"
    broken.write_bytes(dat_bz2[:100] + bytes(500))
    with pytest.raises(ModelError, match="not a valid .bz2") as err:
        manager.import_file(broken, MODEL_NAME, directory=tmp_path / "models2")
    assert "\n" not in str(err.value)
    assert not any((tmp_path / "models2").iterdir())
