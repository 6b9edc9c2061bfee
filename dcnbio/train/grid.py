"""The small-data grid as training runs: its recipe, its run layout, and training the runs not there yet.

A grid is every (model, images per class, seed) of a study of accuracy against training-set size (paper Table 2a;
:mod:`dcnbio.stats.small_data` tabulates and fits it).  Each run is one ``dcnbio train`` run of a recipe
(:data:`RECIPES`, :func:`small_data_config`) in :func:`run_path` ``(root, model, size, seed)``; :func:`plan_runs`
says which are done, to resume or new (refusing a run trained with another recipe) and :func:`train_missing`
trains them with the training core.

Two recipes:

``budget``
    The same image budget for every size (``epochs_budget // size`` epochs, 90 SGD steps): the subset-trained
    bundle's quick grid, where a difference between sizes is one of data and not of optimisation length.
``plateau``
    Trained until the training loss plateaus on the subset (the full-data bundle's grid): the paper's epochs for
    small sets (100 × 10 / 5 / 2, App. A.2) are the cap, the first learning-rate drop comes when the mean
    training loss over windows of :data:`PLATEAU_WINDOW_STEPS` steps has not fallen by :data:`PLATEAU_DELTA`
    nats for :data:`PLATEAU_PATIENCE` windows, and the schedule keeps the paper's proportions from there
    (:class:`~dcnbio.train.config.TrainConfig`).  A window of steps rather than of epochs makes the rule the same
    at every size: an epoch is 3 steps at 10 images per class and 31 at 100.
"""
import os

import numpy as np

from ..datasets import check_sizes
from ..errors import CheckpointError, ConfigError

__all__ = ["DEFAULT_EPOCHS_BUDGET", "PLATEAU_DELTA", "PLATEAU_PATIENCE", "PLATEAU_WINDOW_STEPS", "RECIPES",
           "GRID_FIELDS", "IRRELEVANT_FIELDS", "check_models", "epochs_for", "plan_runs",
           "recipe_differences", "run_path", "small_data_config", "train_missing"]

#: Image passes per run of the bundled recipe: ``epochs = budget // size`` (300 → 30 / 15 / 6 epochs at 10 / 20 / 50
#: per class, 90 SGD steps of 32 each).
DEFAULT_EPOCHS_BUDGET = 300
#: The grid recipes (module docstring).
RECIPES = ("budget", "plateau")
#: The ``plateau`` recipe's rule: SGD steps per training-loss window, windows of patience, progress in nats.
PLATEAU_WINDOW_STEPS = 120
PLATEAU_PATIENCE = 2
PLATEAU_DELTA = 0.02
#: Training-configuration fields that may differ between the runs of one grid (they define its cells).
GRID_FIELDS = ("model", "subset", "seed", "epochs")
#: Fields that do not change what is trained.
IRRELEVANT_FIELDS = ("device", "download", "data_root", "save_every", "test", "eval_batch_size")


def check_models(models):
    """Validate model names against the registry (no repeats); returns them in the given order."""
    from ..core.models import list_models

    models = [str(m) for m in models]
    known = list_models()
    for m in models:
        if m not in known:
            raise ConfigError(f"unknown model {m!r}; choose from {', '.join(known)}")
    if len(set(models)) != len(models):
        raise ConfigError(f"models repeat: {models}")
    return models


