"""Response groups of a continuous y (dgc_cli.mixreg): a mixture of linear regressions by EM."""

import numpy as np

from dgc_cli.metrics import cluster_accuracy
from dgc_cli.mixreg import fit_mixture, fit_response_groups


def regressions(n=1500, p=6, groups=2, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p))
    g = rng.integers(0, groups, n)
    w = rng.standard_normal((groups, p))
    y = np.einsum("ij,ij->i", x, w[g]) + noise * rng.standard_normal(n)
    return x, y, g


def test_recovers_the_regression_groups_and_picks_their_number_by_bic():
    x, y, g = regressions(groups=3)
    fitted = fit_response_groups(x, y, max_groups=5, seed=0)
    assert fitted.mixture.n_components == 3
    # rows where two regression lines cross are ambiguous even knowing the true lines
    assert cluster_accuracy(g, fitted.assign(x, y)) >= 0.95


def test_one_regression_gives_one_group():
    x, y, _ = regressions(groups=1)
    fitted = fit_response_groups(x, y, max_groups=4, seed=0)
    assert fitted.mixture.n_components == 1
    assert (fitted.assign(x, y) == 0).all()


def test_em_never_decreases_the_likelihood_and_matches_a_direct_evaluation():
    x, y, _ = regressions(groups=2, seed=1)
    xa = np.c_[(x - x.mean(0)) / x.std(0), np.ones(len(x))]
    ys = ((y - y.mean()) / y.std())[:, None]
    values = [fit_mixture(xa, ys, 2, seed=3, max_iter=it).log_likelihood for it in (1, 3, 10, 50)]
    # EM climbs the likelihood plus the small ridge prior, so the likelihood alone may dip by
    # a hair once converged
    assert all(b >= a - 1e-4 for a, b in zip(values, values[1:], strict=False))
    assert values[-1] > values[0] + 1.0
    model = fit_mixture(xa, ys, 2, seed=3)
    mean = xa @ model.coef  # G x n x 1
    var = np.exp(model.log_var)[:, None, :]
    dens = (np.exp(model.log_weights)[:, None]
            * np.exp(-0.5 * (ys[None] - mean) ** 2 / var).prod(-1)
            / np.sqrt(2 * np.pi * var).prod(-1)).sum(0)
    np.testing.assert_allclose(np.log(dens).mean(), model.log_likelihood, rtol=1e-6)


def test_wide_x_is_projected_and_rows_over_the_cap_are_still_assigned(monkeypatch):
    import dgc_cli.mixreg as mixreg

    monkeypatch.setattr(mixreg, "MAX_FEATURES", 4)
    monkeypatch.setattr(mixreg, "MAX_ROWS", 500)
    x, y, g = regressions(n=1200, p=8, groups=2, seed=2)
    fitted = fit_response_groups(x, y, max_groups=2, seed=0)
    codes = fitted.assign(x, y)
    assert codes.shape == (1200,) and set(codes) <= {0, 1}
