"""Timing smoke test of the Triton backend's reductions on one GPU (to be folded into the GPU benchmark).

For N = M (default 20k), D in (3, 64), float32, p = 2, points uniform in the unit cube, it times

* ``softmin`` (one log-sum-exp pass; pairs per second), ``softmin_both`` (both directions, one launch),
  with ``tl.dot`` tiles as ``tf32x3`` (default), ``ieee`` and with TF32 on;
* ``softmin`` + gradient w.r.t. the rows (the fused forward pass) and w.r.t. the columns (one transposed pass);
* the float32 error of the softmin against a float64 dense computation on the first 256 rows.

Each timing is the best of ``--repeats`` after a warm-up call (Triton compiles each variant once).
Without CUDA it prints a line saying so and exits 0.

Usage::

    python benchmarks/bench_triton_smoke.py [--n 20000] [--dims 3 64] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import time

import torch

__all__ = ["main"]


def _best(fn, repeats: int) -> float:
    fn()  # warm-up / compile
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dims", type=int, nargs="+", default=[3, 64])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_triton_smoke: no CUDA device, skipped")
        return 0
    from otpipe.geometry.backends import tensorized
    from otpipe.geometry.backends import triton as tb
    from otpipe.geometry.costs import Cost

    n, cost = args.n, Cost(2.0)
    print(f"# Triton backend smoke timings: N = M = {n}, float32, p = 2, {torch.cuda.get_device_name()}")
    print("| D | variant | softmin | softmin_both | softmin + grad x | softmin + grad y | Gpairs/s (softmin) | rel. err |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for D in args.dims:
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.rand(1, n, D, device="cuda", generator=g)
        y = torch.rand(1, n, D, device="cuda", generator=g)
        h = torch.full((1, n), -float(torch.log(torch.tensor(float(n)))), device="cuda")
        eps = 0.05 ** 2 if D == 3 else 0.25
        ref = tensorized.operator(x[:, :256].double(), y.double(), cost).softmin(eps, h.double())
        for variant in ("tf32x3", "ieee", "tf32"):
            tb.FP32_DOT = "ieee" if variant == "ieee" else "tf32x3"
            tf32 = variant == "tf32"
            if D < tb.DOT_MIN_D and variant != "tf32x3":
                continue  # no dot tiles at this D: the variants coincide
            op = tb.operator(x, y, cost, tf32=tf32)
            t_f = _best(lambda: op.softmin(eps, h), args.repeats)
            t_b = _best(lambda: op.softmin_both(eps, h, h), args.repeats)

            def grad_x():
                xs = x.clone().requires_grad_()
                f = tb.operator(xs, y, cost, tf32=tf32).softmin(eps, h)
                return torch.autograd.grad(f.sum(), [xs])

            def grad_y():
                ys = y.clone().requires_grad_()
                f = tb.operator(x, ys, cost, tf32=tf32).softmin(eps, h)
                return torch.autograd.grad(f.sum(), [ys])

            t_gx = _best(grad_x, args.repeats)
            t_gy = _best(grad_y, args.repeats)
            err = float((op.softmin(eps, h)[:, :256].double() - ref).abs().max() / ref.abs().max())
            print(f"| {D} | {variant} | {t_f * 1e3:.2f} ms | {t_b * 1e3:.2f} ms | {t_gx * 1e3:.2f} ms | "
                  f"{t_gy * 1e3:.2f} ms | {n * n / t_f / 1e9:.1f} | {err:.1e} |", flush=True)
    tb.FP32_DOT = os.environ.get("OTPIPE_TRITON_FP32_DOT", "tf32x3")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
