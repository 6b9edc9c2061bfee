"""Every registered model: forward, backward, structure, parameter counts and initialisation (SPEC §1-2).

Parametrized over ``dcnbio.list_models()``, so a newly registered model is tested
without editing this file (its parameter count must then be added to ``COUNTS``).
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dcnbio
from dcnbio import ConfigError, create_model, list_models, nfe, ode_blocks, reset_nfe, srf_layers
from dcnbio.core.layers.ode import ODEBlock
from dcnbio.core.layers.scales import create_alpha, create_scale
from dcnbio.core.layers.srf import SRFConv2d
from dcnbio.core.models import ModelConfig, build_model, model_config

MODELS = list_models()
BLOCK_NAMES = ("block1", "block2", "block3")

#: Parameter counts at width 1, 3 input channels, 10 classes.  The first seven are the reference code's
#: (SPEC §2).  The meta-parametrized ones follow from dcn-ode's 428,752 and the six SRF convs inside the
#: blocks (two per block on C+1 -> C channels, C = 32, 64, 128, 6 basis functions):
#:   linear-t σ: a, b instead of one log2 σ: +1 per conv           -> 428,752 + 6
#:   quadratic-t σ: a, b, c: +2 per conv                           -> 428,752 + 12
#:   linear-t σ and α: + 6 and a second α of 6 (C+1) C per conv    -> 428,752 + 6 + 260,736
ALPHA_T_EXTRA = 2 * 6 * (33 * 32 + 65 * 64 + 129 * 128)
COUNTS = {
    "resnet-blocks": 554_634,
    "resnet-srf-blocks": 425_616,
    "resnet-srf-full": 322_707,
    "odenet": 559_562,
    "dcn-ode": 428_752,
    "dcn-full": 325_843,
    "dcn-sigma-ji": 472_202,
    "dcn-sigma-t": 428_752 + 6,
    "dcn-sigma-t2": 428_752 + 12,
    "dcn-sigma-alpha-t": 428_752 + 6 + ALPHA_T_EXTRA,
}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def is_full(config):
    return config.stem == "srf"


def expected_block_sizes(config, side):
    """Spatial side of each block's maps.

    Pixel stem: 3x3 conv without padding (side - 2), then 4x4 stride-2 convs with padding 1 (floor(s / 2)):
    28 -> 26, 13, 6 and 32 -> 30, 15, 7 (SPEC §2).  SRF stem ("same"): side unchanged; SRF stride-2 with
    padding r on a (2r+1) kernel: floor((s - 1) / 2) + 1 = ceil(s / 2): 28 -> 28, 14, 7 and 32 -> 32, 16, 8.
    """
    if is_full(config):
        s1 = side
        return [s1, math.ceil(s1 / 2), math.ceil(math.ceil(s1 / 2) / 2)]
    s1 = side - 2
    return [s1, s1 // 2, s1 // 4]


def cancelled_parameters(model):
    """Parameters whose effect on the loss is exactly zero at this width, and why.

    GroupNorm with one channel per group (every GN at width 0.125: 4, 8, 16 channels, min(32, C) groups)
    subtracts each channel's mean.  A parameter that only adds a per-channel constant to a state whose
    every consumer is such a GN cannot change the output:

    * the bias of the conv feeding a block (stem, stride-2 convs): the block sees its state only through
      its first GN (the residual/ODE update is shift-invariant) and passes the shift on to the next GN;
    * in an ODE block, the bias of ``norm3`` (f's last GN) adds ``β t`` to the state: same argument;
    * ODE-Net's conv biases on t ⊕ h, each followed by a per-channel GN inside f.

    Such parameters get a gradient that is zero up to float32 rounding.
    """
    def per_channel(gn):
        return gn.num_groups == gn.num_channels

    cancelled = set()
    feeders = {"block1": ("stem", model.down1[0]), "block2": ("down1.2", model.down2[0]),
               "block3": ("down2.2", model.head[0])}
    for name, block in model.blocks().items():
        feeder, next_gn = feeders[name]
        inner = block.func if isinstance(block, ODEBlock) else block
        if not (per_channel(inner.norm1) and per_channel(next_gn)):
            continue
        conv = model.get_submodule(feeder)
        if isinstance(conv, nn.Conv2d) and conv.bias is not None:
            cancelled.add(f"{feeder}.bias")
        if isinstance(block, ODEBlock):
            cancelled.add(f"{name}.func.norm3.bias")
            for k, gn in (("1", inner.norm2), ("2", inner.norm3)):
                conv = inner.get_submodule(f"conv{k}.conv")
                if isinstance(conv, nn.Conv2d) and conv.bias is not None and per_channel(gn):
                    cancelled.add(f"{name}.func.conv{k}.conv.bias")
    return cancelled


def run_and_record_sizes(model, x, labels):
    """Forward + backward; returns logits and the (H, W) of each block's output."""
    sizes = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda m, args, out, name=name: sizes.__setitem__(name, tuple(out.shape[-2:]))) for name in BLOCK_NAMES]
    logits = model(x)
    F.cross_entropy(logits, labels).backward()
    for h in hooks:
        h.remove()
    return logits, sizes


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_every_model(name, in_channels):
    """Forward, backward (adjoint for ODE models), block sizes and which parameters get a gradient.

    Run in float64 so that "no gradient" (rounding level, ~1e-16 of the largest gradient) and "a
    gradient" (a single scalar σ parameter can be small by chance: smallest seen ~1e-5) are
    separated by ten orders of magnitude; float32 is checked separately below.
    """
    model = create_model(name, in_channels=in_channels, width=0.125).double()
    assert model.config.channels == (4, 8, 16)
    x = torch.randn(2, in_channels, 28, 28, dtype=torch.float64)
    logits, sizes = run_and_record_sizes(model, x, torch.tensor([3, 7]))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    expected = expected_block_sizes(model.config, 28)
    assert [sizes[b] for b in BLOCK_NAMES] == [(s, s) for s in expected]
    if not is_full(model.config):
        assert expected == [26, 13, 6]

    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), "missing or non-finite grad"
    scale = max(float(g.abs().max()) for g in grads.values())
    cancelled = cancelled_parameters(model)
    for n, g in grads.items():
        size = float(g.abs().max())
        if n in cancelled:
            # zero up to float64 rounding accumulated through network and solver (measured ≤ 1e-15 scale)
            assert size <= 1e-10 * scale, f"{n} should be cancelled by a per-channel GroupNorm"
        else:
            assert size > 1e-10 * scale, f"{n} gets no gradient"

    blocks = ode_blocks(model)
    if model.config.block == "ode":
        counts = nfe(model)
        for b in BLOCK_NAMES:
            fwd, bwd = counts[b]["forward"], counts[b]["backward"]
            # dopri5: 2 + 6 per attempted step, forward and (adjoint, the default) backward
            assert fwd > 2 and (fwd - 2) % 6 == 0
            assert bwd > 2 and (bwd - 2) % 6 == 0
        reset_nfe(model)
        assert all(c == {"forward": 0, "backward": 0} for c in nfe(model).values())
    else:
        assert blocks == {} and nfe(model) == {}


