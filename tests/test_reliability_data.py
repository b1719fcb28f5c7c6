"""Reliability battery, data loading (#12): damaged, empty, compressed or misplaced MNIST and
CIFAR-10 files get an error naming the file, what was expected and the fix; valid small copies
still load with the right shapes and labels.

Every data set here is written into a temporary folder: the shared real data is only read.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import tempfile
from pathlib import Path
from unittest import mock
from urllib.error import URLError

import numpy as np
import pytest
import torch
from _battery import Battery, raises

from train import _data
from train._errors import UserError

BATTERY = Battery("data")
REAL = Path(__file__).resolve().parents[2] / "shared" / "data"
RAW = ("MNIST", "raw")


def clear(fn, exc, *fragments):
    """``raises`` plus what every data error owes the CLI: a UserError on one line, with a fix."""
    e = raises(fn, exc, *fragments)
    assert isinstance(e, UserError), type(e).__mro__
    assert "\n" not in str(e), str(e)
    assert "download=True" not in str(e), str(e)
    return e


# --- MNIST fixtures -------------------------------------------------------------------------


def idx_bytes(a: np.ndarray) -> bytes:
    """The IDX format MNIST ships in: magic (0, 0, 0x08 = uint8, ndim), big-endian dims, data."""
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return head + a.astype(np.uint8).tobytes()


def fake_mnist(root: Path, n_train: int = 30, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    raw = root.joinpath(*RAW)
    raw.mkdir(parents=True)
    for name, a in arrays.items():
        (raw / name).write_bytes(idx_bytes(a))
    return arrays


def mnist_case(mutate, exc, *fragments, train=True, download=False):
    """A valid fake MNIST, changed by ``mutate(raw_folder)``, must fail with ``exc`` naming ``fragments``."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fake_mnist(root)
        mutate(root.joinpath(*RAW))
        return clear(lambda: _data.load("mnist", root, train=train, download=download), exc, *fragments)


def truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


@BATTERY.error
def mnist_empty_image_file():
    mnist_case(lambda raw: (raw / "train-images-idx3-ubyte").write_bytes(b""), _data.DataCorruptError,
               "MNIST/raw/train-images-idx3-ubyte", "empty file", "47,040,016 bytes", "delete it and rerun with --download")


@BATTERY.error
def mnist_empty_label_file():
    # torchvision: "invalid literal for int() with base 16"
    mnist_case(lambda raw: (raw / "t10k-labels-idx1-ubyte").write_bytes(b""), _data.DataCorruptError,
               "MNIST/raw/t10k-labels-idx1-ubyte", "empty file", "IDX label file", "--download", train=False)


@BATTERY.error
def mnist_truncated_pixels():
    # torchvision: "shape '[30, 28, 28]' is invalid for input of size ..."
    e = mnist_case(lambda raw: truncate(raw / "train-images-idx3-ubyte", 16 + 784 * 12 + 100), _data.DataCorruptError,
                   "train-images-idx3-ubyte", "truncated", "30 images need 23,536", "--download")
    assert f"{16 + 784 * 12 + 100:,} bytes" in str(e)


@BATTERY.error
def mnist_truncated_header():
    mnist_case(lambda raw: truncate(raw / "train-labels-idx1-ubyte", 5), _data.DataCorruptError,
               "train-labels-idx1-ubyte", "only 5 bytes", "8-byte header", "--download")


@BATTERY.error
def mnist_file_too_long():
    def grow(raw):
        with open(raw / "t10k-images-idx3-ubyte", "ab") as f:
            f.write(b"\0" * 7)
    mnist_case(grow, _data.DataCorruptError, "t10k-images-idx3-ubyte", "7 bytes too long", "--download", train=False)


@BATTERY.error
def mnist_label_file_in_image_slot():
    def swap(raw):
        (raw / "train-images-idx3-ubyte").write_bytes((raw / "train-labels-idx1-ubyte").read_bytes())
    mnist_case(swap, _data.DataCorruptError, "train-images-idx3-ubyte", "magic number 0x00000801",
               "that of an IDX label file", "magic 0x00000803")


