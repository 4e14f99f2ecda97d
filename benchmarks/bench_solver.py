"""Benchmark value + gradient of the Sinkhorn divergence S_eps: otpipe (each backend) vs GeomLoss vs POT.

N = M in {1k, 5k, 20k}, D = 3, float32, points uniform in the unit cube (y shifted by 0.3 and shrunk by 0.8),
p = 2, blur = 0.05, scaling = 0.5 (GeomLoss's defaults, fixed eps-scaling schedule for both libraries).
Each timing is one ``S_eps(x, y)`` forward and ``.backward()`` w.r.t. ``x``; every implementation runs in
the same process, once as warm-up at the first size (KeOps compilation, cpu kernel build), then the best of ``--repeats``,
rounds interleaved so all see the same background load.

POT: ``ot.sinkhorn2(a, b, M, reg=eps, method="sinkhorn_log")`` on torch tensors, debiased the same way
(three dense solves, each to POT's own stopping rule, ``numItermax=1000``): a different algorithm (no
eps-scaling) and quantity (transport cost of the entropic plan), timed for comparison only.

Sizes whose dense matrices would need several GB (tensorized at 20k) or that take > 2 min are skipped
and marked. Usage::

    python benchmarks/bench_solver.py [--sizes 1000,5000,20000] [--repeats 2] [--out benchmarks/results/solver.md]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

__all__ = ["main"]

BLUR, P = 0.05, 2


def _data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g), 0.8 * torch.rand(n, 3, generator=g) + 0.3


def _otpipe(backend):
    import otpipe

    def run(x, y):
        return otpipe.sinkhorn_divergence(x, y, p=P, blur=BLUR, scaling=0.5, backend=backend)
    return run


def _geomloss(backend):
    from geomloss import SamplesLoss

    loss = SamplesLoss("sinkhorn", p=P, blur=BLUR, scaling=0.5, backend=backend)
    return lambda x, y: loss(x, y)


def _pot():
    import ot

    eps = BLUR**P

    def ot_eps(u, v):
        M = ((u[:, None, :] - v[None, :, :]) ** 2).sum(-1) / 2
        w1 = torch.full((u.shape[0],), 1.0 / u.shape[0])
        w2 = torch.full((v.shape[0],), 1.0 / v.shape[0])
        return ot.sinkhorn2(w1, w2, M, reg=eps, method="sinkhorn_log", numItermax=1000, stopThr=1e-6)

    return lambda x, y: ot_eps(x, y) - 0.5 * ot_eps(x, x.detach()) - 0.5 * ot_eps(y, y)


#: timed once, without warm-up (POT differentiates through its ~1000 dense iterations: minutes per call)
ONCE = {"POT sinkhorn_log"}

IMPLS = {
    "otpipe cpu": lambda: _otpipe("cpu"),
    "otpipe keops": lambda: _otpipe("keops"),
    "otpipe tensorized": lambda: _otpipe("tensorized"),
    "GeomLoss online": lambda: _geomloss("online"),
    "GeomLoss tensorized": lambda: _geomloss("tensorized"),
    "POT sinkhorn_log": _pot,
}
#: implementations skipped above these sizes (dense N x N matrices of several GB, or > 2 min per call)
MAX_N = {"otpipe tensorized": 5000, "GeomLoss tensorized": 5000, "POT sinkhorn_log": 1000}


def _time(fn, x, y):
    xg = x.clone().requires_grad_()
    t0 = time.perf_counter()
    v = fn(xg, y)
    v.backward()
    return time.perf_counter() - t0, float(v)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,20000")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--out", default="benchmarks/results/solver.md")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    names = [n for n in args.impls.split(",") if n]
    fns = {n: IMPLS[n]() for n in names}
    rows = []
    for n in sizes:
        x, y = _data(n)
        live = [k for k in names if n <= MAX_N.get(k, 10**9)]
        best, val = {}, {}
        if n == sizes[0]:
            for k in live:  # warm-up once (KeOps formulas, cpu kernel build); later sizes reuse them
                if k not in ONCE:
                    _time(fns[k], x, y)
        for r in range(args.repeats):
            for k in live:
                if k in ONCE and r > 0:
                    continue
                t, v = _time(fns[k], x, y)
                best[k] = min(best.get(k, float("inf")), t)
                val[k] = v
                print(f"N={n} {k}: {t:.3f} s  S={v:.6g}", flush=True)
        rows.append((n, best, val))
    lines = ["| N = M | implementation | time (s) | S_eps | time / otpipe cpu | time / GeomLoss online |",
             "| --- | --- | --- | --- | --- | --- |"]
    for n, best, val in rows:
        ref, gl = best.get("otpipe cpu"), best.get("GeomLoss online")
        for k in names:
            if k not in best:
                lines.append(f"| {n:,} | {k} | skipped (dense {n}x{n} matrices / > 2 min) | | | |")
                continue
            r1 = f"{best[k] / ref:.1f}x" if ref else ""
            r2 = f"{best[k] / gl:.2f}x" if gl else ""
            lines.append(f"| {n:,} | {k} | {best[k]:.3f} | {val[k]:.6f} | {r1} | {r2} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
