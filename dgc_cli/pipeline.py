"""The work behind `dgc fit`, `dgc assign`, `dgc report` and `dgc demo`, as plain functions.

The command line only parses options and shows progress; everything here can be called from
Python or a test. User mistakes surface as `InputError` before anything is written, and every
output is written under a temporary name and renamed into place, so a failed run leaves `--out`
as it was.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from dgc_cli import __version__
from dgc_cli.tabular import (
    TASKS,
    InputError,
    TablePreprocessor,
    check_enough_rows,
    check_features,
    drop_uninformative,
    infer_task,
    iter_table,
    plan_columns,
    read_table,
    require_columns,
    response_array,
    response_columns,
    split_names,
    suggest,
    table_columns,
    table_stream,
    validate_response,
)

SCHEMA_FORMAT = 1
INITS = ("auto", "gmm", "flat", "ygmm")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("32", "bf16")
# `dgc demo`: GBSG2 with a short schedule that fits in well under two minutes on two CPU cores.
# init: flat, whose clusters separate survival on the held-out rows here (log-rank p 1e-10 from
# the features alone); init="auto" keeps gmm on this table by its training-row goal score, and
# gmm's held-out log-rank p is 0.56 (measured with the defaults of this version, seed 0).
DEMO = {"time": "time", "event": "cens", "task": "survival", "clusters": "3", "epochs": 60,
        "pretrain_epochs": 15, "batch_size": 128, "init": "flat", "seed": 0}


class SilentUI:
    """What the pipeline tells the user; the CLI passes a rich implementation."""

    def note(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass

    def training(self, label: str):
        """Context manager yielding the estimator's progress callback (or None)."""
        return nullcontext(None)


# ---------------------------------------------------------------------------------------------
# Settings


_NUMBERS = {"val_fraction": float, "lr": float, "epochs": int, "pretrain_epochs": int,
            "batch_size": int, "latent_dim": int, "seed": int, "restarts": int, "jobs": int}


@dataclass
class FitSettings:
    """Everything `dgc fit` can be told, from options or a TOML file."""

    target: str | None = None
    time: str | None = None
    event: str | None = None
    task: str = "auto"
    features: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    id: str | None = None
    clusters: str | None = None
    val_fraction: float = 0.2
    epochs: int | None = None
    pretrain_epochs: int | None = None
    lr: float = 1e-3
    batch_size: int | None = None
    latent_dim: int = 10
    encoder: list[int] = field(default_factory=lambda: [128, 64])
    init: str = "auto"
    restarts: int = 1
    jobs: int = 1
    device: str = "auto"
    precision: str = "32"
    compile: bool = False
    seed: int = 0
    csv: bool = False

    @classmethod
    def merge(cls, config: dict | None = None, **options) -> FitSettings:
        """Defaults, then `config` (a TOML table), then options that are not None."""
        names = {f.name for f in fields(cls)}
        values = {}
        for key, value in (config or {}).items():
            name = key.replace("-", "_")
            if name not in names:
                raise InputError(f"unknown setting '{key}' in the config file"
                                 f"{suggest(name, sorted(names))}")
            values[name] = value
        for name, kind in _NUMBERS.items():  # TOML values arrive untyped by the CLI
            value = values.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    kind is int and value != int(value)):
                raise InputError(f"setting '{name}' in the config file must be "
                                 f"{'a whole number' if kind is int else 'a number'}, "
                                 f"got {value!r}")
            values[name] = kind(value)
        values.update({k: v for k, v in options.items() if v is not None and v != []})
        for name in ("features", "exclude"):
            values[name] = split_names(values.get(name))
        if "encoder" in values:
            values["encoder"] = parse_widths(values["encoder"])
        if "clusters" in values:
            values["clusters"] = str(values["clusters"])
        if "precision" in values:
            values["precision"] = str(values["precision"])
        if not isinstance(values.get("compile", False), bool):
            raise InputError(f"setting 'compile' in the config file must be true or false, "
                             f"got {values['compile']!r}")
        return cls(**values).checked()

    def checked(self) -> FitSettings:
        if self.task not in ("auto", *TASKS):
            raise InputError(f"unknown task '{self.task}'; use auto, {', '.join(TASKS)}")
        if self.init not in INITS:
            raise InputError(f"unknown init '{self.init}'; use {', '.join(INITS)}")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise InputError(f"unknown device '{self.device}'; use {', '.join(DEVICES)}")
        check_precision(self.precision)
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("epochs", "pretrain_epochs", "batch_size", "latent_dim", "restarts"):
            value = getattr(self, name)
            least = 0 if name == "pretrain_epochs" else 1
            if value is not None and value < least:
                raise InputError(f"--{name.replace('_', '-')} must be at least {least}, "
                                 f"got {value}")
        if not self.lr > 0:
            raise InputError(f"--lr must be positive, got {self.lr}")
        check_jobs(self.jobs)
        return self


