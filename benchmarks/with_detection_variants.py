"""End to end with detection under variants of the analysis (scan thread, windows in flight, early reads for the
restore, short first and last windows, the detector networks' layout, a call's crops sampled at once or a frame's
at a time, the scan's thread switch interval, the stream a window is described on, what a network's CUDA graph
called on another stream waits for), 1080p 10-bit DPX, 96 frames: two interleaved rounds of every variant, the
median of ``--passes`` warm passes each, and the tracks-given run before and after for the ratio.

    python benchmarks/with_detection_variants.py OUT_DIR --faces 1 4
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import warm_clips  # noqa: E402

import facefix.analyse as analyse  # noqa: E402
import facefix.cuda_graphs as cuda_graphs  # noqa: E402
import facefix.detect.blazeface as blazeface  # noqa: E402
import facefix.detect.scan as scan  # noqa: E402
import facefix.detect.tflite_torch as tflite_torch  # noqa: E402
import facefix.run as run  # noqa: E402
import facefix.streaming as streaming  # noqa: E402

# name: what differs from the defaults (scan on a thread, windows in flight, the restore's first frames read early,
# the first and last windows' periods, the networks' layout on CUDA, crops a call, the scan's thread switch interval,
# a scanned window described on a stream of its own, a graph's call on another stream waiting for the last call only)
VARIANTS: dict[str, dict[str, object]] = {
    "defaults": {},
    "three_in_flight": {"in_flight": 3},
    "no_scan_thread": {"thread": False},
    "no_early_reads": {"early": False},
    "whole_first_window": {"first_periods": scan.GPU_WINDOW_PERIODS},
    "whole_last_window": {"last_periods": scan.GPU_WINDOW_PERIODS},
    "channels_last_nets": {"channels_last": True},
    "crops_by_frame": {"one_call_waste": 0},
    "python_switch_interval": {"switch": None},
    "describe_on_window_stream": {"own_describe": False},
    "graphs_wait_whole_stream": {"graph_wait": "stream"},
}
_DEFAULTS = {"thread": analyse.SCAN_ON_THREAD, "in_flight": scan.GPU_IN_FLIGHT, "early": True,
             "first_periods": scan.GPU_FIRST_WINDOW_PERIODS, "last_periods": scan.GPU_LAST_WINDOW_PERIODS,
             "channels_last": False, "one_call_waste": blazeface.ONE_CALL_WASTE,
             "switch": streaming.FEEDER_SWITCH_INTERVAL, "own_describe": analyse.DESCRIBE_ON_OWN_STREAM,
             "graph_wait": "last_call"}
_START = run._EarlyReads.start
_GRAPH_CALL = cuda_graphs.CudaGraphs.__call__


def _graph_call_after_whole_stream(self: cuda_graphs.CudaGraphs, module: object, x: torch.Tensor,
                                   fidelity: float) -> object:
    """A graph's call on another stream than the last waiting for all that stream holds (as it once did)."""
    stream = torch.cuda.current_stream(x.device)
    if self.last_stream is not None and self.last_stream != stream:
        stream.wait_stream(self.last_stream)
    return _GRAPH_CALL(self, module, x, fidelity)  # type: ignore[arg-type]
_NETWORKS: list[tflite_torch.TFLiteModule] = []  # every TFLite network the process makes from here on
_MAKE_NETWORK = tflite_torch.TFLiteModule.__init__


def _kept(self: tflite_torch.TFLiteModule, *args: object, **kwargs: object) -> None:
    _MAKE_NETWORK(self, *args, **kwargs)  # type: ignore[arg-type]
    _NETWORKS.append(self)


tflite_torch.TFLiteModule.__init__ = _kept  # type: ignore[method-assign]


def use(**overrides: object) -> None:
    chosen = {**_DEFAULTS, **overrides}
    analyse.SCAN_ON_THREAD = bool(chosen["thread"])
    scan.GPU_IN_FLIGHT = int(chosen["in_flight"])  # type: ignore[call-overload]
    run._EarlyReads.start = _START if chosen["early"] else (lambda self: None)  # type: ignore[method-assign]
    scan.GPU_FIRST_WINDOW_PERIODS = int(chosen["first_periods"])  # type: ignore[call-overload]
    scan.GPU_LAST_WINDOW_PERIODS = int(chosen["last_periods"])  # type: ignore[call-overload]
    blazeface.ONE_CALL_WASTE = int(chosen["one_call_waste"])  # type: ignore[call-overload]
    streaming.FEEDER_SWITCH_INTERVAL = chosen["switch"]  # type: ignore[assignment]
    analyse.DESCRIBE_ON_OWN_STREAM = bool(chosen["own_describe"])
    whole = _graph_call_after_whole_stream if chosen["graph_wait"] == "stream" else _GRAPH_CALL
    cuda_graphs.CudaGraphs.__call__ = whole  # type: ignore[method-assign]
    for net in _NETWORKS:  # the detector's networks, made once a process: their layout, graphs made again
        if net.channels_last_on_cuda != chosen["channels_last"]:
            net.channels_last_on_cuda = bool(chosen["channels_last"])
            net._graphs = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--faces", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    for faces, tracks, one_pass in warm_clips(args.faces, torch.device(args.device)):

        def median(given: object, one_pass: Callable[..., dict] = one_pass) -> dict:
            runs = [one_pass(given) for _ in range(args.passes)]
            return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]

        one_pass(tracks)
        got: dict = {"given_before": round(median(tracks)["seconds"], 4)}
        one_pass(None)
        for _ in range(2):  # two rounds of every variant, interleaved
            for name in args.variants:
                use(**VARIANTS[name])
                one_pass(None)
                m = median(None)
                got.setdefault(name, []).append({
                    "s": round(m["seconds"], 4), "analyse": round(m["timings_s"]["analyse"], 4),
                    "restore": round(m["timings_s"]["restore"], 4),
                    "parts": {k[8:]: round(v, 4) for k, v in m["timings_s"].items() if k.startswith("analyse_")}})
        use()
        got["given_after"] = round(median(tracks)["seconds"], 4)
        given = (got["given_before"] + got["given_after"]) / 2
        got["ratio"] = {name: round(given / min(x["s"] for x in got[name]), 3) for name in args.variants}
        results[faces] = got
        print(json.dumps({faces: got}), flush=True)
    (args.out / "with_detection_variants.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
