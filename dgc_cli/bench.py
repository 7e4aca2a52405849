"""``dgc bench``: the paper's experiments (Sec. 5, Appendix B) next to their baselines.

Each bench builds its data set as Appendix B describes, fits DGC with the paper's architecture and
schedule (the ``*_params`` functions below are the configs), fits the baselines of
``dgc_cli.baselines`` on the same rows, and writes into ``--out``:

- ``<bench>[-reduced].json``: ``{"bench", "command", "reduced", "seconds", "machine", "date",
  "config", "notes", "results": [{"method", "metric", "split", "value", "sd", "dataset",
  "n_clusters", "runs"}]}`` (plus ``"confusion"`` for noisy MNIST). ``value`` is the mean over
  seeds, ``sd`` their standard deviation (null for one seed). The file name says ``-reduced``
  whenever the run is smaller than the paper's (and the output says so).
- ``<stem>.md``: the same numbers as a markdown table; ``<stem>-*.png``: the paper's figures.

Assignments behind the metrics: ``cluster_acc`` uses y (Eq. 8); ``cluster_acc_unlabeled``,
``purity``, ``nmi``, ``ari`` and ``logrank_p`` use the assignment without y (Eq. 9 for DGC, the
only assignment a method that never sees y has), so every method is scored on the same footing.
``class_acc`` and ``c_index`` score the ensemble prediction sum_k q(k|x) E[y|z,k] without y.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dgc_cli import baselines, metrics
from dgc_cli.baselines import no_decoder_params, vade_params

METHODS = ("DGC", "VaDE", "DGC-no-decoder", "KMeans", "GMM", "Spectral", "Agglomerative", "CoxPH")
METRICS = ("cluster_acc", "cluster_acc_unlabeled", "purity", "nmi", "ari", "class_acc",
           "c_index", "logrank_p")
DEFAULT_OUT = Path("benchmarks/results")
SHARED_DATA = Path("../shared/data")  # where these machines keep the offline copies

bench_app = typer.Typer(
    help="Reproduce the paper's experiments (Pacman, noisy MNIST, SVHN, survival) next to "
         "baselines; each writes JSON, a markdown table and PNG figures into --out.",
    no_args_is_help=True)


# =========================================================================== configs (App. B)

def pacman_params(epochs: int = 80) -> dict:
    """B.2's schedule: Adam lr 0.001, 10 % decay every 10 epochs, 80 epochs.

    Not from the paper (docs/method.md, Pacman), because the paper's nets separate the annuli on
    2 seeds of 10 here (sigmoid 2-64-128-256 -> z (60), batch 1,000; also with a 2-D z): z has
    2 dimensions so that the annuli can sit on concentric rings in z; ReLU MLPs 128-64 and a
    task net of 32 hidden units, batch 256 (the settings measured in the tests); the start is
    flat with concentric components (``init_var_spread``); the reconstruction variance is fixed
    low (``x_log_variance``) so that z keeps the 0.2 gap; three restarts, kept by the agreement
    of the Eq. 8 and Eq. 9 labels.
    """
    return dict(n_clusters=2, task="continuous", latent_dim=2, encoder=(128, 64),
                head=(32,), activation="relu", epochs=epochs, batch_size=256, lr=1e-3,
                lr_decay=0.9, lr_decay_every=10, x_likelihood="gaussian", init="flat",
                init_var_spread=0.7, x_log_variance=-4.6, n_init=3, selection="agreement",
                y_weight=1.0)


def mnist_params(epochs: int = 100) -> dict:
    """B.1: ReLU MLPs 784-500-500-2000 -> z (10) -> 2000-500-500 -> 784 (Bernoulli pixels), a
    linear task net z -> per-cluster logits, Adam lr 0.002, batch 128, 10 % decay every 10
    epochs, 100 epochs."""
    return dict(n_clusters=4, task="categorical", latent_dim=10, encoder=(500, 500, 2000),
                decoder=(2000, 500, 500), head=(), activation="relu", epochs=epochs,
                batch_size=128, lr=2e-3, lr_decay=0.9, lr_decay_every=10,
                x_likelihood="bernoulli", y_weight=1.0)


def svhn_params(n_clusters: int = 10, epochs: int = 150) -> dict:
    """B.3: eight conv blocks (conv 5x5, BatchNorm, ReLU, max-pool alternating stride 2 and 1),
    dense 3072 -> z (256); decoder dense 3072 and four 4x4 transposed convolutions; sigmoid task
    net 512-1024-512-256; Adam lr 0.0001 constant, batch 128, 150 epochs."""
    widths = (48, 64, 128, 160, 192, 192, 192, 192)
    encoder = {"type": "conv", "activation": "relu", "batchnorm": True, "dense": [3072],
               "layers": [{"out": w, "kernel": 5, "pool": 2, "pool_stride": 2 - i % 2}
                          for i, w in enumerate(widths)]}
    decoder = {"type": "deconv", "activation": "relu", "batchnorm": True, "dense": [3072],
               "layers": [{"out": 256, "kernel": 4, "stride": 1, "padding": 0},
                          {"out": 128, "kernel": 4, "stride": 2, "padding": 1},
                          {"out": 64, "kernel": 4, "stride": 2, "padding": 1},
                          {"out": 3, "kernel": 4, "stride": 2, "padding": 1}]}
    return dict(n_clusters=n_clusters, task="categorical", latent_dim=256, encoder=encoder,
                decoder=decoder, head=(512, 1024, 512, 256), activation="sigmoid",
                epochs=epochs, batch_size=128, lr=1e-4, lr_decay=1.0, lr_decay_every=10,
                x_likelihood="bernoulli", y_weight=1.0)


def survival_params(n_clusters: int, x_likelihood="gaussian", epochs: int | None = None) -> dict:
    """Tabular survival (no paper schedule): the estimator's default MLPs and schedule with a
    Weibull head; GBSG2 reconstructs its one-hot groups as categorical blocks."""
    return dict(n_clusters=n_clusters, task="survival", x_likelihood=x_likelihood, epochs=epochs)


# =========================================================================== results and files

class Results:
    """Collects rows; a row's value is the mean over seeds, ``sd`` their standard deviation, and
    ``runs`` the number of seeds where the metric could be computed (a log-rank test needs two
    clusters: seeds where a method used one are left out, and the value is null when all are)."""

    def __init__(self):
        self._values: dict[tuple, list[float]] = {}

    def add(self, dataset: str, method: str, metric: str, split: str, value: float,
            n_clusters: int | None):
        if method not in METHODS or metric not in METRICS or split not in ("train", "test"):
            raise ValueError(f"row outside the result schema: {method}, {metric}, {split}")
        key = (dataset, method, metric, split, n_clusters)
        self._values.setdefault(key, []).append(float(value))

    def rows(self) -> list[dict]:
        rows = []
        for (dataset, method, metric, split, k), values in self._values.items():
            finite = [v for v in values if np.isfinite(v)]
            mean = float(np.mean(finite)) if finite else float("nan")
            sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
            rows.append({"method": method, "metric": metric, "split": split,
                         "value": mean if np.isfinite(mean) else None,
                         "sd": sd, "dataset": dataset, "n_clusters": k, "runs": len(finite)})
        return rows

    def value(self, dataset, method, metric, split, n_clusters) -> float:
        return float(np.mean(self._values[(dataset, method, metric, split, n_clusters)]))


def clustering_scores(res: Results, dataset: str, method: str, split: str, k: int, truth,
                      unlabeled, labeled=None):
    """cluster_acc from the assignment with y (when there is one), the rest from the one without."""
    if labeled is not None:
        res.add(dataset, method, "cluster_acc", split, metrics.cluster_accuracy(truth, labeled), k)
    res.add(dataset, method, "cluster_acc_unlabeled", split, metrics.cluster_accuracy(truth, unlabeled), k)
    res.add(dataset, method, "purity", split, metrics.purity(truth, unlabeled), k)
    res.add(dataset, method, "nmi", split, metrics.nmi(truth, unlabeled), k)
    res.add(dataset, method, "ari", split, metrics.ari(truth, unlabeled), k)


def machine() -> str:
    """CPU model, core count, accelerator and library versions, in one line."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{model}, {os.cpu_count()} cores, {gpu}; {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text))


