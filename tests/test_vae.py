"""vbayes.vae against truth: closed-form KL and pPCA likelihoods, normalised likelihoods, bound orderings,
exact resumption, diagnostics on models whose answer is known, and clear errors for bad input."""

import json
import math
import re
import shutil
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import integrate, stats

from vbayes.errors import VBayesError
from vbayes.families import MeanFieldGaussian, kl, kl_to_standard_normal
from vbayes.outputs import sha256
from vbayes.vae import (
    ModelConfig,
    PosteriorCollapseWarning,
    TrainConfig,
    active_units,
    activity,
    autoencoder_loss,
    build_model,
    checkpoint,
    elbo,
    evaluate,
    iwae_bound,
    iwae_loss,
    kl_from_log_var,
    kl_from_scale,
    kl_per_dim,
    kl_weight,
    load_digits,
    load_mnist,
    load_run,
    negative_elbo,
    negative_elbo_pixel_mean,
    read_idx,
    train,
    with_data_bias,
)
from vbayes.vae.likelihoods import Bernoulli, Categorical, ContinuousBernoulli, Gaussian

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
NO_MNIST = (
    "needs MNIST, which does not ship with the tests: the four IDX files of the MNIST database "
    "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) "
    "in ../shared/data/mnist next to the repository"
)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _params(model):
    return jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))


def _assert_same_params(a, b, atol=1e-12):
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


# ----------------------------------------------------------------------------------------------
# KL: the two formulas, the families' closed form and Monte Carlo


def test_two_kl_formulas_agree_when_the_encoder_outputs_log_variance():
    rng = np.random.default_rng(0)
    loc = jnp.asarray(rng.normal(size=(5, 7)))
    log_var = jnp.asarray(rng.normal(size=(5, 7)))
    a = kl_from_log_var(loc, log_var)
    b = kl_from_scale(loc, jnp.exp(0.5 * log_var))
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(kl_per_dim(loc, log_var).sum(-1), a, rtol=1e-12)
    np.testing.assert_allclose(kl_to_standard_normal(loc, log_var=log_var), a, rtol=1e-12)
    q = MeanFieldGaussian(loc[0], 0.5 * log_var[0])
    p = MeanFieldGaussian(jnp.zeros(7), jnp.zeros(7))
    np.testing.assert_allclose(kl(q, p), a[0], rtol=1e-10)
    # Monte Carlo: E_q[log q − log p]
    z = q.sample(jax.random.PRNGKey(0), 400_000)
    lr = np.asarray(q.log_prob(z) - p.log_prob(z))
    assert abs(lr.mean() - float(a[0])) < 4 * lr.std() / math.sqrt(lr.size)
    # the classic bug: a log-sd fed to the log-variance formula is a different, wrong number
    wrong = kl_from_log_var(loc, 0.5 * log_var)
    assert float(jnp.max(jnp.abs(wrong - a))) > 0.5


def test_mean_over_pixels_loss_is_beta_equal_to_the_number_of_pixels(digits):
    model = build_model(ModelConfig((8, 8), latent=3, width=16, depth=1), 1)
    x = jnp.asarray(digits.train[:32])
    key = jax.random.PRNGKey(5)
    d = 64
    mean_pixels = eqx.filter_jit(negative_elbo_pixel_mean)(model, x, key)
    beta_d, info = eqx.filter_jit(negative_elbo)(model, x, key, beta=d)
    np.testing.assert_allclose(mean_pixels * d, beta_d, rtol=1e-12)
    # and it is not the ELBO: the β = 1 loss differs by (D − 1)·KL
    beta_1, _ = eqx.filter_jit(negative_elbo)(model, x, key, beta=1.0)
    np.testing.assert_allclose(beta_d - beta_1, (d - 1) * info.kl, rtol=1e-10)
    assert float(info.kl) > 0.01


def test_negative_elbo_is_sum_over_pixels_mean_over_batch(digits):
    model = build_model(ModelConfig((8, 8), latent=3, width=16, depth=1), 2)
    x = jnp.asarray(digits.train[:10])
    key = jax.random.PRNGKey(0)
    loss, info = negative_elbo(model, x, key)
    # by hand: one z per image from the same key, Bernoulli log-likelihood summed over the 64 pixels
    loc, log_var = jax.vmap(model.encode)(x)
    z = loc + jnp.exp(0.5 * log_var) * jax.random.normal(key, loc.shape)
    logits = np.asarray(jax.vmap(model.decode)(z))[..., 0]
    rec = (np.asarray(x) * logits - np.logaddexp(0, logits)).reshape(10, -1).sum(1)
    kl_b = 0.5 * np.sum(np.exp(log_var) + loc**2 - 1 - log_var, 1)
    np.testing.assert_allclose(loss, np.mean(kl_b - rec), rtol=1e-10)
    np.testing.assert_allclose(info.bound, -loss, rtol=1e-10)


def test_free_bits_and_annealing(digits):
    model = build_model(ModelConfig((8, 8), latent=4, width=16, depth=1), 3)
    x = jnp.asarray(digits.train[:20])
    key = jax.random.PRNGKey(1)
    base, info = negative_elbo(model, x, key)
    lam = float(jnp.max(info.kl_per_dim)) + 1.0  # above every dimension's KL: the KL term is the constant d·λ
    loss, _ = negative_elbo(model, x, key, free_bits=lam)
    np.testing.assert_allclose(loss, -info.reconstruction + 4 * lam, rtol=1e-12)
    small, _ = negative_elbo(model, x, key, free_bits=1e-9)
    np.testing.assert_allclose(small, base, rtol=1e-12)
    assert [float(kl_weight(s, 2.0, 100)) for s in (0, 50, 100, 1000)] == [0.0, 1.0, 2.0, 2.0]
    assert float(kl_weight(0, 0.5, 0)) == 0.5


# ----------------------------------------------------------------------------------------------
# likelihoods are normalised densities with the stated means


