"""Evaluation metrics for clusterings and for the three task types.

Thin wrappers around scikit-learn, SciPy and lifelines (DESIGN.md, Metrics): the numbers are
theirs, this module only fixes the conventions the project relies on.

- Clustering: Hungarian accuracy (``scipy.optimize.linear_sum_assignment`` on the contingency
  matrix), purity, NMI and ARI (scikit-learn), and a confusion matrix laid out as in the paper's
  Fig. 2c/d (rows = predicted clusters, columns = true labels).
- Prediction: accuracy, RMSE and R^2 (scikit-learn); Harrell's C-index (lifelines) and the IPCW
  integrated Brier score for survival.
- Survival clusters: the multivariate log-rank test across clusters (lifelines).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from lifelines import KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from lifelines.utils import concordance_index
from scipy.integrate import trapezoid
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import (
    accuracy_score,
    adjusted_rand_score,
    mean_squared_error,
    normalized_mutual_info_score,
    r2_score,
)
from sklearn.metrics.cluster import contingency_matrix

__all__ = [
    "LogrankResult",
    "ari",
    "c_index",
    "classification_accuracy",
    "cluster_accuracy",
    "cluster_mapping",
    "confusion",
    "integrated_brier_score",
    "logrank",
    "nmi",
    "purity",
    "r2",
    "rmse",
]


# --------------------------------------------------------------------------- clustering


def confusion(y_true, y_pred):
    """Contingency table of predicted clusters against true labels.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        True labels and cluster assignments; any hashable, sortable values.

    Returns
    -------
    matrix : ndarray of shape (n_clusters, n_labels)
        ``matrix[i, j]`` counts rows in cluster ``row_labels[i]`` with label ``col_labels[j]``
        (rows = predicted clusters, columns = true labels, as in the paper's Fig. 2c/d).
    row_labels, col_labels : list
        The sorted distinct cluster ids and true labels, as Python scalars.
    """
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    matrix = contingency_matrix(y_pred, y_true)  # rows follow its first argument
    return matrix, np.unique(y_pred).tolist(), np.unique(y_true).tolist()


def _matching(y_true, y_pred):
    matrix, clusters, labels = confusion(y_true, y_pred)
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    return matrix, rows, cols, clusters, labels


def cluster_mapping(y_true, y_pred) -> dict:
    """The one-to-one cluster -> label matching that :func:`cluster_accuracy` scores.

    Clusters left unmatched (more clusters than labels) are absent from the dict.
    """
    _, rows, cols, clusters, labels = _matching(y_true, y_pred)
    return {clusters[r]: labels[c] for r, c in zip(rows, cols, strict=True)}


def cluster_accuracy(y_true, y_pred) -> float:
    """Clustering accuracy under the best one-to-one matching of clusters to labels.

    The matching maximises the matched counts of the contingency matrix (Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``). Numbers of clusters and labels may differ; rows
    of unmatched clusters or labels count as errors.

    Returns
    -------
    float
        Fraction of rows whose cluster is matched to their true label, in [0, 1].
    """
    matrix, rows, cols, _, _ = _matching(y_true, y_pred)
    return float(matrix[rows, cols].sum() / matrix.sum())


def purity(y_true, y_pred) -> float:
    """Many-to-one accuracy: each cluster votes for its majority label.

    Always at least :func:`cluster_accuracy`; meaningful when there are more clusters than labels.
    """
    matrix, _, _ = confusion(y_true, y_pred)
    return float(matrix.max(axis=1).sum() / matrix.sum())


def nmi(y_true, y_pred) -> float:
    """Normalised mutual information (``sklearn.metrics.normalized_mutual_info_score``)."""
    return float(normalized_mutual_info_score(np.ravel(y_true), np.ravel(y_pred)))


def ari(y_true, y_pred) -> float:
    """Adjusted Rand index (``sklearn.metrics.adjusted_rand_score``)."""
    return float(adjusted_rand_score(np.ravel(y_true), np.ravel(y_pred)))


# --------------------------------------------------------------------------- prediction


def classification_accuracy(y_true, y_pred) -> float:
    """Fraction of correct predictions; ``y_pred`` may be class probabilities (n, C).

    Probabilities are turned into the column index of the largest one, so ``y_true`` must then
    hold class indices ``0..C-1``.
    """
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2:
        y_pred = y_pred.argmax(axis=1)
    return float(accuracy_score(np.ravel(y_true), y_pred))


def rmse(y_true, y_pred) -> float:
    """Root mean squared error (averaged over outputs for multi-output ``y``)."""
    return float(np.sqrt(mean_squared_error(y_true, y_pred)))


def r2(y_true, y_pred) -> float:
    """Coefficient of determination (``sklearn.metrics.r2_score``)."""
    return float(r2_score(y_true, y_pred))


# --------------------------------------------------------------------------- survival


def c_index(time, event, risk) -> float:
    """Harrell's concordance index (``lifelines.utils.concordance_index``).

    Parameters
    ----------
    time : array-like of shape (n,)
        Observed times (event or censoring).
    event : array-like of shape (n,)
        1 where the event was observed, 0 where censored.
    risk : array-like of shape (n,)
        Risk score, **higher = earlier event**. lifelines expects the opposite convention
        (higher score = longer survival), so ``-risk`` is what it receives.

    Returns
    -------
    float
        1.0 when risk orders all comparable pairs correctly, 0.5 at random, 0.0 reversed.
    """
    return float(concordance_index(np.ravel(time), -np.ravel(risk), np.ravel(event)))


@dataclass(frozen=True)
class LogrankResult:
    """Outcome of the multivariate log-rank test; ``nan`` statistics when under two groups."""

    test_statistic: float
    p_value: float
    degrees_of_freedom: int


def logrank(time, event, groups) -> LogrankResult:
    """Multivariate log-rank test of equal survival across groups (e.g. clusters).

    Wraps ``lifelines.statistics.multivariate_logrank_test``. With fewer than two non-empty
    groups there is nothing to compare: the statistic and p-value are ``nan``.
    """
    groups = np.ravel(groups)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        return LogrankResult(float("nan"), float("nan"), 0)
    result = multivariate_logrank_test(np.ravel(time), groups, np.ravel(event))
    return LogrankResult(
        float(result.test_statistic), float(result.p_value), int(result.degrees_of_freedom)
    )


def integrated_brier_score(time_train, event_train, time_test, event_test, surv, times) -> float:
    """Integrated Brier score with inverse-probability-of-censoring weights (Graf et al., 1999).

    At each time t, ``BS(t) = mean_i [ S_i(t)^2 1(T_i <= t, d_i = 1) / G(T_i)
    + (1 - S_i(t))^2 1(T_i > t) / G(t) ]``, where G is the Kaplan-Meier estimate of the
    censoring survival function fitted on the training rows (times ``time_train``, "events"
    ``1 - event_train``), evaluated at ``T_i`` as scikit-survival does. Rows censored before t
    contribute 0. The score is ``trapezoid(BS, times) / (times[-1] - times[0])``.

    Parameters
    ----------
    time_train, event_train : array-like of shape (n_train,)
        Training times and event indicators, only used to estimate G.
    time_test, event_test : array-like of shape (n_test,)
        Test times and event indicators.
    surv : array-like of shape (n_test, T)
        Predicted survival probabilities ``S_i(times[j])``.
    times : array-like of shape (T,)
        Increasing evaluation times, ``T >= 2``; keep them below the largest training time so
        that G stays positive (it is floored at 1e-12 to avoid division by zero).

    Returns
    -------
    float
        0 for a perfect predictor; 0.25 for constant 0.5 predictions on uncensored data.
    """
    times = np.ravel(times).astype(float)
    time_test, event_test = np.ravel(time_test), np.ravel(event_test).astype(bool)
    surv = np.asarray(surv, dtype=float)
    censoring = KaplanMeierFitter().fit(np.ravel(time_train), 1 - np.ravel(event_train))
    g_at_t = np.clip(censoring.predict(times).to_numpy(), 1e-12, None)
    g_at_ti = np.clip(censoring.predict(time_test).to_numpy(), 1e-12, None)
    had_event = (time_test[:, None] <= times[None, :]) & event_test[:, None]
    still_at_risk = time_test[:, None] > times[None, :]
    per_row = (
        surv**2 * had_event / g_at_ti[:, None] + (1 - surv) ** 2 * still_at_risk / g_at_t[None, :]
    )
    brier = per_row.mean(axis=0)
    return float(trapezoid(brier, times) / (times[-1] - times[0]))
