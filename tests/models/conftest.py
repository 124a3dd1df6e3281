"""Fixtures for the model manager: a local HTTP server with Range support and a small real model file."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from facefix.models.catalog import ModelCard


@dataclass
class FileServer:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1; records each request's path and Range header."""

    base_url: str
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    # URL path -> number of body bytes to send before dropping the connection (used once)
    cut_after: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base_url + path


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[len("bytes=") : -1])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            cut = state.cut_after.pop(self.path, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture()
def file_server() -> Iterator[FileServer]:
    state = FileServer(base_url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def tiny_restoreformer_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random-init RestoreFormer (small widths, real key names) that spandrel detects as RestoreFormer."""
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(seed)
    model = RestoreFormer(
        n_embed=32,
        embed_dim=32,
        ch=32,
        ch_mult=(1, 1, 1, 1, 1, 1),
        num_res_blocks=1,
        z_channels=32,
        resolution=512,
    )
    return {k: v.clone() for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class ModelFile:
    path: Path
    data: bytes
    sha256: str

    def card(self, url: str | None = None, name: str = "tiny-rf", filename: str = "tiny_rf.pth") -> ModelCard:
        return ModelCard(
            name=name,
            role="restorer",
            architecture="RestoreFormer",
            url=url,
            sha256=self.sha256,
            filename=filename,
            license="Apache-2.0",
            commercial_use=True,
            size_bytes=len(self.data),
        )


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> ModelFile:
    buf = io.BytesIO()
    torch.save({"params_ema": tiny_restoreformer_state_dict()}, buf)
    data = buf.getvalue()
    path = tmp_path_factory.mktemp("src") / "tiny_rf.pth"
    path.write_bytes(data)
    return ModelFile(path, data, hashlib.sha256(data).hexdigest())
