"""The runtime encoder: an exported ONNX model + onnxruntime -> packed hash codes (no torch, no onnx).

An encoder file is an ONNX model written by ``hashtool export`` (:mod:`hashtool.export`). Its graph takes
uint8 images ``(batch, height, width, channels)`` on input :data:`INPUT_NAME` and returns, by its
``output`` metadata, packed codes (``"codes"``, uint8 (batch, bits/8), hashtool's bit order), bits
(``"bits"``, uint8 0/1) or the real-valued hash layer (``"real"``, float32). :meth:`Encoder.encode`
always returns packed codes: bits are packed and real values binarised by the model's rule in numpy.

Metadata (ONNX ``metadata_props``) the encoder relies on: ``hashtool_format`` ==
:data:`ENCODER_FORMAT`, ``hashtool_format_version`` <= :data:`ENCODER_FORMAT_VERSION`, ``bits``,
``output``, ``binarize``, ``input_height``/``input_width``/``input_channels``, ``color``, ``resize``,
``mean``, ``std``; the rest (method, training data, protocol, mAP, checkpoint sha256, parity...) is
passed through in :attr:`Encoder.metadata`.

Threads: onnxruntime's intra-op pool gets :func:`hashtool.threads.resolve_threads` threads (explicit
value, else ``HASHTOOL_THREADS``, else the CPUs this process may use), the one setting the index uses
too; inter-op parallelism is off (the graph is a chain). :meth:`Encoder.encode_files` decodes images
in a thread pool of the same size while onnxruntime runs the previous batch: Pillow's decoders and
onnxruntime both release the GIL, so decoding and inference overlap.
"""

from __future__ import annotations

import json
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from hashtool.codes import BIT_ORDER, binarize, check_nbits
from hashtool.errors import ArgumentError, ImageError, ModelError
from hashtool.fileio import sha256_file
from hashtool.preprocess import Preprocess
from hashtool.threads import resolve_threads

ENCODER_FORMAT = "hashtool-encoder"
ENCODER_FORMAT_VERSION = 1
INPUT_NAME = "images"
# Images per onnxruntime call in encode_files: small batches start inference while the decoders are still
# busy and keep activations in cache (measured with the photo encoder on 120 12 MP JPEGs: 16 beat 64).
FILE_BATCH = 16
OPSET = 18  # the ONNX opset hashtool writes graphs at (encoders, and the backbone graph training runs)
OUTPUT_KINDS = ("packed", "bits", "real")
OUTPUT_NAMES = {"packed": "codes", "bits": "bits", "real": "real"}
_REQUIRED = ("bits", "output", "binarize", "input_height", "input_width", "input_channels", "color", "mean", "std")


class Failure(NamedTuple):
    """An input of :meth:`Encoder.encode_files` that produced no code."""

    index: int  # position in the input list
    path: str
    reason: str


@dataclass
class EncodeResult:
    """Output of :meth:`Encoder.encode_files`.

    ``codes[k]`` is the code of ``paths[k]``, which was input number ``indices[k]``, decoded from bytes
    whose sha256 is ``sha256[k]`` (each file is read once: the hash belongs to the pixels encoded); every
    other input is in ``failures`` with its reason. ``len(codes) + len(failures)`` is the number of inputs.
    """

    codes: np.ndarray  # uint8 (m, nbits // 8)
    indices: np.ndarray  # int64 (m,), increasing
    paths: list[str]
    failures: list[Failure]
    sha256: list[str] = field(default_factory=list)  # hex, one per code
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.codes)


