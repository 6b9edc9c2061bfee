"""The disk edge of dcnbio: atomic writes, the one-writer lock, and labelled results in netCDF-4/HDF5.

* :mod:`dcnbio.io.atomic` — every file is written to a temporary, fsynced and renamed; a failed write is one
  :class:`WriteError` naming the path and the cause.
* :mod:`dcnbio.io.lock` — one writer per directory (``flock``; released when the holder exits).
* :mod:`dcnbio.io.reference` — the reference data of ``data/reference/`` (macaque V1) as labelled datasets.
* :mod:`dcnbio.io.netcdf` — xarray Datasets to and from netCDF-4 files and shard directories, with provenance
  attributes (imported on first use: it loads xarray).
"""
from .atomic import (FAULT_ENV, TMP_PREFIX, WriteError, atomic_write, atomic_write_path, discard,
                     remove_stale_temporaries, save_figure, write_bytes, write_report, write_text)
from .lock import LOCK_NAME, DirectoryLock, LockedError, lock_directory, unlock_directory

_REFERENCE = ("load_v1_reference", "REFERENCE_CSV", "CITATION", "HISTOGRAMS", "load_reference_histogram",
              "read_histogram")
_NETCDF = ("ENGINE", "TIMESTAMP_ATTR", "COMPRESSION", "netcdf_attrs", "provenance_attrs", "save_dataset",
           "save_shards", "save_results", "write_json", "prepare_output_dir", "open_results",
           "assert_same_results", "same_results")

__all__ = ["FAULT_ENV", "TMP_PREFIX", "WriteError", "atomic_write", "atomic_write_path", "discard",
           "remove_stale_temporaries", "save_figure", "write_bytes", "write_report", "write_text", "LOCK_NAME",
           "DirectoryLock", "LockedError", "lock_directory", "unlock_directory", *_NETCDF, *_REFERENCE]


def __getattr__(name):
    if name in _REFERENCE:
        from . import reference

        return getattr(reference, name)
    if name in _NETCDF:
        from . import netcdf

        return getattr(netcdf, name)
    raise AttributeError(f"module 'dcnbio.io' has no attribute {name!r}")
