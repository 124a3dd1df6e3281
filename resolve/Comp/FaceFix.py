"""FaceFix on the Fusion page (Workspace > Scripts > Comp > FaceFix).

Tracks and fixes the selected Loader or MediaIn through FaceFix's bridge, and merges the result over it through one
animated, editable Polygon mask per face; re-renders with the edited mask. See resolve/README.md.
This file only finds FaceFix's adapter (Scripts/Modules/facefix_resolve) and hands it the script's globals.
"""
import os
import sys


def _modules_folders():
    here = globals().get("__file__")
    if here:
        yield os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(here))), "Modules")
    fu = globals().get("fusion") or globals().get("fu")
    if fu is not None:
        for folder in str(fu.MapPath("Scripts:") or "").split(";"):
            if folder:
                yield os.path.join(folder, "Modules")
    home = os.path.expanduser("~")
    yield os.path.join(home, ".local", "share", "DaVinciResolve", "Fusion", "Scripts", "Modules")
    yield os.path.join(home, "Library", "Application Support", "Blackmagic Design", "DaVinci Resolve", "Fusion",
                       "Scripts", "Modules")
    yield os.path.join(os.environ.get("APPDATA", home), "Blackmagic Design", "DaVinci Resolve", "Support", "Fusion",
                       "Scripts", "Modules")


for _folder in _modules_folders():
    if os.path.isfile(os.path.join(_folder, "facefix_resolve", "__init__.py")):
        if _folder not in sys.path:
            sys.path.insert(0, _folder)
        break
else:
    print("FaceFix: facefix_resolve is not installed beside this script (run install/install_resolve.py)")

import facefix_resolve  # noqa: E402

facefix_resolve.comp_main(globals())
