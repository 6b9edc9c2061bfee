"""The datasets dcnbio knows, by name: channels, size, classes, normalisation, training-set size.

A table shared by every layer (stimuli take their mean luminance from it, training and the scripts their image
format); loading the images is :mod:`dcnbio.train.data`.  No torch, no disk.
"""
import dataclasses

import numpy as np

from .errors import ConfigError, DataError

__all__ = ["DATASETS", "DatasetInfo", "check_sizes", "dataset_info"]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the code needs to know of a dataset: channels, image size, classes, per-channel normalisation, training-
    set size."""
    name: str
    channels: int
    size: int
    num_classes: int
    mean: tuple
    std: tuple
    train_size: int


DATASETS = {
    "fashion-mnist": DatasetInfo("fashion-mnist", 1, 28, 10, (0.2860,), (0.3530,), 60000),
    "cifar10": DatasetInfo("cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 50000),
}


def check_sizes(sizes):
    """Validate training-set sizes (images per class): positive integers, no repeats; returns a sorted list."""
    sizes = list(sizes)
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ConfigError(f"a size is a number of training images per class >= 1, got {s!r}")
    if len(set(sizes)) != len(sizes):
        raise ConfigError(f"sizes repeat: {sizes}")
    return sorted(int(s) for s in sizes)


def dataset_info(name):
    """The :class:`DatasetInfo` of ``name`` (a key of :data:`DATASETS`), else a :class:`~dcnbio.errors.DataError`."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]
