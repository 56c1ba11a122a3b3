"""Independent check of the checkerboard's homogenized metric (not a test; prints a table).

Speed c = 2 on the cells where sin(2 pi y1) sin(2 pi y2) > 0, c = 1 on the others, G = c(y)|q|.
Claim (cases/periodic_checkerboard.toml, tests/test_ergodic_fluxes.py): the travel time from 0
to a far point x is T(x) ~ phi(x) = (|x|_inf + (sqrt 2 - 1) min(|x1|, |x2|)) / 2 (octagonal
metric; the fast cells touch at their corners and the edges are travelled at the larger speed),
so that Hbar(P) = max_{phi(x) <= 1} P.x = 2 max(|P1|, |P2|, (|P1| + |P2|) / sqrt 2).
Between corner points of the checkerboard the claim is exact: T = phi (the fast cells are
closed convex squares meeting only at corners, so a path through them runs from corner to
corner along sides and diagonals); away from corners T differs from phi by O(cell size).

Check: Dijkstra (scipy.sparse.csgraph) on a lattice of spacing 1/(2M) over K x K periods with
the 16 directions (i, j), max(|i|, |j|) <= 2, gcd 1; the cost of an edge is its length times
the mean of 1/c over S points along it, c taken as its largest value within 1e-9 of the point
(a segment on a cell edge is travelled at the larger speed). Every graph path is a real path,
so the graph times are upper bounds of the true times; a path using directions other than the
axes and diagonals that beat the octagonal metric would show up as T < phi. The table prints
T and phi at the corner points (a, b)/2, 0 <= b <= a, and the Euclidean time |x|/2 at the
fast speed for comparison.

Usage: python scripts/checkerboard_metric.py [--M 6] [--K 6] [--S 16]
"""

import argparse
import math

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra


def speed(y1, y2, eps=1e-9):
    out = np.ones_like(y1)
    for s1 in (-eps, eps):
        for s2 in (-eps, eps):
            fast = np.sin(2 * np.pi * (y1 + s1)) * np.sin(2 * np.pi * (y2 + s2)) > 0
            out = np.maximum(out, np.where(fast, 2.0, 1.0))
    return out


def travel_times(M, K, S):
    n = 2 * M * K + 1  # nodes per axis, origin in the middle
    d = 1.0 / (2 * M)
    c0 = n // 2
    idx = np.arange(n * n).reshape(n, n)
    I, J = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    rows, cols, w = [], [], []
    t = (np.arange(S) + 0.5) / S
    for a in range(-2, 3):
        for b in range(-2, 3):
            if (a, b) == (0, 0) or math.gcd(a, b) != 1:
                continue
            ok = (I + a >= 0) & (I + a < n) & (J + b >= 0) & (J + b < n)
            i0, j0 = I[ok], J[ok]
            y1 = (i0 - c0)[:, None] * d + a * d * t[None, :]
            y2 = (j0 - c0)[:, None] * d + b * d * t[None, :]
            cost = math.hypot(a, b) * d * np.mean(1.0 / speed(y1, y2), axis=1)
            rows.append(idx[i0, j0])
            cols.append(idx[i0 + a, j0 + b])
            w.append(cost)
    G = coo_matrix((np.concatenate(w), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(n * n, n * n)).tocsr()
    T = dijkstra(G, indices=idx[c0, c0]).reshape(n, n)
    return T, d, c0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--M", type=int, default=6, help="lattice nodes per half cell")
    ap.add_argument("--K", type=int, default=6, help="periods per axis")
    ap.add_argument("--S", type=int, default=16, help="cost samples per edge")
    args = ap.parse_args()
    T, d, c0 = travel_times(args.M, args.K, args.S)
    R = args.K // 2 - 1  # stay inside the domain: corner points (a, b) / 2 with a = 2R
    print(f"lattice 1/{2 * args.M}, {args.K} x {args.K} periods, {T.size} nodes")
    print(f"{'x (corner)':>16} {'T (Dijkstra)':>14} {'phi (octagon)':>14} {'T - phi':>10} "
          f"{'|x|/2':>8}")
    worst = 0.0
    a = 2 * R
    for b in range(0, a + 1):
        x = np.array([a, b]) / 2.0
        i, j = a * args.M, b * args.M
        phi = 0.5 * (np.max(np.abs(x)) + (math.sqrt(2) - 1) * np.min(np.abs(x)))
        tv = T[c0 + i, c0 + j]
        worst = max(worst, abs(tv - phi))
        print(f"({x[0]:6.2f}, {x[1]:6.2f}) {tv:14.9f} {phi:14.9f} {tv - phi:10.2e} "
              f"{np.hypot(*x) / 2:8.4f}")
    print(f"max |T - phi| over the corner points = {worst:.2e} (lattice graph times are upper "
          f"bounds; a faster path through the 16 directions would give T < phi)")


if __name__ == "__main__":
    main()
