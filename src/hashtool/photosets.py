"""Natural photos from installed Debian and PyPI packages, split into a training and a held-out part.

The photo encoder is trained, and benchmarked, on these packages only (nothing is downloaded):

=========================  ==============================================================  ================
package                    what                                                            label
=========================  ==============================================================  ================
gcompris-qt-data           photos inside the Qt ``.rcc`` bundles (read by hashtool.rcc)    activity or
                                                                                           category folder
opencv-doc                 ``examples/data`` (camera-calibration shots left out)           opencv
plasma-workspace-wallpapers one file per wallpaper, the largest                            wallpaper
lomiri-wallpapers-*        ``/usr/share/backgrounds``                                      wallpaper
tuxpaint-stamps-default    clip-art stamps (drawings: distinct images, not photos)         stamp
scikit-image               ``skimage/data``                                                skimage
=========================  ==============================================================  ================

Images whose short side is under :data:`MIN_SIDE` pixels are left out. Near-identical images (the same photo
at two sizes in two bundles, stereo pairs) are grouped by their 32 x 32 grey thumbnails (correlation at least
:data:`SAME_PHOTO_CORRELATION`) and a group is never split: the split is by a hash of the group's first key,
so it is the same on every machine and does not move when a package adds images. (With a package missing, or
``sources`` narrowed, a group can lose the member whose key decided it; groups whose first member is a GCompris
photo, listed first, keep their side. The bundled photo encoder was trained with every package installed.) ``heldout`` holds about
:data:`HELDOUT_PERCENT` percent of the groups and is for benchmarks only.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hashtool.errors import ArgumentError

MIN_SIDE = 128
SAME_PHOTO_CORRELATION = 0.93
HELDOUT_PERCENT = 20
PARTS = ("train", "heldout", "all")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")

GCOMPRIS_RCC = "/usr/share/gcompris-qt/rcc"
OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"
PLASMA_WALLPAPERS = "/usr/share/wallpapers"
LOMIRI_BACKGROUNDS = "/usr/share/backgrounds"
TUXPAINT_STAMPS = "/usr/share/tuxpaint/stamps"


@dataclass(frozen=True)
class Photo:
    key: str  # "<source>/<relative name>", unique, "/"-separated
    source: str
    label: str
    file: str  # a file on disk, or the .rcc bundle
    member: str = ""  # the entry inside an .rcc bundle

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.member or self.file)[1].lower()

    def read_bytes(self) -> bytes:
        if self.member:
            bundle, entries = _bundle(self.file)
            return bundle.read(entries[self.member])
        return Path(self.file).read_bytes()

    def open(self) -> Image.Image:
        """The decoded image as RGB; transparency is composited over white."""
        with Image.open(io.BytesIO(self.read_bytes())) as img:
            img.load()
            return flatten_rgb(img)


def flatten_rgb(img: Image.Image) -> Image.Image:
    """RGB, transparency composited over white (clip art and logos keep their shape): how the photo encoder's
    training and benchmark see an image. (The runtime loader composites over black, hashtool.files.images.)"""
    if img.mode in ("RGBA", "LA", "P", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img.convert("RGB")


@functools.lru_cache(maxsize=8)
def _bundle(path: str):
    """An .rcc bundle and its entries by path (GCompris' bundles are read entry by entry, many times)."""
    from hashtool.rcc import RccFile

    bundle = RccFile(path)
    return bundle, {e.path: e for e in bundle.entries()}


def _gcompris() -> list[Photo]:
    from hashtool.rcc import RccFile

    out = []
    for bundle in sorted(glob.glob(os.path.join(GCOMPRIS_RCC, "*.rcc"))):
        rcc = RccFile(bundle)
        activity = Path(bundle).stem
        for e in rcc.entries():
            if os.path.splitext(e.path)[1].lower() not in IMAGE_EXTS or e.zstd:
                continue
            parts = e.path.split("/")
            label = activity
            if activity == "categorization" and "images" in parts:  # images/<category>/<file>
                label = f"categorization/{parts[parts.index('images') + 1]}"
            out.append(Photo(f"gcompris/{activity}/{parts[-1]}", "gcompris", label, bundle, e.path))
    return out


def _files(source: str, label: str, paths) -> list[Photo]:
    return [Photo(f"{source}/{Path(p).name}", source, label, p) for p in sorted(paths)]


def _plasma() -> list[Photo]:
    out = []
    for folder in sorted(glob.glob(os.path.join(PLASMA_WALLPAPERS, "*", "contents", "images"))):
        files = [f for f in glob.glob(os.path.join(folder, "*")) if f.lower().endswith(IMAGE_EXTS)]
        if files:
            largest = max(files, key=os.path.getsize)
            name = Path(folder).parent.parent.name
            out.append(Photo(f"wallpapers/{name}", "wallpapers", "wallpaper", largest))
    return out


def _opencv() -> list[Photo]:
    files = [f for f in glob.glob(os.path.join(OPENCV_DATA, "*")) if f.lower().endswith(IMAGE_EXTS + (".bmp",))]
    files = [f for f in files if not Path(f).stem.rstrip("0123456789") in ("left", "right")]  # calibration shots
    return _files("opencv", "opencv", files)


def _skimage() -> list[Photo]:
    try:
        import skimage
    except ImportError:
        return []
    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    return _files("skimage", "skimage", [f for f in glob.glob(os.path.join(folder, "*")) if f.lower().endswith(IMAGE_EXTS)])


def _tuxpaint() -> list[Photo]:
    files = glob.glob(os.path.join(TUXPAINT_STAMPS, "**", "*.png"), recursive=True)
    files = [f for f in files if not f.endswith("_mirror.png")]
    return [Photo(f"stamps/{os.path.relpath(f, TUXPAINT_STAMPS)}", "stamps", "stamp", f) for f in sorted(files)]


SOURCES = {
    "gcompris": _gcompris,
    "opencv": _opencv,
    "wallpapers": lambda: _plasma() + _files("wallpapers", "wallpaper", glob.glob(os.path.join(LOMIRI_BACKGROUNDS, "*.jpg"))),
    "stamps": _tuxpaint,
    "skimage": _skimage,
}


def _thumb(img: Image.Image) -> np.ndarray:
    t = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32).ravel()
    t -= t.mean()
    return t / (np.linalg.norm(t) + 1e-6)


