"""`dgc bench survival`: synthetic Weibull clusters and GBSG2."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dgc_cli import baselines, metrics
from dgc_cli.baselines import vade_params
from dgc_cli.bench.common import (
    DEFAULT_OUT,
    Log,
    Results,
    clustering_scores,
    effective_params,
    finish,
    fit_dgc,
    new_figure,
    option_flags,
    override_note,
    with_init,
)
from dgc_cli.bench.configs import survival_params

# =========================================================================== survival

def _split_rows(n: int, seed: int, test_fraction: float = 0.2):
    order = np.random.RandomState(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _survival_scores(res, ds, method, split, k, time_, event, labels=None, risk=None, truth=None,
                     labeled=None):
    if labels is not None and truth is not None:
        clustering_scores(res, ds, method, split, k, truth, labels, labeled)
    if labels is not None:
        res.add(ds, method, "logrank_p", split, metrics.logrank(time_, event, labels).p_value, k)
    if risk is not None:
        res.add(ds, method, "c_index", split, metrics.c_index(time_, event, risk), k)


def survival_case(res: Results, ds: str, x, x_cox, time_, event, truth, k: int, params: dict,
                  seed: int, device: str, log: Log):
    """One data set, one seed: DGC, VaDE, Cox PH, and K-means / GMM (+ Cox on their clusters)."""
    tr, te = _split_rows(len(x), seed)
    y = np.column_stack([time_, event]).astype(np.float64)
    parts = {"train": tr, "test": te}
    dgc = fit_dgc(log, f"{ds} seed {seed} DGC", params, x[tr], y[tr], seed, device)
    vade = fit_dgc(log, f"{ds} seed {seed} VaDE", vade_params(params), x[tr], y[tr], seed, device)
    for split, rows in parts.items():
        t, e, c = time_[rows], event[rows], None if truth is None else truth[rows]
        _survival_scores(res, ds, "DGC", split, k, t, e, dgc.predict(x[rows]),
                         dgc.predict_response(x[rows]), c, dgc.predict(x[rows], y[rows]))
    cox = baselines.cox_risk(x_cox[tr], time_[tr], event[tr], x_cox[te])
    labels = {"VaDE": (vade.predict(x[tr]), vade.predict(x[te]))}
    for method in ("KMeans", "GMM"):
        labels[method] = baselines.cluster(method, x[tr], x[te], k, seed)
    for i, (split, rows) in enumerate(parts.items()):
        _survival_scores(res, ds, "CoxPH", split, None, time_[rows], event[rows], risk=cox[i])
    for method, (lab_tr, lab_te) in labels.items():
        risk = baselines.cox_risk(x_cox[tr], time_[tr], event[tr], x_cox[te], lab_tr, lab_te, k)
        for i, (split, rows) in enumerate(parts.items()):
            _survival_scores(res, ds, method, split, k, time_[rows], event[rows],
                             (lab_tr, lab_te)[i], risk[i], None if truth is None else truth[rows])
    return dgc, te


def run_survival(seeds: int = 5, n: int = 3000, clusters: int = 3, gbsg2_clusters: int = 2,
                 epochs: int | None = None, gbsg2: bool = True, init: str | None = None,
                 precision: str = "32", jobs: int = 1,
                 device: str = "auto", out: Path = DEFAULT_OUT, log: Log | None = None,
                 overrides: dict | None = None) -> dict:
    """Goal-oriented clustering with a censored response: (a) make_survival (known clusters),
    (b) GBSG2; DGC against Cox PH, K-means + Cox, GMM + Cox and VaDE (+ Cox)."""
    from dgc_cli.datasets import make_survival

    log = log or Log()
    started = time.time()
    reduced = seeds < 5 or n < 3000 or epochs is not None or not gbsg2 or bool(overrides)
    command = (f"dgc bench survival --seeds {seeds} --n {n} --clusters {clusters}"
               f" --gbsg2-clusters {gbsg2_clusters}" + (f" --epochs {epochs}" if epochs else "")
               + ("" if gbsg2 else " --no-gbsg2") + option_flags(init, precision, jobs)
               + f" --out {out}")
    if reduced:
        log(f"REDUCED run (full: 5 seeds, n = 3,000, default schedule, GBSG2 included): {command}")
    res, figures, effective = Results(), {}, {}
    synth_params = (with_init(survival_params(clusters, "gaussian", epochs), init, precision, jobs)
                    | (overrides or {}))
    for seed in range(seeds):
        d = make_survival(n=n, n_clusters=clusters, random_state=seed)
        tr, _ = _split_rows(n, seed)
        x = (d.x - d.x[tr].mean(0)) / d.x[tr].std(0)
        dgc, te = survival_case(res, "synthetic", x, x, d.time.astype(np.float64), d.event, d.c,
                                clusters, synth_params, seed, device, log)
        log(f"synthetic seed {seed}: DGC test C-index "
            f"{res.value('synthetic', 'DGC', 'c_index', 'test', clusters):.3f} (mean so far)")
        if seed == 0:
            effective["synthetic"] = effective_params(dgc)
            figures["synthetic-km"] = _km_figure(d.time[te], d.event[te], dgc.predict(x[te]), d.c[te],
                                                 "synthetic (test rows)")
    gb_params = None
    if gbsg2:
        for seed in range(seeds):
            tr, _ = _split_rows(686, seed)
            table = baselines.gbsg2_table(tr)
            gb_params = (with_init(survival_params(gbsg2_clusters, table.blocks, epochs), init, precision,
                                   jobs)
                         | (overrides or {}))
            dgc, te = survival_case(res, "gbsg2", table.x, baselines.drop_reference(table),
                                    table.time, table.event, None, gbsg2_clusters, gb_params,
                                    seed, device, log)
            if seed == 0:
                effective["gbsg2"] = effective_params(dgc)
                figures["gbsg2-km"] = _km_figure(table.time[te], table.event[te],
                                                 dgc.predict(table.x[te]), None, "GBSG2 (test rows)")
    config = {"synthetic_dgc": synth_params, "vade": vade_params(synth_params),
              "gbsg2_dgc": gb_params, "dgc_effective_seed0": effective, "seeds": seeds, "n": n,
              "split": "80/20 seeded per seed", "cox": "lifelines CoxPHFitter(penalizer=0.01); "
              "KMeans/GMM/VaDE c_index = Cox on the features plus one-hot clusters"}
    return finish("survival", command, reduced, started, res, out, config, figures, log,
                  notes=override_note(overrides))


def _km_figure(time_, event, labels, truth, title):
    from lifelines import KaplanMeierFitter

    panels = [("DGC clusters (no y)", labels)] + ([("true clusters", truth)] if truth is not None else [])
    fig = new_figure(6 * len(panels), 4.5)
    for i, (name, groups) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for g in np.unique(groups):
            rows = groups == g
            KaplanMeierFitter(label=f"cluster {g} (n={rows.sum()})").fit(
                time_[rows], event[rows]).plot_survival_function(ax=ax)
        p = metrics.logrank(time_, event, groups).p_value
        ax.set_title(f"{title}: {name}, log-rank p = {p:.2g}")
        ax.set_xlabel("time")
        ax.set_ylabel("survival probability")
    return fig