def save_figure(fig, path: Path) -> None:
    _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def _number(value: float) -> str:
    return f"{value:.2g}" if 0 < abs(value) < 1e-3 else f"{value:.3f}"


def _fmt(value, sd) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return _number(value) if sd is None else f"{_number(value)} ± {_number(sd)}"


def markdown(payload: dict) -> str:
    """One table per data set: a row per (method, K, metric), train and test side by side."""
    title = payload["bench"] + (" (REDUCED run)" if payload["reduced"] else "")
    lines = [f"# dgc bench {title}", "",
             f"- command: `{payload['command']}`", f"- machine: {payload['machine']}",
             f"- date: {payload['date']}", f"- wall time: {payload['seconds']:.0f} s", ""]
    if payload.get("notes"):
        lines += [f"- {note}" for note in payload["notes"]] + [""]
    datasets = list(dict.fromkeys(r["dataset"] for r in payload["results"]))
    for dataset in datasets:
        cells: dict[tuple, dict] = {}
        for r in payload["results"]:
            if r["dataset"] == dataset:
                key = (r["method"], r["n_clusters"], r["metric"])
                cells.setdefault(key, {})[r["split"]] = _fmt(r["value"], r["sd"])
        lines += [f"## {dataset}", "", "| method | K | metric | train | test |",
                  "| --- | --- | --- | --- | --- |"]
        for (method, k, metric), split in cells.items():
            lines.append(f"| {method} | {'' if k is None else k} | {metric} | "
                         f"{split.get('train', '')} | {split.get('test', '')} |")
        lines.append("")
    return "\n".join(lines)


