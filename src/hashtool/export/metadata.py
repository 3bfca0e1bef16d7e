"""The metadata an encoder file carries (ONNX ``metadata_props``), for both exporters; torch-free.

:func:`encoder_metadata` holds the keys every hashtool encoder has, in the order they are written (the
format, bits and rule, the input and its normalisation, what the model is and was trained on);
:func:`model_metadata` adds a trained model's training record. The exporter appends how it built the graph
(exporter, opset, versions) and, after the parity check, ``parity``. :class:`hashtool.encode.Encoder`
reads them back.
"""

from __future__ import annotations

import json

from hashtool import __version__
from hashtool.codes import rule_threshold
from hashtool.encode.encoder import ENCODER_FORMAT, ENCODER_FORMAT_VERSION
from hashtool.preprocess import Preprocess

# Every key an encoder exported from a trained model carries (copy_radius and licence only when recorded).
METADATA_KEYS = (
    "hashtool_format", "hashtool_format_version", "hashtool_version", "bits", "bit_order", "output",
    "binarize", "threshold", "input_layout", "input_dtype", "input_height", "input_width", "input_channels",
    "color", "resize", "mean", "std", "method", "training_data", "protocol", "map", "checkpoint_sha256",
    "checkpoint_file", "training_meta", "exporter", "opset", "torch_version", "onnx_version", "parity",
)
TRAINING_META_LIMIT = 65536  # characters of JSON; beyond it only dataset, protocol and metrics are kept


def encoder_metadata(*, bits: int, output: str, rule: str, preprocess: Preprocess, method: str, meta: dict,
                     map_figures, checkpoint_sha256: str, checkpoint_file: str) -> dict:
    """The keys every encoder carries, ``hashtool_format`` ... ``checkpoint_file``, as text, in order."""
    return {
        "hashtool_format": ENCODER_FORMAT,
        "hashtool_format_version": str(ENCODER_FORMAT_VERSION),
        "hashtool_version": __version__,
        "bits": str(int(bits)),
        "bit_order": "little",
        "output": output,
        "binarize": rule,
        "threshold": str(rule_threshold(rule)[0]),
        "input_layout": "NHWC",
        "input_dtype": "uint8",
        "input_height": str(preprocess.height),
        "input_width": str(preprocess.width),
        "input_channels": str(preprocess.channels),
        "color": preprocess.color,
        "resize": preprocess.resize,
        "mean": json_text(list(preprocess.mean)),
        "std": json_text(list(preprocess.std)),
        "method": method,
        "training_data": text(meta.get("dataset")),
        "protocol": text(meta.get("protocol")),
        "map": json_text(map_figures),
        "checkpoint_sha256": checkpoint_sha256,
        "checkpoint_file": checkpoint_file,
    }


def model_metadata(model, preprocess: Preprocess, output: str, meta: dict, checkpoint_sha256: str,
                   checkpoint_file: str, exporter: dict) -> dict:
    """A trained model's metadata: :func:`encoder_metadata`, ``training_meta``, then ``exporter``'s keys,
    then ``copy_radius`` and ``licence`` where the checkpoint records them."""
    small_meta = {k: v for k, v in meta.items() if k not in ("history",)}
    training_meta = json_text(small_meta)
    if len(training_meta) > TRAINING_META_LIMIT:
        training_meta = json_text({k: small_meta[k] for k in ("dataset", "protocol", "metrics") if k in small_meta})
    out = encoder_metadata(
        bits=model.bits, output=output, rule=model.binarize, preprocess=preprocess,
        method=getattr(model, "model_name", "") or type(model).__name__, meta=meta, map_figures=recorded_map(meta),
        checkpoint_sha256=checkpoint_sha256, checkpoint_file=checkpoint_file,
    )
    out["training_meta"] = training_meta
    out.update(exporter)
    if meta.get("copy_radius") is not None:  # the training's own duplicate radius: dups' default without calibrate
        out["copy_radius"] = str(int(meta["copy_radius"]))
    if meta.get("backbone_licence"):  # pretrained weights travel inside the encoder, and so does their notice
        out["licence"] = text(meta["backbone_licence"])
    return out


def recorded_map(meta: dict) -> dict:
    """Every mAP figure the checkpoint records, by where it was found.

    Numbers whose key mentions "map" at the top level of ``meta`` or under ``metrics``/``results`` (the
    test-protocol evaluation, e.g. ``metrics.map``), and in the training history's entry for the selected
    epoch (``meta["selected_epoch"]``, else the last entry; e.g. ``history[epoch=6].val_map``, a validation
    figure used for model selection).
    """
    def numbers(d: dict, scope: str) -> dict:
        return {
            scope + str(k): float(v)
            for k, v in d.items()
            if "map" in str(k).lower() and isinstance(v, (int, float)) and not isinstance(v, bool)
        }

    found = {}
    for scope, d in (("", meta), ("metrics.", meta.get("metrics")), ("results.", meta.get("results"))):
        if isinstance(d, dict):
            found.update(numbers(d, scope))
    history = [h for h in meta.get("history") or [] if isinstance(h, dict)] if isinstance(meta.get("history"), list) else []
    if history:
        selected = meta.get("selected_epoch")
        chosen = [h for h in history if selected is not None and h.get("epoch") == selected]
        entry = chosen[-1] if chosen else history[-1]
        found.update(numbers(entry, f"history[epoch={entry.get('epoch')}]."))
    return found


def set_metadata(proto, metadata: dict) -> None:
    """Replace ``proto``'s metadata_props with ``metadata`` (in its order) and mark hashtool as producer."""
    del proto.metadata_props[:]
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = k
        entry.value = str(v)
    proto.producer_name = "hashtool"
    proto.producer_version = __version__


def json_text(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def text(value) -> str:
    """A metadata value as text: strings as they are, nothing as "", anything else as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json_text(value)
