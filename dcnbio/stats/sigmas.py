"""Selecting and comparing the σ of a sigma dataset (:func:`dcnbio.extract.sigmas.extract_sigmas`,
:func:`~dcnbio.extract.sigmas.stack_sigmas`): xarray in, arrays or xarray out.

The σ_ji of the constant t-channel are left out unless asked for (``time_channel=True``): see
:mod:`dcnbio.extract.sigmas`.
"""
import numpy as np
import xarray as xr

from ..errors import ConfigError, DataError

__all__ = ["filter_mask", "paired_shift", "paired_states", "select", "sigma_shift", "sigma_values"]


def sigma_values(ds, *, variable="sigma", time_channel=False, **selection):
    """The σ values of ``ds`` as a 1-D float array, optionally restricted by coordinate values.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`~dcnbio.extract.sigmas.extract_sigmas` (or :func:`~dcnbio.extract.sigmas.stack_sigmas`).
    variable : str
        ``sigma``, ``sigma_input`` or ``log2_sigma``.
    time_channel : bool
        Keep the σ_ji of the constant t-channel (default: drop them, see the module docstring).
    **selection
        ``coord=value`` (or a list of values) filters, e.g. ``block="block2", state="trained"``.
    """
    mask = filter_mask(ds, time_channel=time_channel, **selection)
    return np.asarray(ds[variable].values[mask], dtype=float)


def select(ds, *, time_channel=True, **selection):
    """Entries of ``ds`` whose coordinates match ``selection`` (values or lists of values), as a Dataset."""
    return ds.isel(filter=np.flatnonzero(filter_mask(ds, time_channel=time_channel, **selection)))


def filter_mask(ds, *, time_channel, **selection):
    """Boolean mask over ``filter`` of the entries matching ``selection`` (without the t-channel's σ_ji unless
    ``time_channel``); what :func:`sigma_values` and :func:`select` select by."""
    mask = np.ones(ds.sizes["filter"], dtype=bool)
    if not time_channel and "is_time_channel" in ds.coords:
        mask &= ~ds["is_time_channel"].values.astype(bool)
    for key, value in selection.items():
        if key not in ds.coords:
            raise ConfigError(f"no coordinate {key!r} in the sigma dataset; have {sorted(ds.coords)}")
        values = value if isinstance(value, (list, tuple, set, np.ndarray)) else [value]
        mask &= np.isin(ds[key].values, list(values))
    return mask


def sigma_shift(trained, init, *, time_channel=False):
    """How far training moved σ: per block, the median and largest |log2 σ_trained − log2 σ_init| (octaves).

    Parameters
    ----------
    trained, init : xarray.Dataset
        :func:`~dcnbio.extract.sigmas.extract_sigmas` of one run's trained checkpoint and of its own ``init.pt``
        (same model, so the same ``filter`` entries in the same order).
    time_channel : bool
        Include the σ_ji of the constant t-channel (default: no, as in :func:`sigma_values`).

    Returns
    -------
    xarray.Dataset
        Dimension ``block``; variables ``median_abs_shift`` and ``max_abs_shift`` (octaves) and ``n_filters``;
        the trained dataset's attrs.  An octave is a factor 2 in σ: 0.05 octaves is a 3.5 % change.

    Examples
    --------
    >>> import xarray as xr
    >>> init = xr.Dataset({"log2_sigma": ("filter", [0.0, 0.0, 1.0])}, coords={"block": ("filter", ["b1", "b1", "b2"])})
    >>> moved = init.copy(data={"log2_sigma": [0.1, -0.3, 1.5]})
    >>> sigma_shift(moved, init)["median_abs_shift"].values.round(3).tolist()
    [0.2, 0.5]
    """
    if trained.sizes.get("filter") != init.sizes.get("filter") or \
            list(trained["block"].values) != list(init["block"].values):
        raise ConfigError("trained and init σ do not have the same filters: compare a run with its own init.pt")
    mask = filter_mask(trained, time_channel=time_channel)
    shift = np.abs(trained["log2_sigma"].values - init["log2_sigma"].values)[mask]
    blocks = np.asarray(trained["block"].values)[mask]
    names = sorted(set(blocks.tolist()))
    return xr.Dataset(
        {"median_abs_shift": ("block", [float(np.median(shift[blocks == b])) for b in names]),
         "max_abs_shift": ("block", [float(np.max(shift[blocks == b])) for b in names]),
         "n_filters": ("block", [int((blocks == b).sum()) for b in names])},
        coords={"block": names}, attrs=dict(trained.attrs))


