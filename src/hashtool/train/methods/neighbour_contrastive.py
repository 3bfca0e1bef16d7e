"""``neighbour-contrastive``: unsupervised hash codes whose positives are each image's nearest neighbours in the
feature space of a frozen ImageNet backbone.

Our method, for any dataset the engine loads (``fashion-mnist``, ``mnist-5k``, ``cifar10:DIR``, IDX folders,
image folders). No label of the dataset is read for training. The backbone (:mod:`hashtool.train.backbone`,
EfficientNet-Lite0) is pretrained, supervised, on ImageNet: the standard setting of unsupervised deep hashing
papers (CIBHash and others start from an ImageNet VGG-16). The fairer baseline is therefore ITQ on the same
backbone features, not ITQ on pixels; ``benchmarks/quality.py`` reports both ("itq-backbone").

Model (``encode`` is the whole chain, so ``hashtool export`` writes an encoder that takes the dataset's own
images): an :class:`InputAdapter` (the dataset's normalisation undone and the pixels mapped to [-1, 1], resized
bilinearly to ``image_size``, grey copied to 3 channels), the frozen backbone (pooled 1280-d features), and
edit-contrastive's :class:`~hashtool.train.methods.edit_contrastive.HashHead` on the features standardised by
their training mean and standard deviation, then tanh; bits are ``u >= 0``.

Training (:func:`fit`), through its own procedure on the engine's splits:

1. the features of the database (the training and validation images) are computed once, by onnxruntime
   (:func:`hashtool.train.backbone.backbone_session`; PyTorch eager is 11x slower here);
2. the ``neighbours`` nearest training images of every training image, by cosine of the standardised features
   projected on their top ``knn_dims`` principal directions (0: all dimensions), by :func:`knn` (blocked,
   memory-bounded, exact, ties to the lower index);
3. ``steps`` steps of ``batch`` anchors drawn uniformly, each with one of its neighbours drawn uniformly as the
   positive (:func:`neighbour_pairs`), the other pairs of the batch as negatives: the contrastive loss on codes
   shared with ``contrastive`` and ``edit-contrastive`` (:func:`hashtool.train.contrastive.code_contrastive_loss`,
   on the tanh outputs) at ``temperature``, with ``quant``, ``balance`` and ``decorr`` terms; AdamW (``lr``,
   ``weight_decay``) under a one-cycle schedule. The last step is kept; the validation mAP is logged at the end
   when the split has labels.

Why (the lead's measurements, Fashion-MNIST, the protocol of ``benchmarks/quality.py``, 32 bits): ITQ on pixels
0.472; ITQ on the 96 px backbone features 0.537 (64 px: 0.508); this head with neighbours as positives 0.642.
The neighbours agree with the label 82% of the time at K = 10. The temperature matters: 0.5 gave 0.528, 1.0 0.620,
2.0 0.642. A low temperature pushes apart every pair but the positive, so images of the same class, which are
many in a batch, are spread over the cube and the whole-ranking mAP falls; a high one asks only that neighbours be
nearer than the rest. Measured with this code (``benchmarks/RESULTS.md``, same run as ITQ, defaults, 2 threads):
0.596 / 0.638 / 0.650 at 16 / 32 / 64 bits against ITQ on pixels 0.449 / 0.472 / 0.477 and ITQ on the same
backbone features 0.514 / 0.543 / 0.555; 191 to 212 s of training on a quiet machine (the feature pass about half).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hashtool.errors import ArgumentError, DatasetError, ModelError
from hashtool.train.backbone import LICENCE, Backbone, backbone_features, backbone_session
from hashtool.train.contrastive import code_contrastive_loss
from hashtool.train.methods import Method, get_method, register_method
from hashtool.train.methods.edit_contrastive import HashHead, feature_stats, head_optimiser
from hashtool.train.models import HashConfig, HashModel, register_model

NAME = "neighbour-contrastive"
MEAN, STD = (0.5,), (0.5,)  # the dataset images' normalisation (the adapter undoes it)
KNN_BLOCK_ENTRIES = 1 << 24  # similarities held at a time by knn (64 MiB of float32)
FEATURE_CHUNK = 4096  # images per progress step of the feature pass
LOG_EVERY = 250  # steps between progress lines

HPARAMS = {
    "image_size": 96,
    "neighbours": 10,
    "knn_dims": 256,
    "temperature": 2.0,
    "steps": 1000,
    "batch": 512,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "quant": 0.01,
    "balance": 0.1,
    "decorr": 0.1,
    "hidden": 0,
    "straight_through": 0,
}


@dataclass
class NeighbourContrastiveConfig(HashConfig):
    in_channels: int = 1
    height: int = 28
    width: int = 28
    image_size: int = 96  # the backbone's input side
    backbone: str = "efficientnet-lite0"
    hidden: int = 0
    mean: tuple = MEAN  # the normalisation of the model's input (per channel, or one value for all)
    std: tuple = STD


class InputAdapter(nn.Module):
    """Normalised dataset images (n, C, H, W), C = 1 or 3 -> the backbone's input (n, 3, size, size) in [-1, 1].

    Per channel c: ``x * std[c] + mean[c]`` is the pixel / 255 (the normalisation undone), times 2 minus 1 maps it to
    [-1, 1], folded into one affine map ``x * 2 std + (2 mean - 1)``; then a bilinear resize to ``size`` x ``size``
    (``align_corners=False``, no antialiasing; skipped when the images are that size) and a grey channel copied to
    three. Part of the exported graph."""

    def __init__(self, channels: int, height: int, width: int, size: int, mean, std):
        super().__init__()
        if channels not in (1, 3):
            raise ModelError(f"{NAME} takes images of 1 or 3 channels, got {channels}")
        mean, std = (tuple(float(v) for v in t) for t in (mean, std))
        mean, std = (t * channels if len(t) == 1 else t for t in (mean, std))
        if len(mean) != channels or len(std) != channels:
            raise ModelError(f"{NAME}: mean {mean} and std {std} need {channels} values")
        self.channels, self.size = channels, int(size)
        self.resize = (int(height), int(width)) != (self.size, self.size)
        self.register_buffer("scale", (2 * torch.tensor(std)).view(1, channels, 1, 1), persistent=False)
        self.register_buffer("shift", (2 * torch.tensor(mean) - 1).view(1, channels, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale + self.shift
        if self.resize:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x.expand(-1, 3, -1, -1) if self.channels == 1 else x


@register_model(NAME, NeighbourContrastiveConfig)
class NeighbourContrastiveModel(HashModel):
    binarize = "sign"

    def __init__(self, config: NeighbourContrastiveConfig):
        super().__init__(config)
        self.adapter = InputAdapter(config.in_channels, config.height, config.width, config.image_size, config.mean, config.std)
        self.backbone = Backbone(config.backbone)
        self.head = HashHead(self.backbone.dim, config.hidden, config.bits)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features of normalised dataset images (what the head sees)."""
        return self.backbone(self.adapter(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(self.features(x)))


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# -- features and neighbours ------------------------------------------------------------------------


class FeatureExtractor:
    """The frozen front of a model (adapter and backbone) as one onnxruntime session, for uint8 NHWC images of
    the dataset (``preprocess``: the model's input)."""

    def __init__(self, model: NeighbourContrastiveModel, preprocess, threads: int):
        self.preprocess = preprocess
        self.session = backbone_session(nn.Sequential(model.adapter, model.backbone), preprocess, threads)

    def __call__(self, images: np.ndarray, quiet: bool = True, what: str = "images") -> np.ndarray:
        """float32 (n, dim) features of ``images``, with a progress line per :data:`FEATURE_CHUNK` images."""
        t0, out = time.perf_counter(), []
        for s in range(0, len(images), FEATURE_CHUNK):
            out.append(backbone_features(self.session, images[s : s + FEATURE_CHUNK], self.preprocess))
            done = min(len(images), s + FEATURE_CHUNK)
            rate = done / max(time.perf_counter() - t0, 1e-9)
            _log(quiet, f"  features of the {what}: {done}/{len(images)} ({rate:.0f} images/s)")
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def backbone_extractor(ds, image_size: int, threads: int) -> FeatureExtractor:
    """A :class:`FeatureExtractor` with the pretrained backbone for dataset ``ds`` at ``image_size`` (the method's
    own feature path; ``benchmarks/quality.py`` fits ITQ on it)."""
    from hashtool.train.engine import dataset_preprocess

    preprocess = dataset_preprocess(get_method(NAME), ds)
    model = NeighbourContrastiveModel(_config(ds, preprocess, 8, int(image_size), 0))
    model.backbone.load_pretrained()
    return FeatureExtractor(model, preprocess, threads)


def knn(x: torch.Tensor, k: int, block_entries: int = KNN_BLOCK_ENTRIES) -> torch.Tensor:
    """int64 (n, k): for each row i of ``x`` (n, d), the k rows j != i with the largest dot product ``x_i . x_j``,
    the largest first, ties to the lower index j (rows of unit length: cosine neighbours).

    Blocked: ``block_entries // n`` query rows at a time against all n rows, so at most about ``block_entries``
    similarities are held (never the n x n matrix). Deterministic: exact order by (similarity descending, index
    ascending) among the candidates at or above each row's k-th largest similarity."""
    n = len(x)
    if not 1 <= k < n:
        raise ArgumentError(f"--hp neighbours={k}: needs 1 <= neighbours < the {n} training images")
    rows = max(1, int(block_entries) // n)
    out = torch.empty(n, k, dtype=torch.int64)
    steps = torch.arange(k)
    for s in range(0, n, rows):
        sim = x[s : s + rows] @ x.T
        b = len(sim)
        sim[torch.arange(b), torch.arange(s, s + b)] = float("-inf")  # not its own neighbour
        kth = sim.topk(k, dim=1).values[:, -1:]
        r, c = (sim >= kth).nonzero(as_tuple=True)  # row-major: by row, then by index
        order = torch.argsort(-sim[r, c], stable=True)  # by similarity, ties keeping the index order
        order = order[torch.argsort(r[order], stable=True)]  # then by row
        first = torch.cumsum(torch.bincount(r, minlength=b), 0) - torch.bincount(r, minlength=b)
        out[s : s + b] = c[order][first[:, None] + steps[None, :]]
    return out


def knn_space(feats: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, dims: int) -> torch.Tensor:
    """Unit-length rows of the standardised features, projected first on their top ``dims`` principal directions
    (:func:`hashtool.baselines.pca`; 0 or at least the dimension: all of them), where :func:`knn` finds neighbours."""
    from hashtool.baselines import pca

    x = (feats - mean) / std
    if 0 < dims < x.shape[1]:
        centre, directions = pca(x.numpy(), dims)
        x = (x - torch.from_numpy(centre).float()) @ torch.from_numpy(directions).float()
    return F.normalize(x, dim=1)


def neighbour_pairs(neighbours: torch.Tensor, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(anchors, positives), int64 (batch,): anchors drawn uniformly (with replacement) from the rows of
    ``neighbours`` (n, k), each positive one of its anchor's k neighbours drawn uniformly."""
    n, k = neighbours.shape
    anchors = torch.randint(0, n, (batch,), generator=generator)
    return anchors, neighbours[anchors, torch.randint(0, k, (batch,), generator=generator)]


# -- training ---------------------------------------------------------------------------------------


def _config(ds, preprocess, bits: int, image_size: int, hidden: int) -> NeighbourContrastiveConfig:
    h, w, c = ds.shape_hwc
    return NeighbourContrastiveConfig(bits=bits, in_channels=c, height=h, width=w, image_size=image_size, hidden=hidden,
                                      mean=tuple(preprocess.mean), std=tuple(preprocess.std))


def train_head(head: HashHead, feats: torch.Tensor, neighbours: torch.Tensor, hp: dict, seed: int, quiet: bool = True) -> list:
    """Train ``head`` on the features ``feats`` (n, dim) of the training images with their ``neighbours`` (n, k)
    as positives (see the module docstring). Returns the history (mean logs per :data:`LOG_EVERY` steps)."""
    steps, batch = int(hp["steps"]), min(int(hp["batch"]), len(feats))
    if steps < 1 or batch < 2:
        raise ArgumentError(f"--hp steps={steps}, batch={batch}: need at least 1 step of at least 2 images")
    opt, sched = head_optimiser(head, hp, steps)
    gen = torch.Generator().manual_seed(seed)
    history, sums, t0 = [], {}, time.perf_counter()
    head.train()
    for step in range(1, steps + 1):
        anchors, positives = neighbour_pairs(neighbours, batch, gen)
        loss, logs = code_contrastive_loss(torch.tanh(head(feats[anchors])), torch.tanh(head(feats[positives])), hp)
        if not torch.isfinite(loss):
            raise ModelError(f"{NAME}: loss became {float(loss)} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        for key, v in {"loss": float(loss.detach()), **logs}.items():
            sums[key] = sums.get(key, 0.0) + v
        if step % LOG_EVERY == 0 or step == steps:
            count = step - (history[-1]["step"] if history else 0)
            rec = {"step": step, **{key: v / count for key, v in sums.items()}, "seconds": time.perf_counter() - t0}
            history.append(rec)
            sums = {}
            _log(quiet, f"  step {step}/{steps} loss {rec['loss']:.4f} contrast {rec['contrast']:.4f} quant {rec['quant']:.3f} "
                        f"balance {rec['balance']:.4f} decorr {rec['decorr']:.4f} {rec['seconds']:.0f}s")
    head.eval()
    return history


def head_codes(head: HashHead, feats) -> np.ndarray:
    """Packed codes (n, bits // 8) of backbone features (n, dim) through ``head`` (the sign rule of the model)."""
    from hashtool.train.data import real_to_packed

    with torch.no_grad():
        real = torch.cat([torch.tanh(head(torch.as_tensor(feats[s : s + 8192]))) for s in range(0, len(feats), 8192)])
    return real_to_packed(real.numpy(), NeighbourContrastiveModel.binarize)


def fit(cfg, splits, out_path, quiet: bool = False, evaluate: bool = True):
    """Train ``neighbour-contrastive`` on ``splits`` (:class:`hashtool.datasets.Splits`), write the checkpoint to
    ``out_path`` and, with ``evaluate``, score it on the protocol (queries against the database) and store the
    metrics in it. Returns ``(model, meta, metrics or None)``."""
    from hashtool.codes import check_nbits
    from hashtool.threads import resolve_threads
    from hashtool.train.checkpoint import save_checkpoint
    from hashtool.train.engine import dataset_preprocess, resolve_hparams, val_map
    from hashtool.train.evaluation import metrics_meta, protocol_labels, score_codes

    check_nbits(cfg.bits)
    method = get_method(NAME)
    hp = resolve_hparams(method, cfg.hparams)
    if cfg.lr is not None:
        hp["lr"] = float(cfg.lr)
    if cfg.batch_size is not None:
        hp["batch"] = int(cfg.batch_size)
    if not 8 <= int(hp["image_size"]) <= 1024:
        raise ArgumentError(f"--hp image_size={hp['image_size']}: must be in [8, 1024] pixels")
    if evaluate:
        protocol_labels(splits)  # before any work: nothing is trained only to fail at the evaluation
    threads = resolve_threads(cfg.threads)
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    ds = splits.dataset
    preprocess = dataset_preprocess(method, ds)
    model = NeighbourContrastiveModel(_config(ds, preprocess, cfg.bits, int(hp["image_size"]), int(hp["hidden"])))
    model.backbone.load_pretrained()
    _log(quiet, f"[train] {splits.describe()}")
    _log(quiet, f"[train] {NAME}, {cfg.bits} bits, {threads} threads: features at {hp['image_size']} px, "
                f"{hp['neighbours']} neighbours, {hp['steps']} steps of {hp['batch']}, temperature {hp['temperature']}")
    t0 = time.perf_counter()
    extract = FeatureExtractor(model, preprocess, threads)
    db_images, _ = splits.part("database")
    t_feat = time.perf_counter()
    db_feats = extract(db_images, quiet, "database (training and validation images)")
    feature_seconds = time.perf_counter() - t_feat
    train_rows = np.searchsorted(splits.database, splits.train)
    val_rows = np.searchsorted(splits.database, splits.val)
    train_feats = torch.from_numpy(db_feats[train_rows])

    mean, std = feature_stats(db_feats[:, None, :], train_rows)
    head = model.head
    head.feat_mean.copy_(torch.from_numpy(mean))
    head.feat_std.copy_(torch.from_numpy(std) + 1e-4)
    t_knn = time.perf_counter()
    neighbours = knn(knn_space(train_feats, head.feat_mean, head.feat_std, int(hp["knn_dims"])), int(hp["neighbours"]))
    knn_seconds = time.perf_counter() - t_knn
    _, train_labels = splits.part("train")
    agreement = None
    if train_labels is not None:
        lab = torch.from_numpy(np.asarray(train_labels, dtype=np.int64))
        agreement = float((lab[neighbours] == lab[:, None]).float().mean())
    _log(quiet, f"[train] features of {len(db_feats)} images in {feature_seconds:.0f}s; {hp['neighbours']} neighbours of "
                f"{len(train_feats)} in {knn_seconds:.0f}s" + (f" (label agreement {agreement:.3f}, not used)" if agreement is not None else ""))
    history = train_head(head, train_feats, neighbours, hp, cfg.seed, quiet)
    model.eval()
    train_seconds = time.perf_counter() - t0

    db_codes = head_codes(head, db_feats)
    _, val_labels = splits.part("val")
    vm = None
    if val_labels is not None and len(val_rows):
        with torch.no_grad():
            vm = val_map(torch.tanh(head(torch.from_numpy(db_feats[val_rows]))).numpy(), val_labels, model.binarize)
    meta = {
        "dataset": ds.name,
        "protocol": splits.protocol(),
        "train_config": {**asdict(cfg), "hparams": hp, "threads": threads, "device": "cpu"},
        "history": history,
        "selected_step": int(hp["steps"]),
        "val_map": vm,
        "neighbour_label_agreement": agreement,
        "seconds": {"features": feature_seconds, "knn": knn_seconds, "head": history[-1]["seconds"]},
        "train_seconds": train_seconds,
        "complete": True,
        "backbone_licence": LICENCE,
    }
    metrics = None
    if evaluate:  # scored before the one write, so the checkpoint is written once with its result
        q_images, _ = splits.part("query")
        t_q = time.perf_counter()
        q_codes = head_codes(head, extract(q_images, True))
        metrics = score_codes(splits, q_codes, db_codes, feature_seconds + (time.perf_counter() - t_q))
        meta.update(metrics_meta(metrics, splits))
    save_checkpoint(out_path, model, preprocess, meta=meta)
    _log(quiet, f"[train] done in {train_seconds:.0f}s" + (f"; validation mAP {vm:.4f}" if vm is not None else "") + f"; wrote {out_path}")
    return model, meta, metrics


def protocol_encoder(model: NeighbourContrastiveModel, preprocess, threads: int):
    """uint8 images -> packed codes: the frozen front in onnxruntime, then the head (:attr:`Method.encoder`)."""
    extract = FeatureExtractor(model, preprocess, threads)
    return lambda images: head_codes(model.head, extract(images))


def _no_engine_loss(model, batch, ctx):  # pragma: no cover - the engine never runs this method
    raise ArgumentError(f"{NAME} trains through its own procedure (hashtool train --method {NAME} --data DATASET)")


register_method(
    Method(
        name=NAME,
        loss=_no_engine_loss,
        phases=lambda hp: [],
        make_config=lambda bits, c, h, w, hp: NeighbourContrastiveConfig(bits=bits, in_channels=c, height=h, width=w,
                                                                         image_size=int(hp["image_size"]), hidden=int(hp["hidden"])),
        hparams=dict(HPARAMS),
        mean=MEAN,
        std=STD,
        summary="a contrastive hash head on a frozen ImageNet EfficientNet-Lite0, each image's nearest neighbours in its "
                "features as positives (ours; after CIBHash's and IMSAT's losses)",
        fit=fit,
        data="dataset",
        encoder=protocol_encoder,
    )
)
