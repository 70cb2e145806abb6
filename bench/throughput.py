"""Training and inference throughput of every architecture x encoder, per Keras backend.

    .venv/bin/python bench/throughput.py                       # 3 archs x 4 encoders, TF + PyTorch
    .venv/bin/python bench/throughput.py --quick               # U-Net on tiny and DenseNet-121
    .venv/bin/python bench/throughput.py --backends torch --archs unet --encoders resnet50

For each backend a child process (the backend is fixed when Keras is imported) first
measures the machine's own matrix-multiply peak with keras.ops.matmul (square float32
products, or bfloat16 with --precision mixed_bfloat16), then for each network at 224 x 224
times predict_on_batch (inference) and train_on_batch with the hybrid loss and Adam
(training), after warm-up calls. FLOPs per image are counted from the layer shapes
(bench.common.conv_flops: convolutions and dense layers, forward); a training step is taken
as 3x the forward FLOPs (forward, and backward for inputs and weights). The share of the
peak is achieved FLOP/s over the matmul FLOP/s measured in the same process.

On the device tool (bench/device/README.md) it prints ms per sample beside the paper's
Table 8: 2.53-5.58 ms per sample on an RTX 2080 Ti.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, conv_flops, widths  # noqa: E402
from mlworker.networks import ARCHS, PAPER_ENCODERS  # noqa: E402

PAPER_MS = (2.53, 5.58)  # Table 8, inference ms per sample, RTX 2080 Ti


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backends", default="tensorflow,torch", help="comma-separated")
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--encoders", default=",".join(PAPER_ENCODERS))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--decoder-widths", default="256,128,64,32,16", help="strides 16..1")
    p.add_argument("--batch", type=int, help="inference batch (default 8 on CPU, 32 on GPU)")
    p.add_argument("--train-batch", type=int, help="training batch (default 4 on CPU, 32 on GPU)")
    p.add_argument("--seconds", type=float, default=4.0, help="time each measurement this long")
    p.add_argument("--precision", default="float32", help="float32 or mixed_bfloat16")
    p.add_argument("--quick", action="store_true", help="U-Net on tiny and DenseNet-121 only")
    p.add_argument("--json", type=Path, help="write all rows here")
    p.add_argument("--child", help=argparse.SUPPRESS)  # the backend, inside a child process
    args = p.parse_args(argv)
    if args.quick:
        args.archs, args.encoders, args.seconds = "unet", "tiny,densenet121", min(args.seconds, 2)
    return args


def _timed(fn, seconds: float, *, warmup: int = 2) -> tuple[float, int]:
    """(seconds per call, calls): `warmup` untimed calls, then calls until `seconds` pass."""
    for _ in range(warmup):
        fn()
    calls, started = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and calls >= 2:
            return elapsed / calls, calls


def _sync(x) -> None:
    """Wait for the device: converting one element to numpy forces the computation."""
    import keras

    keras.ops.convert_to_numpy(keras.ops.ravel(x)[:1])


def matmul_peak(precision: str, seconds: float) -> dict:
    import keras
    import numpy as np

    n = 4096 if _gpu() else 2048
    dtype = "bfloat16" if precision == "mixed_bfloat16" else "float32"
    rng = np.random.default_rng(0)
    a = keras.ops.convert_to_tensor(rng.standard_normal((n, n)).astype("float32"), dtype=dtype)
    b = keras.ops.convert_to_tensor(rng.standard_normal((n, n)).astype("float32"), dtype=dtype)
    per_call, calls = _timed(lambda: _sync(keras.ops.matmul(a, b)), seconds)
    return {"n": n, "dtype": dtype, "tflops": 2 * n**3 / per_call / 1e12, "calls": calls}


def _gpu() -> bool:
    from mlworker.train import gpu_available

    return gpu_available()


def measure(arch: str, encoder: str, args: argparse.Namespace) -> dict:
    import keras
    import numpy as np

    from mlworker.nets import build_segmenter, count_params
    from mlworker.train import compile_segmenter

    previous = keras.config.dtype_policy()
    if args.precision != "float32":
        keras.config.set_dtype_policy(args.precision)
    try:
        decoder_widths = widths(args.decoder_widths)
        model = build_segmenter(
            arch, encoder, input_shape=(args.size, args.size, 3), decoder_widths=decoder_widths
        )
    finally:
        keras.config.set_dtype_policy(previous)
    flops = conv_flops(model)
    params = sum(count_params(model))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    per_batch, _ = _timed(lambda: _sync(model.predict_on_batch(x)), args.seconds)
    compile_segmenter(model)
    xt = (
        x[: args.train_batch]
        if args.train_batch <= args.batch
        else np.resize(x, (args.train_batch, *x.shape[1:]))
    )
    y = (rng.random((args.train_batch, args.size, args.size, 1)) > 0.8).astype("float32")
    per_step, _ = _timed(lambda: model.train_on_batch(xt, y), args.seconds)
    keras.backend.clear_session()
    infer_ips = args.batch / per_batch
    train_ips = args.train_batch / per_step
    return {
        "arch": arch,
        "encoder": encoder,
        "params": params,
        "gflop": flops / 1e9,
        "infer_images_s": infer_ips,
        "train_images_s": train_ips,
        "infer_ms_per_sample": 1000 / infer_ips,
        "infer_tflops": flops * infer_ips / 1e12,
        "train_tflops": 3 * flops * train_ips / 1e12,
    }


def child(args: argparse.Namespace) -> int:
    import keras

    # The peak is measured before and after the networks and the higher one kept: on a
    # shared machine one reading can fall in a busy moment.
    first = matmul_peak(args.precision, args.seconds)
    rows = []
    for encoder in args.encoders.split(","):
        for arch in args.archs.split(","):
            row = measure(arch, encoder, args)
            row["backend"] = keras.config.backend()
            rows.append(row)
    last = matmul_peak(args.precision, args.seconds)
    peak = max(first, last, key=lambda p: p["tflops"])
    peak["readings_tflops"] = [first["tflops"], last["tflops"]]
    for row in rows:
        row["peak_tflops"] = peak["tflops"]
        print(json.dumps(row), flush=True)
    print(json.dumps({"peak": peak, "backend": keras.config.backend(), "gpu": _gpu()}), flush=True)
    return 0


def run_backend(backend: str, args: argparse.Namespace, argv: list[str]) -> tuple[dict, list[dict]]:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", backend]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} child failed:\n{proc.stderr[-3000:]}")
    rows, info = [], {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            data = json.loads(line)
            (info.update(data) if "peak" in data else rows.append(data))
    return info, rows


def report(infos: dict[str, dict], rows: list[dict], args: argparse.Namespace) -> None:
    for backend, info in infos.items():
        peak = info["peak"]
        print(
            f"{backend}: matmul peak {peak['tflops'] * 1000:.1f} GFLOP/s "
            f"({peak['n']}² {peak['dtype']}, {'GPU' if info['gpu'] else 'CPU'}; readings "
            + ", ".join(f"{1000 * t:.1f}" for t in peak["readings_tflops"])
            + ")"
        )
    print(
        f"\n{'backend':<11}{'network':<22}{'GFLOP/img':>10}{'infer img/s':>12}{'ms/img':>9}"
        f"{'% peak':>8}{'train img/s':>12}{'% peak':>8}"
    )
    for r in rows:
        print(
            f"{r['backend']:<11}{r['arch'] + '/' + r['encoder']:<22}{r['gflop']:>10.2f}"
            f"{r['infer_images_s']:>12.2f}{r['infer_ms_per_sample']:>9.2f}"
            f"{100 * r['infer_tflops'] / r['peak_tflops']:>7.1f}%"
            f"{r['train_images_s']:>12.2f}{100 * r['train_tflops'] / r['peak_tflops']:>7.1f}%"
        )
    backends = list(infos)
    if len(backends) == 2:
        a, b = backends
        by = {(r["backend"], r["arch"], r["encoder"]): r for r in rows}
        print(f"\n{a} / {b} throughput, same networks, same machine:")
        for r in rows:
            if r["backend"] == a and (b, r["arch"], r["encoder"]) in by:
                o = by[b, r["arch"], r["encoder"]]
                print(
                    f"  {r['arch']}/{r['encoder']}: inference "
                    f"{r['infer_images_s'] / o['infer_images_s']:.2f}x, training "
                    f"{r['train_images_s'] / o['train_images_s']:.2f}x"
                )
    if any(info["gpu"] for info in infos.values()):
        low, high = PAPER_MS
        print(f"\nms per sample against the paper's Table 8 ({low}-{high} ms, RTX 2080 Ti):")
        for r in rows:
            ms = r["infer_ms_per_sample"]
            print(
                f"  {r['backend']} {r['arch']}/{r['encoder']}: {ms:.2f} ms = {ms / low:.2f}x-{ms / high:.2f}x"
            )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        gpu = _gpu()
        args.batch = args.batch or (32 if gpu else 8)
        args.train_batch = args.train_batch or (32 if gpu else 4)
        return child(args)
    infos, rows = {}, []
    for backend in args.backends.split(","):
        started = time.perf_counter()
        infos[backend], found = run_backend(backend, args, argv)
        rows += found
        print(
            f"[{backend}: {len(found)} networks in {time.perf_counter() - started:.0f} s]",
            flush=True,
        )
    report(infos, rows, args)
    if args.json:
        args.json.write_text(json.dumps({"backends": infos, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
