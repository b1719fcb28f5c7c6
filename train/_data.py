"""Image data sets held in memory as tensors, and the batches drawn from them.

MNIST (60k x 784) and CIFAR-10 (50k x 3072) fit in memory many times over, and slicing a
tensor by a batch of indices is far faster on a CPU than a DataLoader that calls a PIL
transform per image. torchvision still reads the files (and downloads them when asked).

Data folder, in order: the ``data_dir`` argument (``--data-dir``), ``$IMPLICIT_DATA``,
``./data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

ENV_VAR = "IMPLICIT_DATA"
DATASETS = ("mnist", "cifar10")

MNIST_RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# Per-channel statistics of the training sets (the usual published values).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR10_NPZ = "cifar10.npz"
CIFAR10_TORCHVISION_DIR = "cifar-10-batches-py"

# The permutation behind `limit=` is fixed, independent of the run's seed, so that
# "the first 1000 training images" names the same images in every run and every variant.
SUBSET_SEED = 20210507


class DataNotFoundError(FileNotFoundError):
    """The data folder lacks the files a data set needs (and downloading was not asked for)."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else ``$IMPLICIT_DATA``, else ``./data``."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path("data")


@dataclass(frozen=True, eq=False)
class InMemoryDataset:
    """Normalized images ``x`` (N, C, H, W) float32 and labels ``y`` (N,) int64 on the CPU.

    ``description`` says what the tensors hold (source, split, subset) for logs and results.
    """

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    description: str

    def __post_init__(self):
        if self.x.ndim != 4 or self.y.ndim != 1 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"InMemoryDataset needs x of shape (N, C, H, W) and y of shape (N,), "
                f"got x {tuple(self.x.shape)} and y {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return self.y.shape[0]

    def limit(self, n: int | None) -> "InMemoryDataset":
        """The first ``n`` items of a fixed shuffled permutation (reproducible, roughly class-balanced).

        ``None`` or ``n >= len(self)`` returns ``self`` unchanged (original order).
        """
        if n is None or n >= len(self):
            return self
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"limit must be a positive integer or None, got {n!r}")
        gen = torch.Generator().manual_seed(SUBSET_SEED)
        idx = torch.randperm(len(self), generator=gen)[:n]
        return InMemoryDataset(
            x=self.x[idx].contiguous(),
            y=self.y[idx].contiguous(),
            num_classes=self.num_classes,
            description=f"{self.description}, subset of {n} of {len(self)}",
        )


def _normalize(images_uint8_nchw: torch.Tensor, mean, std) -> torch.Tensor:
    x = images_uint8_nchw.to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def load_mnist(data_dir: str | os.PathLike | None = None, *, train: bool, download: bool = False,
               normalize: bool = True) -> InMemoryDataset:
    """MNIST through ``torchvision.datasets.MNIST`` (files in ``<data_dir>/MNIST/raw``); pixels in
    [0, 1], then standardised by MNIST's mean and std unless ``normalize=False``."""
    root = resolve_data_dir(data_dir)
    raw = root / "MNIST" / "raw"
    if not download and not all((raw / f).is_file() for f in MNIST_RAW_FILES):
        missing = [f for f in MNIST_RAW_FILES if not (raw / f).is_file()]
        raise DataNotFoundError(
            f"MNIST not found in data folder {str(root)!r}: expected the four raw files "
            f"{', '.join(MNIST_RAW_FILES)} in {str(raw)!r} (missing: {', '.join(missing)}). "
            f"Pass --data-dir (or set ${ENV_VAR}) to the folder holding MNIST/raw, or pass "
            f"--download on a machine with internet access."
        )
    from torchvision.datasets import MNIST

    ds = MNIST(str(root), train=train, download=download)
    x = _normalize(ds.data.unsqueeze(1), MNIST_MEAN, MNIST_STD) if normalize else _normalize(ds.data.unsqueeze(1), (0.0,), (1.0,))
    y = ds.targets.to(torch.int64)
    split = "train" if train else "test"
    pixels = "" if normalize else ", pixels in [0, 1]"
    return InMemoryDataset(x=x, y=y, num_classes=10, description=f"MNIST {split} ({len(y)} images{pixels})")


class CIFAR10Npz(torch.utils.data.Dataset):
    """CIFAR-10 from a ``cifar10.npz`` file: keys x_train, y_train, x_test, y_test (uint8, images HWC RGB).

    The copy shipped for offline use was decoded from JPEG (quality 75), so its pixels are close
    to, but not bit-identical with, the original CIFAR-10; accuracies on it can differ slightly
    from published numbers. Items are ``(uint8 tensor CHW, label)``.
    """

    def __init__(self, path: str | os.PathLike, *, train: bool):
        path = Path(path)
        if not path.is_file():
            raise DataNotFoundError(f"CIFAR-10 npz file not found: {str(path)!r}")
        split = "train" if train else "test"
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in (f"x_{split}", f"y_{split}") if k not in z.files]
            if missing:
                raise ValueError(
                    f"{str(path)!r} lacks key(s) {', '.join(missing)}; expected x_train, y_train, x_test, y_test"
                )
            images, labels = z[f"x_{split}"], z[f"y_{split}"]
        if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
            raise ValueError(
                f"{str(path)!r}: x_{split} must be uint8 of shape (N, 32, 32, 3), "
                f"got {images.dtype} {images.shape}"
            )
        self.data = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        self.targets = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return self.data[i], int(self.targets[i])


