"""analyses/reproduce.py: the verdict rules (dcnbio.reports.claims) on planted numbers, and the whole pipeline once
on the bundled checkpoints (the runner and run-time table of dcnbio.reproduce_run)."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st

from dcnbio import reproduce_run
from dcnbio.reports import claims
from dcnbio.reports.claims import FAILS, HOLDS, UNDECIDED
from dcnbio.stats.runs import against_reference
from dcnbio.errors import CheckpointError, DataError
from helpers import load_analysis

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rp():
    return load_analysis("reproduce")


def test_t_interval_matches_scipy():
    x = np.array([1.3, 0.2, 2.9, 1.1])
    mean, lo, hi = claims.t_interval(x)
    ref = st.t.interval(0.95, x.size - 1, loc=x.mean(), scale=st.sem(x))
    assert mean == pytest.approx(x.mean()) and (lo, hi) == pytest.approx(ref)
    assert np.isnan(claims.t_interval([1.0])[1])  # one run: no interval


def planted(values):
    """Run values: ``{model: [v1, v2, ...]}`` → the against_reference table."""
    return against_reference({(m, f"{m}-seed{k}"): v for m, vs in values.items() for k, v in enumerate(vs)}, 0.0)


def test_direction_verdict():
    down = {"dcn-ode": [-1.0, -1.1, -0.9], "dcn-sigma-ji": [-2.0, -2.2, -1.9]}
    assert claims.direction_verdict(planted(down), -1) == HOLDS
    assert claims.direction_verdict(planted(down), +1) == FAILS
    mixed = {"dcn-ode": [-1.0, -1.1, -0.9], "dcn-sigma-ji": [2.0, 2.2, 1.9]}
    assert claims.direction_verdict(planted(mixed), -1) == UNDECIDED
    noisy = {"dcn-ode": [-1.0, 1.1, -0.9], "dcn-sigma-ji": [-2.0, -2.2, -1.9]}
    assert claims.direction_verdict(planted(noisy), -1) == UNDECIDED
    one_run = {"dcn-ode": [-1.0], "dcn-sigma-ji": [-2.0, -2.2, -1.9]}  # no test for a single run
    assert claims.direction_verdict(planted(one_run), -1) == UNDECIDED
    baselines_only = {"odenet": [-1.0, -1.1, -0.9]}
    assert claims.direction_verdict(planted(baselines_only), -1) == UNDECIDED


def test_dcn_differences_take_the_sign_of_dcn_minus_other():
    values = {(m, f"{m}-seed{k}"): v for m, vs in (("odenet", (1.0, 1.2)), ("dcn-ode", (0.5, 0.7)),
                                                   ("resnet-blocks", (2.0, 2.1))) for k, v in enumerate(vs)}
    diffs = dict((o, (d, p)) for o, d, p in claims.dcn_differences(values))
    assert set(diffs) == {"odenet", "resnet-blocks"}
    assert diffs["odenet"][0] == pytest.approx(0.6 - 1.1) and diffs["resnet-blocks"][0] == pytest.approx(0.6 - 2.05)
    welch = st.ttest_ind([0.5, 0.7], [2.0, 2.1], equal_var=False)
    assert diffs["resnet-blocks"][1] == pytest.approx(welch.pvalue, rel=1e-9)
    # a model name holding the pair separator is still one model; a NaN run is left out; no dcn-ode → nothing
    odd = {("dcn-ode", "d1"): 0.5, ("dcn-ode", "d2"): 0.7, ("x − y", "x1"): 1.0, ("x − y", "x2"): 1.2,
           ("x − y", "x3"): np.nan}
    assert [(o, round(d, 12)) for o, d, _ in claims.dcn_differences(odd)] == [("x − y", round(0.6 - 1.1, 12))]
    assert claims.dcn_differences({("odenet", "o1"): 1.0}) == []


def test_meta_claims_pair_each_run_with_the_init_of_its_own_folder():
    import xarray as xr

    def curves(values, path, kind, accuracy=0.9):
        return xr.Dataset({"log2_sigma": (("layer", "time"), np.asarray(values, float))},
                          attrs={"checkpoint_path": path, "checkpoint_kind": kind, "accuracy": accuracy,
                                 "model_name": "dcn-sigma-t"})
    # labels that say nothing of the pairing: the init of seed1 is listed under another run's name
    data = {"a": curves([[0.0, 0.5], [1.0, 1.1]], "ck/dcn-sigma-t/seed1/best.pt", "best"),
            "b": curves([[0.0, 0.0], [1.0, 1.0]], "ck/dcn-sigma-t/seed2/best.pt", "best"),
            "b-init": curves([[0.0, 0.0], [1.0, 1.0]], "ck/dcn-sigma-t/seed1/init.pt", "init")}
    row, = claims.meta_claims(data)
    parts = row["result"].split("; ")
    assert len(parts) == 2 and "b-init" not in row["result"]
    assert parts[0].startswith("a: accuracy 90.0 %") and "+0.50, +0.10 octaves" in parts[0]
    assert f"from init {np.median([0, 0.5, 0, 0.1]):.3f} octaves" in parts[0]
    assert "from init" not in parts[1]  # seed2 has no init: no pairing by name
    assert row["verdict"] == UNDECIDED + " (fewer than two runs of dcn-sigma-t, dcn-ode: no test across runs)"
    assert row["test"] == "none: no test accuracy across runs"
    assert row["rests on"] == "σ(t) of 2 runs of dcn-sigma-t; test accuracy of 0 runs of dcn-sigma-t, 0 runs of dcn-ode"


def test_parameter_claims_judge_accuracy_across_runs_and_say_how_the_runs_were_trained():
    acc = {"dcn-ode": [85.0, 85.5, 84.5], "odenet": [90.0, 90.2, 89.8], "resnet-blocks": [89.0, 90.0, 91.0]}
    finals = {(m, f"{m}-{k}"): {"test_acc_best": a / 100, "steps": 460 * (10 + k), "epochs": 10 + k,
                                "plateau_epoch": 4 + k} for m, accs in acc.items() for k, a in enumerate(accs)}
    count, accuracy = claims.parameter_claims(finals)
    assert count["verdict"] == HOLDS and accuracy["verdict"] == FAILS  # dcn-ode 5 pp below odenet, p < 0.05
    p = st.ttest_ind(acc["dcn-ode"], acc["odenet"], equal_var=False).pvalue
    assert f"dcn-ode − odenet {85.0 - 90.0:+.1f} pp (Welch p = {p:.2g})" in accuracy["test"]
    assert accuracy["rests on"] == ("3 runs per model, trained past the validation plateau (plateau rule; 10–12 "
                                    "epochs, 4,600–5,520 SGD steps)")
    for final in list(finals.values())[:2]:
        del final["plateau_epoch"]
    assert claims.parameter_claims(finals)[1]["rests on"].endswith(
        "4600/5060/5520 SGD steps; no validation plateau recorded for 2 of 9 runs (fixed schedules or the epoch cap)")
    assert claims.parameter_claims({}) == [count]


def meta_data(models, shift=0.5):
    """meta.nc stand-ins: per model, two trained runs whose σ(t) moved by ``shift`` octaves from their init."""
    import xarray as xr
    data = {}
    for model in models:
        for seed in (1, 2):
            for kind, values in (("best", [[0.0, shift], [1.0, 1.0 + shift]]), ("init", [[0.0, 0.0], [1.0, 1.0]])):
                data[f"{model}-{seed}-{kind}"] = xr.Dataset(
                    {"log2_sigma": (("layer", "time"), np.asarray(values))},
                    attrs={"checkpoint_path": f"ck/{model}/seed{seed}/{kind}.pt", "checkpoint_kind": kind,
                           "accuracy": 0.9, "model_name": model})
    return data


def finals_of(accuracies):
    """``{(model, run): {"test_acc_best": fraction}}`` from ``{model: [accuracy %, ...]}``."""
    return {(m, f"{m}-{k}"): {"test_acc_best": a / 100} for m, accs in accuracies.items() for k, a in enumerate(accs)}


def test_meta_claims_judge_accuracy_against_dcn_ode_by_the_welch_interval():
    ode = [90.0, 90.4, 89.6]
    # within the margin: both intervals above −2 pp, σ(t) moved → holds; the interval is scipy's Welch interval
    row, = claims.meta_claims(meta_data(["dcn-sigma-t", "dcn-sigma-t2"]),
                              finals_of({"dcn-sigma-t": [89.5, 90.1, 89.9], "dcn-sigma-t2": [90.2, 89.8, 90.0],
                                         "dcn-ode": ode}))
    assert row["verdict"] == HOLDS
    ci = st.ttest_ind([89.5, 90.1, 89.9], ode, equal_var=False).confidence_interval()
    assert f"dcn-sigma-t − dcn-ode {np.mean([89.5, 90.1, 89.9]) - 90:+.1f} pp, 95 % [{ci.low:+.1f}, {ci.high:+.1f}]" \
        in row["test"]
    assert "dcn-sigma-t 89.8 ± 0.3" in row["result"] and row["rests on"] == (
        "σ(t) of 2 runs of dcn-sigma-t, 2 runs of dcn-sigma-t2; test accuracy of 3 runs of dcn-sigma-t, "
        "3 runs of dcn-sigma-t2, 3 runs of dcn-ode")
    # one model's whole interval below −2 pp → does not hold, even while σ(t) has not moved
    row, = claims.meta_claims(meta_data(["dcn-sigma-t"], shift=0.0),
                              finals_of({"dcn-sigma-t": [80.0, 80.5, 79.5], "dcn-ode": ode}))
    assert row["verdict"] == FAILS
    # an interval straddling −2 pp → undecided; σ(t) still the init's → undecided, said so
    row, = claims.meta_claims(meta_data(["dcn-sigma-t"]), finals_of({"dcn-sigma-t": [84.0, 92.0], "dcn-ode": ode}))
    assert row["verdict"] == UNDECIDED
    row, = claims.meta_claims(meta_data(["dcn-sigma-t"], shift=0.01),
                              finals_of({"dcn-sigma-t": [90.0, 90.2], "dcn-ode": ode}))
    assert row["verdict"] == UNDECIDED + " (the σ(t) curves are still the initialisation's)"
    # without an init control the σ(t) half of the claim is unknown; one run's σ(t) still the init's → not holds
    close = finals_of({"dcn-sigma-t": [90.0, 90.2], "dcn-ode": ode})
    no_init = {k: v for k, v in meta_data(["dcn-sigma-t"]).items() if not k.endswith("-init")}
    assert claims.meta_claims(no_init, close)[0]["verdict"] == UNDECIDED + (
        " (no init.pt beside the runs: whether σ(t) moved is unknown)")
    mixed = {**meta_data(["dcn-sigma-t"]), **{k: v for k, v in meta_data(["dcn-sigma-t"], shift=0.01).items()
                                              if k.startswith("dcn-sigma-t-2")}}
    assert claims.meta_claims(mixed, close)[0]["verdict"] == UNDECIDED
    # one run of a meta model, or runs without a test accuracy (--no-test): no test for it, so it cannot hold
    row, = claims.meta_claims(meta_data(["dcn-sigma-t"]), finals_of({"dcn-sigma-t": [90.0], "dcn-ode": ode}))
    assert row["verdict"] == UNDECIDED + " (fewer than two runs of dcn-sigma-t: no test across runs)"
    assert row["test"] == "dcn-sigma-t − dcn-ode +0.0 pp, no test (fewer than two runs, or no spread)"
    untested = {**finals_of({"dcn-ode": ode}), ("dcn-sigma-t", "t1"): {"steps": 70}, ("dcn-sigma-t", "t2"): {}}
    row, = claims.meta_claims(meta_data(["dcn-sigma-t"]), untested)
    assert row["verdict"] == UNDECIDED + " (fewer than two runs of dcn-sigma-t: no test across runs)"
    assert "dcn-sigma-t −" not in row["test"] and "test accuracy (%) over runs: dcn-ode 90.0 ± 0.4" in row["result"]


def one_line_error(capsys, rc, match):
    err = capsys.readouterr().err
    assert rc == 2 and match in err and err.strip().count("\n") == 0, err


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(rp, tmp_path, capsys):
    out = tmp_path / "out"
    one_line_error(capsys, rp.main(["--no-run", "--results", str(tmp_path / "none"), "--out", str(out)]),
                   "run analyses/sigma_distribution.py first")
    assert not out.exists()
    one_line_error(capsys, rp.main(["--smoke", "--no-run", "--out", str(out)]), "cannot go with --no-run")
    one_line_error(capsys, rp.main(["--n-images", "0", "--out", str(out)]),
                   "argument --n-images: must be an integer >= 1, got 0")
    one_line_error(capsys, rp.main(["--no-run", "--only", "contrast", "--out", str(out)]), "cannot go with --no-run")
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    one_line_error(capsys, rp.main(["--no-run", "--out", str(out)]), "pass --overwrite")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_failing_analysis_stops_the_run_with_its_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reproduce_run, "ANALYSES", ("sigma_distribution",))
    with pytest.raises(DataError, match=r"analyses/sigma_distribution.py failed \(exit 2\).*error: .*nowhere.pt"):
        reproduce_run.run_analyses(tmp_path / "results", 2,
                                   {"sigma_distribution": ["--checkpoint", str(tmp_path / "nowhere.pt")]}, repo=ROOT)


@pytest.fixture(scope="module")
def smoke(rp, tmp_path_factory):
    """The whole pipeline once: every analysis on its bundled defaults (a few images), then the report."""
    root = tmp_path_factory.mktemp("reproduce")
    rc = rp.main(["--smoke", "--results", str(root / "results"), "--out", str(root / "out")])
    return rc, root


def test_smoke_run_judges_every_claim(rp, smoke):
    rc, root = smoke
    assert rc == 0
    judged = pd.read_csv(root / "out" / "claims.csv", index_col="claim")
    expected = {"DCNs need fewer parameters", "learned σ grow with depth", "small-data advantage",
                "DCN-ODE reconstructs best", "contrast scaling of T keeps accuracy", "… and cuts NFE",
                "… and the NFE saving survives atol·c",
                "DCN units' latency grows as contrast falls, as in V1 (not a paper claim)",
                "DCN units' SF selectivity is V1-like (Schiller 1976; not a paper claim)",
                *(f"D(t) decreases within block 1, normaliser {n}" for n in ("amplitude_t", "amplitude_0",
                                                                              "per_element"))}
    assert expected <= set(judged.index)
    assert all(v.split(" (")[0] in (HOLDS, FAILS, UNDECIDED) for v in judged["verdict"])
    # the architecture decides the parameter claim; the bundled σ never moved far, so the σ claims stay undecided
    assert judged.loc["DCNs need fewer parameters", "verdict"] == HOLDS
    assert "428,752" in judged.loc["DCNs need fewer parameters", "result"]
    assert judged.loc["learned σ grow with depth", "verdict"].startswith(UNDECIDED + " (σ did not move")
    report = (root / "out" / "report.md").read_text()
    assert "the finished runs of the 'subset' bundle" in report
    for name in reproduce_run.ANALYSES:
        assert f"| {name} |" in report  # its run time
    assert (root / "out" / "report.tex").stat().st_size > 0


def test_no_run_rejudges_the_same_results_identically(rp, smoke, capsys):
    rc, root = smoke
    assert rc == 0
    again = root / "again"
    assert rp.main(["--no-run", "--results", str(root / "results"), "--out", str(again)]) == 0
    a = pd.read_csv(root / "out" / "claims.csv", index_col="claim")
    b = pd.read_csv(again / "claims.csv", index_col="claim")
    pd.testing.assert_frame_equal(a, b)
    # the run times come from results/runtimes.csv, written by the run, one row per analysis
    times = pd.read_csv(root / "results" / "runtimes.csv", index_col="analysis")
    assert list(times.index) == list(reproduce_run.ANALYSES) and (times["seconds"] > 0).all()
    assert all(f"analyses/{name}.py" in cmd for name, cmd in times["command"].items())
    report = (again / "report.md").read_text()
    assert "## Run time" in report and all(f"| {name} |" in report for name in reproduce_run.ANALYSES)


def test_only_reruns_one_analysis_and_keeps_the_others_results_and_times(rp, smoke, tmp_path):
    rc, root = smoke
    assert rc == 0
    results = tmp_path / "results"
    shutil.copytree(root / "results", results)
    before = pd.read_csv(results / "runtimes.csv", index_col="analysis")
    untouched = {p.name: p.stat().st_mtime_ns for p in (results / "contrast").iterdir()}
    assert rp.main(["--only", "sigma_distribution", "--results", str(results), "--out", str(tmp_path / "out")]) == 0
    after = pd.read_csv(results / "runtimes.csv", index_col="analysis")
    assert list(after.index) == list(reproduce_run.ANALYSES)
    others = [a for a in reproduce_run.ANALYSES if a != "sigma_distribution"]
    pd.testing.assert_frame_equal(before.loc[others], after.loc[others])
    assert after.loc["sigma_distribution", "finished"] >= before.loc["sigma_distribution", "finished"]
    assert {p.name: p.stat().st_mtime_ns for p in (results / "contrast").iterdir()} == untouched
    # σ_ji results are deterministic: the re-judged claims are the same
    pd.testing.assert_frame_equal(pd.read_csv(root / "out" / "claims.csv", index_col="claim"),
                                  pd.read_csv(tmp_path / "out" / "claims.csv", index_col="claim"))


def test_a_lane_judges_only_when_every_analysis_has_finished(rp, smoke, tmp_path, capsys):
    rc, root = smoke
    assert rc == 0
    results = tmp_path / "results"
    shutil.copytree(root / "results", results)
    reproduce_run.forget_runtime(results, "contrast")  # another lane's analysis, still running
    assert rp.main(["--only", "sigma_distribution", "--results", str(results), "--out", str(tmp_path / "out")]) == 0
    assert "not finished in" in capsys.readouterr().out and not (tmp_path / "out").exists()
    assert "sigma_distribution" in reproduce_run.read_runtimes(results).index


def test_a_foreign_runtimes_table_is_refused(tmp_path):
    (tmp_path / "runtimes.csv").write_text("analysis,minutes\nx,1\n")
    with pytest.raises(DataError, match="not a runtimes table"):
        reproduce_run.read_runtimes(tmp_path)


def test_a_damaged_final_json_stops_the_judging_with_the_file_named(tmp_path):
    """A finished run whose ``final.json`` was cut short (a bad copy) is refused before anything is judged."""
    run = tmp_path / "data/checkpoints/full/dcn-ode/seed2"
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(b"")
    (run / "final.json").write_text('{"epochs": 20, "test_acc_b')
    with pytest.raises(CheckpointError, match=r"seed2/final\.json is not readable JSON.*restore it from git"):
        reproduce_run.judge_claims(tmp_path / "results", tmp_path, "full")


def test_bundle_fingerprint_covers_the_bundle_and_the_reference_data_only(tmp_path):
    """A bundle's fingerprint changes with its own runs' files and with data outside every bundle, not with another
    bundle's files (``full`` lies inside ``subset``'s root) nor with run lock files."""
    files = {"subset": tmp_path / "data/checkpoints/dcn-ode/seed1/last.pt",
             "full": tmp_path / "data/checkpoints/full/dcn-ode/seed1/last.pt",
             "reference": tmp_path / "data/reference/v1.csv",
             "lock": tmp_path / "data/checkpoints/full/dcn-ode/seed1/.dcnbio.lock"}
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"0")

    def prints():
        return {b: reproduce_run.bundle_fingerprint(tmp_path, b) for b in ("subset", "full")}

    before = prints()
    assert before["subset"] != before["full"]
    for changed, moves in (("lock", set()), ("full", {"full"}), ("subset", {"subset"}),
                           ("reference", {"subset", "full"})):
        files[changed].write_bytes(b"1" + files[changed].read_bytes())
        now = prints()
        assert {b for b in now if now[b] != before[b]} == moves, changed
        before = now
    with pytest.raises(DataError, match="unknown bundle"):
        reproduce_run.bundle_fingerprint(tmp_path, "nope")


def test_resume_skips_what_finished_on_the_same_inputs_and_reruns_the_rest(tmp_path, monkeypatch):
    """``resume``: an analysis recorded with this command and these inputs is kept; one whose row is gone (it
    started and never finished) or whose inputs differ is run again."""
    results, lines = tmp_path / "results", []
    extra = {"sigma_distribution": ["--n-boot", "5"]}

    def run():
        lines.clear()
        reproduce_run.run_analyses(results, 2, extra, ["sigma_distribution"], repo=ROOT, log=lines.append,
                                   bundle="full", resume=True)
        return reproduce_run.read_runtimes(results)

    first = run()
    assert lines[0] == "running sigma_distribution ..."
    assert "--bundle full" in first.loc["sigma_distribution", "command"]
    assert "--compute" not in first.loc["sigma_distribution", "command"]  # it evaluates no model
    assert first.loc["sigma_distribution", "inputs"] == reproduce_run.bundle_fingerprint(ROOT, "full")
    mtime = (results / "sigma_distribution" / "sigma.nc").stat().st_mtime_ns
    again = run()
    assert lines == [f"  sigma_distribution: done on these inputs ({first.loc['sigma_distribution', 'finished']}), "
                     "kept"]
    pd.testing.assert_frame_equal(first, again)
    assert (results / "sigma_distribution" / "sigma.nc").stat().st_mtime_ns == mtime
    monkeypatch.setattr(reproduce_run, "bundle_fingerprint", lambda repo, bundle: "other contents")
    run()
    assert lines[0] == "running sigma_distribution ..."
    monkeypatch.undo()
    reproduce_run.forget_runtime(results, "sigma_distribution")  # as when a run is killed mid-way
    assert "sigma_distribution" not in reproduce_run.read_runtimes(results).index
    run()
    assert lines[0] == "running sigma_distribution ..."


def test_results_of_another_bundle_are_refused(rp, smoke, tmp_path, capsys):
    rc, root = smoke
    assert rc == 0
    results = tmp_path / "results"
    shutil.copytree(root / "results", results)
    times = pd.read_csv(results / "runtimes.csv", index_col="analysis")
    assert all("--bundle subset" in c for c in times["command"])  # the default bundle, named in every command
    one_line_error(capsys, rp.main(["--no-run", "--bundle", "full", "--results", str(results),
                                    "--out", str(tmp_path / "out")]),
                   "holds results of another bundle (sigma_distribution: subset")
    assert not (tmp_path / "out").exists()
    one_line_error(capsys, rp.main(["--no-run", "--resume", "--out", str(tmp_path / "out")]),
                   "--resume chooses analyses to run")
    # a lane on another bundle is refused before it runs anything: the results it would keep are the other's
    before = (results / "runtimes.csv").read_text()
    one_line_error(capsys, rp.main(["--only", "sigma_distribution", "--bundle", "full", "--results", str(results),
                                    "--out", str(tmp_path / "out")]),
                   "holds results of another bundle (pattern_completion: subset")
    assert (results / "runtimes.csv").read_text() == before
