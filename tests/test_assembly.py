"""Export to Brain-Score's presentation × neuroid layout: every value lands where its coordinates say, the
MultiIndex form recovers the labelled original, and the file round-trips through the disk edge."""
import numpy as np
import pytest
import torch
import xarray as xr

from dcnbio import create_model
from dcnbio.extract.assembly import grating_assembly, trajectory_assembly
from dcnbio.extract.responses import grating_responses
from dcnbio.extract.trajectories import extract_trajectories
from dcnbio.errors import ConfigError, DataError
from dcnbio.io import open_results, save_dataset


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("dcn-ode", in_channels=1, width=0.125).eval()


@pytest.fixture(scope="module")
def responses(model):
    return grating_responses(model, "fashion-mnist", [0.0, 0.5, 1.0], sf=[0.1, 0.2], orientation=[0, 60, 120],
                             phase=[0, 180], contrast=[0.5, 1.0], blocks=["block1", "block2"],
                             readout=("centre", "pooled"))


def test_grating_assembly_places_every_value_by_its_coordinates(responses):
    a = grating_assembly(responses, model="m")
    n_stim = 2 * 3 * 2 * 2
    assert a.dims == ("presentation", "neuroid")
    assert a.shape == (n_stim + 1, 3 * responses.sizes["unit"])
    assert len(set(a.neuroid_id.values)) == a.sizes["neuroid"]
    assert len(set(a.stimulus_id.values)) == a.sizes["presentation"]
    rng = np.random.default_rng(1)
    for p, n in zip(rng.integers(0, n_stim, 20), rng.integers(0, a.sizes["neuroid"], 20)):
        c = {k: a[k].values for k in ("sf", "orientation", "phase", "contrast")}
        unit = responses.unit.values[(responses.block.values == a.block.values[n])
                                     & (responses.channel.values == a.channel.values[n])][0]
        expect = responses.response.sel(readout="centre", sf=c["sf"][p], orientation=c["orientation"][p],
                                        phase=c["phase"][p], contrast=c["contrast"][p],
                                        time=a.layer_time.values[n], unit=unit)
        assert float(a.values[p, n]) == float(expect)
        assert str(a.layer.values[n]) == f"{a.block.values[n]}@t={a.layer_time.values[n]:g}"
    # the blank is the last presentation, NaN stimulus parameters
    assert bool(a.is_blank[-1]) and np.isnan(float(a.sf[-1]))
    np.testing.assert_array_equal(a.values[-1], responses.blank.sel(readout="centre").values.ravel())
    # the map position of the centre readout; -1 for pooled units
    assert set(a.channel_y.values) == set(responses.y.values)
    pooled = grating_assembly(responses, model="m", readout="pooled", include_blank=False)
    assert (pooled.channel_y == -1).all() and pooled.sizes["presentation"] == n_stim


def test_the_multiindex_form_recovers_the_responses(responses):
    a = grating_assembly(responses, model="m", include_blank=False)
    m = a.set_index(presentation=["sf", "orientation", "phase", "contrast"], neuroid=["layer_time", "channel",
                                                                                       "block"])
    back = m.unstack("presentation").sel(neuroid=(0.5, 2, "block2"))
    unit = int(responses.unit[(responses.block == "block2") & (responses.channel == 2)][0])
    ref = responses.response.sel(readout="centre", time=0.5, unit=unit).transpose("sf", "orientation", "phase",
                                                                                  "contrast")
    np.testing.assert_array_equal(back.transpose("sf", "orientation", "phase", "contrast").values, ref.values)


def test_assembly_round_trips_through_netcdf(responses, tmp_path):
    a = grating_assembly(responses)
    assert a.model.values[0] == "dcn-ode"           # from the provenance attrs
    save_dataset(a.to_dataset(), tmp_path / "a.nc")
    b = open_results(tmp_path / "a.nc").activations.load()
    np.testing.assert_array_equal(b.values, a.values.astype(np.float32))
    for k in ("stimulus_id", "neuroid_id", "layer", "channel_x", "is_blank"):
        np.testing.assert_array_equal(b[k].values, a[k].values)


def test_trajectory_assembly(model):
    images = torch.randn(5, 1, 28, 28)
    traj = extract_trajectories(model, images, [0.0, 1.0], blocks=["block1", "block3"], labels=[3, 1, 4, 1, 5])
    a = trajectory_assembly(traj, model="m", dataset="fashion-mnist-test")
    h1, h3 = traj["block1"].h, traj["block3"].h
    assert a.shape == (5, h1[0].size + h3[0].size)
    assert list(a.stimulus_id.values[:2]) == ["fashion-mnist-test-0", "fashion-mnist-test-1"]
    assert list(a.label.values) == [3, 1, 4, 1, 5]
    pick = ((a.block == "block3") & (a.layer_time == 1.0) & (a.channel == 1) & (a.channel_y == 2)
            & (a.channel_x == 5)).values
    assert pick.sum() == 1
    np.testing.assert_array_equal(a.values[:, pick][:, 0], h3.sel(time=1.0).isel(channel=1, y=2, x=5).values)


def test_bad_inputs(responses):
    with pytest.raises(ConfigError, match="readout 'peak' is not in the responses"):
        grating_assembly(responses, model="m", readout="peak")
    with pytest.raises(DataError, match="needs grating responses"):
        grating_assembly(xr.Dataset(), model="m")
    with pytest.raises(DataError, match="no trajectories"):
        trajectory_assembly({}, model="m")


def test_responses_written_in_shards_read_back_lazily_and_resume(model, tmp_path):
    from dcnbio.io import save_shards

    sfs = [[0.05, 0.1], [0.2], [0.3, 0.4]]
    calls = []

    def compute(i):
        calls.append(i)
        return grating_responses(model, "fashion-mnist", [0.0, 1.0], sf=sfs[i], orientation=[0, 90],
                                 phase=[0, 180], contrast=[1.0], blocks=["block1"])

    save_shards(compute, 2, tmp_path / "r")                         # a run stopped after two shards
    save_shards(compute, 3, tmp_path / "r")                         # the same call continues
    assert calls == [0, 1, 2]
    lazy = open_results(tmp_path / "r", concat_dim="sf")
    assert lazy.response.chunks is not None                       # dask-backed, nothing read yet
    ref = xr.concat([compute(i).response for i in range(3)], dim="sf")
    np.testing.assert_array_equal(lazy.response.sel(sf=0.2).values, ref.sel(sf=0.2).values.astype(np.float32))
    assert list(lazy.sf.values) == [0.05, 0.1, 0.2, 0.3, 0.4] and lazy.blank.dims == ("readout", "time", "unit")