def paired_states(ds, **selection):
    """The trained σ and their own initial σ, filter for filter, of every seed of ``ds`` that has an init control.

    Parameters
    ----------
    ds : xarray.Dataset
        Stacked σ of one model (:func:`~dcnbio.extract.sigmas.stack_sigmas`: coordinates ``state`` =
        trained/init and ``seed``); the σ_ji of the constant t-channel are left out.
    **selection
        ``coord=value`` filters applied to both states, e.g. ``block="block2"`` or ``seed="1"``.

    Returns
    -------
    (trained, init) : two xarray.Datasets over the same filters in the same order (seeds concatenated), or
    None when no seed has an init control.

    Raises
    ------
    DataError
        A seed's trained and init σ are not the same filters in the same order.
    """
    trained, init = [], []
    ds = select(ds, time_channel=False, **selection)
    for seed in np.unique(ds["seed"].values.astype(str)):
        t = select(ds, state="trained", seed=seed)
        i = select(ds, state="init", seed=seed)
        if i.sizes["filter"] == 0:
            continue
        for coord in ("layer", "out_channel", "in_channel", "time"):
            if not np.array_equal(t[coord].values, i[coord].values, equal_nan=coord == "time"):
                raise DataError(f"seed {seed}: trained and init sigma are not aligned on {coord!r}")
        trained.append(t)
        init.append(i)
    if not trained:
        return None
    return xr.concat(trained, dim="filter"), xr.concat(init, dim="filter")


def paired_shift(ds, **selection):
    """Each filter's change under training, Δ log2 σ = log2 σ_trained − log2 σ_init (octaves).

    Why paired: initial σ are drawn at random (log2 σ ~ N(0, 2/3)), so a trend of the trained σ alone (with
    depth, say) mixes what training did with how the draw fell; the change of each filter from its own start
    holds only what training did.

    Parameters
    ----------
    ds : xarray.Dataset
        Stacked σ with ``state`` and ``seed``, as for :func:`paired_states`.
    **selection
        ``coord=value`` filters, as for :func:`paired_states`.

    Returns
    -------
    xarray.Dataset or None
        The trained filters' coordinates with one variable ``delta_log2_sigma`` (float64); None when no seed has
        an init control.

    Examples
    --------
    >>> import xarray as xr
    >>> coords = {"state": ("filter", ["trained", "init"] * 2), "seed": ("filter", ["1"] * 4),
    ...           "layer": ("filter", ["a", "a", "b", "b"]), "out_channel": ("filter", [0] * 4),
    ...           "in_channel": ("filter", [0] * 4), "time": ("filter", [np.nan] * 4)}
    >>> ds = xr.Dataset({"log2_sigma": ("filter", [0.5, 0.25, -1.0, 0.0])}, coords=coords)
    >>> paired_shift(ds)["delta_log2_sigma"].values.tolist()
    [0.25, -1.0]
    """
    pair = paired_states(ds, **selection)
    if pair is None:
        return None
    trained, init = pair
    delta = trained["log2_sigma"].values.astype(float) - init["log2_sigma"].values.astype(float)
    out = xr.Dataset({"delta_log2_sigma": ("filter", delta)}, coords=trained.coords, attrs=dict(trained.attrs))
    out["delta_log2_sigma"].attrs["units"] = "octaves"
    return out
