import time, torch
from hashtool.train.methods import get_method
from hashtool.train.models import MODELS
torch.set_num_threads(2)
m = get_method("adalabel"); hp = dict(m.hparams, num_classes=10)
model = MODELS["adalabel"][1](m.make_config(32, 1, 28, 28, hp)).to(memory_format=torch.channels_last)
opt = torch.optim.Adam(model.parameters(), 1e-3)
x = torch.randn(144, 1, 28, 28).contiguous(memory_format=torch.channels_last); w = torch.randn(115, 1, 28, 28).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (144,))
for mode in ("fp32", "bf16", "fp32", "bf16"):
    model.train()
    ts = []
    for i in range(25):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            with torch.no_grad():
                model.encode(w)
            loss = torch.nn.functional.cross_entropy(model.similarities(model.encode(x).float(), 10.0), y)
        opt.zero_grad(); loss.backward(); opt.step()
        ts.append(time.perf_counter() - t)
    ts = sorted(ts[5:])
    print(mode, "median step %.1f ms" % (1000 * ts[len(ts) // 2]), flush=True)
