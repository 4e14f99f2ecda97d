"""Issue 5's table on a GPU: otpipe vs GeomLoss / KeOps, side by side in one process, CUDA tensors.

Rows (D = 3, float32, p = 2, points uniform in the unit cube, y shifted by 0.3 and shrunk by 0.8):

1. one reduction pass ``f_i = -eps log sum_j exp(h_j - |x_i - y_j|^2 / (2 eps))``, N = M = 20k: otpipe's
   KeOps operator vs the bare pykeops ``LazyTensor`` formula (pairs/s; they should tie: same KeOps engine);
2. S_eps value + gradient, N = M = 20k, blur 0.05: otpipe ``keops`` vs GeomLoss ``online``;
3. S_eps value + gradient, blur 0.01, N = M in ``--ms-sizes`` (default 50k, 200k, 1M): otpipe ``multiscale``
   (KeOps block-sparse ranges) vs GeomLoss ``multiscale``; the value is compared with otpipe's full
   ``keops`` solve where ``--full`` asks for it.

Each timing: ``torch.cuda.synchronize()`` around the call, a warm-up at a small size first (KeOps
compilation), the best of ``--repeats`` with the implementations interleaved. Needs CUDA; ``--device cpu``
with small ``--n``/``--ms-sizes`` runs the same code on the CPU (a smoke test, not a benchmark).

Usage (on the GPU machine)::

    python benchmarks/bench_gpu.py --out benchmarks/results/gpu.md --full
    python benchmarks/bench_gpu.py --device cpu --n 2000 --ms-sizes 3000 --repeats 1 --fine-keops  # smoke test
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

__all__ = ["main"]

P = 2


def _data(n: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(n, 3, generator=g), 0.8 * torch.rand(n, 3, generator=g) + 0.3
    return x.to(device), y.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _value_and_grad(loss, x, y):
    def run():
        xg = x.clone().requires_grad_()
        v = loss(xg, y)
        (g,) = torch.autograd.grad(v, [xg])
        return float(v.detach())
    return run


def _otpipe(backend: str, blur: float):
    import otpipe

    return lambda x, y: otpipe.sinkhorn_divergence(x, y, p=P, blur=blur, scaling=0.5, backend=backend)


def _geomloss(backend: str, blur: float):
    from geomloss import SamplesLoss

    loss = SamplesLoss("sinkhorn", p=P, blur=blur, scaling=0.5, backend=backend)
    return lambda x, y: loss(x, y)


def _reduction_rows(n: int, device: str, repeats: int) -> list[str]:
    from pykeops.torch import LazyTensor

    from otpipe.costs import Cost
    from otpipe.kernels.keops import KeOpsOperator

    x, y = _data(n, device)
    h = torch.zeros(1, n, device=device)
    eps = 0.05**2
    op = KeOpsOperator(x[None], y[None], Cost())

    def bare():
        x_i, y_j = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
        return -eps * (LazyTensor(h[0][None, :, None]) - ((x_i - y_j) ** 2).sum(-1) / (2 * eps)).logsumexp(dim=1)

    impls = {"otpipe keops operator": lambda: op.softmin(eps, h), "pykeops LazyTensor": bare}
    best = {k: _timed(f, device)[0] for k, f in impls.items()}  # warm-up / compile
    best = {k: float("inf") for k in impls}
    for _ in range(repeats):
        for k, f in impls.items():
            best[k] = min(best[k], _timed(f, device)[0])
    ref = best["pykeops LazyTensor"]
    return [f"| reduction pass | {n:,} | {k} | {t * 1e3:.2f} ms | {n * n / t:.3g} pairs/s | {ref / t:.2f}x |"
            for k, t in best.items()]


def _loss_rows(label: str, sizes: list[int], impls: dict, device: str, repeats: int, ref_key: str | None,
               anchor: str) -> list[str]:
    xs, ys = _data(1000, device)
    for f in impls.values():  # warm-up: KeOps compilation
        _value_and_grad(f, xs, ys)()
    rows = []
    for n in sizes:
        x, y = _data(n, device)
        best, val = {k: float("inf") for k in impls}, {}
        for _ in range(repeats):
            for k, f in impls.items():
                t, v = _timed(_value_and_grad(f, x, y), device)
                best[k], val[k] = min(best[k], t), v
                print(f"{label} N={n} {k}: {t:.3f} s  S={v:.7g}", flush=True)
        ref = val.get(ref_key) if ref_key else None
        for k in impls:
            rel = f"{abs(val[k] - ref) / abs(ref):.1e}" if ref is not None else ""
            ratio = f"{best[anchor] / best[k]:.2f}x" if anchor in best else ""
            rows.append(f"| {label} | {n:,} | {k} | {best[k]:.3f} s | S = {val[k]:.7f} {rel} | {ratio} |")
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=20000, help="size of rows 1 and 2")
    ap.add_argument("--ms-sizes", default="50000,200000,1000000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full", action="store_true", help="also otpipe's full keops solve in row 3 (reference value)")
    ap.add_argument("--fine-keops", action="store_true",
                    help="force KeOps ranges for multiscale's point reductions (what CUDA uses) on a CPU smoke test")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.fine_keops:
        from otpipe.kernels import multiscale as kms

        kms.FINE_BACKEND = "keops"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine, or pass --device cpu for a smoke test")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    rows = ["| figure | N = M | implementation | time | value / rate | ratio |", "|---|---|---|---|---|---|"]
    rows += _reduction_rows(args.n, args.device, args.repeats)
    rows += _loss_rows("S_eps + grad, blur 0.05", [args.n],
                       {"otpipe keops": _otpipe("keops", 0.05), "GeomLoss online": _geomloss("online", 0.05)},
                       args.device, args.repeats, None, "GeomLoss online")
    ms = {"otpipe multiscale": _otpipe("multiscale", 0.01), "GeomLoss multiscale": _geomloss("multiscale", 0.01)}
    if args.full:
        ms["otpipe keops (full solve)"] = _otpipe("keops", 0.01)
    rows += _loss_rows("multiscale S_eps + grad, blur 0.01", [int(s) for s in args.ms_sizes.split(",")], ms,
                       args.device, args.repeats, "otpipe keops (full solve)" if args.full else None,
                       "GeomLoss multiscale")
    text = f"device: {name}; torch {torch.__version__}\n\n" + "\n".join(rows) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
