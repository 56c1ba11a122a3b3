"""The Entropy-SGD case library (hjbsolve/cases/esgd_*.toml): which minimum does each dynamics reach?

For every uncontrolled case and a few starting points (x0, and the replica y0 = x0) this compares

    GD          dx = -grad f(x) ds                                     (plain gradient descent)
    Langevin    dx = -grad f(x) ds + sqrt(2/beta) dW                   (SGLD at the case's temperature)
    ESGD eps    the two-scale system of docs/mathematics.md §1 (hjbsolve.simulate, Euler-Maruyama, 'auto' fast resolution)
    limit       the limit flow dx = -grad f_gamma(x) ds = abar(x) ds   (the effective system, eps = 0)

over the case's horizon T, and classifies each end point by the minimum of f that gradient descent from it
reaches. It prints one table per case (the share of paths ending in each minimum) and saves the figure
docs/esgd_minima.png (matplotlib, Agg). Then, for the controlled cases, it simulates the optimal feedback of
the value stage against the uncontrolled dynamics (u = u_ref) and prints the expected costs with 95 %
confidence intervals and the value gained.

    python scripts/entropy_sgd_library.py                 # default run: a few minutes on 2 cores
    python scripts/entropy_sgd_library.py --quick         # fewer paths, eps = 0.1 only (a smoke run)
    python scripts/entropy_sgd_library.py --cases esgd_mixture_1d --paths 400
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import numpy as np

from hjbsolve import simulate as S
from hjbsolve.case import load_case
from hjbsolve.models import build_model

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "hjbsolve" / "cases"

UNCONTROLLED = {
    "esgd_double_well_1d": [[-1.8], [-0.3], [0.2], [1.8]],
    "esgd_tilted_cosine_1d": [[-2.3], [-1.3], [1.6], [2.6]],
    "esgd_mixture_1d": [[-1.4], [-0.9], [-0.5], [0.6]],
    "esgd_double_well_2d": [[-0.3, 0.2], [0.2, 1.6], [1.5, -0.1]],
    "esgd_mixture_2d": [[-1.6, -1.4], [-0.3, -0.3], [-0.2, -0.35], [0.8, 0.5]],
}
CONTROLLED = {
    "esgd_mixture_steering_1d": [[-0.3], [0.4]],
    "esgd_double_well_learning_rate_1d": [[1.8], [0.3]],
    "esgd_mixture_steering_2d": [[-0.3, -0.3], [0.5, 0.0]],
}


# ---------------------------------------------------------------------------------------------- minima of f

def descend(loss, x, T=60.0, ds=0.002):
    """Gradient descent on f from the points x (P, d), vectorised."""
    x = np.array(x, float)
    for _ in range(int(T / ds)):
        x -= ds * loss.grad(x)
    return x


def minima_of(loss, box, d):
    """Local minima of f in the box: end points of gradient descent from a grid of starts, merged."""
    axes = [np.linspace(lo, hi, 41 if d == 1 else 15) + 0.0123 for lo, hi in box]   # off the symmetry axes
    starts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d)
    ends = descend(loss, starts)
    found = []
    for e in ends:
        if all(np.linalg.norm(e - m) > 0.05 for m in found):
            found.append(e)
    # keep the minima: a small kick does not send gradient descent elsewhere (drops saddles and maxima)
    rng = np.random.default_rng(0)
    found = [m for m in found if np.all(np.linalg.norm(descend(loss, m + 1e-3 * rng.standard_normal((4, d)), T=20.0)
                                                       - m, axis=1) < 0.05)]
    return np.array(sorted(found, key=lambda v: tuple(v)))


def classify(loss, minima, x):
    ends = descend(loss, np.atleast_2d(x), T=30.0, ds=0.004)
    return np.argmin(np.linalg.norm(ends[:, None, :] - minima[None], axis=-1), axis=1)


def label(m):
    return "(" + ", ".join(f"{v:+.2f}" for v in m) + ")" if len(m) > 1 else f"{m[0]:+.2f}"


# ---------------------------------------------------------------------------------------------- dynamics

def gradient_descent(loss, x0, T, ds=0.002):
    return descend(loss, x0, T, ds)


def langevin(loss, x0, T, beta, n, seed, ds=0.002):
    rng = np.random.default_rng(seed)
    x = np.repeat(np.atleast_2d(x0), n, axis=0).astype(float)
    sq = math.sqrt(2 * ds / beta)
    for _ in range(int(T / ds)):
        x += -ds * loss.grad(x) + sq * rng.standard_normal(x.shape)
    return x


def two_scale(case, model, eps, starts, n, seed):
    """End points of the two-scale system (n paths per start, y0 = x0) and the Simulation."""
    dyn = S.prepare(case, eps, model)
    x0 = np.repeat(np.asarray(starts, float), n, axis=0)
    res = S.resolution_for(dyn) if eps > 0 else 10.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", S.FastStepWarning)
        sim = S.simulate(dyn, x0, x0 if eps > 0 else None, n_paths=len(x0), seed=seed, n_record=51, n_keep=len(x0),
                         fast_resolution=res)
    return sim.X[:, -1], sim


# ---------------------------------------------------------------------------------------------- part A

def minima_study(name, n_paths, eps_list, seed, figure_data):
    case = load_case(CASES / f"{name}.toml")
    model = build_model(case)
    loss = model.exact["loss"]
    p = case.model
    beta, gamma, d, T = float(p["beta"]), float(p["gamma"]), int(p["dim"]), float(case.time["T"])
    box = case.grid["x"]["box"]
    box = [box] * d if not isinstance(box[0], list) else box
    mins = minima_of(loss, box, d)
    starts = np.asarray(UNCONTROLLED[name], float)
    results = {}
    timings = {}
    t0 = time.perf_counter()
    results["GD"] = gradient_descent(loss, starts, T)[:, None, :]
    timings["GD"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    results["Langevin"] = np.stack([langevin(loss, s, T, beta, n_paths, seed + i) for i, s in enumerate(starts)])
    timings["Langevin"] = time.perf_counter() - t0
    sims = {}
    for eps in eps_list:
        t0 = time.perf_counter()
        ends, sim = two_scale(case, model, eps, starts, n_paths, seed)
        results[f"ESGD eps={eps:g}"] = ends.reshape(len(starts), n_paths, d)
        sims[eps] = sim
        timings[f"ESGD eps={eps:g}"] = time.perf_counter() - t0
        timings[f"ESGD eps={eps:g} ds"] = sim.ds
    t0 = time.perf_counter()
    ends, sim = two_scale(case, model, 0.0, starts, 1, seed)
    results["limit -grad f_gamma"] = ends.reshape(len(starts), 1, d)
    sims[0.0] = sim
    timings["limit"] = time.perf_counter() - t0

    print(f"\n=== {name} (d = {d}, gamma = {gamma:g}, beta = {beta:g}, T = {T:g}) ===")
    print("minima of f: " + ", ".join(f"[{i}] {label(m)} f = {float(loss.f(m[None])[0]):+.3f}"
                                      for i, m in enumerate(mins)))
    methods = list(results)
    width = max(16, *(len(m) for m in methods))
    head = f"{'start':>16} " + " ".join(f"{m:>{width}}" for m in methods)
    print(head)
    table = {}
    for i, s in enumerate(starts):
        cells = []
        for mth in methods:
            cls = classify(loss, mins, results[mth][i])
            share = np.bincount(cls, minlength=len(mins)) / len(cls)
            table[(i, mth)] = share
            txt = " ".join(f"[{k}]{100 * v:.0f}%" for k, v in enumerate(share) if v > 0)
            cells.append(f"{txt:>{width}}")
        print(f"{label(s):>16} " + " ".join(cells))
    print("time: " + ", ".join(f"{k} {v:.2g}" + ("" if k.endswith("ds") else " s") for k, v in timings.items()))
    figure_data[name] = dict(case=case, model=model, loss=loss, mins=mins, starts=starts, results=results,
                             sims=sims, d=d)
    return table


def f_gamma_curve(data, x):
    """f_gamma on the x grid of the limit simulation's tables: exact for the mixture, else -int abar."""
    loss, case = data["loss"], data["case"]
    p = case.model
    if hasattr(loss, "local_entropy"):
        return loss.local_entropy(x[:, None], float(p["gamma"]), float(p["beta"]))
    model = data["model"]
    xg, yg = S.case_grids(case, model)
    mu = S._mu_cache(model, xg, yg)
    xs, ys = xg.flat_points(), yg.flat_points()
    abar = -(xs[:, 0] - mu @ ys[:, 0]) / float(p["gamma"])          # -grad f_gamma = -(x - <y>_x) / gamma
    fg = -np.concatenate([[0.0], np.cumsum(0.5 * (abar[1:] + abar[:-1]) * np.diff(xs[:, 0]))])
    return np.interp(x, xs[:, 0], fg)


