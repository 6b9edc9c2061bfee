"""The analysis layer: xarray in, xarray out (no disk I/O here; see :mod:`dcnbio.io`).

=========================  ======================================================================
module                     what
=========================  ======================================================================
``sigmas``                 every learned scale σ of a model as one labelled dataset
``trajectories``           ODE-block states h(t) at requested times, from the solve itself
``stats``                  log-normal fits, goodness of fit, AIC, bootstrap, trained vs init, depth
``v1``                     De Valois et al. (1982) macaque V1 reference and σ → peak frequency
``plots``, ``report``      figures and Markdown/LaTeX reports
=========================  ======================================================================
"""
from .sigmas import extract_sigmas, stack_sigmas
from .trajectories import extract_trajectories, iter_trajectories

__all__ = ["extract_sigmas", "extract_trajectories", "iter_trajectories", "stack_sigmas"]
