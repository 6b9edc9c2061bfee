"""Selecting and comparing the σ of a sigma dataset (:func:`dcnbio.extract.sigmas.extract_sigmas`,
:func:`~dcnbio.extract.sigmas.stack_sigmas`): xarray in, arrays or xarray out.

The σ_ji of the constant t-channel are left out unless asked for (``time_channel=True``): see
:mod:`dcnbio.extract.sigmas`.
"""
import numpy as np
import xarray as xr

from ..errors import ConfigError

__all__ = ["filter_mask", "select", "sigma_shift", "sigma_values"]


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
