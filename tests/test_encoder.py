"""The runtime Encoder: metadata validation, threads, encode, encode_files on the test image set, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # exporting the test encoder needs torch; the Encoder itself does not
onnx = pytest.importorskip("onnx")

from hashtool.encode import Encoder, find_images, load_image  # noqa: E402
from hashtool.errors import ArgumentError, ModelError  # noqa: E402
from hashtool.export import export_encoder  # noqa: E402
from tiny_models import TinyConfig, TinyConvHash, preprocess_for  # noqa: E402

IMAGES = Path(__file__).parent / "data" / "images"
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def enc_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("enc")
    model = TinyConvHash(TinyConfig(bits=32)).eval()
    export_encoder(model, preprocess_for(model.config), d / "enc.onnx", parity_images=0)
    return d / "enc.onnx"


def rewrite_metadata(src: Path, dst: Path, **changes) -> Path:
    """Copy an encoder with metadata entries changed (value None removes the entry)."""
    proto = onnx.load(src)
    md = {p.key: p.value for p in proto.metadata_props}
    for k, v in changes.items():
        if v is None:
            md.pop(k, None)
        else:
            md[k] = v
    del proto.metadata_props[:]
    for k, v in md.items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(proto, dst)
    return dst


def test_properties(enc_path):
    enc = Encoder(enc_path, threads=1)
    assert enc.nbits == 32 and enc.method == "TinyConvHash" and enc.output == "packed"
    assert enc.preprocess.shape_hwc == (28, 28, 1) and enc.preprocess.color == "L"
    assert enc.path == enc_path and len(enc.sha256) == 64 and enc.metadata["bits"] == "32"
    assert "TinyConvHash" in repr(enc)


def test_threads_come_from_the_shared_setting(enc_path, monkeypatch):
    assert Encoder(enc_path, threads=1)._session.get_session_options().intra_op_num_threads == 1
    monkeypatch.setenv("HASHTOOL_THREADS", "3")
    enc = Encoder(enc_path)
    assert enc.threads == 3 and enc._session.get_session_options().intra_op_num_threads == 3
    monkeypatch.setenv("HASHTOOL_THREADS", "zero")
    with pytest.raises(ArgumentError, match="HASHTOOL_THREADS"):
        Encoder(enc_path)


def test_metadata_errors(enc_path, tmp_path):
    bare = rewrite_metadata(enc_path, tmp_path / "bare.onnx", hashtool_format=None, hashtool_format_version=None)
    with pytest.raises(ModelError, match="not a hashtool encoder.*hashtool export"):
        Encoder(bare)
    newer = rewrite_metadata(enc_path, tmp_path / "newer.onnx", hashtool_format_version="2")
    with pytest.raises(ModelError, match="newer than this hashtool supports.*upgrade"):
        Encoder(newer)
    missing = rewrite_metadata(enc_path, tmp_path / "missing.onnx", mean=None)
    with pytest.raises(ModelError, match="lacks.*mean"):
        Encoder(missing)
    liar = rewrite_metadata(enc_path, tmp_path / "liar.onnx", input_height="32")
    with pytest.raises(ModelError, match="disagrees with metadata"):
        Encoder(liar)
    bits = rewrite_metadata(enc_path, tmp_path / "bits.onnx", bits="64")
    with pytest.raises(ModelError, match="output shape"):
        Encoder(bits)
    (tmp_path / "text.onnx").write_text("hello")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        Encoder(tmp_path / "text.onnx")
    with pytest.raises(ModelError, match="no such encoder file"):
        Encoder(tmp_path / "absent.onnx")
    Encoder(rewrite_metadata(enc_path, tmp_path / "same.onnx"))  # the rewrite itself is harmless


def test_encode_checks_its_input(enc_path):
    enc = Encoder(enc_path, threads=1)
    good = np.zeros((2, 28, 28, 1), dtype=np.uint8)
    assert enc.encode(good).shape == (2, 4)
    assert enc.encode(good[:0]).shape == (0, 4)
    with pytest.raises(ArgumentError, match="images\\[None\\]"):
        enc.encode(good[0])
    with pytest.raises(ArgumentError, match="uint8 images of shape"):
        enc.encode(good.astype(np.float32))
    with pytest.raises(ArgumentError, match="uint8 images of shape"):
        enc.encode(np.zeros((2, 28, 28, 3), dtype=np.uint8))


def test_encode_batches_agree(enc_path):
    enc = Encoder(enc_path, threads=1)
    x = np.random.default_rng(0).integers(0, 256, (70, 28, 28, 1), dtype=np.uint8)
    np.testing.assert_array_equal(enc.encode(x, batch_size=8), enc.encode(x))
    np.testing.assert_array_equal(enc.encode(x[5:6]), enc.encode(x)[5:6])


@pytest.mark.parametrize("batch_size,workers", [(3, 1), (64, 2)])
def test_encode_files_reports_every_file(enc_path, batch_size, workers):
    enc = Encoder(enc_path, threads=1)
    paths = find_images(IMAGES)
    calls = []
    res = enc.encode_files(paths, batch_size=batch_size, workers=workers, progress=lambda d, t: calls.append((d, t)))
    broken = {str(p) for p in paths if p.relative_to(IMAGES).parts[0] == "broken"}
    assert {f.path for f in res.failures} == broken and len(res.failures) == 8
    assert all(f.reason and not f.reason.startswith(f.path) for f in res.failures)
    assert all(paths[f.index] == Path(f.path) for f in res.failures)
    assert len(res) == 20 and res.codes.shape == (20, 4) and list(res.indices) == sorted(res.indices)
    assert res.paths == [str(paths[i]) for i in res.indices]
    assert set(res.indices) | {f.index for f in res.failures} == set(range(len(paths)))
    expected = enc.encode(np.stack([load_image(p, enc.preprocess) for p in res.paths]))
    np.testing.assert_array_equal(res.codes, expected)
    assert calls[-1] == (28, 28) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert res.stats["encoded"] == 20 and res.stats["failed"] == 8 and res.stats["decode_s"] > 0


def test_encode_files_empty_and_all_failing(enc_path):
    enc = Encoder(enc_path, threads=1)
    res = enc.encode_files([])
    assert res.codes.shape == (0, 4) and res.failures == [] and len(res.indices) == 0
    res = enc.encode_files([IMAGES / "broken/empty.jpg", IMAGES / "nope.png"])
    assert res.codes.shape == (0, 4) and [f.index for f in res.failures] == [0, 1]
    assert "no such file" in res.failures[1].reason


def test_runtime_encodes_with_torch_and_onnx_unimportable(enc_path):
    """A subprocess where `import torch` / `import onnx` fail still opens the encoder and encodes files."""
    code = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["torch"] = None
        sys.modules["onnx"] = None
        sys.path.insert(0, {str(SRC)!r})
        from hashtool.encode import Encoder, find_images
        from hashtool.codes import to_hex
        enc = Encoder({str(enc_path)!r}, threads=1)
        res = enc.encode_files(find_images({str(IMAGES)!r}), batch_size=4)
        print(json.dumps({{"hex": to_hex(res.codes), "failed": len(res.failures),
                          "torch": "torch" in sys.modules and sys.modules["torch"] is not None}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"] is False and got["failed"] == 8
    from hashtool.codes import to_hex

    ref = Encoder(enc_path, threads=1).encode_files(find_images(IMAGES))
    assert got["hex"] == to_hex(ref.codes)
