"""Meta-parametrized filters: σ(t) and α(t) across the depth of an ODE block (paper Tables 3–4).

The meta-parametrized DCNs make the SRF parameters functions of the ODE time ``t``:

====================  ==========================================
model                 parametrization (``t' = 0.5·clip(t, −0.5, 2.5)``)
====================  ==========================================
``dcn-sigma-t``       ``σ(t) = 2^(a t' + b)``
``dcn-sigma-t2``      ``σ(t) = 2^(a t'² + b t' + c)``
``dcn-sigma-alpha-t`` ``σ(t) = 2^(a t' + b)``, ``α(t) = a_α t' + b_α``
====================  ==========================================

:func:`compute_meta_curves` evaluates them on a grid over ``[0, T]``: σ(t) of each time-dependent SRF layer (from
:func:`~dcnbio.extract.sigmas.extract_sigmas`, one σ per layer) and, for α, the root mean square over the
``out × in`` filter pairs of each basis coefficient, ``α_rms(t)[f] = sqrt(mean_{o,i} α(t)[o, i, f]²)`` — the
magnitude with which the layer uses Gaussian derivative ``f`` at depth t (a static α gives a flat line).
"""
import numpy as np
import torch
import xarray as xr

from ..core import filters
from ..errors import ConfigError, DataError
from ..provenance import provenance_attrs
from ..core.models import srf_layers
from .sigmas import extract_sigmas

__all__ = ["META_MODELS", "compute_meta_curves"]

#: The registered meta-parametrized models (Table 3).
META_MODELS = ("dcn-sigma-t", "dcn-sigma-t2", "dcn-sigma-alpha-t")
N_TIMES = 41


def compute_meta_curves(model, times=None, *, info=None):
    """σ(t) and α(t) of every time-dependent SRF layer of a meta-parametrized model.

    Parameters
    ----------
    model : :class:`~dcnbio.core.models.Network`
        With at least one SRF layer whose σ or α depends on t.
    times : sequence of float, optional
        Default ``linspace(0, T, 41)``.
    info : dict, optional
        Checkpoint info (provenance).

    Returns
    -------
    xarray.Dataset
        Dimensions ``layer``, ``time``, ``basis``.  ``sigma (layer, time)`` in pixels of the layer's input map,
        ``log2_sigma (layer, time)``, ``alpha_rms (layer, time, basis)``; coordinates ``block``, ``conv``,
        ``depth``, ``scale`` and ``alpha`` (parametrization names) on ``layer``, and ``basis_order`` (derivative
        order i + j of basis function (i, j)) on ``basis``.

    Raises
    ------
    DataError
        The model has no time-dependent SRF layer (it is not meta-parametrized).
    """
    layers = {name: m for name, m in srf_layers(model).items() if m.depends_on_t}
    if not layers:
        raise DataError(f"{model.config.name!r} is not meta-parametrized (no SRF layer's σ or α depends on t); "
                        f"use one of {', '.join(META_MODELS)}")
    T = float(model.config.T)
    times = np.linspace(0.0, T, N_TIMES) if times is None else np.asarray(times, dtype=float)
    if times.ndim != 1 or times.size == 0 or not np.all(np.isfinite(times)):
        raise ConfigError("times must be a non-empty 1-D array of finite numbers")
    sig = extract_sigmas(model, times=times)
    names = list(layers)
    sigma = np.empty((len(names), times.size))
    for i, name in enumerate(names):
        part = sig.isel(filter=np.flatnonzero(sig["layer"].values == name))
        if np.all(np.isfinite(part["time"].values)):
            sigma[i] = part["sigma"].values[np.argsort(part["time"].values)]
        else:  # static σ with a time-dependent α: σ is one value (or σ_ji: the median is shown)
            sigma[i] = np.median(part["sigma"].values)
    orders = filters.basis_orders(layers[names[0]].order)
    if any(filters.basis_orders(m.order) != orders for m in layers.values()):
        raise DataError("the meta-parametrized layers use different derivative orders; cannot align α bases")
    alpha = np.empty((len(names), times.size, len(orders)))
    with torch.no_grad():
        for i, name in enumerate(names):
            for j, t in enumerate(times):
                a = layers[name].alpha(torch.tensor(float(t), dtype=torch.float64)).to(torch.float64)
                alpha[i, j] = a.pow(2).mean(dim=(0, 1)).sqrt().numpy()
    first = {name: sig.isel(filter=int(np.flatnonzero(sig["layer"].values == name)[0])) for name in names}
    ds = xr.Dataset(
        {"sigma": (("layer", "time"), sigma, {"units": "pixels of the layer's input map"}),
         "log2_sigma": (("layer", "time"), np.log2(sigma)),
         "alpha_rms": (("layer", "time", "basis"), alpha,
                       {"long_name": "RMS over (out, in) filter pairs of the basis coefficient alpha(t)"})},
        coords={"layer": names, "time": times, "basis": [f"({i},{j})" for i, j in orders],
                "basis_order": ("basis", [i + j for i, j in orders]),
                "block": ("layer", [str(first[n]["block"].values) for n in names]),
                "conv": ("layer", [str(first[n]["conv"].values) for n in names]),
                "depth": ("layer", [int(first[n]["depth"].values) for n in names]),
                "scale": ("layer", [layers[n].scale_name for n in names]),
                "alpha": ("layer", [layers[n].alpha_name for n in names])})
    ds["time"].attrs["long_name"] = "ODE time t"
    ds.attrs.update(provenance_attrs(model, info))
    return ds
