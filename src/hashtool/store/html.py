"""Self-contained HTML pages of query results and duplicate groups with embedded thumbnails (pillow only).

Pages stay small with thousands of results: each thumbnail is a JPEG of at most :data:`THUMB` pixels a
side embedded as a data: URI (a few KB), marked ``loading="lazy"`` and ``decoding="async"`` so a browser
decodes only what scrolls into view; a page holds at most :data:`MAX_FIGURES` thumbnails and says how
many it left out beyond that (the command says so on stderr too). The page has no script.
"""

from __future__ import annotations

import base64
import html
import io
import os

from hashtool.fileio import atomic_write

THUMB = 128
MAX_FIGURES = 2000

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em}section{margin-bottom:2em}"
    "figure{display:inline-block;margin:4px;text-align:center;width:136px;vertical-align:top}"
    "img{max-width:128px;max-height:128px;image-rendering:pixelated;min-width:64px}"
    "figcaption{font-size:11px;word-break:break-all}.q img{outline:3px solid #36c}"
    ".missing{width:128px;height:64px;background:#eee;font-size:11px}.capped{color:#a40}"
)


def thumbnail_data_uri(path, size: int = THUMB) -> str | None:
    """A JPEG thumbnail of at most ``size`` px a side as a data: URI, or None when the file cannot be read."""
    from PIL import Image

    from hashtool.files.heif import register

    register()  # HEIC thumbnails where pillow-heif is installed
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
    img = f'<img src="{uri}" alt="" loading="lazy" decoding="async">' if uri else '<div class="missing">unreadable</div>'
    return f'<figure title="{html.escape(str(path))}">{img}<figcaption>{html.escape(caption)}</figcaption></figure>'


class _Page:
    """Accumulates sections and figures up to ``limit`` figures; counts what it leaves out."""

    def __init__(self, title: str, limit: int):
        self.parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                      f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
        self.limit = limit
        self.shown = 0
        self.left_out = 0

    def figure(self, path, caption: str) -> None:
        if self.shown >= self.limit:
            self.left_out += 1
            return
        self.shown += 1
        self.parts.append(_figure(path, caption))

    def write(self, out_path) -> int:
        if self.left_out:
            self.parts.append(f"<p class='capped'>{self.left_out} more result(s) not shown: this page holds at most "
                              f"{self.limit} thumbnails.</p>")
        self.parts.append("</body></html>\n")
        with atomic_write(out_path, "w", encoding="utf-8") as f:
            f.write("".join(self.parts))
        return self.left_out


def write_results_page(out_path, queries, limit: int = MAX_FIGURES) -> int:
    """``queries``: [(query path, [(distance, result path), ...]), ...]; written atomically.

    Returns how many results were left out by the ``limit`` on thumbnails.
    """
    page = _Page("hashtool query results", limit)
    for qpath, results in queries:
        page.parts.append(f"<section><h2>{html.escape(str(qpath))}</h2><div class='q'>")
        page.figure(qpath, "query")
        page.parts.append("</div><div>")
        for rank, (dist, rpath) in enumerate(results, 1):
            page.figure(rpath, f"#{rank} d={dist} {os.path.basename(str(rpath))}")
        page.parts.append("</div></section>")
    return page.write(out_path)


def write_groups_page(out_path, groups, max_distance: int, limit: int = MAX_FIGURES) -> int:
    """``groups``: [(heading, [(distance to first member, path, note), ...]), ...]; written atomically.

    Returns how many members were left out by the ``limit`` on thumbnails.
    """
    page = _Page(f"hashtool near-duplicates within distance {max_distance}", limit)
    for heading, members in groups:
        page.parts.append(f"<section><h2>{html.escape(heading)}</h2><div>")
        for dist, path, note in members:
            page.figure(path, f"d={dist} {os.path.basename(str(path))}{' ' + note if note else ''}")
        page.parts.append("</div></section>")
    return page.write(out_path)
