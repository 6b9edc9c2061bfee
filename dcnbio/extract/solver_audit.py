"""Solver independence: is a trained neural ODE an ODE model, or a model of its own solver? (SPEC §4)

A network trained with one solver and tolerance is only a model of an ODE if its predictions survive a more
accurate solve of the same dynamics (Ott et al. 2021, "ResNet after all?"; Queiruga et al. 2020, ContinuousNet).
:func:`compute_solver_audit` evaluates one trained model under a grid of solver settings — by default dopri5 at
``rtol = atol`` = 1e-3 … 1e-6, and the fixed-step rk4 and euler at several step counts per block — recording the
accuracy, the predictions and the mean forward NFE per batch of each; the model's own settings are evaluated too
and restored afterwards.

:func:`assess_solver_independence` turns the table into a verdict.  Accuracy is compared with the model's own
setting (``own``) for each *refinement* — a setting at least as accurate by construction:

* adaptive settings whose ``rtol`` and ``atol`` are both ≤ the model's own (when the model uses an adaptive solver),
  except a repeat of the own setting itself;
* the same fixed-step method with more steps (when the model uses a fixed-step solver);
* always the *reference*: the adaptive setting with the smallest tolerance (the best estimate of the exact flow).

The model is flagged as **not solver-independent** when any refinement moves the accuracy by more than
``threshold`` (a fraction; default 0.01 = one percentage point).  Coarser or different schemes (euler with few
steps …) are reported, with their shift, but do not decide the flag: an ODE model may legitimately lose accuracy
under a solver too coarse for its dynamics.  ``reference_converged`` says whether the two tightest adaptive settings
agree within the threshold — if not, the grid does not reach the ODE limit and the verdict is provisional.
"""
import json

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import ConfigError, DataError, SolverError
from ..provenance import provenance_attrs
from ..core.layers.ode import ADAPTIVE, check_solver
from ..core.models.network import ode_blocks
from .common import evaluate, override_solver, solver_state

__all__ = ["DEFAULT_FIXED_STEPS", "DEFAULT_TOLERANCES", "assess_solver_independence", "compute_solver_audit",
           "solver_grid"]

DEFAULT_TOLERANCES = (1e-3, 1e-4, 1e-5, 1e-6)
DEFAULT_FIXED_STEPS = {"rk4": (2, 4, 8, 16), "euler": (4, 8, 16, 32)}


def solver_grid(tolerances=DEFAULT_TOLERANCES, fixed_steps=None, adaptive="dopri5"):
    """The solver settings of an audit.

    Parameters
    ----------
    tolerances : sequence of float
        ``rtol = atol`` of the adaptive solver.
    fixed_steps : dict of str → sequence of int, optional
        Fixed-step solver → step counts per block (step size ``T / steps``); default :data:`DEFAULT_FIXED_STEPS`.
    adaptive : str
        The adaptive solver (any of torchdiffeq's adaptive methods).

    Returns
    -------
    list of dict
        ``{"label", "solver", "tol", "steps"}`` (``tol`` NaN for fixed-step, ``steps`` 0 for adaptive).

    Raises
    ------
    ConfigError
        Non-positive tolerances or step counts, unknown solvers, a fixed-step method given as adaptive.
    """
    check_solver(adaptive)
    if adaptive not in ADAPTIVE:
        raise ConfigError(f"{adaptive!r} is not an adaptive solver; choose one of {', '.join(ADAPTIVE)}")
    fixed_steps = DEFAULT_FIXED_STEPS if fixed_steps is None else fixed_steps
    grid = []
    for tol in tolerances:
        if not (isinstance(tol, (int, float)) and np.isfinite(tol) and tol > 0):
            raise ConfigError(f"tolerances must be numbers > 0, got {tol!r}")
        grid.append({"label": f"{adaptive} tol={tol:g}", "solver": adaptive, "tol": float(tol), "steps": 0})
    for solver, counts in fixed_steps.items():
        check_solver(solver)
        if solver in ADAPTIVE:
            raise ConfigError(f"{solver!r} is adaptive; give it a tolerance, not step counts")
        for k in counts:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise ConfigError(f"step counts must be positive integers, got {k!r} for {solver}")
            grid.append({"label": f"{solver} {int(k)} steps", "solver": solver, "tol": float("nan"),
                         "steps": int(k)})
    labels = [g["label"] for g in grid]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"solver settings repeat: {labels}")
    return grid


def _own_setting(model):
    blocks = ode_blocks(model)
    states = [solver_state(b) for b in blocks.values()]
    s = states[0]
    if s["solver"] in ADAPTIVE:
        tol = max(s["rtol"], s["atol"])
        label = f"own: {s['solver']} rtol={s['rtol']:g} atol={s['atol']:g}"
        return {"label": label, "solver": s["solver"], "tol": float(tol), "steps": 0, "rtol": s["rtol"],
                "atol": s["atol"]}
    step = s["options"].get("step_size")
    steps = int(round(s["T"] / step)) if step else 0
    return {"label": f"own: {s['solver']} {steps} steps", "solver": s["solver"], "tol": float("nan"),
            "steps": steps, "rtol": s["rtol"], "atol": s["atol"]}


