"""Pattern completion: how block states of a masked image approach those of the intact image (paper §3.2, Fig. 3c,
4a, 6, 7; SPEC §3).

An n×n patch at the centre of each test image is set to a fill value; both versions run through the classifier and
the states of every block are read at a grid of times from the solve itself
(:func:`~dcnbio.extract.trajectories.iter_trajectories`, never recorded inside ``f``).  The paper's measure is

    D(t) = (1/A) Σ_{c,y,x} |h_im(t) − h_masked(t)|

"normalized by the amplitude of the intact image A", which the paper never defines.  Every ODE block's ``f`` ends in
GroupNorm, so ``|dh/dt|`` stays O(1) and ``Σ|h(t)|`` grows with t: dividing by ``A(t)`` alone could make D shrink
with t although the states do not get closer.  So D is reported with three normalisers (``normalizer``
coordinate), each per image:

``amplitude_t``
    ``A(t) = Σ|h_im(t)|`` — the intact state's amplitude at the same time (relative difference);
``amplitude_0``
    ``A = Σ|h_im(0)|`` — fixed: the block's input amplitude, so D(t) is the raw difference up to a per-image
    constant and a decrease is a genuine decrease of ``Σ|Δh|``;
``per_element``
    ``A = C·H·W`` — no amplitude normalisation: the mean absolute difference per state element (comparable
    between blocks of different size; multiply by ``C·H·W`` for the plain sum).

``amplitude_0`` and ``per_element`` have the same time course for every image (they differ by a constant factor);
their *means over images* weigh images differently.

Fill value.  The paper's masks "have zero pixel values".  Images here are normalised per channel,
``x_norm = (x − mean)/std``, so a zero pixel is ``−mean/std`` in normalised units while a normalised 0 is the
dataset's mean grey.  The library takes the fill in normalised units; the script's default (``--fill black``) is the
paper's zero pixel value, ``−mean/std``; ``--fill mean`` gives 0.

Mask placement.  Rows ``top = (H − n) // 2`` … ``top + n − 1`` (columns likewise): centred, and one pixel up/left
of centre when ``H − n`` is odd.

Batches.  Masked images are solved in exactly the batches of their intact images (same images, same order), so with
n = 0 every state is bitwise equal and D ≡ 0.  For n > 0 the adaptive solver takes different steps for the two
batches, so D contains the solver's error (≈ the tolerance, 1e-3 relative) as a floor.

ResNet baselines have no trajectory: their "times" are 0 (block input) and 1 (block output), as in the paper's
App. A.5, Fig. 7.
"""
import json

import numpy as np
import torch
import xarray as xr

from ..errors import ConfigError, DataError
from ..provenance import provenance_attrs
from ..core.layers.ode import ODEBlock
from .trajectories import check_images, iter_trajectories

__all__ = ["NORMALIZERS", "apply_center_mask", "check_mask_sizes", "compute_differences",
           "compute_pattern_completion", "mask_fill", "mask_window"]

#: The normalisers of D(t) (see the module docstring), in the order of the ``normalizer`` dimension.
NORMALIZERS = ("amplitude_t", "amplitude_0", "per_element")
NORMALIZER_LABELS = {"amplitude_t": "A(t) = Σ|h_im(t)|", "amplitude_0": "A = Σ|h_im(0)|",
                     "per_element": "per element (no amplitude)"}
#: Default number of points of the time grid over [0, T].
N_TIMES = 21


# --- masks ---------------------------------------------------------------------------------------------------------

def mask_fill(info, kind="black"):
    """The mask value of each channel in normalised units.

    ``kind="black"`` is the paper's zero pixel value, ``−mean/std`` of the dataset (``info``: a
    :class:`~dcnbio.datasets.DatasetInfo` with ``mean``/``std``/``channels``); ``"mean"`` is 0, the dataset mean.

    >>> from dcnbio.train.data import dataset_info
    >>> [round(v, 4) for v in mask_fill(dataset_info("fashion-mnist"))]
    [-0.8102]
    """
    if kind == "mean":
        return [0.0] * info.channels
    if kind != "black":
        raise ConfigError(f"mask fill must be 'black' (a zero pixel) or 'mean' (the dataset mean), got {kind!r}")
    return [-m / s for m, s in zip(info.mean, info.std)]


