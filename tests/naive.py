"""Slow, obviously-correct reference implementations ("naive twins") of hashtool's fast paths.

Each function here is written for clarity, with plain Python loops where that makes it obvious, and
is compared with the real implementation over inputs drawn by hypothesis.
"""

from __future__ import annotations

import numpy as np


def pack_bits(bits) -> np.ndarray:
    """Pack 0/1 bits (n, B): bit j of a code is bit (j % 8) of byte (j // 8)."""
    bits = np.asarray(bits)
    n, nbits = bits.shape
    out = np.zeros((n, nbits // 8), dtype=np.uint8)
    for i in range(n):
        for j in range(nbits):
            if bits[i, j]:
                out[i, j // 8] |= 1 << (j % 8)
    return out


def unpack_bits(packed, nbits: int) -> np.ndarray:
    packed = np.asarray(packed, dtype=np.uint8)
    n = packed.shape[0]
    out = np.zeros((n, nbits), dtype=np.uint8)
    for i in range(n):
        for j in range(nbits):
            out[i, j] = (int(packed[i, j // 8]) >> (j % 8)) & 1
    return out


def hamming_matrix(queries, database) -> np.ndarray:
    """All pairwise Hamming distances between packed codes, via np.unpackbits."""
    q = np.unpackbits(np.asarray(queries, dtype=np.uint8), axis=1).astype(np.int32)
    d = np.unpackbits(np.asarray(database, dtype=np.uint8), axis=1).astype(np.int32)
    if len(q) == 0 or len(d) == 0:
        return np.zeros((len(q), len(d)), dtype=np.int32)
    return (q[:, None, :] != d[None, :, :]).sum(axis=2).astype(np.int32)


def retrieval_metrics(query_codes, query_labels, db_codes, db_labels, topk=(), map_at=(), radius=2):
    """Retrieval metrics by the book, one query at a time with Python loops (see hashtool.evaluate).

    Ranking: database items sorted by (Hamming distance, database position). Relevance: same label, or a
    shared label for 2-D multi-hot labels.
    """
    q_bits = np.unpackbits(np.asarray(query_codes, dtype=np.uint8), axis=1)
    d_bits = np.unpackbits(np.asarray(db_codes, dtype=np.uint8), axis=1)
    nbits = q_bits.shape[1]
    ql, dl = np.asarray(query_labels), np.asarray(db_labels)
    n = len(d_bits)

    def is_rel(a, b):
        if ql.ndim == 1:
            return int(a) == int(b)
        return any(x and y for x, y in zip(a, b))

    aps, at_r, prec_k, r2, empty = [], {r: [] for r in map_at}, {k: [] for k in topk}, [], 0
    pr_prec = [[] for _ in range(nbits + 1)]
    pr_rec = [[] for _ in range(nbits + 1)]
    for qi in range(len(q_bits)):
        dist = [int(sum(int(x) != int(y) for x, y in zip(q_bits[qi], d_bits[j]))) for j in range(n)]
        rel = [is_rel(ql[qi], dl[j]) for j in range(n)]
        ranking = sorted(range(n), key=lambda j: (dist[j], j))
        hits, precs = 0, []
        for pos, j in enumerate(ranking, start=1):
            if rel[j]:
                hits += 1
                precs.append(hits / pos)
        total = sum(rel)
        if total:
            aps.append(sum(precs) / total)
        for r in map_at:
            hits, ps = 0, []
            for pos, j in enumerate(ranking[:r], start=1):
                if rel[j]:
                    hits += 1
                    ps.append(hits / pos)
            at_r[r].append(sum(ps) / len(ps) if ps else 0.0)
        for k in topk:
            prec_k[k].append(sum(rel[j] for j in ranking[:k]) / min(k, n))
        inside = [j for j in range(n) if dist[j] <= radius]
        if inside:
            r2.append(sum(rel[j] for j in inside) / len(inside))
        else:
            r2.append(0.0)
            empty += 1
        for rad in range(nbits + 1):
            got = [j for j in range(n) if dist[j] <= rad]
            if got:
                pr_prec[rad].append(sum(rel[j] for j in got) / len(got))
            if total:
                pr_rec[rad].append(sum(rel[j] for j in got) / total)
    out = {"map": float(np.mean(aps)) if aps else 0.0, f"precision_r{radius}": float(np.mean(r2)),
           f"empty_r{radius}": empty / len(q_bits), "queries_without_relevant": len(q_bits) - len(aps)}
    for r in map_at:
        out[f"map@{r}"] = float(np.mean(at_r[r]))
    for k in topk:
        out[f"precision@{k}"] = float(np.mean(prec_k[k]))
    out["pr_precision"] = [float(np.mean(p)) if p else 0.0 for p in pr_prec]
    out["pr_recall"] = [float(np.mean(p)) if p else 0.0 for p in pr_rec]
    return out


def linear_hash_bits(x, mean, W):
    """Bits of a linear hash, one dot product at a time: bit j = sum_i (x_i - mean_i) W_ij >= 0."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros((x.shape[0], W.shape[1]), dtype=np.uint8)
    for i in range(x.shape[0]):
        for j in range(W.shape[1]):
            out[i, j] = 1 if float(np.dot(x[i] - mean, W[:, j])) >= 0 else 0
    return out


def normalize_pixels(images, mean, std) -> np.ndarray:
    """uint8 NHWC -> float64 NCHW with (x / 255 - mean[c]) / std[c], one pixel at a time."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    out = np.zeros((n, c, h, w), dtype=np.float64)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                for ch in range(c):
                    out[i, ch, y, x] = (images[i, y, x, ch] / 255.0 - mean[ch]) / std[ch]
    return out


def binarize_values(real, rule: str) -> np.ndarray:
    """Bits from real values: "sign" -> 1 where value >= 0 (so 0 and -0 give 1); "sigmoid" -> 1 where value > 0.5."""
    real = np.asarray(real, dtype=np.float64)
    out = np.zeros(real.shape, dtype=np.uint8)
    for idx, v in np.ndenumerate(real):
        out[idx] = 1 if (v >= 0 if rule == "sign" else v > 0.5) else 0
    return out


def hamming_rows(query, database) -> np.ndarray:
    """Hamming distances from one packed query (w,) to every packed code of ``database`` (n, w)."""
    q = np.unpackbits(np.asarray(query, dtype=np.uint8)[None, :], axis=1)
    d = np.unpackbits(np.asarray(database, dtype=np.uint8).reshape(-1, q.shape[1] // 8), axis=1)
    return (q != d).sum(axis=1).astype(np.int32)


def knn_search(queries, database, ids, k):
    """Exact k-NN the slow way: every distance, then a stable argsort by (distance, id).

    Returns (distances int32 (nq, k), ids int64 (nq, k)), missing entries -1 in both.
    """
    queries = np.asarray(queries, dtype=np.uint8)
    ids = np.asarray(ids, dtype=np.int64)
    out_d = np.full((len(queries), k), -1, dtype=np.int32)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    by_id = np.argsort(ids, kind="stable")
    for i, q in enumerate(queries):
        dist = hamming_rows(q, database)
        order = by_id[np.argsort(dist[by_id], kind="stable")][:k]
        out_d[i, : len(order)] = dist[order]
        out_i[i, : len(order)] = ids[order]
    return out_d, out_i


def sparse_table(keys):
    """A sparse multi-index table the slow way: rows in (key, row) order, the distinct keys, and where each
    key's rows start (one more entry: the number of rows)."""
    keys = np.asarray(keys)
    order = np.argsort(keys, kind="stable")
    distinct, first = np.unique(keys[order], return_index=True)
    return order, distinct, np.append(first, len(keys))


def range_search(queries, database, ids, max_distance):
    """Exact range search (``max_distance`` inclusive) the slow way, as CSR (lims, distances, ids)."""
    queries = np.asarray(queries, dtype=np.uint8)
    ids = np.asarray(ids, dtype=np.int64)
    by_id = np.argsort(ids, kind="stable")
    lims, dists, found = [0], [], []
    for q in queries:
        dist = hamming_rows(q, database)
        order = by_id[np.argsort(dist[by_id], kind="stable")]
        order = order[dist[order] <= max_distance]
        dists.append(dist[order])
        found.append(ids[order])
        lims.append(lims[-1] + len(order))
    cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)  # noqa: E731
    return np.array(lims, dtype=np.int64), cat(dists, np.int32), cat(found, np.int64)


def adalabel_supervised_loss(h, codeword_logits, labels, scale: float, quant: float) -> float:
    """AdaLabelHash's fully labeled loss, one image and one class at a time (float64).

    For each image i: similarities s_c = scale * sum_j h[i, j] * tanh(V[c, j]) / bits, cross-entropy
    -log(exp(s_y) / sum_c exp(s_c)); averaged over images, plus quant * mean over all units of (|h| - 1)^2.
    """
    import math

    h = np.asarray(h, dtype=np.float64)
    v = np.asarray(codeword_logits, dtype=np.float64)
    n, bits = h.shape
    ce = 0.0
    for i in range(n):
        sims = []
        for c in range(v.shape[0]):
            sims.append(scale * sum(h[i, j] * math.tanh(v[c, j]) for j in range(bits)) / bits)
        top = max(sims)
        log_norm = top + math.log(sum(math.exp(s - top) for s in sims))
        ce += log_norm - sims[int(labels[i])]
    q = sum((abs(h[i, j]) - 1.0) ** 2 for i in range(n) for j in range(bits)) / (n * bits)
    return ce / n + quant * q


def adaptive_thresholds(prob_batches, ema: float) -> list:
    """FreeMatch's self-adaptive thresholds after each batch, one scalar at a time (float64): a running mean of
    the batch's mean top probability and one per class of its mean probability, both from 1 / classes; class
    c's threshold is the first times the c-th over the largest of the per-class ones."""
    classes = len(prob_batches[0][0])
    conf, per_class = 1.0 / classes, [1.0 / classes] * classes
    out = []
    for batch in prob_batches:
        top = sum(max(row) for row in batch) / len(batch)
        conf = ema * conf + (1.0 - ema) * top
        for c in range(classes):
            per_class[c] = ema * per_class[c] + (1.0 - ema) * sum(row[c] for row in batch) / len(batch)
        biggest = max(per_class)
        out.append([conf * per_class[c] / biggest for c in range(classes)])
    return out


def image_distance_matrix(codes, variants=None) -> np.ndarray:
    """Distances between images: d(a, b), or with variants min over d(a, b), d(v(a), b), d(a, v(b)) for each v."""
    d = hamming_matrix(codes, codes)
    if variants is not None:
        for v in range(np.asarray(variants).shape[1]):
            dv = hamming_matrix(variants[:, v], codes)  # dv[i, j] = d(v(i), j)
            d = np.minimum(d, np.minimum(dv, dv.T))
    return d


def dup_groups(codes, ids, max_distance, variants=None):
    """Near-duplicate groups by breadth-first search over every pair: sorted [(ids, distances to first, diameter)].

    Also returns the number of pairs within ``max_distance``.
    """
    d = image_distance_matrix(codes, variants)
    n = len(codes)
    seen, groups = set(), []
    for s in range(n):
        if s in seen:
            continue
        comp, todo = {s}, [s]
        while todo:
            u = todo.pop()
            for v in range(n):
                if v != u and d[u, v] <= max_distance and v not in comp:
                    comp.add(v)
                    todo.append(v)
        seen |= comp
        if len(comp) > 1:
            members = sorted(comp, key=lambda m: int(ids[m]))
            diameter = max(int(d[a, b]) for a in members for b in members)
            groups.append(([int(ids[m]) for m in members], [int(d[members[0], m]) for m in members], diameter))
    pairs = sum(1 for i in range(n) for j in range(i + 1, n) if d[i, j] <= max_distance)
    return sorted(groups), pairs


def code_health(codes, nbits):
    """Code health the slow way: per-bit counts, Pearson correlation by its formula, a Counter of codes.

    Returns (ones shares per bit, mean |correlation| over pairs of varying bits or None, distinct codes,
    largest group, share of images in the 10 most common codes).
    """
    from collections import Counter

    bits = unpack_bits(codes, nbits).astype(float)
    n = len(bits)
    share = [sum(bits[i, j] for i in range(n)) / n for j in range(nbits)]
    varying = [j for j in range(nbits) if 0 < share[j] < 1]
    corrs = []
    for a in varying:
        for b in varying:
            if a == b:
                continue
            ma, mb = share[a], share[b]
            cov = sum((bits[i, a] - ma) * (bits[i, b] - mb) for i in range(n)) / n
            sa = (sum((bits[i, a] - ma) ** 2 for i in range(n)) / n) ** 0.5
            sb = (sum((bits[i, b] - mb) ** 2 for i in range(n)) / n) ** 0.5
            corrs.append(abs(cov / (sa * sb)))
    counts = sorted(Counter(bytes(c) for c in np.asarray(codes, dtype=np.uint8)).values(), reverse=True)
    return share, (sum(corrs) / len(corrs) if corrs else None), len(counts), counts[0], sum(counts[:10]) / n
def tie_aware_hit(dist_row, target, k, valid_row=None):
    """Expected top-k hit of one query by enumerating every order of the tied items (small rows only)."""
    import itertools
    from fractions import Fraction

    cands = [j for j in range(len(dist_row)) if j == target or valid_row is None or valid_row[j]]
    ties = [j for j in cands if dist_row[j] == dist_row[target]]
    less = sum(1 for j in cands if dist_row[j] < dist_row[target])
    hits = total = 0
    for order in itertools.permutations(ties):
        total += 1
        hits += less + order.index(target) + 1 <= k
    return Fraction(hits, total)


def trim_box(arr, tolerance: int, keep: float):
    """Slow twin of hashtool.files.images.trim_box: line by line, pixel by pixel."""
    import math

    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[:, :, None]

    def flat(line) -> bool:  # line: (k, c)
        return all(int(max(line[:, ch])) - int(min(line[:, ch])) <= tolerance for ch in range(line.shape[1]))

    def runs(lines) -> tuple[int, int]:
        n = len(lines)
        flags = [flat(lines[i]) for i in range(n)]
        if all(flags):
            return 0, 0
        lead = 0
        while flags[lead]:
            lead += 1
        trail = 0
        while flags[n - 1 - trail]:
            trail += 1
        return (lead, trail) if n - lead - trail >= max(1, math.ceil(keep * n)) else (0, 0)

    h, w = a.shape[:2]
    top, bottom = runs([a[i] for i in range(h)])
    a = a[top:h - bottom]
    left, right = runs([a[:, j] for j in range(w)])
    return left, top, w - right, h - bottom


# -- augmentation ops (hashtool.train.data), one image and one pixel at a time ----------------------


def shift_images(x, dy, dx, p, fill):
    """Output pixel (r, c) of image i is input pixel (r + dy[i] - p, c + dx[i] - p), or ``fill`` outside."""
    x = np.asarray(x, dtype=np.float64)
    n, c, h, w = x.shape
    out = np.empty_like(x)
    for i in range(n):
        for ch in range(c):
            for r in range(h):
                for col in range(w):
                    sr, sc = r + int(dy[i]) - p, col + int(dx[i]) - p
                    out[i, ch, r, col] = x[i, ch, sr, sc] if 0 <= sr < h and 0 <= sc < w else fill[ch]
    return out


def flip_images(x, flip):
    x = np.asarray(x, dtype=np.float64)
    return np.stack([img[:, :, ::-1] if f else img for img, f in zip(x, flip)]) if len(x) else x


def cutout_images(x, cy, cx, size, fill):
    """The size x size square whose top-left corner is (cy - size // 2, cx - size // 2), clipped, set to ``fill``."""
    x = np.array(x, dtype=np.float64)
    n, c, h, w = x.shape
    for i in range(n):
        top, left = int(cy[i]) - size // 2, int(cx[i]) - size // 2
        for r in range(max(top, 0), min(top + size, h)):
            for col in range(max(left, 0), min(left + size, w)):
                x[i, :, r, col] = fill
    return x


def contrast_images(x, factor):
    """Each image's pixels moved away from (factor > 1) or toward (< 1) the image's mean."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for i in range(len(x)):
        m = x[i].mean()
        out[i] = m + (x[i] - m) * factor[i]
    return out


def sylvester_hadamard(n: int) -> np.ndarray:
    """H[i, j] = (-1) ** popcount(i & j): the Sylvester Hadamard matrix of order n (a power of two)."""
    return np.array([[(-1) ** bin(i & j).count("1") for j in range(n)] for i in range(n)], dtype=np.float64)


def centre_bce(h, labels, centres) -> float:
    """Mean binary cross-entropy of sigmoid units h (n, bits) toward the 0/1 bits of their class's +-1 centre."""
    total, count = 0.0, 0
    for row, y in zip(np.asarray(h, dtype=np.float64), labels):
        for v, c in zip(row, centres[y]):
            v = min(max(v, 1e-6), 1 - 1e-6)
            t = 1.0 if c > 0 else 0.0
            total += -(t * np.log(v) + (1 - t) * np.log(1 - v))
            count += 1
    return total / count


def affine_warp(images, theta, fill) -> np.ndarray:
    """Bilinear resampling of NCHW ``images`` at the affine map ``theta`` (n, 2, 3), one pixel at a time.

    ``theta`` maps an output pixel's normalised centre (x, y in [-1, 1], align_corners=False) to the input's;
    the input is read as ``fill`` outside the image (so, per channel, ``fill`` + bilinear of ``image - fill``
    with zeros outside).
    """
    x = np.asarray(images, dtype=np.float64)
    n, c, h, w = x.shape
    out = np.zeros_like(x)
    for i in range(n):
        t = np.asarray(theta[i], dtype=np.float64)
        for yo in range(h):
            for xo in range(w):
                u, v = (2 * xo + 1) / w - 1, (2 * yo + 1) / h - 1
                xi = t[0, 0] * u + t[0, 1] * v + t[0, 2]
                yi = t[1, 0] * u + t[1, 1] * v + t[1, 2]
                px, py = ((xi + 1) * w - 1) / 2, ((yi + 1) * h - 1) / 2
                x0, y0 = int(np.floor(px)), int(np.floor(py))
                for ch in range(c):
                    acc = 0.0
                    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
                        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
                            if 0 <= yy < h and 0 <= xx < w:
                                acc += wy * wx * (x[i, ch, yy, xx] - fill[ch])
                    out[i, ch, yo, xo] = acc + fill[ch]
    return out


def jitter(images, brightness, contrast, fill) -> np.ndarray:
    """Per image: v -> fill + (v - fill) * brightness, then v -> m + (v - m) * contrast, m the image's mean."""
    x = np.asarray(images, dtype=np.float64)
    out = np.zeros_like(x)
    for i in range(len(x)):
        y = np.stack([fill[ch] + (x[i, ch] - fill[ch]) * brightness[i] for ch in range(x.shape[1])])
        m = y.mean()
        out[i] = m + (y - m) * contrast[i]
    return out


def erase(images, boxes, fill) -> np.ndarray:
    """Per image: the pixels of rectangle (top, left, height, width) set to ``fill`` in every channel."""
    out = np.array(images, dtype=np.float64)
    for i, (top, left, bh, bw) in enumerate(np.asarray(boxes)):
        for yy in range(top, top + bh):
            for xx in range(left, left + bw):
                out[i, :, yy, xx] = fill
    return out


def nt_xent(z, temperature: float) -> float:
    """NT-Xent of 2n embeddings (rows i and i + n are the two views of instance i), one row at a time."""
    z = np.asarray(z, dtype=np.float64)
    m = len(z)
    n = m // 2
    total = 0.0
    for i in range(m):
        j = i + n if i < n else i - n
        logits = [float(z[i] @ z[k]) / temperature for k in range(m) if k != i]
        top = max(logits)
        log_sum = top + np.log(sum(np.exp(v - top) for v in logits))
        total += log_sum - float(z[i] @ z[j]) / temperature
    return total / m


def edit_contrastive_features(paths, sess, preprocess, views, work_side, quadrant_side, seed, max_edits, weights=None):
    """Slow twin of hashtool.train.methods.edit_contrastive.stream_features: decode every file, keep every
    instance, make every view of every instance, run the session once over all of them; float16 features
    (instances, views, dim), owner (index into the readable files) and the readable files."""
    from PIL import Image

    from hashtool.edits import random_edit
    from hashtool.errors import ImageError
    from hashtool.files.images import convert_image, open_image
    from hashtool.photosets import flatten_rgb
    from hashtool.train.data import to_tensor

    instances, owner, kept = [], [], []
    for path in paths:
        try:
            with open_image(path) as img:
                img = flatten_rgb(img)
        except (ImageError, OSError):
            continue
        kept.append(path)
        w, h = img.size
        crops = [img]
        if min(w, h) >= quadrant_side:
            crops += [img.crop((0, 0, w // 2, h // 2)), img.crop((w // 2, 0, w, h // 2)),
                      img.crop((0, h // 2, w // 2, h)), img.crop((w // 2, h // 2, w, h))]
        for crop in crops:
            crop = crop.copy()
            crop.thumbnail((work_side, work_side), Image.Resampling.BILINEAR)
            instances.append(crop)
            owner.append(len(kept) - 1)
    every = np.empty((len(instances), views, *preprocess.shape_hwc), dtype=np.uint8)
    for i, inst in enumerate(instances):
        for v in range(views):
            view = inst if v == 0 else random_edit(inst, np.random.default_rng([seed, i, v]), max_edits=max_edits, weights=weights)[0]
            every[i, v] = convert_image(view, preprocess)
    x = to_tensor(every.reshape(-1, *preprocess.shape_hwc), preprocess).numpy()
    feats = sess.run(None, {"x": x})[0]
    return feats.reshape(len(instances), views, -1).astype(np.float16), np.asarray(owner, dtype=np.int64), kept


def copy_top1_hits(query_codes, target, db_codes, owner):
    """Slow twin of edit_contrastive.copy_hits: the whole distance matrix, then each query's rank by counting."""
    d = hamming_matrix(query_codes, db_codes)
    out = []
    for i, t in enumerate(target):
        others = [j for j in range(len(db_codes)) if j != t and owner[j] != owner[t]]
        less = sum(1 for j in others if d[i, j] < d[i, t])
        ties = sum(1 for j in others if d[i, j] == d[i, t])
        out.append(min(1.0, max(0.0, (1 - less) / (ties + 1.0))))
    return np.asarray(out, dtype=np.float64)


def feature_neighbours(x, k):
    """For each row i, the k rows j != i with the largest dot product, largest first, ties to the lower j, the slow
    way: every dot product (float64), then a sort by (-dot, j)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty((len(x), k), dtype=np.int64)
    for i in range(len(x)):
        dots = [(-float(np.dot(x[i], x[j])), j) for j in range(len(x)) if j != i]
        out[i] = [j for _, j in sorted(dots)[:k]]
    return out
