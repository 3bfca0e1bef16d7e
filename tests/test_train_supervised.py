"""The supervised methods nin-latent and adalabel: their models, losses, semi-supervision and training.

Training runs on a tiny synthetic labeled dataset (three shapes at random places in noise) with tiny
networks (``--hp filters=4,8,8``) so the whole file takes seconds; the real quality is measured by
benchmarks/quality_supervised.py, never asserted here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import naive
from naive import adalabel_supervised_loss

from hashtool.datasets import Dataset, make_splits
from hashtool.errors import ArgumentError
from hashtool.train.checkpoint import load_checkpoint
from hashtool.train.data import encode_real, real_to_packed
from hashtool.train.engine import TrainConfig, train
from hashtool.train.methods import Batch, Context, get_method
from hashtool.train.methods.adalabel import (
    AdaLabel, AdaLabelConfig, _extra_labeled, adalabel_loss, adaptive_thresholds, codeword_similarities, pseudo_labels,
)
from hashtool.train.methods.nin_latent import NINLatent, NINLatentConfig
from hashtool.train.data import TrainData, parse_augment
from hashtool.preprocess import Preprocess

TINY = {"filters": "4,8,8"}


def toy_images(n: int, seed: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """28x28 grey images: class 0 a horizontal bar, 1 a vertical bar, 2 a filled square, in noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = rng.integers(0, 60, (n, 28, 28), dtype=np.int64)
    for i, c in enumerate(labels):
        r, k = rng.integers(4, 20, 2)
        if c == 0:
            x[i, r : r + 3, 2:26] += 190
        elif c == 1:
            x[i, 2:26, k : k + 3] += 190
        else:
            x[i, r : r + 8, k : k + 8] += 190
    return np.clip(x, 0, 255).astype(np.uint8)[..., None], labels.astype(np.int64)