def mask_window(height, width, n):
    """Top-left corner ``(top, left)`` of the centred ``n × n`` window: ``((H − n)//2, (W − n)//2)``."""
    return (height - n) // 2, (width - n) // 2


def check_mask_sizes(mask_sizes, height, width):
    """Validate mask sizes: integers ``0 ≤ n ≤ min(H, W)``, no repeats; returned sorted.

    Raises
    ------
    ConfigError
        One line naming the offending size.
    """
    sizes = np.atleast_1d(np.asarray(mask_sizes, dtype=object))
    if sizes.size == 0:
        raise ConfigError("no mask sizes given")
    out = []
    for n in sizes:
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
            if isinstance(n, (float, np.floating)) and float(n).is_integer():
                n = int(n)
            else:
                raise ConfigError(f"mask size must be an integer number of pixels, got {n!r}")
        n = int(n)
        if n < 0:
            raise ConfigError(f"mask size must be >= 0, got {n}")
        if n > min(height, width):
            raise ConfigError(f"a {n}x{n} mask is larger than the {height}x{width} image; "
                              f"use n <= {min(height, width)}")
        out.append(n)
    if len(set(out)) != len(out):
        raise ConfigError(f"mask sizes repeat: {out}")
    return sorted(out)


def apply_center_mask(images, n, fill=0.0):
    """Set the centred ``n × n`` patch of every image to ``fill``.

    Parameters
    ----------
    images : Tensor ``(N, C, H, W)``
        Normalised images (not modified).
    n : int
        Side of the square mask in pixels, ``0 ≤ n ≤ min(H, W)`` (0: unchanged copy).
    fill : float or sequence of C floats
        Value(s) in the images' (normalised) units, one per channel or one for all.

    Returns
    -------
    Tensor ``(N, C, H, W)``

    Raises
    ------
    ConfigError
        ``n`` not an integer in ``[0, min(H, W)]``, or a fill of the wrong length.

    Examples
    --------
    >>> x = torch.ones(1, 1, 4, 4)
    >>> apply_center_mask(x, 2, fill=0.0)[0, 0]
    tensor([[1., 1., 1., 1.],
            [1., 0., 0., 1.],
            [1., 0., 0., 1.],
            [1., 1., 1., 1.]])
    """
    if images.ndim != 4:
        raise DataError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    _, c, h, w = images.shape
    (n,) = check_mask_sizes([n], h, w)
    fill = torch.as_tensor(fill, dtype=images.dtype, device=images.device).flatten()
    if fill.numel() not in (1, c):
        raise ConfigError(f"fill must be one value or one per channel ({c}), got {fill.numel()} values")
    out = images.clone()
    if n:
        top, left = mask_window(h, w, n)
        out[:, :, top:top + n, left:left + n] = fill.view(1, -1, 1, 1).expand(1, c, 1, 1)
    return out


# --- D(t) -------------------------------------------------------------------------------------------------------------

def _differences(intact, masked):
    """numpy core: ``(B, T, C, H, W)`` pair → ``(3, B, T)`` D for the three normalisers (float64)."""
    a = np.asarray(intact, dtype=np.float64)
    b = np.asarray(masked, dtype=np.float64)
    axes = tuple(range(2, a.ndim))
    diff = np.abs(a - b).sum(axis=axes)
    amp = np.abs(a).sum(axis=axes)
    with np.errstate(divide="ignore", invalid="ignore"):  # an all-zero intact state gives inf/NaN, not an error
        return np.stack([diff / amp, diff / amp[:, :1], diff / float(np.prod(a.shape[2:]))])


