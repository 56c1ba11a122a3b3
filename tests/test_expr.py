"""Tests for hjbsolve.expr: the whitelisted formula language compiled to numba."""

from __future__ import annotations

import ast
import math
import re
import string
import time
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hjbsolve.expr as expr_mod
from hjbsolve.errors import ExpressionError
from hjbsolve.expr import (
    ALLOWED_FUNCTIONS,
    CONSTANTS,
    compile_expression,
    compile_matrix,
    compile_vector,
    parse_expression,
)

V = {"x": 1, "y": 2, "u": 1}
P = {"gamma": 0.5, "beta": 2.0, "A11": 1.5, "A12": -0.25}


@pytest.fixture(scope="module")
def pts():
    rng = np.random.default_rng(0)
    n = 200
    return dict(
        x=rng.uniform(-2, 2, (n, 1)),
        y=rng.uniform(-2, 2, (n, 2)),
        u=rng.uniform(0.1, 3, (n, 1)),
    )


g, b, A11, A12 = P["gamma"], P["beta"], P["A11"], P["A12"]

# formula -> numpy reference taking (x, y0, y1, u) component arrays
CASES = [
    ("-(x - y[0])/gamma + u", lambda x, y0, y1, u: -(x - y0) / g + u),
    ("x**4/4 - x**2/2", lambda x, y0, y1, u: x**4 / 4 - x**2 / 2),
    ("where(y1 > 0, 1, -1)*sqrt(beta)", lambda x, y0, y1, u: np.where(y0 > 0, 1, -1) * np.sqrt(b)),
    ("-A11*(y[0]-x[0]) - A12*(y[1]-x[0])", lambda x, y0, y1, u: -A11 * (y0 - x) - A12 * (y1 - x)),
    ("sin(x) + cos(y2) - tan(x/4)", lambda x, y0, y1, u: np.sin(x) + np.cos(y1) - np.tan(x / 4)),
    ("exp(-x1**2) * log(u1) + tanh(y[1])", lambda x, y0, y1, u: np.exp(-(x**2)) * np.log(u) + np.tanh(y1)),
    ("abs(x - y2) + minimum(x, y1) - maximum(u, y[1])",
     lambda x, y0, y1, u: np.abs(x - y1) + np.minimum(x, y0) - np.maximum(u, y1)),
    ("pi*x + e**u - +x", lambda x, y0, y1, u: np.pi * x + np.e**u - x),
    ("(x < y1) + 2*(x <= y2) + 4*(x > 0) + 8*(x >= 0.5) + 16*(u == u) + 32*(u != u)",
     lambda x, y0, y1, u: (x < y0) + 2.0 * (x <= y1) + 4.0 * (x > 0) + 8.0 * (x >= 0.5) + 16.0),
    ("-1 < x < 1", lambda x, y0, y1, u: ((-1 < x) & (x < 1)).astype(float)),
    ("u**0.5 - u**-1.5 + 2**x + 3e-1 * 10", lambda x, y0, y1, u: u**0.5 - u**-1.5 + 2.0**x + 3.0),
    ("where(x, y1, y2) * 1/3 - 7 / 2 * x", lambda x, y0, y1, u: np.where(x != 0, y0, y1) / 3 - 3.5 * x),
    ("42", lambda x, y0, y1, u: np.full_like(x, 42.0)),
]


@pytest.mark.parametrize("text,ref", CASES, ids=[c[0] for c in CASES])
def test_values_against_numpy(text, ref, pts):
    c = compile_expression(text, V, P)
    got = c.evaluate(**pts)
    x, y, u = pts["x"][:, 0], pts["y"], pts["u"][:, 0]
    want = ref(x, y[:, 0], y[:, 1], u)
    assert got.shape == x.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_scalar_func_direct_and_from_njit():
    c = compile_expression("-(x - y[1])/gamma + u*A11", V, P)
    x, y, u = np.array([1.0]), np.array([0.0, 3.0]), np.array([2.0])
    assert c.func(x, y, u, c.prm) == pytest.approx(-(1 - 3) / 0.5 + 2 * 1.5)
    f = c.func

    @numba.njit
    def outer(x, y, u, prm):
        return 2.0 * f(x, y, u, prm)

    assert outer(x, y, u, c.prm) == pytest.approx(2 * (4 + 3))


