"""Grating responses of model units: in-silico electrophysiology over blocks and ODE time.

A *unit* is one channel of one block, read out at the centre of its feature map (``readout="centre"``,
map index ``(H // 2, W // 2)``, the position whose receptive field is centred on the image; for even map
sizes half a pixel off the exact centre, which moves only the grating's phase there) or averaged over the
map (``"pooled"``, a position-invariant unit).  Its response to a stimulus is the block state ``h(t)`` at
each requested ODE time, taken from the solve itself (:func:`~dcnbio.extract.trajectories.iter_trajectories`:
dopri5's dense output at the grid, never values recorded inside the dynamics).  For ResNet baselines the
"times" are 0 (block input) and 1 (block output).

Output layout::

    <xarray.Dataset>
    Dimensions:  (readout, sf, orientation, phase, contrast, time, unit, ode_block)
    Coordinates:
      * readout      (readout)      "centre" and/or "pooled"
      * sf           (sf)           cycles/pixel
      * orientation  (orientation)  degrees (wave-vector direction, θ = 0: vertical bars)
      * phase        (phase)        degrees
      * contrast     (contrast)     Michelson contrast
      * time         (time)         ODE time
      * unit         (unit)         0 .. U-1 over the chosen blocks
        block        (unit)         "block1" …
        channel      (unit)         channel index in its block
        y, x         (unit)         map index of the centre readout
    Data variables:
        response     (readout, sf, orientation, phase, contrast, time, unit)  float32
        blank        (readout, time, unit)   response to the mean-luminance image
        nfe          (sf, orientation, phase, contrast, ode_block)  forward NFE of the stimulus's batch

The blank (the mean-luminance image of :func:`dcnbio.core.stimuli.blank_image`) is the baseline: a unit's
*evoked* response is ``response - blank`` (:func:`dcnbio.stats.physiology.evoked`).  As for
trajectories, NFE — and, within the solver's tolerance, the states — depend on which stimuli share a
batch; stimuli are batched in the order of the factorial grid, so a result is reproducible for the same
grid and ``batch_size``.
"""
import json

import numpy as np
import torch
import xarray as xr

from ..core import stimuli as _stimuli
from ..datasets import dataset_info
from ..errors import ConfigError
from ..core.layers.ode import ODEBlock
from ..provenance import provenance_attrs
from .trajectories import iter_trajectories

__all__ = ["READOUTS", "grating_responses"]

#: Readouts of :func:`grating_responses`.
READOUTS = ("centre", "pooled")


def _check_readout(readout):
    readout = [readout] if isinstance(readout, str) else list(readout)
    bad = [r for r in readout if r not in READOUTS]
    if bad or not readout or len(set(readout)) != len(readout):
        raise ConfigError(f"readout must be one or both of {', '.join(READOUTS)}, got {readout!r}")
    return readout


