"""Speed and scale figures (issue 5), measured in one run on this machine.

    python benchmarks/perf.py                       # everything, full sizes
    python benchmarks/perf.py --rows-fit 200000 --rows-assign 2000000   # reduced table sizes
    python benchmarks/perf.py --only pacman,flops   # some sections (the run counts as reduced)

Writes ``benchmarks/results/perf.json``; a run of some sections writes ``perf-SECTIONS.json``
(``perf-tables.json``), with ``-reduced`` added when a size or a seed was cut or
``--fit-epochs`` was given. One entry per figure: its value and unit, the target it is read
against, and the load average of the machine while it was measured (the machine may be shared).
No test asserts these figures. Sections:

1. ``pacman``: seconds per training epoch of the official DGC Pacman architecture at batch 128
   on 60,000 points (like for like with the official code's quoted 1.8-2.4 s), also with
   ``--compile`` and at batch 1,024; and time to quality, the wall time of a whole
   ``DGC.fit`` with dgc's Pacman settings and the test clustering accuracy it reaches.
2. ``flops``: achieved GFLOP/s of a training step of the noisy-MNIST MLP at batch 1,024 against
   the float32 matmul peak measured in the same run, and of the same step with
   ``--precision bf16`` against the bf16 matmul peak.
3. ``tables``: ``dgc fit`` on a synthetic Parquet table (1,000,000 x 50 by default), rows per
   second of training and peak RSS; ``dgc assign`` on 10,000,000 and 1,000,000 rows, rows per
   second and peak RSS. Each command runs in its own process; tables are written under
   ``--tmp`` (not into the repository) and removed at the end unless ``--keep-tables``.
4. ``gpu``: with a CUDA GPU, steps per second of the SVHN conv net in float32 and bf16 and the
   fraction of the bf16 matmul peak; without one, the entry says no GPU was available.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import dgc_cli  # noqa: F401
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dgc_cli.bench.configs import pacman_params  # noqa: E402

SECTIONS = ("pacman", "flops", "tables", "gpu")
FULL_ROWS_FIT = 1_000_000
FULL_ROWS_ASSIGN = 10_000_000
SMALL_ROWS_ASSIGN = 1_000_000
N_COLUMNS = 50

# Quoted in issue 5 (measured earlier on this machine class by someone else, not by this script).
OFFICIAL_EPOCH_SECONDS = (1.8, 2.4)
OFFICIAL_TIME_TO_99 = (8.0, 27.0)
OFFICIAL_PEAK_RSS_GB = 1.09

# dgc's Pacman settings on standardised x: the bench's config (docs/method.md), on a schedule
# for 60,000 rows: batch 2,048 at lr 0.005 with a 30 % decay every 2 epochs, 2 pre-training
# and 8 training epochs, still 3 restarts kept by agreement. Measured before adopting it
# (seeds 0-9, one thread): test accuracy with y 1.000 on all ten, 5.5-5.8 s each. Without the
# decay, a good restart ended at 0.998 on 3 of 10 seeds (the bench's schedule, batch 256 and
# 30 epochs: 73 s).
# Time to quality is measured with the runs in turn and with the three side by side
# (``n_jobs=3``): threads share the two cores better than one run's ops do (docs/performance.md).
PACMAN_DGC = {**pacman_params(), "batch_size": 2048, "lr": 5e-3, "lr_decay": 0.7,
              "lr_decay_every": 2, "epochs": 8, "pretrain_epochs": 2}
# The official code's Pacman networks: 2-128-256-256 -> z (10) -> 256-256-128 -> 2, sigmoid;
# its task network has 128 hidden units (paper, Appendix B.2).
PACMAN_OFFICIAL = dict(n_clusters=2, task="continuous", latent_dim=10, encoder=(128, 256, 256),
                       decoder=(256, 256, 128), head=(128,), activation="sigmoid",
                       x_likelihood="gaussian", init="flat", n_init=1, pretrain_epochs=0,
                       y_weight=1.0, x_log_variance=0.0)
# Noisy MNIST (Appendix B.1): 784-500-500-2000 -> z (10), mirrored decoder, Bernoulli pixels,
# a linear task net, K = 4; here at batch 1,024.
MNIST_MLP = dict(n_clusters=4, task="categorical", latent_dim=10, encoder=(500, 500, 2000),
                 decoder=(2000, 500, 500), head=(), activation="relu", x_likelihood="bernoulli",
                 init="flat", n_init=1, pretrain_epochs=0, lr=2e-3, y_weight=1.0)


# ----------------------------------------------------------------------------------- helpers

def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.strip().lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu_model()}, {os.cpu_count()} cores, {gpu}; {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads")


class Recorder:
    """Collects figures; each carries the load average before and after its measurement."""

    def __init__(self):
        self.results: list[dict] = []

    def add(self, section: str, name: str, value, unit: str, target: str | None,
            load_before: list[float], **extra) -> dict:
        entry = {"section": section, "name": name,
                 "value": None if value is None else _round(value), "unit": unit,
                 "target": target, "load_average": {"before": load_before,
                                                    "after": load_average()},
                 "torch_threads": torch.get_num_threads(), **extra}
        self.results.append(entry)
        shown = "-" if value is None else f"{_round(value)} {unit}"
        print(f"[{section}] {name}: {shown}  (load {load_before[0]} -> "
              f"{entry['load_average']['after'][0]})", flush=True)
        return entry


def _round(value):
    if isinstance(value, float):
        return float(f"{value:.4g}") if value and abs(value) < 1e5 else round(value, 1)
    return value


def epoch_times(estimator_kwargs: dict, x, y, epochs: int, seed: int = 0) -> tuple[list, float]:
    """Fit with ``epochs`` training epochs; return the seconds of each epoch after the first
    (timestamps of the end-of-epoch callbacks) and the seconds of the first one (warm-up)."""
    from dgc_cli import DGC

    stamps: list[float] = []

    def callback(event):
        if event["stage"] == "init":
            stamps.append(time.perf_counter())  # training starts after the initialisation
        elif event["stage"] == "train":
            stamps.append(time.perf_counter())

    DGC(**estimator_kwargs, epochs=epochs, device="cpu", random_state=seed).fit(x, y, callback)
    gaps = np.diff(stamps).tolist()
    return gaps[1:], gaps[0]


# ----------------------------------------------------------------------------------- 1 Pacman

def pacman_data(seed: int):
    from dgc_cli.datasets import make_pacman

    data = make_pacman(n_per_annulus=40_000, n_train_per_annulus=30_000, random_state=seed)
    mean, std = data.x_train.mean(0), data.x_train.std(0)
    return data, (data.x_train - mean) / std, (data.x_test - mean) / std


def section_pacman(rec: Recorder, seeds: int, timed_epochs: int, compile_too: bool) -> None:

    data, x_train, x_test = pacman_data(0)
    n = len(x_train)
    quoted = (f"quoted in issue 5, not measured here: official code "
              f"{OFFICIAL_EPOCH_SECONDS[0]}-{OFFICIAL_EPOCH_SECONDS[1]} s/epoch on this machine "
              "class")
    runs = [("batch 128", 128, False)]
    if compile_too:
        runs.append(("batch 128, --compile", 128, True))
    runs.append(("batch 1024", 1024, False))
    for label, batch, compiled in runs:
        load = load_average()
        gaps, first = epoch_times({**PACMAN_OFFICIAL, "batch_size": batch, "compile": compiled},
                                  x_train, data.y_train, timed_epochs + 1)
        median = statistics.median(gaps)
        target = (f"faster than the official {OFFICIAL_EPOCH_SECONDS[0]}-"
                  f"{OFFICIAL_EPOCH_SECONDS[1]} s/epoch" if batch == 128 else None)
        extra = {}
        if batch == 128:
            extra["official_quoted"] = {"seconds_per_epoch": list(OFFICIAL_EPOCH_SECONDS),
                                        "note": quoted}
            extra["speedup_vs_official_quoted"] = [round(OFFICIAL_EPOCH_SECONDS[0] / median, 2),
                                                   round(OFFICIAL_EPOCH_SECONDS[1] / median, 2)]
        if compiled:
            extra["first_epoch_seconds_with_compile"] = round(first, 1)
        rec.add("pacman", f"seconds per training epoch, official architecture, {label}", median,
                "s/epoch", target, load, rows=n, batch_size=batch, steps_per_epoch=-(-n // batch),
                ms_per_step=round(1000 * median / -(-n // batch), 3),
                epochs_timed=[round(g, 3) for g in gaps], warmup_epoch_seconds=round(first, 3),
                architecture="2-128-256-256 -> z 10 -> 256-256-128-2, sigmoid; task net 128",
                **extra)

    for seed in range(seeds):
        data, x_train, x_test = pacman_data(seed)
        for jobs in (1, PACMAN_DGC["n_init"]):
            time_to_quality(rec, seed, jobs, data, x_train, x_test)


def time_to_quality(rec: Recorder, seed: int, jobs: int, data, x_train, x_test) -> None:
    """One timed DGC.fit with the runs in turn (jobs = 1) or side by side in threads."""
    from dgc_cli import DGC
    from dgc_cli.metrics import cluster_accuracy

    load = load_average()
    finished: dict[int, float] = {}

    def callback(event):  # each run ends with its last training epoch
        if event["stage"] == "train" and event["epoch"] == event["epochs"]:
            finished[event["run"]] = time.perf_counter()

    started = time.perf_counter()
    est = DGC(**PACMAN_DGC, n_jobs=jobs, device="cpu", random_state=seed).fit(
        x_train, data.y_train, callback)
    seconds = time.perf_counter() - started
    acc_y = cluster_accuracy(data.c_test, est.predict(x_test, data.y_test))
    acc_x = cluster_accuracy(data.c_test, est.predict(x_test))
    reached = acc_y >= 0.999
    s = est.schedule_
    name = f"time to quality, seed {seed}" + (f", {jobs} runs side by side" if jobs > 1 else "")
    rec.add("pacman", name, seconds if reached else None, "s",
            f">= 3x sooner than the official's first >= 0.99 ({OFFICIAL_TIME_TO_99[0]:.0f}-"
            f"{OFFICIAL_TIME_TO_99[1]:.0f} s, quoted), at test accuracy >= 0.999", load,
            reached=reached, fit_seconds=round(seconds, 2), n_jobs=jobs,
            test_cluster_accuracy_with_y=round(acc_y, 5),
            test_cluster_accuracy_without_y=round(acc_x, 5),
            run_finished_after_seconds=[round(finished[i] - started, 2) for i in sorted(finished)],
            kept_run=next(i for i, r in enumerate(est.init_report_) if r["kept"]),
            settings={**PACMAN_DGC, "n_jobs": jobs},
            schedule={"epochs": s.epochs, "pretrain_epochs": s.pretrain_epochs,
                      "batch_size": s.batch_size, "restarts": est.n_init},
            note="wall time of the whole DGC.fit (pre-training, initialisation, every "
                 "run, selection) on standardised x; accuracy measured after the fit, "
                 "so this is an upper bound on the time to first reach it" if reached else
                 f"the target accuracy 0.999 was not reached: {acc_y:.4f} after "
                 f"{seconds:.1f} s")


# ----------------------------------------------------------------------------------- 2 FLOP/s

def matmul_peak(n: int = 4096, repeats: int = 5, dtype=torch.float32, device="cpu") -> dict:
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        started = time.perf_counter()
        torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    flop = 2 * n ** 3
    return {"best_gflops": flop / min(times) / 1e9, "median_gflops": flop / statistics.median(times) / 1e9,
            "seconds": [round(t, 4) for t in times], "n": n}


def linear_weight_count(model) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def step_times(model, x, y, batch: int, steps: int, epochs: int, precision="32",
               host_rows=False) -> list[float]:
    """Seconds per training step of dgc's own loop (dgc_cli.train.train): ``epochs`` epochs of
    ``steps`` steps; the first is warm-up and dropped. ``host_rows``: the rows stay in host
    memory and each batch goes over through pinned buffers (dgc_cli.rows)."""
    from dgc_cli.rows import Rows
    from dgc_cli.train import Schedule, train

    stamps = [time.perf_counter()]

    def callback(event):
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    sched = Schedule(epochs=epochs, pretrain_epochs=0, batch_size=batch, lr=2e-3,
                     precision=precision)
    rows = x[:batch * steps]
    if host_rows:
        rows = Rows(rows.cpu(), x.device, resident=False)
    train(model, rows, y[:batch * steps], sched, torch.Generator().manual_seed(0), callback)
    return [g / steps for g in np.diff(stamps)[1:]]


def fitted_model(params: dict, x, y, device="cpu"):
    """A DGC network of the given architecture after a 1-epoch fit on a few rows."""
    from dgc_cli import DGC

    est = DGC(**{**params, "epochs": 1, "batch_size": len(x), "device": device,
                 "random_state": 0}).fit(x, y)
    return est.model_


def step_against_peak(model, x, y, batch: int, precision: str):
    """Step seconds of dgc's loop at ``precision`` (best and median of 24 steps) and the
    matmul peak of the same dtype: the best of two 5-repeat runs, before and after the steps.
    Returns (peak before, best step, median step, best peak in GFLOP/s)."""
    dtype = torch.float32 if precision == "32" else torch.bfloat16
    before = matmul_peak(dtype=dtype)
    per_step = step_times(model, x, y, batch, steps=8, epochs=4, precision=precision)
    after = matmul_peak(dtype=dtype)
    return (before, min(per_step), statistics.median(per_step),
            max(before["best_gflops"], after["best_gflops"]))


def section_flops(rec: Recorder, batch: int = 1024) -> dict:
    rng = np.random.default_rng(0)
    x = (rng.random((batch * 8, 784)) < 0.2).astype(np.float32)
    y = rng.integers(0, 2, len(x))
    model = fitted_model(MNIST_MLP, x[:256], y[:256])
    weights = linear_weight_count(model)
    flop_step = 6 * weights * batch
    xt, yt = torch.as_tensor(x), model.head.encode(y)

    load = load_average()
    peak, best, median, peak_best = step_against_peak(model, xt, yt, batch, "32")
    rec.add("flops", "float32 matmul peak (torch.mm 4096 x 4096)", peak["best_gflops"], "GFLOP/s",
            None, load, median_gflops=round(peak["median_gflops"], 1), seconds=peak["seconds"],
            note="best of 5; the reference for the fractions below")
    achieved = flop_step / best / 1e9
    rec.add("flops", "noisy-MNIST MLP training step, batch 1024: fraction of the matmul peak",
            100 * achieved / peak_best, "%", ">= 50 % of the measured float32 matmul peak", load,
            achieved_gflops=round(achieved, 1),
            achieved_gflops_median_step=round(flop_step / median / 1e9, 1),
            matmul_peak_gflops=round(peak_best, 1),
            ms_per_step_best=round(1000 * best, 2), ms_per_step_median=round(1000 * median, 2),
            flop_per_step=flop_step, linear_weights=weights,
            counting="6 x (sum of the nn.Linear weight-matrix sizes) x batch; best step of 24 "
                     "(3 epochs of 8 steps after a warm-up epoch) against the best of two "
                     "5-repeat torch.mm peaks taken before and after",
            architecture="784-500-500-2000 -> z 10 -> 2000-500-500-784, Bernoulli, K=4, "
                         "linear task net")

    # --precision bf16: the same step with bf16 matmuls (autocast), against the bf16 peak
    load = load_average()
    _, best16, median16, peak16_best = step_against_peak(model, xt, yt, batch, "bf16")
    achieved16 = flop_step / best16 / 1e9
    rec.add("flops", "noisy-MNIST MLP training step, batch 1024, --precision bf16: fraction of "
            "the bf16 matmul peak", 100 * achieved16 / peak16_best, "%",
            ">= 50 % of the measured matmul peak (here of bf16's)", load,
            achieved_gflops=round(achieved16, 1), matmul_peak_gflops=round(peak16_best, 1),
            ms_per_step_best=round(1000 * best16, 2), ms_per_step_median=round(1000 * median16, 2),
            speedup_over_float32_step=round(best / best16, 2), flop_per_step=flop_step,
            counting="as the float32 figure; bf16 autocast on the CPU (AMX or AVX512-BF16 "
                     "where the CPU has them), z and the mixture math in float32")

    # the same counting for the Pacman network: the arithmetic floor of one epoch
    data, x_train, _ = pacman_data(0)
    pac = fitted_model(PACMAN_OFFICIAL, x_train[:256], data.y_train[:256])
    flop_epoch = 6 * linear_weight_count(pac) * len(x_train)
    rec.add("flops", "Pacman epoch arithmetic floor at the matmul peak", flop_epoch / peak_best / 1e9,
            "s/epoch", None, load_average(), gflop_per_epoch=round(flop_epoch / 1e9, 1),
            note="6 x weights x 60,000 rows / measured peak: what a batch-128 epoch would take "
                 "with no per-operation overhead")
    return peak


# ----------------------------------------------------------------------------------- 3 tables

def write_table(path: Path, rows: int, with_response: bool, seed: int, chunk: int = 250_000):
    """A float32 Parquet table: f00..f49, three groups shifted on the first four columns, and a
    categorical response y (the group) when ``with_response``; written chunk by chunk."""
    import pyarrow as pa

    from dgc_cli.tabular import table_stream

    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).normal(0, 2.0, (3, 4)).astype(np.float32)
    names = [f"f{j:02d}" for j in range(N_COLUMNS)]
    with table_stream(path) as write:
        for start in range(0, rows, chunk):
            m = min(chunk, rows - start)
            group = rng.integers(0, 3, m)
            x = rng.standard_normal((m, N_COLUMNS), dtype=np.float32)
            x[:, :4] += centres[group]
            columns = {name: x[:, j] for j, name in enumerate(names)}
            if with_response:
                columns["y"] = group.astype(np.int8)
            write(pa.table(columns))
    return path


def rss_mb() -> float:
    """This process's current RSS (Linux; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM of /proc/self/status (Linux). Not ru_maxrss: Linux keeps
    ru_maxrss across execve, so a child started from a big parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_cli(args: list[str], timings: Path) -> dict:
    """Run `dgc ARGS` in a fresh process (this file's --child mode) and return its timings:
    wall seconds, peak RSS and, for fit, the seconds spent in pre-training and training."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(timings), "--", *args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"dgc {' '.join(args)} failed ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result = json.loads(timings.read_text())
    result["command_seconds"] = wall  # the whole command: interpreter start and imports included
    return result


def child(timings: Path, args: list[str]) -> None:
    """--child: the `dgc` command line in this process, with the estimator's training calls
    timed; writes wall seconds, the stage times and ru_maxrss (peak RSS) to ``timings``."""
    started = time.perf_counter()
    if os.environ.get("DGC_PERF_THREADS"):
        torch.set_num_threads(int(os.environ["DGC_PERF_THREADS"]))
    from dgc_cli import estimator
    from dgc_cli.cli import app

    stages = {"pretrain_seconds": 0.0, "train_seconds": 0.0, "train_rows": 0,
              "pretrain_rows": 0, "first_training_call": None, "last_training_end": None}

    def timed(function, key):
        def wrapper(model, x, *rest, **kwargs):
            t0 = time.perf_counter()
            if stages["first_training_call"] is None:
                stages["first_training_call"] = t0 - started
                stages["rss_at_training_start_mb"] = rss_mb()
                stages["peak_rss_before_training_mb"] = peak_rss_mb()
            out = function(model, x, *rest, **kwargs)
            t1 = time.perf_counter()
            stages[f"{key}_seconds"] += t1 - t0
            sched = rest[1] if key == "train" else rest[0]
            epochs = sched.epochs if key == "train" else sched.pretrain_epochs
            stages[f"{key}_rows"] += len(x) * epochs
            stages["last_training_end"] = t1 - started
            stages["peak_rss_to_training_end_mb"] = peak_rss_mb()
            return out
        return wrapper

    estimator.pretrain = timed(estimator.pretrain, "pretrain")
    estimator.train = timed(estimator.train, "train")
    imported = time.perf_counter() - started
    app(args, prog_name="dgc", standalone_mode=False)
    result = {"args": args, "wall_seconds": time.perf_counter() - started,
              "import_seconds": imported,
              "peak_rss_mb": peak_rss_mb(), **stages}
    timings.write_text(json.dumps(result))


def baseline_rss(tmp: Path) -> float:
    """Peak RSS of a process that only imports the command line (torch included)."""
    path = tmp / "baseline.json"
    code = ("import json, sys; import dgc_cli.cli, torch, pyarrow.parquet, pandas; "
            f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import perf; "
            "json.dump({'peak_rss_mb': perf.peak_rss_mb()}, open(sys.argv[1], 'w'))")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return json.loads(path.read_text())["peak_rss_mb"]


def section_tables(rec: Recorder, tmp: Path, rows_fit: int, rows_assign: int, rows_small: int,
                   fit_epochs: int | None, keep: bool) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    base = baseline_rss(tmp)
    rec.add("tables", "peak RSS of a process that only imports dgc, torch, pyarrow, pandas", base,
            "MB", None, load_average())
    started = time.perf_counter()
    fit_path = write_table(tmp / f"fit-{rows_fit}.parquet", rows_fit, True, seed=1)
    print(f"wrote {fit_path} in {time.perf_counter() - started:.0f} s", flush=True)
    out = tmp / "fit-out"
    args = ["fit", str(fit_path), "--target", "y", "--task", "categorical", "--clusters", "3",
            "--device", "cpu", "--out", str(out), "--quiet"]
    if fit_epochs is not None:
        args += ["--epochs", str(fit_epochs), "--pretrain-epochs", str(max(1, fit_epochs // 5))]
    load = load_average()
    r = run_cli(args, tmp / "fit-timings.json")
    config = json.loads((out / "model" / "config.json").read_text())
    sched_epochs = len(config["history"])
    rows_per_s = (r["train_rows"] + r["pretrain_rows"]) / (r["train_seconds"] + r["pretrain_seconds"])
    matrix_mb = rows_fit * N_COLUMNS * 4 / 2**20
    common = {"rows": rows_fit, "columns": N_COLUMNS, "command": "dgc " + " ".join(args),
              "epochs": sched_epochs}
    rec.add("tables", "dgc fit: training rows per second (pre-training and training epochs)",
            rows_per_s, "rows/s", "interactive on hundreds of thousands of rows", load,
            train_seconds=round(r["train_seconds"], 1),
            pretrain_seconds=round(r["pretrain_seconds"], 1),
            rows_processed=r["train_rows"] + r["pretrain_rows"], **common)
    rec.add("tables", "dgc fit: peak RSS", r["peak_rss_mb"], "MB",
            "near the size of the numeric matrix", load,
            numeric_matrix_mb_float32=round(matrix_mb, 1),
            above_import_baseline_mb=round(r["peak_rss_mb"] - base, 1),
            peak_rss_before_training_mb=round(r["peak_rss_before_training_mb"]),
            rss_at_training_start_mb=round(r["rss_at_training_start_mb"]),
            peak_rss_to_training_end_mb=round(r["peak_rss_to_training_end_mb"]),
            command_seconds=round(r["command_seconds"], 1),
            before_training_seconds=round(r["first_training_call"] - r["import_seconds"], 1),
            after_training_seconds=round(r["wall_seconds"] - r["last_training_end"], 1),
            **common)
    if not keep:
        fit_path.unlink()

    for rows in (rows_small, rows_assign):
        started = time.perf_counter()
        path = write_table(tmp / f"assign-{rows}.parquet", rows, False, seed=2)
        print(f"wrote {path} in {time.perf_counter() - started:.0f} s", flush=True)
        load = load_average()
        r = run_cli(["assign", str(out), str(path), "--out", str(tmp / f"assigned-{rows}.parquet"),
                     "--device", "cpu", "--quiet"], tmp / "assign-timings.json")
        rec.add("tables", f"dgc assign {rows:,} rows: rows per second", rows / r["command_seconds"],
                "rows/s", None, load, rows=rows, columns=N_COLUMNS,
                command_seconds=round(r["command_seconds"], 1),
                rows_per_second_after_startup=round(rows / r["wall_seconds"]),
                startup_seconds=round(r["command_seconds"] - r["wall_seconds"], 1),
                batch_rows=65536,
                note="the whole command (interpreter start, imports, reading, preprocessing, "
                     "the posterior and prediction, writing Parquet); after_startup leaves out "
                     "the interpreter start and the torch import")
        rec.add("tables", f"dgc assign {rows:,} rows: peak RSS", r["peak_rss_mb"], "MB",
                "bounded: does not grow with the rows", load, rows=rows,
                above_import_baseline_mb=round(r["peak_rss_mb"] - base, 1),
                input_float32_mb=round(rows * N_COLUMNS * 4 / 2**20, 1))
        if not keep:
            path.unlink()
            (tmp / f"assigned-{rows}.parquet").unlink(missing_ok=True)
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------- 4 GPU

def section_gpu(rec: Recorder, device: str = "cuda", batch: int = 128, steps: int = 20) -> None:
    """SVHN conv net training steps per second in float32 and bf16 and the fraction of the
    device's bf16 matmul peak (FLOPs counted by torch.utils.flop_counter)."""
    if device == "cuda" and not torch.cuda.is_available():
        rec.add("gpu", "SVHN conv net steps per second", None, "steps/s",
                "measured when a GPU is lent", load_average(), measured=False,
                note="no GPU was available to this run (none was lent to the session that "
                     "wrote this file); no figure")
        return
    from torch.utils.flop_counter import FlopCounterMode

    from dgc_cli.bench import svhn_params

    params = {**svhn_params(10, 1), "pretrain_epochs": 0, "init": "flat", "n_init": 1}
    params.pop("epochs")
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.random((batch * steps, 3, 32, 32), dtype=np.float32), device=device)
    y = np.arange(len(x)) % 10  # every class in the first batch
    model = fitted_model(params, x[:batch].cpu().numpy(), y[:batch], device)
    yt = model.head.encode(y).to(device)
    with FlopCounterMode(display=False) as counter:
        terms = model(x[:batch], yt[:batch])
        (-terms.elbo.mean()).backward()
    flop_step = counter.get_total_flops()
    model.zero_grad(set_to_none=True)
    for precision in ("32", "bf16"):
        peak = matmul_peak(8192, 5, torch.float32 if precision == "32" else torch.bfloat16, device)
        load = load_average()
        per_step = step_times(model, x, yt, batch, steps, epochs=3, precision=precision)
        best = min(per_step)
        rec.add("gpu", f"SVHN conv net steps per second, {precision}", 1 / best, "steps/s",
                "record; bf16: fraction of the GPU's bf16 peak", load, batch_size=batch,
                flop_per_step=flop_step, achieved_tflops=round(float(flop_step / best / 1e12), 2),
                matmul_peak_tflops=round(peak["best_gflops"] / 1e3, 1),
                fraction_of_matmul_peak_percent=round(float(100 * flop_step / best / 1e9
                                                            / peak["best_gflops"]), 1),
                device=torch.cuda.get_device_name(0) if device == "cuda" else device)
    load = load_average()
    per_step = step_times(model, x, yt, batch, steps, epochs=3, host_rows=True)
    rec.add("gpu", "SVHN conv net steps per second, 32, rows in host memory", 1 / min(per_step),
            "steps/s", "record: the path for tables larger than half the GPU's free memory",
            load, batch_size=batch, note="each batch gathered into a pinned buffer and copied "
            "with non_blocking=True (two buffers in turn)")


