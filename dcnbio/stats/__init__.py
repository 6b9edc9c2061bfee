"""Statistics: xarray or pandas in, xarray or pandas out; no model, no torch, no disk.

================  ==========================================================================================
module            what
================  ==========================================================================================
``sigmas``        selecting σ from a sigma dataset; how far training moved σ (octaves)
``distribution``  log-normal fits, goodness of fit, AIC, bootstrap, trained vs init, depth trend
``v1``            De Valois et al. (1982) macaque V1 reference and σ → peak frequency
``physiology``    tuning properties: SF, orientation, F1/F0, Naka–Rushton contrast response, latency
``tuning_study``  the physiology study: networks × seeds × trained/init stacked; against V1, seed clusters
``runs``          results across runs: pooling seeds, comparing models, against a reference value
``small_data``    accuracy vs training-set size over seeds; GLM/OLS model × log size; the verdict
================  ==========================================================================================

Figures of these results are :mod:`dcnbio.plots`; nothing here draws.
"""