@pytest.mark.parametrize("name", MODELS)
def test_float32_forward_backward_is_finite(name):
    """The dtype training uses: finite logits and a finite gradient for every parameter."""
    model = create_model(name, in_channels=1, width=0.125)
    logits = model(torch.randn(2, 1, 28, 28))
    assert logits.dtype == torch.float32 and logits.shape == (2, 10) and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([1, 2])).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("name", ["dcn-ode", "resnet-srf-full"])
def test_block_sizes_on_32x32(name):
    model = create_model(name, in_channels=3, width=0.125)
    logits, sizes = run_and_record_sizes(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 9]))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    expected = expected_block_sizes(model.config, 32)
    assert [sizes[b] for b in BLOCK_NAMES] == [(s, s) for s in expected]
    assert expected == ([32, 16, 8] if is_full(model.config) else [30, 15, 7])


@pytest.mark.parametrize("name", MODELS)
def test_ode_blocks_and_srf_layers_follow_the_config(name):
    model = create_model(name, in_channels=1, width=0.125)
    c = model.config
    c1, c2, c3 = c.channels
    blocks = ode_blocks(model)
    assert list(blocks) == (list(BLOCK_NAMES) if c.block == "ode" else [])
    for block in blocks.values():
        assert (block.T, block.solver, block.rtol, block.atol, block.adjoint) == (c.T, c.solver, c.rtol,
                                                                                  c.atol, c.adjoint)
    expected = {}  # qualified name -> (in, out, stride, scale, alpha)
    if c.stem == "srf":
        expected["stem"] = (1, c1, 1, "shared", "static")
    if c.conv == "srf":
        for b, ch in zip(BLOCK_NAMES, (c1, c2, c3)):
            for k in ("1", "2"):
                if c.block == "ode":  # convs on t ⊕ h: one extra input channel
                    expected[f"{b}.func.conv{k}.conv"] = (ch + 1, ch, 1, c.scale, c.alpha)
                else:
                    expected[f"{b}.conv{k}"] = (ch, ch, 1, c.scale, c.alpha)
    if c.downsample == "srf":
        expected["down1.2"] = (c1, c2, 2, "shared", "static")
        expected["down2.2"] = (c2, c3, 2, "shared", "static")
    layers = srf_layers(model)
    assert set(layers) == set(expected)
    for qual, layer in layers.items():
        assert isinstance(layer, SRFConv2d)
        got = (layer.in_channels, layer.out_channels, layer.stride, layer.scale_name, layer.alpha_name)
        assert got == expected[qual], qual


