"""Contrast robustness and the NFE it saves (paper §3.3, Fig. 4b; SPEC §3).

Test images are presented at contrast c, ``x → c·x`` (normalised units, so c scales deviations from the dataset
mean), under four conditions:

``naive``
    Nothing else changes (every block integrates over its own ``[0, T]``).
``block1-T``
    The first ODE block integrates over ``[0, c·T]`` (the paper's ``T_j = cT``; its reference code has only this).
``all-blocks``
    The inputs of *all* ODE blocks are scaled by c and each block integrates over ``[0, c·T]``, tolerances
    unchanged.  Block 1's input is scaled by the image contrast (``stem(c·x) = c·Wx + b``: the stem's bias is not
    scaled); the inputs of blocks 2 and 3 — which the preceding GroupNorm would otherwise return to full scale —
    are multiplied by c.  This is what the paper's claim "total NFEs can be reduced from 102 to 60 (for c = 1 and
    0.06), with less than 0.5 % loss in accuracy" (§3.3, Fig. 4b bottom) refers to: the *forward* NFE of one
    evaluation batch summed over the three ODE blocks, at ``rtol = atol = 1e-3`` ("as long as the error tolerance
    of the ODE blocks are not decreased").
``atol-control``
    ``all-blocks`` with every block's ``atol`` multiplied by c as well (``rtol`` unchanged).

Mechanism.  Every GroupNorm is (up to its ε) scale-free: ``GN(c·h) = GN(h)``; ``f`` starts with GN and its convs and
activations sit between GNs, so ``f(c·h, t) ≈ f(h, t)``.  If moreover ``f`` did not depend on t, then
``h_c(s) = c·h(s/c)`` would solve the block's ODE from ``c·h(0)``: the state shrinks by c and its time scale by c,
so integrating to ``cT`` lands on ``c·h(T)``, which the next GroupNorm maps back to ``GN(h(T))``.  ``f`` does see t
(the ``t ⊕ h`` channel), and over ``[0, cT]`` it sees ``t ∈ [0, cT]`` instead of ``[0, T]``, so the identity is
approximate; :func:`compute_rescaling_check` measures both approximations (``f_change`` and ``identity_error``).

Why NFE fall.  dopri5 accepts a step when the RMS of ``error / (atol + rtol·|h|)`` is ≤ 1.  On the rescaled
trajectory every error shrinks with c, while ``atol`` does not: relative to the signal the tolerance loosens by
≈ 1/c, and the solver takes fewer steps.  Scaling ``atol`` by c keeps the relative accuracy (the whole accept/reject
test is then invariant), so if the saving is only this loosening it disappears under ``atol-control`` — the
condition tests exactly that.  One part of torchdiffeq is not scale-covariant: its initial-step heuristic estimates
the second derivative as ``‖f(h0 + δ f0) − f0‖ / (δ · (atol + rtol|h0|))``, which grows as 1/c² on the rescaled
trajectory, so the first step is relatively longer at small c and saves about one step per block even under
``atol-control``.  ``first_step`` (a fraction of each block's integration interval, applied in every condition and at
c = 1 too) removes it: for exactly scale-free, t-independent dynamics ``atol-control`` then reproduces the c = 1
solve step for step (see the tests).

Fixed-grid solvers: when T is scaled their ``step_size`` is scaled with it (same number of steps); they have no
tolerance, so ``atol-control`` equals ``all-blocks`` for them.
"""
import json

import numpy as np
import torch
import xarray as xr

from ..errors import ConfigError, SolverError
from ..provenance import provenance_attrs
from ..core.layers.ode import ADAPTIVE
from ..core.models.network import ode_blocks
from .common import as_images, evaluate, override_solver, solver_state

__all__ = ["CONDITIONS", "DEFAULT_CONTRASTS", "check_contrasts", "compute_contrast", "compute_rescaling_check",
           "condition_settings"]

CONDITIONS = ("naive", "block1-T", "all-blocks", "atol-control")
DEFAULT_CONTRASTS = (1.0, 0.5, 0.25, 0.125, 0.06)


def check_contrasts(contrasts):
    """Contrasts as floats ``> 0``, distinct, in decreasing order.

    Raises
    ------
    ConfigError
        A contrast ``≤ 0``, non-finite or non-numeric, or none given.
    """
    try:
        values = [float(c) for c in np.atleast_1d(np.asarray(contrasts, dtype=object))]
    except (TypeError, ValueError):
        raise ConfigError(f"contrasts must be numbers, got {contrasts!r}") from None
    if not values:
        raise ConfigError("no contrasts given")
    bad = [c for c in values if not (np.isfinite(c) and c > 0)]
    if bad:
        raise ConfigError(f"contrast must be > 0 (c scales the input, c·x), got {bad[0]:g}")
    if len(set(values)) != len(values):
        raise ConfigError(f"contrasts repeat: {values}")
    return sorted(values, reverse=True)


