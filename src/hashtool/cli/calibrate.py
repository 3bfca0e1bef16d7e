"""`hashtool calibrate`: measure and store the duplicate radius of an index."""

from __future__ import annotations

import click

from hashtool.cli._common import emit_json, index_option, json_option, note, quiet_option, threads_option


@click.command("calibrate")
@index_option
@click.option("--sample", type=click.IntRange(min=1), default=200, show_default=True, help="Indexed images to make edited copies of (seeded).")
@click.option("--edits", default="easy,hard,other", show_default=True, metavar="LIST",
              help="Edit kinds or groups (hashtool.edits): resize, jpeg, brighten, blur, crop5, grey, letterbox, crop25, mirror, caption, rot90, contrast, colour, border, logo, rotate.")
@click.option("--recall", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True,
              help="Share of edited copies the stored radius must find.")
@click.option("--max-distance", "-r", type=click.IntRange(min=0), default=None, help="Store this radius instead (its recall and false pairs are still measured).")
@click.option("--pairs", type=click.IntRange(min=1), default=100_000, show_default=True, help="Random pairs of indexed images measured as unrelated pairs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dry-run", is_flag=True, help="Measure and print, but store nothing.")
@threads_option
@json_option
@quiet_option
def calibrate_cmd(index_path, sample, edits, recall, max_distance, pairs, seed, dry_run, threads, as_json, quiet):
    """Measure which Hamming radius finds edited copies of this index's images, and store it.

    Makes edited copies (the edit kinds the photo encoder trains on) of a seeded sample of the indexed
    images in memory (nothing is written into the folder), measures their distances to the originals
    and the distances of random pairs of indexed images, and stores the smallest radius that finds
    --recall of the copies in the index. `hashtool dups` then uses it when -r is not given.
    """
    from hashtool.cli.progress import Progress
    from hashtool.edits import parse_kinds
    from hashtool.encode import Encoder
    from hashtool.store import resolve_index_path
    from hashtool.store.calibrate import calibrate, store_calibration
    from hashtool.store.store import IndexStore

    store = IndexStore(resolve_index_path(index_path))
    bar = Progress("calibrating", quiet=quiet)
    try:
        with store.reading() as gen:
            encoder = Encoder(gen.encoder_path, threads=threads)
            cal = calibrate(gen, encoder, sample=sample, edits=parse_kinds(edits), recall=recall, seed=seed, pairs=pairs,
                            radius=max_distance, progress=bar.update)
        bar.close()
        stored = None if dry_run else store_calibration(store, gen, cal)
    finally:
        bar.close()
    for s in cal.skipped:
        note(f"skipped {s}", quiet)
    if as_json:
        emit_json({**cal.as_dict(), "stored_in": stored})
        return
    click.echo(f"{cal.copies} edited copies of {cal.images} images ({len(cal.edits)} edit kinds), {cal.unrelated_pairs} unrelated pairs")
    click.echo("radius  copies found  unrelated pairs within")
    lo = max(0, cal.radius - 3)
    for r in range(lo, min(len(cal.recall_by_radius), cal.radius + 4)):
        mark = "  <- stored" if r == cal.radius and stored else ("  <- chosen" if r == cal.radius else "")
        click.echo(f"{r:6d}  {cal.recall_by_radius[r]:11.1%}  {cal.false_by_radius[r]:20.3%}{mark}")
    why = "as given by -r" if max_distance is not None else f"the smallest that finds {recall:.0%} of the copies"
    click.echo(f"radius {cal.radius} ({why}): finds {cal.recall:.1%} of edited copies; {cal.false_pair_rate:.3%} of unrelated "
               f"pairs are within it (about {cal.expected_false_pairs:,.0f} false pairs among this index's images)")
    if cal.false_pair_rate > 0.05:
        click.echo(f"WARNING: {cal.false_pair_rate:.0%} of unrelated pairs are within radius {cal.radius}: this encoder "
                   "cannot tell these images apart; dups will group unrelated photos (see `hashtool index info`)")
    worst = sorted(cal.recall_by_edit.items(), key=lambda kv: kv[1])[:3]
    click.echo("hardest edits at this radius: " + ", ".join(f"{k} {v:.0%}" for k, v in worst))
    if stored:
        click.echo(f"stored in {store.path} ({stored}); `hashtool dups` uses it when -r is not given")
    else:
        click.echo("dry run: nothing stored")
