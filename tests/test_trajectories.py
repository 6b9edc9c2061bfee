"""dcnbio.extract.trajectories: states from the solve, at the requested times, with per-batch NFE."""
import copy

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.integrate import solve_ivp

from dcnbio import create_model, nfe, reset_nfe
from dcnbio.extract.trajectories import concat_batches, extract_trajectories, iter_trajectories
from dcnbio.errors import ConfigError, DataError
from dcnbio.io import open_results, save_dataset, save_results

TIMES = [0.0, 0.5, 1.0, 1.5, 2.0]


@pytest.fixture(scope="module")
def dcn():
    torch.manual_seed(0)
    return create_model("dcn-ode", in_channels=1, width=0.125).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def traj(dcn, images):
    # batches [0, 1] and [2]
    return extract_trajectories(dcn, images, TIMES, labels=[3, 1, 4], indices=[10, 11, 12], batch_size=2)


def block_inputs(model, x):
    """Input and output of every block, by running the stages one after another (independently of the code
    under test)."""
    io = {}
    with torch.no_grad():
        for name, module in model.stages()[:-1]:
            y = module(x)
            if name.startswith("block"):
                io[name] = (x, y)
            x = y
    return io


def test_layout(traj):
    assert list(traj) == ["block1", "block2", "block3"]
    shapes = {"block1": (4, 26), "block2": (8, 13), "block3": (16, 6)}  # width 1/8 of 32/64/128; 28 -> 26, 13, 6
    for name, ds in traj.items():
        c, s = shapes[name]
        assert ds.h.dims == ("image", "time", "channel", "y", "x")
        assert ds.h.shape == (3, 5, c, s, s) and ds.h.dtype == np.float32
        np.testing.assert_array_equal(ds.time, TIMES)
        np.testing.assert_array_equal(ds.image, [10, 11, 12])
        np.testing.assert_array_equal(ds.label, [3, 1, 4])
        np.testing.assert_array_equal(ds.batch, [0, 0, 1])
        assert ds.attrs["block"] == name and ds.attrs["solver"] == "dopri5"
        assert ds.attrs["rtol"] == 1e-3 and ds.attrs["atol"] == 1e-3 and ds.attrs["T"] == 2.0
        assert np.isfinite(ds.h.values).all()


def test_end_points_equal_block_input_and_forward_output(dcn, images, traj):
    # Exact equality, no tolerance: torchdiffeq's dopri5 chooses its steps independently of the output grid and
    # returns h(T) from the same interpolant of the same last accepted step in the plain forward pass (grid
    # [0, T]) and in the trajectory solve (grid 0, 0.5, ..., T), so both are the same float32 operations.
    # h(0) is the initial state itself.  The per-batch comparison matters: the steps depend on the batch.
    for sl in (slice(0, 2), slice(2, 3)):
        io = block_inputs(dcn, images[sl])
        for name, (h_in, h_out) in io.items():
            h = torch.from_numpy(traj[name].h.values[sl])
            torch.testing.assert_close(h[:, 0], h_in, rtol=0, atol=0)
            torch.testing.assert_close(h[:, -1], h_out, rtol=0, atol=0)


def test_times_before_T_still_feed_forward_outputs(dcn, images, traj):
    # Requesting times that stop before T must not change what later blocks receive (the solve runs on to T).
    short = extract_trajectories(dcn, images[:2], [0.0, 0.5], batch_size=2)
    for name in traj:
        np.testing.assert_array_equal(short[name].h.values, traj[name].h.values[:2, :2])
        # the NFE is that of the whole [0, T] solve, not of [0, 0.5]
        np.testing.assert_array_equal(short[name].nfe.values, traj[name].nfe.values[:2])


