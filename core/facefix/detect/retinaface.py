"""RetinaFace (ResNet-50) face detector: boxes and 5 landmarks, batched, CPU or CUDA.

The network follows the widely used published checkpoint ``detection_Resnet50_Final.pth`` (the
Pytorch_Retinaface / facexlib layout), so its state dict loads unchanged:

* ``body.*``: a torchvision ResNet-50 without its classifier (conv1, bn1, layer1..layer4); layer2, layer3
  and layer4 (strides 8, 16, 32; 512, 1024, 2048 channels) feed the pyramid;
* ``fpn.output{1,2,3}`` (1x1 conv + BN to 256 channels) and ``fpn.merge{1,2}`` (3x3 conv + BN) top-down;
* ``ssh{1,2,3}``: context modules (3x3 branch of 128 channels, 5x5 and 7x7 branches of 64, as stacked 3x3s);
* ``ClassHead.{0,1,2}``, ``BboxHead.{0,1,2}``, ``LandmarkHead.{0,1,2}``: 1x1 convs, 2 anchors per cell.

Pre-processing as the published inference code: pixels in BGR order, 0..255, minus the mean
(104, 117, 123), no scaling. Anchors: at stride s in (8, 16, 32) one anchor per cell per size in
((16, 32), (64, 128), (256, 512)), centred at ((j + 0.5) s, (i + 0.5) s), rows first; offsets are decoded
with variances (0.1, 0.2). Landmark order (left eye, right eye, nose, left mouth, right mouth, image left
first) is the ``facefix.faces`` order.

Convention: frames (N, 3, H, W) float sRGB in [0, 1]; returned boxes and landmarks are frame pixel
coordinates, (x, y), origin at the top-left corner of the top-left pixel (pixel centres at +0.5, which
is where the anchors put them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, ModelError
from ..faces import Face
from . import DetectResult

__all__ = [
    "DetectResult",
    "RetinaFace",
    "RetinaFaceDetector",
    "load_retinaface",
    "prior_boxes",
    "decode_boxes",
    "decode_landmarks",
    "MODEL_NAME",
]

MODEL_NAME = "retinaface-r50"
_STEPS = (8, 16, 32)
_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE = (0.1, 0.2)
_BGR_MEAN = (104.0, 117.0, 123.0)

# -- network ---------------------------------------------------------------------------------------------
def _conv_bn(cin: int, cout: int, k: int, relu: bool) -> nn.Sequential:
    """conv (no bias) + BN [+ ReLU]: the ``.0`` / ``.1`` sub-keys of the published layout."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, 1, k // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        # 256-channel models use a plain ReLU (the leaky slope only applies to <= 64 channels).
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _Body(nn.Module):
    """ResNet-50 trunk returning the stride 8, 16 and 32 feature maps (keys as torchvision's resnet50)."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return c2, c3, c4


class _FPN(nn.Module):
    def __init__(self, cins: tuple[int, int, int], cout: int) -> None:
        super().__init__()
        self.output1 = _conv_bn(cins[0], cout, 1, True)
        self.output2 = _conv_bn(cins[1], cout, 1, True)
        self.output3 = _conv_bn(cins[2], cout, 1, True)
        self.merge1 = _conv_bn(cout, cout, 3, True)
        self.merge2 = _conv_bn(cout, cout, 3, True)

    def forward(self, feats: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        return o1, o2, o3


class _SSH(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv3X3 = _conv_bn(cin, cout // 2, 3, False)
        self.conv5X5_1 = _conv_bn(cin, cout // 4, 3, True)
        self.conv5X5_2 = _conv_bn(cout // 4, cout // 4, 3, False)
        self.conv7X7_2 = _conv_bn(cout // 4, cout // 4, 3, True)
        self.conv7x7_3 = _conv_bn(cout // 4, cout // 4, 3, False)  # lower-case x: as published

    def forward(self, x: Tensor) -> Tensor:
        a = self.conv3X3(x)
        b1 = self.conv5X5_1(x)
        b = self.conv5X5_2(b1)
        c = self.conv7x7_3(self.conv7X7_2(b1))
        return F.relu(torch.cat([a, b, c], dim=1))


class _Head(nn.Module):
    def __init__(self, cin: int, per_anchor: int, anchors: int = 2) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(cin, anchors * per_anchor, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1x1(x).permute(0, 2, 3, 1)  # (N, H, W, A * k): anchors of a cell are adjacent
        return y.reshape(y.shape[0], -1, self.per_anchor)


class RetinaFace(nn.Module):
    """The RetinaFace ResNet-50 network: (N, 3, H, W) BGR-minus-mean -> raw (loc, logits, landmarks).

    Returns loc (N, P, 4), class logits (N, P, 2) (index 1 = face), landmark offsets (N, P, 10) for the
    P anchors of ``prior_boxes(H, W)``.
    """

    def __init__(self, channels: int = 256) -> None:
        super().__init__()
        self.body = _Body()
        self.fpn = _FPN((512, 1024, 2048), channels)
        self.ssh1 = _SSH(channels, channels)
        self.ssh2 = _SSH(channels, channels)
        self.ssh3 = _SSH(channels, channels)
        self.ClassHead = nn.ModuleList([_Head(channels, 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head(channels, 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head(channels, 10) for _ in range(3)])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        p = self.fpn(self.body(x))
        feats = (self.ssh1(p[0]), self.ssh2(p[1]), self.ssh3(p[2]))
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats, strict=True)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats, strict=True)], dim=1)
        ldm = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats, strict=True)], dim=1)
        return loc, conf, ldm


# -- anchors and decoding ----------------------------------------------------------------------------------
def prior_boxes(height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """Anchors (P, 4) as (cx, cy, w, h) in pixels for an input of ``height`` x ``width``.

    Order: stride 8, 16, 32; within a stride rows, then columns, then the two sizes (the heads' order).
    """
    out = []
    for step, sizes in zip(_STEPS, _MIN_SIZES, strict=True):
        fh, fw = -(-height // step), -(-width // step)
        ys = (torch.arange(fh, dtype=torch.float32, device=device) + 0.5) * step
        xs = (torch.arange(fw, dtype=torch.float32, device=device) + 0.5) * step
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        cells = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, len(sizes), 2)
        wh = torch.tensor(sizes, dtype=torch.float32, device=device).view(1, -1, 1).expand(cells.shape[0], -1, 2)
        out.append(torch.cat([cells, wh], dim=-1).reshape(-1, 4))
    return torch.cat(out, dim=0)


def decode_boxes(loc: Tensor, priors: Tensor) -> Tensor:
    """Regression offsets (..., P, 4) -> boxes (..., P, 4) as (x0, y0, x1, y1) pixels."""
    centre = priors[:, :2] + loc[..., :2] * _VARIANCE[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[..., 2:] * _VARIANCE[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def decode_landmarks(pre: Tensor, priors: Tensor) -> Tensor:
    """Landmark offsets (..., P, 10) -> points (..., P, 5, 2) in pixels."""
    off = pre.reshape(*pre.shape[:-1], 5, 2)
    return priors[:, None, :2] + off * _VARIANCE[0] * priors[:, None, 2:]


# -- detector -------------------------------------------------------------------------------------------
class RetinaFaceDetector:
    """Callable detector: ``detector(frames (N, 3, H, W) sRGB [0, 1]) -> list[DetectResult]``.

    Frames larger than ``max_side`` (longer side) are downscaled with area averaging for the network and
    the results scaled back; faces whose box is smaller than ``min_face`` frame pixels are dropped and
    counted. Holds only the network and its settings.
    """

    def __init__(self, net: RetinaFace, *, min_face: int = 24, score_threshold: float = 0.7,
                 nms_threshold: float = 0.4, max_side: int = 1600, top_k: int = 5000) -> None:
        if min_face < 0 or not 0.0 < score_threshold < 1.0 or not 0.0 < nms_threshold <= 1.0 or max_side < 32:
            raise InputError(
                f"retinaface: bad settings min_face={min_face}, score_threshold={score_threshold}, "
                f"nms_threshold={nms_threshold}, max_side={max_side}"
            )
        self.net = net.eval()
        self.min_face = int(min_face)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_side = int(max_side)
        self.top_k = int(top_k)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> RetinaFaceDetector:
        self.net.to(device)
        return self

    def preprocess(self, frames: Tensor) -> tuple[Tensor, float]:
        """(N, 3, H, W) sRGB [0, 1] -> network input (BGR 0..255 minus mean, padded to 32) and the scale
        from frame to network pixels."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise InputError(f"retinaface: frames must be (N, 3, H, W), got {tuple(frames.shape)}")
        if not frames.is_floating_point():
            raise InputError(f"retinaface: frames must be float sRGB in [0, 1], got {frames.dtype}")
        x = frames.to(self.device, torch.float32)
        h, w = x.shape[-2:]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode="area")
            scale = nw / w  # report the exact x scale actually used
        mean = torch.tensor(_BGR_MEAN, device=x.device).view(1, 3, 1, 1)
        x = x.flip(1) * 255.0 - mean
        ph, pw = (-x.shape[-2]) % 32, (-x.shape[-1]) % 32
        if ph or pw:  # pad with the mean colour (zero after subtraction)
            x = F.pad(x, (0, pw, 0, ph))
        return x, scale

    @torch.no_grad()
    def __call__(self, frames: Tensor) -> list[DetectResult]:
        x, scale = self.preprocess(frames)
        n = x.shape[0]
        loc, conf, ldm = self.net(x)
        priors = prior_boxes(x.shape[-2], x.shape[-1], device=x.device)
        scores = F.softmax(conf.float(), dim=-1)[..., 1]
        boxes = decode_boxes(loc.float(), priors) / scale
        points = decode_landmarks(ldm.float(), priors) / scale
        # Non-finite outputs (an overflowing exp in half precision, a broken checkpoint) are never faces.
        finite = torch.isfinite(boxes).all(-1) & torch.isfinite(points).flatten(-2).all(-1)
        keep = (scores > self.score_threshold) & finite
        # At most top_k candidates per frame go to NMS (bounds its work on pathological inputs).
        masked = torch.where(keep, scores, torch.full_like(scores, -1.0))
        top_s, top_i = masked.topk(min(self.top_k, masked.shape[1]), dim=1)
        valid = top_s > self.score_threshold
        img_idx = torch.arange(n, device=x.device)[:, None].expand_as(top_i)[valid]
        anchor_idx = top_i[valid]
        cand_scores = top_s[valid]
        cand_boxes = boxes[img_idx, anchor_idx]
        cand_points = points[img_idx, anchor_idx]
        from torchvision.ops import batched_nms

        kept = batched_nms(cand_boxes, cand_scores, img_idx, self.nms_threshold)
        img_k = img_idx[kept].cpu().numpy()
        box_k = cand_boxes[kept].double().cpu().numpy()
        pts_k = cand_points[kept].double().cpu().numpy()
        sc_k = cand_scores[kept].double().cpu().numpy()
        per: list[list[Face]] = [[] for _ in range(n)]
        small = [0] * n
        for i, b, p, s in zip(img_k, box_k, pts_k, sc_k, strict=True):
            if max(b[2] - b[0], b[3] - b[1]) < self.min_face:
                small[int(i)] += 1
                continue
            per[int(i)].append(Face(box=(b[0], b[1], b[2], b[3]), landmarks=p, score=float(s)))
        return [DetectResult(faces=tuple(f), skipped_small=k) for f, k in zip(per, small, strict=True)]


