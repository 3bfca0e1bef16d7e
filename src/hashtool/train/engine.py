"""One training loop for every deep method (see :mod:`hashtool.train.methods` for the extension contract).

``train(cfg, splits)`` builds the method's model, runs its phases (a fresh Adam per phase, the phase's
learning-rate schedule applied per step), validates after every epoch on the held-out validation split (never
on the test queries), keeps the epoch chosen by the method's selection rule, and writes an atomic checkpoint
after every epoch so ``resume=True`` continues where an interrupted run stopped. Progress goes to stderr:
epoch, loss, share of code units already binary, images/s.

Validation after each epoch: the mean loss over the validation split (eval mode, no augmentation, under
``torch.no_grad()``), the share of binary units, and, when the split is labeled, ``val_map``: mAP over the whole
ranking with up to 1,000 validation images as queries against the remaining validation images.

Seeding: ``torch.manual_seed(seed)`` before the model is built; the shuffle of epoch ``e`` comes from a
generator seeded with ``(seed, e)``, so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from hashtool.codes import binarize
from hashtool.errors import ArgumentError, ModelError
from hashtool.preprocess import Preprocess
from hashtool.threads import resolve_threads
from hashtool.train.checkpoint import atomic_torch_save, load_checkpoint, read_checkpoint, save_checkpoint
from hashtool.train.data import TrainData, binary_share, black_value, encode_real, parse_augment, real_to_packed
from hashtool.train.methods import SELECT_RULES, Batch, Context, Method, get_method
from hashtool.train.models import MODELS

VAL_MAP_QUERIES = 1000


@dataclass
class TrainConfig:
    """Everything a run needs besides the data. ``None`` means "the method's default"."""

    method: str
    bits: int
    epochs: int | None = None  # scales every phase proportionally when set (total epochs)
    batch_size: int | None = None
    lr: float | None = None  # scales every phase's learning rates proportionally when set
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    augment: str | None = None
    labeled_fraction: float = 1.0
    select: str | None = None
    epoch_images: int | None = None  # images per epoch (default: the method's, else one pass over the split)
    hparams: dict = field(default_factory=dict)
    quiet: bool = False
    log_every_s: float = 15.0


def resolve_device(device: str) -> str:
    if device not in ("cpu", "cuda", "auto"):
        raise ArgumentError(f"--device must be cpu, cuda or auto, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ArgumentError("--device cuda: this torch build sees no CUDA device; use --device cpu or auto")
    return device


def scaled_phases(method: Method, hp: dict, epochs: int | None, lr: float | None):
    """The method's phases, with the total epochs and the base learning rate overridden if asked."""
    phases = [copy.copy(p) for p in method.phases(hp)]
    if epochs is not None:
        if epochs < 1:
            raise ArgumentError(f"--epochs must be at least 1, got {epochs}")
        total = sum(p.epochs for p in phases)
        # Keep every phase at least one epoch; give the remainder to the phases in proportion.
        raw = [max(1, round(p.epochs * epochs / total)) for p in phases]
        while sum(raw) > max(epochs, len(phases)):
            i = int(np.argmax(raw))
            raw[i] -= 1
        while sum(raw) < epochs:
            raw[int(np.argmax([p.epochs for p in phases]))] += 1
        for p, e in zip(phases, raw):
            p.epochs = e
    if lr is not None:
        if not lr > 0:
            raise ArgumentError(f"--lr must be positive, got {lr}")
        base = phases[0].lr
        for p in phases:
            p.lr = p.lr * lr / base
            if p.lr_end is not None:
                p.lr_end = p.lr_end * lr / base
    return phases


def labeled_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """Seeded mask of the ``round(fraction * n)`` training images whose labels the method may use."""
    if not 0.0 < fraction <= 1.0:
        raise ArgumentError(f"--labeled-fraction must be in (0, 1], got {fraction}")
    k = max(1, int(round(fraction * n)))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng([seed, 7]).permutation(n)[:k]] = True
    return mask


def _log(cfg: TrainConfig, msg: str) -> None:
    if not cfg.quiet:
        print(msg, file=sys.stderr, flush=True)


