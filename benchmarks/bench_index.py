"""Benchmark hashtool.hashindex against faiss and a numpy brute force, side by side in one process.

Protocol (every number in RESULTS.md says which options produced it):

* Data. ``uniform``: independent random bits. ``clustered``: codes that look like learned ones, around
  ``--centres`` random centres (default 300); each code copies a centre and flips every bit with the
  centre's own probability drawn uniformly in [0.05, 0.15]. Queries are drawn from the same distribution
  and are not in the database. Seeded (``--seed``). ``real``: the bundled photo encoder's codes (64 bits) of
  random views of the photos under ``--photos`` (see :func:`real_codes`: a random window of 40-100% of each
  side, rescaled to 30-100%, then one or two random edits of :mod:`hashtool.edits`), computed once into the
  ``--real-cache`` ``.npy`` files; queries are other views of the same photos. Above the number of cached
  codes the database is *tiled*: the real codes, then copies of them with every bit flipped with
  probability ``--flip`` (default 1/16), until ``--n``.
* Methods. ``floor``: a tight XOR+popcount loop over every (query, code) pair with the same tiling and the
  same threads, summing popcounts and selecting nothing: what the hardware can do. ``flat``/``mih``:
  FlatIndex / MIHIndex (default settings, fallback on). ``faiss-flat``: faiss IndexBinaryFlat.
  ``faiss-mih``: faiss IndexBinaryMultiHash with ``nhash`` = MIHIndex's m and ``b = nbits // m``, nflip
  raised from 0 until recall is 1.0 (or ``--max-nflip``). ``numpy``: np.bitwise_count over uint64 words
  + argpartition, on ``--numpy-queries`` queries only (it is slow).
* Timing. Each timed call is preceded by a warm-up call on a few queries (compilation, page faults). The
  batch figure is the best of ``--repeat`` calls on ``--batch`` queries; single-query latency is the
  median of ``--single`` one-query calls. Methods alternate within a case, so background load hits them
  alike; ratios are computed within the run.
* Recall. Against FlatIndex, which is exact (and checked equal, distances and ids, to the naive twin in the
  test suite): recall@k is the fraction of the true k-th-distance ball that a method returns,
  ``min(k, #returned with d <= true d_k) / k`` averaged over queries; exact methods also have their ids
  compared with FlatIndex's (``ids_equal``).

Results: one JSON object per measurement appended to ``<out>.jsonl`` and a markdown table ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from numba import njit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from hashtool.hashindex import FlatIndex, MIHIndex, _pool, load_index  # noqa: E402
from hashtool.hashindex._popcount import popcount  # noqa: E402


# ---------------------------------------------------------------------------------------------- data
@njit(cache=True)
def _clustered_bits(centre_bits, assign, probs, seed, out):
    np.random.seed(seed)
    n, nbits = out.shape
    for i in range(n):
        c = assign[i]
        p = probs[c]
        for b in range(nbits):
            bit = centre_bits[c, b]
            if np.random.random() < p:
                bit = 1 - bit
            out[i, b] = bit


def _flip_depth(flip):
    """j when ``flip`` is 2**-j (j = 1..8), else None."""
    if flip is None:
        return None
    for j in range(1, 9):
        if flip == 2.0 ** -j:
            return j
    return None


def make_data(kind, n, nbits, rng, centres=300, seed=0, flip=None):
    if kind == "uniform":
        return rng.integers(0, 256, size=(n, nbits // 8), dtype=np.uint8)
    crng = np.random.default_rng(12345)  # the same centres for database and queries
    cbits = crng.integers(0, 2, size=(centres, nbits), dtype=np.uint8)
    probs = crng.uniform(0.05, 0.15, size=centres) if flip is None else np.full(centres, flip)
    depth = _flip_depth(flip)
    if depth is not None:  # p = 2**-j: the AND of j random bytes sets each bit with exactly that probability
        cbytes = np.packbits(cbits, axis=1, bitorder="little")
        out = cbytes[rng.integers(0, centres, size=n)]
        mask = rng.integers(0, 256, size=(n, nbits // 8), dtype=np.uint8)
        for _ in range(depth - 1):
            mask &= rng.integers(0, 256, size=(n, nbits // 8), dtype=np.uint8)
        out ^= mask
        return out
    out = np.empty((n, nbits), dtype=np.uint8)
    chunk = 1_000_000
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        _clustered_bits(cbits, rng.integers(0, centres, size=e - s), probs, int(rng.integers(2**31)), out[s:e])
    return np.packbits(out, axis=1, bitorder="little")


# ---------------------------------------------------------------------------------------------- real codes
PHOTO_SIDE = 512  # photos are downscaled once to this longest side; views are cut from the downscaled copy
REAL_QUERIES = 1000
REAL_CHUNK = 1024


def _load_photos(photos):
    from PIL import Image

    from hashtool.encode import find_images
    from hashtool.files.images import open_image
    from hashtool.photosets import flatten_rgb

    paths = find_images(photos)
    if not paths:
        raise SystemExit(f"--photos {photos}: no images found")
    pics = []
    for path in paths:
        img = flatten_rgb(open_image(path))
        img.thumbnail((PHOTO_SIDE, PHOTO_SIDE), Image.Resampling.BILINEAR)
        pics.append(img)
    return pics


def _view(pics, rng):
    """A random view of a random photo: a window of 40-100% of each side, rescaled to 30-100%, then one or
    two random edits (:func:`hashtool.edits.random_edit`)."""
    from PIL import Image

    from hashtool import edits

    img = pics[int(rng.integers(len(pics)))]
    w, h = img.size
    cw, ch = max(8, round(w * rng.uniform(0.4, 1.0))), max(8, round(h * rng.uniform(0.4, 1.0)))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    view = img.crop((x, y, x + cw, y + ch))
    scale = rng.uniform(0.3, 1.0)
    view = view.resize((max(8, round(cw * scale)), max(8, round(ch * scale))), Image.Resampling.BILINEAR)
    return edits.random_edit(view, rng, max_edits=2)[0]


def encode_real(args):
    """Extend the ``--real-cache`` files to ``--real-count`` codes of views (view i drawn from the seed
    ``(--seed, i)``, queries from ``(--seed + 1, i)``, so a run cut short by ``--encode-seconds`` and
    resumed gives the same codes as one run). The next chunk's views are prepared on a thread while the
    encoder (2 threads) encodes the current one."""
    from concurrent.futures import ThreadPoolExecutor

    from hashtool.encode import Encoder, convert_image
    from hashtool.store import bundled_encoder_path

    enc = Encoder(bundled_encoder_path("photo"), threads=2)
    pp = enc.preprocess
    t0 = time.perf_counter()
    pics = _load_photos(args.photos)
    load_s = time.perf_counter() - t0
    dpath, qpath = args.real_cache + ".npy", args.real_cache + "-queries.npy"
    os.makedirs(os.path.dirname(os.path.abspath(dpath)), exist_ok=True)

    def prep(seed, a, b):
        return np.stack([convert_image(_view(pics, np.random.default_rng([seed, i])), pp) for i in range(a, b)])

    def run(seed, have, count, limit):
        parts, i, t = [have], len(have), time.perf_counter()
        with ThreadPoolExecutor(1) as ex:
            nxt = ex.submit(prep, seed, i, min(count, i + REAL_CHUNK)) if i < count else None
            while nxt is not None:
                images = nxt.result()
                b = i + len(images)
                more = b < count and time.perf_counter() - t0 < limit
                nxt = ex.submit(prep, seed, b, min(count, b + REAL_CHUNK)) if more else None
                parts.append(enc.encode(images))
                i = b
                print(f"# {i}/{count} codes, {(i - len(have)) / (time.perf_counter() - t):.1f} views/s", file=sys.stderr)
        return np.concatenate(parts), (i - len(have)) / max(time.perf_counter() - t, 1e-9)

    empty = np.zeros((0, enc.nbits // 8), np.uint8)
    if not os.path.exists(qpath):
        np.save(qpath, run(args.seed + 1, empty, REAL_QUERIES, float("inf"))[0])
    have = np.load(dpath) if os.path.exists(dpath) else empty
    codes, rate = run(args.seed, have, args.real_count, args.encode_seconds)
    np.save(dpath, codes)
    row = {"what": "real-codes", "codes": len(codes), "new": len(codes) - len(have), "views_per_s": round(rate, 1),
           "photos": len(pics), "photo_load_s": round(load_s, 1), "loadavg": round(load_avg(), 2),
           "distinct_codes": int(len(np.unique(codes, axis=0))) if len(codes) else 0}
    print(json.dumps(row))
    return [row]


def real_codes(args):
    """(database codes, query codes) of the ``real`` source, from the cache that ``--encode-real`` fills."""
    paths = (args.real_cache + ".npy", args.real_cache + "-queries.npy")
    if not all(os.path.exists(p) for p in paths):
        raise SystemExit(f"--data real: no cached codes at {paths[0]}; run with --encode-real first")
    return np.load(paths[0]), np.load(paths[1])


def tile_with_flips(codes, n, rng, flip):
    """``codes`` followed by copies of them with every bit flipped with probability ``flip`` (2**-j), to n rows."""
    depth = _flip_depth(flip)
    if depth is None:
        raise SystemExit("--flip must be 2**-j (j = 1..8) to tile real codes")
    out = np.empty((n, codes.shape[1]), np.uint8)
    for a in range(0, n, len(codes)):
        b = min(n, a + len(codes))
        out[a:b] = codes[: b - a]
        if a:
            mask = rng.integers(0, 256, size=(b - a, codes.shape[1]), dtype=np.uint8)
            for _ in range(depth - 1):
                mask &= rng.integers(0, 256, size=(b - a, codes.shape[1]), dtype=np.uint8)
            out[a:b] ^= mask
    return out


# ---------------------------------------------------------------------------------------------- floor
@njit(cache=True, nogil=True)
def _floor_part(words, nw, n, q, qa, qb, out):
    """Sum of popcount(code ^ query) over every pair: blocks of 2048 words reused by every query."""
    block = max(1, 2048 // nw)
    for p0 in range(0, n, block):
        p1 = min(p0 + block, n)
        x = words[p0 * nw:p1 * nw]
        m = p1 - p0
        for qi in range(qa, qb):
            s = 0
            o = qi * nw
            if nw == 1:
                a = q[o]
                for i in range(m):
                    s += popcount(x[i] ^ a)
            elif nw == 2:
                a = q[o]
                b = q[o + 1]
                for i in range(m):
                    s += popcount(x[2 * i] ^ a) + popcount(x[2 * i + 1] ^ b)
            else:
                for i in range(m):
                    for w in range(nw):
                        s += popcount(x[i * nw + w] ^ q[o + w])
            out[qi] += s


def floor_scan(words, nw, n, q, threads):
    nq = q.shape[0] // nw
    out = np.zeros(nq, dtype=np.int64)
    _pool.run(threads, _floor_part, [(words, nw, n, q, qa, qb, out) for qa, qb in _pool.split(nq, threads)])
    return out


# ---------------------------------------------------------------------------------------------- helpers
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_of(fn, repeat):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def median_latency(fn, queries, count):
    times = []
    for i in range(count):
        q = queries[i % len(queries)][None, :]
        t = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def recall_at(true_d, d, k):
    kth = true_d[:, k - 1][:, None]
    hits = ((d <= kth) & (d >= 0)).sum(axis=1)
    return float(np.minimum(hits, k).mean() / k)


def load_avg():
    return os.getloadavg()[0]


# ---------------------------------------------------------------------------------------------- methods
class Methods:
    def __init__(self, db, nbits, threads_list, args):
        self.db, self.nbits, self.args = db, nbits, args
        self.build = {}
        t = time.perf_counter()
        self.flat = FlatIndex(nbits)
        self.flat.add(db)
        self.build["flat"] = time.perf_counter() - t
        self.mih = None
        self.faiss_flat = None
        self.faiss_mih = None

    def ensure_mih(self):
        if self.mih is None:
            t = time.perf_counter()
            self.mih = MIHIndex(self.nbits)
            self.mih.add(self.db)
            self.mih._ensure_tables()
            self.build["mih"] = time.perf_counter() - t
        return self.mih

    def ensure_faiss_flat(self):
        import faiss

        if self.faiss_flat is None:
            t = time.perf_counter()
            self.faiss_flat = faiss.IndexBinaryFlat(self.nbits)
            self.faiss_flat.add(self.db)
            self.build["faiss-flat"] = time.perf_counter() - t
        return self.faiss_flat

    def ensure_faiss_mih(self):
        import faiss

        if self.faiss_mih is None:
            m = self.ensure_mih().m
            b = self.nbits // m
            t = time.perf_counter()
            idx = faiss.IndexBinaryMultiHash(self.nbits, m, b)
            idx.add(self.db)
            self.build["faiss-mih"] = time.perf_counter() - t
            self.faiss_mih = idx
        return self.faiss_mih


def run_case(args, n, nbits, kind, out_rows):
    import faiss

    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    if kind == "real":
        real, real_q = real_codes(args)
        if nbits != real.shape[1] * 8:
            raise SystemExit(f"--data real: the photo encoder's codes have {real.shape[1] * 8} bits, not {nbits}")
        db = real[:n] if n <= len(real) else tile_with_flips(real, n, rng, 1 / 16 if args.flip is None else args.flip)
        queries = real_q[: args.batch]
    else:
        db = make_data(kind, n, nbits, rng, args.centres, flip=args.flip)
        queries = make_data(kind, args.batch, nbits, np.random.default_rng(args.seed + 1), args.centres, flip=args.flip)
    gen_s = time.perf_counter() - t
    print(f"# case n={n} nbits={nbits} data={kind} (generated in {gen_s:.1f}s, load {load_avg():.1f})", file=sys.stderr)
    M = Methods(db, nbits, args.threads, args)
    words = M.flat._words
    nw = M.flat._nw
    qwords = M.flat._prepare_codes(queries, "queries")
    base = {"n": n, "nbits": nbits, "data": kind, "batch": args.batch}

    def emit(row):
        row = {**base, **row, "loadavg": round(load_avg(), 2), "peak_rss_mb": round(peak_mb(), 1)}
        out_rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    if "mih" in args.methods or "faiss-mih" in args.methods:
        M.ensure_mih()
    for name, secs in M.build.items():
        emit({"what": "build", "method": name, "seconds": round(secs, 3)})
    if "save" in args.methods:
        for name in ("flat", "mih"):
            index = M.flat if name == "flat" else M.mih
            if index is None:
                continue
            with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
                path = os.path.join(tmp, "i.htidx")
                t = time.perf_counter()
                index.save(path)
                save_s = time.perf_counter() - t
                size = os.path.getsize(path)
                res = subprocess.run([sys.executable, __file__, "--open-only", path], capture_output=True, text=True)
                opened = json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else {"error": res.stderr[-500:]}
                emit({"what": "file", "method": name, "save_s": round(save_s, 3), "file_mb": round(size / 2**20, 1), **opened})

    for k in args.k:
        truth_d, truth_i = None, None
        for threads in args.threads:
            M.flat.threads = threads
            faiss.omp_set_num_threads(threads)
            results = {}
            timers = []
            if "floor" in args.methods:
                timers.append(("floor", lambda q: floor_scan(words, nw, n, q, threads), qwords, None))
            timers.append(("flat", lambda q: M.flat.search(q, k), queries, None))
            if "mih" in args.methods:
                M.mih.threads = threads
                timers.append(("mih", lambda q: M.mih.search(q, k), queries, None))
            if "faiss-flat" in args.methods:
                ff = M.ensure_faiss_flat()
                timers.append(("faiss-flat", lambda q: ff.search(q, k), queries, None))
            if "numpy" in args.methods:
                timers.append(("numpy", lambda q: numpy_knn(words, nw, n, q, k), qwords[: args.numpy_queries * nw], args.numpy_queries))
            for name, fn, qs, nq_override in timers:
                warm = qs[: 4 * nw] if name in ("floor", "numpy") else qs[:4]
                fn(warm)
                secs, res = best_of(lambda: fn(qs), args.repeat if name != "numpy" else 1)
                nq = nq_override or args.batch
                results[name] = res
                row = {"what": "knn", "method": name, "k": k, "threads": threads, "qps": round(nq / secs, 1), "seconds": round(secs, 4), "queries": nq}
                if name == "mih":
                    st = M.mih.last_stats
                    row["scan_fraction"] = round(float((st["path"] == "scan").mean()), 3)
                    row["mean_candidates"] = round(float(st["candidates"].mean()), 1)
                    row["mean_lookups"] = round(float(st["lookups"].mean()), 1)
                emit(row)
            if truth_d is None:
                truth_d, truth_i = results["flat"]
            for name in ("mih", "faiss-flat"):
                if name in results:
                    d, i = results[name]
                    emit({"what": "check", "method": name, "k": k, "threads": threads,
                          "recall": recall_at(truth_d, d, k), "distances_equal": bool((d == truth_d).all()),
                          "ids_equal": bool((i == truth_i).all())})
            if "faiss-mih" in args.methods:
                fm = M.ensure_faiss_mih()
                for nflip in range(0, args.max_nflip + 1):
                    fm.nflip = nflip
                    fm.search(queries[:4], k)
                    secs, (d, i) = best_of(lambda: fm.search(queries, k), args.repeat)
                    rec = recall_at(truth_d, d, k)
                    emit({"what": "knn", "method": "faiss-mih", "k": k, "threads": threads, "nflip": nflip,
                          "qps": round(args.batch / secs, 1), "seconds": round(secs, 4), "recall": rec})
                    if rec >= 1.0:
                        break
            if args.single:
                single = [("flat", lambda q: M.flat.search(q, k))]
                if "mih" in args.methods:
                    single.append(("mih", lambda q: M.mih.search(q, k)))
                if "faiss-flat" in args.methods:
                    single.append(("faiss-flat", lambda q: M.faiss_flat.search(q, k)))
                for name, fn in single:
                    fn(queries[:1])
                    lat = median_latency(fn, queries, args.single)
                    emit({"what": "single", "method": name, "k": k, "threads": threads, "median_ms": round(lat * 1e3, 3)})
    for r in args.range:
        for threads in args.threads:
            M.flat.threads = threads
            rows = {}
            for name, index in (("flat", M.flat), ("mih", M.mih)):
                if index is None:
                    continue
                index.threads = threads
                index.range_search(queries[:4], r)
                secs, res = best_of(lambda: index.range_search(queries, r), args.repeat)
                rows[name] = res
                row = {"what": "range", "method": name, "max_distance": r, "threads": threads,
                       "qps": round(args.batch / secs, 1), "seconds": round(secs, 4),
                       "mean_results": round(float(res[0][-1] / args.batch), 2)}
                if name == "mih":
                    st = index.last_stats
                    row["scan_fraction"] = round(float((st["path"] == "scan").mean()), 3)
                    row["mean_candidates"] = round(float(st["candidates"].mean()), 1)
                emit(row)
            if "mih" in rows:
                same = all(np.array_equal(a, b) for a, b in zip(rows["flat"], rows["mih"]))
                emit({"what": "check", "method": "mih-range", "max_distance": r, "threads": threads, "identical": same})


def numpy_knn(qwords_db, nw, n, q, k):
    db = qwords_db.reshape(n, nw)
    qs = q.reshape(-1, nw)
    out_d = np.empty((len(qs), k), np.int32)
    out_i = np.empty((len(qs), k), np.int64)
    for j, x in enumerate(qs):
        d = np.bitwise_count(db ^ x).sum(axis=1, dtype=np.int32)
        part = np.argpartition(d, k - 1)[:k]
        order = np.lexsort((part, d[part]))
        out_d[j], out_i[j] = d[part][order], part[order]
    return out_d, out_i


def open_only(path):
    """Run in a fresh process: opening a saved index and answering one query, with the kernels loaded first
    (a server that opens a new index), then index.verify() (a read of every byte)."""
    from hashtool.hashindex import warmup

    out = {}
    t = time.perf_counter()
    warmup()
    out["kernels_load_ms"] = round((time.perf_counter() - t) * 1e3, 1)
    base = rss_mb()
    t = time.perf_counter()
    idx = load_index(path)
    out["open_ms"] = round((time.perf_counter() - t) * 1e3, 2)
    q = np.random.default_rng(7).integers(0, 256, size=(1, idx.nbits // 8), dtype=np.uint8)
    idx.search(q, 10)
    out["open_and_first_query_ms"] = round((time.perf_counter() - t) * 1e3, 2)
    out["rss_after_query_mb"] = round(rss_mb() - base, 1)
    t = time.perf_counter()
    idx.verify()
    out["verify_ms"] = round((time.perf_counter() - t) * 1e3, 1)
    out["rss_after_verify_mb"] = round(rss_mb() - base, 1)
    print(json.dumps(out))


def scale(args):
    """Large-n MIH: codes generated to a memory-mapped .npy, then build+save and open+serve, each in its
    own fresh process (peak RSS of each is its own). Clustered codes as in the other cases.

    ``--scale-steps`` runs only some of generate / build / serve (files are kept between invocations, so
    each step can run in its own lock hold); the files are deleted after a serve step unless ``--keep``."""
    folder = args.tmp or tempfile.gettempdir()
    steps = args.scale_steps
    rows = []
    for n in args.n:
        for nbits in args.nbits:
            codes_path = os.path.join(folder, f"scale-{n}-{nbits}.npy")
            queries_path = os.path.join(folder, f"scale-{n}-{nbits}-q.npy")
            index_path = os.path.join(folder, f"scale-{n}-{nbits}.htidx")
            row = {"what": "scale", "n": n, "nbits": nbits, "data": args.data[0], "centres": args.centres,
                   "flip": args.flip, "steps": " ".join(steps), "loadavg_start": round(load_avg(), 2),
                   "started_utc": time.strftime("%H:%M:%S", time.gmtime())}
            if "generate" in steps:
                t = time.perf_counter()
                mm = np.lib.format.open_memmap(codes_path, mode="w+", dtype=np.uint8, shape=(n, nbits // 8))
                rng = np.random.default_rng(args.seed)
                chunk = 5_000_000
                for a in range(0, n, chunk):
                    mm[a:a + chunk] = make_data(args.data[0], min(chunk, n - a), nbits, rng, args.centres, flip=args.flip)
                mm.flush()
                del mm
                np.save(queries_path, make_data(args.data[0], max(args.single, 10), nbits,
                                                np.random.default_rng(args.seed + 1), args.centres, flip=args.flip))
                row["generate_s"] = round(time.perf_counter() - t, 1)
            for step, extra in (("build", [codes_path, index_path]), ("serve", [index_path, queries_path, str(args.single)])):
                if step not in steps:
                    continue
                res = subprocess.run([sys.executable, __file__, "--scale-" + step, *extra], capture_output=True, text=True)
                if res.returncode != 0:
                    row["error_" + step] = res.stderr[-800:]
                    break
                row.update(json.loads(res.stdout.strip().splitlines()[-1]))
            if os.path.exists(index_path):
                row["file_bytes"] = os.path.getsize(index_path)
                row["file_bytes_per_code"] = round(os.path.getsize(index_path) / n, 2)
            row["loadavg_end"] = round(load_avg(), 2)
            print(json.dumps(row))
            rows.append(row)
            if "serve" in steps and not args.keep:
                for path in (codes_path, queries_path, index_path):
                    if os.path.exists(path):
                        os.unlink(path)
    if args.out:
        with open(args.out + ".jsonl", "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


def scale_build(codes_path, index_path):
    codes = np.load(codes_path, mmap_mode="r")
    t = time.perf_counter()
    index = MIHIndex(codes.shape[1] * 8)
    index.add(codes)
    del codes
    index._ensure_tables()
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    index.save(index_path)
    save_s = time.perf_counter() - t
    t = index._ensure_tables()
    sections = {name: round(arr.nbytes / 2**20, 1) for name, arr in index._sections()[1].items() if arr.nbytes > 2**20}
    print(json.dumps({"build_s": round(build_s, 1), "save_s": round(save_s, 1), "m": index.m,
                      "dense_tables": int(t["t_dense"].sum()), "sections_mib": sections,
                      "build_peak_rss_gib": round(peak_mb() / 1024, 2)}))


def scale_serve(index_path, queries_path, single):
    from hashtool.hashindex import warmup
    from hashtool.hashindex.flat import flat_knn

    warmup()
    queries = np.load(queries_path)
    t = time.perf_counter()
    index = load_index(index_path)
    index.search(queries[:1], 10)
    first_ms = (time.perf_counter() - t) * 1e3
    lat = []
    for i in range(single):
        t = time.perf_counter()
        index.search(queries[i: i + 1], 10)
        lat.append(time.perf_counter() - t)
    paths = [str(index.search(queries[i: i + 1], 10, return_stats=True)[2]["path"][0]) for i in range(min(single, 50))]
    # exactness on 10 queries against the scan over the same mapped codes
    d, ids = index.search(queries[:10], 10)
    q = index._prepare_codes(queries[:10], "queries")
    fd, fp = flat_knn(index._words, index._nw, index.nbits, len(index), q, 10, index.threads)
    print(json.dumps({"open_and_first_query_ms": round(first_ms, 1), "single_median_ms": round(float(np.median(lat)) * 1e3, 3),
                      "single_p90_ms": round(float(np.quantile(lat, 0.9)) * 1e3, 3),
                      "mih_path_share": round(paths.count("mih") / max(len(paths), 1), 3),
                      "exact_vs_scan": bool((d == fd).all() and (ids == index._ids_of(fp)).all()),
                      "serve_peak_rss_gib": round(peak_mb() / 1024, 2)}))


def cold_warm(args):
    """First call in a fresh process: with an empty Numba cache (cold), then with the cache filled (warm)."""
    code = (
        "import time, json; t0 = time.perf_counter(); "
        "import numpy as np; from hashtool.hashindex import FlatIndex, MIHIndex, warmup; t1 = time.perf_counter(); "
        "w = warmup(); t2 = time.perf_counter(); "
        "idx = FlatIndex(64); idx.add(np.random.default_rng(0).integers(0, 256, size=(1000, 8), dtype=np.uint8)); "
        "t3 = time.perf_counter(); idx.search(np.zeros((1, 8), np.uint8), 10); t4 = time.perf_counter(); "
        "print(json.dumps({'import_s': round(t1 - t0, 3), 'warmup_s': round(t2 - t1, 3), 'first_search_after_warmup_ms': round((t4 - t3) * 1e3, 2)}))"
    )
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "src")}
        for label in ("cold", "warm", "warm"):
            t = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t
            row = {"what": "first-call", "cache": label, "process_wall_s": round(wall, 2), "loadavg": round(load_avg(), 2)}
            row.update(json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else {"error": res.stderr[-300:]})
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    return rows


def to_markdown(rows):
    """One table per kind of measurement ("what"), with the columns that kind uses."""
    out = []
    for what in dict.fromkeys(r.get("what") for r in rows):
        group = [r for r in rows if r.get("what") == what]
        keys = [k for k in dict.fromkeys(k for r in group for k in r) if k != "what"]
        out.append(f"**{what}**\n")
        out.append("| " + " | ".join(keys) + " |")
        out.append("|" + "---|" * len(keys))
        for r in group:
            out.append("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
        out.append("")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[1_000_000])
    p.add_argument("--nbits", type=int, nargs="+", default=[64])
    p.add_argument("--data", nargs="+", default=["uniform"], choices=["uniform", "clustered", "real"])
    p.add_argument("--photos", default="/work/photos/train", help="--data real: the photos whose views are encoded")
    p.add_argument("--real-count", type=int, default=200_000, help="--encode-real: codes the cache should hold")
    p.add_argument("--encode-real", action="store_true", help="only extend the --real-cache codes (resumable)")
    p.add_argument("--encode-seconds", type=float, default=float("inf"), help="--encode-real: stop after this long")
    p.add_argument("--real-cache", default=os.path.join(os.path.dirname(__file__), "out", "real-codes"),
                   help="--data real: the cached codes (<this>.npy and <this>-queries.npy)")
    p.add_argument("--k", type=int, nargs="*", default=[10])
    p.add_argument("--range", type=int, nargs="*", default=[])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--methods", nargs="+", default=["floor", "flat", "mih", "faiss-flat"],
                   choices=["floor", "flat", "mih", "faiss-flat", "faiss-mih", "numpy", "save"])
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--single", type=int, default=0, help="one-query calls for the latency median (0: skip)")
    p.add_argument("--numpy-queries", type=int, default=20)
    p.add_argument("--max-nflip", type=int, default=6)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--centres", type=int, default=300)
    p.add_argument("--flip", type=float, default=None,
                   help="clustered: every bit flipped with this probability (default: per centre, U[0.05, 0.15])")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", default=None, help="folder for saved index files")
    p.add_argument("--out", default=None, help="write <out>.jsonl and <out>.md")
    p.add_argument("--cold-warm", action="store_true", help="only measure the first call, cold and warm cache")
    p.add_argument("--open-only", default=None, help=argparse.SUPPRESS)
    p.add_argument("--scale", action="store_true",
                   help="MIH only: generate to a .npy, build+save and open+serve in separate processes")
    p.add_argument("--scale-steps", nargs="+", default=["generate", "build", "serve"],
                   choices=["generate", "build", "serve"], help="with --scale: which steps to run (files stay between)")
    p.add_argument("--keep", action="store_true", help="with --scale: keep the files after serving")
    p.add_argument("--scale-build", nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("--scale-serve", nargs=3, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.open_only:
        open_only(args.open_only)
        return
    if args.scale_build:
        scale_build(*args.scale_build)
        return
    if args.scale_serve:
        scale_serve(args.scale_serve[0], args.scale_serve[1], int(args.scale_serve[2]))
        return
    if args.scale:
        scale(args)
        return
    rows = []
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    if args.cold_warm:
        rows = cold_warm(args)
    elif args.encode_real:
        rows = encode_real(args)
    else:
        for n in args.n:
            for nbits in args.nbits:
                for kind in args.data:
                    run_case(args, n, nbits, kind, rows)
    md = f"Command: `python benchmarks/bench_index.py {' '.join(sys.argv[1:])}` (started {started})\n\n" + to_markdown(rows)
    print(md)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".jsonl", "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        with open(args.out + ".md", "w") as f:
            f.write(md + "\n")


if __name__ == "__main__":
    main()
