"""Result files: labelled arrays (xarray) to and from netCDF-4/HDF5, written atomically.

This is the only module of the analysis side that touches disk; analysis functions
take and return :class:`xarray.Dataset` objects.

File layout
-----------
* One :class:`xarray.Dataset` is one netCDF-4 file (:func:`save_dataset`), written with
  ``engine="h5netcdf"``: floating-point data variables as float32, zlib level 1 with the
  shuffle filter, and chunks of one image along an ``image`` dimension (so reading a few
  images decompresses only those).
* Several datasets that differ in their dimensions (the three blocks of a trajectory
  extraction differ in channels and map size) go either into one file with one netCDF
  *group* per name (:func:`save_results`) or into one sub-directory per name holding
  shards ``<name>/shard-00000.nc`` … (written by ``dcnbio extract``).  netCDF cannot
  append along a dimension, so a long extraction writes one file per shard and
  :func:`open_results` opens them together, lazily, with dask.
* Attributes must be strings, numbers or numeric arrays: :func:`netcdf_attrs` turns
  booleans into 0/1 and dicts, lists, tuples and ``None`` into JSON strings.
* Every file is first built in memory (HDF5 writes into a file image, never onto the disk), then
  written to a temporary file ``.tmp-<name>-XXXX`` in the destination directory, fsynced and
  renamed (:mod:`dcnbio.io.atomic`): a crash leaves either no file or a complete one under the
  final name, never a partial one, and a full disk is an ordinary :class:`~dcnbio.io.atomic.WriteError`
  of a plain write — HDF5 never holds a half-written file it would have to close.

Provenance
----------
:func:`provenance_attrs` gives the attrs that say what produced a result (model, its
configuration, checkpoint and its sha256, versions, creation time).  The creation time
is the only attribute that differs between two otherwise identical runs;
:func:`assert_same_results` / :func:`same_results` compare results ignoring it.
"""
import glob as _glob
import io as _bytes_io
import json
import os
import tempfile

import numpy as np
import xarray as xr

from ..errors import DcnbioError
from ..provenance import TIMESTAMP_ATTR, provenance_attrs  # noqa: F401  (re-exported: results name their origin)
from .atomic import TMP_PREFIX, write_bytes
from .lock import LOCK_NAME, lock_directory

ENGINE = "h5netcdf"
#: Default compression of floating-point data variables.
COMPRESSION = {"zlib": True, "complevel": 1, "shuffle": True}


# --- attributes ---------------------------------------------------------------------------------
def netcdf_attrs(attrs):
    """Attributes made storable in netCDF-4 without changing what they say.

    Parameters
    ----------
    attrs : mapping

    Returns
    -------
    dict
        Strings and numbers unchanged (NumPy scalars as Python numbers); ``bool`` → 0/1;
        ``dict``, ``list``, ``tuple`` and ``None`` → JSON strings (``json.loads`` restores them);
        numeric NumPy arrays unchanged (1-D); paths and anything else → ``str``.

    Examples
    --------
    >>> netcdf_attrs({"adjoint": True, "options": {"step_size": 0.1}, "T": 2.0})
    {'adjoint': 1, 'options': '{"step_size": 0.1}', 'T': 2.0}
    """
    out = {}
    for key, value in attrs.items():
        out[str(key)] = _attr_value(value)
    return out


def _attr_value(value):
    if isinstance(value, (bool, np.bool_)):
        return int(bool(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float)):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "iuf" and value.ndim <= 1:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _sanitize(ds):
    ds = ds.copy(deep=False)
    ds.attrs = netcdf_attrs(ds.attrs)
    for name in ds.variables:
        ds[name].attrs = netcdf_attrs(ds[name].attrs)
    return ds


# --- writing ------------------------------------------------------------------------------------
def _encoding(ds):
    encoding = {}
    for name, var in ds.data_vars.items():
        if var.dtype.kind != "f" or var.ndim == 0:
            continue
        enc = dict(COMPRESSION)
        if "image" in var.dims:
            enc["chunksizes"] = tuple(1 if d == "image" else max(1, n) for d, n in zip(var.dims, var.shape))
        encoding[name] = enc
    return encoding


def _as_float32(ds):
    changes = {name: var.astype(np.float32) for name, var in ds.data_vars.items()
               if var.dtype.kind == "f" and var.dtype != np.float32}
    return ds.assign(changes) if changes else ds


def _check_target(path, overwrite):
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DcnbioError(f"cannot write {path}: it is a directory")
    if os.path.exists(path) and not overwrite:
        raise DcnbioError(f"{path} exists; pass overwrite=True (or --overwrite) to replace it")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise DcnbioError(f"cannot write {path}: directory {directory} does not exist")
    return path, directory


