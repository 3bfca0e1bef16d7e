"""End-to-end photos/s on 120 12 MP JPEGs (40 distinct + hard links), configs interleaved, 5 rounds, medians.
usage: e2e2.py ENCODER [ENCODER...]"""
import sys, time, os, hashlib, statistics
from pathlib import Path
sys.path.insert(0, "/work/main/benchmarks")
from bench_decode import make_photos
import hashtool.encode.encoder as em
from hashtool.files import images as im
from PIL import Image
import simplejpeg

d = Path("/tmp/p40"); d.mkdir(exist_ok=True)
paths = sorted(d.glob("photo*.jpg"))
if len(paths) < 40:
    paths = make_photos(d, 40)
paths = paths[:40]
allp = list(paths)
for r in (1, 2):
    for p in paths:
        l = d / f"link{r}_{p.name}"
        if not l.exists():
            os.link(p, l)
        allp.append(l)
orig = im.read_image

def sj(fast):
    def read(path, pp, max_pixels=None, draft=True):
        data = im.read_file_bytes(path)
        if data[:2] == b"\xff\xd8":
            a = simplejpeg.decode_jpeg(data, min_width=pp.width, min_height=pp.height, fastdct=fast, fastupsample=fast)
            return im.LoadedImage(im.convert_image(Image.fromarray(a), pp), hashlib.sha256(data).hexdigest(), len(data))
        return orig(path, pp, max_pixels=max_pixels, draft=draft)
    return read

configs = [("pillow ort2 dec2", 2, orig), ("pillow ort1 dec2", 1, orig), ("sj-fast ort2 dec2", 2, sj(True)),
           ("sj-fast ort1 dec2", 1, sj(True)), ("sj ort2 dec2", 2, sj(False))]
print("start", time.strftime("%H:%M:%S"), os.popen("uptime").read().strip(), flush=True)
for enc in sys.argv[1:]:
    res = {c[0]: [] for c in configs}
    encs = {t: em.Encoder(enc, threads=t) for t in (1, 2)}
    for e in encs.values():
        e.encode_files(allp[:16], workers=2)
    for rnd in range(5):
        for name, th, reader in configs:
            im.read_image = reader
            t = time.perf_counter(); encs[th].encode_files(allp, workers=2); res[name].append(len(allp) / (time.perf_counter() - t))
    im.read_image = orig
    print(enc)
    for name, v in res.items():
        print(f"  {name:20s} median {statistics.median(v):6.1f}  [{' '.join(f'{x:.1f}' for x in v)}] photos/s", flush=True)
print("end", time.strftime("%H:%M:%S"), os.popen("uptime").read().strip(), flush=True)