#: SPEC §2 / Table 1, 3, 4: (block, conv, stem, downsample, scale, alpha, act, T) of each model
VARIANTS = {
    "resnet-blocks": ("res", "pixel", "pixel", "pixel", "shared", "static", "relu", 2.0),
    "resnet-srf-blocks": ("res", "srf", "pixel", "pixel", "shared", "static", "relu", 2.0),
    "resnet-srf-full": ("res", "srf", "srf", "srf", "shared", "static", "relu", 2.0),
    "odenet": ("ode", "pixel", "pixel", "pixel", "shared", "static", "relu", 1.0),
    "dcn-ode": ("ode", "srf", "pixel", "pixel", "shared", "static", "celu", 2.0),
    "dcn-full": ("ode", "srf", "srf", "srf", "shared", "static", "celu", 2.0),
    "dcn-sigma-ji": ("ode", "srf", "pixel", "pixel", "per-channel", "static", "celu", 2.0),
    "dcn-sigma-t": ("ode", "srf", "pixel", "pixel", "linear-t", "static", "celu", 2.0),
    "dcn-sigma-t2": ("ode", "srf", "pixel", "pixel", "quadratic-t", "static", "celu", 2.0),
    "dcn-sigma-alpha-t": ("ode", "srf", "pixel", "pixel", "linear-t", "linear-t", "celu", 2.0),
}


@pytest.mark.parametrize("name", MODELS)
def test_registry_entries_match_the_paper(name):
    c = create_model(name, width=0.125).config
    assert (c.block, c.conv, c.stem, c.downsample, c.scale, c.alpha, c.act, c.T) == VARIANTS[name]
    # shared defaults: dopri5 at rtol = atol = 1e-3 with the adjoint, second-order N-jets
    assert (c.solver, c.rtol, c.atol, c.adjoint, c.order) == ("dopri5", 1e-3, 1e-3, True, 2)


@pytest.mark.parametrize("name", MODELS)
def test_parameter_counts_at_full_width(name):
    three = create_model(name, in_channels=3, num_classes=10, width=1.0)
    one = create_model(name, in_channels=1, num_classes=10, width=1.0)
    assert n_params(three) == COUNTS[name]
    # one input channel fewer by two: a 3x3 pixel stem loses 2·32·9 = 576 weights, an SRF stem
    # 2·32·6 = 384 coefficients (SPEC §2)
    assert n_params(three) - n_params(one) == (384 if is_full(three.config) else 576)


def test_registry_lists_the_paper_models():
    assert set(MODELS) == set(COUNTS) == set(VARIANTS)
    assert len(MODELS) == len(set(MODELS))


def test_config_round_trip_rebuilds_the_same_architecture():
    config = model_config("dcn-sigma-ji", in_channels=1, width=0.25, T=1.5, solver="rk4")
    rebuilt = ModelConfig.from_dict(config.to_dict())
    assert rebuilt == config
    assert n_params(build_model(rebuilt)) == n_params(create_model("dcn-sigma-ji", in_channels=1, width=0.25))
    assert ode_blocks(build_model(rebuilt))["block2"].T == 1.5


# --- initialisation (SPEC §1, App. A.2) -----------------------------------------------------------

def assert_normal_sample(x, mean, sd, what):
    """Mean and SD of n iid N(mean, sd²) draws, within 5 standard errors (false alarm ~ 6e-7 each).

    SE of the mean = sd / √n; SE of the sample SD ≈ sd / √(2n).
    """
    x = x.detach().double().flatten()
    n = x.numel()
    assert abs(float(x.mean()) - mean) < 5 * sd / math.sqrt(n), f"{what}: mean {float(x.mean())}"
    assert abs(float(x.std()) - sd) < 5 * sd / math.sqrt(2 * n), f"{what}: SD {float(x.std())}"


