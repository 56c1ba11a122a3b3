"""Tests of hjbsolve.plot on small synthetic files of every layout (no solver runs).

They check what the figures show (lines, labels, legend text, plotted data), not only that they render.
"""

import os
import struct

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.text import Text

from hjbsolve import plot, store
from hjbsolve.errors import HJBError
from hjbsolve.plot import available_kinds, plot_file
from hjbsolve.store import Group, Variable

CASE_NONE = 'name = "syn"\nfamily = "entropy_sgd"\n[model]\nloss = "double_well"\ngamma = 0.5\n'
CASE_LR = CASE_NONE + 'control = "learning_rate"\nu_ref = 0.5\n'

CELL_KINDS = ["hbar", "hbar_map", "mu", "drift", "lbar", "feedback"]
VALUE_KINDS = ["value", "value_eps", "value_feedback", "blind"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def V(data, dims, **attrs):
    return Variable(np.asarray(data), dims, attrs)


# ------------------------------------------------------------------------------------------- builders


def cell_group(case_text=CASE_NONE, family="entropy_sgd", with_P=False):
    x = np.linspace(-1.0, 1.0, 5)
    y = np.linspace(-3.0, 3.0, 61)
    p = np.linspace(-2.0, 2.0, 21)
    q = np.linspace(-1.5, 1.5, 11)
    hy = y[1] - y[0]
    mu = np.exp(-0.5 * (y[None, :] - 0.5 * x[:, None]) ** 2)
    mu /= mu.sum(axis=1, keepdims=True)
    ybar = (mu * y).sum(axis=1)[:, None]
    abar = -2.0 * (x - ybar[:, 0])[:, None]
    hbar = 0.5 * p[None, :] ** 2 + x[:, None] * p[None, :]            # (x, p)
    lbar = 0.5 * (q[None, :] + x[:, None]) ** 2
    lbar[:, 0] = np.inf                                                   # outside the domain
    fb = np.clip(p[None, :, None] * (y[None, None, :] - x[:, None, None]), -1, 1)[..., None]   # (x, p, y, 1)
    coords = {"x": V(x, ("x",)), "y": V(y, ("y",)), "p": V(p, ("p",)), "q": V(q, ("q",))}
    pdims = ("x", "p")
    if with_P:
        P = np.array([-1.0, 0.0, 1.0])
        coords["P"] = V(P, ("P",))
        hbar = hbar[..., None] - P[None, None, :]
        fb = np.repeat(fb[:, :, None], 3, axis=2)
        pdims = ("x", "p", "P")
    variables = {
        "mu": V(mu, ("x", "y"), units="probability per node"),
        "ybar": V(ybar, ("x", "fast")),
        "abar": V(abar, ("x", "slow")),
        "gbar": V(x ** 2, ("x",)),
        "hbar": V(hbar, pdims),
        "lbar": V(lbar, ("x", "q")),
        "feedback": V(fb.astype(np.float32), (*pdims, "y", "control")),
    }
    attrs = {"case_name": "syn", "family": family, "case_text": case_text,
             "convention_hamiltonian": "sup convention"}
    return Group(coords=coords, variables=variables, attrs=attrs), dict(x=x, y=y, p=p, q=q, hy=hy, mu=mu,
                                                                       hbar=hbar, fb=fb, ybar=ybar, abar=abar)


def cell_2d_group():
    x1, x2 = np.linspace(-1, 1, 6), np.linspace(-1, 1, 5)
    y = np.linspace(-2, 2, 9)
    p1, p2 = np.linspace(-1, 1, 7), np.linspace(-1, 1, 5)
    mu = np.ones((6, 5, 9)) / 9
    hbar = 0.5 * (p1[None, None, :, None] ** 2 + p2[None, None, None, :] ** 2) + 0 * x1[:, None, None, None]
    hbar = np.broadcast_to(hbar, (6, 5, 7, 5)).copy()
    X1, X2 = np.meshgrid(x1, x2, indexing="ij")
    abar = np.stack([-X1, -X2], -1)
    ybar = np.stack([0.5 * X1, 0.5 * X2], -1)
    coords = {n: V(a, (n,)) for n, a in (("x1", x1), ("x2", x2), ("y", y), ("p1", p1), ("p2", p2))}
    variables = {"mu": V(mu, ("x1", "x2", "y")), "abar": V(abar, ("x1", "x2", "slow")),
                 "ybar": V(ybar, ("x1", "x2", "fast")), "gbar": V(X1 ** 2, ("x1", "x2")),
                 "hbar": V(hbar, ("x1", "x2", "p1", "p2"))}
    return Group(coords=coords, variables=variables, attrs={"case_name": "two", "family": "expr"})


def cell_m2_group():
    x = np.linspace(-1, 1, 3)
    y1, y2 = np.linspace(-2, 2, 11), np.linspace(-2, 2, 9)
    p = np.linspace(-1, 1, 5)
    Y1, Y2 = np.meshgrid(y1, y2, indexing="ij")
    mu = np.exp(-(Y1 ** 2 + Y2 ** 2))[None] * np.ones((3, 1, 1))
    mu /= mu.sum(axis=(1, 2), keepdims=True)
    fb = p[None, :, None, None] * (Y1 - Y2)[None, None] * np.ones((3, 1, 1, 1))
    coords = {n: V(a, (n,)) for n, a in (("x", x), ("y1", y1), ("y2", y2), ("p", p))}
    variables = {"mu": V(mu, ("x", "y1", "y2")), "hbar": V(np.zeros((3, 5)), ("x", "p")),
                 "feedback": V(fb[..., None], ("x", "p", "y1", "y2", "control"))}
    return Group(coords=coords, variables=variables, attrs={"case_name": "m2", "family": "expr"}), (y1, y2, mu)


def value_groups(with_zero=True):
    x = np.linspace(-1, 1, 9)
    y = np.linspace(-2, 2, 7)
    t = np.array([0.0, 0.5, 1.0])
    out = {}
    for eps in (0.1, 0.01):
        Vv = t[:, None, None] * (x[None, :, None] ** 2 + eps * y[None, None, :]) + x[None, :, None] ** 2
        fb = np.tanh(x[:, None] - y[None, :])[..., None] + eps
        out[f"eps_{eps}"] = Group(coords={"t": V(t, ("t",)), "x": V(x, ("x",)), "y": V(y, ("y",))},
                                  variables={"V": V(Vv, ("t", "x", "y")),
                                             "feedback": V(fb, ("x", "y", "control"))}, attrs={"eps": eps})
    if with_zero:
        V0 = t[:, None] * x[None, :] ** 2 + x[None, :] ** 2
        Vb = V0 + 0.2 * t[:, None]
        out["eps_0"] = Group(coords={"t": V(t, ("t",)), "x": V(x, ("x",)), "y": V(y, ("y",))},
                             variables={"V": V(V0, ("t", "x")), "V_blind": V(Vb, ("t", "x")),
                                        "feedback": V(np.tanh(x[:, None] - y[None, :])[..., None],
                                                      ("x", "y", "control")),
                                        "feedback_blind": V(np.zeros((9, 1)), ("x", "control"))},
                             attrs={"eps": 0.0})
    return out, dict(x=x, y=y, t=t)


def study_group(fit_attrs=None):
    h = np.array([0.1, 0.05, 0.025, 0.0125])
    err_max = 3.0 * h ** 2
    err_l2 = 0.5 * h
    order_max = np.array([np.nan, 2.0, 2.0, 2.0])
    attrs = {"study_name": "syn_study", "parameter": "dx", "reference": "exact"}
    attrs.update(fit_attrs or {})
    return Group(coords={"run": V(np.arange(4), ("run",))},
                 variables={"param": V(h, ("run",)), "err_max": V(err_max, ("run",)),
                            "err_l2": V(err_l2, ("run",)), "order_max": V(order_max, ("run",))},
                 attrs=attrs), h


def periodic_group(two_d=False):
    if not two_d:
        P = np.linspace(-2, 2, 17)
        y = np.linspace(0, 1, 20, endpoint=False)
        hb = np.maximum(0.5 * P ** 2, 0.3)
        chi = np.sin(2 * np.pi * y)[None, :] * P[:, None]
        return Group(coords={"P": V(P, ("P",)), "y": V(y, ("y",))},
                     variables={"hbar": V(hb, ("P",)), "chi": V(chi, ("P", "y")),
                                "hbar_exact": V(hb + 1e-3, ("P",))},
                     attrs={"family": "periodic", "case_name": "per"})
    P1, P2 = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    y1, y2 = np.linspace(0, 1, 8, endpoint=False), np.linspace(0, 1, 6, endpoint=False)
    hb = 0.5 * (P1[:, None] ** 2 + P2[None, :] ** 2)
    chi = (np.sin(2 * np.pi * y1)[:, None] * np.cos(2 * np.pi * y2)[None, :])[None, None] * np.ones((5, 4, 1, 1))
    return Group(coords={n: V(a, (n,)) for n, a in (("P1", P1), ("P2", P2), ("y1", y1), ("y2", y2))},
                 variables={"hbar": V(hb, ("P1", "P2")), "chi": V(chi, ("P1", "P2", "y1", "y2")),
                            "hbar_exact": V(hb, ("P1", "P2"))},
                 attrs={"family": "periodic", "case_name": "per2"})


@pytest.fixture
def cell_file(tmp_path):
    g, data = cell_group()
    path = tmp_path / "cell.h5"
    store.write(path, g)
    return str(path), data


@pytest.fixture
def run_file(tmp_path):
    g, _ = cell_group()
    groups, data = value_groups()
    g.groups.update(groups)
    path = tmp_path / "run.h5"
    store.write(path, g)
    return str(path), data


@pytest.fixture
def study_file(tmp_path):
    g, h = study_group()
    path = tmp_path / "study.h5"
    store.write(path, g)
    return str(path), h


def labels(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def main_axes(fig):
    """Axes that are not colour bars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


# ------------------------------------------------------------------------------------------ kinds


def test_kinds_documented():
    assert set(plot.KINDS) == set(CELL_KINDS + VALUE_KINDS + ["chi", "convergence", "table", "simulation", "law"])
    assert all(isinstance(v, str) and v and "\n" not in v for v in plot.KINDS.values())
    for kind in plot.KINDS:
        assert f"``{kind}``" in plot.__doc__


def test_available_kinds_per_layout(tmp_path, cell_file, run_file, study_file):
    assert plot.available_kinds(cell_file[0]) == CELL_KINDS
    assert plot.available_kinds(run_file[0]) == CELL_KINDS + VALUE_KINDS
    assert plot.available_kinds(study_file[0]) == ["convergence", "table"]
    for two_d in (False, True):
        path = tmp_path / f"per{two_d}.h5"
        store.write(path, periodic_group(two_d))
        assert plot.available_kinds(path) == ["hbar", "chi"]
    path = tmp_path / "two.h5"
    store.write(path, cell_2d_group())
    assert plot.available_kinds(path) == ["hbar_map", "mu", "drift"]
    groups, _ = value_groups(with_zero=False)
    path = tmp_path / "vals.h5"
    store.write(path, Group(groups=groups))
    assert plot.available_kinds(path) == ["value", "value_eps", "value_feedback"]


def test_default_kind(tmp_path, cell_file, run_file, study_file):
    fig = plot.plot_file(cell_file[0])
    assert "Hbar" in fig.axes[0].get_ylabel()
    fig = plot.plot_file(run_file[0])
    assert fig.axes[0].get_ylabel().startswith("V(t, x)")
    fig = plot.plot_file(study_file[0])
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"
    path = tmp_path / "two.h5"
    store.write(path, cell_2d_group())
    fig = plot.plot_file(path)            # n = 2: no Hbar curves, the map
    assert "p1" in fig.axes[0].get_xlabel() and fig.axes[0].collections


def test_every_kind_readable_at_paper_size(tmp_path, run_file, study_file):
    path = tmp_path / "per.h5"
    store.write(path, periodic_group())
    jobs = [(run_file[0], k) for k in CELL_KINDS + VALUE_KINDS]
    jobs += [(study_file[0], k) for k in ("convergence", "table")] + [(str(path), k) for k in ("hbar", "chi")]
    for file, kind in jobs:
        fig = plot.plot_file(file, kind)
        w, h = fig.get_size_inches()
        assert 6.0 <= w <= 7.0 and (4.0 <= h <= 6.0 or kind == "table"), kind
        fig.canvas.draw()
        sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text().strip()]
        assert sizes and min(sizes) >= 9, (kind, min(sizes))
        if kind != "table":                  # stacked panels share the x label of the bottom one
            assert all(ax.get_ylabel() for ax in main_axes(fig)), kind
            assert main_axes(fig)[-1].get_xlabel(), kind
        plt.close(fig)


# ------------------------------------------------------------------------------------------ cell files


def test_hbar_curves(cell_file):
    path, d = cell_file
    fig = plot.plot_file(path, "hbar")
    ax = fig.axes[0]
    assert "Hbar(x, p)" in ax.get_ylabel() and "sup convention" in ax.get_ylabel()
    assert "p = D_x V" in ax.get_xlabel()
    assert len(ax.get_lines()) == 5
    assert labels(ax) == [f"x = {v:.3g}" if v else "x = 0" for v in d["x"]]
    line = ax.get_lines()[1]
    np.testing.assert_allclose(line.get_xdata(), d["p"])
    np.testing.assert_allclose(line.get_ydata(), d["hbar"][1])
    fig = plot.plot_file(path, "hbar", x=[0.0, 0.9])      # explicit curves: nearest nodes 0 and 1
    assert labels(fig.axes[0]) == ["x = 0", "x = 1"]
    fig = plot.plot_file(path, "hbar", n_curves=2)
    assert len(fig.axes[0].get_lines()) == 2


def test_hbar_with_hessian_slot(tmp_path):
    g, d = cell_group(with_P=True)
    path = tmp_path / "P.h5"
    store.write(path, g)
    fig = plot.plot_file(path, "hbar")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), d["hbar"][0, :, 1])     # P nearest 0
    assert "P = 0" in ax.get_title()
    fig = plot.plot_file(path, "hbar", P=1.0)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), d["hbar"][0, :, 2])
    assert "P = 1" in fig.axes[0].get_title()
    with pytest.raises(HJBError, match="one value"):
        plot.plot_file(path, "hbar", P=[0.0, 1.0])


def test_hbar_map(cell_file, tmp_path):
    path, d = cell_file
    fig = plot.plot_file(path, "hbar_map")
    ax = main_axes(fig)[0]
    mesh = [c for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(mesh) == 1
    np.testing.assert_allclose(np.asarray(mesh[0].get_array()).reshape(5, 21), d["hbar"])
    assert "D_x V" in ax.get_xlabel() and "x" in ax.get_ylabel()
    cbar = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert cbar and "Hbar" in cbar[0].get_ylabel() and "sup convention" in cbar[0].get_ylabel()
    path2 = tmp_path / "two.h5"
    store.write(path2, cell_2d_group())
    fig = plot.plot_file(path2, "hbar_map", x1=1.0)
    ax = main_axes(fig)[0]
    assert "p1" in ax.get_xlabel() and "p2" in ax.get_ylabel()
    assert "x1 = 1" in ax.get_title()


def test_mu_densities(cell_file, tmp_path):
    path, d = cell_file
    fig = plot.plot_file(path, "mu")
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 5
    assert "density" in ax.get_ylabel() and "fast" in ax.get_xlabel()
    for line, row in zip(ax.get_lines(), d["mu"]):
        np.testing.assert_allclose(line.get_ydata(), row / d["hy"])
        assert np.sum(line.get_ydata()) * d["hy"] == pytest.approx(1.0)
    g, (y1, y2, mu) = cell_m2_group()
    path2 = tmp_path / "m2.h5"
    store.write(path2, g)
    fig = plot.plot_file(path2, "mu")
    ax = main_axes(fig)[0]
    assert "y1" in ax.get_xlabel() and "y2" in ax.get_ylabel()
    assert ax.collections and not ax.get_lines()         # a contour panel, no curves


def test_drift_labels(cell_file, tmp_path):
    path, d = cell_file
    fig = plot.plot_file(path, "drift")
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2
    assert labels(ax)[0] == "abar(x) = -grad f_gamma(x)"
    assert "<y>_x - x" in labels(ax)[1]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), d["abar"][:, 0])
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), d["ybar"][:, 0] - d["x"])
    assert "drift" in ax.get_ylabel() and "slow" in ax.get_xlabel()
    for name, text, free in (("lr", CASE_LR, False),
                             ("ovr", CASE_LR + "\n# command-line overrides:\n# --set model.control=none\n", True),
                             ("other", CASE_NONE, False)):
        g, _ = cell_group(case_text=text, family="entropy_sgd" if name != "other" else "expr")
        p = tmp_path / f"{name}.h5"
        store.write(p, g)
        first = labels(plot.plot_file(p, "drift").axes[0])[0]
        assert ("grad f_gamma" in first) == free, name
    path2 = tmp_path / "two.h5"
    store.write(path2, cell_2d_group())
    fig = plot.plot_file(path2, "drift")
    assert len(main_axes(fig)) == 2                       # quiver of abar and of <y>_x - x


def test_lbar_curves(cell_file):
    path, d = cell_file
    ax = plot.plot_file(path, "lbar").axes[0]
    solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
    assert len(solid) == 5
    assert "Lbar(x, q)" in ax.get_ylabel() and "q" in ax.get_xlabel()
    # x = -1: Hbar = p^2/2 - p on p in [-2, 2] attains its sup for q = 1 - p in [-1, 3]; q = -1.5 is the p box
    y = solid[0].get_ydata()
    assert np.isnan(y[0]) and np.all(np.isfinite(y[2:]))          # +inf and the box artefact are not drawn solid
    np.testing.assert_allclose(y[2:], 0.5 * (d["q"][2:] - 1.0) ** 2)


def test_feedback_map(cell_file, tmp_path):
    path, d = cell_file
    fig = plot.plot_file(path, "feedback", x=0.5)
    ax = main_axes(fig)[0]
    mesh = [c for c in ax.collections if isinstance(c, QuadMesh)][0]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(21, 61), d["fb"][3, :, :, 0])
    assert "fast" in ax.get_xlabel() and "D_x V" in ax.get_ylabel()
    assert "x = 0.5" in ax.get_title()
    g, _ = cell_m2_group()
    path2 = tmp_path / "m2.h5"
    store.write(path2, g)
    ax = main_axes(plot.plot_file(path2, "feedback"))[0]
    assert "y1" in ax.get_xlabel() and "y2" in ax.get_ylabel() and "p = 0.5" in ax.get_title()


# ------------------------------------------------------------------------------------------ value groups


def test_value_effective_slices(run_file):
    path, d = run_file
    ax = plot.plot_file(path, "value").axes[0]
    assert len(ax.get_lines()) == len(d["t"])
    assert ax.get_ylabel().startswith("V(t, x)") and "time remaining" in ax.get_ylabel()
    assert labels(ax) == ["t = 0", "t = 0.5", "t = 1"]
    np.testing.assert_allclose(ax.get_lines()[2].get_ydata(), 2 * d["x"] ** 2)


def test_value_eps_slices(run_file):
    path, d = run_file
    ax = plot.plot_file(path, "value", eps=0.1).axes[0]
    assert "V^eps(T, x, y)" in ax.get_ylabel() and "eps = 0.1" in ax.get_title()
    lines = ax.get_lines()
    assert 1 < len(lines) <= 5
    j = int(np.argmin(np.abs(d["y"] - float(labels(ax)[0].split("=")[1]))))
    np.testing.assert_allclose(lines[0].get_ydata(), 2 * d["x"] ** 2 + 0.1 * d["y"][j])
    with pytest.raises(HJBError, match="eps available: 0.1, 0.01, 0"):
        plot.plot_file(path, "value", eps=0.5)


def test_value_eps_panels(run_file, tmp_path):
    path, d = run_file
    fig = plot.plot_file(path, "value_eps")
    top, bottom = fig.axes
    assert len(top.get_lines()) == 3 and len(bottom.get_lines()) == 2
    assert labels(top) == ["eps = 0.1", "eps = 0.01", "eps = 0 (effective)"]
    assert top.get_lines()[2].get_linestyle() == "--"
    # y0 = the fast node nearest 0 (y = 0 here): V^eps - V = eps * y0 = 0 at every x
    np.testing.assert_allclose(bottom.get_lines()[0].get_ydata(), 0.0, atol=1e-12)
    assert "V^eps - V" in bottom.get_ylabel()
    fig = plot.plot_file(path, "value_eps", y=2.0)
    np.testing.assert_allclose(fig.axes[1].get_lines()[1].get_ydata(), 0.01 * 2.0, atol=1e-12)
    groups, _ = value_groups(with_zero=False)
    p2 = tmp_path / "nozero.h5"
    store.write(p2, Group(groups=groups))
    fig = plot.plot_file(p2, "value_eps")
    assert len(fig.axes) == 1 and len(fig.axes[0].get_lines()) == 2


def test_value_feedback_and_blind(run_file):
    path, d = run_file
    fig = plot.plot_file(path, "value_feedback")
    ax = main_axes(fig)[0]
    assert "eps = 0.01" in ax.get_title()                 # default: smallest eps > 0
    mesh = [c for c in ax.collections if isinstance(c, QuadMesh)][0]
    want = np.tanh(d["x"][:, None] - d["y"][None, :]) + 0.01
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(7, 9), want.T)
    assert "slow" in ax.get_xlabel() and "fast" in ax.get_ylabel()
    ax = main_axes(plot.plot_file(path, "value_feedback", eps=0))[0]
    assert "eps = 0 (effective)" in ax.get_title()
    fig = plot.plot_file(path, "blind")
    top, bottom = fig.axes
    assert len(top.get_lines()) == 2 * len(d["t"]) and len(bottom.get_lines()) == len(d["t"])
    assert "V_blind" in top.get_ylabel() and "V_blind - V" in bottom.get_ylabel()
    np.testing.assert_allclose(bottom.get_lines()[2].get_ydata(), 0.2)


def test_value_groups_from_value_result(tmp_path):
    """Groups written by the value stage itself (ValueResult.to_group) are understood."""
    from hjbsolve.grid import Grid
    from hjbsolve.value import ValueResult

    xg, yg = Grid.from_box([-1.0, 1.0], 11), Grid.from_box([-2.0, 2.0], 9)
    x, y = xg.axes[0], yg.axes[0]
    t = np.array([0.0, 0.5, 1.0])
    Ve = t[:, None, None] + x[None, :, None] ** 2 + 0.1 * y[None, None, :]
    V0 = t[:, None] + x[None, :] ** 2
    fb = np.tanh(x[:, None] * y[None, :])[..., None]
    groups = {
        "eps_0.1": ValueResult(eps=0.1, t_out=t, V=Ve, xgrid=xg, ygrid=yg, feedback=fb).to_group(),
        "eps_0": ValueResult(eps=0.0, t_out=t, V=V0, xgrid=xg, ygrid=yg, feedback=fb, V_blind=V0 + t[:, None],
                             feedback_blind=np.zeros((11, 1))).to_group(),
    }
    path = tmp_path / "vr.h5"
    store.write(path, Group(groups=groups))
    assert plot.available_kinds(path) == VALUE_KINDS
    for kind in VALUE_KINDS:
        fig = plot.plot_file(path, kind)
        assert main_axes(fig)[-1].get_xlabel().startswith("x")
        plt.close(fig)
    top, bottom = plot.plot_file(path, "value_eps").axes
    np.testing.assert_allclose(bottom.get_lines()[0].get_ydata(), 0.0, atol=1e-12)      # y0 = 0


# ------------------------------------------------------------------------------------------ studies


def test_convergence_fitted_slopes(study_file, tmp_path):
    path, h = study_file
    ax = plot.plot_file(path, "convergence").axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.get_lines()) == 4                       # markers and fitted line per norm
    texts = labels(ax)
    assert texts == ["max norm, slope 2.00 ± 0.00", "l2 norm, slope 1.00 ± 0.00"]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), 3 * h ** 2)
    fit = ax.get_lines()[1]
    assert fit.get_linestyle() == "--"
    np.testing.assert_allclose(fit.get_ydata(), 3 * np.asarray(fit.get_xdata()) ** 2, rtol=1e-10)
    assert "dx" in ax.get_xlabel() and "error" in ax.get_ylabel() and "exact" in ax.get_ylabel()
    g, _ = study_group({"fit_order_max": 1.98, "fit_order_max_spread": 0.03,
                        "fit_order_l2": float("nan"), "fit_order_l2_spread": float("nan")})
    p2 = tmp_path / "stored.h5"
    store.write(p2, g)
    texts = labels(plot.plot_file(p2, "convergence").axes[0])
    assert texts == ["max norm, slope 1.98 ± 0.03", "l2 norm, slope 1.00 ± 0.00"]


def test_error_table(study_file):
    path, h = study_file
    ax = plot.plot_file(path, "table").axes[0]
    assert len(ax.tables) == 1
    cells = {k: c.get_text().get_text() for k, c in ax.tables[0].get_celld().items()}
    assert [cells[(0, c)] for c in range(5)] == ["dx", "err_max", "order", "err_l2", "order"]
    assert cells[(1, 0)] == "0.1" and cells[(1, 1)] == f"{0.03:.3e}" and cells[(1, 2)] == "–"
    assert cells[(2, 2)] == "2.00" and cells[(3, 4)] == "1.00"       # l2 orders computed pairwise
    assert cells[(5, 0)] == "fit" and cells[(5, 2)] == "2.00 ± 0.00"


def test_study_with_two_series_plots_each_series(tmp_path):
    """--vary eps=.. --vary grid=..: one legend entry, fit line and table fit row per series, labelled by
    the second key; the table has a column per varied key."""
    eps = np.array([0.1, 0.1, 0.03, 0.03])
    grid = np.array([1.0, 2.0, 1.0, 2.0])
    series = np.array([0, 1, 0, 1])
    err = np.where(series == 0, 0.2 * eps ** 0.5, 0.3 * eps ** 0.75)
    g = Group(coords={"run": V(np.arange(4), ("run",))},
              variables={"param": V(eps, ("run",)), "err_max": V(err, ("run",)), "err_l2": V(err / 2, ("run",)),
                         "series": V(series, ("run",)), "vary_eps": V(eps, ("run",)), "vary_grid": V(grid, ("run",))},
              attrs={"study_name": "two", "parameter": "eps", "reference": "limit", "varied": ["eps", "grid"],
                     "fit_series_0": np.array([0.5, np.nan, 0.5, np.nan]),
                     "fit_series_1": np.array([0.75, np.nan, 0.75, np.nan])})
    path = tmp_path / "two.h5"
    store.write(path, g)
    texts = labels(plot.plot_file(path, "convergence").axes[0])
    assert texts == ["grid = 1: max norm, slope 0.50", "grid = 1: l2 norm, slope 0.50",
                     "grid = 2: max norm, slope 0.75", "grid = 2: l2 norm, slope 0.75"]
    ax = plot.plot_file(path, "table").axes[0]
    cells = {k: c.get_text().get_text() for k, c in ax.tables[0].get_celld().items()}
    assert [cells[(0, c)] for c in range(2)] == ["eps", "grid"]
    assert cells[(2, 1)] == "2" and cells[(5, 0)] == "fit (grid = 1)" and cells[(6, 0)] == "fit (grid = 2)"
    assert cells[(6, 3)] == "0.75"


# ------------------------------------------------------------------------------------------ periodic


def test_periodic_hbar_and_chi(tmp_path):
    path = tmp_path / "per.h5"
    store.write(path, periodic_group())
    ax = plot.plot_file(path).axes[0]                      # default: hbar
    assert len(ax.get_lines()) == 2 and labels(ax) == ["computed", "exact (max |computed - exact| = 1.0e-03)"]
    assert ax.get_lines()[1].get_linestyle() == "--"
    assert "Hbar(P)" in ax.get_ylabel() and "P" in ax.get_xlabel()
    ax = plot.plot_file(path, "chi", P=[-2.0, 2.0]).axes[0]
    assert len(ax.get_lines()) == 2 and labels(ax) == ["P = -2", "P = 2"]
    assert "chi(y)" in ax.get_ylabel()
    path2 = tmp_path / "per2.h5"
    store.write(path2, periodic_group(two_d=True))
    fig = plot.plot_file(path2, "hbar")
    assert "P1" in main_axes(fig)[0].get_xlabel() and main_axes(fig)[0].collections
    ax = main_axes(plot.plot_file(path2, "chi", P1=1.0))[0]
    assert "y1" in ax.get_xlabel() and "P1 = 1" in ax.get_title()


def test_periodic_lagrangian_and_explicit_P_lists(tmp_path):
    g = periodic_group()
    q = np.linspace(-2, 2, 9)
    g.coords["q"] = V(q, ("q",))
    g.variables["lbar"] = V(0.5 * q ** 2 - 0.3, ("q",))
    path = tmp_path / "perq.h5"
    store.write(path, g)
    assert plot.available_kinds(path) == ["hbar", "lbar", "chi"]
    ax = plot.plot_file(path, "lbar").axes[0]
    solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
    assert len(solid) == 1 and "Lbar(q)" in ax.get_ylabel()
    # Hbar = max(P^2/2, 0.3) on [-2, 2]: end slopes -+1.875, so q = -+2 need the box edge (dotted, not solid)
    y = solid[0].get_ydata()
    assert np.isnan(y[[0, -1]]).all()
    np.testing.assert_allclose(y[1:-1], (0.5 * q ** 2 - 0.3)[1:-1])
    # an explicit list of P values: index coordinate P plus P_values(P, axis)
    Pv = np.array([-1.0, 0.25, 2.0])
    y = np.linspace(0, 1, 10, endpoint=False)
    g = Group(coords={"P": V(np.arange(3), ("P",)), "y": V(y, ("y",))},
              variables={"P_values": V(Pv[:, None], ("P", "axis")), "hbar": V(Pv ** 2, ("P",)),
                         "chi": V(np.outer(Pv, np.sin(2 * np.pi * y)), ("P", "y"))},
              attrs={"family": "periodic", "case_name": "list"})
    path = tmp_path / "list.h5"
    store.write(path, g)
    ax = plot.plot_file(path, "hbar").axes[0]
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), Pv)
    ax = plot.plot_file(path, "chi", P=0.3).axes[0]
    assert labels(ax) == ["P = 0.25"]
    P2 = np.array([[0.0, 0.0], [1.0, 0.5], [-1.0, 2.0]])
    g.variables["P_values"] = V(P2, ("P", "axis"))
    path = tmp_path / "list2.h5"
    store.write(path, g)
    ax = main_axes(plot.plot_file(path, "hbar"))[0]
    assert ax.get_xlabel() == "P_1" and len(ax.collections) == 1       # scatter coloured by Hbar


# ------------------------------------------------------------------------------------------ output, errors


@pytest.mark.parametrize("ext", ["png", "pdf", "svg"])
def test_save_atomically(run_file, tmp_path, ext):
    path, _ = run_file
    out = tmp_path / "figs" / f"value.{ext}"
    fig = plot.plot_file(path, "value", output=str(out))
    assert isinstance(fig, matplotlib.figure.Figure)
    assert out.stat().st_size > 0
    assert os.listdir(out.parent) == [out.name]              # no temporary file left
    head = out.read_bytes()[:32]
    if ext == "png":
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        w, h = struct.unpack(">II", head[16:24])
        assert (w, h) == (1280, 840)                            # 6.4 x 4.2 in at 200 dpi
    elif ext == "pdf":
        assert head.startswith(b"%PDF")
    else:
        assert b"<svg" in out.read_bytes()[:2000]


def test_bad_output_name(cell_file, tmp_path):
    with pytest.raises(HJBError, match="png, .pdf or .svg"):
        plot.plot_file(cell_file[0], "hbar", output=str(tmp_path / "x.jpg"))
    assert os.listdir(tmp_path) == ["cell.h5"]


def test_unsupported_kind_lists_available(cell_file, study_file):
    with pytest.raises(HJBError) as err:
        plot.plot_file(cell_file[0], "value")
    msg = str(err.value)
    assert msg == (f"{cell_file[0]}: cannot plot 'value': this file has no value groups; "
                   "kinds available: hbar, hbar_map, mu, drift, lbar, feedback")
    with pytest.raises(HJBError, match="kinds available: convergence, table"):
        plot.plot_file(study_file[0], "hbar")
    with pytest.raises(HJBError, match="unknown plot kind 'surface'; kinds available: hbar"):
        plot.plot_file(cell_file[0], "surface")


def test_bad_files_and_options(tmp_path, cell_file):
    with pytest.raises(HJBError, match="no such file"):
        plot.plot_file(tmp_path / "missing.h5")
    with pytest.raises(HJBError, match="no such file"):
        plot.available_kinds(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(HJBError, match="not an HDF5 file"):
        plot.plot_file(junk)
    empty = tmp_path / "empty.h5"
    store.write(empty, Group(attrs={"note": "nothing"}))
    assert plot.available_kinds(empty) == []
    with pytest.raises(HJBError, match="nothing to plot"):
        plot.plot_file(empty)
    with pytest.raises(HJBError, match="unknown plot option 'colour'"):
        plot.plot_file(cell_file[0], "hbar", colour="red")
    with pytest.raises(HJBError, match="component=3 is out of range"):
        plot.plot_file(cell_file[0], "feedback", component=3)


def _simulation_file(path, eps_values=(0.1, 0.0)):
    from hjbsolve.store import Group, Variable, write
    root = Group(attrs={"case_name": "sim", "family": "lq"})
    s = np.linspace(0, 1, 11)
    for eps in eps_values:
        mean = np.exp(-s)[:, None] + eps
        g = Group(coords={"s": Variable(s, ("s",)), "quantile": Variable(np.array([0.05, 0.5, 0.95]), ("quantile",)),
                          "path": Variable(np.arange(3), ("path",))},
                  variables={"X_mean": Variable(mean, ("s", "slow")),
                             "X_mean_se": Variable(0.01 + 0 * mean, ("s", "slow")),
                             "X_quantiles": Variable(np.stack([mean - 0.1, mean, mean + 0.1]), ("quantile", "s", "slow")),
                             "X_paths": Variable(np.stack([mean] * 3), ("path", "s", "slow")),
                             "running_cost_mean": Variable(s.copy(), ("s",)),
                             "running_cost_se": Variable(0.01 + 0 * s, ("s",))},
                  attrs={"eps": eps, "total_cost_mean": 1.25, "total_cost_se": 0.01, "value_pde": 1.26})
        root.groups[f"simulation_eps_{eps:g}"] = g
    write(path, root)


def test_simulation_and_law_kinds(tmp_path):
    path = tmp_path / "sim.h5"
    _simulation_file(path)
    assert {"simulation", "law"} <= set(available_kinds(path))
    fig = plot_file(path, "simulation", tmp_path / "sim.png")
    a1, a2, a3 = fig.axes[:3]
    assert len(a1.get_lines()) == 2 and len(a2.get_lines()) == 6          # 2 eps means; 3 paths each
    assert a1.get_legend() is None and len(fig.legends) == 1               # below the panels, covering none
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "cost 1.25 ± 0.02" in legend and "PDE V 1.26" in legend
    assert "time elapsed" in a3.get_xlabel()
    fig = plot_file(path, "law", tmp_path / "law.png")
    a1, a2 = fig.axes[:2]
    assert len(a1.get_lines()) == 2                                         # eps = 0.1 and the dashed limit
    gap = a2.get_lines()[0].get_ydata()
    assert np.allclose(gap, 0.1)                                            # E X^eps - E Xbar = eps here
    single = tmp_path / "one.h5"
    _simulation_file(single, (0.1,))
    with pytest.raises(HJBError, match="single simulation group"):
        plot_file(single, "law")


# ------------------------------------------------------------------------------------------ paper-grade figures
# Each test checks the content of a figure for one fix: parameters in titles, contours, zoom to the mass,
# visible arrows, marked box artefacts, exact overlays, slope triangles and error bands, time labels,
# 1-based names, legends that cover nothing, a compact table.

CASE_FULL = ('name = "syn"\nfamily = "entropy_sgd"\n[model]\nloss = "double_well"\ngamma = 0.5\nbeta = 4.0\n'
             '[time]\nT = 2.0\ndt = 0.05\n')


def _write(tmp_path, name, group):
    path = tmp_path / name
    store.write(path, group)
    return str(path)


def test_titles_carry_the_parameters(tmp_path):
    g, _ = cell_group(case_text=CASE_FULL + "\n# command-line overrides:\n# --set model.beta=8\n")
    groups, _ = value_groups()
    for name, grp in groups.items():
        grp.attrs.update({"dt": 0.05, "T": 1.0})
    g.groups.update(groups)
    path = _write(tmp_path, "run.h5", g)
    for kind in ("hbar", "hbar_map", "mu", "lbar", "feedback"):
        title = main_axes(plot.plot_file(path, kind))[0].get_title()
        assert "gamma = 0.5" in title and "beta = 8" in title, (kind, title)        # the override wins
        assert "grid x 5, y 61" in title, (kind, title)
    for kind in ("value", "value_feedback", "blind"):
        title = main_axes(plot.plot_file(path, kind))[0].get_title()
        assert "gamma = 0.5" in title and "dt = 0.05" in title and "T = 1" in title, (kind, title)
    title = plot.plot_file(path, "value_eps").axes[0].get_title()
    assert "dt = 0.05" in title and "grid x 9, y 7" in title


def test_hbar_map_has_labelled_contours_and_a_robust_colour_scale(tmp_path):
    g, d = cell_group()
    h = g.variables["hbar"].data.copy()
    h[0, 0] = 1e3                                              # one corner would flatten a linear colour scale
    g.variables["hbar"] = V(h, ("x", "p"))
    ax = main_axes(plot.plot_file(_write(tmp_path, "c.h5", g), "hbar_map"))[0]
    mesh = [c for c in ax.collections if isinstance(c, QuadMesh)][0]
    lo, hi = mesh.get_clim()
    assert hi < 10 and lo == pytest.approx(np.percentile(h, 2))  # the corner is beyond the colour bar's arrow
    cs = [c for c in ax.get_children() if c.__class__.__name__ == "QuadContourSet"]
    assert len(cs) == 1 and len(cs[0].levels) >= 3
    assert h.min() < cs[0].levels.min() and cs[0].levels.max() < h.max()       # levels span the whole range
    assert len(cs[0].labelTexts) >= 3 and all(t.get_fontsize() >= 9 for t in cs[0].labelTexts)


def test_mu_is_zoomed_to_its_mass(tmp_path):
    g, d = cell_group()
    y = d["y"]
    mu = np.exp(-0.5 * ((y[None, :] - 0.2 * d["x"][:, None]) / 0.2) ** 2)       # narrow laws in a wide box
    mu /= mu.sum(axis=1, keepdims=True)
    g.variables["mu"] = V(mu, ("x", "y"))
    ax = plot.plot_file(_write(tmp_path, "m.h5", g), "mu").axes[0]
    lo, hi = ax.get_xlim()
    assert hi - lo < 0.5 * (y[-1] - y[0])
    inside = (y >= lo) & (y <= hi)
    assert np.all(mu[:, inside].sum(axis=1) > 0.999)
    g2, (y1, y2, mu2) = cell_m2_group()
    wide = np.linspace(-8, 8, 81)
    Y1, Y2 = np.meshgrid(wide, wide, indexing="ij")
    m = np.exp(-(Y1 ** 2 + (Y2 - 1) ** 2) / 0.5)[None] * np.ones((3, 1, 1))
    m /= m.sum(axis=(1, 2), keepdims=True)
    g2.coords["y1"], g2.coords["y2"] = V(wide, ("y1",)), V(wide, ("y2",))
    g2.variables["mu"] = V(m, ("x", "y1", "y2"))
    del g2.variables["feedback"]
    ax = main_axes(plot.plot_file(_write(tmp_path, "m2.h5", g2), "mu"))[0]
    (a, b), (c, e) = ax.get_xlim(), ax.get_ylim()
    assert b - a < 6 and e - c < 6 and c < 1 < e                     # around the mass at (0, 1), not the box
    mesh = [q for q in ax.collections if isinstance(q, QuadMesh)][0]
    assert mesh._shading == "gouraud"                                  # smooth, not blocky


def test_2d_drift_arrows_are_visible(tmp_path):
    g = cell_2d_group()
    ab = g.variables["abar"].data.copy()
    ab[0, 0] = [50.0, 0.0]                                    # one huge arrow must not shrink the others
    g.variables["abar"] = V(ab, ("x1", "x2", "slow"))
    fig = plot.plot_file(_write(tmp_path, "d.h5", g), "drift")
    q = [c for c in main_axes(fig)[0].collections if c.__class__.__name__ == "Quiver"][0]
    length = np.hypot(q.U, q.V)
    spacing = 0.4                                             # x1 spacing of the arrows (every node here)
    nonzero = length[length > 0]
    np.testing.assert_allclose(nonzero, 0.8 * min(spacing, 0.5), rtol=1e-9)
    assert q.scale == 1.0 and np.ptp(q.get_array()) > 10      # colour carries the speed


def test_lbar_marks_the_box_artefact_and_the_uncontrolled_indicator(tmp_path):
    g, d = cell_group()
    x, p, q = d["x"], d["p"], np.linspace(-4, 4, 33)
    g.coords["q"] = V(q, ("q",))
    # uncontrolled: Hbar = -abar(x) p is linear in p, so Lbar is the indicator of q = abar(x) (here -x)
    g.variables["hbar"] = V(x[:, None] * p[None, :], ("x", "p"))
    g.variables["lbar"] = V(np.abs(q[None, :] + x[:, None]) * 2.0, ("x", "q"))
    ax = plot.plot_file(_write(tmp_path, "u.h5", g), "lbar").axes[0]
    solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
    assert not solid                                          # the cone |q - abar| p_max is not drawn as Lbar
    marks = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    np.testing.assert_allclose(sorted(m.get_xdata()[0] for m in marks), sorted(-x))
    np.testing.assert_allclose([m.get_ydata()[0] for m in marks], 0.0, atol=1e-12)
    assert "indicator" in " ".join(labels(ax)) or "+inf except" in ax.get_title()
    assert all(ln.get_linestyle() == ":" for ln in ax.get_lines() if ln.get_marker() != "o")
    # controlled (Hbar = p^2/2 + x p): solid only for q in [-(2 + x), 2 - x], the attained range
    g2, _ = cell_group()
    g2.coords["q"] = V(q, ("q",))
    g2.variables["lbar"] = V(0.5 * (q[None, :] + x[:, None]) ** 2, ("x", "q"))
    ax = plot.plot_file(_write(tmp_path, "c.h5", g2), "lbar").axes[0]
    solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
    for ln, xi in zip(solid, x):
        ok = np.isfinite(ln.get_ydata())
        assert ok.any() and q[ok].min() >= -(2 + xi) - 1e-9 and q[ok].max() <= 2 - xi + 1e-9
    assert "box edge" in ax.get_title()
    assert ax.get_ylim()[1] < 0.5 * np.max(0.5 * (q + x[0]) ** 2)   # zoomed to Lbar, the artefact runs off


def test_periodic_hbar_exact_overlay_from_the_case(tmp_path):
    from scipy.integrate import quad
    from scipy.optimize import brentq
    P = np.linspace(-3, 3, 25)
    y = np.arange(40) / 40
    hb = np.where(np.abs(P) <= 4 / np.pi, 1.0, 0.5 * P ** 2)          # the computed values do not matter here
    case = 'name = "pc"\nfamily = "periodic"\n[model]\nm = 1\nnu = 0.0\nV = "cos(2*pi*y)"\n'
    g = Group(coords={"P": V(P, ("P",)), "y": V(y, ("y",))}, variables={"hbar": V(hb, ("P",))},
              attrs={"family": "periodic", "case_name": "pc", "case_text": case})
    ax = plot.plot_file(_write(tmp_path, "p.h5", g), "hbar").axes[0]
    ex = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(ex) == 1 and labels(ax)[1].startswith("exact (max |computed - exact|")

    def exact(p):
        if abs(p) <= 4 / np.pi:
            return 1.0
        F = lambda H: quad(lambda t: np.sqrt(2 * (H - np.cos(2 * np.pi * t))), 0, 1, epsabs=1e-13, limit=200)[0] - abs(p)
        return brentq(F, 1.0, 1.0 + p * p, xtol=1e-14)
    np.testing.assert_allclose(ex[0].get_ydata(), [exact(p) for p in P], atol=1e-7)
    assert "nu = 0" in ax.get_title()
    for other in ('nu = 0.5', 'hamiltonian = "general"\nG = "0.5*q**2"'):        # no closed form: no overlay
        g.attrs["case_text"] = case.replace("nu = 0.0", other) if "nu" in other else case + other + "\n"
        ax = plot.plot_file(_write(tmp_path, "o.h5", g), "hbar").axes[0]
        assert len(ax.get_lines()) == 1


def test_convergence_has_slope_triangles_and_the_discretisation_band(tmp_path):
    g, h = study_group()
    g.variables["disc_err_max"] = V(0.1 * h ** 2, ("run",))
    ax = plot.plot_file(_write(tmp_path, "s.h5", g), "convergence").axes[0]
    tri = [pt for pt in ax.patches if isinstance(pt, matplotlib.patches.Polygon)]
    slopes = set()
    for t in tri:
        xy = np.log(t.get_xy()[:3])
        legs = [(xy[i], xy[j]) for i, j in ((0, 2),)]
        (a, b), = legs
        slopes.add(round((b[1] - a[1]) / (b[0] - a[0]), 9))
    assert slopes == {2.0, 1.0}                                # max norm order 2, l2 norm order 1
    assert {"1", "2"} <= {t.get_text() for t in ax.texts}
    band = [c for c in ax.collections if c.__class__.__name__ in ("PolyCollection", "FillBetweenPolyCollection")]
    assert band
    top = band[0].get_paths()[0].vertices[:, 1].max()
    assert top == pytest.approx(3 * 0.1 * h.max() ** 2)        # shaded up to 3x the discretisation error
    leg = ax.get_legend()
    assert any("discretisation error" in t.get_text() for t in leg.get_texts())
    fig = ax.figure
    fig.canvas.draw()
    lb, ab = leg.get_window_extent(), ax.get_window_extent()
    assert lb.y1 <= ab.y0 + 1                                  # the legend is below the axes, covering nothing


def test_value_feedback_says_t_equals_T_and_names_controls_from_1(tmp_path):
    groups, d = value_groups()
    x, y = d["x"], d["y"]
    fb = np.stack([np.tanh(x[:, None] - y[None, :]), np.tanh(x[:, None] + y[None, :])], -1)
    for grp in groups.values():
        grp.attrs["T"] = 1.0
    groups["eps_0.01"].variables["feedback"] = V(fb, ("x", "y", "control"))
    path = _write(tmp_path, "v.h5", Group(groups=groups))
    ax = main_axes(plot.plot_file(path, "value_feedback", component=1))[0]
    title = ax.get_title()
    assert "t = T = 1 (time remaining" in title and "final time" not in title
    assert "control u2" in title and "component 1" not in title
    cbar = [a for a in ax.figure.axes if a.get_label() == "<colorbar>"][0]
    assert "t = T" in cbar.get_ylabel() and "final time" not in cbar.get_ylabel()


def test_simulation_shows_no_band_for_a_deterministic_path(tmp_path):
    path = tmp_path / "sim.h5"
    _simulation_file(path)
    root = store.read(path)
    g0 = root.groups["simulation_eps_0"]
    g0.attrs["total_cost_se"] = 2.4e-18 / 1.96                 # a deterministic path: rounding-level spread
    qs = g0.variables["X_quantiles"].data
    g0.variables["X_quantiles"] = Variable(np.stack([qs[1]] * 3), ("quantile", "s", "slow"))
    g0.variables["running_cost_se"] = Variable(0.0 * g0.variables["running_cost_se"].data, ("s",))
    path2 = tmp_path / "sim2.h5"
    store.write(path2, root)
    fig = plot_file(path2, "simulation")
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    det = [t for t in texts if t.startswith("eps = 0 ")][0]
    assert "±" not in det and "e-18" not in det and "cost 1.25" in det
    assert "± 0.02" in [t for t in texts if t.startswith("eps = 0.1")][0]
    a1, _, a3 = fig.axes[:3]
    assert len(a1.collections) == 1 and len(a3.collections) == 1        # bands for eps = 0.1 only
    fig.canvas.draw()
    lb = fig.legends[0].get_window_extent()
    assert all(lb.y1 <= ax.get_window_extent().y0 + 1 for ax in fig.axes[:3])


def test_table_is_compact(study_file):
    path, h = study_file
    fig = plot.plot_file(path, "table")
    w, hgt = fig.get_size_inches()
    nrows = len(h) + 2                                          # header, runs, fit
    assert hgt <= 0.3 * nrows + 1.0
    ax = fig.axes[0]
    fig.canvas.draw()
    tb = ax.tables[0].get_window_extent()
    fb = fig.bbox
    assert tb.height > 0.6 * fb.height and tb.width > 0.9 * fb.width      # mostly table, little whitespace
