"""Near-duplicate groups from Hamming range search (numpy only).

Near-duplication under a Hamming radius is not transitive: a and b may be within ``max_distance``, b and
c too, and a and c not. So the result states both views honestly:

* ``pairs``: every unordered pair (i < j) within ``max_distance``, with its distance;
* ``groups``: the connected components of that pair graph (size >= 2), each with its ``diameter``, the
  largest distance between two members, which can exceed ``max_distance`` (a chain).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DupGroup:
    ids: list[int]
    diameter: int


def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        parent[i], i = root, parent[i]
    return root


def pairs_from_range(lims, distances, result_ids, query_ids) -> list[tuple[int, int, int]]:
    """(id_a, id_b, distance) with id_a < id_b from a self range search, each pair once."""
    out = []
    for q, qid in enumerate(np.asarray(query_ids).tolist()):
        lo, hi = int(lims[q]), int(lims[q + 1])
        for d, rid in zip(distances[lo:hi].tolist(), result_ids[lo:hi].tolist()):
            if rid > qid:
                out.append((qid, rid, d))
    out.sort(key=lambda t: (t[2], t[0], t[1]))
    return out


def components(pairs, codes_by_id: dict[int, np.ndarray]) -> list[DupGroup]:
    """Connected components of the pair graph with their exact diameters, largest group first."""
    if not pairs:
        return []
    members = sorted({a for a, _, _ in pairs} | {b for _, b, _ in pairs})
    pos = {m: i for i, m in enumerate(members)}
    parent = np.arange(len(members))
    for a, b, _ in pairs:
        ra, rb = _find(parent, pos[a]), _find(parent, pos[b])
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for m in members:
        groups.setdefault(_find(parent, pos[m]), []).append(m)
    out = []
    for ids in groups.values():
        bits = np.unpackbits(np.stack([codes_by_id[i] for i in ids]), axis=1).astype(np.int16)
        diameter = 0
        step = max(1, (1 << 22) // (len(ids) * bits.shape[1]))  # bounded scratch memory
        for start in range(0, len(ids), step):
            block = bits[start : start + step]
            d = (block[:, None, :] != bits[None, :, :]).sum(axis=2)
            diameter = max(diameter, int(d.max()))
        out.append(DupGroup(ids=sorted(ids), diameter=diameter))
    out.sort(key=lambda g: (-len(g.ids), g.ids[0]))
    return out
