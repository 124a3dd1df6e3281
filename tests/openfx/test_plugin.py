"""The OpenFX plug-in, driven by the ctypes test host against the real bridge (in-process, stand-in face model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import pytest

from facefix.bridge.client import Bridge

from .conftest import FIRST, REPO, SIZE, N, libasan

ROD = (10.0, 20.0, 10.0 + SIZE[1], 20.0 + SIZE[0])  # a region of definition off the origin
SETTINGS = {"model": "gfpgan-1.4", "device": "cpu", "temporal": 0.5}


def _host(ofx, bundle, clip, depth="OfxBitDepthFloat", negative_row_bytes=False, frames=None):
    pixels, tracks = clip
    host = ofx.Host(str(bundle))
    host.source(frames or (lambda n: pixels[n - FIRST] if FIRST <= n < FIRST + N else None), ROD,
                (FIRST, FIRST + N - 1), depth=depth, negative_row_bytes=negative_row_bytes)
    host.set("device", 1)  # cpu
    host.set("tracks", json.dumps(tracks))
    return host


def _through_bridge(server, pixels, numbers, render, settings, tracks, depth="float32"):
    """What the bridge itself returns for these frames (the Python client, shared memory)."""
    bridge = Bridge(server.url, server.token)
    segs = []
    try:
        src = shared_memory.SharedMemory(name=f"facefix-test-{uuid.uuid4().hex[:10]}", create=True, size=pixels.nbytes)
        dst = shared_memory.SharedMemory(name=f"facefix-test-{uuid.uuid4().hex[:10]}", create=True, size=pixels[0].nbytes)
        segs = [src, dst]
        np.ndarray(pixels.shape, pixels.dtype, buffer=src.buf)[...] = pixels
        _, h, w, c = pixels.shape
        bridge.restore_frames({"width": w, "height": h, "channels": c, "depth": depth, "input": src.name,
                               "output": dst.name, "frames": list(numbers), "render": render, "settings": settings,
                               "tracks": tracks})
        return np.ndarray(pixels[0].shape, pixels.dtype, buffer=dst.buf).copy()
    finally:
        for s in segs:
            s.close()
            s.unlink()


def test_describe_generates_the_schema_s_controls(ofx, bundle, clip, host_bridge):
    from facefix.params import schema

    with _host(ofx, bundle, clip) as host:
        d = host.descriptor.props.values
        assert d["OfxImageEffectPropSupportedContexts"] == ["OfxImageEffectContextFilter", "OfxImageEffectContextGeneral"]
        assert set(d["OfxImageEffectPropSupportedPixelDepths"]) == {"OfxBitDepthFloat", "OfxBitDepthShort", "OfxBitDepthByte"}
        assert d["OfxImageEffectPropTemporalClipAccess"] == [1]
        clips = host.context_descriptor.clips
        assert set(clips) == {"Source", "Mask", "Output"}
        assert clips["Mask"].props.get("OfxImageClipPropOptional") == 1
        assert clips["Mask"].props.get("OfxImageClipPropIsMask") == 1
        params = host.context_descriptor.params
        kinds = {"float": "OfxParamTypeDouble", "int": "OfxParamTypeInteger", "bool": "OfxParamTypeBoolean",
                 "choice": "OfxParamTypeChoice", "str": "OfxParamTypeString"}
        for p in schema()["params"]:
            got = params[p["name"]]
            assert got.kind == kinds[p["type"]], p["name"]
            assert got.props.get("OfxParamPropAnimates") == int(p["animatable"]), p["name"]
            default = got.props.get("OfxParamPropDefault")
            if p["type"] == "choice":
                assert got.props.values["OfxParamPropChoiceOption"] == [str(c) for c in p["choices"]]
                assert default == p["choices"].index(p["default"])
            else:
                assert default == p["default"], p["name"]
            if p["min"] is not None:
                assert got.props.get("OfxParamPropMin") == p["min"] and got.props.get("OfxParamPropMax") == p["max"]
        assert params["analyse"].kind == "OfxParamTypePushButton"
        assert params["tracks"].props.get("OfxParamPropSecret") == 1
        roi = host.regions_of_interest(FIRST)
        assert roi.values["OfxImageClipPropRoI_Source"] == list(ROD)


def test_the_generated_parameter_header_is_up_to_date():
    done = subprocess.run([sys.executable, str(REPO / "openfx" / "generate_params.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_float_render_equals_the_bridge_bit_for_bit(ofx, bundle, clip, host_bridge, fake_model):
    pixels, tracks = clip
    t, window = FIRST + 2, (20, 30, 70, 80)
    outs = []
    for negative_row_bytes in (False, True):
        with _host(ofx, bundle, clip, negative_row_bytes=negative_row_bytes) as host:
            host.set_keys("strength", {FIRST: 0.25, FIRST + 3: 1.0})  # animated: each frame gets its own value
            assert host.frames_needed(t) == [t - 4, t]  # --temporal 0.5 reads 4 frames back
            host.set("deboil", 0.5)
            assert host.frames_needed(t) == [t - 7, t + 3]  # de-boil reads 3 more either side
            host.set("deboil", 0.0)
            outs.append(host.render(t, window=window))
    settings = {**SETTINGS, "strength": {str(n): 0.25 + 0.25 * (n - FIRST) for n in range(FIRST, FIRST + N)}}
    want = _through_bridge(host_bridge, pixels, range(FIRST, FIRST + N), t, settings, tracks)
    # The window, in the frame's top-down rows: y counts up from ROD's bottom.
    rows = slice(int(ROD[3]) - window[3], int(ROD[3]) - window[1])
    cols = slice(window[0] - int(ROD[0]), window[2] - int(ROD[0]))
    for out in outs:
        assert np.array_equal(out[rows, cols], want[rows, cols])
        assert np.isnan(out[0, 0, 0])  # outside the render window: left as the host had it
    assert not np.array_equal(want, pixels[2])  # (that the bridge's call equals Session.restore: tests/bridge)


@pytest.mark.parametrize("depth, dtype", [("OfxBitDepthShort", np.uint16), ("OfxBitDepthByte", np.uint8)])
def test_integer_renders_equal_the_bridge(ofx, bundle, clip, host_bridge, fake_model, depth, dtype):
    pixels, tracks = clip
    codes = np.round(pixels * np.iinfo(dtype).max).astype(dtype)
    with _host(ofx, bundle, (codes, tracks), depth=depth, frames=lambda n: codes[n - FIRST]) as host:
        host.set("temporal", 0.0)
        out = host.render(FIRST + 1)
    want = _through_bridge(host_bridge, codes[1:2], [FIRST + 1], FIRST + 1, {**SETTINGS, "temporal": 0.0}, tracks,
                           depth=np.dtype(dtype).name)
    assert out.dtype == dtype and np.array_equal(out, want)
    assert not np.array_equal(out, codes[1])


def test_a_zero_mask_leaves_the_frame_as_it_was(ofx, bundle, clip, host_bridge, fake_model):
    pixels, _ = clip
    with _host(ofx, bundle, clip) as host:
        host.set("temporal", 0.0)
        host.mask(lambda n: np.zeros(SIZE + (1,), np.float32))
        out = host.render(FIRST)
    assert np.array_equal(out, pixels[0])


def test_analyse_stores_the_clip_s_tracks(ofx, bundle, clip, host_bridge):
    from facefix.faces import FaceTracks

    with _host(ofx, bundle, clip) as host:
        host.set("tracks", "")
        host.set("min_face", 8)
        host.press("analyse", FIRST)
        tracks = FaceTracks.from_json(json.loads(host.get("tracks")))
    assert tracks.metadata["frames"] == [FIRST, FIRST + N - 1]


def _error(ofx, host, call, *args):
    with pytest.raises(ofx.OfxError) as err:
        call(*args)
    assert err.value.status == 1  # kOfxStatFailed
    assert err.value.messages and err.value.messages[-1].startswith("OfxMessageError: FaceFix: ")
    return err.value.messages[-1]


def test_bad_cases_are_host_errors(ofx, bundle, clip, host_bridge, fake_model, tmp_path, monkeypatch):
    pixels, _ = clip
    with _host(ofx, bundle, clip) as host:
        host.set("tracks", "")
        assert "press Analyse" in _error(ofx, host, host.render, FIRST)
    with _host(ofx, bundle, clip) as host:
        host.mask(lambda n: None)  # connected, but the host has no image
        assert "no Mask image" in _error(ofx, host, host.render, FIRST)
    half = pixels.astype(np.float16)
    with _host(ofx, bundle, (half, clip[1]), depth="OfxBitDepthHalf", frames=lambda n: half[n - FIRST]) as host:
        assert "pixel depth OfxBitDepthHalf or components OfxImageComponentRGBA are not supported" in _error(
            ofx, host, host.render, FIRST)
    codes = (pixels * 65535).astype(np.uint16)  # a float clip whose host hands over 16-bit images
    with _host(ofx, bundle, clip, frames=lambda n: codes[n - FIRST]) as host:
        assert "not in the clip's pixel depth" in _error(ofx, host, host.render, FIRST)
    with _host(ofx, bundle, clip) as host:
        assert "full resolution" in _error(ofx, host, host.render, FIRST, None, 0.5)
        host.set("upscale", 1)
        assert "upscale" in _error(ofx, host, host.render, FIRST)
    # The bridge down: no connection file, then one naming a port nobody listens on.
    monkeypatch.setenv("FACEFIX_CACHE", str(tmp_path / "none"))
    with _host(ofx, bundle, clip) as host:
        assert "no FaceFix bridge is running" in _error(ofx, host, host.render, FIRST)
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "serve.json").write_text(json.dumps({"url": "http://127.0.0.1:9", "token": "x", "pid": 1}))
    monkeypatch.setenv("FACEFIX_CACHE", str(stale))
    with _host(ofx, bundle, clip) as host:
        assert "cannot reach the FaceFix bridge" in _error(ofx, host, host.render, FIRST)
        assert "cannot reach" in _error(ofx, host, host.press, "analyse", FIRST)


ASAN_SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import ofx_host
pixels = np.load(sys.argv[3])
tracks = open(sys.argv[4]).read()
for depth, data, negative in (("OfxBitDepthFloat", pixels, True), ("OfxBitDepthShort", (pixels * 65535).astype(np.uint16), False)):
    host = ofx_host.Host(sys.argv[2])
    host.source(lambda n: data[n - 1001] if 1001 <= n < 1001 + len(data) else None, (3, 5, 3 + data.shape[2], 5 + data.shape[1]),
                (1001, 1000 + len(data)), depth=depth, negative_row_bytes=negative)
    host.set("device", 1)
    host.set("tracks", tracks)
    out = host.render(1002, window=(10, 12, 40, 50))
    host.mask(lambda n: None)
    try:
        host.render(1002)
    except ofx_host.OfxError as err:
        assert "Mask" in str(err), err
    host.set("tracks", "")
    try:
        host.render(1001)
    except ofx_host.OfxError as err:
        assert "Analyse" in str(err), err
    host.close()
print("ok")
"""


