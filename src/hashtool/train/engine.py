"""One training loop for every deep method (see :mod:`hashtool.train.methods` for the extension contract).

``train(cfg, splits)`` builds the method's model, runs its phases (a fresh Adam per phase, or AdamW for a phase
with a weight decay, the phase's learning-rate schedule applied per step), validates after every epoch on the
held-out validation split (never on the test queries), keeps the epoch chosen by the method's selection rule, and writes an atomic checkpoint
after every epoch so ``resume=True`` continues where an interrupted run stopped. Progress goes to stderr:
epoch, loss, share of code units already binary, images/s.

Validation after each epoch: the mean loss over the validation split (eval mode, no augmentation, under
``torch.no_grad()``), ``val_acc`` when the loss logs an ``acc``, the share of binary units, and, when the split
is labeled, ``val_map``: mAP over the whole ranking with up to 1,000 validation images as queries against the
remaining validation images.

Settings: the method's defaults, then its semi-supervised defaults when ``--labeled-fraction`` < 1
(:attr:`Method.semi_hparams`), then its ``--preset`` (:attr:`Method.presets`), then the explicit options
(:func:`resolve_settings`). The parts of a run, in order: :func:`prepare_run` (settings, data on the device,
model), then per phase ``_train_phase`` (optimiser, hooks), whose epochs are ``_train_epoch`` (the steps),
``_validate``, ``_offer`` (the selection rule) and ``_save_progress`` (the resumable checkpoint), and
``_finish`` (the selected weights, the complete checkpoint).

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
from hashtool.train.methods import PRECISIONS, SELECT_RULES, Batch, Context, Method, Phase, get_method
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
    preset: str | None = None  # a named configuration of the method (Method.presets), e.g. "paper"
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
    for p in phases:
        if p.precision not in PRECISIONS:
            raise ArgumentError(f"precision {p.precision!r} (phase {p.name}): choose one of {', '.join(PRECISIONS)}")
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


def val_map(real: np.ndarray, labels: np.ndarray, rule: str) -> float | None:
    """Validation mAP: up to :data:`VAL_MAP_QUERIES` of the images query the rest (None without labels)."""
    from hashtool.evaluate import retrieval_metrics

    if labels is None or len(real) < 4 or (labels < 0).all():
        return None
    nq = min(VAL_MAP_QUERIES, len(real) // 2)
    packed = real_to_packed(real, rule)
    m = retrieval_metrics(packed[:nq], labels[:nq], packed[nq:], labels[nq:], topk=(), map_at=(), pr_curve=False)
    return float(m["map"])


def resolve_hparams(method: Method, overrides: dict, preset: str | None = None, semi: bool = False) -> dict:
    """The method's hyper-parameters, then its semi-supervised ones when ``semi`` (:attr:`Method.semi_hparams`,
    for runs with ``--labeled-fraction`` < 1), then the preset's (``--preset``), then ``--hp key=value``
    overrides, each cast to its default's type."""
    hp = dict(method.hparams)
    if semi:
        hp.update(method.semi_hparams)
    hp.update(_preset(method, preset).get("hparams", {}))
    for k, v in overrides.items():
        if k not in hp:
            raise ArgumentError(f"--hp {k}: method {method.name!r} has no hyper-parameter {k!r}; it has {sorted(hp)}")
        hp[k] = type(hp[k])(v) if not isinstance(hp[k], bool) else str(v).lower() in ("1", "true", "yes")
    return hp


def _preset(method: Method, preset: str | None) -> dict:
    if preset is None:
        return {}
    if preset not in method.presets:
        have = ", ".join(sorted(method.presets)) or "none"
        raise ArgumentError(f"--preset {preset!r}: method {method.name!r} has no such preset (it has: {have})")
    return method.presets[preset]


def dataset_preprocess(method: Method, ds) -> Preprocess:
    """The model's input for dataset ``ds``: its image size and colour mode, normalised by the method's mean and
    standard deviation (a one-value pair repeated per channel)."""
    h, w, c = ds.shape_hwc
    mean = method.mean if c == len(method.mean) else tuple(method.mean[:1]) * c
    std = method.std if c == len(method.std) else tuple(method.std[:1]) * c
    return Preprocess(height=h, width=w, color=ds.color, mean=mean, std=std)


@dataclass
class RunSettings:
    """What a run resolved from the method's defaults, its ``--preset`` and the explicit options, in that order."""

    hparams: dict
    augment: str
    batch_size: int
    epoch_images: int | None
    select: str


