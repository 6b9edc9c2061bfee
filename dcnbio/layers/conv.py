"""A stride-1 ``conv2d`` whose input gradient is computed as a forward convolution (faster on CPU, few channels).

On CPU, oneDNN's backward-data kernel for convolutions with few channels runs several times slower than a
forward convolution of the same size (measured: 8 → 8 channels, 26×26, 7×7 kernels, batch 128, one thread:
37 ms against 9 ms; ``benchmarks/RESULTS.md``).  For stride 1 the input gradient *is* a forward convolution:
with ``y = x ⋆ W`` (cross-correlation, padding p), ``∂L/∂x = (∂L/∂y) ⋆ flip(W)ᵀ`` with padding ``k − 1 − p``,
where ``flip`` reverses both spatial axes and ``ᵀ`` swaps the output and input channels.  :func:`conv2d` uses
that identity in its backward pass and leaves the weight gradient to PyTorch; the values agree with autograd's
to float rounding (``tests/test_layers_conv.py``).  The backward is written with differentiable operations, so
higher-order gradients work too.  Elsewhere (CUDA, stride ≠ 1, groups ≠ 1, many channels) it is plain
``F.conv2d``.
"""
import torch
import torch.nn.functional as F

#: Channel counts up to which the CPU path is used: measured faster at 8, equal within noise at 16 and 32.
MAX_CHANNELS = 16


class _Conv2dForwardGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, padding):
        ctx.save_for_backward(x, w)
        ctx.padding = padding
        return F.conv2d(x, w, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        p = ctx.padding
        gx = gw = None
        if ctx.needs_input_grad[0]:
            kh, kw = w.shape[-2:]
            gx = F.conv2d(grad, w.flip(-1, -2).transpose(0, 1), padding=(kh - 1 - p[0], kw - 1 - p[1]))
        if ctx.needs_input_grad[1]:
            gw = torch.nn.grad.conv2d_weight(x, w.shape, grad, padding=p)
        return gx, gw, None


def conv2d(x, w, *, stride=1, padding=0):
    """``F.conv2d(x, w, stride=stride, padding=padding)`` (no bias, groups 1), with the faster CPU backward."""
    pad = (padding, padding) if isinstance(padding, int) else tuple(padding)
    kh, kw = w.shape[-2:]
    fast = (stride == 1 and x.device.type == "cpu" and torch.is_grad_enabled() and max(w.shape[:2]) <= MAX_CHANNELS
            and pad[0] <= kh - 1 and pad[1] <= kw - 1 and (x.requires_grad or w.requires_grad))
    if not fast:
        return F.conv2d(x, w, stride=stride, padding=pad)
    return _Conv2dForwardGrad.apply(x, w, pad)