def make_figure(figure_data, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(figure_data)
    ones = [nm for nm in names if figure_data[nm]["d"] == 1]
    twos = [nm for nm in names if figure_data[nm]["d"] == 2]
    ncol = max(len(ones), len(twos), 1)
    nrow = int(bool(ones)) + int(bool(twos))
    fig, grid = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 4.8 * nrow), squeeze=False)
    pairs = [(grid[0, i], nm) for i, nm in enumerate(ones)] + [(grid[nrow - 1, i], nm) for i, nm in enumerate(twos)]
    used = {id(ax) for ax, _ in pairs}
    for ax in grid.ravel():
        if id(ax) not in used:
            ax.axis("off")
    colours = {"GD": "k", "Langevin": "tab:orange", "limit -grad f_gamma": "tab:red"}
    esgd_c = ["tab:blue", "tab:cyan", "tab:purple"]
    for ax, name in pairs:
        data = figure_data[name]
        loss, res, starts, d = data["loss"], data["results"], data["starts"], data["d"]
        methods = list(res)
        cmap = {}
        j = 0
        for mth in methods:
            if mth in colours:
                cmap[mth] = colours[mth]
            else:
                cmap[mth] = esgd_c[j % len(esgd_c)]
                j += 1
        if d == 1:
            box = data["case"].grid["x"]["box"]
            x = np.linspace(box[0], box[1], 600)
            f = loss.f(x[:, None])
            fg = f_gamma_curve(data, x)
            fg = fg - fg.min() + f.min()
            ax.plot(x, f, "k-", lw=1.5, label="f")
            ax.plot(x, fg, "k--", lw=1.2, label="f_gamma (shifted)")
            lo = f.min()
            hi = min(f.max(), float(np.quantile(f, 0.8)))
            span = hi - lo
            for k, mth in enumerate(methods):
                yrow = lo - (0.12 + 0.1 * k) * span
                for i in range(len(starts)):
                    e = res[mth][i][:60, 0]
                    ax.scatter(e, np.full(len(e), yrow) + 0.02 * span * np.random.default_rng(i).standard_normal(len(e)),
                               s=6, color=cmap[mth], alpha=0.5)
                ax.text(x[0], yrow, mth, fontsize=7, va="center", ha="left", color=cmap[mth])
            for s in starts:
                ax.axvline(s[0], color="0.7", lw=0.8, ls=":")
            ax.set_ylim(lo - (0.2 + 0.1 * len(methods)) * span, hi + 0.05 * span)
            ax.set_xlabel("x")
        else:
            box = data["case"].grid["x"]["box"]
            box = [box] * 2 if not isinstance(box[0], list) else box
            g1, g2 = np.meshgrid(np.linspace(*box[0], 200), np.linspace(*box[1], 200), indexing="ij")
            fv = loss.f(np.stack([g1, g2], -1))
            ax.contour(g1, g2, fv, levels=25, colors="0.6", linewidths=0.6)
            for mth in methods:
                for i in range(len(starts)):
                    e = res[mth][i][:40]
                    ax.scatter(e[:, 0], e[:, 1], s=6, color=cmap[mth], alpha=0.5,
                               label=mth if i == 0 else None)
            ax.scatter(starts[:, 0], starts[:, 1], marker="x", color="k", s=40, label="starts")
            ax.set_xlabel("x1")
            ax.set_ylabel("x2")
            ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=6, loc="upper right")
    fig.suptitle("Where each dynamics ends: GD, Langevin, Entropy-SGD (two-scale) and the limit flow -grad f_gamma",
                 fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nfigure: {path}")


# ---------------------------------------------------------------------------------------------- part B

def control_study(name, n_paths, seed):
    case = load_case(CASES / f"{name}.toml")
    model = build_model(case)
    print(f"\n=== {name}: optimal feedback against u = u_ref (T = {case.time['T']:g}) ===")
    print(f"{'x0':>14} {'eps':>6} {'V (PDE)':>9} {'J optimal (95% CI)':>24} {'J u_ref (95% CI)':>24} "
          f"{'value gained (95% CI)':>24} {'E X_T opt':>14} {'E X_T ref':>14} {'u(0) opt':>10}")
    for eps in case.run["eps"]:
        t0 = time.perf_counter()
        opt = S.prepare(case, eps, model)
        ref = S.prepare(case, eps, model, feedback="reference")
        t1 = time.perf_counter()
        for x0 in CONTROLLED[name]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", S.FastStepWarning)
                res = S.resolution_for(opt) if eps > 0 else 10.0
                a = S.simulate(opt, x0, None, n_paths=n_paths, seed=seed, fast_resolution=res)
                b = S.simulate(ref, x0, None, n_paths=n_paths, seed=seed + 1, fast_resolution=res)
            Ja, sa = a.total_cost()
            Jb, sb = b.total_cost()
            gain, sg = Jb - Ja, math.hypot(sa, sb)
            v = f"{a.value_pde:9.4f}" if a.value_pde is not None else f"{'-':>9}"

            def ci(se):
                return f"{1.96 * se:<11.4f}" if se > 1e-12 else f"{'(determ.)':<11}"
            u0 = f"{a.U[:, 0].mean(axis=0)[0]:10.3f}" if (a.U.size and eps > 0) else f"{'alpha(y)':>10}"
            print(f"{label(np.asarray(x0)):>14} {eps:6.3g} {v} {Ja:10.4f} ± {ci(sa)} {Jb:10.4f} ± {ci(sb)} "
                  f"{gain:10.4f} ± {ci(sg)} {label(a.X[:, -1].mean(axis=0)):>14} {label(b.X[:, -1].mean(axis=0)):>14} {u0}")
        print(f"{'':>14} (feedback tables and value function with dense output: {t1 - t0:.1f} s; "
              f"V (PDE) = the value stage's V^eps(T, x0, <y>_x0) or V(T, x0))")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", type=int, default=100, help="paths per start point (default 100)")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.01], help="eps of the two-scale runs")
    ap.add_argument("--cases", nargs="+", default=None, help="case names (default: all)")
    ap.add_argument("--control-paths", type=int, default=4000, help="paths for the controlled comparisons")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="50 paths, eps = 0.1, 1000 control paths")
    ap.add_argument("--figure", default=str(ROOT / "docs" / "esgd_minima.png"))
    ap.add_argument("--no-control", action="store_true", help="skip the controlled cases")
    args = ap.parse_args(argv)
    if args.quick:
        args.paths, args.eps, args.control_paths = 50, [0.1], 1000
    t0 = time.perf_counter()
    figure_data = {}
    for name in UNCONTROLLED:
        if args.cases is None or name in args.cases:
            minima_study(name, args.paths, args.eps, args.seed, figure_data)
    if figure_data:
        make_figure(figure_data, args.figure)
    if not args.no_control:
        for name in CONTROLLED:
            if args.cases is None or name in args.cases:
                control_study(name, args.control_paths, args.seed)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
