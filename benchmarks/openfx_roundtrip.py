#!/usr/bin/env python3
"""A frame's round trip through the OpenFX plug-in (host memory -> bridge -> host memory) against the bridge's
own shared-memory frame call (POST /frames from Python, the frames already in shared memory).

Builds the bundle with CMake into a temporary folder (or takes a prebuilt one: --bundle), starts the real
`facefix serve` (its own cache folder) with random-init GFPGAN v1.4 weights (`facefix.demo.synth.random_gfpgan`:
the real network's size and FLOPs) as its --model-path, and renders --frames frames of a synthetic clip of a real
face (float RGBA, its FaceTracks given, so no detection is timed) both ways, after one warm-up frame each way.
The plug-in is driven by the ctypes test host (tests/openfx/ofx_host.py) with the host's own buffers (its source
frames handed over in place, with negative row bytes; one reused output buffer). Prints JSON (and writes it to
--out): ms/frame both ways and the ratio (plug-in / bridge; 1.2 = the plug-in adds 20 %).

  python benchmarks/openfx_roundtrip.py --device cuda --frames 32 --size 1080p --out benchmarks/results/h100_openfx_roundtrip.json
  python benchmarks/openfx_roundtrip.py --device cpu --frames 8 --size 1080p --model passthrough   # CPU: the trip alone
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))
FIRST = 1001
SIZES = {"1080p": (1080, 1920), "720p": (720, 1280)}


def load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def build_bundle(work: Path) -> Path:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise SystemExit("no cmake here: build the bundle elsewhere and pass --bundle PATH/FaceFix.ofx")
    build = work / "build"
    for argv in ([cmake, "-S", str(ROOT / "openfx"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                 [cmake, "--build", str(build)]):
        subprocess.run(argv, check=True, capture_output=True)
    return build / "FaceFix.ofx.bundle" / "Contents" / "Linux-x86-64" / "FaceFix.ofx"


def start_bridge(work: Path, device: str, weights: Path) -> tuple[subprocess.Popen, dict[str, Any]]:
    env = {**os.environ, "FACEFIX_CACHE": str(work / "cache"), "PYTHONPATH": str(ROOT / "core")}
    proc = subprocess.Popen([sys.executable, "-m", "facefix.cli", "serve", "--device", device, "--model-path",
                             str(weights)], stdout=subprocess.PIPE, stderr=open(work / "serve.log", "w"),  # noqa: SIM115
                            env=env, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.strip():
        raise SystemExit(f"facefix serve did not start: {(work / 'serve.log').read_text()[-2000:]}")
    return proc, json.loads(line)


def make_clip(frames: int, size: tuple[int, int]) -> tuple[np.ndarray, dict[str, Any]]:
    from facefix import Face, FaceTracks
    from facefix.demo import synth

    made = synth.motion_clip(frames, size, translate=(4, 2), rotate_deg=1.0, start_scale=0.6)
    pixels, per = [], {}
    for i, (rgb, lm) in enumerate(zip(made.frames, made.landmarks)):
        alpha = np.ones(rgb.shape[:2] + (1,), np.float32)
        pixels.append(np.concatenate([rgb.astype(np.float32), alpha], axis=2))
        pad = 0.15 * float(np.ptp(lm[:, 0]))
        per[FIRST + i] = [Face(box=(*(lm.min(0) - pad), *(lm.max(0) + pad)), landmarks=lm, track_id=0)]
    return np.stack(pixels), FaceTracks.from_faces(per).to_json()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if _has_cuda() else "cpu")
    parser.add_argument("--frames", type=int, default=32, help="frames timed each way (default 32)")
    parser.add_argument("--size", default="1080p", help="1080p, 720p or HxW (default 1080p)")
    parser.add_argument("--temporal", type=float, default=0.0,
                        help="the temporal control (default 0: one frame a request, the plug-in's share at its largest)")
    parser.add_argument("--model", default="gfpgan-1.4", choices=("gfpgan-1.4", "passthrough"),
                        help="gfpgan-1.4 (random-init weights, the real network's cost) or passthrough (no network: "
                             "the round trip's own cost)")
    parser.add_argument("--bundle", help="a prebuilt FaceFix.ofx (where this machine has no cmake)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    size = SIZES.get(args.size) or tuple(int(v) for v in args.size.lower().split("x"))
    if len(size) != 2:
        raise SystemExit(f"--size {args.size}: expected 1080p, 720p or HxW")
    work = Path(tempfile.mkdtemp(prefix="facefix-openfx-bench-"))
    proc = None
    try:
        bundle = Path(args.bundle).resolve() if args.bundle else build_bundle(work)
        from facefix.demo.synth import random_gfpgan

        weights = random_gfpgan(work / "gfpgan_random.safetensors")
        proc, info = start_bridge(work, args.device, weights)
        os.environ["FACEFIX_CACHE"] = str(work / "cache")  # the plug-in finds the bridge through its file
        client = load("facefix_bridge_client", ROOT / "core/facefix/bridge/client.py")
        host_module = load("facefix_ofx_host", ROOT / "tests/openfx/ofx_host.py")
        bridge = client.Bridge(info["url"], info["token"], timeout=600)
        total = args.frames + 1
        pixels, tracks = make_clip(total, size)  # type: ignore[arg-type]
        settings = {"model": args.model, "device": args.device.split(":")[0], "temporal": args.temporal}
        h, w, c = pixels.shape[1:]

        # The bridge's own frame call: every frame already in shared memory, one request a frame.
        from multiprocessing import shared_memory

        window = bridge.frame_window(settings)
        src = shared_memory.SharedMemory(name=f"facefix-bench-{uuid.uuid4().hex[:8]}", create=True, size=pixels.nbytes)
        dst = shared_memory.SharedMemory(name=f"facefix-bench-{uuid.uuid4().hex[:8]}", create=True,
                                         size=pixels[0].nbytes)
        bridge_ms = []
        try:
            frames_in = np.ndarray(pixels.shape, np.float32, buffer=src.buf)
            frames_in[...] = pixels
            for i in range(total):
                numbers = [n for n in range(FIRST + i - window["preroll"], FIRST + i + window["lookahead"] + 1)
                           if FIRST <= n < FIRST + total]
                # the window's frames, packed in order from the segment's start
                lo = numbers[0] - FIRST
                seg = shared_memory.SharedMemory(name=f"facefix-bench-{uuid.uuid4().hex[:8]}", create=True,
                                                 size=len(numbers) * pixels[0].nbytes)
                np.ndarray((len(numbers), h, w, c), np.float32, buffer=seg.buf)[...] = frames_in[lo:lo + len(numbers)]
                t = time.perf_counter()
                bridge.restore_frames({"width": w, "height": h, "channels": c, "depth": "float32", "input": seg.name,
                                       "output": dst.name, "frames": numbers, "render": FIRST + i,
                                       "settings": settings, "tracks": tracks})
                if i:
                    bridge_ms.append(1000 * (time.perf_counter() - t))
                seg.close()
                seg.unlink()
            del frames_in
        finally:
            src.close()
            src.unlink()
            dst.close()
            dst.unlink()

        # The plug-in through the host.
        host = host_module.Host(str(bundle))
        host.source(lambda n: pixels[n - FIRST] if FIRST <= n < FIRST + total else None, (0, 0, w, h),
                    (FIRST, FIRST + total - 1), negative_row_bytes=True)
        from facefix.params import param

        for name, value in settings.items():  # the same controls as the bridge's own calls (choices by index)
            control = param(name)
            host.set(name, control.choices.index(value) if control.kind == "choice" else value)
        host.set("tracks", json.dumps(tracks))
        output = np.zeros_like(pixels[0])
        plugin_ms = []
        for i in range(total):
            t = time.perf_counter()
            host.render(FIRST + i, output=output)
            if i:
                plugin_ms.append(1000 * (time.perf_counter() - t))
        host.close()
        plugin, own = statistics.median(plugin_ms), statistics.median(bridge_ms)
        result = {"benchmark": "openfx_roundtrip", "device": args.device, "gpu": _gpu_name(),
                  "cpu": platform.processor() or platform.machine(), "size": [h, w], "frames": args.frames,
                  "temporal": args.temporal, "window": window, "model": args.model + (" (random-init weights)" if args.model == "gfpgan-1.4" else ""),
                  "bridge_ms_per_frame": round(own, 2), "plugin_ms_per_frame": round(plugin, 2),
                  "ratio": round(plugin / own, 3), "plugin_added_percent": round(100 * (plugin / own - 1), 1),
                  "bridge_ms": [round(v, 2) for v in bridge_ms], "plugin_ms": [round(v, 2) for v in plugin_ms]}
        text = json.dumps(result, indent=2)
        print(text)
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(out.suffix + ".tmp")
            tmp.write_text(text + "\n")
            os.replace(tmp, out)
        return 0
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def _gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        return None


if __name__ == "__main__":
    sys.exit(main())
