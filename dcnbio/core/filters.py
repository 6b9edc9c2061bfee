"""Gaussian N-jet filters: the structured receptive field basis (paper Eq. 1, App. A.1).

Pure tensor functions, differentiable in the scale ``sigma``.  A filter of
order ``N`` is a linear combination of the partial derivatives
``d^(nx+ny) G / dx^nx dy^ny`` with ``nx + ny <= N`` of an isotropic Gaussian
``G(x, y; sigma)``.  The construction follows the paper's reference code:

* grid ``x = -r ... r`` (pixel spacing 1), ``r = ceil(k * sigma + 0.5)``, ``k = 2``;
* 1-D Gaussian sampled on the grid and normalised to sum 1;
* n-th derivative ``g_n = (-1 / (sqrt(2) sigma))^n H_n(x / (sqrt(2) sigma)) g``
  with physicists' Hermite polynomials ``H_n``;
* scale normalisation ``g_n <- sigma^n g_n``;
* 2-D basis ``B[nx, ny][y, x] = g_ny[y] * g_nx[x]``.

The radius is computed from a detached ``sigma``: the kernel *size* is not
differentiable, the sampled *values* are.
"""
import math
import numbers

import torch

from ..errors import ConfigError

#: Default truncation factor: the kernel radius is ``ceil(KERNEL_TRUNCATION * sigma + 0.5)``.
KERNEL_TRUNCATION = 2.0


def basis_orders(order):
    """Derivative orders ``(n_x, n_y)`` of the N-jet basis, in the order of the basis axis.

    Ordered by total order, then by decreasing ``n_x``: for ``order=2`` this is
    ``[(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]``.

    >>> basis_orders(1)
    [(0, 0), (1, 0), (0, 1)]
    """
    order = _check_order(order)
    return [(n - ny, ny) for n in range(order + 1) for ny in range(n + 1)]


def num_basis(order):
    """Number of basis functions of an N-jet, ``(N + 1)(N + 2) / 2``."""
    order = _check_order(order)
    return (order + 1) * (order + 2) // 2


def kernel_radius(sigma, truncation=KERNEL_TRUNCATION):
    """Radius ``r = ceil(truncation * max(sigma) + 0.5)`` of the sampling grid (not differentiable)."""
    s = float(torch.as_tensor(sigma).detach().max()) if torch.is_tensor(sigma) else float(sigma)
    if not math.isfinite(s):
        raise ConfigError(f"sigma must be finite to size a kernel, got {s}")
    return int(math.ceil(truncation * s + 0.5))


def hermite(n, u):
    """Physicists' Hermite polynomial ``H_n(u)`` by the three-term recurrence."""
    h_prev, h = torch.ones_like(u), 2 * u
    if n == 0:
        return h_prev
    for k in range(1, n):
        h_prev, h = h, 2 * u * h - 2 * k * h_prev
    return h


def gaussian_derivatives_1d(sigma, order=2, radius=None):
    """Scale-normalised sampled 1-D Gaussian derivatives ``sigma^n g_n``, ``n = 0 ... order``.

    Parameters
    ----------
    sigma : float or Tensor of shape ``S``
        Scale(s) in pixels, > 0.  Batched scales share one grid.
    order : int
        Highest derivative order, >= 0.
    radius : int, optional
        Grid radius; default ``ceil(2 * max(sigma) + 0.5)``.

    Returns
    -------
    Tensor of shape ``S + (order + 1, 2 * radius + 1)``.
    """
    order = _check_order(order)
    sigma = _check_sigma(sigma)
    if radius is None:
        radius = kernel_radius(sigma)
    if int(radius) != radius or radius < 0:
        raise ConfigError(f"radius must be a non-negative integer, got {radius!r}")
    x = torch.arange(-int(radius), int(radius) + 1, dtype=sigma.dtype, device=sigma.device)
    s = sigma[..., None]
    g = torch.exp(-0.5 * (x / s) ** 2)
    g = g / g.sum(dim=-1, keepdim=True)
    u = x / (math.sqrt(2.0) * s)
    # sigma^n * (-1/(sqrt(2) sigma))^n = (-1/sqrt(2))^n: scale normalisation cancels sigma
    derivs = [(-1.0 / math.sqrt(2.0)) ** n * hermite(n, u) * g for n in range(order + 1)]
    return torch.stack(derivs, dim=-2)


def gaussian_derivative_basis(sigma, order=2, radius=None):
    """The 2-D scale-normalised Gaussian-derivative basis (N-jet).

    Parameters
    ----------
    sigma : float or Tensor of shape ``S``
        Scale(s) in pixels, > 0; differentiable.
    order : int
        Highest total derivative order ``N`` (2 in the paper: 6 basis functions).
    radius : int, optional
        Kernel radius; default ``ceil(2 * max(sigma) + 0.5)``.

    Returns
    -------
    Tensor of shape ``S + (F, 2r+1, 2r+1)``, ``F = (N+1)(N+2)/2``, with the basis
    function for orders ``basis_orders(order)[f] = (n_x, n_y)`` at index ``f``;
    ``n_x`` differentiates along the last axis (x), ``n_y`` along the second to last (y).

    Examples
    --------
    >>> b = gaussian_derivative_basis(1.0)
    >>> tuple(b.shape)
    (6, 7, 7)
    """
    g = gaussian_derivatives_1d(sigma, order, radius)  # S + (N+1, K)
    basis = [g[..., ny, :, None] * g[..., nx, None, :] for nx, ny in basis_orders(order)]
    return torch.stack(basis, dim=-3)


def _check_order(order):
    # a non-number (a string from a config file, None) must fail like any other bad order, not with
    # int()'s ValueError/TypeError
    if isinstance(order, bool) or not isinstance(order, numbers.Real) or not float(order).is_integer() \
            or order < 0:
        raise ConfigError(f"derivative order must be an integer >= 0, got {order!r}")
    return int(order)


def _check_sigma(sigma):
    if not torch.is_tensor(sigma):
        try:
            sigma = torch.tensor(float(sigma), dtype=torch.get_default_dtype())
        except (TypeError, ValueError):
            raise ConfigError(f"sigma must be a number or a tensor of numbers > 0, got {sigma!r}") from None
    with torch.no_grad():
        bad = ~(torch.isfinite(sigma) & (sigma > 0))
        if bool(bad.any()):
            raise ConfigError(
                f"sigma must be finite and > 0, got {sigma.detach().flatten()[bad.flatten()][:3].tolist()}"
            )
    return sigma
