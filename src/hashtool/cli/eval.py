"""``hashtool eval``: retrieval metrics of a trained model on a dataset's protocol."""

from __future__ import annotations

import json

import click

from hashtool.cli import run_library


@click.command("eval")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", "-d", required=True, help="fashion-mnist, mnist-5k, or a folder of IDX files, CIFAR-10 batches or images (labels from sub-folders).")
@click.option("--image-size", type=click.IntRange(8, 1024), default=32, show_default=True, help="For a folder of images: the square size they are decoded at.")
@click.option("--color", type=click.Choice(["L", "RGB"]), default="RGB", show_default=True, help="For a folder of images: grey (L) or colour (RGB).")
@click.option("--seed", type=int, default=None, help="Protocol seed (default: the one the model was trained with, else 0).")
@click.option("--queries", type=int, default=None, help="Number of queries (default: the dataset's protocol).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads (default: HASHTOOL_THREADS, else all CPUs available).")
@click.option("--json", "as_json", is_flag=True, help="Print metrics, PR curve and protocol as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def eval_cmd(model, data, image_size, color, seed, queries, device, threads, as_json, quiet):
    """Evaluate MODEL (a deep checkpoint .pt or a baseline .npz) on DATA's seeded retrieval protocol.

    Every query ranks the whole database by (Hamming distance, database order); prints mAP over the whole
    ranking, mAP@1000, precision@k, precision within Hamming radius 2, and the protocol.
    """
    result = run_library(_eval, model, data, seed, queries, device, threads, quiet, image_size, color)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    from hashtool.evaluate import format_metrics

    click.echo(f"model     {result['model']}  ({result['method']}, {result['bits']} bits)")
    click.echo(f"protocol  {result['protocol_text']}")
    click.echo(format_metrics(result["metrics"]))


def _eval(model, data, seed, queries, device, threads, quiet, image_size=32, color="RGB"):
    import sys
    from pathlib import Path

    from hashtool.baselines import is_baseline_file, load_baseline
    from hashtool.datasets import flatten_features, load_dataset, make_splits
    from hashtool.errors import DatasetError, ModelError

    path = Path(model)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    dataset = load_dataset(data, image_size=image_size, color=color)
    if is_baseline_file(path):
        base = load_baseline(path)
        stored = base.meta.get("protocol", {})
        splits = make_splits(dataset, n_query=queries, seed=stored.get("seed", 0) if seed is None else seed)
        if not quiet:
            print(f"[eval] {splits.describe()}", file=sys.stderr)
        from hashtool.evaluate import retrieval_metrics

        q, ql = splits.part("query")
        d, dl = splits.part("database")
        if ql is None:
            raise DatasetError(f"{dataset.name} has no labels, so there is nothing to evaluate")
        if flatten_features(q[:1]).shape[1] != base.dim:
            raise ModelError(f"{path}: the model was fitted on {base.dim} features but {dataset.name} images have "
                             f"{flatten_features(q[:1]).shape[1]}; evaluate on the dataset it was trained for")
        metrics = retrieval_metrics(base.transform(flatten_features(q)), ql, base.transform(flatten_features(d)), dl)
        method, bits = base.method, base.bits
    else:
        try:
            import torch
        except ImportError:
            raise ModelError(f"{path}: deep checkpoints need PyTorch: pip install 'hashtool[train]'") from None
        from hashtool.threads import resolve_threads
        from hashtool.train.engine import resolve_device
        from hashtool.train.evaluation import evaluate_checkpoint, read_checkpoint

        torch.set_num_threads(resolve_threads(threads))
        ckpt = read_checkpoint(path)
        stored = ckpt.get("meta", {}).get("protocol", {})
        splits = make_splits(dataset, n_query=queries, seed=stored.get("seed", 0) if seed is None else seed)
        if not quiet:
            print(f"[eval] {splits.describe()}", file=sys.stderr)
        metrics = evaluate_checkpoint(path, splits, device=resolve_device(device))
        method, bits = ckpt["method"], ckpt["bits"]
    return {"model": str(path), "method": method, "bits": bits, "protocol": splits.protocol(),
            "protocol_text": splits.describe(), "metrics": metrics}
