"""The bundled checkpoints: intact (sha256 manifest), loadable, and what their configs say."""
import hashlib
import json
from pathlib import Path

import dcnbio

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
