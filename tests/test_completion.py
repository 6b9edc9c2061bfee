"""Pattern completion: masks, D(t) against hand-computed values, and the sweep against independent computations."""
import numpy as np
import pytest
import torch
import xarray as xr

from dcnbio import create_model
from dcnbio.extract.completion import (NORMALIZERS, apply_center_mask, check_mask_sizes, compute_differences,
                                        compute_pattern_completion, mask_window)
from dcnbio.plots import plot_differences, plot_masked_accuracy
from dcnbio.extract.trajectories import extract_trajectories
from dcnbio.errors import ConfigError, DataError

DIMS = ("image", "time", "channel", "y", "x")


def states(values):
    return xr.DataArray(np.asarray(values, dtype=np.float64), dims=DIMS)


# --- D(t) ------------------------------------------------------------------------------------------------------------

def test_differences_hand_computed():
    # one image, two times, one channel, a 1x2 map
    intact = states([[[[[1.0, -2.0]]], [[[3.0, 4.0]]]]])
    masked = states([[[[[1.0, 0.0]]], [[[2.0, 4.0]]]]])
    # sum|diff| = (2, 1); sum|intact| = (3, 7); 2 elements
    d = compute_differences(intact, masked)
    assert d.dims == ("normalizer", "image", "time")
    np.testing.assert_allclose(d.sel(normalizer="amplitude_t").values, [[2 / 3, 1 / 7]], rtol=1e-15)
    np.testing.assert_allclose(d.sel(normalizer="amplitude_0").values, [[2 / 3, 1 / 3]], rtol=1e-15)
    np.testing.assert_allclose(d.sel(normalizer="per_element").values, [[1.0, 0.5]], rtol=1e-15)


def test_differences_sum_over_channels_and_space_per_image():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4, 2, 3, 5))
    b = rng.normal(size=a.shape)
    d = compute_differences(states(a), states(b))
    for i in range(3):
        for t in range(4):  # plain loops: an independent evaluation of the definitions
            diff = sum(abs(a[i, t, c, y, x] - b[i, t, c, y, x]) for c in range(2) for y in range(3) for x in range(5))
            amp_t = sum(abs(a[i, t, c, y, x]) for c in range(2) for y in range(3) for x in range(5))
            amp_0 = sum(abs(a[i, 0, c, y, x]) for c in range(2) for y in range(3) for x in range(5))
            # tolerance: float64 summation order only
            np.testing.assert_allclose(d.values[:, i, t], [diff / amp_t, diff / amp_0, diff / 30], rtol=1e-12)


def test_differences_reject_bad_input():
    a = states(np.zeros((1, 2, 1, 1, 2)))
    with pytest.raises(DataError, match="dims"):
        compute_differences(a.transpose("time", ...), a)
    with pytest.raises(DataError, match="shape"):
        compute_differences(a, a.isel(x=[0]))


# --- masks -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size,n,top", [(5, 2, 1), (5, 3, 1), (28, 6, 11), (28, 7, 10), (32, 14, 9), (4, 4, 0)])
def test_mask_window_is_centred(size, n, top):
    assert mask_window(size, size, n) == (top, top)
    # centred: equal margins, or one more below/right when they cannot be equal
    assert (size - n - top) - top in (0, 1)


def test_apply_center_mask_sets_exactly_the_window_per_channel():
    x = torch.arange(2 * 2 * 5 * 6, dtype=torch.float32).reshape(2, 2, 5, 6)
    out = apply_center_mask(x, 3, fill=[-1.0, -2.0])
    inside = torch.zeros(5, 6, dtype=torch.bool)
    inside[1:4, 1:4] = True  # top = (5 - 3)//2 = 1, left = (6 - 3)//2 = 1
    assert torch.equal(out[:, 0][:, inside], torch.full((2, 9), -1.0))
    assert torch.equal(out[:, 1][:, inside], torch.full((2, 9), -2.0))
    assert torch.equal(out[:, :, ~inside], x[:, :, ~inside])
    assert torch.equal(x, torch.arange(2 * 2 * 5 * 6, dtype=torch.float32).reshape(2, 2, 5, 6))  # input untouched
    assert torch.equal(apply_center_mask(x, 0, fill=5.0), x)