def load_cifar10(data_dir: str | os.PathLike | None = None, *, train: bool, download: bool = False) -> InMemoryDataset:
    """CIFAR-10: torchvision's ``CIFAR10`` when ``<data_dir>/cifar-10-batches-py`` exists or
    ``download`` is set, else ``<data_dir>/cifar10.npz`` (JPEG-decoded copy, see :class:`CIFAR10Npz`)."""
    root = resolve_data_dir(data_dir)
    split = "train" if train else "test"
    if download or (root / CIFAR10_TORCHVISION_DIR).is_dir():
        from torchvision.datasets import CIFAR10

        ds = CIFAR10(str(root), train=train, download=download)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor(ds.targets, dtype=torch.int64)
        source = "CIFAR-10 (torchvision)"
    elif (root / CIFAR10_NPZ).is_file():
        ds = CIFAR10Npz(root / CIFAR10_NPZ, train=train)
        images, labels = ds.data, ds.targets
        source = "CIFAR-10 (cifar10.npz, decoded from JPEG)"
    else:
        raise DataNotFoundError(
            f"CIFAR-10 not found in data folder {str(root)!r}: expected either the folder "
            f"{CIFAR10_TORCHVISION_DIR}/ (torchvision layout) or the file {CIFAR10_NPZ}. "
            f"Pass --data-dir (or set ${ENV_VAR}), or pass --download on a machine with internet access."
        )
    x = _normalize(images, CIFAR10_MEAN, CIFAR10_STD)
    return InMemoryDataset(x=x, y=labels, num_classes=10, description=f"{source} {split} ({len(labels)} images)")


def load(name: str, data_dir=None, *, train: bool, download: bool = False, limit: int | None = None,
         normalize: bool = True) -> InMemoryDataset:
    """Load data set ``name`` (one of :data:`DATASETS`), optionally limited to a fixed subset;
    ``normalize=False`` (MNIST only) keeps pixels in [0, 1]."""
    if name == "mnist":
        ds = load_mnist(data_dir, train=train, download=download, normalize=normalize)
    elif not normalize:
        raise ValueError(f"normalize=False is supported for mnist only, got data set {name!r}")
    elif name == "cifar10":
        ds = load_cifar10(data_dir, train=train, download=download)
    else:
        raise ValueError(f"data set must be one of {DATASETS}, got {name!r}")
    return ds.limit(limit)


# --- batches -----------------------------------------------------------------------------


def _generator(purpose: str, *keys: int) -> torch.Generator:
    # SeedSequence mixes the keys into well-separated streams (seed=1/epoch=2 and seed=2/epoch=1
    # must not share one), whatever their size.
    entropy = [sum(purpose.encode())] + [int(k) for k in keys]
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """Item order for one epoch, a pure function of (seed, epoch).

    Keeping it free of global RNG state is what lets a resumed run draw exactly the batches an
    uninterrupted run would have drawn.
    """
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=_generator("order", seed, epoch))


def shard(order: torch.Tensor, *, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of ``order``: every ``world_size``-th item, padded by wrap-around so
    all ranks get the same count (DDP needs every rank to take the same number of steps)."""
    if world_size == 1:
        return order
    per_rank = -(-len(order) // world_size)
    total = per_rank * world_size
    if total > len(order):
        order = torch.cat([order, order[: total - len(order)]])
    return order[rank::world_size]


@dataclass(frozen=True, kw_only=True)
class Augment:
    """Random crop after zero padding by ``pad`` pixels, and horizontal flip with probability 1/2
    (the standard CIFAR augmentation). Applied per batch with an explicit generator."""

    pad: int = 4
    flip: bool = True

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.pad > 0:
            # padding with 0 after normalization pads with the mean colour, as a crop of a
            # zero-padded *normalized* tensor commonly does.
            xp = torch.nn.functional.pad(x, (self.pad,) * 4)
            dy = torch.randint(0, 2 * self.pad + 1, (n,), generator=gen)
            dx = torch.randint(0, 2 * self.pad + 1, (n,), generator=gen)
            rows = (dy.view(n, 1) + torch.arange(h).view(1, h))  # (n, h)
            cols = (dx.view(n, 1) + torch.arange(w).view(1, w))  # (n, w)
            x = xp[torch.arange(n).view(n, 1, 1, 1), torch.arange(x.shape[1]).view(1, -1, 1, 1),
                   rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
        if self.flip:
            flip = torch.rand(n, generator=gen) < 0.5
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
        return x


def batches(
    data: InMemoryDataset,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool,
    rank: int = 0,
    world_size: int = 1,
    start: int = 0,
    augment: Augment | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` CPU batches of one epoch for this rank, skipping the first ``start`` batches.

    The last batch may be smaller. Augmentation randomness is drawn from a generator seeded by
    (seed, epoch, rank, batch index), again so that resuming reproduces it.
    """
    idx = shard(epoch_order(len(data), seed=seed, epoch=epoch, shuffle=shuffle), rank=rank, world_size=world_size)
    for b, lo in enumerate(range(0, len(idx), batch_size)):
        if b < start:
            continue
        sel = idx[lo : lo + batch_size]
        x, y = data.x[sel], data.y[sel]
        if augment is not None:
            x = augment(x, _generator("augment", seed, epoch, rank, b))
        yield x, y


def num_batches(n_items: int, *, batch_size: int, world_size: int = 1) -> int:
    """Batches per epoch on each rank (ranks are padded to equal shares)."""
    per_rank = -(-n_items // world_size)
    return -(-per_rank // batch_size)