def toy_idx_folder(folder):
    """A folder in the Fashion-MNIST file layout (train 160 and t10k 40 toy images) for the CLI's ``--data``."""
    from hashtool.datasets import write_idx

    folder.mkdir()
    for prefix, n, seed in (("train", 160, 3), ("t10k", 40, 4)):
        x, y = toy_images(n, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", x[..., 0])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y.astype(np.uint8))
    return folder


@pytest.fixture(scope="module")
def toy_splits():
    xtr, ytr = toy_images(480, 1)
    xte, yte = toy_images(120, 2)
    ds = Dataset("toy", xtr, ytr, xte, yte)
    return make_splits(ds, n_query=60, n_val=80, seed=0)


def _accuracy(model, splits) -> float:
    q, ql = splits.part("query")
    pre = Preprocess(height=28, width=28, color="L", mean=(0.5,), std=(0.5,))
    from hashtool.train.data import to_tensor

    with torch.no_grad():
        model.eval()
        pred = model.classify(to_tensor(q, pre)).argmax(1).numpy()
    return float((pred == ql).mean())


@pytest.mark.parametrize("method", ["nin-latent", "adalabel"])
def test_training_learns_the_classes_and_the_checkpoint_rebuilds_it(method, toy_splits, tmp_path):
    out = tmp_path / "m.pt"
    # 12 epochs: with the default centre term and warm-up, nin-latent's classifier head needed more than 6 on this
    # toy set (its codes reached val mAP 1.0 after 6, its classifier 72%)
    cfg = TrainConfig(method=method, bits=16, epochs=12, threads=1, quiet=True, batch_size=32, hparams=dict(TINY, lr=1e-2))
    model, meta = train(cfg, toy_splits, out)
    # num_classes=0 in the defaults is resolved from the labels (3 here, not a hard-coded 10).
    assert model.config.num_classes == 3
    assert meta["train_config"]["hparams"]["num_classes"] == 3
    assert _accuracy(model, toy_splits) >= 0.9
    assert meta["history"][-1]["val_map"] >= 0.8
    loaded, ckpt = load_checkpoint(out)
    assert ckpt["binarize"] == ("sigmoid" if method == "nin-latent" else "sign")
    x = torch.from_numpy(toy_splits.part("query")[0][:8, :, :, 0]).float()[:, None] / 127.5 - 1.0
    with torch.no_grad():
        assert torch.allclose(model.encode(x), loaded.encode(x), atol=1e-5)  # channels_last vs contiguous


def test_semi_supervised_adalabel_uses_the_unlabeled_images(toy_splits, tmp_path):
    # The augmentation pinned (the toy shapes sit anywhere): the default's changes must not move this test.
    cfg = TrainConfig(method="adalabel", bits=16, epochs=6, threads=1, quiet=True, labeled_fraction=0.1, batch_size=32,
                      augment="shift:2,hflip", hparams=dict(TINY, lr=1e-2, labeled_batch=16))
    model, meta = train(cfg, toy_splits, tmp_path / "semi.pt")
    last = meta["history"][-1]
    # Confident nearest-codeword pseudo-labels were found and trained on.
    assert last["u_kept"] > 0.3
    assert _accuracy(model, toy_splits) >= 0.8


def test_semi_supervised_adalabel_trains_under_bf16_autocast(toy_splits, tmp_path, monkeypatch):
    """``precision=bf16``: the losses under bfloat16 autocast, the weights (and so the checkpoint) in float32."""
    method, seen = get_method("adalabel"), []

    def loss(model, batch, ctx):  # record whether each training loss ran under bfloat16 autocast
        if ctx.training:
            seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return adalabel_loss(model, batch, ctx)

    monkeypatch.setattr(method, "loss", loss)
    cfg = TrainConfig(method="adalabel", bits=16, epochs=6, threads=1, quiet=True, labeled_fraction=0.1, batch_size=32,
                      augment="shift:2,hflip", hparams=dict(TINY, lr=1e-2, labeled_batch=16, precision="bf16"))
    model, meta = train(cfg, toy_splits, tmp_path / "bf16.pt")
    assert meta["train_config"]["phases"][0]["precision"] == "bf16" and seen and all(seen)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert meta["history"][-1]["u_kept"] > 0.3
    assert _accuracy(model, toy_splits) >= 0.8
    with pytest.raises(ArgumentError, match="precision"):
        train(TrainConfig(method="adalabel", bits=16, epochs=1, threads=1, quiet=True, hparams=dict(TINY, precision="fp8")),
              toy_splits, tmp_path / "x.pt")


def test_labeled_fraction_is_refused_by_nin_latent_and_labels_are_required(toy_splits, tmp_path):
    with pytest.raises(ArgumentError, match="labeled-fraction"):
        train(TrainConfig(method="nin-latent", bits=8, epochs=1, labeled_fraction=0.5, quiet=True, hparams=TINY), toy_splits, tmp_path / "x.pt")
    ds = toy_splits.dataset
    unlabeled = Dataset("unlabeled", ds.train_images, None)
    sp = make_splits(unlabeled, n_query=20, n_val=20)
    for method in ("nin-latent", "adalabel"):
        with pytest.raises(ArgumentError, match="needs labels"):
            train(TrainConfig(method=method, bits=8, epochs=1, quiet=True, hparams=TINY), sp, tmp_path / "y.pt")


@pytest.mark.parametrize("cls,cfg", [(NINLatent, NINLatentConfig), (AdaLabel, AdaLabelConfig)])
def test_encode_never_uses_the_classifier_or_the_codewords(cls, cfg):
    torch.manual_seed(0)
    model = cls(cfg(bits=24, filters=(4, 8, 8), num_classes=5)).eval()
    x = torch.randn(6, 1, 28, 28)
    before = model.encode(x)
    assert before.shape == (6, 24)
    lo, hi = (0.0, 1.0) if model.binarize == "sigmoid" else (-1.0, 1.0)
    assert float(before.detach().min()) >= lo and float(before.detach().max()) <= hi
    head = model.classifier if cls is NINLatent else None
    with torch.no_grad():
        if head is not None:
            head.weight.normal_()
            head.bias.normal_()
        else:
            model.codeword_logits.normal_()
    assert torch.equal(before, model.encode(x))
    # The class-side parameters receive no gradient from the code.
    model.encode(x).sum().backward()
    side = model.classifier.weight if cls is NINLatent else model.codeword_logits
    assert side.grad is None
    assert model.classify(x).shape == (6, 5)


@given(
    h=arrays(np.float32, (5, 8), elements=st.floats(-1, 1, width=32)),
    v=arrays(np.float32, (4, 8), elements=st.floats(-3, 3, width=32)),
    labels=arrays(np.int64, (5,), elements=st.integers(0, 3)),
    scale=st.sampled_from([1.0, 10.0]),
)
def test_codeword_loss_matches_naive(h, v, labels, scale):
    import torch.nn.functional as F

    th, tv = torch.from_numpy(h).double(), torch.from_numpy(v).double()
    ce = F.cross_entropy(codeword_similarities(th, tv, scale), torch.from_numpy(labels))
    quant = (th.abs() - 1).pow(2).mean()
    got = float(ce + 0.1 * quant)
    assert got == pytest.approx(adalabel_supervised_loss(h, v, labels, scale, 0.1), rel=1e-9, abs=1e-9)


def test_adalabel_loss_on_a_fully_labeled_batch_is_the_codeword_loss():
    torch.manual_seed(0)
    model = AdaLabel(AdaLabelConfig(bits=8, filters=(4, 8, 8), num_classes=3)).eval()
    x = torch.randn(7, 1, 28, 28)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    batch = Batch(images=x, clean=x, labels=labels, labeled=torch.ones(7, dtype=torch.bool), indices=torch.arange(7))
    hp = dict(get_method("adalabel").hparams)
    loss, logs = adalabel_loss(model, batch, Context(hparams=hp, training=False))
    with torch.no_grad():
        h = model.encode(x).numpy()
    want = adalabel_supervised_loss(h, model.codeword_logits.detach().numpy(), labels.numpy(), hp["scale"], hp["quant"])
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert "u_ce" not in logs


def test_extra_labeled_draws_only_labeled_images():
    n = 50
    images = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 1, 6, 6).contiguous()
    labeled = torch.zeros(n, dtype=torch.bool)
    labeled[[3, 17, 40]] = True
    labels = torch.where(labeled, torch.arange(n) % 3, torch.full((n,), -1))
    data = TrainData(images=images, labels=labels, labeled=labeled)
    torch.manual_seed(0)
    x, y = _extra_labeled(Context(data=data, training=True, augment=parse_augment("shift:2,hflip"), fill=torch.tensor([0.0])), 64)
    assert x.shape == (64, 1, 6, 6)
    # Every drawn image is one of the labeled ones (constant images survive flips, and their centre survives shifts).
    drawn = x[:, 0, 3, 3].long()
    assert set(drawn.tolist()) <= {3, 17, 40} and len(set(drawn.tolist())) > 1
    assert torch.equal(y, labels[drawn])
    assert (y >= 0).all()
    assert _extra_labeled(Context(data=data, training=False), 64) is None
    full = TrainData(images=images, labels=torch.arange(n) % 3, labeled=torch.ones(n, dtype=torch.bool))
    assert _extra_labeled(Context(data=full, training=True), 64) is None


