"""``python -m hjbsolve``: the same as the ``hjbsolve`` command."""

import sys

from .cli import entry

sys.exit(entry())
