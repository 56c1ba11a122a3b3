"""Resource guards and one-line errors: estimates before allocation, every mistake of a case at once, damaged
files, the last-resort net of ``main``, Ctrl-C and SIGTERM, dask schedulers that do not answer."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from hjbsolve import cli, resources
from hjbsolve.case import load_case
from hjbsolve.cli import main
from hjbsolve.errors import HJBError

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "hjbsolve" / "cases"


def _campaign():
    import importlib.util
    spec = importlib.util.spec_from_file_location("fault_campaign", ROOT / "scripts" / "fault_campaign.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TINY = _campaign().TINY        # a tiny lq case (21 x 21 nodes, 4 steps): the campaign's fixture


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err):
    """The error lines (warnings printed before do not count)."""
    return [ln for ln in err.strip().splitlines() if ln.startswith("hjbsolve: error:")]


def assert_one_line(code, err, *needles, n_lines=1):
    assert code == 2, err
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == n_lines, err
    assert err.strip().splitlines()[-1] == lines[-1]
    for needle in needles:
        assert any(needle in ln for ln in lines), (needle, err)


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    case = folder / "tiny.toml"
    case.write_text(TINY)
    out = folder / "tiny.h5"
    assert main(["run", str(case), "-o", str(out), "-q"]) == 0
    return case, out


# ------------------------------------------------------------------------------------------------ resources

def test_check_and_run_refuse_a_grid_that_does_not_fit(capsys, tmp_path):
    """The issue's example: n = 1e5 per axis passed check and died with 'Unable to allocate 74.5 GiB'."""
    big = ["--set", "grid.x.n=100000", "--set", "grid.y.n=100000"]
    code, out, err = run_cli(capsys, "check", CASES / "lq.toml", *big)
    assert "estimate: memory" in out and "TiB" in out
    assert_one_line(code, err, "grid.x.n", "grid.y.n", "MemAvailable")
    t0 = time.perf_counter()
    code, out, err = run_cli(capsys, "run", CASES / "lq.toml", *big, "-o", tmp_path / "big.h5")
    assert_one_line(code, err, "grid.x.n", "needs about")
    assert time.perf_counter() - t0 < 20 and not list(tmp_path.iterdir())


def test_max_memory_and_yes(capsys):
    code, out, err = run_cli(capsys, "check", CASES / "lq.toml", "--max-memory", "1M")
    assert_one_line(code, err, "--max-memory", "1 MiB")
    code, out, err = run_cli(capsys, "check", CASES / "lq.toml", "--max-memory", "1M", "--yes")
    assert code == 0 and "proceeding: --yes" in err and ": ok:" in out
    code, out, err = run_cli(capsys, "check", CASES / "lq.toml", "--max-memory", "lots")
    assert_one_line(code, err, "--max-memory lots")
    assert resources.parse_size("8G") == 8 * 2 ** 30 and resources.parse_size("1.5MiB") == 1.5 * 2 ** 20


def test_extreme_time_step_and_horizon_warn_and_refuse_with_the_cost(capsys):
    code, out, err = run_cli(capsys, "check", CASES / "lq.toml", "--set", "time.dt=1e-9")
    assert "WARNING" in err and "time.dt = 1e-09" in err        # the warning with the cost comes first
    assert_one_line(code, err, "time steps", "node-control updates", "--yes")
    code, out, err = run_cli(capsys, "check", CASES / "lq.toml", "--set", "time.dt=1e-9", "--yes")
    assert code == 0 and "3000000000 time steps" in out
    code, out, err = run_cli(capsys, "check", CASES / "lq.toml", "--set", "time.T=1e9")
    assert_one_line(code, err, "time.T")


def test_a_long_but_feasible_run_gets_a_warning(capsys):
    code, out, err = run_cli(capsys, "check", CASES / "periodic_cos.toml", "--set", "grid.P.n=1000000")
    assert code == 0 and "a long run" in err and "node-control updates" in err


