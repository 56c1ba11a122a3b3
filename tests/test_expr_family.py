"""The expr family's detection of control-affine dynamics with quadratic cost (closed-form sup)."""

import numpy as np
import pytest

from hjbsolve.models import expr_family


def build(a="-(x - y) + u", l="0.5*u**2", sigma="0", n=1, box=(-1.0, 1.0)):
    p = {"n": n, "m": 1, "params": {"k": 2.0}, "a": a, "sigma": sigma, "b": "-(y - x)" if n == 1 else "-(y - x1)",
         "tau": "1", "l": l, "g": "0", "u_box": [list(box)] * n if n > 1 else list(box), "u_ref": None}
    return expr_family.build(p, where="test")


def test_detects_affine_quadratic_and_reconstructs_the_model():
    m = build(a="-k*(x - y) + (1 + y**2)*u", l="0.75*(u - 0.5)**2 + x**2*y")
    A = m.affine
    assert A is not None and A.c == pytest.approx(1.5) and A.u_ref == pytest.approx((0.5,))
    rng = np.random.default_rng(0)
    x, y, u = rng.normal(size=(50, 1)), rng.normal(size=(50, 1)), rng.uniform(-1, 1, size=(50, 1))
    a_rec = A.a0(x, y) + np.einsum("sdk,sk->sd", A.B(x, y), u)
    l_rec = A.l0(x, y) + 0.5 * A.c * np.sum((u - np.array(A.u_ref)) ** 2, axis=-1)
    assert np.abs(m.a(x, y, u) - a_rec).max() < 1e-12
    assert np.abs(m.l(x, y, u) - l_rec).max() < 1e-12


def test_two_controls():
    m = build(a=["u1 - x1", "2*u2 + y"], l="0.5*(u1**2 + u2**2)", n=2)
    assert m.affine is not None and m.affine.c == pytest.approx(1.0)


@pytest.mark.parametrize("a,l,sigma", [
    ("u**2", "0.5*u**2", "0"),                       # not affine in u
    ("u", "u**4", "0"),                              # not quadratic
    ("u", "abs(u)", "0"),                            # not quadratic
    ("u", "0.5*u**2 + u*y", "0"),                    # u_ref depends on y
    ("u", "0.5*(1 + y**2)*u**2", "0"),               # c depends on y
    ("u", "0.5*u**2", "0.1*(1 + u)"),                # noise depends on u
    ("u", "-0.5*u**2", "0"),                         # concave cost: no interior maximiser
    ("where(u > 0.3, u, 0.3)", "0.5*u**2", "0"),     # affine only piecewise
])
def test_rejects_other_structures(a, l, sigma):
    assert build(a=a, l=l, sigma=sigma).affine is None