def test_codes_follow_the_binarize_rule(toy_splits):
    torch.manual_seed(0)
    model = NINLatent(NINLatentConfig(bits=16, filters=(4, 8, 8), num_classes=3)).eval()
    pre = Preprocess(height=28, width=28, color="L", mean=(0.5,), std=(0.5,))
    imgs = toy_splits.part("query")[0][:10]
    real = encode_real(model, imgs, pre)
    bits = np.unpackbits(real_to_packed(real, "sigmoid"), axis=1, bitorder="little")
    assert np.array_equal(bits.astype(bool), real > 0.5)


def test_cli_trains_semi_supervised_adalabel(tmp_path):
    """``hashtool train --method adalabel --labeled-fraction F`` (the command lives with the train CLI)."""
    from click.testing import CliRunner

    from hashtool.cli import COMMANDS, main
    from hashtool.train.checkpoint import read_checkpoint

    if "train" not in COMMANDS:
        pytest.skip("the `hashtool train` command is not on this branch yet")
    folder = toy_idx_folder(tmp_path / "toy")
    out = tmp_path / "ada.pt"
    args = ["train", "-m", "adalabel", "-b", "16", "-d", str(folder), "-o", str(out), "--labeled-fraction", "0.25",
            "--epochs", "1", "--batch-size", "32", "--hp", "filters=4,8,8", "--threads", "1", "--json", "-q"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert 0.0 < res["metrics"]["map"] <= 1.0
    meta = read_checkpoint(out)["meta"]
    assert meta["train_config"]["labeled_fraction"] == 0.25
    assert "u_kept" in meta["history"][-1]
    r = CliRunner().invoke(main, [*args[:2], "nin-latent", *args[3:]])
    assert r.exit_code != 0 and "labeled-fraction" in r.output


# -- FixMatch: pseudo-labels from the weak view, only above the threshold -------------------------------------


def test_fixmatch_pseudo_labels_come_from_the_weak_view_and_only_confident_ones_count():
    torch.manual_seed(0)
    model = AdaLabel(AdaLabelConfig(bits=8, filters=(4, "P", 8), backbone="cnn", num_classes=3)).eval()
    n = 40
    weak = torch.randn(n, 1, 12, 12)
    with torch.no_grad():  # codewords at three images' codes: predictions vary and confidences spread over (1/3, 1)
        model.codeword_logits.copy_(20 * model.encode(weak[4:7]))
    # With strong="none" the strong view is the clean image itself: here the weak images in another order.
    clean = weak.clone()
    clean[4:] = weak[4:][torch.randperm(n - 4, generator=torch.Generator().manual_seed(1))]
    labeled = torch.zeros(n, dtype=torch.bool)
    labeled[:4] = True
    labels = torch.where(labeled, torch.arange(n) % 3, torch.full((n,), -1))
    batch = Batch(images=weak, clean=clean, labels=labels, labeled=labeled, indices=torch.arange(n))
    hp = dict(get_method("adalabel").hparams, strong="none", smoothing=0.0, labeled_batch=0)
    scale = hp["scale"]
    with torch.no_grad():
        p_weak = torch.softmax(model.similarities(model.encode(weak[4:]), scale), 1)
        p_strong = torch.softmax(model.similarities(model.encode(clean[4:]), scale), 1)
    conf, pseudo = p_weak.max(1)
    hp["threshold"] = float(conf.median())
    keep = conf >= hp["threshold"]
    # The test can tell the views apart: the strong view's own labels differ where the loss counts.
    assert 0 < int(keep.sum()) < len(keep) and bool((p_strong.argmax(1) != pseudo)[keep].any())
    _, logs = adalabel_loss(model, batch, Context(hparams=hp, training=True, progress=1.0))
    log_p = torch.log_softmax(model.similarities(model.encode(clean[4:]), scale), 1).detach()
    want = -(log_p[torch.arange(len(pseudo)), pseudo] * keep.float()).mean()
    assert logs["u_kept"] == pytest.approx(float(keep.float().mean()))
    assert logs["u_ce"] == pytest.approx(float(want), rel=1e-5)
    got_pseudo, got_keep = pseudo_labels(model, weak[4:], scale, hp["threshold"])
    assert torch.equal(got_pseudo, pseudo) and torch.equal(got_keep, keep)


@given(data=st.data())
def test_self_adaptive_thresholds_follow_the_running_means(data):
    classes = data.draw(st.integers(2, 5))
    ema = data.draw(st.sampled_from([0.0, 0.5, 0.9, 0.999]))
    sizes = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
    logits = [torch.tensor(data.draw(arrays(np.float64, (n, classes), elements=st.floats(-5, 5)))) for n in sizes]
    probs = [torch.softmax(x, 1).float() for x in logits]
    model = AdaLabel(AdaLabelConfig(bits=8, filters=(4, "P", 8), backbone="cnn", num_classes=classes))
    got = [adaptive_thresholds(model, p, ema).tolist() for p in probs]
    want = naive.adaptive_thresholds([p.double().tolist() for p in probs], ema)
    assert np.allclose(got, want, atol=1e-6)
    assert "conf_ema" not in model.state_dict()  # running state, not saved with the weights


def test_self_adaptive_thresholds_keep_what_reaches_its_class_threshold():
    torch.manual_seed(0)
    model = AdaLabel(AdaLabelConfig(bits=8, filters=(4, "P", 8), backbone="cnn", num_classes=3)).eval()
    weak = torch.randn(30, 1, 12, 12)
    with torch.no_grad():
        model.codeword_logits.copy_(20 * model.encode(weak[4:7]))
        p = torch.softmax(model.similarities(model.encode(weak), 10.0), 1)
    twin = AdaLabel(AdaLabelConfig(bits=8, filters=(4, "P", 8), backbone="cnn", num_classes=3))
    thresholds = adaptive_thresholds(twin, p, 0.5)
    conf, pseudo = p.max(1)
    want = conf >= thresholds[pseudo]
    got_pseudo, got_keep = pseudo_labels(model, weak, 10.0, threshold=2.0, ema=0.5)  # 2.0: the fixed one is unused
    assert 0 < int(want.sum()) < len(want)
    assert torch.equal(got_pseudo, pseudo) and torch.equal(got_keep, want)
    assert torch.equal(model.conf_ema, twin.conf_ema)


# -- presets ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["nin-latent", "adalabel"])
def test_preset_paper_resolves_the_paper_configuration(method, toy_splits, tmp_path):
    from hashtool.train.engine import resolve_settings
    from hashtool.train.methods.nin_latent import NINBackbone

    m = get_method(method)
    paper = m.presets["paper"]
    got = resolve_settings(m, TrainConfig(method=method, bits=16, preset="paper"))
    assert got.hparams == {**m.hparams, **paper["hparams"]}
    assert got.augment == paper["augment"]
    assert got.hparams["backbone"] == "nin" and m.hparams["backbone"] == "cnn"
    # Explicit options win over the preset.
    mine = resolve_settings(m, TrainConfig(method=method, bits=16, preset="paper", augment="none", hparams={"epochs": 1}))
    assert mine.augment == "none" and mine.hparams["epochs"] == 1 and mine.hparams["filters"] == paper["hparams"]["filters"]
    with pytest.raises(ArgumentError, match="preset"):
        resolve_settings(m, TrainConfig(method=method, bits=16, preset="nope"))
    model, meta = train(TrainConfig(method=method, bits=8, epochs=1, threads=1, quiet=True, preset="paper", hparams=TINY), toy_splits, tmp_path / "p.pt")
    assert isinstance(model.backbone, NINBackbone)
    assert meta["train_config"]["preset"] == "paper" and meta["train_config"]["augment"] == paper["augment"]


def test_semi_supervised_defaults_sit_between_the_defaults_and_the_preset():
    from hashtool.train.engine import resolve_settings

    m = get_method("adalabel")
    assert m.semi_hparams and m.semi_hparams["epochs"] != m.hparams["epochs"]
    full = resolve_settings(m, TrainConfig(method="adalabel", bits=16))
    semi = resolve_settings(m, TrainConfig(method="adalabel", bits=16, labeled_fraction=0.1))
    assert full.hparams == m.hparams
    assert semi.hparams == {**m.hparams, **m.semi_hparams}
    # A preset and explicit --hp values still win over the semi-supervised defaults.
    paper = resolve_settings(m, TrainConfig(method="adalabel", bits=16, labeled_fraction=0.1, preset="paper"))
    assert paper.hparams["epochs"] == m.presets["paper"]["hparams"]["epochs"]
    mine = resolve_settings(m, TrainConfig(method="adalabel", bits=16, labeled_fraction=0.1, hparams={"epochs": 3}))
    assert mine.hparams["epochs"] == 3


# -- the default networks train, export, and ONNX gives PyTorch's codes --------------------------------------


@pytest.mark.parametrize("method,filters", [("nin-latent", "4,P,8"), ("adalabel", "4,P,8"), ("nin-latent", "4,P,8,F8"),
                                            ("adalabel", "4,P,8,F8")])
def test_default_network_trains_a_few_steps_and_exports_with_parity(method, filters, toy_splits, tmp_path):
    from test_export import assert_parity

    from hashtool.export import export_model
    from hashtool.train.methods.nin_latent import ConvBackbone

    out = tmp_path / "m.pt"
    model, meta = train(TrainConfig(method=method, bits=16, epochs=1, threads=1, quiet=True, batch_size=64,
                                    hparams={"filters": filters}), toy_splits, out)
    assert isinstance(model.backbone, ConvBackbone) and meta["history"][-1]["loss"] > 0
    dense = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in dense] == ([(8 * 14 * 14, 8)] if "F" in filters else [])
    res = export_model(out, tmp_path / "enc.onnx", parity_images=100)
    assert res.parity.ok
    loaded, _ = load_checkpoint(out)
    pre = Preprocess(height=28, width=28, color="L", mean=(0.5,), std=(0.5,))
    assert_parity(loaded, pre, tmp_path / "enc.onnx")


