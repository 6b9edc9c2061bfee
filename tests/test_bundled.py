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
    assert {r.parent.name for r in runs} >= {"dcn-sigma-ji", "dcn-ode", "odenet", "resnet-blocks"}
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
        assert 0.1 < final["test_acc_best"] <= 1  # better than chance on 10 classes
