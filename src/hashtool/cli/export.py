"""``hashtool export MODEL.pt ENCODER.onnx``: write the torch-free ONNX encoder of a trained checkpoint."""

from __future__ import annotations

import click

from hashtool.cli._common import emit_json, json_option, quiet_option


@click.command("export")
@click.argument("model", type=click.Path(dir_okay=False, path_type=str))
@click.argument("encoder", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--output",
    type=click.Choice(["packed", "bits", "real"]),
    default="packed",
    show_default=True,
    help="What the graph returns: packed uint8 codes, unpacked 0/1 bits, or the real-valued hash layer.",
)
@click.option(
    "--parity-images",
    type=click.IntRange(min=0),
    default=256,
    show_default=True,
    help="Images for the onnxruntime-vs-PyTorch parity check (0 skips it).",
)
@click.option(
    "--parity-dir",
    type=click.Path(exists=True, file_okay=False, path_type=str),
    default=None,
    help="Folder of images for the parity check [default: the Fashion-MNIST test set if installed, else random pixels].",
)
@click.option("--epsilon", type=float, default=1e-4, show_default=True,
              help="Bits whose pre-activation is within this distance of the threshold may differ.")
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo", show_default=True,
              help="torch.onnx exporter; 'torchscript' is the legacy one, for models torch.export cannot trace.")
@click.option("--no-strict", is_flag=True, help="Write the encoder even if bits differ beyond epsilon.")
@json_option
@quiet_option
def export_cmd(model, encoder, output, parity_images, parity_dir, epsilon, exporter, no_strict, as_json, quiet):
    """Export the encoder of MODEL (a hashtool checkpoint .pt, or a baseline .npz) to ENCODER.onnx.

    A baseline (lsh, pcah, itq) becomes a graph of its own projection on raw pixels at the size it was
    fitted on (output "real", sign rule); its parity check compares with the baseline's own codes.

    The graph takes uint8 images (batch, height, width, channels), normalises them, runs the encoder up
    to the hash layer, binarises by the method's rule and packs the bits in hashtool's order. The export
    checks itself: onnxruntime and PyTorch must give the same bits on a batch of images, except bits
    within EPSILON of the threshold; the counts are printed.
    """
    from pathlib import Path

    from hashtool.baselines import is_baseline_file

    baseline = Path(model).is_file() and is_baseline_file(model)
    if not quiet:
        what = "baseline projection, output=real" if baseline else f"output={output}, exporter={exporter}"
        click.echo(f"exporting {model} -> {encoder} ({what})", err=True)
    try:
        from hashtool.export import export_model
        from hashtool.export.baseline_onnx import export_baseline
    except ImportError as exc:
        raise click.ClickException(
            f"hashtool export needs PyTorch and onnx ({exc}); install them with: pip install 'hashtool[train]'"
        ) from exc

    if baseline:
        result = export_baseline(model, encoder, parity_images=parity_images, epsilon=epsilon, strict=not no_strict)
    else:
        result = export_model(
            model,
            encoder,
            output,
            parity_images=parity_images,
            parity_dir=parity_dir,
            epsilon=epsilon,
            exporter=exporter,
            strict=not no_strict,
        )
    if as_json:
        emit_json(result.to_dict())
        return
    md = result.metadata
    click.echo(f"wrote {result.path} ({result.bytes:,} bytes, sha256 {result.sha256[:16]}...) in {result.seconds:.1f} s")
    click.echo(
        f"method {md['method']}, {md['bits']} bits ({md['binarize']} rule), output {md['output']}, "
        f"input uint8 {md['input_height']}x{md['input_width']}x{md['input_channels']} ({md['color']}, {md['resize']}), "
        f"opset {md['opset']}"
    )
    if result.parity is None:
        click.echo("parity check skipped (--parity-images 0)")
    else:
        click.echo(result.parity.summary())
        if result.parity.health:
            from hashtool.health import CodeHealth

            for line in CodeHealth(**result.parity.health).lines():
                click.echo(f"code health on the parity images: {line}")
        if not result.parity.ok:
            click.echo("WARNING: bits differ beyond epsilon (written because of --no-strict)", err=True)

