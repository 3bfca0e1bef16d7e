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

Staging. At 1e7 codes every bucket lookup (a dense table of 2**21-2**22 offsets) and every candidate's
first word (a random row of the codes) is a cache miss. Looked up one bucket at a time, each miss waited
for the previous one: the loop over a bucket's rows ends in a branch that depends on the loaded bounds.
So keys are taken :data:`CHUNK_KEYS` at a time, and each stage runs over the whole chunk before the next
starts: the keys, their bucket bounds (a loop without data-dependent branches, with a prefetch of each
bucket's first entry), the candidates' positions, their first words' distances (branch-free), and only
then the comparisons with the k-th best. Measured on 1e7 x 64 clustered codes (1,000 queries, one thread,
one at a time): 176 ms before, 60 ms staged, answers identical.

Fallback. Each lookup and each verified candidate costs work, counted in units of one database word
scanned. When a query's work passes its budget (a fraction of the cost of scanning every row), the
kernel gives up on that query and marks it; the caller answers marked queries with the exhaustive scan.
A query also gives up at a table's boundary when the next table's keys alone (``C(width, r)`` lookups)
would pass what is left of its budget: it would pass it partway through them anyway, so only the work
thrown away changes (every query falls back exactly when its whole search would cost more than the budget).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit

from hashtool.hashindex._popcount import popcount

if numba.config.DISABLE_JIT:

    def prefetch(arr, i):
        """A hint that ``arr[i]`` will be read soon (plain Python: nothing to do)."""

else:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, arr, i):
        """LLVM's ``llvm.prefetch`` of ``arr[i]`` (a read, kept in every cache level): a hint that never
        faults, so ``i`` may be out of range (a damaged table: the caller checks before it reads)."""
        if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(i, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            ptr = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
            fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(32), ir.IntType(32)])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
            i32 = ir.IntType(32)
            builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.none(arr, i), codegen

POS_SHIFT = 40  # key = distance << 40 | position: positions below 2**40, distances up to 4096
NO_KEY = np.int64(9223372036854775807)
# Work model in units of "one database word scanned by the exhaustive kernel". Fitted on the shared 2-core
# build machine (2026-12-01, round 6, 1e7 x 64 clustered codes, 1,000 queries one at a time on one thread,
# time against lookups and candidates by least squares): 77 ns a bucket lookup in a dense table (2**21..2**22
# int32 offsets: a cache miss), 26 ns a candidate (its position and the random read of its first word), with
# the flat scan at 0.25 ns a word in the same session. A full verification (the rest of a longer code, in the
# row's cache line) is a guess, not a fit.
LOOKUP_COST = 300
# A lookup in a sparse table (32-bit substrings of 1e8+ codes) is a binary search over the distinct keys,
# fitted the same way on 1e7 x 64 clustered codes with m = 2 (two sparse tables, 300 queries): 121 ns, 535
# words at that session's 0.226 ns a scanned word (the dense lookup refitted there: 76 ns, 338 words).
SPARSE_LOOKUP_COST = 540
CANDIDATE_COST = 100
VERIFY_COST = 16
CHUNK_KEYS = 64  # keys enumerated, looked up and verified together (see _mih_query)


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
def _choose(w, r):
    """Binomial coefficient C(w, r) for 0 <= r <= w <= 64 (the keys at distance r of a w-bit key)."""
    c = np.int64(1)
    for i in range(r):
        c = c * (w - i) // (i + 1)
    return c


