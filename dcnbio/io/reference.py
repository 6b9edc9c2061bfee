"""Reference data shipped in ``data/reference/``, read into labelled datasets (the analysis layer takes them
as arguments and never opens a file)."""
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import DataError

#: The shipped De Valois et al. (1982) table (repository ``data/reference``).
REFERENCE_CSV = Path(__file__).resolve().parents[2] / "data" / "reference" / "devalois1982_peak_sf.csv"
CITATION = ("De Valois, R. L., Albrecht, D. G. & Thorell, L. G. (1982). Spatial frequency selectivity of cells in "
            "macaque visual cortex. Vision Research 22(5), 545-559. doi:10.1016/0042-6989(82)90113-4")


def _read_csv(path, what, hint=""):
    """The CSV at ``path``, or a one-line :class:`DataError` naming ``what`` is missing or unreadable."""
    if not path.is_file():
        raise DataError(f"{what} not found at {path}{hint}")
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read the {what} {path}: {exc}") from None


def load_v1_reference(path=None):
    """The De Valois et al. (1982) peak spatial frequency histograms.

    Parameters
    ----------
    path : str or Path, optional
        CSV with columns ``bin_low_cpd, bin_high_cpd`` and one count column per population (default: the
        shipped table).

    Returns
    -------
    xarray.Dataset
        ``count`` (population, bin): cells per bin.  Coordinates: ``population``; ``bin_low``, ``bin_high``
        (c/deg) and ``bin_centre`` (c/deg, the bin's log-centre √(low·high)) on ``bin``.  Attrs ``citation``,
        ``source``.
    """
    path = Path(path) if path is not None else REFERENCE_CSV
    df = _read_csv(path, "V1 reference table", "; it ships in the repository's data/reference/")
    missing = {"bin_low_cpd", "bin_high_cpd"} - set(df.columns)
    populations = [c for c in df.columns if c not in ("bin_low_cpd", "bin_high_cpd")]
    if missing or not populations:
        raise DataError(f"{path} needs columns bin_low_cpd, bin_high_cpd and at least one count column")
    low, high = df["bin_low_cpd"].to_numpy(float), df["bin_high_cpd"].to_numpy(float)
    counts = df[populations].to_numpy()
    if np.any(low <= 0) or np.any(high <= low) or np.any(counts < 0):
        raise DataError(f"{path}: bin edges must be positive and increasing, counts non-negative")
    return xr.Dataset(
        {"count": (("population", "bin"), counts.T.astype(np.int64))},
        coords={"population": populations, "bin_low": ("bin", low), "bin_high": ("bin", high),
                "bin_centre": ("bin", np.sqrt(low * high))},
        attrs={"citation": CITATION, "source": str(path),
               "note": "bin counts digitised from the published histograms; frequencies in cycles/degree"})


#: Histograms of ``data/reference/`` beyond the peak-SF table: file stem → (citation, what the bins measure).
#: Values and provenance: ``data/reference/README.md``.
HISTOGRAMS = {
    "schiller1976_sf_bandwidth": (
        "Schiller, P. H., Finlay, B. L. & Volman, S. F. (1976). Quantitative studies of single-cell properties in "
        "monkey striate cortex. III. Spatial frequency. J. Neurophysiol. 39(6), 1334-1351. "
        "doi:10.1152/jn.1976.39.6.1334 (digitised by Marques, Schrimpf & DiCarlo 2021 for Brain-Score)",
        "SF selectivity 100 f_low / f_high at 0.707 of the peak (percent)"),
    "devalois1982_preferred_orientation": (
        "De Valois, R. L., Yund, E. W. & Hepler, N. (1982). The orientation and direction selectivity of cells in "
        "macaque visual cortex. Vision Research 22(5), 531-544 (digitised by Marques, Schrimpf & DiCarlo 2021 "
        "for Brain-Score)",
        "preferred orientation (degree, 45-degree bins centred on 0, 45, 90, 135)"),
    "cavanaugh2002_surround_suppression_index": (
        "Cavanaugh, J. R., Bair, W. & Movshon, J. A. (2002). Nature and interaction of signals from the receptive "
        "field center and surround in macaque V1 neurons. J. Neurophysiol. 88(5), 2530-2546. "
        "doi:10.1152/jn.00692.2001 (digitised by Marques, Schrimpf & DiCarlo 2021 for Brain-Score)",
        "surround suppression index (peak - largest-grating response) / peak"),
    "cavanaugh2002_size_tuning_diameters": (
        "Cavanaugh, J. R., Bair, W. & Movshon, J. A. (2002), as above",
        "grating summation field and surround diameter (degree of visual angle)"),
    "ringach2002_circular_variance": (
        "Ringach, D. L., Shapley, R. M. & Hawken, M. J. (2002). Orientation selectivity in macaque V1: diversity "
        "and laminar dependence. J. Neurosci. 22(13), 5639-5651. doi:10.1523/JNEUROSCI.22-13-05639.2002 "
        "(secondary digitisation, not checked against the paper: E. Margalit's course project eshedmargalit/p250)",
        "circular variance 1 - |sum r exp(2i theta)| / sum r"),
}


def load_reference_histogram(name, directory=None):
    """One binned V1 distribution of ``data/reference/`` as a labelled dataset.

    Parameters
    ----------
    name : str
        A key of :data:`HISTOGRAMS` (the CSV's file stem).
    directory : str or Path, optional
        Where the CSV lies (default: the repository's ``data/reference``).

    Returns
    -------
    xarray.Dataset
        ``count (population, bin)``; coords ``population``, ``bin_low``, ``bin_high`` (lower edge inclusive);
        attrs ``citation``, ``measure``, ``units`` (the suffix of the CSV's bin columns), ``source``.
    """
    if name not in HISTOGRAMS:
        raise DataError(f"unknown reference histogram {name!r}; choose one of {', '.join(HISTOGRAMS)}")
    path = (Path(directory) if directory is not None else REFERENCE_CSV.parent) / f"{name}.csv"
    if not path.is_file():
        raise DataError(f"reference table not found at {path}; it ships in the repository's data/reference/")
    return read_histogram(path, *HISTOGRAMS[name])


def read_histogram(path, citation="", measure=""):
    """A binned distribution from any CSV laid out like ``data/reference/``'s: one ``bin_low*`` and one
    ``bin_high*`` column (lower edge inclusive; the suffix names the units) and one count column per
    population — e.g. a user's own digitisation of a V1 figure.

    Returns
    -------
    xarray.Dataset
        As :func:`load_reference_histogram`.
    """
    path = Path(path)
    df = _read_csv(path, "reference table")
    low = [c for c in df.columns if c.startswith("bin_low")]
    high = [c for c in df.columns if c.startswith("bin_high")]
    populations = [c for c in df.columns if c not in low + high]
    if len(low) != 1 or len(high) != 1 or not populations:
        raise DataError(f"{path} needs one bin_low*, one bin_high* column and at least one count column")
    lo, hi = df[low[0]].to_numpy(float), df[high[0]].to_numpy(float)
    counts = df[populations].to_numpy()
    if np.any(hi <= lo) or np.any(counts < 0):
        raise DataError(f"{path}: bin edges must increase and counts be non-negative")
    return xr.Dataset({"count": (("population", "bin"), counts.T.astype(np.int64))},
                      coords={"population": populations, "bin_low": ("bin", lo), "bin_high": ("bin", hi)},
                      attrs={"citation": citation, "measure": measure, "units": low[0][len("bin_low"):].strip("_"),
                             "source": str(path)})