def compute_differences(intact, masked):
    """D(t) between intact and masked block states with the three normalisers.

    Parameters
    ----------
    intact, masked : xarray.DataArray ``(image, time, channel, y, x)``
        Block states of the same images (e.g. ``extract_trajectories(...)["block1"].h``); the first time is the
        block input (``amplitude_0`` divides by the intact state there).

    Returns
    -------
    xarray.DataArray ``(normalizer, image, time)`` float64
        ``Σ_{c,y,x}|intact − masked|`` divided by ``Σ|intact(t)|`` (``amplitude_t``), by ``Σ|intact(t₀)|``
        (``amplitude_0``) and by ``C·H·W`` (``per_element``).

    Examples
    --------
    >>> a = xr.DataArray(np.ones((1, 2, 1, 1, 2)), dims=("image", "time", "channel", "y", "x"))
    >>> b = a.copy(data=np.zeros((1, 2, 1, 1, 2)))
    >>> compute_differences(a, b).sel(normalizer="per_element").values
    array([[1., 1.]])
    """
    dims = ("image", "time", "channel", "y", "x")
    for name, arr in (("intact", intact), ("masked", masked)):
        if not isinstance(arr, xr.DataArray) or tuple(arr.dims) != dims:
            raise DataError(f"{name} must be a DataArray with dims {dims}, got "
                            f"{getattr(arr, 'dims', type(arr).__name__)}")
    if intact.shape != masked.shape:
        raise DataError(f"intact and masked states differ in shape: {intact.shape} vs {masked.shape}")
    for dim in ("image", "time"):
        if dim in intact.coords and dim in masked.coords and not np.array_equal(intact[dim].values,
                                                                                masked[dim].values):
            raise DataError(f"intact and masked states have different {dim} coordinates: extract the same images "
                            f"at the same times")
    # xarray arithmetic, so that dask-backed states (open_results over shards) stay lazy: one task graph per shard
    a = intact.astype(np.float64).drop_vars([c for c in intact.coords if c not in ("image", "time")])
    b = masked.astype(np.float64).drop_vars([c for c in masked.coords if c not in ("image", "time")])
    b = b.assign_coords({d: a[d] for d in ("image", "time") if d in a.coords})
    space = ("channel", "y", "x")
    diff = abs(a - b).sum(space)
    amp = abs(a).sum(space)
    size = float(np.prod([intact.sizes[d] for d in space]))
    d = xr.concat([diff / amp, diff / amp.isel(time=0, drop=True), diff / size],
                  dim=xr.DataArray(list(NORMALIZERS), dims="normalizer", name="normalizer"))
    d = d.transpose("normalizer", "image", "time")
    d.name = "D"
    d.attrs = {"long_name": "D(t) = sum|h_im - h_masked| / A"}
    return d


# --- the experiment -------------------------------------------------------------------------------------------------

def _time_grid(model, n_times):
    blocks = model.blocks()
    ode = [b for b in blocks.values() if isinstance(b, ODEBlock)]
    if not ode:
        return np.array([0.0, 1.0]), "res"
    ends = {float(b.T) for b in ode}
    if len(ends) != 1:
        raise ConfigError(f"the ODE blocks have different end times {sorted(ends)}; D(t) needs one time grid")
    if isinstance(n_times, bool) or not isinstance(n_times, (int, np.integer)) or n_times < 2:
        raise ConfigError(f"n_times must be an integer >= 2 (the grid includes 0 and T), got {n_times!r}")
    return np.linspace(0.0, ends.pop(), int(n_times)), "ode"


def _logits(model, state):
    with torch.no_grad():
        return model.head(torch.from_numpy(np.ascontiguousarray(state))).numpy()


