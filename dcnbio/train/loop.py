"""One readable training loop: ``train_run(config, out_dir)``.

A run directory holds::

    config.json     resolved TrainConfig and ModelConfig
    init.pt         the model before any step (the control for "trained vs init σ")
    last.pt         the latest state (every epoch, and every ``save_every`` steps)
    best.pt         the state with the best *validation* accuracy
    metrics.csv     one row per epoch
    final.json      validation and test accuracy of last and best (test is reported, never used to select),
                    the schedule's length and the machine of every segment

Every file is written atomically.  All randomness after model initialisation is
derived from ``(seed, epoch, batch)`` (see :mod:`dcnbio.train.data`), so a run killed at
any moment and resumed from ``last.pt`` on the same machine ends with bit-identical weights.
Each process that trains a run is a *segment*; the checkpoints and ``final.json`` list the
segments with their machines (:func:`~dcnbio.train.machine.describe_machine`) and step
ranges, because a resume on another kind of CPU may differ at float rounding.
"""
import collections
import csv
import io
import json
import math
import os
import signal
import time

import torch
import torch.nn.functional as F

from . import checkpoint as ckpt_io
from ..io.atomic import remove_stale_temporaries, write_text
from ..io.lock import lock_directory, unlock_directory
from .data import augment, batch_seed, epoch_permutation, load_dataset
from ..errors import CheckpointError, ConfigError, DcnbioError, SolverError
from ..core.layers.srf import SRFConv2d
from ..fast import tuning
from ..core.models import build_model, nfe, ode_blocks, reset_nfe, srf_layers
from ..signals import stop_requests
from . import distributed
from .config import TrainConfig, plateau_schedule
from .machine import describe_machine

RUN_FILES = ("config.json", "init.pt", "last.pt", "best.pt", "metrics.csv", "final.json")


def read_final(path):
    """The records of a run's ``final.json`` at ``path`` (a dict: epochs, steps, accuracies, wall time, segments).

    Raises
    ------
    CheckpointError
        The file is not a JSON object (a damaged or truncated copy; the trainer writes it atomically, so a run of
        its own never leaves one): the message names the file and says to retrain or restore it.
    """
    try:
        with open(path, "rb") as f:
            final = json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path} is not readable JSON ({exc}); restore it from git or rerun the run") from None
    if not isinstance(final, dict):
        raise CheckpointError(f"{path} holds a {type(final).__name__}, not a run's records; restore it from git")
    return final


def run_status(info, *, finished):
    """``done``, or ``training: epoch E + B batches (step S)``: E epochs finished and B SGD steps into the next, for
    the run of checkpoint records ``info`` (a ``last.pt``); ``finished``: the run has its ``final.json``.

    >>> info = {"train_config": TrainConfig("dcn-ode", "fashion-mnist", val_size=1000).to_dict(), "epoch": 16,
    ...         "step": 7673}
    >>> run_status(info, finished=False), run_status(info, finished=True)
    ('training: epoch 16 + 313 batches (step 7673)', 'done')
    """
    if finished:
        return "done"
    per_epoch = TrainConfig.from_dict(info["train_config"]).steps_per_epoch()
    return f"training: epoch {info['epoch']} + {info['step'] - info['epoch'] * per_epoch} batches (step {info['step']})"


def hours_left(info):
    """``(fewest, most)`` hours the run of checkpoint records ``info`` (a ``last.pt``) still needs to train, at its
    own mean rate so far (its elapsed training time over its steps, evaluations included, over all its segments,
    whatever their machines): :meth:`~dcnbio.train.config.TrainConfig.steps_left` in hours; ``None`` before its
    first step.  A finished run's is 0."""
    loop = info["optimizer_state"]["loop"]
    if not info["step"]:
        return None
    steps = TrainConfig.from_dict(info["train_config"]).steps_left(info["metrics"], info["step"],
                                                                   loop.get("plateau_epoch"), loop["epochs"])
    return tuple(n * loop["elapsed"] / info["step"] / 3600 for n in steps)


class TrainingError(DcnbioError):
    """Training stopped: non-finite loss or a solver failure."""


