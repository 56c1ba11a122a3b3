"""Regenerate the README's and the guide's figures and tables (docs/*.png, docs/*.txt).

    python scripts/make_figures.py            # all figures (a quarter of an hour or more on 2 cores)
    python scripts/make_figures.py cos esgd   # some of them
    python scripts/make_figures.py --help     # the list

Each figure is produced by the package's own stages, studies and plot kinds, from the cases in cases/:
  cos        Hbar(P) of the periodic cell problem |P + chi'|^2/2 + cos(2 pi y) = Hbar (nu = 0) against
             the exact formula of docs/mathematics.md §4, with the max error printed
  esgd       Entropy-SGD on the double well: f, the local entropy f_gamma and the averaged drift
  hbar       Hbar(x, p) of the default case (learning-rate control), as curves (esgd_hbar.png)
  value_eps  V^eps(T, x, 0) -> V(T, x) for the default case (hjbsolve run; esgd_value_eps.png)
  lq_grid    grid convergence of the effective (eps = 0) solver against the Riccati solution
  lq_eps     V^eps -> V on the LQ family: |V^eps - V| (eps-rate, fitted) and the discretisation error
             |V^eps_h - V^eps| from the Riccati solution, which must be >= 10x smaller at every eps (long)
  esgd_eps   the eps-rate for the controlled Entropy-SGD double well (no closed form): |V^eps - V|
             against the discretisation error estimated by refining the grid (long)
Intermediate files go to results/figures/ (studies resume from their run files there).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
WORK = ROOT / "results" / "figures"


def _case(name, overrides=()):
    from hjbsolve.case import load_case
    return load_case(ROOT / "cases" / f"{name}.toml", list(overrides))


def fig_cos():
    from scipy import integrate, optimize

    from hjbsolve import store
    from hjbsolve.plot import plot_file
    from hjbsolve.runner import run
    case = _case("periodic_cos", ["grid.y.n=200", "grid.P.n=121"])
    res = run(case)
    g = res.to_group()
    P = g.coords["P"].data
    V = lambda y: np.cos(2 * np.pi * y)
    P0 = 4 / np.pi

    def exact(p):
        if abs(p) <= P0:
            return 1.0
        F = lambda H: integrate.quad(lambda y: np.sqrt(2 * (H - V(y))), 0, 1, epsabs=1e-14, limit=200)[0] - abs(p)
        return optimize.brentq(F, 1.0, 1.0 + p * p, xtol=1e-15)
    ex = np.array([exact(p) for p in P])
    g.variables["hbar_exact"] = store.Variable(ex, ("P",), {"long_name": "exact Hbar(P) (docs/mathematics.md §4)"})
    path = WORK / "periodic_cos.h5"
    store.write(path, g)
    plot_file(path, "hbar", DOCS / "periodic_cos_hbar.png")
    err = np.abs(g.variables["hbar"].data - ex).max()
    text = f"periodic cos cell problem, nu = 0, N = 200, {len(P)} P values in [-3, 3]: max |Hbar_h - Hbar| = {err:.2e}"
    print(text)
    return text


def _study(case, vary, name, reference="auto"):
    from hjbsolve import store
    from hjbsolve.plot import plot_file
    from hjbsolve.study import run_study
    res = run_study(case, vary, str(WORK / f"{name}_runs"), resume=True, reference=reference,
                    window=case.study["window"])
    path = WORK / f"{name}.h5"
    store.write(path, res.to_group(case.text))
    plot_file(path, "convergence", DOCS / f"{name}.png")
    table = res.table()
    (DOCS / f"{name}.txt").write_text(table + "\n")
    print(f"--- {name}: {' '.join(vary)}\n{table}")
    return res


def fig_lq_eps():
    # error model of the V^eps scheme (tests/test_value_lq.py): ~0.32 dt + 0.15 dx^2/dt + O(dy^2):
    # dx = dt = 0.0025, and a y box of +-5 standard deviations beyond the means (dy = 0.05)
    case = _case("lq", ["grid.x.box=[-2.5, 2.5]", "grid.x.n=2001", "grid.y.box=[-7.5, 7.5]", "grid.y.n=301",
                        "time.dt=0.0025", "run.output_times=[1.0]"])
    res = _study(case, ["eps=1,0.3,0.1,0.03"], "lq_eps_rate")
    ratio = res.err_max / res.disc_max
    print("ratio |V^eps - V| / discretisation error:", np.round(ratio, 1))
    return res


def fig_lq_grid():
    case = _case("lq", ["run.eps=[0.0]", "grid.x.n=61", "grid.y.n=61", "time.dt=0.05", "run.output_times=[1.0]"])
    return _study(case, ["grid=1,2,4,8"], "lq_grid_convergence")


def fig_esgd():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.integrate import cumulative_trapezoid

    from hjbsolve.models import build_model
    from hjbsolve.runner import run_cell
    case = _case("entropy_sgd_double_well", ["model.control=\"none\"", "grid.x.n=401", "grid.y.n=401"])
    res = run_cell(case)
    c = res.cell
    x = c.xgrid.axes[0]
    model = build_model(case)
    f = model.exact["loss"].f(x[:, None])
    grad_fg = -c.abar[:, 0]
    fg = cumulative_trapezoid(grad_fg, x, initial=0.0)
    fg += f[len(x) // 2] - fg[len(x) // 2]   # f_gamma defined up to a constant: match f at x = 0
    gamma, beta = case.model["gamma"], case.model["beta"]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True, constrained_layout=True)
    a1.plot(x, f, label="loss f(x) = x^4/4 - x^2/2")
    a1.plot(x, fg, "--", label=f"local entropy f_gamma (gamma = {gamma:g}, beta = {beta:g}), shifted")
    a1.set_ylabel("f, f_gamma")
    a1.legend(fontsize=9)
    a1.set_ylim(-0.6, 1.5)
    a2.plot(x, -model.exact["loss"].grad(x[:, None])[:, 0], label="-grad f (gradient descent)")
    a2.plot(x, c.abar[:, 0], "--", label="abar = -(x - <y>_x)/gamma = -grad f_gamma")
    a2.set_xlabel("x (slow state)")
    a2.set_ylabel("drift")
    a2.set_ylim(-3, 3)
    a2.legend(fontsize=9)
    a1.set_title("Entropy-SGD, double well: loss, local entropy and averaged drift")
    fig.savefig(DOCS / "esgd_double_well.png", dpi=200)
    plt.close(fig)
    print("wrote docs/esgd_double_well.png")


def fig_esgd_eps():
    """The eps-rate with a control and no closed form: |V^eps - V| on a grid, and the discretisation
    error estimated by the change when the grid and dt are refined by 2."""
    case = _case("entropy_sgd_double_well", ["grid.x.n=201", "grid.y.n=201", "time.dt=0.01",
                                             "run.output_times=[1.0]"])
    coarse = _study(case, ["eps=0.3,0.1,0.03,0.01"], "esgd_eps_rate")
    fine_case = _case("entropy_sgd_double_well", ["grid.x.n=401", "grid.y.n=401", "time.dt=0.005",
                                                  "run.output_times=[1.0]"])
    fine = _study(fine_case, ["eps=0.3,0.1,0.03,0.01"], "esgd_eps_rate_fine")
    change = np.abs(coarse.err_max - fine.err_max)
    print("esgd: |V^eps - V| (fine grid):", np.round(fine.err_max, 5),
          " change under refinement (disc. error estimate):", np.round(change, 5))


_RUNS: dict = {}


def _default_run():
    """The default case, run once per invocation (cell stage, V^eps for eps = 0.1 and 0.01, V), saved in
    results/figures/."""
    from hjbsolve.runner import run
    if "default" not in _RUNS:
        path = WORK / "entropy_sgd_double_well.h5"
        run(_case("entropy_sgd_double_well")).save(str(path))
        _RUNS["default"] = path
    return _RUNS["default"]


def fig_hbar():
    from hjbsolve.plot import plot_file
    plot_file(_default_run(), "hbar", DOCS / "esgd_hbar.png")
    print("wrote docs/esgd_hbar.png")


def fig_value_eps():
    from hjbsolve import store
    from hjbsolve.plot import plot_file
    path = _default_run()
    plot_file(path, "value_eps", DOCS / "esgd_value_eps.png")
    root = store.read(path)
    V0 = root.groups["eps_0"].variables["V"].data[-1]
    for eps in (0.1, 0.01):
        g = root.groups[f"eps_{eps}"]
        y = g.coords["y"].data
        gap = g.variables["V"].data[-1][:, int(np.argmin(np.abs(y)))] - V0
        print(f"eps = {eps}: V^eps - V at y = 0: min {gap.min():.3f} (the ridge), max {gap.max():.3f}")
    print("wrote docs/esgd_value_eps.png")


FIGURES = {"cos": fig_cos, "esgd": fig_esgd, "hbar": fig_hbar, "value_eps": fig_value_eps, "lq_grid": fig_lq_grid,
           "lq_eps": fig_lq_eps, "esgd_eps": fig_esgd_eps}


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="make_figures.py", description=__doc__.split("\n\n")[0],
                                 epilog="\n".join(__doc__.split("\n\n")[2:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("figures", nargs="*", metavar="FIGURE", help=f"one of {', '.join(FIGURES)} (default: all)")
    args = ap.parse_args(argv)
    unknown = [n for n in args.figures if n not in FIGURES]
    if unknown:
        ap.error(f"unknown figure {unknown[0]!r}: one of {', '.join(FIGURES)}")
    DOCS.mkdir(exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    for n in args.figures or list(FIGURES):
        FIGURES[n]()


if __name__ == "__main__":
    main(sys.argv[1:])
