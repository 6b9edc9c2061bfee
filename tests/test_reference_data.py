"""The bundled V1 histograms: the totals their README states (recorded invariants of the digitisations), the
loader's labelled layout and its errors, and the statistics the physiology study derives from them."""
import numpy as np
import pytest

from dcnbio.stats import tuning_study
from dcnbio.errors import DataError
from dcnbio.io import HISTOGRAMS, load_reference_histogram

TOTALS = {"schiller1976_sf_bandwidth": {"simple": 30, "complex": 43},
          "devalois1982_preferred_orientation": {"all_cells": 385},
          "cavanaugh2002_surround_suppression_index": {"all_cells": 190},
          "cavanaugh2002_size_tuning_diameters": {"grating_summation_field": 148, "surround_diameter": 148},
          "ringach2002_circular_variance": {"all_cells": 301}}


@pytest.mark.parametrize("name", sorted(HISTOGRAMS))
def test_tables_hold_the_totals_their_readme_states(name):
    ds = load_reference_histogram(name)
    assert {p: int(ds["count"].sel(population=p).sum()) for p in ds.population.values} == TOTALS[name]
    low, high = ds.bin_low.values, ds.bin_high.values
    assert (high > low).all() and np.array_equal(low[1:], high[:-1])       # contiguous bins
    assert ds.attrs["citation"] and ds.attrs["measure"]


def test_cardinal_fraction_of_v1_and_of_a_grid():
    ref = load_reference_histogram("devalois1982_preferred_orientation")["count"].sum("population")
    # the V1 side: the counts of the bins centred on 0 and 90 degrees
    assert float(ref[0] + ref[2]) / float(ref.sum()) == pytest.approx(210 / 385)
    # a uniform 15-degree grid puts 6 of 12 orientations in the cardinal bins, in either naming convention
    grid = np.arange(0, 180, 15.0)
    assert tuning_study.cardinal_fraction(grid) == 0.5
    assert tuning_study.cardinal_fraction(grid + 90) == 0.5
    assert tuning_study.cardinal_fraction([0, 90, 170, 45, np.nan]) == 0.75


def test_unknown_or_malformed_tables_are_one_line(tmp_path):
    with pytest.raises(DataError, match="unknown reference histogram 'x'; choose one of"):
        load_reference_histogram("x")
    (tmp_path / "schiller1976_sf_bandwidth.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="needs one bin_low"):
        load_reference_histogram("schiller1976_sf_bandwidth", tmp_path)
