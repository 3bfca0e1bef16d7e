"""ONNX export of a model's encoder, cut at the hash layer, with its parity check (needs torch + onnx).

See :mod:`hashtool.export.onnx_export` for the entry and the parts (graph, trace, metadata, parity, file);
:mod:`hashtool.export.baseline_onnx` exports the shallow baselines with the same metadata and file rules.

The names below are loaded on first use (PEP 562), so importing the package itself stays free of torch:
tools that walk hashtool's packages (``pkgutil.walk_packages`` imports every package it recurses into,
as tests/test_architecture.py does) must not pull torch in by accident.
"""

from __future__ import annotations

import importlib

__all__ = ["OPSET", "EncoderGraph", "ExportResult", "ParityReport", "check_parity", "export_encoder", "export_model"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("hashtool.export.onnx_export"), name)
    raise AttributeError(f"module 'hashtool.export' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
