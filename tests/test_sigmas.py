"""dcnbio.extract.sigmas: every learned scale of every SRF layer, labelled, against the layers' own parameters."""
import json

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from dcnbio import create_model, list_models, srf_layers
from dcnbio.extract.sigmas import extract_sigmas, stack_sigmas
from dcnbio.stats.sigmas import select, sigma_values
from dcnbio.errors import ConfigError, DataError
from dcnbio.io import open_results, save_dataset
from dcnbio.core.layers.srf import SRFConv2d

SRF_MODELS = [m for m in list_models() if srf_layers(create_model(m, in_channels=1, width=0.125))]
PIXEL_MODELS = [m for m in list_models() if m not in SRF_MODELS]


def tiny(name, **kw):
    return create_model(name, in_channels=1, width=0.125, **kw)


def expected_sigma(layer, t=None):
    """σ straight from the layer's parameters, independently of ``layer.sigma`` (paper Table 3 formulas)."""
    sc = layer.scale
    if hasattr(sc, "log2_scale"):
        return 2.0 ** sc.log2_scale.detach().double().numpy()
    tp = 0.5 * np.clip(t, -0.5, 2.5)  # t' = τ clip(t, -0.5, 2.5), τ = 0.5
    if hasattr(sc, "c"):
        return 2.0 ** (sc.a.item() * tp ** 2 + sc.b.item() * tp + sc.c.item())
    return 2.0 ** (sc.a.item() * tp + sc.b.item())


def test_registry_split_is_meaningful():
    # the parametrized tests below must cover models of every sigma parametrization and the pixel baselines
    assert {"dcn-ode", "dcn-full", "dcn-sigma-ji", "dcn-sigma-t", "dcn-sigma-t2",
            "dcn-sigma-alpha-t"} <= set(SRF_MODELS)
    assert {"resnet-blocks", "odenet"} <= set(PIXEL_MODELS)


@pytest.mark.parametrize("name", SRF_MODELS)
def test_values_equal_layer_parameters(name):
    model = tiny(name)
    ds = extract_sigmas(model)
    layers = srf_layers(model)
    expected_total = 0
    for layer_name, layer in layers.items():
        part = select(ds, layer=layer_name)
        if layer.scale.depends_on_t:
            t = part["time"].values
            np.testing.assert_allclose(t, np.linspace(0, model.config.T, 21), rtol=0, atol=1e-12)
            want = np.array([expected_sigma(layer, ti) for ti in t])
            # σ(t) is computed in float32 parameters: relative rounding ~1e-7 per operation
            np.testing.assert_allclose(part["sigma"].values, want, rtol=1e-6)
            assert np.all(part["out_channel"].values == -1) and np.all(part["in_channel"].values == -1)
        else:
            want = expected_sigma(layer)
            if layer.scale.per_pair:
                got = np.full(want.shape, np.nan)
                got[part["out_channel"].values, part["in_channel"].values] = part["sigma"].values
            else:
                got = part["sigma"].values.reshape(())
                assert part["out_channel"].item() == -1 and part["in_channel"].item() == -1
            # float32 parameters through exp2 in torch vs float64 numpy: relative error ~1e-7
            np.testing.assert_allclose(got, want, rtol=1e-6)
            assert np.all(np.isnan(part["time"].values))
        expected_total += part.sizes["filter"]
        assert np.all(part["order"].values == layer.order)
        assert np.all(part["parametrization"].values == layer.scale_name)
    assert ds.sizes["filter"] == expected_total
    # derived variables, exactly
    np.testing.assert_array_equal(ds["sigma_input"].values, ds["sigma"].values * ds["stride"].values)
    np.testing.assert_allclose(ds["log2_sigma"].values, np.log2(ds["sigma"].values), rtol=0, atol=1e-15)


def test_per_channel_count_matches_formula():
    # σ_ji at width 0.25 on 1-channel input: 2 convs per block with C out and C+1 in (t-channel)
    ds = extract_sigmas(create_model("dcn-sigma-ji", in_channels=1, width=0.25))
    assert ds.sizes["filter"] == 2 * (8 * 9 + 16 * 17 + 32 * 33)


def test_time_channel_flag_marks_last_input_of_block_convs():
    model = tiny("dcn-sigma-ji")
    ds = extract_sigmas(model)
    for layer_name, layer in srf_layers(model).items():
        part = select(ds, layer=layer_name)
        flagged = part["is_time_channel"].values
        assert np.array_equal(flagged, part["in_channel"].values == layer.in_channels - 1)
        assert flagged.sum() == layer.out_channels
    # sigma_values drops them by default, keeps them on request
    assert sigma_values(ds).size == ds.sizes["filter"] - int(ds["is_time_channel"].sum())
    assert sigma_values(ds, time_channel=True).size == ds.sizes["filter"]


def test_no_time_channel_outside_ode_blocks():
    for name in ("dcn-full", "resnet-srf-full"):
        ds = extract_sigmas(tiny(name))
        assert not ds["is_time_channel"].values.any()