def test_filters_spec_with_a_dense_layer():
    from hashtool.errors import ArgumentError
    from hashtool.train.methods.nin_latent import ConvBackbone, parse_filters

    assert parse_filters("32, p,64,f256") == [32, "P", 64, "F256"]
    x = torch.randn(3, 1, 28, 20)
    assert ConvBackbone(1, [4, "P", 4, "P", 8, "F6"], (28, 20)).eval()(x).shape == (3, 6)
    assert ConvBackbone(1, [4, "P", 8], (28, 20)).eval()(x).shape == (3, 8)
    with pytest.raises(ArgumentError, match="F<units> must come last"):
        ConvBackbone(1, [4, "F6", 8], (28, 20))
    with pytest.raises(ArgumentError, match="filters='32,Q'"):
        parse_filters("32,Q")


# -- CSQ's class centres in nin-latent ------------------------------------------------------------------------


@pytest.mark.parametrize("bits,classes", [(8, 10), (16, 10), (32, 3), (64, 10), (24, 10), (8, 20)])
def test_hadamard_centres(bits, classes):
    from hashtool.train.methods.nin_latent import hadamard_centres

    c = hadamard_centres(bits, classes).numpy()
    assert c.shape == (classes, bits) and set(np.unique(c)) <= {-1.0, 1.0}
    if bits & (bits - 1) == 0 and classes <= 2 * bits:
        h = naive.sylvester_hadamard(bits)
        assert np.array_equal(c, np.concatenate([h, -h])[:classes])
    else:
        assert np.array_equal(c, hadamard_centres(bits, classes).numpy())  # seeded


