# Render a Nuke script's FaceFix nodes headless (farm):
#   nuke -t /path/to/facefix/nuke/facefix_render.py SCRIPT.nk [FIRST-LAST] [--node NAME]... [--write NAME]... [--save]
# (facefix_nuke.farm says what each option does).
import os
import sys

_here = os.path.dirname(os.path.abspath(globals().get("__file__") or "."))
if globals().get("__file__") and _here not in sys.path:
    sys.path.insert(0, _here)

from facefix_nuke import farm  # noqa: E402

sys.exit(farm.main(sys.argv[1:]))
