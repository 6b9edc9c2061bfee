"""The bundled checkpoints: intact (sha256 manifest), loadable, and what their configs say."""
import hashlib
import json
from pathlib import Path

import dcnbio
from helpers import load_analysis

BUNDLE = Path(__file__).resolve().parents[1] / "data" / "checkpoints"


def manifest():
    lines = (BUNDLE / "MANIFEST.sha256").read_text().splitlines()
    return {name.removeprefix("./"): digest for digest, name in (line.split(maxsplit=1) for line in lines)}


def test_manifest_lists_every_bundled_file_with_its_sha256():
    listed = manifest()
    on_disk = {str(p.relative_to(BUNDLE)) for p in BUNDLE.rglob("*") if p.suffix in (".pt", ".json", ".csv")}
    assert set(listed) == on_disk
    for name, digest in listed.items():
        assert hashlib.sha256((BUNDLE / name).read_bytes()).hexdigest() == digest, name


def test_every_bundled_run_loads_and_matches_its_config():
    runs = sorted(BUNDLE.glob("*/seed*"))
    assert {r.parent.name for r in runs} >= {"dcn-sigma-ji", "dcn-ode", "odenet", "resnet-blocks",
                                             "dcn-sigma-t", "dcn-sigma-t2", "dcn-sigma-alpha-t"}
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        for kind in ("init", "last", "best"):
            model, info = dcnbio.load_checkpoint(run / f"{kind}.pt")
            assert info["kind"] == kind
            assert info["model_config"] == config["model_config"]
            assert info["train_config"] == config["train_config"]
        assert info["model_config"]["name"] == run.parent.name
        final = json.loads((run / "final.json").read_text())
        assert final["epochs"] == config["train_config"]["epochs"]
        assert 0 < final["best_val_acc"] <= 1
        if config["train_config"]["test"]:
            assert 0.1 < final["test_acc_best"] <= 1  # better than chance on 10 classes
        else:
            assert "test_acc_best" not in final


def test_bundled_small_data_grid_is_complete_and_loads():
    runs = sorted(BUNDLE.glob("small-data/*/n*/seed*"))
    grid = {(r.parts[-3], int(r.parts[-2][1:]), int(r.parts[-1][4:])) for r in runs}
    assert grid == {(m, n, s) for m in ("resnet-blocks", "odenet", "dcn-ode") for n in (10, 20, 50) for s in (1, 2, 3)}
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        model, info = dcnbio.load_checkpoint(run / "last.pt")
        assert info["model_config"] == config["model_config"]
        assert info["train_config"] == config["train_config"]
        assert config["train_config"]["subset"] == int(run.parts[-2][1:])
        assert config["train_config"]["seed"] == int(run.parts[-1][4:])
        assert json.loads((run / "final.json").read_text())["epochs"] == config["train_config"]["epochs"]


# --- the full-data bundle (data/checkpoints/full/): finished runs and runs still in training ------------------------
FULL = BUNDLE / "full"
#: The σ learning-rate control set: the recipe with ``--sigma-lr-scale``, never pooled with the recipe's runs.
CONTROL = BUNDLE / "full-sigma-lr10"


def full_runs():
    return sorted(p for p in FULL.glob("*/seed*") if p.is_dir())


def control_runs():
    return sorted(p for p in CONTROL.glob("*/seed*") if p.is_dir())


def control_arguments():
    """``(model, seed, extra arguments)`` of the control run as ``data/checkpoints/retrain.sh`` trains it."""
    import re
    import shlex

    text = (BUNDLE / "retrain.sh").read_text()
    line = re.search(r"^control\(\) \{.*?\n\s*OUT_ROOT=\$CONTROL_ROOT run (.*?)\n", text, re.M | re.S).group(1)
    model, seed, *extra = shlex.split(line)
    return model, int(seed), extra