@given(data=st.data())
def test_nin_latent_centre_term_matches_naive(data):
    torch.manual_seed(0)
    model = NINLatent(NINLatentConfig(bits=16, filters=(4, "P", 8), backbone="cnn", num_classes=3)).eval()
    labels = data.draw(arrays(np.int64, (6,), elements=st.integers(0, 2)))
    x = torch.randn(6, 1, 12, 12)
    batch = Batch(images=x, clean=x, labels=torch.from_numpy(labels), labeled=torch.ones(6, dtype=torch.bool), indices=torch.arange(6))
    hp = dict(get_method("nin-latent").hparams)
    _, logs = get_method("nin-latent").loss(model, batch, Context(hparams=hp, training=False))
    with torch.no_grad():
        h = model.encode(x).numpy()
    from hashtool.train.methods.nin_latent import hadamard_centres

    assert logs["centre"] == pytest.approx(naive.centre_bce(h, labels, hadamard_centres(16, 3).numpy()), rel=1e-5)


def test_cli_preset_paper(tmp_path):
    """``hashtool train --preset paper`` reaches the engine; a shallow baseline and an unknown preset are refused."""
    from click.testing import CliRunner

    from hashtool.cli import main
    from hashtool.train.checkpoint import read_checkpoint

    folder = toy_idx_folder(tmp_path / "toy")
    out = tmp_path / "nin.pt"
    base = ["train", "-b", "16", "-d", str(folder), "-o", str(out), "--epochs", "1", "--threads", "1", "-q", "--no-eval"]
    r = CliRunner().invoke(main, [*base, "-m", "nin-latent", "--preset", "paper", "--hp", "filters=4,8,8"])
    assert r.exit_code == 0, r.output
    tc = read_checkpoint(out)["meta"]["train_config"]
    assert tc["preset"] == "paper" and tc["hparams"]["backbone"] == "nin" and tc["hparams"]["centre"] == 0.0
    r = CliRunner().invoke(main, [*base, "-m", "nin-latent", "--preset", "nope"])
    assert r.exit_code != 0 and "--preset 'nope'" in r.output
    r = CliRunner().invoke(main, [*base[:5], "-o", str(tmp_path / "itq.npz"), "-m", "itq", "--preset", "paper", "-q"])
    assert r.exit_code != 0 and "--preset" in r.output


@pytest.mark.parametrize("cpu, has_bf16, native", [("znver4", True, True), ("znver4", False, False), ("emeraldrapids", True, False)])
def test_semi_supervised_defaults_use_bf16_only_where_it_was_measured_to_pay(monkeypatch, cpu, has_bf16, native):
    import hashtool.train.methods.adalabel as adalabel

    monkeypatch.setattr(adalabel, "host_cpu_has", lambda feature: has_bf16 and feature == "avx512bf16")
    monkeypatch.setattr(adalabel, "host_cpu_name", lambda: cpu)
    hp = adalabel.semi_defaults()
    assert hp.get("precision", "fp32") == ("bf16" if native else "fp32")
    assert hp["epochs"] == (22 if native else 13)
    hp["epochs"] = 1  # a copy: the module's defaults stay as they are
    assert adalabel.semi_defaults()["epochs"] == (22 if native else 13)
