"""ONNX export of a shallow baseline (lsh, pcah, itq: ``bits = (x - mean) @ W >= 0``) as a runtime encoder.

The graph, on uint8 NHWC images at the size the baseline was fitted on (``input_shape_hwc`` in its
metadata), is the baseline's own feature map and projection, six nodes::

    Cast(float32) -> Reshape(n, h*w*c) -> Mul(1/255) -> Sub(mean) -> MatMul(W) -> Identity("real")

It returns the real-valued projection (output "real", binarize "sign"); :class:`hashtool.encode.Encoder`
applies the one sign rule of :mod:`hashtool.codes` and packs the bits, exactly as the baseline's
``transform`` does. The export checks itself: on ``parity_images`` images the encoder's codes must equal
``LinearHash.transform``'s, except bits whose projection lies within ``epsilon`` of 0 (float32 sums in
another order). Needs the ``onnx`` package (hashtool[train]), not torch.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from hashtool.errors import ModelError
from hashtool.preprocess import Preprocess

OPSET = 18


def baseline_preprocess(meta: dict) -> Preprocess:
    shape = meta.get("input_shape_hwc")
    if not (isinstance(shape, list) and len(shape) == 3 and shape[2] in (1, 3)):
        raise ModelError("the baseline does not record the image shape it was fitted on (input_shape_hwc); "
                         "fit it again with `hashtool train --method itq ...`")
    h, w, c = (int(v) for v in shape)
    return Preprocess(h, w, "L" if c == 1 else "RGB", "stretch", (0.0,) * c, (1.0,) * c)


def baseline_graph(base, pp: Preprocess):
    """The ONNX ModelProto of the baseline's projection (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, w, c = pp.shape_hwc
    if base.dim != h * w * c:
        raise ModelError(f"the baseline was fitted on {base.dim} features, not {h}x{w}x{c} images")
    inits = [
        numpy_helper.from_array(np.array([-1, base.dim], dtype=np.int64), "shape"),
        numpy_helper.from_array(np.array(1.0 / 255.0, dtype=np.float32), "scale"),
        numpy_helper.from_array(np.asarray(base.mean, dtype=np.float32).reshape(1, -1), "mean"),
        numpy_helper.from_array(np.asarray(base.W, dtype=np.float32), "W"),
    ]
    nodes = [
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Mul", ["flat", "scale"], ["unit"]),
        helper.make_node("Sub", ["unit", "mean"], ["centred"]),
        helper.make_node("MatMul", ["centred", "W"], ["projection"]),
        helper.make_node("Identity", ["projection"], ["real"]),
    ]
    graph = helper.make_graph(
        nodes, f"hashtool-{base.method}",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", h, w, c])],
        [helper.make_tensor_value_info("real", TensorProto.FLOAT, ["batch", base.bits])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = min(proto.ir_version, 9)  # readable by the onnxruntime versions we support
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_baseline(npz_path, onnx_path, *, parity_images: int = 256, epsilon: float = 1e-4, strict: bool = True):
    """Write the baseline at ``npz_path`` as an encoder at ``onnx_path``; returns an ExportResult."""
    import onnx

    from hashtool import __version__
    from hashtool.baselines import load_baseline
    from hashtool.encode import Encoder
    from hashtool.encode.encoder import ENCODER_FORMAT, ENCODER_FORMAT_VERSION
    from hashtool.export.onnx_export import ExportResult, _atomic_write, _json, _set_metadata, _text
    from hashtool.fileio import sha256_file

    t0 = time.perf_counter()
    base = load_baseline(npz_path)
    pp = baseline_preprocess(base.meta)
    proto = baseline_graph(base, pp)
    metadata = {
        "hashtool_format": ENCODER_FORMAT, "hashtool_format_version": str(ENCODER_FORMAT_VERSION),
        "hashtool_version": __version__, "bits": str(base.bits), "bit_order": "little", "output": "real",
        "binarize": "sign", "threshold": "0.0", "input_layout": "NHWC", "input_dtype": "uint8",
        "input_height": str(pp.height), "input_width": str(pp.width), "input_channels": str(pp.channels),
        "color": pp.color, "resize": pp.resize, "mean": _json(list(pp.mean)), "std": _json(list(pp.std)),
        "method": base.method, "training_data": _text(base.meta.get("dataset")),
        "protocol": _text(base.meta.get("protocol")), "map": _json(base.meta.get("metrics", {}).get("map")),
        "checkpoint_sha256": sha256_file(npz_path), "checkpoint_file": Path(npz_path).name,
        "exporter": "hashtool.export.baseline_onnx", "opset": str(OPSET), "onnx_version": onnx.__version__,
    }
    _set_metadata(proto, metadata)
    report = None
    path = Path(onnx_path)
    if parity_images:
        report = _parity(base, proto, pp, int(parity_images), epsilon)
        metadata["parity"] = json.dumps(report.to_dict(), sort_keys=True)
        _set_metadata(proto, metadata)
        if strict and not report.ok:
            raise ModelError(f"export to {onnx_path} failed the parity check: {report.summary()}. Nothing was written")
    data = proto.SerializeToString()
    _atomic_write(path, data)
    Encoder(path, threads=1)  # the runtime accepts what was written
    return ExportResult(path=path, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), metadata=metadata,
                        parity=report, seconds=time.perf_counter() - t0)


def _parity(base, proto, pp: Preprocess, n: int, epsilon: float):
    """Encoder codes from the ONNX graph against LinearHash.transform on ``n`` seeded random images."""
    import onnxruntime as ort

    from hashtool.codes import unpack
    from hashtool.datasets import flatten_features
    from hashtool.export.onnx_export import ParityReport

    t0 = time.perf_counter()
    images = np.random.default_rng(0).integers(0, 256, (n, *pp.shape_hwc), dtype=np.uint8)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    real = sess.run(None, {"images": images})[0]
    proj = base.project(flatten_features(images))
    bits_o, bits_n = real >= 0, unpack(base.transform(flatten_features(images)), base.bits).astype(bool)
    near = np.abs(proj) <= epsilon
    mismatch = bits_o != bits_n
    return ParityReport(
        images=n, image_source="uniform random pixels (seeded)", bits_compared=int(mismatch.size),
        bits_equal=int(mismatch.size - mismatch.sum()), bits_differ=int(mismatch.sum()), near_threshold=int(near.sum()),
        differ_near_threshold=int((mismatch & near).sum()), differ_beyond_epsilon=int((mismatch & ~near).sum()),
        epsilon=float(epsilon), threshold=0.0, max_abs_real_diff=float(np.abs(real - proj).max()),
        seconds=time.perf_counter() - t0,
    )
