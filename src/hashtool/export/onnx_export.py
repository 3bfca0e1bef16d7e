"""Export a hashtool model's encoder to ONNX, with normalisation, binarisation and bit packing inside.

This module is the entry: :func:`export_model` (a checkpoint file) and :func:`export_encoder` (a model in
memory) run the parts in order, each in its own module:

- :mod:`hashtool.export.graph`: :class:`EncoderGraph`, the computation (uint8 NHWC images -> normalise ->
  ``model.encode`` -> binarise -> pack);
- :mod:`hashtool.export.trace`: the graph traced to ONNX by torch's exporter, cut at the hash layer;
- :mod:`hashtool.export.metadata`: hashtool's metadata (:data:`METADATA_KEYS`) in the file;
- :mod:`hashtool.export.parity`: the parity check of onnxruntime against PyTorch on real images
  (:mod:`hashtool.export.images` finds them);
- :mod:`hashtool.export.onnx_file`: the checker the file must pass (``onnx.checker.check_model(full_check=True)``)
  and its atomic write (temporary file in the same folder, fsync, rename).

The names of those modules that callers used from here are importable from here too.
"""

from __future__ import annotations

import time
from pathlib import Path

from hashtool.errors import ModelError
from hashtool.export.graph import EncoderGraph
from hashtool.export.images import FASHION_MNIST_TEST, fashion_mnist_images, parity_inputs
from hashtool.export.metadata import METADATA_KEYS, model_metadata, set_metadata
from hashtool.export.onnx_file import OPSET, ExportResult, check_onnx, write_encoder
from hashtool.export.parity import DEFAULT_EPSILON, ParityReport, attach_parity, check_parity
from hashtool.export.trace import EXPORTERS, check_exporter, exporter_metadata, to_onnx
from hashtool.fileio import sha256_file
from hashtool.preprocess import Preprocess
from hashtool.train.models import HashModel

__all__ = [
    "DEFAULT_EPSILON", "EXPORTERS", "FASHION_MNIST_TEST", "METADATA_KEYS", "OPSET", "EncoderGraph", "ExportResult",
    "ParityReport", "check_parity", "export_encoder", "export_model", "fashion_mnist_images",
]
PARITY_FAILURE_HINT = "check the model for non-deterministic or untraceable code in encode()"


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
    check_exporter(exporter)
    _check_config_matches(model, preprocess)
    model.eval()
    graph = EncoderGraph(model, preprocess, output).eval()
    proto = to_onnx(graph, preprocess, exporter, opset)

    metadata = model_metadata(model, preprocess, output, meta or {}, checkpoint_sha256, checkpoint_file,
                              exporter_metadata(exporter, opset))
    set_metadata(proto, metadata)
    check_onnx(proto)

    report = None
    images, source = parity_inputs(parity_images, parity_dir, preprocess)
    if images is not None and len(images):
        report = check_parity(graph, proto.SerializeToString(), images, source=source, epsilon=epsilon)
        attach_parity(proto, metadata, report, onnx_path, strict, PARITY_FAILURE_HINT)
    return write_encoder(proto, onnx_path, metadata, report, t0)


def _check_config_matches(model: HashModel, preprocess: Preprocess) -> None:
    """The model's config (where it has the fields) must describe the input the preprocessing produces."""
    cfg = getattr(model, "config", None)
    for field, want in (("in_channels", preprocess.channels), ("height", preprocess.height), ("width", preprocess.width)):
        have = getattr(cfg, field, None)
        if have is not None and have != want:
            raise ModelError(f"model config {field}={have} does not match the preprocessing ({field}={want})")
