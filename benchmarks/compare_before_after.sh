#!/usr/bin/env bash
# The run of record's end-to-end figures for the code before a change and after it, on one GPU host, in one
# process tree, interleaved so that host drift is shared.
#
#   bash benchmarks/compare_before_after.sh OUTDIR
#
# "before" is a copy of the older tree at baseline/ (made on the development machine with
#   git archive HEAD core benchmarks pyproject.toml | tar -x -C baseline
# and ignored through .git/info/exclude, so the device call must carry it); "after" is the working tree.
# Each pass is its own process: benchmarks/bench.py puts its own tree's core/ first on sys.path, so
# baseline/benchmarks/bench.py measures baseline/core/facefix and benchmarks/bench.py measures core/facefix
# (PYTHONPATH says the same, for anything started from them). No pip install of the project: torch, triton,
# numpy, opencv and the rest are the machine's own; the project's other dependencies (OpenImageIO,
# OpenColorIO, fileseq, av, spandrel, spandrel-extra-arches, tflite) come as wheels in .whl/ (carried).
#
# Per pass: 1080p 10-bit DPX in and out, files in RAM (/dev/shm), --faces 1 4, --frames 240, --batch 32, as the
# run of record, but --only e2e (no detection run, no classic loop, no model sweep: those take minutes and the
# refactor does not touch what they measure) and no --torch-profile (time, and at most 8 files come back).
# Then, if time is left, one model-only sweep (--only model, baseline tree) for this host's model ceiling.
#
# Files written to OUTDIR: compare.log, before_1.json, after_1.json, after_2.json, before_2.json, model.json.
# Knobs (environment): FRAMES FACES BATCH PASSES ORDER DEADLINE_S MODEL WHL.
set -uo pipefail

OUT=${1:?usage: compare_before_after.sh OUTDIR}
mkdir -p "$OUT"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FRAMES=${FRAMES:-240}
FACES=${FACES:-"1 4"}
BATCH=${BATCH:-32}
PASSES=${PASSES:-5}                          # timed end-to-end passes per process (median reported)
ORDER=${ORDER:-"before after after before"}  # B A A B: a linear drift of the host weighs on both alike
DEADLINE_S=${DEADLINE_S:-540}                # stop starting work past this (the device call allows 600 s)
MODEL=${MODEL:-1}                            # 1: a model-only sweep at the end, if time is left
WHL=${WHL:-.whl}                             # the carried wheels (relative to the repository root)
SITE=/tmp/site

