"""``hashtool eval``: retrieval metrics of a trained model on a dataset's protocol."""

from __future__ import annotations

import click

from hashtool.cli._common import emit_json, json_option, quiet_option, threads_option


@click.command("eval")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", "-d", required=True, help="fashion-mnist, mnist-5k, or a folder of IDX files, CIFAR-10 batches or images (labels from sub-folders).")
@click.option("--image-size", type=click.IntRange(8, 1024), default=32, show_default=True, help="For a folder of images: the square size they are decoded at.")
@click.option("--color", type=click.Choice(["L", "RGB"]), default="RGB", show_default=True, help="For a folder of images: grey (L) or colour (RGB).")
@click.option("--seed", type=int, default=None, help="Protocol seed (default: the one stored in the model, else 0).")
@click.option("--queries", type=click.IntRange(min=1), default=None, help="Number of queries (default: the protocol stored in the model, else the dataset's).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True)
@threads_option(help_text="CPU threads for PyTorch.")
@json_option
@quiet_option
def eval_cmd(model, data, image_size, color, seed, queries, device, threads, as_json, quiet):
    """Evaluate MODEL (a deep checkpoint .pt or a baseline .npz) on DATA's seeded retrieval protocol.

    The protocol is the one stored in the model (its seed, number of queries and validation size), so a
    dataset without a test part is evaluated on queries the model never trained on. Every query ranks
    the whole database by (Hamming distance, database order); prints mAP over the whole ranking,
    mAP@1000, precision@k, precision within Hamming radius 2, and the protocol. --json: one JSON line.
    """
    result = _eval(model, data, seed, queries, device, threads, quiet, image_size, color)
    if as_json:
        emit_json(result)
        return
    from hashtool.evaluate import format_metrics

    click.echo(f"model     {result['model']}  ({result['method']}, {result['bits']} bits)")
    click.echo(f"protocol  {result['protocol_text']}")
    click.echo(format_metrics(result["metrics"]))


def _eval(model, data, seed, queries, device, threads, quiet, image_size=32, color="RGB"):
    import sys
    from pathlib import Path

    from hashtool.baselines import is_baseline_file, load_baseline
    from hashtool.datasets import flatten_features, load_dataset, splits_for_model
    from hashtool.errors import DatasetError, ModelError

    path = Path(model)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    dataset = load_dataset(data, image_size=image_size, color=color)
    if is_baseline_file(path):
        base = load_baseline(path)
        splits = splits_for_model(dataset, base.meta.get("protocol"), queries, seed, warn=_warn)
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
        splits = splits_for_model(dataset, ckpt.get("meta", {}).get("protocol"), queries, seed, warn=_warn)
        if not quiet:
            print(f"[eval] {splits.describe()}", file=sys.stderr)
        metrics = evaluate_checkpoint(path, splits, device=resolve_device(device))
        method, bits = ckpt["method"], ckpt["bits"]
    return {"model": str(path), "method": method, "bits": bits, "protocol": splits.protocol(),
            "protocol_text": splits.describe(), "metrics": metrics}


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)
