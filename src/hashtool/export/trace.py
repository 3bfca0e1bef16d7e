"""Trace an :class:`~hashtool.export.graph.EncoderGraph` into an ONNX ModelProto, cut at the hash layer.

The graph calls ``model.encode`` only, so the decoder, classifier or codeword table a model trains with is
never traced. Export uses torch's ``torch.export``-based exporter (``dynamo=True``, the supported one since
torch 2.9) at opset :data:`~hashtool.export.onnx_file.OPSET`; the TorchScript exporter is still selectable
with ``exporter="torchscript"`` for models that ``torch.export`` cannot trace (it stops at opset
:data:`TORCHSCRIPT_MAX_OPSET`). Only the batch axis is dynamic.
"""

from __future__ import annotations

import contextlib
import io
import logging

import torch

from hashtool.encode.encoder import INPUT_NAME, OUTPUT_NAMES
from hashtool.errors import ArgumentError, ModelError
from hashtool.export.graph import EncoderGraph
from hashtool.preprocess import Preprocess

EXPORTERS = ("dynamo", "torchscript")
TORCHSCRIPT_MAX_OPSET = 17


def check_exporter(exporter: str) -> None:
    if exporter not in EXPORTERS:
        raise ArgumentError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")


def exported_opset(exporter: str, opset: int) -> int:
    """The opset the file gets: ``opset``, capped at :data:`TORCHSCRIPT_MAX_OPSET` for the TorchScript exporter."""
    return opset if exporter == "dynamo" else min(opset, TORCHSCRIPT_MAX_OPSET)


def exporter_metadata(exporter: str, opset: int) -> dict:
    """The metadata that records how the graph was traced (exporter, opset, torch and onnx versions)."""
    import onnx

    return {
        "exporter": f"torch.onnx.export(dynamo={exporter == 'dynamo'})",
        "opset": str(exported_opset(exporter, opset)),
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
    }


def to_onnx(graph: EncoderGraph, preprocess: Preprocess, exporter: str, opset: int):
    """The ONNX ModelProto of ``graph`` (input :data:`INPUT_NAME`, output named after ``graph.output``)."""
    import onnx

    example = torch.zeros((2, *preprocess.shape_hwc), dtype=torch.uint8)
    out_name = OUTPUT_NAMES[graph.output]
    try:
        with torch.no_grad(), _quiet_torch_onnx():
            if exporter == "dynamo":
                program = torch.onnx.export(
                    graph, (example,), dynamo=True, opset_version=exported_opset(exporter, opset),
                    input_names=[INPUT_NAME], output_names=[out_name],
                    dynamic_shapes=({0: torch.export.Dim("batch")},), optimize=True, verbose=False,
                    external_data=False,
                )
                proto = program.model_proto
            else:
                buf = io.BytesIO()
                torch.onnx.export(
                    graph, (example,), buf, dynamo=False, opset_version=exported_opset(exporter, opset),
                    input_names=[INPUT_NAME], output_names=[out_name],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, out_name: {0: "batch"}}, do_constant_folding=True,
                )
                proto = onnx.load_from_string(buf.getvalue())
    except Exception as exc:
        other = "torchscript" if exporter == "dynamo" else "dynamo"
        raise ModelError(
            f"ONNX export of {type(graph.model).__name__}.encode with the {exporter} exporter failed "
            f"({type(exc).__name__}: {str(exc)[:300]}); try exporter={other!r}"
        ) from exc
    return proto


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
