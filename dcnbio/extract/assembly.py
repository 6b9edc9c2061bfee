"""Model activations in the ``presentation × neuroid`` layout of Brain-Score's data assemblies.

Brain-Score (Schrimpf et al. 2018; its V1 benchmarks: Marques, Schrimpf & DiCarlo 2021) and the BrainIO format
behind it hold recordings and model activations as a 2-D array whose rows are *presentations* (one stimulus
shown once) and whose columns are *neuroids* (a recorded neuron, a voxel, or a model unit), each axis carrying
metadata coordinates (``stimulus_id`` …, ``neuroid_id``, ``layer`` …).  A dcnbio unit is a channel at a map
position of a block *at an ODE time*, so a neuroid here is ``(block, time, channel, y, x)`` and its ``layer``
is ``"<block>@t=<time>"``: a continuous-depth block enters a layer-wise pipeline as one layer per requested
time (``layer_time`` gives the time as a number, ``block`` the block).

The functions return an :class:`xarray.DataArray` named ``activations`` with dims ``("presentation",
"neuroid")`` and *plain* (non-index) coordinates along each dim, which is how BrainIO stores assemblies in
netCDF; ``da.set_index(presentation=[...], neuroid=[...])`` gives the MultiIndex form that ``brainio``'s
``NeuroidAssembly`` wraps.  Nothing here touches disk (:func:`dcnbio.io.save_dataset` writes
``da.to_dataset()``).

Neuroid coordinates: ``neuroid_id`` (unique string), ``model``, ``layer``, ``block``, ``layer_time``,
``channel``, ``channel_y``, ``channel_x`` (map row/column; -1 for a spatially pooled unit), ``readout``.
Presentation coordinates: ``stimulus_id`` and the stimulus's own parameters (gratings: ``sf`` in cycles/pixel,
``orientation``, ``phase`` in degrees, ``contrast``, ``is_blank``; images: ``image`` (dataset index), ``label``).
"""
import numpy as np
import xarray as xr

from ..errors import ConfigError, DataError

__all__ = ["grating_assembly", "trajectory_assembly"]


def _layer_names(block, times):
    return np.array([f"{b}@t={t:g}" for b, t in zip(block, times)])


def _neuroid_coords(model, block, time, channel, y, x, readout):
    layer = _layer_names(block, time)
    ids = np.array([f"{model}/{lay}/{r}/c{c}/y{yy}/x{xx}"
                    for lay, r, c, yy, xx in zip(layer, readout, channel, y, x)])
    if len(set(ids)) != len(ids):
        raise DataError("neuroid ids are not unique: the input repeats a (block, time, channel, y, x) unit")
    return {"neuroid_id": ("neuroid", ids), "model": ("neuroid", np.array([model] * len(ids))),
            "layer": ("neuroid", layer), "block": ("neuroid", np.asarray(block).astype(str)),
            "layer_time": ("neuroid", np.asarray(time, dtype=np.float64)),
            "channel": ("neuroid", np.asarray(channel, dtype=np.int64)),
            "channel_y": ("neuroid", np.asarray(y, dtype=np.int64)),
            "channel_x": ("neuroid", np.asarray(x, dtype=np.int64)),
            "readout": ("neuroid", np.asarray(readout).astype(str))}


def _model_label(ds, model):
    label = model if model is not None else (ds.attrs.get("model") or ds.attrs.get("model_name"))
    if not label:
        raise ConfigError("name the model (model='dcn-ode-seed1'): the data's attrs do not say which it is")
    return str(label)


