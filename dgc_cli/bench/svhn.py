"""`dgc bench svhn`: Sec. 5.3, Appendix B.3 and Table 1."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dgc_cli import baselines
from dgc_cli.bench.common import (
    DEFAULT_OUT,
    SHARED_DATA,
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
from dgc_cli.bench.configs import svhn_params
from dgc_cli.bench.mnist import class_accuracy, take_subset

# =========================================================================== SVHN (Sec. 5.3)

SVHN_STANDARD = ("train_32x32.mat", "test_32x32.mat", "extra_32x32.mat")


def load_svhn(data_dir: Path, subset: int | None = None, seed: int = 0, test_fraction: float = 0.2,
              use_extra: bool = True):
    """SVHN as (x_train, y_train, x_test, y_test, description): images (n, 3, 32, 32) in [0, 1].

    ``data_dir`` holding ``train_32x32.mat`` and ``test_32x32.mat`` (and ``extra_32x32.mat``,
    added to training as in the paper unless ``use_extra`` is False) gives the standard split;
    ``subset`` then caps training rows at N and test rows at ceil(N / 4), seeded. A single
    ``.mat`` file (or a folder with exactly one, e.g. ``test_32x32_first10000.mat``) is cut to
    ``subset`` rows and split into train and test parts with ``split_svhn_subset(seed)``.
    """
    from dgc_cli.datasets import load_svhn_mat, split_svhn_subset

    path = Path(data_dir)
    train, test, extra = (path / name for name in SVHN_STANDARD)
    if path.is_dir() and train.is_file() and test.is_file():
        x_tr, y_tr = load_svhn_mat(train)
        parts = "train_32x32.mat"
        if use_extra and extra.is_file():
            x_ex, y_ex = load_svhn_mat(extra)
            x_tr, y_tr = np.concatenate([x_tr, x_ex]), np.concatenate([y_tr, y_ex])
            parts += " + extra_32x32.mat"
        x_te, y_te = load_svhn_mat(test)
        x_tr, y_tr = take_subset([x_tr, y_tr], subset, seed)
        x_te, y_te = take_subset([x_te, y_te], None if subset is None else -(-subset // 4), seed + 1)
        description = f"standard split: {parts} for training, test_32x32.mat for testing"
        standard = True
    else:
        if path.is_dir():
            mats = sorted(path.glob("*.mat"))
            if len(mats) != 1:
                raise FileNotFoundError(
                    f"{path}: expected train_32x32.mat and test_32x32.mat, or exactly one .mat "
                    f"file to split (found {[m.name for m in mats] or 'none'})")
            path = mats[0]
        x, y = load_svhn_mat(path)
        x, y = take_subset([x, y], subset, seed)
        x_tr, x_te, y_tr, y_te = split_svhn_subset(x, y, test_fraction, random_state=seed)
        description = (f"{path.name}: {len(x)} images split {1 - test_fraction:.0%}/"
                       f"{test_fraction:.0%} into train/test with split_svhn_subset(seed={seed})")
        standard = False

    def images(x):  # (n, 32, 32, 3) uint8 -> (n, 3, 32, 32) float32 in [0, 1], as the paper
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0

    return images(x_tr), y_tr, images(x_te), y_te, description, standard


def run_svhn(data_dir: Path = SHARED_DATA / "svhn", clusters: tuple = (10,), subset: int | None = None,
             epochs: int = 150, seed: int = 0, test_fraction: float = 0.2, use_extra: bool = True,
             init: str | None = None, precision: str = "32", device: str = "auto",
             out: Path = DEFAULT_OUT,
             log: Log | None = None, overrides: dict | None = None) -> dict:
    """SVHN, Table 1: DGC with each number of clusters in ``clusters``; classification accuracy
    of the ensemble prediction (no y) and clustering accuracy (one-to-one and purity)."""
    log = log or Log()
    started = time.time()
    x_tr, y_tr, x_te, y_te, description, standard = load_svhn(data_dir, subset, seed,
                                                              test_fraction, use_extra)
    reduced = not standard or subset is not None or epochs < 150 or not use_extra or bool(overrides)
    command = (f"dgc bench svhn --data-dir {data_dir} --clusters {','.join(map(str, clusters))}"
               + (f" --subset {subset}" if subset else "") + f" --epochs {epochs} --seed {seed}"
               + ("" if use_extra else " --no-extra") + option_flags(init, precision)
               + f" --out {out}")
    if reduced:
        log(f"REDUCED run (paper: train + extra, 150 epochs, a GPU): {command}")
    log(f"SVHN: {description}; {len(x_tr)} training, {len(x_te)} test images")
    res, ds, seconds, inits = Results(), "svhn", {}, {}
    splits = {"train": (x_tr, y_tr), "test": (x_te, y_te)}
    for k in clusters:
        params = with_init(svhn_params(k, epochs), init, precision) | (overrides or {})
        t0 = time.time()
        est = fit_dgc(log, f"K={k} DGC", params, x_tr, y_tr, seed, device)
        seconds[k], inits[k] = round(time.time() - t0, 1), effective_params(est)
        for split, (x, y) in splits.items():
            clustering_scores(res, ds, "DGC", split, k, y, est.predict(x), est.predict(x, y))
            res.add(ds, "DGC", "class_acc", split, class_accuracy(est, x, y), k)
        km = baselines.cluster("KMeans", x_tr, x_te, k, seed)
        for i, (split, (_, y)) in enumerate(splits.items()):
            clustering_scores(res, ds, "KMeans", split, k, y, km[i])
        log(f"K={k}: test classification {res.value(ds, 'DGC', 'class_acc', 'test', k):.3f}, "
            f"clustering {res.value(ds, 'DGC', 'cluster_acc', 'test', k):.3f} ({seconds[k]:.0f} s)")
    config = {"dgc": params,
              "clusters": list(clusters), "data": description, "seed": seed, "subset": subset,
              "n_train": len(x_tr), "n_test": len(x_te), "fit_seconds": seconds,
              "effective": inits}
    notes = ["cluster_acc: one-to-one (Hungarian) matching, so at most the share of the K "
             "largest digits when K < 10; purity: many-to-one, so K > 10 is not penalised"]
    notes += override_note(overrides)
    return finish("svhn", command, reduced, started, res, out, config,
                  {"table1": _svhn_figure(res, clusters)}, log, notes=notes)


def _svhn_figure(res: Results, clusters):
    fig = new_figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    for metric, label in (("class_acc", "classification"), ("cluster_acc", "clustering (one-to-one)"),
                          ("purity", "purity (no y)")):
        ax.plot(range(len(clusters)), [res.value("svhn", "DGC", metric, "test", k) for k in clusters],
                marker="o", label=label)
    ax.set_xticks(range(len(clusters)), [str(k) for k in clusters])
    ax.set_xlabel("number of clusters K")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("SVHN: DGC accuracy against K (paper, Table 1)")
    return fig


