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

from train._errors import UserError

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
CIFAR10_NPZ_BYTES = 170_461_591  # the offline copy's size, quoted when a copy is truncated
# Items in the original files, quoted when a header is too damaged to say how many there should be.
MNIST_COUNTS = {"train": 60_000, "t10k": 10_000}

# The permutation behind `limit=` is fixed, independent of the run's seed, so that
# "the first 1000 training images" names the same images in every run and every variant.
SUBSET_SEED = 20210507


class DataError(UserError):
    """A data set's files are missing, unreadable or damaged; the message names the file and the fix."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The data folder lacks the files a data set needs (and downloading was not asked for)."""


class DataCorruptError(DataError, ValueError):
    """A data file is there but is not what its name promises: truncated, empty, compressed, or
    holding the wrong format, shapes or labels."""


# The fixes the messages end with: the user is told what to do, not only what is wrong.
_FIX_MNIST = "delete it and rerun with --download, or copy it again from an intact copy of MNIST"
_FIX_NPZ = (f"copy {CIFAR10_NPZ} again from an intact copy (the offline copy is {CIFAR10_NPZ_BYTES:,} bytes), "
            f"or rerun with --download to fetch torchvision's {CIFAR10_TORCHVISION_DIR}/ instead")
_FIX_BATCHES = "delete it and rerun with --download"


