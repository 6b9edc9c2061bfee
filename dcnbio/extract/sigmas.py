"""Every learned scale σ of a model as one labelled array (paper §3.2, Fig. 3).

:func:`extract_sigmas` turns the SRF layers of a model into an :class:`xarray.Dataset` with one flat
dimension ``filter``: one entry per σ value the model actually uses,

* a *shared* layer gives one entry;
* a *per-channel* (σ_ji) layer gives ``out × in`` entries;
* a *meta-parametrized* layer (σ(t) = 2^(a t' + b) …) gives one entry per time of a grid over ``[0, T]``.

Units.  ``sigma`` is in pixels of the layer's *input* feature map; ``sigma_input`` multiplies it by the stride of
that map relative to the image, i.e. the filter's scale measured in input-image pixels.  (It is not the effective
receptive field of the unit: earlier layers widen that further.)

The time channel.  Convolutions inside ODE blocks see ``t ⊕ h``: their last input channel is a constant map filled
with ``t``.  Its σ_ji are kept (``is_time_channel = True``) but are not receptive fields: a Gaussian derivative
filter on a constant field only scales it (and reacts at the zero-padded border), so the statistics of
:mod:`dcnbio.stats.distribution` exclude them by default (:func:`dcnbio.stats.sigmas.sigma_values` with
``time_channel=False``).

Truncation.  σ_ji layers use a fixed 7×7 kernel (radius 3, SPEC §1): once ``2σ`` exceeds the radius (σ > 1.5)
the window cuts the Gaussian before ±2σ and σ stops being a true bandwidth.  ``truncated`` flags those entries.
"""
import json
import math

import numpy as np
import torch
import xarray as xr

from ..errors import ConfigError, DataError
from ..provenance import TIMESTAMP_ATTR, provenance_attrs
from ..core.layers.ode import TimeConcat
from ..core.models import srf_layers
from ..core.models.network import Network

#: Number of points of the default time grid for σ(t).
N_TIMES = 21
#: Truncation factor of the kernel radius rule r = ceil(2σ + 0.5) (SPEC §1): a window of radius r covers
#: ±2σ only while σ ≤ r / 2.
K_TRUNCATION = 2.0

TRUNCATION_NOTE = ("per-channel (sigma_ji) layers use fixed 7x7 kernels (radius 3): sigma above ~1.5 px is "
                   "truncated by the window (flag 'truncated'), so such sigma are not true bandwidths")


def _stage_strides(model):
    """``{stage: stride of the stage's input map relative to the image}``, from the execution order.

    Blocks keep their map size, so a block's input stride is ``Network.BLOCK_STRIDES``; a transition sees the map
    of the block before it; the stem sees the image.
    """
    strides = {}
    previous = 1
    for name, _ in model.stages():
        if name in Network.BLOCK_STRIDES:
            previous = Network.BLOCK_STRIDES[name]
        strides[name] = previous
    return strides


def _layer_labels(model, name):
    """``(block, conv)`` of a qualified SRF layer name such as ``block1.func.conv1.conv``."""
    parts = name.split(".")
    block = parts[0]
    conv = next((p for p in parts[1:] if p in ("conv1", "conv2")), "") if block.startswith("block") else ""
    return block, conv


def _has_time_channel(model, name):
    parent = name.rsplit(".", 1)[0] if "." in name else ""
    return bool(parent) and isinstance(model.get_submodule(parent), TimeConcat)


