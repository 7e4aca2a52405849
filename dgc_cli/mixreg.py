"""Response groups of a continuous y: a mixture of linear regressions of y on x, fitted by EM.

A categorical response names its groups; a continuous one does not. What plays the part of the
classes for the y-first initialisation (``init="ygmm"``) is the grouping of the rows by *which
function of x produces y*: the G components of a mixture of linear regressions

    p(y | x) = sum_g pi_g N(y; [x, 1] B_g, diag v_g),

with G chosen by BIC among 1..K (G = 1, no response structure, makes ygmm VaDE's start).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

MAX_FEATURES = 64  # wider x is first projected on its leading principal components
MAX_ROWS = 20_000  # the mixture is fitted on at most this many rows, then every row is assigned
RIDGE = 1e-3  # on the standardised regressors: keeps the weighted normal equations solvable
VAR_FLOOR = 1e-4  # residual variances (standardised y) never collapse on a handful of rows


@dataclass
class MixtureOfRegressions:
    log_weights: np.ndarray  # G
    coef: np.ndarray  # G x (p + 1) x q
    log_var: np.ndarray  # G x q
    log_likelihood: float  # mean log p(y|x) over the fitted rows
    bic: float

    @property
    def n_components(self) -> int:
        return len(self.log_weights)

    def log_joint(self, xa: np.ndarray, y: np.ndarray) -> np.ndarray:
        """log pi_g + log N(y; xa B_g, diag v_g): n x G."""
        mean = np.einsum("np,gpq->ngq", xa, self.coef)
        var = np.exp(self.log_var)
        return self.log_weights - 0.5 * (np.log(2 * np.pi * var).sum(-1)
                                         + ((y[:, None, :] - mean) ** 2 / var).sum(-1))


def _design(x: np.ndarray, y: np.ndarray, x_basis=None):
    """Standardised regressors (with an intercept column) and response."""
    x = x.reshape(len(x), -1).astype(np.float64)
    y = y.reshape(len(y), -1).astype(np.float64)
    if x_basis is None:
        mean, scale = x.mean(0), x.std(0)
        scale[scale == 0] = 1.0
        xs = (x - mean) / scale
        components = None
        if xs.shape[1] > MAX_FEATURES:
            _, _, vt = np.linalg.svd(xs[:MAX_ROWS], full_matrices=False)
            components = vt[:MAX_FEATURES].T
        y_mean, y_scale = y.mean(0), y.std(0)
        y_scale[y_scale == 0] = 1.0
        x_basis = (mean, scale, components, y_mean, y_scale)
    mean, scale, components, y_mean, y_scale = x_basis
    xs = (x - mean) / scale
    if components is not None:
        xs = xs @ components
    return np.c_[xs, np.ones(len(xs))], (y - y_mean) / y_scale, x_basis


def fit_mixture(xa: np.ndarray, y: np.ndarray, G: int, seed: int, max_iter: int = 200,
                tol: float = 1e-6) -> MixtureOfRegressions:
    """EM from random responsibilities (Dirichlet(1) per row)."""
    n, p1 = xa.shape
    resp = np.random.default_rng(seed).dirichlet(np.ones(G), n)
    previous = -np.inf
    for _ in range(max_iter):
        nk = resp.sum(0)  # M step: weighted ridge regressions
        weighted = [xa.T * resp[:, g] for g in range(G)]  # (p+1) x n each
        gram = np.stack([w @ xa for w in weighted]) + RIDGE * n / G * np.eye(p1)
        coef = np.linalg.solve(gram, np.stack([w @ y for w in weighted]))
        res2 = (y[:, None, :] - np.einsum("np,gpq->ngq", xa, coef)) ** 2
        var = np.maximum(np.einsum("ng,ngq->gq", resp, res2) / np.maximum(nk, 1e-12)[:, None],
                         VAR_FLOOR)
        model = MixtureOfRegressions(np.log(np.maximum(nk, 1e-12) / n), coef, np.log(var),
                                     0.0, 0.0)
        log_joint = model.log_joint(xa, y)  # E step
        log_p_y = logsumexp(log_joint, axis=1)
        resp = np.exp(log_joint - log_p_y[:, None])
        current = float(log_p_y.mean())
        if current - previous < tol:
            break
        previous = current
    q = y.shape[1]
    n_params = G * (p1 * q + q) + G - 1
    model.log_likelihood = current
    model.bic = float(-2 * current * n + n_params * np.log(n))
    return model


@dataclass
class ResponseGroups:
    """A fitted mixture of regressions with the standardisation it was fitted in."""

    mixture: MixtureOfRegressions
    basis: tuple

    def assign(self, x: np.ndarray, y: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """The most probable component of every row: n group codes (in chunks of rows, so
        memory stays near one chunk's float64 copy)."""
        codes = np.empty(len(x), dtype=np.int64)
        for i in range(0, len(x), chunk):
            xa, ys, _ = _design(x[i:i + chunk], y[i:i + chunk], self.basis)
            codes[i:i + chunk] = self.mixture.log_joint(xa, ys).argmax(1)
        return codes


def fit_response_groups(x: np.ndarray, y: np.ndarray, max_groups: int, seed: int,
                        n_starts: int = 4) -> ResponseGroups:
    """G <= max_groups components by BIC, each G the best of ``n_starts`` EM runs."""
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(x))[:MAX_ROWS] if len(x) > MAX_ROWS else slice(None)
    xa, ys, basis = _design(x[rows], y[rows])
    best = None
    for G in range(1, max_groups + 1):
        fits = [fit_mixture(xa, ys, G, seed + s) for s in range(1 if G == 1 else n_starts)]
        model = max(fits, key=lambda m: m.log_likelihood)
        if best is None or model.bic < best.bic:
            best = model
    return ResponseGroups(best, basis)
