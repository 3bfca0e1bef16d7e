"""Export a hashtool model's encoder to ONNX, with normalisation, binarisation and bit packing inside.

The graph (:class:`EncoderGraph`) is::

    images uint8 (batch, H, W, C)                     only the batch axis is dynamic
      -> transpose to NCHW -> float32
      -> x * scale + shift                            per channel, from Preprocess.affine()
      -> model.encode(x)                              the hash layer; decoder/classifier are not traced
      -> "real":  float32 (batch, bits)
      -> "bits":  uint8 {0,1} (batch, bits)           the model's rule: sign (>= 0) or sigmoid (> 0.5)
      -> "packed": uint8 (batch, bits / 8)            byte b = sum_j bit[8b + j] << j (hashtool's order),
                                                      computed as a MatMul with [1, 2, ..., 128] (exact)

Export uses torch's ``torch.export``-based exporter (``dynamo=True``, the supported one since torch
2.9) at opset :data:`OPSET`; the TorchScript exporter is still selectable with
``exporter="torchscript"`` for models that ``torch.export`` cannot trace. The ONNX model passes
``onnx.checker.check_model(full_check=True)``, carries hashtool's metadata (:data:`METADATA_KEYS`) and
is written atomically (temporary file in the same folder, fsync, rename).

Parity, run by every export (:func:`check_parity`): a batch of real images goes through PyTorch
(the same :class:`EncoderGraph`, eager) and through onnxruntime. Bits must be equal, except bits whose
PyTorch pre-activation lies within ``epsilon`` of the threshold (0 for sign, 0.5 for sigmoid), where
float rounding differences between the two runtimes may legitimately flip them. The report counts bits
compared, equal, within epsilon, and differing; a bit differing *outside* epsilon fails the export.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hashtool import __version__
from hashtool.encode.encoder import (
    ENCODER_FORMAT,
    ENCODER_FORMAT_VERSION,
    INPUT_NAME,
    OUTPUT_KINDS,
    OUTPUT_NAMES,
)
from hashtool.codes import BINARIZE_RULES
from hashtool.fileio import sha256_file
from hashtool.errors import ArgumentError, ModelError
from hashtool.preprocess import Preprocess
from hashtool.train.models import HashModel, binarize

OPSET = 18
EXPORTERS = ("dynamo", "torchscript")
THRESHOLDS = {rule: t for rule, (t, _) in BINARIZE_RULES.items()}
DEFAULT_EPSILON = 1e-4
FASHION_MNIST_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")

METADATA_KEYS = (
    "hashtool_format", "hashtool_format_version", "hashtool_version", "bits", "bit_order", "output",
    "binarize", "threshold", "input_layout", "input_dtype", "input_height", "input_width", "input_channels",
    "color", "resize", "mean", "std", "method", "training_data", "protocol", "map", "checkpoint_sha256",
    "checkpoint_file", "training_meta", "exporter", "opset", "torch_version", "onnx_version", "parity",
)


class EncoderGraph(nn.Module):
    """uint8 NHWC images -> normalise -> ``model.encode`` -> binarise -> pack: the exported computation."""

    def __init__(self, model: HashModel, preprocess: Preprocess, output: str = "packed"):
        super().__init__()
        if output not in OUTPUT_KINDS:
            raise ArgumentError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
        if model.binarize not in THRESHOLDS:
            raise ModelError(f"model {type(model).__name__} has unknown binarize rule {model.binarize!r}")
        if int(model.bits) % 8:
            raise ModelError(f"model has {model.bits} bits; hashtool codes need a multiple of 8")
        self.model = model
        self.output = output
        self.rule = model.binarize
        scale, shift = preprocess.affine()
        c = preprocess.channels
        # (1, C, 1, 1): the affine map is applied after the NHWC -> NCHW transpose, so onnxruntime broadcasts
        # each constant over a contiguous H*W run. Broadcasting a (1, 1, 1, 3) constant over the innermost
        # axis of NHWC ran >10x slower in onnxruntime 1.32 (its profiler, during development: 13.7 ms of a
        # ~100 ms batch of 256 RGB 32x32 images for the Mul alone, ~1 ms after). Per element the arithmetic
        # is the same, x * scale + shift; benchmarks/profile_encode.py shows the current split.
        self.register_buffer("scale", torch.from_numpy(scale).reshape(1, c, 1, 1))
        self.register_buffer("shift", torch.from_numpy(shift).reshape(1, c, 1, 1))
        # Packing as one matrix product: (n * bits/8, 8) 0/1 floats times the column [1, 2, 4, ..., 128] is
        # exact in float32 (sums of distinct powers of two <= 255). In onnxruntime 1.32 at 1 thread, batch 256,
        # a development micro-benchmark of the packing alone measured it 2.4x (64 bits) to 3.8x (1024 bits)
        # faster than an int32 Mul broadcasting over an innermost axis of 8 + ReduceSum, and 10-15x faster
        # than a MatMul with a 1-D (8,) weight.
        self.register_buffer("bit_weights", torch.tensor([[float(1 << j)] for j in range(8)], dtype=torch.float32))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> float32 NCHW, ``x * scale + shift`` (the training-time normalisation)."""
        return images.permute(0, 3, 1, 2).to(torch.float32) * self.scale + self.shift

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.encode(self.normalize(images)))

    def head(self, real: torch.Tensor) -> torch.Tensor:
        """The hash layer -> this graph's output (real values, bits, or packed codes)."""
        if self.output == "real":
            return real.to(torch.float32)
        bits = binarize(real, self.rule)
        if self.output == "bits":
            return bits
        n = bits.shape[0]
        groups = bits.to(torch.float32).reshape(-1, 8)
        return torch.matmul(groups, self.bit_weights).reshape(n, -1).to(torch.uint8)