def _conv_trace(model, image_size=16):
    """Execution order of SRF layers and the product of strides of every conv run before each (forward hooks)."""
    order, strides, cumulative = [], {}, [1]
    names = {m: n for n, m in model.named_modules()}

    def hook(module, inputs, output):
        if isinstance(module, SRFConv2d) and names[module] not in strides:
            order.append(names[module])
            strides[names[module]] = cumulative[0]
        stride = module.stride if isinstance(module.stride, int) else module.stride[0]
        cumulative[0] *= stride

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, SRFConv2d))]
    with torch.no_grad():
        model(torch.randn(1, 1, image_size, image_size))
    for h in handles:
        h.remove()
    return order, strides


@pytest.mark.parametrize("name", ["dcn-full", "resnet-srf-full", "dcn-sigma-t"])
def test_depth_block_conv_and_stride_follow_execution(name):
    model = tiny(name, solver="euler") if name.startswith("dcn") else tiny(name)
    ds = extract_sigmas(model)
    order, strides = _conv_trace(model)
    for depth, layer_name in enumerate(order):
        part = select(ds, layer=layer_name)
        assert set(part["depth"].values) == {depth}
        assert set(part["stride"].values) == {strides[layer_name]}
        block = layer_name.split(".")[0]
        assert set(part["block"].values) == {block}
        want_conv = next((p for p in layer_name.split(".") if p in ("conv1", "conv2")), "") \
            if block.startswith("block") else ""
        assert set(part["conv"].values) == {want_conv}
    assert len(order) == len(np.unique(ds["depth"].values))


def test_truncation_flag_and_note():
    model = tiny("dcn-sigma-ji")
    ds = extract_sigmas(model)
    # 7x7 window: radius 3 covers ±2σ only while σ <= 1.5
    np.testing.assert_array_equal(ds["truncated"].values, ds["sigma"].values > 1.5)
    assert np.all(ds["radius"].values == 3)
    assert "7x7" in ds.attrs["note"]
    assert ds["truncated"].values.any() and not ds["truncated"].values.all()


def test_sigma_range_clamp_is_reported():
    model = tiny("dcn-sigma-ji", sigma_range=(0.8, 1.25))
    ds = extract_sigmas(model)
    assert ds["sigma"].min() >= 0.8 and ds["sigma"].max() <= 1.25


def test_custom_times_and_bad_times():
    model = tiny("dcn-sigma-t2")
    ds = extract_sigmas(model, times=[0.0, 0.5, 3.0])
    layer = next(iter(srf_layers(model).values()))
    part = select(ds, depth=0)
    np.testing.assert_allclose(part["sigma"].values, [expected_sigma(layer, t) for t in (0.0, 0.5, 3.0)], rtol=1e-6)
    with pytest.raises(ConfigError):
        extract_sigmas(model, times=[np.nan])


@pytest.mark.parametrize("name", PIXEL_MODELS)
def test_model_without_srf_layers_is_a_data_error(name):
    with pytest.raises(DataError, match="no SRF layers"):
        extract_sigmas(tiny(name))


def test_provenance_attrs():
    model = tiny("dcn-ode")
    ds = extract_sigmas(model, info={"path": "x/last.pt", "sha256": "ab", "kind": "last", "epoch": 3, "step": 9})
    assert ds.attrs["model_name"] == "dcn-ode"
    assert json.loads(ds.attrs["model_config"])["scale"] == "shared"
    assert ds.attrs["checkpoint_epoch"] == 3 and ds.attrs["checkpoint_sha256"] == "ab"


def test_stack_labels_round_trip_and_selection(tmp_path):
    a = extract_sigmas(tiny("dcn-sigma-ji"))
    b = extract_sigmas(tiny("dcn-sigma-ji"))
    ds = stack_sigmas([(a, {"state": "trained", "seed": "1"}), (b, {"state": "init", "seed": "1"})])
    assert ds.sizes["filter"] == a.sizes["filter"] + b.sizes["filter"]
    np.testing.assert_array_equal(sigma_values(ds, state="init", time_channel=True), b["sigma"].values)
    sources = json.loads(ds.attrs["sources"])
    assert [s["labels"] for s in sources] == [{"state": "trained", "seed": "1"}, {"state": "init", "seed": "1"}]
    save_dataset(ds, tmp_path / "s.nc")
    with open_results(tmp_path / "s.nc") as back:
        back = back.load()
    assert back["is_time_channel"].dtype == bool and back["truncated"].dtype == bool
    for coord in ("state", "seed", "layer", "block", "conv"):
        assert list(back[coord].values.astype(str)) == list(ds[coord].values.astype(str))
    # data variables are stored as float32: relative rounding 6e-8
    np.testing.assert_allclose(back["sigma"].values, ds["sigma"].values, rtol=1e-7)
    with pytest.raises(ConfigError):
        stack_sigmas([(a, {"state": "trained"}), (b, {"seed": "1"})])
    with pytest.raises(ConfigError, match="no coordinate"):
        sigma_values(ds, colour="red")


def test_stack_requires_parts():
    with pytest.raises(DataError):
        stack_sigmas([])
    assert isinstance(stack_sigmas([(extract_sigmas(tiny("dcn-ode")), {"seed": "0"})]), xr.Dataset)
