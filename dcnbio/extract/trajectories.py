"""Block trajectories ``h(t)``: the states of each ODE block at requested depths ``t``.

The states come from the solve itself: :meth:`~dcnbio.core.layers.ode.ODEBlock.solve` is
called with the requested time grid and torchdiffeq returns the solution at those times
(dopri5 interpolates its accepted steps, so the step sequence does not depend on the
grid).  Nothing is recorded inside the dynamics ``f``, which would capture Runge–Kutta
stages and rejected steps at arbitrary times (SPEC §3).

Each block's solve runs over the whole of ``[0, T]`` even when the requested times end
earlier: the state at ``T`` is the block's output, which feeds the next stage, and the
NFE is then exactly what the classifier spends on that batch.

Output layout (one Dataset per block, since blocks differ in channels and map size)::

    <xarray.Dataset>
    Dimensions:  (image, time, channel, y, x)
    Coordinates:
      * image    (image) int64          dataset index of each image
      * time     (time) float64         requested times (ODE depth, 0..T)
        label    (image) int64          class label (-1 when unknown)
        batch    (image) int64          which solver batch the image was solved in
    Data variables:
        h        (image, time, channel, y, x) float32
        nfe      (image) int64          forward NFE of the image's batch solve

NFE is a property of a *batch*: dopri5's error norm is taken over the whole batch, so
the accepted steps — and, through them, the states themselves (within the tolerance) —
depend on which images share a batch.  ``nfe`` is stored per image as the NFE of its
batch; ``batch`` says which images shared a solve (``ds.nfe.groupby(ds.batch).first()``
gives one value per batch).  Results are reproducible for the same images in the same
batches, which is why ``dcnbio extract`` never lets a batch straddle two shards.

For ResNet baselines (a block is a :class:`~dcnbio.core.models.network.ResBlock`) there is
no continuous depth: the "trajectory" is the block's input and output at time
coordinates 0 and 1, whatever ``times`` are requested, and ``nfe`` is 0.
"""
import json

import numpy as np
import torch
import xarray as xr

from ..errors import ConfigError, DataError
from ..core.layers.ode import ODEBlock

__all__ = ["check_images", "check_times", "extract_trajectories", "iter_trajectories"]


