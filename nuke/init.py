# FaceFix's NUKE_PATH plugin folder (init.py runs in every Nuke session, GUI, terminal and render):
# makes the adapter (facefix_nuke) importable and puts the folder holding FaceFix.gizmo on the plugin path.
# FaceFix itself is found through $FACEFIX_ROOT or facefix_config.json beside this file (see README.md).
import os
import sys

_here = os.path.dirname(os.path.abspath(globals().get("__file__") or "."))
if globals().get("__file__") and _here not in sys.path:
    sys.path.insert(0, _here)

import facefix_nuke  # noqa: E402

facefix_nuke.register()