def _clean_state_dict(sd: Mapping[str, Tensor], origin: str) -> dict[str, Tensor]:
    """Strip the ``module.`` prefix (checkpoints saved from DataParallel) and check the layout."""
    out = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    if "ClassHead.0.conv1x1.weight" not in out or "body.layer4.0.conv1.weight" not in out:
        raise ModelError(f"{origin}: not a RetinaFace ResNet-50 state dict (heads or body.layer4 missing)")
    return out


def load_retinaface(device: str | torch.device = "cpu", path: str | Path | None = None, min_face: int = 24,
                    **settings: float) -> RetinaFaceDetector:
    """The RetinaFace ResNet-50 detector on ``device``.

    path: a state dict in the published layout (``module.`` prefixes are fine); None = the verified file
    the model manager holds for ``retinaface-r50``. ``settings``: score_threshold, nms_threshold,
    max_side, top_k (see ``RetinaFaceDetector``).
    """
    if path is None:
        from ..models.manager import resolve

        path = resolve(MODEL_NAME)
    p = Path(path)
    from ..models.safeload import load_state_dict  # torch.load(weights_only=True) or safetensors

    sd = _clean_state_dict(load_state_dict(p), str(p))
    with torch.device("meta"):  # the skeleton only: every tensor comes from the file
        net = RetinaFace()
    expected = net.state_dict()
    # BatchNorm counters are not weights; older checkpoints do not have them.
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise ModelError(f"{p}: not the RetinaFace ResNet-50 layout ({what}; {len(missing)} missing, "
                         f"{len(unexpected)} unexpected keys)")
    full: dict[str, Tensor] = {}
    for k, ref in expected.items():
        if k not in sd:
            full[k] = torch.zeros((), dtype=torch.long)
            continue
        v = sd[k]
        if tuple(v.shape) != tuple(ref.shape):
            raise ModelError(f"{p}: {k} has shape {tuple(v.shape)}, expected {tuple(ref.shape)}")
        full[k] = v.float() if v.is_floating_point() else v
    net.load_state_dict(full, strict=True, assign=True)
    return RetinaFaceDetector(net.to(device).eval(), min_face=min_face, **settings)  # type: ignore[arg-type]