def _val_map(real: np.ndarray, labels: np.ndarray, rule: str) -> float | None:
    from hashtool.evaluate import retrieval_metrics

    if labels is None or len(real) < 4 or (labels < 0).all():
        return None
    nq = min(VAL_MAP_QUERIES, len(real) // 2)
    packed = real_to_packed(real, rule)
    m = retrieval_metrics(packed[:nq], labels[:nq], packed[nq:], labels[nq:], topk=(), map_at=(), pr_curve=False)
    return float(m["map"])


def resolve_hparams(method: Method, overrides: dict) -> dict:
    """The method's hyper-parameters with ``--hp key=value`` overrides, each cast to its default's type."""
    hp = dict(method.hparams)
    for k, v in overrides.items():
        if k not in hp:
            raise ArgumentError(f"--hp {k}: method {method.name!r} has no hyper-parameter {k!r}; it has {sorted(hp)}")
        hp[k] = type(hp[k])(v) if not isinstance(hp[k], bool) else str(v).lower() in ("1", "true", "yes")
    return hp


def train(cfg: TrainConfig, splits, out_path, resume: bool = False, extra_meta: dict | None = None):
    """Train ``cfg.method`` on ``splits`` (:class:`hashtool.datasets.Splits`), checkpointing to ``out_path``.

    Returns ``(model, history)``; the model is the selected epoch's, in eval mode.
    """
    method = get_method(cfg.method)
    hp = resolve_hparams(method, cfg.hparams)
    select = cfg.select or method.select
    if select not in SELECT_RULES:
        raise ArgumentError(f"--select must be one of {SELECT_RULES}, got {select!r}")
    device = resolve_device(cfg.device)
    threads = resolve_threads(cfg.threads)
    torch.set_num_threads(threads)
    ds = splits.dataset
    if method.supervised and not ds.labeled:
        raise ArgumentError(f"--method {method.name} needs labels, but dataset {ds.name} has none")
    if cfg.labeled_fraction < 1.0 and not (method.supervised and method.semi_supervised):
        raise ArgumentError(f"--labeled-fraction applies to semi-supervised methods; {method.name} does not use it")
    h, w, c = ds.shape_hwc
    mean = method.mean if c == len(method.mean) else tuple(method.mean[:1]) * c
    std = method.std if c == len(method.std) else tuple(method.std[:1]) * c
    preprocess = Preprocess(height=h, width=w, color=ds.color, mean=mean, std=std)
    phases = scaled_phases(method, hp, cfg.epochs, cfg.lr)
    total_epochs = sum(p.epochs for p in phases)
    batch_size = cfg.batch_size or method.batch_size
    if batch_size < 1:
        raise ArgumentError(f"--batch-size must be positive, got {batch_size}")
    augment = parse_augment(cfg.augment if cfg.augment is not None else method.augment)

    train_images, train_labels = splits.part("train")
    val_images, val_labels = splits.part("val")
    mask = labeled_mask(len(train_images), cfg.labeled_fraction, cfg.seed) if train_labels is not None else None
    t0 = time.perf_counter()
    data = TrainData.from_numpy(train_images, train_labels, preprocess, device, mask)
    val = TrainData.from_numpy(val_images, val_labels, preprocess, device) if len(val_images) else None
    fill = black_value(preprocess, device)
    num_classes = int(train_labels.max()) + 1 if train_labels is not None else 0
    epoch_images = cfg.epoch_images or method.epoch_images or len(data)
    if epoch_images < 1:
        raise ArgumentError(f"--epoch-images must be positive, got {epoch_images}")
    _log(cfg, f"[train] {splits.describe()}")
    _log(cfg, f"[train] data on {device} in {time.perf_counter() - t0:.1f}s; {threads} threads; method {method.name}, "
              f"{cfg.bits} bits, {total_epochs} epochs ({', '.join(f'{p.name}:{p.epochs}' for p in phases)}), "
              f"{epoch_images} images/epoch, batch {batch_size}, augment {cfg.augment if cfg.augment is not None else method.augment}, select {select}")

    torch.manual_seed(cfg.seed)
    if hp.get("num_classes") == 0:  # 0 = "as many classes as the training labels have" (see the method contract)
        if num_classes < 2:
            raise ArgumentError(f"--method {method.name} needs at least 2 classes in the labels of {ds.name}")
        hp["num_classes"] = num_classes
    config = method.make_config(cfg.bits, c, h, w, hp)
    model = MODELS[method.name][1](config).to(device)
    if device == "cpu":
        model = model.to(memory_format=torch.channels_last)

    steps_per_epoch = (epoch_images + batch_size - 1) // batch_size
    total_steps = steps_per_epoch * total_epochs
    history: list[dict] = []
    best = {"score": None, "epoch": None, "state": None}
    start_epoch = 0
    opt_state = None
    meta_base = {
        "dataset": ds.name,
        "protocol": splits.protocol(),
        "train_config": {**asdict(cfg), "hparams": hp, "select": select, "batch_size": batch_size,
                         "epoch_images": epoch_images, "phases": [{"name": p.name, "epochs": p.epochs, "lr": p.lr, "lr_end": p.lr_end,
                                     "schedule": p.schedule, "select": p.select} for p in phases],
                         "device": device, "threads": threads},
        **(extra_meta or {}),
    }

    if resume:
        start_epoch, history, best, opt_state = _restore(out_path, model, method, cfg, total_epochs)
        _log(cfg, f"[train] resuming {out_path} at epoch {start_epoch + 1}/{total_epochs}")

    epoch = 0
    done_time = sum(hh.get("seconds", 0.0) for hh in history)
    for pi, phase in enumerate(phases):
        phase_first = epoch
        epoch_after = epoch + phase.epochs
        if epoch_after <= start_epoch:
            epoch = epoch_after
            continue
        params = list(phase.params(model)) if phase.params else list(model.parameters())
        trainable = {id(p) for p in params}
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable)
        opt = torch.optim.Adam(params, lr=phase.lr)
        ctx = Context(epochs=total_epochs, phase=phase.name, phase_epochs=phase.epochs, steps=total_steps, hparams=hp,
                      num_classes=num_classes, train_size=len(data), device=device, data=data)
        if opt_state is not None and start_epoch > phase_first:
            opt.load_state_dict(opt_state)
            opt_state = None
        if method.on_phase_start and start_epoch <= phase_first:
            ctx.epoch = phase_first
            method.on_phase_start(model, ctx)
        for epoch in range(max(phase_first, start_epoch), epoch_after):
            ctx.epoch, ctx.phase_epoch = epoch, epoch - phase_first
            ctx.training = True
            if method.on_epoch_start:
                ctx.phase_progress = ctx.phase_epoch / phase.epochs
                ctx.progress = epoch / total_epochs
                method.on_epoch_start(model, ctx)
            model.train()
            gen = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + epoch)
            sums: dict[str, float] = {}
            seen = 0
            t_epoch = last_log = time.perf_counter()
            for i, batch in enumerate(data.batches(batch_size, gen, augment, fill, count=epoch_images)):
                ctx.step = epoch * steps_per_epoch + i
                ctx.phase_progress = (ctx.phase_epoch + i / steps_per_epoch) / phase.epochs
                ctx.progress = ctx.step / total_steps
                ctx.lr = phase.lr_at(ctx.phase_progress)
                for g in opt.param_groups:
                    g["lr"] = ctx.lr
                if device == "cpu":
                    batch.images = batch.images.contiguous(memory_format=torch.channels_last)
                loss, logs = _call_loss(method, model, batch, ctx)
                if not torch.isfinite(loss):
                    raise ModelError(f"{method.name}: loss became {loss.item()} at epoch {epoch + 1}, step {i}; lower --lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                n = len(batch)
                seen += n
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * n
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * n
                now = time.perf_counter()
                if not cfg.quiet and now - last_log > cfg.log_every_s:
                    last_log = now
                    _log(cfg, f"  epoch {epoch + 1}/{total_epochs} [{phase.name}] {seen}/{epoch_images} "
                              f"loss {sums['loss'] / seen:.4f} {seen / (now - t_epoch):.0f} img/s")
            seconds = time.perf_counter() - t_epoch
            rec = {"epoch": epoch + 1, "phase": phase.name, "lr": ctx.lr, "seconds": seconds,
                   "images_per_s": seen / max(seconds, 1e-9), **{k: v / max(seen, 1) for k, v in sums.items()}}
            if method.on_epoch_end:
                method.on_epoch_end(model, ctx, data)
            rec.update(_validate(method, model, val if val is not None else data, val_labels, ctx, batch_size))
            history.append(rec)
            done_time += seconds
            score = None
            if phase.select:
                if select == "last":
                    score = float(epoch)
                elif select == "val_loss":
                    score = -rec["val_loss"]
                elif rec.get("val_map") is not None:
                    score = rec["val_map"]
                if score is not None and (best["score"] is None or score >= best["score"]):
                    best = {"score": score, "epoch": epoch + 1, "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            _log(cfg, _epoch_line(rec, total_epochs))
            meta = {**meta_base, "history": history, "epochs_done": epoch + 1, "complete": False}
            extra = {"optimizer": opt.state_dict(), "best_state": best["state"], "best_epoch": best["epoch"],
                     "best_score": best["score"], "torch_rng": torch.get_rng_state()}
            save_checkpoint(out_path, model, preprocess, meta=meta, extra=extra)
        epoch = epoch_after

    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    selected = best["epoch"] or total_epochs
    meta = {**meta_base, "history": history, "epochs_done": total_epochs, "complete": True,
            "selected_epoch": selected, "train_seconds": done_time}
    save_checkpoint(out_path, model, preprocess, meta=meta)
    _log(cfg, f"[train] done in {done_time:.0f}s of training; kept epoch {selected} ({select}); wrote {out_path}")
    return model, meta


def _call_loss(method: Method, model, batch: Batch, ctx: Context):
    out = method.loss(model, batch, ctx)
    if isinstance(out, tuple):
        loss, logs = out
    else:
        loss, logs = out, {}
    return loss, logs


@torch.no_grad()
def _validate(method: Method, model, val: TrainData, val_labels, ctx: Context, batch_size: int) -> dict:
    model.eval()
    ctx.training = False
    total, n = 0.0, 0
    for batch in val.batches(max(batch_size, 512), shuffle=False):
        loss, _ = _call_loss(method, model, batch, ctx)
        total += float(loss) * len(batch)
        n += len(batch)
    real = encode_real(model, val.images, None, ctx.device)
    out = {"val_loss": total / max(n, 1), "binary": binary_share(real, model.binarize),
           "bit_balance": float(np.abs(binarize(real, model.binarize).mean(axis=0) - 0.5).mean())}
    vm = _val_map(real, val_labels, model.binarize) if val_labels is not None else None
    if vm is not None:
        out["val_map"] = vm
    model.train()
    ctx.training = True
    return out


def _epoch_line(rec: dict, total: int) -> str:
    parts = [f"epoch {rec['epoch']}/{total} [{rec['phase']}]", f"loss {rec['loss']:.4f}", f"val_loss {rec['val_loss']:.4f}"]
    if "val_map" in rec:
        parts.append(f"val_mAP {rec['val_map']:.4f}")
    parts.append(f"binary {100 * rec['binary']:.1f}%")
    for k, v in rec.items():
        if k not in ("epoch", "phase", "loss", "val_loss", "val_map", "binary", "seconds", "images_per_s", "lr", "bit_balance"):
            parts.append(f"{k} {v:.4g}")
    parts.append(f"lr {rec['lr']:.1e}")
    parts.append(f"{rec['images_per_s']:.0f} img/s")
    parts.append(f"{rec['seconds']:.0f}s")
    return "  ".join(parts)


def _restore(path, model, method: Method, cfg: TrainConfig, total_epochs: int):
    ckpt = read_checkpoint(path)
    if ckpt["method"] != method.name or ckpt["bits"] != cfg.bits:
        raise ModelError(f"{path}: --resume found a {ckpt['method']} {ckpt['bits']}-bit checkpoint, not {method.name} {cfg.bits}-bit")
    meta = ckpt.get("meta", {})
    if meta.get("complete"):
        raise ModelError(f"{path}: this run is already complete; nothing to resume (remove --resume to train anew)")
    extra = ckpt.get("extra") or {}
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise ModelError(f"{path}: checkpoint does not match the model: {str(exc)[:300]}") from None
    if "torch_rng" in extra:
        torch.set_rng_state(extra["torch_rng"])
    best = {"score": extra.get("best_score"), "epoch": extra.get("best_epoch"), "state": extra.get("best_state")}
    done = int(meta.get("epochs_done", 0))
    if done >= total_epochs:
        raise ModelError(f"{path}: {done} epochs already done of {total_epochs}")
    return done, list(meta.get("history", [])), best, extra.get("optimizer")


__all__ = ["TrainConfig", "train", "resolve_device", "labeled_mask", "load_checkpoint", "atomic_torch_save"]
