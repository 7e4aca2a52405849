"""Report statistics: per-cluster moments in one chunked pass equal the direct computation."""

import numpy as np
import pandas as pd

from dgc_cli.report import (
    LATENT_POINTS,
    cluster_moments,
    latent_rows,
    plot_latent,
    standardised_differences,
)


def direct_smd(x, labels, k):
    smd = np.zeros((k, x.shape[1]))
    for c in range(k):
        inside, rest = x[labels == c], x[labels != c]
        if len(inside) and len(rest):
            pooled = np.sqrt((inside.var(0) + rest.var(0)) / 2)
            smd[c] = (inside.mean(0) - rest.mean(0)) / pooled
    return smd


def test_chunked_moments_match_numpy_and_an_empty_cluster_gives_zeros():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((1000, 4)) * [1, 2, 3, 4] + [0, 1, -1, 5]).astype(np.float32)
    labels = rng.integers(0, 3, 1000)  # cluster 3 of 4 is empty
    counts, mean_in, var_in, mean_rest, var_rest = cluster_moments(x, labels, 4, chunk=97)
    for c in range(3):
        np.testing.assert_allclose(mean_in[c], x[labels == c].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var_in[c], x[labels == c].astype(float).var(0), rtol=1e-5)
        np.testing.assert_allclose(mean_rest[c], x[labels != c].mean(0), rtol=1e-5, atol=1e-6)
    assert counts[3] == 0 and np.isnan(mean_in[3]).all()
    smd = standardised_differences(x, labels, 4)
    np.testing.assert_allclose(smd[:3], direct_smd(x.astype(float), labels, 3), rtol=1e-4, atol=1e-6)
    assert (smd[3] == 0).all()


def test_class_mix_matches_a_crosstab_and_leaves_empty_clusters_at_zero():
    from dgc_cli.report import class_mix

    rng = np.random.default_rng(0)
    y = pd.Series(rng.choice([3, 10, 7], 500))
    labels = rng.integers(0, 3, 500)  # cluster 3 of 4 is empty
    names, shares = class_mix(y, labels, 4)
    expected = pd.crosstab(labels, y.astype(str).to_numpy(), normalize="index")
    assert names == list(expected.columns) == ["10", "3", "7"]
    np.testing.assert_allclose(shares[:3], expected.to_numpy())
    np.testing.assert_array_equal(shares[3], 0.0)


def test_the_latent_map_encodes_only_the_rows_it_draws():
    np.testing.assert_array_equal(latent_rows(10), np.arange(10))
    rows = latent_rows(3 * LATENT_POINTS)
    assert len(rows) == LATENT_POINTS and (np.diff(rows) > 0).all() and rows[-1] < 3 * LATENT_POINTS
    np.testing.assert_array_equal(rows, latent_rows(3 * LATENT_POINTS))  # seeded
    labels = np.arange(3 * LATENT_POINTS) % 3
    latent = np.random.default_rng(0).normal(size=(LATENT_POINTS, 4))
    assert plot_latent(latent, labels, 3)[:8] == b"\x89PNG\r\n\x1a\n"
