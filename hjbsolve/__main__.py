"""``python -m hjbsolve``: the same as the ``hjbsolve`` command."""

import sys

from .cli import main

sys.exit(main())
