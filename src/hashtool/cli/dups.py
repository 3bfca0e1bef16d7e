"""`hashtool dups`: near-duplicate images in a folder."""

from __future__ import annotations

import click

from hashtool.cli._common import report_failures, emit_json, fail, index_option, json_option, note, quiet_option, threads_option


@click.command("dups")
@click.argument("folder", type=click.Path(file_okay=False, path_type=str))
@click.option("--max-distance", "-d", type=click.IntRange(min=0), default=2, show_default=True, help="Pairs within this Hamming distance (inclusive) are near-duplicates.")
@click.option("--model", type=click.Path(dir_okay=False), default=None, help="Encoder for a new index (default: the bundled one).")
@index_option
@threads_option
@json_option
@quiet_option
def dups(folder, max_distance, model, index_path, threads, as_json, quiet):
    """Find groups of near-duplicate images below FOLDER.

    Brings the index of FOLDER up to date first (like `hashtool index build`), then lists every pair
    within --max-distance and the groups they connect. Near-duplication is not transitive, so each
    group shows its diameter (largest distance between two members), which can exceed --max-distance.
    """
    import os

    import numpy as np

    from hashtool.cli.index import run_build
    from hashtool.errors import HashtoolError
    from hashtool.store import resolve_index_path
    from hashtool.store.dups import components, pairs_from_range
    from hashtool.store.store import IndexStore

    report = run_build(folder, model, index_path, threads=threads, quiet=quiet)
    report_failures(report.failures, quiet, report.index)
    store = IndexStore(resolve_index_path(index_path))
    try:
        gen = store.current()
        index = gen.open_codes(mmap=False)
        with gen.catalog() as cat:
            root = cat.get_meta()["root"]
            ids = np.asarray(index.ids, dtype=np.int64)
            codes = index.codes()
            lims, dist, res_ids = index.range_search(codes, max_distance)
            pairs = pairs_from_range(lims, dist, res_ids, ids)
            groups = components(pairs, dict(zip(ids.tolist(), codes)))
            paths = cat.paths_for(ids.tolist())
    except HashtoolError as exc:
        raise fail(exc) from exc
    full = {i: os.path.join(root, p) for i, p in paths.items()}
    if as_json:
        emit_json({
            "max_distance": max_distance,
            "pairs": [{"a": full[a], "b": full[b], "distance": d} for a, b, d in pairs],
            "groups": [{"diameter": g.diameter, "paths": [full[i] for i in g.ids]} for g in groups],
        })
        return
    click.echo(f"{len(groups)} group(s), {len(pairs)} pair(s) within distance {max_distance} among {len(ids)} images")
    for n, g in enumerate(groups, 1):
        chain = " (a chain: diameter exceeds --max-distance)" if g.diameter > max_distance else ""
        click.echo(f"group {n}: {len(g.ids)} images, diameter {g.diameter}{chain}")
        for i in g.ids:
            click.echo(f"  {full[i]}")
    if pairs:
        click.echo("pairs:")
        for a, b, d in pairs:
            click.echo(f"  {d}\t{full[a]}\t{full[b]}")
    note(f"index: {store.path}", quiet)
