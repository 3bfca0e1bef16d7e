"""Near-duplicate groups from Hamming range search, streamed in bounded memory (numpy + hashindex).

Two images are near-duplicates when their codes are within ``max_distance`` (inclusive). With
test-time variants (``variants``, e.g. the codes of each image mirrored and rotated, see
:mod:`hashtool.encode.tta`) the distance between images a and b is the smallest of d(a, b),
d(v(a), b) and d(a, v(b)) over the variants v: a mirrored copy is then a near-duplicate too.

Near-duplication under a radius is not transitive: a and b may be within ``max_distance``, b and c too,
and a and c not. A group is a connected component of the near-duplicate graph; its ``diameter`` (the
largest distance between two members) can exceed ``max_distance`` (a chain), and the output says so.

How the work stays bounded (a folder with 20,000 copies of one picture has 2e8 pairs):

1. Images with identical codes (and identical variant codes) are one *node*: ``np.unique`` over the
   rows. 20,000 equal codes are one node, and pairs among them are counted, never listed.
2. The nodes' codes go into a Hamming index; node codes are range-searched against it in blocks of
   queries whose result count is kept near :data:`RESULT_BUDGET` (the block shrinks after a block that
   returned too many results and grows after one that returned few), and each block's edges are merged
   into a union-find at once. No pair is stored.
3. A group's diameter is computed exactly over its distinct nodes when it has at most
   :data:`EXACT_DIAMETER_NODES` of them, in blocks of bounded scratch memory. Larger groups get bounds:
   a lower bound from a few farthest-point sweeps (an actual pair's distance, so ``diameter`` is "at
   least"), and an upper bound ``diameter_max`` (twice a member's largest distance, by the triangle
   inequality, or the code length with variants, where the distance is not a metric).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from hashtool.errors import ArgumentError

RESULT_BUDGET = 1 << 21  # range-search results held at once (about 25 MB with their positions)
EXACT_DIAMETER_NODES = 2048  # distinct codes in a group up to which its diameter is exact
SCRATCH_BYTES = 1 << 24  # scratch memory of one block of pairwise distances
_SWEEPS = 4


@dataclass
class DupGroup:
    """One group: member ids (ascending), each member's distance to the first, and the diameter."""

    ids: list[int]
    distances: list[int]  # distance of ids[k] to ids[0]
    diameter: int  # exact, or a lower bound when not diameter_exact
    diameter_exact: bool = True
    diameter_max: int = 0  # upper bound (== diameter when exact)


@dataclass
class DupResult:
    """Groups (largest first, then by first id) and exact counts; ``groups`` is produced lazily."""

    n_images: int
    n_groups: int
    n_grouped: int  # images in some group
    pairs: int | None  # pairs of images within the radius (None with variants: not counted)
    max_distance: int
    groups: Iterator[DupGroup] = field(repr=False, default=iter(()))


