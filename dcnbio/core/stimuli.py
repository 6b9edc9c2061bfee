"""Sinusoidal gratings as model inputs, in the units physiologists use.

Pure tensor functions: no model, no disk.  A grating is a luminance image

.. math::  L(x, y) = L_0 \\,[1 + c \\cos(2\\pi f (x \\cos\\theta + y \\sin\\theta) + \\varphi)]

on a grid of pixels, then normalised like the training data, ``(L - mean) / std`` per channel.

Units and conventions
    * ``x, y`` in pixels, origin at the image centre ``((W - 1) / 2, (H - 1) / 2)``; ``x`` grows to the
      right (column index), ``y`` grows *upwards* (against the row index), so angles are counter-clockwise
      as on a screen seen by the observer.
    * ``sf`` (``f``) in **cycles per pixel**, ``0 < f <= 0.5`` (0.5 is the Nyquist frequency of the pixel
      grid: above it a grating aliases to a lower frequency and is refused).  Cycles per degree of visual
      angle are ``f * pixels_per_degree`` (:func:`cycles_per_degree`); a model has no retina, so the
      pixels-per-degree figure is the user's stated assumption, recorded with the results.
    * ``orientation`` (``θ``) in **degrees**, the direction of the wave vector (the direction across the
      bars), counter-clockwise from the ``x`` axis, taken modulo 180: ``θ = 0`` has vertical bars,
      ``θ = 90`` horizontal bars.
    * ``phase`` (``φ``) in degrees: the phase of the cosine at the image centre (``φ = 0`` puts a bright
      bar's centre there).
    * ``contrast`` ``c``: **Michelson contrast** ``(L_max - L_min) / (L_max + L_min)``, ``0 < c <= 1``.
    * ``L_0``: the mean luminance, by default the training set's per-channel mean pixel value (in [0, 1]),
      so that a grating changes the image's local contrast and not its mean.  Every channel is modulated by
      the same ``c`` (an achromatic grating on CIFAR-10).  ``L_0 (1 + c) <= 1`` is required: a brighter
      grating would not be a displayable image of the training distribution.

Windows
    ``window="full"`` fills the image.  ``"gaussian"`` multiplies the modulation by
    ``exp(-r^2 / (2 s^2))`` (``s = window_size`` pixels, a Gabor patch); ``"circle"`` keeps it where
    ``r <= window_size`` (a hard aperture).  Outside the window the image is the mean luminance ``L_0``.
"""
import math
import numbers

import numpy as np
import torch

from ..datasets import dataset_info
from ..errors import ConfigError

__all__ = ["WINDOWS", "blank_image", "check_grating_parameters", "cycles_per_degree", "grating",
           "grating_set", "luminance_to_input", "stimulus_grid"]

#: Window shapes of :func:`grating`.
WINDOWS = ("full", "gaussian", "circle")


def _values(name, values):
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be numbers, got {values!r}") from None
    if arr.size == 0:
        raise ConfigError(f"{name} is empty; give at least one value")
    if not np.isfinite(arr).all():
        raise ConfigError(f"{name} must be finite, got {arr.tolist()}")
    if len(np.unique(arr)) != arr.size:
        raise ConfigError(f"{name} lists a value twice: {arr.tolist()}")
    return arr


def check_grating_parameters(sf, orientation, phase, contrast, mean_luminance=None):
    """Validate grating parameters; return them as 1-D float64 arrays.

    Parameters
    ----------
    sf, orientation, phase, contrast : float or sequence of float
        Spatial frequency (cycles/pixel), orientation and phase (degrees), Michelson contrast.
    mean_luminance : sequence of float, optional
        Per-channel ``L_0`` in (0, 1); when given, ``L_0 (1 + max c) <= 1`` is checked.

    Returns
    -------
    tuple of ndarray
        ``(sf, orientation, phase, contrast)``.

    Raises
    ------
    ConfigError
        Spatial frequency ``<= 0`` or above the Nyquist frequency 0.5 cycles/pixel, contrast outside
        (0, 1], a repeated value, a grating brighter than white.

    >>> check_grating_parameters(0.6, 0, 0, 1)
    Traceback (most recent call last):
    ...
    dcnbio.errors.ConfigError: spatial frequency 0.6 cycles/pixel is above the Nyquist frequency 0.5 of the pixel
    grid (it would alias); give 0 < sf <= 0.5
    """
    sf = _values("sf", sf)
    orientation = _values("orientation", orientation)
    phase = _values("phase", phase)
    contrast = _values("contrast", contrast)
    if (sf <= 0).any():
        raise ConfigError(f"spatial frequency must be > 0 cycles/pixel, got {sf[sf <= 0][0]:g}")
    if (sf > 0.5).any():
        raise ConfigError(f"spatial frequency {sf[sf > 0.5][0]:g} cycles/pixel is above the Nyquist frequency "
                          f"0.5 of the pixel grid (it would alias); give 0 < sf <= 0.5")
    bad = (contrast <= 0) | (contrast > 1)
    if bad.any():
        raise ConfigError(f"Michelson contrast must lie in (0, 1], got {contrast[bad][0]:g}")
    if mean_luminance is not None:
        lum = np.asarray(mean_luminance, dtype=np.float64).reshape(-1)
        if not ((lum > 0) & (lum < 1)).all():
            raise ConfigError(f"mean luminance must lie in (0, 1) per channel, got {lum.tolist()}")
        if (lum * (1 + contrast.max()) > 1 + 1e-12).any():
            raise ConfigError(f"a grating of contrast {contrast.max():g} around mean luminance {lum.max():g} "
                              f"exceeds white (L0 (1 + c) > 1); lower the contrast or the mean luminance")
    return sf, orientation, phase, contrast


