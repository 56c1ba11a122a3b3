/* Row-order C kernel of hjbsolve.sl.kernels.step_tab_2d (one foot, linear extrapolation, one batch row):
 * out[i1,i2] = min_c C[c,i1,i2] + bilinear(V, (i1, i2) + disp[c,i1,i2,:]),  arg = first minimiser.
 * Written for speed: rows split over OpenMP threads, controls outside the row, a branch-free body across the
 * contiguous row (clamped cell index from a double, four gathers, running min and argmin by selects) that
 * the compiler can vectorise. Built by scripts/bench_peers.py with -O3 -march=native -fopenmp. */

void step_tab_2d_rows(const double *V, const double *C, const double *disp, int nc, int N1, int N2,
                      double *out, int *arg, int nthreads)
{
    const double hi1 = N1 - 2, hi2 = N2 - 2;
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int i1 = 0; i1 < N1; i1++) {
        double *o = out + (long)i1 * N2;
        int *ag = arg + (long)i1 * N2;
        for (int i2 = 0; i2 < N2; i2++) { o[i2] = 1.0 / 0.0; ag[i2] = 0; }
        for (int c = 0; c < nc; c++) {
            const double *Cc = C + ((long)c * N1 + i1) * N2;
            const double *Dc = disp + ((long)c * N1 + i1) * N2 * 2;
            for (int i2 = 0; i2 < N2; i2++) {
                double t1 = i1 + Dc[2 * i2], t2 = i2 + Dc[2 * i2 + 1];
                /* floor for t >= 0 (truncation), then clamped to [0, N - 2]: as hjbsolve's celli (mode 0) */
                double f1 = (double)(long)t1, f2 = (double)(long)t2;
                f1 = f1 < 0.0 ? 0.0 : (f1 > hi1 ? hi1 : f1);
                f2 = f2 < 0.0 ? 0.0 : (f2 > hi2 ? hi2 : f2);
                long b = (long)f1 * N2 + (long)f2;
                double th1 = t1 - f1, th2 = t2 - f2;
                double a = V[b] + th2 * (V[b + 1] - V[b]);
                double d = V[b + N2] + th2 * (V[b + N2 + 1] - V[b + N2]);
                double val = Cc[i2] + a + th1 * (d - a);
                int better = val < o[i2];
                o[i2] = better ? val : o[i2];
                ag[i2] = better ? c : ag[i2];
            }
        }
    }
}
