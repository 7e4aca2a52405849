"""Metrics: conventions (matching, orientation, sign of risk) checked against hand numbers."""

from itertools import permutations

import numpy as np
import pytest

from dgc_cli import metrics


def brute_force_accuracy(y_true, y_pred, k):
    return max(np.mean(np.asarray(p)[y_pred] == y_true) for p in permutations(range(k)))


def test_cluster_accuracy_is_one_for_permuted_labels():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([2, 2, 0, 0, 1, 1, 1])
    assert metrics.cluster_accuracy(y_true, y_pred) == 1.0
    assert metrics.cluster_mapping(y_true, y_pred) == {2: 0, 0: 1, 1: 2}
    assert metrics.nmi(y_true, y_pred) == pytest.approx(1.0)
    assert metrics.ari(y_true, y_pred) == pytest.approx(1.0)


@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize("seed", range(5))
def test_cluster_accuracy_matches_brute_force(k, seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, 40)
    y_pred = np.where(rng.random(40) < 0.6, (y_true + 1) % k, rng.integers(0, k, 40))
    expected = brute_force_accuracy(y_true, y_pred, k)
    assert metrics.cluster_accuracy(y_true, y_pred) == pytest.approx(expected)
    assert metrics.purity(y_true, y_pred) >= metrics.cluster_accuracy(y_true, y_pred)


def test_string_labels_and_more_clusters_than_classes():
    y_true = np.array(["cat"] * 4 + ["dog"] * 4)
    y_pred = np.array([0, 0, 1, 1, 2, 2, 3, 3])  # each class split in two clusters
    assert metrics.cluster_accuracy(y_true, y_pred) == 0.5
    assert metrics.purity(y_true, y_pred) == 1.0
    mapping = metrics.cluster_mapping(y_true, y_pred)
    assert len(mapping) == 2 and sorted(mapping.values()) == ["cat", "dog"]
    assert {mapping[k] for k in mapping} <= {"cat", "dog"}


def test_confusion_rows_are_predicted_clusters():
    y_true = ["2", "2", "7", "7B"]
    y_pred = [1, 0, 0, 0]
    matrix, rows, cols = metrics.confusion(y_true, y_pred)
    assert rows == [0, 1] and cols == ["2", "7", "7B"]
    np.testing.assert_array_equal(matrix, [[1, 1, 1], [1, 0, 0]])


def test_prediction_metrics():
    assert metrics.rmse([0.0, 0.0], [3.0, 4.0]) == pytest.approx(np.sqrt(12.5))
    assert metrics.r2([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    assert metrics.classification_accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75
    proba = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]
    assert metrics.classification_accuracy([0, 1, 1], proba) == pytest.approx(2 / 3)


def test_c_index_sign_convention():
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    event = np.ones(5, int)
    assert metrics.c_index(time, event, risk=-time) == 1.0  # higher risk = earlier event
    assert metrics.c_index(time, event, risk=time) == 0.0


def test_logrank_separates_different_groups_only():
    rng = np.random.default_rng(0)
    short, long = rng.exponential(1.0, 200), rng.exponential(20.0, 200)
    time = np.concatenate([short, long])
    groups = np.repeat([0, 1], 200)
    result = metrics.logrank(time, np.ones(400, int), groups)
    assert result.p_value < 1e-20 and result.degrees_of_freedom == 1
    same = metrics.logrank(np.tile(short, 2), np.ones(400, int), groups)
    assert same.p_value > 0.99 and same.test_statistic == pytest.approx(0.0, abs=1e-9)


def test_logrank_with_one_group_is_nan():
    result = metrics.logrank([1.0, 2.0, 3.0], [1, 0, 1], [4, 4, 4])
    assert np.isnan(result.p_value) and np.isnan(result.test_statistic)


def test_integrated_brier_perfect_and_constant_predictions():
    rng = np.random.default_rng(0)
    time = rng.exponential(1.0, 300)
    event = np.ones(300, int)
    times = np.linspace(0.05, 2.0, 40)
    perfect = (time[:, None] > times[None, :]).astype(float)
    ibs = metrics.integrated_brier_score(time, event, time, event, perfect, times)
    assert ibs == pytest.approx(0.0, abs=1e-12)
    half = np.full_like(perfect, 0.5)
    ibs = metrics.integrated_brier_score(time, event, time, event, half, times)
    assert ibs == pytest.approx(0.25)


def test_integrated_brier_matches_hand_calculation_with_censoring():
    # Censoring KM on the training rows: one censoring at t=2 with 3 at risk, so G = 1 before
    # 2 and 2/3 from 2 on. At t=1 every test row is at risk: BS = (0.2^2+0.1^2+0.3^2)/3.
    # At t=3: row 0 died at 1.5 (G=1): 0.2^2; row 1 censored at 2.5: 0; row 2 alive:
    # 0.4^2 / (2/3). BS(3) = (0.04 + 0.24)/3. IBS = mean of the two (trapezoid over [1, 3]).
    surv = np.array([[0.8, 0.2], [0.9, 0.5], [0.7, 0.6]])
    ibs = metrics.integrated_brier_score(
        [1.0, 2.0, 3.0, 4.0], [1, 0, 1, 1], [1.5, 2.5, 3.5], [1, 0, 1], surv, [1.0, 3.0]
    )
    assert ibs == pytest.approx((0.14 / 3 + 0.28 / 3) / 2)