def epochs_for(size, budget=DEFAULT_EPOCHS_BUDGET):
    """Epochs of a run at ``size`` images per class: ``budget // size`` image passes per class, at least one.

    >>> [epochs_for(s) for s in (10, 20, 50)]
    [30, 15, 6]
    """
    (size,) = check_sizes([size])
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ConfigError(f"the epochs budget is a positive integer (image passes per class), got {budget!r}")
    return max(1, int(budget) // size)


def run_path(root, model, size, seed):
    """Directory of one run: ``<root>/<model>/n<size>/seed<seed>`` (the layout of the bundled set)."""
    return os.path.join(os.fspath(root), str(model), f"n{int(size)}", f"seed{int(seed)}")


def small_data_config(model, size, seed, *, recipe="budget", width=0.25, epochs_budget=DEFAULT_EPOCHS_BUDGET,
                      batch_size=32, dataset="fashion-mnist", data_root=None, device="cpu", download=True):
    """The training configuration of one small-data run of ``recipe`` (:data:`RECIPES`).

    ``budget`` equals ``python -m dcnbio.train --model M --dataset fashion-mnist --width 0.25 --subset SIZE
    --val-size 0 --epochs (300 // SIZE) --batch-size 32 --no-adjoint --no-test --seed S``; ``plateau`` equals
    ``... --subset SIZE --val-size 0 --epochs E --batch-size 32 --plateau-patience 2 --plateau-delta 0.02
    --plateau-window 120 --no-adjoint --integrator dcnbio --formulation auto --no-test --seed S`` with E the
    paper's cap for 10 × SIZE images (:func:`~dcnbio.train.config.small_data_epoch_factor`: 1000 epochs up to 520
    images, 500 up to 1030).  Both draw ``size`` images per class stratified by ``seed``, hold none out (so no
    checkpoint selection: the last epoch is the result) and backpropagate through the solver.

    Returns
    -------
    :class:`~dcnbio.train.TrainConfig`

    Raises
    ------
    ConfigError
        An unknown recipe, a bad size, model or budget, or fewer training images than one batch.
    """
    from ..datasets import dataset_info
    from .config import PAPER_EPOCHS, TrainConfig, small_data_epoch_factor

    check_models([model])
    if recipe not in RECIPES:
        raise ConfigError(f"unknown small-data recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    (size,) = check_sizes([size])
    common = dict(model=model, dataset=dataset, width=width, data_root=data_root, download=download, subset=size,
                  val_size=0, batch_size=batch_size, seed=int(seed), device=device, test=False)
    if recipe == "budget":
        return TrainConfig(**common, epochs=epochs_for(size, epochs_budget), model_overrides={"adjoint": False})
    cap = PAPER_EPOCHS * small_data_epoch_factor(size * dataset_info(dataset).num_classes)
    return TrainConfig(**common, epochs=cap, plateau_patience=PLATEAU_PATIENCE, plateau_delta=PLATEAU_DELTA,
                       plateau_window=PLATEAU_WINDOW_STEPS,
                       model_overrides={"adjoint": False, "integrator": "dcnbio", "formulation": "auto"})


def recipe_differences(configs):
    """Training-configuration fields, beyond the grid's own (model, subset, seed, epochs), in which runs differ.

    Parameters
    ----------
    configs : list of dict
        ``train_config`` of each run.

    Returns
    -------
    dict of str → list
        Field → its distinct values (as JSON-like text), for every field that is not the same in all runs
        (device, download, data root, checkpoint frequency and the test report are ignored).
    """
    out = {}
    keys = sorted({k for c in configs for k in c} - set(GRID_FIELDS) - set(IRRELEVANT_FIELDS))
    for k in keys:
        values = sorted({repr(c.get(k)) for c in configs})
        if len(values) > 1:
            out[k] = values
    return out


def plan_runs(root, models, sizes, seeds, *, recipe="budget", width=0.25, epochs_budget=DEFAULT_EPOCHS_BUDGET,
              batch_size=32, dataset="fashion-mnist", data_root=None):
    """The runs of a grid and what each needs, checked before anything is trained.

    A run directory with ``final.json`` is finished (``done``) — after checking that its configuration is the
    grid's recipe; one with ``last.pt`` but no ``final.json`` is resumed (``resume``: bit-identical to an
    uninterrupted run); a missing one is trained (``new``).

    Parameters
    ----------
    root : path
        Runs live in :func:`run_path` ``(root, model, size, seed)``.
    models, sizes, seeds : sequences
    recipe, width, epochs_budget, batch_size, dataset, data_root
        The recipe (:func:`small_data_config`; ``epochs_budget`` is the ``budget`` recipe's).

    Returns
    -------
    list of (TrainConfig, str, str)
        ``(config, run directory, state)`` in model, size, seed order.

    Raises
    ------
    ConfigError
        Bad grid values, or an existing run trained with another recipe.
    """
    from .checkpoint import read_checkpoint
    from .config import TrainConfig

    models, sizes = check_models(models), check_sizes(sizes)
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(isinstance(s, bool) or not isinstance(s, (int, np.integer))
                                                         for s in seeds):
        raise ConfigError(f"give one or more distinct integer seeds, got {seeds}")
    plan = []
    for m in models:
        for s in sizes:
            for seed in seeds:
                config = small_data_config(m, s, int(seed), recipe=recipe, width=width, epochs_budget=epochs_budget,
                                           batch_size=batch_size, dataset=dataset, data_root=data_root)
                d = run_path(root, m, s, seed)
                last = os.path.join(d, "last.pt")
                state = "new"
                if os.path.isfile(last):
                    try:
                        stored = TrainConfig.from_dict(read_checkpoint(last)["train_config"])
                    except (KeyError, TypeError, ConfigError) as exc:
                        raise CheckpointError(f"{last}: unreadable training configuration ({exc})") from None
                    diff = config.differences(stored, ignore=IRRELEVANT_FIELDS)
                    if diff:
                        raise ConfigError(f"{d} holds a run trained with another {', '.join(diff)} than this grid's "
                                          "recipe; choose another --runs-dir or remove that run")
                    state = "done" if os.path.isfile(os.path.join(d, "final.json")) else "resume"
                plan.append((config, d, state))
    return plan


def train_missing(plan, *, log=print, quiet=True):
    """Train (or resume) the runs of a :func:`plan_runs` plan that are not done, with the training core, in this
    process; returns the ``last.pt`` of every run of the plan.  ``quiet=False`` logs each run's epochs too."""
    from .loop import train_run

    todo = [p for p in plan if p[2] != "done"]
    log(f"small-data grid: {len(plan)} runs, {len(plan) - len(todo)} finished, {len(todo)} to train")
    for k, (config, d, state) in enumerate(todo, 1):
        log(f"[{k}/{len(todo)}] {'resuming' if state == 'resume' else 'training'} {config.model} n{config.subset} "
            f"seed{config.seed} ({'at most ' if config.plateau_patience else ''}{config.epochs} epochs) -> {d}")
        train_run(config, d, resume=state == "resume", log=(lambda *a, **kw: None) if quiet else log)
    return [os.path.join(d, "last.pt") for _, d, _ in plan]
