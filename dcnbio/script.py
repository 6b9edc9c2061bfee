"""What the analysis scripts share: their parser, finding and loading the runs they analyse, their images.

The scripts in ``analyses/`` are glue — argparse → load → compute → plot → save — and this module is the load
part they have in common: checkpoints found by pattern among the bundled *finished* runs, loaded and labelled
``<model>-seed<S>``, and the first images of an evaluation split.  It sits above extraction, statistics and
reports (which take models, tensors and xarray, never paths) and beside the disk edge :mod:`dcnbio.io`.
"""
import argparse
import glob
import os

import numpy as np

from .cli import HelpFormatter, at_least
from .train.checkpoint import COMPUTE_PATHS, load_checkpoint
from .train.data import dataset_info, load_dataset
from .errors import CheckpointError, ConfigError
from .core.models.network import ode_blocks

class ScriptParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one-line :class:`ConfigError` (exit 2 under ``user_errors``)."""

    def error(self, message):
        raise ConfigError(f"{message} (see {self.prog} --help)")


#: The bundles of trained runs by name, each a root relative to the repository holding ``<model>/seed<S>/`` and
#: ``small-data/<model>/n<size>/seed<S>/``: ``full`` — the full-data CPU recipe; ``subset`` — the first bundle,
#: trained on subsets (``data/checkpoints/README.md`` describes both).
BUNDLES = {"full": "data/checkpoints/full", "subset": "data/checkpoints"}
#: The command that trains a bundle's runs, where one command trains them all (named when runs are missing).
BUNDLE_TRAINERS = {"full": "bash data/checkpoints/retrain.sh"}
#: The bundle the analyses read when ``--bundle`` is not given.
DEFAULT_BUNDLE = "subset"


def bundle_patterns(models, bundle):
    """Glob patterns (relative to the repository) of the ``last.pt`` of ``models``' runs in ``bundle``.

    >>> bundle_patterns(["dcn-ode", "odenet"], "full")
    ('data/checkpoints/full/dcn-ode/seed*/last.pt', 'data/checkpoints/full/odenet/seed*/last.pt')
    """
    if bundle not in BUNDLES:
        raise ConfigError(f"unknown bundle {bundle!r}; choose one of {', '.join(BUNDLES)}")
    return tuple(f"{BUNDLES[bundle]}/{m}/seed*/last.pt" for m in models)


def analysis_parser(name, doc, models=None, *, what="checkpoint(s)", out=None, evaluates=True,
                    bundle=DEFAULT_BUNDLE):
    """The parser of ``analyses/<name>.py`` with the options every analysis script shares.

    When the script has bundled defaults (``models``: the model names whose finished runs it reads, found by
    :func:`open_runs`; or a sentence saying which), ``--checkpoint PATH …`` to name others, ``--bundle`` (which
    of :data:`BUNDLES`; default ``bundle``) and, for a script that computes with the models (``evaluates``),
    ``--compute`` (:func:`add_compute_option`); always ``--out`` (default ``out`` or ``results/<name>``) and
    ``--overwrite``.  The description is the first line of ``doc`` (the script's docstring), every option's
    default is shown in ``--help``, and a usage error is one :class:`ConfigError` line.

    >>> p = analysis_parser("demo", "Demo analysis.\\n\\nMore.", ["dcn-ode"])
    >>> a = p.parse_args([]); a.out, a.checkpoint, a.bundle, a.compute
    ('results/demo', None, 'subset', 'fast')
    """
    p = ScriptParser(prog=f"analyses/{name}.py", description=doc.split("\n")[0],
                     formatter_class=HelpFormatter)
    if models is not None:
        default = models if isinstance(models, str) else \
            "the finished runs of " + ", ".join(models) + " in --bundle"
        p.add_argument("--checkpoint", nargs="+", default=None, metavar="PATH", help=f"{what}; default: {default}")
        add_bundle_option(p, bundle)
        if evaluates:
            add_compute_option(p)
    p.add_argument("--out", default=out or f"results/{name}", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    return p


def add_bundle_option(p, default=DEFAULT_BUNDLE):
    """Add ``--bundle`` (one of :data:`BUNDLES`): the bundle of trained runs the default checkpoints come from."""
    p.add_argument("--bundle", choices=list(BUNDLES), default=default,
                   help="the bundled runs the default checkpoints come from: " +
                        "; ".join(f"{k} ({v})" for k, v in BUNDLES.items()))
    return p


def add_compute_option(p):
    """Add ``--compute {fast,recorded}`` (default ``fast``): how the loaded models compute their function.

    ``fast`` evaluates every model on the fastest exact path (:data:`dcnbio.fast.FASTEST`: dcnbio's dopri5, the
    ``auto`` SRF formulation), ``recorded`` on the one its checkpoint was trained with; the function is the same
    to float rounding, so this changes run time, not results (trained DCNs integrate with many more function
    evaluations than untrained ones, and an analysis's cost is mostly those).  The models' configuration in the
    results' provenance says which path computed them.
    """
    p.add_argument("--compute", choices=COMPUTE_PATHS, default="fast",
                   help="integrator and SRF formulation of the evaluation: the fastest exact ones, or those the "
                        "checkpoint records (the same function to float rounding)")
    return p


def add_eval_options(p, *, n_images=100, n_images_help=None, batch_help="images per solve (NFE are per batch)"):
    """Add the evaluation-image options: ``--n-images``, ``--batch-size`` (128), ``--split``, ``--data-root``."""
    p.add_argument("--n-images", type=at_least(1), default=n_images,
                   help=n_images_help or "first N images of the evaluation split")
    p.add_argument("--batch-size", type=at_least(1), default=128, help=batch_help)
    p.add_argument("--split", choices=("test", "val"), default="test", help="evaluation split")
    p.add_argument("--data-root", default=None, help="dataset directory (default: the standard places)")
    return p


def open_runs(args, models, repo, *, analysis, require_ode=False, make=None):
    """The runs an analysis script works on: ``--checkpoint``, or the finished runs of ``models`` in
    ``--bundle`` (:func:`bundle_checkpoints`), loaded (``--compute``) and labelled.  ``make``: the command that
    makes the default checkpoints, named when there are none (a bundle's own trainer comes first).

    Returns
    -------
    runs : list of (label, model, info)
        :func:`load_models`.
    missing : list of str
        Default patterns that matched nothing and unfinished default runs (:func:`resolve_checkpoints`).
    """
    paths, missing = bundle_checkpoints(args.checkpoint, models, args.bundle, repo, analysis=analysis, make=make)
    return load_models(paths, require_ode=require_ode, analysis=analysis, compute=args.compute), missing


def bundle_checkpoints(paths, models, bundle, repo, *, analysis, make=None):
    """:func:`resolve_checkpoints` over the finished runs of ``models`` in ``bundle`` (:func:`bundle_patterns`).

    When there are none, the error names the bundle's own trainer (:data:`BUNDLE_TRAINERS`) before ``make``.
    """
    return resolve_checkpoints(paths, bundle_patterns(models, bundle), repo, analysis=analysis,
                               make=BUNDLE_TRAINERS.get(bundle) or make)


def eval_data(runs, args, check=None):
    """Each run's evaluation images (``--n-images`` of ``--split`` from ``--data-root``), one read per dataset.

    ``check(images)``, if given, validates them before any output exists.

    Returns
    -------
    dict
        label → ``(images, labels, indices, dataset info, dataset name)`` (:func:`load_eval_images`).
    """
    data, cache = {}, {}
    for label, model, info in runs:
        name = dataset_of(info, model)
        data[label] = load_eval_images(name, split=args.split, n_images=args.n_images, root=args.data_root,
                                       cache=cache) + (name,)
        if check is not None:
            check(data[label][0])
    return data


def is_finished_run(checkpoint):
    """Whether the training run that wrote ``checkpoint`` has finished (its directory holds ``final.json``).

    ``dcnbio train`` writes ``last.pt`` every epoch (or every ``--save-every`` steps) and ``final.json`` only at
    the end, so a run still training — or killed — has a ``last.pt`` and no ``final.json``.
    """
    return os.path.isfile(os.path.join(os.path.dirname(os.fspath(checkpoint)), "final.json"))


def resolve_checkpoints(paths, defaults, repo, *, analysis, make=None):
    """The checkpoints to analyse: ``paths`` if given, else the default bundled ones of finished runs.

    A default match whose run has not finished (:func:`is_finished_run`: a run still training next to the bundled
    ones) is skipped and listed in ``missing``; an explicit ``--checkpoint`` is taken as given.

    Parameters
    ----------
    paths : list of str or None
        From ``--checkpoint``.
    defaults : sequence of str
        Glob patterns relative to ``repo`` (e.g. ``data/checkpoints/dcn-ode/seed*/last.pt``).
    repo : path
        Repository root.
    analysis : str
        Named in the error message.
    make : str, optional
        The command that makes a default checkpoint, named in the error message (default: ``dcnbio train --help``).

    Returns
    -------
    found : list of str
    missing : list of str
        Default patterns that matched nothing, and skipped unfinished runs (empty when ``paths`` were given).

    Raises
    ------
    CheckpointError
        No path given and no default checkpoint exists.
    """
    if paths:
        return [os.fspath(p) for p in paths], []
    found, missing, training = [], [], []
    for pattern in defaults:
        hits = sorted(glob.glob(os.path.join(os.fspath(repo), pattern)))
        done = [h for h in hits if is_finished_run(h)]
        found += done
        if not hits:
            missing.append(pattern)
        training += [os.path.relpath(h, os.fspath(repo)) for h in hits if h not in done]
    if not found:
        raise CheckpointError(f"no finished bundled checkpoints for the {analysis} analysis (looked for "
                              f"{', '.join(defaults)} under {repo}"
                              + (f"; still training, no final.json: {', '.join(training)}" if training else "")
                              + "); " + (f"make them with `{make}`" if make else "train them (dcnbio train --help)")
                              + " or pass --checkpoint PATH")
    return found, missing + [f"{t} (unfinished run: no final.json)" for t in training]


def run_label(info, model):
    """``<model>-seed<S>`` for a loaded run (``<model>`` where its checkpoint records no seed)."""
    seed = (info.get("train_config") or {}).get("seed")
    return model.config.name if seed is None else f"{model.config.name}-seed{seed}"


def load_models(paths, *, require_ode=False, analysis="", compute="fast"):
    """Load checkpoints and give each a unique label (``<model>-seed<S>``).

    Parameters
    ----------
    paths : list of str
    require_ode : bool
        Refuse models without ODE blocks (ResNets) with a one-line error.
    analysis : str
        Named in that error.
    compute : ``"fast"`` or ``"recorded"``
        :func:`~dcnbio.train.checkpoint.load_checkpoint`'s computation path.

    Returns
    -------
    list of (label, model, info)

    Raises
    ------
    CheckpointError, ConfigError
    """
    out, labels = [], {}
    for path in paths:
        model, info = load_checkpoint(path, compute=compute)
        if require_ode and not ode_blocks(model):
            raise ConfigError(f"{path} is a {model.config.name!r} model without ODE blocks; the {analysis} analysis "
                              "changes ODE solves, so pass a DCN or ODE-Net checkpoint")
        label = run_label(info, model)
        if label in labels:
            k = 2
            while f"{label}-{k}" in labels:
                k += 1
            label = f"{label}-{k}"
        labels[label] = path
        out.append((label, model, info))
    return out


def dataset_of(info, model):
    """Name of the dataset a checkpoint was trained on (``train_config['dataset']``).

    Raises
    ------
    CheckpointError
        The checkpoint does not say, or its dataset does not fit the model's input channels.
    """
    name = (info.get("train_config") or {}).get("dataset")
    if not name:
        raise CheckpointError(f"{info.get('path', 'checkpoint')} does not record its training dataset "
                              "(train_config['dataset']); it cannot be matched to evaluation images")
    ds_info = dataset_info(name)
    if ds_info.channels != model.config.in_channels:
        raise CheckpointError(f"{info.get('path', 'checkpoint')} was trained on {name!r} ({ds_info.channels} "
                              f"channel(s)) but the model takes {model.config.in_channels}")
    return name


def load_eval_images(name, *, split="test", n_images=1000, root=None, cache=None):
    """The first ``n_images`` images of a dataset split, normalised, with labels.

    Parameters
    ----------
    name : str
        ``fashion-mnist`` or ``cifar10``.
    split : ``"test"`` or ``"val"``
        Evaluation split (never ``train``).
    n_images : int
        How many, in the split's order (the official order for ``test``); all if larger than the split.
    root : str, optional
        Dataset directory (passed to :func:`dcnbio.train.data.load_dataset`; no download is attempted).
    cache : dict, optional
        Reused across calls (one dataset read per name and split).

    Returns
    -------
    images : Tensor ``(N, C, H, W)`` float32
    labels : Tensor ``(N,)`` int64
    indices : ndarray ``(N,)`` int64
        Index of each image in its official file.
    info : :class:`dcnbio.datasets.DatasetInfo`
    """
    if split not in ("test", "val"):
        raise ConfigError(f"evaluation split must be 'test' or 'val', got {split!r}")
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ConfigError(f"--n-images must be a positive integer, got {n_images!r}")
    key = (name, split, root)
    if cache is not None and key in cache:
        data = cache[key]
    else:
        data = load_dataset(name, split, root, download=False)
        if cache is not None:
            cache[key] = data
    n = min(int(n_images), len(data))
    images, labels = data.batch(np.arange(n))
    return images, labels, data.indices[:n].numpy().astype(np.int64), data.info


def init_control(info, model):
    """The untrained control of a loaded run: the ``init.pt`` beside its checkpoint, if it fits the model.

    Returns
    -------
    (init_model, init_info, None), or (None, None, why) when the run has no control: the checkpoint is itself an
    init state, no ``init.pt`` lies beside it, or that file holds another model configuration.
    """
    init_path = os.path.join(os.path.dirname(info["path"]), "init.pt")
    if os.path.abspath(info["path"]) == os.path.abspath(init_path) or info.get("kind") == "init":
        return None, None, "the checkpoint is itself the init state"
    if not os.path.isfile(init_path):
        return None, None, f"no init.pt beside {info['path']}"
    init_model, init_info = load_checkpoint(init_path, compute=info.get("compute", "recorded"))
    if init_model.config != model.config:
        return None, None, f"{init_path} has another model configuration"
    return init_model, init_info, None


def with_init(runs, *, skip=False):
    """Each loaded run followed by its ``init.pt`` (the untrained control), as ``(label, state, model, info)``.

    ``state`` is ``"trained"`` or ``"init"``.  A run without a control (:func:`init_control`) gets none (the
    report's inputs table shows which have one).  ``skip``: no controls at all.
    """
    out = []
    for label, model, info in runs:
        out.append((label, "trained", model, info))
        init_model, init_info, _ = (None, None, None) if skip else init_control(info, model)
        if init_model is not None:
            init_info.setdefault("train_config", info.get("train_config"))
            out.append((label, "init", init_model, init_info))
    return out


def fresh_or_resumed(out, params, *, resume, subdir):
    """Guard a resumable output: ``out/params.json`` records the parameters of the run that wrote ``subdir``.

    Without ``resume`` the old ``out/subdir`` is removed (an ``--overwrite`` run recomputes everything); with
    it, a run whose parameters differ from the recorded ones is refused, so shards of two grids never mix.

    Raises
    ------
    ConfigError
        ``resume`` with other parameters than the recorded ones.
    """
    import json
    import shutil

    from .io import write_text

    record = os.path.join(os.fspath(out), "params.json")
    params = json.loads(json.dumps(params, default=lambda v: np.asarray(v).tolist()))
    if resume and os.path.isfile(record):
        with open(record) as f:
            old = json.load(f)
        diff = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
        if diff:
            raise ConfigError(f"--resume: {record} was written with other {', '.join(diff)}; rerun with the "
                              f"same options or use --overwrite")
    elif not resume:
        shutil.rmtree(os.path.join(os.fspath(out), subdir), ignore_errors=True)
    write_text(record, json.dumps(params, indent=1, sort_keys=True) + "\n")


def load_tuning_references(extra=()):
    """The V1 references of the tuning study (:func:`dcnbio.stats.tuning_study.summarize`).

    Every bundled histogram on a property's own scale (:data:`~dcnbio.stats.tuning_study.PROPERTIES`),
    the user's ``(property, csv)`` pairs (:func:`dcnbio.io.read_histogram`; they replace a bundled one), the
    De Valois, Yund & Hepler (1982) preferred orientations and the spread of the De Valois, Albrecht & Thorell
    (1982) peak frequencies (SD of log2, octaves).
    """
    from .stats.tuning_study import PROPERTIES
    from .stats.v1 import v1_shape_statistics
    from .io import load_reference_histogram, load_v1_reference, read_histogram

    refs = {k: load_reference_histogram(stem)["count"].sum("population")
            for k, (_, stem) in PROPERTIES.items() if stem}
    refs.update({k: read_histogram(path)["count"].sum("population") for k, path in extra})
    refs["preferred_orientation"] = load_reference_histogram("devalois1982_preferred_orientation")["count"][0]
    refs["peak_sf_log2_sd"] = float(v1_shape_statistics(load_v1_reference()).loc["pooled", "log2_sd"])
    return refs


def split_of(info):
    """``(val_size, split_seed)`` the checkpoint was trained with (its validation split)."""
    config = info.get("train_config") or {}
    if "val_size" not in config or "split_seed" not in config:
        raise CheckpointError(f"{info.get('path', 'checkpoint')} does not record its validation split "
                              "(train_config val_size and split_seed); its held-out images cannot be found")
    val_size, split_seed = int(config["val_size"]), int(config["split_seed"])
    if val_size < 1:
        raise CheckpointError(f"{info.get('path', 'checkpoint')} was trained without a validation split "
                              "(val_size 0): no training-split image is held out from it")
    return val_size, split_seed


def load_split(name, split, n, *, val_size, split_seed, root, cache):
    """The first ``n`` normalised images of a split and their indices in the official training file."""
    key = (name, split, val_size, split_seed, root)
    if key not in cache:
        cache[key] = load_dataset(name, split, root, val_size=val_size, split_seed=split_seed, download=False)
    data = cache[key]
    n = min(n, len(data))
    images, _ = data.batch(np.arange(n))
    return images, data.indices[:n].numpy().astype(np.int64)


def held_out_splits(info, model, n_train, n_images, *, root=None, cache=None):
    """The images of a reconstruction run: the first ``n_train`` of the checkpoint's own training split and the
    first ``n_images`` of its validation split (images the classifier never trained on).

    Returns
    -------
    dict
        ``dataset``, ``val_size``, ``split_seed``, ``train`` and ``val`` (each ``(images, indices in the official
        training file)``).

    Raises
    ------
    CheckpointError
        The checkpoint does not record its validation split, or has none.
    DataError
        The two splits overlap (they cannot with :func:`dcnbio.train.data.load_dataset`; the analysis rests on it).
    """
    from .errors import DataError

    name = dataset_of(info, model)
    val_size, split_seed = split_of(info)
    kw = dict(val_size=val_size, split_seed=split_seed, root=root, cache={} if cache is None else cache)
    train = load_split(name, "train", n_train, **kw)
    val = load_split(name, "val", n_images, **kw)
    if np.intersect1d(train[1], val[1]).size:
        raise DataError(f"{info.get('path', 'checkpoint')}: training and validation images overlap")
    return {"dataset": name, "val_size": val_size, "split_seed": split_seed, "train": train, "val": val}


def seed_of(info):
    """The training seed of a checkpoint as a label (``train_config['seed']``; else its directory's name)."""
    seed = (info.get("train_config") or {}).get("seed")
    if seed is not None:
        return str(seed)
    return os.path.basename(os.path.dirname(os.path.abspath(info["path"]))) or info["path"]


def load_sigma_study(paths):
    """Every σ of one SRF model over seeds, trained and (where an ``init.pt`` lies beside it) at initialisation.

    Parameters
    ----------
    paths : list of str
        One checkpoint per seed, all of one model.

    Returns
    -------
    ds : xr.Dataset
        :func:`dcnbio.extract.sigmas.stack_sigmas` of the parts, coordinates ``state`` (``trained``/``init``)
        and ``seed``.
    inputs : list of (seed, info, control)
        Each checkpoint's info and its control: ``"init.pt"`` or ``"missing: <why>"``.

    Raises
    ------
    DataError
        A model without SRF layers.
    ConfigError
        Checkpoints of two models, or two checkpoints of one seed.
    """
    from .extract.sigmas import extract_sigmas, stack_sigmas

    parts, inputs, seen, model_name = [], [], {}, None
    for path in paths:
        model, info = load_checkpoint(path)
        trained = extract_sigmas(model, info=info)  # DataError if the model has no SRF layers
        if model_name is None:
            model_name = model.config.name
        elif model.config.name != model_name:
            raise ConfigError(f"{path} is a {model.config.name!r} model but earlier checkpoints are {model_name!r}; "
                              "analyse one model at a time")
        seed = seed_of(info)
        if seed in seen:
            raise ConfigError(f"{path} and {seen[seed]} both have seed {seed}; pass one checkpoint per seed")
        seen[seed] = path
        parts.append((trained, {"state": "trained", "seed": seed}))
        init_model, init_info, why = init_control(info, model)
        if init_model is not None:
            parts.append((extract_sigmas(init_model, info=init_info), {"state": "init", "seed": seed}))
        inputs.append((seed, info, "init.pt" if init_model is not None else f"missing: {why}"))
    return stack_sigmas(parts), inputs


def check_small_data_options(*, train=False, checkpoint=None, models=None, sizes=None, seeds=None, width=0.25,
                             epochs_budget=1, batch_size=1, n_images=1, eval_batch_size=1):
    """Refuse a bad ``analyses/small_data.py`` command line before anything is loaded, trained or written.

    ``--train`` analyses the grid it trains and ``--checkpoint`` the given runs, so the two exclude each other
    and ``--models``/``--sizes``/``--seeds`` (a grid, or a selection of the bundled runs) go with neither
    ``--checkpoint``.

    Raises
    ------
    ConfigError
        A count below 1, exclusive options together, an unknown or repeated model, a bad or repeated size, a
        repeated seed, or (with ``train``) a width or an epochs budget out of range.
    """
    from .datasets import check_sizes
    from .train.grid import check_models

    if n_images < 1 or eval_batch_size < 1 or batch_size < 1:
        raise ConfigError("--n-images, --eval-batch-size and --batch-size must be >= 1")
    if train and checkpoint:
        raise ConfigError("--train analyses the grid it trains; give either --train or --checkpoint")
    if checkpoint and any(v is not None for v in (models, sizes, seeds)):
        raise ConfigError("--models/--sizes/--seeds select a grid (--train) or bundled runs, not --checkpoint files")
    if models is not None:
        check_models(models)
    if sizes is not None:
        check_sizes(sizes)
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds repeat: {seeds}")
    if train:
        if not width > 0:
            raise ConfigError(f"--width must be > 0, got {width:g}")
        if epochs_budget < 1:
            raise ConfigError(f"--epochs-budget must be >= 1, got {epochs_budget}")


def find_small_data_runs(repo, pattern):
    """Every ``last.pt`` of the bundled small-data grid (``pattern`` under ``repo``), finished or not, sorted.

    Raises
    ------
    CheckpointError
        There is none.
    """
    paths = sorted(glob.glob(os.path.join(os.fspath(repo), pattern)))
    if not paths:
        raise CheckpointError(f"no bundled small-data runs ({pattern} under {repo}); train them "
                              "(analyses/small_data.py --train, see data/checkpoints/small-data/README.md) or "
                              "pass --checkpoint PATH")
    return paths


def repo_relative(path, repo):
    """``path`` relative to ``repo`` when it lies inside it (links followed), else as given: how reports name it."""
    from pathlib import Path

    try:
        return os.path.relpath(path, repo) if Path(path).resolve().is_relative_to(repo) else str(path)
    except (OSError, ValueError):
        return str(path)


def load_small_data_runs(paths, *, explicit, repo, compute="fast"):
    """Load small-data runs and keep the finished ones, in model (DCN first), size and seed order.

    A run is finished when its checkpoint reached its planned epochs: the last epoch is the result (the grid's
    recipe holds no validation split, so there is no checkpoint selection).  An unfinished run among
    ``explicit`` paths is an error; one found among the bundled runs (still training, or stopped) is skipped
    and reported.

    Parameters
    ----------
    paths : list of path
        ``last.pt`` of each run.
    explicit : bool
        The paths were given (``--checkpoint``) or trained (``--train``), not found.
    repo : path
        Paths inside it are named relative to it.
    compute : ``"fast"`` or ``"recorded"``
        :func:`~dcnbio.train.checkpoint.load_checkpoint`'s computation path.

    Returns
    -------
    runs : list of (model, info, run)
        ``run`` is :func:`dcnbio.stats.small_data.describe_run` plus ``checkpoint`` (the path as named).
    skipped : list of (str, int, int)
        Unfinished runs left out: path as named, epoch reached, epochs planned.

    Raises
    ------
    CheckpointError
        A path that is no file, a checkpoint that is no small-data run, or an unfinished explicit run.
    """
    from .stats.small_data import MODEL_ORDER, describe_run

    runs, skipped = [], []
    for path in map(os.fspath, paths):
        if not os.path.isfile(path):
            raise CheckpointError(f"no checkpoint file {path}")
        model, info = load_checkpoint(path, compute=compute)
        run = describe_run(info, path)
        if not run["finished"]:
            if explicit:
                raise CheckpointError(f"{path} is at epoch {run['epoch']} of {run['epochs']} (unfinished); finish "
                                      "it (dcnbio train --resume) or leave it out")
            skipped.append((repo_relative(path, repo), run["epoch"], run["epochs"]))
            continue
        run["checkpoint"] = repo_relative(path, repo)
        runs.append((model, info, run))
    order = {m: k for k, m in enumerate(MODEL_ORDER)}
    runs.sort(key=lambda r: (order.get(r[2]["model"], len(order)), r[2]["model"], r[2]["size"], r[2]["seed"]))
    return runs, skipped


def select_small_data_runs(runs, *, skipped=(), models=None, sizes=None, seeds=None):
    """The loaded runs of the given models, sizes and seeds (None: all), and the one dataset they were trained on.

    Returns
    -------
    runs : list of (model, info, run)
    dataset : str

    Raises
    ------
    CheckpointError
        No run is left (the message counts the ``skipped`` unfinished ones).
    ConfigError
        The runs were trained on different datasets: one evaluation set cannot serve them all.
    """
    runs = [r for r in runs if (models is None or r[2]["model"] in models) and (sizes is None or r[2]["size"] in sizes)
            and (seeds is None or r[2]["seed"] in seeds)]
    if not runs:
        raise CheckpointError("no finished small-data runs to analyse" + (f" ({len(skipped)} unfinished)"
                                                                           if skipped else ""))
    datasets = {dataset_of(info, model) for model, info, _ in runs}
    if len(datasets) > 1:
        raise ConfigError(f"the runs were trained on different datasets ({', '.join(sorted(datasets))}); "
                          "analyse one dataset at a time")
    return runs, datasets.pop()
