"""Provenance of result files: the resolved case as TOML, its hash, the versions and solver settings.

Every result file carries, as root attributes,

* ``case_resolved``: the fully resolved case (every default filled in, every ``--set`` applied) as a TOML
  text written by :func:`to_toml`; ``hjbsolve info FILE --case`` prints it, and ``hjbsolve run`` on that
  text reproduces the file's numerical datasets bit for bit;
* ``case_sha256``: the sha256 of that text (UTF-8), the key under which ``--resume`` and ``study`` reuse a
  file;
* ``hjbsolve_version`` and ``versions`` (Python, numpy, scipy, numba, h5py);
* ``case_text``: the case text as the user wrote it (with the overrides as comments), for reading only.

Consumers (``simulate``, ``study``, ``plot``, ``info``) rebuild the case with :func:`stored_case`, from
``case_resolved``; files written before it existed fall back to ``case_text`` (with the ``# --set``
comment lines re-applied) and a warning.

:func:`to_toml` writes any value a validated case holds as valid TOML: strings are basic strings with
every control character escaped (newlines, quotes, backslashes, unicode kept as UTF-8), floats are
written with ``repr`` (``inf`` and ``nan`` spelled the TOML way) so that they read back to the same
double, keys that are not bare TOML keys are quoted, and tables nest as ``[a.b]`` headers.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import re
import tomllib

from .errors import CaseError

log = logging.getLogger(__name__)

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _key(k) -> str:
    if not isinstance(k, str):
        raise CaseError(f"cannot write the key {k!r} to TOML: keys are strings")
    return k if _BARE_KEY.match(k) else _string(k)


def _string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):   # TOML's own date-times
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        items = [f"{_key(k)} = {_value(x)}" for k, x in v.items() if x is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise CaseError(f"cannot write {v!r} ({type(v).__name__}) to TOML")


def to_toml(d: dict) -> str:
    """A TOML text of the nested dict ``d`` that ``tomllib.loads`` reads back equal to ``d`` without its
    ``None`` values (which mean "not given" in a case). Keys keep their order; a table's plain keys come
    before its sub-tables. Deterministic: the same dict gives the same text."""
    lines: list[str] = []

    def table(node: dict, path: list[str]) -> None:
        subs = []
        for k, v in node.items():
            if v is None:
                continue
            if isinstance(v, dict):
                subs.append((k, v))
            else:
                lines.append(f"{_key(k)} = {_value(v)}")
        for k, v in subs:
            header = ".".join(_key(p) for p in path + [k])
            lines.append("")
            lines.append(f"[{header}]")
            table(v, path + [k])

    if not isinstance(d, dict):
        raise CaseError(f"cannot write {d!r} to TOML: not a table")
    table(d, [])
    return "\n".join(lines).lstrip("\n") + "\n"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


#: the top-level keys of a case, in the order the resolved text lists them
CASE_KEYS = ("name", "description", "family", "model", "grid", "time", "run", "study")


def resolved_text(case) -> str:
    """The canonical TOML of a validated case (a :class:`~hjbsolve.case.Case` or the dict
    :func:`~hjbsolve.case.validate` returns: defaults and overrides applied)."""
    d = case if isinstance(case, dict) else case.as_dict()
    return to_toml({k: d[k] for k in CASE_KEYS if k in d})


def versions() -> str:
    """'python 3.12.1; numpy 2.1.0; ...': the libraries whose versions can change the numbers."""
    import platform
    parts = [f"python {platform.python_version()}"]
    for mod in ("numpy", "scipy", "numba", "h5py"):
        try:
            parts.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:        # pragma: no cover - all are dependencies
            parts.append(f"{mod} missing")
    return "; ".join(parts)


def case_hash(case) -> str:
    """sha256 of :func:`resolved_text`: the key under which a stored run is reused."""
    return sha256(resolved_text(case))


def case_attrs(case) -> dict:
    """The provenance attributes of a result made from ``case`` (see the module docstring)."""
    from . import __version__
    text = resolved_text(case)
    return {"case_resolved": text, "case_sha256": sha256(text), "case_source": str(case.source),
            "case_text": case.text, "hjbsolve_version": __version__, "versions": versions()}


def _overrides_from_comments(text: str) -> list[str]:
    """The ``# --set KEY=VALUE`` lines that older files appended to ``case_text``."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# --set ") and "=" in line:
            out.append(line[len("# --set "):])
    return out


def stored_raw(attrs: dict, path: str) -> dict:
    """The case a result file was made with, from its root attributes, as a raw (not validated) dict: the
    resolved case when the file has one, else (older files) the raw ``case_text`` with its recorded
    overrides applied, and a warning. Raises :class:`~hjbsolve.store.StoreError` naming the file when
    neither attribute is usable."""
    import warnings

    from .case import apply_overrides
    from .store import StoreError
    text = attrs.get("case_resolved")
    extra: list[str] = []
    if not isinstance(text, str) or not text:
        text = attrs.get("case_text")
        if not isinstance(text, str) or not text:
            raise StoreError(f"{path}: no case_resolved or case_text attribute: not an hjbsolve result file")
        extra = _overrides_from_comments(text)
        warnings.warn(f"{path}: written before resolved cases were stored: rebuilding the case from its raw "
                      "case_text" + (f" and the recorded overrides {extra}" if extra else ""), UserWarning,
                      stacklevel=2)
    try:
        return apply_overrides(tomllib.loads(text), extra)
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise StoreError(f"{path}: the stored case is damaged: not valid TOML ({e})") from None
    except CaseError as e:
        raise StoreError(f"{path}: the stored case: {e}") from None


def stored_case(attrs: dict, path: str, overrides: list[str] | None = None):
    """The validated :class:`~hjbsolve.case.Case` of :func:`stored_raw`, with ``overrides`` (``key=value``)
    applied on top; its source names the file."""
    from .case import load_case
    case = load_case(stored_raw(attrs, path), overrides)
    case.source = f"{path} (stored case)"
    return case


def check_reusable(path: str, attrs: dict, want: str) -> str | None:
    """Why the file ``path`` (root attributes ``attrs``) cannot stand for a run of the resolved case whose
    hash is ``want`` with this package version; None when it can."""
    from . import __version__
    if attrs.get("case_sha256") != want:
        got = attrs.get("case_sha256")
        return (f"{path} was made from another case (hash {str(got)[:12] if got else 'absent'}, "
                f"now {want[:12]})")
    if attrs.get("hjbsolve_version") != __version__:
        return f"{path} was made by hjbsolve {attrs.get('hjbsolve_version')}, this is {__version__}"
    return None