def finish(bench: str, command: str, reduced: bool, started: float, res: Results, out: Path,
           config: dict, figures: dict, log, extra: dict | None = None,
           notes: list | None = None) -> dict:
    """Write the JSON, the markdown table and the figures; return the result dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{bench}-reduced" if reduced else bench
    payload = {"bench": bench, "command": command, "reduced": bool(reduced),
               "seconds": round(time.time() - started, 1), "machine": machine(),
               "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "config": _jsonable(config), "notes": notes or [], "results": res.rows(),
               **(extra or {})}
    files = []
    for name, fig in figures.items():
        path = out / f"{stem}-{name}.png"
        save_figure(fig, path)
        files.append(str(path))
    write_text(out / f"{stem}.md", markdown(payload))
    write_text(out / f"{stem}.json", json.dumps(payload, indent=2, allow_nan=True) + "\n")
    files += [str(out / f"{stem}.md"), str(out / f"{stem}.json")]
    log(f"[bold]{'REDUCED run' if reduced else 'full run'}[/bold]: wrote " + ", ".join(files))
    payload["files"] = files
    return payload


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


class Log:
    """Progress for long fits: a rich bar in a terminal, a line every 10 epochs in a log file."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False)

    def __call__(self, message: str) -> None:
        self.console.print(message)

    @contextmanager
    def fitting(self, label: str):
        if self.console.is_terminal:
            columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                       TimeElapsedColumn())
            with Progress(*columns, console=self.console, transient=True) as progress:
                task = progress.add_task(label, total=None)

                def update(event):
                    progress.update(task, description=f"{label} {event['stage']}",
                                    completed=event["epoch"], total=event["epochs"])
                yield update
            return
        started = time.time()

        def line(event):
            if event["stage"] == "init":
                self.console.print(f"  {label} mixture initialised ({event.get('init')})")
            elif event["epoch"] % 10 == 0 or event["epoch"] == event["epochs"]:
                self.console.print(f"  {label} {event['stage']} {event['epoch']}/{event['epochs']}"
                                   f" loss {event['loss']:.4g} ({time.time() - started:.0f} s)")
        yield line


def _fit(log: Log, label: str, params: dict, x, y, seed: int, device: str):
    from dgc_cli import DGC

    with log.fitting(label) as callback:
        return DGC(**params, device=device, random_state=seed).fit(x, y, callback=callback)


def _effective(est) -> dict:
    """All parameters of a fitted DGC and the schedule it resolved (defaults included)."""
    import dataclasses

    return {"params": _jsonable(est.get_params()), "schedule": dataclasses.asdict(est.schedule_),
            "init": est.init_}


def _epochs_run(est) -> int:
    """Pre-training plus training epochs of every run a fit made (restarts included)."""
    sched = est.schedule_
    pre = sched.pretrain_epochs if sched.use_decoder else 0
    return max(1, (sched.epochs + pre) * max(1, len(getattr(est, "init_report_", [])) or 1))