def test_simulate_and_study_are_guarded_too(capsys, tmp_path, tiny_result):
    case, result = tiny_result
    code, out, err = run_cli(capsys, "simulate", result, "-n", "1000000000", "-o", tmp_path / "sim.h5")
    assert_one_line(code, err, "simulation needs about", "--paths")
    code, out, err = run_cli(capsys, "study", case, "--vary", "grid=1,1000", "-o", tmp_path / "st")
    assert_one_line(code, err, "the costliest of 2 study runs", "grid.x.n")
    assert not list(tmp_path.iterdir())


def test_estimate_counts_steps_and_updates():
    case = load_case(CASES / "lq.toml")
    est = resources.estimate(case)
    steps = round(case.time["T"] / case.time["dt"])
    assert est.steps == 3 * steps                                    # three eps values
    nx, ny = case.grid["x"]["n"], case.grid["y"]["n"]
    assert est.memory["cell stage"] >= nx * ny * 8                   # mu at least
    assert est.updates >= steps * nx * ny                             # one eps > 0 at least
    assert abs(est.seconds - est.updates * resources.NS_PER_UPDATE * 1e-9) < 1e-12


@pytest.mark.parametrize("path, overrides", [
    (CASES / "lq.toml", ["grid.x.n=201", "grid.y.n=101", "grid.p.n=101", "run.eps=[0.1]", "time.dt=0.04"]),
    (CASES / "ou_expr.toml", ["grid.x.n=161", "grid.y.n=201", "time.dt=0.1", "run.eps=[0.1, 0.0]"]),
])
def test_memory_estimate_brackets_the_measured_peak(path, overrides):
    """The estimate is within a factor of about 3 of the peak that tracemalloc sees (numpy arrays; numba's
    own allocations are not traced, so the true peak is higher than the measured one)."""
    from hjbsolve.runner import run
    case = load_case(path, overrides)
    est = resources.estimate(case)
    tracemalloc.start()
    try:
        run(case)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.7 <= est.peak / peak <= 3.5, (est.peak / 2 ** 20, peak / 2 ** 20)


def test_available_memory_reads_meminfo():
    mem = resources.available_memory()
    if Path("/proc/meminfo").exists():
        assert mem is not None and mem > 2 ** 20


# ------------------------------------------------------------------------------------------------ case files

def test_check_reports_every_mistake_at_once(capsys, tmp_path):
    bad = TINY.replace("s = 0.5", "s = -1.0\ntau = \"x\"\nnope = 1").replace("n = 21 }", "n = 2 }", 1)
    p = tmp_path / "bad.toml"
    p.write_text(bad)
    code, out, err = run_cli(capsys, "check", p)
    assert_one_line(code, err, "model.s", "model.tau", "model.nope", "grid.x.n", n_lines=4)


@pytest.mark.parametrize("override, needle", [
    ("grid.x.n=100000000000000000000000", "grid.x.n"),
    ("model.tau=1e308", "model.tau"),
    ("model.tau=100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
     "0000000000", "model.tau"),
    ("model.u_box=[[1, 2], [3, 4]]", "model.u_box"),
    ("grid.x.box=[[[[[[[[[[1]]]]]]]]]]", "grid.x.box"),
])
def test_extreme_values_are_one_line(capsys, override, needle):
    code, out, err = run_cli(capsys, "check", CASES / "lq.toml", "--set", override)
    assert_one_line(code, err, needle)


def test_u_box_of_the_wrong_shape_for_entropy_sgd(capsys):
    code, out, err = run_cli(capsys, "check", CASES / "entropy_sgd_double_well.toml", "--set",
                             "model.u_box=[[0.2, 2.0], [0.2, 2.0]]")
    assert_one_line(code, err, "model.u_box", "one interval")