@pytest.mark.parametrize("sizes,match", [([29], "larger than the 28x28 image"), ([-1], ">= 0"),
                                         ([2.5], "integer"), ([4, 4], "repeat"), ([], "no mask sizes"),
                                         (["6"], "integer")])
def test_bad_mask_sizes_one_line(sizes, match):
    with pytest.raises(ConfigError, match=match) as exc:
        check_mask_sizes(sizes, 28, 28)
    assert "\n" not in str(exc.value)


def test_mask_larger_than_image_rejected_by_the_sweep():
    model = create_model("dcn-ode", in_channels=1, width=0.125)
    with pytest.raises(ConfigError, match="larger than the 28x28 image"):
        compute_pattern_completion(model, torch.zeros(1, 1, 28, 28), mask_sizes=[4, 30])
    with pytest.raises(ConfigError, match="one value or one per channel"):
        apply_center_mask(torch.zeros(1, 1, 6, 6), 2, fill=[0.0, 1.0])


# --- the sweep -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dcn():
    torch.manual_seed(3)
    return create_model("dcn-ode", in_channels=1, width=0.125)


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(4)
    return torch.randn(3, 1, 28, 28)


@pytest.fixture(scope="module")
def sweep(dcn, images):
    return compute_pattern_completion(dcn, images, [1, 2, 3], [0, 6], fill=-0.81, n_times=3, batch_size=3,
                                      n_examples=2, example_mask=6)


def test_zero_mask_gives_exactly_zero(sweep):
    # n = 0 solves the same images in the same batch: bitwise the same states, so D is 0 with no tolerance
    assert float(np.abs(sweep["D"].sel(mask=0)).max()) == 0.0
    assert np.array_equal(sweep["prediction"].sel(mask=0).values, sweep["prediction_intact"].values)


def test_sweep_equals_trajectories_computed_separately(dcn, images, sweep):
    times = [0.0, 1.0, 2.0]
    intact = extract_trajectories(dcn, images, times, batch_size=3)
    masked = extract_trajectories(dcn, apply_center_mask(images, 6, -0.81), times, batch_size=3)
    for b in ("block1", "block2", "block3"):
        expected = compute_differences(intact[b].h, masked[b].h)
        # exact: the same solves on the same batches; D is stored as float32
        np.testing.assert_allclose(sweep["D"].sel(mask=6, block=b).values, expected.values.astype(np.float32),
                                   rtol=0, atol=0)
    with torch.no_grad():
        assert np.array_equal(sweep["prediction_intact"].values, dcn(images).argmax(1).numpy())
        assert np.array_equal(sweep["prediction"].sel(mask=6).values,
                              dcn(apply_center_mask(images, 6, -0.81)).argmax(1).numpy())
    h = intact["block1"].h.values
    hm = masked["block1"].h.values
    for e in range(2):
        ch = int(np.abs(h[e, 0] - hm[e, 0]).sum(axis=(1, 2)).argmax())  # channel the mask changes most at t = 0
        assert int(sweep["example_channel"].values[e]) == ch
        assert np.array_equal(sweep["example_intact"].values[e], h[e, :, ch])
        assert np.array_equal(sweep["example_masked"].values[e], hm[e, :, ch])