def test_full_data_runs_load_record_their_segments_and_follow_the_recipe():
    """Every run of ``full/`` and of the control set ``full-sigma-lr10/``: the recipe (the control's σ learning-rate
    scale is the one ``retrain.sh`` gives it, the recipe's runs have none), its checkpoints, contiguous segments
    with their machines; a finished run ends where its plateau puts the end."""
    from dcnbio.train.checkpoint import read_checkpoint
    from dcnbio.train.config import plateau_schedule

    runs = full_runs()
    assert runs, "no full-data run is bundled"
    model, seed, extra = control_arguments()
    assert extra[0] == "--sigma-lr-scale" and float(extra[1]) > 1
    assert [(r.parent.name, r.name) for r in control_runs()] in ([], [(model, f"seed{seed}")])
    for run in runs + control_runs():
        config = json.loads((run / "config.json").read_text())
        tc = config["train_config"]
        assert (tc["dataset"], tc["width"], tc["subset"], tc["val_size"]) == ("fashion-mnist", 0.25, None, 1000)
        assert tc["sigma_lr_scale"] == (float(extra[1]) if run.is_relative_to(CONTROL) else 1.0)
        assert tc["plateau_patience"] > 0 and tc["model_overrides"].get("adjoint") is False
        assert (tc["lr"], tc["momentum"], tc["milestones"], tc["gamma"]) == (0.1, 0.9, [0.4, 0.7], 0.1)
        for kind in ("init", "last"):
            _, info = dcnbio.load_checkpoint(run / f"{kind}.pt")
            assert info["kind"] == kind and info["model_config"] == config["model_config"]
            assert info["train_config"] == tc
        last = read_checkpoint(run / "last.pt")
        loop = last["optimizer_state"]["loop"]
        segments = loop["segments"]
        assert segments[0]["start_step"] == 0 and segments[-1]["end_step"] == last["step"]
        for before, after in zip(segments, segments[1:]):
            assert before["end_step"] == after["start_step"]
        for segment in segments:
            assert segment["machine"]["cpu"] and segment["machine"]["aten_capability"]
            assert segment["machine"]["threads"] == 1  # one single-threaded lane per core
        if (run / "final.json").exists():
            final = json.loads((run / "final.json").read_text())
            dcnbio.load_checkpoint(run / "best.pt")
            assert final["epochs"] == loop["epochs"] == last["epoch"] and final["steps"] == last["step"]
            assert final["segments"] == segments
            p = final["plateau_epoch"]
            if p < round(0.4 * tc["epochs"]):  # a measured plateau: the paper's proportions from it
                assert plateau_schedule(p)[1] == final["epochs"]
            rows = (run / "metrics.csv").read_text().strip().splitlines()
            assert len(rows) == 1 + final["epochs"]
        else:
            assert last["epoch"] < loop["epochs"], f"{run}: finished epochs but no final.json"


def test_finished_full_data_runs_reproduce_their_recorded_test_subset_accuracy():
    from dcnbio.train.data import load_dataset
    from dcnbio.train.loop import evaluate

    finished = [r for r in full_runs() + control_runs() if (r / "final.json").exists()]
    assert finished, "no full-data run has finished"
    test = load_dataset("fashion-mnist", "test", download=False)
    for run in finished:
        check = json.loads((run / "final.json").read_text())["check"]
        first = test.subset(range(check["images"]))
        model, _ = dcnbio.load_checkpoint(run / "best.pt")
        acc = evaluate(model, first, 256, "cpu")["acc"]
        # the same function on any CPU: at most one image may flip at float rounding
        assert abs(acc - check["acc_best"]) <= 1 / check["images"] + 1e-12, run


