"""Where an exported encoder spends its time in onnxruntime, per operator, and what NCHWc layout buys.

    PYTHONPATH=src python benchmarks/profile_encode.py [--batch 256] [--threads 1] [--runs 5]

For every registered method (default config, random weights) and the test models of tests/tiny_models.py:
export (no parity check), run onnxruntime's profiler over ``--runs`` calls on one random batch, and print each
operator's share of the summed kernel time. Then time the same batch with graph optimisation level
``ORT_ENABLE_ALL`` (hashtool's choice: includes the NCHWc layout transformer) against ``ORT_ENABLE_EXTENDED``,
alternating, median of 7 rounds of 3 calls. Prints markdown; nothing is written except temp files.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args(argv)

    import hashtool.train  # noqa: F401  (before torch, as in bench_encode.py)
    import onnxruntime as ort
    from bench_encode import models_to_benchmark

    from hashtool.export import export_encoder

    print(f"load average: {[round(x, 2) for x in os.getloadavg()]}; batch {args.batch}, {args.threads} thread(s)\n")
    with tempfile.TemporaryDirectory(prefix="hashtool-prof-") as tmpd:
        for i, (name, model, pp) in enumerate(models_to_benchmark(quick=False)):
            path = Path(tmpd) / f"m{i}.onnx"
            export_encoder(model, pp, path, parity_images=0)
            x = np.random.default_rng(0).integers(0, 256, (args.batch, *pp.shape_hwc), dtype=np.uint8)
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmpd) / f"prof{i}")
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            for _ in range(args.runs):
                sess.run(None, {"images": x})
            events = json.loads(Path(sess.end_profiling()).read_text())
            per_op = collections.Counter()
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                    per_op[e["args"]["op_name"]] += e["dur"]
            total = sum(per_op.values())
            print(f"### {name}\n\n| operator (all nodes of the type) | ms per call | share |\n|---|---:|---:|")
            for op, us in per_op.most_common(args.top):
                print(f"| {op} | {us / args.runs / 1000:.2f} | {100 * us / total:.1f}% |")
            rest = total - sum(us for _, us in per_op.most_common(args.top))
            if rest > 0:
                print(f"| (other) | {rest / args.runs / 1000:.2f} | {100 * rest / total:.1f}% |")
            sessions = {}
            for label, level in (("ALL", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                                 ("EXTENDED", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)):
                so = ort.SessionOptions()
                so.intra_op_num_threads = args.threads
                so.graph_optimization_level = level
                sessions[label] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
                sessions[label].run(None, {"images": x})
            times = {k: [] for k in sessions}
            for _ in range(7):
                for k, s in sessions.items():
                    t = time.perf_counter()
                    for _ in range(3):
                        s.run(None, {"images": x})
                    times[k].append((time.perf_counter() - t) / 3)
            a, e = statistics.median(times["ALL"]), statistics.median(times["EXTENDED"])
            print(f"\nORT_ENABLE_ALL {1e3 * a:.1f} ms per call, ORT_ENABLE_EXTENDED {1e3 * e:.1f} ms: EXTENDED/ALL = {e / a:.2f}\n")
    print(f"load average after: {[round(x, 2) for x in os.getloadavg()]}")


if __name__ == "__main__":
    main()
