"""Figures: every ``plot_*(data, ax=None)`` of dcnbio, from labelled results (xarray/pandas) to a Figure.

Figures are built on :class:`matplotlib.figure.Figure` objects, which render with the Agg backend without
touching pyplot or the user's backend; pass ``ax``/``axes`` (or ``fig``) to draw into your own figure instead.
Nothing below this layer imports matplotlib (``.importlinter``), and nothing here computes a result.

================  ==========================================================================================
module            figures
================  ==========================================================================================
``sigmas``        σ histograms per block with fitted log-normals (Fig. 3b), σ against depth (Fig. 3a)
``physiology``    tuning curves of example units, tuning properties against V1, latency against contrast
``completion``    D(t) per normaliser, accuracy under masking, example masked images
``contrast``      accuracy and NFE against contrast per condition
``solver_audit``  accuracy and NFE against tolerance or step count
``reconstruction`` originals against each model's reconstruction
``meta``          σ(t) and α(t) of the meta-parametrized models
``small_data``    accuracy against training-set size, fitted curves, the paper's Table 2a
``common``        shared colours and axes
================  ==========================================================================================
"""
from .completion import plot_differences, plot_examples, plot_masked_accuracy
from .contrast import plot_contrast
from .meta import plot_meta_curves
from .physiology import plot_latency_contrast, plot_property_histograms, plot_tuning_examples
from .reconstruction import plot_reconstructions
from .sigmas import lognormal_log10_density, plot_sigma_histograms, plot_sigma_vs_depth
from .small_data import plot_small_data
from .solver_audit import plot_solver_audit

__all__ = ["lognormal_log10_density", "plot_contrast", "plot_differences", "plot_examples", "plot_latency_contrast",
           "plot_masked_accuracy", "plot_meta_curves", "plot_property_histograms", "plot_reconstructions",
           "plot_sigma_histograms", "plot_sigma_vs_depth", "plot_small_data", "plot_solver_audit",
           "plot_tuning_examples"]
