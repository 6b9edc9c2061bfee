"""dcnbio.io: netCDF round trips, sharded opening, atomic writes, provenance."""
import json
import os

import numpy as np
import pytest
import xarray as xr

from dcnbio import create_model
from dcnbio.errors import DcnbioError
from dcnbio.io import (LOCK_NAME, TIMESTAMP_ATTR, assert_same_results, netcdf_attrs, open_results, prepare_output_dir,
                       provenance_attrs, same_results, save_dataset, save_results)


def example(n_images=4, start=0, channels=3, size=5, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n_images, 2, channels, size, size)).astype(np.float32)
    image = np.arange(start, start + n_images)
    return xr.Dataset(
        {"h": (("image", "time", "channel", "y", "x"), h, {"long_name": "state"}),
         "nfe": ("image", np.full(n_images, 26, dtype=np.int64))},
        coords={"image": image, "time": [0.0, 2.0], "label": ("image", image % 10)},
        attrs=netcdf_attrs({"block": "block1", "adjoint": True, "options": {"step_size": 0.1}}))


def test_round_trip_identical_with_attrs(tmp_path):
    ds = example()
    path = tmp_path / "a.nc"
    save_dataset(ds, path)
    with open_results(path) as back:
        xr.testing.assert_identical(back.load(), ds)
        # float32 + zlib/shuffle, one image per chunk (what save_dataset promises)
        enc = back["h"].encoding
        assert back["h"].dtype == np.float32
        assert enc["chunksizes"] == (1, 2, 3, 5, 5)
        assert enc["zlib"] and enc["shuffle"] and enc["complevel"] == 1


def test_float64_stored_as_float32(tmp_path):
    ds = example()
    ds64 = ds.assign(h=ds.h.astype(np.float64))
    save_dataset(ds64, tmp_path / "b.nc")
    with open_results(tmp_path / "b.nc") as back:
        xr.testing.assert_identical(back.load(), ds)  # values came from float32, so the cast is exact


def test_attrs_converted():
    attrs = netcdf_attrs({"flag": True, "cfg": {"a": [1, 2]}, "none": None, "n": np.int64(3),
                          "arr": np.arange(3.0), "tup": (1, "x")})
    assert attrs["flag"] == 1 and isinstance(attrs["flag"], int)
    assert json.loads(attrs["cfg"]) == {"a": [1, 2]}
    assert attrs["none"] == "null" and json.loads(attrs["tup"]) == [1, "x"]
    assert attrs["n"] == 3 and type(attrs["n"]) is int
    np.testing.assert_array_equal(attrs["arr"], np.arange(3.0))


def test_refuses_overwrite(tmp_path):
    path = tmp_path / "a.nc"
    save_dataset(example(seed=0), path)
    with pytest.raises(DcnbioError, match="exists") as err:
        save_dataset(example(seed=1), path)
    assert "\n" not in str(err.value)
    save_dataset(example(seed=1), path, overwrite=True)
    with open_results(path) as back:
        xr.testing.assert_identical(back.load(), example(seed=1))
    assert [f for f in os.listdir(tmp_path)] == ["a.nc"]  # no temporary file left behind


def test_failed_write_leaves_no_file(tmp_path):
    ds = example()
    ds["bad/name"] = ("image", np.zeros(4))  # netCDF forbids '/' in variable names: the write fails midway
    with pytest.raises(ValueError):
        save_dataset(ds, tmp_path / "c.nc")
    assert os.listdir(tmp_path) == []


def test_groups_round_trip(tmp_path):
    results = {"block1": example(channels=3, size=5), "block2": example(channels=6, size=3, seed=2)}
    save_results(results, tmp_path / "r.nc")
    back = open_results(tmp_path / "r.nc")
    assert sorted(back) == ["block1", "block2"]
    for name in results:
        xr.testing.assert_identical(back[name].load(), results[name])
    assert_same_results(back, results)


def test_shards_open_lazily_and_equal_whole(tmp_path):
    whole = example(n_images=6)
    for i, start in enumerate(range(0, 6, 2)):
        os.makedirs(tmp_path / "block1", exist_ok=True)
        save_dataset(whole.isel(image=slice(start, start + 2)), tmp_path / "block1" / f"shard-{i:05d}.nc")
    opened = open_results(tmp_path / "block1")
    assert opened["h"].chunks is not None  # dask-backed
    assert opened["h"].chunks[0] == (2, 2, 2)  # one chunk per shard by default
    xr.testing.assert_identical(opened.compute(), whole)
    # the same shards through a glob and through the parent directory (dict by block)
    xr.testing.assert_identical(open_results(str(tmp_path / "block1" / "shard-*.nc")).compute(), whole)
    nested = open_results(tmp_path)
    assert list(nested) == ["block1"]
    xr.testing.assert_identical(nested["block1"].compute(), whole)


