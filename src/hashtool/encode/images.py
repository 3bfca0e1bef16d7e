"""The one image loader: file -> uint8 HWC array at a model's input size (numpy + pillow, no torch).

What :func:`load_image` does, in order, and why:

1. **Allowlist.** The file is opened with Pillow restricted to :data:`ALLOWED_FORMATS` (PNG, JPEG, BMP,
   GIF, WebP, TIFF; MPO is the JPEG variant cameras write). The check is on the *decoded* format, never
   on the extension: a PNG named ``x.jpg`` loads, a text file named ``x.png`` is refused.
2. **Decompression-bomb guard.** The pixel count in the header is checked against ``max_pixels``
   (default :data:`MAX_PIXELS`, 40 megapixels) *before* any pixel is decoded. Pillow's own
   ``DecompressionBombError`` (over ``2 * Image.MAX_IMAGE_PIXELS``, raised while reading the header) is
   also turned into :class:`~hashtool.errors.ImageError`. The loader is thread-safe (it does not touch
   the global ``warnings`` state), so :meth:`hashtool.encode.Encoder.encode_files` calls it from a pool.
3. **First frame only** for animated GIF/WebP and multi-page TIFF (an opened image sits on frame 0).
4. **Full decode** (``Image.load``): truncated or corrupt data fail here, with Pillow's reason.
   Truncated files are refused, never padded with grey (Pillow's ``LOAD_TRUNCATED_IMAGES`` stays off).
5. **EXIF orientation** is applied (``ImageOps.exif_transpose``), so a phone photo is upright.
6. **Mode conversion** to the model's colour mode ("L" or "RGB"):

   * transparency (RGBA, LA, PA, palette with a transparent index, ...) is composited on **black**
     (:data:`BACKGROUND`). Black because it is also the colour of hashtool's ``fit-pad`` padding and of
     the background of the datasets the bundled models train on (Fashion-MNIST, MNIST): pixels that are
     "not part of the picture" look the same whichever way they arose. Compositing on black equals
     premultiplying by alpha.
   * 16-bit greyscale (modes ``I;16*`` and ``I`` from 16-bit PNG/TIFF) is scaled to 8 bits by keeping the
     high byte (``v >> 8``), *not* clipped at 255 as ``Image.convert("L")`` would do; 32-bit float
     (``F``) images are taken as [0, 1] when their maximum is <= 1, else clipped to [0, 255].
   * CMYK, YCbCr, LAB, HSV, 1-bit and palette images go through Pillow's conversions; RGB -> L uses
     Pillow's ITU-R 601-2 luma (``L = R*299/1000 + G*587/1000 + B*114/1000``).
7. **Resize** to ``preprocess.height x preprocess.width`` by ``preprocess.resize`` with bilinear,
   antialiased resampling (``Image.resize(..., BILINEAR)``): "stretch" ignores aspect ratio;
   "fit-pad" scales the long side to fit and pads the rest with black, centred; "center-crop" scales the
   short side to fit and crops the centre. An image already at the target size is not resampled.

Every failure raises :class:`~hashtool.errors.ImageError` whose message starts with the path.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hashtool import heif
from hashtool.errors import ImageError
from hashtool.preprocess import Preprocess

# Pillow format names accepted after decoding (MPO: multi-picture JPEG written by many cameras).
ALLOWED_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "GIF", "WEBP", "TIFF") + heif.HEIF_FORMATS
# Pillow plugins tried when opening; MPO is produced by the JPEG plugin itself.
_OPEN_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")

# File name extensions (lower case) that folder walking picks up.
SUPPORTED_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".webp", ".tif", ".tiff"}) | heif.HEIF_EXTENSIONS

# Largest image (width * height) decoded by default: 40 megapixels, about 120 MB as RGB.
MAX_PIXELS = 40_000_000

# Colour transparent pixels are composited on (see the module docstring).
BACKGROUND = 0

_ORIENTATION = 0x0112  # EXIF tag
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_RESAMPLE = Image.Resampling.BILINEAR


def load_image(path, preprocess: Preprocess, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode ``path`` and return a uint8 array ``preprocess.shape_hwc`` (height, width, channels).

    Raises :class:`~hashtool.errors.ImageError` naming the path and the reason on any failure.
    """
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    img = _open_checked(path, limit)
    try:
        return convert_image(img, preprocess, name=path)
    finally:
        img.close()


def convert_image(img: Image.Image, preprocess: Preprocess, *, name="<image>") -> np.ndarray:
    """Steps 6-7 of :func:`load_image` on a decoded PIL image: mode conversion and resize -> uint8 HWC.

    ``name`` is what error messages call the image. Used for images that are already in memory (the
    export's parity check turns dataset arrays into model inputs with it).
    """
    path = name
    try:
        img = _to_mode(img, preprocess.color, path)
        img = _resize(img, preprocess)
        arr = np.asarray(img, dtype=np.uint8)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, MemoryError) as exc:
        raise ImageError(f"{path}: cannot convert image: {_reason(exc)}") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape != preprocess.shape_hwc:  # defensive: would be a bug in the conversions above
        raise ImageError(f"{path}: converted to shape {arr.shape}, expected {preprocess.shape_hwc}")
    return np.ascontiguousarray(arr)


