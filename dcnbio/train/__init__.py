"""Training: datasets, the loop, its configuration, checkpoints and the ``dcnbio train`` command.

================  ==========================================================================================
module            what
================  ==========================================================================================
``data``          loading the datasets by name (the table: :mod:`dcnbio.datasets`), splits, small-data subsets
``config``        ``TrainConfig``: the frozen, self-validating training configuration; plateau rules
``loop``          one readable training loop: resume, plateau-measured schedule, evaluation, run records
``checkpoint``    self-describing checkpoints (model name + config + state, ``weights_only`` loading)
``distributed``   process-group setup for ``torchrun`` (only rank 0 writes)
``grid``          the small-data grid's runs: planning and training the missing ones
``machine``       the machine a segment of training ran on (recorded with every run)
``cli``           ``dcnbio train`` / ``python -m dcnbio.train``
================  ==========================================================================================
"""
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .loop import TrainingError, evaluate, train_run

__all__ = ["TrainConfig", "TrainingError", "evaluate", "load_checkpoint", "save_checkpoint", "train_run"]