@dataclass
class ParityReport:
    """Outcome of :func:`check_parity` (counts over images x bits)."""

    images: int
    image_source: str
    bits_compared: int
    bits_equal: int
    bits_differ: int
    near_threshold: int  # bits whose PyTorch pre-activation is within epsilon of the threshold
    differ_near_threshold: int
    differ_beyond_epsilon: int  # must be 0
    epsilon: float
    threshold: float
    max_abs_real_diff: float | None  # only when the graph outputs real values
    seconds: float
    health: dict | None = None  # hashtool.health.code_health of the onnxruntime codes

    @property
    def equal_fraction(self) -> float:
        return self.bits_equal / self.bits_compared if self.bits_compared else 1.0

    @property
    def ok(self) -> bool:
        return self.differ_beyond_epsilon == 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["equal_fraction"] = self.equal_fraction
        d["ok"] = self.ok
        return d

    def summary(self) -> str:
        return (
            f"parity on {self.images} images ({self.image_source}): {self.bits_equal}/{self.bits_compared} bits equal "
            f"({100 * self.equal_fraction:.4f}%); {self.near_threshold} bits within {self.epsilon:g} of the threshold "
            f"{self.threshold:g}, of which {self.differ_near_threshold} differ; {self.differ_beyond_epsilon} differ beyond epsilon"
        )


@dataclass
class ExportResult:
    path: Path
    sha256: str
    bytes: int
    metadata: dict
    parity: ParityReport | None
    seconds: float

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "bytes": self.bytes,
            "metadata": self.metadata,
            "parity": self.parity.to_dict() if self.parity else None,
            "seconds": round(self.seconds, 3),
        }


def export_model(
    checkpoint_path,
    onnx_path,
    output: str = "packed",
    *,
    parity_images=256,
    parity_dir=None,
    epsilon: float = DEFAULT_EPSILON,
    exporter: str = "dynamo",
    opset: int = OPSET,
    strict: bool = True,
) -> ExportResult:
    """Export the encoder of the checkpoint at ``checkpoint_path`` to ``onnx_path``.

    ``parity_images``: how many images the parity check uses (0 skips it), or a uint8 NHWC array of
    images. Their source, in order: the array; images under ``parity_dir``; the Fashion-MNIST test set
    (Debian's dataset-fashion-mnist), converted to the model's input by the runtime loader's conversion;
    uniform random pixels as a last resort (the report names the source). With ``strict`` a bit that
    differs beyond ``epsilon`` raises :class:`ModelError` and nothing is written.
    """
    from hashtool.train.checkpoint import checkpoint_preprocess, load_checkpoint

    checkpoint_path = Path(checkpoint_path)
    model, ckpt = load_checkpoint(checkpoint_path)
    preprocess = checkpoint_preprocess(ckpt)
    meta = dict(ckpt.get("meta") or {})
    return export_encoder(
        model,
        preprocess,
        onnx_path,
        output,
        meta=meta,
        checkpoint_sha256=sha256_file(checkpoint_path),
        checkpoint_file=checkpoint_path.name,
        parity_images=parity_images,
        parity_dir=parity_dir,
        epsilon=epsilon,
        exporter=exporter,
        opset=opset,
        strict=strict,
    )


