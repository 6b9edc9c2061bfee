"""Loading the datasets by name (see :mod:`dcnbio.datasets` for the table), deterministic splits and subsets.

Two datasets are known: ``fashion-mnist`` (1×28×28, real data available offline
through the Debian package ``dataset-fashion-mnist``) and ``cifar10`` (3×32×32,
the paper's dataset, through torchvision's download).

Splits
    ``train`` and ``val`` partition the official training set: ``val`` is a
    stratified, seeded hold-out (``val_size`` images, same for every run with the
    same ``split_seed``) on which checkpoints are chosen.  ``test`` is the
    official test set and is only ever *reported*.
Subsets (small-data regime)
    ``per_class`` images of each class drawn from ``train`` *without replacement*,
    deterministic from the run's seed (the reference code drew with replacement).

All randomness is derived from explicit seeds, never from global RNG state, so
a run interrupted at any step and resumed sees exactly the same batches.
"""
import gzip
import hashlib
import os

import numpy as np
import torch

from ..core.sampling import augment, batch_seed, epoch_permutation  # noqa: F401  (the training loop's batches)
from ..datasets import DATASETS, DatasetInfo, check_sizes, dataset_info  # noqa: F401  (the table, re-exported)
from ..errors import DataError

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


class ArrayDataset(torch.utils.data.Dataset):
    """Images held as uint8 ``(N, C, H, W)`` with int64 labels; items are normalised float32 tensors.

    Attributes
    ----------
    images : Tensor uint8 ``(N, C, H, W)``
    labels : Tensor int64 ``(N,)``
    indices : Tensor int64 ``(N,)``
        Index of each image in its official split (train or test file).
    info : DatasetInfo
    """

    def __init__(self, images, labels, indices, info):
        self.images = images
        self.labels = labels
        self.indices = indices
        self.info = info
        self._mean = torch.tensor(info.mean).view(-1, 1, 1)
        self._std = torch.tensor(info.std).view(-1, 1, 1)

    def __len__(self):
        return len(self.labels)

    def normalise(self, images_uint8):
        """uint8 ``(..., C, H, W)`` → float32, per-channel standardised."""
        return (images_uint8.float() / 255.0 - self._mean) / self._std

    def batch(self, positions):
        """Normalised images ``(B, C, H, W)`` and labels ``(B,)`` at ``positions``."""
        positions = torch.as_tensor(positions, dtype=torch.long)
        return self.normalise(self.images[positions]), self.labels[positions]

    def __getitem__(self, i):
        return self.normalise(self.images[i]), int(self.labels[i])

    def subset(self, positions):
        """The images at ``positions`` (their dataset indices kept) as a new :class:`ArrayDataset`."""
        positions = torch.as_tensor(positions, dtype=torch.long)
        return ArrayDataset(self.images[positions], self.labels[positions], self.indices[positions], self.info)

    def fingerprint(self):
        """sha256 of the official indices of the images (identifies a subset)."""
        return hashlib.sha256(self.indices.numpy().astype("<i8").tobytes()).hexdigest()


# --- reading the raw files ----------------------------------------------------------------------

_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) != offset + int(np.prod(dims)):
        raise DataError(f"{path} is truncated: expected {offset + int(np.prod(dims))} bytes, found {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find_file(directory, stem):
    for candidate in (stem, stem + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def fashion_mnist_places(root=None):
    """Directories searched for Fashion-MNIST, in order."""
    places = []
    if root is not None:
        places += [root, os.path.join(root, "FashionMNIST", "raw"), os.path.join(root, "fashion-mnist")]
    places.append(DEBIAN_FASHION_MNIST)
    return places


def _load_fashion_mnist(split, root, download):
    stems = _FMNIST_FILES[split]
    places = fashion_mnist_places(root)
    for place in places:
        paths = [_find_file(place, stem) for stem in stems]
        if all(paths):
            images, labels = _read_idx(paths[0]), _read_idx(paths[1])
            if len(images) != len(labels):
                raise DataError(f"{place}: {len(images)} images but {len(labels)} labels")
            return images[:, None], labels
    if download:
        target = root or os.path.join(os.path.expanduser("~"), ".cache", "dcnbio")
        try:
            import torchvision

            ds = torchvision.datasets.FashionMNIST(target, train=(split == "train"), download=True)
        except Exception as exc:  # network errors come in many types
            raise DataError(f"Fashion-MNIST not found in {', '.join(places)} and the download into {target} "
                            f"failed ({type(exc).__name__}); install the Debian package dataset-fashion-mnist "
                            f"or pass --data-root") from None
        return ds.data.numpy()[:, None], ds.targets.numpy()
    raise DataError(f"Fashion-MNIST {split} files not found; looked in {', '.join(places)}; install the Debian "
                    f"package dataset-fashion-mnist, pass --data-root DIR, or allow the download")


def _load_cifar10(split, root, download):
    import torchvision

    target = root or os.path.join(os.path.expanduser("~"), ".cache", "dcnbio")
    try:
        ds = torchvision.datasets.CIFAR10(target, train=(split == "train"), download=download)
    except RuntimeError as exc:
        raise DataError(f"CIFAR-10 not found or corrupt under {target} ({str(exc).splitlines()[0]}); pass "
                        f"--data-root DIR holding cifar-10-batches-py/, or allow the download") from None
    except Exception as exc:  # network errors come in many types
        raise DataError(f"CIFAR-10 download into {target} failed ({type(exc).__name__}: {exc}); pass --data-root "
                        f"DIR holding cifar-10-batches-py/") from None
    return np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)), np.asarray(ds.targets)


