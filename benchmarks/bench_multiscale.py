"""Benchmark the multiscale solver: otpipe ``multiscale`` vs GeomLoss ``multiscale``, and a 1M-point run.

S_eps value + gradient w.r.t. ``x``, D = 3, float32, p = 2, scaling = 0.5 (fixed eps-scaling schedule in both
libraries, or ``--tol`` for otpipe's converging mode), blur 0.01 unless ``--blurs``; points uniform in the unit
cube, ``y`` shifted by 0.3 and shrunk by 0.8 (``--data shifted``) or uniform in [0.25, 0.75]^3 (``--data
centered``, issue 14). For each size and blur: GeomLoss multiscale (if ``--geomloss``), otpipe multiscale, and
otpipe's full ``cpu`` solve as the reference ("full solve") where affordable; the error columns are the relative
differences of the value and of the x-gradient (L2) from it; "path" is what the multiscale solver did (coarse +
fine temperatures, or the full solve when no jump fits its bound). ``--one-million`` runs only otpipe multiscale
at N = M = 1,000,000 in this process and reports its peak resident memory (``resource.getrusage``); run it in a
fresh process so the peak is its own.

Usage::

    python benchmarks/bench_multiscale.py --sizes 50000 --geomloss --full --repeats 2
    python benchmarks/bench_multiscale.py --sizes 20000 --data centered --blurs 0.01,0.05,0.1,0.5 --full --geomloss
    python benchmarks/bench_multiscale.py --sizes 200000 --full
    python benchmarks/bench_multiscale.py --one-million
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import time

import torch

__all__ = ["main"]

BLUR, P = 0.01, 2


def _data(n: int, seed: int = 0, kind: str = "shifted"):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g)
    if kind == "centered":
        return x, 0.5 * torch.rand(n, 3, generator=g) + 0.25
    return x, 0.8 * torch.rand(n, 3, generator=g) + 0.3


def _run(fn, x, y):
    xg = x.clone().requires_grad_()
    t0 = time.perf_counter()
    v = fn(xg, y)
    v.backward()
    return time.perf_counter() - t0, float(v.detach()), xg.grad


def _otpipe(backend, blur=BLUR, tol=None):
    import otpipe

    return lambda x, y: otpipe.sinkhorn_divergence(x, y, p=P, blur=blur, scaling=0.5, backend=backend, tol=tol)


def _geomloss(blur=BLUR):
    from geomloss import SamplesLoss

    loss = SamplesLoss("sinkhorn", p=P, blur=blur, scaling=0.5, backend="multiscale")
    return lambda x, y: loss(x, y)


class _Path(logging.Handler):
    """Collects the multiscale solver's INFO lines: what it ran (coarse + fine temperatures, or the full solve)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def path(self) -> str:
        for line in self.lines:
            if "temperatures" in line:
                return line.split("clusters, ")[1].split(" temperatures")[0].replace("scale ", "s = ")
            if "full" in line and "bound" in line:
                return "full solve (no jump within the bound)"
        return ""


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50000")
    ap.add_argument("--blurs", default=str(BLUR))
    ap.add_argument("--data", choices=["shifted", "centered"], default="shifted")
    ap.add_argument("--tol", type=float, default=None, help="converging mode (otpipe only)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--geomloss", action="store_true")
    ap.add_argument("--full", action="store_true", help="also the full cpu solve (reference value)")
    ap.add_argument("--one-million", action="store_true")
    args = ap.parse_args(argv)
    path = _Path()
    logging.getLogger("otpipe.multiscale").addHandler(path)
    logging.getLogger("otpipe.multiscale").setLevel(logging.INFO)
    if args.one_million:
        x, y = _data(1_000_000, kind=args.data)
        t, v, _ = _run(_otpipe("multiscale", float(args.blurs.split(",")[0]), args.tol), x, y)
        print(f"| 1,000,000 | otpipe multiscale | {t:.1f} | {v:.6f} | peak RSS {_peak_rss_gib():.2f} GiB | "
              f"{path.path()} |", flush=True)
        return
    print(f"load average at start: {os.getloadavg()[0]:.1f}", flush=True)
    print("| N = M | blur | implementation | time (s) | S_eps | value rel. diff | gradient rel. diff (L2) | "
          "GeomLoss multiscale time / this | path |", flush=True)
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for blur in (float(b) for b in args.blurs.split(",")):
        impls = {"otpipe multiscale": _otpipe("multiscale", blur, args.tol)}
        if args.geomloss:
            impls["GeomLoss multiscale"] = _geomloss(blur)
        if args.full:
            impls["otpipe cpu (full solve)"] = _otpipe("cpu", blur, args.tol)
        small_x, small_y = _data(2000, kind=args.data)
        for k, fn in impls.items():  # warm-up: KeOps compilation, cpu kernel build
            _run(fn, small_x, small_y)
        for n in (int(s) for s in args.sizes.split(",")):
            x, y = _data(n, kind=args.data)
            best, val, grad, paths = {}, {}, {}, {}
            for _ in range(args.repeats):
                for k, fn in impls.items():
                    path.lines.clear()
                    t, v, gx = _run(fn, x, y)
                    best[k], val[k], grad[k] = min(best.get(k, float("inf")), t), v, gx
                    paths[k] = path.path() if k == "otpipe multiscale" else ""
                    print(f"N={n} blur={blur} {k}: {t:.2f} s  S={v:.7g}  load {os.getloadavg()[0]:.1f}", flush=True)
            ref = val.get("otpipe cpu (full solve)")
            gref = grad.get("otpipe cpu (full solve)")
            gl = best.get("GeomLoss multiscale")
            for k in impls:
                rel = f"{abs(val[k] - ref) / abs(ref):.1e}" if ref is not None else ""
                grel = f"{float((grad[k] - gref).norm() / gref.norm()):.1e}" if gref is not None else ""
                sp = f"{gl / best[k]:.1f}x" if gl else ""
                print(f"| {n:,} | {blur:g} | {k} | {best[k]:.2f} | {val[k]:.7f} | {rel} | {grel} | {sp} | "
                      f"{paths[k]} |", flush=True)
    print(f"peak RSS {_peak_rss_gib():.2f} GiB; load average at end: {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