def test_interior_times_match_an_independent_solver(dcn):
    # Reference: scipy's DOP853 at rtol = atol = 1e-6 on the same dynamics in float64 (its own error is < 1e-5,
    # measured against rtol = atol = 1e-8).  Our solve runs at the model's rtol = atol = 1e-3: dopri5 keeps the
    # RMS over all components of each accepted step's local error below atol + rtol|h| (0.1-0.5 % of the state
    # here), and over the ~5 accepted steps of a block the errors add up and grow with the dynamics: measured
    # global RMS error ~1 % of RMS(h) at t = 2.  Bound: 5 % of RMS(h).  Power: states one grid step (0.5) apart
    # differ by 25-80 % of RMS(h), so a wrong time would fail (asserted below).
    x = torch.randn(1, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    ds = extract_trajectories(dcn, x, TIMES, blocks=["block1"])["block1"]
    assert list(ds) == ["h", "nfe"]
    h = ds.h.values[0].astype(np.float64)
    with torch.no_grad():
        h0 = dcn.stem(x).double()
        f = copy.deepcopy(dcn.block1.func).double()

        def rhs(t, y):
            return f(torch.tensor(t, dtype=torch.float64), torch.from_numpy(y).view(h0.shape)).flatten().numpy()

        sol = solve_ivp(rhs, (0.0, 2.0), h0.flatten().numpy(), method="DOP853", t_eval=TIMES,
                        rtol=1e-6, atol=1e-6)
    assert sol.success
    ref = sol.y.T.reshape(h.shape)

    def rms(a):
        return np.sqrt((a ** 2).mean(axis=(1, 2, 3)))

    assert np.abs(h[0] - ref[0]).max() == 0.0  # h(0) is the block input itself
    rel = rms(h - ref) / rms(ref)
    assert (rel < 0.05).all(), rel
    assert (rms(np.diff(ref, axis=0)) / rms(ref)[1:] > 0.2).all()


def test_nfe_is_the_batch_forward_nfe(dcn, images, traj):
    # Independent count: the model's own forward pass over the same batch, counted by the blocks.
    for sl in (slice(0, 2), slice(2, 3)):
        reset_nfe(dcn)
        with torch.no_grad():
            dcn(images[sl])
        for name, counts in nfe(dcn).items():
            assert (traj[name].nfe.values[sl] == counts["forward"]).all()
            assert counts["forward"] >= 14  # dopri5: 2 + 6 per attempted step, and it takes at least 2 steps
    reset_nfe(dcn)


def test_model_mode_restored_and_counters_grow_like_a_forward_pass(dcn, images, traj):
    dcn.train()
    reset_nfe(dcn)
    try:
        extract_trajectories(dcn, images[:2], [0.0, 2.0], batch_size=2)
        assert dcn.training
        # the counters grew by exactly the NFE of the one batch solved (the same batch as in `traj`)
        assert {name: c["forward"] for name, c in nfe(dcn).items()} == \
            {name: int(ds.nfe[0]) for name, ds in traj.items()}
    finally:
        dcn.eval()
        reset_nfe(dcn)


@pytest.mark.parametrize("times, cols", [([2.0], [4]), ([0.0], [0]), ([0.5, 1.99999999], [1, 4])])
def test_single_and_edge_times(dcn, images, traj, times, cols):
    # [T] alone, [0] alone (the solve still runs to T), and a last time that rounds to T in float32
    one = extract_trajectories(dcn, images[:2], times, blocks=["block3"], batch_size=2)["block3"]
    np.testing.assert_array_equal(one.h.values, traj["block3"].h.values[:2, cols])
    np.testing.assert_array_equal(one.nfe.values, traj["block3"].nfe.values[:2])


def test_iterator_yields_per_batch_datasets(dcn, images, traj):
    batches = list(iter_trajectories(dcn, images, TIMES, blocks=["block2"], labels=[3, 1, 4],
                                     indices=[10, 11, 12], batch_size=2))
    assert [b["block2"].sizes["image"] for b in batches] == [2, 1]
    xr.testing.assert_identical(concat_batches([b["block2"] for b in batches]), traj["block2"])


def test_single_file_and_shards_agree(dcn, images, traj, tmp_path):
    # one file with a group per block
    save_results(traj, tmp_path / "all.nc")
    back = open_results(tmp_path / "all.nc")
    for name in traj:
        xr.testing.assert_identical(back[name].load(), traj[name])
    # one shard per batch per block, opened lazily with dask
    for k, batch in enumerate(iter_trajectories(dcn, images, TIMES, labels=[3, 1, 4], indices=[10, 11, 12],
                                                batch_size=2)):
        for name, ds in batch.items():
            (tmp_path / "shards" / name).mkdir(parents=True, exist_ok=True)
            save_dataset(ds, tmp_path / "shards" / name / f"shard-{k:05d}.nc")
    lazy = open_results(tmp_path / "shards")
    for name in traj:
        assert lazy[name].h.chunks is not None
        xr.testing.assert_identical(lazy[name].compute(), traj[name])


def test_resnet_trajectory_is_input_and_output(images):
    torch.manual_seed(3)
    model = create_model("resnet-blocks", in_channels=1, width=0.125).eval()
    traj = extract_trajectories(model, images, TIMES, batch_size=2)
    io = block_inputs(model, images)
    for name, (h_in, h_out) in io.items():
        ds = traj[name]
        np.testing.assert_array_equal(ds.time, [0.0, 1.0])
        assert ds.attrs["block_type"] == "res" and (ds.nfe.values == 0).all()
        # batch-independent discrete blocks: equal up to float32 rounding of batched vs whole-set convolutions
        torch.testing.assert_close(torch.from_numpy(ds.h.values[:, 0]), h_in, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.from_numpy(ds.h.values[:, 1]), h_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad, error, match", [
    (lambda x: x.repeat(1, 3, 1, 1), DataError, "3 channel"),
    (lambda x: x[0], DataError, "shape"),
    (lambda x: x.index_put((torch.tensor([1]), torch.tensor([0]), torch.tensor([5]), torch.tensor([5])),
                           torch.tensor(float("nan"))), DataError, "non-finite.*image 1"),
    (lambda x: x[:0], DataError, "no images"),
    (lambda x: (x > 0).to(torch.uint8), DataError, "floating point"),
])
def test_bad_images(dcn, images, bad, error, match):
    with pytest.raises(error, match=match) as err:
        extract_trajectories(dcn, bad(images.clone()), TIMES)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("times, match", [
    ([0.0, 1.0, 0.5], "strictly increasing"),
    ([0.0, 1.0, 1.0], "strictly increasing"),
    ([0.0, 2.5], r"\[0, 2\]"),
    ([-0.1, 1.0], r"\[0, 2\]"),
    ([], "empty"),
    ([0.0, float("nan")], "finite"),
    (["a"], "numbers"),
])
def test_bad_times(dcn, images, times, match):
    with pytest.raises(ConfigError, match=match) as err:
        extract_trajectories(dcn, images[:1], times)
    assert "\n" not in str(err.value)


def test_bad_arguments(dcn, images):
    with pytest.raises(ConfigError, match="unknown block"):
        extract_trajectories(dcn, images[:1], TIMES, blocks=["block4"])
    with pytest.raises(ConfigError, match="batch_size"):
        extract_trajectories(dcn, images[:1], TIMES, batch_size=0)
    with pytest.raises(DataError, match="labels"):
        extract_trajectories(dcn, images, TIMES, labels=[1, 2])
    with pytest.raises(DataError, match="unique"):
        extract_trajectories(dcn, images, TIMES, indices=[1, 1, 2])


def test_float64_model_sees_float64_images(dcn, images):
    """A float64 model gets float64 inputs (no detour through float32) and its block outputs match a direct
    float64 forward pass of the same images."""
    model = copy.deepcopy(dcn).double()
    x = images.double() + 1e-9  # a perturbation float32 cannot represent
    ds = extract_trajectories(model, x, TIMES, blocks=["block1"], batch_size=3)
    assert ds["block1"].h.dtype == np.float64
    ref = block_inputs(model, x)
    np.testing.assert_allclose(ds["block1"].h.values[:, -1], ref["block1"][1].numpy(), rtol=1e-10, atol=1e-12)