def test_broadcasting_shapes():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5, 1, 1))
    Y = rng.normal(size=(1, 7, 2))
    c = compile_expression("x*y[0] - y2", V, P)
    got = c.evaluate(x=X, y=Y)
    assert got.shape == (5, 7)
    np.testing.assert_allclose(got, X[..., 0] * Y[..., 0] - Y[..., 1])
    # u is not used: may be omitted or given with any broadcastable shape
    got2 = c.evaluate(x=X, y=Y, u=np.zeros((1, 1, 1)))
    np.testing.assert_array_equal(got, got2)
    # list input and non-contiguous arrays work as well
    Z = rng.normal(size=(6, 4))[:, ::2]
    np.testing.assert_allclose(c.evaluate(x=[[2.0]], y=Z), 2 * Z[:, 0] - Z[:, 1])


def test_constant_formula_broadcasts():
    c = compile_expression("2*pi", V, P)
    assert c.is_constant
    out = c.evaluate(x=np.zeros((5, 1, 1)), y=np.zeros((1, 7, 2)))
    assert out.shape == (5, 7)
    assert np.all(out == 2 * math.pi)
    assert c.evaluate().shape == ()
    assert c.evaluate(x=np.zeros((0, 1))).shape == (0,)


def test_vector_and_matrix():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(4, 1, 1))
    Y = rng.normal(size=(1, 3, 2))
    vec = compile_vector(["-(x - y[0])/gamma", "y2*beta", "1"], V, P)
    out = vec.evaluate(x=X, y=Y)
    assert out.shape == (4, 3, 3)
    np.testing.assert_allclose(out[..., 0], -(X[..., 0] - Y[..., 0]) / g)
    np.testing.assert_allclose(out[..., 1], np.broadcast_to(Y[..., 1] * b, (4, 3)))
    assert np.all(out[..., 2] == 1)
    mat = compile_matrix([["x", "0", "y1"], ["sqrt(beta)", "x*y2", "u"]], V, P)
    U = np.full((4, 1, 1), 0.5)
    m = mat.evaluate(x=X, y=Y, u=U)
    assert m.shape == (4, 3, 2, 3)
    np.testing.assert_allclose(m[..., 0, 0], np.broadcast_to(X[..., 0], (4, 3)))
    np.testing.assert_allclose(m[..., 1, 1], X[..., 0] * Y[..., 1])
    assert np.all(m[..., 1, 0] == np.sqrt(b)) and np.all(m[..., 1, 2] == 0.5) and np.all(m[..., 0, 1] == 0)
    with pytest.raises(ExpressionError, match="different lengths"):
        compile_matrix([["x", "1"], ["2"]], V, P)
    with pytest.raises(ExpressionError, match=r"model\.a\[1\]: .*'zz'"):
        compile_vector(["x", "zz"], V, P, where="model.a")


def test_ieee_semantics_no_exceptions():
    c = compile_expression("1/x", {"x": 1}, {})
    np.testing.assert_array_equal(c.evaluate(x=np.array([[0.0], [-0.0], [2.0]])), [np.inf, -np.inf, 0.5])
    v = compile_vector(["log(x)", "sqrt(x)", "x**0.5", "0**-1 + 0*x", "0/0 + x", "exp(1000*x)"], {"x": 1}, {})
    out = v.evaluate(x=np.array([[-1.0], [0.0]]))
    assert np.isnan(out[0, :3]).all()
    assert out[1, 0] == -np.inf and out[1, 1] == 0 and out[1, 2] == 0
    assert out[0, 3] == np.inf and np.isnan(out[:, 4]).all() and out[0, 5] == 0
    # NaN propagation of minimum / maximum, NaN condition counts as true in where()
    w = compile_vector(["minimum(x, 1)", "maximum(1, x)", "where(x, 1, 2)"], {"x": 1}, {})
    out = w.evaluate(x=np.array([[np.nan]]))[0]
    assert np.isnan(out[0]) and np.isnan(out[1]) and out[2] == 1
    # a negative base with a fractional literal exponent must be nan, not complex
    assert np.isnan(compile_expression("(-8)**(1/3)", {"x": 1}, {}).evaluate())


