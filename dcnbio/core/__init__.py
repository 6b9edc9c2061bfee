"""The core: what a Deep Continuous Network is, as pure tensor code (no disk, no training, no analysis).

============  ===============================================================================================
module        what
============  ===============================================================================================
``filters``   Gaussian N-jet basis (pure tensor functions, checked against scipy)
``stimuli``   sinusoidal gratings and their grids for in-silico electrophysiology (no model)
``sampling``  deterministic batch order from seeds and the paper's augmentation
``layers``    the SRF convolution, its σ/α parametrizations, the ODE block (NFE counting, trajectories),
              each with a table of exact formulations that :mod:`dcnbio.fast` (the opt-in speed
              machinery) registers into
``models``    configuration dataclass, network, registry (``create_model``, ``list_models``)
============  ===============================================================================================
"""
