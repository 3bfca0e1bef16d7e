"""Two seeded bf16 trainings of adalabel on a small real subset: equal weights?"""
import sys, torch
sys.path.insert(0, "/work/main/tests")
from test_train_supervised import toy_images
from hashtool.datasets import Dataset, make_splits
from hashtool.train.engine import TrainConfig, train
xtr, ytr = toy_images(480, 1); xte, yte = toy_images(120, 2)
splits = make_splits(Dataset("toy", xtr, ytr, xte, yte), n_query=60, n_val=80, seed=0)
outs = []
for i in range(2):
    cfg = TrainConfig(method="adalabel", bits=16, epochs=2, threads=2, quiet=True, labeled_fraction=0.1, batch_size=32,
                      hparams={"precision": "bf16", "filters": "8,P,16,F32", "labeled_batch": 16})
    m, meta = train(cfg, splits, f"/tmp/semi_r9_det{i}.pt")
    outs.append(({k: v.clone() for k, v in m.state_dict().items()}, meta["history"][-1]["loss"]))
same = all(torch.equal(outs[0][0][k], outs[1][0][k]) for k in outs[0][0])
print("identical weights:", same, "losses", outs[0][1], outs[1][1])
