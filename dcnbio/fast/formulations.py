"""Faster exact formulations of the SRF convolution, registered into :data:`dcnbio.core.layers.srf.FORMULATIONS`.

All compute the function of the core's ``dense`` formulation (within floating-point rounding; checked against
the ``reference`` formulation in ``tests/test_formulations.py``); they differ in cost.

``dense`` (replaces the core's)
    The same dense filter bank, convolved by :func:`dcnbio.fast.conv.conv2d`: on CPU with few channels the
    input gradient is computed as a forward convolution, which oneDNN runs faster.
``spectral``
    Correlate in the frequency domain: ``rfft2`` of the input and of the (flipped, zero-padded) filters, one
    complex matrix product over input channels per frequency, ``irfft2``.  The cost does not depend on the
    kernel size as long as the padded transform length (``H + padding`` rounded up to a 2·3·5-smooth length)
    does not change; works for every σ parametrization, σ_ji included.  Stride > 1 is computed at stride 1
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
``auto``
    A :class:`~dcnbio.core.layers.srf.Chooser`: ``dense``, ``spectral`` or ``separable`` per call from the
    kernel radius, channel counts and map size by :func:`auto_rule` (set from measurements,
    ``benchmarks/RESULTS.md``), or, with :mod:`tuning <dcnbio.fast.tuning>` enabled (CPU, stride 1), the one
    measured fastest on the call's shapes on this machine.
"""
import torch
import torch.nn.functional as F

from ..core import filters
from ..core.layers.srf import Chooser, Formulation, register_formulation
from ..errors import ConfigError
from . import tuning
from .conv import conv2d


class Dense(Formulation):
    """The dense filter bank convolved by :func:`dcnbio.fast.conv.conv2d` (the faster CPU backward)."""

    def convolve(self, layer, x, prep):
        return conv2d(x, prep["w"], stride=layer.stride, padding=prep["pad"])


class Spectral(Formulation):
    """The correlation in the frequency domain (module docstring)."""

    def prepare(self, layer, w, sigma, r, t, x):
        return _fft_filters(w, layer.pad(r), x.shape[-2:])

    def convolve(self, layer, x, prep):
        return _SpectralCorrelation.apply(x, prep["wf"], prep["n"], prep["out"], layer.stride)


class Separable(Formulation):
    """Basis first, 1-D passes as matrix products (module docstring); one σ per layer only."""

    per_pair = False

    def prepare(self, layer, w, sigma, r, t, x):
        """The 1-D passes as banded matrices, α as mixing matrices.

        ``mx[n]``: ``(W, W')``, the correlation along x with the ``n``-th 1-D derivative (zero padding and the
        stride folded in); ``my``: ``(H', (N+1)·H)``, the y passes of all orders side by side; ``mix[n_x]``:
        ``(O·(N+1), C)``, row ``o·(N+1) + n_y`` holding ``α[o, :, f]`` of the basis function ``f = (n_x, n_y)``
        (zero rows where ``n_x + n_y > N``).  The time channel's α column is left to ``tmap``.
        """
        h, wd = x.shape[-2:]
        c = x.shape[1]
        p = layer.pad(r)
        n1 = layer.order + 1
        g = filters.gaussian_derivatives_1d(sigma, layer.order, r).to(x.dtype)  # (N+1, 2r+1)
        mx = band_matrix(g, wd, p, layer.stride)  # (N+1, W', W)
        my = band_matrix(g, h, p, layer.stride)  # (N+1, H', H)
        alpha = layer.alpha(t).to(x.dtype)[:, :c]  # (O, C, F); the time channel (if any) is the last input
        mix = alpha.new_zeros(n1, layer.out_channels, n1, c)
        for f, (nx, ny) in enumerate(filters.basis_orders(layer.order)):
            mix[nx, :, ny, :] = alpha[:, :, f]
        return {"mx": mx.transpose(1, 2).contiguous(), "my": my.transpose(0, 1).reshape(my.shape[1], -1),
                "mix": mix.view(n1, layer.out_channels * n1, c), "out": (my.shape[1], mx.shape[1])}

    def convolve(self, layer, x, prep):
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


