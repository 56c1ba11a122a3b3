"""Progress bars (tqdm) that stay silent with ``--quiet`` or when stderr is not a terminal."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

_SETTINGS = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    _SETTINGS["quiet"] = bool(quiet)


def progress(iterable=None, *, desc: str = "", total: int | None = None, unit: str = "it"):
    """A tqdm bar over ``iterable``; disabled when quiet or when stderr is not a TTY."""
    disable = _SETTINGS["quiet"] or not sys.stderr.isatty()
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, leave=False, dynamic_ncols=True)