def test_block1_input_difference_is_the_stem_difference(dcn, images, sweep):
    # at t = 0 block 1's state is the stem output: D(0) needs no solver at all
    with torch.no_grad():
        a = dcn.stem(images).double()
        b = dcn.stem(apply_center_mask(images, 6, -0.81)).double()
    diff = (a - b).abs().sum(dim=(1, 2, 3))
    expected = (diff / a[0].numel()).numpy()
    # tolerance: float32 convolutions and float32 storage of D
    np.testing.assert_allclose(sweep["D"].sel(mask=6, block="block1", normalizer="per_element", time=0.0).values,
                               expected, rtol=1e-5)
    # at t = 0 the two amplitude normalisers coincide
    np.testing.assert_array_equal(sweep["D"].sel(mask=6, block="block1", normalizer="amplitude_t", time=0.0).values,
                                  sweep["D"].sel(mask=6, block="block1", normalizer="amplitude_0", time=0.0).values)


def test_summary_statistics_and_accuracy(sweep):
    D = sweep["D"].values.astype(np.float64)
    # tolerance: D is stored as float32, the mean and SD are computed from float64
    np.testing.assert_allclose(sweep["D_mean"].values, D.mean(axis=3), rtol=1e-6)
    np.testing.assert_allclose(sweep["D_sd"].values, D.std(axis=3, ddof=1), rtol=1e-5, atol=1e-7)
    assert list(sweep["normalizer"].values) == list(NORMALIZERS)
    labels = np.array([1, 2, 3])
    np.testing.assert_array_equal(sweep["accuracy"].values, (sweep["prediction"].values == labels).mean(axis=1))
    assert float(sweep["accuracy_intact"]) == float(np.mean(sweep["prediction_intact"].values == labels))
    assert sweep["nfe_masked"].shape == (2, 1, 3) and (sweep["nfe_masked"].values >= 8).all()  # ≥ 1 dopri5 step


def test_resnet_uses_block_input_and_output():
    torch.manual_seed(5)
    model = create_model("resnet-blocks", in_channels=1, width=0.125)
    x = torch.randn(2, 1, 28, 28)
    ds = compute_pattern_completion(model, x, mask_sizes=[4], n_examples=0, batch_size=2)
    assert list(ds["time"].values) == [0.0, 1.0] and ds.attrs["block_type"] == "res"
    assert ds.sizes["ode_block"] == 0 and "example_intact" not in ds
    with torch.no_grad():
        a_in, b_in = model.stem(x), model.stem(apply_center_mask(x, 4))
        a_out, b_out = model.block1(a_in), model.block1(b_in)
    expected = [((a_in - b_in).abs().sum((1, 2, 3)) / a_in.abs().sum((1, 2, 3))).numpy(),
                ((a_out - b_out).abs().sum((1, 2, 3)) / a_in.abs().sum((1, 2, 3))).numpy()]
    # tolerance: float32 network, float32 storage
    np.testing.assert_allclose(ds["D"].sel(mask=4, block="block1", normalizer="amplitude_0").values,
                               np.stack(expected, axis=1), rtol=1e-5)


def test_bad_arguments(dcn, images):
    with pytest.raises(ConfigError, match="example mask 5"):
        compute_pattern_completion(dcn, images, mask_sizes=[4, 6], example_mask=5)
    with pytest.raises(ConfigError, match="n_times"):
        compute_pattern_completion(dcn, images, mask_sizes=[4], n_times=1)
    with pytest.raises(DataError, match="labels"):
        compute_pattern_completion(dcn, images, [1, 2], mask_sizes=[4])


def test_figures_show_the_computed_means(sweep):
    results = {"a": sweep, "b": sweep}
    fig = plot_differences(results, 6)
    axes = np.array(fig.axes).reshape(3, 2)
    line = axes[1, 0].get_lines()[0]  # row amplitude_0, model a, block1
    np.testing.assert_array_equal(line.get_ydata(), sweep["D_mean"].sel(mask=6, block="block1",
                                                                        normalizer="amplitude_0").values)
    fig = plot_masked_accuracy(results)
    x, y = fig.axes[0].get_lines()[0].get_data()
    assert list(x) == [0, 6]  # mask 0 computed: no separate intact point added
    np.testing.assert_allclose(y, 100 * sweep["accuracy"].values)
    with pytest.raises(DataError, match="mask size 4"):
        plot_differences(results, 4)
