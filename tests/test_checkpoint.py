"""Checkpoints: round trip, atomicity, safe loading, clear errors."""
import os

import pytest
import torch

import dcnbio
from dcnbio.train.checkpoint import make_checkpoint, read_checkpoint, save_checkpoint
from dcnbio.errors import CheckpointError


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = dcnbio.create_model("dcn-sigma-ji", in_channels=1, width=0.125)
    path = tmp_path / "model.pt"
    save_checkpoint(make_checkpoint(model, kind="last", epoch=3, step=30, train_config={"seed": 1},
                                    metrics=[{"epoch": 1, "val_acc": 0.5}], data_hash="ab" * 32), path)
    return model, path


def test_round_trip_rebuilds_the_same_function(saved):
    model, path = saved
    loaded, info = dcnbio.load_checkpoint(path)
    assert info["kind"] == "last" and info["epoch"] == 3 and info["step"] == 30
    assert info["model_config"] == model.config.to_dict()
    assert "model_state" not in info and len(info["sha256"]) == 64
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))  # same weights, same solver settings: the same numbers
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)  # shared files follow the umask


def test_crafted_checkpoint_is_refused_and_its_payload_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling would create the marker file

    path = tmp_path / "evil.pt"
    torch.save({"format": "dcnbio-checkpoint", "format_version": 1, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        dcnbio.load_checkpoint(path)
    assert not marker.exists()


def test_truncated_foreign_and_other_version_files_give_one_line_errors(saved, tmp_path):
    _, path = saved
    raw = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(raw[: len(raw) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    future = tmp_path / "future.pt"
    ckpt = read_checkpoint(path)
    ckpt["format_version"] = 99
    torch.save(ckpt, future)
    cases = {truncated: "truncated or corrupt", garbage: "truncated or corrupt", foreign: "not a dcnbio checkpoint",
             future: "format version 99", tmp_path / "absent.pt": "no checkpoint file"}
    for bad, message in cases.items():
        with pytest.raises(CheckpointError) as err:
            dcnbio.load_checkpoint(bad)
        assert message in str(err.value) and "\n" not in str(err.value)


def test_weights_that_do_not_fit_the_config_are_reported(saved, tmp_path):
    _, path = saved
    ckpt = read_checkpoint(path)
    ckpt["model_config"]["width"] = 0.25
    bad = tmp_path / "mismatch.pt"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match="weights do not fit model 'dcn-sigma-ji'"):
        dcnbio.load_checkpoint(bad)
    ckpt["model_config"]["name"] = "dcn-sigma-ji"
    ckpt["model_config"]["solver"] = "no-such-solver"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match="invalid model configuration"):
        dcnbio.load_checkpoint(bad)


@pytest.mark.parametrize("name", ["dcn-sigma-ji", "dcn-sigma-alpha-t", "odenet"])
def test_the_fast_compute_path_is_the_recorded_function(name):
    """A bundled subset-trained run (torchdiffeq, dense SRF formulation) loaded on the fastest exact path
    (dcnbio's dopri5, ``auto``): its config says so, the checkpoint's record does not change, and in float64 the
    logits agree to 1e-9 of their scale with the same NFE — per-pair σ, time-dependent σ and α, pixel convs."""
    path = f"data/checkpoints/{name}/seed1/last.pt"
    recorded, rinfo = dcnbio.load_checkpoint(path, compute="recorded")
    default, dinfo = dcnbio.load_checkpoint(path)  # the loader's default is the recorded path
    assert dinfo["compute"] == "recorded" and default.config == recorded.config
    fast, finfo = dcnbio.load_checkpoint(path, compute="fast")
    assert (recorded.config.integrator, recorded.config.formulation) == ("torchdiffeq", "dense")
    assert (fast.config.integrator, fast.config.formulation) == ("dcnbio", "auto")
    assert finfo["compute"] == "fast" and finfo["model_config"] == rinfo["model_config"]
    assert all(b.integrator == "dcnbio" for b in dcnbio.ode_blocks(fast).values())
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        a = recorded.double()(x)
        nfe_a = dcnbio.nfe(recorded)
        b = fast.double()(x)
        nfe_b = dcnbio.nfe(fast)
    assert float((a - b).abs().max()) <= 1e-9 * float(a.abs().max())
    assert nfe_a == nfe_b and sum(n["forward"] for n in nfe_a.values()) > 0


def test_an_unknown_compute_path_is_refused(saved):
    with pytest.raises(dcnbio.errors.ConfigError, match="compute must be one of recorded, fast"):
        dcnbio.load_checkpoint(saved[1], compute="fastest")