def test_unreadable_case_files(capsys, tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 100000 + "]" * 100000 + "\n")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(bytes(range(256)) * 4)
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * (2 << 20) + "\n")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    for path, needle in ((deep, "nested too deeply"), (binary, "binary"), (huge, "larger than"),
                         (Path("/dev/zero"), "not a regular file"), (fifo, "not a regular file")):
        t0 = time.perf_counter()
        code, out, err = run_cli(capsys, "check", path)
        assert_one_line(code, err, str(path), needle)
        assert time.perf_counter() - t0 < 10


# ------------------------------------------------------------------------------------------------ stored files

def _damage(src, dest, how):
    import shutil
    shutil.copyfile(src, dest)
    if how == "truncate":
        data = Path(dest).read_bytes()
        Path(dest).write_bytes(data[:len(data) // 2])
        return
    if how == "bitflip":
        data = bytearray(Path(dest).read_bytes())
        rng = np.random.default_rng(3)
        for i in rng.integers(0, len(data), 64):
            data[i] ^= 1 << int(rng.integers(8))
        Path(dest).write_bytes(bytes(data))
        return
    with h5py.File(dest, "a") as f:
        if how == "nan":
            a = f["eps_0.1/V"][()]
            a[1, 2, 3] = np.nan
            f["eps_0.1/V"][...] = a
        elif how == "attr":
            f["eps_0.1"].attrs["eps"] = "ten"
        elif how == "scale":
            v = f["mu"]
            for s in list(v.dims[0].values()):
                v.dims[0].detach_scale(s)
        elif how == "case_resolved":
            f.attrs["case_resolved"] = f.attrs["case_resolved"].replace("eps = [", "eps = [0.5, ")
        elif how == "case_invalid":                  # valid TOML, matching hash, invalid case
            from hjbsolve.provenance import sha256
            text = f.attrs["case_resolved"].replace("dt = 0.05", "dt = -1.0")
            f.attrs["case_resolved"], f.attrs["case_sha256"] = text, sha256(text)
        elif how == "length":
            del f["gbar"]
            f["gbar"] = np.zeros(3)
            f["gbar"].dims[0].attach_scale(f["x"])


@pytest.mark.parametrize("how, needle", [("nan", "eps_0.1/V"), ("attr", "eps_0.1/eps"), ("scale", "mu"),
                                         ("case_resolved", "case_sha256"),
                                         ("case_invalid", "time.dt"), ("length", "gbar"), ("truncate", ""),
                                         ("bitflip", "")])
def test_damaged_result_files_are_one_line(capsys, tmp_path, tiny_result, how, needle):
    _, good = tiny_result
    bad = tmp_path / f"{how}.h5"
    _damage(good, bad, how)
    digest = bad.read_bytes()
    for argv in (["info", bad], ["plot", bad, "-o", tmp_path / "x.png"],
                 ["simulate", bad, "-n", "16", "-o", tmp_path / "sim.h5"]):
        code, out, err = run_cli(capsys, *argv)
        if how == "bitflip" and code == 0:      # a flip in raw data can leave a readable file
            continue
        assert_one_line(code, err, str(bad), needle)
    assert bad.read_bytes() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]


def test_simulate_refuses_a_periodic_result(capsys, tmp_path):
    out = tmp_path / "per.h5"
    assert main(["cell", str(CASES / "periodic_cos.toml"), "-o", str(out), "-q", "--set", "grid.P.n=5"]) == 0
    capsys.readouterr()
    code, _, err = run_cli(capsys, "simulate", out, "-n", "10")
    assert_one_line(code, err, "periodic", "simulate")


# ------------------------------------------------------------------------------------------------ the net

def test_unexpected_exception_is_one_line_exit_1(capsys, monkeypatch, tiny_result):
    def boom(args):
        raise ValueError("a bug\nover two lines")
    monkeypatch.setattr(cli, "cmd_info", boom)
    code, out, err = run_cli(capsys, "info", tiny_result[1])
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines() == ["hjbsolve: internal error: ValueError: a bug over two lines (please report; "
                                        "rerun with -v for the traceback)"]
    code, out, err = run_cli(capsys, "info", tiny_result[1], "-v")
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("hjbsolve: internal error")


def test_memory_error_is_one_line(capsys, monkeypatch, tiny_result):
    def oom(args):
        raise MemoryError("Unable to allocate 74.5 GiB")
    monkeypatch.setattr(cli, "cmd_info", oom)
    code, out, err = run_cli(capsys, "info", tiny_result[1])
    assert_one_line(code, err, "out of memory", "hjbsolve check")


def test_double_ctrl_c_exits_130_with_one_line(capsys, monkeypatch, tiny_result):
    """A second Ctrl-C arriving while the first one's message is printed."""
    def interrupted(args):
        raise KeyboardInterrupt
    said = []

    def say(line):
        if not said:
            said.append(line)
            raise KeyboardInterrupt            # the second Ctrl-C, inside the handler
        print(line, file=sys.stderr)
    monkeypatch.setattr(cli, "cmd_info", interrupted)
    monkeypatch.setattr(cli, "_say", say)
    before = signal.getsignal(signal.SIGINT)
    code, out, err = run_cli(capsys, "info", tiny_result[1])
    assert code == 130 and err.strip().splitlines() == ["hjbsolve: interrupted"]
    assert signal.getsignal(signal.SIGINT) is before


def _children(pid: int) -> set:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc to find the workers")
def test_sigterm_kills_the_local_workers_of_a_study(tmp_path):
    case = tmp_path / "slow.toml"
    case.write_text(TINY.replace("n = 21 }", "n = 401 }", 1).replace("dt = 0.05", "dt = 0.0005"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "hjbsolve", "study", str(case), "--vary", "eps=0.1,0.05",
                             "-j", "2", "-q", "--yes", "-o", str(tmp_path / "st")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        workers = set()
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = {c for c in _children(proc.pid) if "spawn_main" in
                       Path(f"/proc/{c}/cmdline").read_text(errors="replace")} if proc.poll() is None else set()
        assert len(workers) >= 2, "the study did not start its workers"
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("hjbsolve: terminated")
        t0 = time.monotonic()
        while any(_alive(w) for w in workers) and time.monotonic() - t0 < 10:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------------------ dask

@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers (a wrong port, a firewall in the middle)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns, stop = [], threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass
    th = threading.Thread(target=accept, daemon=True)
    th.start()
    yield f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    th.join()
    for c in conns:
        c.close()
    srv.close()


def test_a_scheduler_that_never_answers_is_an_error_within_the_timeout(silent_server):
    pytest.importorskip("distributed")
    from hjbsolve.study import connect
    t0 = time.perf_counter()
    with pytest.raises(HJBError, match="did not answer within 1 s"):
        connect(silent_server, timeout=1.0)
    assert time.perf_counter() - t0 < 8


def test_study_scheduler_timeout_through_the_cli(capsys, tmp_path, silent_server):
    pytest.importorskip("distributed")
    case = tmp_path / "tiny.toml"
    case.write_text(TINY)
    t0 = time.perf_counter()
    code, out, err = run_cli(capsys, "study", case, "--vary", "eps=0.1,0.05", "--scheduler", silent_server,
                             "--scheduler-timeout", "1", "-q", "-o", tmp_path / "st")
    assert_one_line(code, err, "did not answer within 1 s")
    assert time.perf_counter() - t0 < 15


@pytest.mark.parametrize("address, needle", [("tls://127.0.0.1:8786", "tls:// needs certificates"),
                                             ("ucx://127.0.0.1:8786", "scheme ucx:// is not supported"),
                                             ("ws://h:1", "scheme ws:// is not supported")])
def test_other_schemes_are_refused_clearly(address, needle):
    pytest.importorskip("distributed")
    from hjbsolve.study import connect
    with pytest.raises(HJBError, match=needle.replace("/", "/")):
        connect(address, timeout=1.0)
