"""Near-duplicate retrieval on real photos: the photo encoder against perceptual hashes and the backbone.

Protocol (all seeded, all in memory; nothing is written into any photo folder):

* Photos: the held-out part of :mod:`hashtool.photosets` (never seen in training). *Originals* are the
  held-out images that are not clip-art stamps and whose short side is at least 256 px.
* Database: every held-out image (originals, stamps, small images) plus ``--crops`` crops of each original
  (a random window of 35-50% of each side: another picture of the same scene, a hard distractor).
* Queries: one edited copy of every original per edit kind of :mod:`hashtool.edits` (16 kinds, in three
  groups: easy, hard, other), each made by that single edit from the original at full resolution.
* A query's target is its original. Crops of the query's own original take no part in its ranking (they are
  neither the answer nor unrelated), and neither do other copies of the same picture in the held-out set
  (:func:`same_picture_groups`: GCompris ships some photos twice, at two sizes in two activities; finding the
  other copy first is right, not a miss). Top-1 and top-5 are tie-aware: the expected hit rate when ties at the
  target's distance are broken at random.
* Copy radius: the smallest distance within which 95% of all copies lie from their original;
  ``unrelated@r95`` is the share of (query, database item) pairs unrelated to each other (not the same
  original, not its crop) within that radius.
* Category mAP: held-out GCompris photos labelled by their category folder, each querying the others.
* Speed: photos/s on ``--speed-photos`` 12-megapixel JPEGs (``bench_decode.make_photos``: the largest
  wallpapers cropped and resized to 4000 x 3000, quality 90, in a temporary folder), end to end through ``Encoder.encode_files`` with 2 threads, next to imagehash's pHash on
  the same files (Image.open + phash, one thread, as its users call it).

Methods: the encoder(s) given by ``--encoder`` (default: the bundled photo and Fashion-MNIST encoders),
imagehash's 64-bit pHash, dHash and wHash, and the backbone's float features with cosine similarity (the
ceiling of any code on this backbone; needs hashtool[train]).

Writes ``benchmarks/results/photos.json``, ``photos.md`` and a contact sheet ``photos_contact.jpg``.
Run alone on a quiet machine: ``python benchmarks/bench_photos.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from hashtool import edits, photosets
from hashtool.files.images import convert_image
from hashtool.evaluate import hamming_distances, radius_for_recall, tie_aware_hits

OUT = Path(__file__).parent / "results"
MIN_ORIGINAL_SIDE = 256
SAME_THUMB = 16  # same_picture_groups: thumbnail side
SAME_ASPECT = 0.01  # ... aspect ratios within 1%
SAME_MEAN_DIFF = 4.0  # ... mean absolute difference of the grey thumbnails, out of 255


def same_picture_groups(images) -> list[int]:
    """For each image, the index of the first image that is the same picture (itself if none): the same aspect
    ratio within :data:`SAME_ASPECT` and box-downscaled grey thumbnails of :data:`SAME_THUMB` pixels whose mean
    absolute difference is under :data:`SAME_MEAN_DIFF`. A pixel rule, blind to every method benchmarked."""
    thumbs = [np.asarray(im.convert("L").resize((SAME_THUMB, SAME_THUMB), Image.Resampling.BOX), dtype=np.float64) for im in images]
    aspect = np.array([im.size[0] / im.size[1] for im in images])
    group = list(range(len(images)))
    for i in range(len(images)):
        for j in range(i):
            if group[j] == j and abs(aspect[i] / aspect[j] - 1) <= SAME_ASPECT and np.abs(thumbs[i] - thumbs[j]).mean() < SAME_MEAN_DIFF:
                group[i] = j
                break
    return group


def build_set(crops: int, seed: int):
    """(database images, database info, query images, query info) per the module docstring."""
    held = photosets.collect("heldout")
    rng = np.random.default_rng(seed)
    db, db_info, queries, q_info = [], [], [], []
    originals = [(p, img) for p, img in held if p.source != "stamps" and min(img.size) >= MIN_ORIGINAL_SIDE]
    orig_ids = {p.key for p, _ in originals}
    group = same_picture_groups([img for _, img in held])
    # "of": the picture an item shows (the key of the group's original), so the ranking can leave it out
    picture = {}
    for (p, _), g in zip(held, group):
        picture.setdefault(g, None)
        if p.key in orig_ids and picture[g] is None:
            picture[g] = p.key
    of_key = {p.key: picture[g] for (p, _), g in zip(held, group)}
    for p, img in held:
        db.append(img)
        db_info.append({"key": p.key, "label": p.label, "source": p.source, "of": of_key[p.key], "crop": False})
    for p, img in originals:
        w, h = img.size
        for _ in range(crops):
            fw, fh = rng.uniform(0.35, 0.5, size=2)
            cw, ch = int(w * fw), int(h * fh)
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            db.append(img.crop((x, y, x + cw, y + ch)))
            db_info.append({"key": f"{p.key}#crop", "label": "crop", "source": p.source, "of": of_key[p.key], "crop": True})
    index_of = {info["key"]: i for i, info in enumerate(db_info) if not info["crop"]}
    for p, img in originals:
        for kind in edits.EDITS:
            queries.append(edits.apply_edit(img, kind, rng))
            q_info.append({"of": of_key[p.key], "target": index_of[p.key], "kind": kind, "group": edits.EDITS[kind].group})
    return db, db_info, queries, q_info


# -- methods: each maps PIL images to a distance matrix -------------------------------------------------


class Codes:
    """Hamming distances between packed codes."""

    def __init__(self, name, encode):
        self.name, self.encode = name, encode

    def distances(self, q, d):
        return hamming_distances(q, d).astype(np.float64)


def onnx_method(path):
    from hashtool.encode import Encoder

    enc = Encoder(path, threads=2)
    pp = enc.preprocess

    def encode(images):
        return enc.encode(np.stack([convert_image(im, pp) for im in images]))

    return Codes(f"{enc.method} {enc.nbits}b ({Path(path).name})", encode)


def imagehash_method(name):
    import imagehash

    fn = {"phash": imagehash.phash, "dhash": imagehash.dhash, "whash": imagehash.whash}[name]

    def encode(images):
        bits = np.stack([fn(im).hash.ravel() for im in images])
        return np.packbits(bits, axis=1, bitorder="little")

    return Codes(f"imagehash {name} 64b", encode)


class Cosine:
    name = "backbone float features, cosine (ceiling)"

    def __init__(self):
        from hashtool.preprocess import Preprocess
        from hashtool.train.backbone import Backbone, backbone_features, backbone_session
        from hashtool.train.methods.edit_contrastive import MEAN, STD

        self.pp = Preprocess(224, 224, "RGB", "stretch", MEAN, STD)
        self.session = backbone_session(Backbone("efficientnet-lite0").load_pretrained(), self.pp, threads=2)
        self.features = backbone_features

    def encode(self, images):
        f = self.features(self.session, np.stack([convert_image(im, self.pp) for im in images]), self.pp)
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    def distances(self, q, d):
        return 1.0 - q @ d.T


# -- metrics ---------------------------------------------------------------------------------------


def evaluate(method, db, db_info, queries, q_info):
    t = time.perf_counter()
    dc, qc = method.encode(db), method.encode(queries)
    encode_s = time.perf_counter() - t
    dist = method.distances(qc, dc)
    target = np.array([q["target"] for q in q_info])
    of_db = np.array([info["of"] or "" for info in db_info], dtype=object)
    of_q = np.array([q["of"] for q in q_info], dtype=object)
    related = of_db[None, :] == of_q[:, None]  # the original itself and its crops
    valid = ~related
    hits = tie_aware_hits(dist, target, ks=(1, 5), valid=valid)
    kinds = np.array([q["kind"] for q in q_info])
    groups = np.array([q["group"] for q in q_info])
    res = {"method": method.name, "encode_s": encode_s, "per_kind": {}, "per_group": {}}
    for k in edits.EDITS:
        m = kinds == k
        res["per_kind"][k] = {"top1": float(hits["top1"][m].mean()), "top5": float(hits["top5"][m].mean())}
    for g in edits.GROUPS:
        m = groups == g
        res["per_group"][g] = {"top1": float(hits["top1"][m].mean()), "top5": float(hits["top5"][m].mean())}
    copy_d = dist[np.arange(len(dist)), target]
    r95 = radius_for_recall(copy_d, 0.95)
    res["r95"] = r95
    res["unrelated_at_r95"] = float((dist[valid] <= r95).mean())
    res["unrelated_pairs"] = int(valid.sum())
    # category mAP over held-out GCompris categorisation photos
    cat = [i for i, info in enumerate(db_info) if not info["crop"] and info["label"].startswith("categorization/")]
    labels = np.unique([db_info[i]["label"] for i in cat], return_inverse=True)[1]
    res["category_map"] = _map_excluding_self(method.distances(dc[cat], dc[cat]), labels)
    res["category_images"] = len(cat)
    return res, dist


def _map_excluding_self(dist, labels):
    """mAP of every item querying the others, ranked by (distance, position)."""
    aps = []
    for i in range(len(dist)):
        order = [j for j in np.lexsort((np.arange(len(dist)), dist[i])) if j != i]
        rel = labels[order] == labels[i]
        if rel.any():
            prec = np.cumsum(rel) / np.arange(1, len(rel) + 1)
            aps.append(float(prec[rel].mean()))
    return float(np.mean(aps))


# -- speed on 12 MP JPEGs --------------------------------------------------------------------------


def speed(encoders, n: int):
    import imagehash

    from hashtool.encode import Encoder

    from bench_decode import make_photos  # the 12-megapixel JPEGs of the decoding benchmark

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_photos(Path(tmp), n)
        for path in encoders:
            enc = Encoder(path, threads=2)
            enc.encode_files(paths[:4])  # warm the session and the page cache
            r = enc.encode_files(paths)
            out[f"{enc.method} {enc.nbits}b"] = {"photos_per_s": r.stats["images_per_s"], "decode_s": r.stats["decode_s"],
                                                   "inference_s": r.stats["inference_s"], "wall_s": r.stats["wall_s"]}
        t = time.perf_counter()
        for p in paths:
            with Image.open(p) as im:
                imagehash.phash(im)
        out["imagehash phash (1 thread)"] = {"photos_per_s": len(paths) / (time.perf_counter() - t)}
    out["photos"] = len(paths)
    return out


def contact_sheet(db, queries, q_info, dists: dict, path, n=8, seed=1):
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(queries), size=n, replace=False)
    cell, top = 112, 4
    names = list(dists)
    sheet = Image.new("RGB", (cell * (1 + top * len(names)) + 10 * len(names), cell * n + 24), "white")
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(names):
        draw.text((cell + j * (cell * top + 10) + 4, 4), name[:40], fill="black")
    for r, qi in enumerate(pick):
        y = 24 + r * cell
        thumb = queries[qi].copy()
        thumb.thumbnail((cell - 4, cell - 4))
        sheet.paste(thumb, (2, y + 2))
        draw.text((2, y + cell - 12), q_info[qi]["kind"], fill="red")
        for j, name in enumerate(names):
            order = np.lexsort((np.arange(dists[name].shape[1]), dists[name][qi]))[:top]
            for c, di in enumerate(order):
                t = db[di].copy()
                t.thumbnail((cell - 4, cell - 4))
                x = cell + j * (cell * top + 10) + c * cell
                sheet.paste(t, (x + 2, y + 2))
                if di == q_info[qi]["target"]:
                    draw.rectangle((x, y, x + cell - 1, y + cell - 1), outline="green", width=3)
    sheet.save(path, quality=80, optimize=True)


def markdown(results, speed_res, meta) -> str:
    lines = [f"Held-out set: {meta['originals']} originals, {meta['database']} database images "
             f"({meta['distractors']} distractors), {meta['queries']} queries; load average {meta['load']}.", ""]
    kinds = list(edits.EDITS)
    lines.append("| method | easy top-1 | hard top-1 | other top-1 | easy top-5 | hard top-5 | r95 | unrelated@r95 | category mAP |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        g = r["per_group"]
        lines.append(f"| {r['method']} | {g['easy']['top1']:.3f} | {g['hard']['top1']:.3f} | {g['other']['top1']:.3f} | "
                     f"{g['easy']['top5']:.3f} | {g['hard']['top5']:.3f} | {r['r95']:.3g} | {100 * r['unrelated_at_r95']:.2f}% | {r['category_map']:.3f} |")
    lines += ["", "Top-1 per edit kind:", "", "| method | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for r in results:
        lines.append(f"| {r['method']} | " + " | ".join(f"{r['per_kind'][k]['top1']:.2f}" for k in kinds) + " |")
    if speed_res:
        lines += ["", f"Speed on {speed_res['photos']} 12-megapixel JPEGs (4000 x 3000), end to end:", ""]
        for k, v in speed_res.items():
            if isinstance(v, dict):
                extra = f" (decode {v['decode_s']:.1f} s summed over threads, inference {v['inference_s']:.1f} s)" if "decode_s" in v else ""
                lines.append(f"- {k}: {v['photos_per_s']:.1f} photos/s{extra}")
    return "\n".join(lines) + "\n"


def main():
    from hashtool.store import bundled_encoder_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", action="append", help="ONNX encoder(s) to compare (default: the bundled photo and fashion-mnist encoders)")
    ap.add_argument("--crops", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speed-photos", type=int, default=40)
    ap.add_argument("--no-cosine", action="store_true")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    encoders = args.encoder or [str(bundled_encoder_path("photo")), str(bundled_encoder_path("fashion-mnist"))]
    load = os.getloadavg()[0]
    db, db_info, queries, q_info = build_set(args.crops, args.seed)
    meta = {"originals": len({q["target"] for q in q_info}), "database": len(db), "queries": len(queries),
            "distractors": sum(1 for i in db_info if i["of"] is None or i["crop"]), "load": f"{load:.2f}", "seed": args.seed}
    methods = [onnx_method(p) for p in encoders] + [imagehash_method(n) for n in ("phash", "dhash", "whash")]
    if not args.no_cosine:
        methods.append(Cosine())
    results, dists = [], {}
    for m in methods:
        r, d = evaluate(m, db, db_info, queries, q_info)
        results.append(r)
        dists[m.name] = d
        print(json.dumps({k: r[k] for k in ("method", "per_group", "r95", "unrelated_at_r95", "category_map")}), flush=True)
    speed_res = speed(encoders, args.speed_photos) if args.speed_photos else {}
    meta["load_after"] = f"{os.getloadavg()[0]:.2f}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "photos.json").write_text(json.dumps({"meta": meta, "results": results, "speed": speed_res}, indent=1))
    md = markdown(results, speed_res, meta)
    (out / "photos.md").write_text(md)
    first = [m.name for m in methods[:1]] + [m.name for m in methods if "phash" in m.name]
    contact_sheet(db, queries, q_info, {k: dists[k] for k in first}, out / "photos_contact.jpg")
    print(md)


if __name__ == "__main__":
    main()
