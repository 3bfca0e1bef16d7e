"""`hashtool index build` and `hashtool index info`."""

from __future__ import annotations

import click

from hashtool.cli._common import (
    report_failures,
    emit_json,
    encode_files_fn,
    fail,
    human_bytes,
    index_option,
    json_option,
    note,
    open_encoder,
    quiet_option,
    threads_option,
)


@click.group("index")
def index():
    """Build, update and inspect an image index."""


@index.command("build")
@click.argument("folder", type=click.Path(file_okay=False, path_type=str))
@click.option("--model", type=click.Path(dir_okay=False), default=None, help="Encoder: an .onnx file from `hashtool export`, or a bundled one by name (photo, fashion-mnist). Default: the index's own encoder, or the bundled photo encoder for a new index.")
@index_option
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip paths (relative to FOLDER) or names matching GLOB; repeatable.")
@click.option("--follow-symlinks", is_flag=True, help="Follow symbolic links (loops are detected).")
@click.option("--strict", is_flag=True, help="Abort on the first unreadable image (the existing index is kept).")
@click.option("--structure", type=click.Choice(["auto", "flat", "mih"]), default="auto", show_default=True, help="Search structure: exhaustive scan, multi-index hashing, or chosen by size.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=64, show_default=True)
@threads_option
@json_option
@quiet_option
def build_cmd(folder, model, index_path, exclude, follow_symlinks, strict, structure, batch_size, threads, as_json, quiet):
    """Index every image below FOLDER, or bring an existing index up to date.

    Walks FOLDER recursively (hidden files and folders and `._*` skipped, symlinks not followed unless
    asked), encodes each image and stores its code with its path relative to FOLDER, size, mtime and
    sha256. Run again, only new and changed files are encoded and deleted ones removed. A file that
    cannot be read is reported on stderr with its reason, logged in the index and counted; it never
    aborts the build unless --strict. The index on disk is replaced atomically: a crash leaves the old one.
    """
    report = run_build(folder, model, index_path, exclude, follow_symlinks, strict, structure, batch_size, threads, quiet)
    report_failures(report.failures, quiet, report.index)
    if as_json:
        emit_json(report.as_dict())
        return
    rate = report.encoded / report.encode_seconds if report.encode_seconds > 0 else 0.0
    click.echo(
        f"{report.index}: {report.total} images indexed from {report.root} "
        f"({report.added} added, {report.updated} re-encoded, {report.removed} removed, "
        f"{report.unchanged + report.touched} unchanged, {report.failed} failed, {report.ignored} non-image files ignored) "
        f"in {report.seconds:.1f} s ({rate:.0f} images/s encoding), structure {report.structure or '-'}"
    )


def run_build(folder, model, index_path, exclude=(), follow_symlinks=False, strict=False, structure="auto",
              batch_size=64, threads=None, quiet=False):
    """Build or update an index (the body of `index build`, also used by `dups`); returns the BuildReport."""
    from hashtool.cli.progress import Progress
    from hashtool.encode import SUPPORTED_EXTENSIONS
    from hashtool.errors import HashtoolError
    from hashtool.store import default_encoder_path, resolve_index_path, resolve_model
    from hashtool.store.build import EncoderInfo, build
    from hashtool.store.store import IndexStore

    store = IndexStore(resolve_index_path(index_path))
    bar = Progress("encoding", quiet=quiet)
    model = resolve_model(model)
    try:
        live = store.current_or_none()
        if model is None:
            model = str(live.encoder_path) if live is not None else str(default_encoder_path())
            label = _recorded_encoder_path(live, model)
        else:
            label = str(model)
        encoder = open_encoder(model, threads)
        info = EncoderInfo(path=label, sha256=encoder.sha256, nbits=encoder.nbits, method=encoder.method)
        return build(
            folder, store, info, encode_files_fn(encoder, batch_size),
            exclude=exclude, follow_symlinks=follow_symlinks, strict=strict, structure=structure,
            extensions=SUPPORTED_EXTENSIONS, threads=threads, progress=bar.update, log=lambda m: note(m, quiet),
        )
    except HashtoolError as exc:
        raise fail(exc) from exc
    finally:
        bar.close()


def _recorded_encoder_path(live, model) -> str:
    """Keep the encoder path recorded at first build (the file inside the index is only a copy)."""
    if live is None:
        return str(model)
    with live.catalog() as cat:
        return str(cat.get_meta().get("encoder_path", model))


@index.command("info")
@index_option
@click.option("--failures", "show_failures", is_flag=True, help="List every file that failed in the last build.")
@json_option
def info_cmd(index_path, show_failures, as_json):
    """Count, bits, encoder, search structure, size on disk and failures of an index."""
    from hashtool.errors import HashtoolError
    from hashtool.store import resolve_index_path
    from hashtool.store.store import IndexStore

    store = IndexStore(resolve_index_path(index_path))
    try:
        gen = store.current()
        with gen.catalog() as cat:
            meta = cat.get_meta()
            count = cat.count()
            failures = cat.failures()
    except HashtoolError as exc:
        raise fail(exc) from exc
    info = {
        "index": str(store.path),
        "root": meta.get("root"),
        "count": count,
        "bits": meta.get("nbits"),
        "encoder": {"path": meta.get("encoder_path"), "sha256": meta.get("encoder_sha256"), "method": meta.get("encoder_method")},
        "structure": meta.get("structure"),
        "size_bytes": store.size_on_disk(),
        "generation": gen.name,
        "updated": meta.get("updated"),
        "failures": len(failures),
    }
    if as_json:
        info["failed_files"] = [{"path": p, "reason": r} for p, r in failures]
        emit_json(info)
        return
    click.echo(f"index:      {info['index']} ({gen.name}, updated {info['updated']})")
    click.echo(f"folder:     {info['root']}")
    click.echo(f"images:     {count}")
    click.echo(f"bits:       {info['bits']}")
    click.echo(f"encoder:    {info['encoder']['path']} (method {info['encoder']['method']}, sha256 {info['encoder']['sha256']})")
    click.echo(f"structure:  {info['structure']}")
    click.echo(f"on disk:    {human_bytes(info['size_bytes'])}")
    click.echo(f"failures:   {len(failures)} in the last build" + ("" if show_failures or not failures else " (--failures lists them)"))
    if show_failures:
        for p, r in failures:
            click.echo(f"  {p}: {r}")