def test_likelihoods_normalise_and_have_the_stated_means():
    eta = jnp.asarray([-30.0, -2.0, -1e-4, 0.0, 3e-3, 1.5, 25.0])
    out = eta[:, None]
    # Bernoulli: p(0) + p(1) = 1 per pixel
    b = Bernoulli()
    total = jnp.exp(jax.vmap(b.log_prob)(out, jnp.zeros(7))) + jnp.exp(jax.vmap(b.log_prob)(out, jnp.ones(7)))
    np.testing.assert_allclose(total, 1.0, rtol=1e-12)
    np.testing.assert_allclose(b.mean(out), 1 / (1 + np.exp(-np.asarray(eta))), rtol=1e-12)
    # continuous Bernoulli: integrates to 1 on [0, 1], mean by quadrature
    cb = ContinuousBernoulli()
    for e in np.asarray(eta):
        f = lambda t, e=e: float(jnp.exp(cb.log_prob(jnp.asarray([[e]]), jnp.asarray([t]))))
        mass = integrate.quad(f, 0, 1, epsabs=1e-12, limit=200)[0]
        mean = integrate.quad(lambda t, f=f: t * f(t), 0, 1, epsabs=1e-12, limit=200)[0]
        assert abs(mass - 1) < 1e-8, (e, mass)
        assert abs(float(cb.mean(jnp.asarray([[e]]))[0]) - mean) < 1e-7, e
    # Gaussian: scipy's log density, per-pixel learned sd
    g = Gaussian((3,), sd=0.3, mode="pixel")
    g = eqx.tree_at(lambda m: m.log_sd, g, jnp.log(jnp.asarray([0.2, 0.5, 1.5])))
    x, mu = jnp.asarray([0.1, -1.0, 2.0]), jnp.asarray([0.0, 0.5, 1.0])
    ref = stats.norm(np.asarray(mu), [0.2, 0.5, 1.5]).logpdf(np.asarray(x)).sum()
    np.testing.assert_allclose(g.log_prob(mu[:, None], x), ref, rtol=1e-12)
    # categorical: the 17 levels of the digits carry all the mass
    c = Categorical(17)
    logits = jax.random.normal(jax.random.PRNGKey(0), (1, 17))
    levels = jnp.arange(17) / 16
    probs = jnp.exp(jax.vmap(lambda v: c.log_prob(logits, v[None]))(levels))
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(c.mean(logits)[0], probs @ levels, rtol=1e-12)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "continuous_bernoulli", "categorical"])
def test_data_bias_is_the_pixelwise_maximum_likelihood_fit(likelihood):
    """With the last weights at zero the decoder ignores z; the data bias must then maximise the data's
    likelihood (zero gradient; the categorical: add-one smoothed level frequencies)."""
    rng = np.random.default_rng(0)
    x = rng.beta(0.5, 2.0, (400, 4, 5)).astype(np.float32)
    x[:, 0, 0] = 0.0  # a pixel that is always 0: the Bernoulli fit is clipped there
    if likelihood == "categorical":
        x = (np.round(x * 16) / 16).astype(np.float32)
    model = with_data_bias(build_model(ModelConfig((4, 5), latent=3, likelihood=likelihood, levels=17), 0), x)
    last = lambda m: m.decoder.mlp.layers[-1]
    model = eqx.tree_at(lambda m: last(m).weight, model, jnp.zeros_like(last(model).weight))
    bias = last(model).bias

    def mean_log_lik(b):
        m = eqx.tree_at(lambda m: last(m).bias, model, b)
        return jnp.mean(jax.vmap(m.log_likelihood, (None, 0))(jnp.zeros(3), jnp.asarray(x)))

    if likelihood == "categorical":
        counts = np.stack([(np.round(x * 16) == j).sum(0) for j in range(17)], -1)
        np.testing.assert_allclose(bias.reshape(4, 5, 17), np.log((counts + 1) / (400 + 17)), rtol=1e-5)
        return
    grad = np.asarray(jax.grad(mean_log_lik)(bias)).reshape(4, 5)
    np.testing.assert_allclose(grad.reshape(-1)[1:], 0.0, atol=2e-5)
    assert mean_log_lik(bias) > mean_log_lik(bias + 0.05) and mean_log_lik(bias) > mean_log_lik(bias - 0.05)
    if likelihood == "bernoulli":
        assert float(bias[0]) == pytest.approx(math.log(1e-3 / (1 - 1e-3)), rel=1e-5)


@pytest.mark.slow
def test_a_new_training_run_starts_from_the_data_bias(digits):
    """One epoch at a negligible learning rate: the initial model comes back, its output bias the logit of the
    training pixels' means."""
    mc = ModelConfig((8, 8), latent=2, width=8, depth=1)
    result = train(digits, mc, TrainConfig(epochs=1, learning_rate=1e-12), progress=False)
    p = np.clip(digits.train.mean(0), 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(result.model.decoder.mlp.layers[-1].bias, np.log(p / (1 - p)).reshape(-1), rtol=1e-5)
    # a convolution has one bias per channel: the pixels' mean logit
    conv = with_data_bias(build_model(ModelConfig((8, 8), latent=2, network="conv", width=4), 0), digits.train)
    np.testing.assert_allclose(conv.decoder.out.bias.reshape(-1), np.mean(np.log(p / (1 - p))), rtol=1e-5)


def test_optimizer_is_adam_with_the_configured_beta1_and_epsilon():
    """Two steps against Adam written out: m̂ = m/(1 − β1^t), v̂ = v/(1 − β2^t), Δ = −lr m̂/(√v̂ + ε)."""
    from vbayes.vae.config import optimizer

    lr, b1, b2, eps = 0.1, 0.5, 0.999, 1e-2
    opt = optimizer(TrainConfig(learning_rate=lr, adam_b1=b1, adam_eps=eps))
    theta, m, v = np.zeros(2), np.zeros(2), np.zeros(2)
    params, state = jnp.zeros(2), opt.init(jnp.zeros(2))
    for t, g in enumerate([np.asarray([1.0, -3.0]), np.asarray([-2.0, 0.5])], start=1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        theta = theta - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        updates, state = opt.update(jnp.asarray(g, jnp.float32), state, params)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(params, theta, rtol=1e-5)
    with pytest.raises(VBayesError, match="adam_b1"):
        TrainConfig(adam_b1=1.0)


def test_fixed_sd_gets_no_gradient_and_learned_sd_does():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(20, 6)))
    for mode, moves in (("fixed", False), ("global", True), ("pixel", True)):
        cfg = ModelConfig((6,), latent=2, width=8, depth=1, likelihood="gaussian", sd=0.5, sd_mode=mode)
        model = build_model(cfg, 0)
        grads = eqx.filter_jit(eqx.filter_grad(lambda m: negative_elbo(m, x, jax.random.PRNGKey(0))[0]))(model)
        g = np.asarray(grads.likelihood.log_sd)
        assert g.shape == ((6,) if mode == "pixel" else ())
        assert (np.abs(g).min() > 1e-3) == moves, (mode, g)


# ----------------------------------------------------------------------------------------------
# pPCA: a linear Gaussian decoder has a closed-form log p(x)


