"""The ``facefix`` command line: ``restore``, ``track``, ``models``, ``schema``, ``demo``.

A thin layer over ``facefix.api``; its options come from the one parameter schema (``facefix.params``).
"""

from __future__ import annotations

from .main import build_parser, main, settings_from_args

__all__ = ["main", "build_parser", "settings_from_args"]