def test_mismatched_shards_refused(tmp_path):
    save_dataset(example(n_images=2), tmp_path / "shard-00000.nc")
    other = example(n_images=2, start=2).assign_coords(time=[0.0, 1.0])
    save_dataset(other, tmp_path / "shard-00001.nc")
    with pytest.raises(DcnbioError, match="cannot combine"):
        open_results(tmp_path)


@pytest.mark.parametrize("content", [b"not a netcdf file at all", b"CDF\x01" + bytes(60)])
def test_corrupt_or_foreign_file(tmp_path, content):
    # a text file, and a netCDF-3 header (not HDF5) — both unreadable by h5netcdf
    bad = tmp_path / "bad.nc"
    bad.write_bytes(content)
    with pytest.raises(DcnbioError, match="bad.nc") as err:
        open_results(bad)
    assert "\n" not in str(err.value)
    save_dataset(example(n_images=2), tmp_path / "good.nc")
    with pytest.raises(DcnbioError, match="bad.nc"):  # the shard at fault is named
        open_results(tmp_path)


def test_truncated_file(tmp_path):
    path = tmp_path / "t.nc"
    save_dataset(example(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DcnbioError, match="t.nc"):
        open_results(path)


def test_missing_paths(tmp_path):
    with pytest.raises(DcnbioError, match="no results"):
        open_results(tmp_path / "nothing.nc")
    with pytest.raises(DcnbioError, match="no .nc"):
        open_results(str(tmp_path / "*.nc"))
    with pytest.raises(DcnbioError, match="no .nc results"):
        open_results(tmp_path)


def test_prepare_output_dir(tmp_path):
    out = tmp_path / "out" / "nested"
    assert prepare_output_dir(out) == str(out)
    assert os.listdir(out) == [LOCK_NAME]  # the write probe is removed; this process holds the lock
    (out / "x").write_text("x")
    with pytest.raises(DcnbioError, match="not empty") as err:
        prepare_output_dir(out)
    assert "\n" not in str(err.value)
    prepare_output_dir(out, overwrite=True)
    with pytest.raises(DcnbioError, match="not a directory"):
        prepare_output_dir(out / "x")


def test_prepare_output_dir_below_a_file(tmp_path):
    # works as root too: a directory cannot be created below a regular file
    (tmp_path / "f").write_text("x")
    with pytest.raises(DcnbioError, match="cannot write"):
        prepare_output_dir(tmp_path / "f" / "sub")


def test_provenance_and_comparison(tmp_path):
    model = create_model("dcn-ode", in_channels=1, width=0.125)
    info = {"path": "ckpt/last.pt", "sha256": "ab" * 32, "kind": "last", "epoch": 3, "step": 30}
    assert "seed" not in provenance_attrs(model, info)  # a checkpoint without a training record has no seed
    attrs = provenance_attrs(model, {**info, "train_config": {"seed": 2, "dataset": "fashion-mnist"}})
    assert attrs["model_name"] == "dcn-ode" and attrs["checkpoint_sha256"] == "ab" * 32 and attrs["seed"] == 2
    assert json.loads(attrs["model_config"])["width"] == 0.125
    assert attrs[TIMESTAMP_ATTR].endswith("+00:00")  # ISO 8601 in UTC
    assert all(isinstance(v, (str, int, float)) for v in attrs.values())
    a, b = example(), example()
    a.attrs.update(attrs)
    b.attrs.update(attrs)
    b.attrs[TIMESTAMP_ATTR] = "1999-01-01T00:00:00+00:00"
    save_dataset(a, tmp_path / "a.nc")
    save_dataset(b, tmp_path / "b.nc")
    assert same_results(tmp_path / "a.nc", tmp_path / "b.nc")  # only the timestamp differs
    assert not same_results(tmp_path / "a.nc", tmp_path / "b.nc", ignore_attrs=())
    c = b.copy(deep=True)
    c["h"][0, 0, 0, 0, 0] += 1e-3
    assert not same_results(a, c)