@njit(cache=True, nogil=True)
def _next_subset(v):
    """The next integer with as many set bits as ``v`` (Gosper's hack)."""
    c = v & -v
    rr = v + c
    return (((rr ^ v) >> 2) // c) | rr


@njit(cache=True, nogil=True)
def _bucket_bounds(j, base, keys, nk, t_dense, t_off_base, t_key_base, t_key_len, t_offsets, t_keys, t_pos,
                   los, his):
    """Entry ranges of ``keys[:nk]`` in table ``j`` into ``los``/``his``, and a prefetch of each bucket's
    first entry. A dense table's loop has no data-dependent branch, so its offset reads (cache misses at
    large n) overlap instead of waiting one after another behind the previous bucket's loop."""
    if t_dense[j]:
        ob = t_off_base[j]
        for i in range(nk):
            lo = np.int64(t_offsets[ob + keys[i]])
            los[i] = lo
            his[i] = np.int64(t_offsets[ob + keys[i] + 1])
            prefetch(t_pos, base + lo)
    else:
        for i in range(nk):
            lo, hi = lookup(j, keys[i], t_dense, t_off_base, t_key_base, t_key_len, t_offsets, t_keys)
            los[i] = lo
            his[i] = hi
            prefetch(t_pos, base + lo)


@njit(cache=True, nogil=True)
def _admit(words, nw, q, qo, cand, nc, k, is_range, thr, buf, cnt, seen, nseen):
    """Verify the candidate rows ``cand[0, :nc]`` (valid positions) and admit those that beat ``thr``
    (``cand[1]`` receives their first word's distance).

    First the first word of every candidate in a branch-free loop (its reads overlap), then the rest of
    the admitted ones' words. Returns (buf, cnt, thr, seen, nseen, full verifications).
    """
    q0 = q[qo]
    rows = cand[0]
    dist = cand[1]
    for c in range(nc):
        dist[c] = popcount(q0 ^ words[rows[c] * nw])
    verifies = 0
    for c in range(nc):
        d = dist[c]
        if (d << POS_SHIFT) >= thr:
            continue
        p = rows[c]
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
    return buf, cnt, thr, seen, nseen, verifies


@njit(cache=True, nogil=True)
def _mih_query(words, nw, n, q, qi, k, max_distance, m, sub_start, sub_width,
               t_dense, t_off_base, t_key_base, t_key_len, t_offsets, t_keys, t_pos,
               budget, qk, buf, scratch, cand):
    """One query of exact k-NN (``max_distance < 0``) or range search (``max_distance >= 0``).

    Keys are enumerated, looked up and their rows verified :data:`CHUNK_KEYS` at a time, each stage a
    loop of its own (see :func:`_bucket_bounds`, :func:`_admit`), so that the cache misses of one chunk
    overlap. ``scratch``: (3, CHUNK_KEYS) int64 (keys, bucket starts, bucket ends); ``cand``: (2, c) int64, the
    candidate rows of a chunk and their first words' distances (grown when a chunk has more).

    Returns (buf, cand, count, lookups, candidates, radius, fell_back, bad); ``buf[:count]`` holds sorted
    keys ``distance << 40 | position`` (the k best, or every row within ``max_distance``); ``bad`` counts
    positions or bucket bounds out of range (a corrupted file: the caller raises).
    """
    qo = qi * nw
    for j in range(m):
        qk[j] = substring_key(q, qo, sub_start[j], sub_width[j])
    keys = scratch[0]
    los = scratch[1]
    his = scratch[2]
    is_range = max_distance >= 0
    range_thr = (np.int64(max_distance) + 1) << POS_SHIFT
    thr = range_thr if is_range else NO_KEY
    cnt = np.int64(0)  # not a literal: keep_best and set_add get one specialisation
    seen = np.full(64, -1, np.int64)
    nseen = np.int64(0)
    lookups = 0
    work = 0  # lookups weighted by their table's cost
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
                    nk = 0
                    while v < limit and nk < CHUNK_KEYS:
                        keys[nk] = qk[j] ^ v
                        nk += 1
                        v = limit if r == 0 else _next_subset(v)
                    lookups += nk
                    work += nk * (LOOKUP_COST if t_dense[j] else SPARSE_LOOKUP_COST)
                    _bucket_bounds(j, base, keys, nk, t_dense, t_off_base, t_key_base, t_key_len, t_offsets,
                                   t_keys, t_pos, los, his)
                    nc = np.int64(0)  # not a literal: one specialisation of _admit
                    for i in range(nk):
                        lo = los[i]
                        hi = his[i]
                        if lo < 0 or hi > n or lo > hi:
                            bad += 1
                            continue
                        cands += hi - lo
                        if nc + hi - lo > cand.shape[1]:
                            if nc:
                                buf, cnt, thr, seen, nseen, vf = _admit(words, nw, q, qo, cand, nc, k, is_range,
                                                                        thr, buf, cnt, seen, nseen)
                                verifies += vf
                                nc = np.int64(0)
                            if hi - lo > cand.shape[1]:
                                cand = np.empty((2, 2 * (hi - lo)), np.int64)
                        rows = cand[0]
                        for e in range(base + lo, base + hi):
                            p = np.int64(t_pos[e])
                            if p < 0 or p >= n:
                                bad += 1
                                continue
                            rows[nc] = p
                            nc += 1
                    if nc:
                        buf, cnt, thr, seen, nseen, vf = _admit(words, nw, q, qo, cand, nc, k, is_range, thr,
                                                                buf, cnt, seen, nseen)
                        verifies += vf
                    if work + cands * CANDIDATE_COST + verifies * VERIFY_COST > budget:
                        fell = True
                        break
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
            # the next table's keys alone would pass the budget: fall back now rather than partway through
            # them (the same outcome, with less work thrown away)
            rn = r + (j + 1) // m
            jn = (j + 1) % m
            spent = work + cands * CANDIDATE_COST + verifies * VERIFY_COST
            cost = LOOKUP_COST if t_dense[jn] else SPARSE_LOOKUP_COST
            if rn <= sub_width[jn] and spent + _choose(sub_width[jn], rn) * cost > budget:
                fell = True
                break
        if done or fell:
            break
    if is_range:
        heapsort(buf, cnt)
    else:
        cnt, thr = keep_best(buf, cnt, k)
    return buf, cand, cnt, lookups, cands, radius, fell, bad


@njit(cache=True, nogil=True)
def mih_knn(words, nw, n, q, qa, qb, k, m, sub_start, sub_width,
            t_dense, t_off_base, t_key_base, t_key_len, t_offsets, t_keys, t_pos,
            budget, out_d, out_p, st_lookups, st_cands, st_radius, st_fallback, st_bad):
    """Exact k-NN for queries qa..qb-1 (one task of the thread pool). Fallen-back queries are marked."""
    qk = np.empty(m, np.int64)
    buf = np.empty(2 * k + 32, np.int64)
    scratch = np.empty((3, CHUNK_KEYS), np.int64)
    cand = np.empty((2, 8 * CHUNK_KEYS), np.int64)
    mask = (np.int64(1) << POS_SHIFT) - 1
    no_limit = np.int64(-1)  # a variable, not a literal: one specialisation of _mih_query serves both callers
    for qi in range(qa, qb):
        buf, cand, cnt, lk, cd, rad, fell, bad = _mih_query(
            words, nw, n, q, qi, k, no_limit, m, sub_start, sub_width, t_dense, t_off_base, t_key_base,
            t_key_len, t_offsets, t_keys, t_pos, budget, qk, buf, scratch, cand)
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
    scratch = np.empty((3, CHUNK_KEYS), np.int64)
    cand = np.empty((2, 8 * CHUNK_KEYS), np.int64)
    out = np.empty(1024, np.int64)
    one = np.int64(1)
    counts = np.zeros(qb - qa, np.int64)
    total = 0
    for qi in range(qa, qb):
        buf, cand, cnt, lk, cd, rad, fell, bad = _mih_query(
            words, nw, n, q, qi, one, max_distance, m, sub_start, sub_width, t_dense, t_off_base,
            t_key_base, t_key_len, t_offsets, t_keys, t_pos, budget, qk, buf, scratch, cand)
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