def grating_assembly(responses, *, model=None, readout="centre", include_blank=True):
    """Grating responses (:func:`~dcnbio.extract.responses.grating_responses`) as a Brain-Score assembly.

    Parameters
    ----------
    responses : xarray.Dataset
        ``response (readout, sf, orientation, phase, contrast, time, unit)`` and ``blank``.
    model : str, optional
        The model label of every neuroid (default: the ``model`` attr, else ``model_name``).
    readout : str
        Which readout becomes the neuroids (``"centre"``: ``channel_y``/``channel_x`` are the map position;
        ``"pooled"``: -1).
    include_blank : bool
        Append the mean-luminance blank as one more presentation (``is_blank`` True, stimulus parameters NaN).

    Returns
    -------
    xarray.DataArray
        ``activations (presentation, neuroid)``; presentations in the order of the factorial grid (sf slowest,
        contrast fastest), neuroids ordered by (time, unit).  ``attrs`` are the responses' attrs.

    Examples
    --------
    >>> from dcnbio import create_model
    >>> from dcnbio.extract.responses import grating_responses
    >>> r = grating_responses(create_model("dcn-ode", in_channels=1, width=0.125), "fashion-mnist", [0.0, 1.0],
    ...                       sf=[0.1], orientation=[0, 90], phase=[0], contrast=[1.0], blocks=["block1"])
    >>> a = grating_assembly(r, model="example")
    >>> a.dims, a.shape, str(a.layer.values[-1])
    (('presentation', 'neuroid'), (3, 8), 'block1@t=1')
    """
    if "response" not in responses or "readout" not in responses.dims:
        raise DataError("grating_assembly needs grating responses (a 'response' variable with a readout dim)")
    if readout not in responses.readout.values:
        raise ConfigError(f"readout {readout!r} is not in the responses (have {list(responses.readout.values)})")
    label = _model_label(responses, model)
    r = responses.response.sel(readout=readout)
    grid = r.stack(presentation=("sf", "orientation", "phase", "contrast"),
                   neuroid=("time", "unit")).transpose("presentation", "neuroid")
    values = grid.values
    pres = {k: np.asarray(grid[k].values, dtype=np.float64) for k in ("sf", "orientation", "phase", "contrast")}
    blank = np.zeros(values.shape[0], dtype=bool)
    if include_blank:
        b = responses.blank.sel(readout=readout).transpose("time", "unit").values.reshape(1, -1)
        values = np.concatenate([values, b.astype(values.dtype)])
        pres = {k: np.append(v, np.nan) for k, v in pres.items()}
        blank = np.append(blank, True)
    ids = [("blank" if bl else f"grating_sf{s:.6g}_ori{o:g}_ph{p:g}_c{c:.6g}")
           for s, o, p, c, bl in zip(pres["sf"], pres["orientation"], pres["phase"], pres["contrast"], blank)]
    time = grid.time.values
    unit = grid.unit.values
    ds_unit = responses.sel(unit=unit)
    pooled = readout == "pooled"
    y = np.full(unit.size, -1) if pooled else ds_unit.y.values
    x = np.full(unit.size, -1) if pooled else ds_unit.x.values
    coords = {"stimulus_id": ("presentation", np.array(ids)), "is_blank": ("presentation", blank),
              **{k: ("presentation", v) for k, v in pres.items()},
              **_neuroid_coords(label, ds_unit.block.values, time, ds_unit.channel.values, y, x,
                                [readout] * unit.size)}
    return xr.DataArray(values, dims=("presentation", "neuroid"), coords=coords, name="activations",
                        attrs=dict(responses.attrs))


def trajectory_assembly(trajectories, *, model=None, dataset=None):
    """Block trajectories (:func:`~dcnbio.extract.trajectories.extract_trajectories`) as a Brain-Score assembly.

    Parameters
    ----------
    trajectories : xarray.Dataset or dict of str → xarray.Dataset
        One block's ``h (image, time, channel, y, x)`` (its ``block`` attr names it), or block name → Dataset;
        the blocks must share their images.
    model : str, optional
        Default: the ``model`` attr, else ``model_name``.
    dataset : str, optional
        Prefix of the ``stimulus_id`` (``"<dataset>-<index>"``; default the ``dataset`` attr, else
        ``"image"``).

    Returns
    -------
    xarray.DataArray
        ``activations (presentation, neuroid)`` with ``presentation`` = image (coords ``stimulus_id``,
        ``image``, ``label``) and one neuroid per (block, time, channel, y, x), blocks in the order given.
    """
    if isinstance(trajectories, xr.Dataset):
        trajectories = {str(trajectories.attrs.get("block", "block")): trajectories}
    if not trajectories:
        raise DataError("no trajectories given")
    first = next(iter(trajectories.values()))
    label = _model_label(first, model)
    images = first.image.values
    parts, coords = [], {k: [] for k in ("block", "time", "channel", "y", "x")}
    for name, ds in trajectories.items():
        if "h" not in ds or ds.h.dims != ("image", "time", "channel", "y", "x"):
            raise DataError(f"block {name}: need h (image, time, channel, y, x), got "
                            f"{None if 'h' not in ds else ds.h.dims}")
        if not np.array_equal(ds.image.values, images):
            raise DataError(f"block {name} holds other images than {next(iter(trajectories))}; "
                            f"select the same images first")
        parts.append(np.asarray(ds.h.values).reshape(images.size, -1))
        t, c, y, x = np.meshgrid(ds.time.values, np.arange(ds.sizes["channel"]), np.arange(ds.sizes["y"]),
                                 np.arange(ds.sizes["x"]), indexing="ij")
        coords["block"].append(np.full(t.size, name))
        for k, v in (("time", t), ("channel", c), ("y", y), ("x", x)):
            coords[k].append(v.ravel())
    cat = {k: np.concatenate(v) for k, v in coords.items()}
    prefix = dataset or first.attrs.get("dataset") or "image"
    pres = {"stimulus_id": ("presentation", np.array([f"{prefix}-{i}" for i in images])),
            "image": ("presentation", images.astype(np.int64))}
    if "label" in first.coords:
        pres["label"] = ("presentation", first.label.values.astype(np.int64))
    return xr.DataArray(np.concatenate(parts, axis=1), dims=("presentation", "neuroid"),
                        coords={**pres, **_neuroid_coords(label, cat["block"], cat["time"], cat["channel"],
                                                          cat["y"], cat["x"], ["map"] * cat["block"].size)},
                        name="activations", attrs=dict(first.attrs))
