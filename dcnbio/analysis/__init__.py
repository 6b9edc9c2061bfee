"""The analysis layer: xarray in, xarray out (no disk I/O here; see :mod:`dcnbio.io`).

=========================  ======================================================================
module                     what
=========================  ======================================================================
``sigmas``                 every learned scale σ of a model as one labelled dataset
``trajectories``           ODE-block states h(t) at requested times, from the solve itself
``stats``                  log-normal fits, goodness of fit, AIC, bootstrap, trained vs init, depth
``v1``                     De Valois et al. (1982) macaque V1 reference and σ → peak frequency
``completion``             pattern completion: D(t) under centre masks, three normalisers
``completion_report``      its tables across runs and its report
``contrast``               contrast c·x: naive, block-1 T·c, all blocks, atol·c control; accuracy and NFE
``contrast_report``        its tables across runs and its report
``solver_audit``           accuracy and NFE under other solvers; solver-independence verdict
``small_data``             accuracy vs training-set size over seeds; GLM/OLS model × log size
``small_data_report``      its evaluation of the runs, its results and its report
``reconstruction``         decoder on a frozen encoder; per-image MSE and paired tests
``reconstruction_report``  its tables across runs and its report
``meta``                   σ(t), α(t) curves of meta-parametrized models
``responses``              grating responses of units over blocks and ODE time (in-silico recording)
``physiology``             tuning: SF, orientation, F1/F0, Naka–Rushton contrast response, latency
``assembly``               activations as Brain-Score ``presentation × neuroid`` assemblies (layer = block@t)
``tuning_study``           the physiology study: networks × seeds × trained/init stacked; against V1, seed clusters
``claims``                 every claim of the paper judged from the analyses' results (``analyses/reproduce.py``)
``common``                 solver overrides and batched evaluation (finding and loading runs: :mod:`dcnbio.script`)
``plots``, ``report``      figures and Markdown/LaTeX reports
=========================  ======================================================================
"""
from .sigmas import extract_sigmas, stack_sigmas
from .trajectories import extract_trajectories, iter_trajectories

__all__ = ["extract_sigmas", "extract_trajectories", "iter_trajectories", "stack_sigmas"]
