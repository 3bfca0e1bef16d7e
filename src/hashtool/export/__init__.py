"""ONNX export of a model's encoder, cut at the hash layer, with its parity check (needs torch + onnx).

See :mod:`hashtool.export.onnx_export` for the graph, the metadata and the parity protocol.
"""

from hashtool.export.onnx_export import (
    OPSET,
    EncoderGraph,
    ExportResult,
    ParityReport,
    check_parity,
    export_encoder,
    export_model,
)

__all__ = ["OPSET", "EncoderGraph", "ExportResult", "ParityReport", "check_parity", "export_encoder", "export_model"]
