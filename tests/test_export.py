"""ONNX export: graph shape, in-graph normalisation/binarisation/packing, metadata, parity, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402
from hypothesis import given, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import naive  # noqa: E402
from hashtool.cli import main  # noqa: E402
from hashtool.codes import pack, unpack  # noqa: E402
from hashtool.encode import Encoder  # noqa: E402
from hashtool.errors import ModelError  # noqa: E402
from hashtool.export import EncoderGraph, export_encoder, export_model  # noqa: E402
from hashtool.export.onnx_export import METADATA_KEYS, OPSET, fashion_mnist_images  # noqa: E402
from hashtool.preprocess import Preprocess  # noqa: E402
from hashtool.train.checkpoint import save_checkpoint  # noqa: E402
from hashtool.train.models import MODELS, binarize  # noqa: E402
from tiny_models import (  # noqa: E402
    TINY_VARIANTS,
    ConstConfig,
    ConstHash,
    IdentityConfig,
    IdentityHash,
    NoisyHash,
    TinyConfig,
    TinyConvHash,
    preprocess_for,
    registered,
    registered_methods,
)

PARITY_N = 1000


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """torch eager with 1 thread here: on a shared 2-core machine its OpenMP barriers stall for ~100 ms
    per call when another process holds a core (measured by benchmarks/bench_encode.py). Restored after."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def parity_images(preprocess: Preprocess, n: int = PARITY_N) -> np.ndarray:
    """n real images at the model's input (Fashion-MNIST test set, converted), random pixels if absent."""
    from PIL import Image

    from hashtool.encode import convert_image

    fm = fashion_mnist_images(n)
    if fm is None:
        return np.random.default_rng(0).integers(0, 256, (n, *preprocess.shape_hwc), dtype=np.uint8)
    return np.stack([convert_image(Image.fromarray(a, "L"), preprocess) for a in fm])


def torch_bits(model, preprocess: Preprocess, images: np.ndarray) -> np.ndarray:
    """The training-side path: torch normalisation from Preprocess.affine(), model.encode, model's rule."""
    scale, shift = preprocess.affine()
    x = torch.from_numpy(images).to(torch.float32) * torch.from_numpy(scale) + torch.from_numpy(shift)
    with torch.no_grad():
        return binarize(model.encode(x.permute(0, 3, 1, 2)), model.binarize).numpy()


