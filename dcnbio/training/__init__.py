"""The training core: configuration, the loop, and process-group setup."""
from .config import TrainConfig
from .loop import TrainingError, evaluate, train_run

__all__ = ["TrainConfig", "TrainingError", "evaluate", "train_run"]