def prepare_run_dir(out_dir, *, resume, overwrite):
    """Create ``out_dir`` and take its writer's lock; refuse a non-empty one unless resuming or overwriting."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output directory {out_dir}: {exc.strerror}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"output directory {out_dir} is not writable; choose another --out")
    lock_directory(out_dir)  # before anything in it is removed or written: a second writer is refused here
    remove_stale_temporaries(out_dir)
    existing = [f for f in os.listdir(out_dir) if not f.startswith(".")]
    if resume:
        if not os.path.isfile(os.path.join(out_dir, "last.pt")):
            raise ConfigError(f"--resume: no last.pt in {out_dir}; start the run without --resume")
        return
    if existing and not overwrite:
        raise ConfigError(f"output directory {out_dir} is not empty ({', '.join(sorted(existing)[:4])}); "
                          f"pass --resume to continue it or --overwrite to replace it")
    for name in RUN_FILES:  # with --overwrite: no stale file of an earlier run may survive
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            os.unlink(path)


def param_groups(model, lr, sigma_lr_scale):
    """Two SGD groups: σ parameters (lr × sigma_lr_scale) and everything else (lr)."""
    sigma_ids = set()
    for layer in model.modules():
        if isinstance(layer, SRFConv2d):
            sigma_ids |= {id(p) for p in layer.scale.parameters()}
    sigma = [p for p in model.parameters() if id(p) in sigma_ids]
    rest = [p for p in model.parameters() if id(p) not in sigma_ids]
    groups = [{"params": rest, "lr": lr, "name": "weights"}]
    if sigma:
        groups.append({"params": sigma, "lr": lr * sigma_lr_scale, "name": "sigma"})
    return groups


@torch.no_grad()
def evaluate(model, dataset, batch_size, device):
    """Mean loss, accuracy and mean forward NFE per batch of each ODE block on ``dataset``."""
    model.eval()
    total, loss_sum, correct = 0, 0.0, 0
    nfe_sum = {name: 0 for name in ode_blocks(model)}
    batches = 0
    for start in range(0, len(dataset), batch_size):
        x, y = dataset.batch(range(start, min(start + batch_size, len(dataset))))
        x, y = x.to(device), y.to(device)
        reset_nfe(model)
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
        batches += 1
        for name, counts in nfe(model).items():
            nfe_sum[name] += counts["forward"]
    return {"loss": loss_sum / max(total, 1), "acc": correct / max(total, 1),
            "nfe": {k: v / max(batches, 1) for k, v in nfe_sum.items()}}


#: Images of the test split re-evaluated by the bundle's tests against ``final.json["check"]``.
CHECK_IMAGES = 256


def subset_check(last_model, best_model, test, batch_size, device="cpu"):
    """Accuracy of ``last`` and ``best`` on the first :data:`CHECK_IMAGES` test images: a figure small enough for
    a test to recompute from the checkpoints and compare with what training recorded."""
    first = test.subset(range(min(CHECK_IMAGES, len(test))))
    return {"split": "test", "images": len(first),
            "acc_last": evaluate(last_model, first, batch_size, device)["acc"],
            "acc_best": evaluate(best_model, first, batch_size, device)["acc"]}


@torch.no_grad()
def locate_nonfinite(model, x):
    """Name the first SRF σ or stage output of ``model`` on ``x`` that is not finite."""
    for name, layer in srf_layers(model).items():
        try:
            sigma = layer.sigma(torch.tensor(0.0))
        except Exception:
            continue
        if not bool(torch.isfinite(sigma).all()):
            return f"σ of {name} is not finite"
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            return f"parameter {name} is not finite"
    for name, module in model.stages():
        try:
            x = module(x)
        except DcnbioError as exc:
            return f"{name}: {exc}"
        if not bool(torch.isfinite(x).all()):
            return f"output of {name} is not finite"
    return "no stage output is non-finite on a re-run (the loss itself overflowed)"


def _rng_state():
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def _metrics_csv(rows):
    if not rows:
        return ""
    fields = list(rows[0])
    for row in rows[1:]:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _decide_plateau(config, state, scheduler, ctx, log):
    """At the first learning rate of a plateau-scheduled run: once validation accuracy (or, without a hold-out,
    the training loss) has plateaued, drop the rate after this epoch and shorten the schedule to the paper's
    proportions from here (config docstring).  Every process takes the same decision, rank 0's."""
    done = state["epoch"]
    cap = config.first_level_cap()
    measured = "validation accuracy" if config.val_size else "the training loss"  # no hold-out: small data
    reached = config.plateau_reached_in(state["metrics"]) if ctx.is_main else False  # rank 0's (it validates)
    reached = distributed.broadcast_flag(reached, ctx)
    if reached and done < cap:
        milestones, epochs = plateau_schedule(done)
        scheduler.milestones = collections.Counter(milestones)
        # The scheduler has stepped past this epoch at the old rate; the drop applies from the next epoch.
        for group in scheduler.optimizer.param_groups:
            group["lr"] *= config.gamma
        state.update(plateau_epoch=done, epochs=epochs)
        log(f"{measured} plateaued after epoch {done}: learning rate ×{config.gamma} from epoch "
            f"{done + 1}, second drop after epoch {milestones[1]}, {epochs} epochs in all")
    elif done >= cap:
        state["plateau_epoch"] = cap  # the fixed schedule of config.epochs, whose first drop is here
        log(f"no plateau by epoch {cap} (the cap of --epochs {config.epochs}): the fixed schedule continues")


