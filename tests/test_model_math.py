"""The paper's math: closed-form KL, the optimal posteriors (Eq. 6/8/9), numerical safety."""

import math

import torch

from dgc_cli.heads import make_head
from dgc_cli.model import (
    DGCModel,
    kl_q_z_p_z_given_c,
    log_p_c_given_z,
    log_p_z_given_c,
    log_q_c_given_x,
    log_q_c_given_xy,
)

B, K, J = 6, 4, 3


def test_log_p_z_given_c_matches_torch_distributions():
    torch.manual_seed(0)
    z, mu, log_sigma2 = torch.randn(B, J), torch.randn(K, J), torch.randn(K, J)
    expected = torch.distributions.Normal(mu, torch.exp(0.5 * log_sigma2)).log_prob(
        z.unsqueeze(1)).sum(-1)
    torch.testing.assert_close(log_p_z_given_c(z, mu, log_sigma2), expected)


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(1)
    mu_q, log_sigma2_q = torch.randn(B, J), torch.randn(B, J) * 0.5
    mu, log_sigma2 = torch.randn(K, J), torch.randn(K, J) * 0.5
    closed = kl_q_z_p_z_given_c(mu_q, log_sigma2_q, mu, log_sigma2)
    q = torch.distributions.Normal(mu_q, torch.exp(0.5 * log_sigma2_q))
    z = q.sample((200_000,))  # S x B x J
    log_q = q.log_prob(z).sum(-1)  # S x B
    log_p = torch.stack([log_p_z_given_c(z[:, b], mu, log_sigma2) for b in range(B)], 1)  # S x B x K
    monte_carlo = (log_q.unsqueeze(-1) - log_p).mean(0)
    torch.testing.assert_close(closed, monte_carlo, atol=0.03, rtol=0.01)
    assert torch.allclose(torch.distributions.kl_divergence(
        torch.distributions.Normal(mu_q[0], torch.exp(0.5 * log_sigma2_q[0])),
        torch.distributions.Normal(mu[1], torch.exp(0.5 * log_sigma2[1]))).sum(), closed[0, 1])


def objective(q, log_p_y, h_max, log_p_c_z):
    """Terms (1) - (3) of Eq. 4 with the Eq. 7 regulariser: sum_k q_k (log p(y|z,k) - H_k)
    - KL(q || p(c|z)), for one row."""
    return (q * (log_p_y - h_max)).sum() - (q * (torch.log(q) - log_p_c_z)).sum()


def test_eq8_posterior_maximises_the_objective_over_the_simplex():
    torch.manual_seed(2)
    log_pi = torch.log_softmax(torch.randn(K), 0)
    for _ in range(20):
        log_p_c_z = log_p_c_given_z(log_pi, torch.randn(1, K) * 3)[0]
        log_p_y, h_max = torch.randn(K) * 2, torch.rand(K) * 2
        q_star = log_q_c_given_xy(log_p_y, h_max, log_p_c_z).exp()
        best = objective(q_star, log_p_y, h_max, log_p_c_z)
        for _ in range(50):  # random points of the simplex
            q = torch.distributions.Dirichlet(torch.ones(K)).sample()
            assert objective(q, log_p_y, h_max, log_p_c_z) <= best + 1e-5
        for _ in range(50):  # small perturbations of the optimum
            q = torch.softmax(torch.log(q_star) + 0.05 * torch.randn(K), 0)
            assert objective(q, log_p_y, h_max, log_p_c_z) <= best + 1e-6


def test_eq6_is_eq8_without_the_regulariser_and_eq9_ignores_y():
    log_p_c_z = torch.log_softmax(torch.tensor([[0.2, -1.0, 0.5]]), -1)
    log_p_y, h_max = torch.tensor([[-0.1, -3.0, -2.0]]), torch.tensor([[0.5, 0.1, 2.0]])
    eq6 = log_q_c_given_xy(log_p_y, h_max, log_p_c_z, entropy_reg=False)
    torch.testing.assert_close(eq6, torch.log_softmax(log_p_y + log_p_c_z, -1))
    eq9 = log_q_c_given_x(h_max, log_p_c_z)
    torch.testing.assert_close(eq9, torch.log_softmax(log_p_c_z - h_max, -1))
    # Eq. 6 in the paper's own words: p(y|z,k) p(k|z) / sum_j p(y|z,j) p(j|z)
    num = log_p_y.exp() * log_p_c_z.exp()
    torch.testing.assert_close(eq6.exp(), num / num.sum(-1, keepdim=True))


def small_model(task="continuous", meta=None):
    meta = meta or {"dim": 1, "squeeze": True, "mean": [0.0], "scale": [1.0]}
    head = make_head(task, J, K, (8,), meta=meta)
    return DGCModel((5,), J, K, {"type": "mlp", "widths": [16], "activation": "relu"},
                    {"type": "mlp", "widths": [16], "activation": "relu"}, head, [("gaussian", 5)])