def _ppca_logpdf(model, x):
    """log N(x; b, WWᵀ + σ²I) for a linear (depth-0) decoder with a Gaussian likelihood."""
    lin = model.decoder.mlp.layers[0]
    w, b = np.asarray(lin.weight), np.asarray(lin.bias)
    s2 = float(np.exp(2 * np.asarray(model.likelihood.log_sd)))
    cov = w @ w.T + s2 * np.eye(len(b))
    return stats.multivariate_normal(b, cov).logpdf(np.asarray(x))


def test_iwae_bounds_are_ordered_and_converge_to_log_px_on_a_linear_gaussian_model():
    cfg = ModelConfig((6,), latent=2, width=1, depth=0, likelihood="gaussian", sd=0.5, sd_mode="global")
    model = build_model(cfg, 7)  # random linear encoder and decoder: q is far from the posterior
    x = jnp.asarray(np.random.default_rng(1).normal(size=(200, 6)))
    exact = float(np.mean(_ppca_logpdf(model, x)))
    values = {1: float(jnp.mean(eqx.filter_jit(elbo)(model, x, jax.random.PRNGKey(0), samples=200)))}
    for k in (10, 5000):
        values[k] = float(jnp.mean(eqx.filter_jit(iwae_bound)(model, x, jax.random.PRNGKey(k), k, chunk=500)))
    assert values[1] < values[10] < values[5000] <= exact + 1e-3, (values, exact)
    assert values[1] < exact - 1.0  # a real gap to close
    assert exact - values[5000] < 0.1 * (exact - values[1]), (values, exact)


def _exact_posterior_ppca_vae():
    """A linear Gaussian VAE (D = 6, d = 2, σ = 0.5) whose decoder has orthogonal columns, so that the exact
    posterior N(Σ Wᵀ(x − b)/σ², Σ = (I + WᵀW/σ²)⁻¹) is diagonal, and whose linear encoder outputs it."""
    cfg = ModelConfig((6,), latent=2, width=1, depth=0, likelihood="gaussian", sd=0.5, sd_mode="fixed")
    model = build_model(cfg, 3)
    q, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(6, 2)))
    w, b, s2 = q * np.array([2.0, 0.7]), np.linspace(-1, 1, 6), 0.25
    cov = np.diag(1 / (1 + np.diag(w.T @ w) / s2))
    gain = cov @ w.T / s2  # (2, 6): the posterior mean is gain @ (x − b)
    enc_w = np.vstack([gain, np.zeros((2, 6))])
    enc_b = np.concatenate([-gain @ b, np.log(np.diag(cov))])
    model = eqx.tree_at(lambda m: m.decoder.mlp.layers[0].weight, model, jnp.asarray(w))
    model = eqx.tree_at(lambda m: m.decoder.mlp.layers[0].bias, model, jnp.asarray(b))
    model = eqx.tree_at(lambda m: m.encoder.mlp.layers[0].weight, model, jnp.asarray(enc_w))
    return eqx.tree_at(lambda m: m.encoder.mlp.layers[0].bias, model, jnp.asarray(enc_b))


def _iwae_grad(model, x, key, gradient, k=20):
    return eqx.filter_value_and_grad(lambda m: iwae_loss(m, x, key, k=k, gradient=gradient)[0])(model)


def test_dreg_encoder_gradient_vanishes_at_the_exact_posterior_where_reparam_is_noise():
    """With q = p(z | x) every log weight equals log p(x): the doubly reparameterised encoder gradient is 0
    for every draw (Tucker et al. 2019), while the reparameterised one keeps a score term of mean 0."""
    model = _exact_posterior_ppca_vae()
    x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 6)))
    value, g_dreg = _iwae_grad(model, x, jax.random.PRNGKey(0), "dreg")
    np.testing.assert_allclose(-float(value), np.mean(_ppca_logpdf(model, x)), rtol=0, atol=1e-10)
    _, g_rep = _iwae_grad(model, x, jax.random.PRNGKey(0), "reparam")
    enc = lambda g: np.concatenate([np.ravel(a) for a in _params(g.encoder)])  # noqa: E731
    assert np.abs(enc(g_dreg)).max() < 1e-10, np.abs(enc(g_dreg)).max()
    assert np.abs(enc(g_rep)).max() > 1e-2


def _far_model_and_data():
    cfg = ModelConfig((6,), latent=2, width=1, depth=0, likelihood="gaussian", sd=0.5, sd_mode="fixed")
    return build_model(cfg, 7), jnp.asarray(np.random.default_rng(1).normal(size=(5, 6)))  # q far from the posterior


def test_dreg_has_the_same_value_and_decoder_gradient():
    model, x = _far_model_and_data()
    (v_rep, g_rep), (v_dreg, g_dreg) = (_iwae_grad(model, x, jax.random.PRNGKey(0), g) for g in ("reparam", "dreg"))
    # the same value to the last bits: two programs (their gradients differ), so rounding may differ by an ulp
    # (it does when compiled without LLVM's optimisations, as in the default test run)
    np.testing.assert_allclose(float(v_rep), float(v_dreg), rtol=4 * np.finfo(np.float64).eps, atol=0)
    _assert_same_params(g_rep.decoder, g_dreg.decoder, atol=1e-12)


@pytest.mark.slow
def test_dreg_encoder_gradient_is_unbiased_with_less_variance():
    model, x = _far_model_and_data()
    keys = jax.random.split(jax.random.PRNGKey(1), 4000)

    def encoder_grads(gradient):
        one = lambda key: _iwae_grad(model, x, key, gradient)[1].encoder.mlp.layers[0].weight  # noqa: E731
        return np.asarray(jax.jit(jax.vmap(one))(keys)).reshape(len(keys), -1)

    rep, dreg = encoder_grads("reparam"), encoder_grads("dreg")
    z = (rep.mean(0) - dreg.mean(0)) / np.sqrt((rep.var(0) + dreg.var(0)) / len(keys))
    assert np.abs(z).max() < 4.0, z  # the same expectation, ∇_φ IWAE_K, over 24 components
    assert np.abs(rep.mean(0)).max() > 10 * np.sqrt(rep.var(0).max() / len(keys))  # and it is not zero
    assert dreg.var(0).sum() < 0.6 * rep.var(0).sum(), (dreg.var(0).sum(), rep.var(0).sum())


