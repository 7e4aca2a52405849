"""The `dgc` command line: fit, assign, report, demo (and bench, when installed).

Commands are thin: they parse options, show progress with rich, and call the plain functions of
`dgc_cli.pipeline`. A mistake in the input prints one line and exits with code 2; nothing is
written then.
"""

from __future__ import annotations

import math
import platform
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from dgc_cli import __version__
from dgc_cli.report import fmt
from dgc_cli.tabular import InputError

app = typer.Typer(
    name="dgc",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

EXIT_INPUT = 2
_STAGES = {"pretrain": "pre-training", "init": "initialising mixture", "train": "training"}


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


@contextmanager
def _user_errors():
    """Turn an InputError into one styled line on stderr and exit code 2."""
    try:
        yield
    except InputError as err:
        _stderr().print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(EXIT_INPUT) from None


class RichUI:
    """Notes, warnings and progress bars on stderr; all silent with --quiet."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = _stderr()

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[cyan]>[/] {escape(text)}", soft_wrap=True)

    def warn(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[yellow]warning:[/] {escape(text)}", soft_wrap=True)

    @contextmanager
    def training(self, label: str):
        """Yield an estimator callback that drives one bar per stage (pre-training, training)."""
        if self.quiet:
            yield None
            return
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                   MofNCompleteColumn(), TextColumn("{task.fields[loss]}"), TimeElapsedColumn())
        with Progress(*columns, console=self.console) as progress:
            bars: dict[tuple[str, int], int] = {}

            def callback(event: dict) -> None:
                stage, epoch, total = event["stage"], event["epoch"], event["epochs"]
                key = (stage, event.get("run", 0))  # runs may train side by side (n_jobs)
                if key not in bars or epoch == 1:
                    name = _STAGES.get(stage, stage)
                    if event.get("init"):
                        name += f" ({event['init']})"
                    if key[1]:
                        name += f", run {key[1] + 1}"
                    bars[key] = progress.add_task(f"{label} {name}", total=total, loss="")
                loss = event.get("loss")
                text = f"loss {loss:.3f}" if loss is not None and math.isfinite(loss) else ""
                progress.update(bars[key], completed=epoch, loss=text)

            yield callback


class _RowCounter:
    """A spinner with the number of rows assigned so far, started at the first batch (so that
    an input error shows nothing but its line)."""

    def __init__(self, console: Console):
        self.console = console
        self.progress: Progress | None = None

    def __call__(self, rows: int) -> None:
        if self.progress is None:
            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                     TimeElapsedColumn(), console=self.console)
            self.progress.start()
            self.bar = self.progress.add_task("")
        self.progress.update(self.bar, description=f"assigned {rows} rows")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _version(value: bool) -> None:
    if value:
        import torch

        typer.echo(f"dgc {__version__} (torch {torch.__version__}, "
                   f"python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Deep Goal-Oriented Clustering: cluster the rows of a table so that the clusters explain
    a response (a class, a number, or a survival time). Start with `dgc demo`.

    DGC (Shi et al.) is a VAE with a Gaussian-mixture prior whose clusters each carry their own
    model of the response, so the response steers the grouping. Typical use:
    `dgc fit data.csv --target outcome --clusters 3`, then
    `dgc assign dgc-out/data new_rows.csv`. Exit codes: 0 success, 2 bad input.
    """


def _stem(path: Path) -> str:
    return path.name.split(".")[0] or "data"


def _print_summary(result, quiet: bool) -> None:
    if quiet:
        return
    out = Console(highlight=False)
    if result.k_selection:
        table = Table(title="Choosing K on held-out rows")
        for name in ("K", "log p(y|x)", "ELBO", "stability (ARI)"):
            table.add_column(name, justify="right")
        for row in result.k_selection:
            style = "bold green" if row["k"] == result.n_clusters else None
            table.add_row(str(row["k"]), fmt(row["log_predictive_y"]), fmt(row["elbo"]),
                          fmt(row["stability_ari"]), style=style)
        out.print(table)
        out.print(escape(result.k_reason) + ".", soft_wrap=True)
    table = Table(title=f"{result.n_clusters} clusters ({result.task})")
    table.add_column("cluster", justify="right")
    table.add_column("rows", justify="right")
    table.add_column("response")
    table.add_column("distinguishing features (std. mean difference)")
    for p in result.profiles:
        feats = ", ".join(f"{escape(f['feature'])} {f['smd']:+.2f}" for f in p["features"][:3])
        table.add_row(str(p["cluster"]), f"{p['size']} ({p['share']:.0%})",
                      escape(p["response"]), feats)
    out.print(table)
    held_out = result.metrics.get("validation") or {}
    names = {"accuracy": "accuracy", "rmse": "RMSE", "r2": "R^2", "c_index": "C-index",
             "logrank_p_value": "log-rank p of the clusters from features alone"}
    shown = [f"{name} {fmt(held_out[key])}" for key, name in names.items() if key in held_out]
    if shown:
        out.print(f"held-out ({held_out['rows']} rows): " + ", ".join(shown), soft_wrap=True)
    runs = result.metrics.get("runs") or []
    if len(runs) > 1:
        kept = next(r for r in runs if r.get("kept"))
        out.print(f"kept run {runs.index(kept) + 1} of {len(runs)} (init {kept['init']}, seed "
                  f"{kept['seed']}): criterion {fmt(kept['criterion'])} on the "
                  f"{kept['selection_rows']} rows, others "
                  + ", ".join(fmt(r["criterion"]) for r in runs if r is not kept), soft_wrap=True)
    if "logrank" in result.metrics:
        out.print("log-rank test across the assigned clusters: "
                  f"p = {fmt(result.metrics['logrank']['p_value'])}")
    folder = result.out
    out.print(f"model:       {folder / 'model'}\nassignments: {folder / 'assignments.parquet'}\n"
              f"report:      {folder / 'report.html'} (and report.md)", soft_wrap=True)


@app.command()
def fit(
    data: Annotated[Path, typer.Argument(help="Table to cluster: .csv, .tsv, .parquet or .feather.",
                                         show_default=False)],
    target: Annotated[str | None, typer.Option(
        help="Response column for a categorical or continuous task.")] = None,
    time: Annotated[str | None, typer.Option(
        help="Survival time column (> 0); use with --event.")] = None,
    event: Annotated[str | None, typer.Option(
        help="Event column for survival: 1 = event observed, 0 = censored.")] = None,
    task: Annotated[str | None, typer.Option(
        help="auto, categorical, continuous or survival. auto decides from the response column "
             "and says why.", show_default="auto")] = None,
    clusters: Annotated[str | None, typer.Option(
        "--clusters", "-k",
        help="Number of clusters K, or a range such as 2..8: each K is fitted and the one whose "
             "clusters best explain the held-out response is kept.", show_default=False)] = None,
    features: Annotated[list[str] | None, typer.Option(
        help="Feature columns, comma-separated or the option repeated.",
        show_default="all other columns")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        help="Columns never to use as features, comma-separated or repeated.")] = None,
    id: Annotated[str | None, typer.Option(
        "--id", help="ID column: kept in the outputs, never used as a feature.")] = None,
    val_fraction: Annotated[float | None, typer.Option(
        help="Share of rows held out for validation metrics and choosing K.",
        show_default="0.2")] = None,
    epochs: Annotated[int | None, typer.Option(
        help="Training epochs.",
        show_default="chosen from the table size")] = None,
    pretrain_epochs: Annotated[int | None, typer.Option(
        help="Autoencoder pre-training epochs.",
        show_default="epochs / 5")] = None,
    lr: Annotated[float | None, typer.Option(
        help="Adam learning rate.", show_default="0.001")] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Rows per batch.",
        show_default="chosen from the table size")] = None,
    latent_dim: Annotated[int | None, typer.Option(
        help="Dimension of the latent space.", show_default="10")] = None,
    encoder: Annotated[str | None, typer.Option(
        help="Hidden widths of the encoder, e.g. 128,64; the decoder mirrors it.",
        show_default="128,64")] = None,
    init: Annotated[str | None, typer.Option(
        help="Mixture initialisation: auto, gmm, flat or ygmm.",
        show_default="auto")] = None,
    restarts: Annotated[int | None, typer.Option(
        help="Training runs per initialisation, from seeds SEED, SEED+1, ...; the run whose "
             "clusters best explain the response is kept (see docs/method.md).",
        show_default="1")] = None,
    jobs: Annotated[int | None, typer.Option(
        "--jobs", "-j",
        help="Runs trained at once on the CPU, in threads that share the cores; -1: one per "
             "core. Each run draws its own random numbers, so the runs are the same for any "
             "value, up to float rounding where a run's intra-op thread count changes.",
        show_default="1")] = None,
    device: Annotated[str | None, typer.Option(
        help="auto, cpu, cuda or mps.", show_default="auto")] = None,
    precision: Annotated[str | None, typer.Option(
        metavar="32|bf16",
        help="32 or bf16. bf16 runs the networks' matmuls in bf16 (autocast) on a CUDA GPU or "
             "the CPU; z and the mixture math stay float32. On CPUs with AMX it trains large "
             "networks about 3x faster; without AMX or AVX512-BF16 it is slower. MPS: float32.",
        show_default="32")] = None,
    compile: Annotated[bool | None, typer.Option(
        "--compile/--no-compile",
        help="torch.compile the training loss: faster steps after a one-off compile that takes "
             "up to a minute or two on a CPU.", show_default="no-compile")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Random seed (splits, initialisation, training).",
        show_default="0")] = None,
    config: Annotated[Path | None, typer.Option(
        help="TOML file with any of these options (underscores or dashes, top level or "
             "under a \\[fit] table); options on the command line win.", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        help="Output folder, replaced atomically.",
        show_default="dgc-out/<data-stem>")] = None,
    csv: Annotated[bool | None, typer.Option(
        "--csv/--no-csv", help="Also write assignments.csv.",
        show_default="no-csv")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                        help="No progress bars, notes or summary.")] = False,
) -> None:
    """Fit DGC to a table and write model/, assignments, metrics.json and a report.

    The response is --target COL (categorical or continuous) or --time COL --event COL
    (survival). Preprocessing (imputation with missing indicators, standardisation, one-hot
    encoding) is fitted on the training rows and saved with the model.
    """
    from dgc_cli.pipeline import FitSettings, fit_table, read_config

    with _user_errors():
        settings = FitSettings.merge(
            read_config(config) if config else None, target=target, time=time, event=event,
            task=task, clusters=clusters, features=features, exclude=exclude, id=id,
            val_fraction=val_fraction, epochs=epochs, pretrain_epochs=pretrain_epochs, lr=lr,
            batch_size=batch_size, latent_dim=latent_dim, encoder=encoder, init=init,
            restarts=restarts, jobs=jobs, device=device, precision=precision, compile=compile,
            seed=seed, csv=csv)
        result = fit_table(data, settings, out or Path("dgc-out") / _stem(data),
                           ui=RichUI(quiet))
    _print_summary(result, quiet)