def _with_init(params: dict, init: str | None) -> dict:
    return params if init is None else {**params, "init": init}


def _override_note(overrides: dict | None) -> list:
    """Runs with DGC parameters changed from the Python API are not the paper's: say so."""
    if not overrides:
        return []
    return [f"DGC parameters overridden from the Python API (run counts as reduced): {overrides}"]


def _figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas, without pyplot (no global backend state)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


# =========================================================================== Pacman (Sec. 5.2)

def run_pacman(seeds: int = 10, epochs: int = 80, n_per_annulus: int = 10_000,
               n_train_per_annulus: int = 7_500, init: str | None = None, device: str = "auto",
               out: Path = DEFAULT_OUT, log: Log | None = None, overrides: dict | None = None) -> dict:
    """Pacman over ``seeds`` seeds: DGC (Eq. 8 and Eq. 9 accuracies), VaDE and the four
    unsupervised baselines on the same points; figures as the paper's Fig. 3 and Fig. 4."""
    from dgc_cli.datasets import make_pacman

    log = log or Log()
    started = time.time()
    reduced = seeds < 10 or epochs < 80 or n_per_annulus < 10_000 or bool(overrides)
    command = (f"dgc bench pacman --seeds {seeds} --epochs {epochs} --n-per-annulus {n_per_annulus}"
               f" --n-train-per-annulus {n_train_per_annulus}"
               + (f" --init {init}" if init else "") + f" --out {out}")
    if reduced:
        log(f"REDUCED run (paper: 10 seeds, 80 epochs, 10,000 points per annulus): {command}")
    params = _with_init(pacman_params(epochs), init) | (overrides or {})
    res, ds, figures, fitted_inits, effective = Results(), "pacman", {}, [], None
    for seed in range(seeds):
        data = make_pacman(n_per_annulus, n_train_per_annulus, random_state=seed)
        # Every method sees the coordinates standardised with the training statistics.
        scale = (data.x_train.mean(0), data.x_train.std(0))
        xs_train, xs_test = ((x - scale[0]) / scale[1] for x in (data.x_train, data.x_test))
        splits = {"train": (xs_train, data.y_train, data.c_train),
                  "test": (xs_test, data.y_test, data.c_test)}
        dgc = _fit(log, f"seed {seed} DGC", params, xs_train, data.y_train, seed, device)
        vade = _fit(log, f"seed {seed} VaDE", vade_params(params), xs_train, data.y_train,
                    seed, device)
        fitted_inits.append(dgc.init_)
        base = {m: baselines.cluster(m, xs_train, xs_test, 2, seed) for m in baselines.CLUSTERERS}
        for i, (split, (x, y, c)) in enumerate(splits.items()):
            clustering_scores(res, ds, "DGC", split, 2, c, dgc.predict(x), dgc.predict(x, y))
            clustering_scores(res, ds, "VaDE", split, 2, c, vade.predict(x))
            for method, labels in base.items():
                clustering_scores(res, ds, method, split, 2, c, labels[i])
        log(f"seed {seed}: DGC test acc {res.value(ds, 'DGC', 'cluster_acc', 'test', 2):.3f} "
            f"(mean so far, Eq. 8), init {dgc.init_}")
        if seed == 0:
            effective = _effective(dgc)
            figures = {"fig3": _pacman_fig3(data, dgc, seed, scale),
                       "clusters": _pacman_clusters(data, dgc, xs_test),
                       "fig4": _pacman_fig4(data, base, vade.predict(xs_train))}
    config = {"dgc": params, "vade": vade_params(params), "seeds": seeds,
              "n_per_annulus": n_per_annulus, "n_train_per_annulus": n_train_per_annulus,
              "chosen_init": fitted_inits, "dgc_effective_seed0": effective,
              "standardised": "x standardised with the training mean and sd, for every method",
              "baselines": "scikit-learn defaults; Spectral and "
              f"Agglomerative fitted on {baselines.MAX_PAIRWISE_ROWS} random training points, "
              "extended by the nearest fitted point"}
    return finish("pacman", command, reduced, started, res, out, config, figures, log,
                  notes=_override_note(overrides))


