"""The structured receptive field (SRF) convolution (paper Eq. 1).

``W[out, in] = sum_f alpha[out, in, f] * B_f(sigma)`` where ``B`` is the Gaussian
N-jet basis of :mod:`dcnbio.core.filters`.  One layer class serves every variant; what
differs is the σ parametrization (:mod:`dcnbio.core.layers.scales`) and the α
parametrization.

Formulations
------------
All compute the same function (within floating-point rounding); they differ in cost.

``dense``
    Build ``W`` and call ``conv2d`` with it (:func:`dcnbio.core.layers.conv.conv2d`: on CPU with few channels the
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
    Basis first (paper Eq. 8), every pass a matrix product: correlate each input channel along x with the
    ``N + 1`` sampled 1-D Gaussian derivatives (one GEMM per order against a banded ``(W, W')`` matrix that
    holds the taps, the zero padding and the stride), mix channels and x-orders with α into
    ``O · (N + 1)`` maps (one batched product per x-order), then correlate along y with all y-orders at
    once (one batched product against a ``(H', (N+1)·H)`` matrix).  Its cost does not depend on the kernel
    size (the banded matrices are stored dense), only on the map size and channels, so it wins on small
    maps with large kernels; it does ``N + 1`` times the x passes and ``(N+1)²`` mixing products where
    the basis has ``(N+1)(N+2)/2`` functions (zero rows for ``n_x + n_y > N``).  Needs one σ for all
    channel pairs (not σ_ji).
``reference``
    The straightforward formulation of :mod:`dcnbio.core.layers.reference` (filters rebuilt at every
    call, the time channel of an ODE block concatenated as an input channel, no cache): the
    benchmark baseline and test oracle.
``auto``
    Pick ``dense``, ``spectral`` or ``separable`` per call from the kernel radius, channel counts and map size
    by the rule in :meth:`SRFConv2d.choose_formulation` (set from measurements, ``benchmarks/RESULTS.md``),
    or, with :mod:`tuning <dcnbio.core.layers.tuning>` enabled (CPU, stride 1), the one measured fastest on the
    call's shapes on this machine.

Two optimisations apply to every formulation except ``reference``:

* **Time channel.**  Inside ODE blocks the convolutions see ``h ⊕ t`` (a constant channel
  filled with ``t``).  Called with ``time_channel=True`` the layer computes
  ``conv(h, W[:, :C]) + t · conv(1, W[:, C:])`` instead: the second term does not depend on the
  batch and is computed on one image.
* **Filter cache.**  Inside :func:`filter_cache` (every :meth:`ODEBlock.solve
  <dcnbio.core.layers.ode.ODEBlock.solve>` opens one) a layer whose σ and α do not depend on ``t``
  builds its filters (and their transforms) once and reuses them for every function
  evaluation of the solve.  The cache lives only as long as the context, so it can never
  outlive a parameter update.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import filters
from ...errors import ConfigError
from . import tuning
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

    def choose_formulation(self, radius, in_channels, size=None, isa=None):
        """The formulation a call uses: the fixed one, or for ``auto`` the faster one by measurement.

        Parameters
        ----------
        radius : int
            Kernel radius of the call.
        in_channels : int
            Input channels of the convolution (time channel included).
        size : (int, int), optional
            Input map size ``(H, W)``; without it ``auto`` assumes a large map.
        isa : {"AVX512", "AVX2"}, optional
            Which measured rule ``auto`` follows; default: ATen's CPU capability
            (``torch.backends.cpu.get_cpu_capability()``), ``"AVX512"`` there and the ``"AVX2"`` rule
            everywhere else.  Both are CPU measurements: on a GPU ``auto`` follows the host's rule, no GPU
            having been measured yet.

        ``auto`` is ``dense`` for strides other than 1 and for radius ≤ 2, and at stride 1 follows one of two
        rules set from ``benchmarks/srf_layer.py --grid`` (forward + backward, ``C+1 → C``, batch 128;
        ``benchmarks/RESULTS.md``), because oneDNN's direct convolution scales differently with the kernel
        size on the two vector widths:

        * ``"AVX2"`` (also used where ATen reports another capability): the direct
          conv costs 2.5–3.5× more at 9×9 (radius 4) than at 7×7.  From radius 4, with one σ per layer
          ``separable`` on maps under 20 pixels or at radius ≥ 7 on maps up to 32, ``spectral`` otherwise, and
          for σ_ji ``spectral``; at radius 3 with at least 32 input channels on maps of at most 13 pixels,
          ``spectral`` from 10 pixels, below that ``separable`` (one σ per layer) or ``spectral`` (σ_ji, from
          64 input channels); ``dense`` otherwise.
        * ``"AVX512"`` (measured on two AVX-512 CPUs, which agreed on the spectral side): the
          direct conv grows smoothly up to 13×13 (radius 6) and falls off a cliff at 15×15.  Radius ≥ 7 as
          above; on maps of 26 pixels or more, ``spectral`` from 32 input channels at radius 3 and from 16 at
          radius 4–6; on maps of 13–25 pixels, from 32 input channels (16 at radius 6), ``separable`` (one σ
          per layer, radius ≥ 5) or ``spectral``; on smaller maps ``spectral`` from 128 input channels at radius
          3–4 and ``separable`` (one σ per layer) from 64 at radius 5–6; ``dense`` otherwise.

        σ_ji layers never use ``separable``.

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
        m = min(h, w)
        basis_first = not self.scale.per_pair
        if isa is None:
            isa = "AVX512" if torch.backends.cpu.get_cpu_capability() == "AVX512" else "AVX2"
        if isa not in ("AVX512", "AVX2"):
            raise ConfigError(f"unknown rule {isa!r} for the auto formulation; choose AVX512 or AVX2")
        if radius >= 7 or (isa == "AVX2" and radius >= 4 and basis_first):
            # the banded passes cost O(map size) per pixel: beyond the measured maps the transform is the safe pick
            if basis_first and (m < 20 or (radius >= 7 and m <= 32)):
                return "separable"
            return "spectral"
        if radius <= 2:
            return "dense"
        if isa == "AVX512":
            # AVX-512 grid (fwd+bwd / dense): 26 px: r3 C32 0.78, r4 C16 0.90, r5-6 C16 0.60-0.71, C8 0.97-1.38;
            # 13 px: C32 0.69-0.89, C64 0.43-0.65, r6 C16 0.72 (separable); 6 px: separable C128 0.58-0.92,
            # r5-6 C64 0.84-0.88, C32 1.21-1.43 and spectral 0.85-2.6 (σ_ji keeps dense there, except as below).
            if m >= 26:
                return "spectral" if in_channels >= (32 if radius == 3 else 16) else "dense"
            if m >= 13:
                if in_channels >= 32 or (radius == 6 and in_channels >= 16):
                    return "separable" if basis_first and radius >= 5 else "spectral"
                return "dense"
            if in_channels >= 128 and radius <= 4:
                # inside a training step (filters built once per solve; 128 @ 6 px, r = 3-4, width-1 block 3) the
                # transform measured 0.58-0.66 of dense and the separable passes 0.70-0.94; per call 0.94-0.95
                return "spectral"
            if basis_first and radius >= 5 and in_channels >= 64:
                return "separable"
            return "dense"
        # AVX2: at r = 3 with >= 33 input channels the transform wins on 13-px maps (0.51-0.57; on a second CPU
        # 0.75-0.96) and the separable passes on 6-px maps (0.60-0.91).  At 9x9 the separable passes cost
        # 0.26-0.53 of the direct conv on 6- and 13-px maps and the transform 0.35-0.42 on 26-px maps.
        if radius >= 4:  # σ_ji (one σ per layer took the branch above): the transform, 0.35-0.58 of dense
            return "spectral"
        if radius == 3 and in_channels >= 32 and m <= 13:
            if m >= 10:
                return "spectral"
            if basis_first:
                return "separable"
            if in_channels >= 64:
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
            if self.formulation == "auto" and tuning.enabled() and x.device.type == "cpu" and self.stride == 1:
                form = self._measured_formulation(form, sigma, r, t, x, time_channel)
            self.filter_builds += 1
            cached = self._prepare(form, sigma, r, t, x, time_channel)
            if key is not None:
                self._filter_cache[key] = cached
        out = self._convolve(x, cached)
        if time_channel:
            term = t * cached["tmap"]
            # a fresh output (not a view) takes the term in place: no convolution's backward reads its output
            out = out.add_(term) if out._base is None else out + term
        return out

    def _convolve(self, x, prep):
        """The convolution of ``x`` with the prepared filters (without the time channel's term)."""
        if prep["form"] == "spectral":
            return self._spectral(x, prep)
        if prep["form"] == "separable":
            return self._separable(x, prep)
        return conv2d(x, prep["w"], stride=self.stride, padding=prep["pad"])

    def _measured_formulation(self, rule, sigma, r, t, x, time_channel):
        """``auto`` with tuning enabled: the formulation measured fastest for this call's shapes.

        Each candidate (the rule's choice first, then dense, spectral and, with one σ per layer, separable) is
        timed on ``x`` for what one function evaluation costs once the filters are built: the convolution, and
        with gradients enabled its backward to the input and to the prepared filters (:mod:`.tuning`).
        """
        grad = torch.is_grad_enabled()
        key = ("srf", self.out_channels, x.shape[1] + int(time_channel), self.order, self.scale.per_pair, r,
               tuple(x.shape), x.dtype, time_channel, grad)
        forms = [rule] + [f for f in ("dense", "spectral", "separable")
                          if f != rule and not (f == "separable" and self.scale.per_pair)]
        xd = x.detach().requires_grad_(grad and x.requires_grad)  # a view: no copy of x

        def candidate(form):
            with torch.no_grad():
                prep = self._prepare(form, sigma.detach(), r, t, xd, time_channel)
            leaves = {k: v.detach().requires_grad_(grad) for k, v in prep.items()
                      if torch.is_tensor(v) and v.is_floating_point() and k != "tmap"}
            prep.update(leaves)
            inputs = list(leaves.values()) + ([xd] if xd.requires_grad else [])

            def run():
                out = self._convolve(xd, prep)
                if grad:
                    torch.autograd.grad(out, inputs, out)
            return run

        # the candidates' filters are built only when the key is measured, not on calls that find it decided
        return tuning.choose(key, lambda: {f: candidate(f) for f in forms})

    def _prepare(self, form, sigma, r, t, x, time_channel):
        """The filters of one call, in the form ``form`` consumes (what the filter cache stores)."""
        w = self._dense_weight(sigma, r, t, x.dtype)
        p = self._pad(r)
        prep = {"form": form, "pad": p, "graph": torch.is_grad_enabled()}
        if time_channel:  # conv of the constant channel: one image, batch-independent
            ones = x.new_ones((1, 1) + tuple(x.shape[-2:]))
            prep["tmap"] = F.conv2d(ones, w[:, -1:], stride=self.stride, padding=p)
            w = w[:, :-1]
        if form == "spectral":
            prep.update(_fft_filters(w, p, x.shape[-2:]))
        elif form == "separable":
            prep.update(self._band_filters(sigma, r, t, p, x, time_channel))
        else:
            prep["w"] = w.contiguous()
        return prep

    def _band_filters(self, sigma, r, t, p, x, time_channel):
        """What :meth:`_separable` consumes: the 1-D passes as banded matrices, α as mixing matrices.

        ``mx[n]``: ``(W, W')``, the correlation along x with the ``n``-th 1-D derivative (zero padding and the
        stride folded in); ``my``: ``(H', (N+1)·H)``, the y passes of all orders side by side; ``mix[n_x]``:
        ``(O·(N+1), C)``, row ``o·(N+1) + n_y`` holding ``α[o, :, f]`` of the basis function ``f = (n_x, n_y)``
        (zero rows where ``n_x + n_y > N``).  The time channel's α column is left to ``tmap``.
        """
        h, w = x.shape[-2:]
        c = x.shape[1]
        n1 = self.order + 1
        g = filters.gaussian_derivatives_1d(sigma, self.order, r).to(x.dtype)  # (N+1, 2r+1)
        mx = band_matrix(g, w, p, self.stride)  # (N+1, W', W)
        my = band_matrix(g, h, p, self.stride)  # (N+1, H', H)
        alpha = self.alpha(t).to(x.dtype)[:, :c]  # (O, C, F); the time channel (if any) is the last input
        mix = alpha.new_zeros(n1, self.out_channels, n1, c)
        for f, (nx, ny) in enumerate(filters.basis_orders(self.order)):
            mix[nx, :, ny, :] = alpha[:, :, f]
        return {"mx": mx.transpose(1, 2).contiguous(), "my": my.transpose(0, 1).reshape(my.shape[1], -1),
                "mix": mix.view(n1, self.out_channels * n1, c), "out": (my.shape[1], mx.shape[1])}

    def _spectral(self, x, prep):
        return _SpectralCorrelation.apply(x, prep["wf"], prep["n"], prep["out"], self.stride)

    def _separable(self, x, prep):
        b, c, h, w = x.shape
        n1, oy, cc = prep["mix"].shape
        ho, wo = prep["out"]
        x2 = x.reshape(b * c * h, w)
        v = None  # (B, O * (N+1), H * W'): rows (o, n_y) after the x pass and the α mixing
        for nx in range(n1):
            u = torch.mm(x2, prep["mx"][nx]).view(b, c, h * wo)  # x pass, n_x-th derivative
            term = torch.bmm(prep["mix"][nx].expand(b, oy, c), u)
            v = term if v is None else v + term
        o = oy // n1
        y = torch.bmm(prep["my"].expand(b * o, ho, n1 * h), v.view(b * o, n1 * h, wo))  # y pass
        return y.view(b, o, ho, wo)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, order={self.order}, scale={self.scale_name!r}, "
                f"alpha={self.alpha_name!r}, stride={self.stride}, padding={self.padding!r}, "
                f"radius={self.fixed_radius}, sigma_range={self.sigma_range}, formulation={self.formulation!r}")


