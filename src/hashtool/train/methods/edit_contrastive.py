"""``edit-contrastive``: self-supervised hash codes for photos that survive the edits people make.

Our method (no paper's configuration to follow): a hash head on a frozen ImageNet backbone
(:mod:`hashtool.train.backbone`, EfficientNet-Lite0), trained without labels so that a photo and its edited
copies get nearby codes and different photos far-apart ones, with balanced, decorrelated bits.

Data. Any folder of images (``--data ~/Pictures``): every image is an *instance*; an image whose short side is
at least ``quadrant_side`` pixels also gives its four quadrants as further instances (distinct content
that shares a photo's colours and style: hard negatives, and more instances than files). Each instance, kept at
``work_side`` pixels on the long side, gets ``views`` views: the clean image and ``views - 1`` edited copies
(:func:`hashtool.edits.random_edit`: one to three of every edit kind, chained). Every view goes through the
runtime's own preprocessing (:func:`hashtool.files.images.convert_image`) and the frozen backbone once, run by
onnxruntime (3 to 5 times faster than PyTorch eager here), in one streamed pass over the files
(:func:`stream_features`: :data:`CHUNK_FILES` files at a time, each decoded once, their pixels dropped once their
views have been through the backbone). Only the pooled 1280-d features stay, as float16 (``views x 2.5`` KiB per
instance: 30 KiB at 12 views, 60 KiB at 24); the head then trains on them, thousands of steps a minute on a CPU.

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
included, as distractors) and the step with the best tie-aware top-1 rate is kept. With more than
:data:`MAX_SELECT_INSTANCES` held-out instances, a seeded sample of that many selects the step (the radius
stored in the checkpoint is measured on all of them); queries go in blocks, so the memory stays bounded.

Choices: the backbone stays frozen (fine-tuning it costs 15-20x the time on a CPU and the cached features would
have to be recomputed every step); the head is ``Linear(1280, hidden) -> ReLU -> Linear(hidden, bits)`` on
features standardised by their training mean and standard deviation (stored as buffers, so export includes
them); ``hidden = 0`` gives a linear head.

Input (measured on ``benchmarks/bench_photos.py``'s held-out set, RESULTS.md "Photo encoder"): ``resize`` is
"trim-stretch" (flat letterbox bars and frames are cut off first: letterboxed copies found first 0.93 -> 1.00);
``image_size`` 160 (the encoder runs about 1.6x faster than at 224 and found more easy copies); the
:class:`InputFilter` keeps ``saturation`` 0.5 of each pixel's colour and blurs by a Gaussian of ``blur`` 1 pixel
(blurred copies 0.94 -> 0.99; full desaturation found every grey copy but cost the hard edits 4 points).
``views`` 24 (was 12 until the pass streamed): on the same set, hard edits found first 93.5% -> 95.1% (quarter
turns 0.77 -> 0.85), easy ones 98.5% -> 98.9% (before the benchmark stopped counting a second copy of the same
picture as a miss); it doubles the backbone pass and the feature memory (training on 877 photos: 303 s -> 371 s).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from hashtool.edits import parse_weights
from hashtool.errors import ArgumentError, DatasetError, ModelError
from hashtool.preprocess import RESIZE_POLICIES, Preprocess
from hashtool.train.backbone import BACKBONE_BATCH, LICENCE, Backbone, backbone_features, backbone_session
from hashtool.train.contrastive import code_contrastive_loss
from hashtool.train.methods import Method, get_method, register_method
from hashtool.train.models import HashConfig, HashModel, register_model

NAME = "edit-contrastive"
MEAN = (0.5, 0.5, 0.5)  # EfficientNet-Lite: x / 127.5 - 1
STD = (0.5, 0.5, 0.5)
NORMAL_SPREAD = 0.5  # InputFilter(normalise): the standard deviation every image gets, about a photo's at [-1, 1]
NORMAL_EPS = 1e-3  # keeps a flat image finite (it stays flat)

HPARAMS = {
    "views": 24,
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
            # separable: a pass along the rows, then one along the columns (the same sums as the 2-D kernel, up to
            # rounding; in onnxruntime 0.35 against 0.85 ms an image at 160 px, where the 7x7 was 11% of inference)
            self.register_buffer("kernel_w", g.view(1, 1, 1, -1).expand(3, 1, 1, -1).contiguous(), persistent=False)
            self.register_buffer("kernel_h", g.view(1, 1, -1, 1).expand(3, 1, -1, 1).contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.saturation < 1.0:
            grey = (x * self.luma).sum(dim=1, keepdim=True)
            x = grey + self.saturation * (x - grey)
        if self.radius:
            r = self.radius
            x = nn.functional.conv2d(nn.functional.pad(x, (r, r, 0, 0), mode="reflect"), self.kernel_w, groups=3)
            x = nn.functional.conv2d(nn.functional.pad(x, (0, 0, r, r), mode="reflect"), self.kernel_h, groups=3)
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

CHUNK_FILES = 32  # files decoded, edited and run through the backbone together (see stream_features)
MIN_FILES = 4  # readable images a folder needs
PROGRESS_SECONDS = 5.0  # at most one progress line on stderr this often (and one when the pass ends)


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def file_instances(img, work_side: int, quadrant_side: int) -> list:
    """The instances of one decoded RGB image: the image, and its four quadrants when its short side is at least
    ``quadrant_side`` pixels, each shrunk to at most ``work_side`` pixels on the long side."""
    from PIL import Image

    crops = [img]
    if min(img.size) >= quadrant_side:
        w, h = img.size
        crops += [img.crop(box) for box in ((0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h), (w // 2, h // 2, w, h))]
    out = []
    for crop in crops:
        crop = crop.copy()
        crop.thumbnail((work_side, work_side), Image.Resampling.BILINEAR)
        out.append(crop)
    return out


def header_instances(path, quadrant_side: int) -> int:
    """How many instances ``path`` will give (:func:`file_instances`), from its header, without decoding: 5 for an
    image whose short side is at least ``quadrant_side``, else 1 (also when the header cannot be read: decoding
    reports that file). The short side does not change with EXIF orientation. Never opens a named pipe."""
    import os
    import stat

    from PIL import Image

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return 1
    with os.fdopen(fd, "rb") as f:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return 1
            with Image.open(f) as img:
                return 5 if min(img.size) >= quadrant_side else 1
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
            return 1


def instance_views(img, preprocess: Preprocess, views: int, seed: int, index: int, max_edits: int, weights=None) -> np.ndarray:
    """uint8 (views, H, W, 3) of the instance ``img`` whose global index is ``index``: view 0 clean, view ``v``
    an edited copy drawn from ``default_rng([seed, index, v])``. ``weights``: edit name -> relative chance of
    being drawn (see :func:`hashtool.edits.random_edit`)."""
    from hashtool.edits import random_edit
    from hashtool.files.images import convert_image

    out = np.empty((views, *preprocess.shape_hwc), dtype=np.uint8)
    for v in range(views):
        view = img
        if v:
            view, _ = random_edit(img, np.random.default_rng([seed, index, v]), max_edits=max_edits, weights=weights)
        out[v] = convert_image(view, preprocess)
    return out


@dataclass
class FeaturePass:
    """What :func:`stream_features` returns."""

    feats: np.ndarray  # float16 (instances, views, dim): the backbone's pooled features of every view
    owner: np.ndarray  # int64 (instances,): index into ``files`` of the file each instance comes from
    files: list  # the readable files, in the order walked
    skipped: int  # unreadable files (each logged with its reason)
    seconds: float  # wall time of the pass
    edit_seconds: float  # decoding and making views, summed over chunks (overlaps the backbone)


@dataclass
class _Chunk:
    files: list  # readable files of the chunk
    owner: np.ndarray  # (m,) index into ``files``
    views: np.ndarray  # uint8 (m, views, H, W, 3)
    skipped: list  # (path, reason)
    seconds: float


def _decode_instances(path, work_side: int, quadrant_side: int):
    """(instances of ``path``, None), or (None, the reason it cannot be read)."""
    from hashtool.errors import ImageError
    from hashtool.files.images import open_image
    from hashtool.photosets import flatten_rgb

    try:
        with open_image(path) as img:
            img = flatten_rgb(img)
    except (ImageError, OSError) as exc:
        return None, str(exc)
    return file_instances(img, work_side, quadrant_side), None


def _make_chunk(paths, first: int, pool, preprocess: Preprocess, hp: dict, seed: int, weights) -> _Chunk:
    """Decode ``paths`` and make the views of their instances; ``first`` is the global index of the first one."""
    t0 = time.perf_counter()
    work, qside, views, max_edits = int(hp["work_side"]), int(hp["quadrant_side"]), int(hp["views"]), int(hp["max_edits"])
    files, owner, instances, skipped = [], [], [], []
    for path, (crops, reason) in zip(paths, pool.map(lambda p: _decode_instances(p, work, qside), paths)):
        if crops is None:
            skipped.append((path, reason))
            continue
        owner += [len(files)] * len(crops)
        files.append(path)
        instances += crops
    out = np.empty((len(instances), views, *preprocess.shape_hwc), dtype=np.uint8)

    def one(j):
        out[j] = instance_views(instances[j], preprocess, views, seed, first + j, max_edits, weights)

    list(pool.map(one, range(len(instances))))
    return _Chunk(files, np.asarray(owner, dtype=np.int64), out, skipped, time.perf_counter() - t0)


def _run_whole_batches(sess, carry: np.ndarray, new: np.ndarray, preprocess: Preprocess, batch: int, final: bool):
    """Features of ``carry`` + ``new`` (uint8 views, in order) in whole batches of ``batch`` (every view when
    ``final``), and the views left over for the next call. So the session sees the same batches of the global
    view sequence whatever the chunks are."""
    parts, start = [], 0
    if len(carry):
        start = min(batch - len(carry), len(new))
        carry = np.concatenate([carry, new[:start]])
        if len(carry) < batch and not final:
            return parts, carry
        parts.append(backbone_features(sess, carry, preprocess, batch))
    stop = len(new) if final else start + (len(new) - start) // batch * batch
    if stop > start:
        parts.append(backbone_features(sess, new[start:stop], preprocess, batch))
    return parts, new[stop:].copy()


def stream_features(paths, sess, dim: int, preprocess: Preprocess, hp: dict, seed: int, threads: int, quiet: bool = False,
                    chunk_files: int = CHUNK_FILES, batch: int = BACKBONE_BATCH) -> FeaturePass:
    """The backbone features of every view of every instance of ``paths``, in one streamed pass.

    The files go in chunks of ``chunk_files``: each file is decoded once (:func:`hashtool.files.images.open_image`,
    transparency over white), gives its instances (:func:`file_instances`), each instance its ``hp["views"]``
    views (:func:`instance_views`, seeded by the instance's global index, so the chunking changes nothing), and
    the views go through ``sess`` (a :func:`backbone_session`) in batches of ``batch`` along the global view order
    (the same batches whatever ``chunk_files``). Only the pooled features stay, as **float16** (the head
    standardises them; training converts each batch to float32): ``views x dim x 2`` bytes per instance, 30 KiB at
    12 views and 60 KiB at 24 for the 1280-d backbone. A background thread makes the next chunk's views while the
    backbone runs on this one (``threads`` workers decode and edit), so the views of about two chunks, and up to
    ``threads`` images decoded in full, are alive at a time, whatever the folder's size.

    Unreadable files are logged by path and reason and skipped (no instance; ``owner`` indexes the readable ones).
    Before the pass the feature memory is logged, from the instance count read from the image headers
    (:func:`header_instances`); progress goes to stderr every :data:`PROGRESS_SECONDS`; ``quiet`` silences both.
    """
    from concurrent.futures import ThreadPoolExecutor

    if chunk_files < 1 or batch < 1:
        raise ArgumentError(f"chunk_files and batch must be positive, got {chunk_files} and {batch}")
    views = int(hp["views"])
    weights = parse_weights(str(hp["edit_weights"])) if hp["edit_weights"] else None
    t0 = time.perf_counter()
    expected = sum(header_instances(p, int(hp["quadrant_side"])) for p in paths)
    view_bytes = int(np.prod(preprocess.shape_hwc))
    alive = min(len(paths), 2 * chunk_files)  # files whose views are alive at a time: this chunk's and the next's
    pixels = expected / max(1, len(paths)) * alive * views * view_bytes
    _log(quiet, f"[train] {len(paths)} image files -> {expected} instances by their headers (quadrants of images >= {hp['quadrant_side']} px) "
                f"x {views} views: {expected * views * dim * 2 / 2**20:.1f} MiB of float16 features for the whole run, "
                f"and about {pixels / 2**20:.0f} MiB of views at a time (chunks of {chunk_files} files)")
    feats = np.empty((max(1, expected), views, dim), dtype=np.float16)
    owner = np.empty(max(1, expected), dtype=np.int64)
    files, skipped, n, rows, edit_s = [], 0, 0, 0, 0.0
    carry = np.empty((0, *preprocess.shape_hwc), dtype=np.uint8)
    chunks = [paths[s : s + chunk_files] for s in range(0, len(paths), chunk_files)]
    last_log = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool, ThreadPoolExecutor(max_workers=1) as ahead:
        pending = ahead.submit(_make_chunk, chunks[0], 0, pool, preprocess, hp, seed, weights) if chunks else None
        for k in range(len(chunks)):
            chunk = pending.result()
            m = len(chunk.views)
            pending = ahead.submit(_make_chunk, chunks[k + 1], n + m, pool, preprocess, hp, seed, weights) if k + 1 < len(chunks) else None
            for path, reason in chunk.skipped:  # hashtool's image errors start with the path
                _log(quiet, f"[train] skipped {reason if reason.startswith(str(path)) else f'{path}: {reason}'}")
            skipped += len(chunk.skipped)
            edit_s += chunk.seconds
            if n + m > len(feats):  # more instances than the headers said (a file changed meanwhile)
                feats, owner = _grown(feats, n + m), _grown(owner, n + m)
            owner[n : n + m] = len(files) + chunk.owner
            files += chunk.files
            n += m
            parts, carry = _run_whole_batches(sess, carry, chunk.views.reshape(-1, *preprocess.shape_hwc), preprocess, batch, final=pending is None)
            del chunk
            flat = feats.reshape(-1, feats.shape[2])
            for f in parts:
                if f.shape[1] != dim:
                    raise ModelError(f"the backbone session gives {f.shape[1]}-d features, expected {dim}")
                flat[rows : rows + len(f)] = f
                rows += len(f)
            now = time.perf_counter()
            if now - last_log >= PROGRESS_SECONDS or pending is None:
                last_log = now
                done = sum(len(c) for c in chunks[: k + 1])
                rate = rows / max(now - t0, 1e-9)
                left = (len(paths) - done) * (n * views / max(1, done)) / max(rate, 1e-9)
                _log(quiet, f"[train] features: {done}/{len(paths)} files, {n} instances, {rows} views ({rate:.0f} views/s), about {left:.0f}s left")
    return FeaturePass(feats[:n], owner[:n], files, skipped, time.perf_counter() - t0, edit_s)


def _grown(arr: np.ndarray, need: int) -> np.ndarray:
    out = np.empty((max(need, 2 * len(arr)), *arr.shape[1:]), dtype=arr.dtype)
    out[: len(arr)] = arr
    return out


# -- training -------------------------------------------------------------------------------------


MAX_SELECT_INSTANCES = 2000  # held-out instances whose views select the step (a seeded sample when there are more)
QUERY_BLOCK_ENTRIES = 1 << 22  # query x database distances per block in copy_top1 (16 MiB of int32)
CODE_BLOCK = 4096  # feature rows turned into codes at a time (float16 -> float32 per block)


def _packed_codes(head: HashHead, feats: torch.Tensor) -> np.ndarray:
    from hashtool.codes import pack

    with torch.no_grad():
        return pack(head(feats.float()).numpy())


def view_codes(head: HashHead, feats: torch.Tensor, idx: np.ndarray, view) -> np.ndarray:
    """Packed codes of the views ``view`` (an index or a slice) of the instances ``idx`` of ``feats`` (n, views, dim),
    instance by instance, about :data:`CODE_BLOCK` feature rows (converted to float32) at a time."""
    per = len(range(*view.indices(feats.shape[1]))) if isinstance(view, slice) else 1
    step = max(1, CODE_BLOCK // max(1, per))
    idx = np.asarray(idx, dtype=np.int64)
    out = [np.zeros((0, head.mlp[-1].out_features // 8), np.uint8)]
    for s in range(0, len(idx), step):
        part = feats[torch.from_numpy(idx[s : s + step]), view]
        out.append(_packed_codes(head, part.reshape(-1, feats.shape[2])))
    return np.concatenate(out)


def selection_sample(val_idx: np.ndarray, seed: int, cap: int = MAX_SELECT_INSTANCES) -> np.ndarray:
    """The held-out instances model selection uses: all of ``val_idx``, or a seeded sample of ``cap`` of them
    (sorted) when there are more, so that each evaluation costs at most ``cap x (views - 1)`` queries."""
    val_idx = np.asarray(val_idx, dtype=np.int64)
    if len(val_idx) <= cap:
        return val_idx
    return np.sort(np.random.default_rng([seed, 12]).choice(val_idx, size=cap, replace=False))


def copy_hits(queries: np.ndarray, target: np.ndarray, db: np.ndarray, owner: np.ndarray, block_entries: int = QUERY_BLOCK_ENTRIES) -> np.ndarray:
    """Tie-aware top-1 (:func:`hashtool.evaluate.tie_aware_hits`) of each packed query code against the packed
    ``db`` codes, the query's true item being row ``target`` of ``db``; rows of ``db`` from the target's own file
    (same ``owner``) other than the target do not compete. Queries go in blocks of ``block_entries // len(db)``,
    so the memory is bounded whatever the number of queries. Returns (nq,) float64."""
    from hashtool.codes import to_words
    from hashtool.evaluate import hamming_block, tie_aware_hits

    target = np.asarray(target, dtype=np.int64)
    if not len(target):
        return np.zeros(0)
    db_words, q_words = to_words(db), to_words(queries)
    rows = max(1, int(block_entries) // max(1, len(db)))
    out = [np.zeros(0)]
    for s in range(0, len(q_words), rows):
        t = target[s : s + rows]
        valid = owner[None, :] != owner[t][:, None]  # other crops of the query's own file do not compete
        out.append(tie_aware_hits(hamming_block(q_words[s : s + rows], db_words), t, ks=(1,), valid=valid)["top1"])
    return np.concatenate(out)


def copy_top1(head: HashHead, feats: torch.Tensor, val_idx: np.ndarray, owner: np.ndarray, block_entries: int = QUERY_BLOCK_ENTRIES) -> float:
    """Tie-aware top-1 of the edited views of the held-out instances ``val_idx`` against the clean views of every
    instance (:func:`copy_hits`). ``feats`` (n, views, dim), any float dtype."""
    db = view_codes(head, feats, np.arange(len(feats)), 0)
    q = view_codes(head, feats, val_idx, slice(1, None))
    return float(copy_hits(q, np.repeat(val_idx, feats.shape[1] - 1), db, owner, block_entries).mean())


def copy_radius(head: HashHead, feats: torch.Tensor, val_idx: np.ndarray, recall: float = 0.95) -> int:
    """The Hamming radius within which ``recall`` of the held-out edited views lie from their clean view."""
    from hashtool.codes import hamming
    from hashtool.evaluate import radius_for_recall

    clean = view_codes(head, feats, val_idx, 0)
    edited = view_codes(head, feats, val_idx, slice(1, None))
    return int(radius_for_recall(hamming(edited, np.repeat(clean, feats.shape[1] - 1, axis=0)), recall))


def feature_stats(feats: np.ndarray, idx: np.ndarray, block: int = CODE_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (unbiased) per feature over every view of the instances ``idx`` of ``feats``
    (n, views, dim), float32, accumulated in float64 a block of instances at a time (no float32 copy of them all)."""
    dim, count = feats.shape[2], len(idx) * feats.shape[1]
    total = np.zeros(dim)
    for s in range(0, len(idx), block):
        total += feats[idx[s : s + block]].reshape(-1, dim).sum(axis=0, dtype=np.float64)
    mean = total / count
    squares = np.zeros(dim)
    for s in range(0, len(idx), block):
        squares += np.square(feats[idx[s : s + block]].reshape(-1, dim).astype(np.float64) - mean).sum(axis=0)
    return mean.astype(np.float32), np.sqrt(squares / max(1, count - 1)).astype(np.float32)


def fit(cfg, folder, out_path, quiet: bool = False):
    """Train ``edit-contrastive`` on the images under ``folder``; writes the checkpoint to ``out_path``.

    ``cfg`` is a :class:`hashtool.train.engine.TrainConfig` (method, bits, seed, threads, hparams, lr,
    batch_size); returns ``(model, meta)`` like the engine.
    """
    from hashtool.codes import check_nbits
    from hashtool.files.images import find_images
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

    files = find_images(folder)
    if not files:
        raise DatasetError(f"{folder}: no images found (looked for JPEG, PNG, WebP, BMP, GIF and TIFF files)")
    if len(files) < MIN_FILES:
        raise DatasetError(f"{folder}: {len(files)} image file(s); {NAME} needs at least {MIN_FILES} (and learns better from hundreds)")
    config = EditContrastiveConfig(bits=cfg.bits, height=size, width=size, hidden=int(hp["hidden"]),
                                   saturation=float(hp["saturation"]), blur=float(hp["blur"]),
                                   normalise=bool(int(hp["normalise"])))
    model = EditContrastiveModel(config)
    model.backbone.load_pretrained()
    session = backbone_session(nn.Sequential(model.filter, model.backbone), preprocess, threads)
    fp = stream_features(files, session, model.backbone.dim, preprocess, hp, cfg.seed, threads, quiet)
    del session
    owner, files = fp.owner, fp.files
    if len(files) < MIN_FILES:
        raise DatasetError(f"{folder}: {len(files)} readable image(s); {NAME} needs at least {MIN_FILES} (and learns better from hundreds)")
    feats = torch.from_numpy(fp.feats)
    _log(quiet, f"[train] {len(files)} images ({fp.skipped} unreadable) -> {len(feats)} instances x {hp['views']} views in {fp.seconds:.0f}s "
                f"({len(feats) * int(hp['views']) / max(fp.seconds, 1e-9):.0f} views/s; decoding and edits {fp.edit_seconds:.0f}s, "
                f"in a thread beside the backbone); features {fp.feats.nbytes / 2**20:.1f} MiB (float16)")

    rng = np.random.default_rng([cfg.seed, 11])
    n_files = len(files)
    val_files = rng.permutation(n_files)[: max(1, int(round(float(hp["val_share"]) * n_files)))]
    is_val = np.isin(owner, val_files)
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    select_idx = selection_sample(val_idx, cfg.seed)
    head = model.head
    mean, std = feature_stats(fp.feats, train_idx)
    head.feat_mean.copy_(torch.from_numpy(mean))
    head.feat_std.copy_(torch.from_numpy(std) + 1e-4)
    history, best = _train_head(head, feats, train_idx, select_idx, owner, hp, cfg.seed, quiet)
    head.load_state_dict(best["state"])
    model.eval()
    radius = copy_radius(head, feats, val_idx) if len(val_idx) else None
    train_seconds = time.perf_counter() - t0
    meta = {
        "dataset": f"folder:{folder}",
        "protocol": {"kind": "copies", "files": n_files, "instances": len(feats), "views": int(hp["views"]),
                     "val_files": int(len(val_files)), "val_instances": int(len(val_idx)), "selection_instances": int(len(select_idx)),
                     "seed": cfg.seed, "feature_dtype": "float16",
                     "description": f"held-out edited views of {len(val_files)} of {n_files} files query the clean views of all {len(feats)} instances"
                                    + (f" (model selection on a seeded {len(select_idx)} of the {len(val_idx)} held-out instances)" if len(select_idx) < len(val_idx) else "")},
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


def head_optimiser(head: nn.Module, hp: dict, steps: int):
    """AdamW at ``hp["lr"]`` with ``hp["weight_decay"]``, under a one-cycle schedule over ``steps`` steps (10%
    warm-up): the optimiser of every head trained on cached backbone features. Returns (optimiser, scheduler)."""
    opt = torch.optim.AdamW(head.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]))
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(hp["lr"]), total_steps=steps, pct_start=0.1)


def _train_head(head: HashHead, feats: torch.Tensor, train_idx, val_idx, owner, hp: dict, seed: int, quiet: bool):
    steps, batch, views = int(hp["steps"]), min(int(hp["batch"]), len(train_idx)), feats.shape[1]
    opt, sched = head_optimiser(head, hp, steps)
    drop = nn.Dropout(float(hp["dropout"]))
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
        u_a = torch.tanh(head(drop(feats[pick, va].float())))
        u_b = torch.tanh(head(drop(feats[pick, vb].float())))
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
        data="folder",
    )
)

