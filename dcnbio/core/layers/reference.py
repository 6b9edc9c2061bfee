"""The reference formulation: the straightforward SRF convolution and ODE-block settings.

This is the formulation of the paper's reference code (SPEC §1–2), kept as the baseline of
``benchmarks/train_step.py`` and as the oracle of ``tests/test_formulations.py``; every
entry of :data:`dcnbio.core.layers.srf.FORMULATIONS` must compute the same function.

* Every call builds the filter bank ``W[o, i] = Σ_f α[o, i, f] B_f(σ)`` from the N-jet basis of
  :func:`dcnbio.core.filters.gaussian_derivative_basis` and calls ``conv2d`` with it (no cache);
* inside ODE blocks the time channel ``t ⊕ h`` is concatenated as an ordinary input channel;
* the blocks solve with dopri5 at ``rtol = atol = 1e-3`` and backpropagate with the adjoint
  (:data:`SOLVER`);
* activations are ``torch.nn.CELU`` modules (not :class:`dcnbio.core.layers.activations.CELU`, whose
  formulation :mod:`dcnbio.fast` may change).

Select it with ``formulation="reference"`` (layer or model config) or build a twin of a model
with :func:`dcnbio.core.models.reference.reference_model`.
"""
import torch.nn.functional as F

from .. import filters

#: ODE-block settings of the reference formulation (paper: dopri5, 1e-3, adjoint).
SOLVER = {"solver": "dopri5", "rtol": 1e-3, "atol": 1e-3, "adjoint": True, "seminorm": False}


def reference_conv(layer, x, t=None):
    """``conv2d(x, W(σ(t), α(t)))`` for an :class:`~dcnbio.core.layers.srf.SRFConv2d`, built from scratch.

    Parameters
    ----------
    layer : SRFConv2d
        Supplies σ (``layer.sigma(t)``, clamping included), α, radius, stride and padding.
    x : Tensor ``(B, in, H, W)``
    t : float or Tensor, optional

    Returns
    -------
    Tensor ``(B, out, H', W')``
    """
    sigma = layer.sigma(t)
    r = layer.radius(sigma)
    basis = filters.gaussian_derivative_basis(sigma, layer.order, r).to(x.dtype)  # ([O, I,] F, K, K)
    alpha = layer.alpha(t).to(x.dtype)  # (O, I, F)
    # broadcasting covers both a shared basis (F, K, K) and σ_ji's (O, I, F, K, K)
    w = (alpha[..., None, None] * basis).sum(2)
    pad = {"same": r, "valid": 0}.get(layer.padding, layer.padding)
    return F.conv2d(x, w, stride=layer.stride, padding=int(pad))
