"""`hashtool query`: find the images nearest to one or more query images."""

from __future__ import annotations

import click

from hashtool.cli._common import emit_json, fail, index_option, json_option, note, quiet_option, threads_option


@click.command("query")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option("-k", "k", type=click.IntRange(min=0), default=10, show_default=True, help="Results per query (0: no limit, with --max-distance).")
@click.option("--max-distance", type=click.IntRange(min=0), default=None, help="Only results within this Hamming distance (inclusive), at most -k of them.")
@click.option("--model", type=click.Path(dir_okay=False), default=None, help="Check that the index was built with this encoder (refused otherwise).")
@index_option
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None, help="Also write a page with thumbnails of the queries and their results.")
@threads_option
@json_option
@quiet_option
def query(images, k, max_distance, model, index_path, html_path, threads, as_json, quiet):
    """Search the index for the images nearest to each IMAGE.

    Prints rank, Hamming distance and path for each result (sorted by distance, then by index order);
    --json prints one JSON object per result. The query is encoded with the index's own encoder. A
    query image that cannot be read is reported on stderr and the command exits with status 1 after
    answering the others.
    """
    import numpy as np

    from hashtool.encode import load_image
    from hashtool.errors import HashtoolError, ImageError
    from hashtool.hashindex import load_index
    from hashtool.store import resolve_index_path
    from hashtool.fileio import sha256_file
    from hashtool.store.store import IndexStore

    if k == 0 and max_distance is None:
        raise click.UsageError("-k 0 (no limit) needs --max-distance")
    store = IndexStore(resolve_index_path(index_path))
    try:
        gen = store.current()
        cat = gen.catalog()
        meta = cat.get_meta()
        if model is not None:
            sha = sha256_file(model)
            if sha != meta.get("encoder_sha256"):
                raise click.ClickException(
                    f"{model}: this is not the encoder the index at {store.path} was built with "
                    f"({meta.get('encoder_path')}, sha256 {str(meta.get('encoder_sha256'))[:12]}...); "
                    "codes from different encoders are not comparable. Drop --model, or rebuild the index with it."
                )
        from hashtool.encode import Encoder

        encoder = Encoder(gen.encoder_path, threads=threads)
        index = load_index(gen.codes_path, mmap=True, engine="numpy")  # a few queries: skip loading the kernels
        if threads:
            index.threads = threads
    except HashtoolError as exc:
        raise fail(exc) from exc

    arrays, names, failed = [], [], 0
    for path in images:
        try:
            arrays.append(load_image(path, encoder.preprocess))
            names.append(path)
        except (ImageError, OSError) as exc:
            failed += 1
            click.echo(f"error: {exc}", err=True)
    if not arrays:
        raise click.ClickException("no query image could be read")
    codes = encoder.encode(np.stack(arrays))
    n = len(index)
    if max_distance is None:
        if k > n:
            note(f"note: the index holds {n} images, fewer than -k {k}", quiet)
        dist, ids = index.search(codes, k)
        results = [[(int(d), int(i)) for d, i in zip(dist[q], ids[q]) if i >= 0] for q in range(len(names))]
    else:
        lims, dist, ids = index.range_search(codes, max_distance)
        results = []
        for q in range(len(names)):
            rows = list(zip(dist[lims[q] : lims[q + 1]].tolist(), ids[lims[q] : lims[q + 1]].tolist()))
            results.append(rows[:k] if k else rows)
    paths = cat.paths_for({i for r in results for _, i in r})
    root = meta.get("root", "")
    import os

    for q, name in enumerate(names):
        if not as_json:
            click.echo(f"# {name}: {len(results[q])} result(s)")
        for rank, (d, i) in enumerate(results[q], 1):
            full = os.path.join(root, paths.get(i, f"<id {i}>"))
            if as_json:
                emit_json({"query": name, "rank": rank, "distance": d, "id": i, "path": full})
            else:
                click.echo(f"{rank}\t{d}\t{full}")
    if html_path:
        from hashtool.store.html import write_results_page

        write_results_page(html_path, [(name, [(d, os.path.join(root, paths.get(i, ""))) for d, i in results[q]]) for q, name in enumerate(names)])
        note(f"wrote {html_path}", quiet)
    cat.close()
    if failed:
        raise SystemExit(1)
