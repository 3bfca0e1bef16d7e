"""Multi-index hashing kernels (Norouzi, Punjani and Fleet, "Fast Exact Search in Hamming Space with
Multi-Index Hashing", TPAMI 2014).

Tables. The ``nbits`` of a code are cut into ``m`` contiguous substrings (widths differ by at most one
bit when ``nbits % m != 0``; each at most 32 bits). Table ``j`` maps the substring value (the *key*) to the
rows that have it, in CSR form built count-then-fill: ``offsets`` over all ``2**width`` keys when that
is small (*dense*), or sorted distinct keys + binary search (*sparse*, sorted by a two-pass radix sort:
8 bytes of scratch per code, where the stable argsort it replaces needed an int64 order and a sorted copy,
12 bytes, and took several times longer). Offsets and positions are int32
and sparse keys uint32 (an index holds fewer than 2**31 codes), and a table entry is only the row's
position: verifying a candidate reads the row's first word from the codes (a lower bound that rejects most
candidates of longer codes before the rest is read). Entries come from a file that may not have been
verified yet, so every position and bucket bound is checked before it is used: a bad one is counted in the
query's ``bad`` statistic, never dereferenced.

Exact k-NN. For substring radius r = 0, 1, 2, ... and table j = 0..m-1, enumerate every key at exactly
distance r from the query's substring j (Gosper's hack over r-subsets of the width), and verify each row
in those buckets with the full Hamming distance. A row never met after step (r, j) differs from the query
by at least r + 1 bits in substrings 0..j and at least r bits in the others, so its distance is at least
``m * r + j + 1`` (pigeonhole). The search stops as soon as the k-th best (distance, position) found has
distance below that bound, or when a table has been enumerated to its full width (every row met).
Candidates are kept as int64 keys ``distance << 40 | position`` so the (distance, position) order is one
integer comparison; a candidate is admitted only if its key beats the current k-th key, and admitted
rows are deduplicated with a small per-query hash set owned by the worker that runs the query.

Exact range search runs the same loop and stops once ``m * r + j + 1 > max_distance``.

Fallback. Each lookup and each verified candidate costs work, counted in units of one database word
scanned. When a query's work passes its budget (a fraction of the cost of scanning every row), the
kernel gives up on that query and marks it; the caller answers marked queries with the exhaustive scan.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hashtool.hashindex._popcount import popcount

POS_SHIFT = 40  # key = distance << 40 | position: positions below 2**40, distances up to 4096
NO_KEY = np.int64(9223372036854775807)
# Work model in units of "one database word scanned by the exhaustive kernel". Measured on the shared
# 2-core build machine (load average ~15): a bucket lookup in a dense table (2**21..2**22 offsets: cache
# and TLB misses) cost 125 scanned words at N=1e6 and about 600 at N=1e7; a sequential table entry a
# few; a random full-code read about as much as a lookup. The larger figure is used: overestimating a
# lookup only sends a query to the scan a little early.
LOOKUP_COST = 512
CANDIDATE_COST = 4
VERIFY_COST = 512


@njit(cache=True, nogil=True)
def substring_key(words, base, start, width):
    """The ``width``-bit substring starting at bit ``start`` of the code at ``words[base:]``, as int64."""
    wi = start // 64
    off = start % 64
    v = words[base + wi] >> np.uint64(off)
    if off + width > 64:
        v |= words[base + wi + 1] << np.uint64(64 - off)
    return np.int64(v & np.uint64((1 << width) - 1))


@njit(cache=True, nogil=True)
def substring_keys(words, nw, n, start, width, out):
    """out[i] = substring key of row i."""
    for i in range(n):
        out[i] = substring_key(words, i * nw, start, width)


@njit(cache=True, nogil=True)
def build_dense(keys, n, offsets, pos_out):
    """Counting sort of rows by key into a dense table (``offsets``: 2**width + 1 zeroed int32 entries)."""
    for i in range(n):
        offsets[keys[i] + 1] += 1
    for b in range(1, offsets.shape[0]):
        offsets[b] += offsets[b - 1]
    cur = offsets[:-1].copy()
    for i in range(n):
        kk = keys[i]
        o = cur[kk]
        cur[kk] = o + 1
        pos_out[o] = i


@njit(cache=True, nogil=True)
def _digit_starts(keys, n, shift, digit_bits):
    """Where each value of bits ``shift .. shift + digit_bits - 1`` starts in a stable counting sort of
    ``keys[:n]`` (one entry per digit value, plus the end)."""
    mask = (np.int64(1) << digit_bits) - 1
    start = np.zeros((np.int64(1) << digit_bits) + 1, np.int64)
    for i in range(n):
        start[((np.int64(keys[i]) >> shift) & mask) + 1] += 1
    for b in range(1, start.shape[0]):
        start[b] += start[b - 1]
    return start, mask


@njit(cache=True, nogil=True)
def build_sparse(keys, n, width, pos_out, tmp_keys, tmp_pos):
    """Sort rows by key for a sparse table: a stable LSD radix sort in two passes of about ``width / 2``
    bits (ties keep row order, as a stable argsort would), with no n-element int64 array. On return
    ``keys[:n]`` holds the sorted keys and ``pos_out`` the rows in that order; ``tmp_keys``/``tmp_pos``
    (n entries each) are scratch. Returns the number of distinct keys (see :func:`fill_sparse`)."""
    low = (width + 1) // 2
    no_shift = np.int64(0)  # not a literal: one specialisation of _digit_starts
    start, mask = _digit_starts(keys, n, no_shift, low)
    for i in range(n):  # low digit: rows in order -> scratch
        kk = keys[i]
        o = start[np.int64(kk) & mask]
        start[np.int64(kk) & mask] = o + 1
        tmp_keys[o] = kk
        tmp_pos[o] = i
    start, mask = _digit_starts(tmp_keys, n, low, width - low)
    for i in range(n):  # high digit: scratch -> the sorted keys and the table's positions
        kk = tmp_keys[i]
        dgt = (np.int64(kk) >> low) & mask
        o = start[dgt]
        start[dgt] = o + 1
        keys[o] = kk
        pos_out[o] = tmp_pos[i]
    distinct = np.int64(1) if n else np.int64(0)
    for i in range(1, n):
        if keys[i] != keys[i - 1]:
            distinct += 1
    return distinct


@njit(cache=True, nogil=True)
def fill_sparse(sorted_keys, n, keys_out, offsets_out):
    """The distinct keys of ``sorted_keys[:n]`` into ``keys_out`` and where each starts into
    ``offsets_out`` (one more entry: ``n``)."""
    d = 0
    for i in range(n):
        if i == 0 or sorted_keys[i] != sorted_keys[i - 1]:
            keys_out[d] = sorted_keys[i]
            offsets_out[d] = i
            d += 1
    offsets_out[d] = n


@njit(cache=True, nogil=True)
def heapsort(a, cnt):
    """Sort ``a[:cnt]`` (int64) in place (a heap sort: no scratch, no generic np.sort specialisation)."""
    for start in range(cnt // 2 - 1, -1, -1):
        _sift(a, start, cnt)
    for end in range(cnt - 1, 0, -1):
        t = a[0]
        a[0] = a[end]
        a[end] = t
        _sift(a, np.int64(0), end)


@njit(cache=True, nogil=True)
def _sift(a, root, end):
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and a[child + 1] > a[child]:
            child += 1
        if a[root] >= a[child]:
            return
        t = a[root]
        a[root] = a[child]
        a[child] = t
        root = child


@njit(cache=True, nogil=True)
def lookup(j, key, t_dense, t_off_base, t_key_base, t_key_len, t_offsets, t_keys):
    """Entry range [lo, hi) of ``key`` in table ``j`` (empty when the key is absent)."""
    ob = t_off_base[j]
    if t_dense[j]:
        return np.int64(t_offsets[ob + key]), np.int64(t_offsets[ob + key + 1])
    kb = t_key_base[j]
    kl = t_key_len[j]
    lo = 0
    hi = kl
    while lo < hi:
        mid = (lo + hi) >> 1
        if t_keys[kb + mid] < key:
            lo = mid + 1
        else:
            hi = mid
    if lo < kl and t_keys[kb + lo] == key:
        return np.int64(t_offsets[ob + lo]), np.int64(t_offsets[ob + lo + 1])
    return np.int64(0), np.int64(0)


@njit(cache=True, nogil=True)
def set_add(table, count, key):
    """Insert ``key`` (>= 0) into an open-addressing set (-1 = empty, size a power of two).

    Returns (table, count, inserted); the table doubles when half full.
    """
    size = table.shape[0]
    if 2 * (count + 1) > size:
        old = table
        table = np.full(2 * size, -1, np.int64)
        size = 2 * size
        for x in old:
            if x >= 0:
                h = np.int64((np.uint64(x) * np.uint64(11400714819323198485)) >> np.uint64(40)) & (size - 1)
                while table[h] >= 0:
                    h = (h + 1) & (size - 1)
                table[h] = x
    h = np.int64((np.uint64(key) * np.uint64(11400714819323198485)) >> np.uint64(40)) & (size - 1)
    while table[h] >= 0:
        if table[h] == key:
            return table, count, False
        h = (h + 1) & (size - 1)
    table[h] = key
    return table, count + 1, True


@njit(cache=True, nogil=True)
def keep_best(buf, cnt, k):
    """Sort the first ``cnt`` keys, keep the k smallest; return (count, threshold key)."""
    heapsort(buf, cnt)
    if cnt >= k:
        return k, buf[k - 1]
    return cnt, NO_KEY


@njit(cache=True, nogil=True)
def _mih_query(words, nw, n, q, qi, k, max_distance, m, sub_start, sub_width,
               t_dense, t_off_base, t_key_base, t_key_len, t_offsets, t_keys, t_pos,
               budget, qk, buf):
    """One query of exact k-NN (``max_distance < 0``) or range search (``max_distance >= 0``).

    Returns (buf, count, lookups, candidates, radius, fell_back, bad); ``buf[:count]`` holds sorted keys
    ``distance << 40 | position`` (the k best, or every row within ``max_distance``); ``bad`` counts
    positions or bucket bounds out of range (a corrupted file: the caller raises).
    """
    qo = qi * nw
    q0 = q[qo]
    for j in range(m):
        qk[j] = substring_key(q, qo, sub_start[j], sub_width[j])
    is_range = max_distance >= 0
    range_thr = (np.int64(max_distance) + 1) << POS_SHIFT
    thr = range_thr if is_range else NO_KEY
    cnt = np.int64(0)  # not a literal: keep_best and set_add get one specialisation
    seen = np.full(64, -1, np.int64)
    nseen = np.int64(0)
    lookups = 0
    cands = 0
    verifies = 0
    bad = 0
    maxw = 0
    for j in range(m):
        maxw = max(maxw, sub_width[j])
    done = False
    fell = False
    radius = 0
    for r in range(maxw + 1):
        radius = r
        for j in range(m):
            s = sub_width[j]
            if r <= s:
                base = j * n
                v = (1 << r) - 1
                limit = 1 << s
                while v < limit:
                    lo, hi = lookup(j, qk[j] ^ v, t_dense, t_off_base, t_key_base, t_key_len, t_offsets, t_keys)
                    lookups += 1
                    if lo < 0 or hi > n or lo > hi:
                        bad += 1
                        lo = hi = 0
                    cands += hi - lo
                    for e in range(base + lo, base + hi):
                        p = np.int64(t_pos[e])
                        if p < 0 or p >= n:
                            bad += 1
                            continue
                        d = popcount(q0 ^ words[p * nw])
                        if (d << POS_SHIFT) >= thr:
                            continue
                        if nw > 1:
                            verifies += 1
                            pb = p * nw
                            for w in range(1, nw):
                                d += popcount(q[qo + w] ^ words[pb + w])
                        key = (d << POS_SHIFT) | p
                        if key >= thr:
                            continue
                        seen, nseen, fresh = set_add(seen, nseen, p)
                        if not fresh:
                            continue
                        if cnt == buf.shape[0]:
                            if is_range:
                                grown = np.empty(2 * buf.shape[0], np.int64)
                                grown[:cnt] = buf[:cnt]
                                buf = grown
                            else:
                                cnt, thr = keep_best(buf, cnt, k)
                        buf[cnt] = key
                        cnt += 1
                    if lookups * LOOKUP_COST + cands * CANDIDATE_COST + verifies * VERIFY_COST > budget:
                        fell = True
                        break
                    if r == 0:
                        break
                    c = v & -v
                    rr = v + c
                    v = (((rr ^ v) >> 2) // c) | rr
                if fell:
                    break
                if r == s:
                    done = True  # table j enumerated to its full width: every row has been met
                    break
            # every row not met yet is at distance >= m * r + j + 1
            bound = m * r + j + 1
            if is_range:
                if bound > max_distance:
                    done = True
                    break
            elif cnt >= k:
                if cnt > k or thr == NO_KEY:
                    cnt, thr = keep_best(buf, cnt, k)
                if (thr >> POS_SHIFT) < bound:
                    done = True
                    break
        if done or fell:
            break
    if is_range:
        heapsort(buf, cnt)
    else:
        cnt, thr = keep_best(buf, cnt, k)
    return buf, cnt, lookups, cands, radius, fell, bad


@njit(cache=True, nogil=True)
def mih_knn(words, nw, n, q, qa, qb, k, m, sub_start, sub_width,
            t_dense, t_off_base, t_key_base, t_key_len, t_offsets, t_keys, t_pos,
            budget, out_d, out_p, st_lookups, st_cands, st_radius, st_fallback, st_bad):
    """Exact k-NN for queries qa..qb-1 (one task of the thread pool). Fallen-back queries are marked."""
    qk = np.empty(m, np.int64)
    buf = np.empty(2 * k + 32, np.int64)
    mask = (np.int64(1) << POS_SHIFT) - 1
    no_limit = np.int64(-1)  # a variable, not a literal: one specialisation of _mih_query serves both callers
    for qi in range(qa, qb):
        buf, cnt, lk, cd, rad, fell, bad = _mih_query(
            words, nw, n, q, qi, k, no_limit, m, sub_start, sub_width, t_dense, t_off_base, t_key_base,
            t_key_len, t_offsets, t_keys, t_pos, budget, qk, buf)
        st_lookups[qi] = lk
        st_cands[qi] = cd
        st_radius[qi] = rad
        st_fallback[qi] = fell
        st_bad[qi] = bad
        for o in range(k):
            if o < cnt and not fell:
                out_d[qi, o] = buf[o] >> POS_SHIFT
                out_p[qi, o] = buf[o] & mask
            else:
                out_d[qi, o] = -1
                out_p[qi, o] = -1


@njit(cache=True, nogil=True)
def mih_range(words, nw, n, q, qa, qb, max_distance, m, sub_start, sub_width,
              t_dense, t_off_base, t_key_base, t_key_len, t_offsets, t_keys, t_pos,
              budget, st_lookups, st_cands, st_radius, st_fallback, st_bad):
    """Exact range search for queries qa..qb-1 (one task of the thread pool).

    Returns (keys, counts): the sorted keys ``distance << 40 | position`` of every match, query after
    query, and each query's number of matches (0 for a query that fell back).
    """
    qk = np.empty(m, np.int64)
    buf = np.empty(64, np.int64)
    out = np.empty(1024, np.int64)
    one = np.int64(1)
    counts = np.zeros(qb - qa, np.int64)
    total = 0
    for qi in range(qa, qb):
        buf, cnt, lk, cd, rad, fell, bad = _mih_query(
            words, nw, n, q, qi, one, max_distance, m, sub_start, sub_width, t_dense, t_off_base,
            t_key_base, t_key_len, t_offsets, t_keys, t_pos, budget, qk, buf)
        st_lookups[qi] = lk
        st_cands[qi] = cd
        st_radius[qi] = rad
        st_fallback[qi] = fell
        st_bad[qi] = bad
        if fell:
            continue
        if total + cnt > out.shape[0]:
            grown = np.empty(max(2 * out.shape[0], total + cnt), np.int64)
            grown[:total] = out[:total]
            out = grown
        out[total:total + cnt] = buf[:cnt]
        counts[qi - qa] = cnt
        total += cnt
    return out[:total].copy(), counts
