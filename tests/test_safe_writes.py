"""Safe writes through the CLI: only regular files are replaced (FIFOs, devices and folders are refused before
any work, symbolic links are followed); disk full, quota and permission errors are one line and exit 2 with
the previous result intact and no temporary file; Ctrl-C at any moment is one line and exit 130."""

import errno
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from hjbsolve import store
from hjbsolve.cli import main
from tests.test_cli import EXPR

#: the OU test case of test_cli on finer grids, two eps
OU = EXPR.replace("n = 11 }", "n = 41 }").replace("n = 5 }", "n = 21 }") + """[time]
T = 1.0
dt = 0.05
[run]
eps = [0.1, 0.0]
"""


@pytest.fixture
def case(tmp_path):
    p = tmp_path / "case.toml"
    p.write_text(OU)
    return p


def cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code, err, *needles, exit_code=2):
    lines = err.strip().splitlines()
    assert code == exit_code and len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a stage starts: the refusal must come before any work."""
    import hjbsolve.runner as runner

    def refuse(*a, **kw):
        raise AssertionError("a stage started")

    monkeypatch.setattr(runner, "run", refuse)
    monkeypatch.setattr(runner, "run_cell", refuse)


def _special(tmp_path, kind):
    path = tmp_path / f"{kind}.h5"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "device":
        try:                        # a character device like /dev/null, in tmp_path (never the real one)
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except (OSError, PermissionError):
            pytest.skip("cannot create a device node here")
    elif kind == "link_to_fifo":
        os.mkfifo(tmp_path / "pipe")
        path.symlink_to(tmp_path / "pipe")
    return path


@pytest.mark.parametrize("kind,needle", [("fifo", "FIFO"), ("folder", "folder"), ("device", "character device"),
                                         ("link_to_fifo", "FIFO")])
def test_special_outputs_are_refused_before_any_work(tmp_path, capsys, case, no_work, kind, needle):
    path = _special(tmp_path, kind)
    before = os.lstat(path)
    for command in (["run", case, "-o", path], ["cell", case, "-o", path],
                    ["study", case, "--vary", "eps=0.1,0.05", "-o", path]):
        code, _, err = cli(command, capsys)
        one_line(code, err, "cannot write", str(path), needle)
    after = os.lstat(path)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)
    assert not [n for n in listing(tmp_path) if ".tmp-" in n or n.endswith(".lock")]


def test_special_outputs_of_simulate_and_plot_are_refused_before_any_work(tmp_path, capsys, case):
    result = tmp_path / "r.h5"
    assert cli(["run", case, "-o", result, "-q"], capsys)[0] == 0
    fifo = _special(tmp_path, "fifo")
    t0 = time.perf_counter()
    code, _, err = cli(["simulate", result, "-o", fifo, "-n", "100000"], capsys)
    one_line(code, err, "cannot write", "FIFO")
    assert time.perf_counter() - t0 < 10 and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    code, _, err = cli(["plot", result, "-o", fifo], capsys)
    one_line(code, err, "cannot write", "FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_symbolic_link_output_writes_its_target(tmp_path, capsys, case):
    target = tmp_path / "data" / "real.h5"
    target.parent.mkdir()
    target.write_bytes(b"an earlier result")
    link = tmp_path / "link.h5"
    link.symlink_to(target)
    code, out, _ = cli(["run", case, "-o", link], capsys)
    assert code == 0 and f"wrote {link}" in out
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert store.root_attrs(target)["complete"] == "yes"
    assert listing(tmp_path / "data") == ["real.h5"] and listing(tmp_path) == ["case.toml", "data", "link.h5"]
    dangling = tmp_path / "dangling.h5"
    dangling.symlink_to(tmp_path / "data" / "new.h5")
    assert cli(["run", case, "-o", dangling, "-q"], capsys)[0] == 0
    assert dangling.is_symlink() and store.root_attrs(tmp_path / "data" / "new.h5")["complete"] == "yes"


@pytest.mark.parametrize("code_", [errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EIO])
def test_os_errors_while_writing_are_one_line(tmp_path, capsys, case, monkeypatch, code_):
    """Every byte of a result goes to the disk through os.write (HDF5 builds the file in memory), so a full
    disk, a quota, a permission or an I/O error is one line and exit 2; the previous result is intact and
    no temporary file is left."""
    out = tmp_path / "r.h5"
    out.write_bytes(b"an earlier result")
    real = os.write

    def failing(fd, data):
        if fd > 2:
            raise OSError(code_, os.strerror(code_))
        return real(fd, data)

    monkeypatch.setattr(os, "write", failing)
    code, _, err = cli(["run", case, "-o", out], capsys)
    one_line(code, err, "cannot write", os.strerror(code_))
    assert out.read_bytes() == b"an earlier result"
    assert listing(tmp_path) == ["case.toml", "r.h5"]


@pytest.fixture
def small_disk(tmp_path):
    """A 200 KiB tmpfs (root only), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_is_one_line_and_keeps_the_previous_result(tmp_path, capsys, case, small_disk):
    """A real full disk (a 200 KiB tmpfs; the result is about 400 KiB): run and study stop with one line,
    exit 2, no crash, no temporary file; the earlier file is intact."""
    out = small_disk / "r.h5"
    out.write_bytes(b"an earlier result")
    code, _, err = cli(["run", case, "-o", out], capsys)
    one_line(code, err, "No space left on device")
    assert out.read_bytes() == b"an earlier result"
    assert set(listing(small_disk)) <= {"r.h5", "r.partial.h5"}           # finished stages may be kept
    code, _, err = cli(["study", case, "--vary", "eps=0.1,0.05", "-o", small_disk / "s"], capsys)
    one_line(code, err, "No space left on device")
    assert out.read_bytes() == b"an earlier result"
    files = [p.name for p in small_disk.rglob("*")]
    assert not [n for n in files if ".tmp-" in n or n.endswith(".lock")], files


