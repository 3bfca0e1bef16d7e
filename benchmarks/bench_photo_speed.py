"""Where the time of an index build goes on 12-megapixel JPEGs: per stage, and end to end by batch size.

``python benchmarks/bench_photo_speed.py [--photos 40,120] [--encoder PATH ...]``

* Stages, one thread, page cache warm: reading the bytes and hashing them, the JPEG decode at the draft scale
  ``read_image`` picks, ``read_image`` in full (decode, trim, resize), and the encoder's inference per image.
* End to end: ``Encoder(threads=2).encode_files(paths, batch_size=B)`` for B in ``--batches``, twice each, on
  each number of photos in ``--photos`` (the files of ``bench_decode.make_photos``, repeated as hard links when
  more are asked for than it makes quickly: decoding is the same work for a copy).

Run it alone (under the lock) and write the load average beside the figures; it prints it before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_decode import make_photos


def per_photo_ms(fn, paths) -> float:
    fn(paths[0])  # warm
    t = time.perf_counter()
    for p in paths:
        fn(p)
    return (time.perf_counter() - t) / len(paths) * 1000


def stages(encoder_path: str, paths) -> dict:
    from PIL import Image

    from hashtool.encode import Encoder
    from hashtool.files.images import draft_size, read_image

    enc = Encoder(encoder_path, threads=1)
    pp = enc.preprocess

    def decode(p):
        with Image.open(io.BytesIO(p.read_bytes())) as img:
            img.draft(None, draft_size(img.size, pp))
            img.load()

    x = np.random.default_rng(0).integers(0, 256, (64, *pp.shape_hwc), dtype=np.uint8)
    enc.encode(x, batch_size=16)  # warm at the batch timed (a new batch shape costs allocations once)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        enc.encode(x, batch_size=16)
        best = min(best, time.perf_counter() - t)
    return {
        "read_and_sha256_ms": per_photo_ms(lambda p: hashlib.sha256(p.read_bytes()).digest(), paths),
        "draft_decode_ms": per_photo_ms(decode, paths),
        "read_image_ms": per_photo_ms(lambda p: read_image(p, pp), paths),
        "inference_1_thread_ms": best / 64 * 1000,  # best of 3, batches of 16
    }


def end_to_end(encoder_path: str, paths, batches) -> list[dict]:
    from hashtool.encode import Encoder

    enc = Encoder(encoder_path, threads=2)
    enc.encode_files(paths[:4])
    rows = []
    for _ in range(2):
        for b in batches:
            s = enc.encode_files(paths, batch_size=b).stats
            rows.append({"photos": len(paths), "batch": b, "photos_per_s": round(s["images_per_s"], 1),
                         "decode_s": round(s["decode_s"], 2), "inference_s": round(s["inference_s"], 2)})
            print(Path(encoder_path).name, json.dumps(rows[-1]), flush=True)
    return rows


def main():
    from hashtool.store import bundled_encoder_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", action="append", help="ONNX encoder(s) (default: the bundled photo and fashion-mnist encoders)")
    ap.add_argument("--photos", default="40,120", help="comma-separated numbers of photos for the end-to-end runs")
    ap.add_argument("--batches", default="64,16")
    ap.add_argument("--unique", type=int, default=40, help="distinct 12 MP JPEGs to make; the rest are hard links")
    args = ap.parse_args()
    encoders = args.encoder or [str(bundled_encoder_path("photo")), str(bundled_encoder_path("fashion-mnist"))]
    counts = [int(c) for c in args.photos.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    out = {"load_before": os.getloadavg()}
    print("load", out["load_before"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "made").mkdir()
        made = make_photos(Path(tmp) / "made", min(args.unique, max(counts)))
        out["stages"] = {Path(e).name: stages(e, made) for e in encoders}
        print(json.dumps(out["stages"]), flush=True)
        out["end_to_end"] = {}
        for n in counts:
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            paths = []
            for i in range(n):
                link = folder / f"{i:05d}.jpg"
                os.link(made[i % len(made)], link)
                paths.append(link)
            for e in encoders:
                out["end_to_end"].setdefault(Path(e).name, []).extend(end_to_end(e, paths, batches))
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
