"""The fast path's training step under three dopri5 integrators: torchdiffeq, dcnbio's own, torchode.

Issue #23 asks whether torchode (PyPI) can replace dcnbio's hand-written dopri5
(:mod:`dcnbio.fast.dopri5`): if it is within 10 % of it, the hand-written one goes.  torchode is no
dependency of dcnbio; install it into the virtual environment for this script only::

    .venv/bin/pip install torchode

Run on an otherwise idle machine, from the repository root::

    .venv/bin/python benchmarks/integrators.py --out benchmarks/results/integrators.json
    .venv/bin/python benchmarks/integrators.py --models dcn-ode --width 1.0 --steps 3
    .venv/bin/python benchmarks/integrators.py --steps 1 --warmup 0 --batch-size 8     # a correctness run

Every variant trains the same model (``formulation="auto"``, dopri5, rtol = atol = 1e-3, T of the model,
gradients by backpropagating through the solver: ``adjoint=False``) with the same parameters on the same
batch; only who integrates the three ODE blocks differs:

``torchdiffeq``     ``torchdiffeq.odeint`` (``integrator="torchdiffeq"``);
``dcnbio``          dcnbio's own dopri5 (``integrator="dcnbio"``), the baseline of the ratios;
``torchode``        ``torchode.AutoDiffAdjoint(Dopri5, IntegralController)`` on the same vector field, the
                    block's state flattened to ``(batch, features)``: torchode's nature, each image is its own
                    problem with its own step sizes and error norm (the images' ODEs are independent — the
                    dynamics use GroupNorm only — so this is the same model, solved per image); every
                    function evaluation still runs on the whole batch until the last image is done, and
                    ``f`` receives one time per image;
``torchode-joint``  the same torchode solver on the whole batch as one problem (state ``(1, B·C·H·W)``): one
                    step size and one rms error norm over the batch, as torchdiffeq and dcnbio integrate —
                    the like-for-like comparison of the integrators' arithmetic.

torchode's solver is built from its public API only (``ODETerm``, ``Dopri5``, ``IntegralController``,
``AutoDiffAdjoint``, ``InitialValueProblem``) and replaces each block's ``forward`` on the model instance
(the library's ``ODEBlock`` is untouched); the SRF filter cache is opened around each solve as ``ODEBlock``
does.  ``backprop_through_step_size_control=False``: step sizes are not differentiated, as in dcnbio's
dopri5.  torchode's controller differs in details from torchdiffeq's (which dcnbio's follows step for step):
it accepts a step when the error ratio is < 1 (not <= 1), may shrink the step after an accepted step
(torchdiffeq does not), and applies the tolerances to norms in its initial-step selection; so its NFE
differ a little even in the joint mode.  Times are float64 in both (torchode's time dtype is that of its
``t_start``).

Printed: first a correctness check on one batch (before any timing, the same parameters for all variants):
the largest absolute difference of the logits and of the loss from dcnbio's, the largest gradient difference
relative to the largest gradient, and the function evaluations per block (calls of the block's dynamics,
counted by the block's hook; for torchode also its own ``n_f_evals`` and the range of ``n_steps`` over the
images).  Then per model a table: integrator, median and min seconds per training step (forward + backward +
SGD step, lr 0.1, momentum 0.9) over ``--steps`` timed steps after ``--warmup`` untimed ones, the function
evaluations per block of the step, the ratio of medians to dcnbio's dopri5, and whether the variant is within
10 % of it (ratio <= 1.10).  The variants alternate step by step, and the parameters are reset to the same
values before every step, so every timed step of every variant computes the same step.  The machine
(``benchmarks/_machine.py``) is printed first and written with the results to ``--out``.  Exit status 2
when torchode is not installed.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import describe_machine, median, print_machine, timed  # noqa: E402
from train_step import fashion_batch  # noqa: E402

from dcnbio.core.layers.srf import SRFConv2d, filter_cache  # noqa: E402
from dcnbio.core.models import build_model, create_model, nfe, ode_blocks, reset_nfe  # noqa: E402

INTEGRATORS = ("torchdiffeq", "dcnbio", "torchode", "torchode-joint")
BASELINE = "dcnbio"
TOLERANCE = 1e-3  # rtol = atol, the paper's
WITHIN = 1.10  # torchode replaces dcnbio's dopri5 if its step takes at most 10 % longer


def import_torchode():
    try:
        import torchode
    except ImportError as exc:
        print(f"torchode is not installed ({exc}); it is no dependency of dcnbio. Install it into the virtual "
              f"environment for this benchmark only:\n    .venv/bin/pip install torchode", file=sys.stderr)
        sys.exit(2)
    return torchode


class TorchodeSolve:
    """A torchode dopri5 solve of ``block.func`` from 0 to ``block.T``, used as the block's ``forward``.

    ``per_sample``: each image its own problem (torchode's nature); otherwise the batch as one problem.
    A plain object, not a module: the model's parameters and state dict stay those of the model.
    """

    def __init__(self, to, block, per_sample):
        for m in block.func.modules():
            if per_sample and isinstance(m, SRFConv2d) and m.depends_on_t:
                raise SystemExit(f"{block.name}: an SRF layer with t-dependent σ or α takes one t per solve; "
                                 f"per-image times (the torchode variant) are not supported for it")
        self.to, self.block, self.per_sample = to, block, per_sample
        self.shape = None
        self.term = to.ODETerm(self.vector_field)
        controller = to.IntegralController(atol=block.atol, rtol=block.rtol, term=self.term)
        self.solver = to.AutoDiffAdjoint(to.Dopri5(term=self.term), controller,
                                         backprop_through_step_size_control=False)
        self.stats = None

    def vector_field(self, t, y):
        t = t.to(y.dtype)
        t = t.view(-1, 1, 1, 1) if self.per_sample else t[0]  # one time per image, or the problem's one
        return self.block.func(t, y.view(self.shape)).reshape(y.shape)

    def __call__(self, h0):
        self.shape = h0.shape
        y0 = h0.reshape(h0.shape[0] if self.per_sample else 1, -1)
        n = y0.shape[0]
        t0 = torch.zeros(n, dtype=torch.float64, device=h0.device)
        t1 = torch.full((n,), float(self.block.T), dtype=torch.float64, device=h0.device)
        with filter_cache(self.block.func):
            sol = self.solver.solve(self.to.InitialValueProblem(y0=y0, t_start=t0, t_end=t1))
        if not bool((sol.status == self.to.Status.SUCCESS.value).all()):
            raise RuntimeError(f"torchode failed in {self.block.name}: status {sorted(set(sol.status.tolist()))}")
        self.stats = {k: v.detach().cpu() for k, v in sol.stats.items()}
        out = sol.ys[:, -1].reshape(self.shape)
        if not bool(torch.isfinite(out).all()):
            raise RuntimeError(f"torchode: non-finite state at the end of {self.block.name}")
        return out


def build_variants(name, width, args, to):
    """One model per integrator, all with the parameters of the first."""
    common = dict(in_channels=1, num_classes=10, width=width, formulation="auto", solver="dopri5",
                  rtol=TOLERANCE, atol=TOLERANCE, adjoint=False)
    torch.manual_seed(args.seed)
    base = create_model(name, integrator=BASELINE, **common)
    models, solves = {}, {}
    for v in args.integrators:
        m = build_model(base.config.replace(integrator="torchdiffeq" if v == "torchdiffeq" else "dcnbio"))
        m.load_state_dict(base.state_dict())
        if v.startswith("torchode"):
            solves[v] = {}
            for bname, block in ode_blocks(m).items():
                solves[v][bname] = block.forward = TorchodeSolve(to, block, per_sample=(v == "torchode"))
        models[v] = m.train()
    return base, models, solves


def train_step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    reset_nfe(model)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    opt.step()
    return logits.detach(), loss.detach()


def calls_per_block(model):
    """Calls of each block's dynamics in the last step (all in the forward solve: no adjoint)."""
    return {b: c["forward"] + c["backward"] for b, c in nfe(model).items()}


def torchode_stats(solves):
    """Per block: torchode's n_f_evals and the range of n_steps / n_accepted over its problems."""
    out = {}
    for b, s in solves.items():
        st = s.stats
        out[b] = {k: [int(st[k].min()), int(st[k].float().median()), int(st[k].max())]
                  for k in ("n_f_evals", "n_steps", "n_accepted") if k in st}
    return out


def run_model(name, width, x, y, args, to):
    base, models, solves = build_variants(name, width, args, to)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    opts = {v: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for v, m in models.items()}

    def reset(v):  # the same parameters before every step: every step computes the same thing
        models[v].load_state_dict(state)

    # correctness: one step of each on the same parameters, before any timing
    check = {}
    for v, m in models.items():
        reset(v)
        opts[v].zero_grad(set_to_none=True)
        reset_nfe(m)
        logits = m(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        check[v] = {"logits": logits.detach(), "loss": float(loss.detach()),
                    "grads": {n: p.grad.clone() for n, p in m.named_parameters()},
                    "nfe": calls_per_block(m)}
        if v in solves:
            check[v]["torchode_stats"] = torchode_stats(solves[v])
        opts[v].zero_grad(set_to_none=True)
    ref = check[BASELINE]
    gscale = max(float(g.abs().max()) for g in ref["grads"].values())
    print(f"\n{name}, width {width}: correctness on one batch of {x.shape[0]} (same parameters; "
          f"max |logit| of dcnbio {float(ref['logits'].abs().max()):.3f}, loss {ref['loss']:.5f})")
    print(f"{'integrator':>15} {'max|dlogit|':>11} {'|dloss|':>9} {'dgrad rel':>9}  f-calls per block "
          f"(torchode: n_f_evals, n_steps min/median/max over problems)")
    for v, c in check.items():
        c["logits_max_abs_diff"] = float((c["logits"] - ref["logits"]).abs().max())
        c["loss_abs_diff"] = abs(c["loss"] - ref["loss"])
        c["grad_max_rel_diff"] = max(float((c["grads"][n] - g).abs().max()) for n, g in ref["grads"].items()) / gscale
        calls = " ".join(str(n) for n in c["nfe"].values())
        extra = ""
        if "torchode_stats" in c:
            extra = "  (" + "; ".join(f"{st['n_f_evals'][2]}, {'/'.join(map(str, st['n_steps']))}"
                                      for st in c["torchode_stats"].values()) + ")"
        print(f"{v:>15} {c['logits_max_abs_diff']:>11.2e} {c['loss_abs_diff']:>9.2e} "
              f"{c['grad_max_rel_diff']:>9.2e}  {calls}{extra}", flush=True)

    for _ in range(args.warmup):
        for v, m in models.items():
            reset(v)
            train_step(m, opts[v], x, y)
    times = {v: [] for v in models}
    calls = {}
    for k in range(args.steps):
        for v, m in models.items():
            reset(v)
            times[v].append(timed(lambda: train_step(m, opts[v], x, y)))
            calls[v] = calls_per_block(m)
            print(f"  {name} w={width} step {k} {v}: {times[v][-1]:.2f} s", flush=True)

    base_t = median(times[BASELINE]) if BASELINE in times else float("nan")
    rows = []
    for v in models:
        t = median(times[v])
        c = check[v]
        row = {"model": name, "width": width, "channels": base.config.channels, "integrator": v,
               "step_s_median": t, "step_s_min": min(times[v]), "step_s_all": times[v],
               "nfe_per_block": calls[v], "ratio_to_dcnbio": t / base_t, "within_10pct": t / base_t <= WITHIN,
               "check": {"logits_max_abs_diff": c["logits_max_abs_diff"], "loss_abs_diff": c["loss_abs_diff"],
                         "grad_max_rel_diff": c["grad_max_rel_diff"], "nfe_per_block": c["nfe"],
                         "torchode_stats": c.get("torchode_stats")}}
        rows.append(row)
    print(f"\n{name}, width {width} (channels {base.config.channels}), batch {x.shape[0]}, "
          f"{torch.get_num_threads()} threads; {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'integrator':>15} {'median s':>9} {'min s':>7} {'NFE fwd per block':>18} {'/ dcnbio':>8} "
          f"{'within 10 %':>11}")
    for r in rows:
        nf = " ".join(str(n) for n in r["nfe_per_block"].values())
        print(f"{r['integrator']:>15} {r['step_s_median']:>9.3f} {r['step_s_min']:>7.3f} {nf:>18} "
              f"{r['ratio_to_dcnbio']:>7.2f}x {'yes' if r['within_10pct'] else 'no':>11}")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["dcn-ode", "dcn-sigma-ji"])
    p.add_argument("--width", type=float, nargs="+", default=[0.25],
                   help="width multiplier(s); e.g. --width 0.25 1.0")
    p.add_argument("--integrators", nargs="+", default=list(INTEGRATORS), choices=INTEGRATORS)
    p.add_argument("--steps", type=int, default=5, help="timed training steps per integrator")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per integrator before timing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the machine and the results to this JSON file")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.threads < 1 or args.batch_size < 1:
        p.error("--steps, --threads and --batch-size must be >= 1, --warmup >= 0")
    if BASELINE not in args.integrators:
        p.error(f"{BASELINE} is the baseline of the ratios; keep it in --integrators")
    to = import_torchode()
    import torchdiffeq
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    machine = describe_machine()
    print_machine(machine)
    versions = {"torchode": to.__version__, "torchdiffeq": torchdiffeq.__version__, "torch": torch.__version__}
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    x, y, source = fashion_batch(args.batch_size, 28)
    print(f"batch: {source}")
    results = []
    for width in args.width:
        for name in args.models:
            results += run_model(name, width, x, y, args, to)
    print("\ntorchode within 10 % of dcnbio's dopri5 (median step time):")
    for r in results:
        if r["integrator"].startswith("torchode"):
            print(f"  {r['model']} w={r['width']} {r['integrator']}: {r['ratio_to_dcnbio']:.2f}x -> "
                  f"{'yes' if r['within_10pct'] else 'no'}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": machine, "versions": versions, "args": vars(args), "batch": source,
                       "results": results}, f, indent=1, default=str)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
