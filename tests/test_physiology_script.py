"""analyses/physiology.py end to end on bundled checkpoints with a small grid: outputs, resumption, the guard
against mixing grids, and properties that equal a recomputation from the written responses."""
from pathlib import Path

import numpy as np
import pytest

from dcnbio.stats import physiology as ph
from dcnbio.io import open_results
from helpers import load_analysis

REPO = Path(__file__).resolve().parents[1]
CKPTS = [str(REPO / f"data/checkpoints/{m}/seed{s}/last.pt") for m, s in
         (("dcn-ode", 1), ("dcn-ode", 2), ("resnet-blocks", 1))]
GRID = ["--n-sf", "4", "--n-orientations", "4", "--n-phases", "4", "--contrasts", "0.25", "0.5", "1",
        "--n-times", "4", "--sf-per-shard", "2"]


@pytest.fixture(scope="module")
def script():
    return load_analysis("physiology")


@pytest.fixture(scope="module")
def run(script, tmp_path_factory):
    out = tmp_path_factory.mktemp("phys") / "out"
    assert script.main(["--checkpoint", *CKPTS, "--out", str(out), *GRID]) == 0
    return out


def test_outputs_and_layout(run):
    for f in ("properties.nc", "tuning-dcn-ode.png", "properties-resnet-blocks.png", "latency.png", "report.md",
              "report.tex", "params.json"):
        assert (run / f).stat().st_size > 0, f
    shards = sorted((run / "responses" / "dcn-ode-seed1").glob("shard-*.nc"))
    assert [p.name for p in shards] == ["shard-00000.nc", "shard-00001.nc"]
    props = open_results(run / "properties.nc")
    assert set(props) == {"dcn-ode", "resnet-blocks"}
    ds = props["dcn-ode"]
    assert ds.sizes["state"] == 2 and list(ds.seed.values) == [1, 2] and ds.sizes["unit"] == 56
    assert ds.sizes["time"] == 4 and props["resnet-blocks"].sizes["time"] == 2
    report = (run / "report.md").read_text()
    assert "SF selectivity" in report and "Schiller" in report and "cardinal fraction" in report


def test_properties_equal_a_recomputation_from_the_shards(run):
    resp = open_results(run / "responses" / "dcn-ode-seed2-init", concat_dim="sf").load()
    again = ph.tuning_properties(resp)
    stored = open_results(run / "properties.nc")["dcn-ode"].sel(state="init", seed=2)
    for name in ("preferred_sf", "f1_f0", "circular_variance", "latency"):
        np.testing.assert_allclose(stored[name].values, again[name].values, rtol=1e-6, equal_nan=True)


def test_resume_skips_finished_shards_and_refuses_another_grid(script, run, capsys, tmp_path):
    shard = run / "responses" / "dcn-ode-seed1" / "shard-00001.nc"
    before = shard.stat().st_mtime_ns
    (run / "responses" / "dcn-ode-seed1" / "shard-00000.nc").unlink()     # as if stopped mid-run
    # a user's own V1 histogram for a property without a bundled one
    (tmp_path / "f1f0.csv").write_text("bin_low_ratio,bin_high_ratio,cells\n0,1,30\n1,2,10\n")
    assert script.main(["--checkpoint", *CKPTS, "--out", str(run), "--resume", *GRID,
                        "--reference", f"f1_f0={tmp_path / 'f1f0.csv'}"]) == 0
    row = [line for line in (run / "report.md").read_text().splitlines()
           if line.startswith("| dcn-ode | modulation ratio F1/F0")][0]
    assert "| 0.6667 | 40 |" in row                                     # V1 median 2/3, n = 40
    assert shard.stat().st_mtime_ns == before
    assert (run / "responses" / "dcn-ode-seed1" / "shard-00000.nc").is_file()
    rc = script.main(["--checkpoint", *CKPTS, "--out", str(run), "--resume", *GRID[:-1], "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "was written with other sf_per_shard" in err[-1]


def test_bad_grid_is_one_line(script, tmp_path, capsys):
    best = CKPTS[0].replace("last.pt", "best.pt")
    rc = script.main(["--checkpoint", CKPTS[0], best, "--out", str(tmp_path / "o"), "--no-init"])
    assert rc == 2 and "two trained runs of dcn-ode seed 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    rc = script.main(["--checkpoint", CKPTS[0], "--out", str(tmp_path / "o"), "--reference", "peak=x.csv"])
    assert rc == 2 and "expected PROPERTY=CSV with PROPERTY one of" in capsys.readouterr().err
    rc = script.main(["--checkpoint", CKPTS[0], "--out", str(tmp_path / "o"), "--n-phases", "2"])
    assert rc == 2 and "argument --n-phases: must be an integer >= 3, got 2" in capsys.readouterr().err
    rc = script.main(["--checkpoint", CKPTS[0], "--out", str(tmp_path / "o"), "--contrasts", "1.5"])
    assert rc == 2 and "Michelson contrast must lie in (0, 1]" in capsys.readouterr().err
