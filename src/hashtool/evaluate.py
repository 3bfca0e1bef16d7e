"""Retrieval metrics over binary codes (numpy only).

Codes are packed uint8 arrays in the :mod:`hashtool.codes` format. Distances are integer Hamming distances
(XOR of uint64 words and ``np.bitwise_count``). Work goes in blocks of queries, so the memory is
``block x n_database`` and 10,000 x 60,000 fits easily; no N x N matrix is ever built.

Ranking and ties
    Each query ranks the whole database by (Hamming distance, database position): within one distance, items
    keep the order in which they appear in the database (a stable sort). Hamming distances tie all the time,
    so this rule is part of every number below; it is neither optimistic nor pessimistic on average.

Relevance
    Labels are either one int per item (relevant = same label) or a multi-hot (n, C) array (relevant = at
    least one label shared).

Metrics (means over queries)
    ``map``            AP over the whole ranking: mean of precision@i over the positions i of every relevant
                       item. Queries with no relevant item in the database have no AP and are left out of the
                       mean (their number is reported as ``queries_without_relevant``).
    ``map@R``          AP over the top R, hashing-literature convention (DPSH, HashNet code): mean of
                       precision@i over the relevant positions i <= R; a query with no relevant item in its
                       top R scores 0 and counts in the mean.
    ``precision@k``    share of relevant items among the top k.
    ``precision_r2``   precision of the items within Hamming radius 2 (inclusive); a query that retrieves
                       nothing scores 0 (the common convention), and the share of such queries is reported as
                       ``empty_r2``.
    ``pr_curve``       for every radius r = 0..bits: precision and recall of the items within distance <= r.
                       Precision is averaged over the queries that retrieve at least one item at that radius,
                       recall over the queries with at least one relevant item.
"""

from __future__ import annotations

import numpy as np

from hashtool.codes import check_packed, to_words
from hashtool.errors import ArgumentError

DEFAULT_TOPK = (100, 1000)
DEFAULT_MAP_AT = (1000,)
DEFAULT_BLOCK = 128


def hamming_block(query_words: np.ndarray, db_words: np.ndarray) -> np.ndarray:
    """Hamming distances (nq, n) int32 between uint64 word arrays (nq, w) and (n, w)."""
    out = np.zeros((query_words.shape[0], db_words.shape[0]), dtype=np.int32)
    for w in range(query_words.shape[1]):
        out += np.bitwise_count(query_words[:, w, None] ^ db_words[None, :, w])
    return out


def hamming_distances(queries, database, nbits: int | None = None) -> np.ndarray:
    """All Hamming distances (nq, n) int32 between packed codes. For small inputs; metrics use blocks."""
    q = check_packed(queries, nbits)
    d = check_packed(database, q.shape[1] * 8)
    return hamming_block(to_words(q), to_words(d))


def _check_labels(labels, n: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2) or labels.shape[0] != n:
        raise ArgumentError(f"{what} must have {n} rows (one int per item, or multi-hot (n, classes)), got shape {labels.shape}")
    if labels.ndim == 2:
        return labels.astype(bool)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ArgumentError(f"{what} must be integers, got {labels.dtype}")
    return labels


