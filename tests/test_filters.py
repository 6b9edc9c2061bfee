"""The Gaussian N-jet basis against scipy's Gaussian derivative filters (SPEC §1).

Sign convention, established here: ``scipy.ndimage.gaussian_filter`` *convolves*
(it correlates with the reversed kernel), so its impulse response is the sampled
derivative kernel itself, and it equals our basis function for every order with
sign +1 after dividing by ``σ^(n_x+n_y)`` (our basis is scale-normalised).
A ``conv2d`` with the basis as weight *correlates*, which flips odd orders; that
is asserted in ``test_srf.py``.
"""
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from dcnbio.errors import ConfigError
from dcnbio.core.filters import (basis_orders, gaussian_derivative_basis, gaussian_derivatives_1d, kernel_radius,
                            num_basis)

SIGMAS = [0.6, 1.0, 1.7, 2.5]


def scipy_impulse_responses(sigma, order, radius):
    """``{(n_x, n_y): impulse response}`` of scipy's Gaussian derivative filter on a (2r+1)² grid."""
    delta = np.zeros((2 * radius + 1, 2 * radius + 1))
    delta[radius, radius] = 1.0
    # axis 0 is y, axis 1 is x: scipy's order tuple is (n_y, n_x)
    return {(nx, ny): gaussian_filter(delta, sigma, order=(ny, nx), radius=radius, mode="constant")
            for nx, ny in basis_orders(order)}


@pytest.mark.parametrize("order", range(5))
def test_basis_orders_sequence_and_count(order):
    orders = basis_orders(order)
    assert len(orders) == num_basis(order) == (order + 1) * (order + 2) // 2
    # every (n_x, n_y) with n_x + n_y <= N exactly once ...
    assert sorted(orders) == sorted((nx, ny) for nx in range(order + 1) for ny in range(order + 1 - nx))
    # ... by total order, then by decreasing n_x (so the y-derivative ends each order)
    assert orders == sorted(orders, key=lambda o: (o[0] + o[1], -o[0]))


def test_basis_orders_of_the_paper():
    assert basis_orders(2) == [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]


@pytest.mark.parametrize("sigma", SIGMAS)
def test_basis_equals_scipy_impulse_response(sigma):
    order = 3
    radius = kernel_radius(sigma)
    basis = gaussian_derivative_basis(torch.tensor(sigma, dtype=torch.float64), order).numpy()
    reference = scipy_impulse_responses(sigma, order, radius)
    for f, (nx, ny) in enumerate(basis_orders(order)):
        ours = basis[f] / sigma ** (nx + ny)
        ref = reference[(nx, ny)]
        # both sample the same sum-normalised Gaussian times the same polynomial in float64; the
        # polynomials are evaluated differently (Hermite recurrence vs scipy's derivative recursion),
        # which costs a few ulp of the largest value (≤ 1.3 here)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-14, err_msg=f"(n_x, n_y) = {(nx, ny)}")
        if (nx + ny) % 2 == 1:
            # the sign check is discriminating: the flipped kernel is far from scipy's
            assert np.abs(ours + ref).max() > 0.5 * np.abs(ref).max()


@pytest.mark.parametrize("sigma, radius", [(1.0, 5), (1.7, 2), (0.6, 6)])
def test_basis_with_explicit_radius_equals_scipy(sigma, radius):
    """A wider or narrower grid than the default: scipy with the same radius still agrees."""
    basis = gaussian_derivative_basis(torch.tensor(sigma, dtype=torch.float64), 3, radius=radius).numpy()
    assert basis.shape == (10, 2 * radius + 1, 2 * radius + 1)
    reference = scipy_impulse_responses(sigma, 3, radius)
    for f, (nx, ny) in enumerate(basis_orders(3)):
        # as above: a few ulp of values ≤ 1.3
        np.testing.assert_allclose(basis[f] / sigma ** (nx + ny), reference[(nx, ny)], rtol=0, atol=1e-14)


@pytest.mark.parametrize("sigma, expected_radius", [(0.25, 1), (0.6, 2), (1.0, 3), (1.25, 3), (1.26, 4),
                                                    (1.7, 4), (2.5, 6)])
