"""Pages generated from the package before every Sphinx build: the case-key reference, the CLI help and the
API page (one autodoc section per module, found by walking the package, so a new module is never missed).

    python docs/_generate.py      # writes docs/case_keys.md, docs/cli_help.md and docs/api.md (git-ignored)
"""

from __future__ import annotations

import sys
from pathlib import Path


def schema_rows(schema: dict, prefix: str = ""):
    """(dotted key, Spec) for every key of a schema table, depth first."""
    for key, spec in schema.items():
        dotted = f"{prefix}{key}"
        yield dotted, spec
        if spec.table:
            yield from schema_rows(spec.table, dotted + ".")


def all_schema_keys() -> list[tuple[str, str, object]]:
    """(section title, dotted key, Spec) for every key a case file can hold."""
    from hjbsolve import case as C
    out = [("Common keys", k, s) for k, s in schema_rows({k: v for k, v in C.TOP.items() if k != "model"})]
    for fam, sch in C.MODEL.items():
        out += [(f"family = \"{fam}\": [model]", k, s) for k, s in schema_rows(sch, "model.")]
    out += [("family = \"periodic\": [grid]", k, s) for k, s in schema_rows(C.PERIODIC_GRID, "grid.")]
    return out


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def case_keys_markdown() -> str:
    from hjbsolve.case import REQUIRED
    lines = ["# Case keys (generated)", "",
             "Every key a case file accepts, generated from the schema that `hjbsolve check` validates against",
             "(the same text as `hjbsolve check --schema`). Dotted names: `grid.x.n` is the key `n` of the",
             "table `[grid.x]` (or `x = { n = ... }` inside `[grid]`). How the keys fit together: [](cases.md).",
             ""]
    section = None
    for title, key, spec in all_schema_keys():
        if title != section:
            section = title
            lines += ["", f"## {title}", "", "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        default = "**required**" if spec.default is REQUIRED else f"`{spec.default!r}`"
        allowed = []
        if spec.choices:
            allowed.append("one of " + ", ".join(f"`{c}`" for c in spec.choices))
        for bound, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(spec, bound) is not None:
                allowed.append(f"{op} {getattr(spec, bound)}")
        lines.append(f"| `{key}` | {spec.kind} | {_cell(default)} | {_cell('; '.join(allowed))} | {_cell(spec.doc)} |")
    return "\n".join(lines) + "\n"


def cli_help_markdown() -> str:
    from hjbsolve.cli import build_parser
    ap = build_parser()
    lines = ["# Command reference (generated)", "",
             "The `--help` text of every command, generated from the parser of `hjbsolve.cli`.", "",
             "```text", ap.format_help().rstrip(), "```", ""]
    def walk(parser, prefix):
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, p in action.choices.items():
                    lines.extend([f"## {prefix} {name}", "", "```text", p.format_help().rstrip(), "```", ""])
                    walk(p, f"{prefix} {name}")

    walk(ap, "hjbsolve")
    return "\n".join(lines)


def api_markdown() -> str:
    import pkgutil

    import hjbsolve
    names = ["hjbsolve"] + sorted(m.name for m in pkgutil.walk_packages(hjbsolve.__path__, "hjbsolve.")
                                  if not m.name.endswith("__main__"))
    lines = ["# Python API (generated)", "",
             "Every module of the package, with the docstrings of its public functions and classes (autodoc). The",
             "docstrings are shown as written: plain text with ASCII formulas, in the conventions of",
             "[the mathematics page](mathematics.md).", ""]
    for name in names:
        lines += [f"## `{name}`", "", "```{eval-rst}", f".. automodule:: {name}", "   :members:", "```", ""]
    return "\n".join(lines)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def write_all(docs: Path) -> None:
    _write_if_changed(docs / "case_keys.md", case_keys_markdown())
    _write_if_changed(docs / "cli_help.md", cli_help_markdown())
    _write_if_changed(docs / "api.md", api_markdown())


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here.parent))
    write_all(here)