def export_encoder(
    model: HashModel,
    preprocess: Preprocess,
    onnx_path,
    output: str = "packed",
    *,
    meta: dict | None = None,
    checkpoint_sha256: str = "",
    checkpoint_file: str = "",
    parity_images=256,
    parity_dir=None,
    epsilon: float = DEFAULT_EPSILON,
    exporter: str = "dynamo",
    opset: int = OPSET,
    strict: bool = True,
) -> ExportResult:
    """Export an in-memory model (see :func:`export_model`; this is its workhorse, usable without a file)."""
    t0 = time.perf_counter()
    if exporter not in EXPORTERS:
        raise ArgumentError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    c = preprocess.channels
    cfg = getattr(model, "config", None)
    for field, want in (("in_channels", c), ("height", preprocess.height), ("width", preprocess.width)):
        have = getattr(cfg, field, None)
        if have is not None and have != want:
            raise ModelError(f"model config {field}={have} does not match the preprocessing ({field}={want})")
    model.eval()
    graph = EncoderGraph(model, preprocess, output).eval()
    proto = _to_onnx(graph, preprocess, output, exporter, opset)

    metadata = _metadata(model, preprocess, output, meta or {}, checkpoint_sha256, checkpoint_file, exporter, opset)
    _set_metadata(proto, metadata)
    _check(proto)

    report = None
    images, source = _parity_inputs(parity_images, parity_dir, preprocess)
    if images is not None and len(images):
        data = proto.SerializeToString()
        report = check_parity(graph, data, images, source=source, epsilon=epsilon)
        metadata["parity"] = json.dumps(report.to_dict(), sort_keys=True)
        _set_metadata(proto, metadata)
        if strict and not report.ok:
            raise ModelError(
                f"export to {onnx_path} failed the parity check: {report.summary()}. Nothing was written; "
                "check the model for non-deterministic or untraceable code in encode()"
            )
    data = proto.SerializeToString()
    path = Path(onnx_path)
    _atomic_write(path, data)
    return ExportResult(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        metadata=metadata,
        parity=report,
        seconds=time.perf_counter() - t0,
    )


def check_parity(graph: EncoderGraph, onnx_model, images: np.ndarray, *, source: str = "given",
                 epsilon: float = DEFAULT_EPSILON, batch_size: int = 256) -> ParityReport:
    """Compare onnxruntime's output for ``images`` with PyTorch's (see the module docstring).

    ``onnx_model``: serialized bytes or a path. ``graph`` is the :class:`EncoderGraph` it was exported from.
    """
    import onnxruntime as ort

    from hashtool.codes import pack, unpack
    from hashtool.health import code_health

    t0 = time.perf_counter()
    all_bits = []
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(onnx_model if isinstance(onnx_model, bytes) else str(onnx_model), so,
                                providers=["CPUExecutionProvider"])
    nbits = int(graph.model.bits)
    threshold = THRESHOLDS[graph.rule]
    real_out = graph.output == "real"
    equal = differ = near = differ_near = differ_far = compared = 0
    max_real = 0.0
    for start in range(0, len(images), batch_size):
        batch = np.ascontiguousarray(images[start : start + batch_size])
        with torch.no_grad():
            x = graph.normalize(torch.from_numpy(batch))
            real_t = graph.model.encode(x).to(torch.float32)
            bits_t = binarize(real_t, graph.rule).numpy().astype(bool)
        real_t = real_t.numpy()
        out = sess.run(None, {INPUT_NAME: batch})[0]
        if graph.output == "packed":
            bits_o = unpack(out, nbits).astype(bool)
        elif graph.output == "bits":
            bits_o = out.astype(bool)
        else:
            bits_o = (out >= 0) if graph.rule == "sign" else (out > 0.5)
            max_real = max(max_real, float(np.abs(out - real_t).max()))
        all_bits.append(bits_o)
        is_near = np.abs(real_t - threshold) <= epsilon
        mismatch = bits_o != bits_t
        compared += mismatch.size
        differ += int(mismatch.sum())
        near += int(is_near.sum())
        differ_near += int((mismatch & is_near).sum())
        differ_far += int((mismatch & ~is_near).sum())
    equal = compared - differ
    return ParityReport(
        images=int(len(images)), image_source=source, bits_compared=compared, bits_equal=equal, bits_differ=differ,
        near_threshold=near, differ_near_threshold=differ_near, differ_beyond_epsilon=differ_far,
        epsilon=float(epsilon), threshold=threshold, max_abs_real_diff=max_real if real_out else None,
        seconds=time.perf_counter() - t0,
        health=code_health(pack(np.concatenate(all_bits)), nbits).as_dict() if all_bits else None,
    )


