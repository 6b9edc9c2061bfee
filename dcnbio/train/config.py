"""The training configuration: a frozen dataclass, resolved once and written next to every run."""
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

from ..datasets import dataset_info
from ..errors import ConfigError
from ..core.models import model_config

#: Paper recipe (App. A.2): 100 epochs, SGD 0.1, momentum 0.9, batch 128, ×0.1 at epochs 40 and 70.
PAPER_EPOCHS = 100
#: Fields added to :class:`TrainConfig` after runs were bundled, with the default that older runs mean.
LATER_FIELDS = {"plateau_window": 0}


def small_data_epoch_factor(num_images):
    """Epoch multiplier of the small-data regime (App. A.2): ×10 / ×5 / ×2 for ≤ 520 / 1030 / 5120 images."""
    for limit, factor in ((520, 10), (1030, 5), (5120, 2)):
        if num_images <= limit:
            return factor
    return 1


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (see ``dcnbio train --help``).

    ``epochs=None`` resolves to the paper's 100, multiplied for small subsets
    (:func:`small_data_epoch_factor`).  Learning-rate milestones are fractions of
    the epochs (0.4 and 0.7: epochs 40 and 70 of 100), so they scale with ``epochs``.
    ``sigma_lr_scale`` multiplies the learning rate of the σ parameters (log2 scales and
    their meta-parameters); 1.0 is the paper's recipe.
    ``model_overrides`` are extra :class:`~dcnbio.core.models.ModelConfig` fields
    (solver, rtol, atol, adjoint, T, sigma_range, formulation, integrator, ...).
    ``plateau_patience`` > 0 chooses the length of the schedule by measurement: the run stays at the first
    learning rate until validation accuracy has plateaued (:func:`plateau_reached`: ``plateau_patience`` epochs
    without beating the earlier best by ``plateau_delta``) — or, without a validation hold-out (the small-data
    regime), until the training loss has (:func:`loss_plateau_reached`: ``plateau_patience`` windows without
    lowering the earlier lowest window mean by ``plateau_delta`` nats; a window is the epochs that make up
    ``plateau_window`` SGD steps, one epoch when it is 0) — drops it there, at epoch P, and keeps the paper's
    proportions 40 : 70 : 100 from it: the second drop at round(1.75 P), the end at round(2.5 P)
    (:func:`plateau_schedule`).  ``epochs`` is then the cap: without a plateau by its first milestone the run is
    the fixed schedule of ``epochs``.
    ``tune`` runs the training with measured choices (:mod:`dcnbio.fast.tuning`): faster on some
    machines, but no longer bit-identical from run to run (the candidates differ in float rounding).
    """

    model: str
    dataset: str = "cifar10"
    width: float = 1.0
    data_root: Optional[str] = None
    download: bool = True
    subset: Optional[int] = None
    val_size: int = 5000
    split_seed: int = 0
    epochs: Optional[int] = None
    batch_size: int = 128
    eval_batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: Tuple[float, ...] = (0.4, 0.7)
    gamma: float = 0.1
    sigma_lr_scale: float = 1.0
    augment: bool = True
    seed: int = 0
    device: str = "cpu"
    save_every: int = 0
    test: bool = True
    tune: bool = False
    plateau_patience: int = 0
    plateau_delta: float = 0.005
    plateau_window: int = 0
    model_overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        dataset_info(self.dataset)  # an unknown dataset is refused here, before any work
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        object.__setattr__(self, "model_overrides", dict(self.model_overrides))
        positive = {"batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size, "lr": self.lr}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if self.epochs is not None and (int(self.epochs) != self.epochs or self.epochs < 1):
            raise ConfigError(f"epochs must be a positive integer, got {self.epochs!r}")
        if self.subset is not None and self.subset < 1:
            raise ConfigError(f"subset must be at least 1 image per class, got {self.subset}")
        if self.val_size < 0:
            raise ConfigError(f"val_size must be >= 0, got {self.val_size}")
        if not all(0 < m < 1 for m in self.milestones):
            raise ConfigError(f"milestones are fractions of the epochs in (0, 1), got {self.milestones}")
        if self.sigma_lr_scale < 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError("sigma_lr_scale, momentum and weight_decay must be >= 0")
        if int(self.plateau_patience) != self.plateau_patience or self.plateau_patience < 0:
            raise ConfigError(f"plateau_patience must be a whole number of epochs >= 0, got {self.plateau_patience!r}")
        if not 0 <= self.plateau_delta < 1:
            raise ConfigError(f"plateau_delta is an accuracy gain (or a loss decrease in nats) in [0, 1), got "
                              f"{self.plateau_delta!r}")
        if isinstance(self.plateau_window, bool) or int(self.plateau_window) != self.plateau_window \
                or self.plateau_window < 0:
            raise ConfigError(f"plateau_window is a whole number of SGD steps >= 0, got {self.plateau_window!r}")
        if self.plateau_window and (self.val_size or not self.plateau_patience):
            raise ConfigError("plateau_window averages the training loss of a plateau-scheduled run without a "
                              "hold-out: use it with --val-size 0 and --plateau-patience K")
        if self.save_every < 0:
            raise ConfigError(f"save_every must be >= 0 steps, got {self.save_every}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device must be cpu or cuda[:N], got {self.device!r}")
        if self.train_images() < self.batch_size:
            raise ConfigError(f"{self.train_images()} training images are fewer than one batch of "
                              f"{self.batch_size}; lower --batch-size or raise --subset")
        self.model_config()  # validates the model name and overrides

    def train_images(self):
        """Images the run trains on: ``subset`` per class, else the training split less the hold-out."""
        info = dataset_info(self.dataset)
        return self.subset * info.num_classes if self.subset else info.train_size - self.val_size

    def steps_per_epoch(self):
        """SGD steps of one epoch (the last incomplete batch is dropped, App. A.2)."""
        return self.train_images() // self.batch_size

    def loss_window_epochs(self):
        """Epochs averaged into one training-loss window of the plateau rule: enough to make up
        ``plateau_window`` steps (at least one epoch).

        >>> TrainConfig("resnet-blocks", "fashion-mnist", subset=10, val_size=0, batch_size=32,
        ...             plateau_patience=2, plateau_window=120).loss_window_epochs()
        40
        """
        return max(1, -(-self.plateau_window // self.steps_per_epoch()))

    def model_config(self):
        """The :class:`~dcnbio.core.models.ModelConfig` this run trains (dataset channels and classes applied)."""
        info = dataset_info(self.dataset)
        return model_config(self.model, in_channels=info.channels, num_classes=info.num_classes,
                            width=self.width, **self.model_overrides)

    def resolved(self):
        """A copy with ``epochs`` filled in."""
        if self.epochs is not None:
            return self
        info = dataset_info(self.dataset)
        n = self.subset * info.num_classes if self.subset else info.train_size
        return dataclasses.replace(self, epochs=PAPER_EPOCHS * small_data_epoch_factor(n))

    def milestone_epochs(self):
        """Epochs after which the learning rate drops ×0.1 (the fixed schedule's milestones × epochs)."""
        epochs = self.resolved().epochs
        return sorted({max(1, int(round(m * epochs))) for m in self.milestones})

    def first_level_cap(self):
        """The last epoch a plateau-scheduled run may spend at the first learning rate."""
        return self.milestone_epochs()[0]

    def plateau_reached_in(self, metrics):
        """Whether this run's plateau rule fires on its per-epoch rows ``metrics``: validation accuracy with a
        hold-out (:func:`plateau_reached`), the training loss in windows of :meth:`loss_window_epochs` without
        (:func:`loss_plateau_reached`)."""
        if self.val_size:
            return plateau_reached([row["val_acc"] for row in metrics], self.plateau_patience, self.plateau_delta)
        return loss_plateau_reached([row["train_loss"] for row in metrics], self.plateau_patience, self.plateau_delta,
                                    window=self.loss_window_epochs())

    def steps_left(self, metrics, step, plateau_epoch, epochs):
        """SGD steps a run still has to take from where its checkpoint stands: ``(fewest, most)``.

        ``metrics`` (one row per finished epoch) and ``step`` are the checkpoint's; ``plateau_epoch`` and ``epochs``
        its training loop's records (``epochs``: the schedule's length, set once the plateau is known).  A run
        without the plateau rule, or whose plateau is known, has one answer.  Before its plateau the rule is run
        forward on the recorded epochs: the fewest steps if every epoch to come is no better than the worst possible
        (the rule fires at the first epoch it can: :func:`plateau_schedule` from there), the most if every one
        improves until the cap (:meth:`first_level_cap`; then the fixed schedule of ``epochs`` runs).

        >>> c = TrainConfig("dcn-ode", "fashion-mnist", val_size=1000, epochs=30, plateau_patience=2)
        >>> rows = [{"val_acc": a} for a in (0.80, 0.84, 0.86, 0.88, 0.885)]  # epoch 5 did not beat 0.88 by 0.005
        >>> c.steps_per_epoch(), c.steps_left(rows, 2300, None, 30), c.steps_left(rows + rows, 5185, 8, 20)
        (460, (4600, 11500), (4015, 4015))
        """
        per_epoch = self.steps_per_epoch()
        most = epochs * per_epoch - step
        if not self.plateau_patience or plateau_epoch is not None:
            return most, most
        worst = {"val_acc": -math.inf, "train_loss": math.inf}  # an epoch no better than any, for either rule
        for plateau in range(len(metrics) + 1, self.first_level_cap()):
            if self.plateau_reached_in(list(metrics) + [worst] * (plateau - len(metrics))):
                return plateau_schedule(plateau)[1] * per_epoch - step, most
        return most, most

    def to_dict(self):
        """The configuration as plain values (what checkpoints and final.json store).

        Fields added after runs were bundled (:data:`LATER_FIELDS`) are written only when they differ from their
        default, so a run trained before them and resumed today keeps recording the same configuration.
        """
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        for name, default in LATER_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    def to_json(self):
        """The configuration as JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d):
        """The configuration stored by :meth:`to_dict`."""
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"training configuration has unknown field(s) {sorted(unknown)}")
        if "milestones" in d:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)

    def differences(self, other, ignore=("device",)):
        """Fields whose values differ from ``other`` (ignoring ``ignore``)."""
        a, b = self.to_dict(), other.to_dict()
        return sorted(k for k in a if k not in ignore and a[k] != b.get(k))


def plateau_reached(val_acc, patience, delta):
    """Whether validation accuracy has plateaued: its last ``patience`` epochs did not beat the best before them
    by more than ``delta``.

    >>> plateau_reached([0.70, 0.80, 0.84, 0.844, 0.843], patience=2, delta=0.005)
    True
    >>> plateau_reached([0.70, 0.80, 0.84, 0.85, 0.843], patience=2, delta=0.005)
    False
    """
    if patience < 1 or len(val_acc) <= patience:
        return False
    before, recent = max(val_acc[:-patience]), max(val_acc[-patience:])
    return not recent > before + delta


def loss_plateau_reached(losses, patience, delta, window=1):
    """Whether a loss has plateaued: the means of its last ``patience`` windows of ``window`` epochs did not lower
    the lowest window mean before them by more than ``delta`` (in the loss's units, nats for cross-entropy).
    Windows are counted from the first epoch; an incomplete last window waits for its epochs.

    An absolute margin, because a training loss on a small subset falls towards zero: relative to itself it keeps
    halving long after it has stopped mattering.  On a few hundred images the loss also sits near ln 10 for the
    first epochs before it falls, so the patience must outlast that start.

    >>> loss_plateau_reached([1.0, 0.5, 0.30, 0.295, 0.29], patience=2, delta=0.02)
    True
    >>> loss_plateau_reached([1.0, 0.5, 0.30, 0.27, 0.29], patience=2, delta=0.02)
    False

    An epoch of a few SGD steps has a loss noisier than the decrease it should detect; averaging windows of
    epochs (one window = a fixed number of steps) makes the rule the same at every subset size:

    >>> loss_plateau_reached([0.9, 0.7, 0.6, 0.62, 0.59, 0.61], patience=2, delta=0.02, window=2)
    False
    >>> loss_plateau_reached([0.9, 0.7, 0.6, 0.62, 0.59, 0.63, 0.6, 0.6], patience=2, delta=0.02, window=2)
    True
    """
    complete = len(losses) - len(losses) % window
    means = [sum(losses[i:i + window]) / window for i in range(0, complete, window)]
    return plateau_reached([-m for m in means], patience, delta)


def plateau_schedule(plateau_epoch):
    """Milestones and length of the schedule whose first drop is at ``plateau_epoch`` (P), in the paper's
    proportions 40 : 70 : 100 (App. A.2: epochs 40 and 70 of 100).

    >>> plateau_schedule(4)
    ([4, 7], 10)
    >>> plateau_schedule(6)
    ([6, 10], 15)
    """
    p = int(plateau_epoch)
    if p < 1:
        raise ConfigError(f"the plateau epoch must be >= 1, got {plateau_epoch!r}")
    second = max(p + 1, int(round(1.75 * p)))
    return [p, second], max(second + 1, int(round(2.5 * p)))