@pytest.mark.slow
def test_dreg_is_a_trainable_iwae_option_and_rejected_elsewhere(digits):
    """Both estimators of the same gradient train the same IWAE-5 on digits from the same start to within
    what one short run's noise allows, far above where they start."""
    mc, x_test, key = ModelConfig((8, 8), latent=4, width=32), jnp.asarray(digits.test), jax.random.PRNGKey(0)
    bounds = {}
    for gradient in ("reparam", "dreg"):
        tc = TrainConfig(kind="iwae", k=5, iwae_gradient=gradient, epochs=30, learning_rate=3e-3, patience=0)
        result = train(digits, mc, tc, progress=False)
        bounds[gradient] = float(jnp.mean(iwae_bound(result.model, x_test, key, 50)))
    start = with_data_bias(build_model(mc, jax.random.fold_in(jax.random.PRNGKey(0), 0)), digits.train)
    bounds["start"] = float(jnp.mean(iwae_bound(start, x_test, key, 50)))
    assert min(bounds["reparam"], bounds["dreg"]) > bounds["start"] + 2, bounds
    assert abs(bounds["reparam"] - bounds["dreg"]) < 0.5, bounds
    assert TrainConfig.from_dict({"kind": "iwae"}).iwae_gradient == "reparam"  # a run saved before the option
    with pytest.raises(VBayesError, match="iwae_gradient"):
        TrainConfig(kind="iwae", iwae_gradient="stl")
    with pytest.raises(VBayesError, match="unknown IWAE gradient"):
        iwae_loss(start, x_test[:2], key, gradient="score")


@pytest.fixture(scope="module")
def ppca_fit():
    """pPCA data (D = 8, q = 2, σ = 0.3) and a VAE with linear encoder and decoder trained on it."""
    rng = np.random.default_rng(0)
    d, q, n = 8, 2, 4000
    w_true = rng.normal(size=(d, q)) * np.array([2.0, 1.0])
    x = (rng.normal(size=(n, q)) @ w_true.T + 0.3 * rng.normal(size=(n, d)) + 1.0).astype(np.float64)
    cfg = ModelConfig((d,), latent=q, width=1, depth=0, likelihood="gaussian", sd=1.0, sd_mode="global")
    tc = TrainConfig(epochs=1000, batch_size=2000, learning_rate=0.1, lr_schedule="burda", patience=0)
    result = train(x, cfg, tc, progress=False)
    return x, result.last_model


def test_ppca_vae_elbo_reaches_the_exact_maximum_likelihood_and_spans_the_principal_subspace(ppca_fit):
    x, model = ppca_fit
    n, d = x.shape
    q = 2
    # Tipping & Bishop (1999): the maximum of the pPCA log-likelihood in closed form
    s = np.cov(x.T, bias=True)
    lam, u = np.linalg.eigh(s)
    lam, u = lam[::-1], u[:, ::-1]
    s2 = lam[q:].mean()
    w_ml = u[:, :q] * np.sqrt(lam[:q] - s2)
    c = w_ml @ w_ml.T + s2 * np.eye(d)
    ml = -0.5 * (d * math.log(2 * math.pi) + np.linalg.slogdet(c)[1] + np.trace(np.linalg.solve(c, s)))
    model_ll = float(np.mean(_ppca_logpdf(model, x)))
    the_elbo = float(jnp.mean(elbo(model, jnp.asarray(x), jax.random.PRNGKey(0), samples=64)))
    assert model_ll <= ml + 1e-9
    assert ml - model_ll < 0.01, (ml, model_ll)  # the decoder is (nearly) the ML pPCA
    assert -0.01 < model_ll - the_elbo < 0.02, (model_ll, the_elbo)  # and q (nearly) its posterior
    # the decoder's columns span the top-2 principal subspace: principal angles ≈ 0
    w = np.asarray(model.decoder.mlp.layers[0].weight)
    cos = np.linalg.svd(np.linalg.qr(w)[0].T @ u[:, :q], compute_uv=False)
    assert cos.min() > 0.999, cos


def test_evaluation_standard_error_is_that_of_the_exact_log_likelihoods(ppca_fit):
    """``iwae_se`` (sd / √n over the images) on the trained pPCA VAE, whose IWAE-5000 is log p(x) per image to
    Monte Carlo error: it equals the standard error of the closed-form log p(x_n) to a few per cent."""
    x, model = ppca_fit
    x = x[:400]
    exact = _ppca_logpdf(model, x)
    report = evaluate(model, x, 0, k=5000, chunk=500)
    assert abs(report.iwae - exact.mean()) < 0.01, (report.iwae, exact.mean())
    se = exact.std(ddof=1) / np.sqrt(len(x))
    assert report.iwae_se == pytest.approx(se, rel=0.03), (report.iwae_se, se)


# ----------------------------------------------------------------------------------------------
# diagnostics on models whose answer is known


def test_active_units_and_collapse_warning_on_a_model_with_known_activity(digits):
    model = build_model(ModelConfig((8, 8), latent=5, width=16, depth=1), 4)
    x = jnp.asarray(digits.test)
    last = model.encoder.mlp.layers[-1]
    # latent dims 3 and 4: the mean is a constant (zero weights) → no activity
    w = last.weight.at[3:5].set(0.0)
    dead = eqx.tree_at(lambda m: m.encoder.mlp.layers[-1].weight, model, w)
    loc = np.asarray(jax.vmap(dead.encode)(x)[0])
    np.testing.assert_allclose(activity(dead, x), loc.var(0, ddof=1), rtol=1e-10)
    assert activity(dead, x)[3:].max() < 1e-20
    assert active_units(dead, x) == int((loc.var(0, ddof=1) > 0.01).sum())
    report = evaluate(dead, x[:50], k=10)
    assert report.warnings and "inactive" in report.warnings[0]
    # every mean weight zero: collapse, and a warning
    all_dead = eqx.tree_at(lambda m: m.encoder.mlp.layers[-1].weight, model, last.weight.at[:5].set(0.0))
    with pytest.warns(PosteriorCollapseWarning, match="posterior collapse"):
        report = evaluate(all_dead, x[:50], k=10)
    assert report.active_units == 0


@pytest.fixture(scope="module")
def digits_vae(digits):
    cfg = ModelConfig((8, 8), latent=4, width=32, depth=1)
    return train(digits, cfg, TrainConfig(epochs=10, batch_size=50, learning_rate=3e-3), progress=False).model


@pytest.mark.slow
def test_strong_beta_collapses_the_posterior_and_the_diagnostics_say_so(digits, digits_vae):
    cfg = ModelConfig((8, 8), latent=4, width=32, depth=1)
    strong = train(
        digits, cfg, TrainConfig(epochs=10, batch_size=50, learning_rate=3e-3, beta=64.0), progress=False
    ).model
    assert active_units(digits_vae, digits.test) >= 3
    with pytest.warns(PosteriorCollapseWarning):
        report = evaluate(strong, digits.test, k=10)
    assert report.active_units == 0 and report.kl < 0.5