def read_config(path: str | os.PathLike) -> dict:
    """The settings in a TOML file: top-level keys, or those of a [fit] table."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise InputError("--config needs Python 3.11+ or the 'tomli' package") from None
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such config file")
    try:
        config = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid TOML ({err})") from None
    return config.get("fit", config) if isinstance(config.get("fit"), dict) else config


def parse_widths(value) -> list[int]:
    try:
        widths = [int(w) for w in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        raise InputError(f"--encoder takes widths like 128,64, got {value!r}") from None
    if not widths or min(widths) < 1:
        raise InputError(f"--encoder takes positive widths like 128,64, got {value!r}")
    return widths


def parse_clusters(text: str | int | None) -> list[int]:
    """'3' -> [3]; '2..8' -> [2, ..., 8]; InputError for anything else or K < 1."""
    if text is None or str(text).strip() == "":
        raise InputError("give the number of clusters: --clusters K, or a range such as 2..8")
    text = str(text).strip()
    single = re.fullmatch(r"-?\d+", text)
    span = re.fullmatch(r"(-?\d+)\s*\.\.\s*(-?\d+)", text)
    if single:
        ks = [int(text)]
    elif span:
        lo, hi = int(span.group(1)), int(span.group(2))
        if lo > hi:
            raise InputError(f"--clusters range '{text}' runs backwards; write it as {hi}..{lo}")
        ks = list(range(lo, hi + 1))
    else:
        raise InputError(f"--clusters takes an integer or a range like 2..8, got '{text}'")
    if ks[0] < 1:
        raise InputError(f"--clusters must be at least 1, got {ks[0]}")
    return ks


# ---------------------------------------------------------------------------------------------
# Writing atomically


def _is_replaceable(out: Path) -> bool:
    """An existing --out may be replaced only when it is empty or looks like dgc output."""
    return not any(out.iterdir()) or any(
        (out / name).exists() for name in ("metrics.json", "report.html", "model/config.json"))


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `out`, on failure it vanishes."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    if out.is_dir() and not _is_replaceable(out):
        raise InputError(f"--out {out} exists and is not a dgc output folder; choose another")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(_json_ready(data), indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# The model and its table schema


def _estimator(settings: FitSettings, k: int, task: str, blocks, seed: int):
    from dgc_cli import DGC

    return DGC(n_clusters=k, task=task, latent_dim=settings.latent_dim,
               encoder=tuple(settings.encoder), epochs=settings.epochs,
               pretrain_epochs=settings.pretrain_epochs, batch_size=settings.batch_size,
               lr=settings.lr, init=settings.init, n_init=settings.restarts, n_jobs=settings.jobs,
               x_likelihood=blocks, device=settings.device, precision=settings.precision,
               compile=settings.compile, random_state=seed)


def check_precision(precision) -> str:
    """'32' or 'bf16' (bf16 autocast on CUDA and CPU; MPS runs in float32)."""
    if str(precision) not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'; use 32 or bf16")
    return str(precision)


def check_jobs(jobs: int) -> int:
    """A --jobs value: at least 1, or -1 for one per core."""
    if jobs < 1 and jobs != -1:
        raise InputError(f"--jobs must be at least 1, or -1 for one per core, got {jobs}")
    return jobs


def cpu_has_bf16() -> bool | None:
    """Whether this CPU runs bf16 matmuls natively (AMX or AVX512-BF16); None where the
    flags cannot be read (not Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "amx_bf16" in flags or "avx512_bf16" in flags


def bf16_warning(device: str, precision: str) -> str | None:
    """A warning for --precision bf16 on a CPU that would emulate bf16 (slower than float32)."""
    from dgc_cli.estimator import resolve_device

    if precision != "bf16" or resolve_device(device).type != "cpu" or cpu_has_bf16() is not False:
        return None
    return ("--precision bf16 on this CPU is emulated (no AMX or AVX512-BF16) and will be "
            "slower than --precision 32")


def check_device(device: str) -> None:
    from dgc_cli.estimator import resolve_device

    try:
        resolve_device(device)
    except ValueError as err:
        raise InputError(str(err)) from None


def load_model(model_dir: str | os.PathLike, device: str = "auto"):
    """(estimator, schema) from a folder written by `dgc fit` (its out folder or model/)."""
    from dgc_cli import DGC

    folder = Path(model_dir)
    if (folder / "model" / "config.json").is_file():
        folder = folder / "model"
    check_device(device)
    try:
        model = DGC.load(folder, device=device)
    except (FileNotFoundError, ValueError) as err:
        raise InputError(str(err).splitlines()[0]) from None
    except (KeyError, TypeError) as err:
        raise InputError(f"{folder}: the model config is incomplete or corrupt ({err})") from None
    schema = getattr(model, "extra_", {}).get("dgc_cli")
    if not isinstance(schema, dict) or schema.get("format") != SCHEMA_FORMAT:
        raise InputError(f"{folder}: not written by `dgc fit` of a compatible version "
                         "(no table schema in config.json)")
    try:
        pre = TablePreprocessor.from_dict(schema["preprocessor"])
    except (KeyError, ValueError) as err:
        raise InputError(f"{folder}: the saved preprocessing is corrupt ({err})") from None
    return model, pre, schema


def assignment_frame(model, pre: TablePreprocessor, schema: dict, df: pd.DataFrame,
                     use_response: bool, row_start: int = 0,
                     x: np.ndarray | None = None) -> pd.DataFrame:
    """Cluster, posterior and prediction for each row of `df`, in order.

    Rows with their response use Eq. 8 when `use_response`; the others use Eq. 9. The
    prediction is always from x alone. `x`, when given, is `pre.transform(df)` already made.
    """
    task, response = schema["task"], schema["response"]
    x = pre.transform(df) if x is None else x
    out = pd.DataFrame(index=range(len(df)))
    id_col = schema.get("id")
    if id_col and id_col in df:
        out[id_col] = df[id_col].to_numpy()
    else:  # no id column: the 0-based row number in the table
        out["row"] = np.arange(row_start, row_start + len(df))
    probs = np.zeros((len(df), model.n_clusters))
    used = np.zeros(len(df), dtype=bool)
    if use_response:
        used = df[response].notna().all(axis=1).to_numpy()
        if used.any():
            rows, _ = validate_response(df.loc[used, response], task, response, fitting=False)
            x_used = x if used.all() else x[used]
            try:
                probs[used] = model.predict_proba(x_used, response_array(rows, task, response))
            except ValueError as err:
                raise InputError(f"response column '{response[0]}': {err}; "
                                 "use --no-use-response to assign from the features alone") from None
    if (~used).any():
        probs[~used] = model.predict_proba(x[~used])
    out["cluster"] = probs.argmax(axis=1)
    for k in range(model.n_clusters):
        out[f"prob_{k}"] = probs[:, k]
    out["used_response"] = used
    pred = model.predict_response(x)
    if task == "categorical":
        classes = np.asarray(model.classes_)
        out[f"pred_{response[0]}"] = classes[np.asarray(pred).argmax(axis=1)]
        for j, c in enumerate(classes):
            out[f"proba_{c}"] = pred[:, j]
    elif task == "continuous":
        out[f"pred_{response[0]}"] = np.asarray(pred, dtype=float).reshape(len(df))
    else:
        out["risk"] = pred
        out["pred_median_time"] = model.predict_median_time(x)
    return out


def write_assignments(model, pre: TablePreprocessor, schema: dict, df: pd.DataFrame,
                      x: np.ndarray, paths: list[Path], chunk: int = 65536) -> np.ndarray:
    """The assignment rows of the whole table (`x` is its transform), made and written
    `chunk` rows at a time to each of `paths` (Parquet, or CSV by suffix): the full
    assignment table is never held. Returns every row's cluster."""
    labels = np.empty(len(df), dtype=np.int64)
    with ExitStack() as stack:
        writers = [stack.enter_context(table_stream(path)) for path in paths]
        for start in range(0, len(df), chunk):
            rows = slice(start, start + chunk)
            frame = assignment_frame(model, pre, schema, df.iloc[rows], use_response=True,
                                     row_start=start, x=x[rows])
            for write in writers:
                write(frame)
            labels[rows] = frame["cluster"].to_numpy()
    return labels


# ---------------------------------------------------------------------------------------------
# Metrics


def validation_metrics(model, task: str, x: np.ndarray, y: np.ndarray) -> dict:
    """Predictive quality of y from x alone on held-out rows, with the held-out ELBO."""
    from dgc_cli import metrics

    if len(x) == 0:
        return {}
    out = {"rows": len(x), "log_predictive_y": model.log_predictive_y(x, y),
           "elbo": model.score(x, y)}
    pred = model.predict_response(x)
    if task == "categorical":
        labels = np.asarray(model.classes_)[np.asarray(pred).argmax(axis=1)]
        out["accuracy"] = metrics.classification_accuracy(y, labels)
    elif task == "continuous":
        out["rmse"], out["r2"] = metrics.rmse(y, pred), metrics.r2(y, pred)
    else:
        out["c_index"] = metrics.c_index(y[:, 0], y[:, 1], pred)
        # Clusters from the features alone (Eq. 9), as new patients would get them.
        out["logrank_p_value"] = metrics.logrank(y[:, 0], y[:, 1], model.predict(x)).p_value
    return out


def gmm_agreement(x: np.ndarray, labels: np.ndarray, k: int, seed: int) -> float:
    """ARI between the clusters and an unsupervised Gaussian mixture on the same features."""
    from sklearn.mixture import GaussianMixture

    from dgc_cli import metrics

    if k == 1:
        return 1.0
    rng = np.random.default_rng(seed)
    sample = x if len(x) <= 20000 else x[rng.choice(len(x), 20000, replace=False)]
    gmm = GaussianMixture(k, covariance_type="diag", random_state=seed, n_init=2,
                          reg_covar=1e-4).fit(sample)
    # predict in chunks: scikit-learn works on a float64 copy and its square
    chunk = 65536
    gmm_labels = np.concatenate([gmm.predict(x[i:i + chunk]) for i in range(0, len(x), chunk)])
    return metrics.ari(labels, gmm_labels)


def logrank_summary(time, event, labels) -> dict:
    from dgc_cli import metrics

    r = metrics.logrank(time, event, labels)
    return {"test_statistic": r.test_statistic, "p_value": r.p_value,
            "degrees_of_freedom": r.degrees_of_freedom}


# ---------------------------------------------------------------------------------------------
# dgc fit


@dataclass
class FitResult:
    out: Path
    n_clusters: int
    task: str
    task_reason: str
    metrics: dict
    profiles: list[dict]
    k_selection: list[dict] | None
    k_reason: str | None
    warnings: list[str]


def _split(n: int, task: str, y: np.ndarray, fraction: float, seed: int):
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    n_val = int(round(n * fraction))
    if n_val == 0:
        return idx, idx[:0]
    strata = {"categorical": y, "survival": y[:, 1] if y.ndim == 2 else None}.get(task)
    if strata is not None:
        _, counts = np.unique(strata, return_counts=True)
        if counts.min() < 2 or n_val < len(counts):
            strata = None
    train, val = train_test_split(idx, test_size=n_val, random_state=seed, stratify=strata)
    if task == "categorical":  # every class trains: a class seen only in validation has no head
        missing = np.setdiff1d(y[val], y[train])
        move = np.array([val[np.flatnonzero(y[val] == c)[0]] for c in missing], dtype=int)
        train, val = np.concatenate([train, move]), np.setdiff1d(val, move)
    return np.sort(train), np.sort(val)


def to_table_order(x: np.ndarray, order: np.ndarray, n_head: int,
                   chunk: int = 65536) -> np.ndarray:
    """Put the rows of `x` back in table order, in place: row i of `x` is table row
    `order[i]`, where `order[:n_head]` increases. Only the tail `x[n_head:]` is copied aside.

    The head's destinations satisfy order[i] >= i, so moving its rows from the last chunk
    to the first never overwrites a row that is still to be moved.
    """
    tail = x[n_head:].copy()
    for stop in range(n_head, 0, -chunk):
        start = max(0, stop - chunk)
        x[order[start:stop]] = x[start:stop]  # numpy buffers the overlap within a chunk
    x[order[n_head:]] = tail
    return x


def _select_k(settings, ks, task, blocks, data, ui):
    """Fit each K; keep the model whose clusters best explain held-out y from x alone."""
    from dgc_cli import metrics

    x_tr, y_tr, x_va, y_va = data
    table, best = [], None
    for k in ks:
        with ui.training(f"K={k}") as callback:
            model = _estimator(settings, k, task, blocks, settings.seed).fit(
                x_tr, y_tr, callback, selection_data=(x_va, y_va))
        with ui.training(f"K={k} (second seed, stability)") as callback:
            twin = _estimator(settings, k, task, blocks, settings.seed + 1).fit(
                x_tr, y_tr, callback, selection_data=(x_va, y_va))
        row = {"k": k, "log_predictive_y": model.log_predictive_y(x_va, y_va),
               "elbo": model.score(x_va, y_va),
               "stability_ari": metrics.ari(model.predict(x_va), twin.predict(x_va))}
        table.append(row)
        if best is None or row["log_predictive_y"] > best[1]["log_predictive_y"]:
            best = (model, row)
    model, row = best
    others = sorted((r for r in table if r is not row), key=lambda r: -r["log_predictive_y"])
    reason = (f"K={row['k']} explains the held-out response best: mean log p(y|x) "
              f"{row['log_predictive_y']:.3f}")
    if others:
        reason += f" (next: K={others[0]['k']} with {others[0]['log_predictive_y']:.3f})"
    return model, table, reason


def fit_table(data: str | os.PathLike | None, settings: FitSettings, out: str | os.PathLike,
              ui: SilentUI | None = None, frame: pd.DataFrame | None = None,
              source: str | None = None, copy_data_as: str | None = None) -> FitResult:
    """Read, validate, fit, evaluate and write model/, assignments, metrics.json and the report.

    `frame` replaces reading `data` (the demo); `copy_data_as` writes the table into the output.
    """
    from dgc_cli import report

    ui = ui or SilentUI()
    warnings: list[str] = []  # shown once the input has passed every check
    s = settings
    response = response_columns(s.target, s.time, s.event)
    ks = parse_clusters(s.clusters)
    if s.task == "survival" and not s.time:
        raise InputError("--task survival needs --time COL and --event COL")
    if s.task in ("categorical", "continuous") and not s.target:
        raise InputError(f"--task {s.task} needs --target COL")
    if len(ks) > 1 and s.val_fraction <= 0:
        raise InputError("a --clusters range is chosen on held-out rows; set --val-fraction > 0")
    check_device(s.device)
    source = source or str(data)
    names = table_columns(data) if frame is None else [str(c) for c in frame.columns]
    plan = plan_columns(names, response=response, id_col=s.id, features=s.features,
                        exclude=s.exclude, source=source)
    df = read_table(data, plan.needed) if frame is None else frame[plan.needed]
    df.index = pd.RangeIndex(len(df))  # positions as labels, without copying the data
    check_features(df, plan.features)
    features, dropped = drop_uninformative(df, plan.features)
    warnings += [f"not using column '{column}': {why}" for column, why in dropped]
    warnings += [w for w in [bf16_warning(s.device, s.precision)] if w]
    if s.task == "auto":
        task, reason = infer_task(df, s.target, s.time, s.event)
    else:
        task, reason = s.task, "given with --task"
    labelled, n_dropped = validate_response(df[list(response)], task, response)
    what = " and ".join(f"'{c}'" for c in response)
    if n_dropped:
        warnings.append(f"{n_dropped} rows with missing {what} are left out of training "
                        "(they are still assigned, from their features)")
    if ks[-1] > len(labelled):
        raise InputError(f"--clusters {ks[-1]} exceeds the {len(labelled)} usable rows")
    check_enough_rows(len(labelled), ks[-1], n_dropped, what)
    ui.note(f"task: {task} ({reason})")
    for text in warnings:
        ui.warn(text)

    y_all = response_array(labelled, task, response)
    train, val = _split(len(labelled), task, y_all, s.val_fraction, s.seed)
    where = labelled.index.to_numpy()  # table positions of the rows with a response
    pre = TablePreprocessor().fit(df, features, rows=where[train])
    blocks = pre.likelihood_blocks()
    # x is made once, its rows ordered training | validation | rows without a response, so
    # that the training and validation sets are views of it, not copies; the table's feature
    # columns are let go as x fills (they are kept for the demo, which copies the table out)
    order = np.concatenate([where[train], where[val],
                            np.setdiff1d(np.arange(len(df)), where, assume_unique=True)])
    x_ordered = pre.transform(df, rows=order, consume=not copy_data_as)
    x_tr, x_va = x_ordered[:len(train)], x_ordered[len(train):len(where)]
    y_tr, y_va = y_all[train], y_all[val]
    encoded_width = x_ordered.shape[1]

    if len(ks) > 1:
        model, k_table, k_reason = _select_k(s, ks, task, blocks, (x_tr, y_tr, x_va, y_va), ui)
    else:
        with ui.training(f"K={ks[0]}") as callback:
            # restarts and init strategies are compared on the validation rows
            model = _estimator(s, ks[0], task, blocks, s.seed).fit(
                x_tr, y_tr, callback, selection_data=(x_va, y_va))
        k_table, k_reason = None, None
    k = model.n_clusters
    elbo_terms = {"train": model.elbo_terms(x_tr, y_tr),
                  "validation": model.elbo_terms(x_va, y_va) if len(val) else None}
    validation = validation_metrics(model, task, x_va, y_va) or None
    del x_tr, x_va
    x_table = to_table_order(x_ordered, order, len(train))
    x_all = x_table if len(where) == len(df) else x_table[where]  # the rows with a response

    schema = {"format": SCHEMA_FORMAT, "preprocessor": pre.to_dict(), "task": task,
              "task_reason": reason, "response": response, "target": s.target, "time": s.time,
              "event": s.event, "id": s.id, "features": features,
              "dropped": [list(d) for d in dropped], "source": source, "seed": s.seed,
              "val_fraction": s.val_fraction, "k_selection": k_table, "k_reason": k_reason}
    out = Path(out)
    with atomic_folder(out) as tmp:
        model.save(tmp / "model", extra_config={"dgc_cli": schema})
        table_labels = write_assignments(
            model, pre, schema, df, x_table,
            [tmp / "assignments.parquet"] + ([tmp / "assignments.csv"] if s.csv else []))
        labels = table_labels[where]
        sizes = np.bincount(table_labels, minlength=k)
        metrics = {
            "dgc_version": __version__, "data": source, "task": task, "task_reason": reason,
            "response": response, "n_clusters": k, "init": getattr(model, "init_", None),
            "runs": getattr(model, "init_report_", None),  # every run, its seed and criteria
            "rows": {"total": len(df), "with_response": len(labelled),
                     "dropped_missing_response": n_dropped, "train": len(train),
                     "validation": len(val)},
            "features": {"used": features,
                         "dropped": [{"column": c, "reason": r} for c, r in dropped],
                         "encoded_width": encoded_width},
            "cluster_sizes": {str(i): int(n) for i, n in enumerate(sizes)},
            "elbo_terms": elbo_terms,
            "validation": validation,
            "ari_vs_gmm": gmm_agreement(x_all, labels, k, s.seed),
            "k_selection": k_table, "k_choice": k_reason,
        }
        if task == "survival":
            metrics["logrank"] = logrank_summary(y_all[:, 0], y_all[:, 1], labels)
        write_json(tmp / "metrics.json", metrics)
        if copy_data_as:
            df.to_csv(tmp / copy_data_as, index=False)
        profiles = report.write_report(tmp, report.ReportInput(
            title=f"DGC clusters of {Path(source).name}", source=source, task=task,
            response=response, labels=labels, x=x_all, feature_names=pre.feature_names_out,
            preprocessor=pre.to_dict(), y=labelled[response],
            latent=model.transform(x_all[report.latent_rows(len(x_all))]),
            history=list(getattr(model, "history_", []) or []), metrics=metrics,
            k_selection=k_table, k_reason=k_reason, warnings=warnings))
    return FitResult(out, k, task, reason, metrics, profiles, k_table, k_reason, warnings)


# ---------------------------------------------------------------------------------------------
# dgc assign


@dataclass
class AssignResult:
    out: Path
    rows: int
    used_response: bool
    sizes: list[int]


def _assign_columns(schema: dict, pre: TablePreprocessor, names: list[str], source: str,
                    use_response: bool | None) -> tuple[list[str], bool]:
    require_columns(names, pre.input_columns, source, what="model feature column")
    response = schema["response"]
    present = all(c in names for c in response)
    use = present if use_response is None else use_response
    if use and not present:
        missing = [c for c in response if c not in names]
        raise InputError(f"--use-response needs the response column(s) "
                         f"{', '.join(repr(c) for c in missing)} in {source}")
    id_col = schema.get("id")
    columns = ([id_col] if id_col and id_col in names else []) + pre.input_columns
    return list(dict.fromkeys(columns + (response if use else []))), use


def assign_table(model_dir, data, out: str | os.PathLike | None = None,
                 use_response: bool | None = None, batch_rows: int = 65536,
                 device: str = "auto", on_batch: Callable[[int], None] | None = None,
                 precision: str = "32") -> AssignResult:
    """Assign the rows of `data` to the model's clusters, streaming in batches of `batch_rows`.

    Writes Parquet (or CSV when `out` ends in .csv) under a temporary name, then renames it.
    `precision` "bf16" runs the networks under bf16 autocast on CUDA or the CPU.
    """
    from dgc_cli.train import autocast

    precision = check_precision(precision)
    model, pre, schema = load_model(model_dir, device)
    source = str(data)
    names = table_columns(data)
    columns, use = _assign_columns(schema, pre, names, source, use_response)
    out = Path(out) if out else Path(f"{Path(data).name.split('.')[0]}-assignments.parquet")
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name ending in .parquet or .csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, sizes = 0, np.zeros(model.n_clusters, dtype=int)
    with table_stream(out) as write:
        for batch in iter_table(data, columns, batch_rows, text_columns=pre.text_columns):
            with autocast(model.device_, precision):
                frame = assignment_frame(model, pre, schema, batch.reset_index(drop=True), use,
                                         rows)
            write(frame)
            rows += len(frame)
            sizes += np.bincount(frame["cluster"], minlength=model.n_clusters)
            if on_batch:
                on_batch(rows)
    return AssignResult(out, rows, use, sizes.tolist())


# ---------------------------------------------------------------------------------------------
# dgc report


def report_table(model_dir, data, out: str | os.PathLike, device: str = "auto") -> Path:
    """Re-render report.md/report.html (and metrics.json) for a model and a table."""
    from dgc_cli import report

    model, pre, schema = load_model(model_dir, device)
    source = str(data)
    names = table_columns(data)
    columns, use = _assign_columns(schema, pre, names, source, None)
    df = read_table(data, columns, text_columns=pre.text_columns)
    task, response = schema["task"], schema["response"]
    assignments = assignment_frame(model, pre, schema, df, use)
    x = pre.transform(df)
    labels = assignments["cluster"].to_numpy()
    k = model.n_clusters
    metrics = {"dgc_version": __version__, "data": source, "model": str(model_dir), "task": task,
               "n_clusters": k, "rows": {"total": len(df)},
               "cluster_sizes": {str(i): int(n)
                                 for i, n in enumerate(np.bincount(labels, minlength=k))},
               "ari_vs_gmm": gmm_agreement(x, labels, k, schema.get("seed", 0))}
    y = None
    if use:
        labelled, n_dropped = validate_response(df, task, response, fitting=False)
        keep = df.index.get_indexer(labelled.index)
        x, labels, y = x[keep], labels[keep], labelled[response]
        y_arr = response_array(labelled, task, response)
        metrics["rows"].update(with_response=len(labelled), dropped_missing_response=n_dropped)
        metrics["elbo_terms"] = model.elbo_terms(x, y_arr)
        metrics["predictive"] = validation_metrics(model, task, x, y_arr)
        if task == "survival":
            metrics["logrank"] = logrank_summary(y_arr[:, 0], y_arr[:, 1], labels)
    out = Path(out)
    with atomic_folder(out) as tmp:
        write_json(tmp / "metrics.json", metrics)
        report.write_report(tmp, report.ReportInput(
            title=f"DGC clusters of {Path(source).name}", source=source, task=task,
            response=response, labels=labels, x=x, feature_names=pre.feature_names_out,
            preprocessor=pre.to_dict(), y=y, latent=model.transform(x[report.latent_rows(len(x))]),
            history=list(model.history_ or []), metrics=metrics,
            k_selection=schema.get("k_selection"), k_reason=schema.get("k_reason"),
            warnings=[] if use else ["the table has no response column: clusters are from "
                                     "the features alone (Eq. 9)"]))
    return out


# ---------------------------------------------------------------------------------------------
# dgc demo


def demo(out: str | os.PathLike, ui: SilentUI | None = None, **overrides) -> FitResult:
    """Fit GBSG2 (lifelines' breast-cancer survival data, 686 patients) with K=3."""
    from lifelines.datasets import load_gbsg2

    frame = load_gbsg2()
    if overrides.get("epochs"):
        overrides.setdefault("pretrain_epochs", max(1, overrides["epochs"] // 4))
    settings = FitSettings.merge(DEMO, **overrides)
    return fit_table(None, settings, out, ui=ui, frame=frame, source="gbsg2.csv",
                     copy_data_as="gbsg2.csv")