class Auto(Chooser):
    """``dense``, ``spectral`` or ``separable`` per call: :func:`auto_rule`, or measured with tuning enabled."""

    def choose(self, layer, sigma, r, t, x, time_channel):
        form = auto_rule(layer, r, x.shape[1] + int(time_channel), tuple(x.shape[-2:]))
        if tuning.enabled() and x.device.type == "cpu" and layer.stride == 1:
            form = measured_formulation(layer, form, sigma, r, t, x, time_channel)
        return form


def auto_rule(layer, radius, in_channels, size=None, isa=None):
    """The formulation ``auto`` picks for a call of ``layer`` by the rule set from measurements.

    Parameters
    ----------
    layer : :class:`~dcnbio.core.layers.srf.SRFConv2d`
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
        ``"dense"``, ``"spectral"`` or ``"separable"``.
    """
    if layer.stride != 1:
        return "dense"
    h, w = (64, 64) if size is None else size
    m = min(h, w)
    basis_first = not layer.scale.per_pair
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
        # each threshold is the smallest channel count at which the measured grid (forward + backward against
        # dense, benchmarks/RESULTS.md, "Figures moved out of module docstrings") put the alternative below 1
        if m >= 26:
            return "spectral" if in_channels >= (32 if radius == 3 else 16) else "dense"
        if m >= 13:
            if in_channels >= 32 or (radius == 6 and in_channels >= 16):
                return "separable" if basis_first and radius >= 5 else "spectral"
            return "dense"
        if in_channels >= 128 and radius <= 4:
            # set inside a training step (filters built once per solve), where the transform beat both others
            return "spectral"
        if basis_first and radius >= 5 and in_channels >= 64:
            return "separable"
        return "dense"
    # AVX2: from 9x9 the direct conv is the slowest on every map size measured; at r = 3 only wide layers on
    # small maps gain (the figures: benchmarks/RESULTS.md, "Figures moved out of module docstrings")
    if radius >= 4:  # σ_ji (one σ per layer took the branch above): the transform
        return "spectral"
    if radius == 3 and in_channels >= 32 and m <= 13:
        if m >= 10:
            return "spectral"
        if basis_first:
            return "separable"
        if in_channels >= 64:
            return "spectral"
    return "dense"


def measured_formulation(layer, rule, sigma, r, t, x, time_channel):
    """``auto`` with tuning enabled: the formulation measured fastest for this call's shapes.

    Each candidate (the rule's choice first, then dense, spectral and, with one σ per layer, separable) is
    timed on ``x`` for what one function evaluation costs once the filters are built: the convolution, and
    with gradients enabled its backward to the input and to the prepared filters (:mod:`.tuning`).
    """
    grad = torch.is_grad_enabled()
    key = ("srf", layer.out_channels, x.shape[1] + int(time_channel), layer.order, layer.scale.per_pair, r,
           tuple(x.shape), x.dtype, time_channel, grad)
    forms = [rule] + [f for f in ("dense", "spectral", "separable")
                      if f != rule and not (f == "separable" and layer.scale.per_pair)]
    xd = x.detach().requires_grad_(grad and x.requires_grad)  # a view: no copy of x

    def candidate(form):
        with torch.no_grad():
            prep = layer.prepare(form, sigma.detach(), r, t, xd, time_channel)
        leaves = {k: v.detach().requires_grad_(grad) for k, v in prep.items()
                  if torch.is_tensor(v) and v.is_floating_point() and k != "tmap"}
        prep.update(leaves)
        inputs = list(leaves.values()) + ([xd] if xd.requires_grad else [])

        def run():
            out = layer.convolve(xd, prep)
            if grad:
                torch.autograd.grad(out, inputs, out)
        return run

    # the candidates' filters are built only when the key is measured, not on calls that find it decided
    return tuning.choose(key, lambda: {f: candidate(f) for f in forms})


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


def register():
    """Put this module's formulations into the SRF layer's table (what ``import dcnbio.fast`` does)."""
    for name, entry in (("dense", Dense()), ("spectral", Spectral()), ("separable", Separable()), ("auto", Auto())):
        register_formulation(name, entry)
