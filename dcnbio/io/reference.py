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
    if not path.is_file():
        raise DataError(f"V1 reference table not found at {path}; it ships in the repository's data/reference/")
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read the V1 reference table {path}: {exc}") from None
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
