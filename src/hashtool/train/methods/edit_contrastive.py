"""``edit-contrastive``: self-supervised hash codes for photos that survive the edits people make.

Our method (no paper's configuration to follow): a hash head on a frozen ImageNet backbone
(:mod:`hashtool.train.backbone`, EfficientNet-Lite0), trained without labels so that a photo and its edited
copies get nearby codes and different photos far-apart ones, with balanced, decorrelated bits.

Data. Any folder of images (``--data ~/Pictures``): every image is an *instance*; an image whose short side is
at least ``quadrant_side`` pixels also gives its four quadrants as further instances (distinct content
that shares a photo's colours and style: hard negatives, and more instances than files). Images are decoded
once, kept at ``work_side`` pixels on the long side, and each instance gets ``views`` views: the clean image and
``views - 1`` edited copies (:func:`hashtool.edits.random_edit`: one to three of every edit kind, chained).
Every view goes through the runtime's own preprocessing (:func:`hashtool.files.images.convert_image`) and the
frozen backbone once, run by onnxruntime (3 to 5 times faster than PyTorch eager here); the head then trains on
the cached 1280-d features, thousands of steps a minute on a CPU.

Loss, per batch of ``batch`` instances with two random views each (a, b), the contrastive loss on codes shared
with ``contrastive`` (:func:`hashtool.train.contrastive.code_contrastive_loss`):

* contrastive (NT-Xent, temperature ``temperature``) between the codes of a and b, every other view in the
  batch a negative. By default (``straight_through=0``) the codes are the tanh outputs ``u = tanh(head(f))``
  scaled to unit length (a continuous relaxation); with ``straight_through=1`` they are ``sign(u)`` with a
  straight-through gradient (measured worse: the tanh saturated and learning stopped);
* ``quant * mean((1 - |u|)^2)``: units pushed to +-1;
* ``balance * mean(mean_batch(u)^2)``: each bit on for half of the images;
* ``decorr * mean(offdiag(corr(u))^2)``: bits carry different information.

Model selection: a seeded ``val_share`` of the files (with their quadrants) is held out; after every
``eval_every`` steps the held-out edited views query the clean views of every instance (training ones
included, as distractors) and the step with the best tie-aware top-1 rate is kept.

Choices: the backbone stays frozen (fine-tuning it costs 15-20x the time on a CPU and the cached features would
have to be recomputed every step); the head is ``Linear(1280, hidden) -> ReLU -> Linear(hidden, bits)`` on
features standardised by their training mean and standard deviation (stored as buffers, so export includes
them); ``hidden = 0`` gives a linear head.

Input (measured on ``benchmarks/bench_photos.py``'s held-out set, RESULTS.md "Photo encoder"): ``resize`` is
"trim-stretch" (flat letterbox bars and frames are cut off first: letterboxed copies found first 0.93 -> 1.00);
``image_size`` 160 (the encoder runs about 1.6x faster than at 224 and found more easy copies); the
:class:`InputFilter` keeps ``saturation`` 0.5 of each pixel's colour and blurs by a Gaussian of ``blur`` 1 pixel
(blurred copies 0.94 -> 0.99; full desaturation found every grey copy but cost the hard edits 4 points).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from hashtool.edits import parse_weights
from hashtool.encode.encoder import OPSET
from hashtool.errors import ArgumentError, DatasetError
from hashtool.preprocess import RESIZE_POLICIES, Preprocess
from hashtool.train.backbone import LICENCE, Backbone
from hashtool.train.contrastive import code_contrastive_loss
from hashtool.train.methods import Method, get_method, register_method
from hashtool.train.models import HashConfig, HashModel, register_model

NAME = "edit-contrastive"
MEAN = (0.5, 0.5, 0.5)  # EfficientNet-Lite: x / 127.5 - 1
STD = (0.5, 0.5, 0.5)
NORMAL_SPREAD = 0.5  # InputFilter(normalise): the standard deviation every image gets, about a photo's at [-1, 1]
NORMAL_EPS = 1e-3  # keeps a flat image finite (it stays flat)

HPARAMS = {
    "views": 12,
    "work_side": 512,
    "quadrant_side": 900,
    "hidden": 0,
    "steps": 1000,
    "batch": 256,
    "lr": 1e-3,
    "temperature": 0.05,
    "quant": 0.01,
    "balance": 0.1,
    "decorr": 0.1,
    "val_share": 0.1,
    "eval_every": 100,
    "image_size": 160,
    "resize": "trim-stretch",
    "saturation": 0.5,
    "blur": 1.0,
    "normalise": 0,
    "edit_weights": "",
    "max_edits": 3,
    "straight_through": 0,
    "dropout": 0.0,
    "weight_decay": 0.0,
}


@dataclass
class EditContrastiveConfig(HashConfig):
    in_channels: int = 3
    height: int = 224
    width: int = 224
    backbone: str = "efficientnet-lite0"
    hidden: int = 0
    saturation: float = 1.0  # InputFilter: 1 = colours as they are, 0 = grey
    blur: float = 0.0  # InputFilter: Gaussian sigma in input pixels, 0 = none
    normalise: bool = False  # InputFilter: each image to zero mean and a fixed spread


class InputFilter(nn.Module):
    """A fixed filter in front of the backbone, part of the exported graph: keep ``saturation`` of each pixel's
    colour (the rest is its ITU-R 601 luma), blur by a Gaussian of ``blur`` input pixels (reflected edges), and
    with ``normalise`` shift and scale each image to mean 0 and standard deviation :data:`NORMAL_SPREAD` over all
    its pixels and channels.

    It trades detail for invariance: a grey or blurred copy lands nearer its original when both lose the same
    colour and fine detail, and a normalised image is the same whatever uniform brightness or contrast factor
    was applied to it (up to clipping). Works on normalised inputs (the affine map is the same on every channel).
    """

    def __init__(self, saturation: float, blur: float, normalise: bool = False):
        super().__init__()
        if not 0.0 <= saturation <= 1.0:
            raise ArgumentError(f"--hp saturation={saturation}: must be in [0, 1]")
        if not 0.0 <= blur <= 8.0:
            raise ArgumentError(f"--hp blur={blur}: must be in [0, 8] pixels")
        self.saturation = float(saturation)
        self.normalise = bool(normalise)
        # non-persistent: made from the config, so checkpoints from before the filter still load
        self.register_buffer("luma", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1), persistent=False)
        radius = int(np.ceil(2.5 * blur)) if blur >= 0.05 else 0  # under 0.05 px a Gaussian is the identity
        self.radius = radius
        if radius:
            t = torch.arange(-radius, radius + 1, dtype=torch.float32)
            g = torch.exp(-0.5 * (t / blur) ** 2)
            g = g / g.sum()
            self.register_buffer("kernel", (g[:, None] * g[None, :]).expand(3, 1, -1, -1).contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.saturation < 1.0:
            grey = (x * self.luma).sum(dim=1, keepdim=True)
            x = grey + self.saturation * (x - grey)
        if self.radius:
            x = nn.functional.conv2d(nn.functional.pad(x, (self.radius,) * 4, mode="reflect"), self.kernel, groups=3)
        if self.normalise:
            centred = x - x.mean(dim=(1, 2, 3), keepdim=True)
            spread = centred.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
            x = centred * (NORMAL_SPREAD / (spread + NORMAL_EPS))
        return x


class HashHead(nn.Module):
    """Standardised backbone features -> real-valued hash layer before the tanh."""

    def __init__(self, dim: int, hidden: int, bits: int):
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(dim))
        self.register_buffer("feat_std", torch.ones(dim))
        if hidden:
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, bits))
        else:
            self.mlp = nn.Sequential(nn.Linear(dim, bits))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.mlp((feats - self.feat_mean) / self.feat_std)


@register_model(NAME, EditContrastiveConfig)
class EditContrastiveModel(HashModel):
    binarize = "sign"

    def __init__(self, config: EditContrastiveConfig):
        super().__init__(config)
        self.filter = InputFilter(config.saturation, config.blur, config.normalise)
        self.backbone = Backbone(config.backbone)
        self.head = HashHead(self.backbone.dim, config.hidden, config.bits)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features of normalised images, after the input filter (what the head sees)."""
        return self.backbone(self.filter(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(self.features(x)))


# -- data: instances, views, cached features ------------------------------------------------------


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def load_instances(folder, hp: dict, quiet: bool = False):
    """Decode every image under ``folder``: (instances as RGB PIL images at work size, file index of each, files)."""
    from PIL import Image

    from hashtool.errors import ImageError
    from hashtool.files.images import find_images, open_image
    from hashtool.photosets import flatten_rgb

    files = find_images(folder)
    if not files:
        raise DatasetError(f"{folder}: no images found (looked for JPEG, PNG, WebP, BMP, GIF and TIFF files)")
    work, qside = int(hp["work_side"]), int(hp["quadrant_side"])
    instances, owner, kept, skipped = [], [], [], 0
    for path in files:
        try:
            with open_image(path) as img:
                img = flatten_rgb(img)
        except (ImageError, OSError) as exc:
            skipped += 1
            _log(quiet, f"[train] skipped {path}: {exc}")
            continue
        fi = len(kept)
        kept.append(path)
        crops = [img]
        if min(img.size) >= qside:
            w, h = img.size
            crops += [img.crop(box) for box in ((0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h), (w // 2, h // 2, w, h))]
        for crop in crops:
            crop = crop.copy()
            crop.thumbnail((work, work), Image.Resampling.BILINEAR)
            instances.append(crop)
            owner.append(fi)
    if len(kept) < 4:
        raise DatasetError(f"{folder}: {len(kept)} readable image(s); {NAME} needs at least 4 (and learns better from hundreds)")
    _log(quiet, f"[train] {len(kept)} images ({skipped} unreadable) -> {len(instances)} instances (quadrants of images >= {qside} px)")
    return instances, np.asarray(owner), kept


def make_views(instances, preprocess: Preprocess, views: int, seed: int, max_edits: int, threads: int, weights=None):
    """uint8 (n, views, H, W, 3): view 0 clean, the others edited copies; seeded per (instance, view).
    ``weights``: edit name -> relative chance of being drawn (see :func:`hashtool.edits.random_edit`)."""
    from concurrent.futures import ThreadPoolExecutor

    from hashtool.edits import random_edit
    from hashtool.files.images import convert_image

    out = np.empty((len(instances), views, *preprocess.shape_hwc), dtype=np.uint8)

    def one(i):
        for v in range(views):
            img = instances[i]
            if v:
                img, _ = random_edit(img, np.random.default_rng([seed, i, v]), max_edits=max_edits, weights=weights)
            out[i, v] = convert_image(img, preprocess)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, range(len(instances))))
    return out


def backbone_session(backbone: nn.Module, preprocess: Preprocess, threads: int):
    """An onnxruntime session of ``backbone`` (normalised images -> features; exported once; feed it to
    :func:`backbone_features`)."""
    import os
    import tempfile

    import onnxruntime as ort

    backbone = backbone.eval()
    h, w, _ = preprocess.shape_hwc
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "backbone.onnx")
        with torch.no_grad():
            torch.onnx.export(backbone, (torch.zeros(2, 3, h, w),), path, input_names=["x"], output_names=["f"],
                              dynamic_shapes=({0: torch.export.Dim("n", min=1)},), opset_version=OPSET, dynamo=True, verbose=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def backbone_features(sess, images: np.ndarray, preprocess: Preprocess, batch: int = 64) -> np.ndarray:
    """Pooled features (n, dim) float32 of uint8 NHWC ``images`` through a :func:`backbone_session`."""
    from hashtool.train.data import to_tensor

    out = []
    for s in range(0, len(images), batch):
        x = to_tensor(images[s : s + batch], preprocess).numpy()
        out.append(sess.run(None, {"x": x})[0])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# -- training -------------------------------------------------------------------------------------


def _packed_codes(head: HashHead, feats: torch.Tensor) -> np.ndarray:
    from hashtool.codes import pack

    with torch.no_grad():
        return pack(head(feats).numpy())


def copy_top1(head: HashHead, feats: torch.Tensor, val_idx: np.ndarray, owner: np.ndarray) -> float:
    """Tie-aware top-1 of held-out edited views against the clean views of every instance."""
    from hashtool.evaluate import hamming_distances, tie_aware_hits

    db = _packed_codes(head, feats[:, 0])
    n, views = feats.shape[:2]
    q = _packed_codes(head, feats[val_idx, 1:].reshape(-1, feats.shape[2]))
    target = np.repeat(val_idx, views - 1)
    d = hamming_distances(q, db)
    valid = owner[None, :] != owner[target][:, None]  # other crops of the query's own file do not compete
    return float(tie_aware_hits(d, target, ks=(1,), valid=valid)["top1"].mean())


def copy_radius(head: HashHead, feats: torch.Tensor, val_idx: np.ndarray, recall: float = 0.95) -> int:
    """The Hamming radius within which ``recall`` of the held-out edited views lie from their clean view."""
    from hashtool.codes import hamming
    from hashtool.evaluate import radius_for_recall

    views = feats.shape[1]
    clean = _packed_codes(head, feats[val_idx, 0])
    edited = _packed_codes(head, feats[val_idx, 1:].reshape(-1, feats.shape[2]))
    return int(radius_for_recall(hamming(edited, np.repeat(clean, views - 1, axis=0)), recall))


def fit(cfg, folder, out_path, quiet: bool = False):
    """Train ``edit-contrastive`` on the images under ``folder``; writes the checkpoint to ``out_path``.

    ``cfg`` is a :class:`hashtool.train.engine.TrainConfig` (method, bits, seed, threads, hparams, lr,
    batch_size); returns ``(model, meta)`` like the engine.
    """
    from hashtool.codes import check_nbits
    from hashtool.threads import resolve_threads
    from hashtool.train.checkpoint import save_checkpoint
    from hashtool.train.engine import resolve_hparams

    check_nbits(cfg.bits)
    hp = resolve_hparams(get_method(NAME), cfg.hparams)
    if cfg.lr is not None:
        hp["lr"] = float(cfg.lr)
    if cfg.batch_size is not None:
        hp["batch"] = int(cfg.batch_size)
    if hp["views"] < 2:
        raise ArgumentError("--hp views must be at least 2 (a clean view and an edited one)")
    threads = resolve_threads(cfg.threads)
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    size = int(hp["image_size"])
    if hp["resize"] not in RESIZE_POLICIES:
        raise ArgumentError(f"--hp resize={hp['resize']!r}: choose one of {', '.join(RESIZE_POLICIES)}")
    preprocess = Preprocess(height=size, width=size, color="RGB", resize=hp["resize"], mean=MEAN, std=STD)
    t0 = time.perf_counter()

    instances, owner, files = load_instances(folder, hp, quiet)
    config = EditContrastiveConfig(bits=cfg.bits, height=size, width=size, hidden=int(hp["hidden"]),
                                   saturation=float(hp["saturation"]), blur=float(hp["blur"]),
                                   normalise=bool(int(hp["normalise"])))
    model = EditContrastiveModel(config)
    model.backbone.load_pretrained()
    t_views = time.perf_counter()
    weights = parse_weights(str(hp["edit_weights"])) if hp["edit_weights"] else None
    views = make_views(instances, preprocess, int(hp["views"]), cfg.seed, int(hp["max_edits"]), threads, weights)
    t_feats = time.perf_counter()
    session = backbone_session(nn.Sequential(model.filter, model.backbone), preprocess, threads)
    feats_np = backbone_features(session, views.reshape(-1, *preprocess.shape_hwc), preprocess)
    feats = torch.from_numpy(feats_np.reshape(len(instances), int(hp["views"]), -1))
    del views
    t_head = time.perf_counter()
    _log(quiet, f"[train] {len(instances)} x {hp['views']} views: edits {t_feats - t_views:.0f}s, backbone {t_head - t_feats:.0f}s "
                f"({feats_np.shape[0] / max(t_head - t_feats, 1e-9):.0f} views/s)")

    rng = np.random.default_rng([cfg.seed, 11])
    n_files = len(files)
    val_files = rng.permutation(n_files)[: max(1, int(round(float(hp["val_share"]) * n_files)))]
    is_val = np.isin(owner, val_files)
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    head = model.head
    flat = feats[train_idx].reshape(-1, feats.shape[2])
    head.feat_mean.copy_(flat.mean(dim=0))
    head.feat_std.copy_(flat.std(dim=0) + 1e-4)
    history, best = _train_head(head, feats, train_idx, val_idx, owner, hp, cfg.seed, quiet)
    head.load_state_dict(best["state"])
    model.eval()
    radius = copy_radius(head, feats, val_idx) if len(val_idx) else None
    train_seconds = time.perf_counter() - t0
    meta = {
        "dataset": f"folder:{folder}",
        "protocol": {"kind": "copies", "files": n_files, "instances": len(instances), "views": int(hp["views"]),
                     "val_files": int(len(val_files)), "val_instances": int(len(val_idx)), "seed": cfg.seed,
                     "description": f"held-out edited views of {len(val_files)} of {n_files} files query the clean views of all {len(instances)} instances"},
        "train_config": {**asdict(cfg), "hparams": hp, "threads": threads, "device": "cpu"},
        "history": history,
        "selected_step": best["step"],
        "val_copy_top1": best["score"],
        "copy_radius": radius,  # 95% of the held-out edited views (1-3 chained edits) lie within it
        "train_seconds": train_seconds,
        "complete": True,
        "backbone_licence": LICENCE,
    }
    save_checkpoint(out_path, model, preprocess, meta=meta)
    _log(quiet, f"[train] done in {train_seconds:.0f}s; kept step {best['step']} (held-out copy top-1 {best['score']:.4f}, 95% of its edited copies within distance {radius}); wrote {out_path}")
    return model, meta


def _train_head(head: HashHead, feats: torch.Tensor, train_idx, val_idx, owner, hp: dict, seed: int, quiet: bool):
    steps, batch, views = int(hp["steps"]), min(int(hp["batch"]), len(train_idx)), feats.shape[1]
    opt = torch.optim.AdamW(head.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]))
    drop = nn.Dropout(float(hp["dropout"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(hp["lr"]), total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    train_t = torch.from_numpy(train_idx)
    history, best = [], {"score": -1.0, "step": 0, "state": None}
    sums: dict[str, float] = {}
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        head.train()
        pick = train_t[torch.randperm(len(train_t), generator=gen)[:batch]]
        va = torch.randint(0, views, (batch,), generator=gen)
        vb = (va + torch.randint(1, views, (batch,), generator=gen)) % views  # a different view
        u_a = torch.tanh(head(drop(feats[pick, va])))
        u_b = torch.tanh(head(drop(feats[pick, vb])))
        loss, logs = code_contrastive_loss(u_a, u_b, hp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        for k, v in {"loss": float(loss), **logs}.items():
            sums[k] = sums.get(k, 0.0) + v
        if step % int(hp["eval_every"]) == 0 or step == steps:
            head.eval()
            every = int(hp["eval_every"]) if step % int(hp["eval_every"]) == 0 else step % int(hp["eval_every"])
            score = copy_top1(head, feats, val_idx, owner) if len(val_idx) else 0.0
            rec = {"step": step, **{k: v / every for k, v in sums.items()}, "val_copy_top1": score, "seconds": time.perf_counter() - t0}
            history.append(rec)
            sums = {}
            if score >= best["score"]:
                best = {"score": score, "step": step, "state": {k: v.detach().clone() for k, v in head.state_dict().items()}}
            _log(quiet, f"  step {step}/{steps} loss {rec['loss']:.4f} contrast {rec['contrast']:.4f} quant {rec['quant']:.3f} "
                        f"balance {rec['balance']:.4f} decorr {rec['decorr']:.4f} val copy top-1 {score:.4f} {rec['seconds']:.0f}s")
    return history, best


def _no_engine_loss(model, batch, ctx):  # pragma: no cover - the engine never runs this method
    raise ArgumentError(f"{NAME} trains through its own procedure (hashtool train --method {NAME} --data FOLDER)")


register_method(
    Method(
        name=NAME,
        loss=_no_engine_loss,
        phases=lambda hp: [],
        make_config=lambda bits, c, h, w, hp: EditContrastiveConfig(bits=bits, height=h, width=w, hidden=int(hp["hidden"])),
        hparams=dict(HPARAMS),
        mean=MEAN,
        std=STD,
        summary="a contrastive hash head on a frozen EfficientNet-Lite0, trained on edited copies of any photo folder (ours)",
        fit=fit,
    )
)

