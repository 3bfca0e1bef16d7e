"""edit-contrastive: trains on a folder of tiny photos, exports, and its ONNX codes equal PyTorch's."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hashtool.cli import main


def _photos(folder, n=7):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(n):
        w, h = (220, 160) if i == 0 else (96 + 8 * i, 80)  # the first one is large enough for quadrants
        y, x = np.mgrid[0:h, 0:w]
        f = rng.uniform(0.02, 0.2, size=3)
        img = np.stack([np.sin(x * f[0] + i), np.cos(y * f[1]), np.sin((x + y) * f[2])], -1)
        arr = ((img + 1) * 127.5 + rng.normal(0, 8, img.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"p{i}.{'jpg' if i % 2 else 'png'}")
    return folder


@pytest.mark.slow
def test_train_export_and_onnx_codes_equal_torch(tmp_path):
    from hashtool.encode import Encoder
    from hashtool.files.images import find_images, load_image
    from hashtool.train.checkpoint import load_checkpoint, checkpoint_preprocess

    data = _photos(tmp_path / "photos")
    model_path, onnx_path = tmp_path / "m.pt", tmp_path / "enc.onnx"
    hp = ["--hp", "views=3", "--hp", "steps=6", "--hp", "eval_every=3", "--hp", "image_size=64", "--hp", "hidden=32",
          "--hp", "quadrant_side=150", "--hp", "batch=8", "--hp", "val_share=0.3",
          "--hp", "saturation=0.5", "--hp", "blur=1.0", "--hp", "normalise=1",  # the input filter is in the graph
          "--hp", "edit_weights=grey=3,brighten=2"]  # the parity check runs
    r = CliRunner().invoke(main, ["train", "--method", "edit-contrastive", "--bits", "16", "--data", str(data), "-o", str(model_path), "--threads", "1", *hp])
    assert r.exit_code == 0, r.output
    assert "held-out edited views" in r.output
    model, ckpt = load_checkpoint(model_path)
    assert ckpt["meta"]["protocol"]["instances"] == 7 + 4  # quadrants of the one large photo
    r = CliRunner().invoke(main, ["export", str(model_path), str(onnx_path), "--parity-dir", str(data)])
    assert r.exit_code == 0, r.output
    enc = Encoder(onnx_path, threads=1)
    assert enc.method == "edit-contrastive" and enc.nbits == 16 and enc.preprocess.shape_hwc == (64, 64, 3)
    radius = ckpt["meta"]["copy_radius"]
    assert isinstance(radius, int) and 0 <= radius <= 16
    assert enc.metadata["copy_radius"] == str(radius)  # dups' default radius travels in the encoder
    pp = checkpoint_preprocess(ckpt)
    images = np.stack([load_image(p, pp) for p in find_images(data)])
    with torch.no_grad():
        bits = model.codes(torch.from_numpy(pp.normalize(images))).numpy()
    assert np.array_equal(enc.encode(images), np.packbits(bits, axis=1, bitorder="little"))


def test_refuses_a_dataset_name_and_engine_only_options(tmp_path):
    r = CliRunner().invoke(main, ["train", "--method", "edit-contrastive", "--bits", "16", "--data", "fashion-mnist", "-o", str(tmp_path / "m.pt")])
    assert r.exit_code != 0 and "trains on a folder of photos" in r.output
    r = CliRunner().invoke(main, ["train", "--method", "edit-contrastive", "--bits", "16", "--data", str(tmp_path), "-o", str(tmp_path / "m.pt"), "--epochs", "3"])
    assert r.exit_code != 0 and "--epochs does not apply" in r.output


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 3.0), st.integers(0, 2**31 - 1))
def test_input_filter_desaturates_and_blurs_as_written(saturation, blur, seed):
    from hashtool.train.methods.edit_contrastive import InputFilter

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 12, 13, generator=g) * 2 - 1
    f = InputFilter(saturation, blur)
    y = f(x)
    assert y.shape == x.shape
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    mixed = luma[:, None] + saturation * (x - luma[:, None])
    if f.radius == 0:
        torch.testing.assert_close(y, mixed)
    else:  # a normalised Gaussian: constant images stay constant, and each output is a weighted mean of its neighbours
        flat = torch.full_like(x, 0.3)
        torch.testing.assert_close(f(flat), flat)
        assert float(y.min()) >= float(mixed.min()) - 1e-5 and float(y.max()) <= float(mixed.max()) + 1e-5
        r = f.radius  # every pixel against the 2-D Gaussian of the docstring on the reflected image
        t = torch.arange(-r, r + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (t[:, None] ** 2 + t[None, :] ** 2) / blur**2)
        padded = torch.nn.functional.pad(mixed, (r, r, r, r), mode="reflect").double()
        want = torch.stack([torch.stack([(padded[:, :, i:i + 2 * r + 1, j:j + 2 * r + 1] * k).sum(dim=(2, 3)) / k.sum()
                                         for j in range(x.shape[3])], dim=-1) for i in range(x.shape[2])], dim=-2)
        torch.testing.assert_close(y.double(), want, atol=1e-5, rtol=0)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.3, 1.0), st.floats(-0.5, 0.5), st.integers(0, 2**31 - 1))
def test_input_filter_normalise_removes_uniform_brightness_and_contrast(gain, offset, seed):
    from hashtool.train.methods.edit_contrastive import NORMAL_EPS, NORMAL_SPREAD, InputFilter

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 9, 11, generator=g) * 0.9 - 0.45  # gain * x + offset stays inside [-1, 1]: no clipping
    f = InputFilter(1.0, 0.0, normalise=True)
    y = f(x).double()
    xs = x.double().numpy()
    for i in range(2):  # the formula, image by image
        spread = float(np.sqrt(((xs[i] - xs[i].mean()) ** 2).mean()))
        want = (xs[i] - xs[i].mean()) * NORMAL_SPREAD / (spread + NORMAL_EPS)
        np.testing.assert_allclose(y[i].numpy(), want, rtol=1e-4, atol=1e-5)
    edited = f(gain * x + offset).double()  # Brightness and Contrast edits are affine maps like this one
    torch.testing.assert_close(edited, y, rtol=0, atol=0.02)  # equal but for NORMAL_EPS's share of the spread
    flat = torch.full((1, 3, 4, 4), 0.7)
    assert torch.isfinite(f(flat)).all() and float(f(flat).abs().max()) < 1e-3


def test_edit_weights_steer_the_sampler_and_are_checked():
    from hashtool import edits
    from hashtool.errors import ArgumentError

    img = Image.new("RGB", (40, 30), (120, 80, 40))
    w = edits.parse_weights("grey=6, brighten=0")
    assert w == {"grey": 6.0, "brighten": 0.0}
    counts = {k: 0 for k in edits.EDITS}
    for s in range(400):
        _, picked = edits.random_edit(img, np.random.default_rng(s), max_edits=1, weights=w)
        counts[picked[0]] += 1
    assert counts["brighten"] == 0
    others = [c for k, c in counts.items() if k not in ("grey", "brighten")]
    assert counts["grey"] > 3 * max(others)  # expected 6/20 of 400 = 120 against 20 each
    for s in range(20):  # no weights: the stream the training used before weights existed
        a = edits.random_edit(img, np.random.default_rng(s))[1]
        b = edits.random_edit(img, np.random.default_rng(s), weights=None)[1]
        assert a == b
    for bad in ("grey", "grey=x", "grey=-1", "nosuch=2", "grey=inf"):
        with pytest.raises(ArgumentError, match="edit weight"):
            edits.parse_weights(bad)
    with pytest.raises(ArgumentError, match="at least one"):
        edits.random_edit(img, np.random.default_rng(0), weights={k: 0.0 for k in edits.EDITS})


# -- the streamed feature pass and bounded model selection --------------------------------------------

ROW_DIM = 12


class _RowSession:
    """A cheap stand-in for the backbone's onnxruntime session: each view's features are the means of its 2 x 2
    blocks per channel, computed row by row (so the batching cannot change them); records the batch sizes."""

    def __init__(self):
        self.batches = []

    def run(self, names, feed):
        x = feed["x"]
        self.batches.append(len(x))
        rows = [r.reshape(r.shape[0], 2, r.shape[1] // 2, 2, r.shape[2] // 2).mean(axis=(2, 4)).ravel() for r in x]
        return [np.asarray(rows, dtype=np.float32).reshape(len(x), ROW_DIM)]


def _mixed_folder(folder, n=9, corrupt_at=4, big=(1, 5, 6)):
    """``n`` small photos named in walk order; those in ``big`` give quadrants (220 x 160 with quadrant_side 150);
    file ``corrupt_at`` is not an image."""
    rng = np.random.default_rng(1)
    folder.mkdir()
    for i in range(n):
        path = folder / f"p{i:02d}.{'jpg' if i % 2 else 'png'}"
        if i == corrupt_at:
            path.write_bytes(b"not an image at all" * 20)
            continue
        w, h = (220, 160) if i in big else (90 + 7 * (i % 10), 70 + 3 * (i % 10))
        arr = rng.integers(0, 256, size=(h // 10 + 1, w // 10 + 1, 3), dtype=np.uint8)
        Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR).save(path)
    return folder


def _stream_setup(views=3, size=32):
    from hashtool.preprocess import Preprocess
    from hashtool.train.methods.edit_contrastive import HPARAMS, MEAN, STD

    hp = {**HPARAMS, "views": views, "work_side": 64, "quadrant_side": 150, "max_edits": 2, "edit_weights": ""}
    return hp, Preprocess(size, size, "RGB", "trim-stretch", MEAN, STD)


@pytest.mark.parametrize("chunk, batch", [(1, 5), (2, 64), (3, 1), (100, 5)])
def test_streamed_features_equal_all_at_once(tmp_path, capsys, chunk, batch):
    import naive
    from hashtool.files.images import find_images
    from hashtool.train.methods.edit_contrastive import stream_features

    files = find_images(_mixed_folder(tmp_path / "photos"))
    hp, pp = _stream_setup()
    sess = _RowSession()
    fp = stream_features(files, sess, ROW_DIM, pp, hp, seed=7, threads=2, chunk_files=chunk, batch=batch)
    want, owner, kept = naive.edit_contrastive_features(files, _RowSession(), pp, 3, 64, 150, 7, 2)
    assert fp.feats.dtype == np.float16 and fp.feats.shape == want.shape == (8 + 3 * 4, 3, ROW_DIM)
    assert np.array_equal(fp.feats, want)
    assert np.array_equal(fp.owner, owner) and fp.files == kept and len(kept) == 8
    assert fp.skipped == 1
    err = capsys.readouterr().err
    assert f"skipped {files[4]}: not an image" in err and "9 image files -> 21 instances by their headers" in err  # the corrupt one counts 1
    assert "features: 9/9 files, 20 instances, 60 views" in err  # the last progress line
    # the session saw whole batches of the global view order, whatever the chunks
    total = len(want) * 3
    assert sess.batches == [batch] * (total // batch) + ([total % batch] if total % batch else [])


def test_streamed_pass_grows_past_a_short_header_count(tmp_path):
    from unittest import mock

    import naive
    from hashtool.files.images import find_images
    from hashtool.train.methods import edit_contrastive as ec

    files = find_images(_mixed_folder(tmp_path / "photos"))
    hp, pp = _stream_setup()
    with mock.patch.object(ec, "header_instances", lambda path, side: 0):  # as if every file changed after its header was read
        fp = ec.stream_features(files, _RowSession(), ROW_DIM, pp, hp, seed=7, threads=1, quiet=True, chunk_files=2, batch=4)
    want, owner, kept = naive.edit_contrastive_features(files, _RowSession(), pp, 3, 64, 150, 7, 2)
    assert np.array_equal(fp.feats, want) and np.array_equal(fp.owner, owner) and fp.files == kept


@pytest.mark.slow
def test_streamed_features_equal_all_at_once_through_the_real_backbone(tmp_path):
    import naive
    from hashtool.edits import parse_weights
    from hashtool.files.images import find_images
    from hashtool.train.backbone import backbone_session
    from hashtool.train.methods.edit_contrastive import EditContrastiveConfig, EditContrastiveModel, stream_features

    files = find_images(_mixed_folder(tmp_path / "photos"))
    hp, pp = _stream_setup(views=4, size=64)
    hp["edit_weights"] = "grey=3,mirror=2"
    model = EditContrastiveModel(EditContrastiveConfig(bits=16, height=64, width=64, saturation=0.5, blur=1.0))
    model.backbone.load_pretrained()
    sess = backbone_session(torch.nn.Sequential(model.filter, model.backbone), pp, threads=1)
    fp = stream_features(files, sess, model.backbone.dim, pp, hp, seed=3, threads=2, quiet=True, chunk_files=2)
    want, owner, kept = naive.edit_contrastive_features(files, sess, pp, 4, 64, 150, 3, 2, parse_weights("grey=3,mirror=2"))
    assert fp.feats.shape == want.shape == (20, 4, 1280) and np.array_equal(fp.feats, want)  # 80 views: batches of 64 + 16 against one of 80
    assert np.array_equal(fp.owner, owner) and fp.files == kept


def test_streamed_pass_is_quiet_when_asked(tmp_path, capsys):
    from hashtool.files.images import find_images
    from hashtool.train.methods.edit_contrastive import stream_features

    files = find_images(_mixed_folder(tmp_path / "photos", n=5, big=()))
    hp, pp = _stream_setup(views=2)
    fp = stream_features(files, _RowSession(), ROW_DIM, pp, hp, seed=0, threads=1, quiet=True, chunk_files=2)
    assert len(fp.feats) == 4 and capsys.readouterr().err == ""


def test_streamed_pass_does_not_hold_every_view(tmp_path):
    import tracemalloc

    from hashtool.files.images import find_images
    from hashtool.train.methods.edit_contrastive import stream_features

    files = find_images(_mixed_folder(tmp_path / "photos", n=24, corrupt_at=-1, big=()))
    hp, pp = _stream_setup(views=4, size=224)
    stream_features(files[:2], _RowSession(), ROW_DIM, pp, hp, seed=0, threads=1, quiet=True)  # first-call imports

    def peak(chunk):  # numpy's arrays are traced; about 1 MiB is the reader's and the fonts' (any folder size)
        tracemalloc.start()
        try:
            fp = stream_features(files, _RowSession(), ROW_DIM, pp, hp, seed=0, threads=1, quiet=True, chunk_files=chunk, batch=2)
            return fp, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    fp, streamed = peak(1)
    every_view = len(fp.feats) * 4 * 224 * 224 * 3  # what a pass holding all views at once needs (14.5 MB)
    _, all_at_once = peak(len(files))  # one chunk of every file: such a pass, which the measure must see
    assert all_at_once >= every_view
    assert streamed < every_view / 4, (streamed, every_view)  # about 1 MiB + two chunks of 4 views (1.2 MB)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_blocked_copy_hits_equal_the_whole_matrix(data):
    import naive
    from hashtool.train.methods.edit_contrastive import copy_hits

    nbytes = data.draw(st.sampled_from([1, 2]))
    n = data.draw(st.integers(1, 12))
    nq = data.draw(st.integers(0, 15))
    code = st.integers(0, 3)  # few distinct values: many ties
    db = np.asarray(data.draw(st.lists(st.lists(code, min_size=nbytes, max_size=nbytes), min_size=n, max_size=n)), dtype=np.uint8)
    q = np.asarray(data.draw(st.lists(st.lists(code, min_size=nbytes, max_size=nbytes), min_size=nq, max_size=nq)), dtype=np.uint8).reshape(nq, nbytes)
    target = np.asarray(data.draw(st.lists(st.integers(0, n - 1), min_size=nq, max_size=nq)), dtype=np.int64)
    owner = np.asarray(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.int64)
    block = data.draw(st.integers(1, 40))
    got = copy_hits(q, target, db, owner, block_entries=block)
    assert np.array_equal(got, naive.copy_top1_hits(q, target, db, owner))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(4, 14), st.integers(2, 5), st.integers(1, 7))
def test_copy_top1_and_radius_equal_their_twins(seed, n, views, code_block):
    from unittest import mock

    import naive
    from hashtool.train.methods import edit_contrastive as ec

    rng = np.random.default_rng(seed)
    dim, bits = 6, 8
    head = ec.HashHead(dim, 0, bits)
    w = rng.integers(-3, 4, size=(bits, dim)).astype(np.float32)  # integers: every sum is exact in any order
    with torch.no_grad():
        head.mlp[0].weight.copy_(torch.from_numpy(w))
        head.mlp[0].bias.zero_()
    feats_np = rng.integers(-4, 5, size=(n, views, dim)).astype(np.float16)
    owner = rng.integers(0, max(2, n // 2), size=n)
    val_idx = np.flatnonzero(rng.random(n) < 0.5)
    if not len(val_idx):
        val_idx = np.array([0])

    def codes(x):  # the head's codes by formula
        return naive.pack_bits(naive.binarize_values(np.asarray(x, np.float64) @ w.T.astype(np.float64), "sign"))

    db = codes(feats_np[:, 0])
    q = codes(feats_np[val_idx, 1:].reshape(-1, dim))
    want_top1 = float(naive.copy_top1_hits(q, np.repeat(val_idx, views - 1), db, owner).mean())
    d = [int(naive.hamming_matrix(q[i : i + 1], db[t : t + 1])[0, 0]) for i, t in enumerate(np.repeat(val_idx, views - 1))]
    want_radius = sorted(d)[int(np.ceil(0.95 * len(d))) - 1]
    feats = torch.from_numpy(feats_np)
    with mock.patch.object(ec, "CODE_BLOCK", code_block):
        assert ec.copy_top1(head, feats, val_idx, owner, block_entries=code_block) == want_top1
        assert ec.copy_radius(head, feats, val_idx) == want_radius


def test_selection_sample_caps_the_held_out_set():
    from hashtool.train.methods.edit_contrastive import selection_sample

    small = np.array([3, 8, 9])
    assert np.array_equal(selection_sample(small, 0, cap=3), small)
    big = np.arange(10, 1010, 2)
    a, b = selection_sample(big, 5, cap=40), selection_sample(big, 5, cap=40)
    assert np.array_equal(a, b) and len(a) == 40 and len(np.unique(a)) == 40
    assert np.all(np.diff(a) > 0) and np.isin(a, big).all()
    assert not np.array_equal(a, selection_sample(big, 6, cap=40))


def test_feature_stats_equal_numpy_over_every_view():
    from hashtool.train.methods.edit_contrastive import feature_stats

    rng = np.random.default_rng(3)
    feats = rng.normal(2.0, 3.0, size=(11, 4, 5)).astype(np.float16)
    idx = np.array([0, 2, 3, 7, 10])
    mean, std = feature_stats(feats, idx, block=2)
    flat = feats[idx].reshape(-1, 5).astype(np.float64)
    np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, flat.std(axis=0, ddof=1), rtol=1e-6)


def test_header_instances_reads_headers_only_and_never_opens_a_pipe(tmp_path):
    import os

    from hashtool.train.methods.edit_contrastive import header_instances

    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    Image.new("RGB", (300, 120)).save(tmp_path / "wide.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # turned a quarter: the short side stays the short side
    Image.new("RGB", (120, 300)).save(tmp_path / "turned.jpg", exif=exif)
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    os.mkfifo(tmp_path / "pipe.png")  # no writer: opening it for reading without O_NONBLOCK would hang
    got = {p: header_instances(tmp_path / p, 150) for p in ("big.png", "wide.jpg", "turned.jpg", "junk.png", "pipe.png", "missing.png")}
    assert got == {"big.png": 5, "wide.jpg": 1, "turned.jpg": 1, "junk.png": 1, "pipe.png": 1, "missing.png": 1}
    assert header_instances(tmp_path / "big.png", 201) == 1 and header_instances(tmp_path / "big.png", 200) == 5
