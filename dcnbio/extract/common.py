"""What the test-time analyses share: solver overrides and a batched evaluation (tensors and xarray in and out,
no disk).

* :func:`override_solver` — a context manager that changes ODE-block settings (``T``, solver, tolerances,
  options) for the duration of a ``with`` block and always restores the model's own settings;
* :func:`evaluate` — classify images batch by batch, optionally multiplying the input of chosen blocks by a
  factor, and return predictions, correctness and the forward NFE of every batch and block as a Dataset.

The scripts' helpers for finding and loading runs and images are in :mod:`dcnbio.script`.

NFE are per batch: dopri5's error norm spans the whole batch, so its steps — and the NFE — depend on which images
share a batch (SPEC §3).  Every function here solves the same images in the same batches for every condition, so
differences between conditions are not differences of batching.
"""
import contextlib

import numpy as np
import torch
import xarray as xr

from ..errors import ConfigError, DataError
from ..core.layers.ode import ADAPTIVE, check_solver
from ..core.models.network import ode_blocks
from .trajectories import check_images

__all__ = ["as_images", "evaluate", "mean_nfe", "override_solver", "solver_state"]

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
    model : :class:`~dcnbio.core.models.Network`
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
    """Validate images with :func:`~dcnbio.extract.trajectories.check_images` (float32 and float64 images keep
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
    model : :class:`~dcnbio.core.models.Network`
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
