"""``hashtool train``: fit a shallow baseline (numpy only) or train a deep method (needs hashtool[train])."""

from __future__ import annotations

import sys

import click

from hashtool.cli._common import emit_json, json_option, quiet_option, threads_option

SHALLOW = ("lsh", "pcah", "itq")
SHALLOW_SUMMARIES = {
    "lsh": "random hyperplanes on mean-centred pixels (Charikar's SimHash), numpy only",
    "pcah": "the top principal directions of the pixels (PCA hashing), numpy only",
    "itq": "PCA then an orthogonal rotation minimising the quantisation error (Gong and Lazebnik, CVPR 2011), numpy only",
}


def method_kind(m) -> str:
    """unsupervised, supervised or semi-supervised, from a registered Method's flags."""
    if m.semi_supervised:
        return "semi-supervised"
    return "supervised" if m.supervised else "unsupervised"


def _list_methods(ctx, param, value):
    """--list-methods: one line per method, NAME<TAB>KIND<TAB>DESCRIPTION, then exit."""
    if not value or ctx.resilient_parsing:
        return
    for name in SHALLOW:
        click.echo(f"{name}\tbaseline\t{SHALLOW_SUMMARIES[name]}")
    try:
        from hashtool.train.methods import METHODS
    except ImportError:
        click.echo("(the deep methods need PyTorch: pip install 'hashtool[train]')", err=True)
        ctx.exit(0)
    for name, m in sorted(METHODS.items()):
        click.echo(f"{name}\t{method_kind(m)}\t{m.summary}")
    ctx.exit(0)


def _parse_hp(values) -> dict:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: write --hp NAME=VALUE", param_hint="--hp")
        out[key.strip()] = value.strip()
    return out


@click.command("train")
@click.option("--list-methods", is_flag=True, expose_value=False, is_eager=True, callback=_list_methods,
              help="List every method (name, kind, description with its paper) and exit.")
@click.option("--method", "-m", required=True, help="lsh, pcah, itq (numpy only), or a deep method: ae-tanh, scae, ...")
@click.option("--bits", "-b", type=int, required=True, help="Code length, a multiple of 8.")
@click.option("--data", "-d", required=True, help="fashion-mnist, mnist-5k, or a folder of IDX files, CIFAR-10 batches or images (labels from sub-folders).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Where to write the model (.pt for deep methods, .npz for baselines).")
@click.option("--image-size", type=click.IntRange(8, 1024), default=32, show_default=True, help="For a folder of images: the square size they are decoded at.")
@click.option("--color", type=click.Choice(["L", "RGB"]), default="RGB", show_default=True, help="For a folder of images: grey (L) or colour (RGB).")
@click.option("--epochs", type=int, default=None, help="Total epochs (default: the method's documented schedule).")
@click.option("--epoch-images", type=int, default=None, help="Images per epoch (default: the method's; a seeded sample, cycling when the set is smaller).")
@click.option("--batch-size", type=int, default=None, help="Batch size (default: the method's).")
@click.option("--lr", type=float, default=None, help="Base learning rate; the whole schedule is scaled to it.")
@click.option("--augment", default=None, help='Augmentation, e.g. "shift:2,hflip" or "none" (default: the method\'s).')
@click.option("--labeled-fraction", type=float, default=1.0, show_default=True, help="Share of training labels a semi-supervised method may use.")
@click.option("--select", type=click.Choice(["last", "val_loss", "val_map"]), default=None, help="Which epoch to keep (default: the method's).")
@click.option("--hp", multiple=True, help="Method hyper-parameter override NAME=VALUE (repeatable).")
@click.option("--preset", default=None, help="A named configuration of the method under the explicit options; "
              "\"paper\": nin-latent's and adalabel's paper configurations (see the README).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the splits, the initialisation and the batches.")
