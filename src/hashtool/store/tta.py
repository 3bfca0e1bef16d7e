"""Test-time variants: query with mirrored and rotated versions of an image too (numpy + pillow).

A learned encoder is rarely invariant to mirroring or rotation, so a mirrored copy of a photo can land
far from the original. ``--tta flip,rot90`` encodes each query image once per named transform as well,
searches with every code, and merges the answers: each id keeps its **smallest** distance over the
variants, and results are sorted by (distance, id) as every search is. Merging the top k of each variant
gives the exact top k of the merged distance: an id that misses variant v's top k is beaten there by k
ids whose merged distance is no larger.

Transforms act on the decoded, EXIF-oriented picture before the encoder's own resize, so a rotated
landscape photo is resized like a portrait one.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from hashtool.errors import ArgumentError

TRANSFORMS = {
    "flip": Image.Transpose.FLIP_LEFT_RIGHT,  # mirror left-right
    "flipv": Image.Transpose.FLIP_TOP_BOTTOM,  # mirror top-bottom
    "rot90": Image.Transpose.ROTATE_90,  # a quarter turn anticlockwise
    "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_270,
}


def parse_tta(text: str | None) -> tuple[str, ...]:
    """"flip,rot90" -> ("flip", "rot90"); empty or None -> (). Unknown names raise ArgumentError."""
    if not text:
        return ()
    names = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    bad = [t for t in names if t not in TRANSFORMS]
    if bad:
        raise ArgumentError(f"--tta: unknown transform(s) {', '.join(bad)}; choose from {', '.join(TRANSFORMS)}")
    return names


def variant_arrays(path, preprocess, names) -> np.ndarray:
    """The model inputs (len(names), h, w, c) of ``path`` under each transform; ImageError if unreadable."""
    from hashtool.files.images import convert_image, open_image

    img = open_image(path)
    try:
        return np.stack([convert_image(img.transpose(TRANSFORMS[t]), preprocess, name=path) for t in names])
    finally:
        img.close()


def encode_variants(encoder, paths, names, plain_codes, progress=None) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Codes (len(paths), len(names), nbytes) of every path under each transform, and [(position, reason)]
    of the files that could not be read now; their variants are their ``plain_codes`` (no extra matches)."""
    from hashtool.errors import ImageError

    out = np.repeat(np.asarray(plain_codes, dtype=np.uint8)[:, None, :], len(names), axis=1)
    failures = []
    batch, where = [], []

    def flush():
        if batch:
            codes = encoder.encode(np.concatenate(batch))
            for k, pos in enumerate(where):
                out[pos] = codes[k * len(names) : (k + 1) * len(names)]
            batch.clear()
            where.clear()

    for pos, path in enumerate(paths):
        try:
            batch.append(variant_arrays(path, encoder.preprocess, names))
            where.append(pos)
        except (ImageError, OSError) as exc:
            failures.append((pos, str(exc)))
        if len(batch) * len(names) >= 256:
            flush()
        if progress:
            progress(pos + 1, len(paths))
    flush()
    return out, failures


def merge_results(lists, k: int = 0) -> list[tuple[int, int]]:
    """Merge [(distance, id), ...] lists: each id at its smallest distance, sorted by (distance, id), at most k (0: all)."""
    best: dict[int, int] = {}
    for rows in lists:
        for d, i in rows:
            if i not in best or d < best[i]:
                best[i] = d
    merged = sorted((d, i) for i, d in best.items())
    return merged[:k] if k else merged


def tta_results(index, encoder, paths, names, k, max_distance, plain_results):
    """The results of ``query`` with the variants ``names`` merged into ``plain_results`` (one list per path).

    Mirrors the plain search: k nearest when ``max_distance`` is None, else every code within it (at most
    k when k > 0).
    """
    variants = [variant_arrays(p, encoder.preprocess, names) for p in paths]
    codes = encoder.encode(np.concatenate(variants))
    t = len(names)
    merged = []
    for q, plain in enumerate(plain_results):
        lists = [plain]
        qcodes = codes[q * t : (q + 1) * t]
        if max_distance is None:
            dist, ids = index.search(qcodes, k)
            lists += [[(int(d), int(i)) for d, i in zip(dist[v], ids[v]) if i >= 0] for v in range(t)]
        else:
            lims, dist, ids = index.range_search(qcodes, max_distance)
            lists += [list(zip(dist[lims[v] : lims[v + 1]].tolist(), ids[lims[v] : lims[v + 1]].tolist())) for v in range(t)]
        merged.append(merge_results(lists, k))
    return merged