def train_run(config: TrainConfig, out_dir, *, resume=False, overwrite=False, log=print):
    """Train one model (one seed) into ``out_dir`` and return its final metrics.

    Parameters
    ----------
    config : TrainConfig
    out_dir : str
    resume : bool
        Continue from ``out_dir/last.pt``; the stored configuration must equal ``config``.
    overwrite : bool
        Replace the files of an earlier run in a non-empty ``out_dir``.

    The run holds ``out_dir``'s lock (:mod:`dcnbio.io.lock`) while it trains.  SIGTERM or SIGINT
    ends the current step, writes ``last.pt`` and raises :class:`~dcnbio.signals.Preempted`;
    ``resume=True`` then continues to the same weights as an uninterrupted run.

    Returns
    -------
    dict with ``best_val_acc``, ``val_acc_last``, ``test_acc_last``, ``test_acc_best``, ``epochs``,
    ``steps``, ``wall_seconds``.
    """
    config = config.resolved()
    ctx = distributed.setup(config.device)
    try:
        with tuning.tuning(config.tune), stop_requests() as stop:
            final = _train(config, os.fspath(out_dir), resume, overwrite, ctx, log, stop)
            if config.tune:
                log(f"tuning: {len(tuning.choices())} measured choices in this process")
            return final
    finally:
        unlock_directory(out_dir)
        distributed.teardown(ctx)