# ---------------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_at_start_up_is_one_line(tmp_path, capsys, case, monkeypatch):
    import hjbsolve.case as case_mod

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(case_mod, "load_case", interrupted)
    code, _, err = cli(["run", case, "-o", tmp_path / "r.h5"], capsys)
    one_line(code, err, "interrupted", "not written", exit_code=130)
    assert listing(tmp_path) == ["case.toml"]


def test_ctrl_c_during_the_final_write_keeps_the_marked_partial_file(tmp_path, capsys, case, monkeypatch):
    out = tmp_path / "r.h5"
    out.write_bytes(b"an earlier result")
    real = store.write_bytes

    def interrupted_at_the_end(path, data):
        if os.fspath(path) == str(out):
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(store, "write_bytes", interrupted_at_the_end)
    code, _, err = cli(["run", case, "-o", out], capsys)
    one_line(code, err, "interrupted", "r.partial.h5", exit_code=130)
    assert out.read_bytes() == b"an earlier result"
    attrs = store.root_attrs(tmp_path / "r.partial.h5")
    assert attrs["complete"].startswith("no: the run was interrupted")
    assert listing(tmp_path) == ["case.toml", "r.h5", "r.partial.h5"]
    monkeypatch.setattr(store, "write_bytes", real)             # and --resume finishes it from there
    code, _, err = cli(["run", case, "-o", out, "--resume", "-q"], capsys)
    assert code == 0 and "keeping cell stage, eps_0.1, eps_0" in err
    assert listing(tmp_path) == ["case.toml", "r.h5"] and store.root_attrs(out)["complete"] == "yes"


def test_ctrl_c_twice_during_the_stages(tmp_path, case):
    """Two real SIGINTs 50 ms apart once the first stage is on disk: exit 130, one line, the partial file
    marked as interrupted, no temporary or lock file left."""
    out = tmp_path / "r.h5"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "hjbsolve", "run", str(case), "--set", "time.dt=0.002",
                             "--set", "run.eps=[0.1, 0.05, 0.0]", "-o", str(out), "-q"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "r.partial.h5"
    deadline = time.time() + 120
    while not partial.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert partial.exists() and proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    one_line(proc.returncode, err, "interrupted", "r.partial.h5", exit_code=130)
    assert store.root_attrs(partial)["complete"].startswith("no: the run was interrupted")
    assert listing(tmp_path) == ["case.toml", "r.partial.h5"]


def test_sigterm_during_the_stages_marks_the_partial_file(tmp_path, capsys, case, monkeypatch):
    """SIGTERM (exit 143) takes the same path as Ctrl-C: the finished stages stay, marked as terminated."""
    import hjbsolve.value as value_mod
    from hjbsolve.cli import Terminated
    real, calls = value_mod.value_function, []

    def terminated_at_second(*a, **kw):
        calls.append(kw.get("eps"))
        if len(calls) == 2:
            raise Terminated()
        return real(*a, **kw)

    monkeypatch.setattr(value_mod, "value_function", terminated_at_second)
    code, _, err = cli(["run", case, "-o", tmp_path / "r.h5"], capsys)
    one_line(code, err, "terminated", exit_code=143)
    assert store.root_attrs(tmp_path / "r.partial.h5")["complete"].startswith("no: the run was terminated")
    assert listing(tmp_path) == ["case.toml", "r.partial.h5"]
