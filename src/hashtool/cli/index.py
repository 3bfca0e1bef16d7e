"""`hashtool index build` and `hashtool index info`."""

from __future__ import annotations

import click

from hashtool.cli._common import (
    report_failures,
    emit_json,
    encode_files_fn,
    human_bytes,
    index_option,
    json_option,
    no_wait_option,
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
@click.option("--model", type=click.Path(dir_okay=False), default=None, help="Encoder: an .onnx file from `hashtool export`, or a bundled one by name (photo, fashion-mnist). Default: the index's own encoder; for a new index $HASHTOOL_MODEL, else the bundled photo encoder.")
@index_option
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip paths (relative to FOLDER) or names matching GLOB; repeatable. Stored in the index: later builds and dups reuse it until given again.")
@click.option("--no-exclude", is_flag=True, help="Drop the --exclude patterns stored in the index.")
@click.option("--follow-symlinks/--no-follow-symlinks", default=None, help="Follow symbolic links (loops are detected). Stored in the index like --exclude. Default: as stored, else not followed.")
@click.option("--strict", is_flag=True, help="Abort on the first unreadable image (the existing index is kept).")
@click.option("--structure", type=click.Choice(["auto", "flat", "mih"]), default="auto", show_default=True, help="Search structure: exhaustive scan, multi-index hashing, or chosen by size.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None, help="Images per inference call (default: hashtool.encode.encoder.FILE_BATCH, 16).")
@click.option("--scheduler", envvar="DASK_SCHEDULER_ADDRESS", default=None, metavar="ADDRESS", help="Encode on a Dask cluster: tcp://HOST:PORT of its scheduler, or local:N for N worker processes here (needs hashtool[cluster]; FOLDER must be readable by every worker at the same path). Default: $DASK_SCHEDULER_ADDRESS, else encode in this process.")
@click.option("--shard-size", type=click.IntRange(min=0), default=None, metavar="N", help="Store the codes as shards of at most N codes, one index file each (0: one file). Default: as the index was built, one file for a new index.")
@threads_option
@no_wait_option
@json_option
@quiet_option
def build_cmd(folder, model, index_path, exclude, no_exclude, follow_symlinks, strict, structure, batch_size, scheduler,
              shard_size, threads, no_wait, as_json, quiet):
    """Index every image below FOLDER, or bring an existing index up to date.

    Walks FOLDER recursively (hidden files and folders and `._*` skipped, symlinks not followed unless
    asked), encodes each image and stores its code with its path relative to FOLDER, size, mtime and
    sha256. Run again, only new and changed files are encoded and deleted ones removed. A file that
    cannot be read is reported on stderr with its reason, logged in the index and counted; it never
    aborts the build unless --strict; a folder that cannot be listed keeps the entries below it. The index
    on disk is replaced atomically: a crash leaves the old one. One build writes an index at a time: a
    second one waits (or, with --no-wait, fails at once).
    """
    if exclude and no_exclude:
        raise click.UsageError("--exclude and --no-exclude contradict each other; give one")
    walk_exclude = () if no_exclude else (exclude or None)
    report = run_build(folder, model, index_path, walk_exclude, follow_symlinks, strict, structure, batch_size, threads,
                       quiet, wait=not no_wait, scheduler=scheduler, shard_size=shard_size)
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


def run_build(folder, model, index_path, exclude=None, follow_symlinks=None, strict=False, structure="auto",
              batch_size=None, threads=None, quiet=False, wait=True, scheduler=None, shard_size=None):
    """Build or update an index (the body of `index build`, also used by `dups`); returns the BuildReport.

    ``exclude``/``follow_symlinks`` of None reuse the walk options stored in the index."""
    import contextlib

    from hashtool.cli.progress import Progress
    from hashtool.files import SUPPORTED_EXTENSIONS
    from hashtool.store import default_encoder_path, resolve_index_path, resolve_model
    from hashtool.store.build import EncoderInfo, build
    from hashtool.store.store import IndexStore

    store = IndexStore(resolve_index_path(index_path))
    bar = Progress("encoding", quiet=quiet)
    cluster = contextlib.ExitStack()
    model = resolve_model(model)
    try:
        if model is not None:
            label, encoder = str(model), open_encoder(model, threads)
        elif store.current_or_none() is None:
            label, encoder = str(default_encoder_path()), open_encoder(default_encoder_path(), threads)
        else:
            # the index's own encoder, opened (read into memory) under the readers' lock, so a concurrent
            # build cannot collect its generation meanwhile; build() re-reads the live one under the write lock
            with store.reading() as live:
                label, encoder = _recorded_encoder_path(live, live.encoder_path), open_encoder(live.encoder_path, threads)
        radius = encoder.metadata.get("copy_radius", "")
        info = EncoderInfo(path=label, sha256=encoder.sha256, nbits=encoder.nbits, method=encoder.method,
                           copy_radius=int(radius) if radius.isdigit() else None)
        encode_files = encode_files_fn(encoder, batch_size)
        if scheduler:
            encode_files = _cluster_encode_files(cluster, scheduler, encoder, batch_size, quiet)
        return build(
            folder, store, info, encode_files,
            exclude=exclude, follow_symlinks=follow_symlinks, strict=strict, structure=structure,
            extensions=SUPPORTED_EXTENSIONS, threads=threads, wait=wait, progress=bar.update, log=lambda m: note(m, quiet),
            shard_size=shard_size,
        )
    finally:
        bar.close()
        cluster.close()


def _cluster_encode_files(stack, scheduler, encoder, batch_size, quiet):
    """Connect to ``scheduler`` (kept open until ``stack`` closes) and return its encode_files callable."""
    from hashtool.cluster import connect, dask_encode_files

    client = stack.enter_context(connect(scheduler))
    workers = client.scheduler_info()["workers"]
    note(f"encoding on {len(workers)} Dask worker(s) of {scheduler}", quiet)
    return dask_encode_files(client, encoder, batch_size=batch_size)


def _recorded_encoder_path(live, model) -> str:
    """Keep the encoder path recorded at first build (the file inside the index is only a copy)."""
    with live.catalog() as cat:
        return str(cat.get_meta().get("encoder_path", model))


@index.command("info")
@index_option
@click.option("--failures", "show_failures", is_flag=True, help="List every file that failed in the last build.")
@json_option
def info_cmd(index_path, show_failures, as_json):
    """Count, bits, encoder, search structure, size on disk and failures of an index."""
    from hashtool.health import CodeHealth, code_health
    from hashtool.store import resolve_index_path
    from hashtool.store.store import IndexStore

    store = IndexStore(resolve_index_path(index_path))
    with store.reading() as gen, gen.catalog() as cat:
        meta = cat.get_meta()
        count = cat.count()
        failures = cat.failures()
        stored = meta.get("health")  # written by the build; older indexes are measured now
        health = CodeHealth.from_dict(stored) if isinstance(stored, dict) else code_health(gen.open_codes().codes(), meta.get("nbits"))
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
        "health": health.as_dict(),
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
    for n, line in enumerate(health.lines()):
        click.echo(("health:     " if n == 0 else "            ") + line)
    if show_failures:
        for p, r in failures:
            click.echo(f"  {p}: {r}")


@index.command("verify")
@index_option
@click.option("--files", "check_files", is_flag=True, help="Also re-read every indexed file and compare its sha256 with the catalog's.")
@json_option
@quiet_option
def verify_cmd(index_path, check_files, as_json, quiet):
    """Check a whole index: catalog, codes, encoder; report what is wrong (exit status 1 if anything is).

    Checks that the catalog is a sound SQLite database with the expected tables, that the codes file loads
    and holds exactly the catalog's ids with the catalog's bit width, and that the encoder inside the
    index is the one the catalog names (sha256) and opens. --files also reads every indexed image and
    reports files missing or changed since the build (those a new build would update).
    """
    from hashtool.store import resolve_index_path
    from hashtool.store.store import IndexStore
    from hashtool.store.verify import verify_index

    store = IndexStore(resolve_index_path(index_path))
    result = verify_index(store, check_files=check_files, progress=None if quiet else (lambda m: note(m)))
    if as_json:
        emit_json(result.as_dict())
    else:
        for p in result.problems:
            click.echo(f"PROBLEM {p}")
        for p in result.notes:
            click.echo(f"note    {p}")
        click.echo(f"{store.path}: {result.generation}, {result.count} images: "
                   + ("OK" if result.ok else f"{len(result.problems)} problem(s)"))
    if not result.ok:
        raise SystemExit(1)