def _window(name, size, yy, xx):
    if name not in WINDOWS:
        raise ConfigError(f"unknown window {name!r}; choose one of {', '.join(WINDOWS)}")
    if name == "full":
        if size is not None:
            raise ConfigError("window_size is only meaningful for a 'gaussian' or 'circle' window")
        return None
    if isinstance(size, bool) or not isinstance(size, numbers.Real) or not size > 0 or not math.isfinite(size):
        raise ConfigError(f"a {name!r} window needs window_size > 0 (pixels), got {size!r}")
    r2 = xx ** 2 + yy ** 2
    if name == "gaussian":
        return torch.exp(-r2 / (2.0 * float(size) ** 2))
    return (r2 <= float(size) ** 2).to(xx.dtype)


def _grid(size, dtype):
    if isinstance(size, numbers.Integral):
        size = (int(size), int(size))
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ConfigError(f"image size must be positive, got {(h, w)}")
    rows = torch.arange(h, dtype=dtype)
    cols = torch.arange(w, dtype=dtype)
    yy = ((h - 1) / 2.0 - rows)[:, None].expand(h, w)   # upwards
    xx = (cols - (w - 1) / 2.0)[None, :].expand(h, w)   # rightwards
    return yy, xx


def grating(size, sf, orientation, phase=0.0, contrast=1.0, *, mean_luminance=0.5, window="full",
            window_size=None, dtype=torch.float64):
    """Luminance image of one sinusoidal grating (module docstring for the units).

    Parameters
    ----------
    size : int or (int, int)
        Image height and width in pixels.
    sf : float
        Cycles per pixel, ``0 < sf <= 0.5``.
    orientation, phase : float
        Degrees.
    contrast : float
        Michelson contrast in (0, 1].
    mean_luminance : float
        ``L_0`` in (0, 1).
    window : ``"full"``, ``"gaussian"`` or ``"circle"``
    window_size : float, optional
        Gaussian standard deviation or aperture radius in pixels.
    dtype : torch.dtype

    Returns
    -------
    Tensor ``(H, W)``
        Luminance in [0, 1].

    >>> g = grating(29, 0.25, 0.0, contrast=0.5, mean_luminance=0.5)  # odd size: a pixel at the centre
    >>> round(float(g.max()), 6), round(float(g.min()), 6), round(float(g[14, 14]), 6)
    (0.75, 0.25, 0.75)
    """
    sf, orientation, phase, contrast = check_grating_parameters(sf, orientation, phase, contrast,
                                                                [mean_luminance])
    yy, xx = _grid(size, dtype)
    env = _window(window, window_size, yy, xx)
    m = _modulation(yy, xx, env, sf[:1], orientation[:1], phase[:1], contrast[:1])[0]
    return float(mean_luminance) * (1.0 + m)


def _modulation(yy, xx, env, sf, orientation, phase, contrast):
    """``c cos(2π f (x cosθ + y sinθ) + φ) · envelope`` for parameter arrays ``(N,)`` → ``(N, H, W)``."""
    def col(v):
        return torch.as_tensor(np.asarray(v, dtype=np.float64), dtype=yy.dtype)[:, None, None]
    theta = torch.deg2rad(col(orientation))
    wave = torch.cos(2 * math.pi * col(sf) * (xx * torch.cos(theta) + yy * torch.sin(theta))
                     + torch.deg2rad(col(phase)))
    m = col(contrast) * wave
    return m if env is None else m * env


def luminance_to_input(luminance, mean, std):
    """Normalise luminance images ``(..., C, H, W)`` like the training data: ``(L - mean_c) / std_c``."""
    mean = torch.as_tensor(mean, dtype=luminance.dtype).reshape(-1, 1, 1)
    std = torch.as_tensor(std, dtype=luminance.dtype).reshape(-1, 1, 1)
    return (luminance - mean) / std


