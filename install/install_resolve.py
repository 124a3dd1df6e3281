#!/usr/bin/env python3
"""Install FaceFix's DaVinci Resolve scripts into the per-user Fusion Scripts folder.

    .venv/bin/python install/install_resolve.py [--link] [--scripts-dir DIR] [--root DIR] [--serve CMD]
                                                [--renders DIR] [--uninstall] [--dry-run]

Copies (``--link``: symlinks, so a ``git pull`` updates them) FaceFix's ``resolve/`` folder into Resolve's
per-user Scripts folder:

    Utility/FaceFix.py                the Utility script (every page): fix timeline clips
    Comp/FaceFix.py                   the Comp script (Fusion page): fix a Loader/MediaIn with face masks
    Modules/facefix_resolve/          the adapter they share
    Modules/facefix_config.json       written here: {"root": the FaceFix folder, "serve": [the command that
                                      starts `facefix serve`], "renders"?: where renders go}

The Scripts folder, per system (Resolve's documented per-user locations):

    Linux    ~/.local/share/DaVinciResolve/Fusion/Scripts/
    macOS    ~/Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion/Scripts/
    Windows  %APPDATA%\\Blackmagic Design\\DaVinci Resolve\\Support\\Fusion\\Scripts\\

``--serve`` defaults to the ``facefix`` command beside the Python running this installer (FaceFix's
environment), else ``python -m facefix.cli serve`` with that Python. Run it with FaceFix's own Python
(``.venv/bin/python``) so that the config points at FaceFix's environment. Standard library only.
Exit status 0; 1 with one line ``install_resolve: error: ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

__all__ = ["scripts_folder", "serve_command", "install", "uninstall", "main", "FILES", "CONFIG_NAME"]

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "resolve"
CONFIG_NAME = "facefix_config.json"
# What goes where, relative to resolve/ and to the Scripts folder.
FILES = ("Utility/FaceFix.py", "Comp/FaceFix.py", "Modules/facefix_resolve")


class InstallError(Exception):
    pass


def scripts_folder(system: str, env: Mapping[str, str], home: str) -> PurePath:
    """Resolve's per-user Fusion Scripts folder on ``system`` (``sys.platform``: linux, darwin, win32), for a
    user with home folder ``home`` and environment ``env``."""
    if system.startswith("win"):
        appdata = env.get("APPDATA") or str(PureWindowsPath(home, "AppData", "Roaming"))
        return PureWindowsPath(appdata, "Blackmagic Design", "DaVinci Resolve", "Support", "Fusion", "Scripts")
    if system == "darwin":
        return PurePosixPath(home, "Library", "Application Support", "Blackmagic Design", "DaVinci Resolve",
                             "Fusion", "Scripts")
    if system.startswith("linux"):
        return PurePosixPath(home, ".local", "share", "DaVinciResolve", "Fusion", "Scripts")
    raise InstallError(f"DaVinci Resolve does not run on {system}: name the Scripts folder with --scripts-dir")


def serve_command(python: str, system: str) -> list[str]:
    """The command that starts `facefix serve` in the environment of ``python``."""
    exe = Path(python)
    folder = exe.parent
    name = "facefix.exe" if system.startswith("win") else "facefix"
    for candidate in (folder / name, folder / "Scripts" / name):
        if candidate.is_file():
            return [str(candidate), "serve"]
    return [str(exe), "-m", "facefix.cli", "serve"]


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def install(target: Path, *, root: Path, serve: Sequence[str] | None, link: bool = False,
            renders: str | None = None, source: Path = SOURCE, dry_run: bool = False) -> list[str]:
    """Copy (or link) the scripts into ``target`` and write the config; returns what was done, one line each."""
    done = []
    for rel in FILES:
        src, dst = source / rel, target / rel
        if not src.exists():
            raise InstallError(f"{src} is missing: is this a complete FaceFix folder?")
        done.append(f"{'link' if link else 'copy'} {src} -> {dst}")
        if dry_run:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        _remove(dst)
        if link:
            dst.symlink_to(src, target_is_directory=src.is_dir())
        elif src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", CONFIG_NAME))
        else:
            shutil.copy2(src, dst)
    config: dict[str, object] = {"root": str(root)}
    if serve:
        config["serve"] = list(serve)
    if renders:
        config["renders"] = renders
    config_file = target / "Modules" / CONFIG_NAME  # beside the adapter (a real file, also when it is linked)
    done.append(f"write {config_file}: {json.dumps(config)}")
    if not dry_run:
        config_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = config_file.with_name(CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, config_file)
    return done


def uninstall(target: Path, dry_run: bool = False) -> list[str]:
    done = []
    for rel in FILES + ("Modules/" + CONFIG_NAME,):
        dst = target / rel
        if dst.exists() or dst.is_symlink():
            done.append(f"remove {dst}")
            if not dry_run:
                _remove(dst)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="install_resolve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scripts-dir", help="Resolve's Fusion Scripts folder (default: the per-user one)")
    parser.add_argument("--root", default=str(REPO), help="the FaceFix folder (default: this one)")
    parser.add_argument("--serve", help="the command that starts `facefix serve` (default: this environment's)")
    parser.add_argument("--renders", help="where renders go (default: ~/FaceFix/renders)")
    parser.add_argument("--link", action="store_true", help="symlink instead of copying")
    parser.add_argument("--uninstall", action="store_true", help="remove the scripts")
    parser.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    args = parser.parse_args(argv)
    try:
        target = Path(args.scripts_dir).expanduser() if args.scripts_dir else Path(
            scripts_folder(sys.platform, os.environ, str(Path.home())))
        if args.uninstall:
            lines = uninstall(target, args.dry_run)
        else:
            serve = shlex.split(args.serve) if args.serve else serve_command(sys.executable, sys.platform)
            lines = install(target, root=Path(args.root).expanduser().resolve(), serve=serve, link=args.link,
                            renders=args.renders, dry_run=args.dry_run)
    except (InstallError, OSError) as err:
        print(f"install_resolve: error: {err}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    if not args.uninstall and not args.dry_run:
        print(f"FaceFix's Resolve scripts are in {target}: restart Resolve, then Workspace > Scripts > Utility > "
              "FaceFix (any page) or Workspace > Scripts > Comp > FaceFix (Fusion page).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