def extract_sigmas(model, *, times=None, info=None):
    """Collect every learned scale of every SRF layer of ``model``.

    Parameters
    ----------
    model : :class:`~dcnbio.core.models.Network`
    times : array-like of float, optional
        Times at which σ(t) of meta-parametrized layers is evaluated; default ``linspace(0, T, 21)`` with the
        model's block end time ``T``.  Ignored by static layers.
    info : dict, optional
        The ``info`` of :func:`dcnbio.load_checkpoint`, for provenance attrs.

    Returns
    -------
    xarray.Dataset
        Dimension ``filter``.  Data variables (float64):

        ``sigma``        σ in pixels of the layer's input map (after any ``sigma_range`` clamp);
        ``sigma_input``  ``sigma × stride``: σ in input-image pixels;
        ``log2_sigma``   ``log2(sigma)`` (the parameter the model learns, for static σ).

        Coordinates on ``filter``: ``layer`` (qualified module name), ``block`` (``stem``, ``block1``, ``down1``,
        ``block2``, ``down2``, ``block3``), ``conv`` (``conv1``/``conv2`` inside blocks, ``''`` elsewhere),
        ``depth`` (layer index in execution order, from 0), ``out_channel``/``in_channel`` (-1 for a shared σ),
        ``is_time_channel`` (the input channel is the constant t-channel of an ODE block), ``time`` (t of σ(t);
        NaN for static σ), ``stride`` (of the layer's input map), ``order`` (Gaussian-derivative order N),
        ``parametrization`` (σ parametrization name), ``radius`` (kernel radius in use, pixels) and
        ``truncated`` (``2σ > radius``: the window cuts the Gaussian).

        Attrs: provenance (model, config JSON, checkpoint, versions), ``note``.

    Raises
    ------
    DataError
        The model has no SRF layers.

    Examples
    --------
    >>> from dcnbio import create_model
    >>> ds = extract_sigmas(create_model("dcn-sigma-ji", in_channels=1, width=0.25))
    >>> int(ds.sizes["filter"]), sorted(set(ds.block.values))
    (2800, ['block1', 'block2', 'block3'])
    """
    layers = srf_layers(model)
    if not layers:
        raise DataError(f"model {model.config.name!r} has no SRF layers, so it has no learned scales to analyse")
    stage_order = [name for name, _ in model.stages()]
    strides = _stage_strides(model)
    # srf_layers lists modules in definition order; sort by stage to be explicit about execution order
    names = sorted(layers, key=lambda n: (stage_order.index(n.split(".")[0]), list(layers).index(n)))
    if times is None:
        times = np.linspace(0.0, float(model.config.T), N_TIMES)
    times = np.atleast_1d(np.asarray(times, dtype=float))
    if times.ndim != 1 or times.size == 0 or not np.all(np.isfinite(times)):
        raise ConfigError("times must be a non-empty 1-D array of finite numbers")

    columns = {k: [] for k in ("sigma", "layer", "block", "conv", "depth", "out_channel", "in_channel",
                               "is_time_channel", "time", "stride", "order", "parametrization", "radius")}

    def add(sigma, layer_name, depth, out_ch, in_ch, is_t, time, radius, layer):
        n = sigma.size
        block, conv = _layer_labels(model, layer_name)
        columns["sigma"].append(sigma.ravel())
        columns["layer"].append(np.full(n, layer_name, dtype=object))
        columns["block"].append(np.full(n, block, dtype=object))
        columns["conv"].append(np.full(n, conv, dtype=object))
        columns["depth"].append(np.full(n, depth, dtype=np.int64))
        columns["out_channel"].append(np.asarray(out_ch, dtype=np.int64).ravel())
        columns["in_channel"].append(np.asarray(in_ch, dtype=np.int64).ravel())
        columns["is_time_channel"].append(np.asarray(is_t, dtype=bool).ravel())
        columns["time"].append(np.broadcast_to(np.asarray(time, dtype=float), sigma.shape).ravel())
        columns["stride"].append(np.full(n, strides[block], dtype=np.int64))
        columns["order"].append(np.full(n, layer.order, dtype=np.int64))
        columns["parametrization"].append(np.full(n, layer.scale_name, dtype=object))
        columns["radius"].append(np.broadcast_to(np.asarray(radius, dtype=np.int64), sigma.shape).ravel())

    with torch.no_grad():
        for depth, name in enumerate(names):
            layer = layers[name]
            time_channel = layer.in_channels - 1 if _has_time_channel(model, name) else None
            if layer.scale.depends_on_t:
                sig = np.array([float(layer.sigma(torch.tensor(t, dtype=torch.float64))) for t in times])
                radius = [layer.radius(s) for s in sig]
                add(sig, name, depth, np.full(sig.shape, -1), np.full(sig.shape, -1),
                    np.zeros(sig.shape, bool), times, radius, layer)
                continue
            sig = layer.sigma().detach().to(torch.float64).cpu().numpy()
            radius = layer.radius(layer.sigma())
            if sig.ndim == 0:
                add(sig.reshape(1), name, depth, [-1], [-1], [False], np.nan, radius, layer)
            else:
                out_ch, in_ch = np.meshgrid(np.arange(sig.shape[0]), np.arange(sig.shape[1]), indexing="ij")
                is_t = in_ch == time_channel if time_channel is not None else np.zeros(sig.shape, bool)
                add(sig, name, depth, out_ch, in_ch, is_t, np.nan, radius, layer)

    col = {k: np.concatenate(v) for k, v in columns.items()}
    sigma = col.pop("sigma")
    stride = col["stride"]
    coords = {k: ("filter", v) for k, v in col.items()}
    coords["truncated"] = ("filter", K_TRUNCATION * sigma > col["radius"])
    ds = xr.Dataset(
        {"sigma": ("filter", sigma), "sigma_input": ("filter", sigma * stride),
         "log2_sigma": ("filter", np.log2(sigma))},
        coords=coords)
    ds["sigma"].attrs.update(units="pixels of the layer's input map", long_name="Gaussian scale sigma")
    ds["sigma_input"].attrs.update(units="input-image pixels", long_name="sigma x stride of the layer's input map")
    ds["log2_sigma"].attrs.update(units="octaves (log2 pixels)", long_name="log2 sigma")
    ds["time"].attrs.update(long_name="ODE time t of sigma(t); NaN for static sigma")
    ds.attrs.update(provenance_attrs(model, info))
    ds.attrs["note"] = TRUNCATION_NOTE if any(layers[n].scale.per_pair for n in names) else \
        "one sigma per layer (or per time of sigma(t)); kernel radius ceil(2 sigma + 0.5)"
    ds.attrs["time_channel_note"] = ("entries with is_time_channel filter the constant t-channel of ODE-block convs; "
                                     "they are kept but excluded from statistics by default")
    return ds


