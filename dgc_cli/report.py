"""The cluster report: per-cluster profiles, plots, report.md and a self-contained report.html.

Plots are drawn on bare `matplotlib.figure.Figure` objects (no pyplot state, no display), saved
as PNG under figures/ for report.md and embedded as base64 in report.html.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

TOP_FEATURES = 10
HISTORY_KEYS = ("stage", "epoch")


@dataclass
class ReportInput:
    """What the report shows, gathered by the pipeline (rows = those with assignments shown)."""

    title: str
    source: str
    task: str
    response: list[str]
    labels: np.ndarray
    x: np.ndarray                  # preprocessed features, n x d
    feature_names: list[str]
    preprocessor: dict             # TablePreprocessor.to_dict(), to show numerics in their units
    y: pd.DataFrame | None         # the response column(s), or None when the table has none
    latent: np.ndarray             # latent means of the rows latent_rows(n) picks, m x J
    history: list[dict]
    metrics: dict
    k_selection: list[dict] | None = None
    k_reason: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def n_clusters(self) -> int:
        return int(self.metrics.get("n_clusters") or (self.labels.max() + 1))


# ---------------------------------------------------------------------------------------------
# Numbers


def cluster_moments(x: np.ndarray, labels: np.ndarray, k: int, chunk: int = 65536):
    """Per cluster, inside and outside it: row counts, column means and (population)
    variances, each k x d, from one pass over x in float64 chunks (no copy of x)."""
    d = x.shape[1]
    counts = np.bincount(labels, minlength=k).astype(float)
    sums, squares = np.zeros((k, d)), np.zeros((k, d))
    for i in range(0, len(x), chunk):
        xc = np.asarray(x[i:i + chunk], dtype=float)
        onehot = np.eye(k)[labels[i:i + chunk]]
        sums += onehot.T @ xc
        squares += onehot.T @ (xc * xc)

    def mean_var(n, total, total_sq):
        n = n[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, total / n, np.nan)
            var = np.where(n > 0, np.maximum(total_sq / n - mean ** 2, 0.0), np.nan)
        return mean, var

    mean_in, var_in = mean_var(counts, sums, squares)
    mean_rest, var_rest = mean_var(len(x) - counts, sums.sum(0) - sums, squares.sum(0) - squares)
    return counts, mean_in, var_in, mean_rest, var_rest


def standardised_differences(x: np.ndarray, labels: np.ndarray, k: int, moments=None) -> np.ndarray:
    """(k, d): (mean in cluster - mean elsewhere) / pooled standard deviation, 0 where undefined."""
    counts, mean_in, var_in, mean_rest, var_rest = moments or cluster_moments(x, labels, k)
    smd = np.zeros((k, x.shape[1]))
    for c in range(k):
        if counts[c] == 0 or counts[c] == len(x):
            continue
        pooled = np.sqrt((var_in[c] + var_rest[c]) / 2)
        diff = mean_in[c] - mean_rest[c]
        smd[c] = np.divide(diff, pooled, out=np.zeros_like(diff), where=pooled > 1e-12)
    return smd


def _in_units(means: np.ndarray, preprocessor: dict) -> np.ndarray:
    """Undo the standardisation of the numeric columns (they come first) of k x d means."""
    num = preprocessor["numeric"]
    raw = means.astype(float).copy()
    width = len(num["columns"])
    if width:
        raw[:, :width] = raw[:, :width] * np.asarray(num["scales"]) + np.asarray(num["means"])
    return raw


def fmt(v: float) -> str:
    """A number for people: 3 significant digits, whole numbers from 100, n/a when missing."""
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:.0f}" if 100 <= abs(v) < 1e7 else f"{v:.3g}"


def class_mix(y: pd.Series, labels: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    """The classes (as text, sorted) and each cluster's share of them (k x classes; a row of
    zeros for an empty cluster), counted on integer codes: no text copy of the column."""
    codes, uniques = pd.factorize(y, sort=False)
    names = [str(u) for u in uniques]
    order = np.argsort(names, kind="stable")
    counts = np.bincount(labels * len(names) + codes, minlength=k * len(names))
    counts = counts.reshape(k, len(names))[:, order].astype(float)
    sizes = counts.sum(1, keepdims=True)
    return [names[i] for i in order], np.divide(counts, sizes, out=np.zeros_like(counts),
                                                 where=sizes > 0)


def response_summary(task: str, y: pd.DataFrame | None, labels: np.ndarray, k: int) -> list[str]:
    """One short sentence per cluster: class mix, mean and spread, or median survival."""
    if y is None:
        return [""] * k
    out = []
    if task == "categorical":
        names, shares = class_mix(y.iloc[:, 0], labels, k)
    for c in range(k):
        if not (labels == c).any():
            out.append("no rows")
            continue
        if task == "categorical":
            top = np.argsort(-shares[c], kind="stable")[:3]
            out.append(", ".join(f"{names[j]} {shares[c, j]:.0%}" for j in top if shares[c, j] > 0))
            continue
        rows = y[labels == c]
        if task == "continuous":
            v = rows.iloc[:, 0].astype(float)
            out.append(f"mean {fmt(v.mean())} (sd {fmt(v.std(ddof=0))})")
        else:
            from lifelines import KaplanMeierFitter

            t, e = rows.iloc[:, 0].astype(float), rows.iloc[:, 1].astype(float)
            median = KaplanMeierFitter().fit(t, e).median_survival_time_
            text = fmt(median) if np.isfinite(median) else "not reached"
            out.append(f"median survival {text}; {int(e.sum())} events")
    return out


def cluster_profiles(inp: ReportInput) -> list[dict]:
    """Per cluster: size, share, response summary and the top distinguishing features."""
    k = inp.n_clusters
    moments = cluster_moments(inp.x, inp.labels, k)
    smd = standardised_differences(inp.x, inp.labels, k, moments)
    mean_in, mean_rest = (_in_units(m, inp.preprocessor) for m in (moments[1], moments[3]))
    summaries = response_summary(inp.task, inp.y, inp.labels, k)
    profiles = []
    for c in range(k):
        inside = inp.labels == c
        top = np.argsort(-np.abs(smd[c]))[:TOP_FEATURES]
        features = [{"feature": inp.feature_names[j], "smd": float(smd[c, j]),
                     "mean_in": float(mean_in[c, j]), "mean_rest": float(mean_rest[c, j])}
                    for j in top if abs(smd[c, j]) > 0]
        profiles.append({"cluster": c, "size": int(inside.sum()),
                         "share": float(inside.mean()) if len(inside) else 0.0,
                         "response": summaries[c], "features": features})
    return profiles


# ---------------------------------------------------------------------------------------------
# Plots


def _figure(width=7.0, height=4.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _colours(k: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


def plot_sizes(profiles: list[dict]) -> bytes:
    fig = _figure(6, 3)
    ax = fig.add_subplot()
    k = len(profiles)
    ax.bar([str(p["cluster"]) for p in profiles], [p["size"] for p in profiles],
           color=_colours(k))
    ax.set_xlabel("cluster")
    ax.set_ylabel("rows")
    ax.set_title("Cluster sizes")
    return _png(fig)


def plot_features(profiles: list[dict]) -> bytes:
    k = len(profiles)
    cols = min(k, 3)
    rows = int(np.ceil(k / cols))
    fig = _figure(4.2 * cols, 3.2 * rows)
    for i, p in enumerate(profiles):
        ax = fig.add_subplot(rows, cols, i + 1)
        feats = p["features"][::-1]
        ax.barh([f["feature"] for f in feats], [f["smd"] for f in feats],
                color=["#c0392b" if f["smd"] > 0 else "#2471a3" for f in feats])
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(f"cluster {p['cluster']} (n={p['size']})", fontsize=10)
        ax.tick_params(labelsize=8)
        ax.set_xlabel("standardised mean difference", fontsize=8)
    return _png(fig)


def plot_response(inp: ReportInput) -> bytes | None:
    if inp.y is None or len(inp.y) == 0:
        return None
    k, labels = inp.n_clusters, inp.labels
    colours = _colours(k)
    if inp.task == "survival":
        from lifelines import KaplanMeierFitter
        from lifelines.plotting import add_at_risk_counts

        fig = _figure(8, 5 + 0.35 * k)
        ax = fig.add_subplot()
        fitters = []
        for c in range(k):
            rows = inp.y[labels == c]
            if len(rows) == 0:
                continue
            kmf = KaplanMeierFitter(label=f"cluster {c}").fit(
                rows.iloc[:, 0].astype(float), rows.iloc[:, 1].astype(float))
            kmf.plot_survival_function(ax=ax, color=colours[c], ci_alpha=0.15)
            fitters.append(kmf)
        add_at_risk_counts(*fitters, ax=ax, fig=fig, rows_to_show=["At risk"])
        ax.set_xlabel(inp.response[0])
        ax.set_ylabel("survival probability")
        ax.set_title("Kaplan-Meier curves per cluster")
        return _png(fig)
    fig = _figure(7, 3.6)
    ax = fig.add_subplot()
    if inp.task == "categorical":
        names, shares = class_mix(inp.y.iloc[:, 0], labels, k)
        present = np.flatnonzero(np.bincount(labels, minlength=k))
        left = np.zeros(len(present))
        for j, name in enumerate(names):
            ax.barh([str(c) for c in present], shares[present, j], left=left, label=name)
            left += shares[present, j]
        ax.set_xlabel(f"share of {inp.response[0]}")
        ax.set_ylabel("cluster")
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax.set_title("Class mix per cluster")
    else:
        values = inp.y.iloc[:, 0].astype(float).to_numpy()
        present = [c for c in range(k) if (labels == c).any()]
        ax.boxplot([values[labels == c] for c in present], tick_labels=[str(c) for c in present])
        ax.set_xlabel("cluster")
        ax.set_ylabel(inp.response[0])
        ax.set_title("Response per cluster")
    return _png(fig)


def plot_history(history: list[dict]) -> bytes | None:
    from matplotlib.ticker import MaxNLocator

    if not history:
        return None
    frame = pd.DataFrame(history)
    keys = [c for c in frame.columns if c not in HISTORY_KEYS
            and pd.api.types.is_numeric_dtype(frame[c])]
    if not keys:
        return None
    cols = min(len(keys), 3)
    rows = int(np.ceil(len(keys) / cols))
    fig = _figure(4 * cols, 2.6 * rows)
    epochs = np.arange(1, len(frame) + 1)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot(epochs, frame[key])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=8)
    return _png(fig)


LATENT_POINTS = 5000  # a readable latent map, drawn quickly


def latent_rows(n: int, max_points: int = LATENT_POINTS) -> np.ndarray:
    """The rows the latent map draws: every row, or a seeded sample of ``max_points``. Only
    these need encoding (on 1M rows: 40 MB and seconds saved)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, max_points, replace=False))


