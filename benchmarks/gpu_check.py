"""Measurements behind benchmarks/gpu_check.sh (run that script; this is its engine).

    python benchmarks/gpu_check.py model     [--model M] [--out DIR]
    python benchmarks/gpu_check.py parity    --model M [--n 512] [--tol 1e-4]
    python benchmarks/gpu_check.py speed     --model M --provider cuda|cpu [--batch 256]
    python benchmarks/gpu_check.py catalogue --rows N --out CSV
    python benchmarks/gpu_check.py train     --device cuda|cpu [--n 2048] [--batch 64]
    python benchmarks/gpu_check.py dataset   --n N --out DIR

Each prints `key: value` lines that the shell script gathers into its report.
Inference parts need only ONNX Runtime; `train` and the `model` fallback need torch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def _ort():  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    return ort


def find_model(explicit: str | None) -> Path | None:
    """The model to measure: --model, else the default model, else the first installed one."""
    if explicit:
        return Path(explicit)
    from galmerge.inference.doctor import default_models_location, find_models

    location = default_models_location()
    models = find_models(location) if location else []
    preferred = [m for m in models if m.name == "deepmerge-sdss.onnx"]
    return (preferred or models or [None])[0]


def export_random_deepmerge(out: Path) -> Path:
    """Fallback when no model is installed: DeepMerge (Table A1) with seeded random weights."""
    import torch

    from galmerge.training.models import DeepMerge

    torch.manual_seed(0)
    net = DeepMerge().eval()

    class Prob(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.net(images), dim=1)[:, 1]

    example = torch.rand(2, 3, 75, 75)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(Prob().eval(), (example,), dynamo=True, input_names=["images"],
                                output_names=["p_merger"],
                                dynamic_shapes={"images": {0: batch}})
    out.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(out))
    return out


def _input(session) -> tuple[str, tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    inp = session.get_inputs()[0]
    c, h, w = (int(d) for d in inp.shape[1:])
    return inp.name, (c, h, w)


def _images(n: int, chw: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    # 8-bit-like pixel values: the shipped models take display pixels in [0, 255].
    return np.random.default_rng(seed).uniform(0, 255, size=(n, *chw)).astype(np.float32)


def _session(model: Path, provider: str, **cuda_options: str):  # type: ignore[no-untyped-def]
    ort = _ort()
    opts = ort.SessionOptions()
    providers: list = [CPU] if provider == "cpu" else [(CUDA, {
        "cudnn_conv_algo_search": "HEURISTIC", **cuda_options}), CPU]
    sess = ort.InferenceSession(str(model), opts, providers=providers)
    if provider == "cuda" and sess.get_providers()[0] != CUDA:
        raise SystemExit(f"error: CUDA provider did not initialise "
                         f"(in use: {sess.get_providers()})")
    return sess


def cmd_model(args: argparse.Namespace) -> int:
    model = find_model(args.model)
    if model is None:
        model = export_random_deepmerge(Path(args.out) / "random-deepmerge.onnx")
        print("model_note: no installed model; exported a random-weight DeepMerge")
    print(f"model: {model}")
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    cpu = _session(Path(args.model), "cpu")
    gpu = _session(Path(args.model), "cuda")
    name, chw = _input(cpu)
    x = _images(args.n, chw, seed=1)
    worst = 0.0
    for start in range(0, args.n, args.batch):
        xb = x[start:start + args.batch]
        pc = np.asarray(cpu.run(None, {name: xb})[0], dtype=np.float64)
        pg = np.asarray(gpu.run(None, {name: xb})[0], dtype=np.float64)
        worst = max(worst, float(np.max(np.abs(pc - pg))))
    ok = worst <= args.tol
    print(f"parity_model_only: max |dp| cpu vs cuda = {worst:.2e} over {args.n} images "
          f"({'ok' if ok else 'FAIL'}, tol {args.tol:g})")
    return 0 if ok else 1


def _rate(fn, batch: int, seconds: float) -> float:  # type: ignore[no-untyped-def]
    for _ in range(3):  # warm-up (cuDNN algorithm search, arena growth, graph capture)
        fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds and n >= 5:
            return n * batch / dt


def cmd_speed(args: argparse.Namespace) -> int:
    model, batch, provider = Path(args.model), args.batch, args.provider
    sess = _session(model, provider)
    name, chw = _input(sess)
    out_name = sess.get_outputs()[0].name
    x = _images(batch, chw)
    tag = f"{provider} batch {batch}"
    rate = _rate(lambda: sess.run([out_name], {name: x}), batch, args.seconds)
    print(f"speed_model_only[{tag}, run]: {rate:,.0f} images/s")

    device = "cuda" if provider == "cuda" else "cpu"
    binding = sess.io_binding()

    def bound() -> None:
        binding.bind_cpu_input(name, x)
        binding.bind_output(out_name, device)
        sess.run_with_iobinding(binding)
        binding.copy_outputs_to_cpu()

    rate = _rate(bound, batch, args.seconds)
    print(f"speed_model_only[{tag}, io_binding]: {rate:,.0f} images/s")

    if provider == "cuda":
        ort = _ort()
        try:
            gsess = _session(model, "cuda", enable_cuda_graph="1")
            x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
            y_dev = ort.OrtValue.ortvalue_from_shape_and_type(
                [batch], np.float32, "cuda", 0)
            gbind = gsess.io_binding()
            gbind.bind_ortvalue_input(name, x_dev)
            gbind.bind_ortvalue_output(out_name, y_dev)
            host = x.copy()

            def graph() -> None:
                x_dev.update_inplace(host)  # new inputs into the captured buffer
                gsess.run_with_iobinding(gbind)
                y_dev.numpy()

            rate = _rate(graph, batch, args.seconds)
            print(f"speed_model_only[{tag}, cuda_graph]: {rate:,.0f} images/s")
        except Exception as exc:  # a graph-incompatible model or ORT build is a finding
            print(f"speed_model_only[{tag}, cuda_graph]: unavailable "
                  f"({' '.join(str(exc).split())[:200]})")
    return 0


def cmd_catalogue(args: argparse.Namespace) -> int:
    """A catalogue of N rows cycling over the bundled example cutouts (unique ids)."""
    import pandas as pd

    example = ROOT / "catalogs" / "sdss_example" / "sdss_example.csv"
    base = pd.read_csv(example, dtype={"objid": str})
    reps = -(-args.rows // len(base))
    cat = pd.concat([base] * reps, ignore_index=True).iloc[:args.rows].copy()
    cat["file_loc"] = [str((example.parent / f).resolve()) for f in cat["file_loc"]]
    cat["objid"] = np.arange(1, len(cat) + 1, dtype=np.int64)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cat.to_csv(args.out, index=False)
    print(f"catalogue: {args.out} ({len(cat)} rows over {len(base)} example cutouts)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """One epoch of DeepMerge on random labelled images (the training hot loop only)."""
    import torch

    from galmerge.training.models import DeepMerge

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"train_epoch[cuda]: unavailable (torch {torch.__version__}, "
              f"cuda available: False)")
        return 1
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = DeepMerge().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(args.n, 3, 75, 75)
    y = torch.randint(0, 2, (args.n,))
    if args.device == "cuda":
        x, y = x.pin_memory(), y.pin_memory()

    def epoch() -> float:
        model.train()
        total = 0.0
        for start in range(0, args.n, args.batch):
            xb = x[start:start + args.batch].to(dev, non_blocking=True)
            yb = y[start:start + args.batch].to(dev, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        return total

    epoch()  # warm-up epoch (cuDNN autotune, allocator)
    if args.device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    loss = epoch()
    if args.device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"train_epoch[{args.device}]: {args.n} images in {dt:.2f} s = {args.n / dt:,.0f} "
          f"images/s (batch {args.batch}, {name}, loss sum {loss:.2f})")
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    """A small source/target pair for `galmerge train` when `galmerge simulate` is absent.

    Round blobs (non-merger) or blob + companion (merger), noisier target: enough
    structure for a timing epoch, not a science result.
    """
    from galmerge.conventions import FLUX_LINEAR, ModelConvention
    from galmerge.data.dataset import write_dataset

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:75, 0:75].astype(np.float32)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    conv = ModelConvention(pixel_convention=FLUX_LINEAR, bands=("g", "r", "i"))
    for name, noise in (("source", 0.02), ("target", 0.25)):
        labels = (np.arange(args.n) % 2).astype(np.int8)
        imgs = np.empty((args.n, 3, 75, 75), np.float32)
        for i in range(args.n):
            cx, cy = 37 + rng.normal(0, 1.5, 2)
            g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 32.0)
            if labels[i]:
                g += 0.6 * np.exp(-((xx - cx - 12) ** 2 + (yy - cy) ** 2) / 16.0)
            imgs[i] = g[None] * np.array([1.0, 1.4, 1.8], np.float32)[:, None, None]
        imgs += rng.normal(0, noise, imgs.shape).astype(np.float32)
        write_dataset(out / f"{name}.h5", imgs, labels, conv)
    print(f"dataset: {out}/source.h5 + target.h5 ({args.n} images each, blobs, not a simulation)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("model")
    p.add_argument("--model")
    p.add_argument("--out", default="gpu-check")
    p = sub.add_parser("parity")
    p.add_argument("--model", required=True)
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--tol", type=float, default=1e-4)
    p = sub.add_parser("speed")
    p.add_argument("--model", required=True)
    p.add_argument("--provider", choices=("cpu", "cuda"), required=True)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seconds", type=float, default=3.0)
    p = sub.add_parser("catalogue")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("train")
    p.add_argument("--device", choices=("cpu", "cuda"), required=True)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--batch", type=int, default=64)
    p = sub.add_parser("dataset")
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    return {"dataset": cmd_dataset, "model": cmd_model, "parity": cmd_parity, "speed": cmd_speed,
            "catalogue": cmd_catalogue, "train": cmd_train}[args.cmd](args)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