def condition_settings(model, condition, c, *, first_step=None):
    """What one condition changes at contrast ``c``.

    Parameters
    ----------
    model : :class:`~dcnbio.core.models.Network`
        With at least one ODE block.
    condition : str
        One of :data:`CONDITIONS`.
    c : float
        Contrast ``> 0``.
    first_step : float, optional
        Initial step of adaptive solvers as a fraction of each block's (possibly scaled) integration interval, set
        in every block (default: torchdiffeq's heuristic; see the module docstring).

    Returns
    -------
    dict
        ``image_scale`` (float: the images are multiplied by it), ``input_scale`` (``{block: factor}`` for the
        inputs of blocks after the first ODE block), ``per_block`` (``{block: {setting: value}}`` for
        :func:`~dcnbio.extract.common.override_solver`).

    Examples
    --------
    >>> from dcnbio import create_model
    >>> s = condition_settings(create_model("dcn-ode", in_channels=1, width=0.125), "atol-control", 0.5)
    >>> s["input_scale"], s["per_block"]["block3"]
    ({'block2': 0.5, 'block3': 0.5}, {'T': 1.0, 'atol': 0.0005})
    """
    if condition not in CONDITIONS:
        raise ConfigError(f"unknown contrast condition {condition!r}; choose from {', '.join(CONDITIONS)}")
    (c,) = check_contrasts([c])
    blocks = ode_blocks(model)
    if not blocks:
        raise ConfigError(f"{model.config.name!r} has no ODE blocks: the contrast conditions change ODE "
                          "integration times; use a DCN or ODE-Net")
    if first_step is not None and not (isinstance(first_step, (int, float)) and 0 < first_step <= 1):
        raise ConfigError(f"first_step must be a fraction of the integration interval in (0, 1], got {first_step!r}")
    names = list(blocks)
    scaled_T = {"naive": [], "block1-T": names[:1]}.get(condition, names)
    per_block = {}
    for name in names:
        own = solver_state(blocks[name])
        s = {}
        if name in scaled_T:
            s["T"] = own["T"] * c
            if own["solver"] not in ADAPTIVE and "step_size" in own["options"]:
                s["options"] = {**own["options"], "step_size": own["options"]["step_size"] * c}
            if condition == "atol-control" and own["solver"] in ADAPTIVE:
                s["atol"] = own["atol"] * c
        if first_step is not None and own["solver"] in ADAPTIVE:
            s["options"] = {**own["options"], "first_step": first_step * s.get("T", own["T"])}
        if s:
            per_block[name] = s
    input_scale = {name: c for name in names[1:]} if condition in ("all-blocks", "atol-control") else {}
    return {"image_scale": c, "input_scale": input_scale, "per_block": per_block}


def _key(settings):
    return json.dumps(settings, sort_keys=True)


