"""The report of ``analyses/solver_audit.py`` from :mod:`dcnbio.extract.solver_audit`'s results and verdicts."""
import pandas as pd

from .report import Report

__all__ = ["solver_audit_report"]


def solver_audit_report(results, verdicts, tables, runs, data, missing=(), *, threshold, batch_size):
    """The report of ``analyses/solver_audit.py``.

    Parameters
    ----------
    results : dict of str → xarray.Dataset
        Label → :func:`~dcnbio.extract.solver_audit.compute_solver_audit`.
    verdicts, tables : dict
        Label → the verdict and the per-setting table of
        :func:`~dcnbio.extract.solver_audit.assess_solver_independence`.
    runs : list of (label, model, info)
    data : dict of str → tuple
        Label → (images, labels, indices, dataset info, dataset name).
    missing : sequence of str
    threshold : float
    batch_size : int
    """
    report = Report("Solver audit: accuracy under other solvers and tolerances")
    report.section("Inputs")
    report.table(pd.DataFrame([{"model": label, "checkpoint": info["path"], "epoch": info.get("epoch", ""),
                                "dataset": data[label][4], "images": int(data[label][0].shape[0]),
                                "batch size": batch_size, "own solver": model.config.solver,
                                "rtol": model.config.rtol, "atol": model.config.atol, "T": model.config.T}
                               for label, model, info in runs]).set_index("model"), "Checkpoints")
    if missing:
        report.text("Default checkpoints not found (skipped): " + ", ".join(f"`{m}`" for m in missing) + ".")
    report.text(f"Adaptive settings use rtol = atol = tol; fixed-step settings use step size T/steps in every block. "
                f"A refinement is a setting at least as accurate as the model's own by construction (tighter "
                f"tolerances for an adaptive own solver, more steps of the same fixed-step method otherwise; the "
                f"tightest adaptive setting always). Flag: some refinement moves the accuracy by more than "
                f"{100 * threshold:g} pp (percentage points). NFE: forward evaluations per batch of "
                f"{batch_size}, summed over ODE blocks, mean over batches.")
    summary = pd.DataFrame([{"model": label, "solver-independent": v["solver_independent"],
                             "largest refinement shift (pp)": 100 * v["max_refinement_shift"],
                             "worst refinement": v["worst_refinement"], "reference": v["reference"],
                             "reference converged": v["reference_converged"],
                             "failed refinements": ", ".join(v["failed_refinements"])}
                            for label, v in verdicts.items()]).set_index("model")
    report.section("Verdict").table(summary, f"Solver independence at a threshold of {100 * threshold:g} pp")
    n_eval = min(int(data[label][0].shape[0]) for label in data)
    if threshold * n_eval < 5:
        report.text(f"**Resolution.** With {n_eval} images one image is {100 / n_eval:g} pp, so the threshold of "
                    f"{100 * threshold:g} pp is crossed by {int(threshold * n_eval) + 1} changed "
                    f"prediction(s): read the verdict as a screen and confirm a flag with `--n-images 1000`.")
    report.figure("solver_audit.png", "Accuracy against forward NFE per batch (star: the model's own setting)")
    for label, table in tables.items():
        t = table.copy()
        t["accuracy"] *= 100
        t["shift"] *= 100
        t["agreement (%)"] = 100 * results[label]["agreement"].values
        t = t.rename(columns={"accuracy": "accuracy (%)", "shift": "shift (pp)"})
        report.section(label).table(t, f"{label}: every setting")
    failed = [(label, str(s), str(m)) for label, ds in results.items()
              for s, m in zip(ds["setting"].values, ds["failed"].values) if str(m)]
    if failed:
        report.section("Failed solves").bullets([f"{lab} / {s}: {m}" for lab, s, m in failed])
    return report
