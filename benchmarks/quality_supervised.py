"""Retrieval quality of the supervised methods (nin-latent, adalabel) on Fashion-MNIST.

Protocol (the same as benchmarks/quality.py for the unsupervised methods): Fashion-MNIST from Debian's
``dataset-fashion-mnist``; 1,000 queries drawn (seed 0) from the 10,000 test images; the database is all
60,000 training images; 5,000 of them are held out of training for validation (never used for model selection
here: every method keeps its last epoch), the other 55,000 train the model. mAP over the whole ranking (ties
by database order), mAP@1000 and precision within Hamming radius 2 (:func:`hashtool.evaluate.retrieval_metrics`).
``labels`` is the share of the 55,000 training images whose label the method sees (seeded); the rest are
unlabeled. ``acc`` is the accuracy of the model's own classifier (nin-latent: the softmax on the latent layer;
adalabel: the nearest codeword) on the 1,000 queries, and ``acc_test`` on all 10,000 test images, so a reader
can see how close mAP is to what the network knows. Training time is the engine's sum of epoch times
(training steps only, no validation), wall time includes validation and encoding.

Every method is trained with its defaults (``hashtool train`` with no other option than --bits and
--labeled-fraction), or with ``--preset paper`` (``--preset``; such rows are named ``...-paper``). Runs are
independent, one JSON file each under ``--out`` (with the precision-recall curve over Hamming radii and the
load average before and after the run), so several invocations can share the work (``--runs``) and an
interrupted benchmark resumes; ``--report`` prints the markdown table from the JSON files and draws
``map_vs_bits.png`` (mAP against bits per method, semi-supervised runs as single points) and ``pr_BITS.png``
(precision against recall as the Hamming radius grows, one figure per code length) into ``--out`` (matplotlib,
from the ``dev`` extra).

    python benchmarks/quality_supervised.py --runs nin-latent:32,adalabel:32 --threads 2
    python benchmarks/quality_supervised.py --report
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from _plots import draw_map_vs_bits, draw_pr, pyplot, save

# In the order of the priorities: the targets (32 and 64 bits), semi-supervised 10% at 32, then 16 bits.
DEFAULT_RUNS = (
    "nin-latent:32", "adalabel:32", "nin-latent:64", "adalabel:64", "adalabel:32:0.1",
    "nin-latent:16", "adalabel:16",
)
HERE = Path(__file__).resolve().parent


def parse_run(spec: str) -> tuple[str, int, float]:
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise SystemExit(f"--runs: {spec!r} is not METHOD:BITS[:LABELED_FRACTION]")
    return parts[0], int(parts[1]), float(parts[2]) if len(parts) == 3 else 1.0


def run_name(method: str, bits: int, fraction: float, preset: str | None = None, tag: str | None = None) -> str:
    return f"{method}-{bits}-labels{fraction:g}" + (f"-{preset}" if preset else "") + (f"-{tag}" if tag else "")


def load_average() -> list[float]:
    import os

    return [round(v, 2) for v in os.getloadavg()]


def run_one(method: str, bits: int, fraction: float, out_dir: Path, ckpt_dir: Path, threads: int | None, seed: int,
            preset: str | None = None, hparams: dict | None = None, augment: str | None = None, tag: str | None = None) -> dict:
    import numpy as np
    import torch

    from hashtool.datasets import load_dataset, make_splits
    from hashtool.evaluate import retrieval_metrics
    from hashtool.train.data import encode_packed, to_tensor
    from hashtool.train.engine import TrainConfig, train
    from hashtool.train.checkpoint import checkpoint_preprocess, read_checkpoint

    ds = load_dataset("fashion-mnist")
    splits = make_splits(ds, seed=seed)
    name = run_name(method, bits, fraction, preset, tag)
    ckpt = ckpt_dir / f"{name}.pt"
    cfg = TrainConfig(method=method, bits=bits, seed=seed, threads=threads, labeled_fraction=fraction, preset=preset,
                      hparams=hparams or {}, augment=augment)
    load_before = load_average()
    t0 = time.perf_counter()
    model, meta = train(cfg, splits, ckpt)
    wall_train = time.perf_counter() - t0
    pre = checkpoint_preprocess(read_checkpoint(ckpt))
    q_img, q_lab = splits.part("query")
    d_img, d_lab = splits.part("database")
    t1 = time.perf_counter()
    db_codes = encode_packed(model, d_img, pre)
    q_codes = encode_packed(model, q_img, pre)
    encode_s = time.perf_counter() - t1
    metrics = retrieval_metrics(q_codes, q_lab, db_codes, d_lab, pr_curve=True)

    @torch.no_grad()
    def accuracy(images, labels):
        model.eval()
        right = 0
        for s in range(0, len(images), 1000):
            x = to_tensor(images[s : s + 1000], pre)
            right += int((model.classify(x).argmax(1).numpy() == labels[s : s + 1000]).sum())
        return right / len(images)

    result = {
        "method": method,
        "bits": bits,
        "labeled_fraction": fraction,
        "preset": preset,
        "map": metrics["map"],
        "map@1000": metrics["map@1000"],
        "precision_r2": metrics["precision_r2"],
        "acc": accuracy(q_img, q_lab),
        "acc_test": accuracy(ds.test_images, ds.test_labels),
        "train_seconds": meta["train_seconds"],
        "train_wall_seconds": wall_train,
        "encode_seconds_61k": encode_s,
        "epochs": meta["epochs_done"],
        "hparams": meta["train_config"]["hparams"],
        "threads": meta["train_config"]["threads"],
        "history": meta["history"],
        "protocol": splits.protocol(),
        "metrics": metrics,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "command": f"hashtool train --method {method} --bits {bits} --data fashion-mnist"
        + (f" --labeled-fraction {fraction:g}" if fraction < 1 else "") + (f" --preset {preset}" if preset else "")
        + "".join(f" --hp {k}={v}" for k, v in (hparams or {}).items()) + (f" --augment {augment}" if augment else "")
        + (f" --threads {threads}" if threads else ""),
        "machine": f"{platform.machine()}, {platform.python_version()}, torch {torch.__version__}",
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
    return result


def _note(r: dict) -> str:
    """The pseudo-label threshold of semi-supervised rows (it changed during this benchmark)."""
    hp = r.get("hparams") or {}
    return f" (threshold {hp['threshold']:g})" if r["labeled_fraction"] < 1 and "threshold" in hp else ""


def _label(r: dict) -> str:
    return r["method"] + (f" --preset {r['preset']}" if r.get("preset") else "")


def load_rows(out_dir: Path) -> list[dict]:
    rows = [json.loads(f.read_text()) for f in sorted(out_dir.glob("*.json"))]
    order = {m: i for i, m in enumerate(("nin-latent", "adalabel"))}
    rows.sort(key=lambda r: (order.get(r["method"], 9), r.get("preset") or "", -r["labeled_fraction"], r["bits"]))
    return rows


def report(out_dir: Path) -> str:
    rows = load_rows(out_dir)
    lines = [
        "| method | bits | labels | mAP | mAP@1000 | P@r<=2 | classifier acc (queries) | acc (10k test) | train time | epochs | threads | load avg before -> after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        load = (f"{' '.join(f'{v:g}' for v in r['load_average_before'])} -> {' '.join(f'{v:g}' for v in r['load_average_after'])}"
                if "load_average_before" in r else "not recorded")
        lines.append(
            f"| {_label(r)} | {r['bits']} | {100 * r['labeled_fraction']:g}%{_note(r)} | {r['map']:.4f} | {r['map@1000']:.4f} | "
            f"{r['precision_r2']:.4f} | {r['acc']:.4f} | {r['acc_test']:.4f} | {r['train_seconds'] / 60:.1f} min | "
            f"{r['epochs']} | {r['threads']} | {load} |"
        )
    return "\n".join(lines)


def plot(out_dir: Path) -> list[Path]:
    """``map_vs_bits.png`` and one ``pr_BITS.png`` per code length, from the JSON files in ``out_dir``."""
    rows = load_rows(out_dir) if out_dir.is_dir() else []
    written = []
    if not rows:
        return written
    plt = pyplot()
    bits_list = sorted({r["bits"] for r in rows})
    full: dict[str, list] = {}
    for r in rows:
        if r["labeled_fraction"] == 1:
            full.setdefault(_label(r), []).append((r["bits"], r["map"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    draw_map_vs_bits(ax, [(f"{name} (all labels)", pts, {}) for name, pts in full.items()], bits_list,
                     "Fashion-MNIST, supervised hashing", "mAP (whole ranking, 60,000 database images)",
                     points=[(f"{_label(r)} ({100 * r['labeled_fraction']:g}% labels)", r["bits"], r["map"])
                             for r in rows if r["labeled_fraction"] < 1])
    written.append(out_dir / "map_vs_bits.png")
    save(fig, written[-1])
    for bits in bits_list:
        curves = [(_label(r) + ("" if r["labeled_fraction"] == 1 else f" ({100 * r['labeled_fraction']:g}% labels)"),
                   r["metrics"]["pr_curve"], {})
                  for r in rows if r["bits"] == bits and (r.get("metrics") or {}).get("pr_curve")]
        fig, ax = plt.subplots(figsize=(5, 4))
        draw_pr(ax, curves, f"{bits} bits: within Hamming radius r = 0..{bits}")
        written.append(out_dir / f"pr_{bits}.png")
        save(fig, written[-1])
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default=",".join(DEFAULT_RUNS), help="comma-separated METHOD:BITS[:LABELED_FRACTION]")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "quality_supervised")
    ap.add_argument("--checkpoints", type=Path, default=Path("/tmp/hashtool-quality-supervised"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: HASHTOOL_THREADS or all CPUs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default=None, help="train every run with this --preset (e.g. paper)")
    ap.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="a hyper-parameter override for every run (repeatable)")
    ap.add_argument("--augment", default=None, help="train every run with this --augment")
    ap.add_argument("--tag", default=None, help="suffix of the run names (for runs with --hp or --augment)")
    ap.add_argument("--force", action="store_true", help="re-run runs whose JSON already exists")
    ap.add_argument("--report", action="store_true", help="only print the markdown table of the finished runs")
    args = ap.parse_args(argv)
    hparams = dict(item.split("=", 1) for item in args.hp)
    if not args.report:
        for spec in [s for s in args.runs.split(",") if s.strip()]:
            method, bits, fraction = parse_run(spec.strip())
            if (args.out / f"{run_name(method, bits, fraction, args.preset, args.tag)}.json").exists() and not args.force:
                print(f"[bench] {spec}: done already (use --force to re-run)", file=sys.stderr)
                continue
            r = run_one(method, bits, fraction, args.out, args.checkpoints, args.threads, args.seed, args.preset, hparams,
                        args.augment, args.tag)
            print(f"[bench] {spec}: mAP {r['map']:.4f} acc {r['acc']:.4f} train {r['train_seconds']:.0f}s", file=sys.stderr, flush=True)
    print(report(args.out))
    for path in plot(args.out):
        print(f"[bench] wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
