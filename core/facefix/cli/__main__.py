"""``python -m facefix.cli``: the ``facefix`` command."""

import sys

from . import main

sys.exit(main())
