import onnxruntime as ort, numpy as np, json, collections, sys, time
p = sys.argv[1] if len(sys.argv) > 1 else "src/hashtool/assets/photo-encoder.onnx"
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.enable_profiling = True
s = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
i = s.get_inputs()[0]; print(i.name, i.shape, i.type)
shape = [16 if not isinstance(d, int) else d for d in i.shape]
x = (np.random.default_rng(0).integers(0, 256, shape)).astype(np.uint8 if "uint8" in i.type else np.float32)
for _ in range(5): s.run(None, {i.name: x})
f = s.end_profiling()
ev = json.load(open(f))
agg = collections.Counter(); cnt = collections.Counter()
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        op = e["args"].get("op_name"); agg[op] += e["dur"]; cnt[op] += 1
tot = sum(agg.values())
for op, d in agg.most_common(15): print(f"{op:25s} {d/5/16/1000:7.3f} ms/img  {d/tot:5.1%}  n={cnt[op]//5}")
print("total", tot/5/16/1000, "ms/img")
node = collections.Counter()
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["args"].get("op_name") == "Conv":
        node[e["name"][:-12]] += e["dur"]
run = 0
for n, d in sorted(node.items(), key=lambda kv: [e["ts"] for e in ev if e["name"].startswith(kv[0])][0]):
    run += d
    print(f"{n[:60]:60s} {d/5/16/1000:6.3f} cum {run/tot:5.1%}")