@pytest.mark.slow
def test_evaluation_bounds_are_ordered_and_consistent(digits, digits_vae):
    model = digits_vae
    x = digits.test
    reports = [evaluate(model, x, 0, k=k) for k in (1, 10, 200)]
    assert reports[0].elbo < reports[1].iwae < reports[2].iwae  # ELBO ≤ IWAE_10 ≤ IWAE_200
    assert abs(reports[0].iwae - reports[0].elbo) < 1.0  # K = 1 is the ELBO, up to Monte Carlo error
    r = reports[2]
    np.testing.assert_allclose(r.reconstruction - r.kl, r.elbo, rtol=1e-9)
    np.testing.assert_allclose(r.kl, r.kl_per_dim.sum(), rtol=1e-9)


def test_autoencoder_uses_the_encoder_mean_and_no_kl(digits):
    model = build_model(ModelConfig((8, 8), latent=3, width=16, depth=1), 5)
    x = jnp.asarray(digits.train[:16])
    loss, info = autoencoder_loss(model, x)
    loc, _ = jax.vmap(model.encode)(x)
    np.testing.assert_allclose(-loss, jnp.mean(jax.vmap(model.log_likelihood)(loc, x)), rtol=1e-12)
    assert float(info.kl) == 0.0
    result = train(
        digits, ModelConfig((8, 8), latent=3, width=16, depth=1), TrainConfig(kind="ae", epochs=5), progress=False
    )
    assert result.history[-1]["train_bound"] > result.history[0]["train_bound"]


def test_conv_networks_produce_the_likelihood_shapes():
    shape = (7, 9)  # odd sizes: ⌈n/2⌉ twice down, resized back up
    cfg = ModelConfig(shape, latent=3, network="conv", width=4, activation="relu", likelihood="categorical", levels=5)
    model = build_model(cfg, 0)
    loc, log_var = eqx.filter_eval_shape(model.encode, jnp.zeros(shape))
    assert loc.shape == log_var.shape == (3,)
    assert eqx.filter_eval_shape(model.decode, jnp.zeros(3)).shape == (*shape, 5)
    assert eqx.filter_eval_shape(model.mean, jnp.zeros(3)).shape == shape


@pytest.mark.slow
def test_conv_vae_trains_on_digits(digits):
    cfg = ModelConfig((8, 8), latent=4, network="conv", width=8, activation="relu")
    result = train(digits, cfg, TrainConfig(epochs=6, batch_size=50, learning_rate=3e-3), progress=False)
    vals = [h["val_bound"] for h in result.history]
    assert vals[-1] > vals[0] + 3, vals


# ----------------------------------------------------------------------------------------------
# checkpoints: resume gives the same parameters


def _small():
    return ModelConfig((8, 8), latent=3, width=16, depth=1), TrainConfig(epochs=4, batch_size=64, chunk=5, seed=3)


def test_resume_after_a_kill_gives_the_same_parameters(digits, tmp_path):
    mc, tc = _small()
    full = train(digits, mc, tc, out=tmp_path / "full", progress=False)
    # a run killed after its epoch-2 checkpoint: what is on disk is a 2-epoch run
    train(digits, mc, TrainConfig(**{**tc.to_dict(), "epochs": 2}), out=tmp_path / "killed", progress=False)
    resumed = train(digits, None, tc, out=tmp_path / "killed", resume=True, progress=False)
    assert resumed.epochs == full.epochs == 4 and resumed.steps == full.steps
    _assert_same_params(resumed.last_model, full.last_model)
    _assert_same_params(resumed.model, full.model)
    assert [h["val_bound"] for h in resumed.history] == pytest.approx([h["val_bound"] for h in full.history])
    _assert_same_params(load_run(tmp_path / "killed").last_model, full.last_model)


def test_ctrl_c_mid_epoch_saves_and_resume_continues_exactly(digits, tmp_path):
    mc, tc = _small()
    full = train(digits, mc, tc, progress=False)

    def interrupt(info):
        if info["step"] >= 27:  # mid-way through epoch 2 (20 steps per epoch)
            raise KeyboardInterrupt

    stopped = train(digits, mc, tc, out=tmp_path, progress=False, callback=interrupt)
    assert stopped.outcome == "interrupted" and stopped.steps == 30 and stopped.epochs == 1
    resumed = train(digits, None, None, out=tmp_path, resume=True, progress=False)
    assert resumed.outcome == "max_steps" and resumed.steps == full.steps
    _assert_same_params(resumed.last_model, full.last_model)


def test_all_epochs_without_a_patience_rule_is_completed_and_old_outcome_words_still_load(digits, tmp_path):
    """patience 0 (no early-stopping rule): a run through all its epochs is ``completed``. ``state.json``'s
    outcome is informational: a folder saved with the VAE's old words (max_epochs, early_stopped) loads and resumes."""
    mc, tc = _small()
    tc = TrainConfig(**{**tc.to_dict(), "epochs": 1, "patience": 0})
    first = train(digits, mc, tc, out=tmp_path, progress=False)
    state = tmp_path / "state.json"
    assert first.outcome == "completed" and json.loads(state.read_text())["outcome"] == "completed"
    for old in ("max_epochs", "early_stopped"):
        state.write_text(json.dumps({**json.loads(state.read_text()), "outcome": old}))
        assert load_run(tmp_path).meta["outcome"] == old
    more = TrainConfig(**{**tc.to_dict(), "epochs": 2})
    resumed = train(digits, None, more, out=tmp_path, resume=True, progress=False)
    assert resumed.outcome == "completed" and resumed.epochs == 2
    assert json.loads(state.read_text())["outcome"] == "completed"


