"""The training loop (paper, Appendix B): autoencoder pre-training, mixture initialisation,
then Adam on minus the regularised ELBO with a step decay of the learning rate.

Data live on the training device as tensors; a batch is an index slice of a per-epoch
permutation, so a step has no per-sample Python overhead and no host synchronisation:
the epoch's terms are summed on the device and read once at its end.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from dgc_cli import distributed
from dgc_cli.model import LOG_SIGMA2_Q_BOUND, DGCModel, response_group_evidence
from dgc_cli.rows import Rows, as_rows

Callback = Callable[[dict], None]


class RunStopped(Exception):
    """A run left its loop because ``stop`` was set (another run failed, or Ctrl-C)."""


def check(stop) -> None:
    """Leave the run at this step if ``stop`` (a threading.Event, or None) is set."""
    if stop is not None and stop.is_set():
        raise RunStopped


def side_by_side(tasks: list[Callable[[], object]], jobs: int, stop: threading.Event) -> list:
    """Call the no-argument ``tasks`` ``jobs`` at a time in threads, each with an equal share
    of torch's intra-op threads; their results in order. On the first failure (or Ctrl-C)
    ``stop`` is set, so that the running tasks leave at their next step (``check``), and the
    tasks not yet started are dropped."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // jobs))
    try:
        with ThreadPoolExecutor(jobs, thread_name_prefix="dgc-run") as pool:
            futures = [pool.submit(task) for task in tasks]
            try:
                return [future.result() for future in futures]
            except BaseException:
                stop.set()
                for future in futures:
                    future.cancel()
                raise
    finally:
        torch.set_num_threads(threads)


MAX_PRIOR_ROWS = 200_000  # the mixture prior's start is fitted on at most this many rows


@dataclass
class Schedule:
    """Optimisation settings; every field is a default that the estimator can override."""

    epochs: int = 50
    pretrain_epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    lr_decay: float = 0.9  # multiply the learning rate by this ...
    lr_decay_every: int = 10  # ... every this many epochs (paper: 10 % every 10 epochs)
    mc_samples: int = 1
    entropy_reg: bool = True
    y_weight: float = 1.0
    use_decoder: bool = True
    use_y: bool = True
    precision: str = "32"
    compile: bool = False  # torch.compile the loss computation (first steps pay the compile)
    warmup_epochs: int = 0  # epochs in which a y-first start's response groups guide q(c|x,y)


