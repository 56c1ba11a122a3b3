/* Plain C reference of hjbsolve.sl.kernels.step_tab_2d (one foot, linear extrapolation, one batch row):
 * out[i1,i2] = min_c C[c,i1,i2] + bilinear(V, (i1, i2) + disp[c,i1,i2,:]),  arg = first minimiser.
 * The straightforward loop a C programmer writes (control outer, node inner); built by scripts/bench_value.py
 * with the machine's C compiler to show what a compiled loop of the same step does on this machine. */
#include <math.h>

static inline void cell(double t, int N, int *m, double *th)
{
    int k = (int)t;                       /* truncation = floor for t >= 0; t < 0 clamps to 0 below */
    if (k < 0) k = 0;
    else if (k > N - 2) k = N - 2;
    *m = k;
    *th = t - k;
}

void step_tab_2d(const double *V, const double *C, const double *disp, int nc, int N1, int N2,
                 double *out, int *arg)
{
    for (int i1 = 0; i1 < N1; i1++) {
        double *o = out + (long)i1 * N2;
        int *ag = arg + (long)i1 * N2;
        for (int i2 = 0; i2 < N2; i2++) { o[i2] = INFINITY; ag[i2] = 0; }
        for (int c = 0; c < nc; c++) {
            const double *Cc = C + ((long)c * N1 + i1) * N2;
            const double *Dc = disp + ((long)c * N1 + i1) * N2 * 2;
            for (int i2 = 0; i2 < N2; i2++) {
                int m1, m2;
                double t1, t2;
                cell(i1 + Dc[2 * i2], N1, &m1, &t1);
                cell(i2 + Dc[2 * i2 + 1], N2, &m2, &t2);
                long b = (long)m1 * N2 + m2;
                double a = V[b] + t2 * (V[b + 1] - V[b]);
                double d = V[b + N2] + t2 * (V[b + N2 + 1] - V[b + N2]);
                double val = Cc[i2] + a + t1 * (d - a);
                if (val < o[i2]) { o[i2] = val; ag[i2] = c; }
            }
        }
    }
}
