"""Pieces shared by several methods."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hashtool.baselines import itq_rotation

ROTATION_IMAGES = 20000


@torch.no_grad()
def fold_itq_rotation(linear: nn.Linear, pre_code, images: torch.Tensor, seed: int = 0, max_images: int = ROTATION_IMAGES) -> dict:
    """Centre and rotate a code layer in place, ITQ-style, and fold both into its last linear layer.

    ``pre_code(x)`` must return ``linear``'s output (the values whose sign, or sign around 0 of the
    pre-sigmoid logit, gives the bits) for normalised images ``x``. On up to ``max_images`` training images
    (a seeded sample): subtract the mean (each bit then splits the sample near its middle: balance) and
    find ITQ's orthogonal rotation R (:func:`hashtool.baselines.itq_rotation`), then set
    ``W' = R^T W`` and ``b' = R^T (b - mean)`` so ``linear`` now outputs ``(z - mean) R``. The rotation
    keeps every distance of the real-valued code and only changes where the hypercube's axes cut it.
    Returns the quantisation loss per image before and after.
    """
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(images), generator=g)[:max_images].to(images.device)
    z = torch.cat([pre_code(images[idx[i : i + 1000]]).double().cpu() for i in range(0, len(idx), 1000)]).numpy()
    mean = z.mean(axis=0)
    V = z - mean
    R = itq_rotation(V, rng=seed)

    def qloss(M):
        return float(np.square(np.where(M >= 0, 1.0, -1.0) - M).sum() / len(M))

    before, after = qloss(V), qloss(V @ R)
    Rt = torch.from_numpy(R.T).to(linear.weight.dtype).to(linear.weight.device)
    m = torch.from_numpy(mean).to(linear.weight.dtype).to(linear.weight.device)
    linear.weight.copy_(Rt @ linear.weight)
    linear.bias.copy_(Rt @ (linear.bias - m))
    return {"quantization_before": before, "quantization_after": after}
