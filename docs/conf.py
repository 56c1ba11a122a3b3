"""Sphinx configuration of the hjbsolve guide (Markdown pages through myst-parser, math by MathJax).

Build (no network needed; MathJax is loaded by the reader's browser):

    python -m sphinx -W -b html docs docs/_build/html

The case-key reference (case_keys.md) and the command reference (cli_help.md) are generated here from
the package itself (``hjbsolve.case`` schema and ``hjbsolve.cli`` parser) before every build, so they
cannot drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))          # the package of this source tree, not an installed copy
sys.path.insert(0, str(HERE))

import _generate  # noqa: E402

project = "hjbsolve"
author = "the hjbsolve authors"
copyright = "the hjbsolve authors, MIT licence"
from hjbsolve import __version__ as release  # noqa: E402

version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
root_doc = "index"
exclude_patterns = ["_build", "**/*.txt", "README*"]
html_theme = "alabaster"
html_static_path: list[str] = []

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_mock_imports: list[str] = []
autosummary_generate = True

nitpicky = True
# types from other projects (no intersphinx: the build must not need the network)
nitpick_ignore_regex = [
    ("py:class", r"(np|numpy|scipy|h5py|numba|matplotlib|pathlib|collections|typing|dataclasses)\..*"),
    ("py:class", r"(ndarray|ArrayLike|NDArray|Path|Callable|Any|Sequence|Iterable|Mapping|optional)"),
    ("py:class", r"(os|ast|io)\..*"),
    ("py:class", r"hjbsolve\..*|\w+Error"),   # private helpers and exceptions named in signatures
    ("py:data", r".*"),
    ("py:obj", r"hjbsolve\..*"),
    ("py:func", r".*"),
    ("py:meth", r".*"),
    ("py:mod", r".*"),
]


def docstring_as_text(app, what, name, obj, options, lines):
    """The package's docstrings are plain text (aligned formulas, ASCII math), not reStructuredText: show them
    verbatim, as a literal block, so that |x| or a*b in a formula is not read as markup."""
    if lines:
        lines[:] = ["::", ""] + ["    " + line for line in lines] + [""]


def setup(app):
    app.connect("autodoc-process-docstring", docstring_as_text)
    app.connect("builder-inited", lambda app: _generate.write_all(HERE))
