import importlib.util, time, pathlib, sys, numpy as np
from hashtool.files import images as new
from hashtool.encode import Encoder
spec = importlib.util.spec_from_file_location("old_images", "/work/cache/r11/old_images.py"); old = importlib.util.module_from_spec(spec); sys.modules["old_images"] = old; spec.loader.exec_module(old)
paths = sorted(pathlib.Path("/work/cache/r11/photos12").glob("*.jpg"))
pp = Encoder("src/hashtool/assets/photo-encoder.onnx").preprocess
for p in paths: assert np.array_equal(new.read_image(p, pp).array, old.read_image(p, pp).array)
res = {"old": [], "new": []}
for r in range(3):
    for name, m in (("old", old), ("new", new)):
        s = time.perf_counter()
        for p in paths: m.read_image(p, pp)
        res[name].append((time.perf_counter() - s) / len(paths) * 1e3)
for k, v in res.items(): print(k, " ".join(f"{x:.2f}" for x in v), "ms/photo")
import io
from PIL import Image
ims = []
for p in paths:
    im = Image.open(io.BytesIO(p.read_bytes())); im.draft(None, (160, 160)); im.load(); ims.append(im)
res = {"old": [], "new": []}
for r in range(5):
    for name, m in (("old", old), ("new", new)):
        s = time.perf_counter()
        for im in ims: m._resize(im, pp)
        res[name].append((time.perf_counter() - s) / len(ims) * 1e3)
for k, v in res.items(): print("_resize (trim + resize of the 500x375 draft)", k, " ".join(f"{x:.2f}" for x in v), "ms/photo")
