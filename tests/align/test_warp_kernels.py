"""Align and paste for a whole batch as one CUDA kernel each (facefix.align.warp_triton, facefix.composite.paste_triton) against the torch warps.

On the CPU the kernels run in Triton's interpreter (a subprocess: the interpreter is chosen when Triton is
first imported): their indexing, tables, padding and antialiasing levels are checked without a GPU, alone
and inside the pipeline.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

from facefix.composite import paste_faces
from facefix.geometry import invert_affine, warp_affine

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")

# Regions of different sizes, one of them empty (a frame without faces), one after another in one buffer.
SHAPES = [(50, 70), (0, 0), (90, 60), (40, 40)]
FACES_OF = [(0, 2), (2, 2), (2, 3), (3, 5)]  # frame -> its faces [first, stop): frame 0 has two, overlapping


def batch(size: int, device: str, shrink: float = 1.0, seed: int = 0):  # type: ignore[no-untyped-def]
    """A flat buffer of regions, each face's crop_from_region (scaled by ``shrink``: above 1.5 the crop is
    smaller than the face, so pasting needs the antialiasing levels), deltas and mattes over the whole crop."""
    g = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum([h * w for h, w in SHAPES])])
    flat = (torch.from_numpy(g.random(int(starts[-1]) * 3, np.float32)) * 1.2 - 0.1).to(device)
    frames = np.array([b for b, (lo, hi) in enumerate(FACES_OF) for _ in range(lo, hi)])
    mats = []
    for b in frames:
        h, w = SHAPES[b]
        angle, scale = g.uniform(-0.5, 0.5), g.uniform(0.9, 2.0) * size / 64 / shrink
        c, s = np.cos(angle) * scale, np.sin(angle) * scale
        m = np.array([[c, -s, 0.0], [s, c, 0.0]])
        m[:, 2] = size / 2 - m[:, :2] @ [g.uniform(-5, w + 5), g.uniform(-5, h + 5)]  # centres near, or off, an edge
        mats.append(m)
    delta = torch.from_numpy(g.standard_normal((len(frames), 3, size, size), np.float32)).to(device)
    matte = (torch.from_numpy(g.random((len(frames), 1, size, size), np.float32)) * 1.4 - 0.2).to(device)
    return flat, starts, frames, np.stack(mats), delta, matte


def region(flat: torch.Tensor, starts: np.ndarray, b: int) -> torch.Tensor:
    (h, w), s = SHAPES[b], int(starts[b])
    return flat[3 * s : 3 * (s + h * w)].view(h, w, 3)


def check_align(size: int, device: str, atol: float) -> None:
    from facefix.align.warp_triton import align_crops

    flat, starts, frames, crop_from_region, _, _ = batch(size, device)
    table = np.stack([3 * starts[frames], np.array(SHAPES)[frames, 0], np.array(SHAPES)[frames, 1]], axis=1)
    got = align_crops(flat, table, invert_affine(crop_from_region), size)
    for i, b in enumerate(frames):
        want = warp_affine(region(flat, starts, b).permute(2, 0, 1)[None], crop_from_region[i : i + 1], (size, size))
        assert (want[0] != 0).any() and (want[0] == 0).any()  # the face reaches past its region's edge
        err = (got[i] - want[0]).abs().max().item()
        assert err < atol, (i, err)
    # One face alone gives what it gave in the batch.
    one = align_crops(flat, table[2:3], invert_affine(crop_from_region[2:3]), size)
    assert torch.equal(one[0], got[2])


def check_paste(size: int, device: str, shrink: float, atol: float) -> None:
    from facefix.composite.paste_triton import paste_regions

    flat, starts, _, crop_from_region, delta, matte = batch(size, device, shrink, seed=1)
    out, alpha = flat.clone(), torch.zeros(int(starts[-1]), device=device)
    table = np.array([(starts[b], *SHAPES[b], *FACES_OF[b]) for b in range(len(SHAPES))], np.int64)
    paste_regions(out, alpha, delta, matte, table, crop_from_region)
    untouched = 0
    for b, (lo, hi) in enumerate(FACES_OF):
        (h, w), s = SHAPES[b], int(starts[b])
        if hi == lo or not h * w:
            continue
        frame = region(flat, starts, b).permute(2, 0, 1)[None]
        want, want_alpha = paste_faces(frame, delta[lo:hi], matte[lo:hi], invert_affine(crop_from_region[lo:hi]),
                                       np.zeros(hi - lo, np.int64))
        got = region(out, starts, b).permute(2, 0, 1)
        got_alpha = alpha[s : s + h * w].view(h, w)
        assert (want_alpha > 0).any()
        untouched += int((want_alpha == 0).sum())
        assert (got - want[0]).abs().max().item() < atol
        assert (got_alpha - want_alpha[0, 0]).abs().max().item() < atol
        assert torch.equal(got_alpha > 0, want_alpha[0, 0] > 0)
        assert torch.equal(got[:, got_alpha == 0], frame[0][:, got_alpha == 0])  # untouched where the matte is 0
    assert untouched > 0  # some pixels of the regions lie outside every face


# The interpreter runs one program at a time in numpy: big blocks (each lane is one pixel, whatever the block)
# keep it to seconds.
BIG_BLOCKS = ("import facefix.align.warp_triton, facefix.composite.paste_triton\n"
              "facefix.align.warp_triton._BLOCK = 8192\nfacefix.composite.paste_triton._BLOCK = 8192\n")


@needs_triton
def test_kernels_equal_the_torch_warps_in_the_interpreter(triton_interpreter):
    triton_interpreter("""
        import sys
        sys.path.insert(0, sys.argv[1])
        from test_warp_kernels import check_align, check_paste
        check_align(48, "cpu", atol=1e-4)
        check_paste(48, "cpu", shrink=1.0, atol=1e-4)
        check_paste(48, "cpu", shrink=3.5, atol=1e-4)  # faces shrunk 2-7x: pasted from antialiasing levels 1-3
        print("ok")
    """, os.path.dirname(__file__), setup=BIG_BLOCKS)


@needs_triton
def test_pipeline_with_the_kernels_in_the_interpreter(triton_interpreter):
    """restore_batch with the batch kernels (run by the interpreter on the CPU) against the torch warps: the
    same within float rounding, pixels outside the matte are the input's, and a frame's result is the same
    whatever batch it is in. One face is big enough that its crop needs antialiasing: the torch warp aligns
    it, in the same batch; the small ones are pasted from antialiasing levels."""
    triton_interpreter("""
        import sys
        import numpy as np
        sys.path.insert(0, sys.argv[1])
        import facefix.align, facefix.composite
        from facefix import Face, Settings
        from facefix.demo import synth
        from facefix.engine import Engine
        from facefix.pipeline import restore_batch
        import torch

        class Sharpen:  # a stand-in face model: visibly changes the face
            def __call__(self, crops, fidelity=0.5):
                blur = torch.nn.functional.avg_pool2d(crops, 5, stride=1, padding=2, count_include_pad=False)
                return (crops + 0.8 * (crops - blur)).clamp(0, 1)

        frames, faces = [], []
        for size, scale in ((96, 0.35), (120, 5.0), (80, 0.3)):
            img, lm = synth.crowd_frame((size, size + 20), 1, face_px=size * scale)
            frames.append(img)
            faces.append([Face(box=(*(lm[0].min(0) - 5), *(lm[0].max(0) + 5)), landmarks=lm[0], track_id=0)])
        s = Settings(model="passthrough", device="cpu", temporal=0, mask="box")
        engine = Engine(s)
        engine._restorer = Sharpen()
        plain = restore_batch(frames, faces, s, engine)
        facefix.align.kernels_for = facefix.composite.kernels_for = lambda t: True
        fused = restore_batch(frames, faces, s, engine)
        alone = [restore_batch([f], [fs], s, engine)[0] for f, fs in zip(frames, faces)]
        for (a, ma), (b, mb), (c, mc), src in zip(plain, fused, alone, frames):
            inside = mb > 0
            assert inside.any() and np.array_equal(b[~inside], src[~inside])
            assert np.abs(b - src)[inside].max() > 1e-3  # the face did change
            assert np.abs(ma - mb).max() < 1e-4
            assert np.abs(a - b)[inside].max() < 2e-3, np.abs(a - b).max()
            assert np.array_equal(b, c) and np.array_equal(mb, mc)
        # The kernels did run: they round differently from the torch warps.
        assert any(not np.array_equal(a, b) for (a, _), (b, _) in zip(plain, fused))
        print("ok")
    """, os.path.dirname(__file__), setup=BIG_BLOCKS)


@needs_triton
@pytest.mark.parametrize("name", ["_align_kernel", "_paste_kernel"])
def test_kernels_compile_for_a_hopper_gpu(name, hopper_compile):
    """The interpreter runs Python; the compiler is stricter (globals, types). Compiled here without a GPU."""
    import importlib

    kernels = importlib.import_module("facefix.align.warp_triton" if name == "_align_kernel"
                                      else "facefix.composite.paste_triton")
    signature = {
        "_align_kernel": {"src_ptr": "*fp32", "regions_ptr": "*i64", "mats_ptr": "*fp32", "out_ptr": "*fp32",
                          "S": "i32", "BLOCK": "constexpr"},
        "_paste_kernel": {"frames_ptr": "*fp32", "alpha_ptr": "*fp32", "src_ptr": "*fp32", "regions_ptr": "*i64",
                          "faces_ptr": "*i64", "mats_ptr": "*fp32", "BLOCK": "constexpr"},
    }[name]
    compiled = hopper_compile(getattr(kernels, name), signature, {"BLOCK": 256})
    assert "ptx" in compiled.asm


@pytest.mark.gpu
@needs_triton
def test_cuda_kernels_equal_the_torch_warps():
    # At the real crop size; the torch warps round each position through grid_sample's [-1, 1] coordinates.
    check_align(512, "cuda", atol=1e-4)
    check_paste(512, "cuda", shrink=1.0, atol=1e-4)
    check_paste(512, "cuda", shrink=3.5, atol=1e-4)


def test_tables_fold_the_pixel_centres():
    """index_space: a map of pixel coordinates (centres at +0.5) evaluated at indices (centres at 0)."""
    pytest.importorskip("triton")
    from facefix.geometry import index_space

    m = np.array([[[0.8, -0.3, 5.0], [0.3, 0.8, -2.0]]])
    got = index_space(m).reshape(2, 3).astype(np.float64)
    for x, y in ((0, 0), (7, 3), (100, 40)):
        want = m[0, :, :2] @ [x + 0.5, y + 0.5] + m[0, :, 2] - 0.5
        np.testing.assert_allclose(got[:, :2] @ [x, y] + got[:, 2], want, atol=1e-4)
