"""Process-wide host-memory settings for GPU runs, made by the command line (and the benchmark, as it does)
before anything starts CUDA; never inside a host application, whose process is not ours. Imports no torch.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata

__all__ = ["return_frames_to_the_os", "fast_pinned_memory", "PINNED_SETTINGS"]

# How torch page-locks the host buffers the GPU copies frames from and to: plain memory locked by several
# threads at once instead of one driver allocation. An 8 MB buffer (a 1080p 10-bit DPX frame) took 5.4 ms to
# allocate, 1.7 ms this way, on an H100 host; a run allocates one per frame in flight (~160 at --batch 32)
# before it reuses them, so this is most of a short run's start-up.
PINNED_SETTINGS = "pinned_use_cuda_host_register:True,pinned_num_register_threads:8"


def return_frames_to_the_os(threshold: int = 4 << 20) -> bool:
    """Keep host memory flat over long shots: blocks of ``threshold`` bytes or more (every frame buffer)
    are mapped and unmapped, never kept in glibc's heaps.

    By default glibc raises its mmap threshold after the first large free, after which frame-sized
    buffers freed on one of the many I/O threads stay in that thread's heap and resident memory creeps up
    with clip length. Process-wide, so called by the command line (not inside a host). Returns whether
    the setting took (glibc only).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(name)
        m_mmap_threshold = -3
        return bool(libc.mallopt(m_mmap_threshold, int(threshold)))
    except (OSError, AttributeError):
        return False


def fast_pinned_memory() -> bool:
    """Set ``PINNED_SETTINGS`` in PYTORCH_CUDA_ALLOC_CONF (kept with the user's own settings). Takes effect only
    before torch starts CUDA, so False when it has, when torch is older than 2.2 (which does not know these
    settings) or missing, or when the user already chose how pinned memory is allocated."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return False
    try:
        major, minor = (int(part) for part in metadata.version("torch").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    current = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
    if (major, minor) < (2, 2) or "pinned_" in current or "pinned_" in os.environ.get("PYTORCH_ALLOC_CONF", ""):
        return False
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = ",".join(part for part in (current, PINNED_SETTINGS) if part)
    return True