def find_groups(codes, ids, max_distance: int, *, variants=None, threads=None,
                result_budget: int = RESULT_BUDGET, exact_nodes: int = EXACT_DIAMETER_NODES) -> DupResult:
    """Near-duplicate groups of ``codes`` (packed uint8 (n, nbytes)) whose ids are ``ids``.

    ``variants``: optional uint8 (n, t, nbytes), the codes of t transformed versions of each image.
    """
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    ids = np.asarray(ids, dtype=np.int64)
    if codes.ndim != 2 or len(ids) != len(codes):
        raise ArgumentError(f"codes must be (n, nbytes) with one id each, got {codes.shape} and {ids.shape}")
    if max_distance < 0:
        raise ArgumentError(f"--max-distance must be >= 0, got {max_distance}")
    n, nbytes = codes.shape
    stack = codes[:, None, :]
    if variants is not None:
        variants = np.asarray(variants, dtype=np.uint8)
        if variants.ndim != 3 or variants.shape[0] != n or variants.shape[2] != nbytes:
            raise ArgumentError(f"variants must be (n, t, {nbytes}), got {variants.shape}")
        stack = np.concatenate([stack, variants], axis=1)
    if n == 0:
        return DupResult(0, 0, 0, 0, max_distance)
    rows = np.ascontiguousarray(stack.reshape(n, -1))
    nodes, node_of = np.unique(rows, axis=0, return_inverse=True)
    node_of = node_of.reshape(-1)
    nodes = nodes.reshape(len(nodes), -1, nbytes)  # (u, 1 + t, nbytes); [:, 0] is the plain code
    mult = np.bincount(node_of, minlength=len(nodes)).astype(np.int64)

    parent = np.arange(len(nodes), dtype=np.int64)
    pairs = int((mult * (mult - 1) // 2).sum())
    for qnode, rnode in _edges(nodes, max_distance, threads, result_budget):
        if variants is None:
            pairs += int((mult[qnode] * mult[rnode]).sum())
        _union(parent, qnode, rnode)
    root = _roots(parent, np.arange(len(nodes), dtype=np.int64))

    img_root = root[node_of]
    order = np.lexsort((ids, img_root))  # images by group, then id
    sorted_roots = img_root[order]
    starts = np.flatnonzero(np.r_[True, sorted_roots[1:] != sorted_roots[:-1]])
    sizes = np.diff(np.r_[starts, n])
    keep = np.flatnonzero(sizes >= 2)
    spans = sorted(((int(starts[g]), int(sizes[g])) for g in keep), key=lambda s: (-s[1], int(ids[order[s[0]]])))
    nbits = nbytes * 8
    plain_metric = variants is None

    def groups() -> Iterator[DupGroup]:
        for start, size in spans:
            members = order[start : start + size]
            yield _group(ids[members], nodes, node_of[members], nbits, plain_metric, exact_nodes)

    return DupResult(n, len(spans), int(sizes[keep].sum()), pairs if variants is None else None, max_distance, groups())


# -- edges -----------------------------------------------------------------------------------------


def _edges(nodes, max_distance, threads, budget) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(query node, result node) arrays, block by block; plain queries yield each pair once (q < r)."""
    from hashtool.hashindex import FlatIndex, MIHIndex
    from hashtool.store.build import MIH_THRESHOLD

    u, nvar, nbytes = nodes.shape
    if u < 2:
        return
    plain = np.ascontiguousarray(nodes[:, 0])
    index = (MIHIndex if u >= MIH_THRESHOLD else FlatIndex)(nbytes * 8, threads=threads)
    index.add(plain)
    for v in range(nvar):
        queries = plain if v == 0 else np.ascontiguousarray(nodes[:, v])
        block, start = 64, 0
        while start < u:
            stop = min(u, start + block)
            lims, _, found = index.range_search(queries[start:stop], max_distance)
            qnode = np.repeat(np.arange(start, stop, dtype=np.int64), np.diff(lims))
            mask = found > qnode if v == 0 else found != qnode
            yield qnode[mask], found[mask]
            got = len(found)
            del lims, found, qnode, mask
            start = stop
            if got > budget and block > 1:
                block = max(1, block * budget // (2 * got))
            elif got < budget // 4:
                block = min(block * 2, 1 << 16)


def _roots(parent: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Roots of ``x`` in the union-find ``parent`` (parent[i] <= i), compressing the paths of ``x``."""
    r = parent[x]
    while True:
        rr = parent[r]
        if np.array_equal(rr, r):
            break
        r = rr
    parent[x] = r
    return r


def _union(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Merge the sets of every edge (a[k], b[k]); each set is named by its smallest member."""
    while len(a):
        ra, rb = _roots(parent, a), _roots(parent, b)
        differ = ra != rb
        if not differ.any():
            return
        a, b, ra, rb = a[differ], b[differ], ra[differ], rb[differ]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))


# -- distances and diameters -----------------------------------------------------------------------


def _dist_block(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances (len(a), len(b)) between node stacks (.., 1 + t, nbytes): min over d(a0,b0), d(av,b0), d(a0,bv)."""
    d = np.bitwise_count(a[:, None, 0, :] ^ b[None, :, 0, :]).sum(axis=2, dtype=np.int32)
    for v in range(1, a.shape[1]):
        np.minimum(d, np.bitwise_count(a[:, None, v, :] ^ b[None, :, 0, :]).sum(axis=2, dtype=np.int32), out=d)
        np.minimum(d, np.bitwise_count(a[:, None, 0, :] ^ b[None, :, v, :]).sum(axis=2, dtype=np.int32), out=d)
    return d


def _farthest(stacks: np.ndarray, src: int) -> tuple[int, int]:
    """(the first node farthest from node ``src``, its distance)."""
    d = np.empty(len(stacks), dtype=np.int32)
    step = max(1, SCRATCH_BYTES // max(1, stacks[0].size))
    for s in range(0, len(stacks), step):
        d[s : s + step] = _dist_block(stacks[src : src + 1], stacks[s : s + step])[0]
    far = int(np.argmax(d))
    return far, int(d[far])


def _group(member_ids, nodes, member_nodes, nbits, metric: bool, exact_nodes: int) -> DupGroup:
    uniq = np.unique(member_nodes)
    stacks = nodes[uniq]
    pos = np.searchsorted(uniq, member_nodes)
    to_first = _dist_block(stacks[pos[0] : pos[0] + 1], stacks)[0]
    distances = to_first[pos].tolist()
    u = len(uniq)
    if u <= exact_nodes:
        diameter = 0
        step = max(1, SCRATCH_BYTES // max(1, u * stacks[0].size))
        for s in range(0, u, step):
            diameter = max(diameter, int(_dist_block(stacks[s : s + step], stacks).max()))
        return DupGroup(member_ids.tolist(), distances, diameter, True, diameter)
    lower, src, upper = 0, int(pos[0]), nbits
    for _ in range(_SWEEPS):
        far, dist = _farthest(stacks, src)
        if metric:
            upper = min(upper, 2 * dist)
        if dist <= lower:
            break
        lower, src = dist, far
    upper = max(upper, lower)
    return DupGroup(member_ids.tolist(), distances, lower, lower == upper, upper)
