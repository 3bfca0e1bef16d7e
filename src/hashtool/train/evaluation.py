"""Evaluate a deep checkpoint on a retrieval protocol (the torch side of ``hashtool eval``)."""

from __future__ import annotations

import time

from hashtool.errors import DatasetError, ModelError
from hashtool.evaluate import retrieval_metrics
from hashtool.train.checkpoint import atomic_torch_save, checkpoint_preprocess, load_checkpoint, read_checkpoint
from hashtool.train.data import encode_packed


def protocol_labels(splits):
    """(query labels, database labels) of the protocol, or DatasetError when the dataset has none."""
    _, ql = splits.part("query")
    _, dl = splits.part("database")
    if ql is None or dl is None:
        raise DatasetError(f"{splits.dataset.name} has no labels, so there is nothing to evaluate")
    return ql, dl


def evaluate_checkpoint(path, splits, device: str = "cpu", store: bool = False, batch_size: int = 1024) -> dict:
    """Encode the protocol's queries and database with the checkpoint's model and compute every metric.

    With ``store=True`` the scalar metrics and the protocol are written back into the checkpoint's ``meta``
    (atomically), so the model file carries its own result (:func:`metrics_meta`).
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
    protocol_labels(splits)
    q, _ = splits.part("query")
    d, _ = splits.part("database")
    t0 = time.perf_counter()
    encode = _encoder(model, ckpt["method"], preprocess, device, batch_size)
    qc, dc = encode(q), encode(d)
    metrics = score_codes(splits, qc, dc, time.perf_counter() - t0)
    if store:
        ckpt["meta"] = {**ckpt.get("meta", {}), **metrics_meta(metrics, splits)}
        atomic_torch_save(ckpt, path)
    return metrics


def _encoder(model, method_name: str, preprocess, device: str, batch_size: int):
    """uint8 images -> packed codes: the method's own faster path on the CPU when it has one, else the model."""
    import torch

    from hashtool.train.methods import METHODS

    method = METHODS.get(method_name)
    if method is not None and method.encoder is not None and device == "cpu":
        return method.encoder(model, preprocess, torch.get_num_threads())
    return lambda images: encode_packed(model, images, preprocess, device, batch_size)


def score_codes(splits, query_codes, db_codes, encode_seconds: float) -> dict:
    """Every metric of the packed codes of the protocol's queries and database (made by
    :func:`evaluate_checkpoint`, or by a method's own faster path to the same codes)."""
    ql, dl = protocol_labels(splits)
    metrics = retrieval_metrics(query_codes, ql, db_codes, dl)
    metrics["encode_images_per_s"] = (len(query_codes) + len(db_codes)) / max(encode_seconds, 1e-9)
    return metrics


def metrics_meta(metrics: dict, splits) -> dict:
    """The checkpoint ``meta`` entries that carry an evaluation: the scalar metrics and the protocol."""
    return {"metrics": {k: v for k, v in metrics.items() if k != "pr_curve"}, "metrics_protocol": splits.protocol()}


__all__ = ["evaluate_checkpoint", "score_codes", "metrics_meta", "protocol_labels", "read_checkpoint"]