main() {
    echo "== $(date -u +%FT%TZ) compare_before_after: FRAMES=$FRAMES FACES='$FACES' BATCH=$BATCH PASSES=$PASSES ORDER='$ORDER'"
    cd "$REPO" || return 1
    if [ ! -f baseline/core/facefix/__init__.py ] || [ ! -f baseline/benchmarks/bench.py ]; then
        echo "baseline/ is missing: name it in the call's carry list"; return 2
    fi
    # 1. The project's dependencies that the machine lacks, from the carried wheels (nothing can be fetched).
    if ls "$WHL"/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/*.whl \
            || { echo "wheel install failed"; return 3; }
    else
        echo "no $WHL/*.whl here: relying on what the machine has"
    fi
    export PYTHONPATH=$SITE PYTHONUNBUFFERED=1
    nvidia-smi -L; nproc; df -h /dev/shm /tmp | sed 1d
    python3 - <<'EOF' || { echo "a dependency does not import"; return 4; }
import importlib, sys
print("python", sys.version.split()[0])
for m in ("torch", "triton", "numpy", "cv2", "OpenImageIO", "PyOpenColorIO", "fileseq", "av", "spandrel",
          "spandrel_extra_arches", "tflite", "safetensors", "einops"):
    mod = importlib.import_module(m)
    print(f"  {m} {getattr(mod, '__version__', getattr(mod, 'VERSION', '?'))}")
import torch
print("  cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
EOF

    # RAM disk for the clips and outputs (~2 GB a 240-frame 1080p DPX clip, outputs as much), else /tmp.
    local base=/dev/shm
    if ! [ -w /dev/shm ] || [ "$(df -Pk /dev/shm | awk 'NR==2 {print $4}')" -lt $((12 * 1024 * 1024)) ]; then
        base=/tmp; echo "/dev/shm small or missing: clips in /tmp (disk in the figures)"
    fi

    local failed=0 nb=0 na=0 v label root t left
    for v in $ORDER; do
        if [ "$v" = before ]; then nb=$((nb + 1)); label=before_$nb; root=$REPO/baseline
        else na=$((na + 1)); label=after_$na; root=$REPO; fi
        left=$((DEADLINE_S - SECONDS))
        # The first pass compiles the model and the stabiliser cold (~1-2 min); later ones hit the caches.
        if [ "$left" -lt 75 ]; then echo "== skip $label: ${left}s left"; continue; fi
        t=$(( left < 300 ? left : 300 ))
        rm -rf "$base/ffb-$label"; mkdir -p "$base/ffb-$label"
        echo "== $(date -u +%T) t=${SECONDS}s $label: $root (timeout ${t}s)"
        PYTHONPATH=$root/core:$SITE timeout -k 10 "$t" python3 "$root/benchmarks/bench.py" \
            --faces $FACES --frames "$FRAMES" --batch "$BATCH" --format dpx --work "$base/ffb-$label" \
            --only e2e --e2e-passes "$PASSES" --out "$OUT/$label.json" \
            || { echo "== $label failed (rc $?)"; failed=1; }
        rm -rf "$base/ffb-$label"
        echo "== $(date -u +%T) t=${SECONDS}s $label done"
    done

    # This host's model ceiling: the model alone (restore/ is the same code before and after), measured with the
    # baseline's tree, which is known to import whatever state the working tree is in.
    left=$((DEADLINE_S - SECONDS))
    if [ "$MODEL" = 1 ] && [ "$left" -ge 150 ]; then
        rm -rf "$base/ffb-model"; mkdir -p "$base/ffb-model"
        echo "== $(date -u +%T) t=${SECONDS}s model sweep (timeout ${left}s)"
        PYTHONPATH=$REPO/baseline/core:$SITE timeout -k 10 "$left" python3 baseline/benchmarks/bench.py --faces $FACES --frames 32 \
            --batch "$BATCH" --format dpx --work "$base/ffb-model" --only model --out "$OUT/model.json" \
            || echo "== model sweep failed or cut (rc $?); model.json holds what was measured before that"
        rm -rf "$base/ffb-model"
    else
        echo "== model sweep skipped (MODEL=$MODEL, ${left}s left); the run of record's ceiling (another host): 617 / 154 fps"
    fi

    echo "== $(date -u +%T) t=${SECONDS}s summary"
    python3 - "$OUT" <<'EOF'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
res = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
ceil = None
if "model" in res and "ceiling" in res["model"].get("model", {}):
    ceil = res["model"]["model"]["ceiling"]["faces_per_s"]
    print(f"model ceiling (this host): {ceil:.0f} faces/s, {res['model']['model']['ceiling']}")
pooled: dict = {}
print(f"{'pass':10} {'source':13} {'faces':>5} {'e2e fps':>8} {'first':>7} {'gpu side':>8} {'model st':>8}  passes")
for name, r in res.items():
    if name == "model":
        continue
    for run in r.get("runs", []):
        n = run["faces_per_frame"]
        st = run.get("e2e_profiled", {}).get("timings_s", {}).get("model")
        ms = f"{r['frames'] / st:8.0f}" if st else f"{'-':>8}"
        e2e, gs = run.get("e2e_fps", float("nan")), run.get("gpu_side_fps", float("nan"))
        first = run.get("e2e_first_pass", {}).get("fps", float("nan"))
        print(f"{name:10} {r['source_sha256']:13} {n:5} {e2e:8.1f} {first:7.1f} {gs:8.1f} {ms}  "
              + " ".join(f"{x:.0f}" for x in run.get("e2e_passes_fps", [])))
        d = pooled.setdefault((name.split("_")[0], n), {"e2e": [], "gpu": []})
        d["e2e"] += run.get("e2e_passes_fps", [])
        d["gpu"].append(gs)
print("\nall timed passes of a version pooled (median):")
for n in sorted({k[1] for k in pooled}):
    b, a = pooled.get(("before", n)), pooled.get(("after", n))
    if not (a and b):
        continue
    mb, ma = statistics.median(b["e2e"]), statistics.median(a["e2e"])
    gb, ga = statistics.median(b["gpu"]), statistics.median(a["gpu"])
    line = (f"  {n} face(s): e2e before {mb:.1f} after {ma:.1f} fps (after/before {ma / mb:.3f}); "
            f"gpu side before {gb:.1f} after {ga:.1f} ({ga / gb:.3f})")
    if ceil:
        line += f"; e2e/ceiling {mb / (ceil / n):.2f} -> {ma / (ceil / n):.2f}"
    print(line)
EOF
    return $failed
}

main 2>&1 | tee "$OUT/compare.log"
exit "${PIPESTATUS[0]}"
