"""A stride-1 ``conv2d`` whose input gradient is computed as a forward convolution, and whose convolutions can
run on any of PyTorch's three CPU convolution backends (one of them two ways).

On CPU, oneDNN's backward-data kernel for convolutions with few channels runs several times slower than a
forward convolution of the same size (about four times slower for block 1 of a width-0.25 DCN;
``benchmarks/RESULTS.md``).  For stride 1 the input gradient *is* a forward convolution:
with ``y = x ⋆ W`` (cross-correlation, padding p), ``∂L/∂x = (∂L/∂y) ⋆ flip(W)ᵀ`` with padding ``k − 1 − p``,
where ``flip`` reverses both spatial axes and ``ᵀ`` swaps the output and input channels.  :func:`conv2d` uses
that identity in its backward pass and leaves the weight gradient to PyTorch; the values agree with autograd's
to float rounding (``tests/test_layers_conv.py``).  The backward is written with differentiable operations, so
higher-order gradients work too.

Backends of the forward-type convolutions (the forward and the input gradient), all PyTorch's own:
``"onednn"`` (PyTorch's default on CPU), ``"grouped"`` (oneDNN on ``k`` images folded into the channels of one,
``groups = k``, so that a few-channel convolution fills oneDNN's channel blocks instead of padding them: see
:func:`group_factor`; it pays with 16-float (AVX-512) channel blocks and not with 8-float (AVX2) ones, whose
blocks an 8-channel convolution already fills), ``"nnpack"`` (NNPACK's tiled transform convolution, oneDNN switched off
for the call; float32, batches of 16 or more, kernels under 17 taps, padding under the kernel size) and ``"gemm"``
(PyTorch's im2col + matrix-product convolution, oneDNN and NNPACK switched off).  With :mod:`tuning
<dcnbio.fast.tuning>` disabled (default) the fast backward is used up to :data:`MAX_CHANNELS` channels and every
convolution runs on oneDNN, grouped where :func:`group_factor` applies (:func:`default_backend`).  With tuning
enabled, every stride-1 CPU convolution takes the fast backward, and the backend of each forward-type
convolution is measured per shape, where it runs: a backend can win back to back and lose inside a training
step, next to OpenMP's workers (NNPACK did, ``benchmarks/RESULTS.md``), so candidates are timed right after a
small OpenMP-parallel operation (:func:`_openmp_context`).
oneDNN's weight gradient is kept in every case (the im2col backend's was 4–17× slower).  Elsewhere (CUDA,
stride ≠ 1, groups ≠ 1) it is plain ``F.conv2d``.
"""
import torch
import torch.nn.functional as F

from . import tuning

#: Channel counts up to which the CPU path is used: measured faster at 8, equal within noise at 16 and 32.
MAX_CHANNELS = 16
BACKENDS = ("onednn", "grouped", "nnpack", "gemm")
#: Floats per vector register of oneDNN's blocked layouts, by ATen's CPU capability (the proxy for oneDNN's ISA).
VECTOR_FLOATS = {"AVX512": 16, "AVX2": 8}


def group_factor(x, w):
    """How many images :func:`_run` ``"grouped"`` folds into the channels of one (1 where it does not apply).

    oneDNN lays channels out in blocks of one vector register (16 floats with AVX-512) and pads a smaller
    channel count up to a block: an 8 → 8 convolution computes 16 output channels and keeps 8.  ``k`` images
    side by side as ``k · C`` channels of one image, convolved with ``groups = k``, fill the block with real
    work: the same sums, for ``k = vector floats // max(C_in, C_out) ≥ 2`` when the batch divides by ``k``.
    """
    lanes = VECTOR_FLOATS.get(torch.backends.cpu.get_cpu_capability(), 0)
    k = lanes // max(w.shape[0], w.shape[1], 1)
    return k if k >= 2 and x.shape[0] % k == 0 and x.device.type == "cpu" else 1


def nnpack_applies(x, w, padding):
    """Whether PyTorch would run this stride-1 convolution on NNPACK once oneDNN is off (its own conditions)."""
    return (torch.backends.nnpack.is_available() and x.dtype == torch.float32 and x.shape[0] >= 16
            and max(w.shape[-2:]) < 17 and padding[0] < w.shape[-2] and padding[1] < w.shape[-1])