def compute_contrast(model, images, labels=None, contrasts=DEFAULT_CONTRASTS, conditions=CONDITIONS, *,
                     batch_size=128, first_step=None, info=None):
    """Accuracy and forward NFE per block at each contrast under each condition.

    Parameters
    ----------
    model : :class:`~dcnbio.core.models.Network`
        With ODE blocks; its own solver settings are restored afterwards.
    images : Tensor ``(N, C, H, W)``
        Normalised images at full contrast.
    labels : sequence of int, optional
    contrasts : sequence of float
        ``> 0``; 1 is the unchanged model.
    conditions : sequence of str
        From :data:`CONDITIONS`.
    batch_size : int
        The same images share a batch in every condition (NFE are per batch).
    first_step : float, optional
        Passed to :func:`condition_settings` (every condition, c = 1 included; the unchanged model that
        ``agreement`` and ``accuracy_unchanged`` refer to keeps the solver's heuristic).
    info : dict, optional
        Checkpoint info (provenance).

    Returns
    -------
    xarray.Dataset
        Dimensions ``condition``, ``contrast`` (decreasing), ``image``, ``batch``, ``block`` (ODE blocks).

        ``accuracy (condition, contrast)``; ``agreement (condition, contrast)``: fraction of predictions equal to
        the unchanged model's (c = 1); ``prediction (condition, contrast, image)``;
        ``nfe (condition, contrast, batch, block)`` forward NFE of each batch solve; ``nfe_mean (condition,
        contrast, block)`` and ``nfe_total (condition, contrast)`` (mean over batches of the sum over blocks);
        ``T_used``, ``atol_used``, ``input_factor (condition, contrast, block)``: the settings each block ran with
        (``input_factor`` is the extra factor on blocks 2–3; block 1's input scales with the image);
        ``failed (condition, contrast)``: the solver error message, ``''`` when the solve succeeded (a failed
        condition has NaN accuracy and NFE −1).

        Conditions with identical settings (all of them at c = 1) are computed once.

    Raises
    ------
    ConfigError
        A contrast ≤ 0, an unknown condition, a model without ODE blocks.
    """
    images = as_images(images, model.config.in_channels)
    contrasts = check_contrasts(contrasts)
    conditions = list(conditions)
    for cond in conditions:
        if cond not in CONDITIONS:
            raise ConfigError(f"unknown contrast condition {cond!r}; choose from {', '.join(CONDITIONS)}")
    if len(set(conditions)) != len(conditions) or not conditions:
        raise ConfigError(f"conditions must be distinct and at least one, got {conditions}")
    blocks = ode_blocks(model)
    if not blocks:
        raise ConfigError(f"{model.config.name!r} has no ODE blocks: the contrast conditions change ODE "
                          "integration times; use a DCN or ODE-Net")
    names = list(blocks)
    n = images.shape[0]
    reference = evaluate(model, images, labels, batch_size=batch_size)
    n_batches = reference.sizes["batch"]
    cache = {_key(condition_settings(model, "naive", 1.0)): (reference, "")}
    if first_step is not None:
        condition_settings(model, "naive", 1.0, first_step=first_step)  # validate before the sweep

    shape = (len(conditions), len(contrasts))
    accuracy = np.full(shape, np.nan)
    agreement = np.full(shape, np.nan)
    prediction = np.full(shape + (n,), -1, dtype=np.int64)
    nfe = np.full(shape + (n_batches, len(names)), -1, dtype=np.int64)
    T_used = np.zeros(shape + (len(names),))
    atol_used = np.zeros(shape + (len(names),))
    factor = np.ones(shape + (len(names),))
    failed = np.full(shape, "", dtype=object)
    for i, cond in enumerate(conditions):
        for j, c in enumerate(contrasts):
            s = condition_settings(model, cond, c, first_step=first_step)
            key = _key(s)
            if key not in cache:
                try:
                    with override_solver(model, per_block=s["per_block"]):
                        cache[key] = (evaluate(model, images * s["image_scale"], labels, batch_size=batch_size,
                                               input_scale=s["input_scale"]), "")
                except SolverError as exc:
                    cache[key] = (None, str(exc))
            res, msg = cache[key]
            for k, name in enumerate(names):
                own = solver_state(blocks[name])
                T_used[i, j, k] = s["per_block"].get(name, {}).get("T", own["T"])
                atol_used[i, j, k] = s["per_block"].get(name, {}).get("atol", own["atol"])
                factor[i, j, k] = s["input_scale"].get(name, 1.0)
            if res is None:
                failed[i, j] = msg
                continue
            accuracy[i, j] = res.attrs["accuracy"]
            prediction[i, j] = res["prediction"].values
            agreement[i, j] = float(np.mean(res["prediction"].values == reference["prediction"].values))
            nfe[i, j] = res["nfe"].values
    nfe_da = xr.DataArray(nfe, dims=("condition", "contrast", "batch", "block")).where(nfe >= 0)
    ds = xr.Dataset(
        {"accuracy": (("condition", "contrast"), accuracy),
         "agreement": (("condition", "contrast"), agreement,
                       {"long_name": "fraction of predictions equal to those of the unchanged model (c = 1)"}),
         "prediction": (("condition", "contrast", "image"), prediction),
         "nfe": (("condition", "contrast", "batch", "block"), nfe,
                 {"long_name": "forward NFE of each batch solve (-1: the solve failed)"}),
         "nfe_mean": nfe_da.mean("batch"),
         "nfe_total": nfe_da.sum("block", min_count=1).mean("batch"),
         "T_used": (("condition", "contrast", "block"), T_used),
         "atol_used": (("condition", "contrast", "block"), atol_used),
         "input_factor": (("condition", "contrast", "block"), factor),
         "failed": (("condition", "contrast"), failed.astype(str))},
        coords={"condition": list(conditions), "contrast": contrasts, "image": np.arange(n),
                "label": ("image", reference["label"].values), "batch": np.arange(n_batches),
                "block": np.asarray(names, dtype=str)})
    ds["nfe_total"].attrs["long_name"] = "mean over batches of the forward NFE summed over ODE blocks"
    ds.attrs.update(provenance_attrs(model, info))
    ds.attrs.update({"batch_size": int(batch_size), "accuracy_unchanged": reference.attrs["accuracy"],
                     "first_step": "solver heuristic" if first_step is None else float(first_step),
                     "own_solver": json.dumps({b: solver_state(m) for b, m in blocks.items()}, default=str),
                     "conditions_note": "naive: c*x only; block1-T: first ODE block T -> c*T; all-blocks: inputs of "
                                        "all ODE blocks scaled by c and every T -> c*T; atol-control: all-blocks with "
                                        "atol -> c*atol"})
    return ds


