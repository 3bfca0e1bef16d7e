"""The shared contrastive loss on codes, and the ``contrastive`` method: trains on tiny data, exports, ONNX = torch."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings, strategies as st  # noqa: E402

import naive  # noqa: E402
from hashtool.errors import ArgumentError  # noqa: E402
from hashtool.train.contrastive import code_contrastive_loss, codes_st, nt_xent  # noqa: E402
from hashtool.train.methods import METHODS  # noqa: E402
from test_train import cfg, tiny_splits  # noqa: E402


@pytest.mark.parametrize("method", ["edit-contrastive", "contrastive"])
@pytest.mark.parametrize("straight_through", [0, 1])
def test_shared_loss_prefers_codes_that_agree_across_views(method, straight_through):
    torch.manual_seed(0)
    u = torch.tanh(3 * torch.randn(64, 32))
    hp = {**METHODS[method].hparams, "straight_through": straight_through}
    same, logs = code_contrastive_loss(u, u, hp)
    shuffled, _ = code_contrastive_loss(u, u[torch.randperm(64)], hp)
    assert float(same) < float(shuffled) - 1.0
    assert set(logs) == {"contrast", "quant", "balance", "decorr"}


@settings(max_examples=30)
@given(n=st.integers(1, 6), dim=st.integers(1, 5), seed=st.integers(0, 2**31), temperature=st.floats(0.05, 2.0))
def test_nt_xent_equals_the_row_loop(n, dim, seed, temperature):
    z = torch.nn.functional.normalize(torch.from_numpy(np.random.default_rng(seed).normal(size=(2 * n, dim))), dim=1)
    assert float(nt_xent(z, temperature)) == pytest.approx(naive.nt_xent(z.numpy(), temperature), rel=1e-6, abs=1e-9)


def test_straight_through_codes_are_signs_with_an_identity_gradient():
    u = torch.tensor([[-0.3, 0.0, 0.7]], requires_grad=True)
    c = codes_st(u)
    assert c.tolist() == [[-1.0, 1.0, 1.0]]  # 0 -> +1, the codes' rule
    (c * torch.tensor([[1.0, 2.0, 3.0]])).sum().backward()
    assert u.grad.tolist() == [[1.0, 2.0, 3.0]]


TINY = {"hidden": 16, "filters": "4,8", "views": "crop:0.5,hflip,jitter:0.2,erase:0.5"}


def test_contrastive_trains_rotates_exports_and_onnx_codes_equal_torch(tmp_path):
    from hashtool.encode import Encoder
    from hashtool.export import export_model
    from hashtool.train.checkpoint import checkpoint_preprocess, load_checkpoint
    from hashtool.train.data import encode_packed
    from hashtool.train.engine import train

    splits = tiny_splits()
    out = tmp_path / "m.pt"
    model, meta = train(cfg("contrastive", epochs=3, hparams=dict(TINY)), splits, out)
    hist = meta["history"]
    assert meta["complete"] and len(hist) == 3 and all(np.isfinite(h["loss"]) for h in hist)
    assert {"contrast", "balance", "decorr", "val_map"} <= set(hist[-1])
    # The last epoch folded the centring + ITQ rotation into the code layer: the training codes' mean is ~0.
    x, _ = splits.part("train")
    pp = checkpoint_preprocess(load_checkpoint(out)[1])
    from hashtool.train.data import to_tensor

    with torch.no_grad():
        z = model.pre_code(to_tensor(x, pp))
    assert z.mean(0).abs().max() < 0.05 * z.std(0).mean()
    res = export_model(out, tmp_path / "enc.onnx", parity_images=50)
    assert res.parity.ok and res.metadata["method"] == "contrastive"
    q, _ = splits.part("query")
    assert np.array_equal(Encoder(tmp_path / "enc.onnx", threads=1).encode(q), encode_packed(model, q, pp))


def test_contrastive_training_is_seeded(tmp_path):
    from hashtool.train.engine import train

    splits = tiny_splits()
    runs = [train(cfg("contrastive", epochs=1, seed=s, hparams=dict(TINY)), splits, tmp_path / f"{i}.pt")[0] for i, s in enumerate((3, 3, 4))]
    w = [r.head[-1].weight.detach() for r in runs]
    assert torch.equal(w[0], w[1]) and not torch.equal(w[0], w[2])


def test_contrastive_refuses_bad_filters(tmp_path):
    from hashtool.train.engine import train

    with pytest.raises(ArgumentError, match="filters"):
        train(cfg("contrastive", epochs=1, hparams={**TINY, "filters": "8,x"}), tiny_splits(), tmp_path / "m.pt")