def band_matrix(g, n, padding, stride=1):
    """1-D cross-correlations as matrices: ``M[k, o, i] = g[k, i − o·stride + padding]`` (zero off the band).

    ``M[k] @ v`` correlates a length-``n`` signal ``v`` with the filter ``g[k]`` (zero padded by ``padding`` on
    both sides, subsampled by ``stride``), as ``conv2d`` does along one axis.  Differentiable in ``g``.

    Returns
    -------
    Tensor ``(K, n', n)`` with ``n' = (n + 2·padding − len) // stride + 1``.
    """
    length = g.shape[-1]
    n_out = (n + 2 * padding - length) // stride + 1
    if n_out < 1:
        raise ConfigError(f"a kernel of {length} taps with padding {padding} does not fit a map of {n} pixels")
    o = torch.arange(n_out, device=g.device)[:, None]
    i = torch.arange(n, device=g.device)[None, :]
    idx = i - o * stride + padding
    inside = (idx >= 0) & (idx < length)
    return g[..., idx.clamp(0, length - 1)] * inside.to(g.dtype)


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


def _to_pairs(z):
    """``(B, C, nh, nf)`` complex → ``(nh·nf, B, 2C)`` real: one matrix of (re, im) pairs per frequency (a copy)."""
    b, c, nh, nf = z.shape
    return torch.view_as_real(z).permute(2, 3, 0, 1, 4).reshape(nh * nf, b, 2 * c)


