"""The DGC model and its math, in one place. Equation numbers are the paper's.

Generative: c ~ Cat(pi); z|c ~ N(mu_c, diag sigma2_c); x|z ~ decoder; y|z,c ~ head_c(z).
Inference: q(z|x) = N(mu~(x), diag sigma2~(x)); q(c|x) is no network but the closed-form optimum,
Eq. 8 (Eq. 6 without the entropy regulariser) during training and Eq. 9 for rows without y.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dgc_cli.heads import TaskHead
from dgc_cli.nets import build_decoder, build_encoder

LOG_2PI = math.log(2 * math.pi)
LOG_SIGMA2_Q_BOUND = 10.0  # q(z|x) log-variances live in (-10, 10): exp() can never overflow


# --- Gaussian mixture prior --------------------------------------------------------------------

def log_p_z_given_c(z: torch.Tensor, mu: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    """log N(z; mu_k, diag sigma2_k) for every cluster: z (B x J), mu (K x J) -> B x K."""
    diff2 = (z.unsqueeze(1) - mu).pow(2)
    return -0.5 * (LOG_2PI + log_sigma2 + diff2 * torch.exp(-log_sigma2)).sum(-1)


def log_p_c_given_z(log_pi: torch.Tensor, log_p_z_c: torch.Tensor) -> torch.Tensor:
    """p(c|z) proportional to pi_c N(z; mu_c, sigma2_c), normalised in log space: B x K."""
    return F.log_softmax(log_pi + log_p_z_c, dim=-1)


def kl_q_z_p_z_given_c(mu_q, log_sigma2_q, mu, log_sigma2) -> torch.Tensor:
    """KL(N(mu~, diag sigma2~) || N(mu_k, diag sigma2_k)) in closed form, per cluster: B x K."""
    mu_q, log_sigma2_q = mu_q.unsqueeze(1), log_sigma2_q.unsqueeze(1)
    return 0.5 * (log_sigma2 - log_sigma2_q
                  + torch.exp(log_sigma2_q - log_sigma2)
                  + (mu_q - mu).pow(2) * torch.exp(-log_sigma2) - 1).sum(-1)


# --- the two posteriors over clusters ----------------------------------------------------------

def entropy_max(entropy: torch.Tensor) -> torch.Tensor:
    """H_max = max(H(p(y|z,c)), 0) (Eq. 7)."""
    return entropy.clamp(min=0.0)


def log_q_c_given_xy(log_p_y_given_zc, h_max, log_p_c_z, entropy_reg=True, y_weight=1.0,
                     log_p_g_given_c=None):
    """Training posterior, Eq. 8 (Eq. 6 when ``entropy_reg`` is off), in log space: B x K.

    ``y_weight`` tempers the likelihood, p(y|z,c)^w; w = 1 is the paper. ``log_p_g_given_c``
    (B x K), used only while warming up a y-first start, adds the row's response group as one
    more piece of evidence about c (see ``response_group_evidence``).
    """
    logits = y_weight * log_p_y_given_zc + log_p_c_z
    if entropy_reg:
        logits = logits - y_weight * h_max
    if log_p_g_given_c is not None:
        logits = logits + log_p_g_given_c
    return F.log_softmax(logits, dim=-1)


def response_group_evidence(row_groups, cluster_groups, error: float = 0.01) -> torch.Tensor:
    """log p(g|c) for the y-first warm-up: the row's response group g is a noisy label of its
    cluster, right with probability 1 - ``error`` and otherwise spread over the other groups.
    row_groups (B), cluster_groups (K) -> B x K."""
    n_groups = max(int(cluster_groups.max()) + 1, 2)
    same = row_groups.unsqueeze(1) == cluster_groups.unsqueeze(0)
    right, wrong = math.log1p(-error), math.log(error / (n_groups - 1))
    return torch.where(same, right, wrong).float()


def log_q_c_given_x(h_max, log_p_c_z, entropy_reg=True):
    """Posterior for unlabeled rows, Eq. 9: p(c|z) reweighted by exp(-H_max): B x K."""
    return F.log_softmax(log_p_c_z - h_max if entropy_reg else log_p_c_z, dim=-1)


def log_p_y_given_x(log_q_c_test, log_p_y_given_zc):
    """Predictive log p(y|x) = log sum_k q_test(k|x) p(y|z,k), the ensemble with Eq. 9 weights: B."""
    return torch.logsumexp(log_q_c_test + log_p_y_given_zc, dim=-1)


# --- reconstruction likelihood by column kind ---------------------------------------------------

def log_p_x_given_z(x: torch.Tensor, x_params: torch.Tensor, blocks, log_sigma2_x) -> torch.Tensor:
    """log p(x|z) summed over features: B. ``blocks`` is [(kind, width)] over the flat columns.

    gaussian: standardised numerics, mean from the decoder, per-column log-variance;
    bernoulli: binary columns and images in [0, 1] (decoder gives logits);
    categorical: one one-hot group (decoder gives logits, softmax over the group).
    """
    x, x_params = x.reshape(x.shape[0], -1), x_params.reshape(x.shape[0], -1)
    total = x.new_zeros(x.shape[0])
    start = 0
    for kind, width in blocks:
        xb, pb = x[:, start:start + width], x_params[:, start:start + width]
        if kind == "gaussian":
            log_var = log_sigma2_x[start:start + width]
            total = total - 0.5 * (LOG_2PI + log_var + (xb - pb).pow(2) * torch.exp(-log_var)).sum(-1)
        elif kind == "bernoulli":
            total = total - F.binary_cross_entropy_with_logits(pb, xb, reduction="none").sum(-1)
        elif kind == "categorical":
            total = total + (xb * F.log_softmax(pb, dim=-1)).sum(-1)
        else:
            raise ValueError(f"unknown likelihood kind {kind!r}")
        start += width
    return total


# --- the model ---------------------------------------------------------------------------------

def _log_mean_exp(log_values: list[torch.Tensor]) -> torch.Tensor:
    """log (1/M) sum_m exp(v_m), elementwise over M tensors (the one tensor itself when M = 1)."""
    if len(log_values) == 1:
        return log_values[0]
    return torch.logsumexp(torch.stack(log_values), 0) - math.log(len(log_values))


def _mean(values: list[torch.Tensor]) -> torch.Tensor:
    return values[0] if len(values) == 1 else torch.stack(values).mean(0)


@dataclass
class Terms:
    """Per-row terms of minus the regularised ELBO (Eq. 3 + Eq. 7); ``loss`` is their mean sum."""

    reconstruction: torch.Tensor  # E_q[log p(x|z)]
    ensemble: torch.Tensor  # sum_k q_k log p(y|z,k), the probabilistic ensemble (Eq. 2)
    kl_c: torch.Tensor  # KL(q(c|x) || p(c))
    kl_z: torch.Tensor  # sum_k q_k KL(q(z|x) || p(z|c=k))
    entropy: torch.Tensor  # sum_k q_k H_max[k], the regulariser (Eq. 7)
    log_q_c: torch.Tensor  # B x K, the posterior the terms were weighted with

    @property
    def elbo(self) -> torch.Tensor:
        return self.reconstruction + self.ensemble - self.kl_c - self.kl_z - self.entropy

    def stacked(self) -> torch.Tensor:
        """The five terms as rows of one 5 x B tensor, in the order of ``means``."""
        return torch.stack([self.reconstruction, self.ensemble, self.kl_c, self.kl_z, self.entropy])

    def means(self) -> dict[str, torch.Tensor]:
        return {"reconstruction": self.reconstruction.mean(), "ensemble": self.ensemble.mean(),
                "kl_c": self.kl_c.mean(), "kl_z": self.kl_z.mean(),
                "entropy": self.entropy.mean()}


class DGCModel(nn.Module):
    """Encoder q(z|x), decoder p(x|z), mixture prior (pi, mu, sigma2) and a task head p(y|z,c)."""

    def __init__(self, x_shape, latent_dim: int, n_clusters: int, encoder_spec: dict,
                 decoder_spec: dict, head: TaskHead, blocks, learn_x_variance: bool = True,
                 x_log_variance: float = 0.0):
        super().__init__()
        self.x_shape, self.latent_dim, self.n_clusters = tuple(x_shape), latent_dim, n_clusters
        self.blocks = [(kind, int(width)) for kind, width in blocks]
        self.encoder, feat = build_encoder(self.x_shape, encoder_spec)
        self.to_mu = nn.Linear(feat, latent_dim)
        self.to_log_sigma2 = nn.Linear(feat, latent_dim)
        self.decoder = build_decoder(latent_dim, self.x_shape, decoder_spec)
        self.head = head
        n_x = math.prod(self.x_shape)
        # log-variance of the gaussian columns of p(x|z): fixed (the weight of reconstruction
        # against the response) unless learn_x_variance
        self.log_sigma2_x = nn.Parameter(torch.full((n_x,), float(x_log_variance)),
                                         requires_grad=learn_x_variance)
        # Free prior parameters: weights through a softmax, variances through a log (DESIGN.md).
        self.pi_logits = nn.Parameter(torch.zeros(n_clusters))
        self.mu = nn.Parameter(torch.zeros(n_clusters, latent_dim))
        self.log_sigma2 = nn.Parameter(torch.zeros(n_clusters, latent_dim))

    @property
    def log_pi(self) -> torch.Tensor:
        return F.log_softmax(self.pi_logits, dim=0)

    def encode(self, x: torch.Tensor):
        """Parameters of q(z|x): mu~ and log sigma2~, each B x J, in float32 (also under bf16
        autocast, so that z and the mixture math keep full precision)."""
        h = self.encoder(x if len(self.x_shape) > 1 else x.reshape(x.shape[0], -1))
        bound = LOG_SIGMA2_Q_BOUND
        return self.to_mu(h).float(), bound * torch.tanh(self.to_log_sigma2(h).float() / bound)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).float()

    def reconstruction(self, x, z) -> torch.Tensor:
        return log_p_x_given_z(x, self.decode(z), self.blocks, self.log_sigma2_x)

    def cluster_scores(self, z: torch.Tensor):
        """For one z sample: log p(c|z), the head's parameters, and H_max (each B x K)."""
        log_p_c_z = log_p_c_given_z(self.log_pi, log_p_z_given_c(z, self.mu, self.log_sigma2))
        params = self.head(z)
        return log_p_c_z, params, entropy_max(self.head.entropy(params))

    def terms(self, x, y=None, mc_samples=1, entropy_reg=True, y_weight=1.0,
              use_decoder=True, log_p_g_given_c=None, generator=None) -> Terms:
        """Every term of minus the regularised ELBO, per row, with M samples of z ~ q(z|x)
        (drawn from ``generator``, on x's device, or torch's global one).

        With ``y`` the posterior is Eq. 8 (labelled); without it, the model is VaDE
        (q(c|x) = p(c|z)) and the task-head terms are zero.
        """
        mu_q, log_sigma2_q = self.encode(x)
        log_pi = self.log_pi
        recon, log_q_samples, log_p_y, h_max = 0.0, [], [], []
        for _ in range(mc_samples):
            eps = (torch.randn_like(mu_q) if generator is None else  # (compiles, shapes symbolic)
                   torch.randn(mu_q.shape, generator=generator, device=mu_q.device))
            z = mu_q + torch.exp(0.5 * log_sigma2_q) * eps  # reparameterisation
            if use_decoder:
                recon = recon + self.reconstruction(x, z) / mc_samples
            log_p_c_z = log_p_c_given_z(log_pi, log_p_z_given_c(z, self.mu, self.log_sigma2))
            if y is None:
                log_q_samples.append(log_p_c_z)
                continue
            params = self.head(z)
            log_p_y_given_zc = self.head.log_likelihood(params, y)
            h = entropy_max(self.head.entropy(params)) if entropy_reg else None
            log_q_samples.append(log_q_c_given_xy(log_p_y_given_zc, h, log_p_c_z, entropy_reg,
                                                  y_weight, log_p_g_given_c))
            log_p_y.append(log_p_y_given_zc)
            h_max.append(h)
        # q(c|x) is a function of x: average the per-sample optima (Eq. 8) over the M samples.
        log_q_c = _log_mean_exp(log_q_samples)
        q_c = log_q_c.exp()
        zero = mu_q.new_zeros(mu_q.shape[0])
        # y_weight w tempers the response likelihood, p(y|z,c)^w (w = 1 is the paper's ELBO)
        ensemble = y_weight * (q_c * _mean(log_p_y)).sum(-1) if log_p_y else zero
        entropy = y_weight * (q_c * _mean(h_max)).sum(-1) if log_p_y and entropy_reg else zero
        kl_c = (q_c * (log_q_c - log_pi)).sum(-1)
        kl_z = (q_c * kl_q_z_p_z_given_c(mu_q, log_sigma2_q, self.mu, self.log_sigma2)).sum(-1)
        recon = recon if use_decoder else zero
        return Terms(recon, ensemble, kl_c, kl_z, entropy, log_q_c)

    def forward(self, x, y=None, mc_samples=1, entropy_reg=True, y_weight=1.0,
                use_decoder=True, pretrain=False, log_p_g_given_c=None, generator=None):
        """Per-row terms of the loss (so that DistributedDataParallel can wrap the model);
        with ``pretrain`` the autoencoder's log p(x | z = mu~(x)) alone."""
        if pretrain:
            return self.pretrain_objective(x, y, y_weight, log_p_g_given_c)
        return self.terms(x, y, mc_samples, entropy_reg, y_weight, use_decoder, log_p_g_given_c,
                          generator)

    def pretrain_objective(self, x, y=None, y_weight=1.0, log_p_g_given_c=None) -> torch.Tensor:
        """Pre-training: the autoencoder's log p(x | z = mu~(x)); with y and the rows' response
        groups, plus log sum_k q(k|g) p(y|z,k), q(c|g) proportional to p(g|c): the heads
        learn y, each row through the clusters of its group."""
        z = self.encode(x)[0]
        objective = self.reconstruction(x, z)
        if y is not None and log_p_g_given_c is not None:
            log_p_y_given_zc = self.head.log_likelihood(self.head(z), y)
            log_q_c_given_g = F.log_softmax(log_p_g_given_c, dim=-1)
            objective = objective + y_weight * log_p_y_given_x(log_q_c_given_g, log_p_y_given_zc)
        return objective

    @torch.no_grad()
    def posterior(self, x, y=None, entropy_reg=True, y_weight=1.0):
        """log q(c|x) at z = mu~(x): Eq. 8 with y, Eq. 9 without. Also returns mu~ and the head's
        parameters for the ensemble prediction."""
        z, _ = self.encode(x)
        log_p_c_z, params, h_max = self.cluster_scores(z)
        if not entropy_reg:
            h_max = torch.zeros_like(h_max)
        if y is None:
            return log_q_c_given_x(h_max, log_p_c_z, entropy_reg), z, params
        log_p_y_given_zc = self.head.log_likelihood(params, y)
        return log_q_c_given_xy(log_p_y_given_zc, h_max, log_p_c_z, entropy_reg, y_weight), z, params