def autocast(device: torch.device, precision: str):
    """bf16 autocast when asked, on CUDA and on CPU (where AMX or AVX512-BF16 run bf16 matmuls
    several times faster than float32; elsewhere torch emulates them, slowly). Only the
    networks' matmuls run in bf16: ``DGCModel`` casts the encoder, decoder and head outputs to
    float32, so z, the mixture log-densities and every log-sum-exp stay in float32."""
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def batches(n: int, batch_size: int, generator: torch.Generator, device, shuffle=True):
    """(host, device) index slices of a permutation, made on the host and sent to ``device``
    once per epoch (the two are one tensor on the CPU): rows kept in host memory are gathered
    with the first, the response with the second, and no step waits on an index copy. Across
    ranks, every rank takes the same number of steps over its own shard (a batch of
    ``batch_size`` rows in all, split between the ranks)."""
    local = max(1, batch_size // distributed.world_size())
    steps = distributed.min_over_ranks(-(-n // local), device)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    on_device = order.to(device)
    for step in range(steps):
        rows = slice(step * local, (step + 1) * local)
        yield order[rows], on_device[rows]


def noise_generator(generator: torch.Generator, device) -> torch.Generator:
    """The generator of a run's z samples on the training device: the run's own (CPU)
    generator on the CPU, one seeded from it elsewhere. A run that owns its randomness gives
    the same result whether it trains alone or beside other runs (``DGC(n_jobs=...)``)."""
    if torch.device(device).type == "cpu":
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam, fused into one kernel per step where this torch supports it on the device. The
    per-parameter loop of the plain implementation cost a fifth of a small network's step on
    CPU (Pacman, official network, batch 128: 2.26 -> 1.82 s per epoch)."""
    params = [p for p in params if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def pretrain(model: DGCModel, x: torch.Tensor | Rows, sched: Schedule, generator, callback=None,
             y=None, groups=None, stop=None):
    """Autoencoder pre-training through the encoder means. With a y-first start (``y`` and
    ``groups``, as in ``train``) the heads learn y too, each row through the clusters of its
    response group, so that z keeps what the groups' responses need."""
    if sched.pretrain_epochs <= 0 or not sched.use_decoder:
        return
    x = as_rows(x)
    guided = y is not None and groups is not None and sched.use_y
    prefixes = ("encoder", "to_mu", "decoder") + (("head",) if guided else ())
    params = [p for n, p in model.named_parameters() if n.startswith(prefixes)]
    opt = adam(params, sched.lr)
    net = distributed.wrap(model)
    for epoch in range(sched.pretrain_epochs):
        total = torch.zeros(2, device=x.device)
        for host_idx, idx in batches(len(x), sched.batch_size, generator, x.device):
            check(stop)
            xb = x.take(host_idx, idx)
            yb = evidence = None
            if guided:
                yb, evidence = y[idx], response_group_evidence(groups[0][idx], groups[1])
            with autocast(x.device, sched.precision):
                loss = -net(xb, yb, y_weight=sched.y_weight, pretrain=True,
                            log_p_g_given_c=evidence).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += torch.stack([loss.detach().float() * len(idx), torch.tensor(float(len(idx)), device=x.device)])
        total = distributed.sum_over_ranks(total)
        if callback:
            callback({"stage": "pretrain", "epoch": epoch + 1, "epochs": sched.pretrain_epochs,
                      "loss": float(total[0] / total[1]), "terms": {}})


@torch.no_grad()
def latent_means(model: DGCModel, x: torch.Tensor | Rows, batch_size: int = 4096) -> torch.Tensor:
    """mu~(x) for every row, written batch by batch into one tensor (kept per-batch outputs
    between freed activations would fragment the heap: +196 MB RSS for 40 MB on 1M rows)."""
    x = as_rows(x)
    out = torch.empty(len(x), model.latent_dim, device=x.device)
    for i in range(0, len(x), batch_size):
        out[i:i + batch_size] = model.encode(x.slice(i, i + batch_size))[0]
    return out


def allocate(K: int, counts: np.ndarray) -> np.ndarray:
    """Split K clusters over response classes in proportion to their sizes, at least one each."""
    share = K * counts / counts.sum()
    n = np.maximum(np.floor(share).astype(int), 1)
    while n.sum() > K:
        n[np.argmax(n - share)] -= 1
    while n.sum() < K:
        n[np.argmax(share - n)] += 1
    return n


def group_clusters(K: int, counts: np.ndarray) -> np.ndarray | None:
    """The response group of each of the K clusters of a y-first start: the non-empty groups
    (``counts`` rows each) share the clusters by size; None with more groups than clusters."""
    present = np.flatnonzero(counts)
    if K < len(present):
        return None
    return np.repeat(present, allocate(K, counts[present]))


def _diag_gmm(z: np.ndarray, k: int, seed: int) -> GaussianMixture:
    return GaussianMixture(k, covariance_type="diag", random_state=seed, reg_covar=1e-4,
                           max_iter=200).fit(z)


@torch.no_grad()
def init_prior(model: DGCModel, x: torch.Tensor | Rows, strategy: str, seed: int, y_codes=None,
               var_spread: float = 0.0, cluster_groups: np.ndarray | None = None):
    """Set (pi, mu, sigma2) of the mixture prior.

    gmm: VaDE's recipe, a diagonal GaussianMixture on the pre-trained latent means (of at
         most ``MAX_PRIOR_ROWS`` rows, a seeded sample of larger tables).
    flat: uninformative, means near 0 and unit variances, so y decides the clusters first;
          ``var_spread`` spreads the components' log-variances over [-s, s] (concentric
          components, which can split by distance from the centre, as Pacman's annuli need).
    ygmm: y first, then x: ``cluster_groups`` (from ``group_clusters``) gives each cluster
          its response group, and a GaussianMixture on each group's latent means (rows by
          ``y_codes``, integer codes >= 0) places that group's clusters. Without it (fewer
          clusters than groups), one mixture on the latent means joined with the one-hot
          response.
    """
    if strategy not in ("flat", "gmm", "ygmm"):
        raise ValueError(f"unknown initialisation {strategy!r}; use gmm, flat, ygmm or auto")
    K, J = model.mu.shape
    if strategy == "flat":
        g = torch.Generator().manual_seed(seed)
        model.mu.copy_(0.05 * torch.randn(K, J, generator=g))
        model.log_sigma2.copy_(torch.linspace(-var_spread, var_spread, K).unsqueeze(1).expand(K, J))
        model.pi_logits.zero_()
        return
    z = distributed.gather_rows(latent_means(model, x).float().cpu().numpy())
    if y_codes is not None:
        y_codes = distributed.gather_rows(np.asarray(y_codes))
    if distributed.is_main():
        if len(z) > MAX_PRIOR_ROWS:  # a seeded sample places K components as well, and cheaper
            rows = np.sort(np.random.default_rng(seed).choice(len(z), MAX_PRIOR_ROWS, replace=False))
            z, y_codes = z[rows], (None if y_codes is None else y_codes[rows])
        _fit_prior(model, z.astype(np.float64), strategy, seed, y_codes, cluster_groups)
    for tensor in (model.mu, model.log_sigma2, model.pi_logits):  # rank 0's mixture for all
        if distributed.active():
            torch.distributed.broadcast(tensor.data, src=0)
    match_q_variance(model)


@torch.no_grad()
def match_q_variance(model: DGCModel):
    """Start q(z|x) with the variance of the narrowest fitted component in each dimension.

    Pre-training fits the encoder means only; its log-variance layer is still at its random
    start (sigma2~ near 1). Against components fitted on the pre-trained means, which can be far
    narrower (e^-5 on noisy MNIST), such a z sample lands outside every narrow component, the
    broadest one takes every row, and the clusters collapse.
    """
    target = model.log_sigma2.min(0).values.clamp(-LOG_SIGMA2_Q_BOUND + 1e-3, LOG_SIGMA2_Q_BOUND - 1e-3)
    model.to_log_sigma2.weight.zero_()
    model.to_log_sigma2.bias.copy_(LOG_SIGMA2_Q_BOUND * torch.atanh(target / LOG_SIGMA2_Q_BOUND))


@torch.no_grad()
def _fit_prior(model: DGCModel, z: np.ndarray, strategy: str, seed: int, y_codes=None,
               cluster_groups=None):
    K, J = model.mu.shape
    if strategy == "gmm":
        gmm = _diag_gmm(z, K, seed)
        means, variances, weights = gmm.means_, gmm.covariances_, gmm.weights_
    elif strategy == "ygmm" and y_codes is not None:
        if cluster_groups is not None:
            parts = []
            for group in np.unique(cluster_groups):
                zg = z[y_codes == group]
                gmm = _diag_gmm(zg, int((cluster_groups == group).sum()), seed)
                parts.append((gmm.means_, gmm.covariances_, gmm.weights_ * len(zg) / len(z)))
            means, variances, weights = (np.concatenate(p) for p in zip(*parts, strict=True))
        else:
            classes, codes = np.unique(y_codes, return_inverse=True)
            onehot = np.eye(len(classes))[codes] * z.std(0).mean() * 10.0
            gmm = _diag_gmm(np.concatenate([z, onehot], 1), K, seed)
            means, variances, weights = gmm.means_[:, :J], gmm.covariances_[:, :J], gmm.weights_
    else:
        raise ValueError(f"unknown initialisation {strategy!r}; use gmm, flat, ygmm or auto")
    model.mu.copy_(torch.as_tensor(means, dtype=torch.float32))
    model.log_sigma2.copy_(torch.as_tensor(np.log(variances), dtype=torch.float32))
    model.pi_logits.copy_(torch.as_tensor(np.log(weights), dtype=torch.float32))


def train(model: DGCModel, x: torch.Tensor | Rows, y, sched: Schedule, generator, callback=None,
          history=None, epoch_offset=0, groups=None, stop=None):
    """Adam on minus the regularised ELBO; returns the per-epoch history of mean terms.

    ``groups`` = (row group codes (N), cluster group codes (K)) from a y-first start: for the
    first ``sched.warmup_epochs`` epochs the row's response group is extra evidence in the
    training posterior, so that the heads learn their groups' responses before Eq. 8 alone
    decides (a continuous y gives no class for the heads to start from). A set ``stop``
    (threading.Event) ends the run at its next step with ``RunStopped``.
    """
    history = [] if history is None else history
    x = as_rows(x)
    opt = adam(model.parameters(), sched.lr)
    decay = torch.optim.lr_scheduler.StepLR(opt, step_size=max(sched.lr_decay_every, 1),
                                            gamma=sched.lr_decay)
    net = distributed.wrap(model)
    noise = noise_generator(generator, x.device)
    if sched.compile:
        net = torch.compile(net, dynamic=True)
        # a Generator argument breaks the compiled graph in two (Pacman, batch 128: 1.30 ->
        # 2.02 s per epoch); compiled runs train one at a time, so torch's global RNG,
        # seeded with the run's weights, serves
        noise = None
    for epoch in range(sched.epochs):
        model.train()
        sums = torch.zeros(5, device=x.device)  # the five terms, summed over the epoch's rows
        rows = 0
        for host_idx, idx in batches(len(x), sched.batch_size, generator, x.device):
            check(stop)
            xb = x.take(host_idx, idx)
            yb = y[idx] if (y is not None and sched.use_y) else None
            evidence = None
            if groups is not None and yb is not None and epoch < sched.warmup_epochs:
                evidence = response_group_evidence(groups[0][idx], groups[1])
            with autocast(x.device, sched.precision):
                terms = net(xb, yb, sched.mc_samples, sched.entropy_reg, sched.y_weight,
                            sched.use_decoder, log_p_g_given_c=evidence, generator=noise)
            loss = -terms.elbo.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += terms.stacked().detach().sum(1)
            rows += len(idx)
        decay.step()
        sums = distributed.sum_over_ranks(torch.cat([sums, sums.new_tensor([rows])]))
        values = (sums[:5] / sums[5]).tolist()  # the one host synchronisation of the epoch
        record = dict(zip(("reconstruction", "ensemble", "kl_c", "kl_z", "entropy"), values, strict=True))
        record["loss"] = -(record["reconstruction"] + record["ensemble"] - record["kl_c"]
                           - record["kl_z"] - record["entropy"])
        record.update(stage="train", epoch=epoch_offset + epoch + 1)
        history.append(record)
        if callback:
            callback({"stage": "train", "epoch": epoch + 1, "epochs": sched.epochs,
                      "loss": record["loss"],
                      "terms": {k: record[k] for k in ("reconstruction", "ensemble", "kl_c",
                                                       "kl_z", "entropy")}})
    model.eval()
    return history
