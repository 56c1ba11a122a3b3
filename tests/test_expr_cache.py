"""User formulas are compiled once per machine: generated modules in the cache directory, numba's on-disk
cache; a changed file is regenerated; without a writable directory the formulas compile in memory."""

import os
import subprocess
import sys

import numpy as np

from hjbsolve import expr

SCRIPT = """
import numpy as np
from hjbsolve.expr import compile_vector
v = compile_vector(["-x1*(1 + x1**2) + u1*{c}", "where(x2 > 0, sin(x2), u2*x1)"], {{"x": 2, "u": 2}}, {{}})
X = np.linspace(-1, 1, 10).reshape(5, 2)
print(repr(float(v.evaluate(x=X, u=X).sum())))
"""


def run(tmp_path, c=2.0):
    env = dict(os.environ, HJBSOLVE_CACHE_DIR=str(tmp_path), NUMBA_DEBUG_CACHE="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(c=c)], env=env, capture_output=True, text=True,
                         check=True).stdout
    return out.strip().splitlines()


def test_formulas_are_compiled_once_across_processes(tmp_path):
    first = run(tmp_path)
    assert not any("data loaded" in line for line in first)          # compiled, then saved
    assert any("data saved" in line for line in first)
    second = run(tmp_path)
    assert any("data loaded" in line for line in second)              # loaded from disk, not compiled
    assert not any("data saved" in line for line in second)
    assert first[-1] == second[-1]
    X = np.linspace(-1, 1, 10).reshape(5, 2)
    exact = (-X[:, 0] * (1 + X[:, 0] ** 2) + 2.0 * X[:, 0] + np.where(X[:, 1] > 0, np.sin(X[:, 1]),
                                                                    X[:, 1] * X[:, 0])).sum()
    assert abs(float(second[-1]) - exact) < 1e-12


def test_an_altered_module_is_regenerated(tmp_path):
    run(tmp_path, c=3.0)
    files = sorted((tmp_path / "formulas").glob("hjbsolve_formula_*.py"))
    assert files
    for f in files:
        f.write_text(f.read_text().replace("return ", "return 1000.0 + "))
    out = run(tmp_path, c=3.0)
    X = np.linspace(-1, 1, 10).reshape(5, 2)
    exact = (-X[:, 0] * (1 + X[:, 0] ** 2) + 3.0 * X[:, 0] + np.where(X[:, 1] > 0, np.sin(X[:, 1]),
                                                                    X[:, 1] * X[:, 0])).sum()
    assert abs(float(out[-1]) - exact) < 1e-12
    assert all("1000.0" not in f.read_text() for f in files)


def test_without_a_writable_cache_the_formulas_compile_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("HJBSOLVE_CACHE_DIR", str(blocker))            # a file: no folder can be made below it
    assert expr.cache_dir() is None
    e = expr.compile_expression("x1*7.25 + 0.5", {"x": 2}, {})
    assert e.evaluate(x=np.array([[2.0, 0.0]]))[0] == 15.0