@BATTERY.error
def mnist_not_an_idx_file():
    mnist_case(lambda raw: (raw / "t10k-images-idx3-ubyte").write_text("<html>404 Not Found</html>"),
               _data.DataCorruptError, "t10k-images-idx3-ubyte", "not an IDX file", "--download")


@BATTERY.error
def mnist_gzip_content_under_raw_name():
    def compress(raw):
        p = raw / "train-labels-idx1-ubyte"
        p.write_bytes(gzip.compress(p.read_bytes()))
    mnist_case(compress, _data.DataCorruptError, "train-labels-idx1-ubyte", "gzip-compressed", "gunzip")


@BATTERY.error
def mnist_only_gz_files():
    def to_gz(raw):
        for p in list(raw.iterdir()):
            (raw / f"{p.name}.gz").write_bytes(gzip.compress(p.read_bytes()))
            p.unlink()
    mnist_case(to_gz, _data.DataNotFoundError, "train-images-idx3-ubyte.gz", "gunzip -k", "MNIST/raw")


@BATTERY.error
def mnist_wrong_image_size():
    mnist_case(lambda raw: (raw / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((30, 32, 32)))),
               _data.DataCorruptError, "train-images-idx3-ubyte", "32x32 pixels", "N x 28 x 28")


@BATTERY.error
def mnist_image_and_label_counts_disagree():
    mnist_case(lambda raw: (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(19))),
               _data.DataCorruptError, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "20 images but 19 labels",
               "delete both", train=False)


@BATTERY.error
def mnist_label_out_of_range():
    labels = np.zeros(30)
    labels[17] = 200
    mnist_case(lambda raw: (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels)),
               _data.DataCorruptError, "train-labels-idx1-ubyte", "labels 0-9", "found 200 at index 17", "--download")


@BATTERY.error
def mnist_missing_test_file_reported_when_loading_train():
    e = mnist_case(lambda raw: (raw / "t10k-labels-idx1-ubyte").unlink(), _data.DataNotFoundError,
                   "missing: t10k-labels-idx1-ubyte", "--data-dir", "--download")
    assert isinstance(e, FileNotFoundError)


@BATTERY.error
def mnist_files_directly_in_data_dir():
    def flatten(raw):
        for p in list(raw.iterdir()):
            p.rename(raw.parent.parent / p.name)
    mnist_case(flatten, _data.DataNotFoundError, "directly in", "move them into")


@BATTERY.error
def mnist_damaged_file_caught_even_when_downloading():
    # torchvision's download keeps files that exist, so it would not repair this one
    mnist_case(lambda raw: truncate(raw / "train-images-idx3-ubyte", 1000), _data.DataCorruptError,
               "train-images-idx3-ubyte", "truncated", "delete it and rerun with --download", download=True)


@BATTERY.error
def mnist_torchvision_failure_is_wrapped():
    with mock.patch("torchvision.datasets.mnist.read_image_file", side_effect=RuntimeError("boom\nsecond line")):
        mnist_case(lambda raw: None, _data.DataCorruptError, "torchvision could not read MNIST",
                   "MNIST/raw", "RuntimeError: boom second line", "--download")


@BATTERY.error
def mnist_failed_download_is_one_line():
    # torchvision tries each mirror, then raises a RuntimeError of several lines
    offline = mock.patch("torchvision.datasets.mnist.download_and_extract_archive",
                         side_effect=URLError("no route to host"))
    with tempfile.TemporaryDirectory() as tmp, offline:
        clear(lambda: _data.load("mnist", tmp, train=True, download=True), _data.DataError,
              "could not download or read MNIST", "MNIST/raw", "no route to host")


