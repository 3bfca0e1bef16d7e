"""Where a supervised model's mAP goes: its fit to the database, and the mAP an ideal database would give.

For an ``adalabel`` checkpoint on the quality protocol (Fashion-MNIST, seed 0: 1,000 test queries, the 60,000
training images as the database), prints the nearest-codeword accuracy of the database and of the queries, the
mAP of correctly and wrongly classified queries, and the mAP when every database code is replaced by its class's
codeword (an oracle: the ceiling of this classifier's queries against a perfectly tight database) or by its
nearest codeword. A diagnosis, not a method: the oracle reads the database labels.

Usage: ``python benchmarks/diagnose_supervised.py MODEL.pt``
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from hashtool.codes import pack
from hashtool.datasets import load_dataset, make_splits
from hashtool.evaluate import hamming_distances, retrieval_metrics
from hashtool.train.checkpoint import checkpoint_preprocess, load_checkpoint
from hashtool.train.data import encode_packed


def main(path: str) -> None:
    torch.set_num_threads(2)
    model, ckpt = load_checkpoint(path)  # in eval mode
    pre = checkpoint_preprocess(ckpt)
    splits = make_splits(load_dataset("fashion-mnist"), seed=0)
    q, ql = splits.part("query")
    d, dl = splits.part("database")
    cq, cd = encode_packed(model, q, pre), encode_packed(model, d, pre)
    words = pack(model.binary_codewords().numpy().astype(np.float32) * 2 - 1)
    pd, pq = hamming_distances(cd, words).argmin(1), hamming_distances(cq, words).argmin(1)
    ok = pq == ql

    def m(qc, qlab, dc):
        return retrieval_metrics(qc, qlab, dc, dl)["map"]

    print(f"database accuracy (nearest codeword) {np.mean(pd == dl):.4f}, queries {ok.mean():.4f}")
    print(f"mAP {m(cq, ql, cd):.4f}: correctly classified queries {m(cq[ok], ql[ok], cd):.4f}, the others {m(cq[~ok], ql[~ok], cd):.4f}")
    print(f"mAP against an ideal database (each code = its class's codeword): {m(cq, ql, words[dl]):.4f}")
    print(f"mAP against the database snapped to its nearest codeword: {m(cq, ql, words[pd]):.4f}")


if __name__ == "__main__":
    main(sys.argv[1])