def _groups(thumbs: np.ndarray) -> np.ndarray:
    """Group id per image: connected components of "thumbnail correlation >= SAME_PHOTO_CORRELATION"."""
    n = len(thumbs)
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, n, 1024):
        sim = thumbs[start : start + 1024] @ thumbs.T
        for a, b in zip(*np.nonzero(sim >= SAME_PHOTO_CORRELATION)):
            ra, rb = find(start + a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)])


def _heldout(key: str) -> bool:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 100 < HELDOUT_PERCENT


def collect(part: str = "all", sources=None) -> list[tuple[Photo, Image.Image]]:
    """(photo, decoded RGB image) for every usable image of ``part`` ("train", "heldout" or "all")."""
    if part not in PARTS:
        raise ArgumentError(f"part must be one of {PARTS}, got {part!r}")
    names = list(SOURCES) if sources is None else list(sources)
    unknown = [s for s in names if s not in SOURCES]
    if unknown:
        raise ArgumentError(f"unknown photo source(s) {unknown}; choose from {', '.join(SOURCES)}")
    photos: list[tuple[Photo, Image.Image]] = []
    seen: set[str] = set()
    for name in names:
        for p in SOURCES[name]():
            if p.key in seen:
                continue
            try:
                img = p.open()
            except Exception:  # a package file Pillow cannot read is not a training photo
                continue
            if min(img.size) >= MIN_SIDE:
                seen.add(p.key)
                photos.append((p, img))
    if not photos:
        raise ArgumentError(
            "no photos found: install the Debian packages gcompris-qt-data, opencv-doc, plasma-workspace-wallpapers, "
            "lomiri-wallpapers-16.04, lomiri-wallpapers-20.04 or tuxpaint-stamps-default (or pip install scikit-image)"
        )
    groups = _groups(np.stack([_thumb(img) for _, img in photos]))
    first_key = {}
    for (p, _), g in zip(photos, groups):
        first_key.setdefault(int(g), p.key)
    if part == "all":
        return photos
    want = part == "heldout"
    return [(p, img) for (p, img), g in zip(photos, groups) if _heldout(first_key[int(g)]) == want]


def write_folder(out, part: str = "train", sources=None, max_side: int | None = None) -> list[Path]:
    """Write ``part``'s photos under ``out/<source>/<label>/`` as files; returns the written paths.

    Files are written in their own format (their bytes as shipped) unless ``max_side`` asks for a smaller
    copy (then JPEG, quality 92). An existing file of the same name is left as it is.
    """
    out = Path(out)
    written = []
    for photo, img in collect(part, sources):
        name = photo.key.split("/")[-1].replace(os.sep, "_")
        stem, suffix = os.path.splitext(name)
        dest = out / photo.source / photo.label.replace("/", "_") / (stem + (".jpg" if max_side else photo.suffix))
        written.append(dest)
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        if max_side and max(img.size) > max_side:
            img = img.copy()
            img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        if max_side:
            img.save(tmp, format="JPEG", quality=92)
        else:
            tmp.write_bytes(photo.read_bytes())
        os.replace(tmp, dest)
    return written


DEMO_SOURCES = ("gcompris", "wallpapers")
DEMO_EDITS = ("jpeg", "caption", "crop25", "mirror", "grey", "letterbox")


def write_demo_folder(out, n_copied: int = 12, seed: int = 0, max_side: int = 1600) -> dict:
    """A folder for ``make demo``: held-out photos under ``out/`` and edited copies under ``out/edited/``.

    The photos are the held-out part of :data:`DEMO_SOURCES` (GCompris and the wallpapers); ``n_copied`` of
    them, drawn with ``seed``, get one copy per kind in :data:`DEMO_EDITS`, written as JPEG (quality 90) named
    ``<photo>--<edit>.jpg``, so ``hashtool dups`` has real near-duplicates to find. Existing files are kept.
    Returns ``{"photos": n, "copies": m, "query": path of one edited copy}``.
    """
    from hashtool.edits import apply_edit

    out = Path(out)
    written = write_folder(out, "heldout", DEMO_SOURCES, max_side=max_side)
    photos = [p for p in written if p.suffix == ".jpg"]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(photos), size=min(n_copied, len(photos)), replace=False).tolist())
    copies = []
    for i in chosen:
        src = photos[i]
        with Image.open(src) as img:
            img = img.convert("RGB")
            for kind in DEMO_EDITS:
                dest = out / "edited" / f"{src.stem}--{kind}.jpg"
                copies.append(dest)
                if dest.exists():
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{dest.name}.tmp")
                apply_edit(img, kind, np.random.default_rng([seed, i, len(copies)])).save(tmp, format="JPEG", quality=90)
                os.replace(tmp, dest)
    return {"photos": len(written), "copies": len(copies), "query": str(copies[0]) if copies else None}