@pytest.mark.parametrize("branching", [True, False], ids=["cond", "select"])
def test_a_step_with_a_non_finite_loss_changes_nothing_but_the_step_count(digits, monkeypatch, branching):
    """The CPU's conditional and the GPU's select skip the same steps and apply the same updates."""
    import importlib

    train_module = importlib.import_module("vbayes.vae.trainer")
    monkeypatch.setattr(train_module, "skip_by_branching", lambda: branching)
    mc = ModelConfig((8, 8), latent=2, width=8, depth=1, likelihood="gaussian")
    tc = TrainConfig(learning_rate=1e-2)
    model = build_model(mc, 0)
    opt = train_module.optimizer(tc)
    params, static = train_module.split_model(model)
    step = jax.jit(train_module.build_step(static, opt, tc, do_binarize=False))
    state = train_module.init(model, opt)
    x = jnp.asarray(digits.train[:10])
    key = jax.random.PRNGKey(0)
    after, info = step(state, x, key)
    assert bool(info.finite) and int(after.step) == 1
    # by hand: Adam's update on the same gradient
    objective = train_module.make_objective(tc.kind, k=tc.k, free_bits=tc.free_bits)
    k_loss = jax.random.split(jax.random.fold_in(key, 0))[1]
    grads = jax.grad(lambda p: objective(eqx.combine(p, static), x, k_loss, 1.0)[0])(params)
    updates, _ = opt.update(grads, state.opt_state, params)
    expected = optax.apply_updates(params, updates)
    for a, b in zip(jax.tree_util.tree_leaves(after.params), jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    skipped, info = step(after, x.at[0, 0, 0].set(jnp.nan), key)
    assert not bool(info.finite) and int(skipped.step) == 2
    for a, b in zip(
        jax.tree_util.tree_leaves((skipped.params, skipped.opt_state)),
        jax.tree_util.tree_leaves((after.params, after.opt_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_early_stopping_returns_the_best_validation_model(digits):
    mc = ModelConfig((8, 8), latent=3, width=16, depth=1)
    result = train(digits, mc, TrainConfig(epochs=40, batch_size=50, learning_rate=0.3, patience=2), progress=False)
    assert result.outcome == "converged" and result.epochs < 40
    vals = [h["val_bound"] for h in result.history]
    assert result.best_epoch == int(np.argmax(vals)) + 1
    assert vals[-1] < max(vals) and len(vals) - result.best_epoch == 2


# ----------------------------------------------------------------------------------------------
# checkpoints: integrity, crash safety, the resume rule


@pytest.fixture(scope="module")
def saved_run(digits, tmp_path_factory):
    """A one-epoch run saved to a folder (copy it before changing anything)."""
    mc, tc = _small()
    out = tmp_path_factory.mktemp("saved") / "run"
    train(digits, mc, TrainConfig(**{**tc.to_dict(), "epochs": 1}), out=out, progress=False)
    return out


def _copy(folder, tmp_path):
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def _state(folder):
    return json.loads((folder / "state.json").read_text())


def _overwrite_tail(path, n=40):
    """Part of a file's float data replaced by 0xFF bytes (NaN in float32 and float64)."""
    data = bytearray(path.read_bytes())
    data[-n:] = b"\xff" * n
    path.write_bytes(bytes(data))


def test_save_records_the_checksum_of_every_file_it_names_and_keeps_no_other(saved_run):
    state = _state(saved_run)
    named = {state["checkpoint"], state["best"]}
    assert named == {"checkpoint-00001-00000.eqx", "best-00001-00000.eqx"}
    assert set(state["checksums"]) == named and {p.name for p in saved_run.glob("*.eqx")} == named
    for name in named:
        assert state["checksums"][name] == sha256(saved_run / name)
    assert state["format"] == json.loads((saved_run / "config.json").read_text())["format"] == 2


@pytest.mark.parametrize("which", ["checkpoint", "best"])
def test_a_parameter_file_changed_after_it_was_written_is_refused_by_name(digits, saved_run, tmp_path, which):
    folder = _copy(saved_run, tmp_path)
    name = _state(folder)[which]
    _overwrite_tail(folder / name)
    message = re.escape(str(folder / name)) + " is damaged or was changed since it was written"
    with pytest.raises(VBayesError, match=message):
        load_run(folder)
    with pytest.raises(VBayesError, match=message):
        train(digits, None, None, out=folder, resume=True, progress=False)


def _as_first_format(folder):
    """A run folder as the previous vbayes wrote it: best.eqx, no checksums, format 1."""
    state = _state(folder)
    (folder / state["best"]).rename(folder / "best.eqx")
    for key in ("format", "best", "checksums"):
        state.pop(key)
    (folder / "state.json").write_text(json.dumps(state))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "format": 1}))
    return folder


def test_a_folder_in_the_first_format_loads_resumes_and_is_checked_for_finite_parameters(digits, saved_run, tmp_path):
    new = load_run(saved_run)
    old = _as_first_format(_copy(saved_run, tmp_path))
    loaded = load_run(old)
    _assert_same_params(loaded.model, new.model, atol=0)
    _assert_same_params(loaded.last_model, new.last_model, atol=0)
    damaged = _as_first_format(Path(shutil.copytree(saved_run, tmp_path / "damaged")))
    _overwrite_tail(damaged / "best.eqx")
    with pytest.raises(VBayesError, match=re.escape(str(damaged / "best.eqx")) + r" is damaged: .*non-finite"):
        load_run(damaged)
    mc, tc = _small()
    resumed = train(digits, None, TrainConfig(**{**tc.to_dict(), "epochs": 2}), out=old, resume=True, progress=False)
    assert resumed.epochs == 2 and not (old / "best.eqx").exists()
    state = _state(old)
    assert state["format"] == 2 and set(state["checksums"]) == {p.name for p in old.glob("*.eqx")}


_DELETE = object()
_DAMAGED_JSON = [
    ("config.json", ("model",), _DELETE),
    ("config.json", ("train",), [1, 2]),
    ("config.json", ("model", "data_shape"), 8),
    ("config.json", ("model", "latent"), -1),
    ("config.json", ("model", "sd"), "wide"),
    ("config.json", ("train", "learning_rate"), "fast"),
    ("config.json", ("format",), 99),
    ("state.json", (), []),
    ("state.json", ("epoch",), _DELETE),
    ("state.json", ("bad_epochs",), "2"),
    ("state.json", ("history",), {"epoch": 1}),
    ("state.json", ("checkpoint",), "../elsewhere.eqx"),
    ("state.json", ("checksums",), None),
    ("state.json", ("running",), {"sum": 1.0}),
]


def _edit(record, keys, value):
    if not keys:
        return value
    inner = record
    for key in keys[:-1]:
        inner = inner[key]
    if value is _DELETE:
        del inner[keys[-1]]
    else:
        inner[keys[-1]] = value
    return record


@pytest.mark.parametrize(
    ("name", "keys", "value"),
    _DAMAGED_JSON,
    ids=[f"{n}:{'.'.join(k) or 'all'}={'deleted' if v is _DELETE else v!r}" for n, k, v in _DAMAGED_JSON],
)
def test_json_that_parses_but_lacks_a_key_or_holds_a_wrong_value_is_refused_by_name(
    saved_run, tmp_path, name, keys, value
):
    folder = _copy(saved_run, tmp_path)
    path = folder / name
    path.write_text(json.dumps(_edit(json.loads(path.read_text()), keys, value)))
    with pytest.raises(VBayesError, match=re.escape(str(path)) + " is damaged"):
        load_run(folder)


class _Killed(BaseException):
    """A kill: nothing after it runs."""


def test_a_save_killed_at_any_moment_leaves_a_folder_that_loads_as_before_or_after(saved_run, tmp_path, monkeypatch):
    """save writes two parameter files, then state.json (three renames), then removes the old files: killed before
    each rename or during the removal, the folder loads, checksums verified, as the old or the new save."""
    import os

    from vbayes.vae.config import split_model

    run = load_run(saved_run)
    state = run.meta["_state"]
    meta = {k: v for k, v in run.meta.items() if k not in (*checkpoint.FILE_KEYS, "_state")}
    moved = jax.tree_util.tree_map(lambda a: a + 1 if eqx.is_inexact_array(a) else a, state)
    new_model = eqx.combine(moved.params, split_model(run.model)[1])
    real_replace, real_unlink = os.replace, Path.unlink

    def unlink(path, missing_ok=False):  # a temporary file is cleaned up; removing an old file is the kill
        if not path.name.startswith("."):
            raise _Killed
        real_unlink(path, missing_ok=missing_ok)

    for kill_at in range(4):  # before rename 1, 2 or 3; after them all, at the first removal
        folder = Path(shutil.copytree(saved_run, tmp_path / f"kill{kill_at}"))
        calls = []

        def replace(src, dst, kill_at=kill_at, calls=calls):
            calls.append(dst)
            if len(calls) > kill_at:
                raise _Killed
            real_replace(src, dst)

        with monkeypatch.context() as m:
            m.setattr(os, "replace", replace)
            m.setattr(Path, "unlink", unlink)
            with pytest.raises(_Killed):
                checkpoint.save(folder, moved, {**meta, "epoch": 2}, moved.params)
        loaded = load_run(folder)
        before = kill_at < 3  # state.json not yet replaced: the old save
        assert _state(folder)["epoch"] == (1 if before else 2)
        _assert_same_params(loaded.last_model, run.last_model if before else new_model, atol=0)
        _assert_same_params(loaded.model, run.model if before else new_model, atol=0)


def test_resume_sets_epochs_and_patience_and_refuses_any_other_change_giving_both_values(digits, saved_run, tmp_path):
    folder = _copy(saved_run, tmp_path)
    mc, tc = _small()
    with pytest.raises(VBayesError, match=r"different latent \(saved 3, given 4\)"):
        train(digits, ModelConfig((8, 8), latent=4, width=16, depth=1), None, out=folder, resume=True, progress=False)
    changed = TrainConfig(**{**tc.to_dict(), "learning_rate": 0.01, "seed": 4})
    with pytest.raises(VBayesError, match=r"learning_rate \(saved 0.001, given 0.01\); seed \(saved 3, given 4\)"):
        train(digits, mc, changed, out=folder, resume=True, progress=False)
    assert _state(folder) == _state(saved_run)  # nothing written
    more = TrainConfig(**{**tc.to_dict(), "epochs": 2, "patience": 7})
    resumed = train(digits, mc, more, out=folder, resume=True, progress=False)
    assert resumed.epochs == 2 and load_run(folder).train_config == more


_BAD_ARGUMENTS = [
    (lambda: TrainConfig(epochs=0), "epochs"),
    (lambda: TrainConfig(epochs=2.5), "epochs"),
    (lambda: TrainConfig(k=0), "k"),
    (lambda: TrainConfig(batch_size=True), "batch_size"),
    (lambda: TrainConfig(chunk=0), "chunk"),
    (lambda: TrainConfig(patience=-1), "patience"),
    (lambda: TrainConfig(anneal_steps=-5), "anneal_steps"),
    (lambda: TrainConfig(seed=-1), "seed"),
    (lambda: TrainConfig(seed=2**32), "seed"),
    (lambda: TrainConfig(learning_rate=0.0), "learning_rate"),
    (lambda: TrainConfig(learning_rate=float("nan")), "learning_rate"),
    (lambda: TrainConfig(learning_rate=float("inf")), "learning_rate"),
    (lambda: TrainConfig(beta=-1.0), "beta"),
    (lambda: TrainConfig(beta=float("nan")), "beta"),
    (lambda: TrainConfig(free_bits=float("inf")), "free_bits"),
    (lambda: TrainConfig(adam_b1=1.0), "adam_b1"),
    (lambda: TrainConfig(adam_eps=0.0), "adam_eps"),
    (lambda: TrainConfig(binarize="yes"), "binarize"),
    (lambda: TrainConfig(kind="gan"), "model kind"),
    (lambda: TrainConfig(lr_schedule="cosine"), "lr_schedule"),
    (lambda: TrainConfig(kind="iwae", iwae_gradient="stl"), "iwae_gradient"),
    (lambda: ModelConfig((8, 8), activation="swish"), "activation"),
    (lambda: ModelConfig((8, 8), network="rnn"), "network"),
    (lambda: ModelConfig((8, 8), sd_mode="learned"), "sd mode"),
    (lambda: ModelConfig((8, 8), latent=0), "latent"),
    (lambda: ModelConfig((), latent=2), "data_shape"),
    (lambda: train(np.zeros((4, 8, 8)), ModelConfig((8, 8), sd=0.0), progress=False), "sd"),
    (lambda: train(np.zeros((4, 8, 8)), ModelConfig((8, 8), latent=2.5), progress=False), "latent"),
    (lambda: train(np.zeros((4, 8, 8)), ModelConfig((8, 8), width=0.5), progress=False), "width"),
    (lambda: train(np.zeros((4, 8, 8)), ModelConfig((8, 8), likelihood="categorical", levels=1)), "levels"),
    (lambda: evaluate(build_model(ModelConfig((8, 8))), np.zeros((4, 8, 8)), k=0), "k"),
    (lambda: evaluate(build_model(ModelConfig((8, 8))), np.zeros((4, 8, 8)), chunk=0), "chunk"),
    (lambda: evaluate(build_model(ModelConfig((8, 8))), np.zeros((4, 8, 8)), batch_size=-1), "batch_size"),
    (lambda: evaluate(build_model(ModelConfig((8, 8))), np.zeros((4, 8, 8)), kind="gan"), "model kind"),
    (lambda: evaluate(build_model(ModelConfig((8, 8))), np.zeros((4, 8, 8)), key=-3), "key"),
]


@pytest.mark.parametrize(("call", "name"), _BAD_ARGUMENTS, ids=[f"{i}-{n}" for i, (_, n) in enumerate(_BAD_ARGUMENTS)])
def test_public_functions_refuse_a_bad_argument_naming_it(call, name):
    with pytest.raises(VBayesError, match=re.escape(name)):
        call()


def test_evaluation_of_one_image_claims_no_collapse(digits_vae, digits):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PosteriorCollapseWarning)
        report = evaluate(digits_vae, digits.test[:1], k=5)
    assert report.warnings and "one image" in report.warnings[0] and "collapse" not in report.warnings[0][:40]