def _run(backend, x, w, padding):
    if backend == "onednn":
        return F.conv2d(x, w, padding=padding)
    if backend == "grouped":
        k = group_factor(x, w)
        if k == 1:
            return F.conv2d(x, w, padding=padding)
        b, c, h, wd = x.shape
        y = F.conv2d(x.reshape(b // k, k * c, h, wd), w.repeat(k, 1, 1, 1), padding=padding, groups=k)
        # the same memory as (B, O, H', W'), as a tensor of its own rather than a view (so that a caller may
        # add to it in place, as the SRF layer does with its time-channel term)
        shape = (b, w.shape[0]) + tuple(y.shape[-2:])
        if not y.is_contiguous():  # e.g. channels-last: not one view of the other
            return y.reshape(shape)
        return y.new_empty(0).set_(y.untyped_storage(), y.storage_offset(), shape)
    mkldnn = torch.backends.mkldnn.enabled
    (nnpack,) = torch.backends.nnpack.set_flags(backend == "nnpack")
    torch.backends.mkldnn.enabled = False
    try:
        return F.conv2d(x, w, padding=padding)
    finally:
        torch.backends.mkldnn.enabled = mkldnn
        torch.backends.nnpack.set_flags(nnpack)


_CONTEXT = None


def _openmp_context():
    """Run one small OpenMP-parallel operation, as precedes every convolution of a step (a norm, an activation).

    Each candidate backend is timed right after one, so that NNPACK, whose own thread pool then competes with
    OpenMP's still-spinning workers, is measured as it runs in a step: without it NNPACK's block-1 convolution
    looked 25 % faster than oneDNN's and made the step slower (``benchmarks/RESULTS.md``).
    """
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = torch.zeros(1 << 17)  # above ATen's grain size: split over the threads
    _CONTEXT.mul_(1.0)


def default_backend(x, w):
    """The fixed rule: ``"grouped"`` where :func:`group_factor` applies, ``"onednn"`` otherwise."""
    return "grouped" if group_factor(x, w) > 1 else "onednn"


def forward_conv(x, w, padding, backend=None):
    """``F.conv2d(x, w, padding=padding)`` (stride 1) on ``backend``; ``None``: measured (tuning on) or
    :func:`default_backend`."""
    if backend is None:
        backend = default_backend(x, w)
        if tuning.enabled() and x.device.type == "cpu":
            key = ("conv2d", tuple(x.shape), tuple(w.shape), tuple(padding), x.dtype, torch.is_grad_enabled())
            rule = backend

            def candidates():
                xd, wd = x.detach(), w.detach()
                usable = [b for b in BACKENDS if (b != "nnpack" or nnpack_applies(x, w, padding))
                          and (b != "grouped" or group_factor(x, w) > 1)]
                usable.sort(key=lambda b: b != rule)  # the rule's backend first: the default of the choice
                return {b: (lambda b=b: (_openmp_context(), _run(b, xd, wd, padding))) for b in usable}
            backend = tuning.choose(key, candidates)
    return _run(backend, x, w, padding)


class _Conv2dForwardGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, padding):
        ctx.save_for_backward(x, w)
        ctx.padding = padding
        return forward_conv(x, w, padding)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        p = ctx.padding
        gx = gw = None
        if ctx.needs_input_grad[0]:
            kh, kw = w.shape[-2:]
            gx = forward_conv(grad, w.flip(-1, -2).transpose(0, 1), (kh - 1 - p[0], kw - 1 - p[1]))
        if ctx.needs_input_grad[1]:
            gw = torch.nn.grad.conv2d_weight(x, w.shape, grad, padding=p)
        return gx, gw, None


def conv2d(x, w, *, stride=1, padding=0):
    """``F.conv2d(x, w, stride=stride, padding=padding)`` (no bias, groups 1), with the faster CPU backward."""
    pad = (padding, padding) if isinstance(padding, int) else tuple(padding)
    kh, kw = w.shape[-2:]
    if stride != 1 or x.device.type != "cpu" or pad[0] > kh - 1 or pad[1] > kw - 1:
        return F.conv2d(x, w, stride=stride, padding=pad)
    tuned = tuning.enabled()
    if not torch.is_grad_enabled() or not (x.requires_grad or w.requires_grad):
        return forward_conv(x, w, pad)
    if tuned or max(w.shape[:2]) <= MAX_CHANNELS:
        return _Conv2dForwardGrad.apply(x, w, pad)
    return F.conv2d(x, w, padding=pad)
