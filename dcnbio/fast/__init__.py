"""Speed machinery, opt-in: faster exact ways to compute what :mod:`dcnbio.core` defines.

``import dcnbio.fast`` registers each lever into the table of the core layer it speeds up; the core never
imports this package, and nothing here changes the function a model computes (every entry is tested against
the core's plain computation, to float rounding).  The levers, each kept because it measured faster
(``benchmarks/levers.py``; figures in ``benchmarks/RESULTS.md``):

==================  ====================================================  ======================================
lever               what                                                  registers into
==================  ====================================================  ======================================
``conv``            the direct convolution's input gradient computed as   ``srf.FORMULATIONS["dense"]``
                    a forward convolution; few-channel convolutions on
                    images folded into channels (:mod:`.conv`)
``formulations``    ``spectral``, ``separable`` and the ``auto`` rule     ``srf.FORMULATIONS``
                    (:mod:`.formulations`)
``celu``            CELU through ``exp`` instead of ``expm1``             ``activations.IMPLEMENTATIONS``
                    (:mod:`.celu`), the CPU default
``integrator``      dcnbio's own dopri5 for direct backprop               ``ode.INTEGRATORS["dcnbio"]``
                    (:mod:`.dopri5`)
``tuning``          measured choices between the above per shape, off     (a switch: :mod:`.tuning`)
                    unless asked for (``dcnbio train --tune``)
==================  ====================================================  ======================================

The toolkit opts in for its users: ``import dcnbio`` imports this package (and so do the checkpoint loader and
``dcnbio train``, whose checkpoints may name ``auto`` and ``integrator="dcnbio"``).  The core's own tables hold
only the plain entries (``dense`` with PyTorch's convolution, ``reference``, PyTorch's CELU, torchdiffeq);
:func:`without` computes with those for a block (the benchmark's ablation, and the tests' control).

>>> import dcnbio.fast
>>> from dcnbio.core.layers.srf import FORMULATIONS
>>> sorted(FORMULATIONS)
['auto', 'dense', 'reference', 'separable', 'spectral']
"""
import contextlib

from ..core.layers import activations, ode, srf
from . import celu, dopri5, formulations, tuning

#: The levers :func:`without` can take out.
LEVERS = ("conv", "formulations", "celu", "integrator")
#: The model-configuration fields of the fastest exact path: dcnbio's dopri5 (for dopri5 solves; other solvers
#: stay torchdiffeq's) and the ``auto`` SRF formulation.  The same function as any other path, to float rounding;
#: what evaluations use by default (:func:`dcnbio.train.checkpoint.load_checkpoint`'s ``compute="fast"``).
FASTEST = {"integrator": "dcnbio", "formulation": "auto"}


def register():
    """Register every lever into the core's tables (done once on import; idempotent)."""
    formulations.register()
    celu.register()
    ode.register_integrator("dcnbio", ode.Integrator(("dopri5",), dopri5.odeint_dopri5, dopri5.check_options))


@contextlib.contextmanager
def without(*levers):
    """``with without("conv", "celu"): ...`` computes with the core's plain entries in place of those levers.

    For measurements of what each lever buys; models whose configuration names a removed entry (``auto``,
    ``integrator="dcnbio"``) cannot run inside the block.  The tables are restored on exit.
    """
    unknown = set(levers) - set(LEVERS)
    if unknown:
        raise ValueError(f"unknown lever(s) {sorted(unknown)}; choose from {', '.join(LEVERS)}")
    saved = dict(srf.FORMULATIONS), dict(activations.IMPLEMENTATIONS), dict(activations.DEFAULTS), \
        dict(ode.INTEGRATORS)
    try:
        if "conv" in levers:
            srf.FORMULATIONS["dense"] = srf.Formulation()
        if "formulations" in levers:
            for name in ("spectral", "separable", "auto"):
                srf.FORMULATIONS.pop(name, None)
        if "celu" in levers:
            activations.DEFAULTS["cpu"] = "torch"
            for name in ("exp", "auto"):
                activations.IMPLEMENTATIONS.pop(name, None)
        if "integrator" in levers:
            ode.INTEGRATORS.pop("dcnbio", None)
        yield
    finally:
        for table, old in zip((srf.FORMULATIONS, activations.IMPLEMENTATIONS, activations.DEFAULTS,
                               ode.INTEGRATORS), saved):
            table.clear()
            table.update(old)


register()

__all__ = ["FASTEST", "LEVERS", "register", "tuning", "without"]
