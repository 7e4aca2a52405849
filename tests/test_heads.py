"""Each head's log-likelihood and entropy against torch.distributions / scipy.stats."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from dgc_cli.heads import HEADS, TaskHead, make_head, register_head

B, K, J = 7, 3, 4


def test_categorical_matches_torch_distributions():
    torch.manual_seed(0)
    head = make_head("categorical", J, K, meta={"classes": [0, 1, 2, 3, 4]})
    params = head(torch.randn(B, J) * 3)
    y = torch.randint(0, 5, (B,))
    dist = torch.distributions.Categorical(logits=params)  # batch B x K
    expected = dist.log_prob(y.view(-1, 1).expand(B, K))
    torch.testing.assert_close(head.log_likelihood(params, y), expected)
    torch.testing.assert_close(head.entropy(params), dist.entropy())


def test_categorical_encodes_labels_and_rejects_unseen():
    meta = HEADS["categorical"].fit_response(np.array(["b", "a", "c", "a"]))
    head = make_head("categorical", J, K, meta=meta)
    assert head.encode(np.array(["c", "a"])).tolist() == [2, 0]
    with pytest.raises(ValueError, match="'z'"):
        head.encode(np.array(["z"]))


def test_gaussian_matches_torch_distributions_multi_output():
    torch.manual_seed(1)
    head = make_head("continuous", J, K, meta={"dim": 2, "squeeze": False,
                                                "mean": [0, 0], "scale": [1, 1]})
    mean, log_sigma2 = head(torch.randn(B, J) * 2)
    y = torch.randn(B, 2) * 3
    dist = torch.distributions.Normal(mean, torch.exp(0.5 * log_sigma2))
    expected = dist.log_prob(y.unsqueeze(1)).sum(-1)
    torch.testing.assert_close(head.log_likelihood((mean, log_sigma2), y), expected)
    torch.testing.assert_close(head.entropy((mean, log_sigma2)), dist.entropy().sum(-1))


def test_weibull_matches_scipy_for_events_and_censored_rows():
    torch.manual_seed(2)
    head = make_head("survival", J, K, meta={"time_scale": 1.0})
    with torch.no_grad():
        head.log_shape.copy_(torch.tensor([-0.5, 0.0, 0.7]))
    log_lambda, log_k = head(torch.randn(B, J))
    t = torch.rand(B) * 3 + 0.05
    event = torch.tensor([1, 0, 1, 1, 0, 0, 1], dtype=torch.float32)
    got = head.log_likelihood((log_lambda, log_k), torch.stack([t, event], 1)).detach().double().numpy()
    lam, k = log_lambda.exp().double().detach().numpy(), log_k.exp().double().detach().numpy()
    tt, ev = t.double().numpy()[:, None], event.double().numpy()[:, None]
    logpdf = scipy.stats.weibull_min.logpdf(tt, k, scale=lam)
    logsf = scipy.stats.weibull_min.logsf(tt, k, scale=lam)
    np.testing.assert_allclose(got, np.where(ev == 1, logpdf, logsf), rtol=1e-4, atol=1e-4)
    # H is the entropy of log T, a Gumbel (min) with location log lambda and scale 1/k,
    # checked against scipy, and against a Monte Carlo estimate from Weibull draws
    entropy = scipy.stats.gumbel_l.entropy(loc=np.log(lam), scale=1 / k)
    got_h = head.entropy((log_lambda, log_k)).detach().double().numpy()
    np.testing.assert_allclose(got_h, entropy, rtol=1e-4, atol=1e-5)
    draws = scipy.stats.weibull_min.rvs(k[0, 2], scale=lam[0, 2], size=400_000, random_state=0)
    log_t = np.log(draws)
    log_density = scipy.stats.gumbel_l.logpdf(log_t, loc=np.log(lam[0, 2]), scale=1 / k[0, 2])
    assert abs(-log_density.mean() - got_h[0, 2]) < 0.01
    # the learned shape is per cluster: the same k_k for every row
    assert torch.equal(log_k[0], log_k[-1])


def test_weibull_is_finite_for_extreme_times_and_scales():
    head = make_head("survival", J, K, meta={"time_scale": 1.0})
    z = torch.tensor([[-1e3] * J, [1e3] * J, [0.0] * J])
    params = head(z)
    y = torch.tensor([[1e-12, 1.0], [1e6, 0.0], [1e-30, 1.0]])
    assert torch.isfinite(head.log_likelihood(params, y)).all()
    assert torch.isfinite(head.entropy(params)).all()


def test_gaussian_is_finite_for_huge_responses():
    head = make_head("continuous", J, K, meta={"dim": 1, "squeeze": True, "mean": [0], "scale": [1]})
    params = head(torch.randn(3, J) * 100)
    assert torch.isfinite(head.log_likelihood(params, torch.tensor([[1e15], [-1e15], [0.0]]))).all()


def test_a_new_head_is_one_class_and_one_registry_line():
    """A Poisson head defined here plugs into the estimator without touching the package."""
    from dgc_cli import DGC

    @register_head("poisson_test")
    class PoissonHead(TaskHead):
        n_params = 1

        def forward(self, z):
            return self.raw(z).squeeze(-1)  # log rate, B x K

        def log_likelihood(self, log_rate, y):
            return torch.distributions.Poisson(log_rate.exp()).log_prob(y.view(-1, 1))

        def entropy(self, log_rate):  # a normal approximation is enough for a test head
            return 0.5 * torch.log(2 * math.pi * math.e * log_rate.exp())

        def predict(self, log_rate, q_c):
            return (q_c * log_rate.exp()).sum(1)

    try:
        rng = np.random.default_rng(0)
        group = rng.integers(0, 2, 300)
        x = rng.normal(size=(300, 3)).astype(np.float32) + group[:, None] * 3
        y = rng.poisson(np.where(group == 1, 20.0, 2.0))
        model = DGC(n_clusters=2, task="poisson_test", epochs=15, pretrain_epochs=3,
                    init="gmm", random_state=0).fit(x, y)
        rate = model.predict_response(x)
        assert rate[group == 1].mean() > 3 * rate[group == 0].mean()
    finally:
        HEADS.pop("poisson_test")
