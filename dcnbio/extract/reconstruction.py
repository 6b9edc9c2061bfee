"""Image reconstruction from block-3 features with a frozen encoder (paper Table 2b, App. A.4).

The *encoder* is a trained classifier up to and including its third block (``stem → block1 → down1 → block2 →
down2 → block3``).  The *decoder* (App. A.4, SPEC §3) is::

    block(C3) → bilinear ×2 → 1×1 conv C3→C2 → block(C2) → bilinear ×2 → GN → act → 1×1 conv C2→image channels

with blocks of the classifier's own kind — an SRF ODE block for DCN models, a pixel-conv ODE block for ODE-Net, a
pre-activation residual block for the ResNet baseline — built by the same code as the classifier's blocks (those
of a freshly initialised :class:`~dcnbio.core.models.Network` of the same configuration), at the classifier's stage
widths ``(C1, C2, C3) = width · (32, 64, 128)`` and with its activation and ODE-solver settings.

Untied and frozen
    The authors' decoder reuses the encoder's own block modules, so training their decoder also trains their
    "frozen" encoder.  Here the decoder owns fresh blocks (no parameter is shared with the classifier), and the
    encoder is run once, in eval mode under ``torch.no_grad()``, to compute the block-3 features of every image;
    decoder training reads only these cached features.  :func:`compute_reconstruction` checks that every encoder
    parameter is bit-identical afterwards.

Output size and target
    Two ×2 upsamplings make the decoder output 4× the block-3 map: 24×24 on 28×28 inputs (maps 26 → 13 → 6), 28×28
    on 32×32 inputs (30 → 15 → 7).  It is compared with the central crop of the image of that size
    (:func:`center_crop`; the reference code also compares with ``x[..., 2:-2, 2:-2]``).

Units
    The mean squared error is computed in the *normalised input space*: images standardised per channel with the
    dataset's mean and standard deviation, i.e. exactly what the classifier sees.  An MSE of 1 is an error of one
    training-set standard deviation per pixel.  As a scale, :func:`compute_reconstruction` also reports the MSE of
    the trivial decoder that outputs the mean training image.  The paper's numbers (DCN 17.1, ODE-Net 20.2,
    ResNet 21.0 on CIFAR-10) are in other units — the reference code min-max rescales each batch of outputs to
    [0, 1] and compares with unnormalised [0, 1] images — so only their ordering carries over.

Functions (tensors and xarray in, xarray out; no disk I/O):

* :class:`Decoder`, :func:`encode`, :func:`center_crop`, :func:`reconstruct`;
* :func:`train_decoder` — SGD on the MSE from cached features, seeded and deterministic;
* :func:`compute_reconstruction_error` — per-image MSE; :func:`compute_reconstruction` — the whole experiment for
  one classifier;
* :func:`compare_models` — paired Wilcoxon signed-rank tests between models on the same images;
* :func:`dcnbio.plots.plot_reconstructions` — originals against each model's reconstruction.
"""
import itertools

import numpy as np
import scipy.stats as st
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from ..core.sampling import epoch_permutation
from ..errors import ConfigError, DataError
from ..provenance import provenance_attrs
from ..core.layers.ode import ODEBlock, group_norm
from ..core.models.config import ModelConfig
from ..core.models.network import ACTIVATIONS, Network
from .common import as_images

__all__ = ["Decoder", "center_crop", "compare_models", "compute_reconstruction", "compute_reconstruction_error",
           "encode", "reconstruct", "train_decoder"]

#: Stages of the classifier that make up the encoder, in order.
ENCODER_STAGES = ("stem", "block1", "down1", "block2", "down2", "block3")
#: Upsampling factor from the block-3 map to the decoder output (two bilinear ×2).
UPSAMPLING = 4


# --- the decoder -----------------------------------------------------------------------------------------------