def assert_parity(model, preprocess, onnx_path):
    """>= 99.9% of bits equal between onnxruntime (via the runtime Encoder) and torch, over 1,000 images."""
    images = parity_images(preprocess)
    codes = Encoder(onnx_path, threads=1).encode(images)
    expected = pack(torch_bits(model, preprocess, images))
    equal = 1.0 - np.unpackbits(codes ^ expected).mean()
    assert codes.shape == (PARITY_N, model.bits // 8)
    assert equal >= 0.999, f"only {100 * equal:.3f}% of bits equal"
    return equal


# -- every tiny variant: both rules, 1 and 3 channels, conv + batchnorm --------------------------------


@pytest.mark.parametrize("name", sorted(TINY_VARIANTS))
def test_tiny_models_export_with_parity(name, tmp_path):
    model = TINY_VARIANTS[name]().eval()
    pp = preprocess_for(model.config)
    res = export_encoder(model, pp, tmp_path / "enc.onnx", parity_images=200)
    assert res.parity.ok and res.parity.images == 200 and res.parity.bits_compared == 200 * model.bits
    assert_parity(model, pp, tmp_path / "enc.onnx")


# -- every registered method (empty until the training methods are merged) --------------------------


@pytest.mark.parametrize("method", registered_methods())
def test_every_registered_method_exports_with_parity(method, tmp_path):
    config_cls, model_cls = MODELS[method]
    torch.manual_seed(0)
    config = config_cls()
    model = model_cls(config).eval()
    pp = preprocess_for(config)
    save_checkpoint(tmp_path / "m.pt", model, pp, meta={"dataset": "random weights"})
    res = export_model(tmp_path / "m.pt", tmp_path / "enc.onnx", parity_images=200)
    assert res.parity.ok and res.metadata["method"] == method
    assert_metadata_round_trip(res, MODEL_KEYS)
    assert_parity(model, pp, tmp_path / "enc.onnx")


OPTIONAL_KEYS = ("copy_radius", "licence")  # written when the checkpoint records them
MODEL_KEYS = METADATA_KEYS
BASELINE_KEYS = tuple(k for k in METADATA_KEYS if k not in ("training_meta", "torch_version"))


def assert_metadata_round_trip(res, keys):
    """The file holds exactly the metadata the export returned, in the documented key order, and the
    runtime Encoder reads back every value as written."""
    written = [(e.key, e.value) for e in onnx.load(res.path).metadata_props]
    assert dict(written) == res.metadata
    assert [k for k, _ in written if k not in OPTIONAL_KEYS] == list(keys)
    assert Encoder(res.path, threads=1).metadata == res.metadata


# -- the graph itself -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A 1-channel sign model exported (packed) through a checkpoint with training metadata."""
    d = tmp_path_factory.mktemp("export")
    with registered("_test-tiny", TinyConfig, TinyConvHash):
        model = TinyConvHash(TinyConfig(bits=32)).eval()
        pp = preprocess_for(model.config)
        meta = {"dataset": "fashion-mnist", "protocol": "1k queries / 59k database",
                "metrics": {"map": 0.5, "map@1000": 0.55, "precision@100": 0.6}, "selected_epoch": 1,
                "history": [{"epoch": 1, "val_map": 0.3, "loss": 1.0}, {"epoch": 2, "val_map": 0.2, "loss": 0.9}]}
        save_checkpoint(d / "m.pt", model, pp, meta=meta)
        res = export_model(d / "m.pt", d / "enc.onnx", parity_images=64)
    return model, pp, d, res


def test_graph_is_cut_at_the_hash_layer_with_only_batch_dynamic(tiny_export):
    model, pp, d, res = tiny_export
    proto = onnx.load(d / "enc.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    sess = ort.InferenceSession(str(d / "enc.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.type == "tensor(uint8)" and isinstance(inp.shape[0], str) and inp.shape[1:] == [28, 28, 1]
    assert out.type == "tensor(uint8)" and isinstance(out.shape[0], str) and out.shape[1] == 4
    # the decoder (32 x 784 weights) is not in the file; the encoder's weights are
    n_init = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    n_decoder = sum(p.numel() for p in model.decoder.parameters())
    n_encoder = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("decoder"))
    assert n_init < n_encoder + n_decoder // 2
    for batch in (1, 3, 257):  # batch axis is dynamic
        x = np.zeros((batch, 28, 28, 1), dtype=np.uint8)
        assert sess.run(None, {"images": x})[0].shape == (batch, 4)


def test_metadata(tiny_export):
    model, pp, d, res = tiny_export
    md = Encoder(d / "enc.onnx").metadata
    assert set(METADATA_KEYS) <= set(md)
    assert md["hashtool_format"] == "hashtool-encoder" and md["hashtool_format_version"] == "1"
    assert md["bits"] == "32" and md["bit_order"] == "little" and md["output"] == "packed" and md["binarize"] == "sign"
    assert (md["input_height"], md["input_width"], md["input_channels"], md["color"], md["resize"]) == ("28", "28", "1", "L", "stretch")
    assert json.loads(md["mean"]) == [0.5] and json.loads(md["std"]) == [0.5]
    assert md["method"] == "_test-tiny" and md["training_data"] == "fashion-mnist"
    assert md["protocol"] == "1k queries / 59k database" and json.loads(md["map"]) == {
        "metrics.map": 0.5, "metrics.map@1000": 0.55, "history[epoch=1].val_map": 0.3}
    assert md["checkpoint_sha256"] == hashlib.sha256((d / "m.pt").read_bytes()).hexdigest()
    assert "history" not in json.loads(md["training_meta"])
    parity = json.loads(md["parity"])
    assert parity["ok"] and parity["images"] == 64 and parity["bits_compared"] == 64 * 32
    assert res.sha256 == hashlib.sha256((d / "enc.onnx").read_bytes()).hexdigest()
    assert_metadata_round_trip(res, MODEL_KEYS)
    proto = onnx.load(d / "enc.onnx")  # no builder paths or source lines in the nodes
    assert not any(n.metadata_props for n in proto.graph.node) and b"/work/" not in (d / "enc.onnx").read_bytes()


def test_baseline_export_shares_the_metadata_rules_and_needs_no_torch(tmp_path):
    """In a fresh process: a baseline exports without importing torch, and its file carries the model
    exporter's keys (less training_meta and torch_version) in the same order, read back unchanged."""
    import subprocess
    import sys
    import textwrap

    from hashtool.baselines import fit_baseline

    base = fit_baseline("itq", np.random.default_rng(0).random((120, 8 * 8 * 3)), 16)
    base.meta.update(input_shape_hwc=[8, 8, 3], dataset="folder x", protocol={"queries": 10}, metrics={"map": 0.25})
    base.save(tmp_path / "itq.npz")
    code = f"""
        import json, sys
        from hashtool.export.baseline_onnx import export_baseline
        res = export_baseline({str(tmp_path / "itq.npz")!r}, {str(tmp_path / "itq.onnx")!r}, parity_images=32)
        print(json.dumps({{"torch": "torch" in sys.modules, "result": res.to_dict()}}))
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert child["torch"] is False
    res = child["result"]
    assert res["parity"]["ok"] and res["parity"]["images"] == 32
    md = res["metadata"]
    assert (md["method"], md["bits"], md["output"], md["binarize"], md["threshold"]) == ("itq", "16", "real", "sign", "0.0")
    assert (md["training_data"], json.loads(md["protocol"]), json.loads(md["map"])) == ("folder x", {"queries": 10}, 0.25)
    assert md["opset"] == str(OPSET) and md["checkpoint_sha256"] == hashlib.sha256((tmp_path / "itq.npz").read_bytes()).hexdigest()
    from types import SimpleNamespace

    assert_metadata_round_trip(SimpleNamespace(path=Path(res["path"]), metadata=md), BASELINE_KEYS)


def test_same_image_same_tensor_through_training_numpy_and_onnx_paths(tmp_path):
    """Preprocess.normalize (numpy), the torch training normalisation and the ONNX graph agree."""
    for pp in (Preprocess(28, 28, "L", mean=(0.2860,), std=(0.3530,)),
               Preprocess(16, 16, "RGB", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))):
        c = pp.channels
        model = IdentityHash(IdentityConfig(bits=c * pp.height * pp.width, in_channels=c, height=pp.height, width=pp.width))
        export_encoder(model, pp, tmp_path / "id.onnx", "real", parity_images=0)
        sess = ort.InferenceSession(str(tmp_path / "id.onnx"), providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(c)
        images = rng.integers(0, 256, (5, *pp.shape_hwc), dtype=np.uint8)
        images[0] = 0
        images[1] = 255
        onnx_out = sess.run(None, {"images": images})[0].reshape(5, c, pp.height, pp.width)
        numpy_out = pp.normalize(images)
        scale, shift = pp.affine()
        torch_out = (torch.from_numpy(images).float() * torch.from_numpy(scale) + torch.from_numpy(shift)).permute(0, 3, 1, 2).numpy()
        graph_out = EncoderGraph(model, pp, "real").normalize(torch.from_numpy(images)).numpy()
        np.testing.assert_array_equal(onnx_out, numpy_out)
        np.testing.assert_array_equal(torch_out, numpy_out)
        np.testing.assert_array_equal(graph_out, numpy_out)
        np.testing.assert_allclose(numpy_out, naive.normalize_pixels(images, pp.mean, pp.std), atol=1e-5)


@pytest.mark.parametrize("rule", ["sign", "sigmoid"])
def test_binarisation_rule_at_the_threshold_in_the_graph(rule, tmp_path):
    model = ConstHash(ConstConfig(bits=16, rule=rule)).eval()
    pp = preprocess_for(model.config)
    outputs = ("packed", "bits", "real") if rule == "sign" else ("packed", "real")  # "bits" shares packed's comparison
    for output in outputs:
        export_encoder(model, pp, tmp_path / f"{output}.onnx", output, parity_images=0)
    x = np.zeros((2, 28, 28, 1), dtype=np.uint8)
    expected_bits = naive.binarize_values(model.values.numpy()[None].repeat(2, 0), rule)
    if rule == "sign":
        assert expected_bits[0, :2].tolist() == [1, 1]  # 0 and -0 are bit 1
    else:
        assert expected_bits[0, 0] == 0  # exactly 0.5 is bit 0
    for output in outputs:
        codes = Encoder(tmp_path / f"{output}.onnx", threads=1).encode(x)
        np.testing.assert_array_equal(codes, naive.pack_bits(expected_bits), err_msg=output)
    if "bits" in outputs:
        sess = ort.InferenceSession(str(tmp_path / "bits.onnx"), providers=["CPUExecutionProvider"])
        np.testing.assert_array_equal(sess.run(None, {"images": x})[0], expected_bits)


@pytest.fixture(scope="module")
def sigmoid_session(tmp_path_factory):
    d = tmp_path_factory.mktemp("sig")
    model = TinyConvHash(TinyConfig(bits=24, in_channels=3, height=12, width=12, rule="sigmoid")).eval()
    pp = preprocess_for(model.config)
    export_encoder(model, pp, d / "enc.onnx", parity_images=0)
    return model, pp, ort.InferenceSession(str(d / "enc.onnx"), providers=["CPUExecutionProvider"])


@given(images=hnp.arrays(np.uint8, st.tuples(st.integers(1, 6), st.just(12), st.just(12), st.just(3)),
                         elements=st.sampled_from([0, 1, 127, 128, 254, 255]) | st.integers(0, 255)))
def test_in_graph_packing_equals_naive_pack_of_torch_bits(sigmoid_session, images):
    model, pp, sess = sigmoid_session
    packed = sess.run(None, {"images": images})[0]
    bits = torch_bits(model, pp, images)
    np.testing.assert_array_equal(packed, naive.pack_bits(bits))
    np.testing.assert_array_equal(packed, pack(bits))
    np.testing.assert_array_equal(unpack(packed, 24), bits)


def test_torchscript_exporter(tiny_export, tmp_path):
    model, pp, d, res = tiny_export
    # the legacy exporter cannot express adaptive pooling to 4x4 from 14x14; the error says what to try
    with pytest.raises(ModelError, match="torchscript exporter failed.*try exporter='dynamo'"):
        export_encoder(model, pp, tmp_path / "ts.onnx", exporter="torchscript", parity_images=0)
    assert not (tmp_path / "ts.onnx").exists()
    model = TINY_VARIANTS["tiny-sign-RGB32"]().eval()  # 32 -> 16 -> 4: a factor, so it exports
    pp = preprocess_for(model.config)
    ts = export_encoder(model, pp, tmp_path / "ts.onnx", exporter="torchscript", parity_images=50)
    assert ts.parity.ok and ts.metadata["exporter"] == "torch.onnx.export(dynamo=False)" and ts.metadata["opset"] == "17"
    x = parity_images(pp, 200)
    codes = Encoder(tmp_path / "ts.onnx").encode(x)
    assert np.unpackbits(codes ^ pack(torch_bits(model, pp, x))).mean() <= 0.001


# -- failures ---------------------------------------------------------------------------------------


def test_parity_failure_writes_nothing(tmp_path):
    model = NoisyHash(TinyConfig(bits=32)).eval()
    pp = preprocess_for(model.config)
    with pytest.raises(ModelError, match="parity"):
        export_encoder(model, pp, tmp_path / "noisy.onnx", parity_images=32)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary left behind
    res = export_encoder(model, pp, tmp_path / "noisy.onnx", parity_images=32, strict=False)
    assert not res.parity.ok and res.parity.differ_beyond_epsilon > 0 and (tmp_path / "noisy.onnx").is_file()


def test_export_model_errors(tmp_path):
    with pytest.raises(ModelError, match="no such checkpoint"):
        export_model(tmp_path / "missing.pt", tmp_path / "x.onnx")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable PyTorch checkpoint"):
        export_model(tmp_path / "junk.pt", tmp_path / "x.onnx")
    model = TinyConvHash(TinyConfig(bits=32))
    with pytest.raises(ModelError, match="does not match the preprocessing"):
        export_encoder(model, Preprocess(32, 32, "L"), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


# -- command line -----------------------------------------------------------------------------------


def test_cli_export(tiny_export, tmp_path):
    model, pp, d, res = tiny_export
    with registered("_test-tiny", TinyConfig, TinyConvHash):
        images_dir = str(Path(__file__).parent / "data" / "images")
        r = CliRunner().invoke(main, ["export", str(d / "m.pt"), str(tmp_path / "e.onnx"), "--parity-images", "50",
                                      "--parity-dir", images_dir, "--quiet"])
        assert r.exit_code == 0, r.output
        # the folder holds 20 readable images (and 8 broken ones, skipped for parity)
        assert "wrote" in r.output and "20 images from" in r.output and "0 differ beyond epsilon" in r.output
        assert "code health on the parity images: ones per bit min" in r.output and "distinct codes for 20 images" in r.output
        r = CliRunner().invoke(main, ["export", str(d / "m.pt"), str(tmp_path / "b.onnx"), "--output", "bits",
                                      "--parity-images", "20", "--json", "-q"])
        assert r.exit_code == 0, r.output
        out = json.loads(r.output)
        assert out["metadata"]["output"] == "bits" and out["parity"]["ok"] and out["parity"]["images"] == 20
        assert out["parity"]["health"]["images"] == 20 and out["parity"]["health"]["bits"] == int(res.metadata["bits"])
    x = parity_images(pp, 30)
    np.testing.assert_array_equal(Encoder(tmp_path / "b.onnx").encode(x), Encoder(tmp_path / "e.onnx").encode(x))
    r = CliRunner().invoke(main, ["export", str(tmp_path / "none.pt"), str(tmp_path / "n.onnx")])
    assert r.exit_code == 1 and "no such checkpoint file" in r.output and not (tmp_path / "n.onnx").exists()
