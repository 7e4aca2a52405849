"""``dgc bench``: the paper's experiments (Sec. 5, Appendix B) next to their baselines.

Each bench builds its data set as Appendix B describes, fits DGC with the paper's architecture
and schedule (the ``*_params`` functions of ``dgc_cli.bench.configs``), fits the baselines of
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


from dgc_cli.bench.commands import cpu_threads
from dgc_cli.bench.common import (
    DEFAULT_OUT,
    METHODS,
    METRICS,
    SHARED_DATA,
    Log,
    Results,
    bench_app,
    clustering_scores,
    finish,
    machine,
)
from dgc_cli.bench.configs import mnist_params, pacman_params, survival_params, svhn_params
from dgc_cli.bench.mnist import labelled_confusion, run_mnist
from dgc_cli.bench.pacman import run_pacman
from dgc_cli.bench.survival import run_survival
from dgc_cli.bench.svhn import load_svhn, run_svhn

__all__ = ["DEFAULT_OUT", "METHODS", "METRICS", "SHARED_DATA", "Log", "Results", "bench_app",
           "clustering_scores", "cpu_threads", "finish", "labelled_confusion", "load_svhn",
           "machine", "mnist_params", "pacman_params", "run_mnist", "run_pacman", "run_survival",
           "run_svhn", "survival_params", "svhn_params"]
