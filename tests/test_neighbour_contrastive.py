"""neighbour-contrastive: exact blocked kNN, neighbour pairs, the input adapter, training on a tiny dataset with the
real backbone, export with ONNX codes equal to PyTorch's, and the CLI's dispatch by the kind of data a method takes."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

from click.testing import CliRunner  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import naive  # noqa: E402
from hashtool.cli import main  # noqa: E402
from hashtool.train.methods import get_method  # noqa: E402
from hashtool.train.methods.neighbour_contrastive import InputAdapter, knn, neighbour_pairs  # noqa: E402
from test_train_supervised import toy_idx_folder  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 24).flatmap(lambda n: st.tuples(
    hnp.arrays(np.int8, (n, 3), elements=st.integers(-2, 2)),  # small integers: exact dot products, many ties
    st.integers(1, n - 1), st.integers(1, 4 * n))))
def test_blocked_knn_equals_the_naive_twin_ties_to_the_lower_index(case):
    x, k, block = case
    got = knn(torch.from_numpy(x.astype(np.float32)), k, block_entries=block)
    assert np.array_equal(got.numpy(), naive.feature_neighbours(x, k))


def test_knn_refuses_more_neighbours_than_images():
    from hashtool.errors import ArgumentError

    with pytest.raises(ArgumentError, match="neighbours=4"):
        knn(torch.zeros(4, 2), 4)


def test_neighbour_pairs_draw_each_positive_from_its_anchors_neighbours():
    rng = np.random.default_rng(0)
    table = torch.from_numpy(rng.integers(0, 50, (50, 4)))
    a, p = neighbour_pairs(table, 4000, torch.Generator().manual_seed(1))
    assert a.shape == p.shape == (4000,) and a.dtype == p.dtype == torch.int64
    assert all(int(pi) in table[int(ai)].tolist() for ai, pi in zip(a, p))
    assert len(set(a.tolist())) == 50  # anchors cover the set
    slot = (table[a] == p[:, None]).float().argmax(1)  # which of the 4 neighbours (the first match)
    counts = np.bincount(slot.numpy(), minlength=4)
    assert counts.min() > 0.15 * 4000  # every slot is drawn
    b, q = neighbour_pairs(table, 4000, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.equal(p, q)  # seeded


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([1, 3]), st.integers(0, 2**31 - 1), st.floats(0.1, 0.9), st.floats(0.1, 2.0))
def test_adapter_undoes_the_normalisation_maps_to_minus_one_one_and_copies_grey(channels, seed, mean, std):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (2, channels, 5, 6)).astype(np.float64)
    means, stds = tuple(mean + 0.01 * c for c in range(channels)), tuple(std + 0.1 * c for c in range(channels))
    x = (pixels / 255 - np.array(means)[None, :, None, None]) / np.array(stds)[None, :, None, None]
    same = InputAdapter(channels, 5, 6, 5, means, stds)  # 5 x 6 -> 5 x 5: resized
    keep = InputAdapter(channels, 5, 5, 5, means, stds)  # already the size: not resized
    want = pixels / 127.5 - 1  # the hand formula: pixel / 255 mapped to [-1, 1]
    out = keep(torch.from_numpy(x[..., :5]).float()).numpy()
    assert out.shape == (2, 3, 5, 5)
    np.testing.assert_allclose(out, np.broadcast_to(want[..., :5], (2, channels, 5, 5)) if channels == 3 else np.repeat(want[..., :5], 3, axis=1), atol=1e-5)
    resized = same(torch.from_numpy(x).float())
    expect = torch.nn.functional.interpolate(torch.from_numpy(want).float(), size=(5, 5), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resized, expect.expand(-1, 3, -1, -1), atol=1e-5, rtol=0)


TINY_HP = ["--hp", "image_size=32", "--hp", "steps=6", "--hp", "batch=16", "--hp", "neighbours=3", "--hp", "knn_dims=8"]


@pytest.mark.slow
def test_trains_on_a_tiny_dataset_stores_its_evaluation_exports_and_onnx_codes_equal_torch(tmp_path):
    from hashtool.datasets import load_dataset, make_splits
    from hashtool.encode import Encoder
    from hashtool.train.checkpoint import checkpoint_preprocess, load_checkpoint
    from hashtool.train.data import encode_packed
    from hashtool.train.evaluation import evaluate_checkpoint

    data = toy_idx_folder(tmp_path / "toy")
    out, onnx_path = tmp_path / "m.pt", tmp_path / "enc.onnx"
    r = CliRunner().invoke(main, ["train", "--method", "neighbour-contrastive", "--bits", "16", "--data", str(data), "-o", str(out),
                                  "--threads", "1", "--queries", "20", "--val", "16", "--json", *TINY_HP])
    assert r.exit_code == 0, r.output
    import json

    res = json.loads(r.stdout.strip().splitlines()[-1])
    model, ckpt = load_checkpoint(out)
    meta = ckpt["meta"]
    assert meta["complete"] and meta["protocol"]["train"] == 144 and meta["val_map"] is not None
    assert meta["metrics"]["map"] == res["metrics"]["map"]  # the evaluation is stored in the model
    # The stored evaluation (onnxruntime features, the head in torch) equals the engine's evaluation of the checkpoint.
    splits = make_splits(load_dataset(str(data)), n_query=20, n_val=16, seed=0)
    assert evaluate_checkpoint(out, splits)["map"] == pytest.approx(res["metrics"]["map"], abs=0.02)
    r = CliRunner().invoke(main, ["export", str(out), str(onnx_path)])
    assert r.exit_code == 0, r.output
    enc = Encoder(onnx_path, threads=1)
    assert enc.method == "neighbour-contrastive" and enc.nbits == 16 and enc.preprocess.shape_hwc == (28, 28, 1)
    q, _ = splits.part("query")
    assert np.array_equal(enc.encode(q), encode_packed(model, q, checkpoint_preprocess(ckpt)))
    # hashtool eval's path (the method's encoder: onnxruntime features, the head in torch) gives the model's codes.
    fast = get_method("neighbour-contrastive").encoder(model, checkpoint_preprocess(ckpt), 1)
    d, _ = splits.part("database")
    assert np.array_equal(fast(q), encode_packed(model, q, checkpoint_preprocess(ckpt)))
    assert np.mean(fast(d) != encode_packed(model, d, checkpoint_preprocess(ckpt))) < 0.01


def test_dispatch_by_the_kind_of_data_each_method_takes(tmp_path):
    from PIL import Image

    # a folder-only method refuses a dataset name
    r = CliRunner().invoke(main, ["train", "--method", "edit-contrastive", "--bits", "16", "--data", "fashion-mnist", "-o", str(tmp_path / "a.pt")])
    assert r.exit_code != 0 and "trains on a folder of photos" in r.output
    # a dataset method refuses a folder of photos without labels (nothing to evaluate), before any training
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(photos / f"p{i}.png")
    r = CliRunner().invoke(main, ["train", "--method", "neighbour-contrastive", "--bits", "16", "--data", str(photos), "-o", str(tmp_path / "b.pt")])
    assert r.exit_code != 0 and "no labels" in r.output and "--no-eval" in r.output and "edit-contrastive" in r.output
    assert not (tmp_path / "b.pt").exists()
    # and the engine's options that its own procedure does not have
    r = CliRunner().invoke(main, ["train", "--method", "neighbour-contrastive", "--bits", "16", "--data", "mnist-5k", "-o", str(tmp_path / "c.pt"),
                                  "--epochs", "3"])
    assert r.exit_code != 0 and "--epochs does not apply" in r.output


def test_list_methods_shows_it_as_unsupervised():
    r = CliRunner().invoke(main, ["train", "--list-methods"])
    line = next(ln for ln in r.output.splitlines() if ln.startswith("neighbour-contrastive\t"))
    assert line.split("\t")[1] == "unsupervised"
