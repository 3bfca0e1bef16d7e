"""Evaluate a deep checkpoint on a retrieval protocol (the torch side of ``hashtool eval``)."""

from __future__ import annotations

import time

from hashtool.errors import DatasetError, ModelError
from hashtool.evaluate import retrieval_metrics
from hashtool.train.checkpoint import checkpoint_preprocess, load_checkpoint, read_checkpoint, save_checkpoint
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
    (atomically), so the model file carries its own result (:func:`score_codes`).
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
    qc = encode_packed(model, q, preprocess, device, batch_size)
    dc = encode_packed(model, d, preprocess, device, batch_size)
    return score_codes(path, splits, qc, dc, time.perf_counter() - t0, store)


def score_codes(path, splits, query_codes, db_codes, encode_seconds: float, store: bool = False) -> dict:
    """Every metric of the packed codes of the protocol's queries and database, which the checkpoint at ``path``
    gave (by :func:`evaluate_checkpoint`, or a method's own faster path to the same codes); with ``store`` the
    scalar metrics and the protocol go into the checkpoint's ``meta``."""
    ql, dl = protocol_labels(splits)
    metrics = retrieval_metrics(query_codes, ql, db_codes, dl)
    metrics["encode_images_per_s"] = (len(query_codes) + len(db_codes)) / max(encode_seconds, 1e-9)
    if store:
        model, ckpt = load_checkpoint(path)
        meta = dict(ckpt.get("meta", {}))
        meta["metrics"] = {k: v for k, v in metrics.items() if k != "pr_curve"}
        meta["metrics_protocol"] = splits.protocol()
        save_checkpoint(path, model, checkpoint_preprocess(ckpt), meta=meta, extra=ckpt.get("extra"))
    return metrics


__all__ = ["evaluate_checkpoint", "score_codes", "protocol_labels", "read_checkpoint"]
