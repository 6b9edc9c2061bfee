"""A twin of a model in the reference formulation (:mod:`dcnbio.core.layers.reference`): the baseline of the
benchmarks and the oracle of the formulation tests."""
from torch import nn

from ..layers.activations import CELU
from ..layers.reference import SOLVER
from .registry import build_model


def reference_model(model, **solver):
    """A twin of ``model`` (same parameters, dtype, device, mode) in the reference formulation.

    Parameters
    ----------
    model : :class:`~dcnbio.core.models.Network`
    **solver
        Overrides of :data:`SOLVER` (e.g. ``adjoint=False`` to compare direct backprop).

    Returns
    -------
    Network
        Built from ``model.config`` with ``formulation="reference"`` and the reference solver
        settings; the parameters are copies, so the twin can be stepped independently.
    """
    param = next(model.parameters())
    twin = build_model(model.config.replace(formulation="reference", **{**SOLVER, **solver}))
    twin.to(device=param.device, dtype=param.dtype)
    twin.load_state_dict(model.state_dict())
    _torch_activations(twin)
    return twin.train(model.training)


def _torch_activations(module):
    """Replace every :class:`~dcnbio.core.layers.activations.CELU` by ``torch.nn.CELU`` (same alpha)."""
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, CELU):
                setattr(parent, name, nn.CELU(child.alpha))
