"""The computation an encoder file holds, as a torch module: :class:`EncoderGraph`.

::

    images uint8 (batch, H, W, C)                     only the batch axis is dynamic
      -> transpose to NCHW -> float32
      -> x * scale + shift                            per channel, from Preprocess.affine()
      -> model.encode(x)                              the hash layer; decoder/classifier are not traced
      -> "real":  float32 (batch, bits)
      -> "bits":  uint8 {0,1} (batch, bits)           the model's rule: sign (>= 0) or sigmoid (> 0.5)
      -> "packed": uint8 (batch, bits / 8)            byte b = sum_j bit[8b + j] << j (hashtool's order),
                                                      computed as a MatMul with [1, 2, ..., 128] (exact)

:mod:`hashtool.export.trace` turns it into ONNX; :mod:`hashtool.export.parity` runs it eagerly as the
reference the ONNX file is checked against.
"""

from __future__ import annotations

import torch
from torch import nn

from hashtool.codes import BINARIZE_RULES
from hashtool.encode.encoder import OUTPUT_KINDS
from hashtool.errors import ArgumentError, ModelError
from hashtool.preprocess import Preprocess
from hashtool.train.models import HashModel, binarize


class EncoderGraph(nn.Module):
    """uint8 NHWC images -> normalise -> ``model.encode`` -> binarise -> pack: the exported computation."""

    def __init__(self, model: HashModel, preprocess: Preprocess, output: str = "packed"):
        super().__init__()
        if output not in OUTPUT_KINDS:
            raise ArgumentError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
        if model.binarize not in BINARIZE_RULES:
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
