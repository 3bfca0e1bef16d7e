"""Encoding speed: PyTorch eager vs onnxruntime on the same graph, and end-to-end images/s from files.

Run from the repository root (needs the `train` extra for torch/onnx):

    PYTHONPATH=src python benchmarks/bench_encode.py            # full run, ~5 minutes on 2 cores
    PYTHONPATH=src python benchmarks/bench_encode.py --quick    # smoke run, ~1 minute

Protocol
--------
*Inference.* For each model (every method registered in ``hashtool.train.models.MODELS`` after importing
``hashtool.train.methods``, built from its default config with random weights, plus the small test models
of tests/tiny_models.py), the computation timed is the exported one: uint8 NHWC images -> normalise ->
``model.encode`` -> binarise -> pack. PyTorch runs it eagerly under ``torch.inference_mode()`` with
``torch.set_num_threads(t)`` (normalising in NHWC before the permute, torch's faster order; then
``model.encode`` and :meth:`hashtool.export.EncoderGraph.head` for binarise + pack); onnxruntime runs the exported file through
:class:`hashtool.encode.Encoder` (``threads=t``, default session options of hashtool: sequential
execution, all graph optimisations, no spinning). The two alternate in rounds on the same input array
(random pixels), after 3 warm-up calls each; each round times enough calls to last >= ``--min-time``
seconds; the median round is reported. Other jobs share the CPU, so the ratio of the two (measured side
by side) is the figure to read, not the absolute numbers.

*End-to-end.* Files on disk (written once to a temp folder, then read while warm in the page cache):
28x28 greyscale PNGs (Fashion-MNIST test images, else random) through a 28x28 "L" model, and 256x256 RGB
JPEGs (quality 90, photo-like gradients + noise) through a 32x32 "RGB" model (decode + resize dominate).
``Encoder.encode_files`` is timed (decoding thread pool overlapped with inference), together with
decode-only (the same thread pool, no inference) and inference-only (``Encoder.encode`` on the
pre-decoded array) runs, to show which part limits the pipeline.

Writes a JSON file and a markdown file (``--out``, default benchmarks/out/encode.*, git-ignored) and prints the
markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tiny_models


def models_to_benchmark(quick: bool):
    import torch

    from tiny_models import TinyConfig, TinyConvHash, preprocess_for, registered_methods

    from hashtool.train.models import MODELS

    out = []
    for name in registered_methods():
        config_cls, model_cls = MODELS[name]
        torch.manual_seed(0)
        cfg = config_cls()
        out.append((name, model_cls(cfg).eval(), preprocess_for(cfg)))
    tiny = [
        ("test:conv-tiny L28 32b", TinyConvHash(TinyConfig(bits=32)).eval()),
        ("test:conv-w4 L28 64b", TinyConvHash(TinyConfig(bits=64, width_mult=4)).eval()),
        ("test:conv-w2 RGB32 64b sigmoid", TinyConvHash(TinyConfig(bits=64, in_channels=3, height=32, width=32, rule="sigmoid", width_mult=2)).eval()),
    ]
    if quick:
        tiny = tiny[:1]
    out += [(n, m, preprocess_for(m.config)) for n, m in tiny]
    return out


def time_calls(fn, min_time: float) -> float:
    """Seconds per call: repeat fn until min_time has passed."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return dt / n


def bench_inference(name, model, pp, tmp: Path, batches, threads_list, rounds, min_time):
    import torch

    from hashtool.encode import Encoder
    from hashtool.export import EncoderGraph, export_encoder

    path = tmp / f"{abs(hash(name))}.onnx"
    export_encoder(model, pp, path, parity_images=64)
    graph = EncoderGraph(model, pp, "packed").eval()
    # PyTorch eager normalises in NHWC and then permutes (a channels-last view): per element the same
    # x * scale + shift as the exported graph, which transposes first (faster in onnxruntime), but the
    # faster order for torch's convolutions (a hand measurement, batch 256, conv-w2 RGB32: 10-30% faster).
    scale, shift = pp.affine()
    scale_t = torch.from_numpy(scale).reshape(1, 1, 1, -1)
    shift_t = torch.from_numpy(shift).reshape(1, 1, 1, -1)
    rows = []
    rng = np.random.default_rng(0)
    for t in threads_list:
        torch.set_num_threads(t)
        enc = Encoder(path, threads=t)
        for b in batches:
            x = rng.integers(0, 256, (b, *pp.shape_hwc), dtype=np.uint8)
            xt = torch.from_numpy(x)

            def run_torch():
                with torch.inference_mode():
                    x_nchw = (xt.to(torch.float32) * scale_t + shift_t).permute(0, 3, 1, 2)
                    return graph.head(model.encode(x_nchw)).numpy()

            def run_ort():
                return enc.encode(x)

            assert (run_torch() == run_ort()).mean() > 0.99  # same computation (ties at threshold aside)
            for _ in range(3):
                run_torch()
                run_ort()
            tt, to = [], []
            for _ in range(rounds):
                tt.append(time_calls(run_torch, min_time))
                to.append(time_calls(run_ort, min_time))
            t_med, o_med = statistics.median(tt), statistics.median(to)
            rows.append({
                "model": name, "threads": t, "batch": b,
                "torch_img_s": b / t_med, "ort_img_s": b / o_med, "speedup": t_med / o_med,
                "torch_ms_per_call": 1e3 * t_med, "ort_ms_per_call": 1e3 * o_med,
            })
            print(f"  {name:34s} t={t} b={b:4d}  torch {b / t_med:10.0f} img/s  ort {b / o_med:10.0f} img/s  x{t_med / o_med:5.2f}",
                  file=sys.stderr, flush=True)
    return rows


