"""`hashtool dups`: near-duplicate images in a folder, and acting on them safely."""

from __future__ import annotations

import click

from hashtool.cli._common import report_failures, emit_json, index_option, json_option, note, quiet_option, threads_option


@click.command("dups")
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=str))
@click.option("--max-distance", "-r", type=click.IntRange(min=0), default=None,
              help="Images within this Hamming distance (inclusive) are near-duplicates. Default: the radius "
                   "stored by `hashtool calibrate`, else 2.")
@click.option("--model", type=click.Path(dir_okay=False), default=None, help="Encoder for a new index: a file or a bundled name (photo, fashion-mnist). Default: $HASHTOOL_MODEL, else the bundled photo encoder.")
@click.option("--tta", default=None, metavar="LIST",
              help="Also match transformed copies: comma-separated from flip, flipv, rot90, rot180, rot270 (re-reads every image).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None, help="Also write a page with thumbnails of the groups.")
@click.option("--keep", type=click.Choice(["largest", "newest", "oldest"]), default=None,
              help="With --move-to: the member of each group that stays.")
@click.option("--move-to", type=click.Path(file_okay=False), default=None,
              help="Move every other member of each group into this folder (outside FOLDER), keeping relative paths.")
@click.option("--manifest", type=click.Path(dir_okay=False), default=None,
              help="Where --move-to writes its manifest. Default: DIR/hashtool-moves-TIMESTAMP.json.")
@click.option("--yes", is_flag=True, help="Really move files (without it, --move-to only prints what it would do).")
@click.option("--undo", "undo_path", type=click.Path(dir_okay=False), default=None,
              help="Move the files listed in a manifest back where they were (never overwrites), then stop.")
@index_option
@click.option("--no-wait", is_flag=True, help="Fail at once if another build holds the index, instead of waiting for it.")
@threads_option
@json_option
@quiet_option
def dups(folder, max_distance, model, tta, html_path, keep, move_to, manifest, yes, undo_path, index_path, no_wait, threads, as_json, quiet):
    """Find groups of near-duplicate images below FOLDER.

    Brings the index of FOLDER up to date first (like `hashtool index build`), then lists the groups of
    images within --max-distance of each other, each member with its distance to the group's first member.
    Near-duplication is not transitive, so each group shows its diameter (largest distance between two
    members), which can exceed --max-distance (a chain). --json prints one group per line.

    --keep RULE --move-to DIR moves all but one member of each group into DIR; it prints the plan and
    moves nothing unless --yes is given, writes a manifest first, and `hashtool dups --undo MANIFEST`
    reverses it. Nothing is ever deleted or overwritten. The index sees the moves at its next build.
    """
    # library and I/O errors become one-line messages in the one error path (hashtool.cli.LazyGroup.invoke)
    if undo_path is not None:
        if folder or move_to or keep:
            raise click.UsageError("--undo MANIFEST takes no FOLDER, --keep or --move-to")
        _undo(undo_path, quiet)
        return
    if folder is None:
        raise click.UsageError("missing FOLDER (or --undo MANIFEST)")
    if (keep is None) != (move_to is None):
        raise click.UsageError("--keep and --move-to go together: --keep largest|newest|oldest --move-to DIR")
    if (yes or manifest) and move_to is None:
        raise click.UsageError("--yes and --manifest apply to --move-to")
    _dups(folder, max_distance, model, tta, html_path, keep, move_to, manifest, yes, index_path, threads, as_json, quiet, wait=not no_wait)


def _dups(folder, max_distance, model, tta, html_path, keep, move_to, manifest, yes, index_path, threads, as_json, quiet, wait=True):
    import os

    import numpy as np

    from hashtool.cli.index import run_build
    from hashtool.store import resolve_index_path
    from hashtool.store.calibrate import dups_radius
    from hashtool.store.dups import find_groups
    from hashtool.store.store import IndexStore
    from hashtool.store.tta import parse_tta

    names = parse_tta(tta)
    report = run_build(folder, model, index_path, threads=threads, quiet=quiet, wait=wait)
    report_failures(report.failures, quiet, report.index)
    store = IndexStore(resolve_index_path(index_path))
    with store.reading() as gen, gen.catalog() as cat:
        index = gen.open_codes(mmap=False)
        meta = cat.get_meta()
        root = meta["root"]
        if max_distance is None:
            max_distance, why = dups_radius(meta, meta.get("encoder_copy_radius"))  # recorded by the build
            note(why, quiet)
        ids = np.asarray(index.ids, dtype=np.int64)
        codes = index.codes()
        variants = _variants(gen, cat, root, ids, codes, names, threads, quiet) if names else None
        result = find_groups(codes, ids, max_distance, variants=variants, threads=threads)
        groups = list(result.groups)
        files = cat.files_for(i for g in groups for i in g.ids)

    from hashtool.store.actions import FileInfo

    infos = [[FileInfo(*files[i]) for i in g.ids] for g in groups]
    kept = _kept_positions(infos, keep)
    full = lambda rel: os.path.join(root, rel)  # noqa: E731
    if as_json:
        for n, (g, members, k) in enumerate(zip(groups, infos, kept), 1):
            emit_json(_group_record(n, g, members, k, max_distance, full))
    else:
        pairs = f", {result.pairs} pair(s)" if result.pairs is not None else ""
        tta_note = f", with variants {','.join(names)}" if names else ""
        click.echo(f"{result.n_groups} group(s) of {result.n_grouped} images{pairs} within distance {max_distance}"
                   f"{tta_note} among {result.n_images} images")
        for n, (g, members, k) in enumerate(zip(groups, infos, kept), 1):
            click.echo(f"group {n}: {len(g.ids)} images, {_diameter_text(g, max_distance)}")
            for pos, (m, d) in enumerate(zip(members, g.distances)):
                click.echo(f"  {d}\t{full(m.rel)}" + ("\t(keep)" if pos == k else ""))
    if html_path:
        from hashtool.store.html import write_groups_page

        pages = [(f"group {n}: {len(g.ids)} images, {_diameter_text(g, max_distance)}",
                  [(d, full(m.rel), "(keep)" if pos == k else "") for pos, (m, d) in enumerate(zip(members, g.distances))])
                 for n, (g, members, k) in enumerate(zip(groups, infos, kept), 1)]
        left_out = write_groups_page(html_path, pages, max_distance)
        note(f"wrote {html_path}" + (f" ({left_out} image(s) not shown: the page holds at most 2000 thumbnails)" if left_out else ""), quiet)
    if move_to is not None:
        _move(root, move_to, infos, keep, manifest, yes, quiet)
    note(f"index: {store.path}", quiet)


def _variants(gen, cat, root, ids, codes, names, threads, quiet):
    """Codes of every indexed image under each transform (re-read from the folder)."""
    import os

    from hashtool.cli.progress import Progress
    from hashtool.encode import Encoder
    from hashtool.store.tta import encode_variants

    encoder = Encoder(gen.encoder_path, threads=threads)
    rel = cat.paths_for(ids.tolist())
    paths = [os.path.join(root, rel[i]) for i in ids.tolist()]
    bar = Progress(f"--tta {','.join(names)}", quiet=quiet)
    try:
        variants, failures = encode_variants(encoder, paths, names, codes, progress=bar.update)
    finally:
        bar.close()
    for pos, reason in failures:
        note(f"--tta: {reason} (compared without its variants)", quiet)
    return variants


def _kept_positions(infos, keep):
    from hashtool.store.actions import choose_keep

    return [choose_keep(members, keep) if keep else None for members in infos]


def _diameter_text(g, max_distance) -> str:
    if g.diameter_exact:
        text = f"diameter {g.diameter}"
    else:
        text = f"diameter at least {g.diameter} and at most {g.diameter_max} (bounds: too many distinct codes to compare every pair)"
    if g.diameter > max_distance:
        text += " (a chain: diameter exceeds --max-distance)"
    return text


def _group_record(n, g, members, k, max_distance, full) -> dict:
    import datetime

    def iso(ns):
        return datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc).isoformat(timespec="seconds")

    return {
        "group": n,
        "size": len(g.ids),
        "max_distance": max_distance,
        "diameter": g.diameter,
        "diameter_exact": g.diameter_exact,
        "diameter_max": g.diameter_max,
        "chain": g.diameter > max_distance,
        "members": [
            {"path": full(m.rel), "id": i, "size": m.size, "mtime": iso(m.mtime_ns), "mtime_ns": m.mtime_ns,
             "distance": d, **({"keep": pos == k} if k is not None else {})}
            for pos, (i, m, d) in enumerate(zip(g.ids, members, g.distances))
        ],
    }


def _move(root, move_to, infos, keep, manifest, yes, quiet):
    from hashtool.store.actions import apply_moves, check_moves, default_manifest_path, plan_moves

    moves = plan_moves(root, move_to, infos, keep)
    if not moves:
        note("nothing to move: no groups", quiet)
        return
    if not yes:
        check_moves(moves)
        for mv in moves:
            click.echo(f"would move {mv.src} -> {mv.dst}", err=True)
        click.echo(f"dry run: {len(moves)} file(s) would move (keeping the {keep} of each group); add --yes to move them", err=True)
        return
    path = manifest or default_manifest_path(move_to)
    apply_moves(moves, path, root, log=lambda m: note(m, quiet))
    click.echo(f"moved {len(moves)} file(s) into {move_to}; manifest {path} (`hashtool dups --undo {path}` moves them back)", err=True)


def _undo(path, quiet):
    from hashtool.store.actions import undo_moves

    back, problems = undo_moves(path, log=lambda m: note(m, quiet))
    for p in problems:
        click.echo(f"not undone: {p}", err=True)
    click.echo(f"moved {back} file(s) back from manifest {path}" + (f"; {len(problems)} could not be" if problems else ""), err=True)
    if problems:
        raise SystemExit(1)
