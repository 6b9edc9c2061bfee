"""The SRF convolution: gradients, formulations, weights and σ/α parametrizations (SPEC §1).

Everything runs in float64 so that gradcheck's finite differences and the
dense/separable comparison are limited by rounding only.  Parameters that set σ
are fixed by hand so that ``2σ + 0.5`` is far from an integer: the kernel radius
(not differentiable) then cannot change under gradcheck's perturbations.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from dcnbio.errors import ConfigError
from dcnbio.core.filters import basis_orders, gaussian_derivative_basis, kernel_radius
from dcnbio.core.layers.srf import SRFConv2d

SCALES = ["shared", "per-channel", "linear-t", "quadratic-t"]
ALPHAS = ["static", "linear-t"]
T = 0.7  # a depth inside [0, 2]: t' = 0.35


def make_layer(scale="shared", alpha="static", cin=2, cout=3, **kwargs):
    """A float64 SRF layer whose σ at ``T`` is about 1.3 px (radius 4, far from a radius change)."""
    layer = SRFConv2d(cin, cout, scale=scale, alpha=alpha, **kwargs).double()
    with torch.no_grad():
        s = layer.scale
        if scale == "shared":
            s.log2_scale.fill_(math.log2(1.3))
        elif scale == "linear-t":  # log2 σ(T) = 0.4 * 0.35 + 0.3 = 0.44
            s.a.fill_(0.4)
            s.b.fill_(0.3)
        elif scale == "quadratic-t":  # log2 σ(T) = 0.3 * 0.35² - 0.2 * 0.35 + 0.45 = 0.417
            s.a.fill_(0.3)
            s.b.fill_(-0.2)
            s.c.fill_(0.45)
        # per-channel: the default radius is fixed at 3, any σ is safe
    if not scale == "per-channel":
        sigma = float(layer.sigma(T).detach())
        frac = (2 * sigma + 0.5) % 1
        assert 0.05 < frac < 0.95, "test set-up: σ too close to a radius change"
    return layer


def gradcheck_layer(layer, x, t, projections=4):
    """gradcheck of ``layer(x, t)`` w.r.t. the input and every parameter (σ and α parametrizations).

    The output is contracted with a few fixed random cotangents first: every entry of the
    Jacobian of those projections w.r.t. every input element is checked (unlike gradcheck's
    fast mode, which checks one random direction per input and missed a 1 % error in the
    σ gradient), while the analytic side needs only ``projections`` backward passes.
    """
    names = [n for n, _ in layer.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for _, p in layer.named_parameters())
    x = x.clone().requires_grad_(True)
    with torch.no_grad():
        shape = layer(x, t).shape
    cot = torch.randn((projections, *shape), dtype=x.dtype, generator=torch.Generator().manual_seed(2))

    def fn(x, *values):
        out = functional_call(layer, dict(zip(names, values)), (x, t))
        return (cot * out).flatten(1).sum(1)

    return torch.autograd.gradcheck(fn, (x, *values))


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("scale", SCALES)
def test_gradcheck_every_parametrization(scale, alpha):
    layer = make_layer(scale, alpha)
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64)
    assert gradcheck_layer(layer, x, T)


@pytest.mark.parametrize("padding", ["same", "valid", 1])
def test_gradcheck_stride2_and_paddings(padding):
    layer = make_layer("shared", "static", stride=2, padding=padding)
    x = torch.randn(1, 2, 11, 10, dtype=torch.float64)  # larger than the 9x9 kernel for 'valid'
    assert gradcheck_layer(layer, x, None)


def test_gradient_reaches_every_scale_parameter():
    """Not only gradcheck-consistent but non-zero: every σ and α parameter influences the output."""
    for scale in SCALES:
        for alpha in ALPHAS:
            layer = make_layer(scale, alpha)
            layer(torch.randn(2, 2, 9, 9, dtype=torch.float64), T).square().sum().backward()
            for name, p in layer.named_parameters():
                assert torch.isfinite(p.grad).all() and p.grad.abs().max() > 1e-8, (scale, alpha, name)


def output_and_grads(layer, x, t):
    x = x.clone().requires_grad_(True)
    out = layer(x, t)
    # a fixed random cotangent: every output element contributes to the gradients
    cot = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((out * cot).sum(), [x, *layer.parameters()])
    return out, grads


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("scale, alpha", [("shared", "static"), ("linear-t", "static"),
                                          ("quadratic-t", "static"), ("linear-t", "linear-t")])
def test_dense_and_separable_agree(scale, alpha, stride, padding):
    dense = make_layer(scale, alpha, stride=stride, padding=padding, formulation="dense")
    separable = make_layer(scale, alpha, stride=stride, padding=padding, formulation="separable")
    separable.load_state_dict(dense.state_dict())
    x = torch.randn(2, 2, 13, 12, dtype=torch.float64)  # non-square, odd/even sides: exercises stride rounding
    out_d, grads_d = output_and_grads(dense, x, T)
    out_s, grads_s = output_and_grads(separable, x, T)
    assert out_d.shape == out_s.shape
    # the same sums in a different association order (2-D taps vs two 1-D passes + 1x1 mix): float64
    # rounding on values of order 1 summed over ≤ 2*9*9*6 terms
    torch.testing.assert_close(out_s, out_d, rtol=0, atol=1e-12)
    for name, gd, gs in zip(["x"] + [n for n, _ in dense.named_parameters()], grads_d, grads_s):
        torch.testing.assert_close(gs, gd, rtol=1e-10, atol=1e-11, msg=lambda m: f"grad of {name}: {m}")


def test_auto_formulation_agrees_with_dense():
    dense = make_layer("shared", "static", cin=8, cout=8, formulation="dense")
    auto = make_layer("shared", "static", cin=8, cout=8, formulation="auto")
    auto.load_state_dict(dense.state_dict())
    x = torch.randn(1, 8, 10, 10, dtype=torch.float64)
    # whichever formulation auto picks, it computes the same function (rounding as above)
    torch.testing.assert_close(auto(x), dense(x), rtol=0, atol=1e-12)


def test_separable_with_per_channel_sigma_raises():
    with pytest.raises(ConfigError, match="separable"):
        SRFConv2d(2, 3, scale="per-channel", formulation="separable")
    # auto never picks separable for σ_ji
    from dcnbio.fast.formulations import auto_rule

    layer = SRFConv2d(2, 3, scale="per-channel", formulation="auto")
    assert auto_rule(layer, 3, 2) == "dense"


@pytest.mark.parametrize("stride, padding", [(1, "same"), (2, "same"), (1, "valid"), (2, 2)])
@pytest.mark.parametrize("scale, alpha", [("shared", "static"), ("per-channel", "static"),
                                          ("quadratic-t", "static"), ("linear-t", "linear-t")])
def test_weight_is_the_dense_filter_bank_of_forward(scale, alpha, stride, padding):
    layer = make_layer(scale, alpha, stride=stride, padding=padding)
    x = torch.randn(2, 2, 12, 12, dtype=torch.float64)
    w = layer.weight(T)
    r = (w.shape[-1] - 1) // 2
    pad = {"same": r, "valid": 0}.get(padding, padding)
    # the same conv2d call on the same weight: identical up to rounding
    torch.testing.assert_close(layer(x, T), F.conv2d(x, w, stride=stride, padding=pad), rtol=0, atol=1e-13)


@pytest.mark.parametrize("scale", SCALES)
def test_weight_equals_alpha_times_basis(scale):
    """W[o, i] = Σ_f α[o, i, f] B_f(σ) with the basis from dcnbio.core.filters, σ per pair for σ_ji."""
    layer = make_layer(scale, "static")
    sigma = layer.sigma(T)
    alpha = layer.alpha(T)
    w = layer.weight(T)
    if scale == "per-channel":
        assert sigma.shape == (3, 2)
        assert w.shape == (3, 2, 7, 7)  # σ_ji kernels are fixed at 7x7 (radius 3)
        for o in range(3):
            for i in range(2):
                expected = torch.einsum("f,fyx->yx", alpha[o, i], gaussian_derivative_basis(sigma[o, i], 2, 3))
                torch.testing.assert_close(w[o, i], expected, rtol=0, atol=1e-15)  # same products, float64
    else:
        assert sigma.shape == ()
        r = kernel_radius(sigma)
        assert w.shape == (3, 2, 2 * r + 1, 2 * r + 1)
        expected = torch.einsum("oif,fyx->oiyx", alpha, gaussian_derivative_basis(sigma, 2))
        torch.testing.assert_close(w, expected, rtol=0, atol=1e-15)  # same products, float64


@pytest.mark.parametrize("sigma", [0.6, 1.7])
def test_layer_correlates_so_odd_orders_flip_sign(sigma):
    """conv2d correlates: the layer's impulse response is the *flipped* filter.

    So a layer whose α selects basis function (n_x, n_y) responds to a delta with
    (-1)^(n_x+n_y) times scipy's Gaussian-derivative impulse response (times σ^(n_x+n_y)),
    and to the ramp I(x, y) = x with a *negative* first-order response.
    """
    layer = SRFConv2d(1, 1, order=3).double()
    with torch.no_grad():
        layer.scale.log2_scale.fill_(math.log2(sigma))
    r = kernel_radius(sigma)
    basis = gaussian_derivative_basis(torch.tensor(sigma, dtype=torch.float64), 3)
    delta = torch.zeros(1, 1, 2 * r + 1, 2 * r + 1, dtype=torch.float64)
    delta[..., r, r] = 1.0
    for f, (nx, ny) in enumerate(basis_orders(3)):
        with torch.no_grad():
            layer.alpha.alpha.zero_()
            layer.alpha.alpha[0, 0, f] = 1.0
        response = layer(delta)[0, 0]
        # pure index shuffling of float64 values: exact
        torch.testing.assert_close(response, (-1) ** (nx + ny) * basis[f], rtol=0, atol=0)
        torch.testing.assert_close(response, torch.flip(basis[f], (0, 1)), rtol=0, atol=0)
    ramp = torch.arange(20, dtype=torch.float64).expand(1, 1, 20, 20).contiguous()
    with torch.no_grad():
        layer.alpha.alpha.zero_()
        layer.alpha.alpha[0, 0, 1] = 1.0  # (n_x, n_y) = (1, 0)
    inner = layer(ramp)[0, 0, r:-r, r:-r]
    # Σ_q q·g_1(q) = -Σ q² g(q) / σ < 0, identical at every interior pixel
    expected = -(torch.arange(-r, r + 1, dtype=torch.float64) ** 2 * basis[0].sum(0)).sum() / sigma
    torch.testing.assert_close(inner, expected.expand_as(inner), rtol=1e-12, atol=0)


@pytest.mark.parametrize("t", [-1.0, -0.5, 0.0, 0.6, 2.0, 2.5, 3.0, 7.0])
def test_meta_parametrized_sigma_and_alpha_closed_form(t):
    """σ(t) = 2^(a t' + b), 2^(a t'^2 + b t' + c), α(t) = a t' + b with t' = 0.5 clip(t, -0.5, 2.5)."""
    tp = 0.5 * min(max(t, -0.5), 2.5)
    lin = make_layer("linear-t", "linear-t")
    quad = make_layer("quadratic-t")
    # float64 exp2 of the same exponent: a few ulp
    torch.testing.assert_close(lin.sigma(t), torch.tensor(2 ** (0.4 * tp + 0.3), dtype=torch.float64),
                               rtol=1e-14, atol=0)
    torch.testing.assert_close(quad.sigma(t), torch.tensor(2 ** (0.3 * tp ** 2 - 0.2 * tp + 0.45),
                                                           dtype=torch.float64), rtol=1e-14, atol=0)
    a, b = lin.alpha.a, lin.alpha.b
    torch.testing.assert_close(lin.alpha(t), a * tp + b, rtol=1e-15, atol=1e-17)


def test_meta_parametrization_is_clipped():
    lin = make_layer("linear-t", "linear-t")
    quad = make_layer("quadratic-t")
    for layer in (lin, quad):
        assert torch.equal(layer.sigma(3.0), layer.sigma(2.5))
        assert torch.equal(layer.sigma(-2.0), layer.sigma(-0.5))
        assert not torch.equal(layer.sigma(2.4), layer.sigma(2.5))  # inside the range σ does move
        assert torch.equal(layer.weight(3.0), layer.weight(2.5))
    assert torch.equal(lin.alpha(3.0), lin.alpha(2.5))


@pytest.mark.parametrize("scale, alpha", [("linear-t", "static"), ("shared", "linear-t")])
def test_time_dependent_layer_without_t_raises(scale, alpha):
    layer = SRFConv2d(2, 2, scale=scale, alpha=alpha)
    assert layer.depends_on_t
    with pytest.raises(ConfigError, match="time t"):
        layer(torch.randn(1, 2, 8, 8))


def test_sigma_range_clamps_sigma():
    layer = make_layer("shared", sigma_range=(0.5, 1.0))
    assert float(layer.sigma().detach()) == 1.0  # log2 σ set to log2 1.3, above the range
    assert layer.weight().shape[-1] == 2 * kernel_radius(1.0) + 1
    layer(torch.randn(1, 2, 8, 8, dtype=torch.float64)).sum().backward()
    # clamped from above: σ no longer depends on its parameter
    assert float(layer.scale.log2_scale.grad) == 0.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(scale="log-t"), "scale"),
    (dict(alpha="quadratic-t"), "alpha"),
    (dict(formulation="fft"), "formulation"),
    (dict(padding="full"), "padding"),
    (dict(sigma_range=(2.0, 1.0)), "sigma_range"),
    (dict(sigma_range=(0.0, 1.0)), "sigma_range"),
    (dict(order=-1), "order"),
    (dict(order=1.5), "order"),
])
def test_bad_layer_arguments_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match) as info:
        SRFConv2d(2, 3, **kwargs)
    assert "\n" not in str(info.value)
