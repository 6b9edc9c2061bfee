"""The structured receptive field (SRF) convolution (paper Eq. 1).

``W[out, in] = sum_f alpha[out, in, f] * B_f(sigma)`` where ``B`` is the Gaussian
N-jet basis of :mod:`dcnbio.filters`.  One layer class serves every variant; what
differs is the σ parametrization (:mod:`dcnbio.layers.scales`) and the α
parametrization.

Two formulations compute the same function:

``dense``
    Build ``W`` and call ``conv2d`` with it (the paper's reference formulation).
    Cost grows with the kernel area, i.e. about σ².
``separable``
    Basis first (paper Eq. 8): filter each input channel with the separable 1-D
    Gaussian derivatives (a y pass and an x pass), then mix the ``F`` responses
    with a 1×1 convolution by α.  Cost grows only linearly with the radius.
    Needs one σ for all channel pairs (not σ_ji).

``dense`` is the default: on a 2-core CPU the depthwise passes of ``separable`` are memory-bound and
measured 4x slower for a width-0.25 DCN step.  ``auto`` picks, per call, the one with fewer multiply-adds.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .. import filters
from ..errors import ConfigError
from .scales import create_alpha, create_scale

FORMULATIONS = ("auto", "dense", "separable")


class SRFConv2d(nn.Module):
    """Convolution whose filters are linear combinations of Gaussian derivatives.

    Parameters
    ----------
    in_channels, out_channels : int
    order : int
        Highest derivative order ``N`` of the basis (2 in the paper: F = 6 functions).
    scale : str
        σ parametrization: ``"shared"``, ``"per-channel"`` (σ_ji), ``"linear-t"``, ``"quadratic-t"``.
    alpha : str
        α parametrization: ``"static"`` or ``"linear-t"``.
    stride : int
    padding : ``"same"``, ``"valid"`` or int
        ``"same"`` pads by the kernel radius (output size ``ceil(H / stride)``).
    radius : int, optional
        Fixed kernel radius.  Default: ``ceil(2σ + 0.5)`` from the current σ
        (for ``per-channel`` scales the default is 3, a 7×7 kernel, as in the paper).
    sigma_range : (float, float), optional
        Clamp σ into this range in the forward pass (the paper's Discussion
        recommends bounding σ for stability).  Gradients vanish outside it.
    formulation : ``"auto"``, ``"dense"`` or ``"separable"``

    Shapes: input ``(B, in, H, W)`` → output ``(B, out, H', W')``.  No bias.
    """

    def __init__(self, in_channels, out_channels, *, order=2, scale="shared", alpha="static",
                 stride=1, padding="same", radius=None, sigma_range=None, formulation="dense"):
        super().__init__()
        if formulation not in FORMULATIONS:
            raise ConfigError(f"unknown SRF formulation {formulation!r}; choose one of {FORMULATIONS}")
        if isinstance(padding, str) and padding not in ("same", "valid"):
            raise ConfigError(f"padding must be 'same', 'valid' or an int, got {padding!r}")
        if sigma_range is not None:
            lo, hi = sigma_range
            if not 0 < lo < hi:
                raise ConfigError(f"sigma_range must satisfy 0 < low < high, got {sigma_range!r}")
            sigma_range = (float(lo), float(hi))
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.order = filters._check_order(order)
        self.num_basis = filters.num_basis(order)
        self.stride = int(stride)
        self.padding = padding
        self.sigma_range = sigma_range
        self.scale_name = scale
        self.alpha_name = alpha
        self.scale = create_scale(scale, out_channels, in_channels)
        self.alpha = create_alpha(alpha, out_channels, in_channels, self.num_basis)
        if radius is None and self.scale.per_pair:
            radius = 3
        self.fixed_radius = radius
        if formulation == "separable" and self.scale.per_pair:
            raise ConfigError("the separable formulation needs one σ per layer, not per channel pair")
        self.formulation = formulation

    @property
    def depends_on_t(self):
        return self.scale.depends_on_t or self.alpha.depends_on_t

    def sigma(self, t=None):
        """σ in pixels of this layer's input: shape ``()`` or ``(out, in)`` for σ_ji."""
        sigma = self.scale(t)
        if self.sigma_range is not None:
            sigma = sigma.clamp(*self.sigma_range)
        return sigma

    def radius(self, sigma):
        return self.fixed_radius if self.fixed_radius is not None else filters.kernel_radius(sigma)

    def weight(self, t=None):
        """The dense filter bank ``(out, in, 2r+1, 2r+1)`` at time ``t``."""
        sigma = self.sigma(t)
        return self._dense_weight(sigma, self.radius(sigma), t)

    def _dense_weight(self, sigma, r, t, dtype=None):
        alpha = self.alpha(t)
        basis = filters.gaussian_derivative_basis(sigma, self.order, r).to(dtype or alpha.dtype)
        eq = "oif,fyx->oiyx" if basis.dim() == 3 else "oif,oifyx->oiyx"
        return torch.einsum(eq, alpha.to(basis.dtype), basis)

    def _pad(self, r):
        if self.padding == "same":
            return r
        if self.padding == "valid":
            return 0
        return int(self.padding)

    def choose_formulation(self, radius, in_channels):
        """``dense`` or ``separable`` by multiply-adds per output pixel (``auto``)."""
        if self.formulation != "auto":
            return self.formulation
        if self.scale.per_pair:
            return "dense"
        k = 2 * radius + 1
        n1 = self.order + 1
        dense = self.out_channels * in_channels * k * k
        separable = in_channels * n1 * k * self.stride + in_channels * n1 * n1 * k + \
            self.out_channels * in_channels * self.num_basis
        return "separable" if separable < dense else "dense"

    def forward(self, x, t=None):
        sigma = self.sigma(t)
        r = self.radius(sigma)
        if self.choose_formulation(r, x.shape[1]) == "dense":
            w = self._dense_weight(sigma, r, t, x.dtype)
            return F.conv2d(x, w, stride=self.stride, padding=self._pad(r))
        return self._separable(x, sigma, r, t)

    def _separable(self, x, sigma, r, t):
        b, c, h, w = x.shape
        n1 = self.order + 1
        g = filters.gaussian_derivatives_1d(sigma, self.order, r).to(x.dtype)  # (N+1, K)
        p = self._pad(r)
        k = g.shape[-1]
        # x passes: channel c*n1 + nx holds the nx-th derivative along x
        wx = g.reshape(n1, 1, 1, k).repeat(c, 1, 1, 1)
        hx = F.conv2d(x, wx, stride=(1, self.stride), padding=(0, p), groups=c)
        # y passes on each x-derivative: channel (c*n1 + nx)*n1 + ny
        wy = g.reshape(n1, 1, k, 1).repeat(c * n1, 1, 1, 1)
        hxy = F.conv2d(hx, wy, stride=(self.stride, 1), padding=(p, 0), groups=c * n1)
        hxy = hxy.view(b, c, n1, n1, hxy.shape[-2], hxy.shape[-1])
        idx_x = torch.tensor([nx for nx, _ in filters.basis_orders(self.order)], device=x.device)
        idx_y = torch.tensor([ny for _, ny in filters.basis_orders(self.order)], device=x.device)
        responses = hxy[:, :, idx_x, idx_y]  # (B, C, F, H', W')
        alpha = self.alpha(t).to(x.dtype)  # (out, in, F)
        mix = alpha.reshape(self.out_channels, c * self.num_basis, 1, 1)
        return F.conv2d(responses.reshape(b, c * self.num_basis, *responses.shape[-2:]), mix)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, order={self.order}, scale={self.scale_name!r}, "
                f"alpha={self.alpha_name!r}, stride={self.stride}, padding={self.padding!r}, "
                f"radius={self.fixed_radius}, sigma_range={self.sigma_range}, formulation={self.formulation!r}")