def relevance(query_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    """Boolean (nq, n): same label, or at least one shared label for multi-hot labels."""
    if query_labels.ndim == 1:
        return query_labels[:, None] == db_labels[None, :]
    return (query_labels.astype(np.float32) @ db_labels.astype(np.float32).T) > 0


def retrieval_metrics(
    query_codes,
    query_labels,
    db_codes,
    db_labels,
    nbits: int | None = None,
    *,
    topk=DEFAULT_TOPK,
    map_at=DEFAULT_MAP_AT,
    radius: int = 2,
    pr_curve: bool = True,
    block: int = DEFAULT_BLOCK,
) -> dict:
    """Every metric of the module docstring, as a JSON-able dict."""
    q = check_packed(query_codes, nbits)
    nbits = q.shape[1] * 8
    d = check_packed(db_codes, nbits)
    nq, n = len(q), len(d)
    ql = _check_labels(query_labels, nq, "query labels")
    dl = _check_labels(db_labels, n, "database labels")
    if ql.ndim != dl.ndim or (ql.ndim == 2 and ql.shape[1] != dl.shape[1]):
        raise ArgumentError(f"query labels {ql.shape} and database labels {dl.shape} are not of the same kind")
    topk = tuple(int(k) for k in topk)
    map_at = tuple(int(r) for r in map_at)
    for k in topk + map_at:
        if not 1 <= k:
            raise ArgumentError(f"top-k cutoffs must be positive, got {k}")
    if block < 1:
        raise ArgumentError(f"block must be positive, got {block}")
    qw, dw = to_words(q), to_words(d)
    positions = np.arange(1, n + 1, dtype=np.float64)

    ap_sum, ap_count = 0.0, 0
    map_at_sum = {r: 0.0 for r in map_at}
    prec_sum = {k: 0.0 for k in topk}
    r2_sum, r2_empty = 0.0, 0
    nb = nbits + 1
    ret_hist = np.zeros((nq, nb), dtype=np.int64)
    rel_hist = np.zeros((nq, nb), dtype=np.int64)
    n_rel = np.zeros(nq, dtype=np.int64)
    for start in range(0, nq, block):
        stop = min(nq, start + block)
        b = stop - start
        dist = hamming_block(qw[start:stop], dw)
        rel = relevance(ql[start:stop], dl)
        order = np.argsort(dist.astype(np.uint16), axis=1, kind="stable")
        rel_sorted = np.take_along_axis(rel, order, axis=1)
        cum = np.cumsum(rel_sorted, axis=1, dtype=np.int64)
        total = cum[:, -1]
        n_rel[start:stop] = total
        prec_at_i = cum / positions  # precision at every position
        contrib = np.where(rel_sorted, prec_at_i, 0.0)
        has = total > 0
        ap = contrib.sum(axis=1)[has] / total[has]
        ap_sum += float(ap.sum())
        ap_count += int(has.sum())
        for r in map_at:
            rr = min(r, n)
            got = cum[:, rr - 1]
            s = contrib[:, :rr].sum(axis=1)
            map_at_sum[r] += float(np.where(got > 0, s / np.maximum(got, 1), 0.0).sum())
        for k in topk:
            kk = min(k, n)
            prec_sum[k] += float((cum[:, kk - 1] / kk).sum())
        rows = np.arange(b)[:, None] * nb
        flat = (dist + rows).ravel()
        ret_hist[start:stop] = np.bincount(flat, minlength=b * nb).reshape(b, nb)
        rel_hist[start:stop] = np.bincount(flat, weights=rel.ravel(), minlength=b * nb).reshape(b, nb).astype(np.int64)
        within = dist <= radius
        ret = within.sum(axis=1)
        relret = (within & rel).sum(axis=1)
        r2_sum += float(np.where(ret > 0, relret / np.maximum(ret, 1), 0.0).sum())
        r2_empty += int((ret == 0).sum())

    out = {
        "bits": nbits,
        "queries": nq,
        "database": n,
        "queries_without_relevant": int(nq - ap_count),
        "map": ap_sum / ap_count if ap_count else 0.0,
    }
    for r in map_at:
        out[f"map@{r}"] = map_at_sum[r] / nq
    for k in topk:
        out[f"precision@{k}"] = prec_sum[k] / nq
    out[f"precision_r{radius}"] = r2_sum / nq
    out[f"empty_r{radius}"] = r2_empty / nq
    if pr_curve:
        ret_c = np.cumsum(ret_hist, axis=1)
        rel_c = np.cumsum(rel_hist, axis=1)
        prec, rec = [], []
        for r in range(nb):
            got = ret_c[:, r] > 0
            prec.append(float((rel_c[got, r] / ret_c[got, r]).mean()) if got.any() else 0.0)
            has = n_rel > 0
            rec.append(float((rel_c[has, r] / n_rel[has]).mean()) if has.any() else 0.0)
        out["pr_curve"] = {"radius": list(range(nb)), "precision": prec, "recall": rec}
    return out


def format_metrics(metrics: dict) -> str:
    """One line per scalar metric, for humans (the PR curve is left to --json)."""
    lines = []
    for key, value in metrics.items():
        if key == "pr_curve":
            continue
        lines.append(f"{key:>26}  {value:.4f}" if isinstance(value, float) else f"{key:>26}  {value}")
    return "\n".join(lines)


# -- near-duplicate (copy) retrieval ----------------------------------------------------------------


def tie_aware_hits(distances: np.ndarray, target: np.ndarray, ks=(1, 5), valid: np.ndarray | None = None) -> dict:
    """Expected top-k hit rate of each query's one true item, with ties broken at random.

    ``distances`` (nq, n): any dissimilarity (Hamming distances, or negated cosine similarities); ``target``
    (nq,): the column of each query's true item; ``valid`` (nq, n) bool, optional: candidates that take part
    (False for items that are neither the target nor a fair competitor, such as another crop of the query's
    own photo). With ``less`` candidates strictly closer than the target and ``ties`` others at the same
    distance, the target lands uniformly at one of ranks ``less+1 .. less+ties+1``, so its chance of being in
    the top k is ``clip((k - less) / (ties + 1), 0, 1)``. Returns ``{"top1": (nq,) float, ...}``.
    """
    d = np.asarray(distances, dtype=np.float64)
    target = np.asarray(target, dtype=np.int64)
    if d.ndim != 2 or target.shape != (d.shape[0],):
        raise ArgumentError(f"distances must be (nq, n) and target (nq,), got {d.shape} and {target.shape}")
    mine = d[np.arange(len(d)), target][:, None]
    others = np.ones_like(d, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).copy()
    others[np.arange(len(d)), target] = False
    less = ((d < mine) & others).sum(axis=1)
    ties = ((d == mine) & others).sum(axis=1)
    return {f"top{k}": np.clip((k - less) / (ties + 1.0), 0.0, 1.0) for k in ks}


def radius_for_recall(copy_distances: np.ndarray, recall: float = 0.95) -> float:
    """The smallest distance threshold (inclusive) within which ``recall`` of the copies fall."""
    d = np.sort(np.asarray(copy_distances, dtype=np.float64).ravel())
    if not len(d):
        raise ArgumentError("no copy distances given")
    if not 0.0 < recall <= 1.0:
        raise ArgumentError(f"recall must be in (0, 1], got {recall}")
    return float(d[int(np.ceil(recall * len(d))) - 1])
