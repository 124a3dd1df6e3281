"""The bridge's frame-by-frame endpoints (POST /frames, /frames/window, /analyses): frames in POSIX shared memory."""

from __future__ import annotations

import uuid
from multiprocessing import shared_memory

import numpy as np
import pytest

from facefix.bridge.client import BridgeError

FIRST = 1001


@pytest.fixture(scope="module")
def clip():
    """4 float RGBA frames (64 x 80) of a moving real face and its tracks."""
    from facefix import Face, FaceTracks
    from facefix.demo import synth

    made = synth.motion_clip(4, (64, 80), translate=(1, 1), rotate_deg=1.0, start_scale=0.6)
    frames, per = [], {}
    for i, (rgb, lm) in enumerate(zip(made.frames, made.landmarks)):
        alpha = np.full(rgb.shape[:2] + (1,), 0.75, np.float32)
        frames.append(np.concatenate([rgb.astype(np.float32), alpha], axis=2))
        per[FIRST + i] = [Face(box=(*(lm.min(0) - 8), *(lm.max(0) + 8)), landmarks=lm, track_id=0)]
    return np.stack(frames), FaceTracks.from_json(FaceTracks.from_faces(per).to_json())  # as JSON carries them


@pytest.fixture
def segments():
    """make(array or nbytes) -> a host-owned segment named facefix-...; all unlinked after the test."""
    made: list[shared_memory.SharedMemory] = []

    def make(data):
        size = data if isinstance(data, int) else data.nbytes
        shm = shared_memory.SharedMemory(name=f"facefix-test-{uuid.uuid4().hex[:12]}", create=True, size=size)
        made.append(shm)
        if not isinstance(data, int):
            np.ndarray(data.shape, data.dtype, buffer=shm.buf)[...] = data
        return shm

    yield make
    for shm in made:
        shm.close()
        shm.unlink()


def _request(clip, frames, src, dst, **extra):
    pixels, tracks = clip
    _, h, w, c = pixels.shape
    body = {"width": w, "height": h, "channels": c, "depth": "float32", "input": src.name, "output": dst.name,
            "frames": frames, "settings": {"model": "gfpgan-1.4", "device": "cpu", "temporal": 0.5},
            "tracks": tracks.to_json()}
    body.update(extra)
    return body


def test_a_frame_through_shared_memory_equals_the_session_bit_for_bit(bridge, models, clip, segments):
    from facefix.api import Session

    pixels, tracks = clip
    window = bridge.frame_window({"temporal": 0.5, "deboil": 0.5})
    assert window == {"preroll": 4 + 3, "lookahead": 3}
    numbers = [FIRST, FIRST + 1, FIRST + 2, FIRST + 3]
    src, dst = segments(pixels), segments(pixels[0].nbytes)
    answer = bridge.restore_frames(_request(clip, numbers, src, dst, render=FIRST + 2))
    assert answer["frame"] == FIRST + 2
    got = np.ndarray(pixels[0].shape, np.float32, buffer=dst.buf).copy()
    with Session({"model": "gfpgan-1.4", "device": "cpu", "temporal": 0.5}) as session:
        want = session.restore(list(pixels), tracks, numbers, lookahead=1)[-1].image
    assert np.array_equal(got, want)
    assert not np.array_equal(got, pixels[2])  # the face changed
    assert np.array_equal(got[..., 3], pixels[2][..., 3])  # alpha passes through
    # A fresh temporal state per request: the same request again gives the same frame.
    bridge.restore_frames(_request(clip, numbers, src, dst, render=FIRST + 2))
    assert np.array_equal(np.ndarray(pixels[0].shape, np.float32, buffer=dst.buf), want)


def test_a_mask_limits_the_fix(bridge, models, clip, segments):
    pixels, _ = clip
    mask = np.zeros(pixels.shape[:3] + (1,), np.float32)
    src, dst, msk = segments(pixels[:1]), segments(pixels[0].nbytes), segments(mask[:1])
    bridge.restore_frames(_request(clip, [FIRST], src, dst, mask=msk.name, mask_channels=1))
    assert np.array_equal(np.ndarray(pixels[0].shape, np.float32, buffer=dst.buf), pixels[0])


@pytest.mark.parametrize("change, message", [
    ({"input": "not-ours"}, "shared memory segment name"),
    ({"input": "facefix-missing-segment"}, "no shared memory segment"),
    ({"width": 4096}, "bytes"),
    ({"tracks": None}, "analyse the clip first"),
    ({"settings": {"upscale": 2}}, "upscale"),
    ({"depth": "half"}, "depth"),
    ({"render": 7}, "render"),
    ({"extra": 1}, "unknown frames request field"),
])
def test_bad_frame_requests_are_refused_in_one_line(bridge, models, clip, segments, change, message):
    pixels, _ = clip
    src, dst = segments(pixels[:1]), segments(pixels[0].nbytes)
    with pytest.raises(BridgeError, match=message) as err:
        bridge.restore_frames(_request(clip, [FIRST], src, dst, **change))
    assert err.value.status == 400
    assert "\n" not in str(err.value)


def test_an_analysis_tracks_the_frames_the_host_hands_over(bridge, clip, segments):
    from facefix import FaceTracks

    pixels, _ = clip
    _, h, w, c = pixels.shape
    numbers = [FIRST + i for i in range(len(pixels))]
    analysis = bridge.start_analysis({"width": w, "height": h, "channels": c, "depth": "float32",
                                      "frames": numbers, "settings": {"device": "cpu", "min_face": 8}})
    with pytest.raises(BridgeError, match="still to give"):
        bridge.analysis_result(analysis)
    for n, frame in zip(numbers, pixels):
        seg = segments(frame)
        assert bridge.give_frame(analysis, seg.name, n)["total"] == len(numbers)
    with pytest.raises(BridgeError, match="not a frame of this analysis"):
        bridge.give_frame(analysis, seg.name, FIRST)
    result = bridge.analysis_result(analysis)
    tracks = FaceTracks.from_json(result["tracks"])
    assert result["frames"] == len(numbers)
    assert tracks.metadata["frames"] == [numbers[0], numbers[-1]]
    with pytest.raises(BridgeError, match="no analysis"):
        bridge.analysis_result(analysis)


