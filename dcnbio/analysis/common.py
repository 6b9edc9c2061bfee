"""What the test-time analyses share: solver overrides, a batched evaluation, and the scripts' loading helpers.

Library part (tensors and xarray in and out, no disk):

* :func:`override_solver` — a context manager that changes ODE-block settings (``T``, solver, tolerances,
  options) for the duration of a ``with`` block and always restores the model's own settings;
* :func:`evaluate` — classify images batch by batch, optionally multiplying the input of chosen blocks by a
  factor, and return predictions, correctness and the forward NFE of every batch and block as a Dataset.

Script part (used by ``analyses/pattern_completion.py``, ``contrast.py``, ``solver_audit.py`` and
``meta_parametrization.py``; these read checkpoints and datasets through :func:`dcnbio.load_checkpoint` and
:func:`dcnbio.data.load_dataset`): :class:`ScriptParser`, :func:`resolve_checkpoints`, :func:`load_models`,
:func:`load_eval_images`.

NFE are per batch: dopri5's error norm spans the whole batch, so its steps — and the NFE — depend on which images
share a batch (SPEC §3).  Every function here solves the same images in the same batches for every condition, so
differences between conditions are not differences of batching.
"""
import argparse
import contextlib
import glob
import os

import numpy as np
import torch
import xarray as xr

from ..errors import CheckpointError, ConfigError, DataError
from ..layers.ode import ADAPTIVE, ODEBlock, check_solver
from ..models.network import ode_blocks
from .trajectories import check_images

__all__ = ["ScriptParser", "as_images", "evaluate", "load_eval_images", "load_models", "override_solver", "resolve_checkpoints",
           "solver_state"]

#: ODEBlock attributes an override may change.
SETTINGS = ("T", "solver", "rtol", "atol", "options")


# --- library: solver settings ----------------------------------------------------------------------------------

def solver_state(block):
    """The overridable settings of one ODE block (``T``, ``solver``, ``rtol``, ``atol``, a copy of ``options``)."""
    return {"T": block.T, "solver": block.solver, "rtol": block.rtol, "atol": block.atol,
            "options": dict(block.options)}


def _apply(block, settings):
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise ConfigError(f"unknown solver setting(s) {sorted(unknown)}; choose from {', '.join(SETTINGS)}")
    if "solver" in settings:
        check_solver(settings["solver"])
    for key in ("T", "rtol", "atol"):
        if key in settings and not (isinstance(settings[key], (int, float)) and settings[key] > 0):
            raise ConfigError(f"{key} of {block.name} must be a number > 0, got {settings[key]!r}")
    solver = settings.get("solver", block.solver)
    options = dict(settings.get("options", block.options))
    if solver not in ADAPTIVE and "step_size" not in options and "grid_constructor" not in options:
        raise ConfigError(f"fixed-grid solver {solver!r} for {block.name} needs options={{'step_size': ...}}")
    for key, value in settings.items():
        setattr(block, key, dict(value) if key == "options" else value)


@contextlib.contextmanager
def override_solver(model, settings=None, *, per_block=None):
    """Temporarily change the settings of a model's ODE blocks.

    Parameters
    ----------
    model : :class:`~dcnbio.models.Network`
    settings : dict, optional
        ``{setting: value}`` applied to every ODE block.  Settings: ``T``, ``solver``, ``rtol``, ``atol``,
        ``options`` (replaces the torchdiffeq options; fixed-grid solvers need ``step_size``).
    per_block : dict of str → dict, optional
        ``{block name: {setting: value}}``, applied after ``settings`` (blocks not named keep theirs).

    Yields
    ------
    model
        With the settings applied; on exit — normally or through an exception — every block gets back exactly the
        settings it had before.

    Raises
    ------
    ConfigError
        Unknown block or setting, a non-positive ``T``/tolerance, an unknown solver, or a fixed-grid solver
        without a step size.

    Examples
    --------
    >>> from dcnbio import create_model
    >>> model = create_model("dcn-ode", in_channels=1, width=0.125)
    >>> with override_solver(model, {"rtol": 1e-6, "atol": 1e-6}, per_block={"block1": {"T": 1.0}}):
    ...     model.block1.rtol, model.block1.T, model.block2.T
    (1e-06, 1.0, 2.0)
    >>> model.block1.rtol, model.block1.T
    (0.001, 2.0)
    """
    blocks = ode_blocks(model)
    per_block = dict(per_block or {})
    unknown = [b for b in per_block if b not in blocks]
    if unknown:
        raise ConfigError(f"no ODE block(s) named {unknown} in {model.config.name!r}; ODE blocks: "
                          f"{', '.join(blocks) or 'none'}")
    saved = {name: solver_state(block) for name, block in blocks.items()}
    try:
        for name, block in blocks.items():
            _apply(block, {**dict(settings or {}), **dict(per_block.get(name, {}))})
        yield model
    finally:
        for name, state in saved.items():
            for key, value in state.items():
                setattr(blocks[name], key, value)


# --- library: evaluation ----------------------------------------------------------------------------------------

