"""HEIC/HEIF and AVIF photos (what phones write) for the image loader (pillow; ``pillow-heif`` optional).

HEIF/HEIC is decoded by the ``pillow-heif`` package (extra ``hashtool[heif]``), registered with Pillow the
first time the loader asks; AVIF by Pillow itself where its build has AVIF support (Pillow 11.2+ wheels),
which the same extra requires. Without a decoder such files are never skipped silently: the loader
reports each with :func:`missing_decoder`'s reason, which says what to install. A file counts as HEIF or
AVIF by its extension (:data:`HEIF_EXTENSIONS`) or by the brand in its ``ftyp`` box, so a phone photo
renamed to ``.jpg`` is recognised too.

The loader (:mod:`hashtool.files.images`) calls :func:`open_formats` for the Pillow plugins to try,
allows :data:`HEIF_FORMATS` after decoding, walks :data:`HEIF_EXTENSIONS`, and asks
:func:`missing_decoder` when Pillow cannot identify a file.
"""

from __future__ import annotations

import threading

HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif", ".avif"})
HEIF_FORMATS = ("HEIF", "AVIF")  # Pillow format ids
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
INSTALL_HINT = "install hashtool[heif] (pip install 'hashtool[heif]') to read it"

_lock = threading.Lock()
_registered: bool | None = None


def register() -> bool:
    """Register pillow-heif's HEIF opener with Pillow once; True if it is available."""
    global _registered
    with _lock:
        if _registered is None:
            try:
                import pillow_heif
            except ImportError:
                _registered = False
            else:
                pillow_heif.register_heif_opener()
                _registered = True
    return _registered


def available_formats() -> tuple[str, ...]:
    """The :data:`HEIF_FORMATS` that Pillow can open in this process."""
    from PIL import Image

    register()
    Image.init()
    return tuple(f for f in HEIF_FORMATS if f in Image.OPEN)


def open_formats(base: tuple[str, ...]) -> tuple[str, ...]:
    """``base`` plus the HEIF/AVIF plugins available (the ``formats`` argument of ``Image.open``)."""
    return tuple(base) + tuple(f for f in available_formats() if f not in base)


def sniff(path) -> str | None:
    """"HEIF" or "AVIF" when the file's ``ftyp`` box names such a brand, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, min(len(head), 64) - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _HEIF_BRANDS:
        return "HEIF"
    return None


def missing_decoder(path) -> str | None:
    """Why ``path`` cannot be read when it is a HEIF/AVIF file and no decoder for it is installed, else None."""
    import os

    kind = sniff(path)
    if kind is None:
        ext = os.path.splitext(str(path))[1].lower()
        if ext not in HEIF_EXTENSIONS:
            return None
        kind = "AVIF" if ext == ".avif" else "HEIF"
    if kind in available_formats():
        return None  # a decoder is there: the file itself is broken
    what = "an AVIF image" if kind == "AVIF" else "a HEIC/HEIF photo"
    return f"{path}: {what}, and no decoder for it is installed: {INSTALL_HINT}"