def plot_latent(latent: np.ndarray, labels: np.ndarray, k: int) -> bytes:
    """``latent``: the latent means of the rows ``latent_rows(len(labels))``."""
    labels = labels[latent_rows(len(labels))]
    if latent.shape[1] >= 2:
        from sklearn.decomposition import PCA

        xy = PCA(n_components=2).fit_transform(latent)
        axes = ("PC 1", "PC 2")
    else:
        xy = np.column_stack([latent[:, 0], np.random.default_rng(0).uniform(-1, 1, len(latent))])
        axes = ("z", "jitter")
    fig = _figure(6, 4.5)
    ax = fig.add_subplot()
    colours = _colours(k)
    for c in range(k):
        pts = xy[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=8, alpha=0.7, color=colours[c], label=f"cluster {c}")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.legend(fontsize=8, markerscale=2)
    ax.set_title("Latent means (PCA), coloured by cluster")
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# Documents


def _metric_rows(metrics: dict) -> list[tuple[str, str]]:
    rows = []
    names = {"log_predictive_y": "log p(y|x)", "c_index": "C-index", "rmse": "RMSE", "r2": "R^2",
             "logrank_p_value": "log-rank p-value, clusters from the features alone"}
    for key in ("validation", "predictive"):
        for name, value in (metrics.get(key) or {}).items():
            label = f"{'held-out' if key == 'validation' else 'on this table'} {names.get(name, name)}"
            rows.append((label, fmt(value) if isinstance(value, float) else str(value)))
    if "logrank" in metrics:
        rows.append(("log-rank p-value across the assigned clusters",
                     fmt(metrics["logrank"]["p_value"])))
    if metrics.get("ari_vs_gmm") is not None:
        rows.append(("ARI with an unsupervised GMM on the features", fmt(metrics["ari_vs_gmm"])))
    terms, suffix = metrics.get("elbo_terms") or {}, ""
    if isinstance(terms.get("train"), dict):  # dgc fit reports train and validation terms
        terms, suffix = terms["train"], " (training rows)"
    rows += [(f"ELBO term {name}{suffix}", fmt(value)) for name, value in terms.items()]
    return rows


