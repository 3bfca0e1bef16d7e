"""Parity: the exported file must compute what the model computes, bit for bit, up to float rounding.

A batch of images goes through the reference (for a trained model the same
:class:`~hashtool.export.graph.EncoderGraph`, eager PyTorch: :func:`check_parity`) and through onnxruntime.
Bits must be equal, except bits whose reference pre-activation lies within ``epsilon`` of the threshold
(0 for sign, 0.5 for sigmoid), where float rounding differences between the two runtimes may legitimately
flip them. The report counts bits compared, equal, within epsilon, and differing; a bit differing *outside*
epsilon fails the export (:func:`attach_parity`). Importing this module needs neither torch nor onnx.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np

from hashtool.codes import binarize, rule_threshold
from hashtool.encode.encoder import INPUT_NAME
from hashtool.errors import ModelError
from hashtool.export.metadata import set_metadata

DEFAULT_EPSILON = 1e-4


@dataclass
class ParityReport:
    """Outcome of a parity check (counts over images x bits)."""

    images: int
    image_source: str
    bits_compared: int
    bits_equal: int
    bits_differ: int
    near_threshold: int  # bits whose reference pre-activation is within epsilon of the threshold
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


class ParityTally:
    """The counts of a :class:`ParityReport`, added up batch by batch."""

    def __init__(self):
        self.compared = self.differ = self.near = self.differ_near = self.differ_far = 0

    def add(self, bits: np.ndarray, reference_bits: np.ndarray, reference_real: np.ndarray, threshold: float,
            epsilon: float) -> None:
        """One batch: the runtime's bits, the reference's bits and the reference's pre-activations."""
        is_near = np.abs(reference_real - threshold) <= epsilon
        mismatch = bits != reference_bits
        self.compared += int(mismatch.size)
        self.differ += int(mismatch.sum())
        self.near += int(is_near.sum())
        self.differ_near += int((mismatch & is_near).sum())
        self.differ_far += int((mismatch & ~is_near).sum())

    def report(self, *, images: int, source: str, epsilon: float, threshold: float, max_abs_real_diff,
               t0: float, health: dict | None = None) -> ParityReport:
        """The report; ``t0`` is the ``time.perf_counter()`` at which the check began."""
        return ParityReport(
            images=int(images), image_source=source, bits_compared=self.compared,
            bits_equal=self.compared - self.differ, bits_differ=self.differ, near_threshold=self.near,
            differ_near_threshold=self.differ_near, differ_beyond_epsilon=self.differ_far, epsilon=float(epsilon),
            threshold=threshold, max_abs_real_diff=max_abs_real_diff, seconds=time.perf_counter() - t0, health=health,
        )


def onnx_session(onnx_model):
    """A quiet CPU onnxruntime session of ``onnx_model`` (serialized bytes or a path)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(onnx_model if isinstance(onnx_model, bytes) else str(onnx_model), so,
                                providers=["CPUExecutionProvider"])


def check_parity(graph, onnx_model, images: np.ndarray, *, source: str = "given",
                 epsilon: float = DEFAULT_EPSILON, batch_size: int = 256) -> ParityReport:
    """Compare onnxruntime's output for ``images`` with PyTorch's (see the module docstring).

    ``onnx_model``: serialized bytes or a path. ``graph`` is the :class:`EncoderGraph` it was exported from.
    """
    import torch

    from hashtool.codes import pack, unpack
    from hashtool.health import code_health
    from hashtool.train.models import binarize as torch_binarize

    t0 = time.perf_counter()
    all_bits = []
    sess = onnx_session(onnx_model)
    nbits = int(graph.model.bits)
    threshold = rule_threshold(graph.rule)[0]
    tally = ParityTally()
    max_real = 0.0
    for start in range(0, len(images), batch_size):
        batch = np.ascontiguousarray(images[start : start + batch_size])
        with torch.no_grad():
            x = graph.normalize(torch.from_numpy(batch))
            real_t = graph.model.encode(x).to(torch.float32)
            bits_t = torch_binarize(real_t, graph.rule).numpy().astype(bool)
        real_t = real_t.numpy()
        out = sess.run(None, {INPUT_NAME: batch})[0]
        if graph.output == "packed":
            bits_o = unpack(out, nbits).astype(bool)
        elif graph.output == "bits":
            bits_o = out.astype(bool)
        else:
            bits_o = binarize(out, graph.rule).astype(bool)
            max_real = max(max_real, float(np.abs(out - real_t).max()))
        all_bits.append(bits_o)
        tally.add(bits_o, bits_t, real_t, threshold, epsilon)
    return tally.report(
        images=len(images), source=source, epsilon=epsilon, threshold=threshold,
        max_abs_real_diff=max_real if graph.output == "real" else None, t0=t0,
        health=code_health(pack(np.concatenate(all_bits)), nbits).as_dict() if all_bits else None,
    )


def attach_parity(proto, metadata: dict, report: ParityReport, onnx_path, strict: bool, hint: str = "") -> None:
    """Record ``report`` in the ``parity`` metadata; with ``strict``, a failed check raises (nothing written)."""
    metadata["parity"] = json.dumps(report.to_dict(), sort_keys=True)
    set_metadata(proto, metadata)
    if strict and not report.ok:
        raise ModelError(
            f"export to {onnx_path} failed the parity check: {report.summary()}. Nothing was written"
            + (f"; {hint}" if hint else "")
        )
