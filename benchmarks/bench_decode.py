"""Decoding real photos: the full decoder against the one-read JPEG draft loader, decode only and end to
end (`hashtool index build` with the bundled encoder).

Protocol:
* photos: the largest images of ``--source`` (Debian's plasma-workspace-wallpapers: 3840x2160 to
  5120x2880), each cropped/resized to 4000x3000 (12 megapixels) and saved as JPEG quality 90 into a
  temporary folder (``--photos`` files, cycling over the sources with a different crop each time);
  never committed;
* decode only: every photo decoded and resized to the bundled encoder's input by
  ``hashtool.files.read_image`` in a pool of ``--threads`` threads, ``draft=False`` (full decode, then
  a separate sha256 pass over the file: what a build did before) and ``draft=True`` (one read, hash of
  those bytes, DCT-scaled decode);
* end to end: ``hashtool index build PHOTOS --threads N`` as a fresh process into an empty index, for the
  source tree given by ``--before-src`` (e.g. the main checkout) and for this tree; wall time of the
  command from the parent, photos/s = photos / wall, and the rate of the build's encode phase (read,
  hash, decode, encode) from its own ``--json`` report.

Usage: python benchmarks/bench_decode.py [--photos 200] [--threads 2] [--before-src /work/main/src]
Prints a markdown table; writes OUT/bench_decode.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SOURCE = Path("/usr/share/wallpapers")


def make_photos(dst: Path, n: int, source: Path = SOURCE) -> list[Path]:
    from PIL import Image

    big = []
    for p in sorted(source.rglob("*")):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file():
            with Image.open(p) as im:
                if im.width * im.height >= 3840 * 2160:
                    big.append(p)
    if not big:
        raise SystemExit(f"no image of at least 3840x2160 under {source} (make bench-data, or apt-get install plasma-workspace-wallpapers)")
    out = []
    for i in range(n):
        src = big[i % len(big)]
        with Image.open(src) as im:
            im = im.convert("RGB")
            shift = (i // len(big)) * 97 % max(1, im.width // 8)
            im = im.crop((shift, 0, im.width - (im.width // 8 - shift), im.height)).resize((4000, 3000), Image.Resampling.BILINEAR)
            path = dst / f"photo{i:03d}.jpg"
            im.save(path, "JPEG", quality=90)
            out.append(path)
    return out


def decode_rate(paths, threads: int, draft: bool) -> float:
    from hashtool.encode import Encoder
    from hashtool.fileio import sha256_file
    from hashtool.files import read_image
    from hashtool.store import default_encoder_path

    pp = Encoder(default_encoder_path(), threads=1).preprocess

    def one(p):
        loaded = read_image(p, pp, draft=draft)
        return loaded.sha256 if draft else sha256_file(p)  # before: a second pass over the file

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, paths[:4]))  # warm the page cache and the decoders
        t0 = time.perf_counter()
        list(pool.map(one, paths))
        return len(paths) / (time.perf_counter() - t0)


def build_rate(folder: Path, src: str, threads: int, work: Path) -> tuple[float, float]:
    """(photos/s over the command's wall time, photos/s over the build's encode phase as it reports it)."""
    idx = work / f"index-{time.monotonic_ns()}"
    env = dict(os.environ, PYTHONPATH=src)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "hashtool", "index", "build", str(folder), "--index", str(idx), "--threads",
                          str(threads), "--quiet", "--json"], env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    report = json.loads(out.stdout.strip().splitlines()[-1])
    n = sum(1 for _ in folder.glob("*.jpg"))
    if report["total"] != n:
        raise SystemExit(f"the build indexed {report['total']} of {n} photos: {out.stderr[-500:]}")
    return n / wall, report["encoded"] / report["encode_seconds"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--before-src", default="/work/main/src")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = ap.parse_args(argv)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    this_src = str(Path(__file__).resolve().parent.parent / "src")
    with tempfile.TemporaryDirectory(prefix="hashtool-photos-") as tmp:
        work = Path(tmp)
        (work / "photos").mkdir()
        paths = make_photos(work / "photos", args.photos)
        res = {
            "photos": len(paths), "threads": args.threads, "load_before": load,
            "decode_full_per_s": decode_rate(paths, args.threads, draft=False),
            "decode_draft_per_s": decode_rate(paths, args.threads, draft=True),
            "build_before_per_s": build_rate(work / "photos", args.before_src, args.threads, work),
            "build_after_per_s": build_rate(work / "photos", this_src, args.threads, work),
            "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_decode.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"{res['photos']} JPEGs 4000x3000 q90, {res['threads']} threads, load {res['load_before']} -> {res['load_after']}\n")
    print("| path | before (full decode + second sha256 pass) | after (one read, draft) |")
    print("|---|---|---|")
    print(f"| decode + resize + sha256 only | {res['decode_full_per_s']:.1f} photos/s | {res['decode_draft_per_s']:.1f} photos/s |")
    (wb, eb), (wa, ea) = res["build_before_per_s"], res["build_after_per_s"]
    print(f"| `hashtool index build`: encode phase (its own report) | {eb:.1f} photos/s | {ea:.1f} photos/s |")
    print(f"| `hashtool index build` end to end (fresh process, wall) | {wb:.1f} photos/s | {wa:.1f} photos/s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
