"""Provenance that reproduces: the resolved case as TOML in every file, its hash, versions and solver settings;
`info --case` + `run` reproduce a file bit for bit; consumers rebuild from the resolved case; --resume and
study reuse a file only when its hash matches; one writer per output (lock)."""

import datetime
import math
import os
import subprocess
import sys
import time
import tomllib

import h5py
import numpy as np
import pytest
from scipy.interpolate import RegularGridInterpolator

import hjbsolve
from hjbsolve import store
from hjbsolve.case import load_case, validate
from hjbsolve.cli import default_case_path, main
from hjbsolve.provenance import case_hash, resolved_text, sha256, to_toml

CASES = sorted(default_case_path().parent.glob("*.toml"))
LQ = str(default_case_path().parent / "lq.toml")
#: the issue's overrides, on a grid small enough for the test suite
SMALL_LQ = ["--set", "model.tau=0.5", "--set", "run.eps=[0.05]", "--set", "grid.x.n=41", "--set", "grid.y.n=31",
            "--set", "grid.p.n=21", "--set", "time.dt=0.05", "--set", "run.output_times=[0.5, 1.0]"]


def datasets(path) -> dict:
    """name -> array of every dataset of an HDF5 file."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_numbers(a, b):
    """The numerical datasets of two files are equal bit for bit (same names, dtypes, shapes, bytes)."""
    da, db = datasets(a), datasets(b)
    assert sorted(da) == sorted(db)
    for name in da:
        x, y = np.asarray(da[name]), np.asarray(db[name])
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if x.dtype.kind in "biuf":
            assert x.tobytes() == y.tobytes(), name
        else:
            assert np.array_equal(x, y), name


def cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------- the serializer
@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_resolved_text_round_trips_every_shipped_case(path):
    case = load_case(path)
    text = resolved_text(case)
    again = load_case(tomllib.loads(text))
    assert again.as_dict() == case.as_dict()
    assert resolved_text(again) == text                    # canonical: a fixed point
    assert validate(tomllib.loads(text)) == validate(tomllib.loads(case.text))


def test_to_toml_writes_valid_toml_whatever_the_values_hold():
    d = {"text": 'line 1\nline 2\r\t"quoted" \\back\\ \x00\x1f\x7f é ∂ 🙂',
         "floats": [0.1, 1 / 3, 2.0 ** -1074, 1.7976931348623157e308, -0.0, 1e-310, math.pi],
         "special": [math.inf, -math.inf], "big": 2 ** 63 - 1, "neg": -(2 ** 63), "flag": False,
         "nested": {"deeper": {"deepest": {"x": [[1, 2], [3.5, "s"]]}}, "empty": {}},
         "when": [datetime.date(2026, 12, 4), datetime.datetime(2026, 12, 4, 18, 0, 1, 250000),
                  datetime.datetime(2026, 12, 4, 18, 0, tzinfo=datetime.timezone.utc), datetime.time(7, 30)],
         "model.gamma": 1.0, "with space": {"k y": "v"}, "": "empty key", "list_of_tables": [{"a": 1}, {"b": [2]}],
         "skipped": None}
    text = to_toml(d)
    back = tomllib.loads(text)
    want = {k: v for k, v in d.items() if v is not None}
    assert back == want
    for a, b in zip(back["floats"], d["floats"]):              # repr: every float back to the same double
        assert math.copysign(1, a) == math.copysign(1, b) and a == b
    assert math.isnan(tomllib.loads(to_toml({"v": math.nan}))["v"])
    assert to_toml(d) == text                                  # deterministic
    assert sha256(text) == sha256(to_toml(d)) and len(sha256(text)) == 64


# ------------------------------------------------------------------------------ a file reproduces from itself
def test_info_case_reproduces_the_file_bit_for_bit(tmp_path, capsys):
    r1, r2 = tmp_path / "r.h5", tmp_path / "again.h5"
    code, _, err = cli(["run", LQ, *SMALL_LQ, "-o", r1, "-q"], capsys)
    assert code == 0, err
    code, printed, _ = cli(["info", r1, "--case"], capsys)
    assert code == 0
    case_file = tmp_path / "printed.toml"
    case_file.write_text(printed)
    case = load_case(case_file)
    assert case.model["tau"] == 0.5 and case.run["eps"] == [0.05] and case.grid["x"]["n"] == 41
    assert cli(["run", case_file, "-o", r2, "-q"], capsys)[0] == 0
    assert_same_numbers(r1, r2)
    a, b = store.root_attrs(r1), store.root_attrs(r2)
    assert a["case_resolved"] == b["case_resolved"] == printed
    assert a["case_sha256"] == b["case_sha256"] == sha256(printed) == case_hash(case)
    assert a["hjbsolve_version"] == hjbsolve.__version__ and "numpy" in a["versions"] and "numba" in a["versions"]
    assert a["solver_minimisation"].startswith("eps_0.05: exact") and a["solver_control_nodes"] > 0
    assert "--set model.tau=0.5" in a["case_text"] and a["case_source"] == LQ
    with h5py.File(r1) as f:
        assert f["eps_0.05"].attrs["minimisation"].startswith("exact")
    # the minimisation over a control grid is recorded as such
    code, _, err = cli(["run", LQ, *SMALL_LQ, "--set", "grid.u.exact=false", "-o", tmp_path / "grid.h5", "-q"],
                       capsys)
    assert code == 0, err
    assert store.root_attrs(tmp_path / "grid.h5")["solver_minimisation"].startswith("eps_0.05: grid")


def test_simulate_uses_the_overrides_the_file_was_made_with(tmp_path, capsys):
    """The issue's regression: `simulate r.h5` reported the PDE value of the case without its --set overrides.
    A newline inside a --set value is stored as valid TOML too."""
    r = tmp_path / "r.h5"
    code, _, err = cli(["run", LQ, *SMALL_LQ, "--set", 'description="two\nlines \\"quoted\\""', "-o", r, "-q"],
                       capsys)
    assert code == 0, err
    code, out, err = cli(["simulate", r, "-n", "200", "--x0", "0.5", "--y0", "0.25", "-q"], capsys)
    assert code == 0, err
    with h5py.File(r) as f:
        g = f["eps_0.05"]
        stored = RegularGridInterpolator((g["x"][()], g["y"][()]), g["V"][-1])((0.5, 0.25))
        pde = f["simulation_eps_0.05"].attrs["value_pde"]
    assert pde == pytest.approx(float(stored), abs=1e-12)
    assert f"V from the PDE {pde:.5g}" in out


def test_files_without_a_resolved_case_are_read_from_their_raw_text_with_a_warning(tmp_path, capsys):
    r = tmp_path / "old.h5"
    assert cli(["run", LQ, *SMALL_LQ, "-o", r, "-q"], capsys)[0] == 0
    printed = cli(["info", r, "--case"], capsys)[1]
    with h5py.File(r, "a") as f:                       # as files written before case_resolved existed
        for key in ("case_resolved", "case_sha256"):
            del f.attrs[key]
    code, out, err = cli(["info", r, "--case"], capsys)
    assert code == 0 and "raw case_text" in err and "model.tau=0.5" in err
    assert out == printed                              # the recorded overrides are applied again
    with h5py.File(r, "a") as f:
        del f.attrs["case_text"]
    code, _, err = cli(["info", r, "--case"], capsys)
    assert code == 2 and "no case_resolved or case_text" in err and "Traceback" not in err


def test_a_case_valid_only_with_its_overrides_is_read_back(tmp_path, capsys):
    """The stored case that the readers check and use is the resolved one: a raw case that needs its --set to
    be valid (tau must be > 0) does not make the file unreadable."""
    raw = tmp_path / "raw.toml"
    raw.write_text(open(LQ).read().replace("tau = 1.0\n", "tau = -1.0\n"))
    r = tmp_path / "r.h5"
    code, _, err = cli(["run", raw, *SMALL_LQ, "-o", r, "-q"], capsys)         # SMALL_LQ sets model.tau = 0.5
    assert code == 0, err
    for command in (["info", r], ["info", r, "--case"], ["plot", r, "--list"]):
        code, out, err = cli(command, capsys)
        assert code == 0 and not err, (command, err)


# --------------------------------------------------------------------------------------- resuming a run
def test_run_resume_keeps_the_finished_eps_when_the_hash_matches(tmp_path, capsys, monkeypatch):
    import hjbsolve.value as value_mod
    args = [LQ, *SMALL_LQ, "--set", "run.eps=[0.1, 0.0]"]
    fresh, out = tmp_path / "fresh.h5", tmp_path / "r.h5"
    assert cli(["run", *args, "-o", fresh, "-q"], capsys)[0] == 0
    real, calls = value_mod.value_function, []

    def stop_at_second(*a, **kw):
        calls.append(kw.get("eps"))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    def counting(*a, **kw):
        calls.append(kw.get("eps"))
        return real(*a, **kw)

    def interrupted_run():
        calls.clear()
        monkeypatch.setattr(value_mod, "value_function", stop_at_second)
        code, _, err = cli(["run", *args, "-o", out, "-q"], capsys)
        assert code == 130 and len(err.strip().splitlines()) == 1 and "r.partial.h5" in err
        assert store.root_attrs(partial)["complete"].startswith("no: the run was interrupted")
        calls.clear()
        monkeypatch.setattr(value_mod, "value_function", counting)

    partial = tmp_path / "r.partial.h5"
    interrupted_run()
    # resumed: the cell stage and eps = 0.1 are kept, only eps = 0 is computed; the file is the fresh one
    code, _, err = cli(["run", *args, "-o", out, "-q", "--resume"], capsys)
    assert code == 0, err
    assert calls == [0.0] and "keeping cell stage, eps_0.1" in err
    assert_same_numbers(out, fresh)
    assert not partial.exists() and store.root_attrs(out)["complete"] == "yes"
    # a partial file of another case is not reused: everything is computed again, and the log says so
    interrupted_run()
    code, _, err = cli(["run", *args, "--set", "model.q=2.0", "-o", out, "-q", "--resume"], capsys)
    assert code == 0 and "made from another case" in err and "computing every stage" in err
    assert calls == [0.1, 0.0]
    assert cli(["run", *args, "--set", "model.q=2.0", "-o", fresh, "-q"], capsys)[0] == 0
    assert_same_numbers(out, fresh)


# ------------------------------------------------------------------------------------------ studies
STUDY_ARGS = [*SMALL_LQ, "--set", "run.output_times=[1.0]", "--vary", "eps=0.2,0.1"]


def table_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if not ln.startswith("wrote")]


def test_study_never_reuses_a_file_of_other_parameters(tmp_path, capsys):
    """The issue: a study with other parameters printed the old errors, with --resume and even without it
    when files were left in the output folder (here also the eps = 0 limit runs)."""
    out, runs, other = tmp_path / "s", tmp_path / "s_runs", ["--set", "model.q=3.0"]
    code, first, _ = cli(["study", LQ, *STUDY_ARGS, "-o", out, "-q"], capsys)
    assert code == 0
    assert sorted(p.name for p in runs.iterdir()) == ["run_000_eps=0.2.h5", "run_000_eps=0.2_limit.h5",
                                                      "run_001_eps=0.1.h5"]
    code, reference, _ = cli(["study", LQ, *STUDY_ARGS, *other, "-o", tmp_path / "fresh", "-q"], capsys)
    assert code == 0 and table_lines(reference) != table_lines(first)
    # --resume with other parameters: every file is recomputed, and the log says why
    code, table, err = cli(["study", LQ, *STUDY_ARGS, *other, "-o", out, "-q", "--resume"], capsys)
    assert code == 0 and table_lines(table) == table_lines(reference)
    assert err.count("recomputing run") == 2 and err.count("made from another case") == 2
    # without --resume the leftover files (of q = 3 now) are not read
    code, table, err = cli(["study", LQ, *STUDY_ARGS, "-o", out, "-q"], capsys)
    assert code == 0 and table_lines(table) == table_lines(first) and "recomputing" not in err
    # --resume with the same parameters keeps every run (nothing rewritten, the same table)
    before = {p.name: p.stat().st_mtime_ns for p in runs.iterdir()}
    code, table, err = cli(["study", LQ, *STUDY_ARGS, "-o", out, "-q", "--resume"], capsys)
    assert code == 0 and "recomputing" not in err and table_lines(table) == table_lines(first)
    assert {p.name: p.stat().st_mtime_ns for p in runs.iterdir()} == before
    sets = [a for flag, a in zip(STUDY_ARGS, STUDY_ARGS[1:]) if flag == "--set"]
    assert store.root_attrs(tmp_path / "s.h5")["case_sha256"] == case_hash(load_case(LQ, sets))


def test_a_second_study_on_a_locked_output_stops_at_once(tmp_path, capsys):
    out = tmp_path / "s.h5"
    with store.output_lock(out, "a test holding the lock"):
        t0 = time.perf_counter()
        code, _, err = cli(["study", LQ, *STUDY_ARGS, "-o", out, "-q"], capsys)
        assert time.perf_counter() - t0 < 5
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "being written by a test holding the lock" in err and not out.exists()
    assert not (tmp_path / "s_runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []            # the lock file went with its holder


def test_two_runs_at_once_on_one_output(tmp_path):
    """Two `hjbsolve run` processes on one output: the second stops at once with one line (exit 2) while the
    first holds the lock; the first writes its complete result, the second leaves nothing behind."""
    out = tmp_path / "r.h5"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "hjbsolve", "run", LQ, *SMALL_LQ, "--set", "time.dt=0.002", "-o", str(out), "-q"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "r.h5.lock"
    deadline = time.time() + 60
    while not lock.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.02)
    assert lock.exists(), first.communicate()
    second = subprocess.run(cmd[:-3] + ["--set", "model.q=2.0", "-o", str(out), "-q"], env=env,
                            capture_output=True, text=True, timeout=120)
    out1, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "being written by hjbsolve run" in second.stderr
    attrs = store.root_attrs(out)
    assert attrs["complete"] == "yes" and load_case(tomllib.loads(attrs["case_resolved"])).model["q"] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]
