"""Benchmark the multiscale solver: otpipe ``multiscale`` vs GeomLoss ``multiscale``, and a 1M-point run.

S_eps value + gradient w.r.t. ``x``, D = 3, float32, p = 2, blur = 0.01, scaling = 0.5 (fixed eps-scaling
schedule in both libraries); points uniform in the unit cube, ``y`` shifted by 0.3 and shrunk by 0.8.
For each size: GeomLoss multiscale (if ``--geomloss``), otpipe multiscale, and otpipe's full ``cpu`` solve
as the reference value ("full solve") where affordable. ``--one-million`` runs only otpipe multiscale at
N = M = 1,000,000 in this process and reports its peak resident memory (``resource.getrusage``); run it in
a fresh process so the peak is its own.

Usage::

    python benchmarks/bench_multiscale.py --sizes 50000 --geomloss --full --repeats 2
    python benchmarks/bench_multiscale.py --sizes 200000 --full
    python benchmarks/bench_multiscale.py --one-million
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

__all__ = ["main"]

BLUR, P = 0.01, 2


def _data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g), 0.8 * torch.rand(n, 3, generator=g) + 0.3


def _run(fn, x, y):
    xg = x.clone().requires_grad_()
    t0 = time.perf_counter()
    v = fn(xg, y)
    v.backward()
    return time.perf_counter() - t0, float(v)


def _otpipe(backend):
    import otpipe

    return lambda x, y: otpipe.sinkhorn_divergence(x, y, p=P, blur=BLUR, scaling=0.5, backend=backend)


def _geomloss():
    from geomloss import SamplesLoss

    loss = SamplesLoss("sinkhorn", p=P, blur=BLUR, scaling=0.5, backend="multiscale")
    return lambda x, y: loss(x, y)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50000")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--geomloss", action="store_true")
    ap.add_argument("--full", action="store_true", help="also the full cpu solve (reference value)")
    ap.add_argument("--one-million", action="store_true")
    args = ap.parse_args(argv)
    if args.one_million:
        x, y = _data(1_000_000)
        t, v = _run(_otpipe("multiscale"), x, y)
        print(f"| 1,000,000 | otpipe multiscale | {t:.1f} | {v:.6f} | peak RSS {_peak_rss_gib():.2f} GiB |", flush=True)
        return
    impls = {"otpipe multiscale": _otpipe("multiscale")}
    if args.geomloss:
        impls["GeomLoss multiscale"] = _geomloss()
    if args.full:
        impls["otpipe cpu (full solve)"] = _otpipe("cpu")
    small_x, small_y = _data(2000)
    for k, fn in impls.items():  # warm-up: KeOps compilation, cpu kernel build
        _run(fn, small_x, small_y)
    for n in (int(s) for s in args.sizes.split(",")):
        x, y = _data(n)
        best, val = {}, {}
        for _ in range(args.repeats):
            for k, fn in impls.items():
                t, v = _run(fn, x, y)
                best[k], val[k] = min(best.get(k, float("inf")), t), v
                print(f"N={n} {k}: {t:.2f} s  S={v:.7g}", flush=True)
        ref = val.get("otpipe cpu (full solve)")
        gl = best.get("GeomLoss multiscale")
        for k in impls:
            rel = f"{abs(val[k] - ref) / abs(ref):.1e}" if ref is not None else ""
            sp = f"{gl / best[k]:.1f}x" if gl else ""
            print(f"| {n:,} | {k} | {best[k]:.2f} | {val[k]:.7f} | {rel} | {sp} |", flush=True)
    print(f"peak RSS {_peak_rss_gib():.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
