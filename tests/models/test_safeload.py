"""Safe weight loading: safetensors and weights-only pickles; nothing in a file ever runs."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from facefix.errors import ModelError
from facefix.models.safeload import load_state_dict, unwrap_state_dict


def _weights() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "conv.bias": torch.randn(4, generator=g)}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("wrapper", [None, "params_ema", "params", "state_dict"])
def test_pth_containers_are_unwrapped(tmp_path: Path, wrapper: str | None) -> None:
    weights = _weights()
    obj = weights if wrapper is None else {wrapper: weights, "iter": 400000}
    path = tmp_path / "m.pth"
    torch.save(obj, path)
    assert _same(load_state_dict(path), weights)


def test_params_ema_preferred_over_params(tmp_path: Path) -> None:
    ema = _weights()
    raw = {k: v + 1 for k, v in ema.items()}
    torch.save({"params": raw, "params_ema": ema}, tmp_path / "m.pth")
    assert _same(load_state_dict(tmp_path / "m.pth"), ema)


def test_module_prefix_and_nested_containers() -> None:
    weights = _weights()
    nested = {"state_dict": {"params_ema": {f"module.{k}": v for k, v in weights.items()}}}
    assert _same(unwrap_state_dict(nested), weights)


def test_safetensors_by_extension_and_by_header(tmp_path: Path) -> None:
    weights = _weights()
    save_file(weights, str(tmp_path / "m.safetensors"))
    assert _same(load_state_dict(tmp_path / "m.safetensors"), weights)
    (tmp_path / "m.safetensors").rename(tmp_path / "renamed.pth")  # wrong extension, right content
    assert _same(load_state_dict(tmp_path / "renamed.pth"), weights)


def _assert_refused(path: Path) -> str:
    with pytest.raises(ModelError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_not_models_are_refused_with_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    _assert_refused(text)

    noise = tmp_path / "noise.pth"
    noise.write_bytes(os.urandom(4096))
    _assert_refused(noise)

    buf = io.BytesIO()
    torch.save(_weights(), buf)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert zipfile.is_zipfile(io.BytesIO(buf.getvalue()))
    _assert_refused(truncated)

    bad_st = tmp_path / "broken.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    _assert_refused(bad_st)

    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    _assert_refused(empty)

    no_tensors = tmp_path / "config.pth"
    torch.save({"lr": 0.1, "epochs": 3}, no_tensors)
    assert "no weight tensors" in _assert_refused(no_tensors)

    _assert_refused(tmp_path / "absent.pth")


class _Payload:
    """Unpickling this runs ``marker.touch()`` through __reduce__ (a code-execution payload)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_malicious_pickles_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    # As a torch zip checkpoint, hidden beside real weights ...
    in_zip = tmp_path / "evil.pth"
    torch.save({"params_ema": _weights(), "extra": _Payload(marker)}, in_zip)
    # ... and as a bare (legacy-style) pickle.
    bare = tmp_path / "evil_bare.ckpt"
    bare.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}, protocol=2))
    # The payload is real: unrestricted unpickling would run it (checked on a copy, then removed).
    pickle.loads(bare.read_bytes())
    assert marker.exists()
    marker.unlink()

    for path in (in_zip, bare):
        message = _assert_refused(path)
        assert "nothing in it was run" in message
        assert not marker.exists()