def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def as_images(images, in_channels):
    """Validate images with :func:`~dcnbio.analysis.trajectories.check_images` (float32 and float64 images keep
    their precision, so a float64 model sees float64 inputs)."""
    return check_images(images, in_channels)


def _labels(labels, n):
    if labels is None:
        return np.full(n, -1, dtype=np.int64)
    arr = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if arr.shape != (n,) or arr.dtype.kind not in "iu":
        raise DataError(f"labels must be {n} integers (one per image), got shape {arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64)


def evaluate(model, images, labels=None, *, batch_size=128, input_scale=None, keep_logits=False):
    """Classify images batch by batch and count each batch's forward NFE per ODE block.

    Parameters
    ----------
    model : :class:`~dcnbio.models.Network`
        Run in eval mode under ``torch.no_grad()`` (its mode is restored; NFE counters grow as in a forward pass).
    images : Tensor or ndarray ``(N, C, H, W)``
        Normalised images (any contrast change already applied by the caller).
    labels : sequence of int, optional
        Class labels (``correct`` is then meaningful; default -1).
    batch_size : int
    input_scale : dict of str → float, optional
        ``{block name: c}``: the input of that block is multiplied by ``c`` before it is solved (the contrast
        analysis scales the inputs of blocks 2 and 3 this way; block 1's input changes with the image).
    keep_logits : bool
        Also return the logits.

    Returns
    -------
    xarray.Dataset
        ``prediction (image)`` int64, ``correct (image)`` bool, ``label (image)`` coordinate,
        ``nfe (batch, block)`` int64 forward evaluations of each batch solve (ODE blocks only; the ``block``
        dimension is empty for ResNets), ``batch_images (batch)`` images per batch, ``logits (image, class)``
        in the model's dtype when ``keep_logits``.  Attrs: ``accuracy`` (fraction correct; NaN without labels),
        ``batch_size``.

    Raises
    ------
    DataError, ConfigError
        Malformed images, labels, batch size or block names.
    SolverError
        A solve failed.
    """
    images = as_images(images, model.config.in_channels)
    n = images.shape[0]
    batch_size = _check_batch_size(batch_size)
    labels = _labels(labels, n)
    blocks = ode_blocks(model)
    input_scale = dict(input_scale or {})
    bad = [b for b in input_scale if b not in model.blocks()]
    if bad:
        raise ConfigError(f"input_scale names unknown block(s) {bad}; choose from {', '.join(model.blocks())}")
    param = next(model.parameters())  # images follow the model's device and dtype (float64 models in tests)
    preds, logits_all, nfe_rows, sizes = [], [], [], []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                x = images[start:start + batch_size].to(param.device, param.dtype)
                before = {b: blk.nfe_forward for b, blk in blocks.items()}
                for name, module in model.stages():
                    if name in input_scale:
                        x = x * input_scale[name]
                    x = module(x)
                nfe_rows.append([blocks[b].nfe_forward - before[b] for b in blocks])
                preds.append(x.argmax(1).cpu().numpy())
                sizes.append(x.shape[0])
                if keep_logits:
                    logits_all.append(x.detach().cpu().numpy())
    finally:
        model.train(was_training)
    pred = np.concatenate(preds).astype(np.int64)
    ds = xr.Dataset(
        {"prediction": ("image", pred, {"long_name": "predicted class"}),
         "correct": ("image", pred == labels, {"long_name": "prediction equals label"}),
         "nfe": (("batch", "block"), np.asarray(nfe_rows, dtype=np.int64).reshape(len(sizes), len(blocks)),
                 {"long_name": "forward function evaluations of the batch solve"}),
         "batch_images": ("batch", np.asarray(sizes, dtype=np.int64))},
        coords={"image": np.arange(n), "label": ("image", labels), "block": np.asarray(list(blocks), dtype=str),
                "batch": np.arange(len(sizes))},
        attrs={"accuracy": float(np.mean(pred == labels)) if (labels >= 0).all() else float("nan"),
               "batch_size": batch_size})
    if keep_logits:
        ds["logits"] = (("image", "class"), np.concatenate(logits_all))
    return ds


def mean_nfe(ds):
    """Mean forward NFE per batch of each block and their total, from :func:`evaluate`'s ``nfe``.

    Returns
    -------
    dict of str → float
        ``{block: mean over batches, "total": mean over batches of the sum over blocks}``.
    """
    out = {str(b): float(ds["nfe"].sel(block=b).mean()) for b in ds["block"].values}
    out["total"] = float(ds["nfe"].sum("block").mean()) if ds.sizes["block"] else 0.0
    return out


# --- script helpers ------------------------------------------------------------------------------------------------

class ScriptParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one-line :class:`ConfigError` (exit 2 under ``user_errors``)."""

    def error(self, message):
        raise ConfigError(f"{message} (see {self.prog} --help)")


def is_finished_run(checkpoint):
    """Whether the training run that wrote ``checkpoint`` has finished (its directory holds ``final.json``).

    ``dcnbio train`` writes ``last.pt`` every epoch (or every ``--save-every`` steps) and ``final.json`` only at
    the end, so a run still training — or killed — has a ``last.pt`` and no ``final.json``.
    """
    return os.path.isfile(os.path.join(os.path.dirname(os.fspath(checkpoint)), "final.json"))


def resolve_checkpoints(paths, defaults, repo, *, analysis):
    """The checkpoints to analyse: ``paths`` if given, else the default bundled ones of finished runs.

    A default match whose run has not finished (:func:`is_finished_run`: a run still training next to the bundled
    ones) is skipped and listed in ``missing``; an explicit ``--checkpoint`` is taken as given.

    Parameters
    ----------
    paths : list of str or None
        From ``--checkpoint``.
    defaults : sequence of str
        Glob patterns relative to ``repo`` (e.g. ``data/checkpoints/dcn-ode/seed*/last.pt``).
    repo : path
        Repository root.
    analysis : str
        Named in the error message.

    Returns
    -------
    found : list of str
    missing : list of str
        Default patterns that matched nothing, and skipped unfinished runs (empty when ``paths`` were given).

    Raises
    ------
    CheckpointError
        No path given and no default checkpoint exists.
    """
    if paths:
        return [os.fspath(p) for p in paths], []
    found, missing = [], []
    for pattern in defaults:
        hits = sorted(glob.glob(os.path.join(os.fspath(repo), pattern)))
        done = [h for h in hits if is_finished_run(h)]
        found += done
        if not hits:
            missing.append(pattern)
        missing += [f"{os.path.relpath(h, os.fspath(repo))} (unfinished run: no final.json)"
                    for h in hits if h not in done]
    if not found:
        raise CheckpointError(f"no bundled checkpoints for the {analysis} analysis (looked for "
                              f"{', '.join(defaults)} under {repo}); train them (dcnbio train --help) or pass "
                              "--checkpoint PATH")
    return found, missing


def _label(info, model):
    seed = (info.get("train_config") or {}).get("seed")
    return model.config.name if seed is None else f"{model.config.name}-seed{seed}"


def load_models(paths, *, require_ode=False, analysis=""):
    """Load checkpoints and give each a unique label (``<model>-seed<S>``).

    Parameters
    ----------
    paths : list of str
    require_ode : bool
        Refuse models without ODE blocks (ResNets) with a one-line error.
    analysis : str
        Named in that error.

    Returns
    -------
    list of (label, model, info)

    Raises
    ------
    CheckpointError, ConfigError
    """
    from ..checkpoint import load_checkpoint

    out, labels = [], {}
    for path in paths:
        model, info = load_checkpoint(path)
        if require_ode and not ode_blocks(model):
            raise ConfigError(f"{path} is a {model.config.name!r} model without ODE blocks; the {analysis} analysis "
                              "changes ODE solves, so pass a DCN or ODE-Net checkpoint")
        label = _label(info, model)
        if label in labels:
            k = 2
            while f"{label}-{k}" in labels:
                k += 1
            label = f"{label}-{k}"
        labels[label] = path
        out.append((label, model, info))
    return out


def dataset_of(info, model):
    """Name of the dataset a checkpoint was trained on (``train_config['dataset']``).

    Raises
    ------
    CheckpointError
        The checkpoint does not say, or its dataset does not fit the model's input channels.
    """
    from ..data import dataset_info

    name = (info.get("train_config") or {}).get("dataset")
    if not name:
        raise CheckpointError(f"{info.get('path', 'checkpoint')} does not record its training dataset "
                              "(train_config['dataset']); it cannot be matched to evaluation images")
    ds_info = dataset_info(name)
    if ds_info.channels != model.config.in_channels:
        raise CheckpointError(f"{info.get('path', 'checkpoint')} was trained on {name!r} ({ds_info.channels} "
                              f"channel(s)) but the model takes {model.config.in_channels}")
    return name


def load_eval_images(name, *, split="test", n_images=1000, root=None, cache=None):
    """The first ``n_images`` images of a dataset split, normalised, with labels.

    Parameters
    ----------
    name : str
        ``fashion-mnist`` or ``cifar10``.
    split : ``"test"`` or ``"val"``
        Evaluation split (never ``train``).
    n_images : int
        How many, in the split's order (the official order for ``test``); all if larger than the split.
    root : str, optional
        Dataset directory (passed to :func:`dcnbio.data.load_dataset`; no download is attempted).
    cache : dict, optional
        Reused across calls (one dataset read per name and split).

    Returns
    -------
    images : Tensor ``(N, C, H, W)`` float32
    labels : Tensor ``(N,)`` int64
    indices : ndarray ``(N,)`` int64
        Index of each image in its official file.
    info : :class:`dcnbio.data.DatasetInfo`
    """
    from ..data import load_dataset

    if split not in ("test", "val"):
        raise ConfigError(f"evaluation split must be 'test' or 'val', got {split!r}")
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ConfigError(f"--n-images must be a positive integer, got {n_images!r}")
    key = (name, split, root)
    if cache is not None and key in cache:
        data = cache[key]
    else:
        data = load_dataset(name, split, root, download=False)
        if cache is not None:
            cache[key] = data
    n = min(int(n_images), len(data))
    images, labels = data.batch(np.arange(n))
    return images, labels, data.indices[:n].numpy().astype(np.int64), data.info