def test_full_data_small_data_grid_runs_follow_the_plateau_recipe():
    """``full/small-data/<model>/n<size>/seed<S>/``: each run is the grid's ``plateau`` recipe for its cell, its
    init.pt and last.pt load, its segments are contiguous with their machines; a finished run ends where the
    plateau it measured (or the cap) puts the end, with one metrics row per epoch and no best.pt."""
    from dcnbio.train.checkpoint import read_checkpoint
    from dcnbio.train.config import TrainConfig, plateau_schedule
    from dcnbio.train.grid import IRRELEVANT_FIELDS, small_data_config

    runs = sorted(p for p in (FULL / "small-data").glob("*/n*/seed*") if p.is_dir())
    assert runs, "no run of the full-data small-data grid is bundled"
    for run in runs:
        model, size, seed = run.parts[-3], int(run.parts[-2][1:]), int(run.parts[-1][4:])
        config = json.loads((run / "config.json").read_text())
        stored = TrainConfig.from_dict(config["train_config"])
        assert not small_data_config(model, size, seed, recipe="plateau").differences(stored, IRRELEVANT_FIELDS)
        for kind in ("init", "last"):
            _, info = dcnbio.load_checkpoint(run / f"{kind}.pt")
            assert info["kind"] == kind and info["train_config"] == config["train_config"]
        last = read_checkpoint(run / "last.pt")
        loop = last["optimizer_state"]["loop"]
        segments = loop["segments"]
        assert segments[0]["start_step"] == 0 and segments[-1]["end_step"] == last["step"]
        assert all(a["end_step"] == b["start_step"] for a, b in zip(segments, segments[1:]))
        assert all(s["machine"]["cpu"] and s["machine"]["threads"] == 1 for s in segments)
        if (run / "final.json").exists():
            final = json.loads((run / "final.json").read_text())
            assert not (run / "best.pt").exists()
            assert final["epochs"] == loop["epochs"] == last["epoch"] and final["steps"] == last["step"]
            p = final["plateau_epoch"]
            cap = stored.first_level_cap()
            assert final["epochs"] == (plateau_schedule(p)[1] if p < cap else stored.epochs)
            assert final["steps"] == final["epochs"] * stored.steps_per_epoch()
            assert len((run / "metrics.csv").read_text().strip().splitlines()) == 1 + final["epochs"]
        else:
            assert last["epoch"] < loop["epochs"], f"{run}: finished epochs but no final.json"


def recipe_arguments():
    """The full-data recipe's ``dcnbio train`` arguments as ``data/checkpoints/retrain.sh`` writes them."""
    import re
    import shlex

    text = (BUNDLE / "retrain.sh").read_text()
    recipe = shlex.split(re.search(r"^RECIPE=\((.*?)\)", text, re.M | re.S).group(1))
    save = int(re.search(r"local save=(\d+);", text).group(1))
    return recipe, save


def test_a_bundled_run_in_training_resumes_with_today_s_code(tmp_path):
    """What a fresh machine does with the repository alone: ``retrain.sh``'s command with ``--resume`` continues a
    bundled unfinished run from its last.pt (same configuration, its weights and optimizer state), takes a step,
    and on SIGTERM writes the next last.pt with a new segment — stopped at a safe point, exit status 143.  A DCN
    run is preferred (its SRF layers go through the ``auto`` formulation rule); while none is in training, an
    ODE-Net run is what a fresh machine resumes.  A run of the control set resumes with the control's arguments
    of ``retrain.sh``."""
    import os
    import shutil
    import signal
    import subprocess
    import sys

    import torch

    from dcnbio.train.checkpoint import read_checkpoint

    unfinished = sorted((r for r in full_runs() + control_runs() if not (r / "final.json").exists()),
                        key=lambda r: not r.parent.name.startswith("dcn"))
    if not unfinished:
        import pytest
        pytest.skip("every bundled run has finished: none to resume (retire this test with the last one)")
    run = unfinished[0]
    copy = tmp_path / run.parent.name / run.name
    shutil.copytree(run, copy)
    before = read_checkpoint(copy / "last.pt")
    recipe, save = recipe_arguments()
    extra = control_arguments()[2] if run.is_relative_to(CONTROL) else []
    command = [sys.executable, "-m", "dcnbio.train", "--model", run.parent.name, "--seeds", run.name[4:],
               "--out", str(copy.parent), *recipe, "--save-every", str(save), "--resume", *extra]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    for line in proc.stdout:
        if line.startswith("resuming"):
            assert f"(step {before['step']})" in line, line
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 143, err
    after = read_checkpoint(copy / "last.pt")
    assert after["step"] >= before["step"] and after["model_config"] == before["model_config"]
    assert after["train_config"] == before["train_config"]
    segments = after["optimizer_state"]["loop"]["segments"]
    assert segments[:-1] == before["optimizer_state"]["loop"]["segments"]  # the bundled history, kept as it was
    assert segments[-1]["start_step"] == before["step"] and segments[-1]["end_step"] == after["step"]
    if after["step"] > before["step"]:
        changed = [k for k, v in after["model_state"].items() if not torch.equal(v, before["model_state"][k])]
        assert changed  # a step was taken from the bundled state
    else:
        assert all(torch.equal(v, before["model_state"][k]) for k, v in after["model_state"].items())