@BATTERY.correct
def mnist_small_valid_copy_loads_exactly():
    with tempfile.TemporaryDirectory() as tmp:
        arrays = fake_mnist(Path(tmp), n_train=30, n_test=20)
        for train, prefix in ((True, "train"), (False, "t10k")):
            ds = _data.load("mnist", tmp, train=train, normalize=False)
            assert ds.x.shape == (len(arrays[f"{prefix}-labels-idx1-ubyte"]), 1, 28, 28)
            assert torch.equal(ds.y, torch.from_numpy(arrays[f"{prefix}-labels-idx1-ubyte"].astype(np.int64)))
            expect = torch.from_numpy(arrays[f"{prefix}-images-idx3-ubyte"].astype(np.float32) / 255.0)
            torch.testing.assert_close(ds.x[:, 0], expect, atol=1e-6, rtol=0)


@BATTERY.correct
def mnist_prefix_of_real_files_matches_originals():
    real = REAL.joinpath(*RAW)
    if not (real / "t10k-images-idx3-ubyte").is_file():
        pytest.skip(f"real MNIST not in {real}")
    n = 64
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp).joinpath(*RAW)
        raw.mkdir(parents=True)
        for name in _data.MNIST_RAW_FILES:
            images = "images" in name
            header = 16 if images else 8
            with open(real / name, "rb") as f:
                data = f.read(header + n * (784 if images else 1))
            (raw / name).write_bytes(data[:4] + n.to_bytes(4, "big") + data[8:])
        small = _data.load("mnist", tmp, train=False)
        full = _data.load("mnist", REAL, train=False)
        assert torch.equal(small.x, full.x[:n]) and torch.equal(small.y, full.y[:n])


# --- cifar10.npz ----------------------------------------------------------------------------


def fake_npz_arrays(n_train: int = 12, n_test: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test).astype(np.uint8),
    }


def npz_case(write, exc, *fragments, train=False):
    """``write(path)`` makes ``<tmp>/cifar10.npz``; loading must fail with ``exc`` naming ``fragments``."""
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp) / _data.CIFAR10_NPZ)
        return clear(lambda: _data.load("cifar10", tmp, train=train), exc, "cifar10.npz", *fragments)


def savez(**changes):
    arrays = {**fake_npz_arrays(), **changes}
    return lambda path: np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


@BATTERY.error
def npz_truncated():
    # np.load: BadZipFile "File is not a zip file", naming no file
    def write(path):
        savez()(path)
        truncate(path, path.stat().st_size // 2)
    npz_case(write, _data.DataCorruptError, "damaged or truncated zip archive", "170,461,591 bytes", "--download")


@BATTERY.error
def npz_empty():
    npz_case(lambda p: p.write_bytes(b""), _data.DataCorruptError, "empty file", "x_train", "copy cifar10.npz again")


@BATTERY.error
def npz_not_a_zip():
    # np.load falls back to unpickling, refused with allow_pickle=False
    npz_case(lambda p: p.write_bytes(pickle.dumps(fake_npz_arrays())), _data.DataCorruptError,
             "do not start like a zip archive", "--download")


@BATTERY.error
def npz_single_npy_array():
    npz_case(lambda p: np.save(open(p, "wb"), fake_npz_arrays()["x_test"]), _data.DataCorruptError,
             "single .npy array", "np.savez")


@BATTERY.error
def npz_damaged_member():
    def write(path):
        savez()(path)
        data = bytearray(path.read_bytes())
        at = data.index(b"x_test.npy") + 2000  # inside x_test's stored pixels
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))
    npz_case(write, _data.DataCorruptError, "array x_test that cannot be read", "crc", "copy cifar10.npz again", "rerun with --download to fetch")


@BATTERY.error
def npz_object_array():
    npz_case(savez(y_test=np.array([1, "two", 3.0, None, 5], dtype=object)), _data.DataCorruptError,
             "array y_test that cannot be read", "allow_pickle")