def blank_image(dataset, *, size=None, dtype=torch.float32):
    """The mean-luminance image ``(1, C, H, W)``, normalised: the baseline every grating is compared with."""
    info = dataset_info(dataset)
    size = info.size if size is None else size
    yy, _ = _grid(size, torch.float64)
    lum = torch.tensor(info.mean, dtype=torch.float64).reshape(-1, 1, 1).expand(info.channels, *yy.shape)
    return luminance_to_input(lum, info.mean, info.std)[None].to(dtype)


def grating_set(dataset, *, sf, orientation, phase, contrast, window="full", window_size=None, size=None,
                mean_luminance=None, dtype=torch.float32):
    """Every combination of the given parameters as a batch of normalised model inputs.

    Parameters
    ----------
    dataset : str
        ``"fashion-mnist"`` or ``"cifar10"``: gives the channels, the default size (28 or 32), the mean
        luminance ``L_0`` (the per-channel training mean) and the normalisation.
    sf, orientation, phase, contrast : sequence of float
        Cycles/pixel, degrees, degrees, Michelson contrast; the batch is their Cartesian product in this
        order (the last varies fastest).
    window, window_size
        As in :func:`grating`.
    size : int or (int, int), optional
        Image size (default the dataset's).
    mean_luminance : sequence of float, optional
        Per-channel ``L_0`` (default the dataset's mean).
    dtype : torch.dtype

    Returns
    -------
    images : Tensor ``(N, C, H, W)``
        ``N = len(sf) * len(orientation) * len(phase) * len(contrast)``, normalised.
    params : dict of str → ndarray
        ``"sf"``, ``"orientation"``, ``"phase"``, ``"contrast"``: the grid values (1-D, as validated), and
        ``"shape"``: the factorial shape to reshape ``N`` into.
    """
    info = dataset_info(dataset)
    lum0 = info.mean if mean_luminance is None else tuple(float(v) for v in np.atleast_1d(mean_luminance))
    if len(lum0) != info.channels:
        raise ConfigError(f"mean_luminance needs {info.channels} value(s) for {dataset}, got {len(lum0)}")
    grid = check_grating_parameters(sf, orientation, phase, contrast, lum0)
    size = info.size if size is None else size
    yy, xx = _grid(size, torch.float64)
    env = _window(window, window_size, yy, xx)
    f, o, p, c = (a.reshape(-1) for a in np.meshgrid(*grid, indexing="ij"))  # the last varies fastest
    modulation = _modulation(yy, xx, env, f, o, p, c)                           # (N, H, W)
    lum = torch.tensor(lum0, dtype=torch.float64).reshape(1, -1, 1, 1) * (1.0 + modulation[:, None])
    images = luminance_to_input(lum, info.mean, info.std).to(dtype)
    params = dict(zip(("sf", "orientation", "phase", "contrast"), grid))
    params["shape"] = tuple(len(v) for v in grid)
    return images, params


def cycles_per_degree(sf, pixels_per_degree):
    """Convert cycles/pixel to cycles/degree of visual angle, given the assumed pixels per degree.

    >>> cycles_per_degree(0.1, 20.0)
    2.0
    """
    if isinstance(pixels_per_degree, bool) or not isinstance(pixels_per_degree, numbers.Real) \
            or not pixels_per_degree > 0 or not math.isfinite(pixels_per_degree):
        raise ConfigError(f"pixels_per_degree must be a number > 0, got {pixels_per_degree!r}")
    return np.asarray(sf, dtype=np.float64) * float(pixels_per_degree) if np.ndim(sf) else \
        float(sf) * float(pixels_per_degree)


def stimulus_grid(n_sf=12, n_orientation=12, n_phase=8, contrasts=(0.0625, 0.125, 0.25, 0.5, 1.0),
                  sf_range=(0.02, 0.45)):
    """The factorial grating grid: SF log-spaced over ``sf_range`` (cycles/pixel), orientations evenly over
    180°, phases evenly over 360° (as F1/F0 and circular variance need).

    Returns
    -------
    dict with keys ``sf, orientation, phase, contrast`` (numpy arrays)
    """
    if min(n_sf, n_orientation, n_phase) < 3:
        raise ConfigError(f"the grid needs >= 3 spatial frequencies, orientations and phases, got "
                          f"{n_sf}, {n_orientation}, {n_phase}")
    grid = {"sf": np.geomspace(*sf_range, n_sf), "orientation": np.arange(n_orientation) * 180.0 / n_orientation,
            "phase": np.arange(n_phase) * 360.0 / n_phase, "contrast": np.asarray(sorted(contrasts), float)}
    check_grating_parameters(**grid)  # a bad value fails here, before any output exists
    return grid
