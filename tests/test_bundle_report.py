"""dcnbio.reports.bundle_report: the bundle's status tables (their inputs are checked in test_bundled.py)."""
import numpy as np
import xarray as xr

from dcnbio.reports.bundle_report import STILL_OCTAVES, runs_table, small_runs_table


def shift(values):
    return xr.Dataset({"median_abs_shift": ("block", np.asarray(values, float))},
                      coords={"block": [f"block{k + 1}" for k in range(len(values))]})


def row(model, seed, status, best_val=0.9, test_best=float("nan"), hours_left=None):
    return {"model": model, "seed": seed, "status": status, "schedule": "9 → 22", "best_val": best_val,
            "test_best": test_best, "hours": 1.5, "hours_left": hours_left}


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_a_finished_run_whose_sigma_stayed_under_the_line_is_flagged_and_one_in_training_is_not():
    still = STILL_OCTAVES / 2
    rows = [row("dcn-ode", 1, "done", test_best=0.8904),
            row("dcn-ode", 2, "training: epoch 3 + 20 batches (step 1400)", hours_left=(2.004, 7.5)),
            row("resnet-blocks", 1, "done", test_best=0.9)]
    text = runs_table(rows, {("dcn-ode", 1): shift([still, still]), ("dcn-ode", 2): shift([still, 0.2])})
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows)
    done, training, plain = (cells(line) for line in lines[2:])
    assert done[5] == "0.890"
    assert done[7] == "–" and training[7] == "2.00–7.50"  # hours left: none, or the fewest–most
    assert done[8] == f"block1 {still:.3f}, block2 {still:.3f} (< {STILL_OCTAVES} everywhere: σ did not move)"
    assert training[2] == "training: epoch 3 + 20 batches (step 1400)" and training[5] == "–"
    assert "did not move" not in training[8]  # not yet judged: it is still training
    assert plain[8] == "–"  # no SRF layer, no σ


def test_small_runs_table_has_one_row_per_run_in_the_given_order():
    rows = [{"model": m, "size": n, "seed": 1, "status": "done", "schedule": "40 → 100", "steps": 3000,
             "train_loss": 0.00201, "train_acc": 1.0, "hours": 0.07, "hours_left": left}
            for (m, n), left in zip((("odenet", 10), ("dcn-ode", 20)), (None, (1.5, 1.5)))]
    lines = small_runs_table(rows).splitlines()
    assert [cells(line)[:3] for line in lines[2:]] == [["odenet", "10", "1"], ["dcn-ode", "20", "1"]]
    assert cells(lines[2])[6:] == ["0.0020", "1.000", "0.07", "–"] and cells(lines[3])[9] == "1.50"