def _read_out(h, readout):
    """``h (B, time, C, Y, X)`` → ``(readout, B, time, C)`` float64 numpy."""
    out = []
    for r in readout:
        v = h[..., h.shape[-2] // 2, h.shape[-1] // 2] if r == "centre" else h.mean(axis=(-2, -1))
        out.append(np.asarray(v, dtype=np.float64))
    return np.stack(out)


def _solve(model, images, times, blocks, readout, batch_size):
    parts = {b: [] for b in blocks}
    nfe = {b: [] for b in blocks}
    shapes, time = {}, None
    for batch in iter_trajectories(model, images, times, blocks=blocks, batch_size=batch_size):
        for b, ds in batch.items():
            parts[b].append(_read_out(ds.h.values, readout))
            nfe[b].append(ds.nfe.values)
            shapes[b] = ds.h.shape[-3:]  # (channel, y, x)
            time = ds.time.values
    values = np.concatenate([np.concatenate(parts[b], axis=1) for b in blocks], axis=-1)  # (R, N, time, U)
    return values, {b: np.concatenate(nfe[b]) for b in blocks}, shapes, time


def grating_responses(model, dataset, times, *, sf, orientation, phase, contrast, blocks=None,
                      readout="centre", window="full", window_size=None, pixels_per_degree=None,
                      batch_size=64, info=None):
    """Responses of every channel of the chosen blocks to a factorial set of gratings.

    Parameters
    ----------
    model : :class:`~dcnbio.core.models.Network`
        Run in eval mode under ``torch.no_grad()`` (restored afterwards).
    dataset : str
        The dataset the model was trained on: the stimuli's size, channels, mean luminance and
        normalisation (:func:`dcnbio.core.stimuli.grating_set`).
    times : sequence of float
        Strictly increasing ODE times in ``[0, T]`` (ignored for ResBlocks: times 0 and 1).
    sf, orientation, phase, contrast : sequence of float
        The grid: cycles/pixel (``0 < f <= 0.5``), degrees, degrees, Michelson contrast in (0, 1].  For the
        modulation ratio F1/F0, give phases evenly spaced over 360°.
    blocks : sequence of str, optional
        Default all three.
    readout : ``"centre"``, ``"pooled"`` or both
    window, window_size
        Grating window (:func:`dcnbio.core.stimuli.grating`).
    pixels_per_degree : float, optional
        The assumed display geometry; when given, an ``sf_cpd`` coordinate (cycles/degree) is added.
    batch_size : int
        Stimuli per solve.
    info : dict, optional
        The checkpoint ``info`` (:func:`dcnbio.load_checkpoint`), recorded as provenance.

    Returns
    -------
    xarray.Dataset
        Layout in the module docstring; ``attrs`` hold the stimulus protocol, the solver settings and the
        provenance of the model.

    Raises
    ------
    ConfigError
        Bad stimulus parameters (spatial frequency above Nyquist, contrast outside (0, 1] …), times,
        blocks, readout or batch size; a model whose blocks mix ODE and residual blocks.
    DataError
        The dataset's channel count differs from the model's.

    Examples
    --------
    >>> from dcnbio import create_model
    >>> model = create_model("dcn-ode", in_channels=1, width=0.125)
    >>> ds = grating_responses(model, "fashion-mnist", [0.0, 1.0], sf=[0.1, 0.2], orientation=[0, 90],
    ...                        phase=[0, 180], contrast=[1.0], blocks=["block1"])
    >>> ds.response.dims, ds.response.shape
    (('readout', 'sf', 'orientation', 'phase', 'contrast', 'time', 'unit'), (1, 2, 2, 2, 1, 2, 4))
    """
    readout = _check_readout(readout)
    images, params = _stimuli.grating_set(dataset, sf=sf, orientation=orientation, phase=phase,
                                          contrast=contrast, window=window, window_size=window_size)
    blank = _stimuli.blank_image(dataset)
    stage_blocks = model.blocks()
    names = list(stage_blocks) if blocks is None else ([blocks] if isinstance(blocks, str) else list(blocks))
    kinds = {isinstance(stage_blocks[b], ODEBlock) for b in names if b in stage_blocks}
    if len(kinds) > 1:
        raise ConfigError(f"blocks {names} mix ODE and residual blocks, whose time axes differ; "
                          f"ask for them separately")
    values, nfe, shapes, time = _solve(model, images, times, names, readout, batch_size)
    names = list(nfe)  # execution order, as checked by iter_trajectories
    base, _, _, _ = _solve(model, blank, times, names, readout, 1)
    shape = params["shape"]
    n_units = values.shape[-1]
    block_of = np.concatenate([[b] * shapes[b][0] for b in names])
    channel = np.concatenate([np.arange(shapes[b][0]) for b in names])
    ys = np.concatenate([[shapes[b][1] // 2] * shapes[b][0] for b in names])
    xs = np.concatenate([[shapes[b][2] // 2] * shapes[b][0] for b in names])
    coords = {
        "readout": ("readout", np.array(readout)),
        "sf": ("sf", params["sf"], {"units": "cycles/pixel", "long_name": "spatial frequency"}),
        "orientation": ("orientation", params["orientation"],
                        {"units": "degree", "long_name": "wave-vector direction (0: vertical bars)"}),
        "phase": ("phase", params["phase"], {"units": "degree", "long_name": "phase at the image centre"}),
        "contrast": ("contrast", params["contrast"], {"long_name": "Michelson contrast"}),
        "time": ("time", np.asarray(time, dtype=np.float64), {"long_name": "ODE time (depth in the block)"}),
        "unit": ("unit", np.arange(n_units, dtype=np.int64)),
        "block": ("unit", block_of.astype(str)),
        "channel": ("unit", channel.astype(np.int64)),
        "y": ("unit", ys.astype(np.int64), {"long_name": "map row of the centre readout"}),
        "x": ("unit", xs.astype(np.int64), {"long_name": "map column of the centre readout"}),
        "ode_block": ("ode_block", np.array(names)),
    }
    if pixels_per_degree is not None:
        coords["sf_cpd"] = ("sf", _stimuli.cycles_per_degree(params["sf"], pixels_per_degree),
                            {"units": "cycles/degree", "long_name": "spatial frequency (assumed geometry)"})
    dims = ("readout", "sf", "orientation", "phase", "contrast", "time", "unit")
    response = values.reshape(len(readout), *shape, len(time), n_units)
    out_dtype = np.float64 if next(model.parameters()).dtype == torch.float64 else np.float32
    info_ds = dataset_info(dataset)
    first = stage_blocks[names[0]]
    attrs = dict(provenance_attrs(model, info))
    attrs.update({
        "dataset": dataset, "window": window,
        "window_size": float("nan") if window_size is None else float(window_size),
        "pixels_per_degree": float("nan") if pixels_per_degree is None else float(pixels_per_degree),
        "mean_luminance": json.dumps(list(info_ds.mean)),
        "normalisation": f"(L - mean) / std with mean {list(info_ds.mean)}, std {list(info_ds.std)}",
        "image_size": int(info_ds.size), "batch_size": int(batch_size),
        "block_type": "ode" if isinstance(first, ODEBlock) else "res",
        "readout_note": "centre: the map position (H // 2, W // 2); pooled: the mean over the map",
    })
    if isinstance(first, ODEBlock):
        s = first.solver_settings()
        attrs.update({"solver": s["solver"], "rtol": float(s["rtol"]), "atol": float(s["atol"]),
                      "T": float(s["T"])})
    return xr.Dataset(
        {"response": (dims, response.astype(out_dtype), {"long_name": "unit response h(t) (normalised units)"}),
         "blank": (("readout", "time", "unit"), base[:, 0].astype(out_dtype),
                   {"long_name": "response to the mean-luminance image"}),
         "nfe": (("sf", "orientation", "phase", "contrast", "ode_block"),
                 np.stack([nfe[b].reshape(shape) for b in names], axis=-1).astype(np.int64),
                 {"long_name": "forward NFE of the stimulus's batch solve (0 for residual blocks)"})},
        coords=coords, attrs=attrs)