def save_dataset(ds, path, *, overwrite=False):
    """Write one Dataset to a netCDF-4 file, atomically.

    Parameters
    ----------
    ds : xarray.Dataset
        Floating-point data variables are stored as float32 (zlib level 1, shuffle, chunks of
        one image along ``image`` where that dimension exists); coordinates keep their dtype.
        Attributes pass through :func:`netcdf_attrs`.
    path : str or PathLike
    overwrite : bool
        Replace an existing file; otherwise an existing ``path`` is an error.

    Raises
    ------
    DcnbioError
        ``path`` exists (without ``overwrite``), is a directory, or its directory is missing.

    Examples
    --------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "example.nc")
    >>> ds = xr.Dataset({"h": (("image", "x"), np.zeros((2, 3), np.float32))}, attrs={"adjoint": 1})
    >>> save_dataset(ds, path)
    >>> xr.testing.assert_identical(open_results(path).load(), ds)
    """
    path, _ = _check_target(path, overwrite)
    ds = _sanitize(_as_float32(ds))
    write_bytes(path, bytes(ds.to_netcdf(engine=ENGINE, encoding=_encoding(ds))))


def save_results(results, path, *, overwrite=False):
    """Write several Datasets into one netCDF-4 file, one group per name, atomically.

    Parameters
    ----------
    results : dict of str → xarray.Dataset
        E.g. the output of :func:`dcnbio.extract.trajectories.extract_trajectories`
        (block name → Dataset); names become group names and must not contain ``/``.
    path : str or PathLike
    overwrite : bool
    """
    if isinstance(results, xr.Dataset):
        return save_dataset(results, path, overwrite=overwrite)
    if not results:
        raise DcnbioError(f"nothing to write to {os.fspath(path)}: no datasets given")
    path, _ = _check_target(path, overwrite)
    prepared = {}
    for name, ds in results.items():
        if not name or "/" in name:
            raise DcnbioError(f"invalid group name {name!r} for {path}: use a non-empty name without '/'")
        ds = _sanitize(_as_float32(ds))
        prepared[name] = (ds, _encoding(ds))

    image = _bytes_io.BytesIO()
    for i, (name, (ds, encoding)) in enumerate(prepared.items()):
        ds.to_netcdf(image, mode="w" if i == 0 else "a", group=name, engine=ENGINE, encoding=encoding)
    write_bytes(path, image.getvalue())


