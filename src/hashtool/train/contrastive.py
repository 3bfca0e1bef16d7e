"""The contrastive loss on hash codes that every contrastive method shares (``edit-contrastive``, ``contrastive``).

Given the real-valued hash layers ``u_a``, ``u_b`` (tanh outputs in (-1, 1), shape (n, bits)) of two views of
the same n instances, :func:`code_contrastive_loss` returns

* the contrastive term: NT-Xent (temperature ``temperature``) between the codes of a and b, every other view in
  the batch a negative. With ``straight_through`` the codes are ``sign(u)`` with an identity gradient
  (:func:`codes_st`), scaled to unit length, so the similarity trained is the Hamming one the index uses;
  otherwise the cosine of the tanh outputs;
* ``quant * mean((1 - |u|)^2)``: units pushed to +-1;
* ``balance * mean(mean_batch(u)^2)``: each bit on for half of the images;
* ``decorr * mean(offdiag(corr(u))^2)``: bits carry different information;

and a dict of the four terms (floats) to log. ``hp`` holds those five keys.
"""

from __future__ import annotations

import torch
from torch import nn

from hashtool.train.models import binarize

LOSS_KEYS = ("temperature", "straight_through", "quant", "balance", "decorr")


def codes_st(u: torch.Tensor) -> torch.Tensor:
    """sign(u) (0 -> +1, the codes' rule) forward, identity gradient backward."""
    return u + (binarize(u, "sign").to(u.dtype) * 2 - 1 - u).detach()


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over ``z`` = the 2n unit-length embeddings of views a (rows 0..n-1) and b (rows n..2n-1)."""
    n = z.shape[0] // 2
    sim = z @ z.T / float(temperature)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return nn.functional.cross_entropy(sim, target)


def code_contrastive_loss(u_a: torch.Tensor, u_b: torch.Tensor, hp: dict) -> tuple[torch.Tensor, dict]:
    """The shared loss on the tanh outputs of two views of the same instances (see the module docstring)."""
    bits = u_a.shape[1]
    if int(hp["straight_through"]):
        z = torch.cat([codes_st(u_a), codes_st(u_b)]) / bits**0.5
    else:
        z = nn.functional.normalize(torch.cat([u_a, u_b]), dim=1)
    contrast = nt_xent(z, float(hp["temperature"]))
    u = torch.cat([u_a, u_b])
    quant = ((1 - u.abs()) ** 2).mean()
    balance = (u.mean(dim=0) ** 2).mean()
    c = u - u.mean(dim=0)
    cov = c.T @ c / len(c)
    d = torch.sqrt(torch.diagonal(cov) + 1e-6)
    corr = cov / (d[:, None] * d[None, :])
    decorr = (corr - torch.diag(torch.diagonal(corr))).pow(2).sum() / (bits * (bits - 1))
    loss = contrast + float(hp["quant"]) * quant + float(hp["balance"]) * balance + float(hp["decorr"]) * decorr
    return loss, {k: float(v.detach()) for k, v in (("contrast", contrast), ("quant", quant), ("balance", balance), ("decorr", decorr))}