# -- hosts sending nonsense -----------------------------------------------------------------------------------


def _segment_file(name: str):
    from pathlib import Path

    return Path("/dev/shm") / name


@pytest.mark.skipif(not _segment_file("").is_dir(), reason="POSIX shared memory in /dev/shm")
def test_segments_that_are_links_or_not_the_bridge_user_s_are_refused(bridge, models, clip, segments, tmp_path):
    import os

    pixels, _ = clip
    src, dst = segments(pixels[:1]), segments(pixels[0].nbytes)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"\0" * pixels[0].nbytes)
    link = _segment_file(f"facefix-test-link-{uuid.uuid4().hex[:8]}")
    link.symlink_to(target)
    try:
        with pytest.raises(BridgeError, match="cannot open") as err:
            bridge.restore_frames(_request(clip, [FIRST], src, dst, output=link.name))
        assert err.value.status == 400
        assert target.read_bytes() == b"\0" * pixels[0].nbytes  # nothing written through the link
    finally:
        link.unlink()
    for bad in ("facefix-../../etc/passwd", "/dev/shm/facefix-x", "facefix-a/b", "FACEFIX-x", "facefix-"):
        with pytest.raises(BridgeError, match="shared memory segment name"):
            bridge.restore_frames(_request(clip, [FIRST], src, dst, output=bad))
    if os.geteuid() == 0:  # another user's segment (making one needs chown)
        other = _segment_file(f"facefix-test-other-{uuid.uuid4().hex[:8]}")
        other.write_bytes(b"\0" * pixels[0].nbytes)
        os.chown(other, 65534, 65534)
        try:
            with pytest.raises(BridgeError, match="bridge's own user"):
                bridge.restore_frames(_request(clip, [FIRST], src, dst, output=other.name))
        finally:
            other.unlink()


def test_a_segment_shrunk_mid_request_never_takes_the_bridge_down(bridge, models, clip, segments, monkeypatch):
    """A mapping of a segment the host truncates would SIGBUS the bridge; copies only see a short file."""
    from facefix.bridge import server as server_module

    pixels, _ = clip
    src, dst = segments(pixels[:2]), segments(pixels[0].nbytes)
    shrink = server_module._Segment.read

    def read_after_shrinking(self):
        if self.what == "input":
            _segment_file(self.name).write_bytes(b"")  # the host truncates its segment
        return shrink(self)

    monkeypatch.setattr(server_module._Segment, "read", read_after_shrinking)
    with pytest.raises(BridgeError, match="shrank while being read") as err:
        bridge.restore_frames(_request(clip, [FIRST, FIRST + 1], src, dst))
    assert err.value.status == 400
    monkeypatch.setattr(server_module, "_frames_of", _truncating(server_module._frames_of, src.name))
    monkeypatch.setattr(server_module._Segment, "read", shrink)
    src2 = segments(pixels[:2])
    bridge.restore_frames(_request(clip, [FIRST, FIRST + 1], src2, dst))  # truncated after the copy: harmless
    assert bridge.health()["ok"]


def _truncating(frames_of, name):
    def call(*args, **kw):
        _segment_file(name).write_bytes(b"")
        return frames_of(*args, **kw)

    return call


@pytest.mark.parametrize("method, path", [("POST", "/frames"), ("POST", "/frames/window"), ("POST", "/analyses"),
                                          ("POST", "/analyses/abc/frames"), ("GET", "/analyses/abc"),
                                          ("DELETE", "/analyses/abc")])
def test_the_frame_endpoints_need_the_token(server, method, path):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=10)
    conn.request(method, path, body=b"{}" if method == "POST" else None,
                 headers={"Authorization": "Bearer wrong", "Content-Type": "application/json"})
    answer = conn.getresponse()
    assert answer.status == 401
    conn.close()
    assert server.url.startswith("http://127.0.0.1:")


def test_a_client_that_stalls_mid_request_is_cut_off(server, monkeypatch):
    import socket

    from facefix.bridge import server as server_module

    monkeypatch.setattr(server_module._Handler, "timeout", 0.5)
    sock = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10)
    try:
        sock.sendall(b"POST /frames HTTP/1.1\r\nAuthorization: Bearer " + server.token.encode()
                     + b"\r\nContent-Length: 100\r\n\r\n{")  # then nothing more
        answer = b""
        while chunk := sock.recv(4096):  # the bridge answers and closes, rather than waiting forever
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive in time" in answer
    finally:
        sock.close()
    from facefix.bridge.client import Bridge

    assert Bridge(server.url, server.token, timeout=10).health()["ok"]


def test_huge_frames_are_refused_before_any_segment_is_read(bridge, models, clip, segments):
    pixels, _ = clip
    src, dst = segments(pixels[:1]), segments(pixels[0].nbytes)
    for change in ({"width": 1 << 40}, {"height": -1}, {"width": 0}, {"channels": 7}, {"mask_channels": 9}):
        extra = {"mask": src.name} if "mask_channels" in change else {}
        with pytest.raises(BridgeError, match="expected a whole number") as err:
            bridge.restore_frames(_request(clip, [FIRST], src, dst, **change, **extra))
        assert err.value.status == 400