def save_shards(compute, n_shards, directory):
    """Write ``directory/shard-00000.nc`` … one by one, skipping shards already there: a resumable sharded result.

    For results too large for memory, or too long to compute in one go (grating responses of a grid, block
    trajectories): shard ``i`` is ``compute(i)``, written atomically by :func:`save_dataset` as soon as it
    is computed, so a killed run leaves only complete shards and the same call continues where it stopped.
    :func:`open_results` opens the directory lazily with dask, concatenated along the dim the shards split.

    Parameters
    ----------
    compute : callable
        ``compute(i) -> xarray.Dataset`` for ``i`` in ``range(n_shards)``; called only for missing shards.
    n_shards : int
    directory : str or PathLike
        Created if missing; its other files are left alone.

    Returns
    -------
    list of str
        The shard paths, in order.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, f"shard-{i:05d}.nc") for i in range(int(n_shards))]
    for i, path in enumerate(paths):
        if not os.path.isfile(path):
            save_dataset(compute(i), path)
    return paths


def write_json(obj, path):
    """Write ``obj`` as JSON atomically (temporary file, fsync, rename)."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def prepare_output_dir(path, overwrite=False, *, lock=True):
    """Create an output directory that is empty (or may be overwritten) and writable, and take its writer's lock.

    Parameters
    ----------
    path : str or PathLike
    overwrite : bool
        Accept an existing non-empty directory (its files are left in place; the caller
        replaces what it writes).
    lock : bool
        Take the directory's lock (:func:`dcnbio.io.lock.lock_directory`) for the rest of this process, so
        that a second process writing there is refused.

    Returns
    -------
    str
        The path.

    Raises
    ------
    DcnbioError
        ``path`` is a file, is a non-empty directory (without ``overwrite``), or cannot be
        created or written.
    LockedError
        Another process holds the directory's lock (its pid and host are named).
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise DcnbioError(f"output path {path} exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=TMP_PREFIX + "probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DcnbioError(f"cannot write to output directory {path}: {exc.strerror or exc}") from None
    if lock:
        lock_directory(path)
    if not overwrite and [f for f in os.listdir(path) if f != LOCK_NAME and not f.startswith(TMP_PREFIX)]:
        raise DcnbioError(f"output directory {path} exists and is not empty; choose another or pass --overwrite")
    return path


# --- reading ------------------------------------------------------------------------------------
def _one_line(exc):
    text = str(exc).strip()
    return (text.splitlines()[0][:160] if text else type(exc).__name__)


def _unreadable(path, exc):
    return DcnbioError(f"{path} is not a readable netCDF-4/HDF5 results file ({_one_line(exc)})")


def _groups(path):
    import h5netcdf

    try:
        with h5netcdf.File(path, "r") as f:
            return list(f.groups), bool(f.variables)
    except Exception as exc:  # h5py raises OSError, h5netcdf ValueError/KeyError on foreign files
        raise _unreadable(path, exc) from None


def _open_file(path, chunks):
    groups, has_root_vars = _groups(path)
    try:
        if groups and not has_root_vars:
            return {g: xr.open_dataset(path, group=g, engine=ENGINE, chunks=chunks) for g in groups}
        return xr.open_dataset(path, engine=ENGINE, chunks=chunks)
    except Exception as exc:
        raise _unreadable(path, exc) from None


def _open_shards(files, chunks, concat_dim, label):
    if not files:
        raise DcnbioError(f"no .nc files match {label}")
    for f in files:
        _groups(f)  # name the first unreadable shard, before dask hides which one it was
    if chunks is None:  # one chunk per shard (the files are chunked per image on disk: far too fine for dask)
        chunks = {concat_dim: -1}
    try:
        return xr.open_mfdataset(files, engine=ENGINE, combine="nested", concat_dim=concat_dim, chunks=chunks,
                                 data_vars="minimal", coords="minimal", compat="equals", join="exact",
                                 combine_attrs="override")
    except Exception as exc:
        raise DcnbioError(f"cannot combine the {len(files)} shards of {label} along {concat_dim!r}: "
                          f"{_one_line(exc)}") from None


def _shard_files(directory):
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if f.endswith(".nc") and not f.startswith(TMP_PREFIX))


def open_results(path, *, chunks=None, concat_dim="image"):
    """Open results written by :func:`save_dataset`, :func:`save_results` or ``dcnbio extract``.

    Parameters
    ----------
    path : str or PathLike
        * one ``.nc`` file: a Dataset, or — for a file whose data lie in groups
          (:func:`save_results`) — a dict group name → Dataset;
        * a glob pattern (``"out/block1/shard-*.nc"``) or a directory holding ``.nc`` shards:
          one Dataset, the shards concatenated along ``concat_dim`` in file-name order;
        * a directory of sub-directories of shards (the ``dcnbio extract`` layout
          ``DIR/<block>/shard-*.nc``): a dict sub-directory name → Dataset.
    chunks : int, dict or "auto", optional
        Dask chunks.  Shards are always opened lazily with dask; by default each shard is
        one chunk.  A single file is opened lazily (without dask unless ``chunks`` is given).
    concat_dim : str
        Dimension the shards are concatenated along.

    Returns
    -------
    xarray.Dataset or dict of str → xarray.Dataset
        A dict is used rather than an ``xr.DataTree`` because each block is concatenated
        from its own shards with :func:`xarray.open_mfdataset`; ``xr.DataTree(dict)`` builds
        a tree from it when wanted.

    Raises
    ------
    DcnbioError
        Nothing found at ``path``, a file that is not netCDF-4/HDF5 (naming the file), or
        shards that do not fit together (different time grids, variables …).
    """
    path = os.fspath(path)
    if any(c in path for c in "*?["):
        return _open_shards(sorted(_glob.glob(path)), chunks, concat_dim, path)
    if os.path.isfile(path):
        return _open_file(path, chunks)
    if os.path.isdir(path):
        files = _shard_files(path)
        if files:
            return _open_shards(files, chunks, concat_dim, path)
        subdirs = sorted(d for d in os.listdir(path)
                         if os.path.isdir(os.path.join(path, d)) and _shard_files(os.path.join(path, d)))
        if subdirs:
            return {d: _open_shards(_shard_files(os.path.join(path, d)), chunks, concat_dim,
                                    os.path.join(path, d)) for d in subdirs}
        raise DcnbioError(f"no .nc results in directory {path}")
    raise DcnbioError(f"no results file or directory at {path}")


# --- comparing ----------------------------------------------------------------------------------
def _load(x):
    if isinstance(x, (str, os.PathLike)):
        x = open_results(x)
    return x


def _strip(ds, ignore):
    ds = ds.copy(deep=False)
    ds.attrs = {k: v for k, v in ds.attrs.items() if k not in ignore}
    return ds


def assert_same_results(a, b, *, ignore_attrs=(TIMESTAMP_ATTR,)):
    """Assert two results are identical (values, coords, attrs) except for ``ignore_attrs``.

    Parameters
    ----------
    a, b : path, xarray.Dataset or dict of str → Dataset
        Paths are opened with :func:`open_results`.
    ignore_attrs : sequence of str
        Dataset attributes left out of the comparison (by default the creation time).

    Raises
    ------
    AssertionError
        With xarray's description of the first difference.
    """
    a, b = _load(a), _load(b)
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)):
            raise AssertionError(f"cannot compare a {type(a).__name__} with a {type(b).__name__}")
        if sorted(a) != sorted(b):
            raise AssertionError(f"different names: {sorted(a)} vs {sorted(b)}")
        for name in a:
            try:
                xr.testing.assert_identical(_strip(a[name], ignore_attrs), _strip(b[name], ignore_attrs))
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from None
        return
    xr.testing.assert_identical(_strip(a, ignore_attrs), _strip(b, ignore_attrs))


def same_results(a, b, *, ignore_attrs=(TIMESTAMP_ATTR,)):
    """``True`` when :func:`assert_same_results` passes."""
    try:
        assert_same_results(a, b, ignore_attrs=ignore_attrs)
    except AssertionError:
        return False
    return True