def _train(config, out_dir, resume, overwrite, ctx, log, stop):
    from tqdm.auto import tqdm

    if config.batch_size % ctx.world_size:
        raise ConfigError(f"batch size {config.batch_size} is not divisible by {ctx.world_size} processes")
    if ctx.is_main:
        prepare_run_dir(out_dir, resume=resume, overwrite=overwrite)
    ctx.barrier()
    paths = {name: os.path.join(out_dir, name) for name in RUN_FILES}
    data_kw = dict(root=config.data_root, val_size=config.val_size, split_seed=config.split_seed,
                   download=config.download)
    train = load_dataset(config.dataset, "train", subset=config.subset, seed=config.seed, **data_kw)
    val = load_dataset(config.dataset, "val", **data_kw) if config.val_size else None

    torch.manual_seed(config.seed)
    net = build_model(config.model_config()).to(ctx.device)
    optimizer = torch.optim.SGD(param_groups(net, config.lr, config.sigma_lr_scale), lr=config.lr,
                                momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, config.milestone_epochs(), config.gamma)
    state = {"epoch": 0, "step": 0, "batch": 0, "metrics": [], "best_val_acc": -1.0, "elapsed": 0.0,
             "partial": {}, "epochs": config.epochs, "plateau_epoch": None, "segments": []}

    if resume:
        stored = ckpt_io.read_checkpoint(paths["last.pt"])
        try:
            previous = TrainConfig.from_dict(stored["train_config"])
        except (DcnbioError, TypeError) as exc:
            raise CheckpointError(f"{paths['last.pt']}: unreadable training configuration ({exc})") from None
        diff = config.differences(previous.resolved())
        if diff:
            raise ConfigError(f"--resume: the command's configuration differs from the checkpoint's in "
                              f"{', '.join(diff)}; repeat the original command with --resume")
        net.load_state_dict(stored["model_state"])
        optimizer.load_state_dict(stored["optimizer_state"]["optimizer"])
        scheduler.load_state_dict(stored["scheduler_state"])
        torch.set_rng_state(stored["rng_state"]["torch"])
        extra = stored["optimizer_state"]["loop"]
        state.update(epoch=stored["epoch"], step=stored["step"], metrics=list(stored["metrics"]),
                     batch=extra["batch"], best_val_acc=extra["best_val_acc"], elapsed=extra["elapsed"],
                     partial=extra["partial"], epochs=extra.get("epochs", config.epochs),
                     plateau_epoch=extra.get("plateau_epoch"), segments=list(extra.get("segments", [])))
        log(f"resuming {out_dir} at epoch {state['epoch']}, batch {state['batch']} (step {state['step']})")
    elif ctx.is_main:
        write_text(paths["config.json"], json.dumps(
            {"train_config": config.to_dict(), "model_config": net.config.to_dict()}, indent=2, sort_keys=True))

    def save(kind, path):
        if not ctx.is_main:
            return
        state["segments"][-1].update(end_epoch=state["epoch"], end_step=state["step"])
        loop_state = {k: state[k] for k in ("batch", "best_val_acc", "elapsed", "partial", "epochs",
                                            "plateau_epoch", "segments")}
        ckpt = ckpt_io.make_checkpoint(
            net, kind=kind, train_config=config.to_dict(), epoch=state["epoch"], step=state["step"],
            optimizer_state={"optimizer": optimizer.state_dict(), "loop": loop_state},
            scheduler_state=scheduler.state_dict(), rng_state=_rng_state(), metrics=state["metrics"],
            data_hash=train.fingerprint())
        ckpt_io.save_checkpoint(ckpt, path)

    state["segments"].append({"machine": describe_machine(), "start_epoch": state["epoch"],
                              "start_step": state["step"], "end_epoch": state["epoch"], "end_step": state["step"]})
    def preempt():
        """Raise Preempted once last.pt holds the current state (a rank told by rank 0 reports SIGTERM)."""
        stop.requested = stop.requested or signal.SIGTERM
        stop.check(f"{paths['last.pt']} holds epoch {state['epoch']}, batch {state['batch']} (step {state['step']}); "
                   f"continue with --resume")

    if not resume:
        save("init", paths["init.pt"])
    model = distributed.wrap(net, ctx)
    blocks = list(ode_blocks(net))
    n_batches = len(train) // config.batch_size  # = config.steps_per_epoch(): the last incomplete batch is dropped
    t_start = time.perf_counter() - state["elapsed"]

    while state["epoch"] < state["epochs"]:
        epoch = state["epoch"]
        perm = epoch_permutation(len(train), config.seed, epoch)
        p = state["partial"] or {"loss": 0.0, "correct": 0, "count": 0, "seconds": 0.0,
                                 "nfe_forward": {b: 0 for b in blocks}, "nfe_backward": {b: 0 for b in blocks}}
        t_epoch = time.perf_counter() - p["seconds"]
        bar = tqdm(range(state["batch"], n_batches), disable=None if ctx.is_main else True,
                   desc=f"epoch {epoch + 1}/{state['epochs']}", leave=False)
        model.train()
        lr_epoch = optimizer.param_groups[0]["lr"]
        for b in bar:
            x, y = train.batch(perm[b * config.batch_size:(b + 1) * config.batch_size])
            if config.augment:
                x = augment(x, torch.Generator().manual_seed(batch_seed(config.seed, epoch, b)))
            x, y = distributed.local_slice((x, y), ctx)
            x, y = x.to(ctx.device), y.to(ctx.device)
            reset_nfe(net)
            try:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                if not bool(torch.isfinite(loss)):
                    where = locate_nonfinite(net, x)
                    raise TrainingError(f"non-finite loss at epoch {epoch + 1}, step {state['step'] + 1}: {where}; "
                                        f"the last good checkpoint is {paths['last.pt']}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            except TrainingError:
                raise
            except DcnbioError as exc:  # a solver failure, or a σ that overflowed to a non-finite kernel size
                where = exc if isinstance(exc, SolverError) else locate_nonfinite(net, x)
                raise TrainingError(f"epoch {epoch + 1}, step {state['step'] + 1}: {where}; the last good "
                                    f"checkpoint is {paths['last.pt']}") from None
            optimizer.step()
            state["step"] += 1
            state["batch"] = b + 1
            p["loss"] += float(loss.detach()) * len(y)
            p["correct"] += int((logits.argmax(1) == y).sum())
            p["count"] += len(y)
            for name, counts in nfe(net).items():
                p["nfe_forward"][name] += counts["forward"]
                p["nfe_backward"][name] += counts["backward"]
            if ctx.is_main and bar.disable is False:
                bar.set_postfix(loss=f"{p['loss'] / p['count']:.3f}")
            stopping = distributed.broadcast_flag(stop.requested is not None, ctx)
            periodic = config.save_every and state["step"] % config.save_every == 0
            if (periodic or stopping) and state["batch"] < n_batches:
                p["seconds"] = time.perf_counter() - t_epoch
                state["partial"] = p
                state["elapsed"] = time.perf_counter() - t_start
                save("last", paths["last.pt"])
                if stopping:
                    preempt()
        bar.close()
        scheduler.step()
        epoch_seconds = time.perf_counter() - t_epoch
        state.update(epoch=epoch + 1, batch=0, partial={})
        seen = max(p["count"], 1)
        row = {"epoch": epoch + 1, "step": state["step"], "lr": lr_epoch, "train_loss": p["loss"] / seen,
               "train_acc": p["correct"] / seen}
        if ctx.is_main and val is not None:
            v = evaluate(net, val, config.eval_batch_size, ctx.device)
            row.update(val_loss=v["loss"], val_acc=v["acc"])
        else:
            row.update(val_loss=math.nan, val_acc=math.nan)
        batches = max(n_batches, 1)
        for name in blocks:
            row[f"nfe_forward_{name}"] = p["nfe_forward"][name] / batches
            row[f"nfe_backward_{name}"] = p["nfe_backward"][name] / batches
        state["elapsed"] = time.perf_counter() - t_start
        row.update(epoch_seconds=epoch_seconds, elapsed_seconds=state["elapsed"])
        state["metrics"].append(row)
        improved = ctx.is_main and val is not None and row["val_acc"] > state["best_val_acc"]
        if improved:
            state["best_val_acc"] = row["val_acc"]
        if ctx.is_main:
            log(f"epoch {epoch + 1}/{state['epochs']}  loss {row['train_loss']:.4f}  train {row['train_acc']:.4f}  "
                f"val {row['val_acc']:.4f}  nfe/batch {sum(row[f'nfe_forward_{b}'] for b in blocks):.0f}  "
                f"{epoch_seconds:.1f}s")
        if config.plateau_patience and state["plateau_epoch"] is None:
            _decide_plateau(config, state, scheduler, ctx, log)
        save("last", paths["last.pt"])
        if improved or (val is None and ctx.is_main):
            save("best", paths["best.pt"])
        if ctx.is_main:
            write_text(paths["metrics.csv"], _metrics_csv(state["metrics"]))
        ctx.barrier()
        if distributed.broadcast_flag(stop.requested is not None, ctx):
            preempt()

    final = {"epochs": state["epoch"], "steps": state["step"], "wall_seconds": state["elapsed"],
             "best_val_acc": state["best_val_acc"],
             "val_acc_last": state["metrics"][-1]["val_acc"] if state["metrics"] else math.nan,
             "segments": state["segments"]}
    if config.plateau_patience:
        final["plateau_epoch"] = state["plateau_epoch"]
    if ctx.is_main:
        if config.test:
            test = load_dataset(config.dataset, "test", root=config.data_root, download=config.download)
            final["test_acc_last"] = evaluate(net, test, config.eval_batch_size, ctx.device)["acc"]
            best_model, _ = ckpt_io.load_checkpoint(paths["best.pt"], map_location=ctx.device)
            final["test_acc_best"] = evaluate(best_model, test, config.eval_batch_size, ctx.device)["acc"]
            final["check"] = subset_check(net, best_model, test, config.eval_batch_size, ctx.device)
        write_text(paths["final.json"], json.dumps(final, indent=2, sort_keys=True))
    ctx.barrier()
    return final
