"""The report of ``analyses/meta_parametrization.py``: σ(t) and α(t) tables of :mod:`dcnbio.extract.meta`'s curves."""
import numpy as np
import pandas as pd

from .report import Report

__all__ = ["alpha_table", "meta_report", "sigma_table"]


def sigma_table(curves):
    """σ at t = 0, T/2, T per layer of each model and its change over the block (octaves), with the init's."""
    rows = []
    for label, (ds, init) in curves.items():
        T = float(ds["time"].values[-1])
        for k, layer in enumerate(ds["layer"].values):
            s, log2 = ds["sigma"].isel(layer=k), ds["log2_sigma"].isel(layer=k)
            row = {"model / layer": f"{label} / {layer}", "σ(0)": float(s.sel(time=0.0, method="nearest")),
                   "σ(T/2)": float(s.sel(time=T / 2, method="nearest")), "σ(T)": float(s.isel(time=-1)),
                   "log2 σ(T)/σ(0) (oct)": float(log2[-1] - log2[0])}
            if init is not None:
                row["init: log2 σ(T)/σ(0) (oct)"] = float(init["log2_sigma"].isel(layer=k)[-1]
                                                          - init["log2_sigma"].isel(layer=k)[0])
            rows.append(row)
    return pd.DataFrame(rows).set_index("model / layer")


def alpha_table(curves):
    """Mean RMS α per derivative order at t = 0 and t = T of the models with α(t) (``linear-t``)."""
    rows = []
    for label, (ds, _) in curves.items():
        if not np.any(ds["alpha"].values == "linear-t"):
            continue
        for o in np.unique(ds["basis_order"].values):
            a = ds["alpha_rms"].isel(basis=np.flatnonzero(ds["basis_order"].values == o)).mean(("layer", "basis"))
            rows.append({"model / order": f"{label} / {int(o)}", "RMS α(0)": float(a[0]), "RMS α(T)": float(a[-1]),
                         "ratio": float(a[-1] / a[0])})
    return pd.DataFrame(rows).set_index("model / order") if rows else pd.DataFrame()


def meta_report(curves, accuracy, paths, inits, *, split, missing=()):
    """The report of ``analyses/meta_parametrization.py``.

    Parameters
    ----------
    curves : dict of str → (xarray.Dataset, xarray.Dataset or None)
        Label → (:func:`~dcnbio.extract.meta.compute_meta_curves` of the checkpoint, of its ``init.pt`` or None).
    accuracy : dict of str → dict
        Label → the inputs table's row (model, dataset, images, accuracy, NFE, the paper's value).
    paths, inits : list of str
        Checkpoint path and whether it has an init control, in the order of ``accuracy``.
    split : str
    missing : sequence of str
    """
    report = Report("Meta-parametrized SRF filters: σ(t) and α(t)")
    report.section("Inputs")
    acc = pd.DataFrame(accuracy).T
    acc.index.name = "checkpoint"
    acc.insert(0, "path", list(paths))
    acc.insert(1, "init control", list(inits))
    report.table(acc, f"Checkpoints and {split} accuracy (Table 4's CIFAR-10 values for context only)")
    if missing:
        report.text("Default checkpoints not found (skipped): " + ", ".join(f"`{m}`" for m in missing) + ".")
    report.text("σ is in pixels of each layer's input map, evaluated on a grid over [0, T] "
                "(t' = 0.5·clip(t, −0.5, 2.5)). α(t) is summarised per basis function as the RMS over the out × in "
                "filter pairs; static α gives flat lines.")
    report.section("σ(t)").table(sigma_table(curves), "σ at the start, middle and end of each block")
    report.figure("meta_curves.png", "σ(t) per layer (top) and mean RMS α(t) per derivative order (bottom); "
                                     "dashed: init")
    at = alpha_table(curves)
    if len(at):
        report.section("α(t)").table(at, "Mean RMS α per derivative order at t = 0 and t = T")
    return report