@app.command()
def assign(
    model_dir: Annotated[Path, typer.Argument(
        help="Folder written by `dgc fit` (its --out folder, or the model/ inside it).",
        show_default=False)],
    data: Annotated[Path, typer.Argument(help="Table with the model's feature columns.",
                                         show_default=False)],
    out: Annotated[Path | None, typer.Option(
        help="Output file, .parquet or .csv.",
        show_default="<data-stem>-assignments.parquet")] = None,
    use_response: Annotated[bool | None, typer.Option(
        "--use-response/--no-use-response",
        help="Use the response columns for the posterior (Eq. 8) or ignore them (Eq. 9).",
        show_default="use them when DATA has them")] = None,
    batch_rows: Annotated[int, typer.Option(
        help="Rows read and assigned at a time; bounds memory on large tables.")] = 65536,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    precision: Annotated[str, typer.Option(
        metavar="32|bf16", help="32 or bf16: bf16 autocast on a CUDA GPU or the CPU; float32 on MPS.")] = "32",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary.")] = False,
) -> None:
    """Assign the rows of a table to a fitted model's clusters.

    Writes the id column (or row number), cluster, prob_0..prob_{K-1}, used_response and the
    prediction of the response from the features. Rows keep their order; the table is streamed
    in batches.
    """
    from dgc_cli.pipeline import assign_table

    ui = RichUI(quiet)
    with _user_errors():
        if batch_rows < 1:
            raise InputError(f"--batch-rows must be at least 1, got {batch_rows}")
        counter = None if quiet else _RowCounter(ui.console)
        try:
            result = assign_table(model_dir, data, out, use_response, batch_rows, device,
                                  on_batch=counter, precision=precision)
        finally:
            if counter:
                counter.close()
    if not quiet:
        how = ("Eq. 8, with the response" if result.used_response
               else "Eq. 9, from the features alone")
        sizes = ", ".join(f"{k}: {n}" for k, n in enumerate(result.sizes))
        Console(highlight=False).print(
            f"assigned {result.rows} rows ({how}); cluster sizes {sizes}\nwrote {result.out}",
            soft_wrap=True)


