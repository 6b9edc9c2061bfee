"""The reference formulation: the straightforward SRF convolution and ODE-block settings.

This is the formulation of the paper's reference code (SPEC §1–2), kept as the baseline of
``benchmarks/train_step.py`` and as the oracle of ``tests/test_formulations.py``; the fast
formulations of :mod:`dcnbio.layers.srf` must compute the same function.

* Every call builds the filter bank ``W[o, i] = Σ_f α[o, i, f] B_f(σ)`` from the N-jet basis of
  :func:`dcnbio.filters.gaussian_derivative_basis` and calls ``conv2d`` with it (no cache);
* inside ODE blocks the time channel ``t ⊕ h`` is concatenated as an ordinary input channel;
* the blocks solve with dopri5 at ``rtol = atol = 1e-3`` and backpropagate with the adjoint
  (:data:`SOLVER`);
* activations are PyTorch's own (``torch.nn.CELU``, not :class:`dcnbio.layers.activations.CELU`).

Select it with ``formulation="reference"`` (layer or model config) or build a twin of a model
with :func:`reference_model`.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .. import filters

#: ODE-block settings of the reference formulation (paper: dopri5, 1e-3, adjoint).
SOLVER = {"solver": "dopri5", "rtol": 1e-3, "atol": 1e-3, "adjoint": True, "seminorm": False}


def reference_conv(layer, x, t=None):
    """``conv2d(x, W(σ(t), α(t)))`` for an :class:`~dcnbio.layers.srf.SRFConv2d`, built from scratch.

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


def reference_model(model, **solver):
    """A twin of ``model`` (same parameters, dtype, device, mode) in the reference formulation.

    Parameters
    ----------
    model : :class:`~dcnbio.models.Network`
    **solver
        Overrides of :data:`SOLVER` (e.g. ``adjoint=False`` to compare direct backprop).

    Returns
    -------
    Network
        Built from ``model.config`` with ``formulation="reference"`` and the reference solver
        settings; the parameters are copies, so the twin can be stepped independently.
    """
    from ..models import build_model  # models import layers: import here, not at module level

    param = next(model.parameters())
    twin = build_model(model.config.replace(formulation="reference", **{**SOLVER, **solver}))
    twin.to(device=param.device, dtype=param.dtype)
    twin.load_state_dict(model.state_dict())
    _torch_activations(twin)
    return twin.train(model.training)


def _torch_activations(module):
    """Replace every :class:`~dcnbio.layers.activations.CELU` by ``torch.nn.CELU`` (same alpha)."""
    from .activations import CELU

    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, CELU):
                setattr(parent, name, nn.CELU(child.alpha))
