"""The table of scale (σ) and coefficient (α) parametrizations of an SRF layer.

Every scale is stored as a base-2 logarithm, ``sigma = 2 ** s``, as in the paper's
reference code, so that a normal initialisation of ``s`` makes ``sigma`` log-normal
(``s ~ N(0, 2/3)``: median 1 px, SD of ln σ = 0.462).

=================  ==========================================  ===============================
name               sigma                                       initialisation (App. A.2)
=================  ==========================================  ===============================
``shared``         ``2^s``, one per layer                      ``s ~ N(0, 2/3)``
``per-channel``    ``2^s_ji``, one per (out, in) pair (σ_ji)   ``s_ji ~ N(0, 2/3)``
``linear-t``       ``2^(a t' + b)``                            ``a ~ N(0, 2/3), b ~ N(0, 0.1)``
``quadratic-t``    ``2^(a t'^2 + b t' + c)``                   ``a, b ~ N(0, 2/3), c ~ N(0, 0.1)``
=================  ==========================================  ===============================

Coefficients: ``static`` (``alpha ~ N(0, 0.1)``) or ``linear-t``
(``alpha = a_α t' + b_α``, ``a_α ~ N(0, 0.1)``, ``b_α ~ N(0, 0.05)``).

Depth-dependent parametrizations use ``t' = τ · clip(t, -0.5, 2.5)``, ``τ = 0.5``:
adaptive solvers evaluate the dynamics slightly outside ``[0, T]``.
(Normal parameters above are standard deviations.)
"""
import torch
from torch import nn

from ...errors import ConfigError

#: Depth rescaling of the meta-parametrizations (Table 3): t' = TAU * clip(t, *T_CLIP).
TAU = 0.5
T_CLIP = (-0.5, 2.5)


def rescaled_time(t):
    """``t' = τ · clip(t, -0.5, 2.5)`` with ``τ = 0.5`` (Table 3)."""
    if t is None:
        raise ConfigError("this SRF layer's scale depends on depth t: call it with a time t")
    if not torch.is_tensor(t):
        # a Python float keeps its full precision; the caller casts to the layer's dtype
        # (as_tensor would round it to float32 first, off by ~1e-8 in a float64 layer)
        t = torch.tensor(float(t), dtype=torch.float64)
    return TAU * t.clamp(*T_CLIP)


def _normal(shape, std):
    return nn.Parameter(torch.randn(shape) * std)


class Scale(nn.Module):
    """Base of the σ parametrizations: ``forward(t)`` returns σ (pixels)."""

    #: whether σ depends on the integration time t
    depends_on_t = False
    #: whether σ has one value per (out, in) channel pair
    per_pair = False

    def log2_sigma(self, t=None):
        """``log2 σ`` at depth ``t``: shape ``()``, or ``(out, in)`` for per-pair scales."""
        raise NotImplementedError

    def forward(self, t=None):
        return torch.exp2(self.log2_sigma(t))


class SharedScale(Scale):
    """One σ for every filter of the layer."""

    def __init__(self, out_channels, in_channels):
        super().__init__()
        self.log2_scale = _normal((), 2 / 3)

    def log2_sigma(self, t=None):
        return self.log2_scale


class PairScale(Scale):
    """One σ per (out, in) channel pair: the paper's σ_ji."""

    per_pair = True

    def __init__(self, out_channels, in_channels):
        super().__init__()
        self.log2_scale = _normal((out_channels, in_channels), 2 / 3)

    def log2_sigma(self, t=None):
        return self.log2_scale


class LinearTimeScale(Scale):
    """``σ(t) = 2^(a t' + b)``, one per layer."""

    depends_on_t = True

    def __init__(self, out_channels, in_channels):
        super().__init__()
        self.a = _normal((), 2 / 3)
        self.b = _normal((), 0.1)

    def log2_sigma(self, t=None):
        tp = rescaled_time(t).to(self.a)
        return self.a * tp + self.b


class QuadraticTimeScale(Scale):
    """``σ(t) = 2^(a t'^2 + b t' + c)``, one per layer."""

    depends_on_t = True

    def __init__(self, out_channels, in_channels):
        super().__init__()
        self.a = _normal((), 2 / 3)
        self.b = _normal((), 2 / 3)
        self.c = _normal((), 0.1)

    def log2_sigma(self, t=None):
        tp = rescaled_time(t).to(self.a)
        return self.a * tp**2 + self.b * tp + self.c


class StaticAlpha(nn.Module):
    """Basis coefficients ``alpha[out, in, f] ~ N(0, 0.1)``."""

    depends_on_t = False

    def __init__(self, out_channels, in_channels, num_basis):
        super().__init__()
        self.alpha = _normal((out_channels, in_channels, num_basis), 0.1)

    def forward(self, t=None):
        return self.alpha


class LinearTimeAlpha(nn.Module):
    """``alpha(t) = a t' + b`` (Table 3, last row)."""

    depends_on_t = True

    def __init__(self, out_channels, in_channels, num_basis):
        super().__init__()
        self.a = _normal((out_channels, in_channels, num_basis), 0.1)
        self.b = _normal((out_channels, in_channels, num_basis), 0.05)

    def forward(self, t=None):
        tp = rescaled_time(t).to(self.a)
        return self.a * tp + self.b


SCALES = {
    "shared": SharedScale,
    "per-channel": PairScale,
    "linear-t": LinearTimeScale,
    "quadratic-t": QuadraticTimeScale,
}

ALPHAS = {"static": StaticAlpha, "linear-t": LinearTimeAlpha}


def create_scale(name, out_channels, in_channels):
    """The σ parametrization ``name`` (a key of :data:`SCALES`) for an ``(out_channels, in_channels)`` layer."""
    if name not in SCALES:
        raise ConfigError(f"unknown SRF scale {name!r}; choose one of {sorted(SCALES)}")
    return SCALES[name](out_channels, in_channels)


def create_alpha(name, out_channels, in_channels, num_basis):
    """The α parametrization ``name`` (a key of :data:`ALPHAS`): coefficients ``(out, in, num_basis)``, paper Eq. 1."""
    if name not in ALPHAS:
        raise ConfigError(f"unknown SRF alpha parametrization {name!r}; choose one of {sorted(ALPHAS)}")
    return ALPHAS[name](out_channels, in_channels, num_basis)