@app.command()
def report(
    model_dir: Annotated[Path, typer.Argument(help="Folder written by `dgc fit`.",
                                              show_default=False)],
    data: Annotated[Path, typer.Argument(
        help="Table with the model's features (and the response, for the response sections).",
        show_default=False)],
    out: Annotated[Path | None, typer.Option(
        help="Output folder for report.md, report.html, figures/ and metrics.json.",
        show_default="dgc-out/<data-stem>-report")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success.")] = False,
) -> None:
    """Re-render the cluster report for a fitted model and a (labelled) table."""
    from dgc_cli.pipeline import report_table

    with _user_errors():
        folder = report_table(model_dir, data, out or Path("dgc-out") / f"{_stem(data)}-report",
                              device)
    if not quiet:
        Console(highlight=False).print(f"report: {folder / 'report.html'} (and report.md)",
                                       soft_wrap=True)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("dgc-out/gbsg2"),
    epochs: Annotated[int | None, typer.Option(
        help="Training epochs.", show_default="60")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                        help="No progress bars, notes or summary.")] = False,
) -> None:
    """Cluster the GBSG2 breast-cancer survival data into 3 groups and write its report.

    GBSG2 ships with lifelines: 686 patients, recurrence-free survival time `time` and event
    indicator `cens`; the clusters are guided by survival (K=3). The table is saved as gbsg2.csv in the output folder, so you can try
    `dgc assign dgc-out/gbsg2 dgc-out/gbsg2/gbsg2.csv` next.
    """
    from dgc_cli.pipeline import demo as run_demo

    with _user_errors():
        result = run_demo(out, ui=RichUI(quiet), epochs=epochs, device=device, seed=seed)
    _print_summary(result, quiet)


# The bench sub-app lives in dgc_cli/bench/ (`bench_app: typer.Typer`); the CLI works without it.
try:
    from dgc_cli.bench import bench_app
except ModuleNotFoundError as _err:
    if _err.name != "dgc_cli.bench":
        raise
else:
    app.add_typer(bench_app, name="bench")
