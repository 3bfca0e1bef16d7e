"""`query --html` and `dups --html` pages opened in headless Chromium (Debian's `chromium`, installed by
`make browser`): every thumbnail decodes (naturalWidth > 0), is at most 128 px and lazy-loaded, and the
page logs nothing to the console. Skipped, with the reason, only where no Chromium is installed."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from hashtool.cli import main

DATA = Path(__file__).parent / "data" / "images"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (as root: `make browser`, or apt-get install chromium)")

# Appended to a copy of the page: records each image's loading attribute, then loads it eagerly, waits
# for it to decode and writes what it saw into <pre id="probe"> for --dump-dom.
PROBE = """<script>
(async () => {
  const imgs = [...document.images];
  const lazy = imgs.map(i => i.getAttribute("loading"));
  imgs.forEach(i => { i.loading = "eager"; });
  const widths = await Promise.all(imgs.map(async i => {
    try { await i.decode(); } catch (e) { return 0; }
    return i.naturalWidth;
  }));
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({widths, heights: imgs.map(i => i.naturalHeight), lazy});
  document.body.appendChild(pre);
})();
</script>"""


def open_in_chromium(page: Path, tmp_path: Path) -> tuple[dict, list[str]]:
    """(what the probe saw, console messages) for ``page``."""
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=20000", "--dump-dom", probed.as_uri()]
    for attempt in range(3):  # under load headless chromium can dump the DOM before its image decodes settle
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        m = re.search(r'<pre id="probe">(.*?)</pre>', out.stdout, re.S)
        if m:
            break
    assert m, f"the probe did not finish in 3 runs: {out.stdout[-500:]}"
    probe = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    console = [line for line in out.stderr.splitlines() if ":CONSOLE" in line]
    return probe, console


def check_page(page: Path, tmp_path: Path, figures: int) -> None:
    probe, console = open_in_chromium(page, tmp_path)
    assert console == []
    assert len(probe["widths"]) == figures
    assert all(w > 0 for w in probe["widths"]), probe
    assert all(0 < w <= 128 for w in probe["widths"]) and all(0 < h <= 128 for h in probe["heights"]), probe
    assert probe["lazy"] == ["lazy"] * figures


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def test_query_and_dups_pages_render(tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(DATA / "fmnist", folder / "fmnist")
    shutil.copytree(DATA / "formats", folder / "formats")  # JPEG, BMP, GIF, WebP, TIFF, EXIF-rotated
    shutil.copy(folder / "formats" / "photo.jpg", folder / "photo_copy.jpg")
    idx = tmp_path / "idx"
    run("index", "build", folder, "--index", idx, "-q")
    qpage = tmp_path / "query.html"
    run("query", folder / "formats" / "photo.jpg", folder / "fmnist" / "bags" / "bag_8.png", "-k", 6, "--index", idx,
        "--html", qpage, "-q")
    check_page(qpage, tmp_path, 2 * (1 + 6))
    dpage = tmp_path / "dups.html"
    groups = run("dups", folder, "--index", idx, "-r", 2, "--json", "--html", dpage, "-q").stdout.splitlines()
    members = sum(len(json.loads(g)["members"]) for g in groups)
    assert members >= 2
    check_page(dpage, tmp_path, members)


def test_the_harness_sees_broken_images_and_console_errors(tmp_path):
    """The checks above can fail: a page with an undecodable image and a console error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><html><body><script>console.error("boom")</script>'
                   '<img src="data:image/jpeg;base64,AAAA" loading="lazy"></body></html>')
    probe, console = open_in_chromium(bad, tmp_path)
    assert probe["widths"] == [0]
    assert any("boom" in line for line in console)
