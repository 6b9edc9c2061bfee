"""CELU without ``expm1``: the ``"exp"`` formulation, and ``"auto"`` (the CPU default once registered).

``"exp"`` computes ``max(x, α (exp(min(x, 0) / α) − 1))`` (the clamped exponential is 0 for ``x > 0`` and at
least ``x`` otherwise) in a custom autograd function: forward one new tensor and four elementwise passes at
α = 1, backward ATen's ELU backward from the result in one pass (``d celu / dx = 1`` for ``y > 0``,
``y / α + 1 = exp(x / α)`` otherwise).  PyTorch's own kernel (``"torch"``) goes through ``expm1``, whose speed
depends strongly on which of ATen's vectorised kernels the machine runs, from the faster of the two to several
times slower; ``"exp"`` varies little between machines, so it is the fixed rule on CPUs.  ``"auto"`` is
``"exp"``, or with :mod:`tuning <dcnbio.fast.tuning>` enabled the one measured fastest per shape.

The two agree to float rounding: ``exp(z) - 1`` for ``z <= 0`` has an absolute error of at most one rounding of
1.0 (6e-8 in float32, 1.1e-16 in float64) where ``expm1`` has a relative one; for activations of order one (the
input comes from a GroupNorm) that is rounding, not a change of function (``tests/test_formulations.py`` checks
both against ``torch.nn.CELU``, and the gradient against its closed form).
"""
import torch

from ..core.layers.activations import celu, register_celu
from . import tuning


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


def exp_celu(x, alpha):
    """CELU through ``exp`` of the clamped input (module docstring)."""
    return _CELUFunction.apply(x, alpha)


#: The formulation ``"auto"`` takes without tuning.
RULE = "exp"


def auto_celu(x, alpha):
    """:data:`RULE`, or with tuning enabled the formulation measured fastest for this shape."""
    how = RULE
    if tuning.enabled():
        grad = torch.is_grad_enabled() and x.requires_grad

        def candidates():  # built only when the key is measured
            xd = x.detach()

            def run(name):
                if grad:
                    xg = xd.detach().requires_grad_()
                    y = celu(xg, alpha, name)
                    torch.autograd.grad(y, xg, y)
                else:
                    celu(xd, alpha, name)
            return {name: (lambda name=name: run(name)) for name in (RULE, "torch")}  # the rule first
        how = tuning.choose(("celu", tuple(x.shape), x.dtype, grad), candidates)
    return celu(x, alpha, how)


def register():
    """Add ``"exp"`` and ``"auto"`` to the CELU table, ``"auto"`` as the CPU default."""
    register_celu("exp", exp_celu)
    register_celu("auto", auto_celu, cpu_default=True)