def write_files(folder: Path, kind: str, n: int) -> list[Path]:
    from PIL import Image

    from hashtool.export.onnx_export import fashion_mnist_images

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    if kind == "png28":
        fm = fashion_mnist_images(n)
        if fm is None:
            fm = np.random.default_rng(1).integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for i in range(n):
            p = folder / f"{i:06d}.png"
            Image.fromarray(fm[i], "L").save(p)
            paths.append(p)
    else:
        rng = np.random.default_rng(2)
        y, x = np.mgrid[0:256, 0:256]
        for i in range(n):
            base = np.stack([x + i % 50, y, (x + y) / 2 + (i * 7) % 64], axis=2)
            arr = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            p = folder / f"{i:06d}.jpg"
            Image.fromarray(arr, "RGB").save(p, quality=90)
            paths.append(p)
    return paths


def bench_files(label, model, pp, paths, tmp: Path, threads_list, batch_size, repeats):
    from hashtool.encode import Encoder, load_image
    from hashtool.export import export_encoder

    path = tmp / f"files-{label}.onnx"
    export_encoder(model, pp, path, parity_images=0)
    rows = []
    for t in threads_list:
        enc = Encoder(path, threads=t)
        enc.encode_files(paths[:64], batch_size=batch_size)  # warm-up
        best = None
        for _ in range(repeats):
            res = enc.encode_files(paths, batch_size=batch_size)
            if best is None or res.stats["wall_s"] < best.stats["wall_s"]:
                best = res
        dec = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=t) as pool:
                arrays = list(pool.map(lambda p: load_image(p, pp), paths, chunksize=16))
            dec.append(time.perf_counter() - t0)
        stack = np.stack(arrays)
        inf = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for s in range(0, len(stack), batch_size):
                enc.encode(stack[s : s + batch_size])
            inf.append(time.perf_counter() - t0)
        n = len(paths)
        st = best.stats
        rows.append({
            "files": label, "n": n, "threads": t, "batch": batch_size,
            "end_to_end_img_s": n / st["wall_s"],
            "decode_only_img_s": n / min(dec), "inference_only_img_s": n / min(inf),
            "pipeline_decode_cpu_s": st["decode_s"], "pipeline_inference_s": st["inference_s"], "pipeline_wall_s": st["wall_s"],
            "failed": st["failed"],
        })
        r = rows[-1]
        print(f"  {label:10s} t={t}  end-to-end {r['end_to_end_img_s']:8.0f} img/s  decode-only {r['decode_only_img_s']:8.0f}  "
              f"inference-only {r['inference_only_img_s']:8.0f}", file=sys.stderr, flush=True)
    return rows


def markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine']}; load average before/after: {result['load_before']} / {result['load_after']}.", ""]
    lines += ["| model | threads | batch | torch img/s | onnxruntime img/s | ORT / torch |", "|---|---:|---:|---:|---:|---:|"]
    for r in result["inference"]:
        lines.append(f"| {r['model']} | {r['threads']} | {r['batch']} | {r['torch_img_s']:,.0f} | {r['ort_img_s']:,.0f} | {r['speedup']:.2f}x |")
    if not result["files"]:
        return "\n".join(lines) + "\n"
    lines += ["", "| files | n | threads | end-to-end img/s | decode-only img/s | inference-only img/s | in pipeline: decode CPU-s / inference s / wall s |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for r in result["files"]:
        lines.append(
            f"| {r['files']} | {r['n']} | {r['threads']} | {r['end_to_end_img_s']:,.0f} | {r['decode_only_img_s']:,.0f} | "
            f"{r['inference_only_img_s']:,.0f} | {r['pipeline_decode_cpu_s']:.2f} / {r['pipeline_inference_s']:.2f} / {r['pipeline_wall_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer models, rounds and files (smoke run)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.3)
    ap.add_argument("--png", type=int, default=10000, help="number of 28x28 PNG files")
    ap.add_argument("--jpeg", type=int, default=1000, help="number of 256x256 JPEG files")
    ap.add_argument("--skip-files", action="store_true", help="only the inference comparison")
    ap.add_argument("--only-registered", action="store_true", help="inference only for registered methods, no test models")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "encode"))
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.min_time, args.png, args.jpeg = 3, 0.1, 1000, 200
    threads = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]

    import hashtool.train  # noqa: F401  (before torch: it may set torch's OpenMP policy, as training does)
    import onnxruntime
    import torch

    from tiny_models import TinyConfig, TinyConvHash, preprocess_for

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
                   f"python {platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}",
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "protocol": __doc__.split("Protocol\n--------\n")[1].split("\n\nWrites")[0],
        "args": vars(args),
    }
    with tempfile.TemporaryDirectory(prefix="hashtool-bench-") as tmpd:
        tmp = Path(tmpd)
        print("inference: torch eager vs onnxruntime", file=sys.stderr)
        result["inference"] = []
        for name, model, pp in models_to_benchmark(args.quick):
            if args.only_registered and name.startswith("test:"):
                continue
            result["inference"] += bench_inference(name, model, pp, tmp, batches, threads, args.rounds, args.min_time)
        result["files"] = []
        if not args.skip_files:
            print("end-to-end from files", file=sys.stderr)
            png = write_files(tmp / "png", "png28", args.png)
            jpg = write_files(tmp / "jpg", "jpeg256", args.jpeg)
            small = TinyConvHash(TinyConfig(bits=32)).eval()
            rgb = TinyConvHash(TinyConfig(bits=64, in_channels=3, height=32, width=32, width_mult=2)).eval()
            result["files"] += bench_files("png 28x28", small, preprocess_for(small.config), png, tmp, threads, 256, 3)
            result["files"] += bench_files("jpeg 256x256", rgb, preprocess_for(rgb.config), jpg, tmp, threads, 64, 3)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    md = markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
