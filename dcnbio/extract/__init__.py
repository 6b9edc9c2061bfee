"""Extraction: a model (and images) in, a labelled :class:`xarray.Dataset` out; no disk (see :mod:`dcnbio.io`).

Everything here runs a model or reads its parameters; the statistics of the results are :mod:`dcnbio.stats`.

=================  =====================================================================================
module             what
=================  =====================================================================================
``sigmas``         every learned scale σ of a model as one labelled dataset; stacking several checkpoints
``trajectories``   ODE-block states h(t) at requested times, from the solve itself
``responses``      grating responses of units over blocks and ODE time (in-silico recording)
``assembly``       responses and trajectories as Brain-Score ``presentation × neuroid`` assemblies
``common``         solver overrides and batched evaluation (accuracy, NFE, logits)
``completion``     pattern completion: D(t) under centre masks, three normalisers
``contrast``       contrast c·x: naive, block-1 T·c, all blocks, atol·c control; accuracy and NFE
``solver_audit``   accuracy and NFE under other solvers; the solver-independence verdict
``reconstruction`` decoder trained on a frozen encoder; per-image MSE and paired tests
``meta``           σ(t), α(t) curves of meta-parametrized models
``cli``            ``dcnbio extract`` / ``python -m dcnbio.extract``: trajectories written as netCDF shards
                   (the one module here that writes, through :mod:`dcnbio.io`)
=================  =====================================================================================

Figures of these results are :mod:`dcnbio.plots` (``plot_*(data, ax=None)``); nothing here draws.
"""
from .sigmas import extract_sigmas, stack_sigmas
from .trajectories import extract_trajectories, iter_trajectories

__all__ = ["extract_sigmas", "extract_trajectories", "iter_trajectories", "stack_sigmas"]