def resolve_settings(method: Method, cfg: TrainConfig) -> RunSettings:
    """Method defaults < semi-supervised defaults (``--labeled-fraction`` < 1) < preset < explicit options
    (``cfg``), validated."""
    preset = _preset(method, cfg.preset)
    hp = resolve_hparams(method, cfg.hparams, cfg.preset, semi=cfg.labeled_fraction < 1.0)
    select = cfg.select or preset.get("select", method.select)
    if select not in SELECT_RULES:
        raise ArgumentError(f"--select must be one of {SELECT_RULES}, got {select!r}")
    batch_size = cfg.batch_size or preset.get("batch_size", method.batch_size)
    if batch_size < 1:
        raise ArgumentError(f"--batch-size must be positive, got {batch_size}")
    augment = cfg.augment if cfg.augment is not None else preset.get("augment", method.augment)
    epoch_images = cfg.epoch_images or preset.get("epoch_images", method.epoch_images)
    if epoch_images is not None and epoch_images < 1:
        raise ArgumentError(f"--epoch-images must be positive, got {epoch_images}")
    return RunSettings(hparams=hp, augment=augment, batch_size=batch_size, epoch_images=epoch_images, select=select)


@dataclass
class Run:
    """A prepared run: the resolved settings, the data on the device, the model and the schedule."""

    cfg: TrainConfig
    method: Method
    settings: RunSettings
    device: str
    threads: int
    preprocess: Preprocess
    phases: list
    data: TrainData
    val: TrainData | None
    val_labels: np.ndarray | None
    augment: list
    fill: torch.Tensor
    num_classes: int
    epoch_images: int
    model: torch.nn.Module
    meta_base: dict

    @property
    def hp(self) -> dict:
        return self.settings.hparams

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    @property
    def steps_per_epoch(self) -> int:
        return (self.epoch_images + self.settings.batch_size - 1) // self.settings.batch_size


@dataclass
class Selection:
    """The epoch kept so far by the selection rule: its score, number and weights."""

    score: float | None = None
    epoch: int | None = None
    state: dict | None = None


def train(cfg: TrainConfig, splits, out_path, resume: bool = False, extra_meta: dict | None = None):
    """Train ``cfg.method`` on ``splits`` (:class:`hashtool.datasets.Splits`), checkpointing to ``out_path``.

    Returns ``(model, meta)``; the model is the selected epoch's, in eval mode.
    """
    run = prepare_run(cfg, splits, extra_meta)
    history: list[dict] = []
    best = Selection()
    start_epoch, opt_state = 0, None
    if resume:
        start_epoch, history, best, opt_state = _restore(out_path, run.model, run.method, cfg, run.total_epochs)
        _log(cfg, f"[train] resuming {out_path} at epoch {start_epoch + 1}/{run.total_epochs}")
    epoch = 0
    for phase in run.phases:
        if epoch + phase.epochs > start_epoch:
            best = _train_phase(run, phase, epoch, start_epoch, opt_state, history, best, out_path)
            opt_state = None
        epoch += phase.epochs
    return _finish(run, history, best, out_path)


def prepare_run(cfg: TrainConfig, splits, extra_meta: dict | None = None) -> Run:
    """Resolve the settings, check them against the dataset, put the splits on the device, build the model."""
    method = get_method(cfg.method)
    settings = resolve_settings(method, cfg)
    device = resolve_device(cfg.device)
    threads = resolve_threads(cfg.threads)
    torch.set_num_threads(threads)
    ds = splits.dataset
    if method.supervised and not ds.labeled:
        raise ArgumentError(f"--method {method.name} needs labels, but dataset {ds.name} has none")
    if cfg.labeled_fraction < 1.0 and not (method.supervised and method.semi_supervised):
        raise ArgumentError(f"--labeled-fraction applies to semi-supervised methods; {method.name} does not use it")
    preprocess = dataset_preprocess(method, ds)
    phases = scaled_phases(method, settings.hparams, cfg.epochs, cfg.lr)
    augment = parse_augment(settings.augment)

    train_images, train_labels = splits.part("train")
    val_images, val_labels = splits.part("val")
    mask = labeled_mask(len(train_images), cfg.labeled_fraction, cfg.seed) if train_labels is not None else None
    t0 = time.perf_counter()
    data = TrainData.from_numpy(train_images, train_labels, preprocess, device, mask)
    val = TrainData.from_numpy(val_images, val_labels, preprocess, device) if len(val_images) else None
    num_classes = int(train_labels.max()) + 1 if train_labels is not None else 0
    epoch_images = settings.epoch_images or len(data)
    model = _build_model(method, settings.hparams, cfg, num_classes, ds, device)
    run = Run(cfg=cfg, method=method, settings=settings, device=device, threads=threads, preprocess=preprocess,
              phases=phases, data=data, val=val, val_labels=val_labels, augment=augment,
              fill=black_value(preprocess, device), num_classes=num_classes, epoch_images=epoch_images, model=model,
              meta_base={})
    run.meta_base = _meta_base(run, splits, extra_meta)
    _log(cfg, f"[train] {splits.describe()}")
    _log(cfg, f"[train] data on {device} in {time.perf_counter() - t0:.1f}s; {threads} threads; method {method.name}"
              f"{f' (preset {cfg.preset})' if cfg.preset else ''}, {cfg.bits} bits, {run.total_epochs} epochs "
              f"({', '.join(f'{p.name}:{p.epochs}' for p in phases)}), {epoch_images} images/epoch, batch "
              f"{settings.batch_size}, augment {settings.augment}, select {settings.select}")
    return run