class Decoder(nn.Module):
    """The reconstruction decoder of App. A.4, with fresh (untied) blocks of the classifier's kind.

    Parameters
    ----------
    config : :class:`~dcnbio.core.models.ModelConfig`
        The classifier's configuration: kind of block (ODE with SRF or pixel convs, or residual), stage widths,
        activation, input channels (= output channels here) and ODE-solver settings.
    seed : int
        Seeds the initialisation (the global random state is left as it was).

    Attributes
    ----------
    block3, block2 : nn.Module
        ``ODEBlock`` (named ``decoder.block3``/``decoder.block2``) or ``ResBlock`` on C3 and C2 channels, built by
        :class:`~dcnbio.core.models.Network` itself (taken from a freshly initialised network of ``config``).
    reduce : nn.Conv2d
        1×1 convolution C3 → C2 (with bias).
    norm, act, out : nn.Module
        GroupNorm(C2), the model's activation and the 1×1 convolution C2 → ``config.in_channels`` (with bias).

    Examples
    --------
    >>> from dcnbio import create_model
    >>> model = create_model("dcn-ode", in_channels=1, width=0.25)
    >>> decoder = Decoder(model.config, seed=0)
    >>> decoder(torch.zeros(2, 32, 6, 6)).shape
    torch.Size([2, 1, 24, 24])
    """

    def __init__(self, config, *, seed=0):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ConfigError(f"Decoder needs a ModelConfig (model.config), got {type(config).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.config = config
        _, c2, c3 = config.channels
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            template = Network(config)  # the classifier's own block-building code, fresh parameters
            self.block3 = template.block3
            self.reduce = nn.Conv2d(c3, c2, 1)
            self.block2 = template.block2
            self.norm = group_norm(c2)
            self.act = ACTIVATIONS[config.act]()
            self.out = nn.Conv2d(c2, config.in_channels, 1)
        for name in ("block3", "block2"):
            block = getattr(self, name)
            if isinstance(block, ODEBlock):
                block.name = f"decoder.{name}"

    @staticmethod
    def upsample(x):
        """``x`` ``(B, C, H, W)`` bilinearly upsampled to ``(B, C, 2H, 2W)``."""
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, features):
        """``(B, C3, h, w)`` block-3 features → ``(B, in_channels, 4h, 4w)`` images (normalised space)."""
        x = self.block3(features)
        x = self.reduce(self.upsample(x))
        x = self.block2(x)
        x = self.upsample(x)
        return self.out(self.act(self.norm(x)))


# --- encoder, targets, reconstructions ---------------------------------------------------------------------------

def _check_batch_size(batch_size, name="batch_size"):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"{name} must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def encode(model, images, *, batch_size=128):
    """Block-3 features of a classifier, computed in eval mode under ``torch.no_grad()``.

    Parameters
    ----------
    model : :class:`~dcnbio.core.models.Network`
        The trained classifier (its mode is restored afterwards; its parameters are only read).
    images : Tensor or ndarray ``(N, C, H, W)``
        Normalised images.
    batch_size : int
        Images per forward pass (ODE solves are per batch, so features depend slightly on the batching).

    Returns
    -------
    Tensor ``(N, C3, h, w)``
        In the model's dtype, without autograd history (``requires_grad`` is False).
    """
    images = as_images(images, model.config.in_channels)
    batch_size = _check_batch_size(batch_size)
    param = next(model.parameters())
    stages = dict(model.stages())
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                x = images[start:start + batch_size].to(param.device, param.dtype)
                for name in ENCODER_STAGES:
                    x = stages[name](x)
                out.append(x)
    finally:
        model.train(was_training)
    return torch.cat(out)


def center_crop(images, size):
    """The central ``size × size`` window of ``(…, H, W)`` images (offset ``(H − size) // 2``, likewise for W).

    >>> center_crop(torch.arange(36.).reshape(1, 1, 6, 6), 2)[0, 0]
    tensor([[14., 15.],
            [20., 21.]])
    """
    h, w = images.shape[-2:]
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"crop size must be a positive integer, got {size!r}")
    if size > h or size > w:
        raise DataError(f"cannot crop {size}x{size} pixels out of {h}x{w} images")
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top:top + size, left:left + size]