def open_image(path, *, max_pixels: int | None = None) -> Image.Image:
    """Open, bomb-check, decode the first frame of, and EXIF-orient ``path``; mode is left as decoded."""
    return _open_checked(path, MAX_PIXELS if max_pixels is None else int(max_pixels))


def find_images(root, *, recursive: bool = True, include_hidden: bool = False) -> list[Path]:
    """Image files under ``root`` with a :data:`SUPPORTED_EXTENSIONS` extension, in sorted path order.

    The walking rules are the index's (:func:`hashtool.store.walk.walk_images`): hidden files and folders
    (name starting with ".", which includes macOS ``._name`` AppleDouble files) are skipped unless
    ``include_hidden``; symbolic links are not followed. A file whose extension matches but whose content
    is not an image is still returned: :func:`load_image` reports it.
    """
    from hashtool.errors import ArgumentError
    from hashtool.store.walk import walk_images

    try:
        walked = walk_images(root, SUPPORTED_EXTENSIONS, include_hidden=include_hidden, recursive=recursive)
    except ArgumentError as exc:
        raise ImageError(str(exc)) from None
    return sorted(Path(root) / f.rel for f in walked.files)


# -- internals -------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _open_checked(path, limit: int) -> Image.Image:
    # No warnings.catch_warnings() here: it swaps process-global state and is not thread-safe, and
    # encode_files calls this from a thread pool. The pixel limit (checked before decoding) is below
    # Pillow's own warning threshold unless the caller raises it.
    try:
        img = Image.open(path, formats=heif.open_formats(_OPEN_FORMATS))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(
            heif.missing_decoder(path) or f"{path}: not an image in a supported format ({', '.join(_OPEN_FORMATS)}), or its header is corrupt"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: refused as a possible decompression bomb: {_reason(exc)}") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise ImageError(f"{path}: cannot open image: {_reason(exc)}") from None
    try:
        if img.format not in ALLOWED_FORMATS:
            raise ImageError(f"{path}: format {img.format} is not allowed (allowed: {', '.join(ALLOWED_FORMATS)})")
        w, h = img.size
        if w < 1 or h < 1:
            raise ImageError(f"{path}: image has no pixels ({w}x{h})")
        if w * h > limit:
            raise ImageError(
                f"{path}: {w}x{h} = {w * h:,} pixels exceeds the limit of {limit:,} "
                "(decompression-bomb guard); resize the image or raise max_pixels"
            )
        img.load()  # an opened image sits on its first frame: no seek (n_frames would scan a whole GIF)
        if img.getexif().get(_ORIENTATION, 1) not in (1, None):
            oriented = ImageOps.exif_transpose(img)
            img.close()  # exif_transpose returns a copy; release the file handle (GIF/TIFF keep it open)
            img = oriented
    except ImageError:
        img.close()
        raise
    except Image.DecompressionBombError as exc:
        img.close()
        raise ImageError(f"{path}: refused as a possible decompression bomb: {_reason(exc)}") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, struct.error) as exc:
        img.close()
        raise ImageError(f"{path}: corrupt or truncated image data: {_reason(exc)}") from None
    return img


def _composite(img: Image.Image) -> Image.Image:
    """RGBA/LA... -> RGB/L on the :data:`BACKGROUND` colour."""
    rgba = img.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (BACKGROUND, BACKGROUND, BACKGROUND, 255))
    return Image.alpha_composite(base, rgba).convert("RGB")


def _high_byte(img: Image.Image) -> Image.Image:
    """16-bit or 32-bit greyscale -> 8-bit "L", keeping the high byte (16-bit) or the [0,1]/[0,255] range (float)."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float64)
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        if arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        out = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    else:  # I;16, I;16B, I;16L, I (16-bit PNG/TIFF data held in int32)
        out = (np.clip(arr.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def _to_mode(img: Image.Image, color: str, path) -> Image.Image:
    mode = img.mode
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    elif mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in _ALPHA_MODES:
        img = _composite(img)
    elif mode.startswith("I") or mode == "F":
        img = _high_byte(img)
    elif mode not in ("L", "RGB"):
        try:
            img = img.convert("RGB")  # 1, P, CMYK, YCbCr, LAB, HSV, RGBX
        except ValueError as exc:
            raise ImageError(f"{path}: unsupported image mode {mode}: {_reason(exc)}") from None
    if img.mode != color:
        img = img.convert(color)
    return img


def _resize(img: Image.Image, pp: Preprocess) -> Image.Image:
    tw, th = pp.width, pp.height
    w, h = img.size
    if (w, h) == (tw, th):
        return img
    if pp.resize == "stretch":
        return img.resize((tw, th), _RESAMPLE)
    if pp.resize == "fit-pad":
        scale = min(tw / w, th / h)
        nw, nh = max(1, min(tw, round(w * scale))), max(1, min(th, round(h * scale)))
        inner = img.resize((nw, nh), _RESAMPLE)
        canvas = Image.new(img.mode, (tw, th), 0)
        canvas.paste(inner, ((tw - nw) // 2, (th - nh) // 2))
        return canvas
    # center-crop
    scale = max(tw / w, th / h)
    nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
    inner = img.resize((nw, nh), _RESAMPLE)
    left, top = (nw - tw) // 2, (nh - th) // 2
    return inner.crop((left, top, left + tw, top + th))
