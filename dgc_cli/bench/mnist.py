"""`dgc bench mnist`: noisy MNIST, Sec. 5.1 and Appendix B.1."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dgc_cli import baselines, metrics
from dgc_cli.baselines import no_decoder_params, vade_params
from dgc_cli.bench.common import (
    DEFAULT_OUT,
    SHARED_DATA,
    Log,
    Results,
    clustering_scores,
    effective_params,
    epochs_run,
    finish,
    fit_dgc,
    new_figure,
    option_flags,
    override_note,
    with_init,
)
from dgc_cli.bench.configs import mnist_params

# =========================================================================== noisy MNIST (Sec. 5.1)

def take_subset(arrays, n: int | None, seed: int):
    """A seeded random subset of at most n rows of parallel arrays."""
    size = len(arrays[0])
    if n is None or n >= size:
        return arrays
    rows = np.sort(np.random.RandomState(seed).choice(size, n, replace=False))
    return [a[rows] for a in arrays]


def class_accuracy(est, x, y) -> float:
    """Accuracy of the ensemble prediction (no y): the most probable class among ``classes_``."""
    probs = est.predict_response(x)
    return float(np.mean(est.classes_[probs.argmax(1)] == np.asarray(y)))


def labelled_confusion(truth, labels, names, assignment: str) -> dict:
    """Fig. 2c/d layout: rows = predicted clusters named by their matched label (Hungarian),
    columns = true labels; clusters left unmatched keep their number."""
    matrix, clusters, labels_present = metrics.confusion(truth, labels)
    mapping = metrics.cluster_mapping(truth, labels)
    order = sorted(range(len(clusters)), key=lambda i: (clusters[i] not in mapping,
                                                        mapping.get(clusters[i], clusters[i])))
    return {"split": "test", "assignment": assignment,
            "accuracy": metrics.cluster_accuracy(truth, labels),
            "rows": [names[mapping[clusters[i]]] if clusters[i] in mapping else f"cluster {clusters[i]}"
                     for i in order],
            "columns": [names[j] for j in labels_present],
            "matrix": matrix[order].tolist()}


def run_mnist(data_dir: Path = SHARED_DATA / "mnist", cifar_dir: Path = SHARED_DATA / "cifar10",
              epochs: int = 100, subset: int | None = None, seed: int = 0, blend: str = "max",
              alpha: float = 0.5, init: str | None = None, precision: str = "32",
              device: str = "auto",
              out: Path = DEFAULT_OUT, log: Log | None = None, overrides: dict | None = None) -> dict:
    """Noisy MNIST: DGC, VaDE, DGC without decoder and K-means (K = 4, targets digit x
    background), the two confusion matrices of Fig. 2c/d and samples from DGC (Fig. 2b)."""
    from dgc_cli.datasets import NOISY_MNIST_LABELS, make_noisy_mnist

    log = log or Log()
    started = time.time()
    reduced = epochs < 100 or subset is not None or bool(overrides)
    command = (f"dgc bench mnist --data-dir {data_dir} --cifar-dir {cifar_dir} --epochs {epochs}"
               + (f" --subset {subset}" if subset else "") + f" --seed {seed} --blend {blend}"
               f" --alpha {alpha}" + option_flags(init, precision) + f" --out {out}")
    if reduced:
        log(f"REDUCED run (paper: all 12,223 + 2,060 images, 100 epochs): {command}")
    splits = {}
    for i, split in enumerate(("train", "test")):
        d = make_noisy_mnist(data_dir, cifar_dir, split, random_state=seed + i, blend=blend, alpha=alpha)
        splits[split] = take_subset([d.x, d.y, d.label4], subset, seed + i)
    log(f"noisy MNIST: {len(splits['train'][0])} training, {len(splits['test'][0])} test images")
    x_train, y_train, _ = splits["train"]
    params = with_init(mnist_params(epochs), init, precision) | (overrides or {})
    variants = {"DGC": params, "VaDE": vade_params(params), "DGC-no-decoder": no_decoder_params(params)}
    res, ds, fitted, seconds = Results(), "noisy-mnist", {}, {}
    for method, p in variants.items():
        t0 = time.time()
        fitted[method] = fit_dgc(log, method, p, x_train, y_train, seed, device)
        seconds[method] = round(time.time() - t0, 1)
        log(f"{method}: fitted in {seconds[method]:.0f} s ({fitted[method].init_} init)")
    base = baselines.cluster("KMeans", x_train, splits["test"][0], 4, seed)
    confusion = {}
    for i, (split, (x, y, truth)) in enumerate(splits.items()):
        for method, est in fitted.items():
            with_y = None if method == "VaDE" else est.predict(x, y)
            clustering_scores(res, ds, method, split, 4, truth, est.predict(x), with_y)
            if method != "VaDE":
                res.add(ds, method, "class_acc", split, class_accuracy(est, x, y), 4)
        clustering_scores(res, ds, "KMeans", split, 4, truth, base[i])
    x_test, y_test, truth_test = splits["test"]
    confusion["VaDE"] = labelled_confusion(truth_test, fitted["VaDE"].predict(x_test),
                                           NOISY_MNIST_LABELS, "VaDE, no y (Fig. 2c)")
    confusion["DGC"] = labelled_confusion(truth_test, fitted["DGC"].predict(x_test, y_test),
                                          NOISY_MNIST_LABELS, "DGC, with y, Eq. 8 (Fig. 2d)")
    confusion["DGC-unlabeled"] = labelled_confusion(truth_test, fitted["DGC"].predict(x_test),
                                                    NOISY_MNIST_LABELS, "DGC, no y, Eq. 9")
    figures = {"confusion": _confusion_figure(confusion),
               "samples": _mnist_samples(splits["test"], fitted["DGC"], seed)}
    config = {"dgc": params, "vade": variants["VaDE"], "no_decoder": variants["DGC-no-decoder"],
              "seed": seed, "blend": blend, "alpha": alpha, "subset": subset,
              "n_train": len(x_train), "n_test": len(x_test), "fit_seconds": seconds,
              "chosen_init": {m: e.init_ for m, e in fitted.items()},
              "effective": {m: effective_params(e) for m, e in fitted.items()},
              "seconds_per_epoch": {m: round(s / epochs_run(fitted[m]), 2) for m, s in seconds.items()}}
    notes = [f"blend: {blend}(digit, {alpha} x grey CIFAR crop) on half of each digit's images"]
    notes += override_note(overrides)
    return finish("mnist", command, reduced, started, res, out, config, figures, log,
                  extra={"confusion": confusion}, notes=notes)


def _confusion_figure(confusion: dict):
    keys = ("VaDE", "DGC")
    fig = new_figure(11, 4.8)
    for i, key in enumerate(keys):
        c = confusion[key]
        matrix = np.asarray(c["matrix"])
        ax = fig.add_subplot(1, len(keys), i + 1)
        ax.imshow(matrix, cmap="Blues")
        for (r, col), v in np.ndenumerate(matrix):
            ax.text(col, r, str(v), ha="center", va="center",
                    color="white" if v > matrix.max() / 2 else "black")
        ax.set_xticks(range(len(c["columns"])), c["columns"])
        ax.set_yticks(range(len(c["rows"])), c["rows"])
        ax.set_xlabel("true label")
        ax.set_ylabel("predicted cluster")
        ax.set_title(f"{c['assignment']}\naccuracy {c['accuracy']:.3f}")
    return fig


def _mnist_samples(test_split, dgc, seed, per_row: int = 8):
    """Fig. 2a/b: test images per target cluster, then samples of each DGC cluster."""
    from dgc_cli.datasets import NOISY_MNIST_LABELS

    x, _, truth = test_split
    c_s, _, x_s, _ = dgc.sample(60 * dgc.n_clusters, random_state=seed)
    fig = new_figure(per_row * 0.9, 2 * 4 * 0.95)
    rows = [(f"data {NOISY_MNIST_LABELS[k]}", x[truth == k]) for k in range(4)]
    rows += [(f"DGC cluster {k}", x_s[c_s == k]) for k in range(dgc.n_clusters)]
    for r, (name, images) in enumerate(rows):
        for j in range(per_row):
            ax = fig.add_subplot(len(rows), per_row, r * per_row + j + 1)
            ax.axis("off")
            if j < len(images):
                ax.imshow(np.asarray(images[j]).reshape(28, 28), cmap="gray", vmin=0, vmax=1)
            if j == 0:
                ax.set_title(name, fontsize=7, loc="left")
    return fig


