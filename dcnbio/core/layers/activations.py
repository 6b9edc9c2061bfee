"""CELU, computed by either of two exact formulations (on CPUs by default the one without ``expm1``).

``celu(x) = max(0, x) + min(0, α (exp(x / α) - 1))``, torch's ``nn.CELU``, in one of two ways:

* ``"torch"``: PyTorch's own kernel (``F.celu``, through ``expm1``): one pass forward, one backward.  Used on
  every GPU.  On CPUs its speed depends strongly on which of ATen's vectorised kernels the machine runs
  (``benchmarks/RESULTS.md``: from the fastest of the two to several times slower).
* ``"exp"``: ``max(x, α (exp(min(x, 0) / α) − 1))`` (the clamped exponential is 0 for ``x > 0`` and at least
  ``x`` otherwise) in a custom autograd function: forward one new tensor and four elementwise passes at α = 1,
  backward ATen's ELU backward from the result in one pass (``d celu / dx = 1`` for ``y > 0``,
  ``y / α + 1 = exp(x / α)`` otherwise).  Its cost varies little between machines.

:func:`default_implementation` is ``"exp"`` on CPUs (``DCNBIO_CELU=torch|exp``, read when a CELU runs,
overrides it) because it is close to the fastest on every CPU measured, where ``"torch"`` can be several times
slower; CUDA tensors always take ``"torch"``.  With :mod:`tuning <dcnbio.core.layers.tuning>` enabled (and no
``DCNBIO_CELU``) each CPU shape takes the formulation measured fastest on the machine instead.  The two agree to float rounding:
``exp(z) - 1`` for ``z <= 0`` has an absolute error of at most one rounding of 1.0 (6e-8 in float32, 1.1e-16 in
float64) where ``expm1`` has a relative one; for activations of order one (the input comes from a GroupNorm)
that is rounding, not a change of function (``tests/test_formulations.py`` checks both against
``torch.nn.CELU``, and the gradient against its closed form: torch's own CELU gradient is 2e-8 off in float64
at α = 0.7).
"""
import os

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from . import tuning

IMPLEMENTATIONS = ("torch", "exp")


#: The CPU formulation unless ``DCNBIO_CELU`` says otherwise.
DEFAULT_IMPLEMENTATION = "exp"


def pinned_implementation():
    """The formulation ``DCNBIO_CELU`` pins (read at each call, never at import), or ``None``; measured choices
    (tuning) do not override a pinned one."""
    choice = os.environ.get("DCNBIO_CELU", "")
    if choice and choice not in IMPLEMENTATIONS:
        raise ConfigError(f"DCNBIO_CELU must be one of {', '.join(IMPLEMENTATIONS)}, got {choice!r}")
    return choice or None


def default_implementation():
    """The formulation in use when none is asked for: ``DCNBIO_CELU`` if set, else :data:`DEFAULT_IMPLEMENTATION`."""
    return pinned_implementation() or DEFAULT_IMPLEMENTATION


class _CELUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        # α (exp(min(x, 0) / α) − 1) is 0 for x > 0 and ≥ x for x ≤ 0 (exp(z) ≥ 1 + z), so the maximum of it and
        # x is celu(x): one new tensor, four passes (the division and scaling vanish at α = 1)
        y = x.clamp(max=0)
        if alpha != 1.0:
            y.div_(alpha)
        y.exp_().sub_(1)
        if alpha != 1.0:
            y.mul_(alpha)
        torch.maximum(y, x, out=y)
        ctx.save_for_backward(y)
        ctx.alpha = alpha
        return y

    @staticmethod
    def backward(ctx, grad):
        # d celu / dx = 1 for y > 0, y / α + 1 = exp(x / α) otherwise: ATen's ELU backward from the result, in one
        # pass (ELU with scale 1 and input scale 1 / α is CELU)
        (y,) = ctx.saved_tensors
        return torch.ops.aten.elu_backward(grad, ctx.alpha, 1.0, 1.0 / ctx.alpha, True, y), None


def celu(x, alpha=1.0, implementation=None):
    """``max(0, x) + min(0, α (exp(x / α) - 1))`` by ``implementation`` (default: :func:`default_implementation`)."""
    pinned = pinned_implementation() if implementation is None else None
    how = implementation or pinned or DEFAULT_IMPLEMENTATION
    if implementation is None and pinned is None and tuning.enabled() and x.device.type == "cpu":
        how = _measured(x, float(alpha))
    if how not in IMPLEMENTATIONS:
        raise ConfigError(f"unknown CELU implementation {how!r}; choose one of {', '.join(IMPLEMENTATIONS)}")
    if how == "torch" or x.device.type != "cpu":
        return F.celu(x, float(alpha))
    return _CELUFunction.apply(x, float(alpha))


def _measured(x, alpha):
    grad = torch.is_grad_enabled() and x.requires_grad

    def candidates():  # built only when the key is measured
        xd = x.detach()

        def run(how):
            if grad:
                xg = xd.detach().requires_grad_()
                y = celu(xg, alpha, how)
                torch.autograd.grad(y, xg, y)
            else:
                celu(xd, alpha, how)
        order = [DEFAULT_IMPLEMENTATION] + [h for h in IMPLEMENTATIONS if h != DEFAULT_IMPLEMENTATION]  # rule first
        return {h: (lambda h=h: run(h)) for h in order}
    return tuning.choose(("celu", tuple(x.shape), x.dtype, grad), candidates)


class CELU(nn.Module):
    """Drop-in for ``torch.nn.CELU`` (same function and state; the formulation fastest here, see the module)."""

    def __init__(self, alpha=1.0):
        super().__init__()
        if not alpha > 0:
            raise ConfigError(f"CELU alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x):
        return celu(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"
