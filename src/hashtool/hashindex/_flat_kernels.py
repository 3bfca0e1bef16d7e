"""Exhaustive-scan kernels: k-NN and range search over uint64 code words.

Layout. The database is one contiguous 1-D uint64 array ``words`` of ``n * nw`` words (code ``i`` is
``words[i * nw:(i + 1) * nw]``), queries likewise. Rows are kept sorted by id by the index classes, so a
row's *position* orders ties exactly like its *id* does: every kernel here works on positions and the
result order is (distance, position) == (distance, id).

k-NN scan (:func:`knn_tile`). A tile of ``TILE_Q`` queries walks the database block by block
(``BLOCK_WORDS`` words, 16 KiB, L1-resident), and every block is read by the whole tile before moving on.
Within a block, the queries go in groups of ``QB = 4`` (register blocking): :func:`block_hits` loads each
database word once, compares it with the four queries, and says for every chunk of ``CHUNK_WORDS`` words
whether it holds a row closer than each query's threshold, in one branch-free loop that LLVM vectorises
(on AVX2 the ``popcount`` intrinsic becomes the ``vpshufb`` nibble lookup plus ``vpsadbw``; with AVX-512
VPOPCNTDQ, ``vpopcntq``). It stores nothing per row: ``(d - th)`` in uint64 has its top bit set exactly
when ``d < th``, and the OR of those over a chunk is the answer. Once a query's threshold is tight almost
no chunk holds a hit, so that loop is nearly all the work; a chunk that does is handed, for that query
only, to :func:`take_hits`, which computes its distances (:func:`block_distances`) and walks them.

The byte-sliced loop. On AVX2 (without AVX-512 VPOPCNTDQ) a tile of at least ``SLICED_MIN_QUERIES``
queries over 1, 2 or 4-word codes (:func:`sliced_pays`, a function of the tile) answers the same
question with :mod:`hashtool.hashindex._sliced` instead: each block is transposed once per tile so that
a vector lane holds one byte of 16 rows, each query gets per-byte lookup tables once per tile, and
:func:`sliced_hits` takes every query's smallest distance per chunk in 2 lookups and 2 adds per query
and 32 bytes (measured, one thread, 1e6 codes, 64 queries, CPU time at load 3-4: 3.2 -> 3.8-4.0e9 words/s
at 64 bits, 3.0 -> 4.0-4.2e9 at 128, 2.3 -> 3.5-3.9e9 at 256).

The word-plane loop. With AVX-512 VPOPCNTDQ a tile of at least ``SLICED_MIN_QUERIES`` queries over 2 or
4-word codes (:func:`planes_pays`) copies each block once per tile into word planes (word ``w`` of every row
contiguous, :func:`transpose_planes`), so that :func:`plane_hits` loads whole vectors of one word of 8 rows
and needs none of the shuffles the row-major loop spends splitting rows into words; it flags chunks of
``PLANE_CHUNK_ROWS`` rows (measured, one thread, 1e6 codes, 64 queries, load ~1.7: 1.0 -> 1.2-1.3e10 words/s at
128 bits, 0.9 -> 1.2-1.4e10 at 256).

Selection by counting (no heap). Distances are integers in ``[0, nbits]``. Each query keeps a buffer of
candidates in scan (= position) order and a threshold ``th``: a row is admitted only if ``d < th``. After
every admission ``th`` becomes the exact k-th smallest distance admitted so far (a ``nbits + 2`` bin
histogram of the admitted distances and a running count make that a few operations); a later row at
distance ``th`` has a larger position than the k-th one, so it can never win the tie. A full buffer keeps
the rows below ``th`` and the first ones at ``th``, k in all. The final answer is a stable counting sort by
distance (:func:`emit`), which yields the (distance, position) order. The flags of a block are computed
with the thresholds of its start; :func:`take_hits` re-checks each row with the current one.

Range search (:func:`range_scan`) counts a block per query (:func:`block_count_below`) and computes the
distances of the blocks that hold matches.

Parallelism. The kernels are serial and release the GIL (``nogil=True``); :mod:`hashtool.hashindex._pool`
runs them on Python threads. Many queries: the threads take tiles of queries in turn. Few queries: every
thread scans the blocks it claims from a shared counter (:func:`claim`, an atomic add) with its own top k,
then :func:`knn_merge` merges the threads' lists by (distance, position); a thread that starts late or is
descheduled claims fewer blocks instead of holding the others up, and the answer is the same whoever took
which block. Serial kernels compile in a fraction of the time of ``parallel=True`` ones, which
matters for the first call of every process that has no cache.

Every function is also valid plain Python, so the suite runs with ``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit

from hashtool.hashindex import _sliced as S
from hashtool.hashindex._popcount import NIBBLE_LOOP, WIDE_POPCOUNT, min_popcount4, popcount

if numba.config.DISABLE_JIT:
    import threading

    _claim_lock = threading.Lock()

    def claim(counters, i):
        """Atomically ``counters[i] += 1``, returning the old value (plain Python: under a lock)."""
        with _claim_lock:
            old = int(counters[i])
            counters[i] = old + 1
            return old

else:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def claim(typingctx, counters, i):
        """Atomically ``counters[i] += 1`` (LLVM ``atomicrmw add``), returning the old value."""
        if not (isinstance(counters, types.Array) and counters.dtype == types.int64 and counters.ndim == 1):
            return None

        def codegen(context, builder, signature, args):
            arr = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = cgutils.get_item_pointer(context, builder, signature.args[0], arr, [args[1]])
            return builder.atomic_rmw("add", ptr, ir.Constant(ir.IntType(64), 1), "monotonic")

        return types.int64(counters, types.int64), codegen


TILE_Q = 64
BLOCK_WORDS = 2048
CHUNK_WORDS = 256
PLANE_CHUNK_ROWS = 256  # the word-plane loop's chunk, in rows (measured: 128 and 512 rows were slower at 2 words)
QB = 4
SLICED_MIN_QUERIES = 8  # a tile of fewer queries keeps the row-major loops (the transposition would not pay)


@njit(cache=True, nogil=True)
def sliced_pays(nt, nw):
    """Does a tile of ``nt`` queries over codes of ``nw`` words take the byte-sliced loop (:mod:`._sliced`)?

    A function of the tile and the CPU only (AVX2 without AVX-512 VPOPCNTDQ: ``NIBBLE_LOOP``)."""
    return NIBBLE_LOOP and (nw == 1 or nw == 2 or nw == 4) and nt >= SLICED_MIN_QUERIES


@njit(cache=True, nogil=True)
def planes_pays(nt, nw):
    """Does a tile of ``nt`` queries over codes of ``nw`` words take the word-plane loop (:func:`plane_hits`)?

    A function of the tile and the CPU only (AVX-512 VPOPCNTDQ: ``WIDE_POPCOUNT``)."""
    return WIDE_POPCOUNT and (nw == 2 or nw == 4) and nt >= SLICED_MIN_QUERIES


@njit(cache=True, nogil=True)
def block_distances(words, nw, p0, p1, q, qo, out):
    """out[i - p0] = Hamming distance between rows p0..p1-1 of ``words`` and the query at ``q[qo:qo+nw]``.

    The loops run over a slice (a contiguous view starting at 0), which is the form LLVM vectorises.
    """
    x = words[p0 * nw:p1 * nw]
    m = p1 - p0
    if nw == 1:
        a = q[qo]
        for i in range(m):
            out[i] = popcount(x[i] ^ a)
    elif nw == 2:
        a = q[qo]
        b = q[qo + 1]
        for i in range(m):
            out[i] = popcount(x[2 * i] ^ a) + popcount(x[2 * i + 1] ^ b)
    elif nw == 4:
        a = q[qo]
        b = q[qo + 1]
        e = q[qo + 2]
        f = q[qo + 3]
        for i in range(m):
            out[i] = (
                popcount(x[4 * i] ^ a)
                + popcount(x[4 * i + 1] ^ b)
                + popcount(x[4 * i + 2] ^ e)
                + popcount(x[4 * i + 3] ^ f)
            )
    else:
        for i in range(m):
            s = 0
            for w in range(nw):
                s += popcount(x[i * nw + w] ^ q[qo + w])
            out[i] = s


@njit(cache=True, nogil=True)
def block_count_below(words, nw, p0, p1, q, qo, th):
    """How many of rows p0..p1-1 are at distance < ``th`` from the query (a vectorised reduction, no stores).

    The scans call this first and look at a block row by row only when it holds a hit: once the k-th
    distance is known, almost every block has none. ``(d - th) >> 63`` in uint64 is 1 exactly when
    ``d < th`` (both are small): this unsigned form vectorised best of the variants measured.
    """
    x = words[p0 * nw:p1 * nw]
    m = p1 - p0
    t = np.uint64(th)
    s63 = np.uint64(63)
    c = np.uint64(0)
    if nw == 1:
        a = q[qo]
        for i in range(m):
            c += (np.uint64(popcount(x[i] ^ a)) - t) >> s63
    elif nw == 2:
        a = q[qo]
        b = q[qo + 1]
        for i in range(m):
            c += (np.uint64(popcount(x[2 * i] ^ a) + popcount(x[2 * i + 1] ^ b)) - t) >> s63
    elif nw == 4:
        a = q[qo]
        b = q[qo + 1]
        e = q[qo + 2]
        f = q[qo + 3]
        for i in range(m):
            d = (
                popcount(x[4 * i] ^ a)
                + popcount(x[4 * i + 1] ^ b)
                + popcount(x[4 * i + 2] ^ e)
                + popcount(x[4 * i + 3] ^ f)
            )
            c += (np.uint64(d) - t) >> s63
    else:
        for i in range(m):
            d = 0
            for w in range(nw):
                d += popcount(x[i * nw + w] ^ q[qo + w])
            c += (np.uint64(d) - t) >> s63
    return np.int64(c)


@njit(cache=True, nogil=True)
def distances_to(words, nw, positions, q, qo):
    """Distances between the query ``q[qo:qo+nw]`` and the rows at ``positions`` (for MIH verification)."""
    out = np.empty(positions.shape[0], np.int32)
    for j in range(positions.shape[0]):
        base = positions[j] * nw
        s = 0
        for w in range(nw):
            s += popcount(words[base + w] ^ q[qo + w])
        out[j] = s
    return out


@njit(cache=True, nogil=True)
def compact(bd, bp, cnt, k, hist):
    """Keep the k best of ``cnt`` buffered candidates (in position order); return (count, new threshold).

    ``hist`` has ``nbits + 1`` bins. With fewer than ``k`` candidates everything is kept and the
    threshold stays open (``nbits + 1``).
    """
    nb = hist.shape[0]
    for d in range(nb):
        hist[d] = 0
    for i in range(cnt):
        hist[bd[i]] += 1
    cum = 0
    t = nb
    for d in range(nb):
        cum += hist[d]
        if cum >= k:
            t = d
            break
    if t == nb:
        return cnt, nb
    need_t = k - (cum - hist[t])
    j = 0
    for i in range(cnt):
        d = bd[i]
        if d < t:
            bd[j] = d
            bp[j] = bp[i]
            j += 1
        elif d == t and need_t > 0:
            need_t -= 1
            bd[j] = d
            bp[j] = bp[i]
            j += 1
    return j, t


@njit(cache=True, nogil=True)
def emit(bd, bp, cnt, k, hist, out_d, out_p):
    """Write the k best candidates in (distance, position) order into ``out_d``/``out_p``; pad with -1."""
    cnt, t = compact(bd, bp, cnt, k, hist)
    nb = hist.shape[0]
    for d in range(nb):
        hist[d] = 0
    for i in range(cnt):
        hist[bd[i]] += 1
    s = 0
    for d in range(nb):
        c = hist[d]
        hist[d] = s
        s += c
    for i in range(cnt):
        d = bd[i]
        o = hist[d]
        hist[d] = o + 1
        out_d[o] = d
        out_p[o] = bp[i]
    for o in range(cnt, k):
        out_d[o] = -1
        out_p[o] = -1
    return cnt


@njit(cache=True, nogil=True)
def block_hits(words, nw, p0, p1, a, th, gn, flags):
    """Which chunks of rows p0..p1-1 hold a row closer than th[j] to query j (``a[j*nw:(j+1)*nw]``), j < QB.

    ``flags[c * QB + j]`` is 1 when chunk ``c`` (``CHUNK_WORDS`` words) holds one, else 0. Register
    blocking: every loaded database word is compared with the QB = 4 queries, whose words and thresholds
    stay in registers, in one branch-free vectorised loop per chunk; ``(d - th)`` in uint64 has its top
    bit set exactly when ``d < th``, so OR-ing them says whether any row is below. A slot with
    ``th[j] = 0`` flags nothing (the tail of a tile); ``gn = 1`` (one query) runs a one-lane loop, so a
    single query pays for itself only. Code lengths other than 1, 2 and 4 words are counted query by query.
    """
    m = p1 - p0
    chunk = max(1, CHUNK_WORDS // nw)
    s63 = np.uint64(63)
    t0 = np.uint64(th[0])
    t1 = np.uint64(th[1])
    t2 = np.uint64(th[2])
    t3 = np.uint64(th[3])
    for c in range((m + chunk - 1) // chunk):
        r0 = p0 + c * chunk
        r1 = min(r0 + chunk, p1)
        x = words[r0 * nw:r1 * nw]
        mc = r1 - r0
        c0 = np.uint64(0)
        c1 = np.uint64(0)
        c2 = np.uint64(0)
        c3 = np.uint64(0)
        if gn == 1 and nw == 1:
            a0 = a[0]
            for i in range(mc):
                c0 |= np.uint64(popcount(x[i] ^ a0)) - t0
        elif gn == 1 and nw == 2:
            a0, b0 = a[0], a[1]
            for i in range(mc):
                c0 |= np.uint64(popcount(x[2 * i] ^ a0) + popcount(x[2 * i + 1] ^ b0)) - t0
        elif gn == 1 and nw == 4:
            a0, b0, e0, f0 = a[0], a[1], a[2], a[3]
            for i in range(mc):
                d = popcount(x[4 * i] ^ a0) + popcount(x[4 * i + 1] ^ b0)
                c0 |= np.uint64(d + popcount(x[4 * i + 2] ^ e0) + popcount(x[4 * i + 3] ^ f0)) - t0
        elif nw == 1:
            a0, a1, a2, a3 = a[0], a[1], a[2], a[3]
            whole = mc - mc % 4
            mins = min_popcount4(words, r0, whole, a0, a1, a2, a3)  # 4 rows at a time (AVX2 where present)
            c0 = np.uint64(mins & 255) - t0
            c1 = np.uint64((mins >> 8) & 255) - t1
            c2 = np.uint64((mins >> 16) & 255) - t2
            c3 = np.uint64((mins >> 24) & 255) - t3
            for i in range(whole, mc):
                v = x[i]
                c0 |= np.uint64(popcount(v ^ a0)) - t0
                c1 |= np.uint64(popcount(v ^ a1)) - t1
                c2 |= np.uint64(popcount(v ^ a2)) - t2
                c3 |= np.uint64(popcount(v ^ a3)) - t3
        elif nw == 2:
            a0, b0, a1, b1, a2, b2, a3, b3 = a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
            for i in range(mc):
                v = x[2 * i]
                w = x[2 * i + 1]
                c0 |= np.uint64(popcount(v ^ a0) + popcount(w ^ b0)) - t0
                c1 |= np.uint64(popcount(v ^ a1) + popcount(w ^ b1)) - t1
                c2 |= np.uint64(popcount(v ^ a2) + popcount(w ^ b2)) - t2
                c3 |= np.uint64(popcount(v ^ a3) + popcount(w ^ b3)) - t3
        elif nw == 4:
            a0, b0, e0, f0 = a[0], a[1], a[2], a[3]
            a1, b1, e1, f1 = a[4], a[5], a[6], a[7]
            a2, b2, e2, f2 = a[8], a[9], a[10], a[11]
            a3, b3, e3, f3 = a[12], a[13], a[14], a[15]
            for i in range(mc):
                v = x[4 * i]
                w = x[4 * i + 1]
                y = x[4 * i + 2]
                z = x[4 * i + 3]
                c0 |= np.uint64(popcount(v ^ a0) + popcount(w ^ b0) + popcount(y ^ e0) + popcount(z ^ f0)) - t0
                c1 |= np.uint64(popcount(v ^ a1) + popcount(w ^ b1) + popcount(y ^ e1) + popcount(z ^ f1)) - t1
                c2 |= np.uint64(popcount(v ^ a2) + popcount(w ^ b2) + popcount(y ^ e2) + popcount(z ^ f2)) - t2
                c3 |= np.uint64(popcount(v ^ a3) + popcount(w ^ b3) + popcount(y ^ e3) + popcount(z ^ f3)) - t3
        else:
            for j in range(QB):
                hit = th[j] > 0 and block_count_below(words, nw, r0, r1, a, j * nw, th[j]) > 0
                flags[c * QB + j] = 1 if hit else 0
            continue
        flags[c * QB] = np.int64(c0 >> s63)
        flags[c * QB + 1] = np.int64(c1 >> s63)
        flags[c * QB + 2] = np.int64(c2 >> s63)
        flags[c * QB + 3] = np.int64(c3 >> s63)


@njit(cache=True, nogil=True)
def transpose_planes(words, nw, p0, p1, planes):
    """``planes[w * m + i]`` = word ``w`` of row ``p0 + i`` (``m = p1 - p0``): each word of the rows contiguous."""
    m = p1 - p0
    x = words[p0 * nw:p1 * nw]
    for w in range(nw):
        dst = planes[w * m:(w + 1) * m]
        for i in range(m):
            dst[i] = x[i * nw + w]


@njit(cache=True, nogil=True)
def plane_hits(planes, nw, m, a, th, flags):
    """:func:`block_hits` for a group of QB queries over a block of ``m`` rows of 2 or 4 words in word planes.

    ``planes`` is the block as :func:`transpose_planes` writes it, so every word of a row sits in its own
    contiguous array and the loop loads whole vectors of the same word of consecutive rows: no shuffles to
    split the rows' words apart, as the row-major loop needs. Each query keeps the smallest distance of
    the chunk (``vpminsq`` with AVX-512), compared with its threshold once per chunk.
    """
    chunk = PLANE_CHUNK_ROWS
    # word w of query j is a[j * nw + w]; the third and fourth words only at 4 words
    a0, b0, a1, b1 = a[0], a[1], a[nw], a[nw + 1]
    a2, b2, a3, b3 = a[2 * nw], a[2 * nw + 1], a[3 * nw], a[3 * nw + 1]
    e0 = f0 = e1 = f1 = e2 = f2 = e3 = f3 = np.uint64(0)
    if nw == 4:
        e0, f0, e1, f1 = a[2], a[3], a[6], a[7]
        e2, f2, e3, f3 = a[10], a[11], a[14], a[15]
    for c in range((m + chunk - 1) // chunk):
        r0 = c * chunk
        r1 = min(r0 + chunk, m)
        m0 = m1 = m2 = m3 = 1 << 20
        if nw == 2:
            x = planes[r0:r1]
            y = planes[m + r0:m + r1]
            for i in range(r1 - r0):
                v = x[i]
                w = y[i]
                m0 = min(m0, popcount(v ^ a0) + popcount(w ^ b0))
                m1 = min(m1, popcount(v ^ a1) + popcount(w ^ b1))
                m2 = min(m2, popcount(v ^ a2) + popcount(w ^ b2))
                m3 = min(m3, popcount(v ^ a3) + popcount(w ^ b3))
        else:
            x = planes[r0:r1]
            y = planes[m + r0:m + r1]
            z = planes[2 * m + r0:2 * m + r1]
            u = planes[3 * m + r0:3 * m + r1]
            for i in range(r1 - r0):
                v = x[i]
                w = y[i]
                g = z[i]
                h = u[i]
                m0 = min(m0, popcount(v ^ a0) + popcount(w ^ b0) + popcount(g ^ e0) + popcount(h ^ f0))
                m1 = min(m1, popcount(v ^ a1) + popcount(w ^ b1) + popcount(g ^ e1) + popcount(h ^ f1))
                m2 = min(m2, popcount(v ^ a2) + popcount(w ^ b2) + popcount(g ^ e2) + popcount(h ^ f2))
                m3 = min(m3, popcount(v ^ a3) + popcount(w ^ b3) + popcount(g ^ e3) + popcount(h ^ f3))
        flags[c * QB] = 1 if m0 < th[0] else 0
        flags[c * QB + 1] = 1 if m1 < th[1] else 0
        flags[c * QB + 2] = 1 if m2 < th[2] else 0
        flags[c * QB + 3] = 1 if m3 < th[3] else 0


@njit(cache=True, nogil=True)
def sliced_hits(words, nw, p0, p1, nunits, scratch, tables, to, a, th, flags):
    """:func:`block_hits` for a group of QB queries over the byte-sliced block in ``scratch``.

    ``scratch`` holds the first ``nunits`` whole units of rows p0..p1-1, transposed
    (:func:`hashtool.hashindex._sliced.transpose_units`), and ``tables[to:]`` the lookup tables of the
    group's queries (:func:`hashtool.hashindex._sliced.query_tables`); the rows past the whole units (the
    tail of the range, fewer than a unit) are counted row by row here.
    """
    m = p1 - p0
    chunk = CHUNK_WORDS // nw
    upc = CHUNK_WORDS // S.UNIT_WORDS
    covered = p0 + nunits * (S.UNIT_WORDS // nw)  # first row not in a whole unit
    s63 = np.uint64(63)
    for c in range((m + chunk - 1) // chunk):
        u0 = c * upc
        u1 = min(u0 + upc, nunits)
        mins = np.int64(0xFFFFFFFF)
        if u1 > u0:
            if nw == 1:
                mins = S.sliced_min4_w1(scratch, u0, u1 - u0, tables, to)
            elif nw == 2:
                mins = S.sliced_min4_w2(scratch, u0, u1 - u0, tables, to)
            else:
                mins = S.sliced_min4_w4(scratch, u0, u1 - u0, tables, to)
        for j in range(QB):
            hit = np.uint64(np.int64((mins >> (8 * j)) & 255) - th[j]) >> s63
            for r in range(max(covered, p0 + c * chunk), min(p0 + (c + 1) * chunk, p1)):
                d = 0
                for w in range(nw):
                    d += popcount(words[r * nw + w] ^ a[j * nw + w])
                hit |= np.uint64(d - th[j]) >> s63
            flags[c * QB + j] = np.int64(hit)


@njit(cache=True, nogil=True)
def take_hits(words, nw, s0, s1, q, qo, k, dist, bd, bp, hist, st):
    """Append the rows s0..s1-1 closer than the query's threshold to its candidates (scan order).

    ``st`` = (count, threshold, live). The threshold is the k-th smallest distance admitted so far,
    kept exact after every admission from ``hist`` (admitted distances per bin; ``live`` = how many are
    <= threshold): a row at the threshold itself comes later than the k-th one, so it can never win the
    tie. A full buffer is compacted to the k best.
    """
    block_distances(words, nw, s0, s1, q, qo, dist)
    c = st[0]
    th = st[1]
    live = st[2]
    m = s1 - s0
    whole = m - m % 8
    for g0 in range(0, whole, 8):  # most rows of a flagged chunk are above th: skip them 8 at a time
        lo = min(min(min(dist[g0], dist[g0 + 1]), min(dist[g0 + 2], dist[g0 + 3])),
                 min(min(dist[g0 + 4], dist[g0 + 5]), min(dist[g0 + 6], dist[g0 + 7])))
        if lo < th:
            c, th, live = _admit_rows(dist, g0, g0 + 8, s0, k, bd, bp, hist, c, th, live)
    if whole < m:
        c, th, live = _admit_rows(dist, whole, m, s0, k, bd, bp, hist, c, th, live)
    st[0] = c
    st[1] = th
    st[2] = live


@njit(cache=True, nogil=True)
def _admit_rows(dist, g0, g1, s0, k, bd, bp, hist, c, th, live):
    """:func:`take_hits`' walk of rows g0..g1-1 of its chunk: admit each row below the running threshold
    ``th``; returns the new (count, threshold, live)."""
    cap = bd.shape[0]
    for i in range(g0, g1):
        d = dist[i]
        if d < th:
            bd[c] = d
            bp[c] = s0 + i
            c += 1
            hist[d] += 1
            live += 1
            while live - hist[th] >= k:
                live -= hist[th]
                th -= 1
            if c == cap:
                # live >= k here (cap > k candidates, none dropped while the threshold was open):
                # keep every row below th and the first k - below at th, in position order
                need = k - (live - hist[th])
                j = 0
                for r in range(c):
                    e = bd[r]
                    if e < th or (e == th and need > 0):
                        if e == th:
                            need -= 1
                        bd[j] = e
                        bp[j] = bp[r]
                        j += 1
                hist[th] -= live - k  # the ties at th beyond the k best are gone
                live = k
                c = j
    return c, th, live


@njit(cache=True, nogil=True)
def knn_tile(words, nw, nbits, q, qa, qb, pa, pb, k, out_d, out_p, out_n, claims, ci):
    """Top k of rows pa..pb-1 for the tile of queries qa..qb-1 (rows qa..qb-1 of out_d/out_p/out_n).

    Blocks in order, all of them when ``claims`` is empty; otherwise only those this thread claims from
    the counter ``claims[ci]`` that every thread of the call shares (each thread still sees its blocks in
    increasing position order, which the tie rule needs; the merge orders by (distance, position)).

    The database is read block by block (L1-sized); within a block, each group of QB queries is counted
    chunk by chunk (:func:`block_hits`, or the tile's own loop: :func:`sliced_hits`, :func:`plane_hits`),
    and only a chunk that holds a row below a query's threshold is looked at row by row, for that query
    (:func:`take_hits`).
    """
    nt = qb - qa
    cap = 2 * k + 32
    bd = np.empty((nt, cap), np.int32)
    bp = np.empty((nt, cap), np.int64)
    hist = np.zeros((nt, nbits + 2), np.int64)
    st = np.zeros((nt, 3), np.int64)  # count, threshold, live
    for t in range(nt):
        st[t, 1] = nbits + 1
    sliced = sliced_pays(nt, nw)
    planes = planes_pays(nt, nw)
    block = max(1, BLOCK_WORDS // nw)
    chunk = PLANE_CHUNK_ROWS if planes else max(1, CHUNK_WORDS // nw)  # rows per flag
    dist = np.empty(chunk, np.int32)
    a = np.zeros(QB * nw, np.uint64)
    th = np.zeros(QB, np.int64)
    flags = np.zeros(QB * ((block + chunk - 1) // chunk), np.int64)
    if sliced or planes:
        scratch = np.empty(BLOCK_WORDS, np.uint64)
    else:
        scratch = np.empty(0, np.uint64)
    if sliced:  # the tile's lookup tables once, a transposed copy of each block once (see _sliced)
        tables = np.zeros(((nt + QB - 1) // QB) * QB * S.TABLE_BYTES, np.uint8)
        for t in range(nt):
            S.query_tables(q, (qa + t) * nw, nw, tables, t * S.TABLE_BYTES)
    else:
        tables = np.empty(0, np.uint8)
    nblocks = (pb - pa + block - 1) // block
    shared = claims.shape[0] > 0
    b = 0
    while True:
        bi = claim(claims, ci) if shared else b
        b += 1
        if bi >= nblocks:
            break
        p0 = pa + bi * block
        p1 = min(p0 + block, pb)
        nunits = (p1 - p0) * nw // S.UNIT_WORDS
        if sliced:
            S.transpose_units(words, p0 * nw, nunits, scratch)
        elif planes:
            transpose_planes(words, nw, p0, p1, scratch)
        for g in range(0, nt, QB):
            gn = min(QB, nt - g)
            for w in range(gn * nw):
                a[w] = q[(qa + g) * nw + w]
            for j in range(QB):
                th[j] = st[g + j, 1] if j < gn else 0
            if sliced:
                sliced_hits(words, nw, p0, p1, nunits, scratch, tables, g * S.TABLE_BYTES, a, th, flags)
            elif planes:
                plane_hits(scratch, nw, p1 - p0, a, th, flags)
            else:
                block_hits(words, nw, p0, p1, a, th, gn, flags)
            # the flags used the thresholds of the block's start: take_hits re-checks with the current one
            for c in range((p1 - p0 + chunk - 1) // chunk):
                for j in range(gn):
                    if flags[c * QB + j]:
                        t = g + j
                        s0 = p0 + c * chunk
                        s1 = min(s0 + chunk, p1)
                        take_hits(words, nw, s0, s1, q, (qa + t) * nw, k, dist, bd[t], bp[t], hist[t], st[t])
    for t in range(nt):
        out_n[qa + t] = emit(bd[t], bp[t], st[t, 0], k, hist[t], out_d[qa + t], out_p[qa + t])


@njit(cache=True, nogil=True)
def knn_scan(words, nw, nbits, q, qa, qb, pa, pb, k, out_d, out_p, out_n, claims):
    """Top k of rows pa..pb-1 for queries qa..qb-1, tile by tile (one task of the thread pool).

    ``claims``: empty (every block), or one shared block counter per tile (see :func:`knn_tile`)."""
    for t, ta in enumerate(range(qa, qb, TILE_Q)):
        knn_tile(words, nw, nbits, q, ta, min(ta + TILE_Q, qb), pa, pb, k, out_d, out_p, out_n, claims, t)


@njit(cache=True, nogil=True)
def knn_merge(cd, cp, cn, k, out_d, out_p, out_n):
    """Merge per-thread top-k lists, each sorted by (distance, position), into the final top k per query.

    A k-way merge by (distance, position): the threads' rows interleave in position (blocks are claimed),
    so concatenating would not give position order within a distance.
    """
    nlists = cn.shape[0]
    nq = cn.shape[1]
    head = np.zeros(nlists, np.int64)
    for qi in range(nq):
        for c in range(nlists):
            head[c] = 0
        o = 0
        while o < k:
            best = -1
            for c in range(nlists):
                h = head[c]
                if h < cn[c, qi]:
                    if best < 0:
                        best = c
                    else:
                        hb = head[best]
                        d, bd = cd[c, qi, h], cd[best, qi, hb]
                        if d < bd or (d == bd and cp[c, qi, h] < cp[best, qi, hb]):
                            best = c
            if best < 0:
                break
            out_d[qi, o] = cd[best, qi, head[best]]
            out_p[qi, o] = cp[best, qi, head[best]]
            head[best] += 1
            o += 1
        out_n[qi] = o
        for r in range(o, k):
            out_d[qi, r] = -1
            out_p[qi, r] = -1


@njit(cache=True, nogil=True)
def range_scan(words, nw, nbits, q, qa, qb, pa, pb, max_distance):
    """Rows pa..pb-1 within ``max_distance`` of queries qa..qb-1 (one task of the thread pool).

    Returns (counts (qb - qa,), distances, positions): matches sorted by (query, distance, position),
    via two stable counting sorts (by distance, then by query) over a buffer that grows as needed.
    """
    nt = qb - qa
    block = max(1, BLOCK_WORDS // nw)
    dist = np.empty(block, np.int32)
    cap = 1024
    bq = np.empty(cap, np.int64)
    bd = np.empty(cap, np.int32)
    bp = np.empty(cap, np.int64)
    total = 0
    for p0 in range(pa, pb, block):
        p1 = min(p0 + block, pb)
        for qi in range(qa, qb):
            hits = block_count_below(words, nw, p0, p1, q, qi * nw, max_distance + 1)
            if hits == 0:
                continue
            if total + hits > cap:
                cap = max(2 * cap, total + hits)
                nq_ = np.empty(cap, np.int64)
                nd_ = np.empty(cap, np.int32)
                np_ = np.empty(cap, np.int64)
                nq_[:total] = bq[:total]
                nd_[:total] = bd[:total]
                np_[:total] = bp[:total]
                bq, bd, bp = nq_, nd_, np_
            block_distances(words, nw, p0, p1, q, qi * nw, dist)
            for i in range(p1 - p0):
                d = dist[i]
                if d <= max_distance:
                    bq[total] = qi - qa
                    bd[total] = d
                    bp[total] = p0 + i
                    total += 1
    # stable counting sort by distance, then by query: (query, distance, position) order
    hist = np.zeros(nbits + 2, np.int64)
    for i in range(total):
        hist[bd[i] + 1] += 1
    for d in range(nbits + 1):
        hist[d + 1] += hist[d]
    tq = np.empty(total, np.int64)
    td = np.empty(total, np.int32)
    tp = np.empty(total, np.int64)
    for i in range(total):
        o = hist[bd[i]]
        hist[bd[i]] = o + 1
        tq[o] = bq[i]
        td[o] = bd[i]
        tp[o] = bp[i]
    counts = np.zeros(nt, np.int64)
    for i in range(total):
        counts[tq[i]] += 1
    starts = np.zeros(nt + 1, np.int64)
    for t in range(nt):
        starts[t + 1] = starts[t] + counts[t]
    out_d = np.empty(total, np.int32)
    out_p = np.empty(total, np.int64)
    for i in range(total):
        o = starts[tq[i]]
        starts[tq[i]] = o + 1
        out_d[o] = td[i]
        out_p[o] = tp[i]
    return counts, out_d, out_p
