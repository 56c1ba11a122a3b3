"""Fault campaign: feed ``hjbsolve`` damaged inputs and check that every try ends cleanly.

Mutations (seeded):

- ``case-type``   a random key of a shipped case (hjbsolve/cases/*.toml) gets a value of another type
- ``case-range``  a random numeric key gets an out-of-range value (negative, 0, 1e308, 1e-320, 10^30, nan, inf)
- ``case-text``   the TOML text is truncated, bit-flipped, or loses or repeats a line
- ``run-range``   the same on a tiny case, then ``hjbsolve run`` (the guards must refuse what would not end)
- ``h5-bitflip``, ``h5-truncate``, ``h5-delete`` (a dataset, attribute, group or dimension scale),
  ``h5-value`` (NaN in an array, a string in a numeric attribute, a damaged case text): small result files
  given to ``info``, ``plot`` and ``simulate``
- ``study-resume``: one run file of a finished two-run study damaged as above, then ``study --resume`` (which
  may recompute it: there the case file is the input that must stay unchanged)

For every try: the exit code must be 0 or 2 (2: one ``hjbsolve: error:`` line last on stderr), no traceback on
stderr, no hang past the bound, no crash of the process, and no file damaged (the input unchanged, no temporary
or partial file left in its folder).

The tries run in-process (``hjbsolve.cli.main``, stderr captured) inside a worker process, so that numba is
imported once; a crash or a hang kills only the worker, which is restarted after the try and counted.

Usage: ``python scripts/fault_campaign.py [--tries N] [--seed S] [--bound SECONDS]`` prints the table
category, tries, exit 0, clear errors, internal errors, tracebacks, hangs, crashes, files damaged.
``tests/test_fault_campaign.py`` runs a short version in the suite.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import select
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

CASES = Path(__file__).resolve().parent.parent / "hjbsolve" / "cases"

TINY = """name = "tiny"
family = "lq"
[model]
s = 0.5
[grid]
x = { box = [-2.0, 2.0], n = 21 }
y = { n = 21 }
p = { box = [-2.0, 2.0], n = 5 }
u = { n = 5 }
[time]
T = 0.2
dt = 0.05
[run]
eps = [0.1, 0.0]
"""

BAD_VALUES = [-1, 0, -1e308, 1e308, 1e-320, 10 ** 30, -(10 ** 30), float("nan"), float("inf"), 2 ** 62, 3]
OTHER_TYPES = ["text", True, [], [1, 2, 3], [[1.0, 2.0], [3.0, 4.0]], {"a": 1}, [[[[[[0]]]]]], 1.5, 7,
               "1e400", [1.0, "x"], {"box": [1, 2], "n": "many"}]

CATEGORIES = ("case-type", "case-range", "case-text", "run-range", "h5-bitflip", "h5-truncate", "h5-delete",
              "h5-value", "study-resume")


# ------------------------------------------------------------------------------------------------------------
# TOML writing (only what case files hold)

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else "-inf" if v == -float("inf") else repr(v))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def dump_toml(d: dict) -> str:
    lines, tables = [], []
    for k, v in d.items():
        (tables if isinstance(v, dict) else lines).append((k, v))
    out = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in lines]
    for k, v in tables:
        out.append(f"[{json.dumps(k)}]")
        out.extend(f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in v.items())
    return "\n".join(out) + "\n"


def _leaves(d: dict, prefix=()) -> list:
    out = []
    for k, v in d.items():
        out.append(prefix + (k,))
        if isinstance(v, dict):
            out.extend(_leaves(v, prefix + (k,)))
    return out


def _set_path(d: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


def _numeric_leaves(d: dict) -> list:
    def get(path):
        x = d
        for k in path:
            x = x[k]
        return x
    return [p for p in _leaves(d) if isinstance(get(p), (int, float)) and not isinstance(get(p), bool)
            or isinstance(get(p), list) and get(p) and all(isinstance(v, (int, float)) for v in get(p))]


# ------------------------------------------------------------------------------------------------------------
# mutations: each returns (file path, description)

def mutate_case(rng: random.Random, category: str, src: Path, dest: Path) -> str:
    text = src.read_text()
    if category == "case-text":
        how = rng.choice(["truncate", "bitflip", "drop-line", "repeat-line", "garbage"])
        data = bytearray(text.encode())
        if how == "truncate":
            data = data[:rng.randrange(len(data))]
        elif how == "bitflip":
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
        elif how == "garbage":
            data[rng.randrange(len(data)):] = bytes(rng.randrange(256) for _ in range(64))
        else:
            lines = text.splitlines(keepends=True)
            i = rng.randrange(len(lines))
            lines = lines[:i] + lines[i + 1:] if how == "drop-line" else lines[:i] + [lines[i]] + lines[i:]
            data = bytearray("".join(lines).encode())
        dest.write_bytes(bytes(data))
        return how
    d = tomllib.loads(text)
    if category in ("case-range", "run-range"):
        paths = _numeric_leaves(d)
        path = rng.choice(paths)
        value = rng.choice(BAD_VALUES)
        if category == "run-range" and rng.random() < 0.3:
            value = [value]
    else:
        path = rng.choice(_leaves(d))
        value = rng.choice(OTHER_TYPES)
    _set_path(d, path, value)
    dest.write_text(dump_toml(d))
    return f"{'.'.join(path)} = {_toml_value(value)[:40]}"


def mutate_h5(rng: random.Random, category: str, src: Path, dest: Path) -> str:
    import h5py
    import numpy as np
    shutil.copyfile(src, dest)
    if category == "h5-bitflip":
        data = bytearray(dest.read_bytes())
        n = rng.choice([1, 4, 32])
        for _ in range(n):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        dest.write_bytes(bytes(data))
        return f"{n} bits"
    if category == "h5-truncate":
        data = dest.read_bytes()
        k = rng.randrange(len(data))
        dest.write_bytes(data[:k])
        return f"at {k} of {len(data)} bytes"
    with h5py.File(dest, "a") as f:
        names = []
        f.visititems(lambda name, obj: names.append((name, obj)))
        datasets = [(n, o) for n, o in names if isinstance(o, h5py.Dataset)]
        if category == "h5-delete":
            how = rng.choice(["dataset", "attribute", "group", "scale"])
            if how == "dataset" or (how == "group" and not any(isinstance(o, h5py.Group) for _, o in names)):
                name, _ = rng.choice(datasets)
                del f[name]
                return f"dataset {name}"
            if how == "group":
                name = rng.choice([n for n, o in names if isinstance(o, h5py.Group)])
                del f[name]
                return f"group {name}"
            if how == "attribute":
                objs = [f] + [o for _, o in names if len(o.attrs)]
                obj = rng.choice(objs)
                keys = [k for k in obj.attrs if k not in ("CLASS", "NAME", "DIMENSION_LIST", "REFERENCE_LIST")]
                if not keys:
                    return "nothing"
                key = rng.choice(keys)
                del obj.attrs[key]
                return f"attribute {obj.name}:{key}"
            vars_ = [(n, o) for n, o in datasets if o.ndim and not h5py.h5ds.is_scale(o.id) and len(o.dims[0])]
            if not vars_:
                return "nothing"
            name, obj = rng.choice(vars_)
            axis = rng.randrange(obj.ndim)
            for scale in list(obj.dims[axis].values()):
                obj.dims[axis].detach_scale(scale)
            return f"scale of {name} axis {axis}"
        how = rng.choice(["nan", "attr-string", "case-text"])
        if how == "nan":
            floats = [(n, o) for n, o in datasets if o.dtype.kind == "f" and o.size]
            name, obj = rng.choice(floats)
            a = obj[()]
            a.flat[rng.randrange(a.size)] = np.nan
            obj[...] = a
            return f"NaN in {name}"
        if how == "attr-string":
            objs = [f] + [o for _, o in names]
            cands = [(o, k) for o in objs for k in o.attrs
                     if k not in ("CLASS", "NAME", "DIMENSION_LIST", "REFERENCE_LIST")
                     and np.asarray(o.attrs[k]).dtype.kind in "biuf"]
            if not cands:
                return "nothing"
            obj, key = rng.choice(cands)
            obj.attrs[key] = "not a number"
            return f"string in attribute {obj.name}:{key}"
        key = rng.choice([k for k in ("case_resolved", "case_text", "case_sha256") if k in f.attrs] or ["case_text"])
        text = f.attrs.get(key, "")
        text = text.decode() if isinstance(text, bytes) else str(text)
        f.attrs[key] = text[:rng.randrange(max(1, len(text)))] + rng.choice(["[", "= =", "\x01", ""])
        return f"damaged {key}"


# ------------------------------------------------------------------------------------------------------------
# the tries

def make_fixtures(work: Path) -> dict:
    """A tiny case and its result file (with V^eps groups), and a periodic cell result, in ``work``."""
    from hjbsolve.cli import main
    work.mkdir(parents=True, exist_ok=True)
    tiny = work / "tiny.toml"
    tiny.write_text(TINY)
    res = work / "tiny.h5"
    per = work / "periodic.h5"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc1 = main(["run", str(tiny), "-o", str(res), "-q"])
        rc2 = main(["cell", str(CASES / "periodic_cos.toml"), "-o", str(per), "-q", "--set", "grid.P.n=5",
                    "--set", "grid.y.n=16"])
        rc3 = main(["study", str(tiny), "--vary", "eps=0.1,0.05", "-q", "-o", str(work / "study")])
    if rc1 or rc2 or rc3:
        raise RuntimeError("fault campaign: the fixtures could not be made")
    return {"tiny": tiny, "result": res, "periodic": per, "study": work / "study_runs"}


def plan_tries(seed: int, per_category: int, work: Path, fixtures: dict, categories=CATEGORIES) -> list[dict]:
    rng = random.Random(seed)
    shipped = sorted(CASES.glob("*.toml"))
    tries = []
    for cat in categories:
        for i in range(per_category):
            folder = work / f"{cat}-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            if cat.startswith("case"):
                src = rng.choice(shipped)
                dest = folder / src.name
                what = mutate_case(rng, cat, src, dest)
                argv = ["check", str(dest), "-q"]
            elif cat == "run-range":
                dest = folder / "tiny.toml"
                what = mutate_case(rng, "run-range", fixtures["tiny"], dest)
                argv = ["run", str(dest), "-q", "-o", str(folder / "out.h5")]
            elif cat == "study-resume":
                shutil.copytree(fixtures["study"], folder / "study_runs")
                shutil.copyfile(fixtures["tiny"], folder / "tiny.toml")
                runs = sorted((folder / "study_runs").glob("*.h5"))
                src = rng.choice(runs)
                how = rng.choice(["h5-bitflip", "h5-truncate", "h5-delete", "h5-value"])
                what = f"{how} " + mutate_h5(rng, how, src, src.with_suffix(".tmpcopy"))
                os.replace(src.with_suffix(".tmpcopy"), src)
                what = f"{src.name}: {what}"
                dest = folder / "tiny.toml"
                argv = ["study", str(dest), "--vary", "eps=0.1,0.05", "--resume", "-q", "-o", str(folder / "study")]
            else:
                src = fixtures["periodic"] if rng.random() < 0.2 else fixtures["result"]
                dest = folder / src.name
                what = mutate_h5(rng, cat, src, dest)
                verb = rng.choice(["info", "plot", "simulate"])
                argv = {"info": ["info", str(dest)],
                        "plot": ["plot", str(dest), "-q", "-o", str(folder / "out.png")],
                        "simulate": ["simulate", str(dest), "-q", "-n", "64", "--record", "11",
                                     "-o", str(folder / "sim.h5")]}[verb]
            tries.append({"index": len(tries), "category": cat, "what": what if cat == "study-resume" else
                          f"{dest.name}: {what}", "argv": argv,
                          "input": str(dest), "folder": str(folder)})
    return tries


def _digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "missing"


def _worker(plan_file: str, start: int) -> None:
    """Run the tries from ``start`` on, in-process; one JSON line per try on the original stdout."""
    from hjbsolve.cli import main
    out = os.fdopen(os.dup(1), "w", buffering=1)
    plan = json.loads(Path(plan_file).read_text())
    tries = plan["tries"]
    here = os.getcwd()
    # warm-up outside the per-try bound: the first run loads numba's cached kernels (slow on a loaded machine)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(plan["warmup"])
    for t in tries[start:]:
        print(json.dumps({"start": t["index"]}), file=out, flush=True)
        err, sink = io.StringIO(), io.StringIO()
        t0 = time.perf_counter()
        os.chdir(t["folder"])
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(err):
                try:
                    rc = main(t["argv"])
                except SystemExit as e:       # argparse
                    rc = e.code if isinstance(e.code, int) else 2
        except BaseException as e:            # escaped main: the worst case, counted as a traceback
            rc = -1
            err.write(f"Traceback (escaped main): {type(e).__name__}: {e}\n")
        finally:
            os.chdir(here)
        print(json.dumps({"index": t["index"], "rc": rc, "stderr": err.getvalue()[-4000:],
                          "seconds": time.perf_counter() - t0}), file=out, flush=True)


def run_tries(tries: list[dict], work: Path, bound: float = 60.0, startup: float = 600.0) -> list[dict]:
    """Run ``tries`` in worker processes (restarted after a crash or a hang); returns one record per try."""
    plan_file = work / "plan.json"
    tiny = work / "fixtures" / "tiny.toml"
    plan_file.write_text(json.dumps({"tries": tries, "warmup": ["run", str(tiny), "-q", "-o", str(work / "warm.h5")]}))
    before = {t["index"]: (_digest(t["input"]), sorted(os.listdir(t["folder"]))) for t in tries}
    records: dict[int, dict] = {}
    start = 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent)] +
                                        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    while start < len(tries):
        proc = subprocess.Popen([sys.executable, __file__, "--worker", str(plan_file), str(start)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                                start_new_session=True)
        current, deadline = None, time.monotonic() + startup
        buf = ""
        while True:
            left = deadline - time.monotonic()
            ready = select.select([proc.stdout], [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:          # hang: kill the worker, count the try, go on after it
                os.killpg(proc.pid, 9)
                proc.wait()
                i = current if current is not None else start
                records[i] = {"index": i, "rc": None, "stderr": "", "seconds": bound, "hang": True}
                start = i + 1
                break
            line = proc.stdout.readline()
            if not line:           # the worker died: a crash during the current try
                proc.wait()
                i = current if current is not None else start
                records[i] = {"index": i, "rc": proc.returncode, "stderr": buf, "seconds": 0.0, "crash": True}
                start = i + 1
                break
            msg = json.loads(line)
            if "start" in msg:
                current, deadline = msg["start"], time.monotonic() + bound
            else:
                records[msg["index"]] = msg
                current = None
                start = msg["index"] + 1
                deadline = time.monotonic() + bound
                if start >= len(tries):
                    proc.wait()
                    break
    out = []
    for t in tries:
        r = dict(records[t["index"]])
        r.update(category=t["category"], what=t["what"], argv=t["argv"])
        digest, listing = before[t["index"]]
        left_over = [n for n in sorted(os.listdir(t["folder"])) if n not in listing and
                     (".tmp" in n or ".partial" in n or n.startswith("."))]
        r["damaged"] = _digest(t["input"]) != digest or bool(left_over)
        r["left_over"] = left_over
        out.append(classify(r))
    return out


def classify(r: dict) -> dict:
    err = r.get("stderr", "")
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    r["traceback"] = "Traceback" in err
    r["clear"] = r.get("rc") == 2 and bool(lines) and lines[-1].startswith("hjbsolve: error: ")
    r["ok"] = r.get("rc") == 0
    r["internal"] = r.get("rc") == 1
    r["bad"] = (r.get("hang") or r.get("crash") or r["traceback"] or r["damaged"]
                or not (r["ok"] or r["clear"]))
    return r


def table(records: list[dict]) -> str:
    head = ("category", "tries", "exit 0", "clear errors", "internal", "tracebacks", "hangs", "crashes",
            "files damaged")
    rows = []
    for cat in dict.fromkeys(r["category"] for r in records):
        rs = [r for r in records if r["category"] == cat]
        rows.append((cat, len(rs), sum(r["ok"] for r in rs), sum(r["clear"] for r in rs),
                     sum(r["internal"] for r in rs), sum(r["traceback"] for r in rs),
                     sum(bool(r.get("hang")) for r in rs), sum(bool(r.get("crash")) for r in rs),
                     sum(r["damaged"] for r in rs)))
    rows.append(("total",) + tuple(sum(row[i] for row in rows) for i in range(1, len(head))))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda row: "  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt(head)] + [fmt(r) for r in rows])


def campaign(work: Path, seed: int = 0, per_category: int = 10, bound: float = 60.0,
             categories=CATEGORIES) -> list[dict]:
    fixtures = make_fixtures(work / "fixtures")
    tries = plan_tries(seed, per_category, work, fixtures, categories)
    return run_tries(tries, work, bound)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], int(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tries", type=int, default=40, help="tries per category (default 40)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bound", type=float, default=60.0, help="seconds a try may take before it is a hang")
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one, removed at the end)")
    ap.add_argument("--show", action="store_true", help="print every try that did not end cleanly")
    args = ap.parse_args()
    import tempfile
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="hjbsolve-faults-"))
    t0 = time.perf_counter()
    try:
        records = campaign(work, args.seed, args.tries, args.bound)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(table(records))
    print(f"({len(records)} tries, seed {args.seed}, bound {args.bound:g} s, {time.perf_counter() - t0:.0f} s)")
    bad = [r for r in records if r["bad"] or r["internal"]]
    if args.show or bad:
        for r in bad:
            print(f"- {r['category']}: {r['what']}: {' '.join(r['argv'][:1])} rc={r.get('rc')} "
                  f"{'hang ' if r.get('hang') else ''}{'crash ' if r.get('crash') else ''}"
                  f"{'damaged ' + str(r['left_over']) + ' ' if r['damaged'] else ''}"
                  f"{(r.get('stderr') or '').strip().splitlines()[-1:] }")
    return 1 if any(r["bad"] for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