def _pacman_fig3(data, dgc, seed, scale):
    """Fig. 3: truth (2-D, y by position, 3-D) over DGC's generated samples (same panels)."""
    fig = _figure(13, 8)
    c_s, _, x_s, y_s = dgc.sample(len(data.x_test), random_state=seed)
    x_s = x_s * scale[1] + scale[0]  # back to the data's coordinates
    rows = (("ground truth", data.x_test, data.y_test, data.c_test),
            ("generated by DGC", x_s, y_s, c_s))
    for r, (name, x, y, c) in enumerate(rows):
        ax = fig.add_subplot(2, 3, 3 * r + 1)
        ax.scatter(x[:, 0], x[:, 1], c=c, s=2, cmap="viridis")
        ax.set_title(f"{name}: points by cluster")
        ax.set_aspect("equal")
        ax = fig.add_subplot(2, 3, 3 * r + 2)
        angle = np.degrees(np.mod(np.arctan2(x[:, 1], x[:, 0]), 2 * np.pi))
        ax.scatter(angle, y, c=c, s=2, cmap="viridis")
        ax.set_xlabel("angle (degrees)")
        ax.set_ylabel("y")
        ax.set_title(f"{name}: responses")
        ax = fig.add_subplot(2, 3, 3 * r + 3, projection="3d")
        ax.scatter(x[:, 0], x[:, 1], y, c=c, s=1, cmap="viridis")
        ax.set_title(f"{name}: 3-D")
    return fig


def _pacman_clusters(data, dgc, xs_test):
    fig = _figure(10, 5)
    for i, (name, labels) in enumerate((("DGC with y (Eq. 8)", dgc.predict(xs_test, data.y_test)),
                                        ("DGC without y (Eq. 9)", dgc.predict(xs_test)))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.scatter(data.x_test[:, 0], data.x_test[:, 1], c=labels, s=2, cmap="coolwarm")
        acc = metrics.cluster_accuracy(data.c_test, labels)
        ax.set_title(f"{name}: test accuracy {acc:.3f}")
        ax.set_aspect("equal")
    return fig


def _pacman_fig4(data, base, vade_labels):
    """Fig. 4: the unsupervised baselines on the training points."""
    panels = [(m, labels[0]) for m, labels in base.items()] + [("VaDE", vade_labels)]
    fig = _figure(4 * len(panels), 4)
    for i, (name, labels) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.scatter(data.x_train[:, 0], data.x_train[:, 1], c=labels, s=1, cmap="coolwarm")
        ax.set_title(f"{name}: acc {metrics.cluster_accuracy(data.c_train, labels):.3f}")
        ax.set_aspect("equal")
    return fig


# =========================================================================== noisy MNIST (Sec. 5.1)

def _subset(arrays, n: int | None, seed: int):
    """A seeded random subset of at most n rows of parallel arrays."""
    size = len(arrays[0])
    if n is None or n >= size:
        return arrays
    rows = np.sort(np.random.RandomState(seed).choice(size, n, replace=False))
    return [a[rows] for a in arrays]


def _class_acc(est, x, y) -> float:
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
              alpha: float = 0.5, init: str | None = None, device: str = "auto",
              out: Path = DEFAULT_OUT, log: Log | None = None, overrides: dict | None = None) -> dict:
    """Noisy MNIST: DGC, VaDE, DGC without decoder and K-means (K = 4, targets digit x
    background), the two confusion matrices of Fig. 2c/d and samples from DGC (Fig. 2b)."""
    from dgc_cli.datasets import NOISY_MNIST_LABELS, make_noisy_mnist

    log = log or Log()
    started = time.time()
    reduced = epochs < 100 or subset is not None or bool(overrides)
    command = (f"dgc bench mnist --data-dir {data_dir} --cifar-dir {cifar_dir} --epochs {epochs}"
               + (f" --subset {subset}" if subset else "") + f" --seed {seed} --blend {blend}"
               f" --alpha {alpha}" + (f" --init {init}" if init else "") + f" --out {out}")
    if reduced:
        log(f"REDUCED run (paper: all 12,223 + 2,060 images, 100 epochs): {command}")
    splits = {}
    for i, split in enumerate(("train", "test")):
        d = make_noisy_mnist(data_dir, cifar_dir, split, random_state=seed + i, blend=blend, alpha=alpha)
        splits[split] = _subset([d.x, d.y, d.label4], subset, seed + i)
    log(f"noisy MNIST: {len(splits['train'][0])} training, {len(splits['test'][0])} test images")
    x_train, y_train, _ = splits["train"]
    params = _with_init(mnist_params(epochs), init) | (overrides or {})
    variants = {"DGC": params, "VaDE": vade_params(params), "DGC-no-decoder": no_decoder_params(params)}
    res, ds, fitted, seconds = Results(), "noisy-mnist", {}, {}
    for method, p in variants.items():
        t0 = time.time()
        fitted[method] = _fit(log, method, p, x_train, y_train, seed, device)
        seconds[method] = round(time.time() - t0, 1)
        log(f"{method}: fitted in {seconds[method]:.0f} s ({fitted[method].init_} init)")
    base = baselines.cluster("KMeans", x_train, splits["test"][0], 4, seed)
    confusion = {}
    for i, (split, (x, y, truth)) in enumerate(splits.items()):
        for method, est in fitted.items():
            with_y = None if method == "VaDE" else est.predict(x, y)
            clustering_scores(res, ds, method, split, 4, truth, est.predict(x), with_y)
            if method != "VaDE":
                res.add(ds, method, "class_acc", split, _class_acc(est, x, y), 4)
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
              "effective": {m: _effective(e) for m, e in fitted.items()},
              "seconds_per_epoch": {m: round(s / _epochs_run(fitted[m]), 2) for m, s in seconds.items()}}
    notes = [f"blend: {blend}(digit, {alpha} x grey CIFAR crop) on half of each digit's images"]
    notes += _override_note(overrides)
    return finish("mnist", command, reduced, started, res, out, config, figures, log,
                  extra={"confusion": confusion}, notes=notes)


