"""Benchmark one Sinkhorn reduction pass: the compiled ``cpu`` backend vs pykeops (CPU) vs blocked torch.

One pass is ``f_i = -eps log sum_j exp(h_j - |x_i - y_j|^2 / (2 eps))`` over all ``N x M`` pairs,
N = M = 20,000, D = 3, float32, points uniform in the unit cube, blur 0.05 (``eps = blur^2``).
Every implementation runs in the same process: a warm-up call (which also compiles), then the best
of several repeats. Accuracy is the max relative error against a float64 blocked-torch reference.

Usage::

    python benchmarks/bench_reduction.py [--n 20000] [--repeats 5] [--out benchmarks/results/reduction.md]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from otpipe.geometry.backends import cpu, keops
from otpipe.geometry.costs import Cost

__all__ = ["main"]


def _best_time(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up (compiles KeOps formulas / the cpu library on first use)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _torch_blocks(x: torch.Tensor, y: torch.Tensor, h: torch.Tensor, eps: float, block: int = 256) -> torch.Tensor:
    """Eager torch, blocks of rows: ``-eps logsumexp(h - |x - y|^2 / 2 eps)`` from coordinate differences."""
    out = torch.empty(x.shape[0], x.shape[1], dtype=x.dtype)
    cost = Cost(2.0)
    for i in range(0, x.shape[1], block):
        C = cost.dense(x[:, i:i + block], y)
        out[:, i:i + block] = -eps * torch.logsumexp(h[:, None, :] - C / eps, dim=2)
    return out


def _machine() -> str:
    model = "unknown CPU"
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
        model = m.group(1).strip() if m else model
        flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
        simd = "AVX-512" if flags and "avx512f" in flags.group(1) else "AVX2" if flags and "avx2" in flags.group(1) else "?"
    except OSError:
        simd = "?"
    try:
        import pykeops

        kv = pykeops.__version__
    except ImportError:  # pragma: no cover
        kv = "not installed"
    try:
        gxx = subprocess.run([cpu._compiler() or "g++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        gxx = "no compiler"
    return (f"{model} ({simd}), {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
            f"Python {platform.python_version()}, torch {torch.__version__}, pykeops {kv}, {gxx}; "
            f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; load average during the run "
            f"{os.getloadavg()[0]:.1f} (shared machine: other jobs were running)")


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=3)
    ap.add_argument("--blur", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "reduction.md"))
    ap.add_argument("--no-keops", action="store_true")
    args = ap.parse_args(argv)

    n, d, eps = args.n, args.d, args.blur ** 2
    g = torch.Generator().manual_seed(0)
    x64 = torch.rand(1, n, d, generator=g, dtype=torch.float64)
    y64 = torch.rand(1, n, d, generator=g, dtype=torch.float64)
    h64 = 0.1 * torch.randn(1, n, generator=g, dtype=torch.float64)
    x, y, h = x64.float(), y64.float(), h64.float()
    pairs = n * n
    cost = Cost(2.0)

    print("float64 reference (blocked torch) ...", file=sys.stderr)
    ref = _torch_blocks(x64, y64, h64, eps)

    def rel_err(out: torch.Tensor) -> float:
        return ((out.double() - ref).abs().max() / ref.abs().max()).item()

    if not cpu.available():
        raise SystemExit(f"cpu backend unavailable: {cpu.build_error()}")
    op = cpu.operator(x, y, cost)
    impls = {"otpipe `cpu` (compiled C++, OpenMP)": lambda: op.softmin(eps, h)}
    if not args.no_keops:
        kop = keops.operator(x, y, cost)
        impls["pykeops LazyTensor logsumexp (CPU)"] = lambda: kop.softmin(eps, h)
    impls["torch eager, blocks of 256 rows"] = lambda: _torch_blocks(x, y, h, eps)
    # warm-up, then interleaved rounds (each implementation once per round) so that all of them see the
    # same background load on a shared machine; best per implementation
    outs = {name: fn() for name, fn in impls.items()}
    best = dict.fromkeys(impls, float("inf"))
    for _ in range(args.repeats):
        for name, fn in impls.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    rows = [(name, best[name], pairs / best[name], rel_err(outs[name])) for name in impls]  # (name, s, pairs/s, err)
    t_cpu = rows[0][1]

    # the same kernel on the other code paths the solver uses
    extra = []
    op64 = cpu.operator(x64, y64, cost)
    t, out = _best_time(lambda: op64.softmin(eps, h64), args.repeats)
    extra.append(("`cpu` softmin, float64", t, pairs / t, rel_err(out)))
    for p in (1.0, 1.5):
        opp = cpu.operator(x, y, Cost(p))
        t, _ = _best_time(lambda: opp.softmin(args.blur ** p, h), args.repeats)
        extra.append((f"`cpu` softmin, float32, p = {p:g}", t, pairs / t, float("nan")))
    v = y.clone()
    t, _ = _best_time(lambda: op.softmax_mean(eps, h, v), args.repeats)
    extra.append(("`cpu` softmax_mean (K = 3, gradient/transport map)", t, pairs / t, float("nan")))

    def table(rs, speedup: bool) -> list[str]:
        head = "| implementation | time (s) | pairs/s | rel. error vs float64 |" + (" cpu speed-up |" if speedup else "")
        lines = [head, "|" + " --- |" * (5 if speedup else 4)]
        for name, t, r, e in rs:
            err = "-" if e != e else f"{e:.1e}"
            line = f"| {name} | {t:.3f} | {r / 1e9:.2f}e9 | {err} |"
            if speedup:
                line += f" {t / t_cpu:.1f}x |"
            lines.append(line)
        return lines

    md = [
        "# One softmin reduction pass on the CPU",
        "",
        f"`f_i = -eps log sum_j exp(h_j - |x_i - y_j|^2 / (2 eps))`, N = M = {n:,}, D = {d}, float32, "
        f"uniform points in the unit cube, blur {args.blur} (eps = {eps:g}); best of {args.repeats} interleaved rounds after a warm-up; "
        "error: max |f - f_ref| / max |f_ref| against float64 blocked torch.",
        "",
        f"Machine: {_machine()}.",
        "",
        *table(rows, True),
        "",
        "Other paths of the same kernel (same problem):",
        "",
        *table(extra, False),
        "",
        "Produced by `python benchmarks/bench_reduction.py`.",
        "",
    ]
    text = "\n".join(md)
    print(text)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    return text


if __name__ == "__main__":
    main()
