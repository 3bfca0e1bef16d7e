"""`hashtool data export`: write a dataset's images as image files (for demos, benchmarks and tests)."""

from __future__ import annotations

import click


@click.group("data")
def data():
    """Work with the datasets hashtool knows (fashion-mnist, mnist-5k, IDX and CIFAR-10 folders)."""


@data.command("export")
@click.argument("dataset")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--part", type=click.Choice(["train", "test"]), default="test", show_default=True, help="Which part to write (datasets without a test part always use train).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Write at most this many images, drawn at random (seeded).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["png", "jpg", "bmp", "webp"]), default="png", show_default=True)
@click.option("--quiet", "-q", is_flag=True)
def export_images(dataset, out, part, limit, seed, fmt, quiet):
    """Write images of DATASET into OUT/<class>/<part>-<index>.<format>.

    Existing files are never overwritten (they are counted and left as they are).
    """
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from hashtool.datasets import load_dataset
    from hashtool.errors import HashtoolError

    try:
        ds = load_dataset(dataset)
    except HashtoolError as exc:
        raise click.ClickException(str(exc)) from exc
    if part == "test" and not ds.has_test:
        part = "train"
    images = ds.test_images if part == "test" else ds.train_images
    labels = ds.test_labels if part == "test" else ds.train_labels
    order = np.arange(len(images))
    if limit is not None and limit < len(images):
        order = np.sort(np.random.default_rng(seed).choice(len(images), size=limit, replace=False))
    out = Path(out)
    written = skipped = 0
    for i in order.tolist():
        cls = "unlabeled" if labels is None else (ds.classes[labels[i]] if ds.classes else str(int(labels[i])))
        folder = out / cls.replace("/", "-").replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{part}-{i:05d}.{fmt}"
        arr = images[i]
        img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
        if path.exists():
            skipped += 1
            continue
        img.save(path)
        written += 1
    if not quiet:
        click.echo(f"wrote {written} images of {ds.name} ({part}) to {out}" + (f", {skipped} already there" if skipped else ""), err=True)
    click.echo(str(out))


@data.command("photos")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--part", type=click.Choice(["train", "heldout", "all"]), default="train", show_default=True,
              help="The training part, the held-out part (kept for benchmarks), or both.")
@click.option("--source", "sources", multiple=True, help="Only these sources (gcompris, opencv, wallpapers, stamps, skimage); repeatable.")
@click.option("--max-side", type=click.IntRange(min=64), default=None, help="Write smaller JPEG copies with at most this many pixels on the long side.")
@click.option("--quiet", "-q", is_flag=True)
def export_photos(out, part, sources, max_side, quiet):
    """Write the natural photos of the installed packages into OUT/<source>/<label>/.

    The photos come from Debian's gcompris-qt-data, opencv-doc, plasma-workspace-wallpapers,
    lomiri-wallpapers-16.04 / -20.04 and tuxpaint-stamps-default, and scikit-image's skimage/data (whichever are
    installed); nothing is downloaded. The split into train and heldout is fixed (hashtool.photosets).
    Existing files are left as they are.
    """
    from hashtool.cli import run_library
    from hashtool.photosets import write_folder

    paths = run_library(write_folder, out, part, sources or None, max_side)
    if not quiet:
        click.echo(f"{len(paths)} photos ({part}) in {out}", err=True)
    click.echo(str(out))


@data.command("demo")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--copied", type=click.IntRange(min=0), default=12, show_default=True, help="How many photos get edited copies.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", "-q", is_flag=True)
def demo_photos(out, copied, seed, quiet):
    """Write the demo folder: held-out photos of the installed packages plus edited copies in OUT/edited/.

    Prints the path of one edited copy (a query whose original is in the folder).
    """
    from hashtool.cli import run_library
    from hashtool.photosets import write_demo_folder

    res = run_library(write_demo_folder, out, copied, seed)
    if not quiet:
        click.echo(f"{res['photos']} photos and {res['copies']} edited copies in {out}", err=True)
    click.echo(res["query"] or "")