# ----------------------------------------------------------------------------------- main

def figure(results: list[dict], path: Path) -> Path | None:
    """Peak RSS of fit and assign against rows (the memory bound at a glance)."""
    rss = [r for r in results if r["section"] == "tables" and r["unit"] == "MB"
           and r["name"].startswith("dgc ")]
    if not rss:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    labels = [r["name"].replace(": peak RSS", "").replace("dgc fit", f"dgc fit {r['rows']:,} rows")
              for r in rss]
    ax.barh(labels, [r["value"] for r in rss], color="#4477aa")
    base = next((r["value"] for r in results if r["name"].startswith("peak RSS of a process")),
                None)
    if base:
        ax.axvline(base, color="grey", ls="--", lw=1, label="import-only process")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("peak RSS (MB)")
    ax.set_title("dgc peak memory (one process per command)", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows-fit", type=int, default=FULL_ROWS_FIT,
                        help="rows of the dgc fit table (full: %(default)s)")
    parser.add_argument("--rows-assign", type=int, default=FULL_ROWS_ASSIGN,
                        help="rows of the large dgc assign table (full: %(default)s)")
    parser.add_argument("--rows-assign-small", type=int, default=SMALL_ROWS_ASSIGN,
                        help="rows of the small dgc assign table, to show memory does not grow "
                             "(default: %(default)s)")
    parser.add_argument("--fit-epochs", type=int, default=None,
                        help="--epochs for the dgc fit run (default: dgc's own choice); "
                             "pre-training gets a fifth")
    parser.add_argument("--seeds", type=int, default=3, help="Pacman time-to-quality seeds")
    parser.add_argument("--timed-epochs", type=int, default=3,
                        help="Pacman epochs timed after the warm-up epoch")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip the --compile epoch timing (its compile takes 1-2 minutes)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for every section, child processes included "
                             "(default: torch's own, one per core); 1 avoids oversubscription "
                             "when other processes share the cores")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help="comma-separated sections: " + ", ".join(SECTIONS))
    parser.add_argument("--tmp", type=Path, default=Path("/tmp/dgc-perf"),
                        help="folder for the generated tables (default: %(default)s)")
    parser.add_argument("--keep-tables", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; use {', '.join(SECTIONS)}")

    sized_down = (args.rows_fit < FULL_ROWS_FIT or args.rows_assign < FULL_ROWS_ASSIGN
                  or args.seeds < 3 or args.fit_epochs is not None)
    reduced = set(sections) != set(SECTIONS) or sized_down
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        os.environ["DGC_PERF_THREADS"] = str(args.threads)  # for the dgc child processes
    started = time.perf_counter()
    load_start = load_average()
    rec = Recorder()
    if "pacman" in sections:
        section_pacman(rec, args.seeds, args.timed_epochs, not args.no_compile)
    if "flops" in sections:
        section_flops(rec)
    if "tables" in sections:
        section_tables(rec, args.tmp, args.rows_fit, args.rows_assign, args.rows_assign_small,
                       args.fit_epochs, args.keep_tables)
    if "gpu" in sections:
        section_gpu(rec)

    command = "python benchmarks/perf.py" + ("" if argv is None and len(sys.argv) == 1 else
                                             " " + " ".join(sys.argv[1:] if argv is None else argv))
    # perf.json only from a full run; a run of some sections is named after them, so that it
    # never overwrites another partial run's figures
    stem = "perf" + ("" if set(sections) == set(SECTIONS) else "-" + "-".join(sections))
    stem += "-reduced" if sized_down else ""
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"bench": "perf", "command": command, "reduced": reduced,
               "seconds": round(time.perf_counter() - started, 1), "machine": machine(),
               "load_average": {"start": load_start, "end": load_average()},
               "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "sections": sections,
               "sizes": {"rows_fit": args.rows_fit, "rows_assign": args.rows_assign,
                         "rows_assign_small": args.rows_assign_small,
                         "fit_epochs": args.fit_epochs},
               "results": rec.results}
    png = figure(rec.results, args.out / f"{stem}-memory.png")
    if png:
        payload["figures"] = [str(png.relative_to(ROOT) if png.is_relative_to(ROOT) else png)]
    path = args.out / f"{stem}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"{'REDUCED run' if reduced else 'full run'}: wrote {path} "
          f"({payload['seconds']:.0f} s)", flush=True)
    return payload


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), sys.argv[4:] if sys.argv[3] == "--" else sys.argv[3:])
    else:
        main()
