"""Shared pieces of the benches: result rows, files, the run log, fitting helpers."""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dgc_cli import metrics

METHODS = ("DGC", "VaDE", "DGC-no-decoder", "KMeans", "GMM", "Spectral", "Agglomerative", "CoxPH")
METRICS = ("cluster_acc", "cluster_acc_unlabeled", "purity", "nmi", "ari", "class_acc",
           "c_index", "logrank_p")
DEFAULT_OUT = Path("benchmarks/results")
SHARED_DATA = Path("../shared/data")  # where these machines keep the offline copies

bench_app = typer.Typer(
    help="Reproduce the paper's experiments (Pacman, noisy MNIST, SVHN, survival) next to "
         "baselines; each writes JSON, a markdown table and PNG figures into --out.",
    no_args_is_help=True)


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
                    progress.update(task, description=f"{label}{_run(event)} {event['stage']}",
                                    completed=event["epoch"], total=event["epochs"])
                yield update
            return
        started = time.time()

        def line(event):
            name = f"{label}{_run(event)}"
            if event["stage"] == "init":
                self.console.print(f"  {name} mixture initialised ({event.get('init')})")
            elif event["epoch"] % 10 == 0 or event["epoch"] == event["epochs"]:
                self.console.print(f"  {name} {event['stage']} {event['epoch']}/{event['epochs']}"
                                   f" loss {event['loss']:.4g} ({time.time() - started:.0f} s)")
        yield line


def _run(event: dict) -> str:
    """' run N' for a fit's second and later runs (restarts and init strategies, which may
    train side by side), so that interleaved progress lines say whose they are."""
    return f" run {event['run'] + 1}" if event.get("run") else ""


def fit_dgc(log: Log, label: str, params: dict, x, y, seed: int, device: str):
    from dgc_cli import DGC

    with log.fitting(label) as callback:
        return DGC(**params, device=device, random_state=seed).fit(x, y, callback=callback)


def effective_params(est) -> dict:
    """All parameters of a fitted DGC and the schedule it resolved (defaults included)."""
    import dataclasses

    return {"params": _jsonable(est.get_params()), "schedule": dataclasses.asdict(est.schedule_),
            "init": est.init_}


def epochs_run(est) -> int:
    """Pre-training plus training epochs of every run a fit made (restarts included)."""
    sched = est.schedule_
    pre = sched.pretrain_epochs if sched.use_decoder else 0
    return max(1, (sched.epochs + pre) * max(1, len(getattr(est, "init_report_", [])) or 1))


def with_init(params: dict, init: str | None, precision: str = "32", jobs: int = 1) -> dict:
    """The bench's settings with the command line's --init, --precision and --jobs."""
    params = params if init is None else {**params, "init": init}
    params = params if jobs == 1 else {**params, "n_jobs": jobs}
    return params if precision == "32" else {**params, "precision": precision}


def option_flags(init: str | None, precision: str = "32", jobs: int = 1) -> str:
    """--init, --precision and --jobs as they were given, for the recorded command."""
    return (f" --init {init}" if init else "") + \
        (f" --precision {precision}" if precision != "32" else "") + \
        (f" --jobs {jobs}" if jobs != 1 else "")


def override_note(overrides: dict | None) -> list:
    """Runs with DGC parameters changed from the Python API are not the paper's: say so."""
    if not overrides:
        return []
    return [f"DGC parameters overridden from the Python API (run counts as reduced): {overrides}"]


def new_figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas, without pyplot (no global backend state)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