def _build_model(method: Method, hp: dict, cfg: TrainConfig, num_classes: int, ds, device: str):
    """Seed, size the classes (``num_classes=0``, see the method contract) and build the model on the device."""
    h, w, c = ds.shape_hwc
    torch.manual_seed(cfg.seed)
    if hp.get("num_classes") == 0:
        if num_classes < 2:
            raise ArgumentError(f"--method {method.name} needs at least 2 classes in the labels of {ds.name}")
        hp["num_classes"] = num_classes
    model = MODELS[method.name][1](method.make_config(cfg.bits, c, h, w, hp)).to(device)
    if device == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model


def _meta_base(run: Run, splits, extra_meta: dict | None) -> dict:
    s = run.settings
    phases = [{"name": p.name, "epochs": p.epochs, "lr": p.lr, "lr_end": p.lr_end, "schedule": p.schedule,
               "select": p.select, "warmup": p.warmup, "weight_decay": p.weight_decay, "precision": p.precision}
              for p in run.phases]
    return {
        "dataset": splits.dataset.name,
        "protocol": splits.protocol(),
        "train_config": {**asdict(run.cfg), "hparams": s.hparams, "augment": s.augment, "select": s.select,
                         "batch_size": s.batch_size, "epoch_images": run.epoch_images, "phases": phases,
                         "device": run.device, "threads": run.threads},
        **(extra_meta or {}),
    }


def phase_optimiser(phase: Phase, params: list) -> torch.optim.Optimizer:
    """Adam at the phase's learning rate, or AdamW when the phase has a ``weight_decay``: decoupled decay on the
    weight matrices and convolution kernels (two or more dimensions), none on biases and BatchNorm parameters."""
    if phase.weight_decay <= 0:
        return torch.optim.Adam(params, lr=phase.lr)
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": phase.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=phase.lr)


def _train_phase(run: Run, phase: Phase, phase_first: int, start_epoch: int, opt_state, history: list,
                 best: Selection, out_path) -> Selection:
    """One phase: its parameters and a fresh Adam (restored when resuming inside it), then its epochs, each
    trained, validated, offered to the selection rule and checkpointed. Returns the selection after it."""
    model, method = run.model, run.method
    params = list(phase.params(model)) if phase.params else list(model.parameters())
    trainable = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    opt = phase_optimiser(phase, params)
    ctx = Context(epochs=run.total_epochs, phase=phase.name, phase_epochs=phase.epochs,
                  steps=run.steps_per_epoch * run.total_epochs, hparams=run.hp, num_classes=run.num_classes,
                  train_size=len(run.data), device=run.device, data=run.data, augment=run.augment, fill=run.fill)
    if opt_state is not None and start_epoch > phase_first:
        opt.load_state_dict(opt_state)
    if method.on_phase_start and start_epoch <= phase_first:
        ctx.epoch = phase_first
        method.on_phase_start(model, ctx)
    for epoch in range(max(phase_first, start_epoch), phase_first + phase.epochs):
        ctx.epoch, ctx.phase_epoch = epoch, epoch - phase_first
        rec = _train_epoch(run, phase, opt, ctx)
        if method.on_epoch_end:
            method.on_epoch_end(model, ctx, run.data)
        rec.update(_validate(method, model, run.val if run.val is not None else run.data, run.val_labels, ctx,
                             run.settings.batch_size))
        history.append(rec)
        if phase.select:
            best = _offer(best, rec, epoch, run.settings.select, model)
        _log(run.cfg, _epoch_line(rec, run.total_epochs))
        _save_progress(run, out_path, history, epoch, opt, best)
    return best


