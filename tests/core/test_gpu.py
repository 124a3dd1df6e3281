"""CUDA path: agrees with the CPU within a stated tolerance, and is bit-identical across batch sizes."""

import numpy as np
import pytest
import torch

from facefix import Face, Settings, synth
from facefix.pipeline import Engine, restore_batch

pytestmark = pytest.mark.gpu


def _clip(n=4):
    clip = synth.motion_clip(n, (256, 256), translate=(2, 1), rotate_deg=2, start_scale=0.8)
    faces = [[Face(box=(*(lm.min(0) - 30), *(lm.max(0) + 30)), landmarks=lm, track_id=0)] for lm in clip.landmarks]
    return list(clip.frames), faces


def _random_gfpgan(tmp_path):
    from safetensors.torch import save_file
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(0)
    net = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                 num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    path = tmp_path / "g.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return str(path)


def test_gpu_matches_cpu_within_tolerance():
    frames, faces = _clip(2)
    out = {}
    for dev in ("cpu", "cuda"):
        s = Settings(model="realesrgan-face", device=dev, temporal=0, mask="box")
        out[dev] = restore_batch(frames, faces, s, Engine(s))
    for (a, ma), (b, mb) in zip(out["cpu"], out["cuda"]):
        inside = ma > 0
        diff = np.abs(a - b)[inside]
        print(f"GPU vs CPU (bf16 model on GPU): mean {diff.mean():.2e}, p99.9 {np.quantile(diff, 0.999):.2e}, max {diff.max():.2e}")
        assert np.array_equal(a[~inside], b[~inside])
        assert np.abs(ma - mb).max() < 1e-4
        assert diff.mean() < 5e-3 and np.quantile(diff, 0.999) < 6e-2


def test_gpu_bit_identical_across_batch_sizes(tmp_path):
    frames, faces = _clip(4)
    weights = _random_gfpgan(tmp_path)
    s = Settings(model="gfpgan-1.4", device="cuda", temporal=0, mask="box")
    engine = Engine(s, restorer_path=weights)
    together = restore_batch(frames, faces, s, engine)
    alone = [restore_batch([f], [fs], s, engine)[0] for f, fs in zip(frames, faces)]
    for (a, _), (b, _) in zip(together, alone):
        assert np.array_equal(a, b)