def compute_pattern_completion(model, images, labels=None, mask_sizes=(2, 4, 6, 8, 10, 12, 14), *, fill=0.0,
                               n_times=N_TIMES, batch_size=128, indices=None, n_examples=2, example_mask=None,
                               example_block="block1", info=None):
    """D(t) per block and masked accuracy for a sweep of centred masks.

    Parameters
    ----------
    model : :class:`~dcnbio.core.models.Network`
    images : Tensor ``(N, C, H, W)``
        Normalised images.
    labels : sequence of int, optional
        For the accuracies (default -1: accuracy NaN).
    mask_sizes : sequence of int
        Mask sides n in pixels, ``0 ≤ n ≤ min(H, W)``.
    fill : float or sequence of floats
        Mask value in normalised units (see the module docstring).
    n_times : int
        Points of the time grid ``linspace(0, T, n_times)`` (ODE models; ResNets use 0 = input, 1 = output).
    batch_size : int
        Images per solve; intact and masked images are solved in the same batches.
    indices : sequence of int, optional
        Dataset indices of the images (the ``image`` coordinate).
    n_examples : int
        Images (the first ones) whose ``example_block`` states are kept for feature-map panels.
    example_mask : int, optional
        Mask size of the example panels (default: the middle of ``mask_sizes``); must be in ``mask_sizes``.
    example_block : str
    info : dict, optional
        Checkpoint info, for provenance attrs.

    Returns
    -------
    xarray.Dataset
        Dimensions ``mask``, ``block``, ``normalizer``, ``image``, ``time`` (, ``batch``, ``ode_block``,
        ``example``, ``y``, ``x``).  Variables:

        ``D (mask, block, normalizer, image, time)``  D(t) per image;
        ``D_mean``, ``D_sd (mask, block, normalizer, time)``  mean and SD over images (ddof 1);
        ``prediction (mask, image)``, ``correct (mask, image)``, ``accuracy (mask)``;
        ``prediction_intact``, ``correct_intact (image)``, ``accuracy_intact`` (scalar);
        ``nfe_intact (batch, ode_block)``, ``nfe_masked (mask, batch, ode_block)``  forward NFE per batch;
        ``example_intact``, ``example_masked (example, time, y, x)``  one channel of ``example_block`` for the first
        images at ``example_mask`` — the channel whose input (t = 0) the mask changes most — with coordinates
        ``example_image`` and ``example_channel``.

        Attrs: provenance, ``block_type`` (``ode``/``res``), ``fill`` (JSON), ``normalizers`` (JSON definitions),
        ``example_mask``, ``example_block``, ``mask_placement``.

    Raises
    ------
    ConfigError, DataError
        Bad mask sizes (e.g. larger than the image), fill, times or images.
    SolverError
        A solve failed.
    """
    images = check_images(images, model.config.in_channels)
    n, _, h, w = images.shape
    sizes = check_mask_sizes(mask_sizes, h, w)
    times, kind = _time_grid(model, n_times)
    labels = np.full(n, -1, np.int64) if labels is None else np.asarray(
        labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    if labels.shape != (n,):
        raise DataError(f"labels must be {n} integers, got shape {labels.shape}")
    indices = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    if example_mask is None:
        example_mask = sizes[len(sizes) // 2]
    if example_mask not in sizes:
        raise ConfigError(f"example mask {example_mask} is not among the mask sizes {sizes}")
    blocks = list(model.blocks())
    if example_block not in blocks:
        raise ConfigError(f"unknown example block {example_block!r}; choose from {', '.join(blocks)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    n_examples = int(min(max(n_examples, 0), n))
    ode_names = [b for b, m in model.blocks().items() if isinstance(m, ODEBlock)]
    nt = len(times)

    D = np.zeros((len(sizes), len(blocks), len(NORMALIZERS), n, nt), dtype=np.float64)
    pred = np.zeros((len(sizes), n), dtype=np.int64)
    pred_intact = np.zeros(n, dtype=np.int64)
    nfe_intact, nfe_masked = [], []
    ex_intact = ex_masked = None
    ex_channel = np.zeros(n_examples, dtype=np.int64)
    for k, start in enumerate(range(0, n, batch_size)):
        x = images[start:start + batch_size]
        sl = slice(start, start + x.shape[0])
        (intact,) = iter_trajectories(model, x, times, batch_size=x.shape[0])
        pred_intact[sl] = _logits(model, intact["block3"].h.values[:, -1]).argmax(1)
        nfe_intact.append([int(intact[b].nfe.values[0]) for b in ode_names])
        row = []
        for i, size in enumerate(sizes):
            (masked,) = iter_trajectories(model, apply_center_mask(x, size, fill), times, batch_size=x.shape[0])
            for j, b in enumerate(blocks):
                D[i, j, :, sl] = _differences(intact[b].h.values, masked[b].h.values)
            pred[i, sl] = _logits(model, masked["block3"].h.values[:, -1]).argmax(1)
            row.append([int(masked[b].nfe.values[0]) for b in ode_names])
            take = max(0, min(n_examples - start, x.shape[0]))
            if size == example_mask and take:
                a = intact[example_block].h.values[:take]
                m = masked[example_block].h.values[:take]
                ch = np.abs(a[:, 0] - m[:, 0]).sum(axis=(2, 3)).argmax(axis=1)  # most changed input channel
                ex_channel[start:start + take] = ch
                sel_a = a[np.arange(take), :, ch]
                sel_m = m[np.arange(take), :, ch]
                ex_intact = sel_a if ex_intact is None else np.concatenate([ex_intact, sel_a])
                ex_masked = sel_m if ex_masked is None else np.concatenate([ex_masked, sel_m])
        nfe_masked.append(row)

    n_batches = len(nfe_intact)
    nfe_masked = np.asarray(nfe_masked, dtype=np.int64).reshape(n_batches, len(sizes), len(ode_names))
    correct = pred == labels[None]
    has_labels = bool((labels >= 0).all())
    D_da = xr.DataArray(D, dims=("mask", "block", "normalizer", "image", "time"))
    ds = xr.Dataset(
        {"D": D_da.astype(np.float32),
         "D_mean": D_da.mean("image"),
         "D_sd": D_da.std("image", ddof=1) if n > 1 else D_da.isel(image=0) * np.nan,
         "prediction": (("mask", "image"), pred),
         "correct": (("mask", "image"), correct),
         "accuracy": ("mask", correct.mean(axis=1) if has_labels else np.full(len(sizes), np.nan)),
         "prediction_intact": ("image", pred_intact),
         "correct_intact": ("image", pred_intact == labels),
         "accuracy_intact": ((), float(np.mean(pred_intact == labels)) if has_labels else np.nan),
         "nfe_intact": (("batch", "ode_block"), np.asarray(nfe_intact, dtype=np.int64).reshape(n_batches, -1)),
         "nfe_masked": (("mask", "batch", "ode_block"), nfe_masked.transpose(1, 0, 2))},
        coords={"mask": sizes, "block": blocks, "normalizer": list(NORMALIZERS), "image": indices,
                "time": times, "label": ("image", labels), "batch": np.arange(n_batches),
                "ode_block": np.asarray(ode_names, dtype=str)})
    if n_examples:
        ds["example_intact"] = (("example", "time", "y", "x"), ex_intact)
        ds["example_masked"] = (("example", "time", "y", "x"), ex_masked)
        ds = ds.assign_coords(example_image=("example", indices[:n_examples]),
                              example_channel=("example", ex_channel))
    ds["D"].attrs.update(long_name="D(t) = sum over channel, y, x of |h_im(t) - h_masked(t)|, divided by A "
                                   "(see normalizer)")
    ds["time"].attrs.update(long_name="ODE time t" if kind == "ode" else "0: block input, 1: block output")
    ds["mask"].attrs.update(long_name="side n of the centred n x n mask", units="pixels")
    ds.attrs.update(provenance_attrs(model, info))
    ds.attrs.update({"block_type": kind, "fill": json.dumps(np.asarray(fill, dtype=float).tolist()),
                     "normalizers": json.dumps(NORMALIZER_LABELS, ensure_ascii=False),
                     "example_mask": int(example_mask), "example_block": example_block,
                     "mask_placement": "rows/cols (H - n)//2 ... (H - n)//2 + n - 1",
                     "batch_size": int(batch_size)})
    return ds


# --- figures --------------------------------------------------------------------------------------------------------
