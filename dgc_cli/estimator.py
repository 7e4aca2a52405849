"""``DGC``: the scikit-learn-style estimator that the command line drives.

    >>> from dgc_cli import DGC
    >>> model = DGC(n_clusters=2, random_state=0).fit(X, y)
    >>> model.predict(X_new)          # Eq. 9: no y needed
    >>> model.predict(X, y)           # Eq. 8: with y
"""

from __future__ import annotations

import copy
import json
import math
import os
import threading
from functools import partial
from pathlib import Path

import numpy as np
import torch

from dgc_cli import __version__, distributed
from dgc_cli.heads import HEADS, make_head
from dgc_cli.mixreg import fit_response_groups
from dgc_cli.model import DGCModel, log_p_y_given_x
from dgc_cli.nets import as_spec
from dgc_cli.rows import Rows, fits_on_device
from dgc_cli.train import (
    Schedule,
    group_clusters,
    init_prior,
    noise_generator,
    pretrain,
    side_by_side,
    train,
)

FORMAT_VERSION = 1
INIT_STRATEGIES = ("gmm", "flat", "ygmm")


def resolve_device(device: str) -> torch.device:
    """auto = cuda, then mps, then cpu; a clear error when the asked device is absent."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for but Apple MPS is not available; use --device cpu or auto")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    return torch.device(device)


def resolve_jobs(n_jobs, n_tasks: int, device: torch.device, compile: bool = False) -> int:
    """How many fits or runs train at once: ``n_jobs`` (-1: one per CPU core; None: 1), at
    most one per task; always 1 on an accelerator, across ranks, and with ``compile``."""
    jobs = 1 if n_jobs is None else n_jobs
    if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or (jobs < 1 and jobs != -1):
        raise ValueError(f"n_jobs={n_jobs!r} must be a positive integer, -1 or None")
    if jobs == -1:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if device.type != "cpu" or distributed.active() or compile:
        return 1
    return max(1, min(int(jobs), n_tasks))


def infer_task(y) -> str:
    """categorical for strings, booleans and few integer levels; survival for an (n, 2) array of
    (time > 0, event in {0, 1}); continuous otherwise."""
    y = np.asarray(y)
    if y.dtype.kind in "OUSb":
        return "categorical"
    if y.ndim == 2 and y.shape[1] == 2 and np.isin(y[:, 1], (0, 1)).all() and (y[:, 0] > 0).all():
        return "survival"
    if y.ndim == 1 and (y.dtype.kind in "iu" or np.all(np.mod(y, 1) == 0)) and len(np.unique(y)) <= 20:
        return "categorical"
    return "continuous"


def _y_array(y) -> np.ndarray:
    """A response as a numpy array (pandas Series and DataFrames included)."""
    return np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)


class DGC:
    """Deep Goal-Oriented Clustering (Shi et al.): a VAE with a Gaussian-mixture prior and a
    per-cluster task head p(y|z,c), so that the response y steers which grouping is found.

    Parameters
    ----------
    n_clusters : int
        Number of clusters K.
    task : {"auto", "categorical", "continuous", "survival"} or a registered head name
        The response type; survival takes y as an (n, 2) array of (time, event).
    latent_dim : int
        Dimension J of z.
    encoder, decoder : sequence of int or dict
        Network specs (see ``dgc_cli.nets``); the decoder defaults to the mirrored encoder.
    head : sequence of int
        Hidden widths of the task network before its per-cluster outputs.
    activation : str
        relu, sigmoid, tanh, elu, leaky_relu or gelu.
    epochs, pretrain_epochs, batch_size : int or None
        None picks defaults from the data size.
    lr, lr_decay, lr_decay_every : float, float, int
        Adam's learning rate, multiplied by ``lr_decay`` every ``lr_decay_every`` epochs.
    entropy_reg : bool
        The regulariser of Eq. 7 (and Eq. 8 rather than Eq. 6); needed for Eq. 9.
    mc_samples : int
        Monte Carlo samples of z per row (M).
    init : {"auto", "gmm", "flat", "ygmm"}
        Mixture initialisation. auto: ygmm (y first) for a categorical or continuous response;
        otherwise flat and gmm are both trained and the one whose clusters best explain y is
        kept (see docs/method.md).
    n_init : int
        Restarts per initialisation strategy (seeds random_state, +1, ...); the kept run is the
        one ``selection`` prefers.
    selection : {"auto", "goal", "predictive", "agreement", "elbo"}
        How restarts are compared, on the rows of ``fit``'s ``selection_data`` (held out)
        or else on the training rows: mean log p(y|x) under Eq. 9
        (predictive), the mutual information in nats between the Eq. 8 and Eq. 9 cluster labels
        (agreement: the clusters y defines can be found again from x alone), their sum (goal,
        the auto choice with a response), or the ELBO (auto without a response).
    x_log_variance : float
        Fixed log-variance of the gaussian columns of p(x|z) (on standardised columns); lower
        makes reconstruction weigh more, so z keeps finer detail of x. The default -1 is the
        measured choice (docs/method.md, continuous responses).
    init_var_spread : float
        With init="flat", spread the components' log-variances over [-s, s].
    y_weight : float
        Temper p(y|z,c)^w in the training posterior and the ensemble term; 1 is the paper, the
        default 2 is the measured choice that lets a continuous y steer (docs/method.md).
    x_likelihood : "auto", "gaussian", "bernoulli" or list of (kind, width)
        Reconstruction likelihood by column block (gaussian, bernoulli, categorical).
    use_decoder : bool
        False gives the paper's ablation without the decoder.
    use_y : bool
        False ignores y while training: the model is then VaDE (q(c|x) = p(c|z)).
    device : {"auto", "cpu", "cuda", "mps"}
    precision : {"32", "bf16"}
        bf16 autocast (CUDA or CPU) for the networks; z and the mixture math stay in float32.
    compile : bool
        ``torch.compile`` the training step's loss (pays a compile time once).
    n_jobs : int or None
        Runs (``n_init`` restarts, init strategies) trained at once in threads on the CPU,
        sharing torch's intra-op threads; -1 is one per core, None is 1. Each run owns its
        random streams, so the runs are the same for any value up to the float rounding of
        their intra-op thread count (bit for bit at one thread). One at a time on an
        accelerator, across ranks and with compile.
    rows_on_device : "auto", True or False
        Where the training rows live on a GPU: moved there once (True), or kept in host
        memory and sent batch by batch through pinned buffers without blocking (False).
        auto: on the GPU when they take at most half its free memory. On the CPU, True and
        auto train on the given array itself; False runs the host path there too (gathered
        batches, no pinning), which only tests use.
    random_state : int or None
    """

    def __init__(self, n_clusters=3, task="auto", latent_dim=10, encoder=(128, 64), decoder=None,
                 head=(32,), activation="relu", epochs=None, pretrain_epochs=None, batch_size=None,
                 lr=1e-3, lr_decay=0.9, lr_decay_every=10, entropy_reg=True, mc_samples=1,
                 init="auto", n_init=1, selection="auto", y_weight=2.0, x_likelihood="auto",
                 learn_x_variance=False, x_log_variance=-1.0, init_var_spread=0.0,
                 use_decoder=True, use_y=True, device="auto", precision="32", compile=False,
                 n_jobs=None, rows_on_device="auto", random_state=None):
        self.n_clusters = n_clusters
        self.task = task
        self.latent_dim = latent_dim
        self.encoder = encoder
        self.decoder = decoder
        self.head = head
        self.activation = activation
        self.epochs = epochs
        self.pretrain_epochs = pretrain_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_decay = lr_decay
        self.lr_decay_every = lr_decay_every
        self.entropy_reg = entropy_reg
        self.mc_samples = mc_samples
        self.init = init
        self.y_weight = y_weight
        self.x_likelihood = x_likelihood
        self.learn_x_variance = learn_x_variance
        self.x_log_variance = x_log_variance
        self.init_var_spread = init_var_spread
        self.n_init = n_init
        self.selection = selection
        self.use_decoder = use_decoder
        self.use_y = use_y
        self.device = device
        self.precision = precision
        self.compile = compile
        self.n_jobs = n_jobs
        self.rows_on_device = rows_on_device
        self.random_state = random_state

    # --- scikit-learn plumbing --------------------------------------------------------------
    _PARAMS = ("n_clusters", "task", "latent_dim", "encoder", "decoder", "head", "activation",
               "epochs", "pretrain_epochs", "batch_size", "lr", "lr_decay", "lr_decay_every",
               "entropy_reg", "mc_samples", "init", "n_init", "selection", "y_weight",
               "x_likelihood", "learn_x_variance", "x_log_variance", "init_var_spread",
               "use_decoder", "use_y", "device", "precision", "compile", "n_jobs",
               "rows_on_device", "random_state")

    def get_params(self, deep=True) -> dict:
        return {name: getattr(self, name) for name in self._PARAMS}

    def set_params(self, **params) -> DGC:
        for name, value in params.items():
            if name not in self._PARAMS:
                raise ValueError(f"invalid parameter {name!r} for DGC")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return f"DGC(n_clusters={self.n_clusters}, task={self.task!r}, latent_dim={self.latent_dim})"

    # --- building ---------------------------------------------------------------------------
    def _x_array(self, X) -> np.ndarray:
        X = np.asarray(X.to_numpy() if hasattr(X, "to_numpy") else X, dtype=np.float32)
        if X.ndim == 1:
            X = X[:, None]
        # checked in chunks of rows: no boolean copy of the whole matrix
        if not all(np.isfinite(X[i:i + 65536]).all() for i in range(0, len(X), 65536)):
            raise ValueError("X holds NaN or infinite values; impute them first (dgc fit does)")
        return X

    def _blocks(self, X: np.ndarray):
        width = int(np.prod(X.shape[1:]))
        spec = self.x_likelihood
        if spec == "auto":
            images = X.ndim == 4 and X.min() >= 0 and X.max() <= 1
            spec = "bernoulli" if images else "gaussian"
        if isinstance(spec, str):
            return [(spec, width)]
        blocks = [(str(k), int(w)) for k, w in spec]
        if sum(w for _, w in blocks) != width:
            raise ValueError(f"x_likelihood blocks cover {sum(w for _, w in blocks)} columns, X has {width}")
        return blocks

    def _schedule(self, n: int, images: bool) -> Schedule:
        # Tabular: up to 256 rows per batch, and on large tables up to 1,024 (n / 200): at
        # 200,000 rows that halved the time at the same accuracy (docs/performance.md).
        batch = self.batch_size or (128 if images else max(32, min(256, n // 8), min(1024, n // 200)))
        steps_per_epoch = math.ceil(n / batch)
        # Tabular default: about 2,000 optimiser steps, within 30..200 epochs.
        epochs = self.epochs or (30 if images else int(np.clip(2000 / steps_per_epoch, 30, 200)))
        pre = self.pretrain_epochs if self.pretrain_epochs is not None else max(5, epochs // 5)
        return Schedule(epochs=epochs, pretrain_epochs=pre, batch_size=batch, lr=self.lr,
                        lr_decay=self.lr_decay, lr_decay_every=self.lr_decay_every,
                        mc_samples=self.mc_samples, entropy_reg=self.entropy_reg,
                        y_weight=self.y_weight, use_decoder=self.use_decoder,
                        use_y=self.use_y, precision=self.precision, compile=self.compile,
                        warmup_epochs=epochs // 5)

    def _config(self) -> dict:
        """Everything needed to rebuild the network (JSON); weights go to safetensors."""
        enc = as_spec(self.encoder, self.activation)
        if self.decoder is not None:
            dec = as_spec(self.decoder, self.activation)
        elif enc["type"] == "mlp":
            dec = {**enc, "widths": list(reversed(enc["widths"]))}
        else:
            raise ValueError("an image (conv) encoder needs an explicit decoder spec")
        return {"x_shape": list(self.x_shape_), "latent_dim": self.latent_dim,
                "n_clusters": self.n_clusters, "encoder": enc, "decoder": dec,
                "head": {"task": self.task_, "widths": list(self.head),
                         "activation": self.activation, "meta": self.head_meta_},
                "blocks": [list(b) for b in self.blocks_],
                "learn_x_variance": self.learn_x_variance,
                "x_log_variance": self.x_log_variance}

    @staticmethod
    def _build(cfg: dict) -> DGCModel:
        h = cfg["head"]
        head = make_head(h["task"], cfg["latent_dim"], cfg["n_clusters"], h["widths"],
                         h["activation"], h["meta"])
        return DGCModel(cfg["x_shape"], cfg["latent_dim"], cfg["n_clusters"], cfg["encoder"],
                        cfg["decoder"], head, cfg["blocks"], cfg["learn_x_variance"],
                        cfg.get("x_log_variance", 0.0))

    # --- fitting ----------------------------------------------------------------------------
    def fit(self, X, y, callback=None, selection_data=None) -> DGC:
        """Fit on rows X with response y; ``callback(event)`` receives progress dicts.

        ``selection_data`` = (X_held_out, y_held_out): rows on which the runs (restarts and
        init strategies) are compared, so that the kept run is the one that explains y best
        on rows it was not trained on. Without it (or with no rows), the training rows.
        """
        X, y = self._x_array(X), _y_array(y)
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        X_sel, y_sel = X, y
        if selection_data is not None and len(selection_data[0]):
            X_sel, y_sel = self._x_array(selection_data[0]), _y_array(selection_data[1])
            if X_sel.shape[1:] != X.shape[1:] or len(y_sel) != len(X_sel):
                raise ValueError(f"selection_data has shapes {X_sel.shape} and {y_sel.shape}; "
                                 f"X has rows of shape {X.shape[1:]}, one response per row")
        if self.n_clusters < 1 or self.n_clusters > len(X):
            raise ValueError(f"n_clusters={self.n_clusters} must be between 1 and the number of rows ({len(X)})")
        self.task_ = infer_task(y) if self.task == "auto" else self.task
        if self.task_ not in HEADS:
            raise ValueError(f"unknown task {self.task_!r}; registered heads: {sorted(HEADS)}")
        seed = int(np.random.SeedSequence(self.random_state).generate_state(1)[0] % 2**31) \
            if self.random_state is None else int(self.random_state)
        self.device_ = resolve_device(self.device)
        self.x_shape_ = X.shape[1:]
        self.n_features_in_ = int(np.prod(self.x_shape_))
        self.blocks_ = self._blocks(X)
        self.head_meta_ = HEADS[self.task_].fit_response(y)
        if self.task_ == "categorical":
            self.classes_ = np.asarray(self.head_meta_["classes"])
            unseen = ~np.isin(y_sel, self.classes_) if y_sel is not y else np.zeros(0, bool)
            if unseen.any():
                raise ValueError(f"selection_data holds response value {y_sel[unseen][0].item()!r}, "
                                 "which the training rows do not have")
        sched = self._schedule(len(X), X.ndim == 4)
        self.schedule_ = sched
        resident = self._resident(X.nbytes + (X_sel.nbytes if X_sel is not X else 0))
        self.rows_on_device_ = resident
        xt = Rows(X, self.device_, resident)
        selection_rows = (xt if X_sel is X else Rows(X_sel, self.device_, resident), y_sel)
        strategies = self._init_candidates() if self.init == "auto" else [self.init]
        self.init_report_ = []
        best = None
        if self.selection not in ("auto", "goal", "predictive", "agreement", "elbo"):
            raise ValueError(f"unknown selection {self.selection!r}; use auto, goal, "
                             "predictive, agreement or elbo")
        runs = [(strategy, seed + i) for strategy in strategies for i in range(max(1, self.n_init))]
        for model, history, report in self._runs(runs, xt, y, sched, callback, selection_rows):
            self.init_report_.append(report)
            if best is None or report["criterion"] > best[2]["criterion"]:
                best = (model, history, report)
        self.model_, self.history_, chosen = best
        for report in self.init_report_:
            report["kept"] = report is chosen
        self.init_ = chosen["init"]
        self.labels_ = self.predict(X, y)
        return self

    def _init_candidates(self) -> list[str]:
        """The default initialisation, chosen by measurement (docs/method.md).

        y first (ygmm): the response's groups (the classes of a categorical y; the components
        of a mixture of linear regressions of a continuous y on x) share out the clusters, a
        mixture on each group's latent means places them, and the groups guide pre-training
        and the first epochs. A survival response (and any other head) gets an uninformative
        prior (y steers first) and VaDE's recipe (x first), both trained, and the one whose
        clusters best explain y on the rows is kept. ygmm on log time is available for survival
        with init="ygmm" but is not in auto (docs/method.md: the bench never chose it).
        """
        if not self.use_decoder:
            # nothing is pre-trained without a decoder: a mixture fitted on the latent means of
            # a random encoder collapses (noisy MNIST ablation: every image in one cluster)
            return ["flat"]
        if not self.use_y:
            return ["gmm"]
        if self.task_ in ("categorical", "continuous"):
            return ["ygmm"]
        return ["flat", "gmm"]

    def _resident(self, nbytes: int) -> bool:
        """Whether the rows move to the training device (``rows_on_device``; auto: when they
        fit on every rank, see ``dgc_cli.rows``) or stay in host memory, sent over batch by
        batch."""
        if self.rows_on_device == "auto":
            fits = fits_on_device(nbytes, self.device_)
            return bool(distributed.min_over_ranks(int(fits), self.device_))
        if not isinstance(self.rows_on_device, bool):
            raise ValueError(f"rows_on_device={self.rows_on_device!r} must be 'auto', True or False")
        return self.rows_on_device

    def _jobs(self, n_runs: int) -> int:
        return resolve_jobs(self.n_jobs, n_runs, self.device_, self.compile)

    def _runs(self, runs, xt, y, sched, callback, selection_rows):
        """Train and score every (strategy, seed) run; yields (model, history, report) in run order.

        With ``n_jobs`` > 1 the runs train side by side in threads, each with an equal share of
        torch's intra-op threads: a table's networks are too narrow for intra-op threads to keep
        the cores busy at large batches (Pacman's time to quality at batch 2,048: 1.49x sooner
        than in turn); at small batches the steps' Python dispatch holds the interpreter lock
        and threads gain nothing (docs/performance.md). Each run seeds its own network and owns its generators, so
        the runs do not depend on ``n_jobs`` beyond the float rounding of their share of
        intra-op threads. When one run fails, or on Ctrl-C, the others stop at their next step.
        """
        def build(run_seed):  # torch's global RNG initialises the weights: one run at a time
            torch.manual_seed(run_seed)
            return self._build(self._config()).to(self.device_)

        held_out = selection_rows[0] is not xt

        def run(index, model):
            strategy, run_seed = runs[index]
            # staging buffers of its own, for rows kept in host memory (dgc_cli.rows)
            rows, scored = xt.view(), (selection_rows[0].view(), selection_rows[1])
            events = None
            if callback:
                def events(event):
                    with lock:
                        callback({**event, "run": index})
            history = self._fit_once(model, strategy, rows, y, sched, run_seed, events, stop)
            report = {"init": strategy, "seed": run_seed,
                      "selection_rows": "held out" if held_out else "training",
                      **self._selection_scores(model, *scored, run_seed)}
            return model, history, report

        lock, stop = threading.Lock(), threading.Event()
        jobs = self._jobs(len(runs))
        if jobs == 1:
            for index, (_, run_seed) in enumerate(runs):
                yield run(index, build(run_seed))
            return
        models = [build(run_seed) for _, run_seed in runs]
        yield from side_by_side([partial(run, i, model) for i, model in enumerate(models)],
                                jobs, stop)

    def _fit_once(self, model, strategy, xt, y, sched, seed, callback, stop=None):
        generator = torch.Generator().manual_seed(seed)
        distributed.broadcast_parameters(model)
        yt = model.head.encode(y).to(self.device_)
        y_codes = cluster_groups = groups = None
        if strategy == "ygmm":
            y_codes, n_groups = self._response_groups(xt, yt, seed)
            counts = torch.bincount(torch.as_tensor(y_codes), minlength=n_groups).to(self.device_)
            cluster_groups = group_clusters(self.n_clusters,
                                            distributed.sum_over_ranks(counts).cpu().numpy())
            if cluster_groups is not None:
                groups = (torch.as_tensor(y_codes, device=self.device_),
                          torch.as_tensor(cluster_groups, device=self.device_))
        pretrain(model, xt, sched, generator, callback, yt, groups, stop)
        init_prior(model, xt, strategy, seed, y_codes, self.init_var_spread, cluster_groups)
        if callback:
            callback({"stage": "init", "epoch": 1, "epochs": 1, "loss": float("nan"),
                      "terms": {}, "init": strategy})
        return train(model, xt, yt, sched, generator, callback, groups=groups, stop=stop)

    def _response_groups(self, xt, yt, seed) -> tuple[np.ndarray, int]:
        """Group codes of this rank's rows for the y-first start, and the number of groups:
        the classes of a categorical y; for a continuous y (or the log time of a survival
        response), the components of a mixture of linear regressions on x (fitted on rank 0,
        sent to every rank)."""
        y = yt.cpu().numpy()
        if self.task_ == "categorical":
            return y.astype(np.int64), len(self.classes_)
        if self.task_ == "survival":
            # log time; a censored time counts as observed here. It is only a start: training
            # then uses the censored likelihood.
            y = np.log(y[:, :1])
        elif self.task_ != "continuous":
            raise ValueError(f"init='ygmm' needs a categorical, continuous or survival "
                             f"response, not {self.task_}; use flat or gmm")
        x = xt.numpy().reshape(len(xt), -1)
        fitted = fit_response_groups(x, y, self.n_clusters, seed) if distributed.is_main() else None
        fitted = distributed.broadcast_object(fitted)
        return fitted.assign(x, y), fitted.mixture.n_components

    @torch.no_grad()
    def _selection_scores(self, model, xt, y, seed=0) -> dict:
        """Goal-aware criteria for choosing between initialisations (see docs/method.md)."""
        yt = model.head.encode(y).to(self.device_)
        noise = noise_generator(torch.Generator().manual_seed(seed), self.device_)
        K = self.n_clusters
        log_pred, elbo = [], []
        counts = torch.zeros(K, K, device=xt.device)  # Eq. 8 label x Eq. 9 label
        for i in range(0, len(xt), 4096):
            xb, yb = xt.slice(i, i + 4096), yt[i:i + 4096]
            log_q_test, _, params = model.posterior(xb, None, self.entropy_reg)
            log_p_y = model.head.log_likelihood(params, yb)
            log_pred.append(log_p_y_given_x(log_q_test, log_p_y))
            log_q_y, _, _ = model.posterior(xb, yb, self.entropy_reg, self.y_weight)
            counts += torch.bincount(log_q_y.argmax(1) * K + log_q_test.argmax(1),
                                     minlength=K * K).view(K, K).float()
            y_used = yb if self.use_y else None
            elbo.append(model.terms(xb, y_used, 1, self.entropy_reg, self.y_weight,
                                    self.use_decoder, generator=noise).elbo)
        # means over the rows of every rank
        sums = distributed.sum_over_ranks(torch.stack([
            torch.cat(log_pred).sum(), torch.cat(elbo).sum(),
            torch.tensor(float(len(xt)), device=xt.device)]))
        log_pred, elbo = (sums[:2] / sums[2]).tolist()
        agreement = _mutual_information(distributed.sum_over_ranks(counts).cpu().double().numpy())
        selection = self.selection
        if selection == "auto":
            selection = "goal" if self.use_y else "elbo"
        scores = {"log_predictive_y": log_pred, "elbo": elbo, "agreement": agreement,
                  "goal": log_pred + agreement}
        return {**scores, "criterion": scores["log_predictive_y" if selection == "predictive"
                                              else selection]}

    # --- inference --------------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise RuntimeError("this DGC is not fitted yet; call fit first")

    @torch.no_grad()
    def _per_batch(self, X, reduce, y=None, batch_size=8192) -> torch.Tensor:
        """``reduce(log_q, z, params, rows)`` on each batch of rows, concatenated: log q(c|x)
        (Eq. 8 with y, Eq. 9 without), the latent means, the head's parameters and the batch's
        slice of rows. Only the reductions are kept, never every row's head parameters."""
        self._check_fitted()
        X = self._x_array(X)
        model = self.model_.eval()
        yt = model.head.encode(y) if y is not None else None
        out = None
        for i in range(0, len(X), batch_size):
            rows = slice(i, i + batch_size)
            xb = torch.as_tensor(X[rows], device=self.device_)
            yb = yt[rows].to(self.device_) if yt is not None else None
            if not self.use_y:  # VaDE: the untrained head must not weigh in (q = p(c|z))
                yb = None
            log_q, z, params = model.posterior(xb, yb, self.entropy_reg and self.use_y, self.y_weight)
            result = reduce(log_q, z, params, rows)
            if out is None:  # one block for all rows: kept batch outputs would fragment the heap
                out = result.new_empty((len(X), *result.shape[1:]))
            out[rows] = result
        return out

    def predict_proba(self, X, y=None) -> np.ndarray:
        """q(c|x): Eq. 9 without y, Eq. 8 with y. Rows sum to 1."""
        q = self._per_batch(X, lambda log_q, z, params, rows: log_q.exp().double(), y)
        return q.cpu().numpy()

    def predict(self, X, y=None) -> np.ndarray:
        """Most probable cluster per row (Eq. 9 without y, Eq. 8 with y)."""
        return self._per_batch(X, lambda log_q, z, params, rows: log_q.argmax(1), y).cpu().numpy()

    def transform(self, X) -> np.ndarray:
        """Latent means mu~(x), n x latent_dim."""
        return self._per_batch(X, lambda log_q, z, params, rows: z).cpu().numpy()

    def predict_response(self, X) -> np.ndarray:
        """The ensemble prediction sum_k q_k E[y|z,k] with q from Eq. 9: class probabilities
        (categorical), values (continuous) or a risk score, higher = earlier event (survival)."""
        head = self.model_.head
        pred = self._per_batch(X, lambda log_q, z, params, rows: head.predict(params, log_q.exp()))
        if self.task_ == "continuous":
            return head.decode(pred)
        return pred.double().cpu().numpy()

    def predict_survival_function(self, X, times) -> np.ndarray:
        """S(t|x) = sum_k q_k S_k(t) at ``times`` (in the data's units): n x T."""
        self._require("survival")
        head = self.model_.head
        t = torch.as_tensor(np.asarray(times, dtype=np.float64) / head.meta["time_scale"],
                            dtype=torch.float32, device=self.device_).clamp(min=1e-12)

        def survival(log_q, z, params, rows):
            return torch.logsumexp(log_q.unsqueeze(-1) + head.log_survival(params, t), dim=1).exp()

        return self._per_batch(X, survival).double().cpu().numpy()

    def predict_median_time(self, X) -> np.ndarray:
        """Median of the mixture's survival time per row, by bisection on log t."""
        self._require("survival")

        def median_log_time(log_q, z, params, rows):
            log_lambda, log_k = params
            lo = torch.full((len(log_q),), -20.0, device=log_q.device)
            hi = torch.full((len(log_q),), 20.0, device=log_q.device)
            for _ in range(60):
                mid = (lo + hi) / 2
                ratio = mid.unsqueeze(1) - log_lambda
                log_s = torch.logsumexp(log_q - torch.exp(torch.exp(log_k) * ratio), 1)
                above = log_s > math.log(0.5)
                lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
            return (lo + hi) / 2

        log_t = self._per_batch(X, median_log_time)
        return torch.exp(log_t).double().cpu().numpy() * self.model_.head.meta["time_scale"]

    def _require(self, task):
        self._check_fitted()
        if self.task_ != task:
            raise ValueError(f"this model's task is {self.task_!r}, not {task!r}")

    @torch.no_grad()
    @torch.no_grad()
    def elbo_terms(self, X, y, batch_size=8192, random_state=0) -> dict:
        """Mean of each term of the regularised ELBO over the rows (``mc_samples`` samples of z
        per row, drawn from ``random_state``: the same rows give the same value each call)."""
        self._check_fitted()
        X = self._x_array(X)
        yt = self.model_.head.encode(y)
        noise = noise_generator(torch.Generator().manual_seed(int(random_state)), self.device_)
        sums, n = {}, len(X)
        for i in range(0, n, batch_size):
            xb = torch.as_tensor(X[i:i + batch_size], device=self.device_)
            t = self.model_.terms(xb, yt[i:i + batch_size].to(self.device_), self.mc_samples,
                                  self.entropy_reg, self.y_weight, self.use_decoder,
                                  generator=noise)
            for k, v in {**t.means(), "elbo": t.elbo.mean()}.items():
                sums[k] = sums.get(k, 0.0) + v.item() * len(xb)
        return {k: v / n for k, v in sums.items()}

    def score(self, X, y) -> float:
        """Mean regularised ELBO per row (higher is better)."""
        return self.elbo_terms(X, y)["elbo"]

    @torch.no_grad()
    def log_predictive_y(self, X, y) -> float:
        """Mean over rows of log p(y|x) = log sum_k q_test(k|x) p(y|z,k): how well the clusters
        and their heads explain y from x alone (Eq. 9 weights). Continuous y is measured on the
        standardised scale."""
        head = self.model_.head
        yt = head.encode(y).to(self.device_)
        log_p_y = self._per_batch(X, lambda log_q, z, params, rows: log_p_y_given_x(
            log_q, head.log_likelihood(params, yt[rows])))
        return log_p_y.mean().item()

    @torch.no_grad()
    def sample(self, n: int, random_state=None):
        """Draw from the generative model: c ~ Cat(pi), z ~ N(mu_c, sigma2_c), x ~ p(x|z),
        y ~ p(y|z,c). Returns (c, z, x_mean, y); x is the decoder's mean (or probabilities)."""
        self._check_fitted()
        g = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
        m = self.model_
        c = torch.multinomial(m.log_pi.exp().cpu(), n, replacement=True, generator=g)
        eps = torch.randn(n, m.latent_dim, generator=g)
        z = (m.mu.cpu()[c] + torch.exp(0.5 * m.log_sigma2.cpu()[c]) * eps).to(self.device_)
        x = m.decode(z)
        kinds = {k for k, _ in m.blocks}
        if kinds == {"bernoulli"}:
            x = torch.sigmoid(x)
        params = m.head(z)
        y = m.head.sample(params)  # B x K x ...: keep the drawn cluster's
        y = y[torch.arange(n), c.to(y.device)]
        if self.task_ == "continuous":
            y = torch.as_tensor(m.head.decode(y))
        elif self.task_ == "categorical":
            y = torch.as_tensor(np.arange(len(self.classes_)))[y.cpu()]
        elif self.task_ == "survival":
            y = y * m.head.meta["time_scale"]
        return c.numpy(), z.cpu().numpy(), x.cpu().numpy(), np.asarray(y.cpu())

    # --- persistence ------------------------------------------------------------------------
    def save(self, folder, extra_config: dict | None = None) -> Path:
        """Write ``config.json`` and ``weights.safetensors`` into ``folder`` (no pickle)."""
        from safetensors.torch import save_file

        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"format": "dgc-model", "format_version": FORMAT_VERSION,
                  "dgc_version": __version__, "torch_version": torch.__version__,
                  "params": _jsonable(self.get_params()), "network": self._config(),
                  "task": self.task_, "init": self.init_, "init_report": self.init_report_,
                  "history": self.history_, "extra": extra_config or {}}
        state = {k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()}
        tmp = folder / "weights.safetensors.tmp"
        save_file(state, str(tmp))
        tmp.replace(folder / "weights.safetensors")
        tmp = folder / "config.json.tmp"
        tmp.write_text(json.dumps(config, indent=2))
        tmp.replace(folder / "config.json")
        return folder

    @staticmethod
    def read_config(folder) -> dict:
        """Read and check a model folder's config.json (clear errors for bad folders)."""
        folder = Path(folder)
        path = folder / "config.json"
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder {folder} does not exist")
        if not path.is_file() or not (folder / "weights.safetensors").is_file():
            raise FileNotFoundError(f"{folder} is not a dgc model folder (config.json or weights.safetensors missing)")
        try:
            config = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is corrupt: {err}") from None
        if not isinstance(config, dict) or config.get("format") != "dgc-model":
            raise ValueError(f"{path} is not a dgc model config")
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has model format {config.get('format_version')}, this dgc "
                             f"{__version__} reads format {FORMAT_VERSION}")
        return config

    @classmethod
    def load(cls, folder, device="auto") -> DGC:
        """Rebuild a fitted DGC from a folder written by ``save``; never unpickles."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        config = cls.read_config(folder)
        params = {**config["params"], "device": device}
        est = cls(**{k: (tuple(v) if isinstance(v, list) and k in ("encoder", "head") else v)
                     for k, v in params.items()})
        net = config["network"]
        est.task_ = config["task"]
        est.x_shape_ = tuple(net["x_shape"])
        est.n_features_in_ = int(np.prod(est.x_shape_))
        est.blocks_ = [tuple(b) for b in net["blocks"]]
        est.head_meta_ = net["head"]["meta"]
        if est.task_ == "categorical":
            est.classes_ = np.asarray(est.head_meta_["classes"])
        est.init_, est.init_report_, est.history_ = config["init"], config["init_report"], config["history"]
        est.device_ = resolve_device(device)
        model = cls._build(net)
        try:
            state = load_file(str(Path(folder) / "weights.safetensors"))
            model.load_state_dict(state)
        except (SafetensorError, RuntimeError, OSError) as err:
            raise ValueError(f"weights in {folder} cannot be loaded: {str(err).splitlines()[0]}") from None
        est.model_ = model.to(est.device_).eval()
        est.extra_ = config.get("extra", {})
        return est


def _mutual_information(counts: np.ndarray) -> float:
    """Mutual information (nats) of two labelings from their contingency table; 0 when either
    labeling puts every row in one cluster."""
    p = counts / counts.sum()
    outer = p.sum(1, keepdims=True) * p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / outer[nz])).sum())


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return copy.deepcopy(value)