@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_default_shape_and_radius(sigma, expected_radius, order):
    # r = ceil(2σ + 0.5), worked out by hand for each σ (1.25 sits exactly on the boundary 2σ+0.5 = 3)
    assert kernel_radius(sigma) == expected_radius == math.ceil(2 * sigma + 0.5)
    basis = gaussian_derivative_basis(torch.tensor(sigma, dtype=torch.float64), order)
    k = 2 * expected_radius + 1
    assert basis.shape == (num_basis(order), k, k)


@pytest.mark.parametrize("radius", [0, 1, 4, 9])
def test_explicit_radius_respected(radius):
    basis = gaussian_derivative_basis(torch.tensor(1.3, dtype=torch.float64), 2, radius=radius)
    assert basis.shape == (6, 2 * radius + 1, 2 * radius + 1)
    g = gaussian_derivatives_1d(torch.tensor(1.3, dtype=torch.float64), 2, radius=radius)
    assert g.shape == (3, 2 * radius + 1)


def test_zeroth_order_is_a_normalised_gaussian():
    g = gaussian_derivatives_1d(torch.tensor(1.7, dtype=torch.float64), 3)
    # sum-normalised sampled Gaussian: sums to 1 up to float64 rounding of ~10 terms
    assert abs(float(g[0].sum()) - 1.0) < 1e-15
    basis = gaussian_derivative_basis(torch.tensor(1.7, dtype=torch.float64), 3)
    assert abs(float(basis[0].sum()) - 1.0) < 1e-15
    # the basis is the outer product of the 1-D derivatives: B[(nx, ny)][y, x] = g_ny[y] g_nx[x]
    for f, (nx, ny) in enumerate(basis_orders(3)):
        torch.testing.assert_close(basis[f], torch.outer(g[ny], g[nx]), rtol=0, atol=0)


def test_batched_sigma_equals_per_sigma_calls():
    sigma = torch.tensor([[0.6, 1.0, 1.7], [2.5, 0.9, 1.3]], dtype=torch.float64)
    radius = kernel_radius(sigma)
    assert radius == kernel_radius(2.5)  # batched scales share the grid of the largest σ
    batched = gaussian_derivative_basis(sigma, 2)
    assert batched.shape == (2, 3, 6, 2 * radius + 1, 2 * radius + 1)
    for idx in np.ndindex(2, 3):
        single = gaussian_derivative_basis(sigma[idx], 2, radius=radius)
        # the same float64 operations elementwise: identical up to rounding of the normalising sum
        torch.testing.assert_close(batched[idx], single, rtol=0, atol=1e-16)


@pytest.mark.parametrize("sigma", [0.6, 1.7])
def test_gradcheck_wrt_sigma(sigma):
    # σ chosen so that 2σ + 0.5 is far from an integer: finite differences do not change the radius
    s = torch.tensor(sigma, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: gaussian_derivative_basis(s, 3), (s,))
    assert torch.autograd.gradcheck(lambda s: gaussian_derivative_basis(s, 2, radius=5), (s,))


def test_gradcheck_wrt_batched_sigma():
    s = torch.tensor([0.6, 1.1, 1.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: gaussian_derivative_basis(s, 2), (s,))


def test_gradient_wrt_sigma_is_nonzero_for_every_basis_function():
    """Gradients reach σ through the sampled values (SPEC §1), for every basis function."""
    s = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    basis = gaussian_derivative_basis(s, 2)
    for f in range(basis.shape[0]):
        (grad,) = torch.autograd.grad((basis[f] ** 2).sum(), s, retain_graph=True)
        assert torch.isfinite(grad) and abs(float(grad)) > 1e-6


@pytest.mark.parametrize("order", [-1, 1.5, float("nan"), float("inf"), True, "two", None])
def test_bad_order_raises_config_error(order):
    with pytest.raises(ConfigError, match="order"):
        basis_orders(order)
    with pytest.raises(ConfigError, match="order"):
        gaussian_derivative_basis(1.0, order)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf"), torch.tensor([1.0, 0.0]),
                                   torch.tensor([float("nan"), 2.0]), "wide", None])
def test_bad_sigma_raises_config_error(sigma):
    with pytest.raises(ConfigError, match="sigma") as info:
        gaussian_derivative_basis(sigma, 2)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("radius", [-1, 2.5])
def test_bad_radius_raises_config_error(radius):
    with pytest.raises(ConfigError, match="radius"):
        gaussian_derivative_basis(1.0, 2, radius=radius)