def test_posteriors_sum_to_one_and_terms_stay_finite_on_extreme_inputs():
    torch.manual_seed(3)
    model = small_model()
    with torch.no_grad():
        model.mu.copy_(torch.randn(K, J) * 50)
        model.log_sigma2.copy_(torch.randn(K, J) * 5)
    x = torch.randn(B, 5) * torch.tensor([1e-3, 1, 1e2, 1e4, 1])
    y = torch.tensor([1e8, -1e8, 0.0, 1e-8, 3.0, -2.0]).view(-1, 1)
    terms = model.terms(x, y, mc_samples=3)
    for value in terms.means().values():
        assert torch.isfinite(value)
    torch.testing.assert_close(terms.log_q_c.exp().sum(-1), torch.ones(B))
    for y_given in (y, None):
        log_q, _, _ = model.posterior(x, y_given)
        assert torch.isfinite(log_q).all()
        torch.testing.assert_close(log_q.exp().sum(-1), torch.ones(B))


def test_survival_terms_finite_for_times_near_zero_and_huge():
    torch.manual_seed(4)
    model = small_model("survival", {"time_scale": 1.0})
    x = torch.randn(4, 5)
    y = torch.tensor([[1e-20, 1.0], [1e-6, 0.0], [1e9, 1.0], [1e9, 0.0]])
    terms = model.terms(x, y)
    loss = -terms.elbo.mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_elbo_is_the_sum_of_its_terms_and_reduces_to_vade_without_y():
    torch.manual_seed(5)
    model = small_model()
    x, y = torch.randn(B, 5), torch.randn(B, 1)
    t = model.terms(x, y)
    torch.testing.assert_close(t.elbo, t.reconstruction + t.ensemble - t.kl_c - t.kl_z - t.entropy)
    vade = model.terms(x, None)
    assert torch.equal(vade.ensemble, torch.zeros(B)) and torch.equal(vade.entropy, torch.zeros(B))
    # Without y, q(c|x) is p(c|z) at the sampled z: its KL to p(c|z) is zero, so minus
    # the ELBO's cluster terms equal -log p(z) up to the z-dependent parts checked above.
    assert math.isclose(vade.log_q_c.exp().sum(-1).mean().item(), 1.0, rel_tol=1e-6)


def test_z_samples_come_from_the_given_generator_alone():
    """A run's z noise is its own: the same generator seed gives the same terms whatever
    torch's global RNG has done in between (runs side by side share that one)."""
    torch.manual_seed(6)
    model = small_model()
    x, y = torch.randn(B, 5), torch.randn(B, 1)
    first = model.terms(x, y, mc_samples=2, generator=torch.Generator().manual_seed(1))
    torch.randn(100)  # another run draws from the global RNG meanwhile
    again = model.terms(x, y, mc_samples=2, generator=torch.Generator().manual_seed(1))
    other = model.terms(x, y, mc_samples=2, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(again.stacked(), first.stacked(), rtol=0, atol=0)
    assert not torch.equal(other.reconstruction, first.reconstruction)


def test_response_group_evidence_is_a_noisy_label_and_warm_up_posterior_follows_it():
    from dgc_cli.model import response_group_evidence

    evidence = response_group_evidence(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(evidence.exp().sum(-1), torch.full((3,), 2 * 0.99 + 2 * 0.01))
    assert evidence[0, 0] == evidence[0, 1] == math.log(0.99)
    assert evidence[0, 2] == math.log(0.01)
    flat = torch.zeros(3, 4)  # heads and p(c|z) indifferent: the group alone decides
    q = log_q_c_given_xy(flat, flat, flat, log_p_g_given_c=evidence).exp()
    torch.testing.assert_close(q.sum(-1), torch.ones(3))
    torch.testing.assert_close(q[0, :2].sum(), torch.tensor(0.99))
    torch.testing.assert_close(q[1, 2:].sum(), torch.tensor(0.99))


def test_mixture_start_gives_q_z_the_narrowest_component_variance():
    from dgc_cli.train import init_prior

    torch.manual_seed(0)
    model = small_model()
    x = torch.cat([torch.randn(200, 5) * 0.05, torch.randn(200, 5) * 0.05 + 3])
    init_prior(model, x, "gmm", seed=0)
    _, log_sigma2_q = model.encode(torch.randn(7, 5))
    expected = model.log_sigma2.min(0).values.expand(7, -1)
    torch.testing.assert_close(log_sigma2_q, expected, atol=1e-4, rtol=1e-4)


def test_bf16_autocast_keeps_the_mixture_math_in_float32():
    """--precision bf16: the networks' matmuls run in bf16, while z, log p(z|c) and every
    posterior stay float32; the result is the float32 one to bf16's precision."""
    from dgc_cli.train import autocast

    torch.manual_seed(7)
    model = small_model()
    x, y = torch.randn(64, 5), torch.randn(64, 1)
    exact, _, _ = model.posterior(x, y)
    with autocast(torch.device("cpu"), "bf16"):
        assert model.encoder(x).dtype == torch.bfloat16  # autocast is on
        mu_q, log_sigma2_q = model.encode(x)
        log_q, _, _ = model.posterior(x, y)
        torch.manual_seed(8)
        terms = model.terms(x, y)
    for tensor in (mu_q, log_sigma2_q, log_q, terms.log_q_c, terms.elbo):
        assert tensor.dtype == torch.float32
    torch.testing.assert_close(log_q.exp().sum(-1), torch.ones(64))
    torch.testing.assert_close(log_q.exp(), exact.exp(), atol=0.02, rtol=0)
    assert not torch.equal(log_q, exact)
