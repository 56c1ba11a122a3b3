"""Loss library for the Entropy-SGD family: f(y) and grad f(y), vectorised over leading axes.

Each loss takes ``y`` of shape ``(..., d)``. The Gaussian mixture has the exact local entropy
``f_gamma`` and replica mean ``<y>_x`` in closed form (docs/mathematics.md §4); the quadratic loss too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TWO_PI = 2.0 * np.pi


def _logsumexp(z: np.ndarray, axis: int = -1) -> np.ndarray:
    zmax = np.max(z, axis=axis, keepdims=True)
    zmax = np.where(np.isfinite(zmax), zmax, 0.0)
    return np.log(np.sum(np.exp(z - zmax), axis=axis)) + np.squeeze(zmax, axis=axis)


@dataclass(frozen=True)
class Quadratic:
    """f(y) = a |y|^2 / 2."""

    a: float = 1.0

    def f(self, y):
        return 0.5 * self.a * np.sum(y * y, axis=-1)

    def grad(self, y):
        return self.a * y

    def replica_mean(self, x, gamma, beta):
        """<y>_x = x / (1 + a gamma): the mean of mu_x = N(x/(1 + a gamma), 1/(beta (a + 1/gamma)))."""
        return np.asarray(x) / (1.0 + self.a * gamma)

    def local_entropy(self, x, gamma, beta):
        d = np.shape(x)[-1]
        return self.a * np.sum(x * x, axis=-1) / (2 * (1 + self.a * gamma)) + d / (2 * beta) * np.log1p(self.a * gamma)


@dataclass(frozen=True)
class DoubleWell:
    """f(y) = sum_i (y_i^4/4 - y_i^2/2): minima at y_i = ±1."""

    def f(self, y):
        return np.sum(0.25 * y**4 - 0.5 * y**2, axis=-1)

    def grad(self, y):
        return y**3 - y


@dataclass(frozen=True)
class TiltedCosine:
    """f(y) = sum_i (1 - cos(2 pi y_i) + y_i^2 / 20): many wells under a wide bowl."""

    def f(self, y):
        return np.sum(1.0 - np.cos(TWO_PI * y) + y**2 / 20.0, axis=-1)

    def grad(self, y):
        return TWO_PI * np.sin(TWO_PI * y) + y / 10.0


@dataclass(frozen=True)
class Rastrigin:
    """Rastrigin-type loss f(y) = sum_i (y_i^2 / 2 + A (1 - cos(2 pi y_i)))."""

    A: float = 1.0

    def f(self, y):
        return np.sum(0.5 * y**2 + self.A * (1.0 - np.cos(TWO_PI * y)), axis=-1)

    def grad(self, y):
        return y + self.A * TWO_PI * np.sin(TWO_PI * y)


@dataclass(frozen=True)
class GaussianMixture:
    """exp(-beta f(y)) = sum_k w_k N(y; c_k, s_k^2 I): f = -(1/beta) log sum_k w_k N(y; c_k, s_k^2 I).

    ``weights`` (K,), ``centres`` (K, d), ``widths`` (K,) standard deviations. Needs beta (the loss is
    defined through the Gibbs weight at inverse temperature beta).
    """

    weights: tuple
    centres: tuple
    widths: tuple
    beta: float

    def _arrays(self):
        w = np.asarray(self.weights, float)
        c = np.asarray(self.centres, float)
        c = c.reshape(len(w), -1)
        s = np.asarray(self.widths, float)
        return w, c, s

    @staticmethod
    def _log_normal(y, c, var):
        # y (..., 1, d), c (K, d), var (K,) -> (..., K)
        d = c.shape[-1]
        r2 = np.sum((y - c) ** 2, axis=-1)
        return -0.5 * r2 / var - 0.5 * d * np.log(TWO_PI * var)

    def f(self, y):
        w, c, s = self._arrays()
        z = np.log(w) + self._log_normal(y[..., None, :], c, s**2)
        return -_logsumexp(z) / self.beta

    def grad(self, y):
        w, c, s = self._arrays()
        z = np.log(w) + self._log_normal(y[..., None, :], c, s**2)
        r = np.exp(z - _logsumexp(z)[..., None])                       # responsibilities (..., K)
        return np.einsum("...k,...kd->...d", r / s**2, y[..., None, :] - c) / self.beta

    def local_entropy(self, x, gamma, beta):
        """f_gamma(x) = -(1/beta) log sum_k w_k N(x; c_k, (s_k^2 + gamma/beta) I)."""
        w, c, s = self._arrays()
        z = np.log(w) + self._log_normal(np.asarray(x)[..., None, :], c, s**2 + gamma / beta)
        return -_logsumexp(z) / beta

    def replica_mean(self, x, gamma, beta):
        """<y>_x = sum_k pi_k m_k, pi_k ∝ w_k N(x; c_k, s_k^2 + gamma/beta), m_k the product-Gaussian mean."""
        w, c, s = self._arrays()
        x = np.asarray(x, float)
        z = np.log(w) + self._log_normal(x[..., None, :], c, s**2 + gamma / beta)
        pk = np.exp(z - _logsumexp(z)[..., None])
        prec = 1.0 / s**2 + beta / gamma                                  # (K,)
        mk = (c / (s**2)[:, None] + beta / gamma * x[..., None, :]) / prec[:, None]
        return np.einsum("...k,...kd->...d", pk, mk)


LOSSES = {
    "quadratic": Quadratic,
    "double_well": DoubleWell,
    "tilted_cosine": TiltedCosine,
    "rastrigin": Rastrigin,
    "gaussian_mixture": GaussianMixture,
}
