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
        r = f.radius
        padded = torch.nn.functional.pad(mixed, (r, r, r, r), mode="reflect")
        k = f.kernel[0, 0]
        i, j = 5, 6
        want = (padded[:, :, i:i + 2 * r + 1, j:j + 2 * r + 1] * k).sum(dim=(2, 3))
        torch.testing.assert_close(y[:, :, i, j], want)


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
