"""The methods the paper's experiments compare DGC against, with one calling convention each.

- Unsupervised clusterings (scikit-learn): K-means, a diagonal Gaussian mixture, spectral
  clustering and Ward agglomerative clustering, each fitted on training rows only and applied to
  held-out rows (``predict`` where the method has one, otherwise the label of the nearest fitted
  row, see :func:`extend_by_nearest`).
- VaDE and the paper's ablation are DGC configurations, not separate code: :func:`vade_params`
  and :func:`no_decoder_params` turn a DGC configuration into them.
- Survival: Cox proportional hazards (lifelines) on the features, optionally with a clustering's
  one-hot labels as extra covariates ("K-means + Cox"), and GBSG2 prepared as the benches use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import AgglomerativeClustering, KMeans, SpectralClustering
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils import check_random_state

#: Clustering baselines by the method names the result files use.
CLUSTERERS = ("KMeans", "GMM", "Spectral", "Agglomerative")

#: Spectral and agglomerative clustering need an n x n matrix; they are fitted on at most this many
#: training rows (a seeded random subset) and extended to the rest by the nearest fitted row.
MAX_PAIRWISE_ROWS = 3000


# --------------------------------------------------------------------------- DGC variants


def vade_params(params: dict) -> dict:
    """VaDE as a DGC configuration: y is ignored in training (q(c|x) = p(c|z)), the untrained
    task head is kept out of the cluster posterior (no entropy term, so Eq. 9 is p(c|z)), and the
    mixture starts from VaDE's own recipe, a Gaussian mixture on the pre-trained latent means
    (one run: restarts chosen by how well they explain y mean nothing without y)."""
    return {**params, "use_y": False, "entropy_reg": False, "init": "gmm", "n_init": 1,
            "selection": "auto"}


def no_decoder_params(params: dict) -> dict:
    """The paper's ablation (Sec. 5.1): the decoder and its loss terms removed."""
    return {**params, "use_decoder": False}


# --------------------------------------------------------------------------- clusterings