def stack_sigmas(parts):
    """Concatenate sigma datasets of several checkpoints along ``filter``, labelling each.

    Parameters
    ----------
    parts : sequence of (xarray.Dataset, dict)
        Each dataset of :func:`extract_sigmas` with the labels to add as ``filter`` coordinates, e.g.
        ``{"state": "trained", "seed": "1"}``.  All parts must carry the same label keys.

    Returns
    -------
    xarray.Dataset
        The entries of all parts; the attrs every part shares (conflicting ones, such as a checkpoint's hash,
        are dropped) plus ``sources``: a JSON list of each part's labels and full attrs (provenance).
    """
    parts = list(parts)
    if not parts:
        raise DataError("no sigma datasets to stack")
    keys = set(parts[0][1])
    labelled, sources = [], []
    for ds, labels in parts:
        if set(labels) != keys:
            raise ConfigError(f"every part must carry the labels {sorted(keys)}, got {sorted(labels)}")
        n = ds.sizes["filter"]
        labelled.append(ds.assign_coords({k: ("filter", np.full(n, v, dtype=object if isinstance(v, str) else None))
                                          for k, v in labels.items()}))
        sources.append({"labels": {k: _plain(v) for k, v in labels.items()},
                        # the creation time of each part is not provenance: the stacked result has its own
                        "attrs": {k: _plain(v) for k, v in ds.attrs.items() if k != TIMESTAMP_ATTR}})
    out = xr.concat(labelled, dim="filter", data_vars="all", coords="different", compat="equals",
                    combine_attrs="drop_conflicts")
    out.attrs["sources"] = json.dumps(sources, sort_keys=True)
    return out


def _plain(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