def _train_epoch(run: Run, phase: Phase, opt, ctx: Context) -> dict:
    """The training steps of epoch ``ctx.epoch``: seeded batches, the phase's learning rate per step, the loss
    (under bfloat16 autocast in a ``precision="bf16"`` phase), a backward pass and an optimiser step each.
    Returns the epoch's record (mean loss and logs, time, images/s)."""
    cfg, method, model = run.cfg, run.method, run.model
    epoch, steps_per_epoch, batch_size = ctx.epoch, run.steps_per_epoch, run.settings.batch_size
    ctx.training = True
    if method.on_epoch_start:
        ctx.phase_progress = ctx.phase_epoch / phase.epochs
        ctx.progress = epoch / run.total_epochs
        method.on_epoch_start(model, ctx)
    model.train()
    gen = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + epoch)
    sums: dict[str, float] = {}
    seen = 0
    t_epoch = last_log = time.perf_counter()
    for i, batch in enumerate(run.data.batches(batch_size, gen, run.augment, run.fill, count=run.epoch_images)):
        ctx.step = epoch * steps_per_epoch + i
        ctx.phase_progress = (ctx.phase_epoch + i / steps_per_epoch) / phase.epochs
        ctx.progress = ctx.step / ctx.steps
        ctx.lr = phase.lr_at(ctx.phase_progress)
        for g in opt.param_groups:
            g["lr"] = ctx.lr
        if run.device == "cpu":
            batch.images = batch.images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(torch.device(run.device).type, dtype=torch.bfloat16, enabled=phase.precision == "bf16"):
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
            _log(cfg, f"  epoch {epoch + 1}/{run.total_epochs} [{phase.name}] {seen}/{run.epoch_images} "
                      f"loss {sums['loss'] / seen:.4f} {seen / (now - t_epoch):.0f} img/s")
    seconds = time.perf_counter() - t_epoch
    return {"epoch": epoch + 1, "phase": phase.name, "lr": ctx.lr, "seconds": seconds,
            "images_per_s": seen / max(seconds, 1e-9), **{k: v / max(seen, 1) for k, v in sums.items()}}


def _offer(best: Selection, rec: dict, epoch: int, select: str, model) -> Selection:
    """The selection after epoch ``epoch`` (0-based) under rule ``select``; a tie goes to the later epoch."""
    if select == "last":
        score = float(epoch)
    elif select == "val_loss":
        score = -rec["val_loss"]
    else:
        score = rec.get("val_map")
    if score is None or (best.score is not None and score < best.score):
        return best
    return Selection(score=score, epoch=epoch + 1, state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})


def _save_progress(run: Run, out_path, history: list, epoch: int, opt, best: Selection) -> None:
    """The checkpoint after epoch ``epoch`` (0-based), with what ``--resume`` needs to continue from it."""
    meta = {**run.meta_base, "history": history, "epochs_done": epoch + 1, "complete": False}
    extra = {"optimizer": opt.state_dict(), "best_state": best.state, "best_epoch": best.epoch,
             "best_score": best.score, "torch_rng": torch.get_rng_state()}
    save_checkpoint(out_path, run.model, run.preprocess, meta=meta, extra=extra)


def _finish(run: Run, history: list, best: Selection, out_path):
    """Load the selected epoch's weights and write the complete checkpoint."""
    model = run.model
    if best.state is not None:
        model.load_state_dict(best.state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    selected = best.epoch or run.total_epochs
    done_time = sum(h.get("seconds", 0.0) for h in history)
    meta = {**run.meta_base, "history": history, "epochs_done": run.total_epochs, "complete": True,
            "selected_epoch": selected, "train_seconds": done_time}
    save_checkpoint(out_path, model, run.preprocess, meta=meta)
    _log(run.cfg, f"[train] done in {done_time:.0f}s of training; kept epoch {selected} ({run.settings.select}); wrote {out_path}")
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
    sums: dict[str, float] = {}
    for batch in val.batches(max(batch_size, 512), shuffle=False):
        loss, logs = _call_loss(method, model, batch, ctx)
        total += float(loss) * len(batch)
        n += len(batch)
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(batch)
    real = encode_real(model, val.images, None, ctx.device)
    out = {"val_loss": total / max(n, 1), **{f"val_{k}": v / max(n, 1) for k, v in sums.items() if k == "acc"},
           "binary": binary_share(real, model.binarize),
           "bit_balance": float(np.abs(binarize(real, model.binarize).mean(axis=0) - 0.5).mean())}
    vm = val_map(real, val_labels, model.binarize) if val_labels is not None else None
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
        if k not in ("epoch", "phase", "loss", "val_loss", "val_map", "binary", "seconds", "images_per_s", "lr", "bit_balance") and isinstance(v, float):
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
    best = Selection(score=extra.get("best_score"), epoch=extra.get("best_epoch"), state=extra.get("best_state"))
    done = int(meta.get("epochs_done", 0))
    if done >= total_epochs:
        raise ModelError(f"{path}: {done} epochs already done of {total_epochs}")
    return done, list(meta.get("history", [])), best, extra.get("optimizer")


__all__ = ["TrainConfig", "train", "resolve_device", "labeled_mask", "load_checkpoint", "atomic_torch_save"]
