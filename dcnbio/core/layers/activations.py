"""CELU, ``max(0, x) + min(0, α (exp(x / α) − 1))`` (torch's ``nn.CELU``), through a table of exact formulations.

The core holds PyTorch's own kernel (``"torch"``, ``F.celu``).  Other formulations of the same function are
registered into :data:`IMPLEMENTATIONS` by the opt-in package :mod:`dcnbio.fast` (:func:`register_celu`), which
may also make one of them the default on CPUs; CUDA tensors always take ``"torch"``.  The model's activation
module (:class:`CELU`) holds the same state as ``torch.nn.CELU`` whichever formulation computes it.
"""
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError


def _torch_celu(x, alpha):
    return F.celu(x, alpha)


#: Formulations by name: ``fn(x, alpha) -> Tensor``.  :mod:`dcnbio.fast` adds ``"exp"`` and ``"auto"``.
IMPLEMENTATIONS = {"torch": _torch_celu}
#: The formulation of CPU tensors when none is asked for (GPU tensors: always ``"torch"``).
DEFAULTS = {"cpu": "torch"}


def register_celu(name, fn, *, cpu_default=False):
    """Add the formulation ``name`` (``fn(x, alpha)``, the same function as ``F.celu``); with ``cpu_default`` it
    becomes the one CPU tensors take by default."""
    if name == "torch":
        raise ConfigError("'torch' is PyTorch's own CELU and cannot be replaced")
    IMPLEMENTATIONS[name] = fn
    if cpu_default:
        DEFAULTS["cpu"] = name


def default_implementation():
    """The formulation CPU tensors take when none is asked for."""
    return DEFAULTS["cpu"]


def celu(x, alpha=1.0, implementation=None):
    """``max(0, x) + min(0, α (exp(x / α) - 1))`` by ``implementation`` (default: :func:`default_implementation`).

    Parameters
    ----------
    x : Tensor
    alpha : float
        ``α > 0``.
    implementation : str, optional
        A name in :data:`IMPLEMENTATIONS`.

    >>> import torch
    >>> celu(torch.tensor([-1.0, 0.0, 2.0]), implementation="torch")
    tensor([-0.6321,  0.0000,  2.0000])
    """
    how = implementation or DEFAULTS["cpu"]
    if how not in IMPLEMENTATIONS:
        raise ConfigError(f"unknown CELU implementation {how!r}; choose one of {', '.join(IMPLEMENTATIONS)} "
                          "(`import dcnbio.fast` registers exp and auto)")
    if x.device.type != "cpu":
        how = "torch"
    return IMPLEMENTATIONS[how](x, float(alpha))


class CELU(nn.Module):
    """Drop-in for ``torch.nn.CELU`` (same function and state), computed by :func:`celu`'s default formulation."""

    def __init__(self, alpha=1.0):
        super().__init__()
        if not alpha > 0:
            raise ConfigError(f"CELU alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x):
        return celu(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"
