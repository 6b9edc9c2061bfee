"""Deterministic batch order and the paper's augmentation: pure tensor functions of explicit seeds.

Every random choice is derived from integer keys (seed, epoch, step), never from global RNG state, so a run
interrupted at any step and resumed sees the same batches; the decoders of :mod:`dcnbio.extract.reconstruction`
use the same batch order as training.
"""
import hashlib

import torch

__all__ = ["augment", "batch_seed", "epoch_permutation"]


def batch_seed(*keys):
    """A 63-bit seed derived from integer keys (seed, epoch, step ...), stable across runs and platforms."""
    digest = hashlib.sha256(",".join(str(int(k)) for k in keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def epoch_permutation(n, seed, epoch):
    """The order in which epoch ``epoch`` visits ``n`` images (depends only on seed and epoch)."""
    g = torch.Generator().manual_seed(batch_seed(seed, epoch, 0x5EED))
    return torch.randperm(n, generator=g)


def augment(images, generator, max_shift=4, flip=True):
    """Paper augmentation: random translation up to ``max_shift`` px (zero fill) and horizontal flip.

    Parameters
    ----------
    images : Tensor ``(B, C, H, W)`` (already normalised; the fill is 0, the dataset mean)
    generator : torch.Generator
    """
    b, _, h, w = images.shape
    if max_shift:
        padded = torch.nn.functional.pad(images, (max_shift,) * 4)
        dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None, :])  # (B, H)
        cols = (dx[:, None] + torch.arange(w)[None, :])  # (B, W)
        bi = torch.arange(b)[:, None, None]
        images = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        do_flip = torch.rand(b, generator=generator) < 0.5
        images = torch.where(do_flip[:, None, None, None], images.flip(-1), images)
    return images.contiguous()