def _tables(inp: ReportInput, profiles: list[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for each table of the report, shared by Markdown and HTML."""
    tables = [("Clusters", ["cluster", "rows", "share", "response"],
               [[str(p["cluster"]), str(p["size"]), f"{p['share']:.0%}", p["response"]]
                for p in profiles])]
    for p in (p for p in profiles if p["features"]):
        tables.append((f"Cluster {p['cluster']}: distinguishing features",
                       ["feature", "std. mean difference", "mean in cluster", "mean elsewhere"],
                       [[f["feature"], f"{f['smd']:+.2f}", fmt(f["mean_in"]),
                         fmt(f["mean_rest"])] for f in p["features"]]))
    if inp.k_selection:
        chosen = inp.n_clusters
        tables.append(("Choosing K", ["K", "held-out log p(y|x)", "held-out ELBO",
                                      "stability (ARI of two seeds)", ""],
                       [[str(r["k"]), fmt(r["log_predictive_y"]), fmt(r["elbo"]),
                         fmt(r["stability_ari"]), "chosen" if r["k"] == chosen else ""]
                        for r in inp.k_selection]))
    tables.append(("Metrics", ["metric", "value"], [list(r) for r in _metric_rows(inp.metrics)]))
    return tables


def _markdown(inp, tables, figures) -> str:
    def cell(v):
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = [f"# {inp.title}", "", f"Data: `{inp.source}`. Task: {inp.task} "
             f"(response {', '.join(inp.response)}). Clusters: {inp.n_clusters}.", ""]
    lines += [_POSTERIOR, ""] if inp.y is not None else []
    lines += [f"> {w}" for w in inp.warnings] + ([""] if inp.warnings else [])
    if inp.k_reason:
        lines += [inp.k_reason + ".", ""]
    for title, header, rows in tables:
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
        lines.append("")
    lines.append("## Figures")
    lines.append("")
    for name, caption in figures:
        lines += [f"![{caption}](figures/{name}.png)", ""]
    return "\n".join(lines)


_POSTERIOR = ("Rows with a response are assigned from their features and their response "
              "(Eq. 8 of the paper); the held-out metrics and the predictions use the features "
              "alone (Eq. 9), as new rows would.")

_CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;
padding:0.25em 0.6em;text-align:left}th{background:#f3f3f3}img{max-width:100%}
.note{background:#fff8e1;padding:0.4em 0.8em;border-left:4px solid #f0b400}"""


def _html(inp, tables, figures, images: dict[str, bytes]) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(inp.title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{esc(inp.title)}</h1>",
             f"<p>Data: <code>{esc(inp.source)}</code>. Task: {esc(inp.task)} (response "
             f"{esc(', '.join(inp.response))}). Clusters: {inp.n_clusters}.</p>"]
    parts += [f"<p>{esc(_POSTERIOR)}</p>"] if inp.y is not None else []
    parts += [f"<p class='note'>{esc(w)}</p>" for w in inp.warnings]
    if inp.k_reason:
        parts.append(f"<p>{esc(inp.k_reason)}.</p>")
    for title, header, rows in tables:
        parts.append(f"<h2>{esc(title)}</h2><table><tr>"
                     + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>"
                  for row in rows]
        parts.append("</table>")
    for name, caption in figures:
        data = base64.b64encode(images[name]).decode("ascii")
        parts.append(f"<h2>{esc(caption)}</h2><img alt='{esc(caption)}' "
                     f"src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(folder: str | Path, inp: ReportInput) -> list[dict]:
    """Write report.md, report.html and figures/*.png into `folder`; return the profiles."""
    folder = Path(folder)
    profiles = cluster_profiles(inp)
    drawn = {"sizes": ("Cluster sizes", plot_sizes(profiles)),
             "features": ("Distinguishing features (standardised mean differences)",
                          plot_features(profiles)),
             "response": ("Response per cluster", plot_response(inp)),
             "training": ("Training curves of each ELBO term", plot_history(inp.history)),
             "latent": ("Latent map", plot_latent(inp.latent, inp.labels, inp.n_clusters))}
    images = {name: png for name, (_, png) in drawn.items() if png is not None}
    figures = [(name, caption) for name, (caption, png) in drawn.items() if png is not None]
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    for name, png in images.items():
        (folder / "figures" / f"{name}.png").write_bytes(png)
    tables = _tables(inp, profiles)
    (folder / "report.md").write_text(_markdown(inp, tables, figures))
    (folder / "report.html").write_text(_html(inp, tables, figures, images))
    return profiles