def _check_pair(decoder, features, targets):
    """Validate decoder input features against targets; return both as tensors in the decoder's dtype."""
    param = next(decoder.parameters())
    if not torch.is_tensor(features) or features.ndim != 4:
        raise DataError(f"features must be a (N, C, h, w) tensor, got {getattr(features, 'shape', type(features))}")
    c3 = decoder.config.channels[2]
    if features.shape[1] != c3:
        raise DataError(f"features have {features.shape[1]} channels but the decoder's first block takes {c3}")
    features = features.detach().to(param.device, param.dtype)
    if targets is None:
        return features, None
    targets = torch.as_tensor(targets)
    expected = (features.shape[0], decoder.config.in_channels, UPSAMPLING * features.shape[2],
                UPSAMPLING * features.shape[3])
    if tuple(targets.shape) != expected:
        raise DataError(f"targets must have shape {expected} (one per feature map, {UPSAMPLING}x its size), got "
                        f"{tuple(targets.shape)}")
    return features, targets.detach().to(param.device, param.dtype)


def reconstruct(decoder, features, *, batch_size=128):
    """Decoder outputs for cached features, in eval mode under ``torch.no_grad()``.

    Returns
    -------
    Tensor ``(N, in_channels, 4h, 4w)`` in the decoder's dtype.
    """
    features, _ = _check_pair(decoder, features, None)
    batch_size = _check_batch_size(batch_size)
    was_training = decoder.training
    decoder.eval()
    try:
        with torch.no_grad():
            out = [decoder(features[s:s + batch_size]) for s in range(0, features.shape[0], batch_size)]
    finally:
        decoder.train(was_training)
    return torch.cat(out)


def _per_image_mse(outputs, targets):
    diff = outputs.detach().double() - targets.detach().double()
    return (diff ** 2).flatten(1).mean(1).cpu().numpy()


def compute_reconstruction_error(decoder, features, targets, *, batch_size=128):
    """Per-image mean squared error of the decoder's reconstructions.

    Parameters
    ----------
    decoder : :class:`Decoder` (or any module with ``config`` mapping ``(N, C3, h, w)`` to ``(N, C, 4h, 4w)``)
    features : Tensor ``(N, C3, h, w)``
        From :func:`encode`.
    targets : Tensor ``(N, C, 4h, 4w)``
        The images the features came from, cropped with :func:`center_crop` (normalised space).
    batch_size : int

    Returns
    -------
    xarray.Dataset
        ``mse (image)`` float64: mean over channels and pixels of the squared difference (normalised units);
        ``image`` = 0 … N−1.  Attrs: ``mean_mse``.
    """
    features, targets = _check_pair(decoder, features, targets)
    mse = _per_image_mse(reconstruct(decoder, features, batch_size=batch_size), targets)
    return xr.Dataset({"mse": ("image", mse, {"long_name": "mean squared error per image",
                                              "units": "normalised input units squared"})},
                      coords={"image": np.arange(len(mse))}, attrs={"mean_mse": float(mse.mean())})


# --- training --------------------------------------------------------------------------------------------------

def _batches(n, batch_size, seed):
    """Endless sequence of index batches: a seeded permutation per epoch, ``n // batch_size`` full batches each."""
    for epoch in itertools.count():
        order = epoch_permutation(n, seed, epoch)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


def _decoder_nfe(decoder):
    return sum(m.nfe_forward for m in decoder.modules() if isinstance(m, ODEBlock))