def test_the_plugin_runs_clean_under_asan_and_ubsan(clip, host_bridge, fake_model, tmp_path, sanitized_bundle):
    preload = libasan()
    if preload is None:
        pytest.skip("no libasan")
    sanitized = sanitized_bundle
    pixels, tracks = clip
    np.save(tmp_path / "pixels.npy", pixels)
    (tmp_path / "tracks.json").write_text(json.dumps(tracks))
    env = {**os.environ, "LD_PRELOAD": preload, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    done = subprocess.run([sys.executable, "-c", ASAN_SCRIPT, str(Path(__file__).parent), str(sanitized),
                           str(tmp_path / "pixels.npy"), str(tmp_path / "tracks.json")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-4000:]
    assert "runtime error" not in done.stderr and "AddressSanitizer" not in done.stderr


def test_the_bundle_loads_on_older_systems(bundle):
    """Hosts run on EL8 (glibc 2.28): the bundle asks for no glibc symbol version newer than 2.17."""
    import re
    import shutil

    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("no objdump")
    symbols = subprocess.run([objdump, "-T", str(bundle)], capture_output=True, text=True, check=True).stdout
    versions = {tuple(int(v) for v in m.split(".")) for m in re.findall(r"GLIBC_(\d+\.\d+(?:\.\d+)?)", symbols)}
    assert versions and max(versions) <= (2, 17), sorted(versions)
