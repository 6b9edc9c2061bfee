"""dcnbio.fast.conv.conv2d: the input gradient as a forward convolution equals autograd's, to float rounding."""
import pytest
import torch
import torch.nn.functional as F

from dcnbio.fast.conv import conv2d


@pytest.mark.parametrize("k, padding", [(7, 3), (5, 2), (3, 1), (3, 0), (5, (1, 2)), (1, 0)])
def test_value_and_gradients_match_conv2d(k, padding):
    gen = torch.Generator().manual_seed(k)
    x = torch.randn(3, 4, 11, 12, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(5, 4, k, k, dtype=torch.float64, generator=gen, requires_grad=True)
    ours, theirs = conv2d(x, w, padding=padding), F.conv2d(x, w, padding=padding)
    assert ours.grad_fn is not None and "Conv2dForwardGrad" in type(ours.grad_fn).__name__  # the fast path ran
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    g = torch.randn(theirs.shape, dtype=torch.float64, generator=gen)
    for a, b in zip(torch.autograd.grad(ours, (x, w), g), torch.autograd.grad(theirs, (x, w), g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_second_order_gradients_pass_gradcheck():
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: conv2d(a, b, padding=1), (x, w))
    assert torch.autograd.gradgradcheck(lambda a, b: conv2d(a, b, padding=1), (x, w))


def test_falls_back_to_conv2d_where_the_identity_does_not_apply():
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    w = torch.randn(4, 4, 3, 3, requires_grad=True)
    strided = conv2d(x, w, stride=2, padding=1)
    assert "Conv2dForwardGrad" not in type(strided.grad_fn).__name__
    torch.testing.assert_close(strided, F.conv2d(x, w, stride=2, padding=1))
    wide = torch.randn(32, 32, 3, 3, requires_grad=True)
    assert "Conv2dForwardGrad" not in type(conv2d(torch.randn(1, 32, 5, 5), wide, padding=1).grad_fn).__name__
    with torch.no_grad():
        torch.testing.assert_close(conv2d(x, w, padding=1), F.conv2d(x, w, padding=1))