def train_decoder(decoder, features, targets, *, steps=60, batch_size=64, lr=0.1, momentum=0.9,
                  milestones=(0.5, 0.8), gamma=0.1, seed=0):
    """Train a decoder on cached features with SGD on the mean squared error (in place).

    Parameters
    ----------
    decoder : :class:`Decoder`
    features : Tensor ``(N, C3, h, w)``
        Block-3 features from :func:`encode` (no gradient reaches whatever produced them).
    targets : Tensor ``(N, C, 4h, 4w)``
        Centre-cropped normalised images (:func:`center_crop`).
    steps : int
        Optimizer steps.
    batch_size : int
        Images per step (at most N); each epoch visits ``N // batch_size`` full batches of a fresh permutation.
    lr, momentum : float
        SGD settings (paper: 0.1 and 0.9, as for classification).
    milestones : sequence of float
        Fractions of ``steps`` after which the learning rate is multiplied by ``gamma`` (the reference
        reconstruction script decays at 50 % and 80 % of its epochs).
    seed : int
        Decides the batch order (:func:`dcnbio.core.sampling.epoch_permutation`); with the same decoder initialisation,
        features and seed, two runs give bit-identical parameters (on the same machine and thread count).

    Returns
    -------
    xarray.Dataset
        ``loss (step)`` (batch MSE before the step), ``lr (step)``, ``nfe (step)`` forward evaluations of the
        decoder's ODE blocks in that step (0 for residual decoders).  Attrs: the settings and ``n_train``.

    Raises
    ------
    ConfigError
        Bad settings, or the loss became non-finite (lower ``lr``).
    DataError
        Features and targets do not fit each other or the decoder.
    """
    features, targets = _check_pair(decoder, features, targets)
    n = features.shape[0]
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    batch_size = min(_check_batch_size(batch_size), n)
    for name, value in (("lr", lr), ("momentum", momentum), ("gamma", gamma)):
        if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr!r}")
    if any(not 0 <= m <= 1 for m in milestones):
        raise ConfigError(f"milestones are fractions of the steps in [0, 1], got {list(milestones)}")
    boundaries = sorted(int(round(m * steps)) for m in milestones)
    optimizer = torch.optim.SGD(decoder.parameters(), lr=lr, momentum=momentum)
    losses, lrs, nfes = [], [], []
    batches = _batches(n, batch_size, seed)
    decoder.train()
    for step in range(int(steps)):
        rate = lr * gamma ** sum(step >= b for b in boundaries)
        for group in optimizer.param_groups:
            group["lr"] = rate
        idx = next(batches)
        before = _decoder_nfe(decoder)
        loss = F.mse_loss(decoder(features[idx]), targets[idx])
        nfes.append(_decoder_nfe(decoder) - before)
        if not torch.isfinite(loss):
            raise ConfigError(f"decoder training diverged at step {step} (loss {loss.item()}); lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        lrs.append(rate)
    decoder.eval()
    return xr.Dataset({"loss": ("step", np.asarray(losses), {"long_name": "batch MSE before the step"}),
                       "lr": ("step", np.asarray(lrs)),
                       "nfe": ("step", np.asarray(nfes, dtype=np.int64),
                               {"long_name": "forward evaluations of the decoder's ODE blocks"})},
                      coords={"step": np.arange(int(steps))},
                      attrs={"steps": int(steps), "batch_size": batch_size, "lr": float(lr),
                             "momentum": float(momentum), "milestones": list(milestones), "gamma": float(gamma),
                             "seed": int(seed), "n_train": int(n)})


# --- the experiment for one classifier ---------------------------------------------------------------------------

def _state_copy(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def compute_reconstruction(model, train_images, eval_images, *, steps=60, batch_size=64, lr=0.1, seed=0,
                           eval_batch_size=128, n_examples=8, train_index=None, eval_index=None, info=None):
    """Train a decoder on a frozen classifier's block-3 features and measure per-image reconstruction error.

    Parameters
    ----------
    model : :class:`~dcnbio.core.models.Network`
        The trained classifier (the encoder); never modified.
    train_images : Tensor ``(N_train, C, H, W)``
        Normalised images the decoder is trained on (the classifier's training split).
    eval_images : Tensor ``(N, C, H, W)``
        Normalised images the error is measured on (images neither network was trained on).
    steps, batch_size, lr, seed
        Decoder training (:func:`train_decoder`); ``seed`` also initialises the decoder.
    eval_batch_size : int
        Images per forward pass of the encoder and of the evaluation.
    n_examples : int
        Reconstructions of the first ``n_examples`` evaluation images are kept for figures.
    train_index, eval_index : array-like of int, optional
        Labels of the images (e.g. their index in the official dataset file); default 0 … N−1.
    info : dict, optional
        From :func:`dcnbio.load_checkpoint` (provenance).

    Returns
    -------
    xarray.Dataset
        * ``mse (image)`` — per-image MSE of the decoder (normalised input units);
        * ``mse_mean_image (image)`` — per-image MSE of the mean training target (the trivial decoder);
        * ``loss``, ``lr``, ``nfe (step)`` — the training history;
        * ``original``, ``reconstruction (example, channel, y, x)`` — centre-cropped images and reconstructions
          of the first evaluation images, coordinate ``example_image``;
        * coordinate ``train_image (train)``: the training images used.

        Attrs: :func:`~dcnbio.io.provenance_attrs`, training settings, ``mean_mse``, ``crop`` (output size),
        ``decoder_parameters``, ``encoder_parameters``, ``encoder_unchanged`` (1: every encoder parameter
        bit-identical after training).
    """
    n_examples = _check_batch_size(n_examples, "n_examples") if n_examples else 0
    train_images = as_images(train_images, model.config.in_channels)
    eval_images = as_images(eval_images, model.config.in_channels)
    before = _state_copy(model)
    train_features = encode(model, train_images, batch_size=eval_batch_size)
    eval_features = encode(model, eval_images, batch_size=eval_batch_size)
    size = UPSAMPLING * train_features.shape[-1]
    if train_features.shape[-2] != train_features.shape[-1]:
        raise DataError(f"square images expected, got block-3 maps of {tuple(train_features.shape[-2:])}")
    train_targets = center_crop(train_images, size)
    eval_targets = center_crop(eval_images, size)

    decoder = Decoder(model.config, seed=seed)
    history = train_decoder(decoder, train_features, train_targets, steps=steps, batch_size=batch_size, lr=lr,
                            seed=seed)
    outputs = reconstruct(decoder, eval_features, batch_size=eval_batch_size)
    _, targets = _check_pair(decoder, eval_features, eval_targets)
    mse = _per_image_mse(outputs, targets)
    mean_image = train_targets.double().mean(0, keepdim=True)
    mse_mean = _per_image_mse(mean_image.expand_as(targets), targets)
    after = model.state_dict()
    unchanged = all(torch.equal(before[k], after[k]) for k in before)
    if not unchanged:  # cannot happen: the decoder never sees the encoder; guard against future edits
        raise RuntimeError("an encoder parameter changed during decoder training")

    n = eval_images.shape[0]
    eval_index = np.arange(n) if eval_index is None else np.asarray(eval_index, dtype=np.int64)
    train_index = (np.arange(train_images.shape[0]) if train_index is None
                   else np.asarray(train_index, dtype=np.int64))
    if eval_index.shape != (n,) or train_index.shape != (train_images.shape[0],):
        raise DataError("train_index and eval_index must hold one label per image")
    k = min(n_examples, n)
    ds = xr.Dataset(
        {"mse": ("image", mse, {"long_name": "reconstruction MSE per image", "units": "normalised units squared"}),
         "mse_mean_image": ("image", mse_mean, {"long_name": "MSE of the mean training image"}),
         "original": (("example", "channel", "y", "x"), targets[:k].cpu().numpy(),
                      {"long_name": "centre-cropped normalised image"}),
         "reconstruction": (("example", "channel", "y", "x"), outputs[:k].cpu().numpy()),
         **{name: history[name] for name in ("loss", "lr", "nfe")}},
        coords={"image": eval_index, "example_image": ("example", eval_index[:k]),
                "train_image": ("train", train_index),
                "step": history["step"].values},
        attrs={**provenance_attrs(model, info), **history.attrs, "eval_batch_size": int(eval_batch_size),
               "n_images": int(n), "mean_mse": float(mse.mean()), "mean_mse_mean_image": float(mse_mean.mean()),
               "crop": int(size), "image_size": int(eval_images.shape[-1]),
               "decoder_parameters": sum(p.numel() for p in decoder.parameters()),
               "encoder_parameters": sum(p.numel() for name, p in model.named_parameters()
                                         if name.split(".")[0] in ENCODER_STAGES),
               "encoder_unchanged": int(unchanged), "space": "normalised input (per-channel standardised)"})
    return ds


# --- comparing models ------------------------------------------------------------------------------------------

def compare_models(results, pairs=None):
    """Paired comparison of per-image MSE between models on the images they share.

    Parameters
    ----------
    results : dict of str → xarray.Dataset
        Each with ``mse (image)`` (e.g. from :func:`compute_reconstruction`), ``image`` labelling the images so
        that the same label means the same image.
    pairs : list of (str, str), optional
        Which pairs (default: every pair, in the order of ``results``).

    Returns
    -------
    xarray.Dataset
        Along ``pair`` (``"a vs b"``), coordinates ``a``, ``b``: ``n`` shared images, ``mean_a``, ``mean_b``,
        ``median_difference`` (a − b), ``fraction_a_lower`` (share of images with MSE_a < MSE_b),
        ``statistic`` and ``p_value`` of the two-sided Wilcoxon signed-rank test of the differences
        (``scipy.stats.wilcoxon``; NaN with fewer than 2 shared images or all differences zero).

    Examples
    --------
    >>> a = xr.Dataset({"mse": ("image", [1., 2., 3., 4., 5., 6., 7.])}, coords={"image": np.arange(7)})
    >>> b = xr.Dataset({"mse": ("image", [0., 0., 0., 0., 0., 0., 14.])}, coords={"image": np.arange(7)})
    >>> float(compare_models({"a": a, "b": b})["p_value"][0])  # ranks 1..6 positive, 7 negative: 2 * 19/128
    0.296875
    """
    names = list(results)
    pairs = list(itertools.combinations(names, 2)) if pairs is None else [tuple(p) for p in pairs]
    unknown = sorted({n for p in pairs for n in p} - set(names))
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown} in pairs; results hold {', '.join(names)}")
    rows = []
    for a, b in pairs:
        ma, mb = results[a]["mse"], results[b]["mse"]
        for label, m in ((a, ma), (b, mb)):
            if not m.indexes["image"].is_unique:
                raise DataError(f"image labels of {label} are not unique; cannot pair images")
        shared = np.intersect1d(ma["image"].values, mb["image"].values)
        xa = ma.sel(image=shared).values.astype(float)
        xb = mb.sel(image=shared).values.astype(float)
        d = xa - xb
        stat = p = float("nan")
        if len(d) >= 2 and np.any(d != 0):
            res = st.wilcoxon(xa, xb, alternative="two-sided")
            stat, p = float(res.statistic), float(res.pvalue)
        nan = float("nan")
        rows.append({"a": a, "b": b, "n": len(d), "mean_a": float(xa.mean()) if len(d) else nan,
                     "mean_b": float(xb.mean()) if len(d) else nan,
                     "median_difference": float(np.median(d)) if len(d) else nan,
                     "fraction_a_lower": float(np.mean(d < 0)) if len(d) else nan, "statistic": stat, "p_value": p})
    labels = [f"{r['a']} vs {r['b']}" for r in rows]
    data = {k: ("pair", np.asarray([r[k] for r in rows], dtype=np.int64 if k == "n" else float))
            for k in ("n", "mean_a", "mean_b", "median_difference", "fraction_a_lower", "statistic", "p_value")}
    return xr.Dataset(data, coords={"pair": labels, "a": ("pair", [r["a"] for r in rows]),
                                    "b": ("pair", [r["b"] for r in rows])},
                      attrs={"test": "two-sided Wilcoxon signed-rank (scipy.stats.wilcoxon) on per-image MSE"})


# --- figure ----------------------------------------------------------------------------------------------------
