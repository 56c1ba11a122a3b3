"""The guide in docs/: it builds without warnings, its links and images resolve, it documents every case key,
and nothing in the repository cites a file that is not in it. No network is used."""

from __future__ import annotations

import html.parser
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))


def _have_sphinx() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("sphinx", "myst_parser"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """sphinx-build -W -n (warnings are errors, nitpicky) of docs/ into a temporary folder."""
    if not _have_sphinx():
        pytest.skip("sphinx and myst-parser are not installed (pip install '.[docs]')")
    out = tmp_path_factory.mktemp("html")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-E", "-q", "-b", "html",
                           "-d", str(out / ".doctrees"), str(DOCS), str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets: list[tuple[str, str]] = []   # (tag, url)
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key):
                self.targets.append((tag, a[key]))


def _parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_every_local_link_and_image_resolves(built):
    pages = sorted(built.rglob("*.html"))
    assert len(pages) >= 10
    parsed = {p: _parse(p) for p in pages}
    broken, checked = [], 0
    for page, links in parsed.items():
        for tag, url in links.targets:
            parts = urlsplit(url)
            if parts.scheme or url.startswith("//") or url.startswith("mailto:"):
                continue                          # external: not checked (no network)
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            checked += 1
            if not target.exists():
                broken.append(f"{page.relative_to(built)}: <{tag}> {url}: no file {target}")
                continue
            if parts.fragment and target.suffix == ".html" and target in parsed:
                if unquote(parts.fragment) not in parsed[target].ids:
                    broken.append(f"{page.relative_to(built)}: {url}: no anchor #{parts.fragment}")
    assert checked > 100
    assert not broken, "\n".join(broken)
    # the API page documents every module, from its docstrings
    api = (built / "api.html").read_text(encoding="utf-8")
    import pkgutil

    import hjbsolve
    for m in pkgutil.walk_packages(hjbsolve.__path__, "hjbsolve."):
        if not m.name.endswith("__main__"):
            assert f'id="module-{m.name}"' in api, m.name
    assert 'id="hjbsolve.plot.plot_file"' in api and 'id="hjbsolve.case.load_case"' in api
    # the gallery shows every figure kept in docs/
    gallery = (built / "gallery.html").read_text(encoding="utf-8")
    for png in sorted(DOCS.glob("*.png")):
        assert f"_images/{png.name}" in gallery, f"docs/{png.name} is not in the gallery"


def test_every_case_key_is_documented(built):
    from _generate import all_schema_keys
    text = (built / "case_keys.html").read_text(encoding="utf-8")
    keys = all_schema_keys()
    assert len(keys) > 80
    missing = [k for _, k, _ in keys if f"<code class=\"docutils literal notranslate\"><span class=\"pre\">{k}</span>" not in text]
    assert not missing, f"keys missing from the case-key page: {missing}"
    # one section per family
    from hjbsolve.case import FAMILIES
    for fam in FAMILIES:
        assert f'id="family-{fam.replace("_", "-")}-model"' in text, fam


def test_mathematics_sections_cited_by_the_code_exist():
    """The code cites docs/mathematics.md §1..§5: each section exists, with its title."""
    text = (DOCS / "mathematics.md").read_text(encoding="utf-8")
    titles = re.findall(r"^## §(\d) (.+)$", text, flags=re.M)
    assert [n for n, _ in titles] == ["1", "2", "3", "4", "5"]
    cited = set()
    for path in _repo_text_files():
        cited |= set(re.findall(r"docs/mathematics\.md §(\d)", path.read_text(encoding="utf-8", errors="replace")))
    assert cited and cited <= {n for n, _ in titles}


# --- nothing in the repository cites a file that is not in it -------------------------------------------

TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".cfg", ".ini", ".yml", ".yaml", ".c", ".sh", ""}
GENERATED = {"docs/case_keys.md", "docs/cli_help.md", "docs/api.md"}   # written by docs/_generate.py at build time
# a path inside the repository, as text: docs/x.png, cases/lq.toml, scripts/c/step.c, tests/test_cell.py ...
PATH_RE = re.compile(r"(?<![\w/.-])((?:\.ci|docs|cases|scripts|tests|hjbsolve)/[\w./-]*\w\.(?:md|py|toml|png|txt|c|csv|svg|pdf))")
PLACEHOLDERS = {"foo", "bar", "my_case", "example"}      # made-up names in examples and error messages
# notes that live outside the repository and must never be cited by it
OUTSIDE = ["MATH" + ".md", "DESIGN" + ".md", "../" + "shared"]


def _repo_text_files():
    proc = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT)
    names = proc.stdout.split() if proc.returncode == 0 else []
    if not names:        # not a git checkout (an sdist): walk the tree
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    out = []
    for n in names:
        p = ROOT / n
        if p.is_file() and p.suffix in TEXT_SUFFIXES and p.name != Path(__file__).name and not p.is_symlink():
            out.append(p)
    return out


def test_no_reference_to_a_missing_file():
    bad = []
    files = _repo_text_files()
    assert len(files) > 30
    for p in files:
        text = p.read_text(encoding="utf-8", errors="replace")
        rel = p.relative_to(ROOT)
        for word in OUTSIDE:
            if word in text:
                bad.append(f"{rel}: cites {word}, which is not in the repository")
        for m in PATH_RE.finditer(text):
            ref = m.group(1).rstrip(".")
            if ref in GENERATED or Path(ref).stem in PLACEHOLDERS:
                continue
            if not (ROOT / ref).exists():
                bad.append(f"{rel}: cites {ref}, which does not exist")
    assert not bad, "\n".join(sorted(set(bad)))
