"""The training bundle at a glance (``analyses/bundle_summary.py``): where each run stands, as Markdown tables.

* :func:`schedule_text` — the plateau epoch and the schedule it set;
* :func:`runs_table` — one row per run: status, schedule, accuracy, hours spent and left, and how far σ moved from
  its ``init.pt``;
* :func:`small_runs_table` — one row per run of a small-data grid.

Values come in (from the checkpoints' records, which the script reads); Markdown goes out.
"""

__all__ = ["STILL_OCTAVES", "runs_table", "schedule_text", "small_runs_table"]

#: Octaves: a run whose median |Δ log2 σ| from its init stays below this in every block has σ that "did not move".
STILL_OCTAVES = 0.05


def schedule_text(loop):
    """``P → N``: the learning rate dropped after epoch P and the run ends at epoch N; ``– (≤ N)`` before a plateau.

    >>> schedule_text({"plateau_epoch": 9, "epochs": 22}), schedule_text({"plateau_epoch": None, "epochs": 30})
    ('9 → 22', '– (≤ 30)')
    """
    p = loop.get("plateau_epoch")
    return f"– (≤ {loop['epochs']})" if p is None else f"{p} → {loop['epochs']}"


def _fraction(value):
    return "–" if value != value else f"{value:.3f}"  # NaN: no value yet (a test accuracy before the run ends)


def _hours_left(value):
    """``–`` for none (a finished run), ``H`` for one estimate, ``L–H`` for a range.

    >>> _hours_left(None), _hours_left((2.5, 2.5)), _hours_left((1.234, 4.5))
    ('–', '2.50', '1.23–4.50')
    """
    if value is None:
        return "–"
    low, high = value
    return f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}–{high:.2f}"


def runs_table(rows, shifts):
    """The bundle's runs as a Markdown table.

    Parameters
    ----------
    rows : sequence of dict
        Per run: ``model``, ``seed``, ``status`` (``done`` or where it stands: :func:`dcnbio.train.loop.run_status`),
        ``schedule`` (:func:`schedule_text`), ``best_val`` and ``test_best`` (fractions; NaN where there is none
        yet), ``hours`` (training hours spent) and ``hours_left``: ``None`` for a finished run, else the (fewest,
        most) hours still to train.
    shifts : dict of (model, seed) → xarray.Dataset
        :func:`dcnbio.stats.sigmas.sigma_shift` of the runs with SRF layers (``median_abs_shift`` by ``block``).
    """
    lines = ["| model | seed | status | plateau → epochs | best val | test (best) | hours | hours left | median abs "
             "Δlog2σ per block (octaves) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        s = shifts.get((row["model"], row["seed"]))
        moved = "–" if s is None else ", ".join(
            f"{b} {v:.3f}" for b, v in zip(s["block"].values, s["median_abs_shift"].values.ravel()))
        if s is not None and row["status"] == "done" and float(s["median_abs_shift"].max()) < STILL_OCTAVES:
            moved += f" (< {STILL_OCTAVES} everywhere: σ did not move)"
        lines.append(f"| {row['model']} | {row['seed']} | {row['status']} | {row['schedule']} | "
                     f"{_fraction(row['best_val'])} | {_fraction(row['test_best'])} | {row['hours']:.2f} | "
                     f"{_hours_left(row['hours_left'])} | {moved} |")
    return "\n".join(lines) + "\n"


def small_runs_table(rows):
    """The runs of a small-data grid as a Markdown table.

    ``rows``: per run ``model``, ``size`` (images per class), ``seed``, ``status`` (as in :func:`runs_table`),
    ``schedule`` (:func:`schedule_text`), ``steps``, the last epoch's ``train_loss`` and ``train_acc``, ``hours``
    and ``hours_left`` (as in :func:`runs_table`).
    """
    lines = ["| model | images per class | seed | status | plateau → epochs | steps | last train loss | last train "
             "acc | hours | hours left |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['size']} | {r['seed']} | {r['status']} | {r['schedule']} | {r['steps']} | "
                     f"{r['train_loss']:.4f} | {r['train_acc']:.3f} | {r['hours']:.2f} | "
                     f"{_hours_left(r['hours_left'])} |")
    return "\n".join(lines) + "\n"
