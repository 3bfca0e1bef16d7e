"""The training engine, the unsupervised methods and checkpoints, on tiny generated data."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hashtool.datasets import Dataset, make_splits  # noqa: E402
from hashtool.errors import ArgumentError, ModelError  # noqa: E402
from hashtool.train.checkpoint import load_checkpoint, read_checkpoint  # noqa: E402
from hashtool.train.data import encode_packed, parse_augment, augment_batch, to_tensor  # noqa: E402
from hashtool.train.engine import TrainConfig, labeled_mask, scaled_phases, train  # noqa: E402
from hashtool.train.methods import METHODS, get_method  # noqa: E402

TINY_HP = {"hidden": 16}


def blobs(n=160, hw=12, classes=3, seed=0):
    """Images of a bright square whose position depends on the class, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    imgs = rng.integers(0, 60, (n, hw, hw, 1)).astype(np.int32)
    for i, c in enumerate(labels):
        r = 1 + 3 * c
        imgs[i, r : r + 4, r : r + 4, 0] += 180
    return np.clip(imgs, 0, 255).astype(np.uint8), labels


def tiny_splits(seed=0):
    x, y = blobs()
    xt, yt = blobs(40, seed=1)
    ds = Dataset(name="blobs", train_images=x, train_labels=y, test_images=xt, test_labels=yt)
    return make_splits(ds, n_query=20, n_val=32, seed=seed)


def cfg(method, **kw):
    kw.setdefault("hparams", dict(TINY_HP))
    kw.setdefault("batch_size", 32)
    kw.setdefault("epoch_images", 96)  # one pass over the tiny training split, not the methods' 10,000
    return TrainConfig(method=method, bits=8, quiet=True, threads=1, **kw)


@pytest.mark.parametrize("method", ["ae-tanh", "scae"])
def test_loss_decreases_and_checkpoint_round_trips(tmp_path, method):
    splits = tiny_splits()
    out = tmp_path / "m.pt"
    model, meta = train(cfg(method, epochs=6 if method == "ae-tanh" else 8), splits, out)
    hist = meta["history"]
    same_phase = [h for h in hist if h["phase"] == hist[-1]["phase"]] if method == "scae" else [h for h in hist if h["phase"] == "main"]
    assert same_phase[-1]["mse" if "mse" in same_phase[-1] else "loss"] < same_phase[0]["mse" if "mse" in same_phase[0] else "loss"]
    assert meta["complete"] and meta["selected_epoch"] == len(hist)
    loaded, ckpt = load_checkpoint(out)
    x, _ = splits.part("query")
    pp = __import__("hashtool.train.checkpoint", fromlist=["x"]).checkpoint_preprocess(ckpt)
    a = encode_packed(model, x, pp)
    b = encode_packed(loaded, x, pp)
    assert np.array_equal(a, b) and a.shape == (20, 1)
    assert ckpt["method"] == method and ckpt["bits"] == 8 and ckpt["meta"]["protocol"]["queries"] == 20
    assert "extra" not in ckpt  # optimiser state is dropped from the final checkpoint


def test_ae_tanh_beta_rises_until_binary(tmp_path):
    model, meta = train(cfg("ae-tanh", epochs=4, hparams={**TINY_HP, "beta_max": 50.0, "rotate": False}), tiny_splits(), tmp_path / "m.pt")
    betas = [h["beta"] for h in meta["history"]]
    assert betas == sorted(betas) and betas[0] == 1.0 and betas[-1] == 50.0
    assert meta["history"][-1]["binary"] > meta["history"][0]["binary"]