def _one_line(e: BaseException) -> str:
    """``Type: message`` on one line: a UserError is printed as a single line."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else ``$IMPLICIT_DATA``, else ``./data``."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path("data")


def recorded_data_dir(recorded: str | None, given: str | os.PathLike | None = None) -> str:
    """The data folder for a measurement on a run's checkpoint: ``given`` (--data-dir) if any, else
    the folder the run's record names when it is here (records keep it relative to the repository,
    or only as ``<name>`` when it was outside it), else ``$IMPLICIT_DATA``."""
    if given is not None and str(given) != "":
        return str(given)
    from train._results import REPO_ROOT  # here, not at the top: data loading does not depend on the records module

    for candidate in (Path(recorded), REPO_ROOT / recorded) if recorded else ():
        if candidate.is_dir():
            return str(candidate)
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    raise UserError(f"the run's record names the data folder {recorded!r}, which is not here: pass --data-dir "
                    f"with the folder that holds the data set, or set ${ENV_VAR}")


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


def _describe_idx_magic(magic: int) -> str:
    if magic == 0x0801:
        return "that of an IDX label file"
    if magic == 0x0803:
        return "that of an IDX image file"
    if magic >> 16 == 0 and (magic >> 8) & 0xFF in (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E):
        return f"an IDX file of element type 0x{(magic >> 8) & 0xFF:02x} with {magic & 0xFF} dimension(s)"
    return "not an IDX file"


def _check_mnist_file(root: Path, name: str) -> int:
    """Check one raw IDX file's header against its size (not its pixels); return its item count.

    torchvision trusts the header and fails with a reshape or assertion error that names no file.
    """
    path = root / "MNIST" / "raw" / name
    images = "images" in name
    ndim, item = (3, 28 * 28) if images else (1, 1)
    what = "image" if images else "label"
    header = 4 + 4 * ndim
    n_orig = MNIST_COUNTS[name.split("-")[0]]
    expected = (f"an IDX {what} file (magic 0x{0x0800 + ndim:08x}, {'N x 28 x 28' if images else 'N'} unsigned bytes; "
                f"the original holds {n_orig} {what}s in {header + n_orig * item:,} bytes)")

    def corrupt(found: str) -> DataCorruptError:
        return DataCorruptError(f"MNIST file {str(path)!r} is corrupt: expected {expected}, found {found}; {_FIX_MNIST}")

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(header)
    except OSError as e:
        raise DataError(f"cannot read MNIST file {str(path)!r} ({_one_line(e)}); check that it is a readable file") from e
    if size == 0:
        raise corrupt("an empty file")
    if head[:2] == b"\x1f\x8b":
        raise DataCorruptError(
            f"MNIST file {str(path)!r} is gzip-compressed, but torchvision reads the uncompressed IDX file: "
            f"decompress it (mv {path} {path}.gz && gunzip {path}.gz), or {_FIX_MNIST}")
    if len(head) < header:
        raise corrupt(f"only {size} bytes, fewer than its {header}-byte header")
    magic = int.from_bytes(head[:4], "big")
    if magic != 0x0800 + ndim:
        raise corrupt(f"magic number 0x{magic:08x}, {_describe_idx_magic(magic)}")
    dims = [int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if images and dims[1:] != [28, 28]:
        raise corrupt(f"a header declaring {dims[0]} images of {dims[1]}x{dims[2]} pixels")
    if dims[0] == 0:
        raise corrupt(f"a header declaring 0 {what}s")
    want = header + dims[0] * item
    if size != want:
        how = "truncated" if size < want else f"{size - want:,} bytes too long"
        raise corrupt(f"{size:,} bytes where its header's {dims[0]} {what}s need {want:,} ({how})")
    return dims[0]


def _check_mnist_files(root: Path, names) -> None:
    counts = {name: _check_mnist_file(root, name) for name in names}
    for prefix in MNIST_COUNTS:
        img, lab = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
        if img in counts and lab in counts and counts[img] != counts[lab]:
            raw = root / "MNIST" / "raw"
            raise DataCorruptError(
                f"MNIST files {str(raw / img)!r} and {str(raw / lab)!r} disagree: {counts[img]} images but "
                f"{counts[lab]} labels (one is damaged or from another copy); delete both and rerun with "
                f"--download, or copy them again from an intact copy of MNIST")


def _mnist_missing_hint(root: Path, raw: Path, missing: list[str]) -> str:
    """Where the files went instead, for the mistakes that are easy to make."""
    if not root.is_dir():
        return f" The data folder {str(root)!r} does not exist."
    if all((raw / f"{f}.gz").is_file() for f in missing):
        return (f" Found {', '.join(f + '.gz' for f in missing)} there: torchvision reads the uncompressed files, "
                f"so decompress them (gunzip -k {raw}/*.gz).")
    if all((root / f).is_file() for f in MNIST_RAW_FILES):
        return f" The four files are directly in {str(root)!r}: move them into {str(raw)!r}."
    if all((root / "raw" / f).is_file() for f in MNIST_RAW_FILES):
        return f" {str(root)!r} looks like the MNIST folder itself: pass its parent folder {str(root.parent)!r}."
    return ""


def _check_labels(labels: torch.Tensor, where: str, fix: str) -> None:
    # A label outside 0-9 would surface much later as an index error inside the loss.
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) > 9):
        bad = int(torch.nonzero((labels < 0) | (labels > 9))[0])
        raise DataCorruptError(f"{where} is corrupt: expected class labels 0-9, found {int(labels[bad])} "
                               f"at index {bad}; {fix}")


def load_mnist(data_dir: str | os.PathLike | None = None, *, train: bool, download: bool = False,
               normalize: bool = True) -> InMemoryDataset:
    """MNIST through ``torchvision.datasets.MNIST`` (files in ``<data_dir>/MNIST/raw``); pixels in
    [0, 1], then standardised by MNIST's mean and std unless ``normalize=False``.

    The raw files' headers are checked against their sizes first (torchvision would reject a
    damaged file with an error that names no file); :class:`DataCorruptError` names the file.
    """
    root = resolve_data_dir(data_dir)
    raw = root / "MNIST" / "raw"
    missing = [f for f in MNIST_RAW_FILES if not (raw / f).is_file()]
    if missing and not download:
        raise DataNotFoundError(
            f"MNIST not found in data folder {str(root)!r}: expected the four raw files "
            f"{', '.join(MNIST_RAW_FILES)} in {str(raw)!r} (missing: {', '.join(missing)}). "
            f"Pass --data-dir (or set ${ENV_VAR}) to the folder holding MNIST/raw, or pass "
            f"--download on a machine with internet access." + _mnist_missing_hint(root, raw, missing)
        )
    # torchvision's download skips files that exist, so a damaged one must be caught here even
    # when downloading.
    _check_mnist_files(root, [f for f in MNIST_RAW_FILES if f not in missing])
    from torchvision.datasets import MNIST

    try:
        ds = MNIST(str(root), train=train, download=download)
    except Exception as e:  # noqa: BLE001 - whatever torchvision raises, the user needs the folder and the fix
        verb = "download or read" if download else "read"
        raise (DataError if download else DataCorruptError)(
            f"torchvision could not {verb} MNIST in {str(raw)!r} ({_one_line(e)}); expected the four raw IDX files "
            f"{', '.join(MNIST_RAW_FILES)}: delete any damaged one and rerun with --download, or copy them again "
            f"from an intact copy of MNIST") from e
    prefix = "train" if train else "t10k"
    _check_labels(ds.targets, f"MNIST file {str(raw / f'{prefix}-labels-idx1-ubyte')!r}", _FIX_MNIST)
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
        xk, yk = f"x_{split}", f"y_{split}"
        expected = ("a NumPy .npz (zip) archive with arrays x_train, y_train, x_test, y_test "
                    "(images uint8 (N, 32, 32, 3), labels integer (N,) in 0-9)")

        def corrupt(found: str) -> DataCorruptError:
            return DataCorruptError(f"CIFAR-10 file {str(path)!r} is corrupt: expected {expected}, found {found}; {_FIX_NPZ}")

        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(6)
        except OSError as e:
            raise DataError(f"cannot read CIFAR-10 file {str(path)!r} ({_one_line(e)}); check that it is a readable file") from e
        # np.load decides by these first bytes, and without them it falls back to unpickling,
        # whose refusal says nothing about the file.
        if size == 0:
            raise corrupt("an empty file")
        if head.startswith(b"\x93NUMPY"):
            raise corrupt("a single .npy array, not an archive of four (write them with np.savez)")
        if head[:2] == b"\x1f\x8b":
            raise corrupt("a gzip-compressed file (decompress it with gunzip)")
        if not head.startswith(b"PK"):
            raise corrupt(f"{size:,} bytes that do not start like a zip archive")
        try:
            z = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - zipfile, zlib and numpy each raise their own type
            raise corrupt(f"a damaged or truncated zip archive of {size:,} bytes ({_one_line(e)})") from e
        with z:
            missing = [k for k in (xk, yk) if k not in z.files]
            if missing:
                raise DataCorruptError(
                    f"CIFAR-10 file {str(path)!r} lacks key(s) {', '.join(missing)}; expected x_train, y_train, "
                    f"x_test, y_test, found {', '.join(z.files) or 'no arrays'}; {_FIX_NPZ}")
            arrays = {}
            for k in (xk, yk):
                try:
                    arrays[k] = z[k]
                except Exception as e:  # noqa: BLE001 - a damaged member fails in zipfile, zlib or numpy
                    raise corrupt(f"array {k} that cannot be read ({_one_line(e)})") from e
        images, labels = arrays[xk], arrays[yk]
        if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
            hint = " (channels first; expected channels last)" if images.shape[1:] == (3, 32, 32) else ""
            raise DataCorruptError(
                f"CIFAR-10 file {str(path)!r}: {xk} must be uint8 of shape (N, 32, 32, 3), "
                f"got {images.dtype} {images.shape}{hint}; {_FIX_NPZ}")
        # Keras's cifar10.load_data() gives labels of shape (N, 1); they mean the same.
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataCorruptError(
                f"CIFAR-10 file {str(path)!r}: {yk} must be integer class labels of shape (N,), "
                f"got {labels.dtype} {labels.shape}; {_FIX_NPZ}")
        if len(labels) != len(images) or len(images) == 0:
            raise DataCorruptError(
                f"CIFAR-10 file {str(path)!r}: {xk} and {yk} must hold the same number (at least 1) of images "
                f"and labels, got {len(images)} images and {len(labels)} labels; {_FIX_NPZ}")
        self.data = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        self.targets = torch.from_numpy(labels.astype(np.int64))
        _check_labels(self.targets, f"CIFAR-10 file {str(path)!r} ({yk})", _FIX_NPZ)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return self.data[i], int(self.targets[i])


def _cifar_batch_files():
    from torchvision.datasets import CIFAR10

    return [*CIFAR10.train_list, *CIFAR10.test_list, [CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]


def _npz_alternative(root: Path) -> str:
    npz = root / CIFAR10_NPZ
    return f", or delete the folder {CIFAR10_TORCHVISION_DIR}/ to use {str(npz)!r}, which is there" if npz.is_file() else ""


def _check_cifar_batches(root: Path) -> None:
    """Missing or empty batch files, named before torchvision's md5 check reports only
    "not found or corrupted"."""
    folder = root / CIFAR10_TORCHVISION_DIR
    names = [name for name, _ in _cifar_batch_files()]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        found = "it is empty" if len(missing) == len(names) and not any(folder.iterdir()) else f"missing: {', '.join(missing)}"
        raise DataNotFoundError(
            f"CIFAR-10 folder {str(folder)!r} is incomplete: expected torchvision's files {', '.join(names)} "
            f"({found}); rerun with --download to fill it{_npz_alternative(root)}")
    for n in names:
        if (folder / n).stat().st_size == 0:
            raise DataCorruptError(
                f"CIFAR-10 file {str(folder / n)!r} is corrupt: expected a pickled CIFAR-10 batch, found an empty "
                f"file; {_FIX_BATCHES}{_npz_alternative(root)}")


def _cifar_batches_error(root: Path, e: Exception, download: bool) -> DataError:
    """The clear error behind torchvision's failure: the first file whose md5 is not the original's."""
    import hashlib

    folder = root / CIFAR10_TORCHVISION_DIR
    for name, md5 in _cifar_batch_files():
        path = folder / name
        if not path.is_file():
            continue
        try:
            actual = hashlib.md5(path.read_bytes()).hexdigest()
        except OSError as read_error:
            return DataError(f"cannot read CIFAR-10 file {str(path)!r} ({_one_line(read_error)}); "
                             "check that it is a readable file")
        if actual != md5:
            return DataCorruptError(
                f"CIFAR-10 file {str(path)!r} is corrupt: expected torchvision's original {name} (md5 {md5}), "
                f"found {path.stat().st_size:,} bytes with md5 {actual}; {_FIX_BATCHES}{_npz_alternative(root)}")
    if download:
        return DataError(
            f"torchvision could not download or read CIFAR-10 into {str(folder)!r} ({_one_line(e)}); on a machine "
            f"without internet access, copy {CIFAR10_TORCHVISION_DIR}/ or {CIFAR10_NPZ} into {str(root)!r} and run "
            f"without --download")
    return DataCorruptError(
        f"torchvision could not read CIFAR-10 in {str(folder)!r} ({_one_line(e)}); delete the folder and rerun "
        f"with --download{_npz_alternative(root)}")


def _cifar_missing_hint(root: Path) -> str:
    if not root.is_dir():
        return f" The data folder {str(root)!r} does not exist."
    if (root / "cifar-10-python.tar.gz").is_file():
        return (f" Found cifar-10-python.tar.gz there: extract it (tar -xzf {root / 'cifar-10-python.tar.gz'} "
                f"-C {root}), or pass --download, which extracts it.")
    if (root / "data_batch_1").is_file():
        return f" {str(root)!r} looks like the {CIFAR10_TORCHVISION_DIR} folder itself: pass its parent folder {str(root.parent)!r}."
    return ""


def load_cifar10(data_dir: str | os.PathLike | None = None, *, train: bool, download: bool = False) -> InMemoryDataset:
    """CIFAR-10: torchvision's ``CIFAR10`` when ``<data_dir>/cifar-10-batches-py`` exists or
    ``download`` is set, else ``<data_dir>/cifar10.npz`` (JPEG-decoded copy, see :class:`CIFAR10Npz`)."""
    root = resolve_data_dir(data_dir)
    split = "train" if train else "test"
    if download or (root / CIFAR10_TORCHVISION_DIR).is_dir():
        from torchvision.datasets import CIFAR10

        if not download:  # downloading replaces missing and damaged files
            _check_cifar_batches(root)
        try:
            ds = CIFAR10(str(root), train=train, download=download)
        except Exception as e:  # noqa: BLE001 - whatever torchvision raises, the user needs the file and the fix
            raise _cifar_batches_error(root, e, download) from e
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
            + _cifar_missing_hint(root)
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