def test_parameters_aliases_and_dimension_zero():
    # a parameter named like an alias takes precedence over the alias
    c = compile_expression("x1 + x[0]", {"x": 1}, {"x1": 10.0})
    assert c.evaluate(x=np.array([[1.0]]))[0] == 11.0
    # changing a parameter value reuses the machine code
    c1 = compile_expression("k*x", {"x": 1}, {"k": 2.0})
    c2 = compile_expression("k*x", {"x": 1}, {"k": 3.0})
    assert c1.func is c2.func
    assert c1.evaluate(x=[[1.0]])[0] == 2.0 and c2.evaluate(x=[[1.0]])[0] == 3.0
    # memoised per (text, variables, params)
    assert compile_expression("k*x", {"x": 1}, {"k": 2.0}) is c1
    # a variable of dimension 0 is absent
    v0 = {"x": 2, "u": 0}
    with pytest.raises(ExpressionError, match="'u' is not available"):
        compile_expression("x[0] + u", v0, {})
    with pytest.raises(ExpressionError, match="'u1'"):
        compile_expression("x[0] + u1", v0, {})
    c = compile_expression("x2 - x1", v0, {})
    assert c.evaluate(x=np.array([[1.0, 5.0]]))[0] == 4.0
    assert c.evaluate(x=np.array([[1.0, 5.0]]), u=np.zeros((1, 0)))[0] == 4.0


@pytest.mark.parametrize(
    "params,fragment",
    [
        ({"x": 1.0}, "shadows the state variable"),
        ({"sin": 1.0}, "shadows the function"),
        ({"pi": 3.0}, "shadows the constant"),
        ({"k": "abc"}, "must be a real number"),
        ({"_k": 1.0}, "invalid parameter name"),
    ],
)
def test_bad_parameters(params, fragment):
    with pytest.raises(ExpressionError, match=fragment):
        compile_expression("x", V, params)


def test_evaluate_input_errors():
    c = compile_expression("x + y[1]", V, P)
    with pytest.raises(ValueError, match="uses 'y'"):
        c.evaluate(x=np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        c.evaluate(x=np.zeros((3, 1)), y=np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 1\)"):
        c.evaluate(x=np.zeros(3), y=np.zeros((3, 2)))
    with pytest.raises(TypeError, match="unknown variable"):
        c.evaluate(x=np.zeros((3, 1)), y=np.zeros((3, 2)), z=1)
    with pytest.raises(ValueError):
        c.evaluate(x=np.zeros((3, 1)), y=np.zeros((4, 2)))


# (formula, offending segment that must be quoted in the message)
REFUSALS = [
    ("x.real + 1", "x.real"),
    ("gama * x", "gama"),
    ("__import__('os')", "__import__('os')"),
    ("__class__", "__class__"),
    ("_x + 1", "_x"),
    ("(lambda: 1)()", "lambda: 1"),
    ("lambda x: x", "lambda x: x"),
    ("[i for i in x]", "[i for i in x]"),
    ("sum(i for i in y)", "sum(i for i in y)"),
    ("{i: 1 for i in y}", "{i: 1 for i in y}"),
    ("{i for i in y}", "{i for i in y}"),
    ("'abc'", "'abc'"),
    ("b'abc' + x", "b'abc'"),
    ("f'{x}'", "f'{x}'"),
    ("sin[0]", "sin[0]"),
    ("gamma[0]", "gamma[0]"),
    ("y[0.5]", "0.5"),
    ("y[i]", "y[i]"),
    ("y[-1]", "-1"),
    ("y[2]", "y[2]"),
    ("y[0:1]", "0:1"),
    ("y[0, 1]", "0, 1"),
    ("y[True]", "True"),
    ("x[1]", "x[1]"),
    ("open('f')", "open('f')"),
    ("foo(x)", "foo(x)"),
    ("x(1)", "x(1)"),
    ("minimum(x)", "minimum(x)"),
    ("where(x, 1)", "where(x, 1)"),
    ("sin(x, y[0])", "sin(x, y[0])"),
    ("sin(x=1)", "x=1"),
    ("maximum(*y)", "*y"),
    ("sin(**{'x': 1})", "**{'x': 1}"),
    ("(z := 1) + x", "z := 1"),
    ("(1, 2)", "(1, 2)"),
    ("[x, 1]", "[x, 1]"),
    ("{'a': 1}", "{'a': 1}"),
    ("{1, 2}", "{1, 2}"),
    ("True + x", "True"),
    ("None", "None"),
    ("...", "..."),
    ("1j * x", "1j"),
    ("x if x > 0 else 0", "x if x > 0 else 0"),
    ("x > 0 and x < 1", "x > 0 and x < 1"),
    ("x > 0 or u", "x > 0 or u"),
    ("not x", "not x"),
    ("~x", "~x"),
    ("x // 2", "x // 2"),
    ("x % 2", "x % 2"),
    ("x @ y", "x @ y"),
    ("x & 1", "x & 1"),
    ("x << 1", "x << 1"),
    ("x is u", "x is u"),
    ("x in y", "x in y"),
    ("y + 1", "y"),
    ("sin + 1", "sin"),
    ("sin.__globals__", "sin.__globals__"),
    ("x3", "x3"),
    ("y3", "y3"),
    ("1" + "0" * 400 + " * x", "1" + "0" * 400),
    ("x +* 2", "x +* 2"),
    ("sin(x", "sin(x"),
    ("x = 1", "x = 1"),
    ("import os", "import os"),
    ("", ""),
    ("   ", ""),
]


@pytest.mark.parametrize("text,segment", REFUSALS, ids=[r[0][:30] or "<empty>" for r in REFUSALS])
def test_refusals(text, segment):
    with pytest.raises(ExpressionError) as info:
        compile_expression(text, V, P)
    assert segment in str(info.value)
    with pytest.raises(ExpressionError):
        parse_expression(text, V, P)


def test_refusal_messages_are_specific():
    def msg(text, **kw):
        with pytest.raises(ExpressionError) as info:
            compile_expression(text, V, P, **kw)
        return str(info.value)

    m = msg("x.real + 1", where="cases/foo.toml: model.a")
    assert m.startswith('cases/foo.toml: model.a: formula "x.real + 1": attribute access')
    assert "allowed:" in m and "gamma" in m and "where(cond, a, b)" in m and "pi e" in m
    assert "did you mean 'gamma'" in msg("gama")
    assert "did you mean 'sqrt'" in msg("sqr(x)")
    assert "takes 2 arguments, got 1" in msg("minimum(x)")
    assert "out of range" in msg("y[2]")
    assert "integer literal" in msg("y[0.5]")
    assert "use where" in msg("x if x > 0 else 0")
    m = msg("x +* 2")
    assert "syntax error column 4, near '* 2'" in m
    assert "\n" not in m                                   # one line: the CLI prints one line
    assert "syntax error at the end" in msg("0.5*u**")
    assert "empty" in msg("  ", where="w")


def test_parse_expression_returns_tree():
    tree = parse_expression("  -(x - y[1])/gamma + u  ", V, P)
    assert isinstance(tree, ast.Expression)
    assert isinstance(tree.body, ast.BinOp)


def test_public_tables():
    assert ALLOWED_FUNCTIONS["where"] == 3 and ALLOWED_FUNCTIONS["minimum"] == 2
    assert ALLOWED_FUNCTIONS["maximum"] == 2 and ALLOWED_FUNCTIONS["sqrt"] == 1
    assert set(ALLOWED_FUNCTIONS) == {"sin", "cos", "tan", "exp", "log", "sqrt", "abs", "tanh",
                                      "minimum", "maximum", "where"}
    assert CONSTANTS == {"pi": math.pi, "e": math.e}


def _compile_or_refuse(text):
    try:
        c = compile_expression(text, V, P)
    except ExpressionError:
        return
    assert isinstance(c, expr_mod.CompiledExpression)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=string.printable, max_size=40))
