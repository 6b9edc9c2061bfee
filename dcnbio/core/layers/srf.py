"""The structured receptive field (SRF) convolution (paper Eq. 1).

``W[out, in] = sum_f alpha[out, in, f] * B_f(sigma)`` where ``B`` is the Gaussian
N-jet basis of :mod:`dcnbio.core.filters`.  One layer class serves every variant; what
differs is the σ parametrization (:mod:`dcnbio.core.layers.scales`) and the α
parametrization.

Formulations
------------
How the convolution is computed is an entry of the table :data:`FORMULATIONS`; every entry computes the same
function (within floating-point rounding) and they differ only in cost.  The core holds two:

``dense``
    Build ``W`` and call ``torch.nn.functional.conv2d`` with it.  Cost grows with the kernel area (about σ²).
``reference``
    The straightforward formulation of :mod:`dcnbio.core.layers.reference` (filters rebuilt at every
    call, the time channel of an ODE block concatenated as an input channel, no cache): the
    benchmark baseline and test oracle.

Faster entries are *registered* by the opt-in package :mod:`dcnbio.fast` (``import dcnbio.fast``), never
imported from here: ``spectral`` and ``separable`` (the convolution in the frequency domain, or as 1-D passes
with the basis first, paper Eq. 8), ``auto`` (a :class:`Chooser` that picks one of them per call) and a faster
``dense`` (the same convolution with a cheaper CPU backward).  :func:`register_formulation` is the seam.

Two optimisations are part of the layer and apply to every entry except ``reference``:

* **Time channel.**  Inside ODE blocks the convolutions see ``h ⊕ t`` (a constant channel
  filled with ``t``).  Called with ``time_channel=True`` the layer computes
  ``conv(h, W[:, :C]) + t · conv(1, W[:, C:])`` instead: the second term does not depend on the
  batch and is computed on one image.
* **Filter cache.**  Inside :func:`filter_cache` (every :meth:`ODEBlock.solve
  <dcnbio.core.layers.ode.ODEBlock.solve>` opens one) a layer whose σ and α do not depend on ``t``
  builds its filters (in the form its formulation consumes) once and reuses them for every function
  evaluation of the solve.  The cache lives only as long as the context, so it can never
  outlive a parameter update.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .. import filters
from ...errors import ConfigError
from .reference import reference_conv
from .scales import create_alpha, create_scale


class Formulation:
    """One exact way of computing an SRF layer's convolution: an entry of :data:`FORMULATIONS`.

    :meth:`prepare` turns the dense filter bank of a call into what :meth:`convolve` consumes (what the filter
    cache stores); :meth:`convolve` applies it.  This base class is the ``dense`` formulation.
    """

    #: whether the formulation serves σ_ji layers (one σ per channel pair)
    per_pair = True

    def prepare(self, layer, w, sigma, r, t, x):
        """What :meth:`convolve` needs, as a dict.

        Parameters
        ----------
        layer : SRFConv2d
        w : Tensor ``(out, in, 2r+1, 2r+1)``
            The dense filter bank of the call (without the time channel's column, if any).
        sigma : Tensor
            σ of the call, ``()`` or ``(out, in)`` (the time channel's column included).
        r : int
            Kernel radius.
        t : float or Tensor or None
            Depth of the call.
        x : Tensor ``(B, C, H, W)``
            The input (for its shape, dtype and device).
        """
        return {"w": w.contiguous()}

    def convolve(self, layer, x, prep):
        """The convolution of ``x`` ``(B, C, H, W)`` with the prepared filters → ``(B, out, H', W')``."""
        return F.conv2d(x, prep["w"], stride=layer.stride, padding=prep["pad"])


class Chooser:
    """A table entry that computes nothing itself: it names, per call, the formulation that does."""

    per_pair = True

    def choose(self, layer, sigma, r, t, x, time_channel):
        """The name of the :data:`FORMULATIONS` entry for this call (arguments as :meth:`Formulation.prepare`)."""
        raise NotImplementedError


class _Reference:
    """Marker of the ``reference`` entry: :meth:`SRFConv2d.forward` calls :func:`reference_conv` for it."""

    per_pair = True


#: The formulations by name.  :mod:`dcnbio.fast` adds ``spectral``, ``separable`` and ``auto`` and replaces
#: ``dense`` by one with a faster CPU backward (:func:`register_formulation`).
FORMULATIONS = {"dense": Formulation(), "reference": _Reference()}


def register_formulation(name, entry):
    """Add (or replace) the formulation ``name``: a :class:`Formulation` or a :class:`Chooser`.

    Replacing an entry is allowed (the faster ``dense`` of :mod:`dcnbio.fast`) because every entry of a name
    must compute the same function; ``reference`` is the oracle and cannot be replaced.
    """
    if name == "reference":
        raise ConfigError("the reference formulation is the oracle of the others and cannot be replaced")
    if not isinstance(entry, (Formulation, Chooser)):
        raise ConfigError(f"a formulation must be a Formulation or a Chooser, got {type(entry).__name__}")
    FORMULATIONS[name] = entry


def check_formulation(name):
    """``name`` if it is in :data:`FORMULATIONS`; otherwise a :class:`~dcnbio.errors.ConfigError` that says
    where the faster ones come from."""
    if name not in FORMULATIONS:
        raise ConfigError(f"unknown SRF formulation {name!r}; choose one of {', '.join(sorted(FORMULATIONS))} "
                          "(`import dcnbio.fast` registers auto, spectral and separable)")
    return name


class SRFConv2d(nn.Module):
    """Convolution whose filters are linear combinations of Gaussian derivatives.

    Parameters
    ----------
    in_channels, out_channels : int
    order : int
        Highest derivative order ``N`` of the basis (2 in the paper: F = 6 functions).
    scale : str
        σ parametrization: ``"shared"``, ``"per-channel"`` (σ_ji), ``"linear-t"``, ``"quadratic-t"``.
    alpha : str
        α parametrization: ``"static"`` or ``"linear-t"``.
    stride : int
    padding : ``"same"``, ``"valid"`` or int
        ``"same"`` pads by the kernel radius (output size ``ceil(H / stride)``).
    radius : int, optional
        Fixed kernel radius.  Default: ``ceil(2σ + 0.5)`` from the current σ
        (for ``per-channel`` scales the default is 3, a 7×7 kernel, as in the paper).
    sigma_range : (float, float), optional
        Clamp σ into this range in the forward pass (the paper's Discussion
        recommends bounding σ for stability).  Gradients vanish outside it.
    formulation : str
        How the convolution is computed: a name in :data:`FORMULATIONS` (``"dense"``, ``"reference"``; with
        :mod:`dcnbio.fast` also ``"auto"``, ``"spectral"``, ``"separable"``); never changes the function.

    Attributes
    ----------
    filter_builds : int
        How many times the layer has built its filter bank (diagnostics of the filter cache).

    Shapes: input ``(B, in, H, W)`` → output ``(B, out, H', W')``.  No bias.
    """

    #: TimeConcat may call ``layer(h, t, time_channel=True)`` instead of concatenating the time channel
    accepts_time_channel = True

    def __init__(self, in_channels, out_channels, *, order=2, scale="shared", alpha="static",
                 stride=1, padding="same", radius=None, sigma_range=None, formulation="dense"):
        super().__init__()
        check_formulation(formulation)
        if isinstance(padding, str) and padding not in ("same", "valid"):
            raise ConfigError(f"padding must be 'same', 'valid' or an int, got {padding!r}")
        if sigma_range is not None:
            lo, hi = sigma_range
            if not 0 < lo < hi:
                raise ConfigError(f"sigma_range must satisfy 0 < low < high, got {sigma_range!r}")
            sigma_range = (float(lo), float(hi))
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.order = filters._check_order(order)
        self.num_basis = filters.num_basis(order)
        self.stride = int(stride)
        self.padding = padding
        self.sigma_range = sigma_range
        self.scale_name = scale
        self.alpha_name = alpha
        self.scale = create_scale(scale, out_channels, in_channels)
        self.alpha = create_alpha(alpha, out_channels, in_channels, self.num_basis)
        if radius is None and self.scale.per_pair:
            radius = 3
        self.fixed_radius = radius
        if self.scale.per_pair and not FORMULATIONS[formulation].per_pair:
            raise ConfigError(f"the {formulation} formulation needs one σ per layer, not per channel pair")
        self.formulation = formulation
        self.filter_builds = 0
        self._filter_cache = None  # a dict while a filter_cache() context is open

    @property
    def depends_on_t(self):
        """Whether σ or α depends on the depth ``t`` (then filters are rebuilt at every evaluation)."""
        return self.scale.depends_on_t or self.alpha.depends_on_t

    def sigma(self, t=None):
        """σ in pixels of this layer's input: shape ``()`` or ``(out, in)`` for σ_ji."""
        sigma = self.scale(t)
        if self.sigma_range is not None:
            sigma = sigma.clamp(*self.sigma_range)
        return sigma

    def radius(self, sigma):
        """Kernel radius for ``sigma``: the fixed one, or ``ceil(2σ + 0.5)``
        (:func:`~dcnbio.core.filters.kernel_radius`)."""
        return self.fixed_radius if self.fixed_radius is not None else filters.kernel_radius(sigma)

    def weight(self, t=None):
        """The dense filter bank ``(out, in, 2r+1, 2r+1)`` at time ``t``."""
        sigma = self.sigma(t)
        return self._dense_weight(sigma, self.radius(sigma), t)

    def _dense_weight(self, sigma, r, t, dtype=None):
        alpha = self.alpha(t)
        basis = filters.gaussian_derivative_basis(sigma, self.order, r).to(dtype or alpha.dtype)
        eq = "oif,fyx->oiyx" if basis.dim() == 3 else "oif,oifyx->oiyx"
        return torch.einsum(eq, alpha.to(basis.dtype), basis)

    def pad(self, r):
        """Zero padding of a call with kernel radius ``r`` (pixels per side)."""
        if self.padding == "same":
            return r
        if self.padding == "valid":
            return 0
        return int(self.padding)

    def forward(self, x, t=None, *, time_channel=False):
        """Apply the layer.

        Parameters
        ----------
        x : Tensor ``(B, in, H, W)``, or ``(B, in - 1, H, W)`` with ``time_channel``
        t : float or Tensor, optional
            Depth, for σ(t) / α(t) parametrizations and the time channel.
        time_channel : bool
            The layer's input is ``x ⊕ t`` (a constant channel filled with ``t`` appended after
            the channels of ``x``), computed without building that channel.

        Returns
        -------
        Tensor ``(B, out, H', W')``
        """
        if self.formulation == "reference":
            if time_channel:
                x = torch.cat([x, torch.ones_like(x[:, :1]) * t], dim=1)
            return reference_conv(self, x, t)
        cached = None
        key = None
        if self._filter_cache is not None and not self.depends_on_t:
            key = (x.dtype, x.device, tuple(x.shape[-2:]), time_channel)
            cached = self._filter_cache.get(key)
            if cached is not None and torch.is_grad_enabled() and not cached["graph"]:
                cached = None  # built without autograd (a no-grad forward solve): rebuild once with it
        if cached is None:
            sigma = self.sigma(t)
            r = self.radius(sigma)
            form = self.formulation
            entry = FORMULATIONS[check_formulation(form)]
            if isinstance(entry, Chooser):
                form = entry.choose(self, sigma, r, t, x, time_channel)
            self.filter_builds += 1
            cached = self.prepare(form, sigma, r, t, x, time_channel)
            if key is not None:
                self._filter_cache[key] = cached
        out = self.convolve(x, cached)
        if time_channel:
            term = t * cached["tmap"]
            # a fresh output (not a view) takes the term in place: no convolution's backward reads its output
            out = out.add_(term) if out._base is None else out + term
        return out

    def convolve(self, x, prep):
        """The convolution of ``x`` with filters from :meth:`prepare` (without the time channel's term)."""
        return prep["entry"].convolve(self, x, prep)

    def prepare(self, form, sigma, r, t, x, time_channel):
        """The filters of one call in the form the formulation ``form`` consumes (what the filter cache stores).

        Returns a dict: the entry's own items, plus ``entry`` (the :class:`Formulation`), ``form`` (its name),
        ``pad``, ``graph`` (built with autograd) and, with ``time_channel``, ``tmap`` ``(1, out, H', W')``:
        the convolution of the constant channel, to be scaled by ``t``.
        """
        entry = FORMULATIONS[check_formulation(form)]
        if not isinstance(entry, Formulation):
            raise ConfigError(f"{form!r} chooses a formulation and cannot compute one")
        w = self._dense_weight(sigma, r, t, x.dtype)
        p = self.pad(r)
        prep = {"entry": entry, "form": form, "pad": p, "graph": torch.is_grad_enabled()}
        if time_channel:  # conv of the constant channel: one image, batch-independent
            ones = x.new_ones((1, 1) + tuple(x.shape[-2:]))
            prep["tmap"] = F.conv2d(ones, w[:, -1:], stride=self.stride, padding=p)
            w = w[:, :-1]
        prep.update(entry.prepare(self, w, sigma, r, t, x))
        return prep

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, order={self.order}, scale={self.scale_name!r}, "
                f"alpha={self.alpha_name!r}, stride={self.stride}, padding={self.padding!r}, "
                f"radius={self.fixed_radius}, sigma_range={self.sigma_range}, formulation={self.formulation!r}")


class FilterCache:
    """Reuse each SRF layer's filters across calls while the cache is open (``with cache: ...``).

    Only layers whose σ and α do not depend on ``t`` cache (and not the ``reference`` formulation).  Entries
    are keyed on dtype, device, map size and the time-channel mode.  An entry built with autograd enabled
    serves later calls in either mode; one built without autograd is rebuilt (once)
    by the first call that needs gradients.  The cache can be opened again after it was closed (an ODE
    block re-opens it around each evaluation of the adjoint's backward solve, :meth:`bind`); nested opens
    share the outermost store.  Never change parameters while a cache built from them is still in use:
    an :class:`~dcnbio.core.layers.ode.ODEBlock` creates a new cache for every solve.
    """

    def __init__(self, module):
        self._layers = [m for m in module.modules() if isinstance(m, SRFConv2d)]
        self._stores = {}
        self._opened = []

    def __enter__(self):
        opened = []
        for m in self._layers:
            if m._filter_cache is None:
                m._filter_cache = self._stores.setdefault(id(m), {})
                opened.append(m)
        self._opened.append(opened)
        return self

    def __exit__(self, *exc):
        for m in self._opened.pop():
            m._filter_cache = None
        return False

    def bind(self, func):
        """``func`` as a module whose every call runs with this cache open (``func`` itself without SRF layers).

        torchdiffeq's step callbacks (``callback_step`` …) of ``func`` stay visible on the wrapper.
        """
        return _CachedDynamics(func, self) if self._layers else func


class _CachedDynamics(nn.Module):
    def __init__(self, func, cache):
        super().__init__()
        self.func = func
        self._cache = cache
        for name in dir(func):  # torchdiffeq looks its callbacks up on the function it is given
            if name.startswith("callback_"):
                setattr(self, name, getattr(func, name))

    def forward(self, t, h):
        with self._cache:
            return self.func(t, h)


def filter_cache(module):
    """A :class:`FilterCache` over every SRF layer of ``module``; use as ``with filter_cache(module): ...``."""
    return FilterCache(module)