def fashion_mnist_images(n: int, path=FASHION_MNIST_TEST) -> np.ndarray | None:
    """The first ``n`` Fashion-MNIST test images, uint8 (n, 28, 28), or None if the file is absent."""
    import gzip
    import struct

    path = Path(path)
    if not path.is_file():
        return None
    with gzip.open(path, "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            return None
        n = min(n, count)
        return np.frombuffer(f.read(n * rows * cols), dtype=np.uint8).reshape(n, rows, cols)


# -- internals -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_torch_onnx():
    """Silence the exporter's progress prints (stdout is for results) and its optional-package warnings."""
    import warnings

    names = ["torch.onnx", "torch.onnx._internal.exporter._registration", "torch.export", "torch._export"]
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, lvl in old.items():
            logging.getLogger(n).setLevel(lvl)


def _to_onnx(graph: EncoderGraph, preprocess: Preprocess, output: str, exporter: str, opset: int):
    import onnx

    example = torch.zeros((2, *preprocess.shape_hwc), dtype=torch.uint8)
    out_name = OUTPUT_NAMES[output]
    try:
        with torch.no_grad(), _quiet_torch_onnx():
            if exporter == "dynamo":
                program = torch.onnx.export(
                    graph, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                    output_names=[out_name], dynamic_shapes=({0: torch.export.Dim("batch")},),
                    optimize=True, verbose=False, external_data=False,
                )
                proto = program.model_proto
            else:
                buf = io.BytesIO()
                torch.onnx.export(
                    graph, (example,), buf, dynamo=False, opset_version=min(opset, 17), input_names=[INPUT_NAME],
                    output_names=[out_name], dynamic_axes={INPUT_NAME: {0: "batch"}, out_name: {0: "batch"}},
                    do_constant_folding=True,
                )
                proto = onnx.load_from_string(buf.getvalue())
    except Exception as exc:
        other = "torchscript" if exporter == "dynamo" else "dynamo"
        raise ModelError(
            f"ONNX export of {type(graph.model).__name__}.encode with the {exporter} exporter failed "
            f"({type(exc).__name__}: {str(exc)[:300]}); try exporter={other!r}"
        ) from exc
    return proto


def _check(proto) -> None:
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ModelError(f"the exported ONNX graph fails onnx.checker: {str(exc)[:300]}") from exc


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _text(value) -> str:
    """A metadata value as text: strings as they are, nothing as "", anything else as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else _json(value)


def _recorded_map(meta: dict) -> dict:
    """Every mAP figure the checkpoint records, by where it was found.

    Numbers whose key mentions "map" at the top level of ``meta`` or under ``metrics``/``results`` (the
    test-protocol evaluation, e.g. ``metrics.map``), and in the training history's entry for the selected
    epoch (``meta["selected_epoch"]``, else the last entry; e.g. ``history[epoch=6].val_map``, a validation
    figure used for model selection).
    """
    def numbers(d: dict, scope: str) -> dict:
        return {
            scope + str(k): float(v)
            for k, v in d.items()
            if "map" in str(k).lower() and isinstance(v, (int, float)) and not isinstance(v, bool)
        }

    found = {}
    for scope, d in (("", meta), ("metrics.", meta.get("metrics")), ("results.", meta.get("results"))):
        if isinstance(d, dict):
            found.update(numbers(d, scope))
    history = [h for h in meta.get("history") or [] if isinstance(h, dict)] if isinstance(meta.get("history"), list) else []
    if history:
        selected = meta.get("selected_epoch")
        chosen = [h for h in history if selected is not None and h.get("epoch") == selected]
        entry = chosen[-1] if chosen else history[-1]
        found.update(numbers(entry, f"history[epoch={entry.get('epoch')}]."))
    return found


def _metadata(model, preprocess, output, meta, checkpoint_sha256, checkpoint_file, exporter, opset) -> dict:
    import onnx

    small_meta = {k: v for k, v in meta.items() if k not in ("history",)}
    training_meta = _json(small_meta)
    if len(training_meta) > 65536:
        training_meta = _json({k: small_meta[k] for k in ("dataset", "protocol", "metrics") if k in small_meta})
    out = {
        "hashtool_format": ENCODER_FORMAT,
        "hashtool_format_version": str(ENCODER_FORMAT_VERSION),
        "hashtool_version": __version__,
        "bits": str(int(model.bits)),
        "bit_order": "little",
        "output": output,
        "binarize": model.binarize,
        "threshold": str(THRESHOLDS[model.binarize]),
        "input_layout": "NHWC",
        "input_dtype": "uint8",
        "input_height": str(preprocess.height),
        "input_width": str(preprocess.width),
        "input_channels": str(preprocess.channels),
        "color": preprocess.color,
        "resize": preprocess.resize,
        "mean": _json(list(preprocess.mean)),
        "std": _json(list(preprocess.std)),
        "method": getattr(model, "model_name", "") or type(model).__name__,
        "training_data": _text(meta.get("dataset")),
        "protocol": _text(meta.get("protocol")),
        "map": _json(_recorded_map(meta)),
        "checkpoint_sha256": checkpoint_sha256,
        "checkpoint_file": checkpoint_file,
        "training_meta": training_meta,
        "exporter": f"torch.onnx.export(dynamo={exporter == 'dynamo'})",
        "opset": str(opset if exporter == "dynamo" else min(opset, 17)),
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
    }
    if meta.get("copy_radius") is not None:  # the training's own duplicate radius: dups' default without calibrate
        out["copy_radius"] = str(int(meta["copy_radius"]))
    if meta.get("backbone_licence"):  # pretrained weights travel inside the encoder, and so does their notice
        out["licence"] = _text(meta["backbone_licence"])
    return out


def _set_metadata(proto, metadata: dict) -> None:
    del proto.metadata_props[:]
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = k
        entry.value = str(v)
    proto.producer_name = "hashtool"
    proto.producer_version = __version__


def _parity_inputs(parity_images, parity_dir, preprocess: Preprocess):
    if isinstance(parity_images, np.ndarray):
        arr = parity_images
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != preprocess.shape_hwc:
            raise ArgumentError(
                f"parity images must be uint8 {('n',) + preprocess.shape_hwc}, got {arr.dtype} {arr.shape}"
            )
        return arr, "given array"
    n = int(parity_images or 0)
    if n < 0:
        raise ArgumentError(f"parity_images must be >= 0, got {n}")
    if n == 0:
        return None, "none"
    from hashtool.files.images import convert_image, find_images, load_image
    from hashtool.errors import ImageError

    if parity_dir is not None:
        out = []
        for p in find_images(parity_dir):
            try:
                out.append(load_image(p, preprocess))
            except ImageError:
                continue
            if len(out) == n:
                break
        if not out:
            raise ArgumentError(f"--parity-dir {parity_dir}: no readable images found")
        return np.stack(out), f"{len(out)} images from {parity_dir}"
    fm = fashion_mnist_images(n)
    if fm is not None:
        if preprocess.shape_hwc == (28, 28, 1):
            return fm[:, :, :, None].copy(), "Fashion-MNIST test set"
        from PIL import Image

        arr = np.stack([convert_image(Image.fromarray(a, "L"), preprocess) for a in fm])
        return arr, f"Fashion-MNIST test set, converted to {preprocess.color} {preprocess.height}x{preprocess.width}"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, *preprocess.shape_hwc), dtype=np.uint8), "uniform random pixels (no dataset found)"


def _atomic_write(path: Path, data: bytes) -> None:
    from hashtool.fileio import atomic_write

    with atomic_write(path) as f:
        f.write(data)