def test_random_printable_strings(text):
    _compile_or_refuse(text)


TOKENS = ["x", "y", "y[0]", "y[1]", "y[2]", "u", "x1", "y2", "gamma", "beta", "pi", "e", "1", "2.5",
          "0", "+", "-", "*", "/", "**", "<", "==", "(", ")", ",", "[", "]", "sin(", "where(",
          "minimum(", ".", "_", "'", "if", "else", "lambda", ":", "for", "in", "not", "and", "=",
          "True", "1e999", "__", "*", " "]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=12))
def test_random_token_soup(tokens):
    _compile_or_refuse(" ".join(tokens))


def test_source_has_no_eval_or_exec():
    src = Path(expr_mod.__file__).read_text()
    assert not re.search(r"\b(eval|exec)\s*\(", src)
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            assert name not in {"eval", "exec"}


def test_speed_one_million_points():
    rng = np.random.default_rng(3)
    n = 1_000_000
    X, Y, U = rng.normal(size=(n, 1)), rng.normal(size=(n, 2)), rng.normal(size=(n, 1))
    c = compile_expression("-(x - y[0])/gamma + u + where(y2 > 0, 1, -1)*sqrt(beta)", V, P)
    c.evaluate(x=X[:10], y=Y[:10], u=U[:10])  # compile
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        out = c.evaluate(x=X, y=Y, u=U)
        best = min(best, time.perf_counter() - t0)
    assert out.shape == (n,)
    assert best < 0.1, best