def check_images(images, in_channels):
    """Validate and convert an image batch.

    Parameters
    ----------
    images : Tensor or ndarray ``(N, C, H, W)``
    in_channels : int

    Returns
    -------
    Tensor ``(N, C, H, W)``
        float32 and float64 images keep their precision (a float64 model sees float64 inputs); other floating
        types become float32.  Callers move each batch to the model's device and dtype.

    Raises
    ------
    DataError
        Wrong rank, channel count, empty, or non-finite values.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise DataError(f"images must be a tensor or array of shape (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise DataError(f"images must have shape (N, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise DataError("no images given (N = 0)")
    if images.shape[1] != in_channels:
        raise DataError(f"images have {images.shape[1]} channel(s) but the model expects {in_channels} "
                        f"(shape {tuple(images.shape)})")
    if not images.is_floating_point():  # raw uint8 pixels would run, silently, without the normalisation
        raise DataError(f"images must be floating point (normalised as for training), got dtype {images.dtype}")
    if images.dtype not in (torch.float32, torch.float64):
        images = images.to(torch.float32)
    bad = ~torch.isfinite(images)
    if bool(bad.any()):
        first = int(bad.flatten(1).any(1).nonzero()[0])
        raise DataError(f"images contain {int(bad.sum())} non-finite value(s) (first in image {first})")
    return images


def check_times(times, T):
    """Validate a time grid.

    Parameters
    ----------
    times : sequence of float
        Strictly increasing, within ``[0, T]``.
    T : float
        End time of the blocks.

    Returns
    -------
    ndarray ``(n_times,)`` float64

    Raises
    ------
    ConfigError
    """
    try:
        grid = np.asarray([float(t) for t in np.atleast_1d(np.asarray(times, dtype=object))], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"times must be numbers, got {times!r}") from None
    if grid.size == 0:
        raise ConfigError("the time grid is empty; give at least one time in [0, T]")
    if not np.isfinite(grid).all():
        raise ConfigError(f"times must be finite, got {grid.tolist()}")
    if grid.min() < 0 or grid.max() > T:
        raise ConfigError(f"times must lie in [0, T] = [0, {T:g}], got {grid.tolist()}")
    if grid.size > 1 and not (np.diff(grid) > 0).all():
        raise ConfigError(f"times must be strictly increasing, got {grid.tolist()}")
    return grid


def _block_attrs(name, block, model):
    attrs = {"block": name, "model_name": model.config.name,
             "model_config": json.dumps(model.config.to_dict(), sort_keys=True, default=str)}
    if isinstance(block, ODEBlock):
        s = block.solver_settings()
        attrs.update({"block_type": "ode", "solver": s["solver"], "rtol": float(s["rtol"]),
                      "atol": float(s["atol"]), "T": float(s["T"]), "adjoint": int(bool(s["adjoint"])),
                      "seminorm": int(bool(s["seminorm"])),
                      "solver_options": json.dumps(s["options"], sort_keys=True, default=str),
                      "nfe_note": "nfe: forward function evaluations of the solve over [0, T] of the image's "
                                  "batch (the adaptive error norm spans the batch)"})
    else:
        attrs.update({"block_type": "res",
                      "nfe_note": "discrete residual block: time 0 is its input, time 1 its output; nfe is 0"})
    return attrs


def _solve_block(block, h0, times):
    """States at ``times`` ``(B, n, C, H, W)``, the output at T and the forward NFE of the solve."""
    if not isinstance(block, ODEBlock):
        out = block(h0)
        return torch.stack([h0, out], dim=1), out, 0
    T = float(block.T)
    grid = list(times)
    # compared in the state's dtype: a last time that rounds to T would otherwise repeat T in the grid
    extend = bool(torch.tensor(grid[-1], dtype=h0.dtype) < torch.tensor(T, dtype=h0.dtype))
    if extend:  # solve on to T: the output feeds the next stage, and the NFE is the classifier's
        grid.append(T)
    before = block.nfe_forward  # counters are cumulative: count the difference, as a forward pass adds to them
    states = block.solve(h0, grid)
    nfe = block.nfe_forward - before
    out = states[-1]
    if extend:
        states = states[:-1]
    return states.transpose(0, 1), out, nfe


def iter_trajectories(model, images, times, *, blocks=None, labels=None, indices=None, batch_size=64,
                      batch_offset=0):
    """Yield the trajectories of one batch at a time.

    Parameters
    ----------
    model, images, times, blocks, labels, indices, batch_size
        As in :func:`extract_trajectories`.
    batch_offset : int
        Number given to the first batch in the ``batch`` coordinate (a caller processing a
        long image sequence in slices passes ``start // batch_size``).

    Yields
    ------
    dict of str → xarray.Dataset
        Block name → Dataset of the batch (layout in the module docstring).
    """
    names = _check_blocks(model, blocks)
    images = check_images(images, model.config.in_channels)
    n = images.shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    stage_blocks = model.blocks()
    has_ode = any(isinstance(stage_blocks[b], ODEBlock) for b in names)
    grid = check_times(times, min(float(stage_blocks[b].T) for b in names
                                  if isinstance(stage_blocks[b], ODEBlock))) if has_ode else None
    labels = _per_image(labels, n, -1, "labels")
    indices = _per_image(indices, n, None, "indices")
    attrs = {b: _block_attrs(b, stage_blocks[b], model) for b in names}
    last = max(i for i, (name, _) in enumerate(model.stages()) if name in names)
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for k, start in enumerate(range(0, n, batch_size)):
                stop = min(start + batch_size, n)
                x = images[start:stop].to(param.device, param.dtype)
                out = {}
                for i, (name, module) in enumerate(model.stages()[: last + 1]):
                    if name in names:
                        states, x, nfe = _solve_block(module, x, grid)
                        t = grid if isinstance(module, ODEBlock) else np.array([0.0, 1.0])
                        out[name] = _dataset(states, t, indices[start:stop], labels[start:stop],
                                             batch_offset + k, nfe, attrs[name])
                    else:
                        x = module(x)
                yield {b: out[b] for b in names}
    finally:
        model.train(was_training)


def extract_trajectories(model, images, times, *, blocks=None, labels=None, indices=None, batch_size=64):
    """States of each block at the requested times, for a set of images.

    Parameters
    ----------
    model : :class:`~dcnbio.core.models.Network`
        Run in eval mode under ``torch.no_grad()`` (its training mode is restored afterwards; the
        blocks' NFE counters grow by the solves' evaluations, as in a forward pass).
    images : Tensor or ndarray ``(N, C, H, W)``
        Finite values; ``C == model.config.in_channels``.  The input of block k is obtained by
        running the model's earlier stages (:meth:`Network.stages`).
    times : sequence of float
        Strictly increasing times in ``[0, T]`` (ignored for ResBlocks, see the module docstring).
    blocks : sequence of str, optional
        Subset of ``"block1"``, ``"block2"``, ``"block3"`` (default all three).
    labels : sequence of int, optional
        Class labels, stored as the ``label`` coordinate (default -1).
    indices : sequence of int, optional
        Dataset indices of the images, the ``image`` coordinate (default ``0..N-1``).
    batch_size : int
        Images per solve; memory stays bounded by one batch, and the batch is the unit of
        NFE (see the module docstring).

    Returns
    -------
    dict of str → xarray.Dataset
        Block name → Dataset with ``h (image, time, channel, y, x)`` float32 and ``nfe (image)``;
        attrs hold the block name, solver settings (``solver``, ``rtol``, ``atol``, ``T``,
        ``solver_options`` as JSON …) and the model name and configuration (JSON).

    Raises
    ------
    DataError, ConfigError
        Malformed images, times, block names or batch size (one-line messages).
    SolverError
        A solve failed.

    Examples
    --------
    >>> from dcnbio import create_model
    >>> model = create_model("dcn-ode", in_channels=1, width=0.125)
    >>> traj = extract_trajectories(model, torch.randn(2, 1, 28, 28), [0.0, 1.0, 2.0])
    >>> traj["block2"].h.dims, traj["block2"].h.shape
    (('image', 'time', 'channel', 'y', 'x'), (2, 3, 8, 13, 13))
    """
    parts = {}
    for batch in iter_trajectories(model, images, times, blocks=blocks, labels=labels, indices=indices,
                                   batch_size=batch_size):
        for name, ds in batch.items():
            parts.setdefault(name, []).append(ds)
    return {name: concat_batches(dss) for name, dss in parts.items()}


def concat_batches(datasets):
    """Concatenate per-batch trajectory Datasets along ``image`` (attrs from the first)."""
    if len(datasets) == 1:
        return datasets[0]
    return xr.concat(datasets, dim="image", data_vars="minimal", coords="minimal", compat="equals",
                     join="exact", combine_attrs="override")


def _check_blocks(model, blocks):
    available = list(model.blocks())
    if blocks is None:
        return available
    if isinstance(blocks, str):
        blocks = [blocks]
    blocks = list(blocks)
    unknown = [b for b in blocks if b not in available]
    if unknown or not blocks:
        raise ConfigError(f"unknown block(s) {unknown or blocks}; choose from {', '.join(available)}")
    if len(set(blocks)) != len(blocks):
        raise ConfigError(f"blocks listed twice: {blocks}")
    return [b for b in available if b in blocks]  # execution order


def _per_image(values, n, default, what):
    if values is None:
        return np.arange(n, dtype=np.int64) if default is None else np.full(n, default, dtype=np.int64)
    arr = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values)
    if arr.shape != (n,) or arr.dtype.kind not in "iu":
        raise DataError(f"{what} must be {n} integers (one per image), got shape {arr.shape} dtype {arr.dtype}")
    if what == "indices" and len(np.unique(arr)) != n:
        raise DataError("indices must be unique (they label the image dimension)")
    return arr.astype(np.int64)


def _dataset(states, times, indices, labels, batch, nfe, attrs):
    b = states.shape[0]
    # float32 on disk (half the size) unless the model computes in float64, whose states are kept exactly
    h = states.detach().to("cpu", torch.float64 if states.dtype == torch.float64 else torch.float32).numpy()
    return xr.Dataset(
        {"h": (("image", "time", "channel", "y", "x"), h,
               {"long_name": "block state h(t)"}),
         "nfe": ("image", np.full(b, nfe, dtype=np.int64),
                 {"long_name": "forward function evaluations of the batch solve"})},
        coords={"image": ("image", np.asarray(indices, dtype=np.int64), {"long_name": "dataset index"}),
                "time": ("time", np.asarray(times, dtype=np.float64), {"long_name": "ODE time (depth in the block)"}),
                "label": ("image", np.asarray(labels, dtype=np.int64), {"long_name": "class label (-1: unknown)"}),
                "batch": ("image", np.full(b, batch, dtype=np.int64), {"long_name": "solver batch number"})},
        attrs=dict(attrs))