def _confusion_figure(confusion: dict):
    keys = ("VaDE", "DGC")
    fig = _figure(11, 4.8)
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
    fig = _figure(per_row * 0.9, 2 * 4 * 0.95)
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
        x_tr, y_tr = _subset([x_tr, y_tr], subset, seed)
        x_te, y_te = _subset([x_te, y_te], None if subset is None else -(-subset // 4), seed + 1)
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
        x, y = _subset([x, y], subset, seed)
        x_tr, x_te, y_tr, y_te = split_svhn_subset(x, y, test_fraction, random_state=seed)
        description = (f"{path.name}: {len(x)} images split {1 - test_fraction:.0%}/"
                       f"{test_fraction:.0%} into train/test with split_svhn_subset(seed={seed})")
        standard = False

    def images(x):  # (n, 32, 32, 3) uint8 -> (n, 3, 32, 32) float32 in [0, 1], as the paper
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0

    return images(x_tr), y_tr, images(x_te), y_te, description, standard


def run_svhn(data_dir: Path = SHARED_DATA / "svhn", clusters: tuple = (10,), subset: int | None = None,
             epochs: int = 150, seed: int = 0, test_fraction: float = 0.2, use_extra: bool = True,
             init: str | None = None, device: str = "auto", out: Path = DEFAULT_OUT,
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
               + ("" if use_extra else " --no-extra") + (f" --init {init}" if init else "")
               + f" --out {out}")
    if reduced:
        log(f"REDUCED run (paper: train + extra, 150 epochs, a GPU): {command}")
    log(f"SVHN: {description}; {len(x_tr)} training, {len(x_te)} test images")
    res, ds, seconds, inits = Results(), "svhn", {}, {}
    splits = {"train": (x_tr, y_tr), "test": (x_te, y_te)}
    for k in clusters:
        params = _with_init(svhn_params(k, epochs), init) | (overrides or {})
        t0 = time.time()
        est = _fit(log, f"K={k} DGC", params, x_tr, y_tr, seed, device)
        seconds[k], inits[k] = round(time.time() - t0, 1), _effective(est)
        for split, (x, y) in splits.items():
            clustering_scores(res, ds, "DGC", split, k, y, est.predict(x), est.predict(x, y))
            res.add(ds, "DGC", "class_acc", split, _class_acc(est, x, y), k)
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
    notes += _override_note(overrides)
    return finish("svhn", command, reduced, started, res, out, config,
                  {"table1": _svhn_figure(res, clusters)}, log, notes=notes)


def _svhn_figure(res: Results, clusters):
    fig = _figure(7, 4)
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
    dgc = _fit(log, f"{ds} seed {seed} DGC", params, x[tr], y[tr], seed, device)
    vade = _fit(log, f"{ds} seed {seed} VaDE", vade_params(params), x[tr], y[tr], seed, device)
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
               + ("" if gbsg2 else " --no-gbsg2") + (f" --init {init}" if init else "")
               + f" --out {out}")
    if reduced:
        log(f"REDUCED run (full: 5 seeds, n = 3,000, default schedule, GBSG2 included): {command}")
    res, figures, effective = Results(), {}, {}
    synth_params = _with_init(survival_params(clusters, "gaussian", epochs), init) | (overrides or {})
    for seed in range(seeds):
        d = make_survival(n=n, n_clusters=clusters, random_state=seed)
        tr, _ = _split_rows(n, seed)
        x = (d.x - d.x[tr].mean(0)) / d.x[tr].std(0)
        dgc, te = survival_case(res, "synthetic", x, x, d.time.astype(np.float64), d.event, d.c,
                                clusters, synth_params, seed, device, log)
        log(f"synthetic seed {seed}: DGC test C-index "
            f"{res.value('synthetic', 'DGC', 'c_index', 'test', clusters):.3f} (mean so far)")
        if seed == 0:
            effective["synthetic"] = _effective(dgc)
            figures["synthetic-km"] = _km_figure(d.time[te], d.event[te], dgc.predict(x[te]), d.c[te],
                                                 "synthetic (test rows)")
    gb_params = None
    if gbsg2:
        for seed in range(seeds):
            tr, _ = _split_rows(686, seed)
            table = baselines.gbsg2_table(tr)
            gb_params = (_with_init(survival_params(gbsg2_clusters, table.blocks, epochs), init)
                         | (overrides or {}))
            dgc, te = survival_case(res, "gbsg2", table.x, baselines.drop_reference(table),
                                    table.time, table.event, None, gbsg2_clusters, gb_params,
                                    seed, device, log)
            if seed == 0:
                effective["gbsg2"] = _effective(dgc)
                figures["gbsg2-km"] = _km_figure(table.time[te], table.event[te],
                                                 dgc.predict(table.x[te]), None, "GBSG2 (test rows)")
    config = {"synthetic_dgc": synth_params, "vade": vade_params(synth_params),
              "gbsg2_dgc": gb_params, "dgc_effective_seed0": effective, "seeds": seeds, "n": n,
              "split": "80/20 seeded per seed", "cox": "lifelines CoxPHFitter(penalizer=0.01); "
              "KMeans/GMM/VaDE c_index = Cox on the features plus one-hot clusters"}
    return finish("survival", command, reduced, started, res, out, config, figures, log,
                  notes=_override_note(overrides))


def _km_figure(time_, event, labels, truth, title):
    from lifelines import KaplanMeierFitter

    panels = [("DGC clusters (no y)", labels)] + ([("true clusters", truth)] if truth is not None else [])
    fig = _figure(6 * len(panels), 4.5)
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


# =========================================================================== commands

Out = Annotated[Path, typer.Option(help="Folder for the JSON, markdown and PNG files.")]
Init = Annotated[str | None, typer.Option(
    help="Mixture initialisation for DGC (auto, gmm, flat, ygmm); default: the estimator's.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
Threads = Annotated[int | None, typer.Option(
    min=1, help="CPU threads for torch and scikit-learn; 1 is fastest on a busy shared machine.")]


@contextmanager
def cpu_threads(threads: int | None):
    """Limit torch's and the BLAS/OpenMP pools' threads for the duration (None: leave as is)."""
    if threads is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def _run(function, threads: int | None = None, **kwargs) -> dict:
    """Call a bench; user mistakes (missing files, bad options) become one line and exit 1."""
    log = Log()
    try:
        with cpu_threads(threads):
            return function(log=log, **kwargs)
    except (FileNotFoundError, ValueError) as err:
        log(f"[red]error:[/red] {err}")
        raise typer.Exit(code=1) from None


def _clusters(text: str) -> tuple:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise typer.BadParameter("numbers of clusters must be positive integers")
    return values


@bench_app.command("pacman")
def pacman_command(
    seeds: Annotated[int, typer.Option(min=1, help="Seeds (data split and model); paper-sized: 10.")] = 10,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs (paper: 80).")] = 80,
    n_per_annulus: Annotated[int, typer.Option(min=4, help="Points per annulus (paper: 10,000).")] = 10_000,
    n_train_per_annulus: Annotated[int, typer.Option(min=2, help="Training points per annulus (paper: 7,500).")] = 7_500,
    init: Init = None, device: Device = "auto", threads: Threads = None, out: Out = DEFAULT_OUT,
):
    """Pacman (Sec. 5.2, B.2): two close annuli told apart by their responses' trends."""
    _run(run_pacman, seeds=seeds, epochs=epochs, n_per_annulus=n_per_annulus,
         n_train_per_annulus=min(n_train_per_annulus, n_per_annulus - 1), init=init,
         device=device, threads=threads, out=out)


@bench_app.command("mnist")
def mnist_command(
    data_dir: Annotated[Path, typer.Option(help="Folder with the four MNIST IDX files (.gz or not).")] = SHARED_DATA / "mnist",
    cifar_dir: Annotated[Path, typer.Option(help="CIFAR-10: an .npz (x, y) or the python batches.")] = SHARED_DATA / "cifar10",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs (paper: 100).")] = 100,
    subset: Annotated[int | None, typer.Option(min=8, help="Cap each split at N images (reduced run).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the backgrounds, the subset and the models.")] = 0,
    blend: Annotated[str, typer.Option(help="max: max(digit, alpha*background); add: clipped sum.")] = "max",
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Background intensity.")] = 0.5,
    init: Init = None, device: Device = "auto", threads: Threads = None, out: Out = DEFAULT_OUT,
):
    """Noisy MNIST (Sec. 5.1, B.1): DGC, VaDE and DGC without decoder, K = 4 (digit x background)."""
    _run(run_mnist, data_dir=data_dir, cifar_dir=cifar_dir, epochs=epochs, subset=subset,
         seed=seed, blend=blend, alpha=alpha, init=init, device=device, threads=threads, out=out)


@bench_app.command("svhn")
def svhn_command(
    data_dir: Annotated[Path, typer.Option(help="train_32x32.mat + test_32x32.mat (+ extra), or one .mat file to split.")] = SHARED_DATA / "svhn",
    clusters: Annotated[str, typer.Option(help="Comma-separated K values; 1,5,10,15,20,50,100 is Table 1.")] = "10",
    subset: Annotated[int | None, typer.Option(min=10, help="Use N images: N training + N/4 test from the standard files, or N before the split of one file.")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs (paper: 150).")] = 150,
    seed: Annotated[int, typer.Option(help="Seed of the subset, the split and the models.")] = 0,
    extra: Annotated[bool, typer.Option(help="Train on extra_32x32.mat too, as the paper.")] = True,
    init: Init = None, device: Device = "auto", threads: Threads = None, out: Out = DEFAULT_OUT,
):
    """SVHN (Sec. 5.3, B.3, Table 1): classification and clustering accuracy against K."""
    _run(run_svhn, data_dir=data_dir, clusters=_clusters(clusters), subset=subset, epochs=epochs,
         seed=seed, use_extra=extra, init=init, device=device, threads=threads, out=out)


@bench_app.command("survival")
def survival_command(
    seeds: Annotated[int, typer.Option(min=1, help="Seeds (data, split and models).")] = 5,
    n: Annotated[int, typer.Option(min=50, help="Rows of the synthetic data set.")] = 3000,
    clusters: Annotated[int, typer.Option(min=1, help="True and fitted clusters, synthetic.")] = 3,
    gbsg2_clusters: Annotated[int, typer.Option(min=1, help="Fitted clusters on GBSG2.")] = 2,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override the default schedule.")] = None,
    gbsg2: Annotated[bool, typer.Option(help="Also run GBSG2 (lifelines' bundled copy).")] = True,
    init: Init = None, device: Device = "auto", threads: Threads = None, out: Out = DEFAULT_OUT,
):
    """Survival: synthetic Weibull clusters (VaDeSC-style) and GBSG2 against Cox PH, clustering + Cox."""
    _run(run_survival, seeds=seeds, n=n, clusters=clusters, gbsg2_clusters=gbsg2_clusters,
         epochs=epochs, gbsg2=gbsg2, init=init, device=device, threads=threads, out=out)