def test_scae_layerwise_phases_train_only_their_layer(tmp_path):
    splits = tiny_splits()
    torch.manual_seed(0)
    from hashtool.train.models import MODELS

    method = get_method("scae")
    init = MODELS["scae"][1](method.make_config(8, 1, 12, 12, {**method.hparams, **TINY_HP}))
    # Run only the first phase (layer1): enc2/enc3 must keep their initial weights.
    c = cfg("scae", hparams={**TINY_HP, "layer_epochs": 1, "epochs": 1, "rotate": False})
    orig = method.phases
    method.phases = lambda hp: orig(hp)[:1]
    try:
        model, _ = train(c, splits, tmp_path / "m.pt")
    finally:
        method.phases = orig
    for name, p in model.state_dict().items():
        if name.startswith(("enc2", "enc3", "dec2", "dec3")):
            assert torch.equal(p, init.state_dict()[name]), name
        if name.startswith("enc1.0.weight"):
            assert not torch.equal(p, init.state_dict()[name])


def test_resume_continues_the_same_run(tmp_path):
    splits = tiny_splits()
    full, meta_full = train(cfg("ae-tanh", epochs=4), splits, tmp_path / "full.pt")
    method = get_method("ae-tanh")

    class Stop(Exception):
        pass

    original = method.on_epoch_end

    def stop_after_two(model, ctx, data):
        original(model, ctx, data)
        if ctx.epoch == 1:
            raise Stop

    method.on_epoch_end = stop_after_two
    try:
        with pytest.raises(Stop):
            train(cfg("ae-tanh", epochs=4), splits, tmp_path / "part.pt")
    finally:
        method.on_epoch_end = original
    partial = read_checkpoint(tmp_path / "part.pt")
    assert partial["meta"]["epochs_done"] == 1 and not partial["meta"]["complete"]
    resumed, meta = train(cfg("ae-tanh", epochs=4), splits, tmp_path / "part.pt", resume=True)
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4]
    for k, v in full.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k
    with pytest.raises(ModelError, match="already complete"):
        train(cfg("ae-tanh", epochs=4), splits, tmp_path / "part.pt", resume=True)
    with pytest.raises(ModelError, match="not ae-tanh 16-bit|not scae"):
        train(TrainConfig(method="scae", bits=8, quiet=True, hparams=dict(TINY_HP)), splits, tmp_path / "full.pt", resume=True)


def test_bad_checkpoints_are_refused(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(bad)
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(ModelError, match="not a hashtool checkpoint"):
        read_checkpoint(bad)
    model, _ = train(cfg("ae-tanh", epochs=1), tiny_splits(), tmp_path / "ok.pt")
    ckpt = torch.load(tmp_path / "ok.pt", weights_only=True)
    ckpt["version"] = 99
    torch.save(ckpt, bad)
    with pytest.raises(ModelError, match="version 99"):
        read_checkpoint(bad)
    with pytest.raises(ModelError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "missing.pt")


def test_engine_argument_errors(tmp_path):
    splits = tiny_splits()
    with pytest.raises(ArgumentError, match="no hyper-parameter 'nope'"):
        train(cfg("ae-tanh", hparams={"nope": 1}), splits, tmp_path / "m.pt")
    with pytest.raises(ArgumentError, match="labeled-fraction"):
        train(cfg("ae-tanh", labeled_fraction=0.5), splits, tmp_path / "m.pt")
    with pytest.raises(ArgumentError, match="unknown deep method"):
        train(cfg("nope"), splits, tmp_path / "m.pt")
    with pytest.raises(ArgumentError, match="--device"):
        train(cfg("ae-tanh", device="tpu"), splits, tmp_path / "m.pt")


def test_schedules_and_labeled_mask():
    phases = scaled_phases(get_method("scae"), get_method("scae").hparams, epochs=14, lr=2e-3)
    assert sum(p.epochs for p in phases) == 14 and all(p.epochs >= 1 for p in phases)
    assert phases[0].lr == pytest.approx(2e-3)
    main = get_method("ae-tanh").phases(get_method("ae-tanh").hparams)[0]
    assert main.lr_at(0.0) == pytest.approx(1e-3) and main.lr_at(1.0) == pytest.approx(1e-5)
    assert main.lr_at(0.5) == pytest.approx((1e-3 + 1e-5) / 2)
    m = labeled_mask(1000, 0.1, seed=3)
    assert m.sum() == 100 and np.array_equal(m, labeled_mask(1000, 0.1, seed=3))
    assert not np.array_equal(m, labeled_mask(1000, 0.1, seed=4))
    with pytest.raises(ArgumentError):
        labeled_mask(10, 0.0, 0)


def test_phase_weight_decay_shrinks_weights_only():
    """A phase with ``weight_decay`` decays its weight matrices and kernels (decoupled: ``w *= 1 - lr * wd`` before
    the Adam step), never biases and BatchNorm parameters; without it the optimiser is plain Adam."""
    from hashtool.train.engine import phase_optimiser
    from hashtool.train.methods import Phase

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.Linear(2, 3))
    params = list(net.parameters())
    assert type(phase_optimiser(Phase("p", 1, lr=0.1), params)) is torch.optim.Adam
    opt = phase_optimiser(Phase("p", 1, lr=0.1, weight_decay=0.5), params)
    before = [p.detach().clone() for p in params]
    for p in params:  # zero gradients: the Adam step is 0, only the decay moves a parameter
        p.grad = torch.zeros_like(p)
    opt.step()
    for p, b in zip(params, before):
        want = b * (1 - 0.1 * 0.5) if p.ndim >= 2 else b
        assert torch.allclose(p.detach(), want), p.shape
    assert get_method("adalabel").phases(dict(get_method("adalabel").hparams, weight_decay=0.05))[0].weight_decay == 0.05