def _padded_transform(x, nh, nw):
    """:func:`_to_pairs` of ``rfft2`` of ``x`` zero-padded to ``(nh, nw)`` (explicitly: a contiguous padded input
    transforms faster than ``rfft2(x, s=...)``)."""
    return _to_pairs(torch.fft.rfft2(F.pad(x, (0, nw - x.shape[-1], 0, nh - x.shape[-2]))))


def _from_pairs(zr, b, nh, nf):
    """The inverse of :func:`_to_pairs`: ``(nh·nf, B, 2C)`` real → ``(B, C, nh, nf)`` complex (a copy)."""
    return torch.view_as_complex(zr.view(nh, nf, b, -1, 2).permute(2, 3, 0, 1, 4).contiguous())


class _SpectralCorrelation(torch.autograd.Function):
    """Stride-1 correlation of ``x`` with the transformed filters ``wf`` (:func:`_fft_filters`), subsampled.

    Forward: ``y = irfft2(rfft2(pad(x)) · W)[:ho:s, :wo:s]``, one real product of (re, im) pairs per frequency
    (autograd through a complex ``bmm`` resolves conjugates matrix by matrix, which measured slower than the
    product itself).  The backward is written out because autograd's own goes through ``rfft2``'s generic
    backward, a full complex-to-complex transform of a zero-filled spectrum (about 40 % of the forward +
    backward time on block 1 of a width-0.25 DCN, ``benchmarks/RESULTS.md``): with ``G = rfft2(pad(∂y))``,

    * ``∂x = crop(irfft2(G · Wᴴ))``, the correlation's adjoint: the half-spectrum weights of ``irfft2`` cancel
      against those of the adjoint of ``irfft2``;
    * ``∂W = Σ_b Xᴴ G · c / (nh·nw)`` with ``c = 2`` for the columns ``0 < k < nw / 2`` that stand for two
      conjugate frequencies and ``c = 1`` otherwise (the adjoint of ``irfft2``).
    """

    @staticmethod
    def forward(ctx, x, wf, n, out, stride):
        b, _, h, w = x.shape
        nh, nw = n
        nf = nw // 2 + 1
        xr = _padded_transform(x, nh, nw)  # (F, B, 2C)
        y = torch.fft.irfft2(_from_pairs(torch.bmm(xr, wf), b, nh, nf), s=(nh, nw))
        ctx.save_for_backward(x, xr, wf)
        ctx.geometry = (b, h, w, nh, nw, out, stride)
        return y[..., :out[0]:stride, :out[1]:stride]

    @staticmethod
    def backward(ctx, gy):
        x, xr, wf = ctx.saved_tensors
        b, h, w, nh, nw, (ho, wo), stride = ctx.geometry
        nf = nw // 2 + 1
        if torch.is_grad_enabled():  # a differentiable backward (create_graph): x's transform as a function of x
            xr = _padded_transform(x, nh, nw)
        if stride != 1:  # the gradient of the subsampled output, on the stride-1 grid
            g1 = gy.new_zeros(gy.shape[:2] + (ho, wo))
            g1[..., ::stride, ::stride] = gy
            gy = g1
        gr = _padded_transform(gy, nh, nw)  # (F, B, 2O)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.fft.irfft2(_from_pairs(torch.bmm(gr, wf.transpose(1, 2)), b, nh, nf), s=(nh, nw))[..., :h, :w]
        if ctx.needs_input_grad[1]:
            c = gr.new_full((nf,), 2.0 / (nh * nw))
            c[0] = 1.0 / (nh * nw)
            if nw % 2 == 0:
                c[-1] = 1.0 / (nh * nw)
            gw = torch.bmm(xr.transpose(1, 2), gr).view(nh, nf, *wf.shape[1:]).mul_(c[:, None, None])
            gw = gw.view(wf.shape)
        return gx, gw, None, None, None


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
