import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hashtool.store.dups import components, pairs_from_range

from naive import hamming_matrix


def naive_range(codes, ids, r):
    d = hamming_matrix(codes, codes)
    lims, dist, out = [0], [], []
    for q in range(len(codes)):
        hits = sorted((int(d[q, j]), int(ids[j])) for j in range(len(codes)) if d[q, j] <= r)
        dist += [h[0] for h in hits]
        out += [h[1] for h in hits]
        lims.append(len(dist))
    return np.array(lims), np.array(dist, dtype=np.int32), np.array(out, dtype=np.int64)


def naive_groups(codes, ids, r):
    d = hamming_matrix(codes, codes)
    n = len(codes)
    seen, groups = set(), []
    for s in range(n):
        if s in seen:
            continue
        comp, todo = {s}, [s]
        while todo:
            u = todo.pop()
            for v in range(n):
                if v != u and d[u, v] <= r and v not in comp:
                    comp.add(v)
                    todo.append(v)
        seen |= comp
        if len(comp) > 1:
            members = sorted(comp)
            groups.append((sorted(int(ids[m]) for m in members), int(d[np.ix_(members, members)].max())))
    return sorted(groups)


@settings(max_examples=60)
@given(st.integers(1, 40), st.integers(1, 6), st.integers(0, 8), st.randoms(use_true_random=False))
def test_groups_match_naive(n, distinct, r, rnd):
    rng = np.random.default_rng(rnd.randint(0, 2**32 - 1))
    centres = rng.integers(0, 256, (distinct, 2), dtype=np.uint8)
    codes = centres[rng.integers(0, distinct, n)]
    flips = rng.random((n, 16)) < 0.1
    codes = codes ^ np.packbits(flips, axis=1, bitorder="little")
    ids = rng.permutation(1000)[:n].astype(np.int64)
    lims, dist, out = naive_range(codes, ids, r)
    pairs = pairs_from_range(lims, dist, out, ids)
    d = hamming_matrix(codes, codes)
    expected_pairs = sorted(
        (min(int(ids[i]), int(ids[j])), max(int(ids[i]), int(ids[j])), int(d[i, j]))
        for i in range(n) for j in range(i + 1, n) if d[i, j] <= r
    )
    assert sorted(pairs) == expected_pairs
    got = components(pairs, dict(zip(ids.tolist(), codes)))
    assert sorted((g.ids, g.diameter) for g in got) == naive_groups(codes, ids, r)


def test_chain_has_diameter_above_radius():
    # a - b - c in a line, 2 bits apart each: a and c are 4 apart
    codes = np.packbits(np.array([[0] * 8, [1, 1] + [0] * 6, [1, 1, 1, 1] + [0] * 4], dtype=np.uint8), axis=1, bitorder="little")
    ids = np.array([10, 11, 12])
    lims, dist, out = naive_range(codes, ids, 2)
    groups = components(pairs_from_range(lims, dist, out, ids), dict(zip(ids.tolist(), codes)))
    assert [(g.ids, g.diameter) for g in groups] == [([10, 11, 12], 4)]
