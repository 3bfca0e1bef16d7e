"""The ONNX file both exporters write: its opset, the checker it must pass, the atomic write, the result.

Needs the ``onnx`` package (in the functions that use it), never torch: the baselines' exporter
(:mod:`hashtool.export.baseline_onnx`) builds its graph by hand and shares these rules.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hashtool.encode.encoder import OPSET  # noqa: F401 (export names it; the runtime module owns it)
from hashtool.errors import ModelError

if TYPE_CHECKING:
    from hashtool.export.parity import ParityReport


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


def check_onnx(proto) -> None:
    """``onnx.checker.check_model(full_check=True)``, its failure as a :class:`ModelError`."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ModelError(f"the exported ONNX graph fails onnx.checker: {str(exc)[:300]}") from exc


def strip_node_metadata(proto) -> None:
    """Drop the per-node metadata torch's dynamo exporter writes (the module path and the source file and line of
    every traced call): it carries the builder's paths into the file and makes exports irreproducible."""
    for graph in [proto.graph, *(f for f in proto.functions)]:
        for node in graph.node:
            del node.metadata_props[:]


def write_encoder(proto, onnx_path, metadata: dict, parity: ParityReport | None, t0: float) -> ExportResult:
    """Serialise ``proto`` to ``onnx_path`` atomically (temporary file in the same folder, fsync, rename).

    ``t0``: the ``time.perf_counter()`` at which the export began (for :attr:`ExportResult.seconds`).
    """
    from hashtool.fileio import atomic_write

    strip_node_metadata(proto)
    data = proto.SerializeToString()
    path = Path(onnx_path)
    with atomic_write(path) as f:
        f.write(data)
    return ExportResult(path=path, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), metadata=metadata,
                        parity=parity, seconds=time.perf_counter() - t0)
