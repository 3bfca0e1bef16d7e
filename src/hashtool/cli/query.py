"""`hashtool query`: find the images nearest to one or more query images."""

from __future__ import annotations

import click

from hashtool.cli._common import emit_json, index_option, json_option, max_distance_option, note, quiet_option, threads_option

DEFAULT_K = 10


@click.command("query")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option("-k", "k", type=click.IntRange(min=0), default=None, help=f"At most this many results per query (0: no limit, with -r). Default: {DEFAULT_K}, or no limit with -r/--max-distance.")
@max_distance_option
@click.option("--model", type=click.Path(dir_okay=False), default=None, help="Check that the index was built with this encoder (refused otherwise).")
@index_option
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None, help="Also write a page with thumbnails of the queries and their results.")
@click.option("--tta", default=None, metavar="LIST", help="Also query with transformed copies (comma-separated: flip, flipv, rot90, rot180, rot270); each result keeps its smallest distance.")
@threads_option
@json_option
@quiet_option
def query(images, k, max_distance, model, index_path, html_path, tta, threads, as_json, quiet):
    """Search the index for the images nearest to each IMAGE.

    Prints rank, Hamming distance and path for each result (sorted by distance, then by index order);
    --json prints one JSON object per result. Without -r/--max-distance: the -k nearest (default 10).
    With -r D: every result within distance D (inclusive); with -r D and -k N: at most N of them, and a
    note on stderr when the limit cut results. The query is encoded with the index's own encoder. A
    query image that cannot be read is reported on stderr and the command exits with status 1 after
    answering the others.
    """
    from hashtool.store import resolve_index_path, resolve_model
    from hashtool.store.store import IndexStore

    if k == 0 and max_distance is None:
        raise click.UsageError("-k 0 (no limit) needs -r/--max-distance")
    if k == 0:
        k = None
    store = IndexStore(resolve_index_path(index_path))
    with store.reading() as gen, gen.catalog() as cat:
        meta = cat.get_meta()
        model = resolve_model(model)
        if model is not None:
            _check_model(model, meta, store)
        results, names, failed = _search(gen, images, k, max_distance, tta, threads, quiet)
        paths = cat.paths_for({i for r in results for _, i in r})
    _print(results, names, paths, meta.get("root", ""), as_json, html_path, quiet)
    if failed:
        raise SystemExit(1)


def _check_model(model, meta, store) -> None:
    from hashtool.fileio import sha256_file

    if sha256_file(model) != meta.get("encoder_sha256"):
        raise click.ClickException(
            f"{model}: this is not the encoder the index at {store.path} was built with "
            f"({meta.get('encoder_path')}, sha256 {str(meta.get('encoder_sha256'))[:12]}...); "
            "codes from different encoders are not comparable. Drop --model, or rebuild the index with it."
        )


def _search(gen, images, k, max_distance, tta, threads, quiet):
    """(results [[(distance, id)] per readable query], their names, number of unreadable queries)."""
    import numpy as np

    from hashtool.encode import Encoder
    from hashtool.errors import ImageError
    from hashtool.files import load_image

    encoder = Encoder(gen.encoder_path, threads=threads)
    index = gen.open_codes(mmap=True, engine="numpy")  # a few queries: answered without loading the kernels
    if threads:
        index.threads = threads
    arrays, names, failed = [], [], 0
    for path in images:
        try:
            arrays.append(load_image(path, encoder.preprocess))
            names.append(path)
        except ImageError as exc:
            failed += 1
            click.echo(f"error: {exc}", err=True)
    if not arrays:
        raise click.ClickException("no query image could be read")
    codes = encoder.encode(np.stack(arrays))
    n = len(index)
    if max_distance is None:
        k = DEFAULT_K if k is None else k
        if k > n:
            note(f"note: the index holds {n} images, fewer than -k {k}", quiet)
        dist, ids = index.search(codes, k)
        results = [[(int(d), int(i)) for d, i in zip(dist[q], ids[q]) if i >= 0] for q in range(len(names))]
    else:
        lims, dist, ids = index.range_search(codes, max_distance)
        results = []
        for q, name in enumerate(names):
            rows = list(zip(dist[lims[q] : lims[q + 1]].tolist(), ids[lims[q] : lims[q + 1]].tolist()))
            if k is not None and len(rows) > k:
                note(f"note: {name}: {len(rows)} results within distance {max_distance}, showing the first {k} (-k)", quiet)
                rows = rows[:k]
            results.append(rows)
    if tta:
        from hashtool.store.tta import parse_tta, tta_results

        results = tta_results(index, encoder, names, parse_tta(tta), k, max_distance, results)
    return results, names, failed


def _print(results, names, paths, root, as_json, html_path, quiet) -> None:
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

        pages = [(name, [(d, os.path.join(root, paths.get(i, ""))) for d, i in results[q]]) for q, name in enumerate(names)]
        left_out = write_results_page(html_path, pages)
        note(f"wrote {html_path}" + (f" ({left_out} result(s) not shown: the page holds at most 2000 thumbnails)" if left_out else ""), quiet)