def extend_by_nearest(x_fit: np.ndarray, labels: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    """Label each new row with the cluster of its nearest fitted row (1-NN, Euclidean)."""
    return KNeighborsClassifier(n_neighbors=1).fit(x_fit, labels).predict(x_new)


def cluster(method: str, x_train: np.ndarray, x_test: np.ndarray, n_clusters: int,
            random_state=None, max_pairwise_rows: int = MAX_PAIRWISE_ROWS):
    """Fit one unsupervised baseline on ``x_train``; return (train labels, test labels).

    scikit-learn's defaults are kept (spectral: RBF affinity with gamma 1; agglomerative: Ward
    linkage without a connectivity graph), as a user trying these methods would run them.
    """
    x_train = np.asarray(x_train, dtype=np.float64).reshape(len(x_train), -1)
    x_test = np.asarray(x_test, dtype=np.float64).reshape(len(x_test), -1)
    seed = check_random_state(random_state).randint(2**31 - 1)
    if method == "KMeans":
        model = KMeans(n_clusters, n_init=10, random_state=seed).fit(x_train)
        return model.labels_, model.predict(x_test)
    if method == "GMM":
        model = GaussianMixture(n_clusters, covariance_type="diag", n_init=3, reg_covar=1e-4,
                                random_state=seed).fit(x_train)
        return model.predict(x_train), model.predict(x_test)
    if method not in ("Spectral", "Agglomerative"):
        raise ValueError(f"unknown baseline {method!r}; choose one of {CLUSTERERS}")
    rows = np.arange(len(x_train))
    if len(rows) > max_pairwise_rows:
        rows = np.sort(check_random_state(seed).choice(rows, max_pairwise_rows, replace=False))
    if method == "Spectral":
        model = SpectralClustering(n_clusters, random_state=seed, assign_labels="kmeans")
    else:
        model = AgglomerativeClustering(n_clusters, linkage="ward")
    fitted = model.fit_predict(x_train[rows])
    return extend_by_nearest(x_train[rows], fitted, x_train), extend_by_nearest(x_train[rows], fitted, x_test)


# --------------------------------------------------------------------------- Cox PH


def _design(x: np.ndarray, clusters, n_clusters: int | None) -> pd.DataFrame:
    frame = pd.DataFrame(np.asarray(x, dtype=np.float64), columns=[f"x{j}" for j in range(x.shape[1])])
    if clusters is not None:
        for k in range(1, n_clusters):  # cluster 0 is the reference level
            frame[f"cluster{k}"] = (np.asarray(clusters) == k).astype(np.float64)
    return frame


def cox_risk(x_train, time_train, event_train, x_test, clusters_train=None, clusters_test=None,
             n_clusters: int | None = None, penalizer: float = 0.01):
    """Fit ``lifelines.CoxPHFitter`` on the training rows; return log partial hazards (higher =
    earlier event) for the training and the test rows.

    With ``clusters_*`` the one-hot cluster labels join the features as covariates, which is
    the "clustering + Cox" baseline. A small ridge ``penalizer`` keeps the fit stable when a
    cluster is tiny or features are collinear.
    """
    from lifelines import CoxPHFitter

    train = _design(x_train, clusters_train, n_clusters)
    train["time"], train["event"] = np.asarray(time_train, np.float64), np.asarray(event_train, np.float64)
    fitter = CoxPHFitter(penalizer=penalizer).fit(train, "time", "event")
    risk = [fitter.predict_log_partial_hazard(_design(x, c, n_clusters)).to_numpy()
            for x, c in ((x_train, clusters_train), (x_test, clusters_test))]
    return risk[0], risk[1]


# --------------------------------------------------------------------------- GBSG2


@dataclass(frozen=True)
class Table:
    """A prepared survival table: ``x`` float32, ``time`` float64 > 0, ``event`` int64, and the
    DGC reconstruction blocks matching the column layout."""

    x: np.ndarray
    time: np.ndarray
    event: np.ndarray
    columns: list
    blocks: list


GBSG2_NUMERIC = ("age", "tsize", "pnodes", "progrec", "estrec")
GBSG2_CATEGORICAL = ("horTh", "menostat", "tgrade")


def gbsg2_table(train_rows: np.ndarray | None = None) -> Table:
    """GBSG2 (German Breast Cancer Study Group 2, 686 patients) from lifelines' bundled copy.

    Time is ``time`` (days), the event is ``cens`` (1 = recurrence or death observed). Numeric
    columns are standardised with the mean and standard deviation of ``train_rows`` (all rows
    when None); each categorical column becomes a one-hot group, reconstructed as one
    categorical block by DGC. For Cox PH drop one level per group (see :func:`drop_reference`).
    """
    from lifelines.datasets import load_gbsg2

    frame = load_gbsg2()
    fit_rows = np.arange(len(frame)) if train_rows is None else np.asarray(train_rows)
    numeric = frame[list(GBSG2_NUMERIC)].to_numpy(np.float64)
    mean, std = numeric[fit_rows].mean(0), numeric[fit_rows].std(0)
    parts, columns = [(numeric - mean) / np.where(std > 0, std, 1.0)], list(GBSG2_NUMERIC)
    blocks = [("gaussian", len(GBSG2_NUMERIC))]
    for name in GBSG2_CATEGORICAL:
        levels = sorted(frame[name].unique())
        parts.append((frame[name].to_numpy()[:, None] == np.array(levels)[None, :]).astype(np.float64))
        columns += [f"{name}={level}" for level in levels]
        blocks.append(("categorical", len(levels)))
    x = np.concatenate(parts, 1).astype(np.float32)
    return Table(x, frame["time"].to_numpy(np.float64), frame["cens"].to_numpy(np.int64), columns, blocks)


def drop_reference(table: Table) -> np.ndarray:
    """The table's features without the first level of each one-hot group (for Cox PH)."""
    keep, start = [], 0
    for kind, width in table.blocks:
        cols = list(range(start, start + width))
        keep += cols[1:] if kind == "categorical" else cols
        start += width
    return table.x[:, keep]