@click.option("--queries", type=int, default=None, help="Number of test queries of the protocol (default: the dataset's).")
@click.option("--val", "n_val", type=int, default=None, help="Validation images held out of training (default: the dataset's).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True)
@threads_option(help_text="CPU threads for PyTorch and the baselines.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run whose checkpoint is OUTPUT.")
@click.option("--no-eval", is_flag=True, help="Skip the final evaluation on the test protocol.")
@json_option
@quiet_option
def train_cmd(method, bits, data, image_size, color, output, epochs, epoch_images, batch_size, lr, augment, labeled_fraction, select, hp, preset,
              seed, queries, n_val, device, threads, resume, no_eval, as_json, quiet):
    """Train a hashing model and evaluate it on the dataset's retrieval protocol.

    The protocol (seeded, disjoint queries / database / training / validation) is printed with the result and
    stored in the model. Deep methods write an atomic checkpoint after every epoch; --resume continues.
    """
    result = _train(method, bits, data, output, epochs, epoch_images, batch_size, lr, augment, labeled_fraction, select,
                    _parse_hp(hp), seed, queries, n_val, device, threads, resume, no_eval, quiet, image_size, color, preset)
    _print_result(result, as_json)


def _print_result(result: dict, as_json: bool) -> None:
    if as_json:
        emit_json(result)
        return
    from hashtool.evaluate import format_metrics

    click.echo(f"model     {result['model']}  ({result['method']}, {result['bits']} bits)")
    click.echo(f"protocol  {result['protocol_text']}")
    if "train_seconds" in result:
        click.echo(f"training  {result['train_seconds']:.1f} s")
    if result.get("metrics"):
        click.echo(format_metrics(result["metrics"]))


def _train(method, bits, data, output, epochs, epoch_images, batch_size, lr, augment, labeled_fraction, select, hp, seed, queries,
           n_val, device, threads, resume, no_eval, quiet, image_size=32, color="RGB", preset=None):
    import time

    from hashtool.codes import check_nbits
    from hashtool.datasets import load_dataset, make_splits
    from hashtool.errors import ArgumentError

    check_nbits(bits)
    own = _own_procedure(method)
    unsupported = {"epochs": epochs, "epoch_images": epoch_images, "augment": augment, "select": select, "resume": resume or None,
                   "preset": preset, "labeled_fraction": None if labeled_fraction == 1.0 else labeled_fraction,
                   "device": None if device == "cpu" else device}
    if own is not None and own.data == "folder":
        return _train_own(own.fit, method, bits, data, output, lr, batch_size, hp, seed, threads, quiet, **unsupported)
    dataset = load_dataset(data, image_size=image_size, color=color)
    splits = make_splits(dataset, n_query=queries, n_val=n_val, seed=seed)
    if method in SHALLOW:
        for name, value in (("--epochs", epochs), ("--epoch-images", epoch_images), ("--batch-size", batch_size), ("--lr", lr), ("--augment", augment),
                            ("--select", select), ("--hp", hp or None), ("--preset", preset)):
            if value is not None:
                raise ArgumentError(f"{name} does not apply to the shallow baseline {method}")
        if resume:
            raise ArgumentError(f"--resume does not apply to the shallow baseline {method} (it fits in seconds)")
        return _train_shallow(method, bits, splits, output, seed, no_eval, quiet)

    try:
        import torch  # noqa: F401
    except ImportError:
        raise ArgumentError(f"--method {method} needs PyTorch: pip install 'hashtool[train]' (itq, lsh and pcah work without it)") from None
    if own is not None:
        return _train_own_dataset(own, splits, output, bits, lr, batch_size, hp, seed, threads, quiet, no_eval, **unsupported)
    from hashtool.train.engine import TrainConfig, train

    cfg = TrainConfig(method=method, bits=bits, epochs=epochs, epoch_images=epoch_images, batch_size=batch_size, lr=lr, seed=seed, device=device,
                      threads=threads, augment=augment, labeled_fraction=labeled_fraction, select=select, hparams=hp,
                      preset=preset, quiet=quiet)
    t0 = time.perf_counter()
    model, meta = train(cfg, splits, output, resume=resume)
    result = {"model": str(output), "method": method, "bits": bits, "protocol": splits.protocol(),
              "protocol_text": splits.describe(), "train_seconds": meta["train_seconds"],
              "wall_seconds": time.perf_counter() - t0, "selected_epoch": meta["selected_epoch"]}
    if not no_eval:
        from hashtool.train.evaluation import evaluate_checkpoint

        result["metrics"] = evaluate_checkpoint(output, splits, device=meta["train_config"]["device"], store=True)
    return result


def _own_procedure(method):
    """The registered Method of a deep method that trains through its own procedure (its ``fit``; its ``data``
    says whether ``--data`` is a folder of photos or a dataset), else None."""
    if method in SHALLOW:
        return None
    try:
        from hashtool.train.methods import METHODS
    except ImportError:
        return None  # no torch: the engine path below says what to install
    m = METHODS.get(method)
    return m if m is not None and m.fit is not None else None


def _refuse_unsupported(method, unsupported: dict) -> None:
    from hashtool.errors import ArgumentError

    for name, value in unsupported.items():
        if value is not None:
            raise ArgumentError(f"--{name.replace('_', '-')} does not apply to --method {method} (it has its own schedule; see --hp)")


def _train_own(fit, method, bits, data, output, lr, batch_size, hp, seed, threads, quiet, **unsupported):
    """Methods such as edit-contrastive: a folder of photos, no labels, their own validation protocol."""
    import time
    from pathlib import Path

    from hashtool.errors import ArgumentError
    from hashtool.train.engine import TrainConfig

    _refuse_unsupported(method, unsupported)
    if not Path(data).is_dir():
        raise ArgumentError(f"--data {data}: --method {method} trains on a folder of photos (any images, no labels needed)")
    cfg = TrainConfig(method=method, bits=bits, lr=lr, batch_size=batch_size, seed=seed, threads=threads, hparams=hp, quiet=quiet)
    t0 = time.perf_counter()
    _, meta = fit(cfg, data, output, quiet=quiet)
    return {"model": str(output), "method": method, "bits": bits, "protocol": meta["protocol"],
            "protocol_text": meta["protocol"]["description"], "train_seconds": meta["train_seconds"],
            "wall_seconds": time.perf_counter() - t0, "selected_step": meta["selected_step"],
            "metrics": {"val_copy_top1": meta["val_copy_top1"]}}


def _train_own_dataset(own, splits, output, bits, lr, batch_size, hp, seed, threads, quiet, no_eval, **unsupported):
    """Methods such as neighbour-contrastive: their own procedure on the engine's splits, then the standard
    evaluation (stored in the checkpoint), as for the engine's methods."""
    import time

    from hashtool.errors import DatasetError
    from hashtool.train.engine import TrainConfig

    _refuse_unsupported(own.name, unsupported)
    if not no_eval and splits.part("query")[1] is None:
        raise DatasetError(f"{splits.dataset.name} has no labels, so there is nothing to evaluate: pass --no-eval to train "
                           f"--method {own.name} without evaluating it (nothing was trained or written); for a folder of "
                           "photos, --method edit-contrastive has its own protocol of edited copies")
    cfg = TrainConfig(method=own.name, bits=bits, lr=lr, batch_size=batch_size, seed=seed, threads=threads, hparams=hp, quiet=quiet)
    t0 = time.perf_counter()
    _, meta, metrics = own.fit(cfg, splits, output, quiet=quiet, evaluate=not no_eval)
    result = {"model": str(output), "method": own.name, "bits": bits, "protocol": splits.protocol(),
              "protocol_text": splits.describe(), "train_seconds": meta["train_seconds"],
              "wall_seconds": time.perf_counter() - t0, "selected_step": meta["selected_step"]}
    if metrics is not None:
        result["metrics"] = metrics
    return result


def _train_shallow(method, bits, splits, output, seed, no_eval, quiet):
    import time

    from hashtool.baselines import fit_baseline
    from hashtool.datasets import flatten_features
    from hashtool.evaluate import retrieval_metrics

    images, _ = splits.part("train")
    if not no_eval and splits.part("query")[1] is None:
        raise_unlabeled(splits.dataset.name)  # before fitting: never fit a model only to discard it
        print(f"[train] {splits.describe()}", file=sys.stderr)
        print(f"[train] fitting {method} ({bits} bits) on {len(images)} images of raw pixels", file=sys.stderr)
    t0 = time.perf_counter()
    model = fit_baseline(method, flatten_features(images), bits, seed=seed)
    seconds = time.perf_counter() - t0
    ds = splits.dataset
    model.meta.update({"dataset": ds.name, "protocol": splits.protocol(), "input_shape_hwc": list(ds.shape_hwc),
                       "features": "raw pixels / 255, HWC order", "train_seconds": seconds})
    result = {"model": str(output), "method": method, "bits": bits, "protocol": splits.protocol(),
              "protocol_text": splits.describe(), "train_seconds": seconds}
    if not no_eval:
        q, ql = splits.part("query")
        d, dl = splits.part("database")
        metrics = retrieval_metrics(model.transform(flatten_features(q)), ql, model.transform(flatten_features(d)), dl)
        model.meta["metrics"] = {k: v for k, v in metrics.items() if k != "pr_curve"}
        result["metrics"] = metrics
    model.save(output)
    return result


def raise_unlabeled(name):
    from hashtool.errors import DatasetError

    raise DatasetError(f"{name} has no labels, so there is nothing to evaluate; pass --no-eval to fit the model "
                       "without evaluating it (nothing was fitted or written)")