# ----------------------------------------------------------------------------------------------
# data


def _write_idx(path, array):
    import gzip
    import struct

    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_and_mnist_loader_on_small_files(tmp_path):
    rng = np.random.default_rng(0)
    imgs, labels = rng.integers(0, 256, (30, 5, 4)), rng.integers(0, 10, 30)
    for name, arr in (
        ("train-images-idx3-ubyte", imgs),
        ("train-labels-idx1-ubyte", labels),
        ("t10k-images-idx3-ubyte", imgs[:7]),
        ("t10k-labels-idx1-ubyte", labels[:7]),
    ):
        _write_idx(tmp_path / f"{name}.gz", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), imgs)
    data = load_mnist(tmp_path, val_size=10)
    assert data.train.shape == (20, 5, 4) and data.val.shape == (10, 5, 4) and data.test.shape == (7, 5, 4)
    assert data.train.max() <= 1 and data.levels == 256
    np.testing.assert_allclose(np.sort(np.r_[data.train, data.val].ravel()), np.sort(imgs.ravel() / 255), atol=1e-6)
    (tmp_path / "bad.gz").write_bytes(b"")
    import gzip

    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(b"\x01\x02\x03\x04")
    with pytest.raises(VBayesError, match="not an IDX file"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(VBayesError, match="not found"):
        load_mnist(tmp_path / "nowhere")


@pytest.mark.skipif(not MNIST.is_dir(), reason=NO_MNIST)
def test_mnist_from_the_shared_folder():
    data = load_mnist(MNIST)
    assert data.train.shape == (50_000, 28, 28) and data.val.shape == (10_000, 28, 28)
    assert data.test.shape == (10_000, 28, 28) and data.test_labels.shape == (10_000,)
    assert 0.12 < data.train.mean() < 0.14  # MNIST's mean grey level is 0.1307


# ----------------------------------------------------------------------------------------------
# bad input


def test_bad_input_gives_clear_errors(digits, tmp_path):
    mc = ModelConfig((8, 8), latent=2, width=8, depth=1)
    tc = TrainConfig(epochs=1)
    with pytest.raises(VBayesError, match=r"shape \(28, 28\) do not fit a model for images of shape \(8, 8\)"):
        train(np.zeros((10, 28, 28)), mc, tc, progress=False)
    with pytest.raises(VBayesError, match=r"Bernoulli likelihood needs values in \[0, 1\].*max 255.*1/255"):
        train(digits.train * 255, mc, tc, progress=False)
    with pytest.raises(VBayesError, match="empty"):
        train(np.zeros((0, 8, 8)), mc, tc, progress=False)
    with pytest.raises(VBayesError, match="non-finite"):
        train(np.full((4, 8, 8), np.nan), ModelConfig((8, 8), likelihood="gaussian"), tc, progress=False)
    with pytest.raises(VBayesError, match="categorical likelihood with 256 levels"):
        train(digits.train, ModelConfig((8, 8), likelihood="categorical"), tc, progress=False)
    with pytest.raises(VBayesError, match="one image"):
        evaluate(build_model(mc), np.zeros((8, 8)))
    with pytest.raises(VBayesError, match="no checkpoint"):
        load_run(tmp_path / "missing")
    with pytest.raises(VBayesError, match="no checkpoint to resume"):
        train(digits, None, None, out=tmp_path, resume=True, progress=False)
    with pytest.raises(VBayesError, match="unknown likelihood"):
        ModelConfig((8, 8), likelihood="poisson")
    with pytest.raises(VBayesError, match="unknown model kind"):
        TrainConfig(kind="gan")
    with pytest.raises(VBayesError, match="grey images"):
        ModelConfig((64,), network="conv")
    run = tmp_path / "run"
    train(digits, mc, tc, out=run, progress=False)
    with pytest.raises(VBayesError, match="already holds a training run"):
        train(digits, mc, tc, out=run, progress=False)
    with pytest.raises(VBayesError, match=r"different batch_size \(saved 100, given 7\)"):
        train(digits, None, TrainConfig(epochs=2, batch_size=7), out=run, resume=True, progress=False)
    (run / "state.json").write_text("{")
    with pytest.raises(VBayesError, match="damaged"):
        load_run(run)


@pytest.mark.slow
def test_categorical_likelihood_on_digit_levels_trains(digits):
    cfg = ModelConfig((8, 8), latent=4, width=32, depth=1, likelihood="categorical", levels=17)
    result = train(digits, cfg, TrainConfig(epochs=4, batch_size=50, learning_rate=3e-3), progress=False)
    vals = [h["val_bound"] for h in result.history]
    assert vals[-1] > vals[0] and vals[-1] < 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PosteriorCollapseWarning)
        report = evaluate(result.model, digits.test, k=20)
    assert report.elbo <= report.iwae + 0.5


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason=NO_MNIST)
def test_mnist_vae_two_epochs_bounds_are_ordered():
    data = load_mnist(MNIST, val_size=1000)
    cfg = ModelConfig((28, 28), latent=20, width=200, depth=2)
    vae = train(data, cfg, TrainConfig(epochs=2, batch_size=100, patience=0), progress=False).model
    x = data.test[:200]
    r = {k: evaluate(vae, x, 0, k=k, chunk=250) for k in (1, 50, 1000)}
    assert r[1].elbo < r[50].iwae < r[1000].iwae < -80  # ELBO ≤ IWAE_50 ≤ IWAE_1000 ≤ log p(x)
    assert r[1000].iwae > -130 and r[1000].active_units >= 5


_KILLED_RUN = """
import os, signal, sys
import jax
jax.config.update("jax_enable_x64", True)
from vbayes.vae import ModelConfig, TrainConfig, load_digits, train

def kill_in_epoch_3(info):
    if info["epoch"] == 2 and info["chunk"] == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # no chance to save: only the epoch-2 checkpoint is on disk

train(load_digits(), ModelConfig((8, 8), latent=3, width=16, depth=1),
      TrainConfig(epochs=4, batch_size=64, chunk=5, seed=3), out=sys.argv[1], progress=False, callback=kill_in_epoch_3)
"""


@pytest.mark.slow
def test_resume_after_a_real_sigkill_gives_the_same_parameters(digits, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    mc, tc = _small()
    resumed = train(digits, None, None, out=tmp_path, resume=True, progress=False)
    full = train(digits, mc, tc, progress=False)
    assert resumed.steps == full.steps == 80
    _assert_same_params(resumed.last_model, full.last_model)