def _overrides(model, setting):
    if setting["solver"] in ADAPTIVE:
        return {name: {"solver": setting["solver"], "rtol": setting["tol"], "atol": setting["tol"], "options": {}}
                for name in ode_blocks(model)}
    return {name: {"solver": setting["solver"], "options": {"step_size": float(b.T) / setting["steps"]}}
            for name, b in ode_blocks(model).items()}


def _same_as_own(overrides, own_state):
    return all(all(own_state[b][k] == v for k, v in o.items()) for b, o in overrides.items())


def compute_solver_audit(model, images, labels=None, settings=None, *, batch_size=128, info=None):
    """Accuracy, predictions and forward NFE of one model under several solver settings.

    Parameters
    ----------
    model : :class:`~dcnbio.core.models.Network`
        With ODE blocks.  Its own settings are evaluated first (setting ``own``) and restored afterwards, also when
        a solve fails.
    images : Tensor ``(N, C, H, W)``
        Normalised images.
    labels : sequence of int, optional
    settings : list of dict, optional
        From :func:`solver_grid` (default grid).  Adaptive settings use ``rtol = atol = tol`` and no solver
        options; fixed-step settings use ``step_size = T / steps`` in every block.
    batch_size : int
    info : dict, optional
        Checkpoint info (provenance).

    Returns
    -------
    xarray.Dataset
        Dimension ``setting`` (``own`` first) with coordinates ``solver``, ``tol``, ``steps``, ``is_own``;
        ``accuracy (setting)``; ``agreement (setting)``: fraction of predictions equal to the own setting's;
        ``prediction (setting, image)``; ``logits (setting, image, class)``; ``nfe_mean (setting, block)`` and
        ``nfe_total (setting)``: forward NFE per batch (mean over batches); ``failed (setting)``: solver error
        message or ``''`` (a failed setting has NaN accuracy).

    Raises
    ------
    ConfigError
        The model has no ODE blocks, or a bad setting.
    """
    blocks = ode_blocks(model)
    if not blocks:
        raise ConfigError(f"{model.config.name!r} has no ODE blocks: there is no solver to audit; use a DCN or "
                          "ODE-Net")
    settings = solver_grid() if settings is None else list(settings)
    own = _own_setting(model)
    rows = [dict(own, is_own=True)] + [dict(s, is_own=False) for s in settings]
    names = list(blocks)
    own_state = {name: solver_state(b) for name, b in blocks.items()}
    results = []
    for row in rows:
        try:
            if row["is_own"]:
                res = evaluate(model, images, labels, batch_size=batch_size, keep_logits=True)
            elif _same_as_own(_overrides(model, row), own_state):
                res = results[0][0]  # the identical computation: reuse it
            else:
                with override_solver(model, per_block=_overrides(model, row)):
                    res = evaluate(model, images, labels, batch_size=batch_size, keep_logits=True)
            results.append((res, ""))
        except SolverError as exc:
            if row["is_own"]:
                raise
            results.append((None, str(exc)))
    ref = results[0][0]
    n, k = ref["logits"].shape
    accuracy = np.full(len(rows), np.nan)
    agreement = np.full(len(rows), np.nan)
    prediction = np.full((len(rows), n), -1, dtype=np.int64)
    logits = np.full((len(rows), n, k), np.nan)
    nfe_mean = np.full((len(rows), len(names)), np.nan)
    nfe_total = np.full(len(rows), np.nan)
    for i, (res, _) in enumerate(results):
        if res is None:
            continue
        accuracy[i] = res.attrs["accuracy"]
        prediction[i] = res["prediction"].values
        agreement[i] = float(np.mean(res["prediction"].values == ref["prediction"].values))
        logits[i] = res["logits"].values
        nfe_mean[i] = res["nfe"].mean("batch").values
        nfe_total[i] = float(res["nfe"].sum("block").mean("batch"))
    ds = xr.Dataset(
        {"accuracy": ("setting", accuracy),
         "agreement": ("setting", agreement, {"long_name": "fraction of predictions equal to the own setting's"}),
         "prediction": (("setting", "image"), prediction),
         "logits": (("setting", "image", "class"), logits),
         "nfe_mean": (("setting", "block"), nfe_mean, {"long_name": "forward NFE per batch (mean over batches)"}),
         "nfe_total": ("setting", nfe_total, {"long_name": "forward NFE per batch summed over ODE blocks"}),
         "failed": ("setting", np.array([msg for _, msg in results], dtype=str))},
        coords={"setting": [r["label"] for r in rows], "solver": ("setting", [r["solver"] for r in rows]),
                "tol": ("setting", [float(r["tol"]) for r in rows]),
                "steps": ("setting", [int(r["steps"]) for r in rows]),
                "is_own": ("setting", [bool(r["is_own"]) for r in rows]), "image": np.arange(n),
                "label": ("image", ref["label"].values), "block": np.asarray(names, dtype=str)})
    ds.attrs.update(provenance_attrs(model, info))
    ds.attrs.update({"batch_size": int(batch_size), "own_rtol": float(own["rtol"]), "own_atol": float(own["atol"]),
                     "own_solver": json.dumps({b: solver_state(m) for b, m in blocks.items()}, default=str)})
    return ds