@BATTERY.error
def npz_missing_test_arrays():
    e = npz_case(savez(x_test=None, y_test=None), _data.DataCorruptError, "lacks key(s) x_test, y_test",
                 "found x_train, y_train", "--download")
    assert isinstance(e, ValueError)


@BATTERY.error
def npz_float_images():
    npz_case(savez(x_test=np.zeros((5, 32, 32, 3), np.float32)), _data.DataCorruptError,
             "x_test must be uint8 of shape (n, 32, 32, 3)", "float32 (5, 32, 32, 3)")


@BATTERY.error
def npz_channels_first():
    npz_case(savez(x_train=np.zeros((12, 3, 32, 32), np.uint8)), _data.DataCorruptError,
             "channels first", "(12, 3, 32, 32)", train=True)


@BATTERY.error
def npz_one_hot_labels():
    npz_case(savez(y_test=np.eye(10, dtype=np.uint8)[:5]), _data.DataCorruptError,
             "y_test must be integer class labels of shape (n,)", "(5, 10)")


@BATTERY.error
def npz_label_count_disagrees():
    npz_case(savez(y_train=np.zeros(11, np.uint8)), _data.DataCorruptError, "12 images and 11 labels", train=True)


@BATTERY.error
def npz_label_out_of_range():
    npz_case(savez(y_test=np.array([0, 1, 2, 3, 10], np.int64)), _data.DataCorruptError,
             "labels 0-9", "found 10 at index 4")


@BATTERY.correct
def npz_small_valid_copy_loads_and_keras_label_shape_is_accepted():
    arrays = fake_npz_arrays()
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / _data.CIFAR10_NPZ, **{**arrays, "y_train": arrays["y_train"][:, None]})
        for split in ("train", "test"):
            ds = _data.load("cifar10", tmp, train=split == "train")
            x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
            assert ds.x.shape == (len(y), 3, 32, 32) and ds.y.dtype == torch.int64
            assert ds.y.tolist() == y.tolist()
            back = ds.x * torch.tensor(_data.CIFAR10_STD).view(1, 3, 1, 1) + torch.tensor(_data.CIFAR10_MEAN).view(1, 3, 1, 1)
            torch.testing.assert_close(back, torch.from_numpy(x.transpose(0, 3, 1, 2) / 255.0).float(), atol=1e-5, rtol=0)


# --- cifar-10-batches-py --------------------------------------------------------------------


def fake_batches(root: Path, per_batch: int = 4) -> dict[str, bytes]:
    """torchvision's layout with tiny batches; returns each file's bytes."""
    from torchvision.datasets import CIFAR10

    folder = root / _data.CIFAR10_TORCHVISION_DIR
    folder.mkdir()
    rng = np.random.default_rng(1)
    files = {}
    for name, _ in [*CIFAR10.train_list, *CIFAR10.test_list]:
        entry = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, per_batch).tolist()}
        files[name] = pickle.dumps(entry)
    files["batches.meta"] = pickle.dumps({"label_names": [f"class{i}" for i in range(10)]})
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def md5s_of(files: dict[str, bytes]):
    """Patch torchvision's expected md5s to those of the fake files, so that they count as intact."""
    from torchvision.datasets import CIFAR10

    md5 = {k: hashlib.md5(v).hexdigest() for k, v in files.items()}
    return mock.patch.multiple(
        CIFAR10,
        train_list=[[n, md5[n]] for n, _ in CIFAR10.train_list],
        test_list=[[n, md5[n]] for n, _ in CIFAR10.test_list],
        meta={**CIFAR10.meta, "md5": md5["batches.meta"]},
    )


@BATTERY.error
def batches_empty_folder():
    # torchvision: "Dataset not found or corrupted. You can use download=True to download it"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / _data.CIFAR10_TORCHVISION_DIR).mkdir()
        np.savez(Path(tmp) / _data.CIFAR10_NPZ, **fake_npz_arrays())
        clear(lambda: _data.load("cifar10", tmp, train=True), _data.DataNotFoundError,
              "cifar-10-batches-py", "it is empty", "rerun with --download", "cifar10.npz', which is there")


