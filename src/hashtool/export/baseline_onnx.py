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

import time
from pathlib import Path

import numpy as np

from hashtool.encode.encoder import INPUT_NAME, OUTPUT_NAMES
from hashtool.errors import ModelError
from hashtool.export.onnx_file import OPSET, check_onnx, write_encoder
from hashtool.export.parity import DEFAULT_EPSILON, ParityTally, attach_parity, onnx_session
from hashtool.preprocess import Preprocess

EXPORTER = "hashtool.export.baseline_onnx"


def baseline_preprocess(meta: dict) -> Preprocess:
    shape = meta.get("input_shape_hwc")
    if not (isinstance(shape, list) and len(shape) == 3 and shape[2] in (1, 3)):
        raise ModelError("the baseline does not record the image shape it was fitted on (input_shape_hwc); "
                         "fit it again with `hashtool train --method itq ...`")
    h, w, c = (int(v) for v in shape)
    return Preprocess(h, w, "L" if c == 1 else "RGB", "stretch", (0.0,) * c, (1.0,) * c)


def baseline_graph(base, pp: Preprocess):
    """The ONNX ModelProto of the baseline's projection (see the module docstring)."""
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
        helper.make_node("Cast", [INPUT_NAME], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Mul", ["flat", "scale"], ["unit"]),
        helper.make_node("Sub", ["unit", "mean"], ["centred"]),
        helper.make_node("MatMul", ["centred", "W"], ["projection"]),
        helper.make_node("Identity", ["projection"], [OUTPUT_NAMES["real"]]),
    ]
    graph = helper.make_graph(
        nodes, f"hashtool-{base.method}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", h, w, c])],
        [helper.make_tensor_value_info(OUTPUT_NAMES["real"], TensorProto.FLOAT, ["batch", base.bits])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = min(proto.ir_version, 9)  # readable by the onnxruntime versions we support
    check_onnx(proto)
    return proto


def export_baseline(npz_path, onnx_path, *, parity_images: int = 256, epsilon: float = DEFAULT_EPSILON,
                    strict: bool = True):
    """Write the baseline at ``npz_path`` as an encoder at ``onnx_path``; returns an ExportResult."""
    import onnx

    from hashtool.baselines import load_baseline
    from hashtool.encode import Encoder
    from hashtool.export.metadata import encoder_metadata, set_metadata
    from hashtool.fileio import sha256_file

    t0 = time.perf_counter()
    base = load_baseline(npz_path)
    pp = baseline_preprocess(base.meta)
    proto = baseline_graph(base, pp)
    metadata = encoder_metadata(
        bits=base.bits, output="real", rule="sign", preprocess=pp, method=base.method, meta=base.meta,
        map_figures=base.meta.get("metrics", {}).get("map"), checkpoint_sha256=sha256_file(npz_path),
        checkpoint_file=Path(npz_path).name,
    )
    metadata.update({"exporter": EXPORTER, "opset": str(OPSET), "onnx_version": onnx.__version__})
    set_metadata(proto, metadata)
    report = None
    if parity_images:
        report = _parity(base, proto, pp, int(parity_images), epsilon)
        attach_parity(proto, metadata, report, onnx_path, strict)
    result = write_encoder(proto, onnx_path, metadata, report, t0)
    Encoder(result.path, threads=1)  # the runtime accepts what was written
    return result


def _parity(base, proto, pp: Preprocess, n: int, epsilon: float):
    """Encoder codes from the ONNX graph against LinearHash.transform on ``n`` seeded random images."""
    from hashtool.codes import binarize, unpack
    from hashtool.datasets import flatten_features

    t0 = time.perf_counter()
    images = np.random.default_rng(0).integers(0, 256, (n, *pp.shape_hwc), dtype=np.uint8)
    real = onnx_session(proto.SerializeToString()).run(None, {INPUT_NAME: images})[0]
    proj = base.project(flatten_features(images))
    bits_o = binarize(real, "sign").astype(bool)
    bits_n = unpack(base.transform(flatten_features(images)), base.bits).astype(bool)
    tally = ParityTally()
    tally.add(bits_o, bits_n, proj, 0.0, epsilon)
    return tally.report(images=n, source="uniform random pixels (seeded)", epsilon=epsilon, threshold=0.0,
                        max_abs_real_diff=float(np.abs(real - proj).max()), t0=t0)
