"""int8 experiment: quantise the bundled photo encoder (QDQ, per channel), calibrated on training photos.
usage: quant_exp.py make NCAL | speed MODEL... | agree MODEL..."""
import sys, time, glob, random
import numpy as np

SRC = "/work/main/src/hashtool/assets/photo-encoder.onnx"
OUT = "/work/cache/r9/q"


def photos(part, n, seed=0):
    from hashtool.encode.encoder import Encoder
    from hashtool.files.images import load_image
    pp = Encoder(SRC, threads=1).preprocess
    files = sorted(glob.glob(f"/work/photos/{part}/**/*.*", recursive=True))
    random.Random(seed).shuffle(files)
    out = []
    for p in files:
        try:
            out.append(load_image(p, pp))
        except Exception:
            pass
        if len(out) == n:
            break
    return np.stack(out)


def make(ncal):
    import onnx
    from onnxruntime.quantization import quantize_static, CalibrationDataReader, QuantFormat, QuantType, CalibrationMethod
    from onnxruntime.quantization.shape_inference import quant_pre_process
    cal = photos("train", ncal)
    pre = f"{OUT}/pre.onnx"
    quant_pre_process(SRC, pre, skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"images": cal[i:i + 16]} for i in range(0, len(cal), 16)])
        def get_next(self):
            return next(self.it, None)

    for name, kw in {
        "conv-minmax": dict(op_types_to_quantize=["Conv"], calibrate_method=CalibrationMethod.MinMax),
        "conv-pct": dict(op_types_to_quantize=["Conv"], calibrate_method=CalibrationMethod.Percentile),
        "convgemm-minmax": dict(op_types_to_quantize=["Conv", "Gemm"], calibrate_method=CalibrationMethod.MinMax),
    }.items():
        t = time.time()
        quantize_static(pre, f"{OUT}/{name}.onnx", Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, **kw)
        print(name, f"{time.time()-t:.0f}s", flush=True)


def session(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def speed(models):
    x = photos("heldout", 64)
    for m in models:
        for th in (1, 2):
            s = session(m, th)
            s.run(None, {"images": x[:16]})
            best = 1e9
            for _ in range(3):
                t = time.perf_counter()
                for i in range(0, 64, 16):
                    s.run(None, {"images": x[i:i + 16]})
                best = min(best, (time.perf_counter() - t) / 64)
            print(f"{m.split('/')[-1]:24s} threads {th}: {best*1e3:.2f} ms/img  {1/best:.0f} img/s", flush=True)


def agree(models):
    x = photos("heldout", 240)
    ref = np.unpackbits(session(SRC, 2).run(None, {"images": x})[0], axis=1)
    for m in models:
        c = np.unpackbits(session(m, 2).run(None, {"images": x})[0], axis=1)
        d = (c != ref).sum(1)
        print(f"{m.split('/')[-1]:24s} bits equal {1 - d.mean()/ref.shape[1]:.4f}  per-image differing bits median {np.median(d):.0f} max {d.max()}", flush=True)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(int(sys.argv[2]))
    elif cmd == "speed":
        speed(sys.argv[2:])
    else:
        agree(sys.argv[2:])
