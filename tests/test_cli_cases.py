"""The packaged cases from the command line: `hjbsolve cases` lists them, `cases copy` copies one out, every verb
finds one by name from any folder, `check` without a case checks the default; help texts list the choices;
-v / -vv show the package's messages and never third-party debug output."""

import logging
import subprocess
import sys
import tomllib

import pytest

from hjbsolve.cli import DEFAULT_CASE, PLOT_KINDS, build_parser, main, packaged_cases


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cases_lists_every_packaged_case_with_a_description(capsys):
    code, out, _ = run_cli(["cases"], capsys)
    assert code == 0
    cases = packaged_cases()
    assert len(cases) >= 10 and DEFAULT_CASE[:-5] in cases
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip() and not ln[0].isdigit()}
    for name, path in cases.items():
        assert name in lines, name
        described = lines[name][len(name):].strip()
        text = path.read_text(encoding="utf-8")
        want = tomllib.loads(text).get("description") or text.splitlines()[0].lstrip("# ")
        assert described == want.strip()


def test_cases_copy_refuses_to_overwrite_without_force(tmp_path, capsys):
    code, out, _ = run_cli(["cases", "copy", "lq", tmp_path / "sub"], capsys)
    dest = tmp_path / "sub" / "lq.toml"
    assert code == 0 and str(dest) in out
    assert dest.read_bytes() == packaged_cases()["lq"].read_bytes()
    dest.write_text("# mine\n")
    code, _, err = run_cli(["cases", "copy", "lq.toml", tmp_path / "sub"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--force" in err
    assert dest.read_text() == "# mine\n"                               # untouched
    code, _, _ = run_cli(["cases", "copy", "lq", tmp_path / "sub", "--force"], capsys)
    assert code == 0 and dest.read_bytes() == packaged_cases()["lq"].read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["lq.toml"]   # no temporary file left
    code, out, _ = run_cli(["cases", "copy", "ou_expr", tmp_path / "mine.toml"], capsys)     # a file name
    assert code == 0 and (tmp_path / "mine.toml").read_bytes() == packaged_cases()["ou_expr"].read_bytes()
    code, _, err = run_cli(["cases", "copy", "nope", tmp_path], capsys)
    assert code == 2 and "nope" in err and "lq" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["lq", "lq.toml", "cases/lq.toml"])
def test_every_verb_finds_a_packaged_case_by_name_from_any_folder(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(["check", name], capsys)
    assert code == 0 and "ok: case 'lq'" in out
    # run and study resolve names through the same path as check; a cheap run proves it end to end
    code, out, _ = run_cli(["cell", name, "--set", "grid.x.n=5", "--set", "grid.y.n=11", "--set", "grid.p.n=3",
                            "-o", "c.h5"], capsys)
    assert code == 0 and (tmp_path / "c.h5").exists()


def test_missing_case_names_the_packaged_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["check", "nope.toml"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "nope.toml" in err and "lq" in err and "hjbsolve cases" in err
    (tmp_path / "elsewhere").mkdir()
    code, _, err = run_cli(["check", "elsewhere/lq.toml"], capsys)     # a path that is not ours: no guessing
    assert code == 2 and "elsewhere/lq.toml" in err


def test_check_without_a_case_checks_the_default(capsys):
    code, out, _ = run_cli(["check"], capsys)
    assert code == 0 and f"ok: case '{DEFAULT_CASE[:-5]}'" in out


def test_help_lists_the_choices(capsys):
    from hjbsolve.case import FAMILIES, RUN
    from hjbsolve.plot import KINDS
    assert list(PLOT_KINDS) == list(KINDS)
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices
    plot_help = " ".join(sub["plot"].format_help().split())
    assert all(k in plot_help for k in KINDS)
    run_help = " ".join(sub["run"].format_help().split())
    assert all(f in run_help for f in FAMILIES)
    assert all(s in run_help for s in RUN["effective_scheme"].choices)
    sim_help = " ".join(sub["simulate"].format_help().split())
    assert "--record N" in sim_help and "number of equally spaced times" in sim_help


@pytest.mark.parametrize("flags, shown", [([], False), (["-v"], True), (["-vv"], True), (["-q", "-v"], False)])
def test_verbosity_shows_our_messages_only(flags, shown, capsys):
    code, _, err = run_cli(["check", "lq", *flags], capsys)
    assert code == 0
    assert err.count("grid.x: box = [-3.0, 3.0], n = 241") == int(shown)          # once, though loaded twice
    assert ("y box from the Gibbs tails" in err) == shown
    assert ("check took" in err) == shown
    for name in ("h5py", "numba", "matplotlib"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING
    want = {(): logging.WARNING, ("-v",): logging.INFO, ("-vv",): logging.DEBUG}.get(tuple(flags), logging.WARNING)
    assert logging.getLogger("hjbsolve").getEffectiveLevel() == want


def test_vv_prints_no_third_party_debug_lines(tmp_path):
    """A real process: with -vv every stderr line is ours ('hjbsolve: ...')."""
    out = tmp_path / "p.h5"
    proc = subprocess.run([sys.executable, "-m", "hjbsolve", "cell", "periodic_cos", "--set", "grid.P.n=3",
                           "--set", "grid.y.n=40", "-o", str(out), "-vv"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("hjbsolve: ") for ln in lines), lines
    proc = subprocess.run([sys.executable, "-m", "hjbsolve", "info", str(out), "-vv"], capture_output=True, text=True)
    assert proc.returncode == 0 and all(ln.startswith("hjbsolve: ") for ln in proc.stderr.splitlines() if ln.strip())
