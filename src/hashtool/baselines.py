"""Shallow hashing baselines on raw pixels or any feature array (numpy only, no torch).

All three are linear: ``bits = (x - mean) @ W >= 0`` (the :mod:`hashtool.codes` sign rule), so a fitted
model is just ``mean`` (d,) and ``W`` (d, B).

``lsh``   random hyperplanes: W has i.i.d. N(0, 1) entries (Charikar's SimHash) on mean-centred data.
``pcah``  PCA hashing: W holds the top-B principal directions.
``itq``   iterative quantisation (Gong and Lazebnik, CVPR 2011): PCA to B dimensions, then an orthogonal
          rotation R that minimises the quantisation loss ||B - V R||_F, found by alternating B = sign(V R)
          and the orthogonal Procrustes solution for R (50 iterations as in the paper), from a random
          orthogonal start. W = P R.

Features for images are :func:`hashtool.datasets.flatten_features` (pixels in [0, 1], HWC order).

Saved as ``.npz`` with ``format`` = "hashtool-baseline" and ``version``; :func:`load_baseline` refuses
anything else with a clear error. ``fit`` is seeded: the same data and seed give the same codes.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hashtool.codes import check_nbits, pack
from hashtool.errors import ArgumentError, ModelError

BASELINES = ("lsh", "pcah", "itq")
BASELINE_FORMAT = "hashtool-baseline"
BASELINE_VERSION = 1
ITQ_ITERATIONS = 50


@dataclass
class LinearHash:
    """A fitted linear hash: ``bits = (x - mean) @ W >= 0``."""

    method: str
    mean: np.ndarray
    W: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def bits(self) -> int:
        return int(self.W.shape[1])

    @property
    def dim(self) -> int:
        return int(self.W.shape[0])

    def project(self, x) -> np.ndarray:
        x = _features(x, self.dim)
        return (x - self.mean) @ self.W

    def transform(self, x) -> np.ndarray:
        """Packed uint8 codes (n, bits // 8)."""
        return pack(self.project(x))

    def save(self, path) -> None:
        """Write atomically as .npz (format tag, version, method, mean, W, JSON metadata)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        from hashtool.fileio import atomic_write

        with atomic_write(path) as f:
            np.savez(
                f,
                format=np.array(BASELINE_FORMAT),
                version=np.array(BASELINE_VERSION),
                method=np.array(self.method),
                mean=self.mean.astype(np.float32),
                W=self.W.astype(np.float32),
                meta=np.array(json.dumps(self.meta)),
            )


def _features(x, dim: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ArgumentError(f"features must be a 2-D array (n, d), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise ArgumentError(f"features must be numeric, got {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if dim is not None and x.shape[1] != dim:
        raise ArgumentError(f"features have {x.shape[1]} dimensions but the model was fitted on {dim}")
    if not np.isfinite(x).all():
        raise ArgumentError("features contain NaN or infinite values")
    return x


def pca(x: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean (float64, d) and the top ``bits`` principal directions (d, bits) of ``x``, each with a fixed sign."""
    mean = x.mean(axis=0, dtype=np.float64)
    xc = x.astype(np.float64) - mean
    cov = xc.T @ xc / max(1, len(x) - 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:bits]
    P = evecs[:, order]
    # A deterministic sign per direction (the largest-magnitude entry positive) so results do not
    # depend on the LAPACK build.
    flip = np.sign(P[np.abs(P).argmax(axis=0), np.arange(P.shape[1])])
    return mean, P * np.where(flip == 0, 1.0, flip)


def itq_rotation(V: np.ndarray, iterations: int = ITQ_ITERATIONS, rng=None) -> np.ndarray:
    """ITQ's rotation for zero-centred data V (n, B): the orthogonal R minimising ||sign(V R) - V R||_F.

    Alternates B = sign(V R) with the orthogonal Procrustes solution R = (U W^T)^T of svd(B^T V), starting
    from a random orthogonal matrix (Gong and Lazebnik). Also used by the deep methods to align their code
    layer with the hypercube's axes.
    """
    rng = np.random.default_rng(rng)
    V = np.asarray(V, dtype=np.float64)
    R, _ = np.linalg.qr(rng.standard_normal((V.shape[1], V.shape[1])))
    for _ in range(iterations):
        B = np.where(V @ R >= 0, 1.0, -1.0)
        U, _, Vt = np.linalg.svd(B.T @ V)
        R = (U @ Vt).T
    return R


def fit_baseline(method: str, x, bits: int, seed: int = 0, iterations: int = ITQ_ITERATIONS) -> LinearHash:
    """Fit ``method`` (lsh, pcah, itq) on features ``x`` (n, d) for ``bits`` bits."""
    if method not in BASELINES:
        raise ArgumentError(f"unknown baseline {method!r}; choose one of {', '.join(BASELINES)}")
    bits = check_nbits(bits)
    x = _features(x)
    n, d = x.shape
    if method != "lsh" and bits > min(n, d):
        raise ArgumentError(f"{method} needs bits <= min(n, d) = {min(n, d)} (PCA directions), got {bits}; use lsh for longer codes")
    rng = np.random.default_rng(seed)
    meta = {"seed": seed, "fitted_on": n}
    if method == "lsh":
        mean = x.mean(axis=0, dtype=np.float64)
        W = rng.standard_normal((d, bits))
    elif method == "pcah":
        mean, W = pca(x, bits)
    else:
        mean, P = pca(x, bits)
        V = (x.astype(np.float64) - mean) @ P
        R = itq_rotation(V, iterations, rng)
        W = P @ R
        meta["iterations"] = iterations
        meta["quantization_loss"] = float(np.square(np.where(V @ R >= 0, 1.0, -1.0) - V @ R).sum() / n)
    return LinearHash(method=method, mean=np.asarray(mean, dtype=np.float32), W=np.asarray(W, dtype=np.float32), meta=meta)


def load_baseline(path) -> LinearHash:
    """Load a baseline saved by :meth:`LinearHash.save`; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such baseline model file")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            if "format" not in files or str(z["format"]) != BASELINE_FORMAT:
                raise ModelError(f"{path}: not a hashtool baseline model (no format tag {BASELINE_FORMAT!r})")
            version = int(z["version"])
            if version > BASELINE_VERSION or version < 1:
                raise ModelError(f"{path}: baseline format version {version} is not supported (supports 1..{BASELINE_VERSION}); upgrade hashtool")
            missing = {"method", "mean", "W", "meta"} - files
            if missing:
                raise ModelError(f"{path}: baseline file lacks {sorted(missing)}; it is corrupt")
            method, mean, W, meta = str(z["method"]), z["mean"], z["W"], json.loads(str(z["meta"]))
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelError(f"{path}: not a readable .npz baseline model ({type(exc).__name__}: {exc})") from None
    if method not in BASELINES or W.ndim != 2 or mean.shape != (W.shape[0],):
        raise ModelError(f"{path}: inconsistent baseline model (method {method!r}, mean {mean.shape}, W {W.shape})")
    return LinearHash(method=method, mean=mean, W=W, meta=meta)


def is_baseline_file(path) -> bool:
    """True when ``path`` looks like a baseline .npz (a zip archive), False for a torch checkpoint etc."""
    path = Path(path)
    if not path.is_file():
        return False
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return "format.npy" in zf.namelist()
    except zipfile.BadZipFile:
        return False
