"""The structured receptive field (SRF) convolution (paper Eq. 1).

``W[out, in] = sum_f alpha[out, in, f] * B_f(sigma)`` where ``B`` is the Gaussian
N-jet basis of :mod:`dcnbio.filters`.  One layer class serves every variant; what
differs is the σ parametrization (:mod:`dcnbio.layers.scales`) and the α
parametrization.

Formulations
------------
All compute the same function (within floating-point rounding); they differ in cost.

``dense``
    Build ``W`` and call ``conv2d`` with it (:func:`dcnbio.layers.conv.conv2d`: on CPU with few channels the
    input gradient is computed as a forward convolution, which oneDNN runs faster).  Cost grows with the
    kernel area, i.e. about σ².
``spectral``
    Build ``W``, then correlate in the frequency domain: ``rfft2`` of the input and of the
    (flipped, zero-padded) filters, one complex matrix product over input channels per
    frequency, ``irfft2``.  The cost does not depend on the kernel size as long as the padded
    transform length (``H + padding`` rounded up to a 2·3·5-smooth length) does not change;
    works for every σ parametrization, σ_ji included.  Stride > 1 is computed at stride 1
    and subsampled (correct, not economical).
``separable``
    Basis first (paper Eq. 8): filter each input channel with the separable 1-D
    Gaussian derivatives (grouped depthwise ``conv2d`` passes along y and x), then mix the ``F``
    responses with a 1×1 convolution by α.  Fewest multiply-adds, but the depthwise passes are
    memory-bound on CPU.  Needs one σ for all channel pairs (not σ_ji).
``reference``
    The straightforward formulation of :mod:`dcnbio.layers.reference` (filters rebuilt at every
    call, the time channel of an ODE block concatenated as an input channel, no cache): the
    benchmark baseline and test oracle.
``auto``
    Pick ``spectral`` or ``dense`` per call from the kernel radius, channel counts and map size by the
    rule in :meth:`SRFConv2d.choose_formulation` (set from measurements, ``benchmarks/RESULTS.md``).

Two optimisations apply to every formulation except ``reference``:

* **Time channel.**  Inside ODE blocks the convolutions see ``h ⊕ t`` (a constant channel
  filled with ``t``).  Called with ``time_channel=True`` the layer computes
  ``conv(h, W[:, :C]) + t · conv(1, W[:, C:])`` instead: the second term does not depend on the
  batch and is computed on one image.
* **Filter cache.**  Inside :func:`filter_cache` (every :meth:`ODEBlock.solve
  <dcnbio.layers.ode.ODEBlock.solve>` opens one) a layer whose σ and α do not depend on ``t``
  builds its filters (and their transforms) once and reuses them for every function
  evaluation of the solve.  The cache lives only as long as the context, so it can never
  outlive a parameter update.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import filters
from ..errors import ConfigError
from .conv import conv2d
from .reference import reference_conv
from .scales import create_alpha, create_scale

FORMULATIONS = ("auto", "dense", "separable", "spectral", "reference")


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
    formulation : ``"auto"``, ``"dense"``, ``"spectral"``, ``"separable"`` or ``"reference"``
        How the convolution is computed (module docstring); never changes the function.

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
        if formulation not in FORMULATIONS:
            raise ConfigError(f"unknown SRF formulation {formulation!r}; choose one of {FORMULATIONS}")
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
        if formulation == "separable" and self.scale.per_pair:
            raise ConfigError("the separable formulation needs one σ per layer, not per channel pair")
        self.formulation = formulation
        self.filter_builds = 0
        self._filter_cache = None  # a dict while a filter_cache() context is open

    @property
    def depends_on_t(self):
        return self.scale.depends_on_t or self.alpha.depends_on_t

    def sigma(self, t=None):
        """σ in pixels of this layer's input: shape ``()`` or ``(out, in)`` for σ_ji."""
        sigma = self.scale(t)
        if self.sigma_range is not None:
            sigma = sigma.clamp(*self.sigma_range)
        return sigma

    def radius(self, sigma):
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

    def _pad(self, r):
        if self.padding == "same":
            return r
        if self.padding == "valid":
            return 0
        return int(self.padding)

    def choose_formulation(self, radius, in_channels, size=None):
        """The formulation a call uses: the fixed one, or for ``auto`` the faster one by measurement.

        Parameters
        ----------
        radius : int
            Kernel radius of the call.
        in_channels : int
            Input channels of the convolution (time channel included).
        size : (int, int), optional
            Input map size ``(H, W)``; without it ``auto`` assumes a large map.

        ``auto`` never picks ``separable`` (its depthwise passes measured 3-10x slower than ``dense``
        on CPU) and picks ``spectral`` for stride 1 with radius ≥ 7, or radius ≥ 5 on maps of 26 pixels
        or more, or on maps of 13 pixels or more with at least 32 input channels; ``dense`` otherwise.

        Returns
        -------
        str
            ``"dense"``, ``"spectral"``, ``"separable"`` or ``"reference"``.
        """
        if self.formulation != "auto":
            return self.formulation
        if self.stride != 1:
            return "dense"
        h, w = (64, 64) if size is None else size
        # set from benchmarks/srf_layer.py --grid on two 2-core machines (benchmarks/RESULTS.md): oneDNN's direct
        # conv wins up to 9x9 kernels and at 11x11 on 6x6 maps; at 15x15 it falls off a cliff (7-15x slower than
        # 11x11), while the transform's cost barely moves with the kernel.  At 11x11 on 13x13 maps the transform
        # lost with 9 and 17 input channels on an Intel Xeon (1.75x, 1.40x forward + backward) and tied from 33 on
        m = min(h, w)
        if radius >= 7 or (radius >= 5 and (m >= 26 or (m >= 13 and in_channels >= 32))):
            return "spectral"
        return "dense"

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
        """
        if self.formulation == "reference":
            if time_channel:
                x = torch.cat([x, torch.ones_like(x[:, :1]) * t], dim=1)
            return reference_conv(self, x, t)
        cin = x.shape[1] + int(time_channel)
        size = tuple(x.shape[-2:])
        cached = None
        key = None
        if self._filter_cache is not None and not self.depends_on_t:
            key = (x.dtype, x.device, size, time_channel)
            cached = self._filter_cache.get(key)
            if cached is not None and torch.is_grad_enabled() and not cached["graph"]:
                cached = None  # built without autograd (a no-grad forward solve): rebuild once with it
        if cached is None:
            sigma = self.sigma(t)
            r = self.radius(sigma)
            form = self.choose_formulation(r, cin, size)
            if form == "separable":
                if time_channel:
                    x = torch.cat([x, torch.ones_like(x[:, :1]) * t], dim=1)
                return self._separable(x, sigma, r, t)
            cached = self._prepare(form, sigma, r, t, x, time_channel)
            if key is not None:
                self._filter_cache[key] = cached
        if cached["form"] == "spectral":
            out = self._spectral(x, cached)
        else:
            out = conv2d(x, cached["w"], stride=self.stride, padding=cached["pad"])
        if time_channel:
            out = out + t * cached["tmap"]
        return out

    def _prepare(self, form, sigma, r, t, x, time_channel):
        """The filters of one call, in the form ``form`` consumes (what the filter cache stores)."""
        self.filter_builds += 1
        w = self._dense_weight(sigma, r, t, x.dtype)
        p = self._pad(r)
        prep = {"form": form, "pad": p, "graph": torch.is_grad_enabled()}
        if time_channel:  # conv of the constant channel: one image, batch-independent
            ones = x.new_ones((1, 1) + tuple(x.shape[-2:]))
            prep["tmap"] = F.conv2d(ones, w[:, -1:], stride=self.stride, padding=p)
            w = w[:, :-1]
        if form == "spectral":
            prep.update(_fft_filters(w, p, x.shape[-2:]))
        else:
            prep["w"] = w.contiguous()
        return prep

    def _spectral(self, x, prep):
        b, _, h, w = x.shape
        nh, nw = prep["n"]
        ho, wo = prep["out"]
        # zero-pad explicitly: a contiguous padded input transforms faster than rfft2(x, s=...)
        xf = torch.fft.rfft2(F.pad(x, (0, nw - w, 0, nh - h)))  # (B, C, nh, nw // 2 + 1) complex
        # one real matrix product per frequency (complex numbers as (re, im) pairs: autograd through a
        # complex bmm resolves conjugates matrix by matrix, which measured slower than the product itself)
        xr = torch.view_as_real(xf).permute(2, 3, 0, 1, 4).reshape(-1, b, 2 * x.shape[1])  # (F, B, 2C)
        yr = torch.bmm(xr, prep["wf"])  # (F, B, 2O)
        yr = yr.view(nh, nw // 2 + 1, b, -1, 2).permute(2, 3, 0, 1, 4).contiguous()
        y = torch.fft.irfft2(torch.view_as_complex(yr), s=(nh, nw))
        return y[..., :ho:self.stride, :wo:self.stride]

    def _separable(self, x, sigma, r, t):
        b, c, h, w = x.shape
        n1 = self.order + 1
        g = filters.gaussian_derivatives_1d(sigma, self.order, r).to(x.dtype)  # (N+1, K)
        p = self._pad(r)
        k = g.shape[-1]
        # x passes: channel c*n1 + nx holds the nx-th derivative along x
        wx = g.reshape(n1, 1, 1, k).repeat(c, 1, 1, 1)
        hx = F.conv2d(x, wx, stride=(1, self.stride), padding=(0, p), groups=c)
        # y passes on each x-derivative: channel (c*n1 + nx)*n1 + ny
        wy = g.reshape(n1, 1, k, 1).repeat(c * n1, 1, 1, 1)
        hxy = F.conv2d(hx, wy, stride=(self.stride, 1), padding=(p, 0), groups=c * n1)
        hxy = hxy.view(b, c, n1, n1, hxy.shape[-2], hxy.shape[-1])
        idx_x = torch.tensor([nx for nx, _ in filters.basis_orders(self.order)], device=x.device)
        idx_y = torch.tensor([ny for _, ny in filters.basis_orders(self.order)], device=x.device)
        responses = hxy[:, :, idx_x, idx_y]  # (B, C, F, H', W')
        alpha = self.alpha(t).to(x.dtype)  # (out, in, F)
        mix = alpha.reshape(self.out_channels, c * self.num_basis, 1, 1)
        return F.conv2d(responses.reshape(b, c * self.num_basis, *responses.shape[-2:]), mix)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, order={self.order}, scale={self.scale_name!r}, "
                f"alpha={self.alpha_name!r}, stride={self.stride}, padding={self.padding!r}, "
                f"radius={self.fixed_radius}, sigma_range={self.sigma_range}, formulation={self.formulation!r}")


def fft_length(n):
    """Smallest ``m >= n`` whose prime factors are 2, 3 and 5 (fast transform lengths)."""
    m = max(1, int(n))
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _fft_filters(w, p, size):
    """Transform of the filter bank for a stride-1 correlation with zero padding ``p``.

    A correlation ``y[i] = sum_k x[i + k - p] w[k]`` equals a circular convolution of length
    ``n`` of ``x`` (zero-filled beyond its end) with ``w`` flipped and rolled so that ``w[k]``
    sits at index ``(p - k) mod n``, provided ``n >= H + p`` (no tap wraps onto a sample) and
    ``n`` covers the kernel and the stride-1 output.

    Returns ``{"wf": (F, 2C, 2O) real, "n": (nh, nw), "out": (Ho, Wo)}`` with ``F = nh * (nw // 2 + 1)``
    frequencies, the complex weights as the real matrix of (re, im) pairs, and ``(Ho, Wo)`` the stride-1
    output size.
    """
    k = w.shape[-1]
    h, wd = size
    ho, wo = h + 2 * p - k + 1, wd + 2 * p - k + 1
    if ho < 1 or wo < 1:
        raise ConfigError(f"input {h}x{wd} is smaller than the {k}x{k} kernel with padding {p}")
    nh, nw = fft_length(max(h + p, ho, k)), fft_length(max(wd + p, wo, k))
    wb = torch.flip(w, (-2, -1))
    wb = F.pad(wb, (0, nw - k, 0, nh - k))
    wb = torch.roll(wb, shifts=(p - k + 1, p - k + 1), dims=(-2, -1))
    wf = torch.fft.rfft2(wb).flatten(2).permute(2, 1, 0)  # (F, C, O) complex
    # the complex product y = Σ_c x_c w_c on (re, im) pairs: rows (c, re/im of x), columns (o, re/im of y)
    wr, wi = wf.real, wf.imag
    real = torch.stack([torch.stack([wr, wi], -1), torch.stack([-wi, wr], -1)], 2)  # (F, C, 2, O, 2)
    return {"wf": real.reshape(wf.shape[0], 2 * wf.shape[1], 2 * wf.shape[2]), "n": (nh, nw), "out": (ho, wo)}


class FilterCache:
    """Reuse each SRF layer's filters across calls while the cache is open (``with cache: ...``).

    Only layers whose σ and α do not depend on ``t`` cache (and not the ``reference`` or ``separable``
    formulations).  Entries are keyed on dtype, device, map size and the time-channel mode.  An entry built
    with autograd enabled serves later calls in either mode; one built without autograd is rebuilt (once)
    by the first call that needs gradients.  The cache can be opened again after it was closed (an ODE
    block re-opens it around each evaluation of the adjoint's backward solve, :meth:`bind`); nested opens
    share the outermost store.  Never change parameters while a cache built from them is still in use:
    an :class:`~dcnbio.layers.ode.ODEBlock` creates a new cache for every solve.
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