def test_torch_normalisation_matches_numpy_reference():
    from hashtool.preprocess import Preprocess

    pp = Preprocess(12, 12, "L", mean=(0.3,), std=(0.2,))
    x, _ = blobs(5)
    assert np.allclose(to_tensor(x, pp).numpy(), pp.normalize(x), atol=1e-6)


def test_shift_augmentation_moves_pixels_and_fills_black():
    x = torch.zeros(64, 1, 6, 6)
    x[:, 0, 2, 3] = 1.0
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, parse_augment("shift:1"), torch.tensor([-1.0]), g)
    assert out.shape == x.shape
    # Each image keeps its one bright pixel, moved by at most one place; the border fill is -1.
    assert torch.all((out == 1.0).sum(dim=(1, 2, 3)) == 1)
    pos = (out[:, 0] == 1.0).nonzero()[:, 1:]
    assert (pos - torch.tensor([2, 3])).abs().max() <= 1 and len({tuple(p.tolist()) for p in pos}) > 1
    assert ((out == 0) | (out == 1) | (out == -1)).all() and (out == -1).any()
    with pytest.raises(ArgumentError):
        parse_augment("blur")  # rotate is a view op now (tests/test_views.py)


def test_registry_has_the_unsupervised_methods():
    assert {"ae-tanh", "scae"} <= set(METHODS)
    assert not METHODS["ae-tanh"].supervised and METHODS["scae"].select == "last"


def test_itq_rotation_fold_keeps_the_layer_and_lowers_quantisation():
    from torch import nn

    from hashtool.train.methods.common import fold_itq_rotation

    torch.manual_seed(0)
    feats = torch.randn(500, 6) * torch.tensor([3.0, 2.0, 1.0, 0.5, 0.5, 0.2]) + 1.0
    lin = nn.Linear(6, 4)
    before = lin(feats).detach().double()
    info = fold_itq_rotation(lin, lambda x: lin(x), feats, seed=0)
    after = lin(feats).detach().double()
    # (z - mean) R: centred, and the same pairwise geometry (R orthogonal).
    assert torch.allclose(after.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-4)
    d0 = torch.cdist(before, before)
    d1 = torch.cdist(after, after)
    assert torch.allclose(d0, d1, atol=1e-3)
    assert info["quantization_after"] <= info["quantization_before"] + 1e-9
