#!/usr/bin/env python3
"""Build FaceFix's OpenFX plug-in and install its bundle where OpenFX hosts look for plug-ins.

    .venv/bin/python install/install_openfx.py [--bundle DIR] [--dest DIR] [--uninstall] [--dry-run]

Builds ``openfx/`` with CMake (``cmake`` and a C compiler on PATH) into a temporary folder, or takes a bundle
built elsewhere (``--bundle .../FaceFix.ofx.bundle``), and copies ``FaceFix.ofx.bundle`` into the plug-in
folder: ``--dest``, else the first folder of ``$OFX_PLUGIN_PATH``, else the system's standard one:

    Linux    /usr/OFX/Plugins
    macOS    /Library/OFX/Plugins
    Windows  C:\\Program Files\\Common Files\\OFX\\Plugins

The copy is atomic (a temporary folder beside it, renamed into place; an older bundle is replaced). The system
folders need administrator rights (``sudo``); ``OFX_PLUGIN_PATH`` or ``--dest`` point hosts at a user folder.
Standard library only. Exit status 0; 1 with one line ``install_openfx: error: ...``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plugin_folder", "build", "install", "uninstall", "main", "BUNDLE"]

REPO = Path(__file__).resolve().parents[1]
BUNDLE = "FaceFix.ofx.bundle"
ARCH = {"Linux": "Linux-x86-64", "Darwin": "MacOS", "Windows": "Win64"}
SYSTEM_FOLDERS = {"Linux": "/usr/OFX/Plugins", "Darwin": "/Library/OFX/Plugins",
                  "Windows": r"C:\Program Files\Common Files\OFX\Plugins"}


class InstallError(Exception):
    pass


def plugin_folder(env: Mapping[str, str] | None = None, system: str | None = None) -> Path:
    """Where the bundle goes: the first folder of ``OFX_PLUGIN_PATH``, else the system's standard folder."""
    env = os.environ if env is None else env
    system = system or platform.system()
    first = next((p for p in env.get("OFX_PLUGIN_PATH", "").split(os.pathsep) if p.strip()), None)
    return Path(first).expanduser() if first else Path(SYSTEM_FOLDERS.get(system, SYSTEM_FOLDERS["Linux"]))


def build(work: Path) -> Path:
    """Configure and build ``openfx/`` (Release) in ``work``; the built bundle folder."""
    cmake = shutil.which("cmake")
    if cmake is None:
        raise InstallError("no cmake on PATH: install CMake, or build elsewhere and pass --bundle")
    for argv in ([cmake, "-S", str(REPO / "openfx"), "-B", str(work), "-DCMAKE_BUILD_TYPE=Release"],
                 [cmake, "--build", str(work), "--config", "Release"]):
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise InstallError(f"{' '.join(argv[:2])} failed: {last[0]}")
    return work / BUNDLE


def _check_bundle(bundle: Path) -> None:
    binary = bundle / "Contents" / ARCH.get(platform.system(), "Linux-x86-64") / "FaceFix.ofx"
    if bundle.name != BUNDLE or not binary.is_file():
        raise InstallError(f"{bundle}: not a FaceFix bundle for this system (no {binary.relative_to(bundle.parent)})")


def install(bundle: Path, dest: Path, dry_run: bool = False) -> Path:
    """Copy ``bundle`` into ``dest`` atomically (an existing FaceFix bundle is replaced); the installed path."""
    _check_bundle(bundle)
    target = dest / BUNDLE
    if dry_run:
        print(f"would copy {bundle} to {target}")
        return target
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".FaceFix.ofx.", dir=dest))
        shutil.copytree(bundle, tmp / BUNDLE)
        old = None
        if target.exists():
            old = dest / f".FaceFix.ofx.old.{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp / BUNDLE, target)
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        raise InstallError(f"cannot install into {dest}: {err.strerror or err} (a system folder needs sudo; "
                           "or set OFX_PLUGIN_PATH / --dest to a folder of yours)") from None
    print(f"installed {target}")
    return target


def uninstall(dest: Path, dry_run: bool = False) -> None:
    target = dest / BUNDLE
    if not target.exists():
        print(f"nothing to remove: no {target}")
        return
    if dry_run:
        print(f"would remove {target}")
        return
    try:
        shutil.rmtree(target)
    except OSError as err:
        raise InstallError(f"cannot remove {target}: {err.strerror or err}") from None
    print(f"removed {target}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="install_openfx", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="a FaceFix.ofx.bundle built elsewhere (default: build one with CMake)")
    parser.add_argument("--dest", help="the OpenFX plug-in folder (default: $OFX_PLUGIN_PATH's first, else the "
                                       "system's)")
    parser.add_argument("--uninstall", action="store_true", help="remove the bundle")
    parser.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    args = parser.parse_args(argv)
    dest = Path(args.dest).expanduser() if args.dest else plugin_folder()
    try:
        if args.uninstall:
            uninstall(dest, args.dry_run)
            return 0
        if args.bundle:
            install(Path(args.bundle).expanduser().resolve(), dest, args.dry_run)
            return 0
        with tempfile.TemporaryDirectory(prefix="facefix-openfx-build-") as work:
            install(build(Path(work)), dest, args.dry_run)
        return 0
    except InstallError as err:
        print(f"install_openfx: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