def compute_rescaling_check(model, images, contrasts=DEFAULT_CONTRASTS, *, batch_size=128):
    """How far the two approximations behind ``T → cT`` hold, block by block.

    For each ODE block, its input ``h0`` (from the unchanged model on these images) is used directly:

    ``f_change``       ``‖f(c·h0, 0) − f(h0, 0)‖ / ‖f(h0, 0)‖`` — scale-freeness of the dynamics;
    ``identity_error`` ``‖h_c(cT)/c − h(T)‖ / ‖h(T)‖`` with ``h_c`` solved from ``c·h0`` over ``[0, cT]`` at
                       ``atol·c`` (so the solver's relative accuracy is that of the unchanged block) — the
                       time-rescaling identity ``h_c(t) = c·h(t/c)`` at ``t = cT``.

    Norms are Frobenius norms per image; the values are medians over images.

    Parameters
    ----------
    model : :class:`~dcnbio.core.models.Network`
    images : Tensor ``(N, C, H, W)``
        A few images suffice (each contrast costs one solve of every block).
    contrasts : sequence of float
    batch_size : int

    Returns
    -------
    xarray.Dataset
        ``f_change``, ``identity_error (contrast, block)``.
    """
    images = as_images(images, model.config.in_channels)
    contrasts = check_contrasts(contrasts)
    blocks = ode_blocks(model)
    if not blocks:
        raise ConfigError(f"{model.config.name!r} has no ODE blocks")
    names = list(blocks)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    f_change = {b: {c: [] for c in contrasts} for b in names}
    ident = {b: {c: [] for c in contrasts} for b in names}
    param = next(model.parameters())
    was_training = model.training
    model.eval()

    def norms(a):
        return a.flatten(1).norm(dim=1)

    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                x = images[start:start + batch_size].to(param.device, param.dtype)
                for name, module in model.stages():
                    if name in blocks:
                        block = blocks[name]
                        # .forward bypasses the NFE hook: these probes are no solver evaluations
                        f0 = block.func.forward(torch.zeros((), dtype=x.dtype), x)
                        out = block(x)
                        for c in contrasts:
                            fc = block.func.forward(torch.zeros((), dtype=x.dtype), c * x)
                            f_change[name][c].append((norms(fc - f0) / norms(f0)).cpu().numpy())
                            own = solver_state(block)
                            s = {"T": own["T"] * c}
                            if own["solver"] in ADAPTIVE:
                                s["atol"] = own["atol"] * c
                            elif "step_size" in own["options"]:
                                s["options"] = {**own["options"], "step_size": own["options"]["step_size"] * c}
                            with override_solver(model, per_block={name: s}):
                                out_c = block(c * x)
                            ident[name][c].append((norms(out_c / c - out) / norms(out)).cpu().numpy())
                        x = out
                    else:
                        x = module(x)
    finally:
        model.train(was_training)
    fc = np.array([[np.median(np.concatenate(f_change[b][c])) for b in names] for c in contrasts])
    ie = np.array([[np.median(np.concatenate(ident[b][c])) for b in names] for c in contrasts])
    return xr.Dataset(
        {"f_change": (("contrast", "block"), fc, {"long_name": "median |f(c h0, 0) - f(h0, 0)| / |f(h0, 0)|"}),
         "identity_error": (("contrast", "block"), ie,
                            {"long_name": "median |h_c(cT)/c - h(T)| / |h(T)|, h_c from c*h0, atol*c"})},
        coords={"contrast": contrasts, "block": np.asarray(names, dtype=str)})