_LOADERS = {"fashion-mnist": _load_fashion_mnist, "cifar10": _load_cifar10}


def load_official(name, split, root=None, download=True):
    """The official ``train`` or ``test`` set as an :class:`ArrayDataset`."""
    info = dataset_info(name)
    if split not in ("train", "test"):
        raise DataError(f"official split must be 'train' or 'test', got {split!r}")
    images, labels = _LOADERS[name](split, root, download)
    images = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))
    if images.shape[1:] != (info.channels, info.size, info.size):
        raise DataError(f"{name} {split} images have shape {tuple(images.shape[1:])}, expected "
                        f"{(info.channels, info.size, info.size)}")
    labels = torch.from_numpy(np.asarray(labels).astype(np.int64))
    return ArrayDataset(images, labels, torch.arange(len(labels)), info)


# --- deterministic splits -----------------------------------------------------------------------

def stratified_choice(labels, per_class, seed):
    """Positions of ``per_class`` items of each class, drawn without replacement, sorted.

    Raises DataError when a class has fewer than ``per_class`` items.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if per_class > len(members):
            raise DataError(f"class {c} has {len(members)} images, fewer than the {per_class} per class asked for")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def split_train_val(train, val_size, split_seed=0):
    """Stratified, seeded hold-out of ``val_size`` images (rounded down to a multiple of the class count)."""
    k = train.info.num_classes
    per_class = val_size // k
    if val_size < 0 or (val_size > 0 and per_class == 0):
        raise DataError(f"val_size must be 0 or at least the number of classes ({k}), got {val_size}")
    val_pos = (stratified_choice(train.labels.numpy(), per_class, batch_seed(0x7A1, split_seed))
               if per_class else np.array([], dtype=int))
    mask = np.ones(len(train), dtype=bool)
    mask[val_pos] = False
    return train.subset(np.flatnonzero(mask)), train.subset(val_pos)


def load_dataset(name, split, root=None, *, val_size=5000, split_seed=0, subset=None, seed=0, download=True):
    """A dataset split by name.

    Parameters
    ----------
    name : ``"fashion-mnist"`` or ``"cifar10"``
    split : ``"train"``, ``"val"`` or ``"test"``
        ``train``/``val`` partition the official training set (see module docstring).
    root : str, optional
        Where to look first (and where to download to).
    val_size : int
        Images held out for validation (stratified).
    split_seed : int
        Seed of the validation hold-out (fixed across runs by default).
    subset : int, optional
        Images per class kept from ``train`` (small-data regime), drawn without replacement with ``seed``.
    download : bool
        Allow torchvision's download when the files are not found.

    Returns
    -------
    ArrayDataset
    """
    if split not in ("train", "val", "test"):
        raise DataError(f"unknown split {split!r}; choose train, val or test")
    dataset_info(name)
    if split == "test":
        return load_official(name, "test", root, download)
    train, val = split_train_val(load_official(name, "train", root, download), val_size, split_seed)
    if split == "val":
        return val
    if subset is not None:
        if subset < 1:
            raise DataError(f"subset must be at least 1 image per class, got {subset}")
        train = train.subset(stratified_choice(train.labels.numpy(), subset, seed))
    return train
