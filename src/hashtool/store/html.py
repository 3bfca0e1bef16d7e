"""A self-contained HTML page of query results with embedded thumbnails (pillow only)."""

from __future__ import annotations

import base64
import html
import io
import os

from hashtool.fileio import atomic_write

THUMB = 128


def thumbnail_data_uri(path, size: int = THUMB) -> str | None:
    """A small JPEG thumbnail as a data: URI, or None when the file cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=85)
    except Exception:  # any unreadable file just gets no picture
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(path, caption: str) -> str:
    uri = thumbnail_data_uri(path)
    img = f'<img src="{uri}" alt="">' if uri else '<div class="missing">unreadable</div>'
    return f'<figure title="{html.escape(str(path))}">{img}<figcaption>{html.escape(caption)}</figcaption></figure>'


def write_results_page(out_path, queries) -> None:
    """``queries``: [(query path, [(distance, result path), ...]), ...]; written atomically."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>hashtool query results</title><style>",
        "body{font-family:system-ui,sans-serif;margin:1.5em}section{margin-bottom:2em}"
        "figure{display:inline-block;margin:4px;text-align:center;width:136px;vertical-align:top}"
        "img{max-width:128px;max-height:128px;image-rendering:pixelated;min-width:64px}"
        "figcaption{font-size:11px;word-break:break-all}.q img{outline:3px solid #36c}"
        ".missing{width:128px;height:64px;background:#eee;font-size:11px}",
        "</style></head><body><h1>hashtool query results</h1>",
    ]
    for qpath, results in queries:
        parts.append(f"<section><h2>{html.escape(str(qpath))}</h2><div class='q'>{_figure(qpath, 'query')}</div><div>")
        for rank, (dist, rpath) in enumerate(results, 1):
            parts.append(_figure(rpath, f"#{rank} d={dist} {os.path.basename(str(rpath))}"))
        parts.append("</div></section>")
    parts.append("</body></html>\n")
    with atomic_write(out_path, "w", encoding="utf-8") as f:
        f.write("".join(parts))