def test_init_of_per_channel_sigma_and_alpha():
    layer = SRFConv2d(129, 128, scale="per-channel")  # block 3 of dcn-sigma-ji: 16,512 scales
    log2_sigma = torch.log2(layer.sigma().detach())
    assert_normal_sample(log2_sigma, 0.0, 2 / 3, "log2 σ_ji")
    # σ is log-normal: median 1 px (SE of the median ≈ 1.25 sd / √n in log2), SD of ln σ = (2/3) ln 2 = 0.462
    n = log2_sigma.numel()
    assert abs(float(log2_sigma.median())) < 5 * 1.2533 * (2 / 3) / math.sqrt(n)
    assert abs(float(torch.log(layer.sigma().detach()).std()) - 0.462) < 5 * 0.462 / math.sqrt(2 * n)
    assert_normal_sample(layer.alpha(), 0.0, 0.1, "α")  # 99,072 coefficients


def test_init_of_meta_parametrizations():
    """One scalar (a, b, c) per layer: sample many layers (3000 draws of each)."""
    draws = 3000
    lin = [create_scale("linear-t", 1, 1) for _ in range(draws)]
    assert_normal_sample(torch.stack([s.a for s in lin]), 0.0, 2 / 3, "linear-t a")
    assert_normal_sample(torch.stack([s.b for s in lin]), 0.0, 0.1, "linear-t b")
    quad = [create_scale("quadratic-t", 1, 1) for _ in range(draws)]
    assert_normal_sample(torch.stack([s.a for s in quad]), 0.0, 2 / 3, "quadratic-t a")
    assert_normal_sample(torch.stack([s.b for s in quad]), 0.0, 2 / 3, "quadratic-t b")
    assert_normal_sample(torch.stack([s.c for s in quad]), 0.0, 0.1, "quadratic-t c")
    shared = [create_scale("shared", 1, 1) for _ in range(draws)]
    assert_normal_sample(torch.stack([s.log2_scale for s in shared]), 0.0, 2 / 3, "shared log2 σ")
    alpha = create_alpha("linear-t", 64, 65, 6)
    assert_normal_sample(alpha.a, 0.0, 0.1, "α(t) a")
    assert_normal_sample(alpha.b, 0.0, 0.05, "α(t) b")


# --- meta-parametrized σ(t) inside the model ------------------------------------------------------

@pytest.mark.parametrize("name", ["dcn-sigma-t", "dcn-sigma-t2", "dcn-sigma-alpha-t"])
def test_meta_parametrized_layers_see_the_solver_time(name):
    model = create_model(name, in_channels=1, width=0.125)
    layer = model.block1.func.conv1.conv
    assert layer.depends_on_t
    seen = []
    layer.register_forward_pre_hook(lambda m, args: seen.append(float(args[1])))
    with torch.no_grad():
        model(torch.randn(1, 1, 28, 28))
    # called with the solver's stage times, once per evaluation, from 0 to at least T = 2: dopri5's last
    # step usually ends beyond T (the state at T is interpolated), which is why t is clipped at 2.5, not 2
    assert len(seen) == model.block1.nfe_forward
    assert min(seen) == 0.0 and max(seen) >= 2.0 - 1e-6
    # σ at t and at its clipped value agree outside [-0.5, 2.5]; inside, σ moves with t (a ≠ 0 a.s.)
    assert torch.equal(layer.sigma(3.0), layer.sigma(2.5))
    assert torch.equal(layer.sigma(-1.0), layer.sigma(-0.5))
    assert not torch.equal(layer.sigma(0.0), layer.sigma(2.0))


# --- bad arguments --------------------------------------------------------------------------------

def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        create_model("dcn-odee")
    message = str(info.value)
    assert "dcn-odee" in message and "\n" not in message
    assert all(name in message for name in MODELS)


@pytest.mark.parametrize("kwargs, match", [
    (dict(width=0), "width"),
    (dict(width=-0.5), "width"),
    (dict(width="wide"), "width"),
    (dict(in_channels=0), "in_channels"),
    (dict(num_classes=1.5), "num_classes"),
    (dict(order=-1), "order"),
    (dict(order=1.5), "order"),
    (dict(solver="rk45"), "solver"),
    (dict(scale="per-pixel"), "scale"),
    (dict(T=0.0), "T"),
    (dict(rtol=0.0), "rtol"),
    (dict(sigma_range=(2.0, 1.0)), "sigma_range"),
    (dict(depth=3), "depth"),
])
def test_bad_model_arguments_raise_one_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match) as info:
        create_model("dcn-ode", **kwargs)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, dcnbio.DcnbioError)


def test_unknown_override_lists_valid_fields():
    with pytest.raises(ConfigError) as info:
        create_model("dcn-ode", tolerance=1e-3)
    assert "tolerance" in str(info.value) and "rtol" in str(info.value)
