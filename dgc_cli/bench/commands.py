"""The typer commands of `dgc bench`."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from dgc_cli.bench.common import DEFAULT_OUT, SHARED_DATA, Log, bench_app
from dgc_cli.bench.mnist import run_mnist
from dgc_cli.bench.pacman import run_pacman
from dgc_cli.bench.survival import run_survival
from dgc_cli.bench.svhn import run_svhn
from dgc_cli.pipeline import check_jobs, check_precision
from dgc_cli.tabular import InputError

# =========================================================================== commands

Out = Annotated[Path, typer.Option(help="Folder for the JSON, markdown and PNG files.")]
Init = Annotated[str | None, typer.Option(
    help="Mixture initialisation for DGC (auto, gmm, flat, ygmm); default: the estimator's.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
Precision = Annotated[str, typer.Option(
    metavar="32|bf16", help="bf16: the networks under bf16 autocast (CUDA, or a CPU with AMX), "
    "the mixture math in float32.")]
Jobs = Annotated[int, typer.Option(
    "--jobs", "-j", help="DGC's restarts (or init strategies) trained at once in threads on the "
    "CPU; -1: one per core. The same runs for any value, up to float rounding.")]
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
    # the same checks and messages as dgc fit's
    for option, check, value in (("--precision", check_precision, kwargs["precision"]),
                                 ("--jobs", check_jobs, kwargs.get("jobs", 1))):
        try:
            check(value)
        except InputError as err:
            # typer names the option itself
            raise typer.BadParameter(str(err).removeprefix(f"{option} "),
                                     param_hint=f"'{option}'") from None
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
    init: Init = None, precision: Precision = "32", device: Device = "auto", jobs: Jobs = 1,
    threads: Threads = None, out: Out = DEFAULT_OUT,
):
    """Pacman (Sec. 5.2, B.2): two close annuli told apart by their responses' trends."""
    _run(run_pacman, seeds=seeds, epochs=epochs, n_per_annulus=n_per_annulus,
         n_train_per_annulus=min(n_train_per_annulus, n_per_annulus - 1), init=init,
         precision=precision, device=device, jobs=jobs, threads=threads, out=out)


@bench_app.command("mnist")
def mnist_command(
    data_dir: Annotated[Path, typer.Option(help="Folder with the four MNIST IDX files (.gz or not).")] = SHARED_DATA / "mnist",
    cifar_dir: Annotated[Path, typer.Option(help="CIFAR-10: an .npz (x, y) or the python batches.")] = SHARED_DATA / "cifar10",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs (paper: 100).")] = 100,
    subset: Annotated[int | None, typer.Option(min=8, help="Cap each split at N images (reduced run).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the backgrounds, the subset and the models.")] = 0,
    blend: Annotated[str, typer.Option(help="max: max(digit, alpha*background); add: clipped sum.")] = "max",
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Background intensity.")] = 0.5,
    init: Init = None, precision: Precision = "32", device: Device = "auto",
    threads: Threads = None, out: Out = DEFAULT_OUT,
):
    """Noisy MNIST (Sec. 5.1, B.1): DGC, VaDE and DGC without decoder, K = 4 (digit x background)."""
    _run(run_mnist, data_dir=data_dir, cifar_dir=cifar_dir, epochs=epochs, subset=subset,
         seed=seed, blend=blend, alpha=alpha, init=init, precision=precision, device=device,
         threads=threads, out=out)


@bench_app.command("svhn")
def svhn_command(
    data_dir: Annotated[Path, typer.Option(help="train_32x32.mat + test_32x32.mat (+ extra), or one .mat file to split.")] = SHARED_DATA / "svhn",
    clusters: Annotated[str, typer.Option(help="Comma-separated K values; 1,5,10,15,20,50,100 is Table 1.")] = "10",
    subset: Annotated[int | None, typer.Option(min=10, help="Use N images: N training + N/4 test from the standard files, or N before the split of one file.")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs (paper: 150).")] = 150,
    seed: Annotated[int, typer.Option(help="Seed of the subset, the split and the models.")] = 0,
    extra: Annotated[bool, typer.Option(help="Train on extra_32x32.mat too, as the paper.")] = True,
    init: Init = None, precision: Precision = "32", device: Device = "auto",
    threads: Threads = None, out: Out = DEFAULT_OUT,
):
    """SVHN (Sec. 5.3, B.3, Table 1): classification and clustering accuracy against K."""
    _run(run_svhn, data_dir=data_dir, clusters=_clusters(clusters), subset=subset, epochs=epochs,
         seed=seed, use_extra=extra, init=init, precision=precision, device=device,
         threads=threads, out=out)


@bench_app.command("survival")
def survival_command(
    seeds: Annotated[int, typer.Option(min=1, help="Seeds (data, split and models).")] = 5,
    n: Annotated[int, typer.Option(min=50, help="Rows of the synthetic data set.")] = 3000,
    clusters: Annotated[int, typer.Option(min=1, help="True and fitted clusters, synthetic.")] = 3,
    gbsg2_clusters: Annotated[int, typer.Option(min=1, help="Fitted clusters on GBSG2.")] = 2,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override the default schedule.")] = None,
    gbsg2: Annotated[bool, typer.Option(help="Also run GBSG2 (lifelines' bundled copy).")] = True,
    init: Init = None, precision: Precision = "32", device: Device = "auto", jobs: Jobs = 1,
    threads: Threads = None, out: Out = DEFAULT_OUT,
):
    """Survival: synthetic Weibull clusters (VaDeSC-style) and GBSG2 against Cox PH, clustering + Cox."""
    _run(run_survival, seeds=seeds, n=n, clusters=clusters, gbsg2_clusters=gbsg2_clusters,
         epochs=epochs, gbsg2=gbsg2, init=init, precision=precision, device=device, jobs=jobs,
         threads=threads, out=out)