class Encoder:
    """An exported hashtool encoder opened with onnxruntime.

    >>> enc = Encoder("encoder.onnx", threads=2)          # doctest: +SKIP
    >>> codes = enc.encode(images_uint8_nhwc)              # doctest: +SKIP
    >>> result = enc.encode_files(paths)    # doctest: +SKIP
    """

    def __init__(self, path, threads: int | None = None, *, spin: bool = False):
        """Open ``path``. ``threads``: see :func:`hashtool.threads.resolve_threads`. ``spin``: let
        onnxruntime's idle threads busy-wait between batches (faster for a stream of tiny batches, but it
        steals CPU from the image decoders; off by default)."""
        import onnxruntime as ort

        self._path = Path(path)
        if not self._path.is_file():
            raise ModelError(f"{self._path}: no such encoder file; export one with `hashtool export MODEL.pt ENCODER.onnx`")
        self._threads = resolve_threads(threads)
        self._sha256 = sha256_file(self._path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self._threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            self._session = ort.InferenceSession(str(self._path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{self._path}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
        self._metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        self._validate()

    # -- properties ------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def sha256(self) -> str:
        """sha256 of the .onnx file (hex)."""
        return self._sha256

    @property
    def metadata(self) -> dict:
        """All hashtool metadata of the file, as strings (a copy)."""
        return dict(self._metadata)

    @property
    def nbits(self) -> int:
        return self._nbits

    @property
    def preprocess(self) -> Preprocess:
        return self._preprocess

    @property
    def method(self) -> str:
        return self._metadata.get("method", "")

    @property
    def output(self) -> str:
        """What the graph returns: "packed", "bits" or "real"."""
        return self._output

    @property
    def threads(self) -> int:
        return self._threads

    def __repr__(self) -> str:
        return f"Encoder({str(self._path)!r}, method={self.method!r}, nbits={self._nbits}, input={self._preprocess.shape_hwc})"

    # -- encoding --------------------------------------------------------------------------------

    def encode(self, images, batch_size: int = 256) -> np.ndarray:
        """uint8 images ``(n, height, width, channels)`` -> packed codes uint8 ``(n, nbits // 8)``.

        Runs onnxruntime in chunks of ``batch_size`` images to bound memory.
        """
        images = self._check_images(images)
        if batch_size < 1:
            raise ArgumentError(f"batch_size must be >= 1, got {batch_size}")
        n = images.shape[0]
        out = np.empty((n, self._nbits // 8), dtype=np.uint8)
        for start in range(0, n, batch_size):
            out[start : start + batch_size] = self._run(images[start : start + batch_size])
        return out

    def encode_files(
        self,
        paths,
        batch_size: int | None = None,
        *,
        workers: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        max_pixels: int | None = None,
    ) -> EncodeResult:
        """Load, preprocess and encode image files; failures are reported, never dropped.

        Each file is read once (:func:`hashtool.files.read_image`): ``result.sha256`` holds the hash of the
        bytes each code was computed from.

        ``batch_size`` images go to onnxruntime at a time (default :data:`FILE_BATCH`). ``workers`` decoding
        threads (default: the encoder's thread count) decode ahead of inference, up to ``2 * batch_size``
        images, while onnxruntime encodes the current batch. ``progress(done, total)`` is called after each
        batch (done counts failures too). ``stats`` holds ``decode_s``
        (decoding time summed over workers), ``inference_s``, ``wall_s`` and ``images_per_s``.
        """
        from hashtool.files.images import read_image

        batch_size = FILE_BATCH if batch_size is None else batch_size
        paths = [str(p) for p in paths]
        if batch_size < 1:
            raise ArgumentError(f"batch_size must be >= 1, got {batch_size}")
        n_workers = resolve_threads(workers) if workers else self._threads
        total = len(paths)
        pp = self._preprocess

        def load(i: int):
            t = time.perf_counter()
            try:
                loaded, err = read_image(paths[i], pp, max_pixels=max_pixels), None
            except ImageError as exc:
                loaded, err = None, _strip_path(str(exc), paths[i])
            except Exception as exc:  # a bug or resource error: report it for this file, keep going
                loaded, err = None, f"unexpected {type(exc).__name__}: {str(exc)[:200]}"
            return loaded, err, time.perf_counter() - t

        t0 = time.perf_counter()
        codes: list[np.ndarray] = []
        indices: list[int] = []
        hashes: list[str] = []
        failures: list[Failure] = []
        decode_s = infer_s = 0.0
        batch: list[np.ndarray] = []
        batch_idx: list[int] = []
        done = 0

        def flush():
            nonlocal infer_s, done, batch, batch_idx
            if batch:
                t = time.perf_counter()
                codes.append(self._run(np.stack(batch)))
                infer_s += time.perf_counter() - t
                indices.extend(batch_idx)
                done += len(batch)
                batch, batch_idx = [], []
            if progress is not None:
                progress(done + len(failures), total)

        window = max(2 * batch_size, 4 * n_workers)
        with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="hashtool-decode") as pool:
            pending: deque = deque()
            next_i = 0
            try:
                while next_i < total or pending:
                    while next_i < total and len(pending) < window:
                        pending.append((next_i, pool.submit(load, next_i)))
                        next_i += 1
                    i, fut = pending.popleft()
                    loaded, err, dt = fut.result()
                    decode_s += dt
                    if err is not None:
                        failures.append(Failure(i, paths[i], err))
                    else:
                        batch.append(loaded.array)
                        batch_idx.append(i)
                        hashes.append(loaded.sha256)
                    if len(batch) == batch_size:
                        flush()
                flush()
            finally:
                for _, fut in pending:
                    fut.cancel()
        wall = time.perf_counter() - t0
        nbytes = self._nbits // 8
        return EncodeResult(
            codes=np.concatenate(codes) if codes else np.empty((0, nbytes), dtype=np.uint8),
            indices=np.asarray(indices, dtype=np.int64),
            paths=[paths[i] for i in indices],
            failures=failures,
            sha256=hashes,
            stats={
                "images": total,
                "encoded": len(indices),
                "failed": len(failures),
                "decode_s": decode_s,
                "inference_s": infer_s,
                "wall_s": wall,
                "images_per_s": total / wall if wall > 0 else float("inf"),
                "workers": n_workers,
                "threads": self._threads,
            },
        )

    # -- internals -------------------------------------------------------------------------------

    def _run(self, images: np.ndarray) -> np.ndarray:
        out = self._session.run(None, {INPUT_NAME: images})[0]
        if self._output == "packed":
            return out
        if self._output == "bits":
            return np.packbits(out.astype(bool), axis=1, bitorder=BIT_ORDER)
        return np.packbits(binarize(out, self._binarize), axis=1, bitorder=BIT_ORDER)

    def _check_images(self, images) -> np.ndarray:
        arr = np.asarray(images)
        shape = self._preprocess.shape_hwc
        if arr.ndim == 3 and arr.shape == shape:
            raise ArgumentError(f"encode takes a batch (n, {shape[0]}, {shape[1]}, {shape[2]}); for one image pass images[None]")
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != shape:
            raise ArgumentError(
                f"{self._path.name} expects uint8 images of shape (n, {shape[0]}, {shape[1]}, {shape[2]}) "
                f"(NHWC, {self._preprocess.color}), got {arr.dtype} {arr.shape}; load files with "
                "hashtool.files.load_image(path, encoder.preprocess)"
            )
        return np.ascontiguousarray(arr)

    def _validate(self) -> None:
        md, p = self._metadata, self._path
        if md.get("hashtool_format") != ENCODER_FORMAT:
            raise ModelError(f"{p}: not a hashtool encoder (no hashtool metadata); export one with `hashtool export MODEL.pt ENCODER.onnx`")
        version = md.get("hashtool_format_version", "")
        try:
            version = int(version)
        except ValueError:
            raise ModelError(f"{p}: hashtool_format_version {version!r} is not an integer; re-export the encoder") from None
        if version > ENCODER_FORMAT_VERSION:
            raise ModelError(
                f"{p}: encoder format version {version} is newer than this hashtool supports "
                f"(<= {ENCODER_FORMAT_VERSION}); upgrade hashtool"
            )
        if version < 1:
            raise ModelError(f"{p}: invalid encoder format version {version}; re-export the encoder")
        missing = [k for k in _REQUIRED if k not in md]
        if missing:
            raise ModelError(f"{p}: hashtool metadata lacks {missing}; re-export the encoder with `hashtool export`")
        try:
            self._nbits = check_nbits(int(md["bits"]))
            self._preprocess = Preprocess(
                height=int(md["input_height"]),
                width=int(md["input_width"]),
                color=md["color"],
                resize=md.get("resize", "stretch"),
                mean=tuple(json.loads(md["mean"])),
                std=tuple(json.loads(md["std"])),
            )
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{p}: invalid hashtool metadata: {exc}") from None
        if int(md["input_channels"]) != self._preprocess.channels:
            raise ModelError(f"{p}: metadata says {md['input_channels']} channels but color {md['color']!r}")
        self._output = md["output"]
        self._binarize = md["binarize"]
        if self._output not in OUTPUT_KINDS or self._binarize not in ("sign", "sigmoid"):
            raise ModelError(f"{p}: invalid output {self._output!r} or binarize rule {self._binarize!r} in metadata")
        # the graph must agree with its metadata
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(uint8)":
            raise ModelError(f"{p}: graph input is not one uint8 tensor named {INPUT_NAME!r}")
        if list(inputs[0].shape[1:]) != list(self._preprocess.shape_hwc):
            raise ModelError(f"{p}: graph input shape {inputs[0].shape} disagrees with metadata {self._preprocess.shape_hwc}")
        width = self._nbits // 8 if self._output == "packed" else self._nbits
        out_shape = list(outputs[0].shape)
        if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != width):
            raise ModelError(f"{p}: graph output shape {out_shape} disagrees with {self._nbits} bits, output {self._output!r}")


def _strip_path(message: str, path: str) -> str:
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message