@BATTERY.error
def batches_missing_test_batch():
    with tempfile.TemporaryDirectory() as tmp:
        fake_batches(Path(tmp))
        (Path(tmp) / _data.CIFAR10_TORCHVISION_DIR / "test_batch").unlink()
        clear(lambda: _data.load("cifar10", tmp, train=True), _data.DataNotFoundError,
              "missing: test_batch", "--download")


@BATTERY.error
def batches_empty_file():
    with tempfile.TemporaryDirectory() as tmp:
        fake_batches(Path(tmp))
        (Path(tmp) / _data.CIFAR10_TORCHVISION_DIR / "data_batch_2").write_bytes(b"")
        clear(lambda: _data.load("cifar10", tmp, train=False), _data.DataCorruptError,
              "cifar-10-batches-py/data_batch_2", "empty file", "--download")


@BATTERY.error
def batches_truncated_pickle_named_by_md5():
    with tempfile.TemporaryDirectory() as tmp:
        files = fake_batches(Path(tmp))
        with md5s_of(files):
            truncate(Path(tmp) / _data.CIFAR10_TORCHVISION_DIR / "data_batch_3", 100)
            clear(lambda: _data.load("cifar10", tmp, train=True), _data.DataCorruptError,
                  "cifar-10-batches-py/data_batch_3", "found 100 bytes with md5",
                  f"md5 {hashlib.md5(files['data_batch_3']).hexdigest()}", "delete it and rerun with --download")


@BATTERY.error
def batches_unreadable_despite_matching_md5():
    # the fallback: torchvision's own failure (here unpickling), wrapped
    with tempfile.TemporaryDirectory() as tmp:
        files = fake_batches(Path(tmp))
        files["test_batch"] = files["test_batch"][:50]
        (Path(tmp) / _data.CIFAR10_TORCHVISION_DIR / "test_batch").write_bytes(files["test_batch"])
        with md5s_of(files):
            clear(lambda: _data.load("cifar10", tmp, train=False), _data.DataCorruptError,
                  "torchvision could not read CIFAR-10", "cifar-10-batches-py", "delete the folder and rerun with --download")


@BATTERY.error
def cifar_archive_not_extracted():
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b")
        clear(lambda: _data.load("cifar10", tmp, train=True), _data.DataNotFoundError,
              "cifar-10-python.tar.gz", "tar -xzf", "--download")


@BATTERY.error
def cifar_failed_download_says_copy_the_files():
    offline = mock.patch("torchvision.datasets.cifar.download_and_extract_archive",
                         side_effect=URLError("no route to host"))
    with tempfile.TemporaryDirectory() as tmp, offline:
        clear(lambda: _data.load("cifar10", tmp, train=True, download=True), _data.DataError,
              "could not download or read CIFAR-10", "no route to host", "cifar10.npz", "without --download")


@BATTERY.correct
def batches_small_valid_copy_loads_through_torchvision():
    with tempfile.TemporaryDirectory() as tmp:
        files = fake_batches(Path(tmp), per_batch=4)
        with md5s_of(files):
            train = _data.load("cifar10", tmp, train=True)
            test = _data.load("cifar10", tmp, train=False)
        assert train.x.shape == (20, 3, 32, 32) and test.x.shape == (4, 3, 32, 32)
        entry = pickle.loads(files["test_batch"])
        assert test.y.tolist() == entry["labels"] and "torchvision" in test.description
        back = test.x * torch.tensor(_data.CIFAR10_STD).view(1, 3, 1, 1) + torch.tensor(_data.CIFAR10_MEAN).view(1, 3, 1, 1)
        expect = torch.from_numpy(entry["data"].reshape(-1, 3, 32, 32) / 255.0).float()
        torch.testing.assert_close(back, expect, atol=1e-5, rtol=0)


test_battery = BATTERY.test()
