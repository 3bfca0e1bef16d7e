"""Retrieval quality of the unsupervised methods and the shallow baselines (the train issue's benchmark).

Protocol (hashtool.datasets.make_splits, seed 0): Fashion-MNIST, 1,000 queries drawn from the test set, the
60,000 training images as the database, mAP over the whole ranking (ties by database order); mnist-5k, 500
queries, the other 4,500 images as the database. Baselines are fitted, and deep models trained, on the
database minus its validation hold-out (55,000 / 4,050 images); nothing sees the queries.

Every deep model is trained by the real command, ``hashtool train --method M --bits B --data D -o ...``,
with its DEFAULTS (no flags but ``--threads``), as a subprocess; its reported training time is the engine's
sum of epoch times (validation excluded), and the wall time of the whole command is recorded too.

Usage::

    python benchmarks/quality.py                       # everything (about an hour on 2 shared cores)
    python benchmarks/quality.py --datasets mnist-5k --methods itq,ae-tanh --bits 16
    python benchmarks/quality.py --jobs 2 --threads 1  # two deep trainings at a time, one thread each
    python benchmarks/quality.py --datasets fashion-mnist --methods itq,itq-backbone,neighbour-contrastive --jobs 1 --threads 2

``itq-backbone`` is ITQ fitted on the training part's EfficientNet-Lite0 features (neighbour-contrastive's own
feature path, :func:`hashtool.train.methods.neighbour_contrastive.backbone_extractor`): the fair comparison for a
method that starts from an ImageNet backbone. Its ``train s`` is the ITQ fit; the feature pass is recorded beside it.

Writes ``benchmarks/out/quality.json`` (everything, including PR curves), ``quality.md`` (the table),
``map_vs_bits.png`` (mAP against bits, one panel per dataset) and ``pr_DATASET.png`` (precision against recall
by Hamming radius, one panel per code length), drawn with matplotlib (the ``dev`` extra), and prints the table.
``--merge`` adds results of other runs first (``benchmarks/results/quality_unsup/recorded.json`` holds the
measured ae-tanh and scae rows of the earlier run, without their PR curves).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _plots import draw_map_vs_bits, draw_pr, pyplot, save

ROOT = Path(__file__).resolve().parent.parent
SHALLOW = ("lsh", "pcah", "itq")
ITQ_BACKBONE = "itq-backbone"  # ITQ on neighbour-contrastive's backbone features (the same 96 px EfficientNet-Lite0 features)
COLORS = {"lsh": "#969696", "pcah": "#5aa05a", "itq": "#1e1e1e", ITQ_BACKBONE: "#8c2d9c", "ae-tanh": "#c83c28", "scae": "#285ac8",
          "contrastive": "#d08000", "neighbour-contrastive": "#8c2d9c"}
DEEP = ("ae-tanh", "scae", "contrastive", "neighbour-contrastive")


def run_shallow(method, bits, dataset, seed, outdir):
    from hashtool.baselines import fit_baseline
    from hashtool.datasets import flatten_features, load_dataset, make_splits
    from hashtool.evaluate import retrieval_metrics

    splits = make_splits(load_dataset(dataset), seed=seed)
    x, _ = splits.part("train")
    t0 = time.perf_counter()
    model = fit_baseline(method, flatten_features(x), bits, seed=seed)
    fit_s = time.perf_counter() - t0
    q, ql = splits.part("query")
    d, dl = splits.part("database")
    metrics = retrieval_metrics(model.transform(flatten_features(q)), ql, model.transform(flatten_features(d)), dl)
    model.save(outdir / f"{dataset}-{method}-{bits}.npz")
    return {"dataset": dataset, "method": method, "bits": bits, "train_seconds": fit_s, "wall_seconds": fit_s,
            "metrics": metrics, "protocol": splits.protocol()}


def run_itq_backbone(bits_list, dataset, seed, threads):
    """ITQ fitted on the training part's backbone features (neighbour-contrastive's own feature path, at its default
    image size), one feature pass for every code length. ``train_seconds`` is the ITQ fit; ``feature_seconds`` the
    features of the database and the queries."""
    import numpy as np

    from hashtool.baselines import fit_baseline
    from hashtool.datasets import load_dataset, make_splits
    from hashtool.evaluate import retrieval_metrics
    from hashtool.train.methods.neighbour_contrastive import HPARAMS, backbone_extractor

    splits = make_splits(load_dataset(dataset), seed=seed)
    t0 = time.perf_counter()
    extract = backbone_extractor(splits.dataset, HPARAMS["image_size"], threads or 1)
    (q, ql), (d, dl) = splits.part("query"), splits.part("database")
    fd, fq = extract(d), extract(q)
    feature_s = time.perf_counter() - t0
    ft = fd[np.searchsorted(splits.database, splits.train)]
    out = []
    for bits in bits_list:
        t1 = time.perf_counter()
        model = fit_baseline("itq", ft, bits, seed=seed)
        fit_s = time.perf_counter() - t1
        metrics = retrieval_metrics(model.transform(fq), ql, model.transform(fd), dl)
        out.append({"dataset": dataset, "method": ITQ_BACKBONE, "bits": bits, "train_seconds": fit_s, "wall_seconds": fit_s,
                    "feature_seconds": feature_s, "metrics": metrics, "protocol": splits.protocol(),
                    "features": f"EfficientNet-Lite0 (ImageNet) pooled features at {HPARAMS['image_size']} px, onnxruntime, {threads} threads"})
    return out


def run_deep(method, bits, dataset, seed, outdir, threads):
    out = outdir / f"{dataset}-{method}-{bits}.pt"
    log = outdir / f"{dataset}-{method}-{bits}.log"
    cmd = [sys.executable, "-m", "hashtool", "train", "--method", method, "--bits", str(bits), "--data", dataset,
           "-o", str(out), "--seed", str(seed), "--json"]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    with open(log, "w") as errf:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=errf, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    res = json.loads(proc.stdout)
    return {"dataset": dataset, "method": method, "bits": bits, "train_seconds": res["train_seconds"], "wall_seconds": wall,
            "metrics": res["metrics"], "protocol": res["protocol"], "command": " ".join(cmd[1:]), "log": str(log)}


def table(results, datasets, methods, bits_list) -> str:
    lines = []
    for ds in datasets:
        rows = {(r["method"], r["bits"]): r for r in results if r["dataset"] == ds}
        if not rows:
            continue
        p = next(iter(rows.values()))["protocol"]
        lines.append(f"**{ds}**: {p['queries']} queries ({p['queries_from']}), {p['database']} database images, "
                     f"trained on {p['train']} (seed {p['seed']}); mAP over the whole ranking")
        lines.append("")
        head = "| method | " + " | ".join(f"mAP {b}" for b in bits_list) + " | " + " | ".join(f"P@r2 {b}" for b in bits_list) + \
               " | " + " | ".join(f"train s {b}" for b in bits_list) + " |"
        lines.append(head)
        lines.append("|" + "---|" * (1 + 3 * len(bits_list)))
        for m in methods:
            cells = []
            for key, fmt in (("map", "{:.4f}"), ("precision_r2", "{:.4f}"), (None, "{:.0f}")):
                for b in bits_list:
                    r = rows.get((m, b))
                    if r is None:
                        cells.append("-")
                    elif key is None:
                        cells.append(fmt.format(r["train_seconds"]))
                    else:
                        cells.append(fmt.format(r["metrics"][key]))
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        for base, label in (("itq", "ITQ"), (ITQ_BACKBONE, "ITQ on the backbone features")):
            if base not in methods:
                continue
            for m in methods:
                if m in SHALLOW or m == base or (base == ITQ_BACKBONE and m != "neighbour-contrastive"):
                    continue
                gaps = []
                for b in bits_list:
                    if (m, b) in rows and (base, b) in rows:
                        gaps.append(f"{b}: {rows[(m, b)]['metrics']['map'] - rows[(base, b)]['metrics']['map']:+.4f}")
                if gaps:
                    lines.append(f"\n{m} minus {label} (mAP): " + ", ".join(gaps))
        lines.append("")
    return "\n".join(lines)


def _style(method):
    dashed = method in SHALLOW or method == ITQ_BACKBONE
    return {"color": COLORS.get(method, "purple"), "linestyle": "--" if dashed else "-", "marker": "o", "markersize": 4}


def plot(results, datasets, methods, bits_list, path):
    """mAP against bits, one panel per dataset."""
    plt = pyplot()
    dsets = [d for d in datasets if any(r["dataset"] == d for r in results)]
    fig, axes = plt.subplots(1, len(dsets), figsize=(5 * len(dsets), 4), squeeze=False)
    for ax, ds in zip(axes[0], dsets):
        series = [(m, [(r["bits"], r["metrics"]["map"]) for r in results if r["dataset"] == ds and r["method"] == m and r["bits"] in bits_list],
                   _style(m)) for m in methods]
        draw_map_vs_bits(ax, series, bits_list, f"{ds}: mAP against code length")
    save(fig, path)


def plot_pr(results, dataset, methods, bits_list, path):
    """Precision against recall of the items within Hamming radius r = 0..bits, one panel per code length."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(bits_list), figsize=(4.5 * len(bits_list), 4), squeeze=False)
    for ax, b in zip(axes[0], bits_list):
        curves = []
        for m in methods:
            r = next((r for r in results if r["dataset"] == dataset and r["method"] == m and r["bits"] == b and "pr_curve" in r["metrics"]), None)
            if r is not None:
                curves.append((m, r["metrics"]["pr_curve"], {**_style(m), "markersize": 2}))
        draw_pr(ax, curves, f"{dataset}, {b} bits")
    save(fig, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="fashion-mnist,mnist-5k")
    ap.add_argument("--methods", default="lsh,pcah,itq,ae-tanh,scae,contrastive")
    ap.add_argument("--bits", default="16,32,64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="deep trainings run at the same time")
    ap.add_argument("--threads", type=int, default=1, help="--threads of each deep training")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    ap.add_argument("--reuse", action="store_true", help="keep results already in quality.json for the same cells")
    ap.add_argument("--merge", nargs="*", default=[], help="other quality.json files whose results to add first")
    args = ap.parse_args(argv)
    datasets = args.datasets.split(",")
    methods = args.methods.split(",")
    bits_list = [int(b) for b in args.bits.split(",")]
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    jpath = outdir / "quality.json"
    previous = json.loads(jpath.read_text()) if args.reuse and jpath.exists() else {"results": []}
    old = previous["results"]
    for extra in args.merge:
        other = json.loads(Path(extra).read_text())
        old = old + other["results"]
        previous.setdefault("merged", []).append({"file": extra, "machine": other.get("machine")})
    have = {(r["dataset"], r["method"], r["bits"]) for r in old}
    state = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "load_start": os.getloadavg(),
             "cpus": os.cpu_count(), "python": platform.python_version(), "jobs": args.jobs, "threads": args.threads}
    if old:
        state["reused_from"] = {"machine": previous.get("machine"), "merged": previous.get("merged", [])}
    results = list(old)
    deep = []
    for ds in datasets:
        for m in methods:
            todo = [b for b in bits_list if (ds, m, b) not in have]
            if m == ITQ_BACKBONE and todo:
                for r in run_itq_backbone(todo, ds, args.seed, args.threads):
                    results.append(r)
                    print(f"{ds:14s} {m:8s} {r['bits']:3d} bits  mAP {r['metrics']['map']:.4f}  fit {r['train_seconds']:.1f}s "
                          f"(features {r['feature_seconds']:.0f}s)", flush=True)
                continue
            for b in todo:
                if m in SHALLOW:
                    r = run_shallow(m, b, ds, args.seed, outdir)
                    results.append(r)
                    print(f"{ds:14s} {m:8s} {b:3d} bits  mAP {r['metrics']['map']:.4f}  fit {r['train_seconds']:.1f}s", flush=True)
                else:
                    deep.append((m, b, ds))

    def job(item):
        m, b, ds = item
        r = run_deep(m, b, ds, args.seed, outdir, args.threads)
        print(f"{ds:14s} {m:8s} {b:3d} bits  mAP {r['metrics']['map']:.4f}  train {r['train_seconds']:.0f}s "
              f"(wall {r['wall_seconds']:.0f}s)", flush=True)
        return r

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for r in pool.map(job, deep):
            results.append(r)
            _write(jpath, state, results)
    state["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    state["load_end"] = os.getloadavg()
    _write(jpath, state, results)
    all_methods = [m for m in (*SHALLOW, ITQ_BACKBONE, *DEEP) if any(r["method"] == m for r in results)]
    all_methods += sorted({r["method"] for r in results} - set(all_methods))
    md = table(results, datasets, all_methods, bits_list)
    (outdir / "quality.md").write_text(md + "\n")
    plot(results, datasets, all_methods, bits_list, outdir / "map_vs_bits.png")
    for ds in datasets:
        if any(r["dataset"] == ds and "pr_curve" in r["metrics"] for r in results):
            plot_pr(results, ds, all_methods, bits_list, outdir / f"pr_{ds}.png")
    print(md)
    print(f"machine: {state}")


def _write(path, state, results):
    path.write_text(json.dumps({"machine": state, "results": results}, indent=1))


if __name__ == "__main__":
    main()