def test_bundle_summary_tabulates_every_run_and_its_sigma_shift_from_the_weights(tmp_path, capsys):
    """``analyses/bundle_summary.py`` on the bundle: one row per run (and per small-data run) with the status its
    files say; the σ shift of dcn-ode (one σ per SRF layer) equals the median over each block's layers of
    |Δ log2_scale| read straight from the state dicts of last.pt and init.pt."""
    import re
    import shutil

    import numpy as np
    import xarray as xr

    from dcnbio.train.checkpoint import read_checkpoint

    script = load_analysis("bundle_summary")
    control = tmp_path / "full-sigma-lr10"  # a stand-in control set: a copy of a finished σ_ji run
    shutil.copytree(FULL / "dcn-sigma-ji" / "seed1", control / "dcn-sigma-ji" / "seed1")
    assert script.main(["--out", str(tmp_path / "bs"), "--control", str(control)]) == 0
    capsys.readouterr()
    text, control_text = (tmp_path / "bs" / "summary.md").read_text().split("σ learning-rate control")
    control_rows = [line for line in control_text.splitlines() if line.startswith("| dcn-sigma-ji |")]
    main_row = next(line for line in text.splitlines() if line.startswith("| dcn-sigma-ji | 1 |"))
    assert control_rows == [main_row]  # the same run, tabulated apart and never pooled with the recipe's runs
    main_rows = [line for line in text.split("Small-data grid")[0].splitlines() if line.startswith("| ")][1:]
    assert len(main_rows) == len(full_runs())
    for run, line in zip(full_runs(), main_rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:2] == [run.parent.name, run.name[4:]]
        assert (cells[2] == "done") == (run / "final.json").exists()
        if cells[2] != "done":  # where last.pt stands: E epochs recorded in its metrics, B steps into the next
            last = read_checkpoint(run / "last.pt")
            e, b, step = map(int, re.fullmatch(r"training: epoch (\d+) \+ (\d+) batches \(step (\d+)\)",
                                               cells[2]).groups())
            per_epoch = (60000 - 1000) // 128  # Fashion-MNIST's training set less the hold-out, batch 128
            assert step == last["step"] and e == len(last["metrics"]) and step == e * per_epoch + b
            assert 0 <= b < per_epoch and cells[5] == "–"
            # hours left at the run's own rate: its schedule's steps still to take (all 30 epochs at the most)
            loop = last["optimizer_state"]["loop"]
            rate = loop["elapsed"] / last["step"] / 3600
            low, _, high = cells[7].partition("–")
            assert f"{(loop['epochs'] * per_epoch - step) * rate:.2f}" == (high or low)
            assert float(low) <= float(high or low) and not (high and loop["plateau_epoch"] is not None)
        else:
            assert cells[7] == "–"
    small = list((FULL / "small-data").glob("*/n*/seed*"))
    assert text.count("\n| resnet-blocks |") + text.count("\n| odenet |") + text.count("\n| dcn-ode |") \
        == sum(r.parent.name in ("resnet-blocks", "odenet", "dcn-ode") for r in full_runs()) + len(small)
    shifts = xr.open_dataset(tmp_path / "bs" / "sigma_shift.nc")
    run = FULL / "dcn-ode" / "seed1"
    last, init = (read_checkpoint(run / f"{k}.pt")["model_state"] for k in ("last", "init"))
    for block in ("block1", "block2", "block3"):
        keys = [k for k in last if k.startswith(block + ".") and k.endswith("log2_scale")]
        expected = np.median([abs(float(last[k]) - float(init[k])) for k in keys])
        got = float(shifts["median_abs_shift"].sel(model="dcn-ode", seed=1, block=block))
        assert abs(got - expected) < 1e-6, block