def _refinements(ds):
    """Boolean per setting: a refinement of the own setting (see the module docstring)."""
    solver = ds["solver"].values.astype(str)
    tol = ds["tol"].values.astype(float)
    steps = ds["steps"].values.astype(int)
    own = np.flatnonzero(ds["is_own"].values)
    if own.size != 1:
        raise DataError("the audit table needs exactly one own setting (is_own)")
    o = int(own[0])
    adaptive = np.array([s in ADAPTIVE for s in solver])
    refine = np.zeros(len(solver), dtype=bool)
    if adaptive[o]:
        own_r = float(ds.attrs.get("own_rtol", tol[o]))
        own_a = float(ds.attrs.get("own_atol", tol[o]))
        same = (solver == solver[o]) & (tol == own_r) & (tol == own_a)  # the own computation again: no refinement
        refine |= adaptive & (tol <= own_r) & (tol <= own_a) & ~same
    else:
        refine |= (solver == solver[o]) & (steps > steps[o])
    ok = adaptive & np.isfinite(tol)
    ok[o] = False
    reference = int(np.flatnonzero(ok)[np.argmin(tol[ok])]) if ok.any() else None
    if reference is not None:
        refine[reference] = True
    refine[o] = False
    return refine, reference


def assess_solver_independence(ds, threshold=0.01):
    """Decide from an audit table whether the model's accuracy depends on its solver.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`compute_solver_audit` (needs ``accuracy``, and coordinates ``solver``, ``tol``, ``steps``,
        ``is_own`` on ``setting``; attrs ``own_rtol``/``own_atol`` when present).
    threshold : float
        Largest accepted accuracy change, as a fraction (0.01 = one percentage point).

    Returns
    -------
    table : pandas.DataFrame
        One row per setting: ``solver``, ``tol``, ``steps``, ``accuracy``, ``shift`` (accuracy − own),
        ``refinement``, ``reference``, ``exceeds`` (|shift| > threshold), ``nfe_total`` when present.
    verdict : dict
        ``solver_independent`` (bool), ``max_refinement_shift`` (largest |shift| over refinements that ran),
        ``worst_refinement`` (its label), ``reference`` (label), ``reference_converged`` (the two tightest adaptive
        settings agree within the threshold; None when fewer than two ran), ``failed_refinements`` (labels),
        ``threshold``.

    Raises
    ------
    ConfigError
        ``threshold`` not in (0, 1).
    """
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
        raise ConfigError(f"threshold must be a fraction in (0, 1), got {threshold!r}")
    refine, reference = _refinements(ds)
    acc = ds["accuracy"].values.astype(float)
    own = int(np.flatnonzero(ds["is_own"].values)[0])
    shift = acc - acc[own]
    labels = [str(s) for s in ds["setting"].values]
    table = pd.DataFrame({"solver": ds["solver"].values.astype(str), "tol": ds["tol"].values.astype(float),
                          "steps": ds["steps"].values.astype(int), "accuracy": acc, "shift": shift,
                          "refinement": refine, "reference": np.arange(len(acc)) == (reference if reference is not None
                                                                                       else -1),
                          "exceeds": np.abs(shift) > threshold}, index=pd.Index(labels, name="setting"))
    if "nfe_total" in ds:
        table["nfe_total"] = ds["nfe_total"].values
    ran = refine & np.isfinite(acc)
    failed = [labels[i] for i in np.flatnonzero(refine & ~np.isfinite(acc))]
    if ran.any():
        worst = int(np.flatnonzero(ran)[np.argmax(np.abs(shift[ran]))])
        max_shift = float(abs(shift[worst]))
    else:
        worst, max_shift = None, float("nan")
    solver = ds["solver"].values.astype(str)
    tol = ds["tol"].values.astype(float)
    adaptive = np.array([s in ADAPTIVE for s in solver]) & np.isfinite(tol) & np.isfinite(acc)
    converged = None
    if adaptive.sum() >= 2:
        order = np.flatnonzero(adaptive)[np.argsort(tol[adaptive], kind="stable")]
        converged = bool(abs(acc[order[0]] - acc[order[1]]) <= threshold)
    verdict = {"solver_independent": bool(ran.any() and max_shift <= threshold and not failed),
               "max_refinement_shift": max_shift, "worst_refinement": labels[worst] if worst is not None else None,
               "reference": labels[reference] if reference is not None else None,
               "reference_converged": converged, "failed_refinements": failed, "threshold": float(threshold)}
    return table, verdict
