"""Evaluate a deep checkpoint on a retrieval protocol (the torch side of ``hashtool eval``)."""

from __future__ import annotations

import time

from hashtool.errors import DatasetError, ModelError
from hashtool.evaluate import retrieval_metrics
from hashtool.train.checkpoint import checkpoint_preprocess, load_checkpoint, read_checkpoint, save_checkpoint
from hashtool.train.data import encode_packed


def evaluate_checkpoint(path, splits, device: str = "cpu", store: bool = False, batch_size: int = 1024) -> dict:
    """Encode the protocol's queries and database with the checkpoint's model and compute every metric.

    With ``store=True`` the scalar metrics and the protocol are written back into the checkpoint's ``meta``
    (atomically), so the model file carries its own result.
    """
    model, ckpt = load_checkpoint(path)
    model.to(device)
    preprocess = checkpoint_preprocess(ckpt)
    ds = splits.dataset
    if tuple(ds.shape_hwc) != tuple(preprocess.shape_hwc):
        raise ModelError(
            f"{path}: the model takes {preprocess.shape_hwc} images but dataset {ds.name} has {ds.shape_hwc}; "
            "evaluate on the dataset it was trained for"
        )
    q, ql = splits.part("query")
    d, dl = splits.part("database")
    if ql is None or dl is None:
        raise DatasetError(f"{ds.name} has no labels, so there is nothing to evaluate")
    t0 = time.perf_counter()
    qc = encode_packed(model, q, preprocess, device, batch_size)
    dc = encode_packed(model, d, preprocess, device, batch_size)
    encode_s = time.perf_counter() - t0
    metrics = retrieval_metrics(qc, ql, dc, dl)
    metrics["encode_images_per_s"] = (len(q) + len(d)) / max(encode_s, 1e-9)
    if store:
        meta = dict(ckpt.get("meta", {}))
        meta["metrics"] = {k: v for k, v in metrics.items() if k != "pr_curve"}
        meta["metrics_protocol"] = splits.protocol()
        save_checkpoint(path, model.cpu(), preprocess, meta=meta, extra=ckpt.get("extra"))
    return metrics


__all__ = ["evaluate_checkpoint", "read_checkpoint"]
